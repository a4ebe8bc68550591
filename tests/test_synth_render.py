"""training.synth scene/render/sample: known-value renders through the real (distorted) Kinect cameras,
labels that agree with the body model and the renders, sensor depth at visible joints, crop-only
rendering identical to full frames. Open3D, smplx (via model.body) and the app's aligner are real."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from app.crop import crop_depth, crop_mask
from model.body import DEFAULT_BODY_PATH, BodyModel
from tests.toy_body import write_toy_body
from training.synth.appearance import BOTTOM, HAIR, REGION_NAMES, SHOES, SKIN, TOP, Material, body_regions, \
    sample_body_appearance
from training.synth.depth_noise import noise_sigma_mm, systematic_error_mm
from training.synth.render import Grid, SceneMesh, jpeg_roundtrip, render_color, render_depth, rig_cameras
from training.synth.sample import (DEFAULT_CALIBRATION, SynthConfig, SynthEngine, config_from_dict, config_to_dict,
                                   load_rig, sample_rng)
from training.synth.scene import (OBJ_BACKGROUND, OBJ_TARGET, Box, Lighting, SceneConfig, TriangleSoup,
                                  sensor_pose)

FAST_SCENE = SceneConfig(depth_modes=(("NFOV_2X2BINNED", 1.0),), color_resolutions=(("720P", 1.0),))


@pytest.fixture(scope="module")
def body(tmp_path_factory) -> BodyModel:
    return BodyModel.from_file(write_toy_body(tmp_path_factory.mktemp("body") / "toy.npz"))


@pytest.fixture(scope="module")
def engine(body) -> SynthEngine:
    return SynthEngine(body, SynthConfig(out_size=96, scene=FAST_SCENE))


@pytest.fixture(scope="module")
def rig():
    return load_rig(str(DEFAULT_CALIBRATION), "NFOV_2X2BINNED", "720P")


def quad(corners: np.ndarray, material: Material, obj: int = OBJ_BACKGROUND) -> TriangleSoup:
    return TriangleSoup(vertices=np.asarray(corners, float), faces=np.array([[0, 1, 2], [0, 2, 3]]),
                        texcoords=np.zeros((4, 3)), face_material=np.zeros(2, np.int32),
                        face_object=np.full(2, obj, np.int8), face_person=np.full(2, -1, np.int16),
                        materials=[material])


# ------------------------------------------------------------------------------------------ renderer
def test_depth_of_a_plane_is_its_z_through_the_distorted_camera(rig):
    """A fronto-parallel plane at z = 2 m reads exactly 2 m in every valid pixel, corners included."""
    cams = rig_cameras(rig)
    plane = quad([[-9, -9, 2.0], [9, -9, 2.0], [9, 9, 2.0], [-9, 9, 2.0]], Material(color=(0.5, 0.5, 0.5)))
    dr = render_depth(SceneMesh(plane), cams)
    valid = cams.depth.valid
    assert dr.z.shape == (288, 320) and valid.mean() > 0.95
    np.testing.assert_allclose(dr.z[valid], 2.0, atol=1e-5)
    assert np.all(dr.z[~valid] == 0)
    assert np.all(dr.obj[valid] == OBJ_BACKGROUND)
    # a window renders the same rays as the full frame
    win = render_depth(SceneMesh(plane), cams, (17, 30, 200, 111))
    np.testing.assert_array_equal(win.z, dr.z[30:111, 17:200])


def test_small_square_lands_where_the_calibration_projects_it(rig):
    """A 4 cm square at a known off-axis point covers the pixel its centre projects to (distortion on)."""
    cams = rig_cameras(rig)
    c = np.array([0.55, -0.35, 1.6])
    h = 0.02
    sq = quad([c + [-h, -h, 0], c + [h, -h, 0], c + [h, h, 0], c + [-h, h, 0]], Material(color=(1, 0, 0)), OBJ_TARGET)
    dr = render_depth(SceneMesh(sq), cams)
    u, v = rig.depth.project(c)
    hit = np.argwhere(dr.obj == OBJ_TARGET)
    assert dr.obj[int(round(v)), int(round(u))] == OBJ_TARGET
    centroid = hit.mean(axis=0)[::-1]
    assert np.hypot(*(centroid - (u, v))) < 1.0     # footprint centred on the projection (px)
    # ~ (fx * 4 cm / 1.6 m)^2 pixels, more at the distorted edge: a pinhole would be off by far more than 30 %
    assert 0.7 < len(hit) / (rig.depth.fx * 2 * h / c[2]) ** 2 < 1.6


def test_color_camera_sees_the_plane_boundary_where_the_extrinsics_put_it(rig):
    """Left half red, right half blue (boundary at x = 0 in the depth frame): in the color image the
    boundary sits at the projection of (0, y, z) through depth->color extrinsics and color distortion."""
    cams = rig_cameras(rig)
    z = 2.5
    red = quad([[-9, -9, z], [0, -9, z], [0, 9, z], [-9, 9, z]], Material(color=(1.0, 0.0, 0.0)))
    blue = quad([[0, -9, z], [9, -9, z], [9, 9, z], [0, 9, z]], Material(color=(0.0, 0.0, 1.0)))
    from training.synth.scene import concat_soups
    mesh = SceneMesh(concat_soups([red, blue]))
    light = Lighting(ambient=np.ones(3), directions=np.zeros((0, 3)), colors=np.zeros((0, 3)))
    cr = render_color(mesh, cams, light, sensor_pose(1.0, 0.0), (0, 250, 1280, 500))
    for y in (-0.3, 0.0):
        u, v = rig.color.project(rig.depth_to_color.apply([0.0, y, z]))
        row = int(round(v)) - 250
        assert 0 <= row < cr.linear.shape[0]
        left, right = int(math.floor(u)) - 1, int(math.ceil(u)) + 1
        assert cr.linear[row, left, 0] == 1.0 and cr.linear[row, left, 2] == 0.0       # red
        assert cr.linear[row, right, 2] == 1.0 and cr.linear[row, right, 0] == 0.0     # blue


def test_strided_grid_rays_match_exact_unprojection(rig):
    """Rays of a strided grid (interpolated from the ray table) point where exact undistortion says."""
    cams = rig_cameras(rig)
    grid = Grid((10, 20, 300, 250), 2.6)
    dirs = grid.take(cams.depth.xy)
    assert dirs.shape == grid.shape + (2,)
    px = np.stack(np.meshgrid(grid.xs, grid.ys), axis=-1)
    exact, ok = rig.depth.pixels_to_normalized(px)
    assert ok.all()
    np.testing.assert_allclose(dirs, exact, atol=0.01 / rig.depth.fx)   # < 0.01 px
    # at the edge of a wide-angle field of view no ray is blended with an invalid neighbour
    wide = rig_cameras(load_rig(str(DEFAULT_CALIBRATION), "WFOV_2X2BINNED", "720P"))
    g = Grid((0, 0, 200, 512), 1.77)
    d, ok = g.take(wide.depth.xy), g.take(wide.depth.valid)
    assert 0.2 < ok.mean() < 0.95
    exact, ok_exact = wide.rig.depth.pixels_to_normalized(np.stack(np.meshgrid(g.xs, g.ys), axis=-1))
    assert np.all(ok_exact[ok])
    np.testing.assert_allclose(d[ok], exact[ok], atol=0.1 / wide.rig.depth.fx)   # < 0.1 px at the rim
    # nearest expansion back to the window puts each sample in its own block
    up = grid.upsample_nearest(np.arange(np.prod(grid.shape), dtype=np.float32).reshape(grid.shape))
    assert up.shape == (230, 290)
    assert up[0, 0] == 0 and up[-1, -1] == np.prod(grid.shape) - 1



@pytest.mark.parametrize("window, stride, channels", [((10, 20, 300, 250), 2.6, 3), ((0, 0, 7, 5), 3.0, 1),
                                                      ((4, 4, 5, 40), 1.5, 2)])
def test_linear_expansion_interpolates_between_the_samples_where_they_are(window, stride, channels):
    """upsample_linear: the value at each window pixel is the bilinear blend of the four samples around it,
    at the grid's own sample positions (the last one clamped into the window), edges repeated."""
    grid = Grid(window, stride)
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, grid.shape + ((channels,) if channels > 1 else ()), dtype=np.uint8)
    up = grid.upsample_linear(img)
    w, h = grid.size
    assert up.shape == (h, w) + img.shape[2:] and up.dtype == np.uint8
    sx, sy = grid.xs - window[0], grid.ys - window[1]
    f = img.reshape(grid.shape + (-1,)).astype(np.float64)
    cols = np.stack([np.stack([np.interp(np.arange(w), sx, f[r, :, c]) for c in range(f.shape[2])], -1)
                     for r in range(f.shape[0])])                              # (gh, w, C)
    ref = np.stack([np.stack([np.interp(np.arange(h), sy, cols[:, x, c]) for c in range(f.shape[2])], -1)
                    for x in range(w)], 1)                                      # (h, w, C)
    np.testing.assert_allclose(up.reshape(h, w, -1), ref, atol=0.51)           # float32 weights, rounded
    samples = np.rint(sy).astype(int)[:, None], np.rint(sx).astype(int)[None, :]
    on_samples = (np.abs(sy - np.rint(sy)) < 1e-9)[:, None] & (np.abs(sx - np.rint(sx)) < 1e-9)[None, :]
    assert np.array_equal(up.reshape(h, w, -1)[samples][on_samples], f.astype(np.uint8)[on_samples])



@pytest.mark.parametrize("window, stride", [((10, 20, 300, 250), 2.6), ((0, 0, 7, 5), 3.0), ((4, 4, 5, 40), 1.5)])
def test_nearest_expansion_gives_each_pixel_its_nearest_sample(window, stride):
    grid = Grid(window, stride)
    gh, gw = grid.shape
    ids = np.arange(gh * gw, dtype=np.int32).reshape(gh, gw)
    w, h = grid.size
    iy = np.abs(np.arange(h)[:, None] - (grid.ys - window[1])[None, :]).argmin(axis=1)   # brute force
    ix = np.abs(np.arange(w)[:, None] - (grid.xs - window[0])[None, :]).argmin(axis=1)
    sy, sx = grid.ys - window[1], grid.xs - window[0]
    tie_y = np.isclose(np.abs(np.arange(h) - sy[iy]), np.abs(np.arange(h) - sy[np.minimum(iy + 1, gh - 1)]))
    tie_x = np.isclose(np.abs(np.arange(w) - sx[ix]), np.abs(np.arange(w) - sx[np.minimum(ix + 1, gw - 1)]))
    iy[tie_y] = np.minimum(iy[tie_y] + 1, gh - 1)                                         # ties: the later one
    ix[tie_x] = np.minimum(ix[tie_x] + 1, gw - 1)
    assert np.array_equal(grid.upsample_nearest(ids), ids[iy][:, ix])
    mask = (ids % 3) == 0
    assert np.array_equal(grid.upsample_nearest(mask), mask[iy][:, ix])
    three = np.stack([ids, -ids, 2 * ids], -1).astype(np.float32)
    assert np.array_equal(grid.upsample_nearest(three), three[iy][:, ix])


# ------------------------------------------------------------------------------------------ appearance
def test_garment_regions_follow_the_skinning_weights(body):
    regions = body_regions(body.v_template.numpy(), body(betas=torch.zeros(1, 10)).joints[0].numpy(),
                           body.lbs_weights.numpy())
    rng = np.random.default_rng(5)
    for _ in range(10):
        app = sample_body_appearance(rng, regions)
        r = app.vertex_region
        assert len(app.materials) == len(REGION_NAMES)
        assert np.all(r[regions.leg >= 2.0] == SHOES)                 # feet
        assert np.all(r[regions.joint == 9] == TOP)                   # chest (spine3)
        assert np.all(r[regions.arm >= 2.0] == SKIN)                  # hands
        hand = regions.arm >= 2.0
        assert not np.any(r[hand] == BOTTOM)
        assert set(np.unique(r)) <= {SKIN, HAIR, TOP, BOTTOM, SHOES}
    m = Material(color=(0.2, 0.2, 0.2), color2=(0.8, 0.8, 0.8), pattern="stripes", scale_m=0.1)
    a = m.albedo(np.array([[0, 0.01, 0], [0, 0.06, 0], [0, 0.11, 0]]))
    np.testing.assert_allclose(a[:, 0], [0.8, 0.2, 0.8], atol=1e-6)   # period 10 cm, first half colour2


def test_procedural_patterns_have_their_known_values():
    p = np.array([[0.01, 0.0, 0.0], [0.11, 0.0, 0.0], [0.05, 0.05, 0.0], [0.15, 0.05, 0.0],
                  [0.002, 0.05, 0.0], [0.05, 0.05, 0.0]])
    c1, c2 = (0.2, 0.3, 0.4), (0.9, 0.8, 0.7)
    checker = Material(color=c1, color2=c2, pattern="checker", scale_m=0.1).albedo(p[:4])
    np.testing.assert_allclose(checker, [c1, c2, c1, c2], atol=1e-6)          # odd cells colour2
    tiles = Material(color=c1, color2=c2, pattern="tiles", scale_m=0.1).albedo(p[4:])
    np.testing.assert_allclose(tiles, [c2, c1], atol=1e-6)                      # grout within 4 % of an edge
    planks = Material(color=c1, color2=c2, pattern="planks", scale_m=0.1, axis=(1.0, 0.0, 0.0))
    x = np.linspace(0.0, 2.0, 4001)
    a = planks.albedo(np.c_[x, np.zeros((len(x), 2))])
    frac = np.mod(x / 0.1, 1.0)
    joint, board = (frac < 0.029) | (frac > 0.999), (frac > 0.031) & (frac < 0.998)   # (away from float rounding)
    np.testing.assert_allclose(a[joint], np.broadcast_to(c2, (joint.sum(), 3)), atol=1e-6)
    ratio = a[board] / np.asarray(c1, np.float32)               # per-plank shade x grain, same on all channels
    assert np.allclose(ratio, ratio[:, :1], atol=1e-5)
    assert ratio.min() >= 0.75 * 0.75 - 1e-6 and ratio.max() <= 1.25 + 1e-6
    assert len(np.unique(np.round(ratio[::40, 0], 3))) > 10    # planks differ
    noise = Material(color=c1, color2=c2, pattern="noise", waves=((30.0, 0.0, 0.0, 0.0),))
    np.testing.assert_allclose(noise.albedo(np.array([[np.pi / 60, 0, 0]]))[0], c2, atol=1e-5)   # sin = 1



def test_pattern_waves_are_sines():
    """The noise pattern's waves (a tabulated sine) match numpy's sine to 3e-7 over the phases the scenes
    reach, negative ones included, and the noise albedo matches the documented formula."""
    from training.synth import _kernels
    x = np.random.default_rng(0).uniform(-400.0, 400.0, 20000)
    x = np.r_[x, 0.0, np.pi / 2, -np.pi / 2, np.pi, 2 * np.pi, -1e-12]
    ours = np.array([_kernels.wave(v) for v in x])
    assert np.abs(ours - np.sin(x)).max() < 3e-7
    waves = ((12.0, -3.0, 5.0, 0.4), (-7.0, 20.0, 1.0, 2.0), (3.0, 3.0, -30.0, 5.9))
    c1, c2 = np.array([0.2, 0.3, 0.4]), np.array([0.9, 0.8, 0.7])
    noise = Material(color=tuple(c1), color2=tuple(c2), pattern="noise", waves=waves)
    p = np.random.default_rng(1).uniform(-3.0, 3.0, (500, 3)).astype(np.float32)
    w = np.asarray(waves)
    k = np.clip(np.sin(p.astype(np.float64) @ w[:, :3].T + w[:, 3]).mean(axis=1) * 0.5 * np.sqrt(3) + 0.5, 0, 1)
    np.testing.assert_allclose(noise.albedo(p), c1 * (1 - k[:, None]) + c2 * k[:, None], atol=2e-5)

def test_jpeg_roundtrip_is_a_real_jpeg_at_that_quality():
    """Same artefacts as OpenCV's libjpeg-turbo round trip (to a code level on average); lower quality
    loses more; shape, dtype and channel order kept."""
    import cv2
    yy, xx = np.mgrid[0:120, 0:200]
    img = np.stack([xx, yy * 2, (xx + yy) % 256], -1).astype(np.uint8)
    img[40:80, 60:140] = (0, 0, 230)                                     # a red block (BGR)
    img = np.ascontiguousarray(img + np.random.default_rng(0).integers(0, 12, img.shape).astype(np.uint8))
    for q in (40, 90):
        ours = jpeg_roundtrip(img, q)
        assert ours.shape == img.shape and ours.dtype == np.uint8
        ref = cv2.imdecode(cv2.imencode(".jpg", img, [int(cv2.IMWRITE_JPEG_QUALITY), q])[1], cv2.IMREAD_COLOR)
        assert np.abs(ours.astype(int) - ref).mean() < 1.0
        assert np.abs(ours.astype(int) - img).mean() > 0.5                # it did compress
        assert ours[60, 100, 2] > 200 and ours[60, 100, 0] < 60           # red stays red (BGR order)
    err = [np.abs(jpeg_roundtrip(img, q).astype(int) - img).mean() for q in (20, 60, 95)]
    assert err[0] > err[1] > err[2]


def test_color_sensor_noise_exposure_and_vignetting_follow_the_model():
    """A flat grey radiance through the sensor model: per-channel means = radiance x exposure x white
    balance (BGR order out), noise variance = shot x value + read^2, corners darkened by the vignette."""
    from training.synth.appearance import srgb_to_linear
    from training.synth.render import ColorSensorSpec, color_sensor_image
    h, w = 240, 320
    grid = Grid((0, 0, w, h), 1.0)
    linear = np.full((h, w, 3), 0.2, np.float32)
    spec = ColorSensorSpec(exposure=1.25, wb_gains=(1.1, 1.0, 0.8), read_noise=0.01, shot_noise=0.005, vignette=0.0,
                           blur_sigma_px=0.0, jpeg_quality=90)
    bgr = color_sensor_image(linear, spec, np.random.default_rng(0), grid, (w, h))
    lin = srgb_to_linear(bgr[..., ::-1] / 255.0)
    for c, gain in enumerate(np.array(spec.wb_gains) * spec.exposure):
        v = 0.2 * gain
        assert abs(lin[..., c].mean() - v) < 0.004
        assert abs(lin[..., c].std() - np.sqrt(spec.shot_noise * v + spec.read_noise ** 2)) < 0.004
    ideal = color_sensor_image(linear, None, None, grid, (w, h))
    assert np.all(ideal == ideal[0, 0]) and abs(srgb_to_linear(ideal[0, 0, 0] / 255.0) - 0.2) < 0.002
    spec_v = dataclasses.replace(spec, vignette=0.3, read_noise=0.0, shot_noise=0.0)
    lin_v = srgb_to_linear(color_sensor_image(linear, spec_v, np.random.default_rng(1), grid, (w, h))[..., 1] / 255.0)
    centre, corner = lin_v[h // 2 - 2:h // 2 + 2, w // 2 - 2:w // 2 + 2].mean(), lin_v[:3, :3].mean()
    assert abs(corner / centre - (1 - 0.15 * 2)) < 0.03                           # r^2 = 2 at the corner


# ------------------------------------------------------------------------------------------ scenes, labels
def test_person_attributes_equal_normals_and_albedo_computed_apart(engine):
    """SceneMesh's per-vertex people attributes = model.geometry.vertex_normals over the people's faces
    and appearance.albedo_of in each vertex's material (the last of its faces'), bit for bit."""
    from model.geometry import vertex_normals
    from training.synth.appearance import albedo_of
    for i in range(3):
        rng = sample_rng(31, i)
        scene = engine.sample_scene(rng)
        posed = engine.pose([scene])[0]
        cams = engine.cameras(scene.depth_mode, scene.color_resolution)
        soup = engine.soup(scene, posed, (np.zeros(3), cams.color_origin))
        mesh = SceneMesh(soup)
        smooth = soup.face_person >= 0
        pf = np.asarray(soup.faces)[smooth]
        want = np.zeros((len(soup.vertices), 6), np.float32)
        used = np.zeros(len(soup.vertices), bool)
        used[pf.ravel()] = True
        want[used, :3] = vertex_normals(soup.vertices, pf)[used]
        vmat = np.full(len(soup.vertices), -1, np.int64)
        for corner in range(3):
            vmat[pf[:, corner]] = soup.face_material[smooth]
        sel = np.flatnonzero(vmat >= 0)
        want[sel, 3:] = albedo_of(mesh.mat_table, mesh.mat_waves, vmat[sel], soup.texcoords[sel])
        assert used.any() and not used.all()  # people and a room
        np.testing.assert_array_equal(mesh.person_attr, want)


def test_scene_sampler_respects_its_ranges(engine):
    cfg = engine.config.scene
    for i in range(40):
        rng = sample_rng(11, i)
        scene = engine.sample_scene(rng)
        assert scene.depth_mode == "NFOV_2X2BINNED" and scene.color_resolution == "720P"
        assert cfg.sensor_height_m[0] <= scene.sensor.height_m <= cfg.sensor_height_m[1]
        d = float(np.hypot(*scene.target.floor_xz))
        assert cfg.distance_m[0] - 1e-9 <= d <= cfg.distance_m[1] + 1e-9
        assert np.all(np.abs(scene.target.betas) <= cfg.beta_clip)
        assert scene.room.contains_xz(scene.target.floor_xz, margin=0.3)
        # world -> camera is a rotation, and the sensor sits at (0, h, 0)
        R, t = scene.sensor.R_cw, scene.sensor.t_cw
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(-R.T @ t, [0, scene.sensor.height_m, 0], atol=1e-12)


def test_labels_reproduce_the_body_model_and_stand_on_the_floor(engine, body):
    scenes = [engine.sample_scene(sample_rng(2, i)) for i in range(6)]
    posed = engine.pose(scenes)
    for scene, people in zip(scenes, posed):
        p = people[0]
        out = body(betas=torch.tensor(p.betas[None], dtype=torch.float32),
                   body_pose=torch.tensor(p.theta[None, 3:], dtype=torch.float32),
                   global_orient=torch.tensor(p.theta[None, :3], dtype=torch.float32),
                   transl=torch.tensor(p.transl[None], dtype=torch.float32))
        np.testing.assert_allclose(out.joints[0].numpy(), p.joints, atol=2e-5)
        np.testing.assert_allclose(out.vertices[0].numpy(), p.vertices, atol=2e-5)
        np.testing.assert_allclose(out.lsp_joints[0].numpy(), p.lsp, atol=2e-5)
        world = (p.vertices - scene.sensor.t_cw) @ scene.sensor.R_cw      # camera -> world
        assert abs(world[:, 1].min()) < 1e-6                                 # lowest vertex on the floor
        pelvis = (p.joints[0] - scene.sensor.t_cw) @ scene.sensor.R_cw
        np.testing.assert_allclose(pelvis[[0, 2]], scene.target.floor_xz, atol=1e-6)


def full_frames(engine: SynthEngine, n: int, seed: int = 21):
    for i in range(n):
        rng = sample_rng(seed, i)
        scene = engine.sample_scene(rng)
        people = engine.pose([scene])[0]
        frame, _ = engine.render_frame(scene, people, rng, crop_only=False)
        yield frame


def test_sensor_depth_at_visible_joints_equals_gt_depth_within_the_noise_model(engine):
    """At every visible joint's pixel the ideal surface lies just in front of the joint, and the sensor
    reads that surface within 4 sigma + the systematic error + 1 mm quantisation, drops out, or (only
    next to a depth jump: the model's flying pixels) reads a mix of the two surfaces."""
    cfg = dataclasses.replace(engine.config.depth_sensor, depth_mode="NFOV_2X2BINNED")
    tol = engine.config.visibility_tolerance_m
    checked = strict = 0
    for f in full_frames(engine, 8):
        uv = f.joints2d_depth[f.joints_vis_depth]
        z_joint = f.person.joints[f.joints_vis_depth, 2]
        for (u, v), zj in zip(uv, z_joint):
            r, c = int(round(v)), int(round(u))
            ideal = float(f.depth_ideal_m[r, c])
            checked += 1
            if not f.mask[r, c]:        # the joint projects just beside its own silhouette
                continue
            measured = float(f.depth_mm[r, c])
            bound = 4 * float(noise_sigma_mm(ideal, cfg, reflectance=0.01)) + abs(float(systematic_error_mm(ideal, cfg))) + 1
            hood = f.depth_ideal_m[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2] * 1000
            if np.ptp(hood) > max(cfg.edge_threshold_m, cfg.edge_threshold_rel * ideal) * 1000 or (hood == 0).any():
                if measured:                                                  # flying pixel: a mix
                    assert hood[hood > 0].min() - bound <= measured <= hood.max() + bound
                continue
            strict += 1
            assert zj - tol - 0.01 <= ideal <= zj + 0.03, (ideal, zj)   # the surface just in front of the joint
            if measured:
                assert abs(measured - ideal * 1000) <= bound, (measured, ideal)
    assert checked >= 40 and strict >= 0.5 * checked


def test_masks_bboxes_and_visibility_agree_with_the_render(engine):
    for f in full_frames(engine, 6, seed=4):
        rows, cols = np.nonzero(f.mask)
        assert f.visible_px == len(rows) > 0
        np.testing.assert_allclose(f.bbox, [cols.min() - 0.5, rows.min() - 0.5, cols.max() + 0.5, rows.max() + 0.5])
        # the mask is exactly the pixels where the target is the first hit, and those are person depths
        z = f.depth_ideal_m[f.mask]
        zj = f.person.joints[:, 2]
        assert z.min() > zj.min() - 1.0 and z.max() < zj.max() + 1.0
        # visible joints project onto the mask, up to a pixel at the silhouette (the toy body's hand and
        # toe joints stick out of its boxes: a joint with nothing in front counts as visible too)
        on_mask = []
        for (u, v) in f.joints2d_depth[f.joints_vis_depth]:
            r, c = int(round(v)), int(round(u))
            on_mask.append(f.mask[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2].any())
        assert np.mean(on_mask) >= 0.85
        # and joints hidden behind something else are not visible: their ray's first hit is in front
        hidden = ~f.joints_vis_depth & np.isfinite(f.joints2d_depth).all(axis=1)
        for (u, v), zj in zip(f.joints2d_depth[hidden], f.person.joints[hidden, 2]):
            r, c = int(round(v)), int(round(u))
            if 0 <= r < f.mask.shape[0] and 0 <= c < f.mask.shape[1] and f.depth_ideal_m[r, c] > 0:
                assert f.depth_ideal_m[r, c] < zj + 0.05


def test_occluder_hides_the_legs_but_not_the_head(engine):
    """A 0.9 m high wall-like box between sensor and person: ankles and knees invisible, head visible."""
    rng = sample_rng(8, 0)
    scene = engine.sample_scene(rng)
    # a standing person facing the sensor, 2.5 m straight ahead, sensor 1.2 m high looking level
    from training.synth.poses import POSE_TEMPLATES, euler_to_theta
    theta = euler_to_theta(POSE_TEMPLATES["stand"])
    theta[:3] = [0.0, math.pi, 0.0]
    person = dataclasses.replace(scene.target, theta=theta, floor_xz=np.array([0.0, 2.5]))
    wall = Box(center=(0.0, 0.45, 1.6), size=(2.0, 0.9, 0.1), yaw=0.0, material=Material(color=(0.5, 0.4, 0.3)))
    room = dataclasses.replace(scene.room, x0=-4.0, x1=4.0, z0=-1.0, z1=6.0, yaw=0.0)
    scene = dataclasses.replace(scene, people=(person,), boxes=(wall,), room=room, sensor=sensor_pose(1.2, 8.0))
    frame, _ = engine.render_frame(scene, engine.pose([scene])[0], rng, crop_only=False)
    names = dict(pelvis=0, l_knee=4, r_knee=5, l_ankle=7, r_ankle=8, head=15, l_shoulder=16)
    vis = frame.joints_vis_depth
    assert not any(vis[names[k]] for k in ("l_knee", "r_knee", "l_ankle", "r_ankle"))
    assert vis[names["head"]] and vis[names["l_shoulder"]] and vis[names["pelvis"]]
    assert frame.lsp_vis_depth[13]                                           # head_top
    assert not frame.lsp_vis_depth[0] and not frame.lsp_vis_depth[5]         # ankles


def test_crop_only_rendering_is_identical_to_full_frames(body):
    """With the sensor models off and stride 1, the crop path renders exactly the full frame's pixels
    (depth window, color rectangle) and so gives a bit-identical aligned, cropped sample."""
    cfg = SynthConfig(out_size=96, scene=FAST_SCENE, depth_noise=False, color_noise=False, jpeg=False,
                      max_render_stride=1.0)
    eng = SynthEngine(body, cfg)
    for i in range(4):
        scene = eng.sample_scene(sample_rng(3, i))
        people = eng.pose([scene])[0]
        crop = eng.render_frame(scene, people, sample_rng(99, i), crop_only=True)
        if crop is None:
            continue
        fc, box = crop
        ff, _ = eng.render_frame(scene, people, sample_rng(99, i), crop_only=False)
        x0, y0, x1, y1 = fc.depth_window
        np.testing.assert_array_equal(fc.depth_mm[y0:y1, x0:x1], ff.depth_mm[y0:y1, x0:x1])
        cx0, cy0, cx1, cy1 = fc.color_window
        np.testing.assert_array_equal(fc.color_bgr[cy0:cy1, cx0:cx1], ff.color_bgr[cy0:cy1, cx0:cx1])
        aligner = eng.aligner(scene.depth_mode, scene.color_resolution)
        a_crop, _ = aligner(fc.color_bgr, fc.depth_mm)
        a_full, _ = aligner(ff.color_bgr, ff.depth_mm)
        from app.crop import crop_color
        np.testing.assert_array_equal(crop_color(a_crop, box), crop_color(a_full, box))
        np.testing.assert_array_equal(crop_depth(fc.depth_mm, box), crop_depth(ff.depth_mm, box))
        np.testing.assert_array_equal(crop_mask(fc.mask, box), crop_mask(ff.mask, box))


def test_training_samples_are_labelled_in_crop_pixels(engine):
    samples = engine.make_samples(5, range(6))
    for s in samples:
        S = engine.config.out_size
        assert s.rgb.shape == (S, S, 3) and s.rgb.dtype == np.uint8
        assert s.depth_mm.shape == (S, S) and s.depth_mm.dtype == np.uint16
        assert s.mask.shape == (S, S) and s.mask.any()
        x0, y0, side, out = s.crop_box
        assert out == S
        # the bbox maps to the crop's centre region (margin 1.25 +- jitter)
        b = (s.bbox.reshape(2, 2) - [x0, y0]) * S / side
        assert np.all(b[0] > -1) and np.all(b[1] < S + 1)
        assert 0.6 * S < max(b[1] - b[0]) < 0.9 * S
        # visible joints lie inside the crop, (nearly all) on or next to the crop mask
        near = []
        for (u, v) in np.concatenate([s.joints2d[s.joints_vis], s.lsp2d[s.lsp_vis]]):
            assert -0.5 <= u <= S - 0.5 and -0.5 <= v <= S - 0.5
            r, c = int(round(v)), int(round(u))
            near.append(s.mask[max(r - 2, 0):r + 3, max(c - 2, 0):c + 3].any())
        assert np.mean(near) >= 0.85
        # depth under the mask is the person's (within 1 m of the joints), color is not black there
        d = s.depth_mm[s.mask & (s.depth_mm > 0)] / 1000.0
        assert d.size and np.median(d) == pytest.approx(np.median(s.joints3d[:, 2]), abs=0.6)
        assert s.rgb[s.mask].mean() > 3


def test_the_first_window_estimate_projects_only_the_extreme_vertices(rig):
    """The crop's first window comes from the projected box of a body's extreme vertices (x / z, y / z):
    the same box as projecting every vertex, also when part of the body is outside the field of view."""
    from training.synth.sample import _projected_extremes
    rng = np.random.default_rng(4)
    for _ in range(60):
        p = rng.uniform([-1.5, -1.0, 1.0], [1.5, 1.0, 4.5]) + rng.normal(0, [0.3, 0.6, 0.2], (5000, 3))
        ref, ok = rig.depth.project_with_mask(p)
        got = _projected_extremes(rig.depth, p)
        assert len(got) < 200 or not ok.all()
        np.testing.assert_array_equal([got.min(0), got.max(0)], [ref[ok].min(0), ref[ok].max(0)])


def test_config_is_strict_and_round_trips():
    cfg = config_from_dict({"out_size": 128, "scene": {"occluder_prob": 0.5, "depth_modes": [["NFOV_UNBINNED", 1]]}})
    assert cfg.out_size == 128 and cfg.scene.occluder_prob == 0.5
    assert cfg.scene.depth_modes == (("NFOV_UNBINNED", 1.0),)
    assert config_from_dict(config_to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="did you mean 'occluder_prob'"):
        config_from_dict({"scene": {"occluder_prb": 0.2}})
    with pytest.raises(ValueError, match="unknown mode 'NFOV'"):
        config_from_dict({"scene": {"depth_modes": [["NFOV", 1.0]]}})
    with pytest.raises(ValueError, match="out_size"):
        SynthConfig(out_size=8)


def test_strided_crop_rendering_approximates_the_exact_crop(body):
    """Crops rendered on a coarser grid (the default for crops that downsample) agree with the exact
    render: same person mask (IoU), the same depths almost everywhere, similar colours."""
    base = dict(out_size=64, scene=FAST_SCENE, depth_noise=False, color_noise=False, jpeg=False, crop_jitter=0.0)
    exact = SynthEngine(body, SynthConfig(max_render_stride=1.0, **base))
    fast = SynthEngine(body, SynthConfig(max_render_stride=6.0, render_oversample=1.0, **base))
    strided = 0
    for i in range(6):
        scene = exact.sample_scene(sample_rng(12, i))
        people = exact.pose([scene])[0]
        a = exact.render_frame(scene, people, sample_rng(5, i), crop_only=True)
        b = fast.render_frame(scene, people, sample_rng(5, i), crop_only=True)
        if a is None or b is None:
            continue
        (fa, box_a), (fb, box_b) = a, b
        strided += fb.stride > 1
        assert box_b.side == pytest.approx(box_a.side, rel=0.06)
        ma, mb = crop_mask(fa.mask, box_a), crop_mask(fb.mask, box_a)
        assert (ma & mb).sum() / max((ma | mb).sum(), 1) > 0.75     # thin toy limbs, half a crop pixel apart
        da, db = crop_depth(fa.depth_mm, box_a).astype(float), crop_depth(fb.depth_mm, box_a).astype(float)
        both = (da > 0) & (db > 0)
        rel = np.abs(da - db)[both] / da[both]       # sloped walls change depth fast across half a block
        assert np.median(rel) < 0.01 and np.mean(rel < 0.05) > 0.9
    assert strided >= 2


@pytest.mark.skipif(not DEFAULT_BODY_PATH.is_file(), reason="open body asset not built yet")
def test_real_body_samples_have_joints_on_the_person():
    """With the real open body (joints inside the mesh): visible joints sit on the person's mask."""
    eng = SynthEngine(BodyModel.from_file(DEFAULT_BODY_PATH), SynthConfig(out_size=96, scene=FAST_SCENE))
    near, n_vis = [], 0
    for s in eng.make_samples(1, range(6)):
        for (u, v) in np.concatenate([s.joints2d[s.joints_vis], s.lsp2d[s.lsp_vis]]):
            r, c = int(round(v)), int(round(u))
            near.append(s.mask[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2].any())
        n_vis += int(s.joints_vis.sum())
    assert n_vis >= 40 and np.mean(near) >= 0.97


def test_crop_only_rendering_mostly_needs_one_depth_pass(engine, monkeypatch):
    """The first depth window already covers any jittered crop of the person's projected vertices, so a
    second (grown) depth pass is needed only when occlusion or the image edge shrinks the mask; the color
    rectangle is cut to the crop's own depth pixels (exactness: test_crop_only_rendering_is_identical...)."""
    import training.synth.sample as sample_mod
    calls = []
    real = sample_mod.render_depth

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(sample_mod, "render_depth", counting)
    frames = 0
    for i in range(12):
        scene = engine.sample_scene(sample_rng(21, i))
        people = engine.pose([scene])[0]
        n0 = len(calls)
        out = engine.render_frame(scene, people, sample_rng(22, i), crop_only=True)
        if out is None:
            continue
        frames += 1
        frame, box = out
        assert len(calls) - n0 <= 4
        # the color rectangle comes from the crop's depth pixels only: no larger than the one the whole
        # rendered depth window would need
        cams = engine.cameras(scene.depth_mode, scene.color_resolution)
        x0, y0, x1, y1 = frame.depth_window
        whole = engine._color_window(cams, frame.depth_mm[y0:y1, x0:x1], frame.depth_window)
        cx0, cy0, cx1, cy1 = frame.color_window
        assert whole[0] <= cx0 and whole[1] <= cy0 and cx1 <= whole[2] and cy1 <= whole[3]
        # the border sampled every 8 px bounds what every border pixel gives, to within a pixel of its pad
        every = engine._color_window(cams, frame.depth_mm[y0:y1, x0:x1], frame.depth_window, pad=2, step=1)
        assert whole[0] <= every[0] and whole[1] <= every[1] and every[2] <= whole[2] and every[3] <= whole[3]
    assert frames >= 6
    assert len(calls) <= 1.4 * frames + (12 - frames)



def test_a_finer_pass_over_a_shrunken_crop_keeps_the_whole_person(body, monkeypatch):
    """When occlusion or the image edge shrinks the crop below the first pass's stride, the finer pass
    renders only the crop's window: the person's whole visible mask (a full-frame exact render) still
    lies inside it, so the bbox label is the same to within the render stride."""
    import training.synth.sample as sample_mod
    windows = []
    real = sample_mod.render_depth

    def recording(mesh, cams, grid):
        windows.append(grid.window)
        return real(mesh, cams, grid)

    monkeypatch.setattr(sample_mod, "render_depth", recording)
    cfg = SynthConfig(out_size=64, scene=dataclasses.replace(FAST_SCENE, occluder_prob=0.9, out_of_frame_prob=0.5),
                      depth_noise=False, color_noise=False, jpeg=False)
    eng = SynthEngine(body, cfg)
    shrunk = 0
    for i in range(60):
        scene = eng.sample_scene(sample_rng(31, i))
        people = eng.pose([scene])[0]
        windows.clear()
        out = eng.render_frame(scene, people, sample_rng(32, i), crop_only=True)
        if out is None or len(windows) < 2 or sample_mod._contains(windows[1], windows[0]):
            continue
        shrunk += 1
        frame, box = out
        full, _ = eng.render_frame(scene, people, sample_rng(32, i), crop_only=False)
        rows, cols = np.flatnonzero(full.mask.any(axis=1)), np.flatnonzero(full.mask.any(axis=0))
        x0, y0, x1, y1 = frame.depth_window
        assert x0 <= cols[0] and cols[-1] < x1 and y0 <= rows[0] and rows[-1] < y1
        np.testing.assert_allclose(frame.bbox, [cols[0] - 0.5, rows[0] - 0.5, cols[-1] + 0.5, rows[-1] + 0.5],
                                   atol=frame.stride + 1)
        if shrunk == 3:
            break
    assert shrunk >= 1
    # a mask cut by a window side inside the image is seen (sides on the image's edge are not cuts)
    mask = np.zeros((10, 12), bool)
    mask[4, 0] = True
    assert sample_mod._reaches_inner_edge(mask, (5, 5, 17, 15), 100, 100)
    assert not sample_mod._reaches_inner_edge(mask, (0, 5, 12, 15), 100, 100)
    mask[:] = False
    mask[3:7, 2:9] = True
    assert not sample_mod._reaches_inner_edge(mask, (5, 5, 17, 15), 100, 100)

@pytest.mark.parametrize("mode", ["WFOV_2X2BINNED", "NFOV_UNBINNED"])
def test_sampled_border_bounds_the_color_window_of_every_border_pixel(mode):
    """The color rectangle from every 8th border pixel (plus the ends of valid runs: the wide field of
    view's rim cuts windows) contains the one from every border pixel with one pixel less padding."""
    cams = rig_cameras(load_rig(str(DEFAULT_CALIBRATION), mode, "1080P"))
    W, H = cams.rig.depth.size
    rng = np.random.default_rng(4)
    checked = 0
    for _ in range(40):
        x0, y0 = int(rng.integers(0, W - 20)), int(rng.integers(0, H - 20))
        x1, y1 = int(rng.integers(x0 + 10, min(W, x0 + 300) + 1)), int(rng.integers(y0 + 10, min(H, y0 + 300) + 1))
        depth = rng.integers(600, 4000, (y1 - y0, x1 - x0)).astype(np.uint16)
        every = SynthEngine._color_window(cams, depth, (x0, y0, x1, y1), pad=2, step=1)
        sampled = SynthEngine._color_window(cams, depth, (x0, y0, x1, y1))
        assert (every is None) == (sampled is None)
        if every is None:
            continue
        checked += 1
        assert sampled[0] <= every[0] and sampled[1] <= every[1] and every[2] <= sampled[2] and every[3] <= sampled[3]
    assert checked >= 20



def test_static_triangles_are_closed_outward_boxes_with_metric_texture_coordinates(engine):
    """Each box is 6 quads whose corners are the box's 8 corners (centre + yawed half extents), all wound
    the same way (normals (b - a) x (c - a) point inward: the renderers turn normals toward the ray) and
    with (u, v) in metres along the face; the room's floor is y = 0."""
    from training.synth.scene import OBJ_FURNITURE, static_triangles, yaw_matrix
    seen = 0
    for i in range(6):
        scene = engine.sample_scene(sample_rng(8, i))
        soup = static_triangles(scene)
        assert soup.num_faces == 2 * (6 + 6 * len(scene.boxes))
        assert np.allclose(soup.vertices[:4, 1], 0.0)                          # floor
        for k, box in enumerate(scene.boxes):
            seen += 1
            q0 = 6 + 6 * k                                                       # quads before: the room's 6
            v = soup.vertices[4 * q0:4 * (q0 + 6)].reshape(6, 4, 3)
            uv = soup.texcoords[4 * q0:4 * (q0 + 6), :2].reshape(6, 4, 2)
            half = np.asarray(box.size) / 2
            signs = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T
            expected = (signs * half) @ yaw_matrix(box.yaw).T + np.asarray(box.center)
            got = np.unique(np.round(v.reshape(-1, 3), 9), axis=0)
            assert np.allclose(np.sort(got, axis=0), np.sort(np.round(expected, 9), axis=0), atol=1e-9)
            n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
            assert np.all(np.einsum("qi,qi->q", n, v.mean(axis=1) - np.asarray(box.center)) < 0)
            edges3 = np.linalg.norm(np.diff(v, axis=1), axis=2)
            edges2 = np.linalg.norm(np.diff(uv, axis=1), axis=2)
            assert np.allclose(edges3, edges2)
            f = slice(2 * q0, 2 * (q0 + 6))
            assert np.all(soup.face_object[f] == OBJ_FURNITURE)
            assert all(soup.materials[m] is box.material for m in soup.face_material[f])
    assert seen >= 3


# ------------------------------------------------------------------------------------------ speed paths
def test_strided_take_equals_rows_then_columns_interpolation(rig):
    """The grid-resolution gather of `Grid.take` gives bit for bit what interpolating whole table rows,
    then columns, gives (the straightforward reference), for float ray tables and bool validity."""
    cams = rig_cameras(load_rig(str(DEFAULT_CALIBRATION), "WFOV_2X2BINNED", "720P"))
    for window, stride in (((0, 0, 512, 512), 1.77), ((33, 41, 300, 297), 2.6), ((5, 7, 60, 30), 4.0)):
        grid = Grid(window, stride)
        xs, ys = grid.xs, grid.ys
        iy = np.clip(np.floor(ys).astype(np.int64), 0, 510)
        ix = np.clip(np.floor(xs).astype(np.int64), 0, 510)
        fy = (ys - iy).astype(np.float32)[:, None, None]
        fx = (xs - ix).astype(np.float32)[None, :, None]
        table = cams.depth.xy
        rows = table[iy] * (np.float32(1) - fy) + table[iy + 1] * fy
        ref = rows[:, ix] * (np.float32(1) - fx) + rows[:, ix + 1] * fx
        got = grid.take(table)
        assert got.dtype == np.float32 and got.shape == grid.shape + (2,)
        assert np.array_equal(got, ref)
        v = cams.depth.valid
        ref_valid = v[iy][:, ix] & v[iy][:, ix + 1] & v[iy + 1][:, ix] & v[iy + 1][:, ix + 1]
        assert np.array_equal(grid.take(v), ref_valid)
    assert 0.2 < Grid((0, 0, 512, 512), 1.77).take(cams.depth.valid).mean() < 0.95   # the FOV rim is in it


def test_lambertian_shading_of_a_patterned_plane_has_known_values(rig):
    """render_color of a striped plane facing the color camera: each pixel is albedo(texcoord) x
    (ambient + light colour x cos), with the normal turned to face the camera whichever way the
    triangles wind, so a plane and its mirror-wound copy render identically."""
    cams = rig_cameras(rig)
    mat = Material(color=(0.8, 0.2, 0.1), color2=(0.1, 0.3, 0.9), pattern="stripes", scale_m=0.25,
                   axis=(1.0, 0.0, 0.0))
    corners = np.array([[-9, -9, 2.0], [9, -9, 2.0], [9, 9, 2.0], [-9, 9, 2.0]])
    plane = quad(corners, mat)
    plane = dataclasses.replace(plane, texcoords=corners.copy())            # texcoord = position
    flipped = dataclasses.replace(plane, faces=plane.faces[:, ::-1].copy())
    sensor = sensor_pose(height_m=1.0, pitch_deg=20.0, roll_deg=0.0)
    towards_camera = -sensor.R_cw[2] * 0.8 + sensor.R_cw[0] * 0.6      # world direction; cos 0.8 on the plane
    light = Lighting(directions=towards_camera[None], colors=np.array([[0.5, 0.5, 0.5]]),
                     ambient=np.array([0.1, 0.1, 0.1]))
    win = (500, 300, 780, 420)
    a = render_color(SceneMesh(plane), cams, light, sensor, win)
    b = render_color(SceneMesh(flipped), cams, light, sensor, win)
    np.testing.assert_allclose(a.linear, b.linear, atol=1e-6)
    cos = 0.8                                                               # facing normal is -z (camera)
    x = a.linear.reshape(-1, 3)
    stripe = np.isclose(x, np.float32(mat.color) * np.float32(0.1 + 0.5 * cos), atol=1e-5).all(axis=1)
    stripe2 = np.isclose(x, np.float32(mat.color2) * np.float32(0.1 + 0.5 * cos), atol=1e-5).all(axis=1)
    assert stripe.mean() > 0.3 and stripe2.mean() > 0.3 and (stripe | stripe2).all()


def test_coarser_color_rays_change_only_the_color_and_boundedly(body):
    """color_oversample < 1 casts fewer color rays: depth, masks, crop boxes and every label stay
    identical; the clean (noise-free) color crop differs from the reference path by a small mean
    absolute difference (edges and texture a little softer)."""
    base = dict(out_size=96, scene=FAST_SCENE, color_noise=False, jpeg=False)
    ref = SynthEngine(body, SynthConfig(**base)).make_samples(3, range(6))
    fast = SynthEngine(body, SynthConfig(color_oversample=0.7, **base)).make_samples(3, range(6))
    for a, b in zip(ref, fast):
        for name in ("depth_mm", "mask", "crop_box", "bbox", "joints2d", "lsp2d", "joints_vis", "lsp_vis",
                     "joints3d", "theta", "betas", "transl"):
            assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
    d = np.abs(np.stack([a.rgb for a in ref]).astype(float) - np.stack([b.rgb for b in fast]).astype(float))
    assert d.max() > 0                   # it does render differently ...
    assert d.mean() < 2.5 and np.mean(d > 32) < 0.02, (d.mean(), np.mean(d > 32))   # ... but close
    with pytest.raises(ValueError, match="color_oversample"):
        SynthConfig(color_oversample=0.1)
