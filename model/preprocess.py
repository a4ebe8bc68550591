"""Input normalisation: the model's input contract, one implementation for numpy and torch.

FuseMesh's network normalises its own inputs inside `forward` (so the exported ONNX graph takes raw
data); the app and the data pipeline only have to produce these raw inputs:

- rgb: (B, 3, S, S) uint8 (or float holding 0..255), RGB channel order, the square person crop.
- depth: (B, 1, S, S) float32 metres (the Kinect's DEPTH16 is millimetres: multiply by 0.001), the
  same crop of the depth map aligned to it; 0 (or NaN, or negative) = no measurement.
- ref_depth: (B,) float32 metres, the person's reference depth from `reference_depth` below (median
  sensor depth over the person; the root joint's depth is NOT used because the app cannot know it).
  Training and app must call it the same way (both with a person mask, or both without).

Normalisation, applied by the network (and available here for numpy, e.g. for inspection or tests):

- `normalize_rgb`: x / 255, then ImageNet mean/std per channel (RGB_MEAN, RGB_STD).
- `normalize_depth`: (depth - ref_depth) in metres, clipped to [-DEPTH_CLIP_M, +DEPTH_CLIP_M]
  (background far behind the person saturates), and invalid pixels set to exactly 0.
  A valid pixel exactly at the reference depth also maps to 0; the network sees the difference from
  the neighbourhood.

A dropped ("void") stream is the all-zero *normalised* input; the network applies its stream mask
after these functions. Both functions accept numpy arrays or torch tensors and return the same kind;
importing this module does not import torch (the app's hot path is numpy only).
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

RGB_MEAN = (0.485, 0.456, 0.406)  # ImageNet, on 0..1 RGB
RGB_STD = (0.229, 0.224, 0.225)
DEPTH_CLIP_M = 1.5  # |depth - ref| saturates here (metres)
REF_NEAR_BAND_M = 0.6  # `reference_depth` without a mask: surfaces within this of the nearest one


def _is_numpy(x: Any) -> bool:
    return isinstance(x, (np.ndarray, np.generic, float, int))


def normalize_rgb(rgb: Any) -> Any:
    """(..., 3, H, W) uint8 or 0..255 float RGB -> same shape float32, ImageNet-normalised."""
    if rgb.shape[-3] != 3:
        raise ValueError(f"rgb must be (..., 3, H, W) channels-first RGB, got shape {tuple(rgb.shape)}")
    if _is_numpy(rgb):
        mean = np.asarray(RGB_MEAN, dtype=np.float32).reshape(3, 1, 1)
        std = np.asarray(RGB_STD, dtype=np.float32).reshape(3, 1, 1)
        return (np.asarray(rgb, dtype=np.float32) / np.float32(255.0) - mean) / std
    import torch

    if rgb.device.type == "cpu":  # the ONNX export traces this branch: constants in the graph
        mean = torch.tensor(RGB_MEAN, dtype=torch.float32).reshape(3, 1, 1)
        std = torch.tensor(RGB_STD, dtype=torch.float32).reshape(3, 1, 1)
    else:  # no host-to-device copy per call (it would also break CUDA graph capture)
        mean, std = _rgb_stats_on(rgb.device)
    return (rgb.to(torch.float32) / 255.0 - mean) / std


@functools.lru_cache(maxsize=8)
def _rgb_stats_on(device: Any) -> tuple[Any, Any]:
    """RGB_MEAN, RGB_STD as (3, 1, 1) float32 tensors on `device` (a torch.device), made once per device."""
    import torch

    return (torch.tensor(RGB_MEAN, dtype=torch.float32, device=device).reshape(3, 1, 1),
            torch.tensor(RGB_STD, dtype=torch.float32, device=device).reshape(3, 1, 1))


def normalize_depth(depth_m: Any, ref_depth_m: Any) -> Any:
    """Depth in metres (B, 1, H, W), (B, H, W) or (H, W); ref (B,) or scalar metres -> float32, same shape.

    out = clip(depth - ref, -DEPTH_CLIP_M, DEPTH_CLIP_M) where depth > 0 (finite), else 0.
    """
    if _is_numpy(depth_m):
        d = np.asarray(depth_m, dtype=np.float32)
        r = np.asarray(ref_depth_m, dtype=np.float32)
        r = r.reshape(r.shape + (1,) * (d.ndim - r.ndim))
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(d) & (d > 0)
            rel = np.clip(d - r, -DEPTH_CLIP_M, DEPTH_CLIP_M)
        return np.where(valid, rel, np.float32(0.0)).astype(np.float32)
    import torch

    d = depth_m.to(torch.float32)
    r = torch.as_tensor(ref_depth_m, dtype=torch.float32, device=d.device)
    r = r.reshape(tuple(r.shape) + (1,) * (d.dim() - r.dim()))
    valid = torch.isfinite(d) & (d > 0)
    rel = torch.clamp(d - r, -DEPTH_CLIP_M, DEPTH_CLIP_M)
    return torch.where(valid, rel, torch.zeros_like(rel))


def reference_depth(depth_m: np.ndarray, person_mask: np.ndarray | None = None) -> float:
    """The person's reference depth (metres) for one (H, W) depth crop in metres (0 = invalid).

    With `person_mask` (H, W) bool: median of the valid depths inside the mask (preferred; a rendered
    training sample has the mask, and so does an app with body segmentation). Without a mask: median of
    the valid depths within REF_NEAR_BAND_M of the crop's near surface (its 5th percentile), i.e. the
    person in front of the background. Never the crop centre: that lands on the background when the
    person bends (training-probe lesson 3). Raises ValueError when no valid depth is available.
    """
    d = np.asarray(depth_m, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"depth_m must be one (H, W) depth crop, got shape {d.shape}")
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(d) & (d > 0)
    if person_mask is not None:
        m = np.asarray(person_mask, dtype=bool)
        if m.shape != d.shape:
            raise ValueError(f"person_mask shape {m.shape} differs from depth shape {d.shape}")
        values = d[valid & m]
        if values.size == 0:
            raise ValueError("no valid depth inside the person mask")
        return float(np.median(values))
    values = d[valid]
    if values.size == 0:
        raise ValueError("depth crop has no valid pixel")
    near = np.percentile(values, 5.0)
    return float(np.median(values[values <= near + REF_NEAR_BAND_M]))
