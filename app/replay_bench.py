"""End-to-end replay benchmark: the real capture thread + inference worker + outputs on a recording, headless.

    python -m app.replay_bench                                  # records a 2 s synthetic clip, random lite model
    python -m app.replay_bench --source clip.mkv --model assets/weights/fusemesh_lite.onnx
    python -m app.bench --replay --source clip.mkv              # the same, through app.bench

What runs is what `python -m app --headless --out DIR` runs: `app.sources` (MkvSource, or any source
spec) on a `CaptureThread`, the `InferenceWorker` on its thread (ONNX Runtime), and on the main thread
the consumer: `app.headless.HeadlessRenderer` (overlay.mp4 + thumbnails; its time is the "render" stage)
then `app.outputs.OutputWriter` (frames.jsonl, results.npz, motion.bvh), into a temporary folder.
Replays deliver every frame (backpressure, deterministic) unless --realtime (paced by the recording's
timestamps, late frames dropped and counted).

Queues are bounded exactly as in the app: the capture thread's one-slot mailbox, then the worker's result
queue of `app.worker.RESULTS_MAXSIZE` (its stop-safe blocking put). A consumer (overlay + outputs) slower
than the worker fills that queue, the worker then waits, and the wait reaches the capture thread: memory
stays bounded and the clip runs at the consumer's pace. Every frame is accounted for: consumed, dropped
by real-time pacing or a latest-frame-wins mailbox (`dropped`), or discarded because the pass stopped
early (--max-frames) while results were queued (`discarded`); with backpressure nothing is dropped, and
end-to-end latency then includes at most a full queue of waiting (it no longer grows along the clip).

Each configuration runs the whole clip once per --repeat, in ABBA order (cold, warm, warm, cold, ...) so
that a change in machine load, and whatever the first pass pays (file cache), hits both alike:
cold = `WorkerConfig(warm_start=False)`, every frame starts from the model's mean; warm = starts from the
previous frame's estimate while the track continues (needs a model exported with warm-start inputs).
Printed, side by side:
- fps: frames processed / wall time from starting the threads to the last frame consumed;
- per-stage p50 / p90 ms over frames (capture = the worker's wait for a frame, decode = MJPEG decode in
  the source, align, crop, infer, post, render = overlay drawing + video write on the consumer);
- latency to result p50 / p90: from the source starting to read the frame (`RgbdFrame.host_time_s`) to
  the worker handing its result on (includes waiting in the one-slot mailbox while the worker is busy);
- end-to-end latency p50 / p90: from the same start to the frame's outputs written;
- frames with a body, warm-started frames, dropped frames, and the result backlog (the most results seen
  waiting for the consumer, out of the bound); the mean distance between the warm and the
  cold run's joints (mm); with a ground-truth sidecar (`clip.gt.npz`, written by training.synth) MPJPE
  and PA-MPJPE of the placed joints (mm, depth camera frame). With random weights only the timings
  mean anything (the script says so).
Without --source, a clip is rendered by `training.synth.record` (walk, NFOV 2x2 binned depth, 720p MJPG,
15 fps) into a temporary folder; without --model, the default model if present, else a random-weight
`lite` export (fp32) into the temporary folder. The load average is printed: on a shared CPU other
processes inflate every number, so compare columns of one run.
"""
from __future__ import annotations

import argparse
import logging
import os
import queue
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from app.results import STAGES

__all__ = ["ReplayRun", "run_replay", "stage_stats", "pa_mpjpe_mm", "format_table", "main"]

log = logging.getLogger(__name__)


@dataclass
class ReplayRun:
    """One pass over the clip. timings: {stage: per-frame ms (frames where it ran)}; latency_ms: per-frame
    end-to-end; joints: {frame index in the clip: (24, 3) m, depth camera frame} of frames with a body.
    frames: results consumed; dropped: frames skipped by real-time pacing or replaced in the capture
    mailbox; discarded: results the worker computed but the pass did not consume (stopped early);
    max_backlog: the most results seen waiting in the worker's result queue (at most `queue_bound`)."""

    label: str
    warm_start: bool
    frames: int = 0
    bodies: int = 0
    warm_frames: int = 0
    dropped: int = 0
    discarded: int = 0
    max_backlog: int = 0
    queue_bound: int = 0
    wall_s: float = 0.0
    timings: dict[str, list[float]] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)
    result_latency_ms: list[float] = field(default_factory=list)
    joints: dict[int, np.ndarray] = field(default_factory=dict)
    timestamps: dict[int, int] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else float("nan")

    def merge(self, other: "ReplayRun") -> None:
        """Pool another pass of the same configuration (for --repeat)."""
        self.frames += other.frames
        self.bodies += other.bodies
        self.warm_frames += other.warm_frames
        self.dropped += other.dropped
        self.discarded += other.discarded
        self.max_backlog = max(self.max_backlog, other.max_backlog)
        self.queue_bound = max(self.queue_bound, other.queue_bound)
        self.wall_s += other.wall_s
        for k, v in other.timings.items():
            self.timings.setdefault(k, []).extend(v)
        self.latency_ms.extend(other.latency_ms)
        self.result_latency_ms.extend(other.result_latency_ms)


def stage_stats(values: Sequence[float]) -> tuple[float, float]:
    """(p50, p90) of per-frame milliseconds (numpy's linear interpolation); NaNs when empty."""
    if len(values) == 0:
        return float("nan"), float("nan")
    a = np.asarray(values, dtype=np.float64)
    return float(np.percentile(a, 50)), float(np.percentile(a, 90))


def pa_mpjpe_mm(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean joint error (mm) after the best similarity transform of pred (J, 3) onto gt (J, 3) (Umeyama)."""
    p, g = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    mp, mg = p.mean(0), g.mean(0)
    x, y = p - mp, g - mg
    u, s, vt = np.linalg.svd(x.T @ y)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    r = u @ fix @ vt  # x @ r ~ y
    scale = float(np.sum(s * np.diag(fix)) / max(np.sum(x * x), 1e-12))
    aligned = scale * x @ r + mg
    return float(1000.0 * np.linalg.norm(aligned - g, axis=1).mean())


def run_replay(spec: str | Path, session: Any, *, warm_start: bool, out_dir: str | Path, overlay: bool = True,
               realtime: bool = False, max_frames: Optional[int] = None, calibration: Optional[str] = None,
               label: str = "", timeout_s: float = 120.0, results_maxsize: Optional[int] = None,
               on_frame: Optional[Callable[[Any, Any], None]] = None) -> ReplayRun:
    """One pass: source `spec` -> capture thread -> worker (`session`) -> overlay + outputs in `out_dir`.

    results_maxsize: bound of the worker's result queue (None: `app.worker.RESULTS_MAXSIZE`, the app's);
    on_frame(frame, result): called on this (the consumer's) thread after each frame's outputs are
    written, as part of the consumer (a display; tests use it as a deliberately slow consumer).
    """
    from app.capture_thread import CaptureThread
    from app.outputs import SMPL_PARENTS, OutputWriter
    from app.sources import open_source
    from app.worker import RESULTS_MAXSIZE, InferenceWorker, WorkerConfig

    bound = RESULTS_MAXSIZE if results_maxsize is None else int(results_maxsize)
    if bound < 1:
        raise ValueError(f"results_maxsize must be >= 1 (a bounded queue), got {results_maxsize!r}")
    options: dict[str, Any] = {}
    if calibration:
        options["calibration"] = calibration
    if Path(str(spec)).suffix.lower() == ".mkv":
        options["realtime"] = realtime
    source = open_source(spec, **options)
    run = ReplayRun(label or ("warm" if warm_start else "cold"), warm_start, queue_bound=bound)
    out_dir = Path(out_dir)
    faces = session.contract.faces()
    renderer = None
    capture = worker = None
    writer = OutputWriter(out_dir, faces=faces, overwrite=True)
    try:
        if overlay:
            from app.headless import HeadlessRenderer

            renderer = HeadlessRenderer(out_dir, faces, SMPL_PARENTS, fps=float(getattr(source, "fps", 30) or 30))
        capture = CaptureThread(source)
        posted: dict[int, float] = {}  # id(result) -> when the worker handed it on (inference thread)
        # bounded as in the app (app.cli): a slow consumer makes the worker wait instead of piling up frames
        worker = InferenceWorker(session, capture, config=WorkerConfig(warm_start=warm_start),
                                 results=queue.Queue(maxsize=bound),
                                 on_result=lambda frame, result: posted.__setitem__(id(result), time.perf_counter()))
        worker.prepare(source.rig)
        t0 = time.perf_counter()
        capture.start()
        worker.start()
        t_end = t0
        while True:
            run.max_backlog = max(run.max_backlog, worker.results.qsize())
            item = worker.results.get(timeout=timeout_s)
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            frame, result = item
            if renderer is not None:
                t = time.perf_counter()
                renderer.add(frame, result)
                result.timings_ms["render"] = (time.perf_counter() - t) * 1e3
            writer.write(result)
            if on_frame is not None:
                on_frame(frame, result)
            t_end = time.perf_counter()
            run.latency_ms.append((t_end - frame.host_time_s) * 1e3)
            run.result_latency_ms.append((posted.pop(id(result), t_end) - frame.host_time_s) * 1e3)
            for k, v in result.timings_ms.items():
                run.timings.setdefault(k, []).append(float(v))
            index = run.frames
            run.frames += 1
            if result.body is not None:
                run.bodies += 1
                run.joints[index] = np.asarray(result.body.joints, np.float64)
                run.timestamps[index] = int(result.timestamp_usec)
            run.warm_frames += bool(result.warm_start)
            if max_frames is not None and run.frames >= max_frames:
                break
        run.wall_s = t_end - t0
    finally:
        if capture is not None:
            capture.stop()
        if worker is not None:
            worker.stop()
            # results computed but never consumed (an early stop): counted, not silently lost
            run.discarded = max(0, worker.frames_processed - run.frames)
        if capture is None:
            source.close()
        if renderer is not None:
            renderer.close()
        writer.close()
    # after the threads ended, so that drops after the last consumed frame count too
    run.dropped = int(capture.mailbox.dropped) + int(getattr(source, "dropped", 0) or 0)
    return run


def _accuracy(run: ReplayRun, sidecar: Any) -> tuple[float, float]:
    """(MPJPE, PA-MPJPE) mm of the run's placed joints against the ground truth, over frames with a body."""
    errs, pa = [], []
    for i, joints in run.joints.items():
        try:
            gt = sidecar.frame(run.timestamps[i])["joints3d"]
        except (KeyError, ValueError, IndexError):
            continue
        errs.append(1000.0 * float(np.linalg.norm(joints - gt, axis=1).mean()))
        pa.append(pa_mpjpe_mm(joints, gt))
    if not errs:
        return float("nan"), float("nan")
    return float(np.mean(errs)), float(np.mean(pa))


def format_table(runs: Sequence[ReplayRun]) -> str:
    """Markdown table: fps, per-stage p50/p90 and end-to-end latency, one column pair per run."""
    head = "| | " + " | ".join(f"{r.label} p50 | {r.label} p90" for r in runs) + " |"
    lines = [head, "|---|" + "---|---|" * len(runs)]
    lines.append("| fps | " + " | ".join(f"{r.fps:.1f} | " for r in runs) + " |")
    for stage in STAGES:
        cells = []
        for r in runs:
            p50, p90 = stage_stats(r.timings.get(stage, []))
            cells.append("n/a | n/a" if np.isnan(p50) else f"{p50:.1f} | {p90:.1f}")
        lines.append(f"| {stage} ms | " + " | ".join(cells) + " |")
    for name, attr in (("latency to result ms", "result_latency_ms"), ("end-to-end latency ms", "latency_ms")):
        cells = []
        for r in runs:
            p50, p90 = stage_stats(getattr(r, attr))
            cells.append("n/a | n/a" if np.isnan(p50) else f"{p50:.1f} | {p90:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _record_clip(folder: Path, seconds: float, note: Any) -> Path:
    from model.body import DEFAULT_BODY_PATH, BodyModel
    from training.synth.record import SequenceSpec, record_sequence
    from training.synth.sample import SynthConfig, SynthEngine

    t0 = time.perf_counter()
    engine = SynthEngine(BodyModel.from_file(DEFAULT_BODY_PATH), SynthConfig())
    spec = SequenceSpec(steps=(("walk", float(seconds)),), fps=15, depth_mode="NFOV_2X2BINNED",
                        color_resolution="720P", seed=7)
    summary = record_sequence(folder / "walk.mkv", engine, spec)
    note(f"recorded a synthetic clip: {summary.frames} frames (walk, NFOV 2x2 binned, 720p MJPG, 15 fps) in "
         f"{time.perf_counter() - t0:.0f} s")
    return summary.path


def _random_model(folder: Path, note: Any) -> Path:
    import torch

    from model.body import DEFAULT_BODY_PATH, BodyModel
    from model.config import preset
    from model.network import build_fusemesh
    from training.export import export_onnx

    t0 = time.perf_counter()
    torch.manual_seed(0)
    body = BodyModel.from_file(DEFAULT_BODY_PATH)
    cfg = preset("lite")
    r = export_onnx(build_fusemesh(cfg, body).eval(), cfg, body, folder / "fusemesh_lite_random.fp32.onnx", "fp32",
                    random_weights=True)
    note(f"exported a random-weight lite model (fp32) in {time.perf_counter() - t0:.0f} s")
    return r.path


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.replay_bench", description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=None, help="recording (.mkv), RGB-D folder (default: record a synthetic clip)")
    ap.add_argument("--model", type=Path, default=None, help="exported .onnx (default: the app's default model if "
                    "present, else a random-weight lite export)")
    ap.add_argument("--calibration", default=None, help="calibration for a source that lacks one")
    ap.add_argument("--seconds", type=float, default=2.0, help="length of the synthetic clip (default 2 s = 30 frames)")
    ap.add_argument("--max-frames", type=int, default=None, help="stop each pass after this many frames")
    ap.add_argument("--repeat", type=int, default=1, help="passes per configuration, alternating (default 1)")
    ap.add_argument("--warm", choices=("both", "on", "off"), default="both", help="which warm-start settings to run")
    ap.add_argument("--realtime", action="store_true", help="pace by the recording's timestamps (drops late frames)")
    ap.add_argument("--no-overlay", action="store_true", help="no overlay video (no render stage)")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime CPU threads (default: cores - 1)")
    ap.add_argument("--providers", nargs="+", default=["cpu"], choices=["tensorrt", "cuda", "cpu"])
    ap.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=True,
                    help="replay the model as a CUDA graph on the CUDA provider, as the app does (default on)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the clip, model and outputs in this folder")
    args = ap.parse_args(argv)
    if args.repeat < 1 or (args.max_frames is not None and args.max_frames < 1) or args.seconds <= 0:
        print("error: --repeat and --max-frames must be >= 1, --seconds > 0", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("K4A_ENABLE_LOG_TO_STDOUT", "0")

    from app.cli import DEFAULT_MODEL
    from app.frames import SourceError
    from app.runtime import InferenceSession, ModelFileError

    notes: list[str] = []
    note = (lambda text: (notes.append(text), print(f"replay_bench: {text}", file=sys.stderr, flush=True)))
    with tempfile.TemporaryDirectory(prefix="fusemesh_replay_") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        try:
            source = args.source or _record_clip(work, args.seconds, note)
            model = args.model or (DEFAULT_MODEL if DEFAULT_MODEL.is_file() else _random_model(work, note))
            session = InferenceSession(model, providers=args.providers, cpu_threads=args.threads,
                                       cuda_graph=args.cuda_graph)
        except (SourceError, ModelFileError, ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        configs = {"both": (False, True), "on": (True,), "off": (False,)}[args.warm]
        if True in configs and not session.warm_start:
            note(f"{Path(model).name} has no warm-start inputs: the warm run starts every frame from the mean too")
        load_before = os.getloadavg()
        runs: dict[bool, ReplayRun] = {}
        try:
            for k in range(args.repeat):
                for warm in (configs if k % 2 == 0 else configs[::-1]):
                    out = work / f"out_{'warm' if warm else 'cold'}_{k}"
                    r = run_replay(source, session, warm_start=warm, out_dir=out,
                                   overlay=not args.no_overlay, realtime=args.realtime, max_frames=args.max_frames,
                                   calibration=args.calibration)
                    if warm in runs:
                        runs[warm].merge(r)
                    else:
                        runs[warm] = r
        except SourceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        load_after = os.getloadavg()
        ordered = [runs[w] for w in configs]
        print(f"\n{session.describe()}; {session.cpu_threads} ORT threads; source {source}")
        print(f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after ({os.cpu_count()} cores); "
              f"{args.repeat} pass(es) per configuration, ABBA order; "
              f"{'real-time pacing' if args.realtime else 'every frame'}")
        for n in notes:
            print(f"- {n}")
        print()
        print(format_table(ordered))
        print()
        for r in ordered:
            print(f"- {r.label}: {r.frames} frames, {r.bodies} with a body, {r.warm_frames} warm-started, "
                  f"{r.dropped} dropped, {r.discarded} discarded, result backlog at most {r.max_backlog} "
                  f"(bound {r.queue_bound}), {r.wall_s:.1f} s")
        if len(ordered) == 2:
            common = sorted(set(ordered[0].joints) & set(ordered[1].joints))
            if common:
                diff = np.mean([1000.0 * np.linalg.norm(ordered[0].joints[i] - ordered[1].joints[i], axis=1).mean()
                                for i in common])
                print(f"- warm vs cold: joints differ by {diff:.1f} mm on average over {len(common)} frames "
                      "(first pass)")
        sidecar = _sidecar(source)
        if sidecar is not None:
            for r in ordered:
                mpjpe, pa = _accuracy(r, sidecar)
                print(f"- {r.label} vs ground truth ({len(r.joints)} frames, first pass): MPJPE {mpjpe:.0f} mm, "
                      f"PA-MPJPE {pa:.0f} mm")
        if session.contract.random_weights:
            print("- random weights: only the timings mean anything; accuracy and the warm/cold difference do not")
    return 0


def _sidecar(source: Any) -> Any:
    from training.synth.k4a_writer import read_sidecar, sidecar_path

    if not str(source).lower().endswith(".mkv") or not sidecar_path(source).is_file():
        return None
    try:
        return read_sidecar(source)
    except Exception as exc:  # a broken sidecar only loses the accuracy lines
        log.warning("cannot read the ground truth of %s: %s", source, exc)
        return None


if __name__ == "__main__":
    sys.exit(main())
