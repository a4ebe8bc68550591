"""Triangle-mesh geometry shared by the renderers (synthetic data, headless overlay, body sheet).

`vertex_normals` is the one implementation of area-weighted vertex normals in FuseMesh.
"""
from __future__ import annotations

import numpy as np

__all__ = ["vertex_normals"]


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) float32 of a mesh: vertices (V, 3) (any units), faces
    (F, 3) vertex indices. Each face adds its cross product (twice its area, along its normal, by the
    winding) to its three vertices, accumulated in float64; unused vertices get zero normals."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    idx = f.ravel()
    vn = np.stack([np.bincount(idx, weights=np.repeat(fn[:, c], 3), minlength=len(v)) for c in range(3)], axis=1)
    n = np.linalg.norm(vn, axis=1, keepdims=True)
    return (vn / np.where(n > 0, n, 1.0)).astype(np.float32)
