"""Checkerboard calibration of a non-Kinect RGB-D camera from rendered board images with known truth."""
from __future__ import annotations

import functools
import subprocess
import sys

import cv2
import numpy as np
import pytest

from calibration import CameraIntrinsics, Extrinsics, RgbdRig
from calibration.checkerboard import board_points, calibrate_rig, find_corners, main
from calibration.opencv_io import load_opencv_camera, load_opencv_rig
from calibration.synthetic import look_at_board, render_checkerboard

PATTERN = (9, 6)
SQUARE_M = 0.03


def _true_rig() -> RgbdRig:
    """A RealSense-like sensor: IR camera (the depth frame) and a color camera 15 mm to its right."""
    ir = CameraIntrinsics(width=640, height=480, fx=385.2, fy=384.7, cx=321.3, cy=238.9,
                          k1=0.021, k2=-0.043, p1=0.0004, p2=-0.0003, k3=0.011)
    color = CameraIntrinsics(width=640, height=480, fx=615.4, fy=615.9, cx=318.2, cy=243.6,
                             k1=0.118, k2=-0.251, p1=0.0008, p2=-0.0006, k3=0.102)
    angle = np.radians(0.8)
    R = cv2.Rodrigues(np.array([0.3, 1.0, -0.2]) / np.linalg.norm([0.3, 1.0, -0.2]) * angle)[0]
    return RgbdRig(ir, color, Extrinsics(R, [-0.0151, 0.0002, 0.0004]))


@functools.lru_cache(maxsize=None)
def _shots():
    rig = _true_rig()
    ir_imgs, color_imgs = [], []
    center = ((PATTERN[0] - 1) * SQUARE_M / 2, (PATTERN[1] - 1) * SQUARE_M / 2)
    # both cameras: the board on a 3x3 grid inside the narrower color view, tilted alternately, plus
    # two strongly tilted central views; the IR camera alone also sees it near its four corners
    poses = [look_at_board(0.6 + 0.05 * (i % 2), 25 * (-1) ** i, 20 * (-1) ** (i // 3), 10 * (i % 3 - 1),
                           center, (x, y))
             for i, (x, y) in enumerate((x, y) for y in (-0.06, 0.0, 0.06) for x in (-0.09, 0.0, 0.09))]
    poses += [look_at_board(0.65, yaw, pitch, roll, center) for yaw, pitch, roll in ((40, 5, 5), (-5, 40, -5))]
    poses += [look_at_board(0.5, 15 * sx, -15 * sy, 0, center, (0.25 * sx, 0.17 * sy))
              for sx in (-1, 1) for sy in (-1, 1)]
    for pose in poses:
        to_color = Extrinsics(rig.depth_to_color.R @ pose.R, rig.depth_to_color.R @ pose.t + rig.depth_to_color.t)
        ir = render_checkerboard(rig.depth, pose, PATTERN, SQUARE_M)
        ir_imgs.append((ir.astype(np.uint16) * 7 + 300))  # a 16-bit IR-like image
        color_imgs.append(cv2.cvtColor(render_checkerboard(rig.color, to_color, PATTERN, SQUARE_M),
                                       cv2.COLOR_GRAY2BGR))
    return rig, ir_imgs, color_imgs


def test_corners_are_found_where_the_board_projects():
    rig, ir_imgs, _ = _shots()
    corners = find_corners(ir_imgs[0], PATTERN)
    assert corners is not None and corners.shape == (54, 2)
    assert corners[0].sum() < corners[-1].sum()  # canonical order: starts top-left


def test_calibration_recovers_the_true_rig():
    truth, ir_imgs, color_imgs = _shots()
    ir_c = [find_corners(i, PATTERN) for i in ir_imgs]
    co_c = [find_corners(i, PATTERN) for i in color_imgs]
    assert sum(c is not None for c in ir_c) == 15 and sum(c is not None for c in co_c) == 11
    fit = calibrate_rig(ir_c, co_c, PATTERN, SQUARE_M, (640, 480), (640, 480))
    assert fit.depth_rms_px < 0.1 and fit.color_rms_px < 0.1 and fit.stereo_rms_px < 0.1
    for got, want in ((fit.rig.depth, truth.depth), (fit.rig.color, truth.color)):
        for name in ("fx", "fy", "cx", "cy"):
            assert getattr(got, name) == pytest.approx(getattr(want, name), abs=1.0), name
        # projections agree inside the calibrated field of view (where boards were seen)
        xy, ok = want.xy_table()
        sub = xy[ok][::7]
        rays = np.column_stack([sub, np.ones(len(sub))])
        uv, inside = got.project_with_mask(rays)
        assert inside.mean() > 0.85
        assert np.abs(uv[inside] - want.project(rays[inside])).max() < 1.0
    t_err = np.linalg.norm(fit.rig.depth_to_color.t - truth.depth_to_color.t)
    r_err = np.degrees(np.arccos(np.clip((np.trace(fit.rig.depth_to_color.R.T @ truth.depth_to_color.R) - 1) / 2,
                                         -1, 1)))
    assert t_err < 0.001 and r_err < 0.1, (t_err, r_err)


def test_cli_writes_rig_json_and_opencv_yaml(tmp_path, capsys):
    truth, ir_imgs, color_imgs = _shots()
    for i, (ir, color) in enumerate(zip(ir_imgs, color_imgs)):
        cv2.imwrite(str(tmp_path / f"ir_{i:02d}.png"), ir)
        cv2.imwrite(str(tmp_path / f"color_{i:02d}.png"), color)
    rc = main(["--ir", str(tmp_path / "ir_*.png"), "--color", str(tmp_path / "color_*.png"), "--pattern", "9x6",
               "--square-mm", "30", "--out", str(tmp_path / "rig.json"),
               "--opencv-yaml", str(tmp_path / "rig.yaml")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "board found in 15/15 images" in out and "board found in 11/15 images" in out
    rig = RgbdRig.load(tmp_path / "rig.json")
    assert load_opencv_rig(tmp_path / "rig.yaml") == rig
    assert rig.color.fx == pytest.approx(truth.color.fx, abs=1.0)
    assert np.linalg.norm(rig.depth_to_color.t) == pytest.approx(np.linalg.norm(truth.depth_to_color.t), abs=1e-3)
    # color only -> one camera in OpenCV YAML
    assert main(["--color", str(tmp_path / "color_*.png"), "--pattern", "9x6", "--square-mm", "30",
                 "--opencv-yaml", str(tmp_path / "color.yaml")]) == 0
    assert load_opencv_camera(tmp_path / "color.yaml").fy == pytest.approx(truth.color.fy, abs=1.0)
    # an existing output is replaced only with --overwrite (exit 2 and one line otherwise)
    (tmp_path / "color.yaml").write_text("earlier")
    capsys.readouterr()
    again = ["--color", str(tmp_path / "color_*.png"), "--pattern", "9x6", "--square-mm", "30",
             "--opencv-yaml", str(tmp_path / "color.yaml")]
    assert main(again) == 2
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'color.yaml'}: already exists (pass --overwrite to replace)\n"
    assert (tmp_path / "color.yaml").read_text() == "earlier"
    assert main(again + ["--overwrite"]) == 0
    assert load_opencv_camera(tmp_path / "color.yaml").fy == pytest.approx(truth.color.fy, abs=1.0)


def test_cli_errors_and_help(tmp_path):
    with pytest.raises(SystemExit, match="no images match"):
        main(["--color", str(tmp_path / "nothing_*.png"), "--pattern", "9x6", "--square-mm", "30",
              "--opencv-yaml", str(tmp_path / "x.yaml")])
    with pytest.raises(SystemExit, match="needs --ir"):
        main(["--color", "x", "--pattern", "9x6", "--square-mm", "30", "--out", str(tmp_path / "r.json")])
    with pytest.raises(SystemExit):
        main(["--color", "x", "--pattern", "nine", "--square-mm", "30", "--out", "r.json"])
    done = subprocess.run([sys.executable, "-m", "calibration.checkerboard", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--square-mm" in done.stdout and "inner corners" in done.stdout


def test_board_points_order_matches_opencv():
    pts = board_points((3, 2), 0.5)
    np.testing.assert_array_equal(pts[:4], [[0, 0, 0], [0.5, 0, 0], [1.0, 0, 0], [0, 0.5, 0]])
