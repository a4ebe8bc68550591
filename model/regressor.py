"""HMR's iterative error feedback (IEF) regressor: feature -> SMPL pose, shape and weak-perspective camera.

Each iteration feeds [feature, current pose, shape, camera] through an MLP that predicts a correction,
starting from mean parameters stored as buffers (or from a caller's warm start, e.g. the previous
frame). Pose is regressed in the continuous 6D representation (Zhou et al. 2019) and returned both as
rotation matrices and as axis-angle:

    theta (B, 72) axis-angle radians = [global orientation (3), 23 body joints (69)], SMPL joint order
    pose6d (B, 144) = 24 x 6D, model/camera.py's convention (first two matrix columns)
    rotmat (B, 24, 3, 3); betas (B, num_betas); cam (B, 3) = (s, tx, ty)

The global orientation is in the camera frame (x right, y down, z away from the camera); the default
mean pose is the T-pose rotated 180 deg about x, i.e. upright and facing the camera.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from model.camera import matrix_to_axis_angle, matrix_to_rot6d, rot6d_to_matrix

NUM_SMPL_JOINTS = 24


class RegressorOutput(NamedTuple):
    """Final IEF estimate (shapes in the module docstring). A NamedTuple so export flattens it."""

    theta: torch.Tensor  # (B, 72) axis-angle
    pose6d: torch.Tensor  # (B, 144)
    rotmat: torch.Tensor  # (B, 24, 3, 3)
    betas: torch.Tensor  # (B, num_betas)
    cam: torch.Tensor  # (B, 3) = (s, tx, ty)


def upright_mean_pose6d(num_joints: int = NUM_SMPL_JOINTS) -> torch.Tensor:
    """(1, num_joints * 6): identity body joints, global orientation = 180 deg about x (SMPL y-up -> camera y-down)."""
    rot = torch.eye(3).repeat(num_joints, 1, 1)
    rot[0] = torch.diag(torch.tensor([1.0, -1.0, -1.0]))
    return matrix_to_rot6d(rot).reshape(1, -1)


class IEFRegressor(nn.Module):
    """Iterative regressor: feat (B, feat_dim) -> RegressorOutput.

    Plain arguments: feature size, MLP widths, default iteration count, dropout, and optional mean
    parameters init_pose6d (1, 144), init_betas (1, num_betas), init_cam (1, 3) stored as buffers
    (defaults: `upright_mean_pose6d()`, zeros, (0.9, 0, 0)).
    """

    def __init__(self, feat_dim: int, hidden: Sequence[int] = (1024, 1024), n_iter: int = 3,
                 dropout: float = 0.5, num_betas: int = 10, init_pose6d: torch.Tensor | None = None,
                 init_betas: torch.Tensor | None = None, init_cam: torch.Tensor | None = None) -> None:
        super().__init__()
        if n_iter < 1:
            raise ValueError(f"n_iter must be >= 1, got {n_iter}")
        if not hidden:
            raise ValueError("regressor needs at least one hidden layer")
        self.n_iter, self.num_betas = int(n_iter), int(num_betas)
        npose = NUM_SMPL_JOINTS * 6
        if init_pose6d is None:
            init_pose6d = upright_mean_pose6d()
        if init_betas is None:
            init_betas = torch.zeros(1, num_betas)
        if init_cam is None:
            init_cam = torch.tensor([[0.9, 0.0, 0.0]])
        for name, t, n in (("init_pose6d", init_pose6d, npose), ("init_betas", init_betas, num_betas),
                           ("init_cam", init_cam, 3)):
            t = torch.as_tensor(t, dtype=torch.float32).reshape(1, -1)
            if t.shape[1] != n:
                raise ValueError(f"{name} must have {n} values, got {t.shape[1]}")
            self.register_buffer(name, t.clone())

        layers: list[nn.Module] = []
        d = feat_dim + npose + num_betas + 3
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            d = h
        self.mlp = nn.Sequential(*layers)
        self.dec_pose = nn.Linear(d, npose)
        self.dec_betas = nn.Linear(d, num_betas)
        self.dec_cam = nn.Linear(d, 3)
        for lin in (self.dec_pose, self.dec_betas, self.dec_cam):  # start near the mean (HMR/SPIN)
            nn.init.xavier_uniform_(lin.weight, gain=0.01)
            nn.init.zeros_(lin.bias)

    def forward(self, feat: torch.Tensor, init_pose: torch.Tensor | None = None,
                init_shape: torch.Tensor | None = None, init_cam: torch.Tensor | None = None,
                n_iter: int | None = None) -> RegressorOutput:
        """feat (B, feat_dim); optional warm start init_pose (B, 144) 6D, init_shape (B, num_betas),
        init_cam (B, 3); n_iter defaults to the constructor's. Returns the final RegressorOutput."""
        if feat.dim() != 2:
            raise ValueError(f"feat must be (B, feat_dim), got {tuple(feat.shape)}")
        b = feat.shape[0]
        pose = self.init_pose6d.expand(b, -1) if init_pose is None else init_pose.reshape(init_pose.shape[0], -1)
        betas = self.init_betas.expand(b, -1) if init_shape is None else init_shape.reshape(init_shape.shape[0], -1)
        cam = self.init_cam.expand(b, -1) if init_cam is None else init_cam.reshape(init_cam.shape[0], -1)
        if (tuple(pose.shape), tuple(betas.shape), tuple(cam.shape)) != (
                (b, self.init_pose6d.shape[1]), (b, self.num_betas), (b, 3)):
            raise ValueError(f"warm start must be init_pose ({b}, {self.init_pose6d.shape[1]}) 6D, "
                             f"init_shape ({b}, {self.num_betas}), init_cam ({b}, 3); got {tuple(pose.shape)}, "
                             f"{tuple(betas.shape)}, {tuple(cam.shape)}")
        for _ in range(self.n_iter if n_iter is None else int(n_iter)):
            h = self.mlp(torch.cat([feat, pose, betas, cam], dim=1))
            pose = pose + self.dec_pose(h)
            betas = betas + self.dec_betas(h)
            cam = cam + self.dec_cam(h)
        rotmat = rot6d_to_matrix(pose.reshape(b, NUM_SMPL_JOINTS, 6))
        theta = matrix_to_axis_angle(rotmat).reshape(b, NUM_SMPL_JOINTS * 3)
        return RegressorOutput(theta=theta, pose6d=pose, rotmat=rotmat, betas=betas, cam=cam)
