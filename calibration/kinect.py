"""Azure Kinect calibration: the raw `CalibrationInformation` JSON, per-mode crop/scale, pyk4a objects.

The raw JSON (device flash, or the `calibration.json` attachment of a recording) stores per camera 14
*normalised* Brown-Conrady parameters in the order

    [cx, cy, fx, fy, k1, k2, k3, k4, k5, k6, codx, cody, p2, p1]

(cx, fx divided by the calibration image width, cy, fy by its height; (0, 0) = corner of the first
pixel), an `Rt` = world -> camera transform (rotation row-major, translation in metres), the
calibration image size (`SensorWidth/Height`: depth 1024x1024, color 4096x3072 or legacy 4096x2304)
and `MetricRadius` (0 = unknown -> the SDK's 1.7).

Each depth mode / color resolution is a binning + crop of that calibration image (table below, from
the SDK's `transformation/mode_specific_calibration.c`). The arithmetic here is done in float32 in the
SDK's order, so the result equals libk4a's `k4a_calibration_get_from_raw` (what pyk4a's
`Calibration.from_raw` calls) to the last bit; tests check that for every mode.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import numpy as np

from calibration.errors import CalibrationError
from calibration.intrinsics import CameraIntrinsics
from calibration.rig import Extrinsics, RgbdRig

f32 = np.float32


@dataclass(frozen=True)
class ModeInfo:
    """One sensor mode: the calibration image binned to `binned` (w, h) px, then cropped at `crop`
    (x, y) px to `output` (w, h) px."""

    binned: tuple[int, int]
    crop: tuple[int, int]
    output: tuple[int, int]


DEPTH_MODES: dict[str, ModeInfo] = {
    "NFOV_2X2BINNED": ModeInfo((512, 512), (96, 90), (320, 288)),
    "NFOV_UNBINNED": ModeInfo((1024, 1024), (192, 180), (640, 576)),
    "WFOV_2X2BINNED": ModeInfo((512, 512), (0, 0), (512, 512)),
    "WFOV_UNBINNED": ModeInfo((1024, 1024), (0, 0), (1024, 1024)),
    "PASSIVE_IR": ModeInfo((1024, 1024), (0, 0), (1024, 1024)),
}
COLOR_RESOLUTIONS: dict[str, ModeInfo] = {
    "720P": ModeInfo((1280, 960), (0, 120), (1280, 720)),
    "1080P": ModeInfo((1920, 1440), (0, 180), (1920, 1080)),
    "1440P": ModeInfo((2560, 1920), (0, 240), (2560, 1440)),
    "1536P": ModeInfo((2048, 1536), (0, 0), (2048, 1536)),
    "2160P": ModeInfo((3840, 2880), (0, 360), (3840, 2160)),
    "3072P": ModeInfo((4096, 3072), (0, 0), (4096, 3072)),
}
# legacy 16:9 color calibrations are first re-expressed on the 4:3 sensor (kept normalised)
_LEGACY_16_9 = ModeInfo((4096, 2304), (0, -384), (4096, 3072))
# pyk4a / k4a enum values (k4a_depth_mode_t, k4a_color_resolution_t); 0 = OFF
_DEPTH_MODE_IDS = {1: "NFOV_2X2BINNED", 2: "NFOV_UNBINNED", 3: "WFOV_2X2BINNED", 4: "WFOV_UNBINNED", 5: "PASSIVE_IR"}
_COLOR_RES_IDS = {1: "720P", 2: "1080P", 3: "1440P", 4: "1536P", 5: "2160P", 6: "3072P"}

DEPTH_LOCATION = "CALIBRATION_CameraLocationD0"
COLOR_LOCATION = "CALIBRATION_CameraLocationPV0"
_MODEL_TYPES = {"CALIBRATION_LensDistortionModelBrownConrady": "brown_conrady",
                "CALIBRATION_LensDistortionModelRational6KT": "rational_6kt"}
_IMU_TYPES = {"gyro": "CALIBRATION_InertialSensorType_Gyro", "accel": "CALIBRATION_InertialSensorType_Accelerometer"}
DEFAULT_METRIC_RADIUS = float(f32(1.7))  # the SDK's value when the JSON says 0 (~120 deg field of view)


def depth_mode_name(mode: Any) -> str:
    """'NFOV_UNBINNED' from a name (any case), a pyk4a `DepthMode`, or its int value."""
    return _mode_name(mode, DEPTH_MODES, _DEPTH_MODE_IDS, "depth mode")


def color_resolution_name(resolution: Any) -> str:
    """'720P' from a name ('720p', 'RES_720P'), a pyk4a `ColorResolution`, or its int value."""
    return _mode_name(resolution, COLOR_RESOLUTIONS, _COLOR_RES_IDS, "color resolution")


def _mode_name(value: Any, table: Mapping[str, ModeInfo], ids: Mapping[int, str], what: str) -> str:
    if hasattr(value, "name") and not isinstance(value, str):  # an IntEnum from pyk4a
        value = value.name
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if int(value) in ids:
            return ids[int(value)]
        raise CalibrationError(f"{what} id {int(value)} is OFF or unknown; an RGB-D rig needs both cameras "
                               f"running (valid: {dict(ids)})")
    if isinstance(value, str):
        name = value.strip().upper()
        if name.startswith("RES_"):
            name = name[4:]
        if name in table:
            return name
        if name == "OFF":
            raise CalibrationError(f"{what} is OFF; an RGB-D rig needs both cameras running")
        close = difflib.get_close_matches(name, list(table), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise CalibrationError(f"unknown {what} {value!r}{hint} (valid: {', '.join(table)})")
    raise CalibrationError(f"{what} must be a name or a pyk4a enum, got {value!r}")


# ---------------------------------------------------------------------------------------- raw JSON
@dataclass(frozen=True)
class RawCamera:
    """One camera of the raw JSON, values already rounded to float32 as libk4a stores them."""

    params: tuple[float, ...]        # 14 normalised parameters, JSON order
    model: str                       # "brown_conrady" | "rational_6kt"
    sensor_width: int
    sensor_height: int
    metric_radius: float             # 0 in the JSON -> DEFAULT_METRIC_RADIUS
    rotation: tuple[float, ...]      # world -> camera, row-major (9,)
    translation_mm: tuple[float, ...]  # world -> camera, millimetres (3,)


@dataclass(frozen=True)
class RawCalibration:
    """The parts of `CalibrationInformation` we use. IMU entries are optional here (libk4a needs them)."""

    depth: RawCamera
    color: RawCamera
    gyro_rt: Optional[tuple[tuple[float, ...], tuple[float, ...]]] = None   # (rotation 9, translation mm 3)
    accel_rt: Optional[tuple[tuple[float, ...], tuple[float, ...]]] = None
    serial: str = ""


def _get(obj: Any, key: str, where: str) -> Any:
    if not isinstance(obj, Mapping):
        raise CalibrationError(f"raw calibration: {where} must be an object, got {type(obj).__name__}")
    if key not in obj:
        raise CalibrationError(f"raw calibration: {where} has no {key!r}")
    return obj[key]


def _floats(values: Any, count: int, where: str, at_least: bool = False) -> tuple[float, ...]:
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in values):
        raise CalibrationError(f"raw calibration: {where} must be a list of numbers")
    if (len(values) < count) if at_least else (len(values) != count):
        raise CalibrationError(f"raw calibration: {where} needs {count} numbers, got {len(values)}")
    try:
        with np.errstate(over="ignore"):  # beyond float32: inf, refused just below
            arr = np.asarray(values[:count], dtype=np.float64).astype(f32)
    except OverflowError:  # an integer beyond float64
        raise CalibrationError(f"raw calibration: {where} contains a number out of range") from None
    if not np.isfinite(arr).all():
        raise CalibrationError(f"raw calibration: {where} contains NaN or inf")
    return tuple(float(v) for v in arr)


def _parse_rt(rt: Any, where: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    rotation = _floats(_get(rt, "Rotation", where), 9, f"{where}.Rotation")
    translation_m = np.asarray(_floats(_get(rt, "Translation", where), 3, f"{where}.Translation"), dtype=f32)
    return rotation, tuple(float(v) for v in translation_m * f32(1000.0))


def _parse_camera(cam: Mapping[str, Any], where: str) -> RawCamera:
    intr = _get(cam, "Intrinsics", where)
    model_type = _get(intr, "ModelType", f"{where}.Intrinsics")
    if not isinstance(model_type, str) or model_type not in _MODEL_TYPES:
        raise CalibrationError(f"raw calibration: {where} has lens model {model_type!r}; "
                               f"only {', '.join(_MODEL_TYPES)} are supported")
    count = _get(intr, "ModelParameterCount", f"{where}.Intrinsics")
    if not isinstance(count, int) or count < 14:
        raise CalibrationError(f"raw calibration: {where} ModelParameterCount must be >= 14, got {count!r}")
    params = _floats(_get(intr, "ModelParameters", f"{where}.Intrinsics"), 14, f"{where}.ModelParameters",
                     at_least=True)
    width, height = _get(cam, "SensorWidth", where), _get(cam, "SensorHeight", where)
    if not all(isinstance(v, int) and v > 0 for v in (width, height)):
        raise CalibrationError(f"raw calibration: {where} SensorWidth/SensorHeight must be positive integers")
    radius = _get(cam, "MetricRadius", where)
    if not isinstance(radius, (int, float)) or isinstance(radius, bool) or not -1e30 < radius < 1e30:
        raise CalibrationError(f"raw calibration: {where} MetricRadius must be a number in float32 range")
    radius32 = f32(radius)
    metric_radius = DEFAULT_METRIC_RADIUS if radius32 <= f32(0.0001) else float(radius32)
    rotation, translation_mm = _parse_rt(_get(cam, "Rt", where), f"{where}.Rt")
    return RawCamera(params, _MODEL_TYPES[model_type], width, height, metric_radius, rotation, translation_mm)


def parse_raw_calibration(text: Union[str, bytes]) -> RawCalibration:
    """Parse the Azure Kinect raw calibration JSON text (bytes may carry a trailing NUL)."""
    if isinstance(text, bytes):
        try:
            text = text.rstrip(b"\x00").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CalibrationError(f"raw calibration is not UTF-8 text ({exc})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"raw calibration is not valid JSON ({exc})") from exc
    except RecursionError:
        raise CalibrationError("raw calibration is not valid JSON (nested too deeply)") from None
    info = _get(doc, "CalibrationInformation", "document")
    cameras = _get(info, "Cameras", "CalibrationInformation")
    if not isinstance(cameras, list):
        raise CalibrationError("raw calibration: CalibrationInformation.Cameras must be a list")
    by_location = {}
    for i, cam in enumerate(cameras):
        location = _get(cam, "Location", f"Cameras[{i}]")
        if not isinstance(location, str):
            raise CalibrationError(f"raw calibration: Cameras[{i}].Location must be a string, got "
                                   f"{type(location).__name__}")
        by_location.setdefault(location, (i, cam))  # first match wins, as in libk4a
    found = {}
    for location in (DEPTH_LOCATION, COLOR_LOCATION):
        if location not in by_location:
            raise CalibrationError(f"raw calibration: no camera with Location {location!r} "
                                   f"(found {sorted(by_location)})")
        i, cam = by_location[location]
        found[location] = _parse_camera(cam, f"Cameras[{i}] ({location})")
    imus = {}
    sensors = info.get("InertialSensors") or []
    if not isinstance(sensors, list):
        raise CalibrationError("raw calibration: CalibrationInformation.InertialSensors must be a list")
    for i, sensor in enumerate(sensors):
        kind = next((k for k, v in _IMU_TYPES.items() if isinstance(sensor, Mapping)
                     and sensor.get("SensorType") == v), None)
        if kind and kind not in imus:
            imus[kind] = _parse_rt(_get(sensor, "Rt", f"InertialSensors[{i}]"), f"InertialSensors[{i}].Rt")
    metadata = info.get("Metadata")
    serial = str(metadata.get("SerialId", "")) if isinstance(metadata, Mapping) else ""
    return RawCalibration(found[DEPTH_LOCATION], found[COLOR_LOCATION], imus.get("gyro"), imus.get("accel"), serial)


# ---------------------------------------------------------------------------------------- per mode
def _apply_mode(params: np.ndarray, mode: ModeInfo, pixelized: bool) -> np.ndarray:
    """SDK `transformation_get_mode_specific_camera_calibration`, float32 arithmetic in its order."""
    out = params.astype(f32).copy()
    bw, bh = f32(mode.binned[0]), f32(mode.binned[1])
    cx, cy = out[0] * bw, out[1] * bh
    fx, fy = out[2] * bw, out[3] * bh
    cx = cx - f32(mode.crop[0])
    cy = cy - f32(mode.crop[1])
    if pixelized:  # to pixels with (0, 0) at the centre of the first pixel (OpenCV convention)
        out[0], out[1], out[2], out[3] = cx - f32(0.5), cy - f32(0.5), fx, fy
    else:
        ow, oh = f32(mode.output[0]), f32(mode.output[1])
        out[0], out[1], out[2], out[3] = cx / ow, cy / oh, fx / ow, fy / oh
    return out


def _intrinsics(cam: RawCamera, params: np.ndarray, mode: ModeInfo) -> CameraIntrinsics:
    p = [float(v) for v in params]
    return CameraIntrinsics(
        width=mode.output[0], height=mode.output[1], cx=p[0], cy=p[1], fx=p[2], fy=p[3],
        k1=p[4], k2=p[5], k3=p[6], k4=p[7], k5=p[8], k6=p[9], codx=p[10], cody=p[11], p2=p[12], p1=p[13],
        metric_radius=cam.metric_radius, model=cam.model)


def depth_intrinsics(cam: RawCamera, depth_mode: Any) -> CameraIntrinsics:
    """Depth camera intrinsics in pixels for one depth mode."""
    name = depth_mode_name(depth_mode)
    if (cam.sensor_width, cam.sensor_height) != (1024, 1024):
        raise CalibrationError(f"depth calibration image must be 1024x1024, got {cam.sensor_width}x{cam.sensor_height}")
    mode = DEPTH_MODES[name]
    return _intrinsics(cam, _apply_mode(np.asarray(cam.params), mode, pixelized=True), mode)


def color_intrinsics(cam: RawCamera, color_resolution: Any) -> CameraIntrinsics:
    """Color camera intrinsics in pixels for one color resolution (4:3 or legacy 16:9 calibrations)."""
    name = color_resolution_name(color_resolution)
    w, h = cam.sensor_width, cam.sensor_height
    params = np.asarray(cam.params, dtype=f32)
    if w * 9 // 16 == h:
        params = _apply_mode(params, _LEGACY_16_9, pixelized=False)
    elif w * 3 // 4 != h:
        raise CalibrationError(f"color calibration image {w}x{h} is neither 4:3 nor 16:9")
    mode = COLOR_RESOLUTIONS[name]
    return _intrinsics(cam, _apply_mode(params, mode, pixelized=True), mode)


def _rt32(rotation: tuple[float, ...], translation_mm: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(rotation, dtype=f32).reshape(3, 3), np.asarray(translation_mm, dtype=f32)


def _dot3(a: np.ndarray, b: np.ndarray) -> np.float32:
    return (a[0] * b[0] + a[1] * b[1]) + a[2] * b[2]  # float32 scalars, left to right as in C


def _source_to_target(world_to_source, world_to_target) -> tuple[np.ndarray, np.ndarray]:
    """SDK `transformation_get_extrinsic_transformation` in float32: T_target * inverse(T_source)."""
    rs, ts = world_to_source
    rt, tt = world_to_target
    rs_inv = rs.T.copy()
    ts_inv = -np.array([_dot3(rs_inv[i], ts) for i in range(3)], dtype=f32)
    t = np.array([_dot3(rt[i], ts_inv) + tt[i] for i in range(3)], dtype=f32)
    r = np.empty((3, 3), dtype=f32)
    for i in range(3):  # math_mult_AB_3x3x3: row i = sum_k A[i, k] * B[k, :], accumulated in k order
        r[i] = (rs_inv[0] * rt[i, 0] + rs_inv[1] * rt[i, 1]) + rs_inv[2] * rt[i, 2]
    return r, t


def _extrinsics_m(r32: np.ndarray, t_mm32: np.ndarray) -> Extrinsics:
    return Extrinsics(r32.astype(np.float64), t_mm32.astype(np.float64) / 1000.0)


def depth_to_color_extrinsics(raw: RawCalibration) -> Extrinsics:
    """Depth camera -> color camera, as libk4a computes it (float32), translation in metres."""
    return _extrinsics_m(*_source_to_target(_rt32(raw.depth.rotation, raw.depth.translation_mm),
                                            _rt32(raw.color.rotation, raw.color.translation_mm)))


def depth_to_imu_extrinsics(raw: RawCalibration, sensor: str = "accel") -> Extrinsics:
    """Depth camera -> IMU sensor frame ("accel" or "gyro"), metres (for gravity / floor direction)."""
    rt = {"accel": raw.accel_rt, "gyro": raw.gyro_rt}.get(sensor, "bad")
    if rt == "bad":
        raise CalibrationError(f"IMU sensor must be 'accel' or 'gyro', got {sensor!r}")
    if rt is None:
        raise CalibrationError(f"raw calibration has no {_IMU_TYPES[sensor]} entry")
    # libk4a treats the IMU Rt as world -> sensor, like the cameras'
    return _extrinsics_m(*_source_to_target(_rt32(raw.depth.rotation, raw.depth.translation_mm), _rt32(*rt)))


def rig_from_raw_json(text: Union[str, bytes], depth_mode: Any = "NFOV_UNBINNED",
                      color_resolution: Any = "720P") -> RgbdRig:
    """RgbdRig for one depth mode / color resolution from the raw calibration JSON text."""
    raw = parse_raw_calibration(text)
    dm, cr = depth_mode_name(depth_mode), color_resolution_name(color_resolution)
    return RgbdRig(depth=depth_intrinsics(raw.depth, dm), color=color_intrinsics(raw.color, cr),
                   depth_to_color=depth_to_color_extrinsics(raw), depth_mode=dm, color_resolution=cr)


# ---------------------------------------------------------------------------------------- pyk4a
def rig_from_pyk4a(source: Any) -> RgbdRig:
    """RgbdRig from an opened `pyk4a.PyK4A`, an opened `pyk4a.PyK4APlayback` or a `pyk4a.Calibration`.

    Devices and playbacks are read through their raw calibration JSON (exact, includes the metric
    radius). A bare `Calibration` only exposes K, 8 distortion coefficients and extrinsics, so its
    metric radius is the SDK default (1.7) and the lens model is assumed Brown-Conrady.
    """
    import pyk4a  # lazy: only this loader needs libk4a

    if isinstance(source, (pyk4a.PyK4A, pyk4a.PyK4APlayback)):
        calibration = source.calibration
        return rig_from_raw_json(source.calibration_raw, calibration.depth_mode, calibration.color_resolution)
    if not isinstance(source, pyk4a.Calibration):
        raise CalibrationError(f"expected pyk4a.PyK4A, PyK4APlayback or Calibration, got {type(source).__name__}")
    dm = depth_mode_name(source.depth_mode)
    cr = color_resolution_name(source.color_resolution)
    cams = {}
    for kind, mode in ((pyk4a.CalibrationType.DEPTH, DEPTH_MODES[dm]), (pyk4a.CalibrationType.COLOR,
                                                                         COLOR_RESOLUTIONS[cr])):
        K = source.get_camera_matrix(kind)
        k1, k2, p1, p2, k3, k4, k5, k6 = (float(v) for v in source.get_distortion_coefficients(kind))
        cams[kind] = CameraIntrinsics(
            width=mode.output[0], height=mode.output[1], fx=float(K[0, 0]), fy=float(K[1, 1]), cx=float(K[0, 2]),
            cy=float(K[1, 2]), k1=k1, k2=k2, k3=k3, k4=k4, k5=k5, k6=k6, p1=p1, p2=p2,
            metric_radius=DEFAULT_METRIC_RADIUS)
    R, t = source.get_extrinsic_parameters(pyk4a.CalibrationType.DEPTH, pyk4a.CalibrationType.COLOR)
    return RgbdRig(depth=cams[pyk4a.CalibrationType.DEPTH], color=cams[pyk4a.CalibrationType.COLOR],
                   depth_to_color=Extrinsics(np.asarray(R, dtype=np.float64), np.asarray(t).reshape(3)),
                   depth_mode=dm, color_resolution=cr)


def rig_from_recording(path: Any) -> RgbdRig:
    """RgbdRig of an Azure Kinect .mkv recording (its calibration.json attachment and recorded modes)."""
    import pyk4a

    playback = pyk4a.PyK4APlayback(path)
    try:
        playback.open()
    except pyk4a.K4AException as exc:
        raise CalibrationError(f"cannot open Azure Kinect recording {path}: {exc}") from exc
    try:
        return rig_from_pyk4a(playback)
    finally:
        playback.close()
