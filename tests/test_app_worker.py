"""app.localize, app.placement, app.smoothing and app.worker on known scenes.

Depth images are ray-cast analytically here through the calibrated, distorted ray table of the team's
default Kinect (NFOV 2x2 binned): a floor, a back wall, box "people" and a table, so every pixel's
object (and so the true person box) is known. The worker runs a real random-weight `lite` model
exported once per test session (`training.export`) in ONNX Runtime; nothing in the pipeline is mocked.
"""
from __future__ import annotations

import math
import queue
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from app.crop import CropBox, box_around
from app.frames import RgbdFrame, SourceError, StreamStatus
from app.localize import LocalizeConfig, PersonLocalizer
from app.mailbox import LatestFrameMailbox
from app.placement import (PlacementConfig, place_body, translation_from_crop, visible_surface_depth,
                           weak_perspective_to_translation)
from app.results import InputMode
from app.smoothing import (BodySmoother, OneEuroFilter, OneEuroParams, SmoothingConfig, axis_angle_to_quaternion,
                           quaternion_to_axis_angle)
from app.worker import InferenceWorker, WorkerConfig
from calibration import default_rig
from calibration.intrinsics import CameraIntrinsics

RIG = default_rig("NFOV_2X2BINNED", "720P")
CAM = RIG.depth
CAM_HEIGHT = 1.2
PITCH_DEG = 8.0


# ====================================================================================== scenes
@dataclass
class Box:
    """Axis-aligned box in the world (Y up, floor y = 0), metres; `obj` labels its pixels."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    obj: int


def person(x: float, z: float, obj: int = 10, height: float = 1.75) -> Box:
    """A 0.45 m wide, 0.3 m deep box person standing at world (x, z)."""
    return Box((x - 0.225, 0.0, z - 0.15), (x + 0.225, height, z + 0.15), obj)


def camera_axes(pitch_deg: float = PITCH_DEG) -> np.ndarray:
    """(3, 3) columns = camera x (right), y (down), z (forward) in world coordinates; pitched down."""
    p = math.radians(pitch_deg)
    return np.array([[-1.0, 0.0, 0.0], [0.0, -math.cos(p), -math.sin(p)], [0.0, -math.sin(p), math.cos(p)]]).T


def render(boxes: list[Box], floor: bool = True, wall_z: float | None = 6.0, pitch_deg: float = PITCH_DEG,
           cam: CameraIntrinsics = CAM) -> tuple[np.ndarray, np.ndarray]:
    """-> (depth (H, W) uint16 mm, object id (H, W) int: 0 none, 1 floor, 2 wall, box.obj)."""
    xy, ok = cam.xy_table()
    axes = camera_axes(pitch_deg)
    d = xy[..., 0:1] * axes[:, 0] + xy[..., 1:2] * axes[:, 1] + axes[:, 2]  # world ray per pixel, z_cam = 1
    o = np.array([0.0, CAM_HEIGHT, 0.0])
    t = np.full(ok.shape, np.inf)
    ids = np.zeros(ok.shape, int)
    with np.errstate(divide="ignore", invalid="ignore"):
        if floor:
            tf = np.where(d[..., 1] < 0, -o[1] / d[..., 1], np.inf)
            ids = np.where(tf < t, 1, ids)
            t = np.minimum(t, tf)
        if wall_z is not None:
            tw = np.where(d[..., 2] > 0, (wall_z - o[2]) / d[..., 2], np.inf)
            ids = np.where(tw < t, 2, ids)
            t = np.minimum(t, tw)
        for b in boxes:
            lo, hi = np.array(b.lo), np.array(b.hi)
            t1, t2 = (lo - o) / d, (hi - o) / d
            near = np.nanmax(np.minimum(t1, t2), axis=-1)
            far = np.nanmin(np.maximum(t1, t2), axis=-1)
            hit = (near <= far) & (near > 0)
            tb = np.where(hit, near, np.inf)
            ids = np.where(tb < t, b.obj, ids)
            t = np.minimum(t, tb)
    valid = ok & np.isfinite(t) & (t < 10.0)
    depth = np.where(valid, np.rint(t * 1000.0), 0).astype(np.uint16)
    return depth, np.where(valid, ids, 0)


def bbox_of(mask: np.ndarray) -> np.ndarray:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0] - 0.5, rows[0] - 0.5, cols[-1] + 0.5, rows[-1] + 0.5])


TABLE = Box((-2.2, 0.0, 3.0), (-1.0, 0.75, 3.8), 20)


# ====================================================================================== localize
def test_floor_and_person_box_match_the_ground_truth():
    depth, ids = render([person(0.3, 3.0), TABLE])
    loc = PersonLocalizer(CAM)
    det = loc(depth)
    assert det is not None and det.n_candidates == 1 and not det.tracked
    truth = ids == 10
    iou = np.count_nonzero(det.mask & truth) / np.count_nonzero(det.mask | truth)
    assert iou > 0.96
    np.testing.assert_allclose(det.bbox, bbox_of(truth), atol=2.0)  # the lowest 2 cm count as floor
    p = math.radians(PITCH_DEG)
    np.testing.assert_allclose(det.floor.normal, [0.0, -math.cos(p), -math.sin(p)], atol=2e-3)
    assert det.floor.d == pytest.approx(CAM_HEIGHT, abs=0.005)
    assert det.top_m == pytest.approx(1.75, abs=0.03)
    assert det.centroid[2] == pytest.approx(2.85, abs=0.12)  # front face of the box (it leans back 8 deg)
    assert det.area_m2 == pytest.approx(0.45 * 1.75, rel=0.25)  # front face (+ the top seen from above)


def test_nearest_and_central_wins_then_the_track_follows_its_person():
    near_side, far_centre = 10, 11
    depth, ids = render([person(1.0, 2.6, near_side), person(0.0, 3.6, far_centre)])
    loc = PersonLocalizer(CAM)
    det = loc(depth)
    assert det.n_candidates == 2
    np.testing.assert_allclose(det.bbox, bbox_of(ids == near_side), atol=2.0)
    # the chosen person walks back past the other one: the track keeps it although it is now worse by cost
    for z in (2.9, 3.2, 3.5, 3.8, 4.1):
        depth, ids = render([person(1.0, z, near_side), person(0.0, 3.6, far_centre)])
        det = loc(depth)
        assert det.tracked
        np.testing.assert_allclose(det.bbox, bbox_of(ids == near_side), atol=2.0)
    # a fresh localiser (no track) picks by cost again: the central one, now nearer
    det = PersonLocalizer(CAM)(depth)
    np.testing.assert_allclose(det.bbox, bbox_of(ids == far_centre), atol=2.0)


def test_prior_from_the_previous_mesh_selects_that_person():
    depth, ids = render([person(1.0, 2.6, 10), person(-0.6, 3.6, 11)])
    loc = PersonLocalizer(CAM)
    rows, cols = np.nonzero(ids == 11)
    pelvis = CAM.unproject(np.array([cols.mean(), rows.mean()]), depth[ids == 11].mean() / 1000.0 + 0.1)
    det = loc(depth, prior_xyz=pelvis)
    assert det.tracked
    np.testing.assert_allclose(det.bbox, bbox_of(ids == 11), atol=2.0)


def test_tables_walls_and_empty_frames_are_not_people():
    loc = PersonLocalizer(CAM)
    depth, _ = render([TABLE])
    assert loc(depth) is None
    assert loc.floor is not None  # the floor was still found
    assert loc(np.zeros((CAM.height, CAM.width), np.uint16)) is None
    low_box = Box((-0.3, 0.0, 2.5), (0.3, 0.5, 2.9), 30)  # knee-high box
    assert loc(render([low_box])[0]) is None


def test_person_without_a_visible_floor():
    depth, ids = render([Box((-0.2, 0.0, 2.5), (0.25, 1.8, 2.8), 10)], floor=False)
    det = PersonLocalizer(CAM)(depth)
    assert det is not None and det.floor is None
    np.testing.assert_allclose(det.bbox, bbox_of(ids == 10), atol=2.0)


def test_localizer_rejects_bad_depth_with_a_clear_message():
    loc = PersonLocalizer(CAM)
    with pytest.raises(ValueError, match="uint16 array in millimetres, got float32"):
        loc(np.zeros((CAM.height, CAM.width), np.float32))
    with pytest.raises(ValueError, match=r"is 640x576 but the depth camera is 320x288"):
        loc(np.zeros((576, 640), np.uint16))
    with pytest.raises(ValueError, match="stride"):
        LocalizeConfig(stride=0)


# ====================================================================================== placement
def test_numpy_weak_perspective_translation_equals_the_torch_one():
    from model.camera import weak_perspective_to_translation as torch_version

    rng = np.random.default_rng(0)
    cam = np.column_stack([rng.uniform(-0.2, 1.5, 64), rng.normal(0, 0.3, 64), rng.normal(0, 0.3, 64)])
    cam[:4, 0] = [0.0, -1.0, 1e-12, 0.5]  # clamped scales included
    focal, crop = rng.uniform(200, 1000, 64), rng.uniform(64, 600, 64)
    for dtype in (np.float32, np.float64):
        ours = weak_perspective_to_translation(cam.astype(dtype), focal.astype(dtype), crop.astype(dtype))
        ref = torch_version(torch.tensor(cam.astype(dtype)), torch.tensor(focal.astype(dtype)),
                            torch.tensor(crop.astype(dtype))).numpy()
        assert ours.dtype == dtype
        np.testing.assert_allclose(ours, ref, rtol=1e-6 if dtype == np.float32 else 1e-12)
    ours = weak_perspective_to_translation(cam[4:6], 500.0, 224.0)  # scalar focal and crop
    ref = torch_version(torch.tensor(cam[4:6]), 500.0, 224.0).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    assert weak_perspective_to_translation(np.array([[2.0, 0.4, -0.2]]), 500.0, 250.0).tolist() == [[0.2, -0.1, 2.0]]


PINHOLE = CameraIntrinsics(width=640, height=576, fx=504.0, fy=504.0, cx=320.0, cy=288.0)


def body_points(n: int = 2000, seed: int = 0) -> np.ndarray:
    """A person-sized point set (metres, camera axes, origin at its centre): 0.5 x 1.7 x 0.3 m."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.5, 0.5, (n, 3)) * np.array([0.5, 1.7, 0.3])


def fit_weak_camera(points: np.ndarray, box: CropBox, camera: CameraIntrinsics, T: np.ndarray) -> np.ndarray:
    """Least-squares (s, tx, ty) mapping points' (X, Y) to their pinhole projections (normalised crop coords)."""
    uv = camera.project(points + T)
    xn = box.source_to_normalized(uv)
    A = np.zeros((2 * len(points), 3))
    A[0::2, 0], A[0::2, 1] = points[:, 0], 1.0
    A[1::2, 0], A[1::2, 2] = points[:, 1], 1.0
    return np.linalg.lstsq(A, xn.reshape(-1), rcond=None)[0]


@pytest.mark.parametrize("T", [(0.0, 0.0, 3.0), (1.2, -0.3, 3.5), (-0.8, 0.5, 2.2)])
def test_translation_from_an_off_centre_crop_lands_on_the_person(T):
    T = np.array(T)
    pts = body_points()
    uv = PINHOLE.project(pts + T)
    box = box_around((*uv.min(axis=0), *uv.max(axis=0)), 128, 1.25)
    cam = fit_weak_camera(pts, box, PINHOLE, T)
    est = translation_from_crop(cam, box, PINHOLE)
    # weak perspective ignores the body's depth relief (0.3 m at 2-3.5 m) and the off-axis foreshortening
    assert est[2] == pytest.approx(T[2], rel=0.03)
    np.testing.assert_allclose(est[:2], T[:2], atol=0.03 * T[2])
    # image position: the body's centre projects where the weak camera put it
    np.testing.assert_allclose(PINHOLE.project(est), box.normalized_to_source(cam[1:]), atol=1.0)


def test_centred_crop_reduces_to_the_centred_formula():
    box = CropBox(x0=PINHOLE.cx - 100.0, y0=PINHOLE.cy - 100.0, side=200.0, out_size=128)
    cam = np.array([0.8, 0.05, -0.1])
    np.testing.assert_allclose(translation_from_crop(cam, box, PINHOLE),
                               weak_perspective_to_translation(cam[None], PINHOLE.fx, 200.0)[0], rtol=1e-12)


def test_refinement_puts_the_visible_surface_at_the_observed_depth():
    T = np.array([0.4, 0.1, 3.0])
    pts = body_points(4000)
    uv = PINHOLE.project(pts + T)
    box = box_around((*uv.min(axis=0), *uv.max(axis=0)), 128, 1.25)
    cam = fit_weak_camera(pts, box, PINHOLE, T)
    cam_wrong = cam * np.array([1.25, 1.0, 1.0])  # the network misjudges the size: 20 % too near
    observed = visible_surface_depth(pts + T, PINHOLE)
    assert observed == pytest.approx(T[2] - 0.15, abs=0.01)  # the front face of the 0.3 m deep body
    weak = place_body(pts, cam_wrong, box, PINHOLE, observed_depth_m=None)
    assert not weak.refined and weak.transl[2] == pytest.approx(T[2] / 1.25, rel=0.03)
    placed = place_body(pts, cam_wrong, box, PINHOLE, observed_depth_m=observed)
    assert placed.refined
    assert placed.transl[2] == pytest.approx(T[2], abs=0.01)
    assert visible_surface_depth(pts + placed.transl, PINHOLE) == pytest.approx(observed, abs=0.005)
    ray = placed.transl / np.linalg.norm(placed.transl)  # scaled along its own ray: same image position
    np.testing.assert_allclose(ray, weak.transl / np.linalg.norm(weak.transl), atol=1e-12)
    assert placed.depth_correction_m == pytest.approx(placed.transl[2] - weak.transl[2])
    # a negative scale from a bad frame is clamped, never flips the body behind the camera
    flipped = place_body(pts, np.array([-0.5, 0.0, 0.0]), box, PINHOLE, observed_depth_m=observed)
    assert flipped.transl[2] == pytest.approx(T[2], abs=0.05)
    assert place_body(pts, cam, box, PINHOLE, observed, PlacementConfig(refine_depth=False)).refined is False


# ====================================================================================== smoothing
def test_one_euro_known_values_restart_and_shared_speed():
    f = OneEuroFilter(OneEuroParams(min_cutoff=1.0, beta=0.0, d_cutoff=1.0))
    assert f(np.array([1.0]), 0.0).tolist() == [1.0]               # first sample passes
    alpha = 1.0 / (1.0 + 30.0 / (2.0 * math.pi))                   # 1 Hz cutoff at 30 fps
    assert f(np.array([2.0]), 1 / 30)[0] == pytest.approx(1.0 + alpha)
    assert f.alpha == pytest.approx(alpha)
    assert f(np.array([5.0]), 1 / 30)[0] == 5.0                    # repeated timestamp: restart
    assert f(np.array([7.0]), 1 / 30 + 1.0)[0] == 7.0              # gap > max_gap_s: restart
    flat = OneEuroFilter(OneEuroParams(1.0, 0.5))
    assert all(flat(np.full(3, 0.7), k / 30).tolist() == [0.7] * 3 for k in range(10))
    # beta raises the cutoff with speed: a ramp lags less
    slow, fast = OneEuroFilter(OneEuroParams(1.0, 0.0)), OneEuroFilter(OneEuroParams(1.0, 1.0))
    for k in range(30):
        a, b = slow(np.array([k / 30.0]), k / 30), fast(np.array([k / 30.0]), k / 30)
    assert 29 / 30 - a[0] > 2 * (29 / 30 - b[0])
    # shared: one alpha for all elements, set by the fastest
    shared, each = OneEuroFilter(OneEuroParams(1.0, 1.0), shared=True), OneEuroFilter(OneEuroParams(1.0, 1.0))
    for k in range(5):
        x = np.array([0.0, k * 0.5])
        shared(x, k / 30), each(x, k / 30)
    assert np.ndim(shared.alpha) == 0 and shared.alpha == pytest.approx(np.max(each.alpha))
    with pytest.raises(ValueError, match="min_cutoff > 0"):
        OneEuroParams(min_cutoff=0.0)


def test_quaternion_round_trip_matches_scipy():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(1)
    aa = np.concatenate([rng.normal(0, 1.5, (500, 3)), [[0, 0, 0], [math.pi, 0, 0], [1e-9, 0, 0]]])
    q = axis_angle_to_quaternion(aa)
    ref = Rotation.from_rotvec(aa).as_quat()[:, [3, 0, 1, 2]]
    np.testing.assert_allclose(np.abs(np.sum(q * ref, axis=1)), 1.0, atol=1e-12)
    back = quaternion_to_axis_angle(q)
    np.testing.assert_allclose(Rotation.from_rotvec(back).as_matrix(), Rotation.from_rotvec(aa).as_matrix(), atol=1e-9)


def test_body_smoother_reduces_jitter_and_handles_the_pi_flip():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(2)
    sm = BodySmoother(SmoothingConfig())
    V = np.zeros((5, 3))
    J = np.zeros((24, 3))
    out_t, errors = [], []
    for k in range(60):
        theta = np.zeros(72)
        # root turning slowly through 180 deg about y: axis-angle jumps from (0, ~pi, 0) to (0, ~-pi, 0)
        angle = math.pi - 0.05 + 0.1 * k / 59
        theta[:3] = Rotation.from_euler("y", angle).as_rotvec()
        transl = np.array([0.0, 0.0, 3.0]) + rng.normal(0, 0.01, 3)
        s = sm(k / 30, theta, np.zeros(10), transl, V + k, J)
        out_t.append(s.transl)
        err = Rotation.from_rotvec(s.theta[:3]) * Rotation.from_euler("y", angle).inv()
        errors.append(err.magnitude())
    assert max(errors) < 0.05  # never swings through the identity
    assert np.std(np.array(out_t)[10:, 0]) < 0.5 * 0.01
    off = BodySmoother(SmoothingConfig(enabled=False))
    theta = rng.normal(0, 0.3, 72)
    np.testing.assert_array_equal(off(0.0, theta, np.ones(10), np.ones(3), V, J).theta, theta)


# ====================================================================================== worker
needs_model = pytest.mark.slow  # the first test to use the model exports it (~30 s CPU, once per session)


@pytest.fixture(scope="module")
def session(lite_model):
    from app.runtime import InferenceSession

    return InferenceSession(lite_model, providers=("cpu",))


class RecordingSession:
    """The real session, recording what the worker feeds it (inputs are checked, outputs untouched):
    calls (rgb, depth, ref, mask), inits (the warm-start keywords, {} = the mean) and outputs."""

    def __init__(self, inner):
        self.inner, self.input_size, self.warm_start = inner, inner.input_size, inner.warm_start
        self.calls, self.inits, self.outputs = [], [], []

    def run(self, rgb, depth, ref_depth, stream_mask, **init):
        self.calls.append((rgb.copy(), depth.copy(), np.array(ref_depth), np.array(stream_mask)))
        self.inits.append({k: np.array(v) for k, v in init.items()})
        out = self.inner.run(rgb, depth, ref_depth, stream_mask, **init)
        self.outputs.append({k: np.array(v) for k, v in out.items()})
        return out


COLOR = np.dstack([np.tile(np.linspace(0, 255, 1280, dtype=np.uint8), (720, 1)),
                   np.tile(np.linspace(255, 0, 720, dtype=np.uint8)[:, None], (1, 1280)),
                   np.full((720, 1280), 90, np.uint8)])
SCENE = render([person(0.3, 3.0), TABLE])
EMPTY = render([TABLE])


def frame(i: int, depth: np.ndarray | None = SCENE[0], color: np.ndarray | None = COLOR,
          color_status: StreamStatus | None = None, depth_status: StreamStatus | None = None) -> RgbdFrame:
    cs = color_status or (StreamStatus.OK if color is not None else StreamStatus.MISSING)
    ds = depth_status or (StreamStatus.OK if depth is not None else StreamStatus.MISSING)
    return RgbdFrame(i, 1_000_000 + i * 33_333, color, depth, RIG, "test", cs, ds)


@needs_model
def test_rgbd_frame_gives_a_body_on_the_point_cloud(session):
    rec = RecordingSession(session)
    w = InferenceWorker(rec, config=WorkerConfig(smoothing=SmoothingConfig(enabled=False)))
    r = w.process(frame(0))
    assert r.mode is InputMode.RGBD and r.requested_mode == "auto" and r.message == ""
    assert set(r.timings_ms) == {"capture", "align", "crop", "infer", "post"}
    b = r.body
    V = session.contract.body_num_vertices
    assert b.vertices.shape == (V, 3) and b.joints.shape == (24, 3) and b.theta.shape == (72,)
    np.testing.assert_allclose(b.bbox, bbox_of(SCENE[1] == 10), atol=2.0)
    rgb, depth, ref, mask = rec.calls[0]
    assert rgb.shape == (1, 3, 128, 128) and rgb.dtype == np.uint8 and rgb.any()
    assert depth.shape == (1, 1, 128, 128) and depth.dtype == np.float32
    truth = SCENE[0][SCENE[1] == 10] / 1000.0
    assert float(ref[0]) == pytest.approx(np.median(truth), abs=0.01)   # person median depth, metres
    assert mask.tolist() == [[True, True]]
    # metric placement: the mesh's visible surface sits at the observed depth of the person
    assert visible_surface_depth(b.vertices, CAM) == pytest.approx(float(ref[0]), abs=0.02)
    np.testing.assert_allclose(b.vertices.mean(axis=0) - b.transl, np.asarray(
        session.run(*[c[0] for c in rec.calls[0]])["vertices"][0]).mean(axis=0), atol=1e-4)


@needs_model
def test_a_dropped_stream_is_fed_as_zeros_on_exactly_those_frames(session):
    rec = RecordingSession(session)
    w = InferenceWorker(rec, config=WorkerConfig(restore_after=2))
    seq = [frame(0), frame(1, color=None), frame(2, color=None), frame(3), frame(4), frame(5),
           frame(6, depth=None), frame(7), frame(8)]
    results = [w.process(f) for f in seq]
    # the fallback starts on the first frame without the stream; a returning stream is used again after
    # restore_after (2) good frames, so a flickering stream cannot thrash the mode
    assert [r.mode.value for r in results] == ["rgbd", "depth", "depth", "depth", "rgbd", "rgbd", "rgb", "rgb",
                                               "rgbd"]
    assert [c[3].tolist()[0] for c in rec.calls] == [[True, True], [False, True], [False, True], [False, True],
                                                     [True, True], [True, True], [True, False], [True, False],
                                                     [True, True]]
    assert not rec.calls[1][0].any()                   # color fed as zeros
    assert not rec.calls[6][1].any()                   # depth fed as zeros
    assert results[6].message == "no depth: person box from the previous mesh"
    assert all(r.body is not None for r in results)


@needs_model
def test_forced_modes_simulate_the_missing_stream(session):
    w = InferenceWorker(session)
    w.force_mode("depth")
    r = w.process(frame(0))
    assert (r.mode, r.requested_mode) == (InputMode.DEPTH, "depth") and r.body is not None
    w.force_mode("rgb")
    r = w.process(frame(1))
    assert (r.mode, r.requested_mode) == (InputMode.RGB, "rgb")
    assert r.message == "no depth: person box from the previous mesh"
    w.force_mode("rgbd")
    assert w.process(frame(2, color=None)).mode is InputMode.DEPTH  # forcing cannot create a stream
    w.force_mode("auto")
    assert w.process(frame(3)).mode is InputMode.DEPTH                 # color waits restore_after frames
    with pytest.raises(ValueError, match="mode must be one of"):
        w.force_mode("ir")


@needs_model
def test_rgb_only_from_the_start_uses_a_default_box(session):
    w = InferenceWorker(session)
    r = w.process(frame(0, depth=None, depth_status=StreamStatus.OFF))
    assert r.mode is InputMode.RGB and r.body is not None
    assert r.message.startswith("no depth: person box from a default box in the image centre")
    assert r.body.transl[2] > 0


@needs_model
def test_no_person_no_stream_and_bad_frames_are_results_not_crashes(session):
    w = InferenceWorker(session)
    r = w.process(frame(0, depth=EMPTY[0]))
    assert (r.mode, r.body, r.message) == (InputMode.RGBD, None, "no person in view")
    r = w.process(frame(1, depth=None, color=None))
    assert (r.mode, r.body) == (InputMode.NONE, None)
    assert r.message == "no usable stream (color missing, depth missing, requested auto)"
    r = w.process(frame(2, color=None))
    assert (r.mode, r.body) == (InputMode.NONE, None)
    assert r.message == ("no usable stream (color missing, depth ok, in use again after 3 good frames, "
                         "requested auto)")
    w = InferenceWorker(session)
    wrong_size = np.zeros((576, 640), np.uint16)  # not the rig's depth size
    r = w.process(frame(0, depth=wrong_size, color=None))
    assert r.body is None and r.message.startswith("frame skipped: ValueError: ") and "320x288" in r.message
    assert w.failures == 1 and w.inference_failures == 0
    assert w.process(frame(1, color=None)).body is not None  # carries on


@needs_model
def test_session_errors_become_messages(session):
    w = InferenceWorker(session, config=WorkerConfig(input_size=96))  # the model takes 128 px crops
    r = w.process(frame(0))
    assert r.body is None and r.message.startswith("inference failed: ValueError: rgb must be")
    assert w.inference_failures == 1


@needs_model
def test_thread_posts_every_frame_then_an_end_marker(session):
    box = LatestFrameMailbox()
    got: list = []
    w = InferenceWorker(session, box, on_result=lambda f, r: got.append(r.frame_id), results=queue.Queue())
    w.start()
    for i in range(4):
        assert box.put_wait(frame(i), timeout=30)
    box.close()
    assert w.done.wait(60) and w.eof and w.error is None
    items = [w.results.get_nowait() for _ in range(5)]
    assert [r.frame_id for _, r in items[:4]] == [0, 1, 2, 3] == got
    assert items[4] is None
    assert all(isinstance(f, RgbdFrame) for f, _ in items[:4])
    # a capture failure ends the thread and is handed on as the end marker
    box = LatestFrameMailbox()
    w = InferenceWorker(session, box)
    w.start()
    box.close(SourceError("k4a:0: device stopped delivering captures after 3 frames"))
    assert w.done.wait(30) and isinstance(w.error, SourceError)
    assert isinstance(w.results.get(timeout=1), SourceError)
    # stop() ends an idle thread promptly
    w = InferenceWorker(session, LatestFrameMailbox())
    w.start()
    t = time.perf_counter()
    assert w.stop() and time.perf_counter() - t < 2.0


@needs_model
def test_warm_start_follows_the_track_and_resets_to_the_mean(session):
    assert session.warm_start  # the session-wide lite export has the warm-start inputs
    rec = RecordingSession(session)
    w = InferenceWorker(rec, config=WorkerConfig(warm_start=True))
    other = render([person(-1.6, 4.6, 11), TABLE])[0]  # someone 2.4 m away from the tracked person
    seq = [frame(0), frame(1), frame(2, depth=EMPTY[0]), frame(3), frame(4), frame(5, depth=other),
           frame(6, depth=other), frame(7, depth=None)]
    results = [w.process(f) for f in seq]
    assert [r.body is not None for r in results] == [True, True, False, True, True, True, True, True]
    # frame 2 has nobody (track lost): frame 3 restarts from the mean; frame 5 is another person (the
    # localiser could not follow the track there): mean again; without depth the previous mesh is followed
    assert [r.warm_start for r in results] == [False, True, False, False, True, False, True, True]
    assert w.warm_starts == 4
    calls = [i for i, r in enumerate(results) if r.body is not None]  # frames that reached the model
    assert len(rec.inits) == len(calls) == 7
    warm_calls = [k for k, i in enumerate(calls) if results[i].warm_start]
    for k, init in enumerate(rec.inits):
        if k not in warm_calls:
            assert init == {}  # the session feeds its mean
            continue
        # the previous call's raw model outputs, not the smoothed / placed body
        prev = rec.outputs[k - 1]
        assert set(init) == {"init_pose6d", "init_beta", "init_cam"}
        np.testing.assert_array_equal(init["init_pose6d"], prev["pose6d"])
        np.testing.assert_array_equal(init["init_beta"], prev["beta"])
        np.testing.assert_array_equal(init["init_cam"], prev["cam"])
    # a cold frame is exactly what the model gives without any init; a warm one is not
    k3 = calls.index(3)
    np.testing.assert_array_equal(rec.outputs[k3]["vertices"], session.run(*rec.calls[k3])["vertices"])
    k4 = calls.index(4)
    assert not np.array_equal(rec.outputs[k4]["pose6d"], session.run(*rec.calls[k4])["pose6d"])
    # switched off: every frame starts from the mean
    rec_off = RecordingSession(session)
    w_off = InferenceWorker(rec_off, config=WorkerConfig(warm_start=False))
    assert not any(w_off.process(f).warm_start for f in seq[:2])
    assert rec_off.inits == [{}, {}]


@needs_model
def test_decode_time_of_the_frame_is_a_stage(session):
    w = InferenceWorker(session)
    f = RgbdFrame(0, 1_000_000, COLOR, SCENE[0], RIG, "test", decode_ms=3.25)
    r = w.process(f)
    assert r.timings_ms["decode"] == 3.25 and r.body is not None
    assert "decode" not in w.process(frame(1)).timings_ms  # a frame without a decode time
    with pytest.raises(ValueError, match="decode_ms must be None or milliseconds"):
        RgbdFrame(0, 0, COLOR, SCENE[0], RIG, "test", decode_ms=-1.0)


class ListReplay:
    """A replay `FrameSource` over prepared frames (not live: the capture thread delivers every frame)."""

    is_live = False
    rig = RIG

    def __init__(self, frames):
        self.name, self._frames, self.closed = "list-replay", list(frames), False

    def read(self, timeout_s: float):
        return self._frames.pop(0) if self._frames else None

    def close(self) -> None:
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@needs_model
def test_a_slow_consumer_gets_every_replayed_frame_in_order_from_a_bounded_queue(session):
    from app.capture_thread import CaptureThread
    from app.worker import RESULTS_MAXSIZE

    capture = CaptureThread(ListReplay([frame(i) for i in range(12)]))
    w = InferenceWorker(session, capture)  # creates its own queue, bounded to RESULTS_MAXSIZE
    assert w.results.maxsize == RESULTS_MAXSIZE == 4
    w.prepare(RIG)
    capture.start()
    w.start()
    ids, backlog = [], []
    try:
        while True:
            backlog.append(w.results.qsize())
            item = w.results.get(timeout=30)
            if item is None:
                break
            ids.append(item[1].frame_id)
            time.sleep(0.05)  # writing / drawing slower than inference
    finally:
        capture.stop()
        w.stop()
    assert ids == list(range(12))                          # nothing lost, nothing reordered
    assert max(backlog) == RESULTS_MAXSIZE                  # the worker ran ahead until the queue was full ...
    assert w.results_discarded == 0 and capture.mailbox.dropped == 0  # ... then waited (replay pace = consumer's)
    assert w.eof and w.error is None


@needs_model
def test_stop_returns_promptly_while_the_worker_waits_on_a_full_queue(session):
    from app.capture_thread import CaptureThread

    capture = CaptureThread(ListReplay([frame(i) for i in range(8)]))
    w = InferenceWorker(session, capture, config=WorkerConfig(get_timeout_s=0.05), results=queue.Queue(maxsize=2))
    w.prepare(RIG)
    capture.start()
    w.start()
    deadline = time.perf_counter() + 30
    while w.frames_processed < 3 and time.perf_counter() < deadline:  # 2 queued + 1 in hand: blocked
        time.sleep(0.01)
    time.sleep(0.2)
    assert w.results.full() and w.frames_processed == 3 and w.is_alive()  # nobody consumes: it waits
    t = time.perf_counter()
    assert w.stop()
    assert time.perf_counter() - t < 0.5 and not w.is_alive() and w.done.is_set()
    assert w.results_discarded == 2                        # the result in hand and the end marker
    assert [w.results.get_nowait()[1].frame_id for _ in range(2)] == [0, 1]  # the queued ones stay readable
    assert capture.stop()
