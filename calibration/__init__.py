"""FuseMesh calibration: Azure Kinect / RGB-D camera geometry in numpy and OpenCV (no people).

Main entry points: `RgbdRig` (load/save, `from_kinect_raw_json`, `from_pyk4a`), `default_rig()`,
`ColorToDepthAligner` / `DepthToColorAligner`, `depth_to_points` / `to_open3d_point_cloud`.
Importing this package has no side effects (no files read, no libk4a loaded).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from calibration.align import AlignConfig, ColorToDepthAligner, DepthToColorAligner, align_color_to_depth_naive
from calibration.errors import CalibrationError
from calibration.intrinsics import CameraIntrinsics
from calibration.pointcloud import colored_points, depth_to_points, to_open3d_point_cloud
from calibration.rig import Extrinsics, RgbdRig

DEFAULT_KINECT_CALIBRATION = (Path(__file__).resolve().parent.parent / "assets" / "calibration"
                              / "azure_kinect_default.json")


def default_rig(depth_mode: Any = "NFOV_UNBINNED", color_resolution: Any = "720P") -> RgbdRig:
    """The team's default Azure Kinect (realistic factory-style calibration, not a real unit) in one mode;
    the camera of synthetic data. Modes as names ("WFOV_2X2BINNED", "1080P") or pyk4a enums."""
    from calibration.kinect import color_resolution_name, depth_mode_name

    return _default_rig(depth_mode_name(depth_mode), color_resolution_name(color_resolution))


@functools.lru_cache(maxsize=None)
def _default_rig(depth_mode: str, color_resolution: str) -> RgbdRig:
    if not DEFAULT_KINECT_CALIBRATION.is_file():
        raise CalibrationError(f"default calibration asset missing: {DEFAULT_KINECT_CALIBRATION}")
    return RgbdRig.from_kinect_raw_json(DEFAULT_KINECT_CALIBRATION.read_text(), depth_mode, color_resolution)


__all__ = [
    "AlignConfig", "CalibrationError", "CameraIntrinsics", "ColorToDepthAligner", "DepthToColorAligner",
    "Extrinsics", "RgbdRig", "align_color_to_depth_naive", "colored_points", "default_rig",
    "depth_to_points", "to_open3d_point_cloud", "DEFAULT_KINECT_CALIBRATION",
]
