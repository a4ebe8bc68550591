"""Universal SMPL Constraint Generator (paper 3.3): root-relative 3D keypoints -> SMPL [beta, theta].

Input: the canonical joint set below, (B, 15, 3) metres, in FuseMesh's camera frame (x right, y down,
z away from the camera; the frame of `FuseMesh` outputs and of `training.datasets.joint_sets`'
FRAME_OPENCV). The module makes the joints root-relative itself (root = midpoint of the two hips), so
any translation is fine. Output: betas (B, 10) and pose (24 joints: 6D, rotation matrices and
axis-angle; global orientation in the input frame).

Network: `n_layers` fully connected layers (paper: 10) with ReLU between them, He-initialised (with
PyTorch's default init a 10-layer plain MLP barely trains: measured 30 -> 20 vs 30 -> 0.14 parameter
loss in 150 Adam steps); the last layer predicts an offset from the upright mean pose (small init),
like the IEF regressor.

Loss (2): ||[beta, theta] - [beta*, theta*]||^2 + cycle_weight * ||J - X(G(J))||^2, the second term
through the SMPL layer (`cycle_joints`). Quality check: PA-MPJPE(J, X(G(J))) <= threshold (100 mm).

Canonical joints: the 15 joints that the Kinect v1 skeleton of CAD-60 (OpenNI/NITE), the Kinect v2
skeleton of PKU-MMD and SMPL all have, in the order and with the SMPL sources of
`training.datasets.joint_sets.CANONICAL_JOINT_NAMES` (which maps the datasets' joints onto them; a test
keeps the two equal). "torso" is SMPL's spine2. There is no pelvis in the NITE skeleton, hence the
mid-hip root.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from model.body import SMPL_JOINT_NAMES
from model.camera import matrix_to_axis_angle, rot6d_to_matrix
from model.losses import smpl_param_loss
from model.metrics import pa_mpjpe
from model.regressor import NUM_SMPL_JOINTS, upright_mean_pose6d

# (canonical name, SMPL joint it is read from)
CANONICAL_JOINTS: tuple[tuple[str, str], ...] = (
    ("head", "head"), ("neck", "neck"), ("torso", "spine2"),
    ("left_shoulder", "left_shoulder"), ("left_elbow", "left_elbow"), ("left_wrist", "left_wrist"),
    ("right_shoulder", "right_shoulder"), ("right_elbow", "right_elbow"), ("right_wrist", "right_wrist"),
    ("left_hip", "left_hip"), ("left_knee", "left_knee"), ("left_ankle", "left_ankle"),
    ("right_hip", "right_hip"), ("right_knee", "right_knee"), ("right_ankle", "right_ankle"),
)
CANONICAL_JOINT_NAMES: tuple[str, ...] = tuple(c[0] for c in CANONICAL_JOINTS)
CANONICAL_SMPL_INDEX: tuple[int, ...] = tuple(SMPL_JOINT_NAMES.index(c[1]) for c in CANONICAL_JOINTS)
NUM_CANONICAL = len(CANONICAL_JOINTS)
ROOT_JOINTS = (CANONICAL_JOINT_NAMES.index("left_hip"), CANONICAL_JOINT_NAMES.index("right_hip"))


def root_relative(joints: torch.Tensor) -> torch.Tensor:
    """Canonical joints (B, 15, 3) minus their root (the midpoint of the hips)."""
    return joints - joints[:, list(ROOT_JOINTS)].mean(dim=1, keepdim=True)


def canonical_joints(smpl_joints: torch.Tensor) -> torch.Tensor:
    """SMPL joints (B, 24, 3) -> canonical set (B, 15, 3), root (mid-hips) at the origin."""
    if smpl_joints.dim() != 3 or tuple(smpl_joints.shape[1:]) != (NUM_SMPL_JOINTS, 3):
        raise ValueError(f"smpl_joints must be (B, 24, 3), got {tuple(smpl_joints.shape)}")
    return root_relative(smpl_joints[:, list(CANONICAL_SMPL_INDEX)])


class USCGOutput(NamedTuple):
    """USCG estimate: theta (B, 72) axis-angle, pose6d (B, 144), rotmat (B, 24, 3, 3), betas (B, num_betas)."""

    theta: torch.Tensor
    pose6d: torch.Tensor
    rotmat: torch.Tensor
    betas: torch.Tensor


class USCG(nn.Module):
    """G: canonical joints (B, 15, 3) metres -> USCGOutput; `body` is the SMPL layer used for the cycle;
    `quality_threshold_mm` is `generate`'s default acceptance threshold (paper: 100 mm)."""

    def __init__(self, body: nn.Module, n_layers: int = 10, hidden: int = 1024, num_betas: int = 10,
                 quality_threshold_mm: float = 100.0) -> None:
        super().__init__()
        if n_layers < 2:
            raise ValueError(f"n_layers must be >= 2, got {n_layers}")
        self.body = body
        self.num_betas = num_betas
        self.quality_threshold_mm = float(quality_threshold_mm)
        layers: list[nn.Module] = []
        d = NUM_CANONICAL * 3
        for _ in range(n_layers - 1):
            lin = nn.Linear(d, hidden)
            # He init: with PyTorch's default the signal fades through 9 ReLU layers and training crawls
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
            nn.init.zeros_(lin.bias)
            layers += [lin, nn.ReLU(inplace=True)]
            d = hidden
        self.mlp = nn.Sequential(*layers)
        self.head = nn.Linear(d, NUM_SMPL_JOINTS * 6 + num_betas)
        nn.init.xavier_uniform_(self.head.weight, gain=0.01)
        nn.init.zeros_(self.head.bias)
        self.register_buffer("mean_params", torch.cat([upright_mean_pose6d(), torch.zeros(1, num_betas)], dim=1))

    def forward(self, joints: torch.Tensor) -> USCGOutput:
        """joints (B, 15, 3) metres in CANONICAL_JOINT_NAMES order (any root position) -> USCGOutput."""
        if joints.dim() != 3 or tuple(joints.shape[1:]) != (NUM_CANONICAL, 3):
            raise ValueError(f"USCG input must be (B, {NUM_CANONICAL}, 3) canonical joints, got {tuple(joints.shape)}")
        b = joints.shape[0]
        rel = root_relative(joints)
        params = self.mean_params + self.head(self.mlp(rel.reshape(b, -1)))
        pose6d, betas = params[:, :NUM_SMPL_JOINTS * 6], params[:, NUM_SMPL_JOINTS * 6:]
        rotmat = rot6d_to_matrix(pose6d.reshape(b, NUM_SMPL_JOINTS, 6))
        theta = matrix_to_axis_angle(rotmat).reshape(b, -1)
        return USCGOutput(theta=theta, pose6d=pose6d, rotmat=rotmat, betas=betas)

    def cycle_joints(self, rotmat: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        """X(beta, theta): rotmat (B, 24, 3, 3), betas (B, num_betas) -> canonical joints (B, 15, 3), root-relative."""
        out = self.body(betas=betas, body_pose=rotmat[:, 1:], global_orient=rotmat[:, :1], pose2rot=False)
        return canonical_joints(out.joints)

    @torch.no_grad()
    def generate(self, joints: torch.Tensor, threshold_mm: float | None = None) -> tuple[USCGOutput, torch.Tensor, torch.Tensor]:
        """Constraints for a dataset without SMPL labels: (USCGOutput, accepted (B,) bool, PA-MPJPE (B,) mm).

        `accepted` is the quality check: PA-MPJPE between the input joints and the cycled ones <=
        threshold_mm (default: the constructor's).
        """
        out = self(joints)
        cycled = self.cycle_joints(out.rotmat, out.betas)
        limit = self.quality_threshold_mm if threshold_mm is None else threshold_mm
        accepted, err = quality_check(root_relative(joints), cycled, limit)
        return out, accepted, err


def cycle_loss(joints: torch.Tensor, cycled: torch.Tensor) -> torch.Tensor:
    """||J - X(G(J))||^2: per-sample sum over joints of squared distance (m^2), mean over the batch.

    Both (B, 15, 3); each is made root-relative here, so only the configuration counts.
    """
    if joints.shape != cycled.shape:
        raise ValueError(f"cycle_loss: shapes differ, {tuple(joints.shape)} vs {tuple(cycled.shape)}")
    return ((root_relative(joints) - root_relative(cycled)) ** 2).sum(dim=(1, 2)).mean()


def uscg_loss(out: USCGOutput, cycled: torch.Tensor, joints: torch.Tensor, target_rotmat: torch.Tensor,
              target_betas: torch.Tensor, cycle_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Eq. (2): parameter L2 (rotation matrices, see `smpl_param_loss`) + cycle_weight * `cycle_loss`.

    Returns (total, {"param": ..., "cycle": ...}).
    """
    param = smpl_param_loss(out.rotmat, out.betas, target_rotmat, target_betas)
    cyc = cycle_loss(joints, cycled)
    return param + cycle_weight * cyc, {"param": param.detach(), "cycle": cyc.detach()}


def quality_check(joints: torch.Tensor, cycled: torch.Tensor, threshold_mm: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    """PA-MPJPE(J, X(G(J))) (B,) mm and accepted = error <= threshold_mm (B,) bool."""
    err = pa_mpjpe(cycled, joints)
    return err <= threshold_mm, err
