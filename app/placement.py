"""Metric placement: the network's body (no translation) -> a translation in the depth camera frame, metres.

Runs on the inference worker's thread; numpy only (the numpy twin of `model.camera`'s torch maths).

The network predicts, for its square crop, a weak-perspective camera (s, tx, ty): a body point X
(camera-aligned axes, body-model origin, metres) appears at normalised crop coordinates
x_n = s * X_xy + (tx, ty), [-1, 1] over the crop. `weak_perspective_to_translation` is SPIN's
conversion for a crop centred on the principal point (tz = 2 f / (crop_px s), x, y = tx / s, ty / s),
identical to `model.camera.weak_perspective_to_translation`.

In the app the crop sits anywhere in the image, so `translation_from_crop` places the body on the ray
through the crop centre: with a crop of side L source pixels (`CropBox.side`) centred on pixel c,
matching the weak projection with a pinhole camera of focal f gives tz = 2 f / (L s) and

    T = tz * (x_c, y_c, 1) + (tx / s, ty / s, 0),   (x_c, y_c) = undistorted ray of the crop centre,

which reduces to the centred formula when c is the principal point. The depth camera's distortion
enters through the centre ray; across the crop the weak model's own approximation dominates.

Refinement with the observed depth (`refine_depth`): the sensor knows how far the person is; the
network's scale only guesses it. The model's visible surface (its vertices nearest to the camera in
each cell of a coarse image grid: a z-buffer without faces) has median depth z_m; the observed person
(median depth over the person mask, `model.preprocess.reference_depth`) has z_o. T is scaled along its
own ray by (T_z + z_o - z_m) / T_z: the body's image position stays where the network put it and its
visible surface lands at the observed depth (two passes, since scaling moves z_m slightly).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from app.crop import CropBox
from calibration.intrinsics import CameraIntrinsics

__all__ = ["PlacementConfig", "Placement", "weak_perspective_to_translation", "translation_from_crop",
           "visible_surface_depth", "place_body"]


@dataclass(frozen=True)
class PlacementConfig:
    """refine_depth: use the observed person depth (else the weak-perspective depth alone);
    min_scale: s is clamped to this (a non-positive scale from a bad frame must not flip the body);
    grid_cells: z-buffer cells across the body's image extent; min_depth_m / max_depth_m: the translation
    depth (refined or not) is clamped into this range, moving the body along its ray (a tiny scale from a
    bad frame would otherwise put it kilometres away); passes: refinement passes."""

    refine_depth: bool = True
    min_scale: float = 1e-3
    grid_cells: int = 24
    min_depth_m: float = 0.2
    max_depth_m: float = 20.0
    passes: int = 2

    def __post_init__(self) -> None:
        if not self.min_scale > 0:
            raise ValueError(f"PlacementConfig.min_scale must be > 0, got {self.min_scale}")
        if self.grid_cells < 2 or self.passes < 1:
            raise ValueError("PlacementConfig.grid_cells must be >= 2 and passes >= 1")
        if not 0 < self.min_depth_m < self.max_depth_m:
            raise ValueError("PlacementConfig needs 0 < min_depth_m < max_depth_m")


@dataclass
class Placement:
    """transl: (3,) metres, camera frame (add to the body's vertices/joints); weak_transl: (3,) before
    refinement and clamping; depth_correction_m: z change the refinement or the depth clamp applied (0 when
    neither did); refined."""

    transl: np.ndarray
    weak_transl: np.ndarray
    depth_correction_m: float
    refined: bool


def weak_perspective_to_translation(cam: np.ndarray, focal_px, crop_px, eps: float = 1e-9) -> np.ndarray:
    """Weak camera (B, 3) = (s, tx, ty) on a crop centred on the principal point -> (B, 3) metres.

    focal_px: float or (B,); crop_px: float or (B,). tz = 2 f / (crop_px s), x = tx / s, y = ty / s;
    s clamped to >= eps. Numpy twin of model.camera.weak_perspective_to_translation.
    """
    cam = np.asarray(cam)
    if cam.ndim != 2 or cam.shape[1] != 3:
        raise ValueError(f"cam must be (B, 3) = (s, tx, ty), got shape {cam.shape}")
    dtype = cam.dtype if cam.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    cam = cam.astype(dtype, copy=False)
    f = np.asarray(focal_px, dtype=dtype).reshape(-1)
    c = np.asarray(crop_px, dtype=dtype).reshape(-1)
    s = np.maximum(cam[:, 0], dtype.type(eps))
    tz = dtype.type(2.0) * f / (c * s)
    return np.stack([cam[:, 1] / s, cam[:, 2] / s, tz], axis=-1)


def translation_from_crop(cam: np.ndarray, box: CropBox, camera: CameraIntrinsics, min_scale: float = 1e-3
                          ) -> np.ndarray:
    """Weak camera (3,) = (s, tx, ty) predicted on crop `box` (source = `camera`'s image) -> T (3,) metres.

    T = tz (x_c, y_c, 1) + (tx / s, ty / s, 0) with tz = 2 f / (box.side s), f = (fx + fy) / 2 and
    (x_c, y_c) the undistorted ray through the crop centre (see the module docstring).
    """
    cam = np.asarray(cam, dtype=np.float64).reshape(-1)
    if cam.shape != (3,) or not np.all(np.isfinite(cam)):
        raise ValueError(f"cam must be 3 finite numbers (s, tx, ty), got {cam!r}")
    s = max(float(cam[0]), float(min_scale))
    f = 0.5 * (camera.fx + camera.fy)
    tz = 2.0 * f / (box.side * s)
    ray, ok = camera.pixels_to_normalized(np.asarray(box.center, dtype=np.float64))
    if not bool(ok):  # centre outside the calibrated field of view: pinhole ray
        ray = np.array([(box.center[0] - camera.cx) / camera.fx, (box.center[1] - camera.cy) / camera.fy])
    return np.array([tz * ray[0] + cam[1] / s, tz * ray[1] + cam[2] / s, tz])


def visible_surface_depth(points_cam: np.ndarray, camera: CameraIntrinsics, grid_cells: int = 24) -> Optional[float]:
    """Median depth (m) of the camera-facing surface of a point set (N, 3) in the camera frame.

    Points are projected (pinhole: cells are coarse) into a grid of `grid_cells` cells across their image
    extent; per cell the nearest point's depth is kept (a z-buffer without faces); returns the median
    over occupied cells, each counting once like the pixels of a depth image. None if no point is in
    front of the camera.
    """
    p = np.asarray(points_cam, dtype=np.float64)
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        inv = 1.0 / z
        u = x * (camera.fx * inv) + camera.cx
        v = y * (camera.fy * inv) + camera.cy
        keep = (z > 1e-6) & np.isfinite(u) & np.isfinite(v)
    if not keep.all():
        if not keep.any():
            return None
        u, v, z = u[keep], v[keep], z[keep]
    u0, v0 = u.min(), v.min()
    cell = max(u.max() - u0, v.max() - v0, 1e-6) / grid_cells
    iu = np.minimum(((u - u0) / cell).astype(np.intp), grid_cells - 1)
    iv = np.minimum(((v - v0) / cell).astype(np.intp), grid_cells - 1)
    zbuf = np.full(grid_cells * grid_cells, np.inf)
    np.minimum.at(zbuf, iv * grid_cells + iu, z)
    zbuf = zbuf[np.isfinite(zbuf)]
    return float(np.median(zbuf))


def place_body(vertices: np.ndarray, cam: np.ndarray, box: CropBox, camera: CameraIntrinsics,
               observed_depth_m: Optional[float] = None, config: PlacementConfig = PlacementConfig()) -> Placement:
    """The translation that puts the network's body (vertices (V, 3) m, no translation) where the crop saw it.

    cam: (3,) (s, tx, ty) on `box`; camera: the depth camera (the crop's source image); observed_depth_m:
    the person's median observed depth (metres; None or non-finite: no refinement).
    """
    weak = translation_from_crop(cam, box, camera, config.min_scale)
    transl = weak.copy()
    refined = False
    if config.refine_depth and observed_depth_m is not None and np.isfinite(observed_depth_m) \
            and observed_depth_m > 0:
        verts = np.asarray(vertices, dtype=np.float64)
        for _ in range(config.passes):
            zm = visible_surface_depth(verts + transl, camera, config.grid_cells)
            if zm is None:  # the body is behind the camera at this guess: go straight to the observed depth
                zm = float(transl[2])
            new_tz = float(np.clip(transl[2] + (observed_depth_m - zm), config.min_depth_m, config.max_depth_m))
            transl = transl * (new_tz / transl[2])
            refined = True
    if not config.min_depth_m <= transl[2] <= config.max_depth_m:  # weak depth only (refined is clamped above)
        transl = transl * (float(np.clip(transl[2], config.min_depth_m, config.max_depth_m)) / transl[2])
    return Placement(transl=transl, weak_transl=weak, depth_correction_m=float(transl[2] - weak[2]),
                     refined=refined)
