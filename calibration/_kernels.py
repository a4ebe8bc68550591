"""Compiled kernels of `calibration` (numba; imported on first use, cached on disk by numba): the rigid
transform behind `Extrinsics.apply` and `rigid_transform`, and the depth->color map of `calibration.align`."""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True, error_model="numpy")   # IEEE division: depth 0 -> w = inf
def color_uv_kernel(depth, coef, y0, x0, lo_mm, hi_mm, w_hi, uv, depth_ok):
    """`DepthPixelToColorMap.color_coordinates` per pixel of depth (h, w) uint16 mm, the window at (y0, x0)
    of the (deg + 1, Hd, Wd, 2) float32 coefficients: depth_ok = 255 where lo_mm <= depth <= hi_mm;
    w = min(1000 / depth, w_hi) and the Horner sum c[deg] w + c[deg - 1], then (. w + c[k]) for u and v,
    each product and sum rounded to float32 (no fused multiply-add), as OpenCV's per-array passes do.
    Row by row, each step over the row's contiguous (u, v) pairs (vectorised)."""
    h, w = depth.shape
    deg = coef.shape[0] - 1
    thousand = np.float32(1000.0)
    inv = np.empty(2 * w, np.float32)
    for i in range(h):
        for j in range(w):
            d = depth[i, j]
            depth_ok[i, j] = 255 if lo_mm <= d <= hi_mm else 0
            v = min(thousand / np.float32(d), w_hi)
            inv[2 * j] = v
            inv[2 * j + 1] = v
        acc = uv[i].reshape(2 * w)
        top = coef[deg, y0 + i, x0:x0 + w].reshape(2 * w)
        nxt = coef[deg - 1, y0 + i, x0:x0 + w].reshape(2 * w)
        for q in range(2 * w):
            acc[q] = top[q] * inv[q] + nxt[q]
        for k in range(deg - 2, -1, -1):
            ck = coef[k, y0 + i, x0:x0 + w].reshape(2 * w)
            for q in range(2 * w):
                acc[q] = acc[q] * inv[q] + ck[q]


@numba.njit(cache=True, nogil=True)
def rigid_kernel(p, R, t, out):
    """out[i] = R p[i] + t for points p (N, 3) float64."""
    for i in range(p.shape[0]):
        x, y, z = p[i, 0], p[i, 1], p[i, 2]
        for r in range(3):
            out[i, r] = R[r, 0] * x + R[r, 1] * y + R[r, 2] * z + t[r]
