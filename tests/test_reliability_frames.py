"""Frame faults through the real worker: blank and constant depth, NaN/inf in the float paths (runtime and
placement), a person too near, too far, half out of frame, two people, nobody.

Scenes are rendered by `training.synth` (the open body in a sampled room, NFOV 2x2 binned depth through
the Kinect noise model, 720p color), written to a real Azure Kinect .mkv by libk4arecord and read back
by `MkvSource`, so every frame carries the stream statuses the real source gives it. The worker runs
the random-weight `lite` export in ONNX Runtime: the pose is random, but where the body is placed (box,
depth) comes from the depth image and is checked against the renderer's ground truth.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from app.crop import box_around
from app.frames import RgbdFrame, StreamStatus
from app.placement import PlacementConfig, place_body
from app.results import InputMode
from app.worker import InferenceWorker
from calibration import default_rig

REPO = Path(__file__).resolve().parent.parent
CALIBRATION = REPO / "assets" / "calibration" / "azure_kinect_default.json"
NO_PERSON = "no person in view"
SCENES = ("centre", "near_0.3m", "far_6m", "two_people", "half_out", "nobody")
EXTRA = ("zero", "const_0.4m", "const_1.0m", "const_2.5m")  # depth replaced, color of "centre"

slow = pytest.mark.slow  # renders 6 scenes (~10 s) and uses the session's lite export (~30 s once)


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# ---------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> dict:
    """{name: (RgbdFrame read back from the .mkv, ground truth dict)} for SCENES + EXTRA."""
    from app.sources import MkvSource
    from model.body import DEFAULT_BODY_PATH, BodyModel
    from training.synth.k4a_writer import K4ARecordingConfig, K4ARecordingWriter
    from training.synth.sample import SynthConfig, SynthEngine
    from training.synth.scene import sample_room, sensor_pose

    engine = SynthEngine(BodyModel.from_file(DEFAULT_BODY_PATH), SynthConfig())
    cfg = dataclasses.replace(
        engine.config.scene, depth_modes=(("NFOV_2X2BINNED", 1.0),), color_resolutions=(("720P", 1.0),),
        occluder_prob=0.0, second_person_prob=0.0, clutter_boxes=(0, 0), motion_prob=0.0, out_of_frame_prob=0.0,
        room_margin_m=(1.5, 2.0))
    base = engine.sample_scene(np.random.default_rng(3), cfg)
    half_h = engine.half_fov("NFOV_2X2BINNED")[0]

    def facing(xz):  # the sampled person, standing at world (x, z), facing the sensor
        xz = np.asarray(xz, dtype=np.float64)
        theta = base.target.theta.copy()
        theta[:3] = [0.0, math.atan2(-xz[0], -xz[1]), 0.0]
        return dataclasses.replace(base.target, floor_xz=xz, theta=theta)

    positions = {"centre": [(0.0, 2.5)], "near_0.3m": [(0.0, 0.3)], "far_6m": [(0.0, 6.0)],
                 "two_people": [(-0.6, 2.5), (0.8, 3.2)], "half_out": [(2.5 * math.tan(half_h), 2.5)],
                 "nobody": [(0.0, -3.0)]}  # behind the sensor
    rendered = {}
    for name in SCENES:
        people = tuple(facing(xz) for xz in positions[name])
        room = sample_room(np.random.default_rng(5), cfg, [p.floor_xz for p in people])
        scene = dataclasses.replace(base, sensor=sensor_pose(1.3, 8.0), people=people, room=room)
        frame, _ = engine.render_frame(scene, engine.pose([scene])[0], np.random.default_rng(1), crop_only=False,
                                       jpeg=False)
        rendered[name] = frame
    images = {name: (f.color_bgr, f.depth_mm) for name, f in rendered.items()}
    shape = rendered["centre"].depth_mm.shape
    for name, value in zip(EXTRA, (0, 400, 1000, 2500)):
        images[name] = (rendered["centre"].color_bgr, np.full(shape, value, np.uint16))
    path = tmp_path_factory.mktemp("faults") / "faults.mkv"
    config = K4ARecordingConfig(color_format="MJPG", color_resolution="720P", depth_mode="NFOV_2X2BINNED", fps=15)
    with K4ARecordingWriter(path, config, CALIBRATION.read_bytes()) as writer:
        for i, name in enumerate(images):
            color, depth = images[name]
            writer.write(1_000_000 + i * 66_667, color=color, depth=depth)
    with MkvSource(path) as source:
        frames = [source.read() for _ in images]
    truth = {name: {"bbox": f.bbox, "pelvis_z": float(f.person.joints[0, 2]), "visible_px": f.visible_px}
             for name, f in rendered.items()}
    return {name: (frame, truth.get(name)) for name, frame in zip(images, frames)}


@pytest.fixture(scope="module")
def session(lite_model):
    from app.runtime import InferenceSession

    return InferenceSession(lite_model, providers=("cpu",))


def processed(session, frame: RgbdFrame):
    worker = InferenceWorker(session)
    return worker, worker.process(frame)


def assert_finite_body(r) -> None:
    b = r.body
    for key in ("theta", "beta", "transl", "vertices", "joints", "cam", "bbox"):
        assert np.isfinite(getattr(b, key)).all(), key


# ---------------------------------------------------------------------------------------- people
@slow
def test_person_in_view_is_placed_where_the_renderer_put_it(clip, session):
    frame, truth = clip["centre"]
    assert (frame.color_status, frame.depth_status) == (StreamStatus.OK, StreamStatus.OK)
    worker, r = processed(session, frame)
    assert r.mode is InputMode.RGBD and r.message == "" and worker.failures == 0
    assert_finite_body(r)
    assert iou(r.body.bbox, truth["bbox"]) > 0.75
    assert abs(r.body.joints[0, 2] - truth["pelvis_z"]) < 0.35


@slow
def test_two_people_the_nearer_central_one_is_chosen_and_kept(clip, session):
    frame, truth = clip["two_people"]  # the target stands at 2.6 m, the other one 0.8 m aside at 3.3 m
    worker = InferenceWorker(session)
    results = [worker.process(frame) for _ in range(3)]
    assert all(r.mode is InputMode.RGBD and r.body is not None for r in results)
    for r in results:
        assert iou(r.body.bbox, truth["bbox"]) > 0.7
        assert_finite_body(r)
    assert abs(results[0].body.joints[0, 2] - truth["pelvis_z"]) < 0.35


@slow
def test_person_half_out_of_frame_is_found_at_the_image_edge(clip, session):
    frame, truth = clip["half_out"]
    assert truth["bbox"][0] == -0.5  # the renderer's own box touches the left edge
    _, r = processed(session, frame)
    assert r.mode is InputMode.RGBD and r.body is not None
    assert_finite_body(r)
    assert r.body.bbox[0] == -0.5 and iou(r.body.bbox, truth["bbox"]) > 0.7
    assert abs(r.body.joints[0, 2] - truth["pelvis_z"]) < 0.5


@slow
@pytest.mark.parametrize("name", ["near_0.3m", "far_6m", "nobody"])
def test_too_near_too_far_or_nobody_is_a_no_person_result(clip, session, name):
    """0.3 m is inside the sensor's minimum range (0.5 m: those pixels read 0), 6 m beyond its maximum
    (5.46 m in NFOV 2x2 binned): depth does not see the person, so the documented result is 'no person'."""
    frame, truth = clip[name]
    assert frame.depth_status is StreamStatus.OK   # the rest of the room is measured
    worker, r = processed(session, frame)
    assert (r.mode, r.body, r.message) == (InputMode.RGBD, None, NO_PERSON)
    assert "infer" not in r.timings_ms and worker.failures == 0


# ---------------------------------------------------------------------------------------- blank / flat depth
@slow
def test_all_zero_depth_falls_back_to_rgb_then_returns_to_rgbd(clip, session):
    blank, _ = clip["zero"]
    good, _ = clip["centre"]
    assert (blank.color_status, blank.depth_status) == (StreamStatus.OK, StreamStatus.EMPTY)  # the source's check
    worker = InferenceWorker(session)
    results = [worker.process(f) for f in (blank, good, good, good)]
    assert [r.mode.value for r in results] == ["rgb", "rgb", "rgb", "rgbd"]  # depth back after 3 good frames
    assert results[0].message.startswith("no depth: person box from a default box in the image centre")
    assert results[1].message == "no depth: person box from the previous mesh"
    for r in results:
        assert_finite_body(r)
    assert worker.failures == 0


@slow
def test_all_zero_depth_from_a_source_without_checks_is_no_person(clip, session):
    frame, _ = clip["centre"]
    unchecked = RgbdFrame(0, frame.timestamp_usec, frame.color_bgr, np.zeros_like(frame.depth_mm), frame.rig, "raw",
                          StreamStatus.OK, StreamStatus.OK)  # claims OK: the localiser sees no valid pixel
    worker, r = processed(session, unchecked)
    assert (r.mode, r.body, r.message) == (InputMode.RGBD, None, NO_PERSON) and worker.failures == 0


@slow
@pytest.mark.parametrize("name", ["const_0.4m", "const_2.5m"])
def test_depth_of_one_constant_value_is_no_person(clip, session, name):
    frame, _ = clip[name]
    assert frame.depth_status is StreamStatus.OK  # every pixel valid: nothing for the source to flag
    worker, r = processed(session, frame)
    assert (r.body, r.message) == (None, NO_PERSON) and worker.failures == 0


# a flat surface filling the view 1 m away is 1.3 m tall x 1.5 m wide: human-sized, so before the localiser's
# "fills the view" rule a body was placed on it
@slow
def test_depth_of_one_constant_value_1m_is_no_person(clip, session):
    frame, _ = clip["const_1.0m"]
    _, r = processed(session, frame)
    assert (r.body, r.message) == (None, NO_PERSON)


# ---------------------------------------------------------------------------------------- NaN / inf
@slow
def test_nonfinite_depth_pixels_are_invalid_pixels_in_the_runtime(session):
    """Depth crops are float metres: NaN / +-inf pixels must act exactly like 0 (invalid), never spread."""
    S = session.input_size
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
    depth = rng.uniform(1.5, 3.0, (S, S)).astype(np.float32)
    bad, zero = depth.copy(), depth.copy()
    bad[:10], bad[10:20], bad[20:25] = np.nan, np.inf, -np.inf
    zero[:25] = 0.0
    out_bad, out_zero, out_clean = session.run(rgb, bad, 2.0), session.run(rgb, zero, 2.0), session.run(rgb, depth, 2.0)
    for key in out_bad:
        assert np.isfinite(out_bad[key]).all(), key
        np.testing.assert_array_equal(out_bad[key], out_zero[key], err_msg=key)
    assert np.abs(out_clean["theta"] - out_zero["theta"]).max() > 1e-6  # the pixels do matter when valid
    # depth stream off: its pixels and ref_depth (even NaN) are ignored
    off = (True, False)
    a, b = session.run(rgb, bad, float("nan"), off), session.run(rgb, np.zeros_like(depth), 1.0, off)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for ref in (float("inf"), float("-inf"), -1.0):
        with pytest.raises(ValueError, match="ref_depth must be a positive depth in metres") as e:
            session.run(rgb, depth, ref)
        assert "\n" not in str(e.value)


RIG = default_rig("NFOV_2X2BINNED", "720P")
BODY = np.random.default_rng(0).uniform(-0.5, 0.5, (2000, 3)) * np.array([0.5, 1.7, 0.3])
BOX = box_around((120, 60, 200, 250), 128, 1.25)
CAM = np.array([0.9, 0.05, -0.02])


@pytest.mark.parametrize("observed", [np.nan, np.inf, -np.inf, -1.0, 0.0])
def test_placement_ignores_an_unusable_observed_depth(observed):
    weak = place_body(BODY, CAM, BOX, RIG.depth, None)
    p = place_body(BODY, CAM, BOX, RIG.depth, observed)
    assert not p.refined and np.array_equal(p.transl, weak.transl) and np.isfinite(p.transl).all()
    assert place_body(BODY, CAM, BOX, RIG.depth, 3.0).refined  # control: a usable depth refines


def test_placement_with_nonfinite_vertices_uses_the_finite_ones():
    bad = BODY.copy()
    bad[:100] = np.nan
    bad[100:105] = np.inf
    p = place_body(bad, CAM, BOX, RIG.depth, 3.0)
    np.testing.assert_allclose(p.transl, place_body(BODY[105:], CAM, BOX, RIG.depth, 3.0).transl, rtol=1e-12)
    everything_nan = place_body(np.full_like(BODY, np.nan), CAM, BOX, RIG.depth, 3.0)
    assert everything_nan.refined and everything_nan.transl[2] == pytest.approx(3.0)  # straight to the observed depth
    assert np.isfinite(everything_nan.transl).all()


@pytest.mark.parametrize("cam", [(np.nan, 0.0, 0.0), (0.9, np.inf, 0.0), (0.9, 0.0, -np.inf)])
def test_placement_refuses_a_nonfinite_camera_in_one_line(cam):
    with pytest.raises(ValueError, match=r"cam must be 3 finite numbers \(s, tx, ty\)") as e:
        place_body(BODY, np.array(cam), BOX, RIG.depth, 3.0)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("scale", [0.0, -1.0, 1e-9, 1e6])
def test_placement_depth_stays_in_range_without_observed_depth(scale):
    """A degenerate scale (RGB-only frame, no depth to refine with) put the body 2 km away before the clamp."""
    cfg = PlacementConfig()
    p = place_body(BODY, np.array([scale, 0.05, -0.02]), BOX, RIG.depth, None)
    assert cfg.min_depth_m <= p.transl[2] <= cfg.max_depth_m and np.isfinite(p.transl).all()
    ray = p.weak_transl / np.linalg.norm(p.weak_transl)  # moved along its own ray: same image position
    np.testing.assert_allclose(p.transl / np.linalg.norm(p.transl), ray, atol=1e-12)
    assert p.depth_correction_m == pytest.approx(p.transl[2] - p.weak_transl[2])
