"""The viewer's 3D scene: colored point cloud, body mesh, skeleton and floor grid as Open3D geometries.

Frame and units: everything lives in the *depth camera frame* (OpenCV: x right, y down, z forward),
metres: the frame of `FrameResult.body` and of the sensor's point cloud, so the mesh sits on the points.

Geometry is allocated once and updated in place (`np.asarray(geometry.points)[:] = ...`):
- point cloud: a fixed buffer of (Hd / stride) x (Wd / stride) points; pixels without a valid point
  repeat the first valid point (invisible duplicates, no fake points at the origin). Colors come from
  the color image aligned onto the depth grid (`calibration.ColorToDepthAligner`, built once per rig,
  about a second); points without color (no color image, outside the color camera's view) get a gray
  ramp over depth;
- mesh: `faces` (F, 3) fixed at construction, vertices (V, 3) overwritten each frame, normals
  recomputed, colored by the input mode (`MODE_COLORS`);
- skeleton: a LineSet of the joints (J, 3) with one line per (joint, parent);
- floor grid: a LineSet in the plane y = floor height (camera y points down), centred under the person's
  expected place; with `SceneConfig.floor_y_m = None` the height follows the lowest body vertex (feet),
  smoothed. The grid is perpendicular to the camera's y axis, so a strongly tilted sensor shows it tilted.
A buffer is re-allocated only when the input size changes (another depth mode, another vertex count).

`Scene3D` knows nothing about windows; `attach` / `sync` add, remove and refresh its geometries in any
legacy `open3d.visualization.Visualizer` (the window in `app.viewer`, or `OffscreenView` below, a hidden
Visualizer that Open3D renders through EGL when there is no display).

Threads: a `Scene3D` and the Visualizer it is attached to belong to the thread that created them (the
GUI / main thread in the app); nothing here is thread-safe.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import open3d as o3d

from app.frames import RgbdFrame
from app.results import FrameResult, InputMode
from calibration.intrinsics import CameraIntrinsics
from calibration.pointcloud import depth_to_points
from calibration.rig import RgbdRig

__all__ = [
    "GEOMETRY_NAMES", "MODE_COLORS", "SceneConfig", "Scene3D", "SensorView", "OffscreenView",
    "check_faces", "check_parents", "skeleton_edges", "sensor_view",
]

GEOMETRY_NAMES = ("cloud", "mesh", "skeleton", "grid")
"""Names of the scene's geometries (keys of `Scene3D.geometries`, `visible`, `present`)."""

MODE_COLORS: dict[str, tuple[float, float, float]] = {
    InputMode.RGBD.value: (0.96, 0.62, 0.26),    # orange
    InputMode.DEPTH.value: (0.33, 0.66, 0.96),   # blue
    InputMode.RGB.value: (0.42, 0.84, 0.42),     # green
    InputMode.NONE.value: (0.62, 0.62, 0.62),    # gray
}
"""Mesh color per input mode, RGB floats in [0, 1] (the headless overlay uses the same colors)."""

SKELETON_COLOR = (1.0, 0.15, 0.35)
GRID_COLOR = (0.45, 0.45, 0.5)


# ---------------------------------------------------------------------------------------- checks
def check_faces(faces: Any) -> np.ndarray:
    """Faces (F, 3) of vertex indices -> a read-only int32 copy; ValueError naming the problem."""
    arr = np.asarray(faces)
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] == 0:
        raise ValueError(f"faces must be an (F, 3) array of vertex indices, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"faces must be integers (vertex indices), got dtype {arr.dtype}")
    if arr.min() < 0:
        raise ValueError(f"faces hold a negative vertex index ({int(arr.min())})")
    out = arr.astype(np.int32)
    out.setflags(write=False)
    return out


def check_parents(parents: Any) -> tuple[int, ...]:
    """Kinematic tree (J,) with parents[0] == -1 and parents[j] < j (SMPL_PARENTS) -> tuple of ints."""
    try:
        tree = tuple(int(p) for p in parents)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"parents must be a sequence of joint indices, got {parents!r}") from exc
    if not tree or tree[0] != -1:
        raise ValueError(f"parents must start with -1 (the root), got {tree[:3]}")
    for j, p in enumerate(tree[1:], start=1):
        if not 0 <= p < j:
            raise ValueError(f"parents[{j}] = {p}: a joint's parent must be an earlier joint")
    return tree


def skeleton_edges(parents: Sequence[int]) -> np.ndarray:
    """(J - 1, 2) int32 lines (joint, parent) of a kinematic tree."""
    tree = check_parents(parents)
    return np.array([(j, p) for j, p in enumerate(tree) if p >= 0], dtype=np.int32).reshape(-1, 2)


def _check_body_arrays(vertices: np.ndarray, joints: np.ndarray, n_joints: int, max_face_index: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(vertices)
    j = np.asarray(joints)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"body.vertices must be (V, 3) metres, got shape {v.shape}")
    if v.shape[0] <= max_face_index:
        raise ValueError(f"body has {v.shape[0]} vertices but the faces index vertex {max_face_index}: "
                         "faces and body model do not match")
    if j.shape != (n_joints, 3):
        raise ValueError(f"body.joints must be ({n_joints}, 3) metres (one per parent), got shape {j.shape}")
    return v, j


# ---------------------------------------------------------------------------------------- scene
@dataclass(frozen=True)
class SceneConfig:
    """What the scene draws and how.

    cloud_stride: keep every n-th depth pixel in x and y (2: a quarter of the points);
    cloud_max_depth_m: farther points are dropped; cloud_color: color the cloud from the color image when
    the frame has one (else a gray ramp over depth); floor_y_m: floor height along camera y (down),
    None = follow the body's lowest vertex with `floor_smoothing` (0..1, weight of the new value);
    grid_half_width_m / grid_near_m / grid_far_m / grid_step_m: the grid's extent in x and z and its
    spacing.
    """

    cloud_stride: int = 2
    cloud_max_depth_m: float = 8.0
    cloud_color: bool = True
    floor_y_m: Optional[float] = None
    floor_smoothing: float = 0.2
    default_floor_y_m: float = 1.0
    grid_half_width_m: float = 2.5
    grid_near_m: float = 0.5
    grid_far_m: float = 5.5
    grid_step_m: float = 0.5

    def __post_init__(self) -> None:
        if int(self.cloud_stride) != self.cloud_stride or self.cloud_stride < 1:
            raise ValueError(f"cloud_stride must be a positive integer, got {self.cloud_stride!r}")
        if not self.cloud_max_depth_m > 0:
            raise ValueError(f"cloud_max_depth_m must be > 0, got {self.cloud_max_depth_m}")
        if not 0.0 < self.floor_smoothing <= 1.0:
            raise ValueError(f"floor_smoothing must be in (0, 1], got {self.floor_smoothing}")
        if not (self.grid_step_m > 0 and self.grid_half_width_m > 0 and self.grid_far_m > self.grid_near_m):
            raise ValueError("grid needs grid_step_m > 0, grid_half_width_m > 0 and grid_far_m > grid_near_m")


class Scene3D:
    """Point cloud + body mesh + skeleton + floor grid of one view, updated in place per frame.

    Thread: owned by the thread that created it (the GUI thread); `update` and `sync` run there.
    faces: (F, 3) vertex indices of the body mesh; parents: (J,) kinematic tree (SMPL_PARENTS).
    `visible[name]`: the user's toggles; `present[name]`: whether the last update had data for it
    (no body -> no mesh and skeleton; no depth -> no cloud). A geometry is drawn when both are true.
    """

    def __init__(self, faces: Any, parents: Sequence[int], config: SceneConfig = SceneConfig()):
        self.config = config
        self.faces = check_faces(faces)
        self.parents = check_parents(parents)
        self.edges = skeleton_edges(self.parents)
        self.visible = {name: True for name in GEOMETRY_NAMES}
        self.present = {name: False for name in GEOMETRY_NAMES}
        self.present["grid"] = True
        self.mode = InputMode.NONE.value
        self.floor_y = config.floor_y_m if config.floor_y_m is not None else config.default_floor_y_m
        self._floor_seen = False

        self.cloud = o3d.geometry.PointCloud()
        self._cloud_shape: Optional[tuple[int, int]] = None
        self._aligner = None

        self.mesh = o3d.geometry.TriangleMesh()
        self._allocate_mesh(int(self.faces.max()) + 1)

        n_joints = len(self.parents)
        self.skeleton = o3d.geometry.LineSet()
        self.skeleton.points = o3d.utility.Vector3dVector(np.zeros((n_joints, 3)))
        self.skeleton.lines = o3d.utility.Vector2iVector(self.edges)
        self.skeleton.colors = o3d.utility.Vector3dVector(np.tile(SKELETON_COLOR, (len(self.edges), 1)))

        self.grid = o3d.geometry.LineSet()
        self._grid_points = self._build_grid()  # (N, 3) at y = 0; shifted to floor_y in place
        self.grid.points = o3d.utility.Vector3dVector(self._grid_points)
        self.grid.lines = o3d.utility.Vector2iVector(np.arange(len(self._grid_points)).reshape(-1, 2))
        self.grid.colors = o3d.utility.Vector3dVector(np.tile(GRID_COLOR, (len(self._grid_points) // 2, 1)))
        self._place_grid()

        self.geometries: dict[str, Any] = {"cloud": self.cloud, "mesh": self.mesh, "skeleton": self.skeleton,
                                           "grid": self.grid}
        self._attached: dict[int, set[str]] = {}  # id(visualizer) -> names currently added to it
        self._dirty: set[str] = set(GEOMETRY_NAMES)

    # ------------------------------------------------------------------ allocation
    def _allocate_mesh(self, n_vertices: int) -> None:
        self.mesh.vertices = o3d.utility.Vector3dVector(np.zeros((n_vertices, 3)))
        self.mesh.triangles = o3d.utility.Vector3iVector(np.array(self.faces))  # needs a writable buffer
        self.mesh.compute_vertex_normals()
        self.mesh.paint_uniform_color(MODE_COLORS[self.mode])

    def _allocate_cloud(self, shape: tuple[int, int]) -> None:
        n = shape[0] * shape[1]
        self.cloud.points = o3d.utility.Vector3dVector(np.zeros((n, 3)))
        self.cloud.colors = o3d.utility.Vector3dVector(np.zeros((n, 3)))
        self._cloud_shape = shape

    def _build_grid(self) -> np.ndarray:
        c = self.config
        xs = np.arange(-c.grid_half_width_m, c.grid_half_width_m + 1e-9, c.grid_step_m)
        zs = np.arange(c.grid_near_m, c.grid_far_m + 1e-9, c.grid_step_m)
        segs = [((x, 0.0, zs[0]), (x, 0.0, zs[-1])) for x in xs]
        segs += [((xs[0], 0.0, z), (xs[-1], 0.0, z)) for z in zs]
        return np.asarray(segs, dtype=np.float64).reshape(-1, 3)

    def _place_grid(self) -> None:
        pts = np.asarray(self.grid.points)
        pts[:] = self._grid_points
        pts[:, 1] = self.floor_y

    # ------------------------------------------------------------------ per frame
    def update(self, frame: Optional[RgbdFrame], result: Optional[FrameResult]) -> set[str]:
        """Copy one frame's data into the geometries (in place). Returns the names that changed.

        frame: its depth (and color) make the cloud; None or no depth -> the cloud is not present.
        result: its body makes mesh + skeleton (colored by `result.mode`); None or no body -> absent.
        """
        changed: set[str] = set()
        if frame is not None:
            had = self.present["cloud"]
            self.present["cloud"] = self._update_cloud(frame)
            if self.present["cloud"] or had:
                changed.add("cloud")
        body = result.body if result is not None else None
        if body is not None:
            vertices, joints = _check_body_arrays(body.vertices, body.joints, len(self.parents),
                                                  int(self.faces.max()))
            if vertices.shape[0] != len(self.mesh.vertices):
                self._allocate_mesh(vertices.shape[0])
            np.asarray(self.mesh.vertices)[:] = vertices
            self.mesh.compute_vertex_normals()
            mode = InputMode(result.mode).value
            if mode != self.mode:
                self.mode = mode
                self.mesh.paint_uniform_color(MODE_COLORS[mode])
            np.asarray(self.skeleton.points)[:] = joints
            self.present["mesh"] = self.present["skeleton"] = True
            changed |= {"mesh", "skeleton"}
            if self.config.floor_y_m is None:
                feet = float(np.max(vertices[:, 1]))
                if np.isfinite(feet):
                    a = self.config.floor_smoothing
                    self.floor_y = feet if not self._floor_seen else (1 - a) * self.floor_y + a * feet
                    self._floor_seen = True
                    self._place_grid()
                    changed.add("grid")
        elif result is not None:
            if self.present["mesh"]:
                changed |= {"mesh", "skeleton"}
            self.present["mesh"] = self.present["skeleton"] = False
        self._dirty |= changed
        return changed

    def _update_cloud(self, frame: RgbdFrame) -> bool:
        if frame.depth_mm is None:
            return False
        s = self.config.cloud_stride
        points, valid = depth_to_points(frame.rig.depth, frame.depth_mm)
        pts = points[::s, ::s]
        ok = valid[::s, ::s] & (pts[..., 2] <= self.config.cloud_max_depth_m)
        if pts.shape[:2] != self._cloud_shape:
            self._allocate_cloud(pts.shape[:2])
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return False
        n = idx.size
        buf_p = np.asarray(self.cloud.points)
        buf_c = np.asarray(self.cloud.colors)
        buf_p[:n] = pts.reshape(-1, 3)[idx]
        buf_p[n:] = buf_p[0]
        # gray ramp (near bright, far dark) for every point, then the aligned color where there is one
        buf_c[:n] = np.clip(0.95 - 0.12 * buf_p[:n, 2], 0.25, 0.95)[:, None]
        if self.config.cloud_color and frame.color_bgr is not None:
            colors, color_valid = self._aligner_for(frame.rig)(frame.color_bgr, frame.depth_mm)
            has_color = color_valid[::s, ::s].reshape(-1)[idx]
            buf_c[:n][has_color] = colors[::s, ::s].reshape(-1, 3)[idx[has_color]][:, ::-1] * (1.0 / 255.0)
        buf_c[n:] = buf_c[0]
        return True

    def _aligner_for(self, rig: RgbdRig):
        if self._aligner is None or (self._aligner.rig is not rig and self._aligner.rig != rig):
            from calibration.align import ColorToDepthAligner
            self._aligner = ColorToDepthAligner(rig)
        return self._aligner

    # ------------------------------------------------------------------ visualizer
    def drawn(self, name: str) -> bool:
        """Whether `name` should be on screen now (toggled on and has data)."""
        return self.visible[name] and self.present[name]

    def toggle(self, name: str) -> bool:
        """Flip the user's visibility of one geometry; returns the new state."""
        if name not in self.visible:
            raise ValueError(f"unknown geometry {name!r}; expected one of {GEOMETRY_NAMES}")
        self.visible[name] = not self.visible[name]
        return self.visible[name]

    def attach(self, vis: Any) -> None:
        """Add the drawn geometries to a legacy Visualizer. The grid goes first with a bounding-box reset,
        so the view control has a sensible extent (near/far planes) before any camera is set."""
        added = self._attached.setdefault(id(vis), set())
        vis.add_geometry(self.grid, reset_bounding_box=True)
        added.add("grid")
        self.sync(vis)

    def sync(self, vis: Any) -> None:
        """Bring `vis` in line with the scene: add / remove geometries whose drawn state changed and
        refresh the ones updated since the last sync. Never resets the view."""
        added = self._attached.setdefault(id(vis), set())
        for name in GEOMETRY_NAMES:
            geometry = self.geometries[name]
            want = self.drawn(name)
            if want and name not in added:
                vis.add_geometry(geometry, reset_bounding_box=False)
                added.add(name)
            elif not want and name in added:
                vis.remove_geometry(geometry, reset_bounding_box=False)
                added.discard(name)
            elif want and name in self._dirty:
                vis.update_geometry(geometry)
        self._dirty.clear()

    def detach(self, vis: Any) -> None:
        for name in self._attached.pop(id(vis), set()):
            vis.remove_geometry(self.geometries[name], reset_bounding_box=False)


# ---------------------------------------------------------------------------------------- cameras
@dataclass(frozen=True)
class SensorView:
    """A pinhole view (no distortion) looking out of the sensor: K (3, 3) in pixels of a (width, height)
    image, extrinsic = identity (the view's frame is the depth camera frame)."""

    width: int
    height: int
    K: np.ndarray

    def project(self, points: np.ndarray) -> np.ndarray:
        """Points (..., 3) metres, depth camera frame -> pixels (..., 2) of this view."""
        p = np.asarray(points, dtype=np.float64)
        z = p[..., 2:3]
        return (p[..., :2] / z) * np.array([self.K[0, 0], self.K[1, 1]]) + np.array([self.K[0, 2], self.K[1, 2]])

    def o3d_parameters(self, extrinsic: Optional[np.ndarray] = None) -> Any:
        params = o3d.camera.PinholeCameraParameters()
        params.intrinsic = o3d.camera.PinholeCameraIntrinsic(self.width, self.height, self.K[0, 0], self.K[1, 1],
                                                             self.K[0, 2], self.K[1, 2])
        params.extrinsic = np.eye(4) if extrinsic is None else np.asarray(extrinsic, dtype=np.float64)
        return params

    def apply(self, vis: Any, extrinsic: Optional[np.ndarray] = None) -> None:
        """Point `vis`'s camera along this view (`extrinsic`: 4x4 depth camera frame -> view camera, OpenCV
        axes; None = the sensor itself). Open3D's legacy view control only takes a centred principal
        point (cx = W/2 - 0.5) and derives its field of view from fy."""
        if extrinsic is not None and np.asarray(extrinsic).shape != (4, 4):
            raise ValueError(f"extrinsic must be a 4x4 matrix, got shape {np.asarray(extrinsic).shape}")
        ok = vis.get_view_control().convert_from_pinhole_camera_parameters(self.o3d_parameters(extrinsic),
                                                                            allow_arbitrary=True)
        if not ok:
            raise RuntimeError(f"Open3D refused the sensor view ({self.width}x{self.height}, "
                               f"f={self.K[1, 1]:.1f} px)")


def sensor_view(camera: CameraIntrinsics, size: tuple[int, int]) -> SensorView:
    """The sensor's field of view fitted into a window of `size` = (width, height) px, principal point
    centred (Open3D's legacy view control needs that): the whole camera image fits, scaled by
    min(W / w, H / h); one focal length (fy) for both axes."""
    width, height = (int(v) for v in size)
    if width <= 0 or height <= 0:
        raise ValueError(f"view size must be positive (width, height), got {size}")
    s = min(width / camera.width, height / camera.height)
    f = camera.fy * s
    K = np.array([[f, 0.0, width / 2 - 0.5], [0.0, f, height / 2 - 0.5], [0.0, 0.0, 1.0]])
    return SensorView(width, height, K)


class OffscreenView:
    """A hidden legacy Open3D Visualizer that renders a `Scene3D` from the sensor's exact pinhole viewpoint.

    The camera's principal point is generally off-centre, which Open3D's view control cannot take, so
    the hidden canvas is padded until the principal point is its centre and `capture` crops the padding
    off: the result has the camera's image size times `scale` and `view.K` equal to the camera's
    (scaled) pinhole matrix to within half a pixel; lens distortion is not drawn (points are undistorted).
    Without a display Open3D renders through EGL (Mesa); ~10 ms a frame on two CPU cores.

    Thread: owned by the creating thread. Close it (or use `with`) to free the GL context.
    """

    def __init__(self, scene: Scene3D, camera: CameraIntrinsics, scale: float = 1.0,
                 background: tuple[float, float, float] = (1.0, 1.0, 1.0), point_size: float = 3.0):
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scene = scene
        w, h = max(1, round(camera.width * scale)), max(1, round(camera.height * scale))
        cam = camera.scaled(w, h)
        self.size = (w, h)
        # pad so that the canvas centre (Wc / 2 - 0.5) is the principal point: left/top pads a, right/bottom b
        pads = []
        for c, n in ((cam.cx, w), (cam.cy, h)):
            diff = 2 * c + 1 - n  # = b - a
            a, b = (0, max(0, round(diff))) if diff >= 0 else (round(-diff), 0)
            pads.append((a, b))
        (self._left, right), (self._top, bottom) = pads
        canvas = (w + self._left + right, h + self._top + bottom)
        f = 0.5 * (cam.fx + cam.fy)
        self._canvas_view = SensorView(canvas[0], canvas[1], np.array(
            [[f, 0.0, canvas[0] / 2 - 0.5], [0.0, f, canvas[1] / 2 - 0.5], [0.0, 0.0, 1.0]]))
        K = self._canvas_view.K.copy()
        K[0, 2] -= self._left
        K[1, 2] -= self._top
        self.view = SensorView(w, h, K)
        self._vis = o3d.visualization.Visualizer()
        if not self._vis.create_window(window_name="fusemesh-offscreen", width=canvas[0], height=canvas[1],
                                       visible=False):
            raise RuntimeError("Open3D could not create an offscreen window (no display and no EGL/Mesa: "
                               "install libegl1 and libgl1-mesa-dri)")
        option = self._vis.get_render_option()
        option.background_color = np.asarray(background, dtype=np.float64)
        option.point_size = float(point_size)
        option.mesh_show_back_face = True
        scene.attach(self._vis)
        self._canvas_view.apply(self._vis)

    def set_pose(self, extrinsic: Optional[np.ndarray] = None) -> None:
        """Look from elsewhere: 4x4 depth camera frame -> view camera (OpenCV axes); None = the sensor."""
        self._canvas_view.apply(self._vis, extrinsic)

    def capture(self) -> np.ndarray:
        """Sync the scene and render: (H, W, 3) uint8 RGB image of the camera's (scaled) size."""
        if self._vis is None:
            raise RuntimeError("OffscreenView is closed")
        self.scene.sync(self._vis)
        self._vis.poll_events()
        self._vis.update_renderer()
        img = np.asarray(self._vis.capture_screen_float_buffer(do_render=True))
        w, h = self.size
        img = img[self._top:self._top + h, self._left:self._left + w]
        return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)

    def close(self) -> None:
        if self._vis is not None:
            self.scene.detach(self._vis)
            self._vis.destroy_window()
            self._vis = None

    def __enter__(self) -> "OffscreenView":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
