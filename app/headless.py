"""Headless output (`--headless --out DIR`): the overlay drawn into an MP4 and PNG thumbnails, no window.

The overlay is drawn in numpy/OpenCV on the camera image itself, so it needs no display, no GL and
no GPU:
- background: the color image when the model used color (modes rgbd / rgb), the depth image as a gray
  ramp (near bright) when it used depth only; whichever exists otherwise; black when neither does.
  It is letterboxed into the output size (aspect kept, black bars);
- mesh: the body's vertices (depth camera frame, metres) are moved into that camera
  (`RgbdRig.depth_to_color` for color, identity for depth) and ray-cast with Open3D's CPU
  `RaycastingScene` through the camera's *calibrated, distorted* ray table (`CameraIntrinsics.xy_table`),
  only inside the mesh's projected bounding box: exact occlusion and distortion, smooth (interpolated
  vertex normal) shading with a headlight, alpha-blended in the mode's color (`scene3d.MODE_COLORS`),
  with a dark outline;
- skeleton: joints projected with the same camera (distortion included), one line per (joint, parent);
- label: input mode (RGB-D / D / RGB / none), fps (results per second on the host clock over the last
  second, or the value passed in), frame id; the worker's message when there is no body; dropped frames;
  the per-stage milliseconds of the result (`FrameResult.timings_ms` in `app.results.STAGES` order:
  capture, decode, align, crop, infer, post, and render when the caller timed it). `label_lines` gives
  the text.
Cost: dominated by the ray cast, ~20-40 ms for a person filling a third of a 1280x720 frame (2 cores).

`HeadlessRenderer(out_dir, faces, parents, size=(W, H), fps=30)` writes `out_dir/overlay.mp4`
(cv2.VideoWriter, codec mp4v, one video frame per `add`) and `out_dir/thumbnails/frame_<id>.png` for the
first frame and every `thumbnail_every`-th after it; `close()` returns the paths.

Threads: an `OverlayRenderer` / `HeadlessRenderer` belongs to the one thread that calls it (the CLI's
main thread in headless mode); it keeps per-instance state (rate meter, last rig), nothing global.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import cv2
import numpy as np

from app.frames import RgbdFrame
from app.plots import RateMeter
from app.results import STAGES, FrameResult, InputMode
from app.scene3d import MODE_COLORS, check_faces, skeleton_edges
from calibration.intrinsics import CameraIntrinsics
from calibration.rig import Extrinsics, RgbdRig
from model.geometry import vertex_normals

__all__ = ["MODE_LABELS", "OverlayStyle", "OverlayRenderer", "HeadlessRenderer", "HeadlessOutputs",
           "HeadlessError", "vertex_normals"]

MODE_LABELS = {InputMode.RGBD.value: "RGB-D", InputMode.DEPTH.value: "D", InputMode.RGB.value: "RGB",
               InputMode.NONE.value: "none"}
"""How each input mode is written on the overlay."""


class HeadlessError(RuntimeError):
    """The headless output cannot be written (message names the path and the problem)."""


@dataclass(frozen=True)
class OverlayStyle:
    """mesh_alpha: weight of the mesh over the image (0..1); ambient: shading floor (0..1);
    depth_range_m: near / far of the gray ramp for depth backgrounds; timings: print the per-stage
    milliseconds; the rest are pixels at output size."""

    mesh_alpha: float = 0.65
    ambient: float = 0.3
    outline: bool = True
    skeleton: bool = True
    line_px: int = 2
    joint_radius_px: int = 3
    font_scale: float = 0.6
    depth_range_m: tuple[float, float] = (0.3, 6.0)
    timings: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.mesh_alpha <= 1.0 or not 0.0 <= self.ambient <= 1.0:
            raise ValueError(f"mesh_alpha and ambient must be in [0, 1], got {self.mesh_alpha}, {self.ambient}")
        if not 0 < self.depth_range_m[0] < self.depth_range_m[1]:
            raise ValueError(f"depth_range_m must be (near, far) with 0 < near < far, got {self.depth_range_m}")


def _bgr(rgb: tuple[float, float, float]) -> np.ndarray:
    return np.array(rgb[::-1], dtype=np.float32) * 255.0


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"size must be (width, height) in pixels, got {size!r}") from exc
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise ValueError(f"size must be (width, height) >= 16 px and even (MPEG-4 needs even sizes), got {size!r}")
    return width, height


class OverlayRenderer:
    """Draws one `FrameResult` over its frame's image at a fixed output size (see the module docstring).

    faces: (F, 3) body mesh faces; parents: (J,) kinematic tree (SMPL_PARENTS); size: (W, H) output px.
    Thread: one thread per instance.
    """

    def __init__(self, faces: Any, parents: Sequence[int], size: tuple[int, int] = (1280, 720),
                 style: OverlayStyle = OverlayStyle()):
        self.faces = check_faces(faces)
        self.edges = skeleton_edges(parents)
        self.n_joints = len(self.edges) + 1
        self.size = _check_size(size)
        self.style = style
        self.rate = RateMeter(1.0)
        self._last_rig: Optional[RgbdRig] = None
        self._faces_u32 = self.faces.astype(np.uint32)

    # ------------------------------------------------------------------ public
    def render(self, frame: Optional[RgbdFrame], result: FrameResult, fps: Optional[float] = None) -> np.ndarray:
        """-> (H, W, 3) uint8 BGR overlay. `fps`: the rate to print; None = measured from the calls."""
        if not isinstance(result, FrameResult):
            raise TypeError(f"result must be a FrameResult, got {type(result).__name__}")
        if frame is not None and not isinstance(frame, RgbdFrame):
            raise TypeError(f"frame must be an RgbdFrame or None, got {type(frame).__name__}")
        measured = self.rate.tick()
        fps = measured if fps is None else float(fps)
        width, height = self.size
        canvas = np.zeros((height, width, 3), dtype=np.uint8)
        if frame is not None:
            self._last_rig = frame.rig
        background, camera, to_camera = self._background(frame, result)
        if camera is not None:
            s = min(width / camera.width, height / camera.height)
            nw, nh = max(1, round(camera.width * s)), max(1, round(camera.height * s))
            ox, oy = (width - nw) // 2, (height - nh) // 2
            cam = camera.scaled(nw, nh)
            view = canvas[oy:oy + nh, ox:ox + nw]
            if background is not None:
                interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
                view[:] = cv2.resize(background, (nw, nh), interpolation=interp)
            if result.body is not None:
                vertices, joints = self._body_in_camera(result, to_camera)
                self._draw_mesh(view, cam, vertices, InputMode(result.mode).value)
                if self.style.skeleton:
                    self._draw_skeleton(view, cam, joints)
        self._draw_label(canvas, result, fps)
        return canvas

    # ------------------------------------------------------------------ pieces
    def _background(self, frame: Optional[RgbdFrame], result: FrameResult
                    ) -> tuple[Optional[np.ndarray], Optional[CameraIntrinsics], Extrinsics]:
        """(image or None, the camera it belongs to, depth camera -> that camera)."""
        rig = frame.rig if frame is not None else self._last_rig
        if rig is None:
            return None, None, Extrinsics.identity()
        color = frame.color_bgr if frame is not None else None
        depth = frame.depth_mm if frame is not None else None
        prefer_depth = InputMode(result.mode) is InputMode.DEPTH
        if depth is not None and (prefer_depth or color is None):
            return self._depth_image(depth), rig.depth, Extrinsics.identity()
        return color, rig.color, rig.depth_to_color

    def _depth_image(self, depth_mm: np.ndarray) -> np.ndarray:
        near, far = self.style.depth_range_m
        z = depth_mm.astype(np.float32) * 0.001
        g = np.clip(1.0 - (z - near) / (far - near), 0.0, 1.0) * 200.0 + 40.0
        g[depth_mm == 0] = 0.0
        g8 = g.astype(np.uint8)
        return cv2.merge([g8, g8, g8])

    def _body_in_camera(self, result: FrameResult, to_camera: Extrinsics) -> tuple[np.ndarray, np.ndarray]:
        body = result.body
        v = np.asarray(body.vertices, dtype=np.float64)
        j = np.asarray(body.joints, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] <= int(self.faces.max()):
            raise ValueError(f"body.vertices must be (V, 3) with V > {int(self.faces.max())} (the faces' largest "
                             f"index), got shape {v.shape}")
        if j.shape != (self.n_joints, 3):
            raise ValueError(f"body.joints must be ({self.n_joints}, 3) metres, got shape {j.shape}")
        return to_camera.apply(v), to_camera.apply(j)

    def _draw_mesh(self, view: np.ndarray, cam: CameraIntrinsics, vertices: np.ndarray, mode: str) -> None:
        import open3d as o3d  # lazy: only the mesh needs it

        uv, ok = cam.project_with_mask(vertices)
        if not ok.any():
            return
        h, w = view.shape[:2]
        x0 = int(np.clip(np.floor(np.nanmin(uv[ok, 0])) - 1, 0, w))
        x1 = int(np.clip(np.ceil(np.nanmax(uv[ok, 0])) + 2, 0, w))
        y0 = int(np.clip(np.floor(np.nanmin(uv[ok, 1])) - 1, 0, h))
        y1 = int(np.clip(np.ceil(np.nanmax(uv[ok, 1])) + 2, 0, h))
        if x1 <= x0 or y1 <= y0:
            return
        xy, ray_ok = cam.xy_table()
        xy = xy[y0:y1, x0:x1]
        rays = np.zeros(xy.shape[:2] + (6,), dtype=np.float32)
        rays[..., 3:5] = xy
        rays[..., 5] = 1.0
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(np.ascontiguousarray(vertices, dtype=np.float32)),
                            o3d.core.Tensor(self._faces_u32))
        hits = scene.cast_rays(o3d.core.Tensor(rays.reshape(-1, 6)))
        t_hit = hits["t_hit"].numpy().reshape(xy.shape[:2])
        hit = np.isfinite(t_hit) & ray_ok[y0:y1, x0:x1]
        if not hit.any():
            return
        face = hits["primitive_ids"].numpy().reshape(xy.shape[:2])[hit].astype(np.int64)
        bary = hits["primitive_uvs"].numpy().reshape(xy.shape[:2] + (2,))[hit]
        vn = vertex_normals(vertices, self.faces)
        tri = self.faces[face]
        n = ((1.0 - bary[:, 0] - bary[:, 1])[:, None] * vn[tri[:, 0]] + bary[:, 0:1] * vn[tri[:, 1]]
             + bary[:, 1:2] * vn[tri[:, 2]])
        d = rays[..., 3:][hit]
        cos = np.abs(np.sum(n * d, axis=1)) / np.maximum(np.linalg.norm(n, axis=1) * np.linalg.norm(d, axis=1), 1e-12)
        a, amb = self.style.mesh_alpha, self.style.ambient
        shade = (amb + (1.0 - amb) * cos)[:, None] * _bgr(MODE_COLORS[mode])
        region = view[y0:y1, x0:x1]
        region[hit] = np.clip((1.0 - a) * region[hit] + a * shade, 0, 255).astype(np.uint8)
        if self.style.outline:
            contours, _ = cv2.findContours(hit.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            edge = tuple(int(c) for c in 0.45 * _bgr(MODE_COLORS[mode]))
            cv2.drawContours(region, contours, -1, edge, 1, cv2.LINE_AA)

    def _draw_skeleton(self, view: np.ndarray, cam: CameraIntrinsics, joints: np.ndarray) -> None:
        uv, ok = cam.project_with_mask(joints)
        st = self.style
        pts = np.rint(np.nan_to_num(uv) * 16).astype(np.int64)  # 4 bits of sub-pixel precision
        for j, p in self.edges:
            if ok[j] and ok[p]:
                a, b = tuple(int(c) for c in pts[j]), tuple(int(c) for c in pts[p])
                cv2.line(view, a, b, (20, 20, 20), st.line_px + 2, cv2.LINE_AA, shift=4)
                cv2.line(view, a, b, (255, 255, 255), st.line_px, cv2.LINE_AA, shift=4)
        for j in np.flatnonzero(ok):
            cv2.circle(view, tuple(int(c) for c in pts[j]), st.joint_radius_px * 16, (60, 40, 240), -1,
                       cv2.LINE_AA, shift=4)

    def label_lines(self, result: FrameResult, fps: float) -> list[str]:
        """The label's text lines for one result (see the module docstring)."""
        mode = InputMode(result.mode).value
        fps_text = f"{fps:5.1f} fps" if np.isfinite(fps) else "  --- fps"
        lines = [f"{MODE_LABELS[mode]}  {fps_text}  frame {result.frame_id}"]
        if result.body is None:
            lines.append(f"no body: {result.message}" if result.message else "no body")
        elif result.message:
            lines.append(result.message)
        if result.requested_mode and result.requested_mode not in ("auto", mode):
            lines.append(f"requested {result.requested_mode}")
        if result.dropped_frames:
            lines.append(f"dropped {result.dropped_frames}")
        if self.style.timings:
            stages = [f"{s} {result.timings_ms[s]:.1f}" for s in STAGES if s in result.timings_ms]
            if stages:
                lines.append("ms: " + "  ".join(stages))
        return lines

    def _draw_label(self, canvas: np.ndarray, result: FrameResult, fps: float) -> None:
        mode = InputMode(result.mode).value
        lines = self.label_lines(result, fps)
        scale = self.style.font_scale
        font = cv2.FONT_HERSHEY_SIMPLEX
        sizes = [cv2.getTextSize(text, font, scale, 1) for text in lines]
        line_h = max(s[0][1] + s[1] for s in sizes) + 8
        box_w = max(s[0][0] for s in sizes) + 16
        x0, y0 = 8, 8
        box = canvas[y0:y0 + line_h * len(lines) + 6, x0:x0 + box_w]
        box[:] = (0.35 * box).astype(np.uint8)
        swatch = tuple(int(c) for c in _bgr(MODE_COLORS[mode]))
        cv2.rectangle(canvas, (x0, y0), (x0 + 4, y0 + line_h * len(lines) + 5), swatch, -1)
        for i, text in enumerate(lines):
            y = y0 + (i + 1) * line_h - 4
            cv2.putText(canvas, text, (x0 + 10, y), font, scale, (255, 255, 255), 1, cv2.LINE_AA)


@dataclass(frozen=True)
class HeadlessOutputs:
    """What a `HeadlessRenderer` wrote: the MP4, the thumbnails (in order) and the number of video frames."""

    video: Path
    thumbnails: tuple[Path, ...]
    frames: int


class HeadlessRenderer:
    """Writes the overlay of every (frame, result) to `out_dir/overlay.mp4` and PNG thumbnails.

    out_dir: created if missing; size: (W, H) of the video, even; fps: the video's frame rate;
    thumbnail_every: a thumbnail for the 1st frame and every n-th after it; thumbnail_width: px (height
    follows the aspect), None = full size. Use as a context manager or call `close()` (returns the paths).
    Thread: one thread per instance (cv2.VideoWriter is not thread-safe).
    """

    VIDEO_NAME = "overlay.mp4"
    THUMBNAIL_DIR = "thumbnails"

    def __init__(self, out_dir: Union[str, Path], faces: Any, parents: Sequence[int],
                 size: tuple[int, int] = (1280, 720), fps: float = 30.0, thumbnail_every: int = 30,
                 thumbnail_width: Optional[int] = 480, style: OverlayStyle = OverlayStyle()):
        if not (isinstance(fps, (int, float)) and 0 < fps <= 240):
            raise ValueError(f"fps must be a number in (0, 240], got {fps!r}")
        if int(thumbnail_every) != thumbnail_every or thumbnail_every < 1:
            raise ValueError(f"thumbnail_every must be a positive integer, got {thumbnail_every!r}")
        if thumbnail_width is not None and thumbnail_width < 16:
            raise ValueError(f"thumbnail_width must be >= 16 px or None, got {thumbnail_width!r}")
        self.overlay = OverlayRenderer(faces, parents, size=size, style=style)
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise HeadlessError(f"--out {self.out_dir} exists and is not a folder")
        self.thumb_dir = self.out_dir / self.THUMBNAIL_DIR
        try:
            self.thumb_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HeadlessError(f"cannot create output folder {self.thumb_dir}: {exc.strerror or exc}") from exc
        self.video_path = self.out_dir / self.VIDEO_NAME
        self.fps = float(fps)
        self.thumbnail_every = int(thumbnail_every)
        self.thumbnail_width = thumbnail_width
        width, height = self.overlay.size
        self._writer = cv2.VideoWriter(str(self.video_path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                       (width, height))
        if not self._writer.isOpened():
            raise HeadlessError(f"cannot open an MP4 writer (codec mp4v) for {self.video_path}")
        self.frames = 0
        self.thumbnails: list[Path] = []
        self._closed = False

    def add(self, frame: Optional[RgbdFrame], result: FrameResult, fps: Optional[float] = None) -> np.ndarray:
        """Render and write one overlay frame; returns it ((H, W, 3) uint8 BGR)."""
        if self._closed:
            raise HeadlessError(f"HeadlessRenderer for {self.out_dir} is closed")
        image = self.overlay.render(frame, result, fps=fps)
        self._writer.write(image)
        if self.frames % self.thumbnail_every == 0:
            self._thumbnail(image, result.frame_id)
        self.frames += 1
        return image

    def _thumbnail(self, image: np.ndarray, frame_id: int) -> None:
        if self.thumbnail_width is not None and self.thumbnail_width != image.shape[1]:
            h = max(1, round(image.shape[0] * self.thumbnail_width / image.shape[1]))
            image = cv2.resize(image, (self.thumbnail_width, h), interpolation=cv2.INTER_AREA)
        path = self.thumb_dir / f"frame_{frame_id:06d}.png"
        if path in self.thumbnails:  # a repeated frame id (replay restarted): keep both
            path = self.thumb_dir / f"frame_{frame_id:06d}_{self.frames:06d}.png"
        if not cv2.imwrite(str(path), image):
            raise HeadlessError(f"cannot write thumbnail {path}")
        self.thumbnails.append(path)

    def close(self) -> HeadlessOutputs:
        """Finish the MP4 (idempotent) and return what was written."""
        if not self._closed:
            self._closed = True
            self._writer.release()
        return HeadlessOutputs(self.video_path, tuple(self.thumbnails), self.frames)

    def __enter__(self) -> "HeadlessRenderer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
