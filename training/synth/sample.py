"""One labelled synthetic sample: scene -> render in each camera -> sensor models -> alignment -> crop -> labels.

The pipeline mirrors the app's: the depth image (DEPTH16, `depth_noise`) and the color image (uint8 BGR,
color sensor model + JPEG) are rendered in their own calibrated cameras; `calibration.align.
ColorToDepthAligner` resamples color onto the depth grid exactly as the app does; `app.crop` cuts the
square person crop from the aligned color, the depth and the mask. Training crops render only what
the crop needs: depth rays inside a window around the person (plus 2 px for the noise model's edge
test) and color rays inside the color-image rectangle that the crop's own depth pixels project to; with
`max_render_stride=1` that is bit-identical to rendering the full frames and cutting (tested). By
default a crop that downsamples its window (a near person) is rendered on a proportionally coarser
grid of exact rays (`render.Grid`) and expanded back before the alignment and the crop, which cannot
resolve the difference (tested against the exact render).

Labels (depth camera frame = OpenCV axes, metres):
    betas (10,); theta (72,) axis-angle, global orientation in the camera frame; transl (3,) so that
    BodyModel(betas, theta[3:], theta[:3], transl) reproduces joints3d (24, 3) and lsp3d (14, 3);
    joints2d / lsp2d: projections (with distortion) into the depth image, in crop pixels for training
    samples; visibility: inside the image and the crop, and a ray from the camera to the joint hits
    nothing before it (within 1 cm) or first hits this person's own surface no more than
    `visibility_tolerance_m` in front of it (so joints behind occluders, other people or the person's
    own torso are not visible);
    mask: depth pixels whose first hit is the person; bbox: tight box of the mask, pixel edges
    (x0, y0, x1, y1) = (min col - 0.5, min row - 0.5, max col + 0.5, max row + 0.5) in depth pixels.

Determinism: a sample is a pure function of (seed, index, config, body model, calibration): its random
generator is `np.random.default_rng([seed, index])`, bodies are posed in fixed chunks of indices
(`CHUNK`), torch/OpenCV run with the thread counts the caller sets (results do not depend on them
except through floating-point summation order in torch; the shard writer pins 1 thread), and the
compiled renderer (`training.synth.raycast`, `_kernels`) is single-threaded and order-deterministic.
A data set is reproducible with the code that made it; renderer changes (e.g. 2026-11-26: float64 ray
casting, 16-bit inverse-CDF colour noise, re-ordered scene draws) change its pixels and labels.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import math
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from app.crop import CropBox, box_around, crop_color, crop_depth, crop_mask
from calibration import DEFAULT_KINECT_CALIBRATION, default_rig
from calibration.rig import RgbdRig
from model.geometry import faces_seen_from
from training.synth.appearance import BodyRegions, body_regions
from training.synth.depth_noise import DepthNoiseConfig, apply_depth_noise
from training.synth.render import (ColorSensorConfig, Grid, RigCameras, SceneMesh, Window, color_sensor_image,
                                   jpeg_roundtrip, render_color, render_depth, rig_cameras, sample_color_sensor)
from training.synth.scene import (OBJ_PERSON, OBJ_TARGET, Scene, SceneConfig, TriangleSoup, concat_soups,
                                  ground_body, sample_scene, static_triangles)

__all__ = [
    "SynthConfig", "Sample", "PosedPerson", "Frame", "SynthEngine", "DEFAULT_CALIBRATION", "CHUNK",
    "load_rig", "config_from_dict", "config_to_dict", "sample_rng",
]

DEFAULT_CALIBRATION = DEFAULT_KINECT_CALIBRATION  # assets/calibration/azure_kinect_default.json
CHUNK = 16  # bodies are posed in fixed chunks of sample indices (batched forward), whatever the worker count


@dataclass(frozen=True)
class SynthConfig:
    """Everything that defines a synthetic data set besides the seed, the body model and the calibration.

    out_size: crop side (px); crop_margin: crop side / longer side of the person's visible bbox (the
    app's `box_around` margin); crop_jitter: relative random shift and scale of the crop box.
    render_oversample, max_render_stride: each camera renders the crop's region with one ray per
    s x s pixels, s = clip(crop step / render_oversample, 1, max_render_stride), where the crop step is
    the crop's sampling interval in that camera's pixels (crop side / out_size, times the local
    color/depth magnification for color). The renders are expanded back to full resolution before the
    app's alignment and crop, which then cannot resolve the difference. s < 1.05 snaps to 1 (every
    pixel); max_render_stride = 1 renders every pixel always (bit-identical to full-frame rendering).
    color_oversample: multiplies render_oversample for the color camera only; below 1 the color rays
    are coarser than the crop's sampling (fewer rays, slightly softer color); depth, masks and labels
    do not depend on it (tested).
    min_visible_px: a scene is resampled until the person covers at least this many depth pixels.
    visibility_tolerance_m: see the module docstring. depth_noise / color_noise / jpeg: switch the
    sensor models off (clean renders, for tests and debugging). calibration: raw Azure Kinect
    calibration JSON ('' = assets/calibration/azure_kinect_default.json).
    """

    out_size: int = 224
    crop_margin: float = 1.25
    crop_jitter: float = 0.05
    min_visible_px: int = 400
    visibility_tolerance_m: float = 0.15
    render_oversample: float = 1.0
    color_oversample: float = 1.0
    max_render_stride: float = 6.0
    depth_noise: bool = True
    color_noise: bool = True
    jpeg: bool = True
    calibration: str = ""
    scene: SceneConfig = field(default_factory=SceneConfig)
    color_sensor: ColorSensorConfig = field(default_factory=ColorSensorConfig)
    depth_sensor: DepthNoiseConfig = field(default_factory=DepthNoiseConfig)

    def __post_init__(self) -> None:
        if isinstance(self.out_size, bool) or not isinstance(self.out_size, int) or not 16 <= self.out_size <= 1024:
            raise ValueError(f"SynthConfig.out_size must be an int in 16..1024, got {self.out_size!r}")
        if not 1.0 <= self.crop_margin <= 3.0:
            raise ValueError(f"SynthConfig.crop_margin must be in [1, 3], got {self.crop_margin}")
        if not 0.0 <= self.crop_jitter <= 0.3:
            raise ValueError(f"SynthConfig.crop_jitter must be in [0, 0.3], got {self.crop_jitter}")
        if self.min_visible_px < 1:
            raise ValueError(f"SynthConfig.min_visible_px must be >= 1, got {self.min_visible_px}")
        if self.max_render_stride < 1 or self.render_oversample <= 0:
            raise ValueError(f"SynthConfig.max_render_stride must be >= 1 and render_oversample >= 0, got "
                             f"{self.max_render_stride}, {self.render_oversample}")
        if not 0.25 <= self.color_oversample <= 4.0:
            raise ValueError(f"SynthConfig.color_oversample must be in [0.25, 4], got {self.color_oversample}")
        if not self.visibility_tolerance_m > 0:
            raise ValueError(f"SynthConfig.visibility_tolerance_m must be > 0, got {self.visibility_tolerance_m}")

    @property
    def calibration_path(self) -> Path:
        return Path(self.calibration) if self.calibration else DEFAULT_CALIBRATION


# ------------------------------------------------------------------------------------------ config I/O
def config_to_dict(cfg: Any) -> Any:
    """A dataclass config as plain JSON-able data (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (tuple, list)):
        return [config_to_dict(v) for v in cfg]
    return cfg


def _coerce(tp: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _from_dict(tp, value, key)
    origin = typing.get_origin(tp)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config key {key!r} must be a list, got {value!r}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, key) for v in value)
        if len(args) != len(value):
            raise ValueError(f"config key {key!r} must have {len(args)} entries, got {len(value)}")
        return tuple(_coerce(a, v, key) for a, v in zip(args, value))
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(args[0], value, key) if len(args) == 1 else value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ValueError(f"config key {key!r} must be {tp.__name__}, got {value!r}")
    return value


def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ValueError(f"config section {prefix or '<root>'!r} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(names)}"
            raise ValueError(f"unknown config key {full!r}{hint}")
        kwargs[key] = _coerce(hints[key], value, full)
    return cls(**kwargs)


def config_from_dict(data: dict | None) -> SynthConfig:
    """Strict inverse of `config_to_dict`: unknown keys raise ValueError naming the nearest valid key;
    missing keys take their defaults."""
    return _from_dict(SynthConfig, data or {}, "")


@functools.lru_cache(maxsize=32)
def load_rig(calibration_path: str, depth_mode: str, color_resolution: str) -> RgbdRig:
    """RgbdRig of one depth mode / color resolution from a raw Azure Kinect calibration JSON file
    (the team's default device: `calibration.default_rig`)."""
    path = Path(calibration_path)
    if path.resolve() == Path(DEFAULT_KINECT_CALIBRATION).resolve():
        return default_rig(depth_mode, color_resolution)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file not found: {path}")
    return RgbdRig.from_kinect_raw_json(path.read_text(), depth_mode, color_resolution)


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The random generator of sample `index` of the data set with `seed` (independent of workers)."""
    return np.random.default_rng([int(seed), int(index)])


# ------------------------------------------------------------------------------------------ data types
@dataclass
class PosedPerson:
    """A posed body in the depth camera frame: vertices (V, 3), joints (24, 3), lsp (14, 3) metres;
    SMPL parameters betas (10,), theta (72,) (global orientation in the camera frame), transl (3,)."""

    vertices: np.ndarray
    joints: np.ndarray
    lsp: np.ndarray
    betas: np.ndarray
    theta: np.ndarray
    transl: np.ndarray


@dataclass
class Frame:
    """A rendered frame (full images, depth grid / color grid) and its target-person labels.

    depth_mm (Hd, Wd) uint16 (0 outside the rendered window); color_bgr (Hc, Wc, 3) uint8 (black
    outside the rendered rectangle); depth_window / color_window: what was rendered (x0, y0, x1, y1);
    mask (Hd, Wd) bool; bbox (4,) pixel edges or NaN when the person is not visible; joints2d_depth
    (24, 2), lsp2d_depth (14, 2), *_vis_depth; joints2d_color / lsp2d_color and *_vis_color likewise
    in the color image (NaN where the projection is invalid); visible_px: mask pixel count.
    """

    scene: Scene
    person: PosedPerson
    rig: RgbdRig
    depth_mm: np.ndarray
    color_bgr: np.ndarray
    depth_window: Window
    color_window: Window
    stride: float
    mask: np.ndarray
    bbox: np.ndarray
    visible_px: int
    joints2d_depth: np.ndarray
    joints_vis_depth: np.ndarray
    lsp2d_depth: np.ndarray
    lsp_vis_depth: np.ndarray
    joints2d_color: np.ndarray
    joints_vis_color: np.ndarray
    lsp2d_color: np.ndarray
    lsp_vis_color: np.ndarray
    depth_ideal_m: np.ndarray  # (Hd, Wd) float32 ideal z-depth, 0 outside the window / no hit


@dataclass
class Sample:
    """A training sample (see the module docstring for label conventions). Images: rgb (S, S, 3) uint8
    R, G, B; depth_mm (S, S) uint16; mask (S, S) bool. crop_box (4,) = (x0, y0, side, out_size) in depth
    px; K (3, 3) and dist (8,) OpenCV (k1, k2, p1, p2, k3, k4, k5, k6) of the depth camera."""

    index: int
    rgb: np.ndarray
    depth_mm: np.ndarray
    mask: np.ndarray
    betas: np.ndarray
    theta: np.ndarray
    transl: np.ndarray
    joints3d: np.ndarray
    lsp3d: np.ndarray
    joints2d: np.ndarray
    lsp2d: np.ndarray
    joints_vis: np.ndarray
    lsp_vis: np.ndarray
    crop_box: np.ndarray
    K: np.ndarray
    dist: np.ndarray
    bbox: np.ndarray
    depth_mode: str
    color_resolution: str
    attempts: int = 1


# ------------------------------------------------------------------------------------------ engine
def _bbox_of(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Pixel-edge bbox (x0, y0, x1, y1) of a boolean mask, float64; NaN if the mask is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return np.full(4, np.nan)
    cols = np.flatnonzero(mask.any(axis=0))
    ox, oy = offset
    return np.array([cols[0] + ox - 0.5, rows[0] + oy - 0.5, cols[-1] + ox + 0.5, rows[-1] + oy + 0.5])


def _window_of_box(box: CropBox, width: int, height: int, pad: int = 2) -> Window:
    """Integer window covering every source pixel a crop can read (nearest and bilinear), + pad, clipped."""
    x0 = max(0, int(math.floor(box.x0)) - pad)
    y0 = max(0, int(math.floor(box.y0)) - pad)
    x1 = min(width, int(math.ceil(box.x0 + box.side)) + 1 + pad)
    y1 = min(height, int(math.ceil(box.y0 + box.side)) + 1 + pad)
    return (x0, y0, max(x1, x0 + 1), max(y1, y0 + 1))


def _projected_extremes(camera: Any, points: np.ndarray, k: int = 32) -> np.ndarray:
    """Pixels (M, 2) of the points (N, 3) (camera frame) whose projections can bound the visible ones' box:
    the k points with the smallest and largest x / z and y / z, projected with the lens model (3 ms for a
    whole body otherwise); all visible points when any of those falls outside the field of view, where
    the extremes inside it may be other points."""
    p = np.asarray(points, np.float64)
    z = p[:, 2]
    if len(p) <= 8 * k or not np.all(z > 0):
        uv, ok = camera.project_with_mask(p)
        return uv[ok]
    xn, yn = p[:, 0] / z, p[:, 1] / z
    pick = np.unique(np.concatenate([np.argpartition(xn, k)[:k], np.argpartition(-xn, k)[:k],
                                     np.argpartition(yn, k)[:k], np.argpartition(-yn, k)[:k]]))
    uv, ok = camera.project_with_mask(p[pick])
    if not ok.all():
        uv, ok = camera.project_with_mask(p)
    return uv[ok]


def _outward_sign(vertices: np.ndarray, faces: np.ndarray) -> int:
    """+1 if the mesh is closed with outward (b - a) x (c - a) normals, -1 if closed and inward, 0 if it
    has open edges (then no back-face culling)."""
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    _, count = np.unique(edges, axis=0, return_counts=True)
    if np.any(count != 2):
        return 0
    v = np.asarray(vertices, np.float64)
    volume = np.einsum("ij,ij->i", v[faces[:, 0]], np.cross(v[faces[:, 1]], v[faces[:, 2]])).sum()
    return 1 if volume > 0 else -1


def _reaches_inner_edge(mask: np.ndarray, window: Window, width: int, height: int) -> bool:
    """True if `mask` (the window's pixels) is set on a side of the window that is not the image's edge."""
    x0, y0, x1, y1 = window
    return bool((y0 > 0 and mask[0].any()) or (y1 < height and mask[-1].any())
                or (x0 > 0 and mask[:, 0].any()) or (x1 < width and mask[:, -1].any()))


def _contains(outer: Window, inner: Window) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and outer[2] >= inner[2] and outer[3] >= inner[3]


def _union(a: Window, b: Window) -> Window:
    return (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))


class SynthEngine:
    """Renders labelled samples and frames. Holds the body model, garment regions, per-rig ray tables
    and aligners (built lazily, cached). One engine per process; not thread-safe.

    body: a `model.body.BodyModel`. Rendering runs on the calling thread (`training.synth.raycast`);
    data generation parallelises over worker processes.
    """

    def __init__(self, body: Any, config: SynthConfig = SynthConfig()):
        import torch  # the body model is torch; keep module import light
        self._torch = torch
        self.body = body
        self.config = config
        with torch.no_grad():
            rest = body(betas=torch.zeros(1, body.num_betas))
        weights = body.lbs_weights.detach().cpu().numpy()
        self.regions: BodyRegions = body_regions(body.v_template.detach().cpu().numpy(),
                                                 rest.joints[0].cpu().numpy(), weights)
        self.faces = np.asarray(body.faces, dtype=np.int64)
        self._texcoords = self.regions.rest_vertices.astype(np.float64)
        self._outward = _outward_sign(body.v_template.detach().cpu().numpy(), self.faces)
        self._aligners: dict[tuple[str, str], Any] = {}
        self._cameras: dict[tuple[str, str], RigCameras] = {}
        self.timings: dict[str, float] = {}   # accumulated seconds per pipeline stage (for `bench`)

    @contextlib.contextmanager
    def _timed(self, stage: str):
        t0 = time.process_time()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.process_time() - t0

    def prewarm(self) -> None:
        """Build ray tables and aligners for every configured mode pair now (else lazily on first use)."""
        for dm, _ in self.config.scene.depth_modes:
            for cr, _ in self.config.scene.color_resolutions:
                self.cameras(dm, cr)
                self.aligner(dm, cr)

    # ---------------------------------------------------------------- cameras
    def rig(self, depth_mode: str, color_resolution: str) -> RgbdRig:
        return load_rig(str(self.config.calibration_path), depth_mode, color_resolution)

    def cameras(self, depth_mode: str, color_resolution: str) -> RigCameras:
        key = (depth_mode, color_resolution)
        if key not in self._cameras:   # (rig_cameras' own cache is keyed by the rig's JSON: ~1 ms a lookup)
            self._cameras[key] = rig_cameras(self.rig(depth_mode, color_resolution))
        return self._cameras[key]

    def half_fov(self, depth_mode: str) -> tuple[float, float]:
        return self.cameras(depth_mode, "720P").depth.half_fov

    def aligner(self, depth_mode: str, color_resolution: str):
        """The app's `ColorToDepthAligner` for a mode pair (built once: ~0.3-6 s depending on the mode)."""
        from calibration.align import ColorToDepthAligner
        key = (depth_mode, color_resolution)
        if key not in self._aligners:
            self._aligners[key] = ColorToDepthAligner(self.rig(depth_mode, color_resolution))
        return self._aligners[key]

    # ---------------------------------------------------------------- scenes and bodies
    def sample_scene(self, rng: np.random.Generator, scene_config: Optional[SceneConfig] = None) -> Scene:
        return sample_scene(rng, scene_config or self.config.scene, self.regions, self.half_fov,
                            num_betas=self.body.num_betas)

    def pose(self, scenes: Sequence[Scene], thetas: Optional[Sequence[Sequence[np.ndarray]]] = None) -> list[list[PosedPerson]]:
        """Pose every person of every scene with one batched body-model forward; camera-frame results.

        thetas: optional per-scene, per-person (72,) overrides of PersonSpec.theta (sequences).
        """
        torch = self._torch
        specs = [(si, pi, p) for si, s in enumerate(scenes) for pi, p in enumerate(s.people)]
        if not specs:
            return [[] for _ in scenes]
        theta = np.stack([thetas[si][pi] if thetas is not None else p.theta for si, pi, p in specs])
        betas = np.stack([p.betas for _, _, p in specs])
        with torch.no_grad():
            out = self.body(betas=torch.as_tensor(betas, dtype=torch.float32),
                            body_pose=torch.as_tensor(theta[:, 3:], dtype=torch.float32),
                            global_orient=torch.as_tensor(theta[:, :3], dtype=torch.float32))
        verts = out.vertices.numpy().astype(np.float64)
        joints = out.joints.numpy().astype(np.float64)
        lsp = out.lsp_joints.numpy().astype(np.float64)
        result: list[list[PosedPerson]] = [[] for _ in scenes]
        R_root = Rotation.from_rotvec(theta[:, :3]).as_matrix()                 # (batched: ~0.1 ms a call)
        R_c = np.stack([scenes[si].sensor.R_cw for si, _, _ in specs]) @ R_root
        root_c = Rotation.from_matrix(R_c).as_rotvec()
        for k, (si, pi, p) in enumerate(specs):
            sensor = scenes[si].sensor
            g = ground_body(verts[k], joints[k], p.floor_xz)
            j0 = joints[k, 0]  # rest pelvis: the root rotates about it, so it is unchanged by posing
            transl = sensor.R_cw @ (j0 + g) + sensor.t_cw - j0
            theta_c = theta[k].copy()
            theta_c[:3] = root_c[k]
            result[si].append(PosedPerson(
                vertices=sensor.to_camera(verts[k] + g), joints=sensor.to_camera(joints[k] + g),
                lsp=sensor.to_camera(lsp[k] + g), betas=p.betas.copy(), theta=theta_c, transl=transl))
        return result

    def soup(self, scene: Scene, posed: Sequence[PosedPerson], viewpoints: Sequence[np.ndarray] = ()) -> TriangleSoup:
        """All triangles of a scene in the depth camera frame (people first, target = person 0).

        viewpoints: camera centres (depth frame) that will cast rays; if given and the body mesh is
        closed, body triangles facing away from all of them are left out (they can never be a ray's
        first hit from those centres), which halves the ray-casting structure's build time.
        """
        parts = []
        for k, (spec, person) in enumerate(zip(scene.people, posed)):
            app = spec.appearance
            faces = self.faces
            if len(viewpoints) and self._outward != 0:
                faces = faces[faces_seen_from(person.vertices, faces, np.asarray(viewpoints), self._outward)]
            parts.append(TriangleSoup(
                vertices=person.vertices, faces=faces, texcoords=self._texcoords,
                face_material=app.vertex_region[faces[:, 0]].astype(np.int32),
                face_object=np.full(len(faces), OBJ_TARGET if k == 0 else OBJ_PERSON, np.int8),
                face_person=np.full(len(faces), k, np.int16), materials=list(app.materials)))
        static = static_triangles(scene).transformed(scene.sensor.R_cw, scene.sensor.t_cw)
        return concat_soups(parts + [static])

    # ---------------------------------------------------------------- rendering
    def render_frame(self, scene: Scene, posed: Sequence[PosedPerson], rng: np.random.Generator, *,
                     crop_only: bool, jpeg: Optional[bool] = None, color_spec: Any = None) -> Optional[tuple[Frame, Optional[CropBox]]]:
        """Render one frame of `scene`.

        crop_only=True: render only what the training crop needs and return (frame, crop box); None if
        the target covers fewer than config.min_visible_px depth pixels. crop_only=False: full frames
        at full resolution (recordings), crop box None. jpeg: JPEG round trip of color (default
        config.jpeg; recordings pass False, their MJPG writer compresses). color_spec: a fixed
        ColorSensorSpec (sequences keep one camera).
        """
        cfg = self.config
        cams = self.cameras(scene.depth_mode, scene.color_resolution)
        rig = cams.rig
        W, H = rig.depth.size
        with self._timed("mesh"):
            mesh = SceneMesh(self.soup(scene, posed, (np.zeros(3), cams.color_origin)))
        target = posed[0]
        t_depth = time.process_time()

        box: Optional[CropBox] = None
        if crop_only:
            uv = _projected_extremes(rig.depth, target.vertices)
            if uv.shape[0] == 0:
                return None
            lo = np.maximum(uv.min(axis=0), [-0.5, -0.5])
            hi = np.minimum(uv.max(axis=0), [W - 0.5, H - 0.5])
            if not np.all(hi > lo):
                return None
            # the first window covers any jittered crop of the vertices' box (scale 1 + j and a shift of
            # up to j sides each way: half side (1 + 3j) / 2) and its stride passes the 0.85 test below for
            # the smallest such crop, so a second depth pass is needed only when occlusion or the image
            # edge shrinks the mask
            j = cfg.crop_jitter
            estimate = box_around((*lo, *hi), cfg.out_size, cfg.crop_margin * (1 + 3 * j))
            window = _window_of_box(estimate, W, H)
            stride = self._stride(estimate.side * (1 - j) / (1 + 3 * j) / 0.87)
            jitter = rng.uniform(-cfg.crop_jitter, cfg.crop_jitter, 3) if cfg.crop_jitter > 0 else np.zeros(3)
            larger: Optional[Window] = None
            for attempt in range(4):
                grid = Grid(window, stride)
                dr = render_depth(mesh, cams, grid)
                mask_w = grid.upsample_nearest(dr.obj == OBJ_TARGET)
                if larger is not None and _reaches_inner_edge(mask_w, window, W, H):
                    window, larger = larger, None    # the person reaches past the crop's window: the larger one
                    continue
                visible = int(np.count_nonzero(mask_w))
                if visible < cfg.min_visible_px:
                    return None
                bbox = _bbox_of(mask_w, window[:2])
                box = self._crop_box(bbox, jitter)
                need = _window_of_box(box, W, H)
                need_stride = self._stride(box.side)
                if _contains(window, need) and need_stride >= 0.85 * stride:
                    break
                # grow with a margin (the strided mask's edges move by up to a block with the window);
                # the last pass renders the whole image, which contains any crop
                stride = min(stride, need_stride)
                pad = 2 + int(math.ceil(2 * stride))
                if attempt == 0 and _contains(window, need):
                    # only the crop shrank (occlusion or the image edge hid part of the person): the finer
                    # pass covers just the crop's window (checked above for a mask cut by its edge)
                    window, larger = _window_of_box(box, W, H, pad=pad), window
                    continue
                window, larger = _union(window, _window_of_box(box, W, H, pad=pad)), None
                if attempt == 2:
                    window = (0, 0, W, H)
        else:
            window, stride = (0, 0, W, H), 1.0
            grid = Grid(window, 1.0)
            dr = render_depth(mesh, cams, grid)
            mask_w = dr.obj == OBJ_TARGET
            visible = int(np.count_nonzero(mask_w))
            bbox = _bbox_of(mask_w, window[:2])

        # depth sensor (on the render grid; a stride s scales the pixel size, so the edge effects, which
        # hit a band of pixels along depth jumps, are made s times rarer to keep their density per metre)
        x0, y0, x1, y1 = window
        if cfg.depth_noise:
            noise_cfg = dataclasses.replace(cfg.depth_sensor, depth_mode=scene.depth_mode)
            if stride > 1:
                noise_cfg = dataclasses.replace(noise_cfg, edge_invalid_prob=noise_cfg.edge_invalid_prob / stride,
                                                flying_pixel_prob=noise_cfg.flying_pixel_prob / stride)
            K = rig.depth
            o = grid.offset
            depth_g = apply_depth_noise(dr.z, dr.normals, dr.reflectance, noise_cfg, rng,
                                        intrinsics=(K.fx / stride, K.fy / stride, (K.cx - x0 - o) / stride,
                                                    (K.cy - y0 - o) / stride))
        else:
            depth_g = np.clip(np.rint(dr.z * 1000.0), 0, 65535).astype(np.uint16)
        depth_w = grid.upsample_nearest(depth_g)
        depth_mm = np.zeros((H, W), np.uint16)
        depth_mm[y0:y1, x0:x1] = depth_w
        ideal = np.zeros((H, W), np.float32)
        ideal[y0:y1, x0:x1] = grid.upsample_nearest(dr.z)
        mask = np.zeros((H, W), bool)
        mask[y0:y1, x0:x1] = mask_w

        self.timings["depth"] = self.timings.get("depth", 0.0) + time.process_time() - t_depth
        t_color = time.process_time()
        # color camera: the rectangle the window's depth pixels can land in (or the full image)
        Wc, Hc = rig.color.size
        # (only the depth pixels the crop can read matter: the aligner's output elsewhere is never used)
        if crop_only:
            nx0, ny0, nx1, ny1 = need
            cwin = self._color_window(cams, depth_w[ny0 - y0:ny1 - y0, nx0 - x0:nx1 - x0], need)
        else:
            cwin = (0, 0, Wc, Hc)
        color_bgr = np.zeros((Hc, Wc, 3), np.uint8)
        if cwin is not None:
            if box is not None:
                nx0, ny0, nx1, ny1 = need
                magnification = min((cwin[2] - cwin[0]) / (nx1 - nx0), (cwin[3] - cwin[1]) / (ny1 - ny0))
                c_stride = self._stride(box.side, magnification, cfg.color_oversample)
            else:
                c_stride = 1.0
            cgrid = Grid(cwin, c_stride)
            cr = render_color(mesh, cams, scene.lighting, scene.sensor, cgrid)
            spec = None
            if cfg.color_noise:
                spec = color_spec if color_spec is not None else sample_color_sensor(rng, cfg.color_sensor)
            img = color_sensor_image(cr.linear, spec, rng, cgrid, (Wc, Hc))
            if cfg.jpeg if jpeg is None else jpeg:
                img = jpeg_roundtrip(img, spec.jpeg_quality if spec is not None else 90)
            color_bgr[cwin[1]:cwin[3], cwin[0]:cwin[2]] = img
        else:
            cwin = (0, 0, 0, 0)

        self.timings["color"] = self.timings.get("color", 0.0) + time.process_time() - t_color
        with self._timed("labels"):
            labels = self._joint_labels(mesh, cams, target)
        frame = Frame(scene=scene, person=target, rig=rig, depth_mm=depth_mm, color_bgr=color_bgr,
                      depth_window=window, color_window=cwin, stride=stride, mask=mask, bbox=bbox,
                      visible_px=visible, depth_ideal_m=ideal, **labels)
        return frame, box

    def _stride(self, crop_side: float, magnification: float = 1.0, oversample: float = 1.0) -> float:
        """Render stride for a crop of `crop_side` depth px (see SynthConfig.render_oversample);
        oversample: an extra factor on render_oversample (color: SynthConfig.color_oversample)."""
        cfg = self.config
        s = crop_side * magnification / (cfg.out_size * cfg.render_oversample * oversample)
        s = min(float(cfg.max_render_stride), s)
        return 1.0 if s < 1.05 else float(s)

    def _crop_box(self, bbox: np.ndarray, jitter: np.ndarray) -> CropBox:
        """The app's `box_around(bbox)` with relative jitter (scale, shift x, shift y) of the side."""
        cfg = self.config
        box = box_around(bbox, cfg.out_size, cfg.crop_margin)
        if np.any(jitter != 0):
            side = box.side * (1.0 + jitter[0])
            cx, cy = box.center
            cx += jitter[1] * box.side
            cy += jitter[2] * box.side
            box = CropBox(x0=cx - side / 2, y0=cy - side / 2, side=side, out_size=cfg.out_size)
        return box

    @staticmethod
    def _color_window(cams: RigCameras, depth_w: np.ndarray, window: Window, pad: int = 3,
                      step: int = 8) -> Optional[Window]:
        """Color-image rectangle covering every color pixel the aligner may read for the window's depth.

        For a fixed depth pixel the color pixel moves smoothly along the epipolar line as depth changes,
        and for a fixed depth the map is a smooth bijection, so the images of the window's border pixels
        at its smallest and largest valid depth bound the images of all its pixels. The border's valid
        pixels are sampled every `step` pixels, at each side's ends and at both ends of each run of valid
        pixels (the wide field of view's rim); `pad` covers the curvature between samples (far below a
        pixel over 8 px) and the bilinear neighbours.
        """
        hit = depth_w[depth_w > 0]
        if hit.size == 0:
            return None
        x0, y0, x1, y1 = window
        zs = np.array([hit.min(), hit.max()], np.float64) / 1000.0
        xs, ys = np.arange(x0, x1), np.arange(y0, y1)
        border = np.concatenate([np.c_[xs, np.full_like(xs, y0)], np.c_[xs, np.full_like(xs, y1 - 1)],
                                 np.c_[np.full_like(ys, x0), ys], np.c_[np.full_like(ys, x1 - 1), ys]])
        keep = cams.depth.valid[border[:, 1], border[:, 0]]
        # every step-th border pixel, each side's ends and both ends of every run of valid pixels
        sample = np.zeros(len(border), bool)
        sample[::step] = True
        ends = np.cumsum([len(xs), len(xs), len(ys), len(ys)])
        sample[ends - 1] = True
        sample[np.r_[0, ends[:-1]]] = True
        change = np.flatnonzero(keep[1:] != keep[:-1])
        sample[change] = True
        sample[change + 1] = True
        keep &= sample
        rays = np.ones((int(keep.sum()), 3))
        rays[:, :2] = cams.depth.xy[border[keep, 1], border[keep, 0]]
        pts = (rays[None, :, :] * zs[:, None, None]).reshape(-1, 3)
        uv, ok = cams.rig.color.project_with_mask(cams.rig.depth_to_color.apply(pts))
        uv = uv[ok]
        Wc, Hc = cams.rig.color.size
        if uv.shape[0] == 0:
            return None
        cx0 = max(0, int(math.floor(uv[:, 0].min())) - pad)
        cy0 = max(0, int(math.floor(uv[:, 1].min())) - pad)
        cx1 = min(Wc, int(math.ceil(uv[:, 0].max())) + 1 + pad)
        cy1 = min(Hc, int(math.ceil(uv[:, 1].max())) + 1 + pad)
        if cx1 <= cx0 or cy1 <= cy0:
            return None
        return (cx0, cy0, cx1, cy1)

    def _joint_labels(self, mesh: SceneMesh, cams: RigCameras, person: PosedPerson) -> dict[str, np.ndarray]:
        """2D joints in both images and their visibility by a ray test (see module docstring)."""
        rig = cams.rig
        tol = self.config.visibility_tolerance_m
        pts = np.concatenate([person.joints, person.lsp])          # (38, 3) depth frame
        n_j = person.joints.shape[0]
        out = {}
        for cam_name, intr, to_cam in (("depth", rig.depth, lambda p: p), ("color", rig.color, rig.depth_to_color.apply)):
            p_cam = to_cam(pts)
            uv, ok = intr.project_with_mask(p_cam)
            W, H = intr.size
            with np.errstate(invalid="ignore"):
                ok &= (uv[:, 0] >= -0.5) & (uv[:, 0] <= W - 0.5) & (uv[:, 1] >= -0.5) & (uv[:, 1] <= H - 0.5)
            z = p_cam[:, 2]
            with np.errstate(divide="ignore", invalid="ignore"):
                xy = np.where((z > 0)[:, None], p_cam[:, :2] / z[:, None], np.nan)   # the ray through each point
            hits = mesh.cast_points(cams, cam_name, xy)
            own = np.zeros(len(pts), bool)
            hf = hits.face >= 0
            own[hf] = mesh.soup.face_person[hits.face[hf]] == 0
            clear = hits.t >= z - 0.01                 # nothing in front of the point (surface keypoints)
            vis = ok & (clear | (own & (z - hits.t <= tol)))
            out[f"joints2d_{cam_name}"] = uv[:n_j]
            out[f"joints_vis_{cam_name}"] = vis[:n_j]
            out[f"lsp2d_{cam_name}"] = uv[n_j:]
            out[f"lsp_vis_{cam_name}"] = vis[n_j:]
        return out

    # ---------------------------------------------------------------- training samples
    def make_samples(self, seed: int, indices: Sequence[int], max_attempts: int = 20) -> list[Sample]:
        """Labelled training samples for `indices` of the data set `seed` (bodies posed in one batch)."""
        rngs = [sample_rng(seed, i) for i in indices]
        with self._timed("scene"):
            scenes = [self.sample_scene(r) for r in rngs]
        with self._timed("pose"):
            posed = self.pose(scenes)
        out = []
        for idx, rng, scene, people in zip(indices, rngs, scenes, posed):
            attempts = 1
            result = self.render_frame(scene, people, rng, crop_only=True)
            while result is None:
                if attempts >= max_attempts:
                    raise RuntimeError(f"sample {idx}: no scene with a visible person after {attempts} attempts; "
                                       "check SceneConfig (distance, field of view) and min_visible_px")
                with self._timed("scene"):
                    scene = self.sample_scene(rng)
                with self._timed("pose"):
                    people = self.pose([scene])[0]
                attempts += 1
                result = self.render_frame(scene, people, rng, crop_only=True)
            frame, box = result
            with self._timed("align+crop"):
                out.append(self._to_sample(idx, frame, box, attempts))
        return out

    def _to_sample(self, index: int, frame: Frame, box: CropBox, attempts: int) -> Sample:
        rig = frame.rig
        W, H = rig.depth.size      # (the crop reads only the aligned pixels of its box's window)
        aligned, _valid = self.aligner(frame.scene.depth_mode, frame.scene.color_resolution)(
            frame.color_bgr, frame.depth_mm, window=_window_of_box(box, W, H))
        rgb = crop_color(aligned, box)[..., ::-1].copy()
        depth = crop_depth(frame.depth_mm, box)
        mask = crop_mask(frame.mask, box)
        j2d = box.source_to_crop(frame.joints2d_depth)
        l2d = box.source_to_crop(frame.lsp2d_depth)
        S = box.out_size

        def in_crop(p: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore"):
                return (p[:, 0] >= -0.5) & (p[:, 0] <= S - 0.5) & (p[:, 1] >= -0.5) & (p[:, 1] <= S - 0.5)

        p = frame.person
        K = rig.depth
        try:
            dist = K.opencv_dist_coeffs()
        except Exception:  # non-Brown-Conrady calibrations have no OpenCV equivalent
            dist = np.full(8, np.nan)
        return Sample(
            index=int(index), rgb=rgb, depth_mm=depth, mask=mask,
            betas=p.betas.astype(np.float32), theta=p.theta.astype(np.float32), transl=p.transl.astype(np.float32),
            joints3d=p.joints.astype(np.float32), lsp3d=p.lsp.astype(np.float32),
            joints2d=j2d.astype(np.float32), lsp2d=l2d.astype(np.float32),
            joints_vis=frame.joints_vis_depth & in_crop(j2d), lsp_vis=frame.lsp_vis_depth & in_crop(l2d),
            crop_box=np.array([box.x0, box.y0, box.side, box.out_size], np.float32),
            K=K.K.astype(np.float32), dist=dist.astype(np.float32), bbox=frame.bbox.astype(np.float32),
            depth_mode=frame.scene.depth_mode, color_resolution=frame.scene.color_resolution, attempts=attempts)


# ------------------------------------------------------------------------------------------ pictures
# LSP skeleton (LSP_JOINT_NAMES order): legs, hips, torso sides, arms, shoulders-neck, neck-head_top
LSP_EDGES = ((0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (2, 8), (3, 9), (6, 7), (7, 8), (8, 12), (9, 12),
             (9, 10), (10, 11), (12, 13))


def depth_colormap(depth_mm: np.ndarray, mask: Optional[np.ndarray] = None, span_m: float = 1.5) -> np.ndarray:
    """uint16 depth (H, W) -> BGR picture: turbo colours over +-span_m around the person's median depth
    (or the image's), black where invalid."""
    import cv2
    valid = depth_mm > 0
    ref = depth_mm[valid & mask] if mask is not None and np.any(valid & mask) else depth_mm[valid]
    centre = float(np.median(ref)) if ref.size else 2000.0
    lo = centre - span_m * 1000.0
    norm = np.clip((depth_mm.astype(np.float32) - lo) / (2 * span_m * 1000.0), 0, 1)
    img = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    img[~valid] = 0
    return img


def draw_sample(sample: dict | Sample) -> np.ndarray:
    """A 2x2 picture of one training sample (BGR uint8, 2S x 2S): color | depth, keypoints | mask.
    Keypoints: LSP-14, green = visible, red = not visible (occluded or outside)."""
    import cv2
    get = (lambda k: sample[k]) if isinstance(sample, dict) else (lambda k: getattr(sample, k))
    rgb = np.asarray(get("rgb"))
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    mask = np.asarray(get("mask"), bool)
    depth = depth_colormap(np.asarray(get("depth_mm")), mask)
    kp = bgr.copy()
    pts = np.asarray(get("lsp2d"), np.float64)
    vis = np.asarray(get("lsp_vis"), bool)
    S = rgb.shape[0]
    thick = max(1, S // 160)
    for a, b in LSP_EDGES:
        if np.all(np.isfinite(pts[[a, b]])):
            cv2.line(kp, tuple(int(round(v)) for v in pts[a]), tuple(int(round(v)) for v in pts[b]),
                     (255, 200, 0), thick, cv2.LINE_AA)
    for p, v in zip(pts, vis):
        if np.all(np.isfinite(p)):
            cv2.circle(kp, (int(round(p[0])), int(round(p[1]))), 2 * thick + 1, (0, 220, 0) if v else (0, 0, 255),
                       -1, cv2.LINE_AA)
    overlay = bgr.copy()
    overlay[mask] = (0.45 * overlay[mask] + 0.55 * np.array([255, 80, 200])).astype(np.uint8)
    return np.vstack([np.hstack([bgr, depth]), np.hstack([kp, overlay])])


def contact_sheet(samples: Sequence[dict | Sample], columns: int = 4, captions: Optional[Sequence[str]] = None) -> np.ndarray:
    """Tiles of `draw_sample` in a grid (BGR uint8), each captioned (e.g. depth mode / resolution)."""
    import cv2
    tiles = []
    for i, s in enumerate(samples):
        tile = draw_sample(s)
        bar = np.full((22, tile.shape[1], 3), 32, np.uint8)
        text = captions[i] if captions is not None else ""
        cv2.putText(bar, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (235, 235, 235), 1, cv2.LINE_AA)
        tiles.append(np.vstack([bar, tile]))
    if not tiles:
        raise ValueError("contact_sheet needs at least one sample")
    rows = []
    blank = np.zeros_like(tiles[0])
    for r in range(0, len(tiles), columns):
        row = tiles[r:r + columns] + [blank] * (columns - len(tiles[r:r + columns]))
        rows.append(np.hstack([np.pad(t, ((2, 2), (2, 2), (0, 0))) for t in row]))
    return np.vstack(rows)
