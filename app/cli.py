"""`python -m app`: run FuseMesh on a Kinect, a recording or an RGB-D folder; view it or write outputs.

    python -m app                                   # Kinect if connected, else the bundled demo recording
    python -m app --source clip.mkv --headless --out runs/clip
    python -m app --source k4a:1 --mode depth --out runs/live --meshes ply

Threads: the capture thread reads the source (`app.capture_thread`), the inference thread runs the
model (`app.worker`), and the main thread either runs the viewer window (`app.viewer.run_viewer`,
imported only then; outputs are then written on the inference thread) or, with --headless, consumes
the results: writes the outputs (`app.outputs`) and the overlay video (`app.headless`) with a tqdm
progress bar on replays. Recordings and folders are replayed frame by frame (every frame, deterministic)
unless --realtime. The worker's result queue is bounded (`app.worker.RESULTS_MAXSIZE` frames): a replay
runs at the pace of the writer / overlay, a live camera drops (and counts) frames in the capture mailbox.

Recording in the viewer (key R, `RecordControl`): R starts / stops writing the outputs (the same
`OutputWriter` as --out). With --out the run starts recording into it at once (as without the key), and
R stops it; otherwise the first R starts a take in a new timestamped folder ./recordings/<YYYYmmdd_HHMMSS>.
Every later take goes to a new timestamped folder: ./recordings/<stamp>, or <out>_<stamp> beside --out.
Each start and stop prints one line (the folder, and the frames written).

Exit codes: 0 done; 2 bad arguments or input (unreadable/corrupt recording, missing calibration,
outputs that exist without --overwrite, a source that fails mid-run); 3 model error (missing or
invalid model file, or the model failed on every frame); 130 interrupted (Ctrl-C). Errors are one line
on stderr, without a traceback (-v adds logging and lets the Kinect SDK print its own log to stdout,
which it otherwise does for every error; `K4A_ENABLE_LOG_TO_STDOUT` set by the user wins). After a
mid-run failure or Ctrl-C the outputs hold every frame processed so far and are complete, readable files.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import queue
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from app.interrupt import CtrlCRequest

__all__ = ["main", "build_parser", "RecordControl", "ViewerControls", "DEMO_RECORDING", "DEFAULT_MODEL",
           "RECORDINGS_DIR", "EXIT_OK", "EXIT_INPUT", "EXIT_MODEL", "EXIT_INTERRUPTED"]

log = logging.getLogger("app")

REPO = Path(__file__).resolve().parent.parent
DEMO_RECORDING = REPO / "assets" / "demo" / "demo.mkv"
DEFAULT_MODEL = REPO / "assets" / "weights" / "fusemesh_lite.onnx"
RECORDINGS_DIR = Path("recordings")  # relative to the working directory: where the viewer's R key records
EXIT_OK, EXIT_INPUT, EXIT_MODEL, EXIT_INTERRUPTED = 0, 2, 3, 130
_MODES = ("auto", "rgbd", "depth", "rgb")
_PROVIDERS = ("tensorrt", "cuda", "cpu")


class _CliError(Exception):
    """A one-line error with its exit code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _shown(path: Path) -> str:
    """A repository path relative to the repository root (for help texts)."""
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m app", description="FuseMesh: real-time human mesh recovery from RGB-D frames.",
        epilog="Exit codes: 0 ok, 2 bad arguments or input, 3 model error, 130 interrupted.")
    src = p.add_argument_group("input")
    src.add_argument("--source", metavar="SPEC",
                     help="file.mkv, an RGB-D folder, or k4a[:index] (default: a connected Kinect, else the "
                          f"bundled demo recording {_shown(DEMO_RECORDING)})")
    src.add_argument("--calibration", metavar="FILE",
                     help="calibration for a recording/folder that lacks one (rig JSON or raw Kinect JSON)")
    src.add_argument("--realtime", action="store_true", help="replay at the recorded speed, dropping late frames")
    src.add_argument("--loop", action="store_true", help="restart a recording or folder at its end")
    src.add_argument("--start-frame", type=int, default=0, metavar="N", help="first frame of a recording")
    src.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    mdl = p.add_argument_group("model")
    mdl.add_argument("--model", default=str(DEFAULT_MODEL), metavar="FILE.onnx",
                     help=f"exported FuseMesh model (default {_shown(DEFAULT_MODEL)})")
    mdl.add_argument("--providers", default=",".join(_PROVIDERS), metavar="LIST",
                     help="ONNX Runtime providers in order of preference, from tensorrt,cuda,cpu (default all; "
                          "unusable ones are skipped)")
    mdl.add_argument("--threads", type=int, default=None, metavar="N", help="CPU inference threads")
    mdl.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=True,
                     help="on ONNX Runtime's CUDA provider, replay the model as one captured CUDA graph "
                          "(default on; a model that cannot be captured runs plain CUDA, and the log says why)")
    mdl.add_argument("--mode", choices=_MODES, default="auto",
                     help="input mode: auto follows the streams; rgbd/depth/rgb force one (default auto)")
    mdl.add_argument("--warm-start", action=argparse.BooleanOptionalAction, default=None,
                     help="start the model from the previous frame's estimate while the same person is tracked "
                          f"(default {'on' if _default_warm_start() else 'off'}; needs a model exported with "
                          "warm-start inputs)")
    smo = p.add_argument_group("smoothing (One Euro filter)")
    smo.add_argument("--no-smooth", action="store_true", help="no temporal smoothing")
    smo.add_argument("--smooth-min-cutoff", type=float, default=None, metavar="HZ",
                     help="pose filter's minimum cutoff (default 1.5 Hz; lower = smoother, more lag)")
    smo.add_argument("--smooth-beta", type=float, default=None, metavar="B",
                     help="pose filter's speed coefficient (default 0.8; higher = less lag in fast motion)")
    out = p.add_argument_group("output")
    out.add_argument("--out", metavar="DIR", help="write results.npz, frames.jsonl, motion.bvh (and meshes) here "
                     "(viewer: from the start; R stops and starts takes)")
    out.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    out.add_argument("--meshes", choices=("none", "obj", "ply"), default="none", help="per-frame mesh files")
    out.add_argument("--no-bvh", action="store_true", help="do not write motion.bvh")
    out.add_argument("--headless", action="store_true",
                     help="no window: write outputs (and the overlay video) to --out")
    out.add_argument("--no-overlay", action="store_true", help="with --headless: no overlay.mp4 / thumbnails")
    out.add_argument("--gt", metavar="FILE.gt.npz", default=None,
                     help="with --headless: print per-frame and mean PA-MPJPE against this ground-truth sidecar "
                          "(default: clip.gt.npz next to a clip.mkv source, when present)")
    out.add_argument("--no-gt", action="store_true", help="do not score against a ground-truth sidecar")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)")
    return p


def _default_warm_start() -> bool:
    from app.worker import WorkerConfig

    return bool(WorkerConfig.warm_start)


def _error(message: str) -> None:
    print(f"fusemesh: error: {' '.join(str(message).split())}", file=sys.stderr)


def _note(message: str) -> None:
    print(f"fusemesh: {message}", file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse arguments and run; returns the exit code (never raises for expected failures)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse printed its message (or --help)
        return int(exc.code) if isinstance(exc.code, int) else EXIT_INPUT
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.verbose == 0:  # libk4a/libk4arecord print their own error trail to stdout; our one line says it
        os.environ.setdefault("K4A_ENABLE_LOG_TO_STDOUT", "0")
    try:
        return _run(args)
    except _CliError as exc:
        _error(exc)
        return exc.code
    except KeyboardInterrupt:
        _note("interrupted")
        return EXIT_INTERRUPTED


# ---------------------------------------------------------------------------------------- setup
def _check_args(args: argparse.Namespace) -> list[str]:
    providers = [p.strip().lower() for p in str(args.providers).split(",") if p.strip()]
    bad = [p for p in providers if p not in _PROVIDERS]
    if not providers or bad:
        raise _CliError(f"--providers: unknown provider {bad[0]!r} (choose from {', '.join(_PROVIDERS)})" if bad
                        else "--providers is empty", EXIT_INPUT)
    if args.headless and not args.out:
        raise _CliError("--headless needs --out DIR (there is no window to show results in)", EXIT_INPUT)
    if args.max_frames is not None and args.max_frames < 1:
        raise _CliError(f"--max-frames must be >= 1, got {args.max_frames}", EXIT_INPUT)
    if args.start_frame < 0:
        raise _CliError(f"--start-frame must be >= 0, got {args.start_frame}", EXIT_INPUT)
    if args.threads is not None and args.threads < 1:
        raise _CliError(f"--threads must be >= 1, got {args.threads}", EXIT_INPUT)
    for name in ("smooth_min_cutoff", "smooth_beta"):
        value = getattr(args, name)
        if value is not None and not (value > 0 if name == "smooth_min_cutoff" else value >= 0):
            raise _CliError(f"--{name.replace('_', '-')} must be {'> 0' if name == 'smooth_min_cutoff' else '>= 0'}, "
                            f"got {value}", EXIT_INPUT)
    return providers


def _open_source(args: argparse.Namespace) -> Any:
    from app.frames import SourceError
    from app.sources import open_source

    def open_spec(spec: str) -> Any:
        if spec == "k4a" or spec.startswith("k4a:"):
            return open_source(spec)
        options: dict[str, Any] = {"loop": args.loop}
        if args.calibration:
            options["calibration"] = args.calibration
        if Path(spec).suffix.lower() == ".mkv" and not Path(spec).is_dir():
            options.update(realtime=args.realtime, start_frame=args.start_frame)
        return open_source(spec, **options)

    try:
        if args.source:
            return open_spec(args.source)
        try:
            return open_spec("k4a")
        except SourceError as exc:
            if not DEMO_RECORDING.is_file():
                raise SourceError(f"no Azure Kinect ({exc}) and no demo recording at {DEMO_RECORDING}; pass "
                                  "--source FILE.mkv|DIR|k4a[:index]") from exc
            _note(f"no Azure Kinect ({exc}); playing the demo recording {DEMO_RECORDING}")
            return open_spec(str(DEMO_RECORDING))
    except SourceError as exc:
        message = str(exc)
        if "calibration" in message and "--calibration" not in message and not args.calibration:
            message += " (use --calibration FILE)"
        raise _CliError(message, EXIT_INPUT) from exc


def _open_session(args: argparse.Namespace, providers: list[str]) -> Any:
    from app.runtime import InferenceSession, ModelFileError

    try:
        return InferenceSession(args.model, providers=providers, cpu_threads=args.threads, cuda_graph=args.cuda_graph)
    except ModelFileError as exc:
        hint = " (export one with python -m training.export)" if "not found" in str(exc) else ""
        raise _CliError(f"{exc}{hint}", EXIT_MODEL) from exc
    except (OSError, ValueError) as exc:
        raise _CliError(f"{args.model}: cannot load the model ({exc})", EXIT_MODEL) from exc


def _worker_config(args: argparse.Namespace) -> Any:
    import dataclasses

    from app.smoothing import SmoothingConfig
    from app.worker import WorkerConfig

    smoothing = SmoothingConfig(enabled=not args.no_smooth)
    pose = smoothing.pose
    if args.smooth_min_cutoff is not None:
        pose = dataclasses.replace(pose, min_cutoff=args.smooth_min_cutoff)
    if args.smooth_beta is not None:
        pose = dataclasses.replace(pose, beta=args.smooth_beta)
    warm = WorkerConfig.warm_start if args.warm_start is None else bool(args.warm_start)
    return WorkerConfig(mode=args.mode, smoothing=dataclasses.replace(smoothing, pose=pose), warm_start=warm)


def _faces(session: Any) -> Optional[np.ndarray]:
    try:
        return session.contract.faces()
    except (ValueError, AttributeError):
        return None


def _existing_overlay(out: Path) -> Optional[Path]:
    from app.headless import HeadlessRenderer

    video = out / HeadlessRenderer.VIDEO_NAME
    if video.exists():
        return video
    thumbs = out / HeadlessRenderer.THUMBNAIL_DIR
    if thumbs.is_dir() and any(thumbs.glob("frame_*.png")):
        return thumbs
    return None


# ---------------------------------------------------------------------------------------- run
def _run(args: argparse.Namespace) -> int:
    from app.capture_thread import CaptureThread
    from app.outputs import OutputError, OutputWriter
    from app.worker import RESULTS_MAXSIZE, InferenceWorker

    providers = _check_args(args)
    if not args.headless:  # fail before opening anything when there can be no window
        try:
            import app.viewer as viewer
        except ImportError as exc:
            raise _CliError(f"the viewer is not available ({exc}); use --headless --out DIR", EXIT_INPUT) from exc
        problem = getattr(viewer, "_display_problem", lambda: None)()
        if problem:
            raise _CliError(f"viewer: {problem}", EXIT_INPUT)
    if args.out and not args.overwrite and args.headless and not args.no_overlay:
        found = _existing_overlay(Path(args.out))
        if found is not None:
            raise _CliError(f"{found}: already exists (pass --overwrite to replace)", EXIT_INPUT)
    with contextlib.ExitStack() as stack:
        source = _open_source(args)
        stack.callback(source.close)
        for stream in ("color", "depth"):
            if not getattr(source, f"has_{stream}", True):
                _note(f"{source.name}: no {stream} stream; running {'depth' if stream == 'color' else 'RGB'}-only")
        session = _open_session(args, providers)
        log.info("%s", session.describe())
        if args.warm_start and not getattr(session, "warm_start", False):
            _note(f"{Path(args.model).name} has no warm-start inputs (exported before warm start); every frame "
                  "starts from the mean")
        faces = _faces(session)
        writer = None
        if args.out:
            try:
                # frame rate from the written frames' timestamps: right also when a live run drops frames
                writer = OutputWriter(args.out, meshes=None if args.meshes == "none" else args.meshes, faces=faces,
                                      bvh=not args.no_bvh, overwrite=args.overwrite)
            except OutputError as exc:
                raise _CliError(str(exc), EXIT_INPUT) from exc
            stack.callback(writer.close)
        capture = CaptureThread(source)
        # bounded: a consumer slower than inference holds at most RESULTS_MAXSIZE frames (app.worker)
        worker = InferenceWorker(session, capture, config=_worker_config(args),
                                 results=queue.Queue(maxsize=RESULTS_MAXSIZE))
        worker.prepare(source.rig)
        if args.headless:
            return _run_headless(args, source, capture, worker, writer, faces)
        return _run_viewer(args, source, capture, worker, writer, faces)
    return EXIT_OK  # pragma: no cover


def _stop(capture: Any, worker: Any) -> None:
    capture.stop()
    worker.stop()


def _run_headless(args: argparse.Namespace, source: Any, capture: Any, worker: Any, writer: Any,
                  faces: Optional[np.ndarray]) -> int:
    from tqdm import tqdm

    from app.outputs import SMPL_PARENTS

    overlay = None
    if not args.no_overlay:
        if faces is None:
            _note("the model file carries no body faces: no overlay video")
        else:
            from app.headless import HeadlessError, HeadlessRenderer
            if args.overwrite:  # the video is replaced by the renderer; old thumbnails would linger
                for old in (Path(args.out) / HeadlessRenderer.THUMBNAIL_DIR).glob("frame_*.png"):
                    old.unlink()
            try:
                overlay = HeadlessRenderer(args.out, faces, SMPL_PARENTS, fps=float(getattr(source, "fps", 30) or 30))
            except (HeadlessError, ValueError) as exc:
                raise _CliError(str(exc), EXIT_INPUT) from exc
    total = _expected_frames(source, args)
    bar = tqdm(total=total, unit="frame", desc="fusemesh", disable=args.no_progress or source.is_live,
               file=sys.stderr, dynamic_ncols=True)
    stats = _RunStats()
    stats.score = _ground_truth(args, source)
    failure: Optional[BaseException] = None
    interrupted = False
    capture.start()
    worker.start()
    ctrl_c = CtrlCRequest()  # the first Ctrl-C finishes the frame being written; a second one raises
    try:
        with ctrl_c:
            while not ctrl_c.requested:
                try:
                    item = worker.results.get(timeout=0.25)
                except queue.Empty:
                    continue
                if item is None:
                    break
                if isinstance(item, BaseException):
                    failure = item
                    break
                frame, result = item
                _consume(writer, overlay, frame, result, stats)
                bar.update(1)
                if args.max_frames is not None and stats.frames >= args.max_frames:
                    break
        interrupted = ctrl_c.requested
    except KeyboardInterrupt:  # a second Ctrl-C: stop without waiting for the current frame
        interrupted = True
    finally:
        _stop(capture, worker)
        try:
            if interrupted:  # results already computed are complete frames: keep them
                for item in _drain(worker.results):
                    _consume(writer, overlay, *item, stats)
        finally:
            bar.close()
            try:
                if overlay is not None:
                    overlay.close()
            finally:
                if writer is not None:
                    _close_writer(writer)
    return _finish(args, worker, stats, failure, interrupted)


def _close_writer(writer: Any) -> None:
    """Close the output writer; a failure (disk full) becomes the run's one-line error, or a note when the
    run is already failing for another reason (e.g. the same disk filled up during a frame)."""
    from app.outputs import OutputError

    try:
        writer.close()
    except (OutputError, OSError) as exc:
        if sys.exc_info()[0] is not None:  # already unwinding with an error: keep that one, mention this
            _note(f"also: {exc}")
            return
        raise _CliError(f"cannot write outputs: {exc}", EXIT_INPUT) from exc


def _ground_truth(args: argparse.Namespace, source: Any) -> Any:
    """A ReplayScore for --gt, or for the sidecar next to an .mkv source (also the default demo recording);
    None when there is none or with --no-gt."""
    from app.groundtruth import GroundTruth, GroundTruthError, ReplayScore, sidecar_for

    if args.no_gt:
        return None
    recording = getattr(source, "path", None)
    path = Path(args.gt) if args.gt else sidecar_for(recording) if recording is not None else None
    if path is None:
        return None
    try:
        truth = GroundTruth.from_sidecar(path)
    except GroundTruthError as exc:
        raise _CliError(str(exc), EXIT_INPUT) from exc
    _note(f"scoring against {_shown(path)} ({len(truth)} frames of ground truth)")
    return ReplayScore(truth)


def _drain(results: queue.Queue) -> list[tuple[Any, Any]]:
    items = []
    while True:
        try:
            item = results.get_nowait()
        except queue.Empty:
            return items
        if isinstance(item, tuple):
            items.append(item)


def _expected_frames(source: Any, args: argparse.Namespace) -> Optional[int]:
    """Frames a replay will deliver (for the progress bar; from the header, no file scan), None if unknown."""
    if source.is_live or args.loop:
        return None
    n: Optional[int] = None
    if hasattr(source, "__len__"):
        n = len(source)
    elif hasattr(source, "duration_s") and getattr(source, "fps", None):
        n = max(1, int(round(source.duration_s * source.fps)) + 1 - args.start_frame)
    if n is not None and args.max_frames is not None:
        n = min(n, args.max_frames)
    return n


class _RunStats:
    def __init__(self) -> None:
        self.frames = 0
        self.bodies = 0
        self.warm_starts = 0
        self.modes: Counter = Counter()
        self.timings: dict[str, list[float]] = {}
        self.messages: Counter = Counter()
        self.score: Any = None  # app.groundtruth.ReplayScore when scoring against a sidecar

    def add(self, result: Any) -> None:
        self.frames += 1
        if self.score is not None:
            err = self.score.add(result)
            mode = getattr(result.mode, "value", str(result.mode))
            shown = f"{err:6.1f} mm" if err is not None else "     -   "
            print(f"frame {result.frame_id:5d}  t {result.timestamp_usec / 1e6:8.3f} s  {mode:5s}  PA-MPJPE {shown}",
                  flush=True)
        self.bodies += result.body is not None
        self.warm_starts += bool(getattr(result, "warm_start", False))
        self.modes[getattr(result.mode, "value", str(result.mode))] += 1
        for k, v in result.timings_ms.items():
            self.timings.setdefault(k, []).append(float(v))
        if result.body is None and result.message:
            self.messages[result.message.split(":")[0]] += 1


def _consume(writer: Any, overlay: Any, frame: Any, result: Any, stats: _RunStats) -> None:
    from app.headless import HeadlessError
    from app.outputs import OutputError

    try:
        if overlay is not None:
            t0 = time.perf_counter()
            overlay.add(frame, result)
            result.timings_ms["render"] = (time.perf_counter() - t0) * 1e3
        if writer is not None:
            writer.write(result)
    except (OutputError, HeadlessError, OSError, ValueError) as exc:
        raise _CliError(f"cannot write outputs: {exc}", EXIT_INPUT) from exc
    stats.add(result)


def _finish(args: argparse.Namespace, worker: Any, stats: _RunStats, failure: Optional[BaseException],
            interrupted: bool) -> int:
    from app.frames import SourceError

    modes = ", ".join(f"{k} {v}" for k, v in sorted(stats.modes.items()))
    stages = ", ".join(f"{k} {np.median(v):.1f}" for k, v in stats.timings.items() if v)
    summary = f"{stats.frames} frames, {stats.bodies} with a body ({modes or 'none'})"
    if stats.warm_starts:
        summary += f", {stats.warm_starts} warm-started"
    if stages:
        summary += f"; median ms: {stages}"
    if args.out:
        summary += f"; outputs in {args.out}"
    _note(summary)
    if stats.score is not None:
        print(stats.score.summary(), flush=True)
    if stats.messages:
        _note("frames without a body: " + ", ".join(f"{k} ({v})" for k, v in stats.messages.most_common(3)))
    if interrupted:
        _note("interrupted")
        return EXIT_INTERRUPTED
    if failure is not None:
        _error(failure if isinstance(failure, SourceError) else f"{type(failure).__name__}: {failure}")
        return EXIT_INPUT
    attempted = worker.inference_failures + stats.bodies
    if stats.frames and worker.inference_failures and worker.inference_failures == attempted:
        _error(f"the model failed on every frame: {worker.last_failure}")
        return EXIT_MODEL
    if stats.frames == 0:
        _error("the source delivered no frames")
        return EXIT_INPUT
    return EXIT_OK


def _run_viewer(args: argparse.Namespace, source: Any, capture: Any, worker: Any, writer: Any,
                faces: Optional[np.ndarray]) -> int:
    from app.frames import SourceError
    from app.outputs import SMPL_PARENTS

    try:
        from app.viewer import run_viewer
    except ImportError as exc:
        raise _CliError(f"the viewer is not available ({exc}); use --headless --out DIR", EXIT_INPUT) from exc
    if faces is None:
        raise _CliError(f"{args.model}: the model file carries no body faces, which the viewer needs; use "
                        "--headless --out DIR", EXIT_INPUT)
    from app.outputs import OutputWriter
    from app.viewer import ViewerConfig

    stats = _RunStats()
    out = Path(args.out) if args.out else None

    def make_writer(folder: Path) -> Any:
        return OutputWriter(folder, meshes=None if args.meshes == "none" else args.meshes, faces=faces,
                            bvh=not args.no_bvh, overwrite=bool(args.overwrite) and folder == out)

    recorder = RecordControl(make_writer, out=out, writer=writer)
    controls = ViewerControls(worker.force_mode, recorder, stats)
    worker.on_result = controls.on_result
    if writer is not None:
        _note(f"recording to {out} (R stops)")

    failure: Optional[BaseException] = None
    interrupted = False
    capture.start()
    worker.start()
    viewer_error: Optional[str] = None
    try:
        run_viewer(worker.results, faces, SMPL_PARENTS, on_key=controls.on_key,
                   config=ViewerConfig(start_recording=recorder.recording))
    except KeyboardInterrupt:
        interrupted = True
    except SourceError as exc:
        failure = exc
    except RuntimeError as exc:  # no display, no OpenGL: the viewer says why
        viewer_error = str(exc)
    finally:
        _stop(capture, worker)
        recorder.close()
    if viewer_error is not None:
        raise _CliError(f"viewer: {viewer_error}", EXIT_INPUT)
    if recorder.errors:
        raise _CliError(f"cannot write outputs: {recorder.errors[0]}", EXIT_INPUT)
    if failure is None and worker.error is not None:
        failure = worker.error
    return _finish(args, worker, stats, failure, interrupted)


# ---------------------------------------------------------------------------------------- viewer keys
class RecordControl:
    """Starts and stops writing outputs while the viewer runs (the R key); see the module docstring.

    Threads: `start` / `stop` / `toggle` / `close` are called on the GUI thread, `write` on the inference
    thread; a lock orders them, so a frame is either in a take or not, never half-written.
    make_writer(folder) -> OutputWriter; out: --out (None: takes go under `root`); writer: an already open
    writer for `out` (recording from the start); root: where timestamped takes go; clock() -> the stamp
    text; say: where the one-line messages go (default: stderr). A take that cannot be opened or written
    is reported once (`errors`, printed), stopped, and the run goes on.
    """

    def __init__(self, make_writer: Callable[[Path], Any], *, out: Optional[Path] = None, writer: Any = None,
                 root: Path = RECORDINGS_DIR, clock: Callable[[], str] = lambda: time.strftime("%Y%m%d_%H%M%S"),
                 say: Optional[Callable[[str], None]] = None):
        self.make_writer = make_writer
        self.out = None if out is None else Path(out)
        self.root = Path(root)
        self.clock = clock
        self.say = say or _note
        self.takes: list[Path] = [self.out] if writer is not None and self.out is not None else []
        self.errors: list[BaseException] = []
        self._writer = writer
        self._lock = threading.Lock()

    @property
    def recording(self) -> bool:
        with self._lock:
            return self._writer is not None

    def _next_folder(self) -> Path:
        if self.out is not None and not self.takes:
            return self.out
        stamp = self.clock()
        base = self.out.with_name(f"{self.out.name}_{stamp}") if self.out is not None else self.root / stamp
        folder, k = base, 2
        while folder.exists() or folder in self.takes:
            folder = base.with_name(f"{base.name}_{k}")
            k += 1
        return folder

    def start(self) -> Optional[Path]:
        """Open a new take (no-op while recording); returns its folder, None if it could not be opened."""
        with self._lock:
            if self._writer is not None:
                return self.takes[-1] if self.takes else None
            folder = self._next_folder()
            try:
                self._writer = self.make_writer(folder)
            except Exception as exc:  # OutputError, OSError: say it, keep the viewer running
                self.errors.append(exc)
                self.say(f"cannot record: {exc}")
                return None
            self.takes.append(folder)
        self.say(f"recording to {folder} (R stops)")
        return folder

    def stop(self) -> Optional[Path]:
        """Close the current take (results.npz / motion.bvh written); returns its folder, None if idle."""
        with self._lock:
            writer, self._writer = self._writer, None
            if writer is None:
                return None
            frames = writer.frames_written
            try:
                writer.close()
            except Exception as exc:
                self.errors.append(exc)
                self.say(f"cannot finish the recording in {writer.out_dir}: {exc}")
                return writer.out_dir
        self.say(f"recording stopped: {frames} frames in {writer.out_dir}")
        return writer.out_dir

    def toggle(self) -> Optional[Path]:
        return self.stop() if self.recording else self.start()

    def write(self, result: Any) -> bool:
        """Inference thread: add one result to the current take; False when not recording."""
        with self._lock:
            if self._writer is None:
                return False
            try:
                self._writer.write(result)
                return True
            except Exception as exc:  # reported once; the take ends here
                self.errors.append(exc)
                message = f"recording stopped: cannot write to {self._writer.out_dir}: {exc}"
                writer, self._writer = self._writer, None
        self.say(message)
        with contextlib.suppress(Exception):
            writer.close()
        return False

    def close(self) -> None:
        """End of the run: finish the current take (prints where it is). Idempotent."""
        if self.recording:
            self.stop()


class ViewerControls:
    """What the CLI hands the viewer: `on_key(action)` (GUI thread) and `on_result(frame, result)` (the
    inference thread's callback). force_mode: the worker's `force_mode`; recorder: a RecordControl;
    stats: the run's counters (anything with `add(result)`)."""

    MODES = {"mode_rgbd": "rgbd", "mode_depth": "depth", "mode_rgb": "rgb", "mode_auto": "auto"}

    def __init__(self, force_mode: Callable[[str], None], recorder: RecordControl, stats: Any = None):
        self.force_mode = force_mode
        self.recorder = recorder
        self.stats = stats

    def on_key(self, action: str) -> None:
        if action in self.MODES:
            self.force_mode(self.MODES[action])
        elif action == "record_start":
            self.recorder.start()
        elif action == "record_stop":
            self.recorder.stop()

    def on_result(self, frame: Any, result: Any) -> None:
        self.recorder.write(result)
        if self.stats is not None:
            self.stats.add(result)
