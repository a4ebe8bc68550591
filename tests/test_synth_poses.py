"""training.synth.poses: joint-limit-aware sampler and scripted motions."""
import numpy as np
import pytest

from training.datasets.joint_sets import flip_smpl_pose as flip_theta

from training.synth.poses import (JOINT_LIMITS, MOTIONS, NUM_JOINTS, POSE_TEMPLATES, PoseSamplerConfig,
                                  clamp_to_limits, euler_to_theta, flip_euler, motion_program,
                                  sample_body_euler, sample_body_poses, scripted_motion, theta_to_euler)


def test_sampled_poses_respect_limits_and_are_deterministic():
    cfg = PoseSamplerConfig(flip_prob=0.5)
    a = sample_body_poses(2000, np.random.default_rng(1), cfg)
    b = sample_body_poses(2000, np.random.default_rng(1), cfg)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2000, 72)
    assert np.all(a[:, :3] == 0)
    euler = sample_body_euler(2000, np.random.default_rng(1), cfg)
    np.testing.assert_allclose(euler_to_theta(euler), a)
    for j, box in JOINT_LIMITS.items():
        for ax in range(3):
            lo, hi = box[ax]
            assert euler[:, j, ax].min() >= lo - 1e-6 and euler[:, j, ax].max() <= hi + 1e-6, (j, ax)


def test_sampler_is_broad_overhead_arms_and_deep_knees_are_not_rare():
    euler = sample_body_euler(4000, np.random.default_rng(2), PoseSamplerConfig(flip_prob=0.0))
    overhead = (euler[:, 16, 2] > 0.8).mean()
    deep_knee = (euler[:, 4, 0] > 1.8).mean()
    assert overhead > 0.05, overhead
    assert deep_knee > 0.05, deep_knee


def test_flip_is_an_involution_and_swaps_sides():
    euler = sample_body_euler(50, np.random.default_rng(3))
    theta = euler_to_theta(euler)
    np.testing.assert_allclose(flip_theta(flip_theta(theta)), theta, atol=1e-12)
    np.testing.assert_allclose(euler_to_theta(flip_euler(euler)), flip_theta(theta), atol=1e-9)
    t = np.zeros(72)
    t[16 * 3 + 2] = 0.7      # left shoulder +z (raise left arm)
    f = flip_theta(t)
    assert f[17 * 3 + 2] == pytest.approx(-0.7)   # right shoulder -z (raise right arm)
    assert f[16 * 3 + 2] == 0.0


def test_euler_theta_round_trip_inside_limits():
    euler = clamp_to_limits(np.random.default_rng(4).uniform(-1.4, 1.4, size=(100, NUM_JOINTS, 3)))
    euler[:, 0] = 0
    np.testing.assert_allclose(theta_to_euler(euler_to_theta(euler)), euler, atol=1e-9)


@pytest.mark.parametrize("motion", MOTIONS)
def test_scripted_motions_are_smooth(motion):
    ts = np.arange(0, 4, 1 / 30)
    thetas = np.stack([scripted_motion(motion, t).theta for t in ts])
    steps = np.abs(np.diff(thetas[:, 3:], axis=0)).max()
    assert steps < 0.25, f"{motion}: body pose jumps {steps:.3f} rad between frames"
    assert np.isfinite(thetas).all()


def test_program_blends_and_rejects_unknown():
    prog = motion_program([("walk", 1.0), ("squat", 1.0)])
    ts = np.arange(0, 2, 1 / 30)
    thetas = np.stack([prog(t).theta for t in ts])
    assert np.abs(np.diff(thetas[:, 3:], axis=0)).max() < 0.25
    with pytest.raises(ValueError, match="unknown motion"):
        scripted_motion("moonwalk", 0.0)
    assert "squat" in POSE_TEMPLATES
