"""Triangle-mesh geometry shared by the renderers (synthetic data, headless overlay, body sheet).

`vertex_normals` is the one implementation of area-weighted vertex normals in FuseMesh, and
`faces_seen_from` the one back-face test. Both are compiled with numba on first use (cached on disk).
"""
from __future__ import annotations

import numpy as np

__all__ = ["vertex_normals", "faces_seen_from"]


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) float32 of a mesh: vertices (V, 3) (any units), faces
    (F, 3) vertex indices. Each face adds its cross product (twice its area, along its normal, by the
    winding) to its three vertices, accumulated in float64 in face order; unused vertices get zero normals."""
    v = np.ascontiguousarray(vertices, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64).reshape(-1, 3)
    out = np.zeros((v.shape[0], 3), np.float32)
    if v.shape[0]:
        from model import _geometry_kernels
        _geometry_kernels.normals_kernel(v, f, out)
    return out


def faces_seen_from(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray, outward: float = 1.0) -> np.ndarray:
    """(F,) bool: faces whose front side some point of `points` (K, 3) sees, i.e. n . (A - p) < 0 for the
    face normal n = outward * (B - A) x (C - A) (outward = +1 for counter-clockwise outward winding, -1
    for clockwise). On a closed mesh, faces no point sees are never a ray's first hit from those points."""
    v = np.ascontiguousarray(vertices, dtype=np.float64)
    f = np.ascontiguousarray(faces, dtype=np.int64).reshape(-1, 3)
    out = np.zeros(f.shape[0], bool)
    if f.shape[0]:
        from model import _geometry_kernels
        _geometry_kernels.seen_kernel(v, f, float(outward), np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3), out)
    return out
