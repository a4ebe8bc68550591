"""training.synth.record: synthetic sequences as real Azure Kinect recordings (pyk4a playback: frames,
timestamps, calibration, bit-exact depth) with a ground-truth sidecar that matches the body model."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from pyk4a import PyK4APlayback

from calibration.rig import RgbdRig
from model.body import BodyModel
from tests.toy_body import write_toy_body
from training.synth.__main__ import main
from training.synth.k4a_writer import RecordingError, read_sidecar
from training.synth.record import SequenceSpec, parse_motion, record_sequence, render_sequence
from training.synth.sample import SynthConfig, SynthEngine

SPEC = SequenceSpec(steps=(("walk", 0.4),), fps=15, depth_mode="NFOV_2X2BINNED", color_resolution="720P", seed=3)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_body(tmp_path_factory.mktemp("body") / "toy.npz")


@pytest.fixture(scope="module")
def engine(toy) -> SynthEngine:
    return SynthEngine(BodyModel.from_file(toy), SynthConfig())


@pytest.fixture(scope="module")
def clip(engine, tmp_path_factory):
    path = tmp_path_factory.mktemp("rec") / "walk.mkv"
    summary = record_sequence(path, engine, SPEC)
    return path, summary


def read_all(playback: PyK4APlayback) -> list:
    caps = []
    while True:
        try:
            caps.append(playback.get_next_capture())
        except EOFError:
            return caps


def test_recording_round_trips_through_pyk4a(clip, engine):
    path, summary = clip
    assert summary.frames == SPEC.num_frames == 6
    expected = list(render_sequence(engine, SPEC))                       # re-rendered: deterministic per frame
    with PyK4APlayback(path) as playback:
        assert RgbdRig.from_pyk4a(playback) == engine.rig("NFOV_2X2BINNED", "720P")   # calibration
        assert playback.configuration["start_timestamp_offset_usec"] == SPEC.start_usec
        caps = read_all(playback)
    assert len(caps) == len(expected)
    for cap, (ts, frame) in zip(caps, expected):
        assert cap.depth_timestamp_usec == ts == cap.color_timestamp_usec
        np.testing.assert_array_equal(cap.depth, frame.depth_mm)        # bit-exact DEPTH16
        color = cv2.imdecode(cap.color, cv2.IMREAD_COLOR)               # MJPG: exactly our picture's JPEG
        ok, jpeg = cv2.imencode(".jpg", frame.color_bgr, [int(cv2.IMWRITE_JPEG_QUALITY), SPEC.jpeg_quality])
        np.testing.assert_array_equal(color, cv2.imdecode(jpeg, cv2.IMREAD_COLOR))
    assert [ts for ts, _ in expected] == [SPEC.start_usec + round(k * 1e6 / 15) for k in range(6)]


def test_sidecar_is_keyed_by_timestamp_and_matches_the_body_model(clip, engine):
    path, _ = clip
    gt = read_sidecar(path)
    assert len(gt) == 6
    np.testing.assert_array_equal(gt.timestamps_usec, [SPEC.timestamp(k) for k in range(6)])
    f = gt.frame(SPEC.timestamp(3))
    assert f["joints3d"].shape == (24, 3) and f["lsp3d"].shape == (14, 3) and f["mask_depth"].shape == (288, 320)
    out = engine.body(betas=torch.tensor(f["betas"][None]), body_pose=torch.tensor(f["theta"][None, 3:]),
                      global_orient=torch.tensor(f["theta"][None, :3]), transl=torch.tensor(f["transl"][None]))
    np.testing.assert_allclose(out.joints[0].numpy(), f["joints3d"], atol=1e-4)
    rig = engine.rig("NFOV_2X2BINNED", "720P")
    np.testing.assert_allclose(rig.depth.project(f["joints3d"]), f["joints2d_depth"], atol=1e-3)
    np.testing.assert_allclose(rig.color.project(rig.depth_to_color.apply(f["joints3d"])), f["joints2d_color"],
                               atol=1e-3)
    rows, cols = np.nonzero(f["mask_depth"])
    np.testing.assert_allclose(f["bbox_depth"], [cols.min() - 0.5, rows.min() - 0.5, cols.max() + 0.5,
                                                 rows.max() + 0.5])
    # the person walks: the pelvis moves between the first and the last frame, betas stay
    assert np.linalg.norm(gt.arrays["joints3d"][-1, 0] - gt.arrays["joints3d"][0, 0]) > 0.05
    np.testing.assert_array_equal(gt.arrays["betas"][0], gt.arrays["betas"][-1])


def test_motion_programs_and_bad_input():
    assert parse_motion("walk", 3) == [("walk", 3.0)]
    assert parse_motion("walk:4, wave:2.5") == [("walk", 4.0), ("wave", 2.5)]
    with pytest.raises(ValueError, match="unknown motion 'jump'"):
        parse_motion("jump", 2)
    with pytest.raises(ValueError, match="needs a duration"):
        parse_motion("walk,wave")
    with pytest.raises(ValueError, match="must be > 0"):
        parse_motion("walk:0")


def test_cli_record(toy, tmp_path, capsys):
    out = tmp_path / "squat.mkv"
    assert main(["record", "--motion", "squat", "--seconds", "0.2", "--fps", "15", "--depth-mode", "NFOV_2X2BINNED",
                 "--out", str(out), "--body", str(toy), "--no-masks"]) == 0
    assert "wrote" in capsys.readouterr().out
    gt = read_sidecar(out)
    assert len(gt) == 3 and "mask_depth" not in gt.arrays
    with PyK4APlayback(out) as playback:
        assert len(read_all(playback)) == 3
    # existing output without --overwrite: one clear line, exit code 2
    assert main(["record", "--motion", "squat", "--seconds", "0.2", "--fps", "15", "--depth-mode", "NFOV_2X2BINNED",
                 "--out", str(out), "--body", str(toy)]) == 2
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(RecordingError, match=".mkv"):
        record_sequence(tmp_path / "x.avi", SynthEngine.__new__(SynthEngine), SPEC)
