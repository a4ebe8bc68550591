"""Square person crops from aligned RGB-D frames: the one crop implementation shared by training and app.

All images here are in the *depth camera's* pixel grid (color already aligned to depth by
calibration.align). A crop is a square window of the source image, resampled to `out_size` pixels:

    crop_px = (source_px - (x0, y0)) * scale,    scale = out_size / side

with pixel centres at integer coordinates (OpenCV's convention). Windows may extend past the image; the
outside is filled with zeros, which for depth means "invalid" — the model treats it like a dropout.
Color is resampled bilinearly; depth with nearest neighbour, so no invented depths appear between a
person and the background.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CropBox:
    """A square window in source pixels: top-left (x0, y0), side length `side` (px), output `out_size` (px)."""

    x0: float
    y0: float
    side: float
    out_size: int

    @property
    def scale(self) -> float:
        """Output pixels per source pixel."""
        return self.out_size / self.side

    @property
    def center(self) -> tuple[float, float]:
        """Window centre in source pixels (x, y)."""
        return (self.x0 + 0.5 * self.side, self.y0 + 0.5 * self.side)

    def affine(self) -> np.ndarray:
        """(2, 3) matrix mapping source pixels to crop pixels (for cv2.warpAffine)."""
        s = self.scale
        return np.array([[s, 0.0, -s * self.x0], [0.0, s, -s * self.y0]], dtype=np.float64)

    def source_to_crop(self, points_px: np.ndarray) -> np.ndarray:
        """(..., 2) source pixels -> (..., 2) crop pixels."""
        p = np.asarray(points_px, dtype=np.float64)
        return (p - np.array([self.x0, self.y0])) * self.scale

    def crop_to_source(self, points_px: np.ndarray) -> np.ndarray:
        """(..., 2) crop pixels -> (..., 2) source pixels."""
        p = np.asarray(points_px, dtype=np.float64)
        return p / self.scale + np.array([self.x0, self.y0])

    def source_to_normalized(self, points_px: np.ndarray) -> np.ndarray:
        """(..., 2) source pixels -> crop coordinates in [-1, 1] (the weak-perspective camera's frame)."""
        return self.source_to_crop(points_px) / self.out_size * 2.0 - 1.0

    def normalized_to_source(self, points_norm: np.ndarray) -> np.ndarray:
        """(..., 2) crop coordinates in [-1, 1] -> source pixels."""
        p = (np.asarray(points_norm, dtype=np.float64) + 1.0) * 0.5 * self.out_size
        return self.crop_to_source(p)


def box_around(bbox_xyxy: tuple[float, float, float, float] | np.ndarray, out_size: int,
               margin: float = 1.25) -> CropBox:
    """The square window centred on a bounding box (x0, y0, x1, y1 in source px), side = margin * longer side."""
    x0, y0, x1, y1 = (float(v) for v in bbox_xyxy)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"empty bounding box {bbox_xyxy!r}")
    if margin <= 0 or out_size <= 0:
        raise ValueError("margin and out_size must be positive")
    side = margin * max(x1 - x0, y1 - y0)
    cx, cy = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
    return CropBox(x0=cx - 0.5 * side, y0=cy - 0.5 * side, side=side, out_size=int(out_size))


def crop_color(image: np.ndarray, box: CropBox) -> np.ndarray:
    """Bilinear crop of an (H, W, C) or (H, W) image; outside the image is 0. Returns (S, S[, C]), same dtype."""
    return cv2.warpAffine(image, box.affine(), (box.out_size, box.out_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def crop_depth(depth: np.ndarray, box: CropBox) -> np.ndarray:
    """Nearest-neighbour crop of an (H, W) depth map (any dtype; 0 = invalid). Returns (S, S)."""
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    return cv2.warpAffine(depth, box.affine(), (box.out_size, box.out_size), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def crop_mask(mask: np.ndarray, box: CropBox) -> np.ndarray:
    """Nearest-neighbour crop of an (H, W) boolean mask. Returns (S, S) bool."""
    return crop_depth(mask.astype(np.uint8), box).astype(bool)
