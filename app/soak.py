"""Soak and live-pacing benchmark: long headless runs through the real capture thread, worker and outputs.

    python -m app.soak --frames 10000 --model M.onnx --source clip.mkv     # the long soak (not in CI)
    python -m app.soak --frames 500                                         # records a clip, exports a model
    python -m app.soak --no-soak --pacing-seconds 20 --delay-ms 60          # live pacing only

Soak (`run_soak`): a recording or folder is replayed with loop=True through `CaptureThread` (every
frame, backpressure), `InferenceWorker` (the ONNX session) and `OutputWriter` (frames.jsonl flushed per
frame, results in parts of bounded size joined into results.npz at close, motion.bvh streamed), on the
main thread like `python -m app
--headless`. Resident memory (VmRSS from /proc/self/status, MB = 2**20 bytes) is sampled every
`sample_every` frames; after `warmup` frames the report gives the first and last sample and the least-
squares slope in MB per 1000 frames. The largest backlog of the worker's result queue, the capture
mailbox's dropped count and the frames per second are reported too. At the end results.npz and
frames.jsonl are read back and checked: one row per consumed frame, the same frame ids and timestamps in
the same order, and (for an .mkv) the ids follow the replay order (i mod clip length).

Note: `OutputWriter` keeps only the open results part in memory (`part_frames` rows, ~0.7 kB each), so
its memory grows until the first part closes and then stays flat; `writer_growth` measures the writer
alone (synthetic results, same row count) so the two slopes can be compared: the pipeline's own growth
is the difference. The worker's result queue is bounded as in the CLI (`app.worker.RESULTS_MAXSIZE`).

Live pacing (`run_pacing`): `PacedSource` plays decoded frames as a 30 fps live camera would (frame k
is captured at t0 + k / fps; like the Kinect SDK it queues at most `device_queue` captures and drops the
oldest), `CaptureThread` delivers them latest-frame-wins, and the worker runs the real session behind
`SlowSession`, which sleeps `delay_ms` before every inference (an artificially slow model). Measured:
the capture backlog (frames received by the mailbox but neither delivered nor dropped; at most 1 by
design), the age of a frame when the worker takes it, end-to-end latency (capture time -> result on the
consumer thread) p50 / p99 in milliseconds, and the frames dropped in the mailbox and in the device queue.

Everything here runs on the calling thread except the capture and inference threads it starts.
"""
from __future__ import annotations

import argparse
import json
import math
import queue
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from app.capture_thread import CaptureThread
from app.frames import RgbdFrame, SourceError, SourceTimeout
from app.mailbox import LatestFrameMailbox
from app.outputs import OutputWriter
from app.worker import RESULTS_MAXSIZE, InferenceWorker, WorkerConfig
from calibration.rig import RgbdRig

__all__ = ["rss_mb", "slope_per_1000", "percentile", "SoakReport", "run_soak", "verify_outputs", "WriterGrowth",
           "writer_growth", "PacedSource",
           "SlowSession", "CountingMailbox", "PacingReport", "run_pacing", "record_clip", "random_model", "main"]


# ---------------------------------------------------------------------------------------- measuring
def rss_mb(trim: bool = False) -> float:
    """This process's resident set size (VmRSS) in MB (2**20 bytes); NaN where /proc is not available.

    trim: first ask glibc to hand freed heap back to the OS (malloc_trim(0)), so the figure tracks live
    memory rather than the allocator's high-water mark (a leak still shows; a transient peak does not).
    """
    if trim:
        _malloc_trim()
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return float("nan")


def _malloc_trim() -> None:
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def slope_per_1000(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of y against x, times 1000 (MB per 1000 frames for RSS samples); NaN if < 2 points."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.size < 2 or np.ptp(xs) == 0:
        return float("nan")
    xc = xs - xs.mean()
    return float(1000.0 * np.dot(xc, ys - ys.mean()) / np.dot(xc, xc))


def percentile(values: Sequence[float], q: float) -> float:
    """q-th percentile (0..100, linear interpolation); NaN for no values."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


# ---------------------------------------------------------------------------------------- soak
@dataclass
class SoakReport:
    """What `run_soak` measured. RSS in MB; slope in MB per 1000 frames (least squares after warm-up);
    samples: (frames consumed, RSS MB) pairs; seconds: wall time of the consuming loop; trimmed: RSS was
    read after malloc_trim (see `rss_mb`)."""

    frames: int
    seconds: float
    fps: float
    warmup: int
    rss_start_mb: float
    rss_end_mb: float
    rss_peak_mb: float
    slope_mb_per_1000: float
    max_result_queue: int
    mailbox_dropped: int
    source_dropped: int
    loops: int
    bodies: int
    failures: int
    outputs_ok: bool
    outputs_problem: str
    trimmed: bool = False
    samples: list[tuple[int, float]] = field(default_factory=list)


def verify_outputs(out_dir: Path, frame_ids: Sequence[int], timestamps: Sequence[int],
                   clip_length: Optional[int] = None) -> str:
    """'' when results.npz and frames.jsonl hold exactly these frames in this order, else the first problem.

    clip_length: also check that the ids follow a looped replay (id[k] == (id[0] + k) mod clip_length).
    """
    out_dir = Path(out_dir)
    ids = np.asarray(frame_ids, dtype=np.int64)
    ts = np.asarray(timestamps, dtype=np.int64)
    from app.results_reader import load_results

    table = load_results(out_dir)  # results.npz, or the parts of a run that did not close
    npz_ids, npz_ts = table["frame_ids"], table["timestamps_usec"]
    n_valid = int(table["valid"].sum())
    if npz_ids.shape != ids.shape:
        return f"results.npz has {npz_ids.shape[0]} rows for {ids.shape[0]} frames"
    if not np.array_equal(npz_ids, ids) or not np.array_equal(npz_ts, ts):
        k = int(np.flatnonzero((npz_ids != ids) | (npz_ts != ts))[0])
        return f"results.npz row {k} is frame {npz_ids[k]} at {npz_ts[k]} us, expected {ids[k]} at {ts[k]} us"
    rows = 0
    with open(out_dir / "frames.jsonl", encoding="utf-8") as fh:
        for k, line in enumerate(fh):
            r = json.loads(line)
            if k >= ids.size or (r["row"], r["frame_id"], r["timestamp_usec"]) != (k, int(ids[k]), int(ts[k])):
                return f"frames.jsonl line {k + 1} is row {r['row']} frame {r['frame_id']}, expected row {k} frame " \
                       f"{ids[k] if k < ids.size else None}"
            rows += 1
    if rows != ids.size:
        return f"frames.jsonl has {rows} rows for {ids.size} frames"
    if clip_length:
        expected = (ids[0] + np.arange(ids.size)) % clip_length if ids.size else ids
        if not np.array_equal(ids, expected):
            k = int(np.flatnonzero(ids != expected)[0])
            return f"frame {k} has id {ids[k]}, expected {expected[k]} (replay order broken)"
    if n_valid > ids.size:  # pragma: no cover - impossible unless the writer is broken
        return "more valid rows than frames"
    return ""


def run_soak(source: Any, session: Any, out_dir: Path, frames: int, *, warmup: int = 200, sample_every: int = 50,
             overwrite: bool = False, worker_config: WorkerConfig = WorkerConfig(), trim: bool = False,
             progress: Optional[Any] = None) -> SoakReport:
    """Replay `source` (loop it yourself: MkvSource/FolderSource(loop=True)) until `frames` results were
    written to `out_dir`, then verify the outputs. The source is closed by the capture thread.

    warmup: frames before the RSS baseline; sample_every: frames between RSS samples; trim: malloc_trim
    before each sample; progress(k, n): optional callback on the consuming thread every sample.
    """
    if frames < 1 or sample_every < 1 or warmup < 0:
        raise ValueError(f"frames and sample_every must be >= 1 and warmup >= 0, got {frames}, {sample_every}, "
                         f"{warmup}")
    clip_length = None
    if hasattr(source, "n_frames"):
        clip_length = int(source.n_frames)          # .mkv: one scan of the file
    elif hasattr(source, "__len__"):
        clip_length = len(source)
    writer = OutputWriter(out_dir, overwrite=overwrite)
    capture = CaptureThread(source)
    results: queue.Queue = queue.Queue(maxsize=RESULTS_MAXSIZE)  # as in the CLI
    worker = InferenceWorker(session, capture, config=worker_config, results=results)
    worker.prepare(source.rig)
    ids: list[int] = []
    stamps: list[int] = []
    samples: list[tuple[int, float]] = [(0, rss_mb(trim))]
    max_queue = bodies = 0
    failure: Optional[BaseException] = None
    t0 = time.perf_counter()
    capture.start()
    worker.start()
    try:
        while len(ids) < frames:
            max_queue = max(max_queue, results.qsize())
            item = results.get(timeout=60.0)
            if item is None or isinstance(item, BaseException):
                failure = item if item is not None else SourceError("the replay ended before the soak did")
                break
            _, result = item
            writer.write(result)
            ids.append(int(result.frame_id))
            stamps.append(int(result.timestamp_usec))
            bodies += result.body is not None
            if len(ids) % sample_every == 0:
                samples.append((len(ids), rss_mb(trim)))
                if progress is not None:
                    progress(len(ids), frames)
    finally:
        seconds = time.perf_counter() - t0
        capture.stop()
        worker.stop()
        writer.close()
    if failure is not None:
        raise SourceError(f"soak stopped after {len(ids)} frames: {failure}")
    problem = verify_outputs(Path(out_dir), ids, stamps, clip_length)
    after = [(n, r) for n, r in samples if n >= warmup] or samples[-1:]
    return SoakReport(
        frames=len(ids), seconds=seconds, fps=len(ids) / seconds if seconds > 0 else float("nan"), warmup=warmup,
        rss_start_mb=after[0][1], rss_end_mb=samples[-1][1], rss_peak_mb=max(r for _, r in samples),
        slope_mb_per_1000=slope_per_1000([n for n, _ in after], [r for _, r in after]),
        max_result_queue=max_queue, mailbox_dropped=int(capture.mailbox.dropped),
        source_dropped=int(getattr(source, "dropped", 0) or 0), loops=int(getattr(source, "loops", 0) or 0),
        bodies=bodies, failures=int(worker.failures), outputs_ok=problem == "", outputs_problem=problem,
        trimmed=trim, samples=samples)


@dataclass
class WriterGrowth:
    """RSS of an `OutputWriter` alone fed `frames` synthetic results with a body (MB; slope per 1000 frames)."""

    frames: int
    rss_start_mb: float
    rss_end_mb: float
    slope_mb_per_1000: float


def writer_growth(out_dir: Path, frames: int, *, warmup: int = 200, sample_every: int = 50,
                  num_vertices: int = 6890, trim: bool = False) -> WriterGrowth:
    """Feed an OutputWriter in `out_dir` `frames` synthetic FrameResults (random pose, 30 fps timestamps,
    frame ids looping over 30) and sample RSS like `run_soak`."""
    from app.results import BodyEstimate, FrameResult, InputMode

    rng = np.random.default_rng(0)
    vertices = np.zeros((num_vertices, 3), np.float32)
    samples: list[tuple[int, float]] = []
    with OutputWriter(out_dir) as writer:
        for i in range(frames):
            body = BodyEstimate(theta=rng.normal(0, 0.2, 72).astype(np.float32), beta=np.zeros(10, np.float32),
                                transl=np.array([0.0, 0.0, 2.5], np.float32), vertices=vertices,
                                joints=rng.normal(0, 0.5, (24, 3)).astype(np.float32),
                                cam=np.array([0.9, 0.0, 0.0], np.float32), bbox=np.array([10, 20, 90, 200], np.float32))
            writer.write(FrameResult(i % 30, 1_000_000 + i * 33_333, InputMode.RGBD, "auto", body,
                                     timings_ms={"infer": 10.0}))
            if (i + 1) % sample_every == 0:
                samples.append((i + 1, rss_mb(trim)))
    after = [(n, r) for n, r in samples if n >= warmup] or samples[-1:]
    return WriterGrowth(frames, after[0][1], samples[-1][1],
                        slope_per_1000([n for n, _ in after], [r for _, r in after]))


# ---------------------------------------------------------------------------------------- live pacing
class PacedSource:
    """A fake live camera at `fps` playing `frames` (decoded RgbdFrames, cycled) in wall-clock time.

    Capture k happens at t0 + k / fps (t0 = first read); its frame gets frame_id k, device timestamp
    start_usec + k * period and host_time_s = its capture time (perf_counter seconds). Like the Kinect
    SDK, at most `device_queue` captures wait in the "driver": older ones are dropped (`dropped`).
    read(timeout) blocks until the next capture is due, SourceTimeout if that is more than timeout away.
    Thread: the capture thread only (FrameSource protocol).
    """

    is_live = True

    def __init__(self, frames: Sequence[RgbdFrame], fps: float = 30.0, device_queue: int = 2,
                 start_usec: int = 1_000_000, name: str = "paced"):
        if not frames:
            raise ValueError("PacedSource needs at least one frame")
        if not fps > 0 or device_queue < 1:
            raise ValueError(f"fps must be > 0 and device_queue >= 1, got {fps}, {device_queue}")
        self.frames = list(frames)
        self.rig: RgbdRig = self.frames[0].rig
        self.fps, self.device_queue, self.start_usec = float(fps), int(device_queue), int(start_usec)
        self.name = f"{name}:{fps:g}fps"
        self.dropped = 0
        self.delivered = 0
        self._next = 0
        self._t0: Optional[float] = None
        self._closed = False

    def captured(self, now: Optional[float] = None) -> int:
        """Captures the camera has made so far (0 before the first read)."""
        if self._t0 is None:
            return 0
        now = time.perf_counter() if now is None else now
        return int(math.floor((now - self._t0) * self.fps)) + 1

    def read(self, timeout_s: float = 1.0) -> RgbdFrame:
        if self._closed:
            raise SourceError(f"{self.name}: source is closed")
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now
        available = self.captured(now)                      # captures 0 .. available-1 exist
        oldest = available - self.device_queue
        if self._next < oldest:                             # the driver queue overflowed: oldest dropped
            self.dropped += oldest - self._next
            self._next = oldest
        due = self._t0 + self._next / self.fps
        wait = due - now
        if wait > timeout_s:
            time.sleep(max(0.0, timeout_s))
            raise SourceTimeout(f"{self.name}: no capture within {timeout_s:.3g} s")
        if wait > 0:
            time.sleep(wait)
        k = self._next
        self._next += 1
        self.delivered += 1
        src = self.frames[k % len(self.frames)]
        return RgbdFrame(k, self.start_usec + int(round(k * 1e6 / self.fps)), src.color_bgr, src.depth_mm, src.rig,
                         self.name, src.color_status, src.depth_status, host_time_s=due)

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> "PacedSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class SlowSession:
    """The real session with `delay_s` of sleep before every run: an artificially slow model.
    Thread: the inference worker's."""

    def __init__(self, inner: Any, delay_s: float):
        self.inner, self.delay_s = inner, float(delay_s)
        self.input_size = inner.input_size
        self.contract = getattr(inner, "contract", None)

    def run(self, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        time.sleep(self.delay_s)
        return self.inner.run(*args, **kwargs)


class CountingMailbox(LatestFrameMailbox):
    """A LatestFrameMailbox that measures, under its own lock, the backlog after every put (frames
    received but neither delivered nor dropped) and the age of every frame taken (ms since host_time_s)."""

    def __init__(self) -> None:
        super().__init__()
        self.max_backlog = 0
        self.ages_ms: list[float] = []

    def put(self, frame: RgbdFrame) -> None:
        with self._cond:
            super().put(frame)
            self.max_backlog = max(self.max_backlog, self.received - self.delivered - self.dropped)

    def get(self, timeout: Optional[float] = None) -> Optional[RgbdFrame]:
        frame = super().get(timeout)
        if frame is not None and frame.host_time_s:
            self.ages_ms.append(1e3 * (time.perf_counter() - frame.host_time_s))
        return frame


@dataclass
class PacingReport:
    """What `run_pacing` measured (milliseconds unless stated). captured: captures the fake camera made;
    processed: results the consumer got; dropped_mailbox / dropped_device: replaced in the mailbox /
    dropped from the device queue; max_backlog: frames waiting in the mailbox (<= 1 by design); age_*:
    frame age when the worker took it; latency_*: capture -> result on the consumer thread; worker_fps:
    processed / seconds; latency_drift_ms: median latency of the last fifth minus that of the first fifth."""

    seconds: float
    fps: float
    delay_ms: float
    captured: int
    processed: int
    dropped_mailbox: int
    dropped_device: int
    max_backlog: int
    max_result_queue: int
    age_p50: float
    age_p99: float
    age_max: float
    latency_p50: float
    latency_p99: float
    latency_max: float
    latency_drift_ms: float
    worker_fps: float


def run_pacing(frames: Sequence[RgbdFrame], session: Any, seconds: float = 10.0, *, fps: float = 30.0,
               delay_ms: float = 60.0, device_queue: int = 2, worker_config: WorkerConfig = WorkerConfig()
               ) -> PacingReport:
    """Run a `PacedSource` over `frames` for `seconds` through the capture thread (latest frame wins) and a
    worker whose session sleeps `delay_ms` per frame; see the module docstring."""
    source = PacedSource(frames, fps=fps, device_queue=device_queue)
    mailbox = CountingMailbox()
    capture = CaptureThread(source, mailbox, read_timeout_s=0.2)
    if capture.every_frame:  # pragma: no cover - a live source is latest-frame-wins by default
        raise AssertionError("a live source must not use backpressure")
    results: queue.Queue = queue.Queue(maxsize=RESULTS_MAXSIZE)  # as in the CLI
    worker = InferenceWorker(SlowSession(session, delay_ms / 1e3), capture, config=worker_config, results=results)
    worker.prepare(source.rig)
    latencies: list[float] = []
    max_queue = 0
    failure: Optional[BaseException] = None
    capture.start()
    worker.start()
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            max_queue = max(max_queue, results.qsize())
            try:
                item = results.get(timeout=0.5)
            except queue.Empty:
                continue
            if item is None or isinstance(item, BaseException):
                failure = item if item is not None else SourceError("the live source ended")
                break
            frame, _ = item
            latencies.append(1e3 * (time.perf_counter() - frame.host_time_s))
    finally:
        elapsed = time.perf_counter() - t0
        captured = source.captured()
        capture.stop()
        worker.stop()
    if failure is not None:
        raise SourceError(f"pacing run failed: {failure}")
    fifth = max(1, len(latencies) // 5)
    drift = float(np.median(latencies[-fifth:]) - np.median(latencies[:fifth])) if latencies else float("nan")
    return PacingReport(
        seconds=elapsed, fps=fps, delay_ms=delay_ms, captured=captured, processed=len(latencies),
        dropped_mailbox=int(mailbox.dropped), dropped_device=int(source.dropped), max_backlog=int(mailbox.max_backlog),
        max_result_queue=max_queue, age_p50=percentile(mailbox.ages_ms, 50), age_p99=percentile(mailbox.ages_ms, 99),
        age_max=max(mailbox.ages_ms, default=float("nan")), latency_p50=percentile(latencies, 50),
        latency_p99=percentile(latencies, 99), latency_max=max(latencies, default=float("nan")),
        latency_drift_ms=drift, worker_fps=len(latencies) / elapsed if elapsed > 0 else float("nan"))


# ---------------------------------------------------------------------------------------- inputs
def record_clip(path: Path, frames: int = 30, fps: int = 15, seed: int = 7) -> Path:
    """A synthetic Azure Kinect clip (a person walking; NFOV 2x2 binned depth + 720p MJPG) written by
    `training.synth.record` (imports torch and Open3D: benchmark use only)."""
    from model.body import DEFAULT_BODY_PATH, BodyModel
    from training.synth.record import SequenceSpec, record_sequence
    from training.synth.sample import SynthConfig, SynthEngine

    engine = SynthEngine(BodyModel.from_file(DEFAULT_BODY_PATH), SynthConfig())
    spec = SequenceSpec(steps=(("walk", frames / fps),), fps=fps, depth_mode="NFOV_2X2BINNED",
                        color_resolution="720P", seed=seed, masks=False)
    return record_sequence(Path(path), engine, spec).path


def random_model(path: Path, preset_name: str = "lite") -> Path:
    """Export a random-weight model of a preset (fp32) to `path` with `training.export` (imports torch)."""
    import torch

    from model.body import DEFAULT_BODY_PATH, BodyModel
    from model.config import preset
    from model.network import build_fusemesh
    from training.export import export_onnx

    torch.manual_seed(0)
    body = BodyModel.from_file(DEFAULT_BODY_PATH)
    cfg = preset(preset_name)
    return export_onnx(build_fusemesh(cfg, body).eval(), cfg, body, Path(path), "fp32", random_weights=True).path


def decode_frames(spec: str, limit: int = 60) -> list[RgbdFrame]:
    """The first `limit` frames of a recording or folder, decoded (for `PacedSource`)."""
    from app.sources import open_source

    frames = []
    with open_source(spec) as source:
        while len(frames) < limit and (frame := source.read(1.0)) is not None:
            frames.append(frame)
    if not frames:
        raise SourceError(f"{spec}: no frames")
    return frames


# ---------------------------------------------------------------------------------------- command line
def _soak_table(r: SoakReport) -> str:
    rows = [("frames", f"{r.frames} ({r.loops} loops of the clip)"), ("wall time", f"{r.seconds / 60:.1f} min"),
            ("throughput", f"{r.fps:.1f} frames/s"),
            ("RSS after warm-up (frame %d)" % r.warmup, f"{r.rss_start_mb:.1f} MB"),
            ("RSS at the end", f"{r.rss_end_mb:.1f} MB (peak {r.rss_peak_mb:.1f})"),
            ("RSS slope" + (" (after malloc_trim)" if r.trimmed else ""), f"{r.slope_mb_per_1000:+.2f} MB / 1000 frames"),
            ("largest result-queue backlog", str(r.max_result_queue)),
            ("dropped (mailbox / source)", f"{r.mailbox_dropped} / {r.source_dropped}"),
            ("frames with a body / failures", f"{r.bodies} / {r.failures}"),
            ("outputs complete and in order", "yes" if r.outputs_ok else f"NO: {r.outputs_problem}")]
    return "\n".join(["| soak | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows])


def _pacing_table(r: PacingReport) -> str:
    rows = [("camera", f"{r.fps:g} fps for {r.seconds:.1f} s: {r.captured} captures"),
            ("slow worker", f"+{r.delay_ms:g} ms per frame: {r.processed} processed ({r.worker_fps:.1f} fps)"),
            ("dropped (mailbox / device queue)", f"{r.dropped_mailbox} / {r.dropped_device}"),
            ("max capture backlog", f"{r.max_backlog} frame(s)"),
            ("frame age at pickup p50 / p99 / max", f"{r.age_p50:.1f} / {r.age_p99:.1f} / {r.age_max:.1f} ms"),
            ("latency capture -> result p50 / p99 / max",
             f"{r.latency_p50:.1f} / {r.latency_p99:.1f} / {r.latency_max:.1f} ms"),
            ("latency drift (last fifth - first fifth)", f"{r.latency_drift_ms:+.1f} ms"),
            ("largest result-queue backlog", str(r.max_result_queue))]
    return "\n".join(["| live pacing | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows])


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.soak", description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10_000, help="soak length in frames (default 10000)")
    ap.add_argument("--model", metavar="FILE.onnx", help="model (default: assets/weights/fusemesh_lite.onnx if present, "
                                                         "else a random-weight lite export in a temp folder)")
    ap.add_argument("--source", metavar="SPEC", help="recording or folder to loop (default: a synthetic clip "
                                                     "recorded into a temp folder)")
    ap.add_argument("--clip-frames", type=int, default=30, help="length of the synthetic clip (default 30)")
    ap.add_argument("--out", metavar="DIR", help="outputs folder (default: a temp folder, removed at the end)")
    ap.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    ap.add_argument("--warmup", type=int, default=200, help="frames before the RSS baseline (default 200)")
    ap.add_argument("--sample-every", type=int, default=50, help="frames between RSS samples (default 50)")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime CPU threads")
    ap.add_argument("--trim", action="store_true",
                    help="malloc_trim before every RSS sample: live memory instead of the allocator's high-water mark")
    ap.add_argument("--no-soak", action="store_true", help="skip the soak")
    ap.add_argument("--no-writer-check", action="store_true",
                    help="skip measuring OutputWriter's own RSS growth (a child process, same frame count)")
    ap.add_argument("--pacing-seconds", type=float, default=20.0, help="live-pacing run length, 0 = skip (default 20)")
    ap.add_argument("--delay-ms", type=float, default=60.0, help="sleep added to every inference (default 60)")
    ap.add_argument("--fps", type=float, default=30.0, help="the fake live camera's rate (default 30)")
    ap.add_argument("--json", metavar="FILE", help="also write both reports as JSON here")
    args = ap.parse_args(argv)
    if args.frames < 1 or args.clip_frames < 1 or args.sample_every < 1 or args.warmup < 0:
        print("error: --frames, --clip-frames, --sample-every must be >= 1 and --warmup >= 0", file=sys.stderr)
        return 2
    from app.cli import DEFAULT_MODEL
    from app.runtime import InferenceSession, ModelFileError
    from app.sources import open_source

    with tempfile.TemporaryDirectory(prefix="fusemesh_soak_") as tmp:
        tmp_dir = Path(tmp)
        try:
            model = Path(args.model) if args.model else DEFAULT_MODEL
            if not args.model and not model.is_file():
                print(f"no model at {model}: exporting a random-weight lite model", file=sys.stderr)
                model = _in_child(random_model, tmp_dir / "lite_random.onnx")
            spec = args.source
            if spec is None:
                print(f"recording a {args.clip_frames}-frame synthetic clip", file=sys.stderr)
                spec = str(_in_child(record_clip, tmp_dir / "clip.mkv", args.clip_frames))
            session = InferenceSession(model, providers=("cpu",), cpu_threads=args.threads)
        except (ModelFileError, SourceError, OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"model {session.describe()}; source {spec}; load average {_loadavg()}", file=sys.stderr)
        reports: dict[str, Any] = {}
        if not args.no_soak:
            out = Path(args.out) if args.out else tmp_dir / "out"
            try:
                source = open_source(spec, loop=True)
                report = run_soak(source, session, out, args.frames, warmup=args.warmup,
                                  sample_every=args.sample_every, overwrite=args.overwrite, trim=args.trim,
                                  progress=lambda k, n: print(f"\r{k}/{n} frames, RSS {rss_mb():.1f} MB",
                                                              end="", file=sys.stderr, flush=True))
            except Exception as exc:  # one line, whatever failed
                print(f"\nerror: soak failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 1
            print(file=sys.stderr)
            print(_soak_table(report))
            reports["soak"] = asdict(report)
            if not args.no_writer_check:  # in a fresh process: its RSS is the writer's alone
                growth = _writer_growth_in_child(tmp_dir / "writer_only", args.frames, args.warmup, args.sample_every,
                                                 session.contract.body_num_vertices, args.trim)
                print(f"| OutputWriter alone, same {growth.frames} frames | {growth.rss_start_mb:.1f} -> "
                      f"{growth.rss_end_mb:.1f} MB, slope {growth.slope_mb_per_1000:+.2f} MB / 1000 frames |")
                reports["writer_only"] = asdict(growth)
        if args.pacing_seconds > 0:
            report_p = run_pacing(decode_frames(spec), session, args.pacing_seconds, fps=args.fps,
                                  delay_ms=args.delay_ms)
            print()
            print(_pacing_table(report_p))
            reports["pacing"] = asdict(report_p)
        print(f"\nload average at the end {_loadavg()}")
        if args.json:
            Path(args.json).write_text(json.dumps(reports, indent=1) + "\n")
        failed = "soak" in reports and not reports["soak"]["outputs_ok"]
    return 1 if failed else 0


def _in_child(fn: Any, path: Path, *args: Any) -> Path:
    """Run fn(path, *args) in a spawned process (torch and the renderer stay out of the soak's RSS); -> path."""
    import multiprocessing

    proc = multiprocessing.get_context("spawn").Process(target=fn, args=(path, *args))
    proc.start()
    proc.join()
    if proc.exitcode != 0 or not Path(path).is_file():
        raise OSError(f"{getattr(fn, '__name__', fn)} failed in its child process (exit code {proc.exitcode})")
    return Path(path)


def _writer_growth_child(conn: Any, out_dir: Path, frames: int, warmup: int, sample_every: int, vertices: int,
                        trim: bool) -> None:
    conn.send(writer_growth(out_dir, frames, warmup=warmup, sample_every=sample_every, num_vertices=vertices,
                            trim=trim))
    conn.close()


def _writer_growth_in_child(out_dir: Path, frames: int, warmup: int, sample_every: int, vertices: int,
                            trim: bool) -> WriterGrowth:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_writer_growth_child, args=(child, out_dir, frames, warmup, sample_every, vertices,
                                                          trim))
    proc.start()
    growth = parent.recv()
    proc.join()
    return growth


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
