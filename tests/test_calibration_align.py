"""RGB-D alignment on a synthetic scene (wall with colored patches, floor, box) rendered into both
cameras of the default Kinect rig: colors must land on the depth pixels of the same surface patch."""
from __future__ import annotations

import functools

import numpy as np
import pytest

from calibration import (AlignConfig, CalibrationError, ColorToDepthAligner, DepthToColorAligner,
                         align_color_to_depth_naive, default_rig)
from calibration.rig import Extrinsics
from calibration.synthetic import Box, Plane, palette, render_rgbd

pyk4a = pytest.importorskip("pyk4a")

# wall of 16 patches 3 m away, floor, and a box whose front, left and top faces the cameras see
SCENE = [
    Plane(point=(0.0, 0.0, 3.0), normal=(0.0, 0.0, -1.0), u_axis=(1.0, 0.0, 0.0), patch_m=0.3, label_base=0),
    Plane(point=(0.0, 1.0, 0.0), normal=(0.0, -1.0, 0.0), u_axis=(1.0, 0.0, 0.0), patch_m=0.5, patches=1,
          label_base=16),
    Box(center=(0.35, 0.3, 1.8), half_size=(0.2, 0.2, 0.2), label_base=17),
]
N_LABELS = 23


@functools.lru_cache(maxsize=None)
def _setup(depth_mode: str = "NFOV_UNBINNED", color_res: str = "720P"):
    rig = default_rig(depth_mode, color_res)
    return rig, render_rgbd(rig, SCENE), ColorToDepthAligner(rig)


def _labels_of(colors: np.ndarray) -> np.ndarray:
    """Nearest palette entry of each BGR color (the scene's colors are palette[label])."""
    pal = palette()[:N_LABELS].astype(np.int32)
    d = ((colors[..., None, :].astype(np.int32) - pal) ** 2).sum(axis=-1)
    return np.argmin(d, axis=-1)


def _near_boundary(label: np.ndarray, radius: int = 1) -> np.ndarray:
    """True within `radius` px (8-neighbourhood) of a change of label."""
    out = np.zeros(label.shape, dtype=bool)
    padded = np.pad(label, radius, mode="edge")
    h, w = label.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            out |= padded[radius + dy:radius + dy + h, radius + dx:radius + dx + w] != label
    return out


def _seen_by(camera, world_to_camera, render, points_world: np.ndarray) -> np.ndarray:
    """Ground truth: each world point (..., 3) is the first hit along `camera`'s ray, i.e. matches the
    camera's rendered z at the nearest pixel within 5 mm plus that pixel's depth change per pixel
    (surfaces seen at grazing angles change depth fast)."""
    pts = world_to_camera.apply(points_world)
    uv, ok = camera.project_with_mask(pts)
    ok &= (uv[..., 0] > -0.5) & (uv[..., 0] < camera.width - 0.5) & (uv[..., 1] > -0.5) & (
        uv[..., 1] < camera.height - 0.5)
    u = np.clip(np.rint(np.nan_to_num(uv[..., 0])), 0, camera.width - 1).astype(int)
    v = np.clip(np.rint(np.nan_to_num(uv[..., 1])), 0, camera.height - 1).astype(int)
    z = np.nan_to_num(render.z, nan=1e3)
    slope = np.minimum(np.abs(np.gradient(z, axis=0)) + np.abs(np.gradient(z, axis=1)), 1.0)
    return ok & (np.abs(pts[..., 2] - z[v, u]) < 0.005 + slope[v, u])


def _visible_in_color(rig, frame) -> np.ndarray:
    """Depth pixels whose surface point the color camera sees."""
    return _seen_by(rig.color, rig.depth_to_color, frame.color_render, frame.depth_render.points_world)


@pytest.mark.parametrize("occlusion_check", [False, True])
def test_color_patches_land_on_their_depth_pixels_within_1px(occlusion_check):
    rig, frame, plain = _setup()
    aligner = ColorToDepthAligner(rig, AlignConfig(occlusion_check=True)) if occlusion_check else plain
    aligned, valid = aligner(frame.color_bgr, frame.depth_mm)
    truth = frame.depth_render.label
    visible = _visible_in_color(rig, frame)
    assert set(np.unique(truth[valid])) >= {0, 5, 10, 15, 16, 18, 20, 22}  # wall, floor, 3 box faces
    got = _labels_of(aligned)
    wrong = valid & (truth >= 0) & (got != truth) & ~_near_boundary(visible, 1)
    if not occlusion_check:
        wrong &= visible  # without the check, pixels hidden from the color camera show the occluder
        assert (valid & ~visible & (truth >= 0)).sum() > 300  # ... and there is such a shadow here
    else:
        hidden_kept = valid & ~visible & ~_near_boundary(truth, 2) & ~_near_boundary(visible, 2)
        assert hidden_kept.sum() == 0, "occlusion check kept depth pixels the color camera cannot see"
    # every wrongly colored pixel lies within 1 px of a patch boundary (or of the occlusion shadow)
    assert (wrong & ~_near_boundary(truth, 1)).sum() == 0
    # and coverage: away from boundaries, every visible in-view pixel is valid
    inner = (truth >= 0) & visible & ~_near_boundary(truth, 2) & ~_near_boundary(visible, 2) & (frame.depth_mm > 0)
    assert valid[inner].mean() > 0.999, (~valid & inner).sum()


def test_subpixel_accuracy_on_a_coordinate_ramp():
    """Color the wall with its own world x / y (sawtooth ramps, 1 mm per gray level): the aligned
    color of each depth pixel then says where on the wall the color came from."""
    rig, frame, aligner = _setup()
    period = 0.255  # metres per ramp, 1 mm per level
    pts_c = frame.color_render.points_world
    wall_c = (frame.color_render.label >= 0) & (frame.color_render.label < 16)
    ramp = np.zeros(frame.color_bgr.shape, np.uint8)
    for ch, axis in ((0, 0), (1, 1)):
        ramp[..., ch] = np.where(wall_c, np.rint(np.mod(np.nan_to_num(pts_c[..., axis]), period) * 1000), 0)
    aligned, valid = aligner(ramp, frame.depth_mm)
    pts_d = frame.depth_render.points_world
    wall_d = (frame.depth_render.label >= 0) & (frame.depth_render.label < 16)
    ok = valid & wall_d & _visible_in_color(rig, frame) & ~_near_boundary(frame.depth_render.label, 2)
    errs = []
    for ch, axis in ((0, 0), (1, 1)):
        phase = np.mod(pts_d[..., axis], period)
        away_from_wrap = (phase > 0.02) & (phase < period - 0.02)
        m = ok & away_from_wrap
        err_m = aligned[..., ch][m] / 1000.0 - phase[m]
        errs.append(np.abs(err_m) * rig.depth.fx / pts_d[..., 2][m])  # metres on the wall -> depth px
    err = np.concatenate(errs)
    assert err.size > 100000
    assert np.median(err) < 0.1 and np.percentile(err, 99.9) < 0.35, (np.median(err), err.max())


def test_fast_path_equals_exact_and_naive():
    rig, frame, aligner = _setup()
    pm = aligner.map
    assert pm.fit_error_px <= AlignConfig().max_fit_error_px
    rng = np.random.default_rng(3)
    idx = rng.integers(0, frame.depth_mm.size, 20000)
    depth = rng.integers(250, 10001, frame.depth_mm.shape).astype(np.uint16)
    uv, _ = pm.color_coordinates(depth)
    exact, ok = pm.exact_uv(idx, 1000.0 / depth.reshape(-1)[idx])
    inside = ok & (exact[:, 0] >= 0) & (exact[:, 0] <= rig.color.width - 1) & (exact[:, 1] >= 0) & (
        exact[:, 1] <= rig.color.height - 1)
    err = np.abs(uv.reshape(-1, 2)[idx] - exact)[inside]
    assert inside.sum() > 10000 and err.max() <= 0.02  # float32 Horner + fit
    fast, fast_valid = aligner(frame.color_bgr, frame.depth_mm)
    naive, naive_valid = align_color_to_depth_naive(rig, frame.color_bgr, frame.depth_mm)
    assert (fast_valid != naive_valid).sum() <= 5
    both = fast_valid & naive_valid
    assert (np.abs(fast.astype(int) - naive)[both] > 2).any(axis=-1).mean() < 1e-3


@pytest.mark.parametrize("mode", ["NFOV_UNBINNED", "WFOV_2X2BINNED"])
def test_compiled_map_equals_the_per_array_horner_passes(mode):
    """The map's one compiled pass gives bit for bit what OpenCV's per-array passes give: w = min(1000 /
    depth, w_hi) in float32, Horner in float32 with every product and sum rounded, depth_ok = 255 inside
    the working range; also on windows, zero and over-range depths."""
    import cv2
    rig = default_rig(mode, "720P")
    m = ColorToDepthAligner(rig).map
    hd, wd = m.shape
    depth = np.random.default_rng(4).integers(0, 12000, (hd, wd)).astype(np.uint16)
    depth[::7] = 0
    depth[:, ::11] = 65535
    for window in [None, (5, 3, wd - 40, hd - 1), (wd - 3, hd - 2, wd, hd)]:
        x0, y0, x1, y1 = (0, 0, wd, hd) if window is None else window
        d = depth[y0:y1, x0:x1]
        w = cv2.min(cv2.divide(1000.0, d, dtype=cv2.CV_32F), float(m.w_hi))
        w2 = cv2.merge((w, w))
        ref = cv2.add(cv2.multiply(m.coef[-1][y0:y1, x0:x1], w2), m.coef[-2][y0:y1, x0:x1])
        for c in m.coef[-3::-1]:
            ref = cv2.add(cv2.multiply(ref, w2), c[y0:y1, x0:x1])
        uv, ok = m.color_coordinates(depth, window)
        fitted = np.ones(d.shape, bool)
        rows, cols = np.divmod(m.exact_index, wd)
        inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
        fitted[rows[inside] - y0, cols[inside] - x0] = False           # (pixels on the exact path)
        np.testing.assert_array_equal(uv[fitted], ref[fitted])
        np.testing.assert_array_equal(ok, cv2.inRange(d, m.config.min_depth_mm, m.config.max_depth_mm))

@pytest.mark.parametrize("mode", ["NFOV_UNBINNED", "WFOV_2X2BINNED"])
def test_a_window_aligns_exactly_as_the_full_frame_there(mode):
    """Training crops align only their window: same pixels there (fast and exact-path pixels alike),
    black and invalid elsewhere; bad windows and occlusion checks are refused."""
    rig, frame, aligner = _setup(mode, "720P")
    full, full_valid = aligner(frame.color_bgr, frame.depth_mm)
    hd, wd = frame.depth_mm.shape
    exact_rows, exact_cols = np.divmod(aligner.map.exact_index, wd)
    for window in ((37, 51, 301, 222), (0, 0, wd, hd), (wd - 90, hd - 70, wd, hd), (5, 9, 6, 10)):
        x0, y0, x1, y1 = window
        got, valid = aligner(frame.color_bgr, frame.depth_mm, window=window)
        assert got.shape == full.shape and valid.shape == full_valid.shape
        assert np.array_equal(got[y0:y1, x0:x1], full[y0:y1, x0:x1])
        assert np.array_equal(valid[y0:y1, x0:x1], full_valid[y0:y1, x0:x1])
        outside = np.ones_like(valid)
        outside[y0:y1, x0:x1] = False
        assert not valid[outside].any() and not got[outside].any()
    if aligner.map.exact_index.size:      # a window holding exact-path pixels
        r, c = int(exact_rows[0]), int(exact_cols[0])
        window = (max(0, c - 3), max(0, r - 3), min(wd, c + 4), min(hd, r + 4))
        got, valid = aligner(frame.color_bgr, frame.depth_mm, window=window)
        x0, y0, x1, y1 = window
        assert np.array_equal(got[y0:y1, x0:x1], full[y0:y1, x0:x1])
    with pytest.raises(CalibrationError, match="empty or outside"):
        aligner(frame.color_bgr, frame.depth_mm, window=(10, 10, 10, 20))
    with pytest.raises(CalibrationError, match="occlusion_check"):
        ColorToDepthAligner(rig, AlignConfig(occlusion_check=True))(frame.color_bgr, frame.depth_mm, window=(0, 0, 9, 9))


def test_wide_binned_mode_also_aligns():
    rig, frame, aligner = _setup("WFOV_2X2BINNED", "720P")
    aligned, valid = aligner(frame.color_bgr, frame.depth_mm)
    truth = frame.depth_render.label
    wrong = valid & (truth >= 0) & (_labels_of(aligned) != truth) & _visible_in_color(rig, frame)
    assert valid.sum() > 50000
    assert (wrong & ~_near_boundary(truth, 1)).sum() == 0


def test_invalid_and_out_of_range_depth_are_masked_black():
    rig, frame, aligner = _setup()
    depth = frame.depth_mm.copy()
    depth[100:110, 200:300] = 0          # no measurement
    depth[200:210, 200:300] = 100        # closer than the 250 mm working range
    depth[300:310, 200:300] = 20000      # farther than 10 m
    aligned, valid = aligner(frame.color_bgr, depth)
    for rows in (slice(100, 110), slice(200, 210), slice(300, 310)):
        assert not valid[rows, 200:300].any()
        assert (aligned[rows, 200:300] == 0).all()
    assert (aligned[~valid] == 0).all()
    # BGRA input (the Kinect's native format) gives the same result
    bgra = np.concatenate([frame.color_bgr, np.full(frame.color_bgr.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    aligned4, valid4 = aligner(bgra, depth)
    assert np.array_equal(aligned4, aligned) and np.array_equal(valid4, valid)


def test_bad_inputs_raise_clear_errors():
    rig, frame, aligner = _setup()
    with pytest.raises(CalibrationError, match=r"rig's depth camera is \(H, W\) = \(576, 640\)"):
        aligner(frame.color_bgr, frame.depth_mm[:-1])
    with pytest.raises(CalibrationError, match="uint16 millimetres.*metres"):
        aligner(frame.color_bgr, frame.depth_mm.astype(np.float32) / 1000)
    with pytest.raises(CalibrationError, match=r"needs \(720, 1280, 3\) BGR"):
        aligner(frame.color_bgr[:, :, 0], frame.depth_mm)
    with pytest.raises(CalibrationError, match="color_bgr must be uint8"):
        aligner(frame.color_bgr.astype(np.float32), frame.depth_mm)
    with pytest.raises(CalibrationError, match="min_depth_mm < max_depth_mm"):
        AlignConfig(min_depth_mm=5000, max_depth_mm=1000)


def test_depth_to_color_zbuffer_matches_the_color_render():
    rig, frame, aligner = _setup()
    d2c = DepthToColorAligner(rig, pixel_map=aligner.map)
    z = d2c(frame.depth_mm).astype(np.float64)
    truth = frame.color_render.z * 1000.0
    label = frame.color_render.label
    # color pixels whose surface point the depth camera sees (inside its view, not hidden by the box)
    seen = _seen_by(rig.depth, Extrinsics.identity(), frame.depth_render, frame.color_render.points_world)
    inner = seen & ~_near_boundary(label, 3) & ~_near_boundary(seen, 3)
    assert inner.sum() > 300000
    assert (z[inner] > 0).mean() > 0.999, "holes in the splatted depth"
    assert (z[~seen & ~_near_boundary(seen, 3)] == 0).mean() > 0.999, "depth where the depth camera saw nothing"
    # within uint16 rounding plus the surface's depth change across one color pixel (the slanted floor)
    slope = np.hypot(*np.gradient(np.nan_to_num(truth)))
    err = np.abs(z - truth)[inner]
    assert np.median(err) <= 1.0
    assert (err <= 2.0 + 1.0 * slope[inner]).mean() > 0.999
    # nearest surface wins: the box occludes the wall in the color view
    box = inner & (label == 22)  # its front face
    assert box.sum() > 5000 and np.abs(z[box] - truth[box]).max() < 3.0


def test_agreement_with_pyk4a_transform_when_opengl_is_available():
    rig, frame, aligner = _setup()
    from calibration import DEFAULT_KINECT_CALIBRATION

    ref = pyk4a.Calibration.from_raw(DEFAULT_KINECT_CALIBRATION.read_text(), pyk4a.DepthMode.NFOV_UNBINNED,
                                     pyk4a.ColorResolution.RES_720P)
    bgra = np.concatenate([frame.color_bgr, np.full(frame.color_bgr.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    try:
        sdk = pyk4a.color_image_to_depth_camera(bgra, frame.depth_mm, ref, True)
    except Exception as exc:  # pyk4a raises or returns None when its depth engine cannot start
        sdk, reason = None, repr(exc)
    else:
        reason = "returned None"
    if sdk is None:
        pytest.skip(f"the SDK's transform needs its OpenGL depth engine (no GPU/display here: {reason}, "
                    "libk4a logs error 204)")
    aligned, valid = aligner(frame.color_bgr, frame.depth_mm)
    truth = frame.depth_render.label
    sdk_valid = sdk[..., 3] > 0 if sdk.shape[-1] == 4 else sdk.any(axis=-1)
    inner = valid & sdk_valid & ~_near_boundary(truth, 2) & _visible_in_color(rig, frame)
    assert inner.sum() > 100000
    assert (_labels_of(sdk[..., :3]) == _labels_of(aligned))[inner].mean() > 0.99
    sdk_depth = pyk4a.depth_image_to_color_camera(frame.depth_mm, ref, True)
    ours = DepthToColorAligner(rig, pixel_map=aligner.map)(frame.depth_mm).astype(float)
    both = (sdk_depth > 0) & (ours > 0)
    assert np.median(np.abs(ours[both] - sdk_depth[both])) <= 2.0
