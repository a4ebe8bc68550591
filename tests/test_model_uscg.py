"""model/uscg.py: canonical joint set, cycle consistency through the SMPL layer, quality check."""
from __future__ import annotations

import pytest
import torch

from model.body import SMPL_JOINT_NAMES, BodyModel
from model.camera import axis_angle_to_matrix
from model.config import config_from_dict
from model.network import build_uscg
from model.uscg import (CANONICAL_JOINTS, CANONICAL_JOINT_NAMES, CANONICAL_SMPL_INDEX, USCG, canonical_joints,
                        cycle_loss, quality_check, root_relative, uscg_loss)
from tests.toy_body import write_toy_body


@pytest.fixture
def one_thread():
    """Tiny models train faster on one thread, and do not stall when the CPU is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def body(tmp_path_factory) -> BodyModel:
    return BodyModel.from_file(write_toy_body(tmp_path_factory.mktemp("body") / "toy.npz"))


def _params(b: int, seed: int, scale: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Random plausible-ish SMPL parameters in the camera frame: rotmat (B, 24, 3, 3), betas (B, 10)."""
    g = torch.Generator().manual_seed(seed)
    aa = scale * torch.randn(b, 24, 3, generator=g)
    aa[:, 0] = torch.tensor([3.1416, 0.0, 0.0]) + 0.3 * torch.randn(b, 3, generator=g)  # upright, facing camera
    return axis_angle_to_matrix(aa), torch.randn(b, 10, generator=g)


def _joints(body, rotmat, betas) -> torch.Tensor:
    out = body(betas=betas, body_pose=rotmat[:, 1:], global_orient=rotmat[:, :1], pose2rot=False)
    return canonical_joints(out.joints)


def test_canonical_joint_set_is_the_one_the_datasets_are_mapped_to():
    joint_sets = pytest.importorskip("training.datasets.joint_sets")
    assert CANONICAL_JOINT_NAMES == joint_sets.CANONICAL_JOINT_NAMES
    smpl_names = tuple(SMPL_JOINT_NAMES[i] for i in CANONICAL_SMPL_INDEX)
    assert smpl_names == tuple(joint_sets.SMPL_JOINT_NAMES[i] for i in joint_sets.CANONICAL_INDEX["smpl"])
    assert len(CANONICAL_JOINTS) == 15 and dict(CANONICAL_JOINTS)["torso"] == "spine2"


def test_root_is_the_mid_hip_point():
    j = torch.zeros(1, 15, 3)
    j[0, CANONICAL_JOINT_NAMES.index("left_hip")] = torch.tensor([0.1, 1.0, 2.0])
    j[0, CANONICAL_JOINT_NAMES.index("right_hip")] = torch.tensor([-0.1, 1.0, 2.2])
    rel = root_relative(j)
    torch.testing.assert_close(rel[0, 0], torch.tensor([0.0, -1.0, -2.1]))
    torch.testing.assert_close(rel[0, CANONICAL_JOINT_NAMES.index("left_hip")], torch.tensor([0.1, 0.0, -0.1]))


def test_cycle_loss_is_zero_for_its_own_smpl_outputs(body):
    uscg = USCG(body, n_layers=3, hidden=16)
    rotmat, betas = _params(8, seed=0)
    joints = _joints(body, rotmat, betas)
    assert joints.shape == (8, 15, 3)
    assert joints[:, [9, 12]].mean(dim=1).abs().max() < 1e-6  # root-relative: mid-hips at the origin
    cycled = uscg.cycle_joints(rotmat, betas)
    assert cycle_loss(joints, cycled).item() < 1e-10
    assert cycle_loss(joints + torch.tensor([0.3, -1.0, 4.0]), cycled).item() < 1e-10  # translation-free
    ok, err = quality_check(joints, cycled)
    assert ok.all() and err.max() < 1e-3
    # and it is not zero for other parameters
    other_rot, other_betas = _params(8, seed=1)
    assert cycle_loss(joints, uscg.cycle_joints(other_rot, other_betas)).item() > 1e-3


def test_quality_check_rejects_wrong_configurations(body):
    rotmat, betas = _params(6, seed=2)
    joints = _joints(body, rotmat, betas)
    g = torch.Generator().manual_seed(3)
    noisy = joints + 0.2 * torch.randn(joints.shape, generator=g)
    ok, err = quality_check(joints, noisy, threshold_mm=100.0)
    assert not ok.any() and (err > 100.0).all()
    slight = joints + 0.01 * torch.randn(joints.shape, generator=g)
    ok, err = quality_check(joints, slight, threshold_mm=100.0)
    assert ok.all() and (err < 20.0).all()


def test_uscg_structure_and_outputs(body):
    uscg = build_uscg(config_from_dict({"uscg": {"quality_threshold_mm": 80.0}}), body)
    assert uscg.quality_threshold_mm == 80.0
    linears = [m for m in uscg.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 10 and linears[0].in_features == 15 * 3
    assert linears[-1].out_features == 24 * 6 + 10
    out, accepted, err = uscg.generate(torch.randn(4, 15, 3))
    assert out.theta.shape == (4, 72) and out.rotmat.shape == (4, 24, 3, 3) and out.betas.shape == (4, 10)
    assert accepted.shape == (4,) and err.shape == (4,)
    # only the configuration counts: translating the input changes nothing
    j = torch.randn(2, 15, 3)
    torch.testing.assert_close(uscg(j).theta, uscg(j + torch.tensor([1.0, 2.0, 3.0])).theta)
    with pytest.raises(ValueError, match=r"USCG input must be \(B, 15, 3\)"):
        uscg(torch.zeros(2, 24, 3))


def test_uscg_learns_loss_2_on_a_small_set(body, one_thread):
    torch.manual_seed(0)
    uscg = USCG(body, n_layers=10, hidden=128)
    rotmat, betas = _params(32, seed=4, scale=0.4)
    joints = _joints(body, rotmat, betas)
    opt = torch.optim.Adam(uscg.parameters(), lr=1e-3)

    def step() -> tuple[torch.Tensor, dict]:
        out = uscg(joints)
        return uscg_loss(out, uscg.cycle_joints(out.rotmat, out.betas), joints, rotmat, betas, cycle_weight=10.0)

    first = step()[1]
    for _ in range(150):
        loss, terms = step()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert terms["param"] < 0.1 * first["param"] and terms["cycle"] < 0.1 * first["cycle"]
    _, accepted, err = uscg.generate(joints)
    assert accepted.all(), err
