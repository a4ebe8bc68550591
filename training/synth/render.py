"""Ray-cast rendering of synthetic scenes in the Azure Kinect's depth and color cameras (CPU).

Each image is rendered in its own camera with that camera's calibrated distortion: every pixel's ray
comes from the calibration's undistorted ray table (`CameraIntrinsics.xy_table`, rays (x, y, 1) at z = 1),
computed once per camera (`RigCameras`, cached per rig). Geometry lives in the **depth camera frame**
(OpenCV axes, metres); the color camera's rays start at its centre in that frame, o = -R^T t, and point
along R^T (x, y, 1) for depth_to_color (R, t). Rays are intersected exactly with the scene's triangles by
`training.synth.raycast` (first hits, as a BVH ray caster such as Open3D's `RaycastingScene` returns them;
the tests compare the two), in each camera's own frame, so a hit's t *is* that camera's z-depth.

Depth images are ideal z-depth (metres, 0 = no hit or a pixel outside the calibrated field of view);
the sensor model in `training.synth.depth_noise` turns them into DEPTH16. Color images are linear RGB
radiance from Lambertian shading (ambient + directional lights, no shadows) of procedural albedo
(`training.synth.appearance`), then `color_sensor_image` applies exposure, white balance, vignetting,
shot/read noise, optional blur and sRGB encoding (uint8, OpenCV BGR order); `jpeg_roundtrip` adds JPEG
artefacts (recordings get theirs from the MJPG writer instead).

A window (x0, y0, x1, y1), half-open integer pixel bounds, renders only part of an image: the result is
exactly the same pixels as a full-frame render cut to the window (same rays), which is how training
crops avoid rendering whole frames. A `Grid` adds a stride s >= 1: one ray per s x s block, expanded
back to the window afterwards (nearest for depth and labels, bilinear for color); training crops use
it only when the crop itself samples the image more coarsely than s.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from calibration.intrinsics import CameraIntrinsics
from calibration.rig import RgbdRig
from model.geometry import vertex_normals
from training.synth.appearance import linear_to_srgb, material_table
from training.synth.depth_noise import normal_quantiles
from training.synth.raycast import RayGrid, SoupView
from training.synth.scene import Lighting, SensorPose, TriangleSoup

__all__ = [
    "Window", "Grid", "CameraRays", "RigCameras", "rig_cameras", "SceneMesh", "Hits", "DepthRender", "ColorRender",
    "render_depth", "render_color", "ColorSensorConfig", "ColorSensorSpec", "sample_color_sensor",
    "color_sensor_image", "encode_srgb", "jpeg_roundtrip", "full_window", "vertex_normals",
]

Window = tuple[int, int, int, int]   # x0, y0, x1, y1 (half-open), pixels
_KIND_SOLID, _KIND_PATTERNED, _KIND_PERSON = 0, 1, 2   # how a face is shaded (SceneMesh.face_kind)


def full_window(cam: CameraIntrinsics) -> Window:
    return (0, 0, cam.width, cam.height)


class CameraRays:
    """Ray table of one camera: xy (H, W, 2) float32, the normalised image coordinates of each pixel's
    undistorted ray (x, y, 1); valid (H, W) bool.

    Invalid pixels (outside the calibrated field of view) get (0, 0) and are masked out of every render.
    """

    def __init__(self, intrinsics: CameraIntrinsics):
        self.intrinsics = intrinsics
        xy, valid = intrinsics.xy_table()
        self.xy = np.ascontiguousarray(np.where(valid[..., None], xy, 0.0), dtype=np.float32)
        self.valid = np.asarray(valid, dtype=bool)
        self.xy.setflags(write=False)
        self.valid.setflags(write=False)

    @property
    def half_fov(self) -> tuple[float, float]:
        """(horizontal, vertical) half field of view, radians, along the image's middle row / column."""
        h, w = self.valid.shape
        row = self.xy[h // 2][self.valid[h // 2]]
        col = self.xy[:, w // 2][self.valid[:, w // 2]]
        return (math.atan(float(np.abs(row[:, 0]).max())), math.atan(float(np.abs(col[:, 1]).max())))


@dataclass(frozen=True)
class RigCameras:
    """Ray tables of a rig's depth and color cameras; color rays expressed in the depth camera frame."""

    rig: RgbdRig
    depth: CameraRays
    color: CameraRays
    color_origin: np.ndarray      # (3,) color camera centre in the depth frame, metres
    color_to_depth_R: np.ndarray  # (3, 3) rotates color-frame directions into the depth frame


_RIG_CACHE: dict[str, RigCameras] = {}


def rig_cameras(rig: RgbdRig) -> RigCameras:
    """Ray tables for `rig`, built on first use and cached (keyed by the rig's full JSON description)."""
    import json
    key = json.dumps(rig.to_dict(), sort_keys=True)
    cams = _RIG_CACHE.get(key)
    if cams is None:
        R, t = rig.depth_to_color.R, rig.depth_to_color.t
        cams = RigCameras(rig=rig, depth=CameraRays(rig.depth), color=CameraRays(rig.color), color_origin=-R.T @ t,
                          color_to_depth_R=R.T.copy())
        if len(_RIG_CACHE) >= 16:
            _RIG_CACHE.pop(next(iter(_RIG_CACHE)))
        _RIG_CACHE[key] = cams
    return cams


@dataclass
class Hits:
    """First hits of a batch of rays (any leading shape S): t (S) float32 (inf = miss); face (S) int64
    (-1 = miss); bary (S, 2) barycentric (u, v): point = (1-u-v) A + u B + v C. A hit face's normal is
    `SceneMesh.face_normals(cams)[face]`."""

    t: np.ndarray
    face: np.ndarray
    bary: np.ndarray

    @property
    def hit(self) -> np.ndarray:
        return self.face >= 0


class SceneMesh:
    """A TriangleSoup (depth camera frame) to cast a rig's camera rays at, plus per-face lookup tables.

    People (faces with face_person >= 0) are shaded with interpolated vertex normals and per-vertex
    albedo (their materials evaluated once per frame at the rest-pose texture coordinates: garment
    patterns are >= 4 cm, vertices ~1-2 cm apart); everything else with flat triangle normals and
    per-pixel procedural albedo. Build one per rendered frame.
    """

    def __init__(self, soup: TriangleSoup):
        self.soup = soup
        self.faces = np.ascontiguousarray(soup.faces, dtype=np.int64)
        self.smooth_face = soup.face_person >= 0
        mats = soup.materials
        n_v = len(soup.vertices)
        # per-vertex (normal xyz, albedo rgb) of people; zeros elsewhere
        self.texcoords = np.ascontiguousarray(soup.texcoords, dtype=np.float32)
        self.mat_table, self.mat_waves = material_table(mats)
        self.person_attr = np.zeros((n_v, 6), np.float32)
        if self.smooth_face.any():   # (vertices of no person face keep zero normals)
            self.person_attr[:, :3] = vertex_normals(soup.vertices, self.faces[self.smooth_face])
            _kernels().person_albedo_kernel(self.faces, np.ascontiguousarray(soup.face_person),
                                            np.ascontiguousarray(soup.face_material), self.mat_table,
                                            self.mat_waves, self.texcoords, self.person_attr)
        self.mat_color = np.array([m.color for m in mats], np.float32).reshape(-1, 3)
        self.mat_solid = np.array([m.pattern == "solid" for m in mats], bool)
        self.face_ir = np.array([m.ir_reflectance for m in mats], np.float32)[soup.face_material] \
            if mats else np.zeros(0, np.float32)
        # per face: material index, and how it is shaded (flat solid, flat patterned, smooth person)
        self.face_material = np.ascontiguousarray(soup.face_material, dtype=np.intp)
        kind = np.where(self.smooth_face, _KIND_PERSON, _KIND_SOLID).astype(np.int8)
        if mats:
            kind[~self.smooth_face & ~self.mat_solid[self.face_material]] = _KIND_PATTERNED
        self.face_kind = kind
        self._views: dict[tuple[str, int], SoupView] = {}
        self._face_normals: Optional[np.ndarray] = None

    def view(self, cams: RigCameras, camera: str) -> SoupView:
        """The soup in the frame of the rig's "depth" or "color" camera (built once per camera)."""
        key = (camera, id(cams))
        v = self._views.get(key)
        if v is None:
            if camera == "depth":
                verts = self.soup.vertices
            elif camera == "color":
                verts = cams.rig.depth_to_color.apply(np.asarray(self.soup.vertices, np.float64))
            else:
                raise ValueError(f"camera must be 'depth' or 'color', got {camera!r}")
            v = self._views[key] = SoupView(verts, self.faces)
        return v

    def face_normals(self, cams: RigCameras) -> np.ndarray:
        """(F, 3) float32 unit geometric normal of each face, (B - A) x (C - A), depth camera frame."""
        if self._face_normals is None:
            self._face_normals = np.ascontiguousarray(self.view(cams, "depth").planes[:, 14:17], dtype=np.float32)
        return self._face_normals

    def cast_grid(self, cams: RigCameras, camera: str, rays: RayGrid) -> Hits:
        """First hits of a grid of the camera's rays (x, y, 1) (camera frame; t = z-depth in that camera).
        Invalid rays miss."""
        return Hits(*self.view(cams, camera).cast_grid(rays))

    def cast_points(self, cams: RigCameras, camera: str, xy: np.ndarray) -> Hits:
        """First hits of single rays (x, y, 1) of the camera, xy (N, 2) normalised image coordinates."""
        return Hits(*self.view(cams, camera).cast_list(xy))


# ------------------------------------------------------------------------------------------ renders
@dataclass(frozen=True)
class Grid:
    """Which rays of an image a render casts: window (x0, y0, x1, y1), half-open, and a stride s >= 1.

    s = 1: one ray per pixel of the window, straight from the camera's ray table (exact). s > 1
    (float): one ray per s x s block, through the block centre x0 + (s - 1) / 2 + s i (clamped to the
    window), its direction interpolated bilinearly from the ray table (smooth: the error is below
    0.01 px in the NFOV modes and up to 0.1 px at the rim of the wide field of view); `upsample_*`
    expands such a render back to the window's pixels.
    """

    window: Window
    stride: float = 1.0

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.window
        if not (x1 > x0 and y1 > y0) or not self.stride >= 1.0:
            raise ValueError(f"bad render grid: window {self.window}, stride {self.stride}")

    @property
    def exact(self) -> bool:
        return self.stride == 1.0

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the window in image pixels."""
        return (self.window[2] - self.window[0], self.window[3] - self.window[1])

    @property
    def offset(self) -> float:
        """Image coordinate of the first sample relative to the window corner: (s - 1) / 2."""
        return (self.stride - 1.0) / 2.0

    def _coords(self, lo: int, hi: int) -> np.ndarray:
        n = int(math.ceil((hi - lo) / self.stride - 1e-9))
        return np.minimum(lo + self.offset + self.stride * np.arange(n), hi - 1.0)

    @property
    def xs(self) -> np.ndarray:
        """Image x of each grid column (w,) float64."""
        return self._coords(self.window[0], self.window[2])

    @property
    def ys(self) -> np.ndarray:
        """Image y of each grid row (h,) float64."""
        return self._coords(self.window[1], self.window[3])

    @property
    def shape(self) -> tuple[int, int]:
        """(h, w) of a render on this grid."""
        return (len(self.ys), len(self.xs))

    def take(self, table: np.ndarray) -> np.ndarray:
        """The grid's entries of a per-pixel table (H, W[, C]) float32 or bool: sliced when exact, else
        separable bilinear interpolation in float32 (float tables: rows first, T[iy] (1 - fy) + T[iy + 1] fy
        at columns ix and ix + 1, then columns, (1 - fx) r0 + fx r1, in that order) or, for bool tables
        (ray validity), True only where all four interpolation neighbours are True (no rays blended across
        the field-of-view edge). Strided grids are sampled by a compiled kernel, at grid resolution only.
        """
        x0, y0, x1, y1 = self.window
        if self.exact:
            return table[y0:y1, x0:x1]
        xs, ys = self.xs, self.ys
        H, W = table.shape[:2]
        iy = np.clip(np.floor(ys).astype(np.int64), 0, H - 2)
        ix = np.clip(np.floor(xs).astype(np.int64), 0, W - 2)
        flat = table.reshape(H, W, -1)
        out = np.empty((len(ys), len(xs), flat.shape[2]), table.dtype)
        if table.dtype == bool:
            if flat[iy[0]:iy[-1] + 2, ix[0]:ix[-1] + 2].all():   # (the usual case: no invalid ray near)
                out[...] = True
            else:
                _kernels().all_four(flat, iy, ix, out)
        else:
            if table.dtype != np.float32:
                raise TypeError(f"Grid.take interpolates float32 tables, got {table.dtype}")
            _kernels().bilinear(flat, iy, ix, (ys - iy).astype(np.float32), (xs - ix).astype(np.float32), out)
        return out.reshape(out.shape[:2] + table.shape[2:])

    @staticmethod
    def _nearest(samples: np.ndarray, n_px: int) -> np.ndarray:
        """For pixels 0..n_px-1 along an axis with samples at `samples` (increasing, window pixels): the
        index of the nearest sample (int64; halfway pixels take the later one)."""
        mid = (samples[:-1] + samples[1:]) / 2.0
        return np.searchsorted(mid, np.arange(n_px, dtype=np.float64), side="right").astype(np.int64)

    @functools.cached_property
    def _nearest_rows_cols(self) -> tuple[np.ndarray, np.ndarray]:
        x0, y0, _, _ = self.window
        w, h = self.size
        return self._nearest(self.ys - y0, h), self._nearest(self.xs - x0, w)

    def upsample_nearest(self, arr: np.ndarray) -> np.ndarray:
        """A grid render (h, w[, C]) (bool, integer or float) -> the window's pixels: each takes the value
        of the sample nearest to it (at the samples' image positions `xs`, `ys`; compiled gather)."""
        if self.exact:
            return arr
        w, h = self.size
        src = np.ascontiguousarray(arr)
        gh, gw = src.shape[:2]
        C = int(np.prod(src.shape[2:], dtype=np.int64))
        flat = src.reshape(gh, gw * C)
        if flat.dtype == bool:
            flat = flat.view(np.uint8)
        iy, ix = self._nearest_rows_cols
        if C > 1:
            ix = (ix[:, None] * C + np.arange(C)).ravel()
        out = np.empty((h, w * C), flat.dtype)
        _kernels().upsample_nearest_kernel(flat, iy, ix, out)
        return out.view(arr.dtype).reshape((h, w) + arr.shape[2:])

    @staticmethod
    def _between(samples: np.ndarray, n_px: int) -> tuple[np.ndarray, np.ndarray]:
        """For pixels 0..n_px-1 along an axis with samples at `samples` (increasing, window pixels): the
        lower sample's index i (int64) and the weight of sample i + 1 (float32 in [0, 1]; clamped, so
        pixels beyond the first or last sample take its value)."""
        px = np.arange(n_px, dtype=np.float64)
        n = len(samples)
        i = np.clip(np.searchsorted(samples, px, side="right") - 1, 0, max(n - 2, 0))
        if n < 2:
            return i, np.zeros(n_px, np.float32)
        gap = samples[i + 1] - samples[i]
        f = np.clip((px - samples[i]) / np.where(gap > 0, gap, 1.0), 0.0, 1.0)
        return i, f.astype(np.float32)

    def upsample_linear(self, img: np.ndarray) -> np.ndarray:
        """A grid image (h, w[, C]) uint8 -> the window's pixels (H, W[, C]) uint8, bilinear between the
        samples at their image positions (`xs`, `ys`; pixels beyond the first or last sample repeat it),
        rounded half up (compiled)."""
        if self.exact:
            return img
        if img.dtype != np.uint8:
            raise TypeError(f"Grid.upsample_linear expands uint8 images, got {img.dtype}")
        x0, y0, _, _ = self.window
        w, h = self.size
        gh, gw = img.shape[:2]
        C = int(np.prod(img.shape[2:], dtype=np.int64))
        ix, fx = self._between(self.xs - x0, w)
        iy, fy = self._between(self.ys - y0, h)
        channel = np.arange(C)
        ix0 = (ix[:, None] * C + channel).ravel()
        ix1 = (np.minimum(ix + 1, gw - 1)[:, None] * C + channel).ravel()
        out = np.empty((h, w * C), np.uint8)
        _kernels().upsample_linear_u8(np.ascontiguousarray(img).reshape(gh, gw * C), ix0, ix1, np.repeat(fx, C),
                                      iy, fy, out)
        return out.reshape((h, w) + img.shape[2:])


@dataclass
class DepthRender:
    """Ideal depth-camera render on a grid (h, w): z float32 metres (0 = nothing), face int64 (-1 =
    nothing), obj int8 OBJ_* (-1 = nothing), person int16 (-1 = not a person), normals (h, w, 3) triangle
    normals, camera frame, either orientation (zero where nothing), reflectance 850 nm in [0, 1]."""

    grid: Grid
    z: np.ndarray
    face: np.ndarray
    obj: np.ndarray
    person: np.ndarray
    normals: np.ndarray
    reflectance: np.ndarray

    @property
    def window(self) -> Window:
        return self.grid.window


@dataclass
class ColorRender:
    """Linear RGB radiance on a color-camera grid (h, w, 3) float32 (R, G, B); face (h, w) int64 hit
    triangle (-1 = nothing)."""

    grid: Grid
    linear: np.ndarray
    face: np.ndarray

    @property
    def window(self) -> Window:
        return self.grid.window


def _as_grid(where: Optional[Window | Grid], cam: CameraIntrinsics) -> Grid:
    grid = where if isinstance(where, Grid) else Grid(full_window(cam) if where is None else
                                                      tuple(int(v) for v in where))  # type: ignore[arg-type]
    x0, y0, x1, y1 = grid.window
    if not (0 <= x0 < x1 <= cam.width and 0 <= y0 < y1 <= cam.height):
        raise ValueError(f"window {grid.window} is empty or outside the {cam.width}x{cam.height} image")
    return grid


def render_depth(mesh: SceneMesh, cams: RigCameras, where: Optional[Window | Grid] = None) -> DepthRender:
    """Render the depth camera (origin 0, its ray table) on a window or grid (default: full frame)."""
    grid = _as_grid(where, cams.rig.depth)
    hits = mesh.cast_grid(cams, "depth", RayGrid(grid.take(cams.depth.xy), grid.take(cams.depth.valid)))
    face = hits.face
    z = np.empty(face.shape, np.float32)
    obj = np.empty(face.shape, np.int8)
    person = np.empty(face.shape, np.int16)
    refl = np.empty(face.shape, np.float32)
    normals = np.empty(face.shape + (3,), np.float32)
    face_ir = mesh.face_ir if mesh.face_ir.size else np.zeros(len(mesh.faces), np.float32)
    _kernels().depth_attributes(face, hits.t, np.ascontiguousarray(mesh.soup.face_object, dtype=np.int8),
                                np.ascontiguousarray(mesh.soup.face_person, dtype=np.int16),
                                np.ascontiguousarray(face_ir, dtype=np.float32), mesh.face_normals(cams),
                                z, obj, person, refl, normals)
    return DepthRender(grid=grid, z=z, face=face, obj=obj, person=person, normals=normals, reflectance=refl)


def render_color(mesh: SceneMesh, cams: RigCameras, lighting: Lighting, sensor: SensorPose,
                 where: Optional[Window | Grid] = None) -> ColorRender:
    """Render the color camera on a window or grid (default: full frame): Lambertian linear RGB radiance.

    lighting is in the world frame; `sensor` turns its directions into the depth camera frame.
    """
    grid = _as_grid(where, cams.rig.color)
    rays = RayGrid(grid.take(cams.color.xy), grid.take(cams.color.valid))
    hits = mesh.cast_grid(cams, "color", rays)
    h, w = rays.valid.shape
    light_dirs = sensor.direction_to_camera(lighting.directions).astype(np.float32)
    irradiance = np.zeros((h, w, 3), np.float32)
    albedo = np.zeros((h, w, 3), np.float32)
    _kernels().shade(hits.face, hits.bary, rays.xy, cams.color_to_depth_R.astype(np.float32), mesh.faces,
                     mesh.face_kind, mesh.face_material, mesh.mat_color, mesh.mat_table, mesh.mat_waves,
                     mesh.person_attr, mesh.texcoords, mesh.face_normals(cams), light_dirs,
                     lighting.colors.astype(np.float32), lighting.ambient.astype(np.float32), irradiance, albedo)
    linear = np.multiply(albedo, irradiance, out=albedo)
    return ColorRender(grid=grid, linear=linear, face=hits.face)


def _kernels():
    """training.synth._kernels, imported on first use (numba)."""
    from training.synth import _kernels
    return _kernels


# ------------------------------------------------------------------------------------------ color sensor
@dataclass(frozen=True)
class ColorSensorConfig:
    """Ranges of the color camera model (per scene or sequence).

    exposure: radiance multiplier range; white_balance_std: per-channel gain jitter (relative);
    read_noise / shot_noise: ranges of the read-noise std and shot-noise gain in linear units;
    vignette: range of the relative brightness loss at the image corner; blur_prob, blur_sigma_px:
    probability and range of a Gaussian defocus blur; jpeg_quality: (min, max) JPEG quality of training
    crops' color (recordings use the writer's MJPG quality instead).
    """

    exposure: tuple[float, float] = (0.7, 1.5)
    white_balance_std: float = 0.05
    read_noise: tuple[float, float] = (0.002, 0.012)
    shot_noise: tuple[float, float] = (0.003, 0.012)
    vignette: tuple[float, float] = (0.0, 0.35)
    blur_prob: float = 0.3
    blur_sigma_px: tuple[float, float] = (0.4, 1.2)
    jpeg_quality: tuple[int, int] = (70, 95)

    def __post_init__(self) -> None:
        for name in ("exposure", "read_noise", "shot_noise", "vignette", "blur_sigma_px", "jpeg_quality"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"ColorSensorConfig.{name} must be (min, max) with 0 <= min <= max, got {(lo, hi)}")
        if not self.jpeg_quality[1] <= 100:
            raise ValueError(f"ColorSensorConfig.jpeg_quality must be <= 100, got {self.jpeg_quality}")
        if not 0 <= self.blur_prob <= 1:
            raise ValueError(f"ColorSensorConfig.blur_prob must be in [0, 1], got {self.blur_prob}")


@dataclass(frozen=True)
class ColorSensorSpec:
    """One sampled color camera: exposure, wb_gains (3,) R, G, B, read_noise, shot_noise, vignette,
    blur_sigma_px (0 = none), jpeg_quality."""

    exposure: float
    wb_gains: tuple[float, float, float]
    read_noise: float
    shot_noise: float
    vignette: float
    blur_sigma_px: float
    jpeg_quality: int


def sample_color_sensor(rng: np.random.Generator, config: ColorSensorConfig) -> ColorSensorSpec:
    gains = np.clip(1.0 + rng.normal(0.0, config.white_balance_std, 3), 0.7, 1.3)
    blur = float(rng.uniform(*config.blur_sigma_px)) if rng.random() < config.blur_prob else 0.0
    return ColorSensorSpec(exposure=float(rng.uniform(*config.exposure)), wb_gains=tuple(float(g) for g in gains),
                           read_noise=float(rng.uniform(*config.read_noise)),
                           shot_noise=float(rng.uniform(*config.shot_noise)),
                           vignette=float(rng.uniform(*config.vignette)), blur_sigma_px=blur,
                           jpeg_quality=int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1)))


_LUT_SIZE = 16384


@functools.lru_cache(maxsize=1)
def _srgb_lut() -> np.ndarray:
    """uint8 sRGB code for linear values i / (_LUT_SIZE - 1), i = 0.._LUT_SIZE-1 (values >= 1 clip to 255)."""
    lin = np.arange(_LUT_SIZE, dtype=np.float64) / (_LUT_SIZE - 1)
    return np.rint(linear_to_srgb(lin) * 255.0).astype(np.uint8)


def encode_srgb(linear: np.ndarray, bgr: bool = False) -> np.ndarray:
    """Linear RGB float (..., 3) -> uint8 sRGB codes, same shape (via a 14-bit lookup table, ~4x faster
    than the exact curve; differs from it by at most one code in the darkest few levels): code =
    LUT[trunc(clip(v * 16383 + 0.5, 0, 16383))] in float32. bgr: channels reversed (OpenCV order)."""
    img = np.ascontiguousarray(linear, dtype=np.float32)
    out = np.empty(img.shape, np.uint8)
    if img.size:
        flat = img.reshape(-1, img.shape[-1])
        _kernels().encode_srgb_kernel(flat, _srgb_lut(), bool(bgr), out.reshape(flat.shape))
    return out


def color_sensor_image(linear: np.ndarray, spec: Optional[ColorSensorSpec], rng: Optional[np.random.Generator],
                       grid: Grid, full_size: tuple[int, int]) -> np.ndarray:
    """Linear RGB radiance (h, w, 3) rendered on `grid` -> what the color camera delivers: uint8 BGR
    of the grid's whole window (upsampled if the grid is strided; noise is added before upsampling).

    The sensor: v = L * exposure * wb_gain[channel] * (1 - vignette / 2 * r^2) (r: distance from the
    image centre, 1 at the middle of an edge), plus noise of variance shot * max(v, 0) + read^2, drawn as
    N(0, 1) by inverse-CDF lookup of 16-bit uniforms (tails cut at +-4.3 sigma, as the depth model does);
    then an optional Gaussian blur, sRGB encoding. full_size: (width, height) of the whole image.
    spec None = ideal camera (sRGB encoding only, no noise; rng unused).
    """
    img = np.asarray(linear, np.float32)
    if spec is not None:
        if rng is None:
            raise ValueError("color_sensor_image needs an rng when a sensor spec is given")
        W, H = full_size
        vx = ((grid.xs - (W - 1) / 2) / (W / 2)).astype(np.float32)
        vy = ((grid.ys - (H - 1) / 2) / (H / 2)).astype(np.float32)
        gains = np.float32(spec.exposure) * np.asarray(spec.wb_gains, np.float32)
        uniform = rng.integers(0, 65536, img.shape, dtype=np.uint16)
        out = np.empty(img.shape, np.float32)
        _kernels().color_sensor_kernel(np.ascontiguousarray(img), gains, vx, vy, np.float32(spec.vignette / 2),
                                       np.float32(spec.shot_noise), np.float32(spec.read_noise ** 2), uniform,
                                       normal_quantiles(), out)
        img = out
        if spec.blur_sigma_px > 0:
            img = cv2.GaussianBlur(img, (0, 0), spec.blur_sigma_px / grid.stride)  # sigma in grid px
    bgr = encode_srgb(img, bgr=True)
    return grid.upsample_linear(bgr)   # (strided grids: interpolated in sRGB codes; invisible at that scale)


def jpeg_roundtrip(bgr: np.ndarray, quality: int) -> np.ndarray:
    """Encode as JPEG at `quality` (0..100, 4:2:0 chroma like the Azure Kinect's MJPG) and decode again: the
    color stream's compression artefacts. BGR uint8 (H, W, 3) in and out. libjpeg-turbo through
    `simplejpeg` (encode + decode of a 0.4 MP window: ~2 ms, against ~3.5 ms through cv2.imencode/imdecode)."""
    import simplejpeg
    img = np.ascontiguousarray(bgr, dtype=np.uint8)
    data = simplejpeg.encode_jpeg(img, quality=int(quality), colorspace="BGR", colorsubsampling="420")
    return simplejpeg.decode_jpeg(data, colorspace="BGR")
