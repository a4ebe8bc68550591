"""model/losses.py: L2d, Lsmpl, the depth ranking consistency loss (eqs. 4-5), HMR's LSGAN, eq. (6)."""
from __future__ import annotations

import math

import pytest
import torch

from model.config import LossConfig
from model.losses import (adv_discriminator_loss, adv_generator_loss, combine_losses, depth_at_keypoints,
                          depth_rank_labels, depth_ranking_loss, drc_loss, joint_pairs, keypoint_2d_loss,
                          smpl_param_loss)


# ------------------------------------------------------------------------------------------ DRC
def test_rank_sign_convention_closer_joint_gets_r_plus_one():
    z_d = torch.tensor([[2.0, 2.5, 2.5]])  # joint 0 closest to the camera
    r, ok = depth_rank_labels(z_d, torch.ones(1, 3, dtype=torch.bool))
    assert joint_pairs(3).tolist() == [[0, 0, 1], [1, 2, 2]]
    assert r.tolist() == [[1.0, 1.0, 0.0]] and ok.all()  # (0,1), (0,2) closer; (1,2) tie
    # p closer and predicted closer (z_p < z_q): small loss; predicted farther: large
    good = depth_ranking_loss(torch.tensor([[2.0, 3.0]]), torch.tensor([[1.0]]), torch.ones(1, 1, dtype=torch.bool))
    bad = depth_ranking_loss(torch.tensor([[3.0, 2.0]]), torch.tensor([[1.0]]), torch.ones(1, 1, dtype=torch.bool))
    assert good.item() == pytest.approx(math.log1p(math.exp(-1.0)))
    assert bad.item() == pytest.approx(math.log1p(math.exp(1.0)))


def test_drc_has_zero_gradient_for_ties():
    z = torch.randn(2, 5, requires_grad=True)
    p = joint_pairs(5)
    r = torch.zeros(2, p.shape[1])
    loss = depth_ranking_loss(z, r, torch.ones_like(r, dtype=torch.bool))
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2.0))
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_drc_decreases_when_the_predicted_order_is_corrected():
    z_d = torch.tensor([[2.0, 2.2, 2.4, 2.6]])  # sensor: 0 < 1 < 2 < 3
    r, ok = depth_rank_labels(z_d, torch.ones(1, 4, dtype=torch.bool))
    wrong = torch.tensor([[0.3, 0.2, 0.1, 0.0]])  # reversed
    half = torch.tensor([[0.0, 0.2, 0.1, 0.3]])  # two pairs still wrong
    right = torch.tensor([[0.0, 0.1, 0.2, 0.3]])
    losses = [depth_ranking_loss(z, r, ok).item() for z in (wrong, half, right)]
    assert losses[0] > losses[1] > losses[2]
    # gradient descent on the wrong prediction moves toward the sensor order
    z = wrong.clone().requires_grad_(True)
    opt = torch.optim.SGD([z], lr=1.0)
    for _ in range(200):
        opt.zero_grad()
        depth_ranking_loss(z, r, ok).backward()
        opt.step()
    assert torch.equal(torch.argsort(z.detach()[0]), torch.arange(4))


def test_drc_masks_pairs_with_invalid_depth():
    z_d = torch.tensor([[2.0, float("nan"), 2.4]])
    valid = torch.tensor([[True, False, True]])
    r, ok = depth_rank_labels(z_d, valid)
    assert ok.tolist() == [[False, True, False]]  # only (0, 2) has two valid depths
    z = torch.tensor([[0.0, 5.0, 0.3]], requires_grad=True)
    loss = depth_ranking_loss(z, r, ok)
    loss.backward()
    assert z.grad[0, 1] == 0  # the joint without depth gets no gradient
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.3)))  # only pair (0, 2) counts
    # no valid pair at all: 0, still differentiable
    none = depth_ranking_loss(z, r, torch.zeros_like(ok))
    assert none.item() == 0.0 and none.requires_grad


def test_tie_margin_turns_near_equal_depths_into_ties():
    z_d = torch.tensor([[2.00, 2.01, 2.30]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    assert depth_rank_labels(z_d, valid)[0].tolist() == [[1.0, 1.0, 1.0]]  # paper: 1 cm is an order
    assert depth_rank_labels(z_d, valid, margin_m=0.02)[0].tolist() == [[0.0, 1.0, 1.0]]


def test_depth_at_keypoints_reads_the_window_median_and_flags_invalid():
    s = 32
    depth = torch.full((1, 1, s, s), 3.0)
    depth[0, 0, :, :16] = 2.0  # left half nearer
    depth[0, 0, 10, 4] = 9.0  # a single outlier next to a keypoint
    depth[0, 0, 20:30, 20:30] = 0.0  # a hole
    px = torch.tensor([[[4, 10], [24, 10], [25, 25], [40, 5], [16, 2]]], dtype=torch.float32)
    kp = 2.0 * px / s - 1.0  # app/crop.py: pixel p <-> 2 p / S - 1
    z, valid = depth_at_keypoints(depth, kp, window=3)
    assert valid.tolist() == [[True, True, False, False, True]]
    assert z[0, 0].item() == 2.0 and z[0, 1].item() == 3.0  # median ignores the outlier
    assert z[0, 4].item() == 3.0  # window at x = 15..17: two columns of 3.0, one of 2.0
    assert torch.isnan(z[0, 2]) and torch.isnan(z[0, 3])  # hole, outside the crop


def test_drc_end_to_end_uses_sensor_depth_at_keypoints_and_visibility():
    s = 16
    depth = torch.full((1, 1, s, s), 3.0)
    depth[0, 0, :, :8] = 2.0  # left half is nearer
    kp = torch.tensor([[[-0.5, 0.0], [0.5, 0.0]]])  # joint 0 left (near), joint 1 right (far)
    right = torch.tensor([[0.0, 0.5]])
    wrong = torch.tensor([[0.5, 0.0]])
    assert drc_loss(right, depth, kp) < drc_loss(wrong, depth, kp)
    hidden = torch.tensor([[True, False]])
    assert drc_loss(wrong, depth, kp, visibility=hidden).item() == 0.0


# ------------------------------------------------------------------------------- L2d, Lsmpl, Ladv
def test_keypoint_loss_is_l1_over_visible_joints():
    gt = torch.zeros(1, 14, 2)
    pred = gt.clone()
    pred[0, 0] = torch.tensor([0.2, -0.4])
    pred[0, 5] = torch.tensor([10.0, 10.0])  # invisible: ignored
    vis = torch.ones(1, 14, dtype=torch.bool)
    vis[0, 5] = False
    assert keypoint_2d_loss(pred, gt, vis).item() == pytest.approx(0.6 / 26)
    with pytest.raises(ValueError, match="visibility must be"):
        keypoint_2d_loss(pred, gt, vis[:, :10])


def test_smpl_param_loss_known_value_and_validity_mask():
    pose, betas = torch.zeros(2, 72), torch.zeros(2, 10)
    tp, tb = pose.clone(), betas.clone()
    tp[0, 3] = 0.5
    tb[0, 0] = 1.0
    tp[1] = 7.0  # a rejected USCG constraint
    loss = smpl_param_loss(pose, betas, tp, tb, valid=torch.tensor([True, False]), beta_weight=2.0)
    assert loss.item() == pytest.approx(0.25 + 2.0)


def test_lsgan_losses_known_values():
    real, fake = torch.ones(4, 25), torch.zeros(4, 25)
    assert adv_discriminator_loss(real, fake).item() == 0.0
    assert adv_generator_loss(fake).item() == pytest.approx(25.0)  # K + 2 discriminators, each (0 - 1)^2
    assert adv_generator_loss(real).item() == 0.0


def test_combine_losses_uses_config_weights():
    w = LossConfig(w_2d=2.0, w_smpl=3.0, w_drc=0.5, w_adv=0.1)
    total = combine_losses({"2d": torch.tensor(1.0), "smpl": torch.tensor(2.0), "drc": torch.tensor(4.0),
                            "adv": torch.tensor(10.0)}, w)
    assert total.item() == pytest.approx(2.0 + 6.0 + 2.0 + 1.0)
    with pytest.raises(ValueError, match="unknown loss term '3d'"):
        combine_losses({"3d": torch.tensor(1.0)}, w)
