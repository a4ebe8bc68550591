"""model/camera.py: rotation conversions (round trips incl. near 0 and pi, known values, gradients) and
weak-perspective / pinhole projection with known values and their mutual consistency."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model.camera import (
    axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_rot6d, perspective_project, rot6d_to_matrix,
    weak_perspective_project, weak_perspective_to_translation,
)


def _random_axes(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)


def _matrix_gap(Ra: torch.Tensor, Rb: torch.Tensor) -> torch.Tensor:
    """Largest element difference per matrix (well conditioned, unlike acos of the trace near 0)."""
    return (Ra - Rb).abs().amax(dim=(-1, -2))


# ---------------------------------------------------------------------- axis-angle <-> matrix
def test_axis_angle_known_values():
    R = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, math.pi / 2], [math.pi / 2, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    expected = torch.tensor([
        [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],   # +90 deg about z: x -> y
        [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]],   # +90 deg about x: y -> z
        torch.eye(3).tolist(),
    ])
    torch.testing.assert_close(R, expected, atol=1e-6, rtol=0)
    aa = matrix_to_axis_angle(expected)
    torch.testing.assert_close(aa, torch.tensor([[0.0, 0.0, math.pi / 2], [math.pi / 2, 0.0, 0.0], [0.0, 0.0, 0.0]]),
                               atol=1e-6, rtol=0)


def test_axis_angle_round_trip_random_batched():
    g = torch.Generator().manual_seed(0)
    angles = torch.rand(2, 500, 1, generator=g) * (math.pi - 1e-3)
    aa = (_random_axes(1000, 1).reshape(2, 500, 3) * angles).float()
    R = axis_angle_to_matrix(aa)
    assert R.shape == (2, 500, 3, 3)
    back = matrix_to_axis_angle(R)
    assert back.shape == (2, 500, 3)
    torch.testing.assert_close(back, aa, atol=2e-5, rtol=0)
    assert _matrix_gap(axis_angle_to_matrix(back), R).max() < 1e-5


@pytest.mark.parametrize("angle", [0.0, 1e-9, 1e-6, 1e-4, 1e-2])
def test_axis_angle_round_trip_near_zero(angle):
    aa = (_random_axes(200, 2) * angle).float()
    back = matrix_to_axis_angle(axis_angle_to_matrix(aa))
    assert torch.isfinite(back).all()
    torch.testing.assert_close(back, aa, atol=1e-7, rtol=1e-4)


@pytest.mark.parametrize("delta", [1e-2, 1e-4, 1e-6, 0.0])
def test_axis_angle_round_trip_near_pi(delta):
    axes = _random_axes(200, 3)
    aa = (axes * (math.pi - delta)).float()
    R = axis_angle_to_matrix(aa)
    back = matrix_to_axis_angle(R)
    assert torch.isfinite(back).all()
    # the rotation is recovered; the angle stays in [0, pi] and the axis is +-the original one
    assert _matrix_gap(axis_angle_to_matrix(back), R).max() < 1e-5
    np.testing.assert_allclose(back.norm(dim=-1).numpy(), math.pi - delta, atol=2e-5)
    cos_axes = (torch.nn.functional.normalize(back.double(), dim=-1) * axes).sum(-1).abs()
    assert cos_axes.min() > 1 - 1e-6


def test_rotation_gradients_are_finite_at_zero_and_pi():
    for angle in (0.0, math.pi):
        aa = torch.tensor([[angle, 0.0, 0.0], [0.0, angle, 0.0]], requires_grad=True)
        matrix_to_axis_angle(axis_angle_to_matrix(aa)).sum().backward()
        assert torch.isfinite(aa.grad).all()
    aa = torch.zeros(3, 3, requires_grad=True)
    matrix_to_axis_angle(axis_angle_to_matrix(aa)).sum().backward()
    torch.testing.assert_close(aa.grad, torch.ones(3, 3))  # identity map near 0


def test_rotation_gradcheck():
    g = torch.Generator().manual_seed(5)
    aa = (torch.randn(4, 3, generator=g, dtype=torch.float64) * 0.8).requires_grad_()
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (aa,))
    R = axis_angle_to_matrix(aa.detach()).requires_grad_()
    assert torch.autograd.gradcheck(matrix_to_axis_angle, (R,))
    x = torch.randn(4, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rot6d_to_matrix, (x,))


# ---------------------------------------------------------------------- 6D
def test_atan2_without_an_atan_op_matches_torch():
    from model.camera import _atan2_nonnegative
    half = torch.linspace(0, math.pi / 2, 100_001, dtype=torch.float64)
    scale = torch.rand(half.shape, dtype=torch.float64) * 5 + 1e-3  # atan2 depends on the ratio only
    y, x = torch.sin(half) * scale, torch.cos(half) * scale
    assert (_atan2_nonnegative(y, x) - half).abs().max() < 1e-8
    y32, x32 = y.float(), x.float()
    assert (_atan2_nonnegative(y32, x32) - torch.atan2(y32, x32)).abs().max() < 2.5e-7
    edges = _atan2_nonnegative(torch.tensor([0.0, 1.0, 1.0]), torch.tensor([1.0, 0.0, 1.0]))
    torch.testing.assert_close(edges, torch.tensor([0.0, math.pi / 2, math.pi / 4]), atol=1e-7, rtol=0)


def test_rot6d_known_values_and_gram_schmidt():
    torch.testing.assert_close(matrix_to_rot6d(torch.eye(3)), torch.tensor([1.0, 0, 0, 0, 1, 0]))
    # unnormalised, non-orthogonal columns still give the identity
    torch.testing.assert_close(rot6d_to_matrix(torch.tensor([2.0, 0, 0, 3.0, 0.5, 0])), torch.eye(3))
    Rz = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2]))
    torch.testing.assert_close(matrix_to_rot6d(Rz), torch.tensor([0.0, 1, 0, -1, 0, 0]), atol=1e-6, rtol=0)


def test_rot6d_round_trip_and_orthonormal():
    g = torch.Generator().manual_seed(6)
    R = axis_angle_to_matrix(torch.randn(3, 24, 3, generator=g))
    six = matrix_to_rot6d(R)
    assert six.shape == (3, 24, 6)
    torch.testing.assert_close(rot6d_to_matrix(six), R, atol=1e-6, rtol=0)
    Rr = rot6d_to_matrix(torch.randn(1000, 6, generator=g))
    torch.testing.assert_close(Rr @ Rr.transpose(-1, -2), torch.eye(3).expand(1000, 3, 3), atol=1e-5, rtol=0)
    np.testing.assert_allclose(torch.linalg.det(Rr).numpy(), 1.0, atol=1e-5)


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="axis_angle"):
        axis_angle_to_matrix(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="rot6d"):
        rot6d_to_matrix(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="K must be"):
        perspective_project(torch.zeros(2, 3, 3), torch.zeros(3, 3, 3))


# ---------------------------------------------------------------------- cameras
def test_weak_perspective_known_values():
    points = torch.tensor([[[1.0, 2.0, 3.0], [-0.5, 0.0, 7.0]], [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    cam = torch.tensor([[2.0, 0.1, -0.2], [0.5, 0.0, 0.3]])
    expected = torch.tensor([[[2.1, 3.8], [-0.9, -0.2]], [[0.0, 0.3], [0.5, 0.8]]])
    torch.testing.assert_close(weak_perspective_project(points, cam), expected)


def test_perspective_known_values_shared_and_batched_K():
    K = torch.tensor([[500.0, 0.0, 320.0], [0.0, 400.0, 240.0], [0.0, 0.0, 1.0]])
    points = torch.tensor([[[0.5, -0.25, 2.0], [0.0, 0.0, 5.0]]]).repeat(2, 1, 1)
    px = perspective_project(points, K)
    torch.testing.assert_close(px[0], torch.tensor([[445.0, 190.0], [320.0, 240.0]]))
    K2 = torch.stack([K, torch.tensor([[1000.0, 0.0, 0.0], [0.0, 1000.0, 10.0], [0.0, 0.0, 1.0]])])
    px2 = perspective_project(points, K2)
    torch.testing.assert_close(px2[0], px[0])
    torch.testing.assert_close(px2[1], torch.tensor([[250.0, -115.0], [0.0, 10.0]]))


def test_weak_perspective_to_translation_known_value():
    cam = torch.tensor([[0.8, 0.1, -0.05], [2.0, 0.0, 0.0]])
    t = weak_perspective_to_translation(cam, focal_px=5000.0, crop_px=224.0)
    torch.testing.assert_close(t[0], torch.tensor([0.125, -0.0625, 2 * 5000.0 / (224.0 * 0.8)]))
    torch.testing.assert_close(t[1], torch.tensor([0.0, 0.0, 2 * 5000.0 / (224.0 * 2.0)]))
    # per-sample focal / crop sizes
    t2 = weak_perspective_to_translation(cam, torch.tensor([5000.0, 1000.0]), torch.tensor([224.0, 448.0]))
    torch.testing.assert_close(t2[1, 2], torch.tensor(2 * 1000.0 / (448.0 * 2.0)))


def test_weak_perspective_translation_agrees_with_pinhole():
    """A body placed at the converted translation projects (pinhole, principal point = crop centre) where
    the weak camera put it: exactly for points at the root depth, to ~(depth / tz) for the rest."""
    crop, focal = 224.0, 600.0
    cam = torch.tensor([[0.9, 0.12, -0.3], [0.5, -0.2, 0.05]])
    K = torch.tensor([[focal, 0.0, crop / 2], [0.0, focal, crop / 2], [0.0, 0.0, 1.0]])
    t = weak_perspective_to_translation(cam, focal, crop)
    g = torch.Generator().manual_seed(7)
    flat = torch.cat([torch.randn(2, 50, 2, generator=g) * 0.4, torch.zeros(2, 50, 1)], dim=-1)  # z = 0
    px = perspective_project(flat + t[:, None], K)
    normalised = (px - crop / 2) / (crop / 2)
    torch.testing.assert_close(normalised, weak_perspective_project(flat, cam), atol=1e-5, rtol=0)
    # the root (origin) lands at the crop centre offset by t * crop / 2 pixels
    root_px = perspective_project(t[:, None], K)[:, 0]
    torch.testing.assert_close(root_px, crop / 2 + cam[:, 1:] * crop / 2, atol=1e-4, rtol=0)
    # a body with depth relief: error bounded by the relative depth
    deep = flat.clone()
    deep[..., 2] = 0.1
    err = (perspective_project(deep + t[:, None], K) - crop / 2) / (crop / 2) - weak_perspective_project(deep, cam)
    rel = 0.1 / t[:, 2]
    bound = rel[:, None, None] * weak_perspective_project(deep, cam).abs() + 1e-5
    assert (err.abs() <= bound).all()
