"""A small FuseMesh overfits 16 synthetic samples on the CPU: the whole training path is wired up.

Random RGB-D crops, targets from random SMPL parameters (pose, shape, camera) through the body layer;
loss = L2d + Lsmpl with the paper's stream-dropping policy (p_miss = 0.3) on. The loss must fall by at
least 10x.
"""
from __future__ import annotations

import pytest
import torch

from model.body import BodyModel
from model.camera import axis_angle_to_matrix, weak_perspective_project
from model.config import config_from_dict
from model.losses import combine_losses, keypoint_2d_loss, smpl_param_loss
from model.network import build_fusemesh
from tests.toy_body import write_toy_body


@pytest.fixture
def one_thread():
    """Tiny models train faster on one thread, and do not stall when the CPU is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_small_model_overfits_16_samples(tmp_path, one_thread):
    torch.manual_seed(0)
    body = BodyModel.from_file(write_toy_body(tmp_path / "toy.npz"))
    cfg = config_from_dict({"preset": "lite", "input_size": 64, "rgb_encoder": {"width": 8},
                            "depth_encoder": {"width": 8}, "fusion": {"hidden": [128, 128], "p_miss": 0.3},
                            "regressor": {"hidden": [128, 128], "dropout": 0.0}})
    net = build_fusemesh(cfg, body).train()
    n, s = 16, cfg.input_size
    g = torch.Generator().manual_seed(1)
    rgb = torch.randint(0, 256, (n, 3, s, s), generator=g, dtype=torch.uint8)
    depth = 2.0 + torch.rand(n, 1, s, s, generator=g)
    ref = torch.full((n,), 2.5)
    aa = 0.3 * torch.randn(n, 24, 3, generator=g)
    aa[:, 0] += torch.tensor([3.1416, 0.0, 0.0])
    gt_rot, gt_betas = axis_angle_to_matrix(aa), torch.randn(n, 10, generator=g)
    gt_cam = torch.tensor([0.9, 0.0, -0.8]) + 0.1 * torch.randn(n, 3, generator=g)
    with torch.no_grad():
        lsp = body(betas=gt_betas, body_pose=gt_rot[:, 1:], global_orient=gt_rot[:, :1], pose2rot=False).lsp_joints
        gt_2d = weak_perspective_project(lsp, gt_cam)
    vis = torch.rand(n, 14, generator=g) > 0.1

    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    mask_gen = torch.Generator().manual_seed(2)
    losses = []
    for _ in range(100):
        out = net(rgb, depth, ref, stream_mask=net.sample_stream_mask(n, mask_gen))
        loss = combine_losses({"2d": keypoint_2d_loss(out["lsp_2d"], gt_2d, vis),
                               "smpl": smpl_param_loss(out["rotmat"], out["beta"], gt_rot, gt_betas)}, cfg.loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    final = sum(losses[-5:]) / 5
    assert final * 10 <= losses[0], (losses[0], final)
