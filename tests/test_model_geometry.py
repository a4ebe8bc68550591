"""model.geometry: area-weighted vertex normals and the back-face test (compiled kernels) against
plain numpy on a closed mesh (Open3D's box) and a known cube."""
from __future__ import annotations

import numpy as np
import open3d as o3d

from model.geometry import faces_seen_from, vertex_normals


def _sphere():
    mesh = o3d.geometry.TriangleMesh.create_sphere(radius=0.5, resolution=12)
    return np.asarray(mesh.vertices), np.asarray(mesh.triangles)


def test_vertex_normals_equal_the_numpy_accumulation():
    v, f = _sphere()
    v = v + np.random.default_rng(0).normal(0, 0.01, v.shape)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    acc = np.zeros_like(v)
    for c in range(3):
        np.add.at(acc, f[:, c], fn)
    ref = acc / np.linalg.norm(acc, axis=1, keepdims=True)
    n = vertex_normals(v, f)
    assert n.dtype == np.float32 and n.shape == v.shape
    np.testing.assert_allclose(n, ref, atol=1e-6)
    # unused vertices get zero normals; no faces, no work
    n2 = vertex_normals(np.vstack([v, [[9.0, 9.0, 9.0]]]), f)
    assert np.all(n2[-1] == 0)
    assert vertex_normals(np.zeros((0, 3)), np.zeros((0, 3), np.int64)).shape == (0, 3)


def test_faces_seen_from_points_are_the_front_faces():
    v, f = _sphere()                                     # outward, counter-clockwise
    centre = v[f].mean(axis=1)
    eye = np.array([0.0, 0.0, 3.0])
    seen = faces_seen_from(v, f, eye[None])
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    np.testing.assert_array_equal(seen, np.einsum("ij,ij->i", fn, v[f[:, 0]] - eye) < 0)
    assert np.all(centre[seen, 2] > 0) and 0.3 < seen.mean() < 0.6    # the half facing +z
    # inward winding flips it; a second eye behind adds the back half
    np.testing.assert_array_equal(faces_seen_from(v, f[:, ::-1], eye[None], outward=-1.0), seen)
    both = faces_seen_from(v, f, np.array([eye, -eye]))
    np.testing.assert_array_equal(both, seen | faces_seen_from(v, f, -eye[None]))
    assert both.mean() > 0.75 and not np.any(seen & faces_seen_from(v, f, -eye[None]))
    assert faces_seen_from(v, np.zeros((0, 3), np.int64), eye[None]).shape == (0,)
