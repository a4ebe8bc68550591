"""training.synth.raycast: the renderer's exact first-hit ray caster against Open3D's BVH ray caster
(`RaycastingScene`, Embree) on the engine's real scenes and cameras, on faces that cross behind the
camera, on the wide (strongly distorted) field of view, and single rays against grids."""
from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from model.body import DEFAULT_BODY_PATH, BodyModel
from training.synth.raycast import RayGrid, SoupView
from training.synth.render import Grid, rig_cameras
from training.synth.sample import DEFAULT_CALIBRATION, SynthConfig, SynthEngine, load_rig, sample_rng


def open3d_first_hits(vertices: np.ndarray, faces: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference: t (...) and face (...) of rays (x, y, 1) from the origin, by Open3D."""
    scene = o3d.t.geometry.RaycastingScene(nthreads=1)
    scene.add_triangles(o3d.core.Tensor(vertices.astype(np.float32)), o3d.core.Tensor(faces.astype(np.uint32)))
    rays = np.zeros(xy.shape[:-1] + (6,), np.float32)
    rays[..., 3:5] = xy
    rays[..., 5] = 1.0
    out = scene.cast_rays(o3d.core.Tensor(rays), nthreads=1)
    t = out["t_hit"].numpy()
    face = np.where(np.isfinite(t), out["primitive_ids"].numpy().astype(np.int64), -1)
    return t, face


def exact_t_uv(vertices: np.ndarray, tri: np.ndarray, x: float, y: float) -> np.ndarray:
    """(t, u, v) of ray (x, y, 1) against one triangle, solved in float64."""
    a, b, c = vertices[tri]
    return np.linalg.solve(np.c_[[x, y, 1.0], a - b, a - c], a)


def assert_same_first_hits(vertices, faces, xy, valid, t, face, bary, max_disagree=3e-4):
    """Our hits equal Open3D's (same face, t to float32 precision); where the two disagree (Open3D is
    float32 and leaks through shared edges), ours is verified exactly: inside the face, not farther."""
    t_ref, f_ref = open3d_first_hits(vertices, faces, xy)
    t_ref = np.where(valid, t_ref, np.inf)
    f_ref = np.where(valid, f_ref, -1)
    assert np.all(face[~valid] == -1) and np.all(np.isinf(t[~valid]))
    same = face == f_ref
    n = int(valid.sum())
    assert np.count_nonzero(~same) <= max(2, max_disagree * n), f"{np.count_nonzero(~same)} of {n} rays differ"
    both = same & (face >= 0)
    np.testing.assert_allclose(t[both], t_ref[both], rtol=2e-5, atol=2e-5)
    # barycentrics reproduce the hit point
    idx = np.flatnonzero(both.ravel())[:: max(1, int(both.sum()) // 500)]
    tri = faces[face.ravel()[idx]]
    u, v = bary.reshape(-1, 2)[idx].T.astype(np.float64)
    p = (1 - u - v)[:, None] * vertices[tri[:, 0]] + u[:, None] * vertices[tri[:, 1]] + v[:, None] * vertices[tri[:, 2]]
    ray = np.c_[xy.reshape(-1, 2)[idx], np.ones(len(idx))]
    np.testing.assert_allclose(p, ray * t.ravel()[idx, None], atol=5e-5)
    for i in np.flatnonzero(~same.ravel()):
        x, y = xy.reshape(-1, 2)[i]
        ours = exact_t_uv(vertices, faces[face.ravel()[i]], x, y)
        assert ours[1] >= -1e-9 and ours[2] >= -1e-9 and ours[1] + ours[2] <= 1 + 1e-9
        if f_ref.ravel()[i] >= 0:
            theirs = exact_t_uv(vertices, faces[f_ref.ravel()[i]], x, y)
            inside = theirs[1] >= 1e-7 and theirs[2] >= 1e-7 and theirs[1] + theirs[2] <= 1 - 1e-7
            assert ours[0] <= theirs[0] + 1e-6 or not inside


@pytest.fixture(scope="module")
def engine() -> SynthEngine:
    return SynthEngine(BodyModel.from_file(DEFAULT_BODY_PATH), SynthConfig(out_size=224))


def test_first_hits_match_open3d_on_the_engines_scenes(engine):
    """Depth and color windows around the person (all depth modes, 720P/1080P), body + room + boxes."""
    checked = 0
    for i in range(10):
        rng = sample_rng(5, i)
        scene = engine.sample_scene(rng)
        people = engine.pose([scene])[0]
        cams = engine.cameras(scene.depth_mode, scene.color_resolution)
        soup = engine.soup(scene, people, (np.zeros(3), cams.color_origin))
        for intr, rays, verts in ((cams.rig.depth, cams.depth, soup.vertices),
                                  (cams.rig.color, cams.color, cams.rig.depth_to_color.apply(soup.vertices))):
            uv, ok = intr.project_with_mask(verts[: len(people[0].vertices)])
            if ok.sum() < 100:
                continue
            W, H = intr.size
            cx, cy = np.clip(np.median(uv[ok], axis=0), 0, [W - 1, H - 1]).astype(int)
            window = (max(0, cx - 90), max(0, cy - 90), min(W, cx + 90), min(H, cy + 90))
            grid = Grid(window, 1.0 if i % 2 else 1.7)
            xy = np.ascontiguousarray(grid.take(rays.xy))
            valid = grid.take(rays.valid)
            t, face, bary = SoupView(verts, soup.faces).cast_grid(RayGrid(xy, valid))
            assert_same_first_hits(verts, soup.faces, xy, valid, t, face, bary)
            checked += int(valid.sum())
    assert checked > 200_000


def test_faces_crossing_behind_the_camera_and_the_wide_field_of_view():
    """A floor and a wall that extend behind the camera (clipped at the near plane), a tilted quad in
    front, seen through the whole WFOV 2x2 binned ray table (strong distortion, invalid corners)."""
    rig = load_rig(str(DEFAULT_CALIBRATION), "WFOV_2X2BINNED", "720P")
    cams = rig_cameras(rig)
    v = np.array([[-5, 1.2, -3], [5, 1.2, -3], [5, 1.2, 8], [-5, 1.2, 8],       # floor, below and behind
                  [-5, -2, 6], [5, -2, 6], [5, 1.2, 6], [-5, 1.2, 6],           # back wall
                  [-3, -2, -3], [-3, -2, 6], [-3, 1.2, 6], [-3, 1.2, -3],       # side wall, behind too
                  [-0.4, -0.3, 1.0], [0.5, -0.2, 1.6], [0.3, 0.6, 1.5], [-0.5, 0.5, 0.9]], float)
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7], [8, 9, 10], [8, 10, 11], [12, 13, 14], [12, 14, 15]])
    xy = cams.depth.xy
    valid = cams.depth.valid
    assert not valid.all()
    t, face, bary = SoupView(v, f).cast_grid(RayGrid(xy, valid))
    assert_same_first_hits(v, f, xy, valid, t, face, bary)
    assert set(np.unique(face[valid])) >= {0, 1, 2, 3, 4, 5, 6, 7}
    # a face wholly behind the camera is never hit
    t2, face2, _ = SoupView(v * [1, 1, -1], f[:2]).cast_grid(RayGrid(xy, valid))
    assert np.all(face2[valid & (xy[..., 1] < 0)] == -1)


def test_single_rays_equal_the_grid_and_misses_are_reported():
    rng = np.random.default_rng(0)
    centres = rng.uniform([-1, -1, 1.5], [1, 1, 4], (300, 3))
    v = (centres[:, None, :] + rng.normal(0, 0.15, (300, 3, 3))).reshape(-1, 3)
    f = np.arange(900).reshape(300, 3)
    ys, xs = np.mgrid[-0.6:0.6:97j, -0.7:0.7:113j]
    xy = np.stack([xs, ys], -1).astype(np.float32)
    view = SoupView(v, f)
    t, face, bary = view.cast_grid(RayGrid(xy, np.ones(xs.shape, bool)))
    assert_same_first_hits(v, f, xy, np.ones(xs.shape, bool), t, face, bary)
    assert 0.05 < np.mean(face >= 0) < 0.95            # both hits and misses occur
    pick = rng.choice(xy.size // 2, 400, replace=False)
    flat = xy.reshape(-1, 2)[pick]
    t1, f1, b1 = view.cast_list(np.vstack([flat, [[np.nan, 0.0]]]))
    np.testing.assert_array_equal(f1[:-1], face.ravel()[pick])
    np.testing.assert_array_equal(t1[:-1], t.ravel()[pick])
    np.testing.assert_array_equal(b1[:-1], bary.reshape(-1, 2)[pick])
    assert f1[-1] == -1 and np.isinf(t1[-1])
    empty = SoupView(np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    assert np.all(empty.cast_grid(RayGrid(xy, np.ones(xs.shape, bool)))[1] == -1)


def test_large_faces_behind_a_dense_occluder_give_the_same_hits_as_single_rays():
    """The grid caster (large faces through ray tiles, small faces through cells) and single rays (neither)
    give bit-identical first hits, with a dense occluder of small faces cast first, large faces behind it,
    one in front of part of it (it must win there) and one crossing behind the camera."""
    rng = np.random.default_rng(4)
    centres = rng.uniform([-0.5, -0.5, 1.8], [0.5, 0.5, 2.2], (6000, 3))
    small = (centres[:, None, :] + rng.normal(0, 0.04, (6000, 3, 3))).reshape(-1, 3)
    big = np.array([[-4, -3, 3.0], [4, -3, 3.0], [4, 3, 3.2], [-4, 3, 3.2],          # wall behind
                    [-4, 0.8, -2], [4, 0.8, -2], [4, 0.8, 6], [-4, 0.8, 6],          # floor, behind the camera too
                    [0.1, -0.1, 1.5], [0.6, -0.1, 1.5], [0.6, 0.4, 1.5], [0.1, 0.4, 1.5]], float)  # in front
    v = np.vstack([small, big])
    n = len(small)
    f = np.vstack([np.arange(n).reshape(-1, 3),
                   n + np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7], [8, 9, 10], [8, 10, 11]])])
    ys, xs = np.mgrid[-0.4:0.4:181j, -0.45:0.45:203j]
    xy = np.stack([xs, ys], -1).astype(np.float32)
    valid = np.ones(xs.shape, bool)
    view = SoupView(v, f)
    t, face, bary = view.cast_grid(RayGrid(xy, valid))
    t1, f1, b1 = view.cast_list(xy.reshape(-1, 2))
    np.testing.assert_array_equal(face.ravel(), f1)
    np.testing.assert_array_equal(t.ravel(), t1)
    np.testing.assert_array_equal(bary.reshape(-1, 2), b1)
    hit_ids = set(np.unique(face).tolist())
    for quad in range(3):  # the wall, the floor and the front quad are each seen
        assert {len(f) - 6 + 2 * quad, len(f) - 5 + 2 * quad} & hit_ids, quad
    assert (face < len(f) - 6).mean() > 0.2  # the occluder covers a fifth of the rays
