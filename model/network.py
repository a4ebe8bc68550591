"""The FuseMesh network (encoders + dynamic fusion + IEF regressor + SMPL layer) and the config builders.

    net = build_fusemesh(preset("lite"), BodyModel.from_file(path))
    out = net(rgb_u8, depth_m, ref_depth_m)                      # both streams
    out = net(rgb_u8, depth_m, ref_depth_m, stream_mask=mask)    # (B, 2): [rgb_on, depth_on]

Inputs (raw, see model/preprocess.py for the exact contract): rgb (B, 3, S, S) uint8 RGB; depth
(B, 1, S, S) metres, 0 = invalid; ref_depth (B,) metres. The network normalises them itself, then
multiplies each stream by its mask bit, so a dropped stream is an exact zero input (paper 3.2). No
data-dependent Python branching: the forward exports to ONNX with a dynamic batch axis.

Output (`FuseMeshOutput`, a dict; metres; camera-aligned frame = the SMPL body after its global
orientation, x right, y down, z away from the camera, origin at the body model's origin, no
translation):
    theta (B, 72) axis-angle; pose6d (B, 144); rotmat (B, 24, 3, 3); beta (B, 10); cam (B, 3) = (s, tx, ty)
    vertices (B, V, 3); joints (B, 24, 3) SMPL order; lsp_joints (B, 14, 3) LSP order
    lsp_2d (B, 14, 2): eq. (1), s * (X, Y) + (tx, ty), normalised crop coordinates in [-1, 1]
"""
from __future__ import annotations

from typing import TypedDict

import torch
from torch import nn

from model.camera import rot6d_to_matrix, weak_perspective_project
from model.config import ModelConfig
from model.discriminator import PosePriorDiscriminator
from model.encoders import ResNetEncoder
from model.fusion import FeatureFusion
from model.preprocess import normalize_depth, normalize_rgb
from model.regressor import IEFRegressor, upright_mean_pose6d
from model.uscg import USCG


class FuseMeshOutput(TypedDict):
    """What `FuseMesh.forward` returns (shapes in the module docstring)."""

    theta: torch.Tensor
    pose6d: torch.Tensor
    rotmat: torch.Tensor
    beta: torch.Tensor
    cam: torch.Tensor
    vertices: torch.Tensor
    joints: torch.Tensor
    lsp_joints: torch.Tensor
    lsp_2d: torch.Tensor


class FuseMesh(nn.Module):
    """RGB-D human mesh recovery network (paper Fig. 2). Takes its parts as plain arguments.

    `state_dict()` leaves out the body model's buffers: the body ships as its own asset (for the open
    body, its zero posedirs alone are ~34 MB), so a checkpoint holds only the network's weights, and
    `load_state_dict` does not ask for them.
    """

    def __init__(self, rgb_encoder: nn.Module, depth_encoder: nn.Module, fusion: FeatureFusion,
                 regressor: IEFRegressor, body: nn.Module, input_size: int) -> None:
        super().__init__()
        self.rgb_encoder, self.depth_encoder = rgb_encoder, depth_encoder
        self.fusion, self.regressor, self.body = fusion, regressor, body
        self.input_size = int(input_size)
        self.register_state_dict_post_hook(_drop_body_state)
        self.register_load_state_dict_post_hook(_forgive_missing_body_state)

    def sample_stream_mask(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training policy draw (B, 2) bool [rgb_on, depth_on] on this module's device (see model/fusion.py)."""
        device = self.regressor.init_cam.device
        if generator is not None and generator.device != device:
            raise ValueError(f"generator is on {generator.device}, model on {device}")
        return self.fusion.sample_mask(batch, generator=generator, device=device)

    def _check_inputs(self, rgb: torch.Tensor, depth: torch.Tensor, ref_depth: torch.Tensor,
                      stream_mask: torch.Tensor | None) -> None:
        s = self.input_size
        if rgb.dim() != 4 or tuple(rgb.shape[1:]) != (3, s, s):
            raise ValueError(f"rgb must be (B, 3, {s}, {s}) RGB, got {tuple(rgb.shape)}")
        b = rgb.shape[0]
        if depth.dim() != 4 or tuple(depth.shape[1:]) != (1, s, s) or depth.shape[0] != b:
            raise ValueError(f"depth must be ({b}, 1, {s}, {s}) metres, got {tuple(depth.shape)}")
        if ref_depth.dim() != 1 or ref_depth.shape[0] != b:
            raise ValueError(f"ref_depth must be ({b},) metres, got {tuple(ref_depth.shape)}")
        if stream_mask is not None and (stream_mask.dim() != 2 or tuple(stream_mask.shape) != (b, 2)):
            raise ValueError(f"stream_mask must be ({b}, 2) [rgb_on, depth_on], got {tuple(stream_mask.shape)}")

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor, ref_depth: torch.Tensor,
                stream_mask: torch.Tensor | None = None, init_pose: torch.Tensor | None = None,
                init_shape: torch.Tensor | None = None, init_cam: torch.Tensor | None = None,
                n_iter: int | None = None) -> FuseMeshOutput:
        """Raw crops -> FuseMeshOutput. stream_mask (B, 2) bool/0-1 [rgb_on, depth_on], None = both on.
        init_pose (B, 144) 6D, init_shape (B, 10), init_cam (B, 3): optional warm start (e.g. previous
        frame's pose6d, beta, cam); n_iter: IEF iterations (default from the regressor)."""
        self._check_inputs(rgb, depth, ref_depth, stream_mask)
        x_rgb = normalize_rgb(rgb)
        x_depth = normalize_depth(depth, ref_depth).to(x_rgb.dtype)
        if stream_mask is not None:
            m = stream_mask.to(x_rgb.dtype)
            x_rgb = x_rgb * m[:, 0].reshape(-1, 1, 1, 1)
            x_depth = x_depth * m[:, 1].reshape(-1, 1, 1, 1)
        feat = self.fusion(self.rgb_encoder(x_rgb), self.depth_encoder(x_depth))
        reg = self.regressor(feat, init_pose=init_pose, init_shape=init_shape, init_cam=init_cam, n_iter=n_iter)
        body = self.body(betas=reg.betas, body_pose=reg.rotmat[:, 1:], global_orient=reg.rotmat[:, :1],
                         pose2rot=False)
        return FuseMeshOutput(
            theta=reg.theta, pose6d=reg.pose6d, rotmat=reg.rotmat, beta=reg.betas, cam=reg.cam,
            vertices=body.vertices, joints=body.joints, lsp_joints=body.lsp_joints,
            lsp_2d=weak_perspective_project(body.lsp_joints, reg.cam),
        )


def _drop_body_state(module: FuseMesh, state: dict, prefix: str, local_metadata: dict) -> None:
    for key in [k for k in state if k.startswith(prefix + "body.")]:
        del state[key]


def _forgive_missing_body_state(module: FuseMesh, incompatible) -> None:  # (missing_keys, unexpected_keys)
    body_keys = {"body." + name for name, _ in module.body.named_buffers()}
    incompatible.missing_keys[:] = [k for k in incompatible.missing_keys
                                    if not any(k == b or k.endswith("." + b) for b in body_keys)]


# ------------------------------------------------------------------------------------ builders
@torch.no_grad()
def centred_mean_camera(body: nn.Module, scale: float = 0.9) -> torch.Tensor:
    """(1, 3) weak camera (s, tx, ty) that centres the upright mean-pose body's joints in the crop."""
    device = next(iter(body.buffers())).device
    rot = rot6d_to_matrix(upright_mean_pose6d().reshape(1, 24, 6)).to(device)
    joints = body(betas=None, body_pose=rot[:, 1:], global_orient=rot[:, :1], pose2rot=False).joints[0]
    centre = 0.5 * (joints[:, :2].amin(0) + joints[:, :2].amax(0))
    return torch.cat([torch.tensor([scale], device=device), -scale * centre]).reshape(1, 3).cpu()


def build_fusemesh(cfg: ModelConfig, body: nn.Module) -> FuseMesh:
    """FuseMesh from a ModelConfig and a body model (model.body.BodyModel)."""
    rgb = ResNetEncoder(cfg.rgb_encoder.arch, 3, cfg.rgb_encoder.width, cfg.rgb_encoder.pretrained)
    dep = ResNetEncoder(cfg.depth_encoder.arch, 1, cfg.depth_encoder.width, cfg.depth_encoder.pretrained)
    fusion = FeatureFusion(rgb.feature_dim, dep.feature_dim, cfg.fusion.hidden, cfg.fusion.train_p_miss)
    num_betas = int(getattr(body, "num_betas", 10))
    regressor = IEFRegressor(fusion.out_dim, cfg.regressor.hidden, cfg.regressor.n_iter, cfg.regressor.dropout,
                             num_betas=num_betas, init_pose6d=upright_mean_pose6d(),
                             init_betas=torch.zeros(1, num_betas), init_cam=centred_mean_camera(body))
    return FuseMesh(rgb, dep, fusion, regressor, body, cfg.input_size)


def build_discriminator(cfg: ModelConfig, num_betas: int = 10) -> PosePriorDiscriminator:
    """HMR's factorised prior from a ModelConfig."""
    d = cfg.discriminator
    return PosePriorDiscriminator(23, num_betas, d.joint_hidden, d.pose_hidden, d.shape_hidden)


def build_uscg(cfg: ModelConfig, body: nn.Module) -> USCG:
    """USCG from a ModelConfig and the body model used for its cycle."""
    return USCG(body, cfg.uscg.n_layers, cfg.uscg.hidden, num_betas=int(getattr(body, "num_betas", 10)),
                quality_threshold_mm=cfg.uscg.quality_threshold_mm)
