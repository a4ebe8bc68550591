"""Point clouds from depth images: metres in the depth camera frame, optional colors from alignment (a).

Invalid points (depth 0, pixel outside the calibrated field of view) are NaN and False in `valid`,
never (0, 0, 0).
"""
from __future__ import annotations

import functools
from typing import Optional, Union

import numpy as np

from calibration.align import ColorToDepthAligner, check_depth
from calibration.errors import CalibrationError
from calibration.intrinsics import CameraIntrinsics
from calibration.rig import RgbdRig


@functools.lru_cache(maxsize=8)
def _rays_f32(camera: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xy, valid = camera.xy_table()
    x = np.where(valid, xy[..., 0], np.nan).astype(np.float32)
    y = np.where(valid, xy[..., 1], np.nan).astype(np.float32)
    for arr in (x, y):
        arr.setflags(write=False)
    return x, y, valid


def depth_to_points(camera: Union[CameraIntrinsics, RgbdRig], depth_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth (H, W) uint16 mm -> (points (H, W, 3) float32 metres in the depth camera frame, valid (H, W) bool).

    `camera` is the depth camera's intrinsics (or a rig, whose `.depth` is used).
    """
    cam = camera.depth if isinstance(camera, RgbdRig) else camera
    if not isinstance(cam, CameraIntrinsics):
        raise CalibrationError(f"camera must be CameraIntrinsics or RgbdRig, got {type(camera).__name__}")
    check_depth(depth_mm, cam.size)
    x, y, ray_valid = _rays_f32(cam)
    z = depth_mm.astype(np.float32) * np.float32(0.001)
    valid = (depth_mm > 0) & ray_valid
    z[~valid] = np.nan
    points = np.empty(depth_mm.shape + (3,), dtype=np.float32)
    np.multiply(x, z, out=points[..., 0])
    np.multiply(y, z, out=points[..., 1])
    points[..., 2] = z
    return points, valid


def colored_points(rig: RgbdRig, color_bgr: np.ndarray, depth_mm: np.ndarray,
                   aligner: Optional[ColorToDepthAligner] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (points (Hd, Wd, 3) float32 m, colors (Hd, Wd, 3) uint8 BGR, valid (Hd, Wd) bool).

    Colors come from color->depth alignment; a point is valid only where both depth and color are.
    Pass a prebuilt `aligner` for video (building one takes about a second).
    """
    aligner = aligner if aligner is not None else ColorToDepthAligner(rig)
    if aligner.rig is not rig and aligner.rig != rig:
        raise CalibrationError("aligner was built for a different rig")
    colors, color_valid = aligner(color_bgr, depth_mm)
    points, valid = depth_to_points(rig.depth, depth_mm)
    valid &= color_valid
    points[~valid] = np.nan
    return points, colors, valid


def to_open3d_point_cloud(points: np.ndarray, colors: Optional[np.ndarray] = None,
                          valid: Optional[np.ndarray] = None):
    """Points (..., 3) metres [+ colors (..., 3) uint8 BGR] [+ valid (...) bool] -> open3d PointCloud.

    Only valid, finite points are kept; colors become Open3D's RGB floats in [0, 1].
    """
    import open3d as o3d  # lazy: heavy, and only this helper needs it

    pts = np.asarray(points)
    if pts.ndim < 2 or pts.shape[-1] != 3:
        raise CalibrationError(f"points must have shape (..., 3), got {pts.shape}")
    keep = np.isfinite(pts).all(axis=-1)
    if valid is not None:
        valid = np.asarray(valid, dtype=bool)
        if valid.shape != pts.shape[:-1]:
            raise CalibrationError(f"valid has shape {valid.shape}, points need {pts.shape[:-1]}")
        keep &= valid
    cloud = o3d.geometry.PointCloud()
    cloud.points = o3d.utility.Vector3dVector(pts[keep].astype(np.float64))
    if colors is not None:
        col = np.asarray(colors)
        if col.shape != pts.shape or col.dtype != np.uint8:
            raise CalibrationError(f"colors must be uint8 with the points' shape {pts.shape}, "
                                   f"got {col.dtype} {col.shape}")
        cloud.colors = o3d.utility.Vector3dVector(col[keep][:, ::-1].astype(np.float64) / 255.0)
    return cloud
