"""OpenCV-style calibration files for cameras that are not Kinects (YAML / JSON / XML).

Reads OpenCV `FileStorage` files (`!!opencv-matrix` nodes) and ROS `camera_info`-style plain YAML/JSON
(`camera_matrix: {rows, cols, data}`); writes `FileStorage` files (format from the extension).

One camera:
    image_width, image_height, camera_matrix (3x3 px), distortion_coefficients (4, 5, 8, 12 or 14:
    k1 k2 p1 p2 [k3 [k4 k5 k6 [s1..s4 [tx ty]]]]; thin-prism / tilt terms must be 0),
    optional distortion_model (text) and metric_radius (normalised radius of the valid field of view).
An RGB-D rig: the same keys prefixed `depth_` and `color_`, plus `R` (3x3) and `T` (3) mapping a point
from the depth camera frame to the color frame (OpenCV `stereoCalibrate` convention), `T` in metres
unless `translation_units: mm`, and optional `depth_mode` / `color_resolution`.
Accepted aliases: K / cameraMatrix for camera_matrix, D / dist_coeffs / distCoeffs for the coefficients,
width / height for the image size.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Union

import cv2
import numpy as np

from calibration.errors import CalibrationError
from calibration.intrinsics import CameraIntrinsics
from calibration.rig import Extrinsics, RgbdRig

_ALIASES = {
    "camera_matrix": ("camera_matrix", "K", "cameraMatrix"),
    "distortion_coefficients": ("distortion_coefficients", "D", "dist_coeffs", "distCoeffs"),
    "image_width": ("image_width", "width"),
    "image_height": ("image_height", "height"),
}
_SUFFIXES = (".yaml", ".yml", ".json", ".xml")


# ------------------------------------------------------------------------------------------ reading
def _node_to_py(node: "cv2.FileNode") -> Any:
    if node.isMap():
        if "data" in node.keys() and "rows" in node.keys():
            mat = node.mat()
            if mat is not None:
                return np.asarray(mat, dtype=np.float64)
        return {k: _node_to_py(node.getNode(k)) for k in node.keys()}
    if node.isSeq():
        return [_node_to_py(node.at(i)) for i in range(node.size())]
    if node.isString():
        return node.string()
    if node.isInt() or node.isReal():
        return node.real()
    return None


def read_calibration_file(path: Union[str, Path]) -> dict:
    """The file's top level as a plain dict (matrices as numpy arrays or {rows, cols, data} dicts)."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"calibration file not found: {path}")
    text = path.read_text(errors="replace")
    if text.lstrip().startswith("%YAML") or "opencv-matrix" in text or path.suffix.lower() == ".xml":
        fs = None
        try:
            fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
            root = fs.root()
            return {k: _node_to_py(root.getNode(k)) for k in root.keys()}
        except (cv2.error, SystemError) as exc:
            raise CalibrationError(f"{path}: not a readable OpenCV FileStorage file ({exc})") from exc
        finally:
            if fs is not None:
                fs.release()
    import yaml  # plain YAML (and JSON, a subset of it): ROS camera_info and friends

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CalibrationError(f"{path}: not valid YAML/JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CalibrationError(f"{path}: expected a mapping at the top level")
    return data


def _matrix(value: Any, where: str) -> np.ndarray:
    if isinstance(value, Mapping):
        if "data" not in value:
            raise CalibrationError(f"{where}: matrix mapping needs a 'data' list")
        data = np.asarray(value["data"], dtype=np.float64)
        if "rows" in value and "cols" in value:
            rows, cols = int(value["rows"]), int(value["cols"])
            if data.size != rows * cols:
                raise CalibrationError(f"{where}: {rows}x{cols} matrix has {data.size} values")
            return data.reshape(rows, cols)
        return data
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"{where}: not a numeric matrix") from exc


def _lookup(data: Mapping[str, Any], prefix: str, key: str, required: bool = True) -> Any:
    for alias in _ALIASES.get(key, (key,)):
        if prefix + alias in data:
            return data[prefix + alias]
    if required:
        names = " / ".join(prefix + a for a in _ALIASES.get(key, (key,)))
        raise CalibrationError(f"calibration file has no {names}")
    return None


def camera_from_mapping(data: Mapping[str, Any], prefix: str = "") -> CameraIntrinsics:
    """CameraIntrinsics from an OpenCV-style mapping (keys optionally prefixed, e.g. 'color_')."""
    K = _matrix(_lookup(data, prefix, "camera_matrix"), prefix + "camera_matrix")
    if K.shape != (3, 3):
        raise CalibrationError(f"{prefix}camera_matrix must be 3x3, got shape {K.shape}")
    if abs(K[0, 1]) > 1e-9 or np.abs(K[2] - [0, 0, 1]).max() > 1e-9 or np.abs(K[1, 0]) > 1e-9:
        raise CalibrationError(f"{prefix}camera_matrix must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew)")
    raw_d = _lookup(data, prefix, "distortion_coefficients", required=False)
    d = np.zeros(0) if raw_d is None else _matrix(raw_d, prefix + "distortion_coefficients").reshape(-1)
    if d.size not in (0, 4, 5, 8, 12, 14):
        raise CalibrationError(f"{prefix}distortion_coefficients must have 4, 5, 8, 12 or 14 values, got {d.size}")
    if d.size > 8 and np.any(d[8:] != 0):
        raise CalibrationError(f"{prefix}distortion_coefficients: thin-prism/tilt terms (s1..s4, tx, ty) "
                               "are not supported")
    d = np.concatenate([d[:8], np.zeros(max(0, 8 - d.size))])
    width = _lookup(data, prefix, "image_width")
    height = _lookup(data, prefix, "image_height")
    radius = _lookup(data, prefix, "metric_radius", required=False)
    return CameraIntrinsics(
        width=width, height=height, fx=K[0, 0], fy=K[1, 1], cx=K[0, 2], cy=K[1, 2],
        k1=d[0], k2=d[1], p1=d[2], p2=d[3], k3=d[4], k4=d[5], k5=d[6], k6=d[7],
        metric_radius=math.inf if radius is None else float(radius))


def load_opencv_camera(path: Union[str, Path], prefix: str = "") -> CameraIntrinsics:
    """One camera from an OpenCV / ROS calibration file."""
    return camera_from_mapping(read_calibration_file(path), prefix)


def load_opencv_rig(path: Union[str, Path]) -> RgbdRig:
    """An RGB-D rig from an OpenCV-style file with depth_* / color_* cameras and R, T (depth -> color)."""
    data = read_calibration_file(path)
    depth = camera_from_mapping(data, "depth_")
    color = camera_from_mapping(data, "color_")
    if "R" not in data or "T" not in data:
        raise CalibrationError(f"{path}: an RGB-D rig needs R and T (depth camera -> color camera)")
    R = _matrix(data["R"], "R")
    if R.shape == (3, 1) or R.shape == (1, 3) or R.shape == (3,):
        R = cv2.Rodrigues(R.reshape(3, 1))[0]
    T = _matrix(data["T"], "T").reshape(-1)
    units = str(data.get("translation_units", "m")).strip().lower()
    if units not in ("m", "mm"):
        raise CalibrationError(f"translation_units must be 'm' or 'mm', got {units!r}")
    if units == "mm":
        T = T / 1000.0
    return RgbdRig(depth=depth, color=color, depth_to_color=Extrinsics(R, T),
                   depth_mode=data.get("depth_mode") or None, color_resolution=data.get("color_resolution") or None)


# ------------------------------------------------------------------------------------------ writing
def _write_camera(fs: "cv2.FileStorage", cam: CameraIntrinsics, prefix: str) -> None:
    fs.write(prefix + "image_width", cam.width)
    fs.write(prefix + "image_height", cam.height)
    fs.write(prefix + "camera_matrix", cam.K)
    fs.write(prefix + "distortion_coefficients", cam.opencv_dist_coeffs().reshape(1, 8))
    fs.write(prefix + "distortion_model", "rational_polynomial")
    if math.isfinite(cam.metric_radius):
        fs.write(prefix + "metric_radius", cam.metric_radius)


def save_opencv(path: Union[str, Path], calibration: Union[CameraIntrinsics, RgbdRig]) -> None:
    """Write a camera or a rig as an OpenCV FileStorage file (.yaml, .yml, .json or .xml)."""
    path = Path(path)
    if path.suffix.lower() not in _SUFFIXES:
        raise CalibrationError(f"OpenCV calibration files end in {', '.join(_SUFFIXES)}; got {path.name!r}")
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    try:
        if isinstance(calibration, RgbdRig):
            _write_camera(fs, calibration.depth, "depth_")
            _write_camera(fs, calibration.color, "color_")
            fs.write("R", calibration.depth_to_color.R)
            fs.write("T", calibration.depth_to_color.t.reshape(3, 1))
            fs.write("translation_units", "m")
            if calibration.depth_mode:
                fs.write("depth_mode", calibration.depth_mode)
            if calibration.color_resolution:
                fs.write("color_resolution", calibration.color_resolution)
        elif isinstance(calibration, CameraIntrinsics):
            _write_camera(fs, calibration, "")
        else:
            raise CalibrationError(f"can only save CameraIntrinsics or RgbdRig, got {type(calibration).__name__}")
    finally:
        fs.release()
