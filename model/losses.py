"""The training objective, eq. (6): L = w_2d L2d + w_smpl Lsmpl + w_drc Ldrc + w_adv Ladv.

- `keypoint_2d_loss`: L2d, L1 on the 14 LSP joints in normalised crop coordinates, visibility-masked.
- `smpl_param_loss`: Lsmpl, eq. (3), squared L2 between [beta, theta] and a target (USCG output or
  ground truth), per-sample validity mask (e.g. the USCG quality check).
- `depth_at_keypoints`, `depth_rank_labels`, `depth_ranking_loss`: Ldrc, eqs. (4)-(5).
- `adv_generator_loss`, `adv_discriminator_loss`: HMR's least-squares GAN.
- `combine_losses`: the weighted sum with the weights of `model.config.LossConfig`.

Reductions: every loss is a scalar mean over what is valid (samples, visible joints, valid pairs), so
its weight does not depend on batch size; an all-invalid batch gives 0 (still differentiable).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def _masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    weights = weights.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1e-8)


# --------------------------------------------------------------------------------------------- L2d
def keypoint_2d_loss(pred: torch.Tensor, gt: torch.Tensor, visibility: torch.Tensor | None = None) -> torch.Tensor:
    """L1 between projected and annotated 2D joints (B, J, 2), normalised crop coordinates ([-1, 1]).

    visibility (B, J) bool or 0..1 weights (None = all visible). Mean over visible coordinates.
    """
    if pred.shape != gt.shape or pred.dim() != 3 or pred.shape[-1] != 2:
        raise ValueError(f"keypoint_2d_loss: pred and gt must both be (B, J, 2), got {tuple(pred.shape)} and {tuple(gt.shape)}")
    vis = torch.ones_like(pred[..., 0]) if visibility is None else visibility.to(pred.dtype)
    if vis.shape != pred.shape[:2]:
        raise ValueError(f"keypoint_2d_loss: visibility must be (B, J) = {tuple(pred.shape[:2])}, got {tuple(vis.shape)}")
    return _masked_mean((pred - gt).abs(), vis.unsqueeze(-1).expand_as(pred))


# ------------------------------------------------------------------------------------------- Lsmpl
def smpl_param_loss(pred_pose: torch.Tensor, pred_betas: torch.Tensor, target_pose: torch.Tensor,
                    target_betas: torch.Tensor, valid: torch.Tensor | None = None,
                    beta_weight: float = 1.0) -> torch.Tensor:
    """Eq. (3): per sample ||theta - theta~||^2 + beta_weight ||beta - beta~||^2, mean over valid samples.

    Pose may be any representation as long as both sides match: axis-angle (B, 72) reproduces the
    paper; rotation matrices (B, 24, 3, 3) (recommended) avoid axis-angle's 2 pi ambiguity.
    valid (B,) bool/weights, e.g. `USCG.quality_check`'s result (None = all valid).
    """
    if pred_pose.shape != target_pose.shape or pred_betas.shape != target_betas.shape:
        raise ValueError(f"smpl_param_loss: shapes differ: pose {tuple(pred_pose.shape)} vs {tuple(target_pose.shape)}, "
                         f"betas {tuple(pred_betas.shape)} vs {tuple(target_betas.shape)}")
    b = pred_pose.shape[0]
    per_sample = ((pred_pose - target_pose) ** 2).reshape(b, -1).sum(1) \
        + beta_weight * ((pred_betas - target_betas) ** 2).reshape(b, -1).sum(1)
    w = torch.ones_like(per_sample) if valid is None else valid.to(per_sample.dtype).reshape(b)
    return _masked_mean(per_sample, w)


# -------------------------------------------------------------------------------------------- Ldrc
def depth_at_keypoints(depth_m: torch.Tensor, keypoints: torch.Tensor, window: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Sensor depth at 2D keypoints: median of the valid depths in a window x window patch.

    depth_m (B, 1, H, W) or (B, H, W) metres, 0/NaN = invalid; keypoints (B, J, 2) normalised crop
    coordinates (x, y) in [-1, 1] with app/crop.py's pixel convention (pixel centre p <-> 2 p / S - 1).
    Returns z (B, J) metres (NaN where invalid) and valid (B, J) bool: inside the crop and at least one
    valid depth in the patch. No gradient flows (depth is data).
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd number, got {window}")
    d = depth_m[:, 0] if depth_m.dim() == 4 else depth_m
    if d.dim() != 3 or keypoints.dim() != 3 or keypoints.shape[-1] != 2 or keypoints.shape[0] != d.shape[0]:
        raise ValueError(f"depth_at_keypoints wants depth (B, 1, H, W) and keypoints (B, J, 2), got "
                         f"{tuple(depth_m.shape)} and {tuple(keypoints.shape)}")
    b, h, w = d.shape
    j = keypoints.shape[1]
    kp = keypoints.detach()
    u = torch.round((kp[..., 0] + 1.0) * 0.5 * w).long()  # (B, J) pixel column
    v = torch.round((kp[..., 1] + 1.0) * 0.5 * h).long()
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    r = window // 2
    off = torch.arange(-r, r + 1, device=d.device)
    uu = (u[..., None, None] + off[None, None, None, :]).expand(b, j, window, window)  # (B,J,k,k)
    vv = (v[..., None, None] + off[None, None, :, None]).expand(b, j, window, window)
    in_img = (uu >= 0) & (uu < w) & (vv >= 0) & (vv < h)
    flat = (vv.clamp(0, h - 1) * w + uu.clamp(0, w - 1)).reshape(b, -1)
    vals = torch.gather(d.detach().reshape(b, -1).to(torch.float32), 1, flat).reshape(b, j, -1)
    ok = in_img.reshape(b, j, -1) & torch.isfinite(vals) & (vals > 0)
    vals = torch.where(ok, vals, torch.full_like(vals, float("nan")))
    z = torch.nanmedian(vals, dim=-1).values
    valid = inside & ok.any(dim=-1)
    return torch.where(valid, z, torch.full_like(z, float("nan"))), valid


def joint_pairs(num_joints: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(2, P) indices of the non-repeating pairs p < q, P = J (J - 1) / 2."""
    return torch.triu_indices(num_joints, num_joints, offset=1, device=device)


def depth_rank_labels(z_depth: torch.Tensor, valid: torch.Tensor, margin_m: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. (4): r_pq = 1 if z_d,p < z_d,q (p closer), -1 if farther, 0 if equal, for all pairs p < q.

    z_depth (B, J) metres, valid (B, J) bool -> r (B, P) float in {-1, 0, 1}, pair_valid (B, P) bool
    (both depths valid). margin_m > 0 (our addition) makes |z_d,p - z_d,q| <= margin a tie (r = 0), so
    sensor noise and near-equal depths do not impose an order; margin 0 is the paper.
    """
    if z_depth.shape != valid.shape or z_depth.dim() != 2:
        raise ValueError(f"z_depth and valid must both be (B, J), got {tuple(z_depth.shape)} and {tuple(valid.shape)}")
    p, q = joint_pairs(z_depth.shape[1], z_depth.device)
    diff = torch.nan_to_num(z_depth[:, p] - z_depth[:, q], nan=0.0)  # z_p - z_q
    r = torch.where(diff < -margin_m, 1.0, torch.where(diff > margin_m, -1.0, 0.0)).to(z_depth.dtype)
    return r, valid[:, p] & valid[:, q]


def depth_ranking_loss(z_pred: torch.Tensor, r: torch.Tensor, pair_valid: torch.Tensor) -> torch.Tensor:
    """Eq. (5): mean over valid pairs of log(1 + exp(r_pq (z_p - z_q))).

    z_pred (B, J) metres: the predicted joints' depth coordinate in the camera-aligned frame of the
    network's output (after the global orientation; +z points away from the camera), in the same joint
    order as the keypoints that gave r, i.e. `FuseMesh(...)["lsp_joints"][..., 2]` for LSP keypoints. Ties (r = 0) contribute the constant log 2 and no gradient.
    """
    if r.shape != pair_valid.shape or r.dim() != 2:
        raise ValueError(f"r and pair_valid must both be (B, P), got {tuple(r.shape)} and {tuple(pair_valid.shape)}")
    p, q = joint_pairs(z_pred.shape[1], z_pred.device)
    if p.numel() != r.shape[1]:
        raise ValueError(f"{z_pred.shape[1]} joints give {p.numel()} pairs, but r has {r.shape[1]}")
    return _masked_mean(F.softplus(r * (z_pred[:, p] - z_pred[:, q])), pair_valid)


def drc_loss(z_pred: torch.Tensor, depth_m: torch.Tensor, keypoints: torch.Tensor,
             visibility: torch.Tensor | None = None, margin_m: float = 0.0, window: int = 5) -> torch.Tensor:
    """Ldrc end to end: depth at the annotated 2D keypoints (B, J, 2) -> ranks -> loss on z_pred (B, J).

    visibility (B, J) masks occluded/unannotated keypoints (their depth belongs to the occluder).
    """
    z_d, valid = depth_at_keypoints(depth_m, keypoints, window)
    if visibility is not None:
        valid = valid & visibility.bool()
    r, pair_valid = depth_rank_labels(z_d, valid, margin_m)
    return depth_ranking_loss(z_pred, r, pair_valid)


# -------------------------------------------------------------------------------------------- Ladv
def adv_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """HMR's encoder-side LSGAN loss: sum over the K+2 discriminators of mean_B (D(fake) - 1)^2."""
    return ((fake_scores - 1.0) ** 2).mean(dim=0).sum()


def adv_discriminator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """HMR's discriminator LSGAN loss: sum_k mean (D(real) - 1)^2 + mean D(fake)^2 (fake detached by caller)."""
    return ((real_scores - 1.0) ** 2).mean(dim=0).sum() + (fake_scores ** 2).mean(dim=0).sum()


# ------------------------------------------------------------------------------------------- total
LOSS_TERMS = ("2d", "smpl", "drc", "adv")


def combine_losses(terms: dict[str, torch.Tensor], weights: Any) -> torch.Tensor:
    """Eq. (6): sum of w_<name> * terms[name] for the terms given ('2d', 'smpl', 'drc', 'adv').

    `weights` is a `model.config.LossConfig` (or anything with attributes w_2d, w_smpl, ...).
    """
    if not terms:
        raise ValueError("combine_losses needs at least one term")
    total = None
    for name, value in terms.items():
        if name not in LOSS_TERMS:
            raise ValueError(f"unknown loss term {name!r}; expected one of {LOSS_TERMS}")
        part = getattr(weights, f"w_{name}") * value
        total = part if total is None else total + part
    return total
