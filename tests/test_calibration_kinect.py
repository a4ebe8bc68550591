"""Azure Kinect raw calibration JSON: our parser against libk4a's (pyk4a.Calibration.from_raw).

libk4a is the reference: pyk4a's `from_raw` calls `k4a_calibration_get_from_raw`. Besides pyk4a's
public getters we read libk4a's full `k4a_calibration_t` through ctypes (same library, same call) for
the fields pyk4a does not expose (image size, metric radius, lens model).
"""
from __future__ import annotations

import ctypes
import glob
import json
from pathlib import Path

import numpy as np
import pytest

pyk4a = pytest.importorskip("pyk4a")
from pyk4a import CalibrationType as CT  # noqa: E402

from calibration import DEFAULT_KINECT_CALIBRATION, CalibrationError, RgbdRig, default_rig  # noqa: E402
from calibration import kinect  # noqa: E402

ASSETS = Path(__file__).parent / "assets" / "calibration"
LEGACY = ASSETS / "kinect_raw_legacy_16x9.json"
FIXTURES = [DEFAULT_KINECT_CALIBRATION, LEGACY]
MODES = [(d, c) for d in kinect.DEPTH_MODES for c in kinect.COLOR_RESOLUTIONS]


# ------------------------------------------------------------------ libk4a's struct through ctypes
class _Ext(ctypes.Structure):
    _fields_ = [("rotation", ctypes.c_float * 9), ("translation", ctypes.c_float * 3)]


class _Intr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("parameter_count", ctypes.c_uint), ("v", ctypes.c_float * 15)]


class _Cam(ctypes.Structure):
    _fields_ = [("extrinsics", _Ext), ("intrinsics", _Intr), ("resolution_width", ctypes.c_int),
                ("resolution_height", ctypes.c_int), ("metric_radius", ctypes.c_float)]


class _Cal(ctypes.Structure):
    _fields_ = [("depth", _Cam), ("color", _Cam), ("extrinsics", (_Ext * 4) * 4), ("depth_mode", ctypes.c_int),
                ("color_resolution", ctypes.c_int)]


def _libk4a():
    libdir = Path(pyk4a.__file__).resolve().parent.parent / "pyk4a_bundle.libs"
    paths = sorted(glob.glob(str(libdir / "libk4a-*.so*"))) + sorted(glob.glob(str(libdir / "libk4a.so*")))
    if not paths:
        pytest.skip(f"libk4a shared library not found next to pyk4a ({libdir})")
    lib = ctypes.CDLL(paths[0])
    fn = lib.k4a_calibration_get_from_raw
    fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Cal)]
    fn.restype = ctypes.c_int
    return fn


def _sdk_struct(text: str, depth_mode: str, color_res: str) -> _Cal:
    raw = text.encode() + b"\0"
    cal = _Cal()
    res = _libk4a()(raw, len(raw), int(pyk4a.DepthMode[depth_mode]), int(pyk4a.ColorResolution["RES_" + color_res]),
                    ctypes.byref(cal))
    assert res == 0, "libk4a rejected the JSON"
    return cal


def _params(cam) -> np.ndarray:
    """Our intrinsics in libk4a's parameter order [cx, cy, fx, fy, k1..k6, codx, cody, p2, p1]."""
    return np.array([cam.cx, cam.cy, cam.fx, cam.fy, cam.k1, cam.k2, cam.k3, cam.k4, cam.k5, cam.k6,
                     cam.codx, cam.cody, cam.p2, cam.p1])


# ------------------------------------------------------------------ the reference comparison
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_raw_parse_equals_pyk4a_for_every_mode(path):
    text = path.read_text()
    for depth_mode, color_res in MODES:
        ref = pyk4a.Calibration.from_raw(text, pyk4a.DepthMode[depth_mode], pyk4a.ColorResolution["RES_" + color_res])
        rig = RgbdRig.from_kinect_raw_json(text, depth_mode, color_res)
        where = f"{path.name} {depth_mode} {color_res}"
        for cam, kind in ((rig.depth, CT.DEPTH), (rig.color, CT.COLOR)):
            # public pyk4a API: camera matrix and OpenCV-ordered coefficients, bit for bit
            np.testing.assert_array_equal(cam.K, ref.get_camera_matrix(kind), err_msg=where)
            np.testing.assert_array_equal(cam.opencv_dist_coeffs(), ref.get_distortion_coefficients(kind),
                                          err_msg=where)
        R, t = ref.get_extrinsic_parameters(CT.DEPTH, CT.COLOR)
        np.testing.assert_array_equal(rig.depth_to_color.R, R, err_msg=where)
        np.testing.assert_array_equal(rig.depth_to_color.t, t.reshape(3), err_msg=where)
        # libk4a composes color->depth in float32; ours is the float64 inverse: equal to float32 precision
        R, t = ref.get_extrinsic_parameters(CT.COLOR, CT.DEPTH)
        np.testing.assert_allclose(rig.color_to_depth.R, R, rtol=0, atol=2e-7, err_msg=where)
        np.testing.assert_allclose(rig.color_to_depth.t, t.reshape(3), rtol=0, atol=1e-8, err_msg=where)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_raw_parse_equals_libk4a_struct(path):
    """All 14 parameters, image size, metric radius and lens model as libk4a stores them."""
    text = path.read_text()
    for depth_mode, color_res in MODES:
        sdk = _sdk_struct(text, depth_mode, color_res)
        rig = RgbdRig.from_kinect_raw_json(text, depth_mode, color_res)
        for cam, ref in ((rig.depth, sdk.depth), (rig.color, sdk.color)):
            assert ref.intrinsics.parameter_count == 14
            np.testing.assert_array_equal(_params(cam), np.array(ref.intrinsics.v[:14], dtype=np.float32))
            assert (cam.width, cam.height) == (ref.resolution_width, ref.resolution_height)
            assert cam.metric_radius == np.float32(ref.metric_radius)
            assert ref.intrinsics.type == 4 and cam.model == "brown_conrady"  # K4A_..._BROWN_CONRADY


def test_known_values_of_the_default_asset():
    """The default rig's documented numbers (fx 504 px NFOV, 605 px 720p, 32 mm baseline, 6 deg tilt)."""
    rig = default_rig()
    assert (rig.depth.width, rig.depth.height, rig.color.width, rig.color.height) == (640, 576, 1280, 720)
    assert rig.depth.fx == pytest.approx(0.49219 * 1024, abs=1e-3)                     # 503.9 px
    assert rig.depth.cx == pytest.approx(0.51312 * 1024 - 192 - 0.5, abs=1e-3)         # crop + pixel centre
    assert rig.color.fx == pytest.approx(0.47266 * 1280, abs=1e-3)                     # 605.0 px
    assert rig.color.cy == pytest.approx(0.50641 * 960 - 120 - 0.5, abs=1e-3)
    assert rig.color.metric_radius == pytest.approx(1.7)   # JSON says 0 -> SDK default
    assert np.linalg.norm(rig.depth_to_color.t) * 1000 == pytest.approx(32.3, abs=0.1)
    angle = np.degrees(np.arccos((np.trace(rig.depth_to_color.R) - 1) / 2))
    assert angle == pytest.approx(6.0, abs=0.01)
    binned = default_rig("NFOV_2X2BINNED", "3072P")
    assert binned.depth.fx == pytest.approx(rig.depth.fx / 2, rel=1e-6)
    assert binned.color.fx == pytest.approx(rig.color.fx * 3.2, rel=1e-6)


def test_imu_extrinsics_equal_pyk4a():
    text = LEGACY.read_text()
    raw = kinect.parse_raw_calibration(text)
    ref = pyk4a.Calibration.from_raw(text, pyk4a.DepthMode.NFOV_UNBINNED, pyk4a.ColorResolution.RES_720P)
    for name, kind in (("accel", CT.ACCEL), ("gyro", CT.GYRO)):
        R, t = ref.get_extrinsic_parameters(CT.DEPTH, kind)
        ext = kinect.depth_to_imu_extrinsics(raw, name)
        np.testing.assert_array_equal(ext.R, R)
        np.testing.assert_array_equal(ext.t, t.reshape(3))


def test_mode_names_accept_enums_ints_and_case():
    assert kinect.depth_mode_name(pyk4a.DepthMode.WFOV_2X2BINNED) == "WFOV_2X2BINNED"
    assert kinect.depth_mode_name(2) == "NFOV_UNBINNED"
    assert kinect.color_resolution_name(pyk4a.ColorResolution.RES_1536P) == "1536P"
    assert kinect.color_resolution_name("res_2160p") == "2160P"
    with pytest.raises(CalibrationError, match="did you mean 'WFOV_UNBINNED'"):
        kinect.depth_mode_name("WFOV_UNBINED")
    with pytest.raises(CalibrationError, match="needs both cameras"):
        kinect.color_resolution_name(pyk4a.ColorResolution.OFF)
    with pytest.raises(CalibrationError, match="needs both cameras"):
        kinect.depth_mode_name(0)


# ------------------------------------------------------------------ bad documents
def _doc():
    return json.loads(DEFAULT_KINECT_CALIBRATION.read_text())


def test_bad_documents_give_one_line_errors():
    with pytest.raises(CalibrationError, match="not valid JSON"):
        RgbdRig.from_kinect_raw_json("{not json")
    doc = _doc()
    doc["CalibrationInformation"]["Cameras"].pop(1)
    with pytest.raises(CalibrationError, match="CALIBRATION_CameraLocationPV0"):
        RgbdRig.from_kinect_raw_json(json.dumps(doc))
    doc = _doc()
    doc["CalibrationInformation"]["Cameras"][0]["Intrinsics"]["ModelParameters"] = [0.5] * 10
    with pytest.raises(CalibrationError, match="needs 14 numbers, got 10"):
        RgbdRig.from_kinect_raw_json(json.dumps(doc))
    doc = _doc()
    doc["CalibrationInformation"]["Cameras"][1]["Intrinsics"]["ModelType"] = "CALIBRATION_LensDistortionModelTheta"
    with pytest.raises(CalibrationError, match="LensDistortionModelTheta"):
        RgbdRig.from_kinect_raw_json(json.dumps(doc))
    doc = _doc()
    doc["CalibrationInformation"]["Cameras"][1]["SensorHeight"] = 3000
    with pytest.raises(CalibrationError, match="neither 4:3 nor 16:9"):
        RgbdRig.from_kinect_raw_json(json.dumps(doc))
    doc = _doc()
    del doc["CalibrationInformation"]["Cameras"][0]["Rt"]
    with pytest.raises(CalibrationError, match="has no 'Rt'"):
        RgbdRig.from_kinect_raw_json(json.dumps(doc))


def test_rational_6kt_is_parsed_like_libk4a():
    text = DEFAULT_KINECT_CALIBRATION.read_text().replace(
        "CALIBRATION_LensDistortionModelBrownConrady", "CALIBRATION_LensDistortionModelRational6KT")
    rig = RgbdRig.from_kinect_raw_json(text)
    sdk = _sdk_struct(text, "NFOV_UNBINNED", "720P")
    assert rig.depth.model == rig.color.model == "rational_6kt" and sdk.depth.intrinsics.type == 3


# ------------------------------------------------------------------ pyk4a objects
def test_from_pyk4a_calibration_object():
    text = DEFAULT_KINECT_CALIBRATION.read_text()
    ref = pyk4a.Calibration.from_raw(text, pyk4a.DepthMode.WFOV_2X2BINNED, pyk4a.ColorResolution.RES_1080P)
    rig = RgbdRig.from_pyk4a(ref)
    exact = RgbdRig.from_kinect_raw_json(text, "WFOV_2X2BINNED", "1080P")
    assert (rig.depth_mode, rig.color_resolution) == ("WFOV_2X2BINNED", "1080P")
    np.testing.assert_array_equal(rig.depth.K, exact.depth.K)
    np.testing.assert_array_equal(rig.color.opencv_dist_coeffs(), exact.color.opencv_dist_coeffs())
    assert rig.depth_to_color == exact.depth_to_color
    assert rig.depth.metric_radius == kinect.DEFAULT_METRIC_RADIUS  # not exposed by pyk4a
    with pytest.raises(CalibrationError, match="expected pyk4a"):
        RgbdRig.from_pyk4a("calibration.json")


def _write_recording(path: Path, raw_json: bytes, depth_mode: int, color_resolution: int) -> None:
    """A one-frame Azure Kinect .mkv (depth only) carrying `raw_json` as its calibration.json, written
    with libk4arecord itself (no device needed)."""
    libdir = Path(pyk4a.__file__).resolve().parent.parent / "pyk4a_bundle.libs"
    rec_paths, k4a_paths = glob.glob(str(libdir / "libk4arecord-*.so*")), glob.glob(str(libdir / "libk4a-*.so*"))
    if not rec_paths or not k4a_paths:
        pytest.skip("libk4arecord not found next to pyk4a")
    rec, k4a = ctypes.CDLL(rec_paths[0]), ctypes.CDLL(k4a_paths[0])
    vp = ctypes.c_void_p

    class Config(ctypes.Structure):  # k4a_device_configuration_t
        _fields_ = [("color_format", ctypes.c_int), ("color_resolution", ctypes.c_int), ("depth_mode", ctypes.c_int),
                    ("camera_fps", ctypes.c_int), ("synchronized_images_only", ctypes.c_bool),
                    ("depth_delay_off_color_usec", ctypes.c_int32), ("wired_sync_mode", ctypes.c_int),
                    ("subordinate_delay_off_master_usec", ctypes.c_uint32),
                    ("disable_streaming_indicator", ctypes.c_bool)]

    rec.k4a_record_create.argtypes = [ctypes.c_char_p, vp, Config, ctypes.POINTER(vp)]
    rec.k4a_record_add_attachment.argtypes = [vp, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
    for name in ("k4a_record_write_header", "k4a_record_flush", "k4a_record_close"):
        getattr(rec, name).argtypes = [vp]
    rec.k4a_record_write_capture.argtypes = [vp, vp]
    k4a.k4a_capture_create.argtypes = [ctypes.POINTER(vp)]
    k4a.k4a_image_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.POINTER(vp)]
    k4a.k4a_image_set_device_timestamp_usec.argtypes = [vp, ctypes.c_uint64]
    k4a.k4a_capture_set_depth_image.argtypes = [vp, vp]
    k4a.k4a_image_release.argtypes = [vp]
    k4a.k4a_capture_release.argtypes = [vp]

    handle, capture, image = vp(), vp(), vp()
    width, height = kinect.DEPTH_MODES[kinect.depth_mode_name(depth_mode)].output
    config = Config(0, color_resolution, depth_mode, 0, False, 0, 0, 0, False)  # MJPG color, 5 fps
    assert rec.k4a_record_create(str(path).encode(), None, config, ctypes.byref(handle)) == 0
    assert rec.k4a_record_add_attachment(handle, b"calibration.json", raw_json, len(raw_json)) == 0
    assert rec.k4a_record_write_header(handle) == 0
    assert k4a.k4a_capture_create(ctypes.byref(capture)) == 0
    assert k4a.k4a_image_create(4, width, height, width * 2, ctypes.byref(image)) == 0  # DEPTH16
    k4a.k4a_image_set_device_timestamp_usec(image, 1000)
    k4a.k4a_capture_set_depth_image(capture, image)
    assert rec.k4a_record_write_capture(handle, capture) == 0
    k4a.k4a_image_release(image)
    k4a.k4a_capture_release(capture)
    assert rec.k4a_record_flush(handle) == 0
    rec.k4a_record_close(handle)


def test_from_pyk4a_playback_reads_the_recordings_calibration(tmp_path):
    path = tmp_path / "legacy.mkv"
    _write_recording(path, LEGACY.read_bytes(), int(pyk4a.DepthMode.WFOV_2X2BINNED),
                     int(pyk4a.ColorResolution.RES_1536P))
    playback = pyk4a.PyK4APlayback(path)
    playback.open()
    try:
        rig = RgbdRig.from_pyk4a(playback)
    finally:
        playback.close()
    assert rig == RgbdRig.from_kinect_raw_json(LEGACY.read_text(), "WFOV_2X2BINNED", "1536P")
    assert rig.depth.metric_radius == np.float32(1.7399997711181641)  # exact path keeps the metric radius
    assert kinect.rig_from_recording(path) == rig
    with pytest.raises(CalibrationError, match="cannot open Azure Kinect recording"):
        kinect.rig_from_recording(tmp_path / "missing.mkv")


@pytest.mark.device
def test_from_live_device_matches_its_raw_calibration():
    """Needs a connected Azure Kinect (deselected in CI)."""
    if pyk4a.connected_device_count() < 1:
        pytest.skip("no Azure Kinect connected")
    device = pyk4a.PyK4A(pyk4a.Config(depth_mode=pyk4a.DepthMode.NFOV_UNBINNED,
                                      color_resolution=pyk4a.ColorResolution.RES_720P))
    device.open()
    try:
        rig = RgbdRig.from_pyk4a(device)
        ref = device.calibration
        np.testing.assert_array_equal(rig.depth.K, ref.get_camera_matrix(CT.DEPTH))
        np.testing.assert_array_equal(rig.color.K, ref.get_camera_matrix(CT.COLOR))
        R, t = ref.get_extrinsic_parameters(CT.DEPTH, CT.COLOR)
        np.testing.assert_array_equal(rig.depth_to_color.R, R)
        np.testing.assert_array_equal(rig.depth_to_color.t, t.reshape(3))
    finally:
        device.close()
