"""training.synth.depth_noise: the Azure Kinect depth-sensor model on planes, edges and patches."""
from __future__ import annotations

import math

import numpy as np
import pytest

from training.synth.depth_noise import (DEPTH_MODE_RANGE_M, SPEC_RANDOM_SIGMA_MAX_MM, DepthNoiseConfig,
                                        DepthNoiseModel, apply_depth_noise, default_intrinsics, noise_sigma_mm,
                                        spec_systematic_bound_mm, systematic_error_mm)

H, W = 576, 640  # NFOV unbinned
QUIET = dict(sigma_floor_mm=0.0, sigma_gain_mm=0.0, systematic_offset_mm=0.0, systematic_per_m_mm=0.0,
             wiggle_amplitude_mm=0.0)  # a noiseless sensor: isolates the other effects


def plane(z_m: float, shape=(H, W)) -> np.ndarray:
    return np.full(shape, z_m, np.float32)


def test_sigma_model_known_values_and_spec():
    cfg = DepthNoiseConfig()
    # 0.5 + 0.9 * z^1.5 mm, head-on, reference reflectance
    np.testing.assert_allclose(noise_sigma_mm([1.0, 2.0, 3.0], cfg), [1.4, 0.5 + 0.9 * 2 ** 1.5, 0.5 + 0.9 * 3 ** 1.5],
                               rtol=1e-6)
    binned = DepthNoiseConfig(depth_mode="NFOV_2X2BINNED")
    np.testing.assert_allclose(noise_sigma_mm(2.0, binned), 0.5 * noise_sigma_mm(2.0, cfg), rtol=1e-6)
    # darker or more oblique surfaces are noisier: sigma's distance term scales with sqrt(rho_ref / (rho cos))
    dark = noise_sigma_mm(2.0, cfg, reflectance=0.125)
    np.testing.assert_allclose(dark, 0.5 + 0.9 * 2 ** 1.5 * 2.0, rtol=1e-6)
    np.testing.assert_allclose(noise_sigma_mm(2.0, cfg, cos_incidence=0.25), dark, rtol=1e-6)
    # the spec: random error <= 17 mm over the operating range for 15-95 % reflectivity
    for mode, (lo, hi) in DEPTH_MODE_RANGE_M.items():
        z = np.linspace(lo, hi, 50)
        assert noise_sigma_mm(z, DepthNoiseConfig(depth_mode=mode), reflectance=0.15).max() <= SPEC_RANDOM_SIGMA_MAX_MM
        bias = systematic_error_mm(z, DepthNoiseConfig(depth_mode=mode))
        assert np.all(np.abs(bias) < spec_systematic_bound_mm(z))
    assert noise_sigma_mm(60.0, cfg, reflectance=0.0) == pytest.approx(SPEC_RANDOM_SIGMA_MAX_MM)  # capped


@pytest.mark.parametrize("mode", ["NFOV_UNBINNED", "NFOV_2X2BINNED"])
@pytest.mark.parametrize("z_m", [1.0, 2.0, 3.0])
def test_flat_plane_noise_and_bias_match_the_model(mode, z_m):
    cfg = DepthNoiseConfig(depth_mode=mode)
    out = apply_depth_noise(plane(z_m), None, None, cfg, np.random.default_rng(7))
    assert out.dtype == np.uint16 and out.shape == (H, W)
    assert np.all(out > 0)  # nothing to invalidate on a head-on plane in range
    err = out.astype(np.float64) - 1000.0 * z_m
    sigma = float(noise_sigma_mm(z_m, cfg))
    expected_std = math.sqrt(sigma ** 2 + 1.0 / 12.0)  # + 1 mm quantisation (uniform, variance 1/12)
    assert err.std() == pytest.approx(expected_std, rel=0.10)
    assert abs(err.mean()) < spec_systematic_bound_mm(z_m)  # 11 mm + 0.1 % of distance
    # and the bias is the model's own systematic error (standard error of the mean ~ 0.01 mm)
    assert err.mean() == pytest.approx(float(systematic_error_mm(z_m, cfg)), abs=0.1)


def test_quantisation_is_1_mm_rounding():
    cfg = DepthNoiseConfig(**QUIET)
    z = np.linspace(0.6, 3.5, H * W, dtype=np.float64).reshape(H, W).astype(np.float32)
    out = apply_depth_noise(z, None, None, cfg, np.random.default_rng(0))
    np.testing.assert_array_equal(out, np.rint(z.astype(np.float32) * np.float32(1000.0)).astype(np.uint16))
    # with noise the output is still whole millimetres around the truth
    noisy = apply_depth_noise(plane(1.23456), None, None, DepthNoiseConfig(), np.random.default_rng(0))
    assert set(np.unique(noisy)) <= set(range(1220, 1250))


@pytest.mark.parametrize("mode, z_m, valid", [
    ("NFOV_UNBINNED", 0.40, False), ("NFOV_UNBINNED", 0.60, True), ("NFOV_UNBINNED", 3.70, True),
    ("NFOV_UNBINNED", 4.00, False), ("NFOV_2X2BINNED", 5.00, True), ("NFOV_2X2BINNED", 5.70, False),
    ("WFOV_UNBINNED", 0.30, True), ("WFOV_UNBINNED", 2.50, False), ("WFOV_2X2BINNED", 2.70, True),
])
def test_out_of_range_reads_zero(mode, z_m, valid):
    out = apply_depth_noise(plane(z_m, (64, 64)), None, None, DepthNoiseConfig(depth_mode=mode),
                            np.random.default_rng(3))
    assert np.all(out > 0) if valid else np.all(out == 0)


def test_range_override_and_no_hit():
    z = plane(2.0, (8, 8))
    z[0, 0], z[0, 1] = 0.0, np.inf
    out = apply_depth_noise(z, None, None, DepthNoiseConfig(range_m=(0.1, 1.5), **QUIET), np.random.default_rng(0))
    assert np.all(out == 0)
    out = apply_depth_noise(z, None, None, DepthNoiseConfig(**QUIET), np.random.default_rng(0))
    assert out[0, 0] == 0 and out[0, 1] == 0
    assert np.all(out[2:, 2:] == 2000)  # away from the no-hit pixels


def tilted_plane(angle_deg: float, cfg: DepthNoiseConfig):
    """Plane through (0, 0, 2 m) turned by angle_deg about the camera's y axis: depth, normals, incidence."""
    fx, fy, cx, cy = default_intrinsics(cfg, H, W)
    a = math.radians(angle_deg)
    normal = np.array([math.sin(a), 0.0, -math.cos(a)], np.float32)
    x = ((np.arange(W) - cx) / fx)[None, :].repeat(H, 0)
    y = ((np.arange(H) - cy) / fy)[:, None].repeat(W, 1)
    denom = 1.0 - math.tan(a) * x
    z = np.where(denom > 0, 2.0 / np.where(denom > 0, denom, 1.0), np.inf).astype(np.float32)
    normals = np.broadcast_to(normal, (H, W, 3)).copy()
    rays = np.stack([x, y, np.ones_like(x)], -1)
    cos = np.abs(rays @ normal) / np.linalg.norm(rays, axis=-1)
    return z, normals, np.degrees(np.arccos(cos))


def test_grazing_angles_invalidate_more_as_the_angle_grows():
    cfg = DepthNoiseConfig()
    centre = (slice(None), slice(W // 2 - 10, W // 2 + 10))  # |x| < 0.02: z within 1.7..2.5 m at 84 deg
    fractions = []
    for angle in [0, 40, 60, 70, 76, 80, 84, 88]:
        z, normals, incidence = tilted_plane(angle, cfg)
        out = apply_depth_noise(z, normals, None, cfg, np.random.default_rng(angle))
        invalid = float(np.mean(out[centre] == 0))
        ramp = np.clip((incidence[centre] - cfg.grazing_start_deg) / (cfg.grazing_full_deg - cfg.grazing_start_deg),
                       0, 1)
        assert invalid == pytest.approx(float(ramp.mean()), abs=0.03), angle  # the model's own ramp
        fractions.append(invalid)
    assert fractions[0] == 0.0 and fractions[1] == 0.0
    assert all(b > a for a, b in zip(fractions[2:], fractions[3:])), fractions
    assert fractions[-1] > 0.95


def test_step_edge_makes_flying_and_invalid_pixels_only_at_the_edge():
    cfg = DepthNoiseConfig()
    z = plane(2.0)
    z[:, : W // 2] = 1.0  # foreground on the left, step between columns 319 and 320
    out = apply_depth_noise(z, None, None, cfg, np.random.default_rng(11)).astype(np.float64)
    band = out[:, W // 2 - 1: W // 2 + 1]  # the two columns touching the step (edge_width_px = 1)
    rest = np.concatenate([out[:, : W // 2 - 1], out[:, W // 2 + 1:]], axis=1)
    between = lambda a: (a > 1050) & (a < 1950)  # noqa: E731 - clearly off both surfaces (sigma < 3.1 mm)

    assert np.all(rest > 0) and not between(rest).any()  # away from the edge: clean
    invalid = np.mean(band == 0)
    assert invalid == pytest.approx(cfg.edge_invalid_prob, abs=0.06)
    flying = band[between(band)]
    expected = (1 - cfg.edge_invalid_prob) * cfg.flying_pixel_prob * 0.9  # a ~ U(0,1) in (0.05, 0.95)
    assert flying.size / band.size == pytest.approx(expected, abs=0.04)
    # every valid value lies between the two surfaces (up to noise)
    valid = band[band > 0]
    assert valid.min() > 1000 - 10 and valid.max() < 2000 + 20


def test_silhouette_against_no_hit_is_invalid_or_foreground_never_flying():
    cfg = DepthNoiseConfig()
    z = np.full((H, W), np.inf, np.float32)
    z[100:400, 200:400] = 1.5
    out = apply_depth_noise(z, None, None, cfg, np.random.default_rng(5)).astype(np.float64)
    assert np.all(out[z == np.inf] == 0)
    rim = np.zeros((H, W), bool)
    rim[100:400, 200:400] = True
    rim[101:399, 201:399] = False
    assert np.mean(out[rim] == 0) == pytest.approx(cfg.edge_invalid_prob, abs=0.07)
    assert np.all(np.abs(out[rim & (out > 0)] - 1500) < 15)  # nothing to mix with: no flying pixels
    assert np.all(out[101:399, 201:399] > 0)


def test_dark_and_specular_patches_drop_out_at_the_configured_rate():
    cfg = DepthNoiseConfig(dark_reflectance=0.05, dark_dropout_prob=0.7, specular_dropout_prob=0.3)
    rho = np.full((H, W), 0.5, np.float32)
    rho[100:300, 100:300] = 0.02  # dark: 40 000 pixels
    specular = np.zeros((H, W), bool)
    specular[350:550, 300:500] = True
    out = apply_depth_noise(plane(2.0), None, rho, cfg, np.random.default_rng(9), specular=specular)
    assert np.mean(out[100:300, 100:300] == 0) == pytest.approx(0.7, abs=0.015)
    assert np.mean(out[350:550, 300:500] == 0) == pytest.approx(0.3, abs=0.015)
    bright = (rho >= 0.05) & ~specular
    assert np.all(out[bright] > 0)
    off = apply_depth_noise(plane(2.0), None, rho, DepthNoiseConfig(dark_dropout_prob=0.0), np.random.default_rng(9))
    assert np.all(off > 0)


def test_same_seed_same_output_different_seed_different_output():
    cfg = DepthNoiseConfig()
    z, normals, _ = tilted_plane(70, cfg)
    z[200:300, 250:350] = 1.2
    rho = np.random.default_rng(0).uniform(0.01, 1.0, (H, W)).astype(np.float32)
    a = apply_depth_noise(z, normals, rho, cfg, np.random.default_rng(42))
    b = apply_depth_noise(z, normals, rho, cfg, np.random.default_rng(42))
    c = apply_depth_noise(z, normals, rho, cfg, np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert np.mean(a != c) > 0.5


def test_reusable_model_matches_the_function_across_frame_sizes():
    cfg = DepthNoiseConfig()
    model = DepthNoiseModel(cfg)
    small = plane(1.5, (288, 320))
    small[:, :100] = np.inf
    big, normals, _ = tilted_plane(60, cfg)
    for z, n in [(small, None), (big, normals), (small, None)]:  # buffers follow the frame size
        a = model(z, n, None, np.random.default_rng(5))
        b = apply_depth_noise(z, n, None, cfg, np.random.default_rng(5))
        np.testing.assert_array_equal(a, b)
    assert np.all(a[:, :99] == 0) and np.mean(a[:, 101:] > 0) > 0.99


def test_inputs_are_not_modified():
    z = plane(2.0)
    z[0, 0] = np.inf
    rho = np.full((H, W), 0.5, np.float32)
    normals = np.zeros((H, W, 3), np.float32)
    normals[..., 2] = -1
    copies = [z.copy(), rho.copy(), normals.copy()]
    apply_depth_noise(z, normals, rho, DepthNoiseConfig(), np.random.default_rng(0))
    for before, after in zip(copies, [z, rho, normals]):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("kwargs, message", [
    (dict(depth_m=np.full((4, 4), np.nan, np.float32)), "NaN"),
    (dict(depth_m=np.full((4, 4), -1.0, np.float32)), "negative"),
    (dict(depth_m=np.full((4, 4), 2, np.uint16)), "float metres"),
    (dict(depth_m=np.full((4, 4, 1), 2.0, np.float32)), r"\(H, W\)"),
    (dict(normals_cam=np.zeros((4, 4), np.float32)), r"normals_cam must be a float array of shape \(4, 4, 3\)"),
    (dict(normals_cam=np.full((4, 4, 3), 0.5, np.float32)), "normals_cam must be unit vectors"),
    (dict(reflectance=np.full((4, 4), 1.5, np.float32)), r"reflectance must be in \[0, 1\]"),
    (dict(reflectance=np.full((3, 4), 0.5, np.float32)), r"reflectance must have shape \(4, 4\)"),
    (dict(specular=np.zeros((4, 4), np.uint8)), "specular must be a bool mask"),
    (dict(intrinsics=(0.0, 1.0, 2.0, 2.0), normals_cam=np.ones((4, 4, 3), np.float32)), "fx, fy > 0"),
])
def test_bad_input_is_a_clear_error(kwargs, message):
    args = dict(depth_m=plane(2.0, (4, 4)), normals_cam=None, reflectance=None)
    extra = {k: kwargs.pop(k) for k in ("specular", "intrinsics") if k in kwargs}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        apply_depth_noise(args["depth_m"], args["normals_cam"], args["reflectance"], DepthNoiseConfig(),
                          np.random.default_rng(0), **extra)


def test_wrong_types_are_rejected():
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        apply_depth_noise(plane(2.0, (4, 4)), None, None, DepthNoiseConfig(), np.random.RandomState(0))
    with pytest.raises(TypeError, match="DepthNoiseConfig"):
        apply_depth_noise(plane(2.0, (4, 4)), None, None, {"depth_mode": "NFOV_UNBINNED"}, np.random.default_rng(0))


@pytest.mark.parametrize("kwargs, message", [
    (dict(depth_mode="NFOV"), "depth_mode must be one of"),
    (dict(range_m=(2.0, 1.0)), "range_m"),
    (dict(edge_invalid_prob=1.5), "edge_invalid_prob must be a probability"),
    (dict(grazing_start_deg=80, grazing_full_deg=70), "grazing_start_deg < grazing_full_deg"),
    (dict(sigma_gain_mm=-1.0), "sigma_gain_mm must be >= 0"),
    (dict(edge_width_px=0), "edge_width_px"),
    (dict(wiggle_period_m=0.0), "wiggle_period_m must be > 0"),
])
def test_bad_config_is_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DepthNoiseConfig(**kwargs)


def test_config_from_dict_is_strict():
    cfg = DepthNoiseConfig.from_dict({"depth_mode": "WFOV_2X2BINNED", "range_m": [0.3, 2.0]})
    assert cfg.operating_range_m == (0.3, 2.0)
    assert DepthNoiseConfig().operating_range_m == DEPTH_MODE_RANGE_M["NFOV_UNBINNED"] == (0.5, 3.86)
    with pytest.raises(ValueError, match="unknown key 'sigma_gian_mm'; did you mean 'sigma_gain_mm'"):
        DepthNoiseConfig.from_dict({"sigma_gian_mm": 1.0})
