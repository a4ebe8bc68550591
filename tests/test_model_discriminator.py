"""model/discriminator.py: HMR's factorised prior (shared per-joint embedding, full pose, shape)."""
from __future__ import annotations

import pytest
import torch

from model.camera import axis_angle_to_matrix
from model.config import preset
from model.discriminator import PosePriorDiscriminator
from model.losses import adv_discriminator_loss
from model.network import build_discriminator


@pytest.fixture
def one_thread():
    """Tiny models train faster on one thread, and do not stall when the CPU is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _rotations(b: int, scale: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return axis_angle_to_matrix(scale * torch.randn(b, 23, 3, generator=g))


def test_scores_are_factorised_per_joint_pose_and_shape():
    disc = build_discriminator(preset("paper")).eval()
    rot, betas = _rotations(3, 0.3, 0), torch.randn(3, 10)
    base = disc(rot, betas)
    assert base.shape == (3, 25)  # 23 joints + full pose + shape
    rot2 = rot.clone()
    rot2[:, 7] = _rotations(3, 1.0, 1)[:, 7]  # change one joint
    changed = (disc(rot2, betas) - base).abs() > 1e-7
    assert changed[:, 7].all() and changed[:, 23].all()  # its own score and the full-pose score
    assert not changed[:, [k for k in range(23) if k != 7]].any() and not changed[:, 24].any()
    changed = (disc(rot, betas + 1.0) - base).abs() > 1e-7
    assert changed[:, 24].all() and not changed[:, :24].any()  # betas only reach the shape score


def test_joint_discriminators_share_the_embedding_but_not_the_output():
    disc = PosePriorDiscriminator(joint_hidden=(32, 32), pose_hidden=(64,), shape_hidden=(10, 5))
    linears = [m for m in disc.joint_embed if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(9, 32), (32, 32)]  # one embedding
    assert disc.joint_out_weight.shape == (23, 32)  # one output per joint
    same = torch.eye(3).expand(2, 23, 3, 3)
    emb = disc.joint_embed(same.reshape(2, 23, 9))
    assert torch.equal(emb[:, 0], emb[:, 22])  # the same rotation embeds identically at every joint


def test_discriminator_learns_to_tell_plausible_from_random_rotations(one_thread):
    torch.manual_seed(0)
    disc = PosePriorDiscriminator(pose_hidden=(64,))
    opt = torch.optim.Adam(disc.parameters(), lr=1e-3)
    betas = torch.zeros(64, 10)
    for step in range(150):
        real, fake = _rotations(64, 0.15, 2 * step), _rotations(64, 2.0, 2 * step + 1)
        loss = adv_discriminator_loss(disc(real, betas), disc(fake, betas))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        real_s = disc(_rotations(64, 0.15, 10_001), betas)[:, :24]
        fake_s = disc(_rotations(64, 2.0, 10_002), betas)[:, :24]
    assert real_s.mean() > 0.8 and fake_s.mean() < 0.2
