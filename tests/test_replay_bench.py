"""app/replay_bench.py: the end-to-end replay benchmark's statistics, and one real pass each way.

The recording is written here with libk4arecord (training.synth.k4a_writer) from the analytic scenes of
tests/test_app_worker.py (a box person 3 m away on a floor, the default Kinect rig, 720p MJPG color and
NFOV 2x2 binned depth), so it takes a second instead of the synthetic engine's rendering; the model is
the session's random-weight lite export (tests/conftest.py).
"""
from __future__ import annotations

import time
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


def test_merge_pools_the_queue_counters():
    a = ReplayRun("cold", False, frames=5, dropped=1, discarded=2, max_backlog=3, queue_bound=4, wall_s=1.0)
    a.merge(ReplayRun("cold", False, frames=7, dropped=0, discarded=1, max_backlog=4, queue_bound=4, wall_s=2.0))
    assert (a.frames, a.dropped, a.discarded, a.max_backlog, a.queue_bound) == (12, 1, 3, 4, 4)
    assert a.fps == pytest.approx(4.0)


def test_an_unbounded_result_queue_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"results_maxsize must be >= 1 \(a bounded queue\), got 0"):
        run_replay(tmp_path / "never_opened.mkv", None, warm_start=False, out_dir=tmp_path, results_maxsize=0)
    assert not any(tmp_path.iterdir())  # refused before opening the source or the outputs


def _record(path: Path, frames: int) -> Path:
    from tests.test_app_worker import COLOR, TABLE, person, render
    from training.synth.k4a_writer import K4ARecordingConfig, K4ARecordingWriter

    config = K4ARecordingConfig(color_format="MJPG", color_resolution="720P", depth_mode="NFOV_2X2BINNED", fps=15)
    with K4ARecordingWriter(path, config, CALIBRATION.read_bytes()) as writer:
        for i in range(frames):
            depth, _ = render([person(0.3 + 0.02 * i, 3.0), TABLE])
            writer.write(1_000_000 + i * 66_667, color=COLOR, depth=depth)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return _record(tmp_path_factory.mktemp("clip") / "boxes.mkv", N)


LONG = 12


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    return _record(tmp_path_factory.mktemp("clip") / "boxes_long.mkv", LONG)


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
    assert "- warm: 3 frames, 3 with a body, 2 warm-started, 0 dropped, " in out
    assert "result backlog at most " in out and "(bound 4)" in out
    assert "random weights: only the timings mean anything" in out


@pytest.mark.slow  # the session's lite export; three passes of a 12-frame clip with a 0.3 s/frame consumer
def test_a_slow_consumer_gets_a_bounded_queue_and_every_frame_is_accounted_for(long_clip, lite_model, tmp_path):
    from app.runtime import InferenceSession
    from app.worker import RESULTS_MAXSIZE

    session = InferenceSession(lite_model, providers=("cpu",), cpu_threads=1)
    consumed: list[int] = []

    def slow_consumer(frame, result):  # drawing / writing much slower than inference (~0.1 s per frame)
        consumed.append(result.frame_id)
        time.sleep(0.3)

    # every frame (backpressure): the worker runs ahead until the queue is full, then waits; nothing dropped
    r = run_replay(long_clip, session, warm_start=False, out_dir=tmp_path / "every", overlay=False,
                   on_frame=slow_consumer)
    assert r.queue_bound == RESULTS_MAXSIZE == 4
    assert r.max_backlog == RESULTS_MAXSIZE  # full, never more (unbounded: all LONG results + the end marker)
    assert (r.frames, r.dropped, r.discarded) == (LONG, 0, 0)
    assert consumed == list(range(LONG))  # in order, none lost
    with np.load(tmp_path / "every" / "results.npz") as z:
        assert z["frame_ids"].tolist() == list(range(LONG))

    # real-time pacing: late frames are skipped at the source and counted; consumed + dropped = the clip
    consumed.clear()
    rt = run_replay(long_clip, session, warm_start=False, out_dir=tmp_path / "realtime", overlay=False,
                    realtime=True, on_frame=slow_consumer)
    assert rt.max_backlog <= RESULTS_MAXSIZE and rt.discarded == 0
    assert rt.frames + rt.dropped == LONG and rt.dropped > 0 and rt.frames == len(consumed) >= 1
    assert consumed == sorted(consumed)

    # stopping early: what the worker had computed but nobody consumed is counted as discarded
    consumed.clear()
    early = run_replay(long_clip, session, warm_start=False, out_dir=tmp_path / "early", overlay=False,
                       max_frames=3, on_frame=slow_consumer)
    assert (early.frames, early.dropped) == (3, 0) and consumed == [0, 1, 2]
    assert 1 <= early.discarded <= RESULTS_MAXSIZE + 1  # the full queue (and the result in the worker's hand)
    assert early.frames + early.discarded <= LONG
