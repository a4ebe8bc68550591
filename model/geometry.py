"""Triangle-mesh geometry shared by the renderers (synthetic data, headless overlay, body sheet).

`vertex_normals` is the one implementation of area-weighted vertex normals in FuseMesh, and
`faces_seen_from` the one back-face test. Both are compiled with numba on first use (cached on disk).
"""
from __future__ import annotations

import numpy as np

__all__ = ["vertex_normals", "faces_seen_from"]

_KERNELS = None


def _kernels():
    global _KERNELS
    if _KERNELS is None:
        import numba

        @numba.njit(cache=True, nogil=True)
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

        @numba.njit(cache=True, nogil=True)
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

        _KERNELS = (normals_kernel, seen_kernel)
    return _KERNELS


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) float32 of a mesh: vertices (V, 3) (any units), faces
    (F, 3) vertex indices. Each face adds its cross product (twice its area, along its normal, by the
    winding) to its three vertices, accumulated in float64 in face order; unused vertices get zero normals."""
    v = np.ascontiguousarray(vertices, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64).reshape(-1, 3)
    out = np.zeros((v.shape[0], 3), np.float32)
    if v.shape[0]:
        _kernels()[0](v, f, out)
    return out


def faces_seen_from(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray, outward: float = 1.0) -> np.ndarray:
    """(F,) bool: faces whose front side some point of `points` (K, 3) sees, i.e. n . (A - p) < 0 for the
    face normal n = outward * (B - A) x (C - A) (outward = +1 for counter-clockwise outward winding, -1
    for clockwise). On a closed mesh, faces no point sees are never a ray's first hit from those points."""
    v = np.ascontiguousarray(vertices, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64).reshape(-1, 3)
    out = np.zeros(f.shape[0], bool)
    if f.shape[0]:
        _kernels()[1](v, f, float(outward), np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3), out)
    return out
