"""Exact first-hit ray casting of a triangle soup from one camera centre (numba, CPU, one thread).

The synthetic engine casts its rays from a camera centre, through the pixels of that camera's
calibrated ray table (rays (x, y, 1) in the camera frame: `CameraIntrinsics.xy_table`). This module
intersects such rays with triangles *triangle by triangle* instead of ray by ray: each triangle is
projected to the camera's normalised image plane (x/z, y/z; exact for straight edges, clipped at a
near plane when it crosses behind the camera), its bounding box there selects the rays that can hit it,
and each of those rays is tested exactly (the Moller-Trumbore test written for a ray origin at the
camera centre) against a per-ray depth buffer. The result is the same first hit a BVH ray caster
(Open3D's `RaycastingScene`, which the tests compare against) returns, in float64 (Open3D's float32 leaks
through a shared edge now and then), without building a BVH: a 224 px crop's ~50k rays take 2-4 ms on
one core against Open3D's ~20 ms including its BVH (docs/synth_speed.md).

Frames: vertices are given in the casting camera's frame (OpenCV axes, metres). A ray's direction
(x, y, 1) has z = 1, so the hit parameter t is the hit point's z-depth in that camera.

Which rays a face's box selects, on a grid of rays (rows and columns of a ray table, e.g. a window of
an image; `RayGrid` builds the tables once per grid):
- small faces: a regular grid of cells over the normalised plane, about one ray per cell, records the
  row and column range of the rays inside each cell; the cells under the face's box hold every ray
  that can hit it, so the union of their ranges is the block of rays to test;
- large faces (more than MAX_CELLS cells): the rows of ray y ranges and columns of ray x ranges that
  meet the box (made non-decreasing by a suffix minimum / prefix maximum, which only widens them, so each
  is one run found by binary search), visited in TILE x TILE tiles whose rays' box must meet the face's
  box and not lie wholly outside one of the half-planes bounding its projection.
Every ray that can hit a face is inside its projection, hence inside its box, so the result is exact.
"""
from __future__ import annotations

import numpy as np

__all__ = ["NEAR_M", "SoupView", "RayGrid"]

NEAR_M = 1e-4   # hits closer than this to the camera centre (metres of z) are ignored
TILE = 8        # rays per side of the blocks whose boxes large faces test before their rays
MAX_CELLS = 64  # faces whose box covers more cells are cast as large faces (tiles)
CELL_RAYS = 1.0  # rays per cell (on average) of the grid that finds the rays under a small face


def _k():
    """The compiled kernels (training.synth._kernels; imported on first use, which keeps this module's
    import light: numba loads them from its on-disk cache, or compiles them once)."""
    from training.synth import _kernels
    return _kernels


class SoupView:
    """A triangle soup seen from one camera, ready to cast rays from that camera's centre.

    vertices (V, 3) float64 in the camera frame (metres); faces (F, 3) int64; planes (F, 17) float64 per
    face: n = e1 x e2 (0:3), U = e2 x a (3:6), V = a x e1 (6:9), s = a . n (9), and the box of the face's
    projection on the z = 1 plane, x_lo, x_hi, y_lo, y_hi (10:14; x_lo > x_hi when the face lies wholly
    behind the near plane).
    """

    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        self.vertices = np.ascontiguousarray(vertices, dtype=np.float64)
        self.faces = np.ascontiguousarray(faces, dtype=np.int64).reshape(-1, 3)
        self.planes = (_k().face_planes_kernel(self.vertices, self.faces) if self.faces.shape[0]
                       else np.zeros((0, 17), np.float64))

    def cast_grid(self, rays: "RayGrid") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First hits of a grid of rays (x, y, 1) from the camera centre (`RayGrid`; invalid rays miss).
        Returns t (h, w) float32 (z-depth, inf = miss), face (h, w) int64 (-1 = miss), bary (h, w, 2)
        float32 (u, v): hit = (1-u-v) A + u B + v C."""
        h, w = rays.valid.shape
        t = np.full((h, w), np.inf, np.float32)
        face = np.full((h, w), -1, np.int64)
        bary = np.zeros((h, w, 2), np.float32)
        if self.faces.shape[0]:
            _k().cast_grid_kernel(self.vertices, self.faces, self.planes, rays.xy, rays.valid, *rays.tables, TILE,
                          *rays.cells, MAX_CELLS, t, face, bary)
        return t, face, bary

    def cast_list(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First hits of rays (x, y, 1) from the camera centre given as a list, xy (N, 2): like `cast_grid`
        with shapes (N,), (N,), (N, 2). Rays with non-finite xy miss."""
        xy = np.ascontiguousarray(xy, dtype=np.float64).reshape(-1, 2)
        n = xy.shape[0]
        t = np.full(n, np.inf, np.float64)
        face = np.full(n, -1, np.int64)
        bary = np.zeros((n, 2), np.float64)
        finite = np.flatnonzero(np.all(np.isfinite(xy), axis=1))
        if self.faces.shape[0] and finite.size:
            order = finite[np.argsort(xy[finite, 0], kind="stable")]
            _k().cast_list_kernel(self.planes, xy, order, np.ascontiguousarray(xy[order, 0]), t, face, bary)
        return t.astype(np.float32), face, bary.astype(np.float32)


class RayGrid:
    """A grid of rays (x, y, 1) from a camera centre, rows and columns of its ray table (y grows down the
    rows, x along the columns), with the search tables `SoupView.cast_grid` uses.

    xy (h, w, 2) float32 normalised image coordinates (the ray tables' precision); valid (h, w) bool.
    tables: (row_lo, row_hi) (h,) and (col_lo, col_hi) (w,), the range of y over each row's valid rays and
    of x over each column's, widened to be non-decreasing (suffix minimum of the lows, prefix maximum of
    the highs), so the rows (columns) a y (x) interval can meet are one run found by binary search; tiles
    (ceil(h / TILE), ceil(w / TILE), 4): the box (x_lo, x_hi, y_lo, y_hi) of each TILE x TILE block's
    valid rays. cells: (table (ny, nx, 4) int32, x0, y0, size): a regular grid of cells over the rays'
    box on the z = 1 plane, about CELL_RAYS rays per cell, each holding the first and last row and column
    of its rays (first > last when empty), so the cells under a small face's box bound the rays that can
    hit it.
    """

    def __init__(self, xy: np.ndarray, valid: np.ndarray):
        self.xy = np.ascontiguousarray(xy, dtype=np.float32)
        self.valid = np.ascontiguousarray(valid, dtype=np.bool_)
        if self.xy.shape != self.valid.shape + (2,):
            raise ValueError(f"RayGrid: xy {self.xy.shape} does not match valid {self.valid.shape}")
        out = _k().index_grid(self.xy, self.valid, TILE, CELL_RAYS)
        self.tables = out[:5]
        self.cells = out[5:]
