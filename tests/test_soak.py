"""app.soak: the measuring pieces on known values (fast), then a short soak and a live-pacing run through
the real capture thread, worker, ONNX session and outputs (slow: a 400-frame replay of a recorded
synthetic clip, and 6 s of a fake 30 fps camera with a worker slowed by 60 ms per frame).

The long versions (10,000 frames, 60 s of pacing) are `python -m app.soak`; their figures are in
docs/reliability.md.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from app.frames import RgbdFrame, SourceError, SourceTimeout, StreamStatus
from app.outputs import OutputWriter
from app.results import FrameResult, InputMode
from app.soak import (CountingMailbox, PacedSource, percentile, record_clip, rss_mb, run_pacing, run_soak,
                      slope_per_1000, verify_outputs)
from app.worker import RESULTS_MAXSIZE
from calibration import default_rig

RIG = default_rig("NFOV_2X2BINNED", "720P")


def blank(i: int, host_time_s: float = 0.0) -> RgbdFrame:
    return RgbdFrame(i, i, None, np.full((288, 320), 2000, np.uint16), RIG, "t", StreamStatus.OFF, StreamStatus.OK,
                     host_time_s)


# ---------------------------------------------------------------------------------------- pieces
def test_rss_and_least_squares_slope_known_values():
    assert 10.0 < rss_mb() < 100_000.0
    frames = np.arange(0, 5000, 50)
    assert slope_per_1000(frames, 100.0 + 0.002 * frames) == pytest.approx(2.0)      # 2 MB per 1000 frames
    assert slope_per_1000(frames, np.full(frames.shape, 300.0)) == pytest.approx(0.0)
    assert np.isnan(slope_per_1000([10], [1.0])) and np.isnan(percentile([], 50))
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5


def test_verify_outputs_accepts_the_written_frames_and_names_the_first_problem(tmp_path):
    ids, stamps = [3, 4, 0, 1], [10, 20, 30, 40]
    with OutputWriter(tmp_path / "o") as w:
        for i, t in zip(ids, stamps):
            w.write(FrameResult(i, t, InputMode.NONE, "auto", None))
    assert verify_outputs(tmp_path / "o", ids, stamps, clip_length=5) == ""
    assert verify_outputs(tmp_path / "o", ids[:3], stamps[:3]) == "results.npz has 4 rows for 3 frames"
    assert verify_outputs(tmp_path / "o", [3, 4, 1, 0], stamps).startswith("results.npz row 2 is frame 0")
    assert verify_outputs(tmp_path / "o", ids, stamps, clip_length=4) == \
        "frame 1 has id 4, expected 0 (replay order broken)"


def test_paced_source_runs_on_the_wall_clock_and_drops_like_a_device_queue():
    source = PacedSource([blank(0), blank(1)], fps=50.0, device_queue=2)
    t0 = time.perf_counter()
    first = [source.read(1.0) for _ in range(5)]
    assert [f.frame_id for f in first] == [0, 1, 2, 3, 4]
    assert time.perf_counter() - t0 >= 4 / 50.0 - 0.005           # frame 4 is captured at 80 ms
    assert [f.timestamp_usec for f in first] == [1_000_000 + 20_000 * k for k in range(5)]
    assert np.array_equal(first[2].depth_mm, first[0].depth_mm) and first[2].rig is RIG  # frames cycle
    assert first[4].host_time_s == pytest.approx(source._t0 + 4 / 50.0)   # stamped at capture time
    time.sleep(0.2)                                               # reader late by ~10 frames
    late = source.read(1.0)                                       # the oldest of the 2 captures still queued
    assert late.frame_id >= 12 and source.dropped == late.frame_id - 5
    with pytest.raises(SourceTimeout, match=r"paced:50fps: no capture within 0\.001 s"):
        while True:  # drain the queue, then the next capture is not due within 1 ms
            source.read(0.001)
    source.close()
    with pytest.raises(SourceError, match="source is closed"):
        source.read(1.0)


def test_counting_mailbox_measures_backlog_and_age():
    box = CountingMailbox()
    for i in range(3):
        box.put(blank(i, host_time_s=time.perf_counter() - 0.05))  # captured 50 ms ago
    assert box.max_backlog == 1 and box.dropped == 2
    assert box.get(0.1).frame_id == 2
    assert len(box.ages_ms) == 1 and 45.0 < box.ages_ms[0] < 1000.0


# ---------------------------------------------------------------------------------------- the real thing
@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return record_clip(tmp_path_factory.mktemp("soak") / "walk.mkv", frames=10, fps=15)


@pytest.fixture(scope="module")
def session(lite_model):
    from app.runtime import InferenceSession

    return InferenceSession(lite_model, providers=("cpu",))


@pytest.mark.slow
def test_short_soak_writes_every_frame_in_order_with_flat_memory(clip, session, tmp_path):
    from app.sources import MkvSource

    frames = 400
    report = run_soak(MkvSource(clip, loop=True), session, tmp_path / "out", frames, warmup=100, sample_every=25)
    assert report.outputs_ok, report.outputs_problem
    assert report.frames == frames and report.loops >= frames // 10 - 1   # the 10-frame clip, looped
    assert report.bodies == frames and report.failures == 0
    assert report.mailbox_dropped == 0 and report.source_dropped == 0   # a replay delivers every frame
    # generous bounds: the writer keeps ~0.7 kB per frame by design; a real leak of a frame (1.4 MB of images)
    # per frame would be ~1400 MB per 1000 frames
    assert report.slope_mb_per_1000 < 60.0, report.samples
    assert report.rss_end_mb - report.rss_start_mb < 50.0, report.samples
    assert report.max_result_queue <= RESULTS_MAXSIZE          # the bounded queue, as in the CLI
    with np.load(tmp_path / "out" / "results.npz", allow_pickle=False) as z:
        assert z["frame_ids"].tolist() == [k % 10 for k in range(frames)] and z["valid"].all()


@pytest.mark.slow
def test_live_pacing_keeps_latest_frame_wins_with_a_slow_worker(clip, session):
    from app.soak import decode_frames

    report = run_pacing(decode_frames(str(clip)), session, seconds=6.0, fps=30.0, delay_ms=60.0)
    assert report.max_backlog == 1                         # never more than one frame waiting
    assert report.processed >= 10 and report.dropped_mailbox > report.processed / 2  # the slow worker skips
    assert report.dropped_device == 0                      # the capture thread kept up with the camera
    assert report.captured >= 150
    # a frame is at most about one capture period old when the worker takes it (no backlog anywhere)
    assert report.age_p99 < 150.0
    assert report.latency_p50 > 60.0                       # the injected delay is in the measurement
    assert report.latency_p99 < 1000.0 and abs(report.latency_drift_ms) < 200.0
