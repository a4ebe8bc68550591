"""An RGB-D rig: depth camera + color camera + the rigid transform between them; our own JSON file.

Frames: the depth camera frame is the rig's reference (the Kinect's convention); `depth_to_color`
maps a point in the depth camera frame (metres) to the color camera frame: p_c = R p_d + t.

JSON layout (`RgbdRig.save`), strict on load (unknown keys are errors naming the nearest valid key):

    {"format": "fusemesh.rgbd_rig", "version": 1,
     "depth_mode": "NFOV_UNBINNED" | null, "color_resolution": "720P" | null,
     "depth": {CameraIntrinsics fields}, "color": {...},
     "depth_to_color": {"rotation": [[3x3]], "translation_m": [3]}}
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from calibration.errors import CalibrationError
from calibration.intrinsics import CameraIntrinsics, as_float_array, check_keys

RIG_FORMAT = "fusemesh.rgbd_rig"
RIG_VERSION = 1


def rigid_transform(points: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """R p + t for points (..., 3) -> (..., 3) float64 (R (3, 3), t (3,), any units). The same values as
    `points @ R.T + t` up to rounding, ~4x faster for meshes of ~10k points: numpy sends (N, 3) x (3, 3)
    products through BLAS, which spends ~50 ns a point on them (compiled, `calibration._kernels`)."""
    p = np.ascontiguousarray(points, dtype=np.float64)
    if p.shape[-1:] != (3,):
        raise ValueError(f"rigid_transform: points must be (..., 3), got {p.shape}")
    out = np.empty(p.shape, np.float64)
    flat = p.reshape(-1, 3)
    if flat.shape[0]:
        from calibration import _kernels   # (numba; loaded on first use)
        _kernels.rigid_kernel(flat, np.ascontiguousarray(R, dtype=np.float64).reshape(3, 3),
                              np.ascontiguousarray(t, dtype=np.float64).reshape(3), out.reshape(-1, 3))
    return out


@dataclass(frozen=True, eq=False)
class Extrinsics:
    """Rigid transform source -> target: p_target = R @ p_source + t. R (3, 3), t (3,) metres."""

    R: np.ndarray
    t: np.ndarray

    def __post_init__(self) -> None:
        R = as_float_array(self.R, 3, "rotation").copy()
        t = as_float_array(self.t, 3, "translation").reshape(-1).copy()
        if R.shape != (3, 3) or t.shape != (3,):
            raise CalibrationError(f"extrinsics need R (3, 3) and t (3,), got {R.shape} and {t.shape}")
        if not (np.isfinite(R).all() and np.isfinite(t).all()):
            raise CalibrationError("extrinsics contain NaN or inf")
        ortho = np.abs(R.T @ R - np.eye(3)).max()
        if ortho > 1e-4 or np.linalg.det(R) <= 0:
            raise CalibrationError(
                f"rotation is not a proper rotation matrix (|R^T R - I| = {ortho:.2g}, det = {np.linalg.det(R):.3g})")
        if np.linalg.norm(t) > 10.0:
            raise CalibrationError(
                f"translation {t.tolist()} is {np.linalg.norm(t):.1f} m long; translations are metres, "
                "not millimetres")
        R.setflags(write=False)
        t.setflags(write=False)
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "t", t)

    @classmethod
    def identity(cls) -> "Extrinsics":
        return cls(np.eye(3), np.zeros(3))

    def inverse(self) -> "Extrinsics":
        """target -> source."""
        return Extrinsics(self.R.T, -self.R.T @ self.t)

    def apply(self, points: Any) -> np.ndarray:
        """Points (..., 3) metres in the source frame -> (..., 3) metres in the target frame."""
        return rigid_transform(as_float_array(points, 3, "points"), self.R, self.t)

    def matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix."""
        out = np.eye(4)
        out[:3, :3] = self.R
        out[:3, 3] = self.t
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Extrinsics) and np.array_equal(self.R, other.R) and np.array_equal(self.t, other.t)

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict:
        return {"rotation": self.R.tolist(), "translation_m": self.t.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "depth_to_color") -> "Extrinsics":
        if not isinstance(data, Mapping):
            raise CalibrationError(f"{where} must be an object, got {type(data).__name__}")
        check_keys(data, ["rotation", "translation_m"], where)
        for key in ("rotation", "translation_m"):
            if key not in data:
                raise CalibrationError(f"{where}: missing key {key!r}")
        return cls(np.asarray(data["rotation"], dtype=np.float64), np.asarray(data["translation_m"], dtype=np.float64))


@dataclass(frozen=True, eq=False)
class RgbdRig:
    """Depth + color cameras of one RGB-D sensor. `depth_mode` / `color_resolution` are Kinect mode
    names ("NFOV_UNBINNED", "720P", ...) or None for other sensors."""

    depth: CameraIntrinsics
    color: CameraIntrinsics
    depth_to_color: Extrinsics
    depth_mode: Optional[str] = None
    color_resolution: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.depth, CameraIntrinsics) or not isinstance(self.color, CameraIntrinsics):
            raise CalibrationError("RgbdRig.depth and .color must be CameraIntrinsics")
        if not isinstance(self.depth_to_color, Extrinsics):
            raise CalibrationError("RgbdRig.depth_to_color must be Extrinsics")
        from calibration.kinect import COLOR_RESOLUTIONS, DEPTH_MODES  # kinect imports this module

        for what, mode, table, cam in (("depth_mode", self.depth_mode, DEPTH_MODES, self.depth),
                                       ("color_resolution", self.color_resolution, COLOR_RESOLUTIONS, self.color)):
            if mode in table and table[mode].output != cam.size:
                raise CalibrationError(f"{what} {mode} means {table[mode].output[0]}x{table[mode].output[1]} images, "
                                       f"but the camera is {cam.width}x{cam.height}")

    @property
    def color_to_depth(self) -> Extrinsics:
        """Color camera frame -> depth camera frame (exact inverse of `depth_to_color`)."""
        return self.depth_to_color.inverse()

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, RgbdRig) and self.depth == other.depth and self.color == other.color
                and self.depth_to_color == other.depth_to_color and self.depth_mode == other.depth_mode
                and self.color_resolution == other.color_resolution)

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ our JSON
    def to_dict(self) -> dict:
        return {
            "format": RIG_FORMAT, "version": RIG_VERSION,
            "depth_mode": self.depth_mode, "color_resolution": self.color_resolution,
            "depth": self.depth.to_dict(), "color": self.color.to_dict(),
            "depth_to_color": self.depth_to_color.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RgbdRig":
        if not isinstance(data, Mapping):
            raise CalibrationError(f"rig JSON must be an object, got {type(data).__name__}")
        if "CalibrationInformation" in data:
            raise CalibrationError("this is an Azure Kinect raw calibration, not a rig JSON; "
                                   "use RgbdRig.from_kinect_raw_json(text, depth_mode, color_resolution)")
        check_keys(data, ["format", "version", "depth_mode", "color_resolution", "depth", "color",
                          "depth_to_color"], "rig")
        if data.get("format") != RIG_FORMAT:
            raise CalibrationError(f"rig JSON 'format' must be {RIG_FORMAT!r}, got {data.get('format')!r}")
        if data.get("version") != RIG_VERSION:
            raise CalibrationError(f"unsupported rig JSON version {data.get('version')!r}; expected {RIG_VERSION}")
        for key in ("depth", "color", "depth_to_color"):
            if key not in data:
                raise CalibrationError(f"rig JSON: missing key {key!r}")
        try:
            return cls(
                depth=CameraIntrinsics.from_dict(data["depth"], "rig.depth"),
                color=CameraIntrinsics.from_dict(data["color"], "rig.color"),
                depth_to_color=Extrinsics.from_dict(data["depth_to_color"], "rig.depth_to_color"),
                depth_mode=data.get("depth_mode"), color_resolution=data.get("color_resolution"))
        except CalibrationError:
            raise
        except (ValueError, TypeError, OverflowError) as exc:  # a malformed value numpy or a check tripped on
            raise CalibrationError(f"rig JSON: bad value ({type(exc).__name__}: {exc})") from None

    def save(self, path: Union[str, Path]) -> None:
        """Write our rig JSON (floats round-trip exactly)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Union[str, Path]) -> "RgbdRig":
        """Read a rig JSON written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise CalibrationError(f"rig file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise CalibrationError(f"{path}: not valid JSON ({exc})") from exc
        return cls.from_dict(data)

    # ------------------------------------------------------------------ other sources
    @classmethod
    def from_kinect_raw_json(cls, text: Union[str, bytes], depth_mode: Any = "NFOV_UNBINNED",
                             color_resolution: Any = "720P") -> "RgbdRig":
        """From the Azure Kinect raw calibration JSON (`calibration.json` attachment / device flash)."""
        from calibration.kinect import rig_from_raw_json
        return rig_from_raw_json(text, depth_mode, color_resolution)

    @classmethod
    def from_pyk4a(cls, source: Any) -> "RgbdRig":
        """From a `pyk4a.PyK4A` (opened), `pyk4a.PyK4APlayback` (opened) or `pyk4a.Calibration`."""
        from calibration.kinect import rig_from_pyk4a
        return rig_from_pyk4a(source)
