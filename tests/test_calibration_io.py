"""Our rig JSON and OpenCV-style files: exact round trips, known values, clear errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from calibration import CalibrationError, CameraIntrinsics, Extrinsics, RgbdRig, default_rig
from calibration.opencv_io import load_opencv_camera, load_opencv_rig, save_opencv
from calibration.rig import rigid_transform


def test_rig_json_round_trip_is_exact(tmp_path):
    rig = default_rig("WFOV_2X2BINNED", "1536P")
    path = tmp_path / "rig.json"
    rig.save(path)
    back = RgbdRig.load(path)
    assert back == rig
    assert back.depth.metric_radius == rig.depth.metric_radius
    assert json.loads(path.read_text())["depth_mode"] == "WFOV_2X2BINNED"


def test_rig_json_infinite_metric_radius_and_derived_extrinsics(tmp_path):
    cam = CameraIntrinsics(width=640, height=480, fx=600.0, fy=600.0, cx=319.5, cy=239.5, k1=0.1)
    rig = RgbdRig(cam, cam, Extrinsics(np.eye(3), [0.05, 0.0, 0.0]))
    rig.save(tmp_path / "r.json")
    back = RgbdRig.load(tmp_path / "r.json")
    assert back == rig and back.depth.metric_radius == float("inf")
    np.testing.assert_allclose(back.color_to_depth.apply([[0.0, 0.0, 1.0]]), [[-0.05, 0.0, 1.0]])


def test_rig_json_errors_name_the_problem(tmp_path):
    data = default_rig().to_dict()
    data["depth"]["fxx"] = data["depth"].pop("fx")
    (tmp_path / "typo.json").write_text(json.dumps(data))
    with pytest.raises(CalibrationError, match=r"rig.depth: unknown key 'fxx'; did you mean 'fx'\?"):
        RgbdRig.load(tmp_path / "typo.json")
    (tmp_path / "raw.json").write_text(json.dumps({"CalibrationInformation": {}}))
    with pytest.raises(CalibrationError, match="from_kinect_raw_json"):
        RgbdRig.load(tmp_path / "raw.json")
    with pytest.raises(CalibrationError, match="not found"):
        RgbdRig.load(tmp_path / "missing.json")
    with pytest.raises(CalibrationError, match="not millimetres"):
        Extrinsics(np.eye(3), [-32.0, 2.2, 4.0])
    with pytest.raises(CalibrationError, match="not a proper rotation"):
        Extrinsics(np.diag([1.0, 1.0, -1.0]), [0.0, 0.0, 0.0])
    rig = default_rig()
    with pytest.raises(CalibrationError, match="WFOV_UNBINNED means 1024x1024 images, but the camera is 640x576"):
        RgbdRig(rig.depth, rig.color, rig.depth_to_color, depth_mode="WFOV_UNBINNED", color_resolution="720P")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_opencv_file_round_trip(tmp_path, suffix):
    rig = default_rig()
    path = tmp_path / ("rig" + suffix)
    save_opencv(path, rig)
    back = load_opencv_rig(path)
    assert back == rig  # doubles written with full precision
    save_opencv(tmp_path / ("color" + suffix), rig.color)
    assert load_opencv_camera(tmp_path / ("color" + suffix)) == rig.color


def test_reads_ros_camera_info_yaml_with_known_values(tmp_path):
    (tmp_path / "cam.yaml").write_text(
        "image_width: 640\nimage_height: 480\ncamera_name: realsense_color\n"
        "camera_matrix:\n  rows: 3\n  cols: 3\n  data: [615.2, 0.0, 322.5, 0.0, 615.9, 241.3, 0.0, 0.0, 1.0]\n"
        "distortion_model: plumb_bob\n"
        "distortion_coefficients:\n  rows: 1\n  cols: 5\n  data: [0.11, -0.24, 0.001, -0.002, 0.09]\n")
    cam = load_opencv_camera(tmp_path / "cam.yaml")
    assert (cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy) == (640, 480, 615.2, 615.9, 322.5, 241.3)
    assert (cam.k1, cam.k2, cam.p1, cam.p2, cam.k3, cam.k4) == (0.11, -0.24, 0.001, -0.002, 0.09, 0.0)


def test_reads_opencv_rig_with_millimetre_translation_and_rodrigues(tmp_path):
    (tmp_path / "rig.yaml").write_text(
        "%YAML:1.0\n---\n"
        "depth_image_width: 640\ndepth_image_height: 480\n"
        "depth_K: !!opencv-matrix\n   rows: 3\n   cols: 3\n   dt: d\n"
        "   data: [ 385., 0., 320., 0., 385., 240., 0., 0., 1. ]\n"
        "color_width: 1280\ncolor_height: 720\n"
        "color_K: !!opencv-matrix\n   rows: 3\n   cols: 3\n   dt: d\n"
        "   data: [ 910., 0., 640., 0., 910., 360., 0., 0., 1. ]\n"
        "color_D: !!opencv-matrix\n   rows: 1\n   cols: 5\n   dt: d\n   data: [ 0.1, -0.2, 0., 0., 0.05 ]\n"
        "R: !!opencv-matrix\n   rows: 3\n   cols: 1\n   dt: d\n   data: [ 0., 0., 0. ]\n"
        "T: !!opencv-matrix\n   rows: 3\n   cols: 1\n   dt: d\n   data: [ -15., 0., 0. ]\n"
        "translation_units: mm\n")
    rig = load_opencv_rig(tmp_path / "rig.yaml")
    assert rig.depth.fx == 385.0 and rig.color.size == (1280, 720) and rig.color.k3 == 0.05
    np.testing.assert_array_equal(rig.depth_to_color.R, np.eye(3))
    np.testing.assert_allclose(rig.depth_to_color.t, [-0.015, 0.0, 0.0])


def test_opencv_errors(tmp_path):
    (tmp_path / "prism.yaml").write_text(
        "image_width: 640\nimage_height: 480\n"
        "camera_matrix: {rows: 3, cols: 3, data: [500, 0, 320, 0, 500, 240, 0, 0, 1]}\n"
        "distortion_coefficients: {rows: 1, cols: 12, data: [0, 0, 0, 0, 0, 0, 0, 0, 0.01, 0, 0, 0]}\n")
    with pytest.raises(CalibrationError, match="thin-prism"):
        load_opencv_camera(tmp_path / "prism.yaml")
    (tmp_path / "nok.yaml").write_text("image_width: 640\nimage_height: 480\n")
    with pytest.raises(CalibrationError, match="no camera_matrix / K / cameraMatrix"):
        load_opencv_camera(tmp_path / "nok.yaml")
    with pytest.raises(CalibrationError, match="end in"):
        save_opencv(tmp_path / "rig.txt", default_rig())


def test_rigid_transform_is_r_p_plus_t():
    rng = np.random.default_rng(3)
    R = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    t = rng.normal(size=3)
    for shape in [(500, 3), (4, 7, 3), (3,), (0, 3)]:
        p = rng.normal(size=shape) * 3.0
        out = rigid_transform(p, R, t)
        assert out.shape == p.shape and out.dtype == np.float64
        np.testing.assert_allclose(out, p @ R.T + t, rtol=0, atol=1e-12)
    p32 = rng.normal(size=(10, 3)).astype(np.float32)               # any float input, float64 out
    np.testing.assert_allclose(rigid_transform(p32, R, t), p32.astype(np.float64) @ R.T + t, atol=1e-12)
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        rigid_transform(np.zeros((5, 2)), R, t)
