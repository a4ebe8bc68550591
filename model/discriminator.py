"""HMR's factorised adversarial body prior (Kanazawa et al. 2018, sec. 3.3).

K + 2 discriminators on (body-joint rotations, betas):
- K = 23 per-joint discriminators: every joint's 3 x 3 rotation goes through one shared embedding
  (HMR's 1 x 1 convolutions = the same small MLP per joint), then each joint has its own linear output;
- one full-pose discriminator on the concatenated joint embeddings;
- one shape discriminator on betas.
The global orientation is not judged (it depends on the camera, not on the body).

Scores are unbounded reals for HMR's least-squares GAN (see model/losses.py: real -> 1, fake -> 0).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _mlp(d_in: int, hidden: Sequence[int]) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(d_in, h), nn.ReLU(inplace=True)]
        d_in = h
    return nn.Sequential(*layers), d_in


class PosePriorDiscriminator(nn.Module):
    """(rotmat (B, num_joints, 3, 3) body joints without the root, betas (B, num_betas)) -> (B, num_joints + 2).

    Output columns: [per-joint scores (num_joints), full-pose score, shape score].
    """

    def __init__(self, num_joints: int = 23, num_betas: int = 10, joint_hidden: Sequence[int] = (32, 32),
                 pose_hidden: Sequence[int] = (1024, 1024), shape_hidden: Sequence[int] = (10, 5)) -> None:
        super().__init__()
        self.num_joints, self.num_betas = num_joints, num_betas
        self.joint_embed, e = _mlp(9, joint_hidden)
        # joint k's own output layer: score_k = <w_k, embed_k> + b_k
        self.joint_out_weight = nn.Parameter(torch.empty(num_joints, e))
        self.joint_out_bias = nn.Parameter(torch.zeros(num_joints))
        nn.init.uniform_(self.joint_out_weight, -1.0 / e ** 0.5, 1.0 / e ** 0.5)
        self.pose_mlp, p = _mlp(num_joints * e, pose_hidden)
        self.pose_out = nn.Linear(p, 1)
        self.shape_mlp, s = _mlp(num_betas, shape_hidden)
        self.shape_out = nn.Linear(s, 1)

    def forward(self, rotmat: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
        """rotmat (B, num_joints, 3, 3), betas (B, num_betas) -> scores (B, num_joints + 2)."""
        if tuple(rotmat.shape[1:]) != (self.num_joints, 3, 3) or tuple(betas.shape[1:]) != (self.num_betas,):
            raise ValueError(f"discriminator wants rotmat (B, {self.num_joints}, 3, 3) and betas "
                             f"(B, {self.num_betas}), got {tuple(rotmat.shape)} and {tuple(betas.shape)}")
        b = rotmat.shape[0]
        emb = self.joint_embed(rotmat.reshape(b, self.num_joints, 9))  # (B, K, e)
        joint_scores = (emb * self.joint_out_weight).sum(-1) + self.joint_out_bias  # (B, K)
        pose_score = self.pose_out(self.pose_mlp(emb.reshape(b, -1)))  # (B, 1)
        shape_score = self.shape_out(self.shape_mlp(betas))  # (B, 1)
        return torch.cat([joint_scores, pose_score, shape_score], dim=1)
