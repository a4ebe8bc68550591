"""app/replay_bench.py: the end-to-end replay benchmark's statistics, and one real pass each way.

The recording is written here with libk4arecord (training.synth.k4a_writer) from the analytic scenes of
tests/test_app_worker.py (a box person 3 m away on a floor, the default Kinect rig, 720p MJPG color and
NFOV 2x2 binned depth), so it takes a second instead of the synthetic engine's rendering; the model is
the session's random-weight lite export (tests/conftest.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.replay_bench import ReplayRun, format_table, main, pa_mpjpe_mm, run_replay, stage_stats

REPO = Path(__file__).resolve().parent.parent
CALIBRATION = REPO / "assets" / "calibration" / "azure_kinect_default.json"
N = 6


def test_stage_stats_known_values():
    assert stage_stats([5.0, 1.0, 3.0, 2.0, 4.0]) == (3.0, pytest.approx(4.6))
    assert stage_stats([7.0]) == (7.0, 7.0)
    assert all(np.isnan(v) for v in stage_stats([]))


def test_pa_mpjpe_matches_the_training_metric():
    from model.metrics import pa_mpjpe

    rng = np.random.default_rng(0)
    gt = rng.normal(0, 0.3, (24, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))  # a rotation
    assert pa_mpjpe_mm(1.3 * gt @ q + [0.2, -1.0, 3.0], gt) == pytest.approx(0.0, abs=1e-9)  # similarity: no error
    for _ in range(3):
        pred = gt + rng.normal(0, 0.05, gt.shape)
        ref = float(pa_mpjpe(torch.from_numpy(pred[None]), torch.from_numpy(gt[None]))[0])
        assert pa_mpjpe_mm(pred, gt) == pytest.approx(ref, rel=1e-6) and ref > 10.0


def test_table_has_one_column_pair_per_run():
    cold, warm = ReplayRun("cold", False, frames=10, wall_s=2.0), ReplayRun("warm", True, frames=10, wall_s=2.5)
    cold.timings = {"infer": [10.0, 20.0, 30.0], "decode": [4.0]}
    warm.timings = {"infer": [12.0]}
    cold.latency_ms, warm.latency_ms = [100.0, 200.0], [50.0]
    cold.result_latency_ms = [60.0, 70.0, 80.0]
    lines = format_table([cold, warm]).splitlines()
    assert lines[0] == "| | cold p50 | cold p90 | warm p50 | warm p90 |"
    assert lines[2] == "| fps | 5.0 |  | 4.0 |  |"
    assert "| infer ms | 20.0 | 28.0 | 12.0 | 12.0 |" in lines
    assert "| decode ms | 4.0 | 4.0 | n/a | n/a |" in lines
    assert lines[-2] == "| latency to result ms | 70.0 | 78.0 | n/a | n/a |"
    assert lines[-1] == "| end-to-end latency ms | 150.0 | 190.0 | 50.0 | 50.0 |"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    from tests.test_app_worker import COLOR, TABLE, person, render
    from training.synth.k4a_writer import K4ARecordingConfig, K4ARecordingWriter

    path = tmp_path_factory.mktemp("clip") / "boxes.mkv"
    config = K4ARecordingConfig(color_format="MJPG", color_resolution="720P", depth_mode="NFOV_2X2BINNED", fps=15)
    with K4ARecordingWriter(path, config, CALIBRATION.read_bytes()) as writer:
        for i in range(N):
            depth, _ = render([person(0.3 + 0.02 * i, 3.0), TABLE])
            writer.write(1_000_000 + i * 66_667, color=COLOR, depth=depth)
    return path


@pytest.mark.slow  # needs the session's lite export (~30 s CPU, once per session)
def test_one_pass_each_way_through_the_real_pipeline(clip, lite_model, tmp_path, capsys):
    from app.runtime import InferenceSession

    session = InferenceSession(lite_model, providers=("cpu",), cpu_threads=1)
    cold = run_replay(clip, session, warm_start=False, out_dir=tmp_path / "cold")
    warm = run_replay(clip, session, warm_start=True, out_dir=tmp_path / "warm")
    for r in (cold, warm):
        assert (r.frames, r.bodies, r.dropped) == (N, N, 0)
        assert set(r.timings) == {"capture", "decode", "align", "crop", "infer", "post", "render"}
        assert all(len(v) == N for v in r.timings.values())
        assert min(r.timings["decode"]) > 0.1  # a 1280x720 JPEG is not decoded in 0.1 ms
        # a frame's end-to-end latency covers at least its own decode + align + crop + infer + post + render
        own = sum(np.asarray(r.timings[s]) for s in ("decode", "align", "crop", "infer", "post"))
        to_result = np.asarray(r.result_latency_ms)
        assert (to_result >= own - 1e-6).all()
        assert (np.asarray(r.latency_ms) >= to_result + np.asarray(r.timings["render"]) - 1e-6).all()
        assert r.fps == pytest.approx(N / r.wall_s)
    assert (cold.warm_frames, warm.warm_frames) == (0, N - 1)  # the same person throughout: all but the first
    with np.load(tmp_path / "warm" / "results.npz") as z:
        assert z["frame_ids"].tolist() == list(range(N)) and z["valid"].all()
    assert (tmp_path / "cold" / "overlay.mp4").stat().st_size > 0
    # the command line prints the side-by-side table
    assert main(["--source", str(clip), "--model", str(lite_model), "--no-overlay", "--max-frames", "3"]) == 0
    out = capsys.readouterr().out
    assert "| | cold p50 | cold p90 | warm p50 | warm p90 |" in out and "| render ms | n/a | n/a | n/a | n/a |" in out
    assert "- warm: 3 frames, 3 with a body, 2 warm-started, 0 dropped" in out
    assert "random weights: only the timings mean anything" in out
