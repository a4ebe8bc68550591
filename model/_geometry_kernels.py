"""Compiled kernels of `model.geometry` (numba; imported on first use, cached on disk by numba)."""
from __future__ import annotations

import numba
import numpy as np

_jit = numba.njit(cache=True, nogil=True)


@_jit
def normals_kernel(v, f, out):
    acc = np.zeros((v.shape[0], 3), np.float64)
    for k in range(f.shape[0]):
        a, b, c = f[k, 0], f[k, 1], f[k, 2]
        e1x, e1y, e1z = v[b, 0] - v[a, 0], v[b, 1] - v[a, 1], v[b, 2] - v[a, 2]
        e2x, e2y, e2z = v[c, 0] - v[a, 0], v[c, 1] - v[a, 1], v[c, 2] - v[a, 2]
        nx = e1y * e2z - e1z * e2y
        ny = e1z * e2x - e1x * e2z
        nz = e1x * e2y - e1y * e2x
        for corner in range(3):
            i = f[k, corner]
            acc[i, 0] += nx
            acc[i, 1] += ny
            acc[i, 2] += nz
    for i in range(v.shape[0]):
        n = np.sqrt(acc[i, 0] ** 2 + acc[i, 1] ** 2 + acc[i, 2] ** 2)
        s = 1.0 / n if n > 0 else 1.0
        for c in range(3):
            out[i, c] = acc[i, c] * s

@_jit
def seen_kernel(v, f, sign, points, out):
    for k in range(f.shape[0]):
        a, b, c = f[k, 0], f[k, 1], f[k, 2]
        e1x, e1y, e1z = v[b, 0] - v[a, 0], v[b, 1] - v[a, 1], v[b, 2] - v[a, 2]
        e2x, e2y, e2z = v[c, 0] - v[a, 0], v[c, 1] - v[a, 1], v[c, 2] - v[a, 2]
        nx = (e1y * e2z - e1z * e2y) * sign
        ny = (e1z * e2x - e1x * e2z) * sign
        nz = (e1x * e2y - e1y * e2x) * sign
        seen = False
        for p in range(points.shape[0]):
            if nx * (v[a, 0] - points[p, 0]) + ny * (v[a, 1] - points[p, 1]) + nz * (v[a, 2] - points[p, 2]) < 0:
                seen = True
                break
        out[k] = seen
