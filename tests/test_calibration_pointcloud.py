"""Point clouds: known 3D points, invalid pixels, colors, and the Open3D helper."""
from __future__ import annotations

import numpy as np
import pytest

from calibration import (CalibrationError, CameraIntrinsics, DEFAULT_KINECT_CALIBRATION, colored_points,
                         default_rig, depth_to_points, to_open3d_point_cloud)
from calibration.synthetic import render_rgbd


def test_points_of_a_flat_wall_are_on_the_wall():
    rig = default_rig()
    depth = np.full((576, 640), 2500, dtype=np.uint16)
    points, valid = depth_to_points(rig, depth)
    assert points.dtype == np.float32 and points.shape == (576, 640, 3) and valid.all()
    np.testing.assert_array_equal(points[..., 2], np.float32(2.5))
    # the principal point looks straight ahead; the image corners see the documented field of view
    cx, cy = int(round(rig.depth.cx)), int(round(rig.depth.cy))
    assert abs(points[cy, cx, 0]) < 2.5 * 1.0 / rig.depth.fx and abs(points[cy, cx, 1]) < 2.5 * 1.0 / rig.depth.fx
    fov_x = np.degrees(np.arctan(points[cy, -1, 0] / 2.5) - np.arctan(points[cy, 0, 0] / 2.5))
    assert 70 < fov_x < 80  # NFOV: ~75 degrees


def test_points_agree_with_libk4a():
    pyk4a = pytest.importorskip("pyk4a")
    ref = pyk4a.Calibration.from_raw(DEFAULT_KINECT_CALIBRATION.read_text(), pyk4a.DepthMode.NFOV_UNBINNED,
                                     pyk4a.ColorResolution.RES_720P)
    depth = np.random.default_rng(0).integers(300, 5000, (576, 640)).astype(np.uint16)
    points, valid = depth_to_points(default_rig().depth, depth)
    for v, u in [(0, 0), (288, 320), (575, 639), (100, 500), (400, 30)]:
        sdk = np.array(ref.convert_2d_to_3d((float(u), float(v)), float(depth[v, u]), pyk4a.CalibrationType.DEPTH))
        np.testing.assert_allclose(points[v, u] * 1000.0, sdk, atol=0.01)  # mm


def test_invalid_depth_gives_nan_and_false():
    rig = default_rig("WFOV_2X2BINNED")
    depth = np.full((512, 512), 1000, dtype=np.uint16)
    depth[10, 256] = 0
    points, valid = depth_to_points(rig.depth, depth)
    assert not valid[10, 256] and np.isnan(points[10, 256]).all()
    assert not valid[0, 0] and np.isnan(points[0, 0]).all()  # wide-FOV corner: outside the lens model
    assert np.isfinite(points[valid]).all() and not np.isnan(points[valid]).any()
    with pytest.raises(CalibrationError, match=r"\(H, W\) = \(512, 512\)"):
        depth_to_points(rig.depth, depth[:, :500])
    with pytest.raises(CalibrationError, match="camera must be"):
        depth_to_points("depth", depth)


def test_colored_points_and_open3d_cloud():
    pytest.importorskip("open3d")
    rig = default_rig()
    frame = render_rgbd(rig)
    points, colors, valid = colored_points(rig, frame.color_bgr, frame.depth_mm)
    assert valid.sum() > 0.8 * valid.size
    assert np.isnan(points[~valid]).all() and (colors[~valid] == 0).all()
    # the wall (first surface of the default scene) is the plane z = 3 m of the depth camera frame
    wall = valid & (frame.depth_render.label >= 0) & (frame.depth_render.label < 16)
    np.testing.assert_allclose(points[wall][:, 2], 3.0, atol=0.0006)  # 0.5 mm depth rounding
    cloud = to_open3d_point_cloud(points, colors, valid)
    assert len(cloud.points) == valid.sum()
    got = np.asarray(cloud.colors)
    np.testing.assert_allclose(got, colors[valid][:, ::-1] / 255.0)  # BGR -> Open3D RGB
    np.testing.assert_allclose(np.asarray(cloud.points), points[valid], atol=1e-6)
    with pytest.raises(CalibrationError, match="colors must be uint8"):
        to_open3d_point_cloud(points, colors.astype(np.float32), valid)


def test_open3d_helper_drops_non_finite_points_without_a_mask():
    pytest.importorskip("open3d")
    pts = np.array([[0.0, 0.0, 1.0], [np.nan, 0.0, 1.0], [0.1, 0.2, 2.0]], dtype=np.float32)
    cloud = to_open3d_point_cloud(pts)
    np.testing.assert_allclose(np.asarray(cloud.points), pts[[0, 2]])


def test_distortion_free_camera_known_point():
    cam = CameraIntrinsics(width=4, height=3, fx=100.0, fy=100.0, cx=1.5, cy=1.0)
    depth = np.full((3, 4), 2000, dtype=np.uint16)
    points, valid = depth_to_points(cam, depth)
    np.testing.assert_allclose(points[2, 3], [2.0 * 1.5 / 100, 2.0 * 1.0 / 100, 2.0], rtol=1e-6)
