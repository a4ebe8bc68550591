"""Evaluation metrics in millimetres: MPJPE, PA-MPJPE (batched similarity Procrustes), PVE.

Inputs are torch tensors in metres, (B, N, 3); every metric returns a per-sample (B,) tensor in mm
(average it yourself). An optional `mask` (B, N) (bool or 0/1 weights) leaves out missing joints,
both from the error and from the Procrustes fit. Differentiable (the USCG quality check and tests use
them inside torch code).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

_EPS = 1e-9


def _check_pair(pred: torch.Tensor, gt: torch.Tensor, name: str) -> None:
    if pred.dim() != 3 or pred.shape[-1] != 3 or pred.shape != gt.shape:
        raise ValueError(f"{name}: pred and gt must both be (B, N, 3), got {tuple(pred.shape)} and {tuple(gt.shape)}")


def _weights(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """(B, N, 1) float weights (all ones when mask is None)."""
    if mask is None:
        return torch.ones_like(like[..., :1])
    if tuple(mask.shape) != tuple(like.shape[:2]):
        raise ValueError(f"mask must be (B, N) = {tuple(like.shape[:2])}, got {tuple(mask.shape)}")
    return mask.to(like.dtype).unsqueeze(-1)


def _mean_error_mm(pred: torch.Tensor, gt: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    err = torch.linalg.norm(pred - gt, dim=-1, keepdim=True)  # (B, N, 1)
    return 1000.0 * (err * w).sum(dim=(1, 2)) / w.sum(dim=(1, 2)).clamp(min=_EPS)


def _root_point(x: torch.Tensor, root: int | Sequence[int]) -> torch.Tensor:
    idx = [root] if isinstance(root, int) else list(root)
    return x[:, idx].mean(dim=1, keepdim=True)


def mpjpe(pred: torch.Tensor, gt: torch.Tensor, root: int | Sequence[int] | None = None,
          mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean per-joint position error (B,) mm. `root`: joint index (or indices, averaged, e.g. the two
    hips (2, 3) of LSP-14 for the pelvis) subtracted from each set first; None = no alignment."""
    _check_pair(pred, gt, "mpjpe")
    if root is not None:
        pred, gt = pred - _root_point(pred, root), gt - _root_point(gt, root)
    return _mean_error_mm(pred, gt, _weights(mask, pred))


def procrustes_align(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """pred (B, N, 3) moved onto gt by the least-squares similarity (scale s, rotation R, translation t;
    Umeyama 1991, reflections excluded): returns s R pred + t, (B, N, 3)."""
    _check_pair(pred, gt, "procrustes_align")
    w = _weights(mask, pred)
    wsum = w.sum(dim=1, keepdim=True).clamp(min=_EPS)
    mu_p = (w * pred).sum(dim=1, keepdim=True) / wsum
    mu_g = (w * gt).sum(dim=1, keepdim=True) / wsum
    p0, g0 = pred - mu_p, gt - mu_g
    cov = (g0 * w).transpose(1, 2) @ p0 / wsum  # (B, 3, 3) = sum w g0 p0^T
    var_p = (w * p0 * p0).sum(dim=(1, 2)) / wsum.reshape(-1)
    u, sig, vh = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(u @ vh))
    d = torch.where(d == 0, torch.ones_like(d), d)
    diag = torch.ones_like(sig)
    diag[:, 2] = d
    rot = u @ torch.diag_embed(diag) @ vh  # (B, 3, 3)
    scale = (sig * diag).sum(dim=1) / var_p.clamp(min=_EPS)
    return scale[:, None, None] * p0 @ rot.transpose(1, 2) + mu_g


def pa_mpjpe(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """MPJPE after similarity Procrustes alignment of pred to gt ("reconstruction error"), (B,) mm."""
    _check_pair(pred, gt, "pa_mpjpe")
    return _mean_error_mm(procrustes_align(pred, gt, mask), gt, _weights(mask, pred))


def pve(pred_vertices: torch.Tensor, gt_vertices: torch.Tensor, pred_root: torch.Tensor | None = None,
        gt_root: torch.Tensor | None = None) -> torch.Tensor:
    """Per-vertex error (B,) mm between meshes of the same topology (B, V, 3). `pred_root`/`gt_root`
    (B, 3), e.g. each mesh's pelvis joint, are subtracted first when given (both or neither)."""
    _check_pair(pred_vertices, gt_vertices, "pve")
    if (pred_root is None) != (gt_root is None):
        raise ValueError("pve: give both pred_root and gt_root, or neither")
    if pred_root is not None:
        pred_vertices = pred_vertices - pred_root.reshape(-1, 1, 3)
        gt_vertices = gt_vertices - gt_root.reshape(-1, 1, 3)
    return _mean_error_mm(pred_vertices, gt_vertices, _weights(None, pred_vertices))
