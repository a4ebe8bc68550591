"""The inference worker: RgbdFrame -> FrameResult, on its own thread, one frame at a time.

Thread "inference" (`InferenceWorker.run`) owns the ONNX session, the stream health, the aligners, the
person localiser, the smoother and the track; it is their only user. It reads frames from a
`CaptureThread` / `LatestFrameMailbox` (anything with `get(timeout)` raising `EndOfStream` /
`SourceError`) and posts `(frame, result)` pairs to `on_result` (called on this thread) and/or the
`results` queue; when the thread ends it puts an end marker in that queue: None after the end of the
stream or a stop, the capture's `SourceError` after a capture failure (the viewer's `run_viewer`
protocol). Any thread may call `force_mode`, `stop` and read the counters.

Backpressure: the results queue is bounded (`RESULTS_MAXSIZE` when the worker creates it; the CLI and
the soak pass one of that size too), so a consumer that cannot keep up (writing, the overlay video)
never holds more than that many frames (images + mesh) in memory. When it is full the worker waits,
in `put(timeout=get_timeout_s)` steps that re-check `stop()`, so a stop is honoured within one step
even while the consumer is stalled. The wait propagates upstream: a replay (every frame, blocking
mailbox) runs at the consumer's pace and loses nothing; a live source keeps latest-frame-wins in the
capture mailbox, which drops and counts the frames the worker did not take. Only a stop() while the
queue is full can discard the one result in hand (and the end marker): counted in `results_discarded`.
`process(frame)` runs the pipeline synchronously (tests, or a caller that owns the worker instead).

Per frame (timings_ms keys in brackets; "capture" is how long the worker waited for the frame, "decode"
is the source's own measurement carried on the frame (`RgbdFrame.decode_ms`, reported when the source
gives one), "render" happens in the viewer / headless writer and is not timed here):

1. Mode. A stream is fed to the model when the requested mode includes it (auto: all), this frame has
   it with status OK, and `StreamHealth` (drop after 1 bad frame, restore after `restore_after` good
   ones, so a flickering stream does not thrash) calls it usable. mode = 'rgbd' | 'depth' | 'rgb' from
   the fed streams; a dropped stream is fed as zeros (dynamic fusion) and FrameResult.mode says which
   mode each frame used. A forced mode (`force_mode`, the viewer's key) behaves as if the other stream
   were gone: forced 'rgb' uses no depth anywhere (not for the crop, not for placement), so the
   fallback shown live is the real one.
2. [align] Color -> depth grid with `calibration.ColorToDepthAligner` (built once per rig). RGB only:
   the color image is aligned through a plane at the person's last known depth (else
   `default_depth_m`): the parallax error of the 3 cm color/depth baseline is then a pixel or two.
3. [crop] Person box: from depth, `app.localize.PersonLocalizer` (prior: the previous mesh's pelvis);
   no depth: the previous mesh projected into the depth image, else the previous box, else (nothing
   seen yet) a person-sized box (1.8 m at default_depth_m) in the image centre, said in the message.
   Square crop with `app.crop.box_around` (margin 1.25, the training crop's), `crop_color` /
   `crop_depth` / `crop_mask`; reference depth with `model.preprocess.reference_depth` over the person
   mask (the same functions training uses).
4. [infer] `session.run(rgb (1,3,S,S) uint8 RGB, depth (1,1,S,S) m, ref (1,), stream_mask (1,2))`.
   Warm start (`WorkerConfig.warm_start`, models exported with warm-start inputs): when the track
   continues, i.e. the previous frame gave a body and this frame's person is the same one (the
   localiser chose it by the track; without depth, the box comes from the previous mesh), the IEF
   regressor starts from the previous frame's *raw* estimate (pose6d, beta, cam as the model returned
   them, before placement and smoothing); otherwise (first frame, a frame without a body in between, a
   new person, a failed frame) from the model's mean. `FrameResult.warm_start` says which. Off by
   default: the regressor is trained from the mean only, and on a 60-frame synthetic walk (an early
   lite checkpoint, `python -m app.replay_bench`) warm starts lowered PA-MPJPE (155 vs 181 mm) but
   let the weak camera drift (placed MPJPE 362 vs 331 mm) and doubled the jitter; latency is the same.
5. [post] `app.placement.place_body` (weak camera + crop + intrinsics, refined with the observed person
   depth when depth was fed) and `app.smoothing.BodySmoother` (One Euro; restarted when the person was
   lost for longer than its max gap).

FrameResult.dropped_frames is the capture mailbox's running count of frames replaced before the worker
read them (latest-frame-wins delivery; always 0 for replays, which deliver every frame).

A bad frame never kills the thread: any exception becomes a FrameResult with body=None and a message
naming the problem (`failures` counts them, `inference_failures` those raised by the session). No
person in view or no usable stream are results with body=None and a message too.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

import cv2
import numpy as np

from app.crop import box_around, crop_color, crop_depth, crop_mask
from app.frames import RgbdFrame, SourceError, StreamStatus, streams_label
from app.health import StreamHealth
from app.localize import Detection, LocalizeConfig, PersonLocalizer
from app.mailbox import EndOfStream
from app.placement import PlacementConfig, place_body
from app.results import BodyEstimate, FrameResult, InputMode
from app.runtime import WARM_START_SOURCES as _WARM_SOURCES
from app.smoothing import BodySmoother, SmoothingConfig
from calibration.align import ColorToDepthAligner
from calibration.rig import RgbdRig
from model.preprocess import reference_depth

__all__ = ["MODES", "RESULTS_MAXSIZE", "WorkerConfig", "InferenceWorker", "ModelSession"]

log = logging.getLogger(__name__)

MODES = ("auto", "rgbd", "depth", "rgb")
"""Requested modes: auto follows the streams; the others force a subset of them."""

RESULTS_MAXSIZE = 4
"""Default bound of the results queue, in (frame, result) pairs (each holds the frame's images and a mesh)."""


class ModelSession(Protocol):
    """What the worker needs from `app.runtime`'s session (one call per frame, batch 1). A session with a
    true `warm_start` attribute also takes init_pose6d / init_beta / init_cam keywords and returns pose6d."""

    def run(self, rgb: np.ndarray, depth: np.ndarray, ref_depth: np.ndarray, stream_mask: np.ndarray,
            **init: np.ndarray) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class WorkerConfig:
    """mode: initial requested mode (MODES); crop_margin: crop side / person box side (training's 1.25);
    input_size: crop size in px (None: from the session's contract); default_depth_m: person depth assumed
    before any was seen (RGB-only alignment plane, default box); restore_after: good frames before a
    dropped stream is used again; track_frames: how many frames a previous mesh / box may stand in for
    a missing depth localisation; warm_start: start the model from the previous frame's raw estimate
    while the track continues (module docstring; needs a model with warm-start inputs, else ignored);
    get_timeout_s: wait per `get` and per step of a `put` into a full results queue (bounds stop
    latency); join_timeout_s: how long `stop` waits for the thread."""

    mode: str = "auto"
    crop_margin: float = 1.25
    input_size: Optional[int] = None
    default_depth_m: float = 2.5
    restore_after: int = 3
    track_frames: int = 30
    warm_start: bool = False
    get_timeout_s: float = 0.1
    join_timeout_s: float = 5.0
    localize: LocalizeConfig = field(default_factory=LocalizeConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not 1.0 <= self.crop_margin <= 3.0:
            raise ValueError(f"crop_margin must be in [1, 3], got {self.crop_margin}")
        if self.input_size is not None and not (isinstance(self.input_size, int) and self.input_size >= 16):
            raise ValueError(f"input_size must be an int >= 16 or None, got {self.input_size!r}")
        if not 0.3 <= self.default_depth_m <= 10.0:
            raise ValueError(f"default_depth_m must be in [0.3, 10] m, got {self.default_depth_m}")
        if self.restore_after < 1 or self.track_frames < 0:
            raise ValueError("restore_after must be >= 1 and track_frames >= 0")
        if not (self.get_timeout_s > 0 and self.join_timeout_s > 0):
            raise ValueError("get_timeout_s and join_timeout_s must be > 0")


def _session_input_size(session: Any) -> Optional[int]:
    for owner in (getattr(session, "contract", None), session):
        size = getattr(owner, "input_size", None) if owner is not None else None
        if isinstance(size, (int, np.integer)) and size > 0:
            return int(size)
    return None


@dataclass
class _Track:
    """The last body seen: where to look (and what depth to assume) when depth is missing."""

    frame_index: int
    bbox: np.ndarray
    pelvis: Optional[np.ndarray]
    vertices: Optional[np.ndarray]
    ref_depth_m: float
    init: Optional[dict[str, np.ndarray]] = None  # raw model outputs for a warm start: {input name: (1, n)}


class InferenceWorker(threading.Thread):
    """Thread "inference": owns `session` and the per-person state (see the module docstring).

    session: `app.runtime` session (run(...) -> dict with theta, beta, cam, vertices, joints);
    frames: a CaptureThread or LatestFrameMailbox (`get(timeout)`); None for `process()`-only use;
    on_result(frame, result): called on this thread for every frame; results: a queue.Queue that also
    gets every (frame, result) pair and the end marker (created, bounded to RESULTS_MAXSIZE, when neither
    is given; pass a bounded one: the worker waits while it is full, see the module docstring). Start with
    `start()`, end with `stop()`; `done` is set when the thread has finished (end of stream, error or
    stop); `error` holds the capture error, if any.
    """

    def __init__(self, session: ModelSession, frames: Any = None, *, config: WorkerConfig = WorkerConfig(),
                 on_result: Optional[Callable[[Optional[RgbdFrame], FrameResult], None]] = None,
                 results: Optional[queue.Queue] = None):
        super().__init__(name="inference", daemon=True)
        self.session = session
        self.frames = frames
        self.config = config
        self.input_size = config.input_size or _session_input_size(session)
        if self.input_size is None:
            raise ValueError("the session does not state its input size (contract.input_size); set "
                             "WorkerConfig.input_size")
        self.on_result = on_result
        self.results: Optional[queue.Queue] = results if results is not None or on_result is not None \
            else queue.Queue(maxsize=RESULTS_MAXSIZE)
        self.health = StreamHealth(drop_after=1, restore_after=config.restore_after)
        self.smoother = BodySmoother(config.smoothing)
        self._lock = threading.Lock()
        self._forced = config.mode
        self._stop_event = threading.Event()
        self.done = threading.Event()
        self.error: Optional[BaseException] = None
        self.eof = False
        self.frames_processed = 0
        self.failures = 0
        self.inference_failures = 0
        self.warm_starts = 0
        self.results_discarded = 0
        self.last_failure: Optional[str] = None
        self._aligners: dict[int, tuple[RgbdRig, ColorToDepthAligner]] = {}
        self._localizers: dict[int, tuple[RgbdRig, PersonLocalizer]] = {}
        self._track: Optional[_Track] = None

    # ------------------------------------------------------------------ any thread
    def force_mode(self, mode: str) -> None:
        """Request 'auto' | 'rgbd' | 'depth' | 'rgb' from the next frame on (the viewer's key)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        with self._lock:
            self._forced = mode

    @property
    def requested_mode(self) -> str:
        with self._lock:
            return self._forced

    def stop(self) -> bool:
        """Ask the thread to end after the current frame; waits up to join_timeout_s. True if it ended."""
        self._stop_event.set()
        if self.ident is None:
            return True
        if self.is_alive() and threading.current_thread() is not self:
            self.join(self.config.join_timeout_s)
        return not self.is_alive()

    # ------------------------------------------------------------------ thread
    def run(self) -> None:
        try:
            if self.frames is None:
                raise RuntimeError("InferenceWorker was started without a frame source")
            while not self._stop_event.is_set():
                t0 = time.perf_counter()
                try:
                    frame = self.frames.get(self.config.get_timeout_s)
                except EndOfStream:
                    self.eof = True
                    return
                except SourceError as exc:
                    self.error = exc
                    return
                if frame is None:
                    continue
                wait_ms = (time.perf_counter() - t0) * 1e3
                result = self.process(frame, wait_ms=wait_ms)
                self._post(frame, result)
        except BaseException as exc:  # pragma: no cover - process() catches per-frame errors
            log.exception("inference thread crashed")
            self.error = exc
        finally:
            if self.results is not None:
                self._put(self.error)  # None: clean end
            self.done.set()

    def _post(self, frame: Optional[RgbdFrame], result: FrameResult) -> None:
        if self.on_result is not None:
            try:
                self.on_result(frame, result)
            except Exception:  # a consumer's bug must not stop inference
                log.exception("on_result callback failed for frame %s", result.frame_id)
        if self.results is not None:
            self._put((frame, result))

    def _put(self, item: Any) -> bool:
        """Put into `results`, waiting while it is full but never past a stop(); False if discarded."""
        results = self.results
        if results is None:
            return False
        while not self._stop_event.is_set():
            try:
                results.put(item, timeout=self.config.get_timeout_s)
                return True
            except queue.Full:
                continue
        try:  # stopping: keep the item if there is room, never wait
            results.put_nowait(item)
            return True
        except queue.Full:
            self.results_discarded += 1
            return False

    def _dropped_so_far(self) -> int:
        """Frames the capture mailbox replaced before this worker read them (running count)."""
        box = getattr(self.frames, "mailbox", self.frames)
        return int(getattr(box, "dropped", 0) or 0)

    # ------------------------------------------------------------------ per frame
    def process(self, frame: RgbdFrame, wait_ms: float = 0.0) -> FrameResult:
        """Run the pipeline on one frame (the caller's thread); never raises for a bad frame."""
        requested = self.requested_mode
        timings: dict[str, float] = {"capture": float(wait_ms)}
        decode_ms = getattr(frame, "decode_ms", None)
        if decode_ms is not None:
            timings["decode"] = float(decode_ms)
        result = FrameResult(frame_id=int(frame.frame_id), timestamp_usec=int(frame.timestamp_usec),
                             mode=InputMode.NONE, requested_mode=requested, body=None, timings_ms=timings,
                             dropped_frames=self._dropped_so_far())
        try:
            self._pipeline(frame, requested, result)
        except _InferenceError as exc:
            self.inference_failures += 1
            self._failed(frame, result, f"inference failed: {exc}")
        except Exception as exc:
            self._failed(frame, result, f"frame skipped: {type(exc).__name__}: {exc}")
        self.frames_processed += 1
        return result

    def _pipeline(self, frame: RgbdFrame, requested: str, result: FrameResult) -> None:
        cfg = self.config
        timings = result.timings_ms
        report = self.health.update(frame)
        want_color = requested in ("auto", "rgbd", "rgb")
        want_depth = requested in ("auto", "rgbd", "depth")
        color_on = want_color and report.color_usable and frame.color_status is StreamStatus.OK
        depth_on = want_depth and report.depth_usable and frame.depth_status is StreamStatus.OK
        mode = streams_label(color_on, depth_on)
        result.mode = InputMode(mode)
        if mode == "none":
            def state(status: StreamStatus, usable: bool, wanted: bool) -> str:
                if not wanted:
                    return "not requested"
                if status is StreamStatus.OK and not usable:
                    return f"ok, in use again after {cfg.restore_after} good frames"
                return status.value
            result.message = (f"no usable stream (color {state(frame.color_status, report.color_usable, want_color)}, "
                              f"depth {state(frame.depth_status, report.depth_usable, want_depth)}, "
                              f"requested {requested})")
            return
        rig = frame.rig
        notes: list[str] = []

        # ---- align
        t = time.perf_counter()
        aligned_bgr = None
        track = self._track if self._track is not None and \
            self.frames_processed - self._track.frame_index <= cfg.track_frames else None
        if color_on:
            aligner = self._aligner(rig)
            if depth_on:
                aligned_bgr, _ = aligner(frame.color_bgr, frame.depth_mm)
            else:
                plane_m = track.ref_depth_m if track is not None else cfg.default_depth_m
                plane = np.full((rig.depth.height, rig.depth.width), int(round(plane_m * 1000)), np.uint16)
                aligned_bgr, _ = aligner(frame.color_bgr, plane)
        timings["align"] = (time.perf_counter() - t) * 1e3

        # ---- localise + crop
        t = time.perf_counter()
        det: Optional[Detection] = None
        if depth_on:
            prior = track.pelvis if track is not None else None
            det = self._localizer(rig)(frame.depth_mm, prior_xyz=prior)
            if det is None:
                timings["crop"] = (time.perf_counter() - t) * 1e3
                result.message = "no person in view"
                return
            bbox = det.bbox
        else:
            bbox, how = self._box_without_depth(rig, track)
            notes.append(f"no depth: person box from {how}")
        S = self.input_size
        box = box_around(bbox, S, cfg.crop_margin)
        rgb = np.zeros((3, S, S), np.uint8)
        if aligned_bgr is not None:
            rgb = np.ascontiguousarray(cv2.cvtColor(crop_color(aligned_bgr, box), cv2.COLOR_BGR2RGB).transpose(2, 0, 1))
        depth = np.zeros((S, S), np.float32)
        ref = track.ref_depth_m if track is not None else cfg.default_depth_m
        observed: Optional[float] = None
        if depth_on:
            depth = crop_depth(frame.depth_mm, box).astype(np.float32) * np.float32(0.001)
            mask = crop_mask(det.mask, box)
            try:
                observed = reference_depth(depth, mask if np.any(mask & (depth > 0)) else None)
                ref = observed
            except ValueError:
                notes.append("no valid depth in the crop")
        timings["crop"] = (time.perf_counter() - t) * 1e3

        # ---- infer
        t = time.perf_counter()
        init = self._warm_start_init(det)
        try:
            out = self.session.run(rgb[None], depth[None, None], np.array([ref], np.float32),
                                   np.array([[color_on, depth_on]], dtype=bool), **init)
            theta, beta, cam = (np.asarray(out[k], dtype=np.float64)[0] for k in ("theta", "beta", "cam"))
            raw = ({n: np.array(out[src][:1], dtype=np.float32) for n, src in _WARM_SOURCES.items()}
                   if all(src in out for src in _WARM_SOURCES.values()) else None)
            vertices = np.asarray(out["vertices"], dtype=np.float64)[0]
            joints = np.asarray(out["joints"], dtype=np.float64)[0]
        except Exception as exc:
            timings["infer"] = (time.perf_counter() - t) * 1e3
            raise _InferenceError(f"{type(exc).__name__}: {exc}") from exc
        timings["infer"] = (time.perf_counter() - t) * 1e3

        # ---- place + smooth
        t = time.perf_counter()
        if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(cam)) and np.all(np.isfinite(vertices))):
            raise _InferenceError("the model returned NaN or inf")
        placement = place_body(vertices, cam, box, rig.depth, observed_depth_m=observed, config=cfg.placement)
        if track is None:
            self.smoother.reset()
        sm = self.smoother(frame.timestamp_usec / 1e6, theta, beta, placement.transl, vertices, joints)
        body = BodyEstimate(theta=sm.theta.astype(np.float32), beta=sm.beta.astype(np.float32),
                            transl=sm.transl.astype(np.float32), vertices=(sm.vertices + sm.transl).astype(np.float32),
                            joints=(sm.joints + sm.transl).astype(np.float32), cam=cam.astype(np.float32),
                            bbox=np.asarray(bbox, dtype=np.float32))
        self._track = _Track(frame_index=self.frames_processed, bbox=np.asarray(bbox, np.float64),
                             pelvis=body.joints[0].astype(np.float64), vertices=body.vertices,
                             ref_depth_m=float(observed if observed is not None else body.transl[2]), init=raw)
        timings["post"] = (time.perf_counter() - t) * 1e3
        result.body = body
        result.warm_start = bool(init)
        self.warm_starts += bool(init)
        result.message = "; ".join(notes)

    # ------------------------------------------------------------------ helpers
    def _warm_start_init(self, det: Optional[Detection]) -> dict[str, np.ndarray]:
        """The previous frame's raw estimate as run() keywords when the track continues, else {} (the mean)."""
        prev = self._track
        if not (self.config.warm_start and getattr(self.session, "warm_start", False)):
            return {}
        if prev is None or prev.init is None or prev.frame_index != self.frames_processed - 1:
            return {}  # first frame, or the previous frame had no body (lost, failed, no stream)
        if det is not None and not det.tracked:
            return {}  # depth picked someone by position, not by the track: maybe another person
        return dict(prev.init)

    def _failed(self, frame: RgbdFrame, result: FrameResult, message: str) -> None:
        self.failures += 1
        self.last_failure = result.message = message
        if self.failures == 1 or self.failures % 100 == 0:  # the message is in every result anyway
            log.warning("frame %s: %s (%d bad frames so far)", frame.frame_id, message, self.failures)

    def _aligner(self, rig: RgbdRig) -> ColorToDepthAligner:
        entry = self._aligners.get(id(rig))
        if entry is None or entry[0] is not rig:
            entry = (rig, ColorToDepthAligner(rig))
            self._aligners = {id(rig): entry}  # one rig at a time
        return entry[1]

    def _localizer(self, rig: RgbdRig) -> PersonLocalizer:
        entry = self._localizers.get(id(rig))
        if entry is None or entry[0] is not rig:
            entry = (rig, PersonLocalizer(rig.depth, self.config.localize))
            self._localizers = {id(rig): entry}
        return entry[1]

    def prepare(self, rig: RgbdRig) -> None:
        """Build the rig's aligner and localiser now (about a second) instead of on the first frame."""
        self._aligner(rig)
        self._localizer(rig)

    def _box_without_depth(self, rig: RgbdRig, track: Optional[_Track]) -> tuple[np.ndarray, str]:
        """Person box (x0, y0, x1, y1) depth px when there is no depth: previous mesh, previous box, default."""
        cam = rig.depth
        if track is not None and track.vertices is not None:
            uv, ok = cam.project_with_mask(track.vertices)
            if np.count_nonzero(ok) >= 3:
                lo, hi = uv[ok].min(axis=0), uv[ok].max(axis=0)
                if np.all(hi > lo):
                    return np.array([lo[0], lo[1], hi[0], hi[1]]), "the previous mesh"
        if track is not None:
            return track.bbox.copy(), "the previous box"
        z = self.config.default_depth_m
        h = 1.8 * cam.fy / z
        w = 0.6 * cam.fx / z
        cx, cy = 0.5 * (cam.width - 1), 0.5 * (cam.height - 1)
        return (np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]),
                f"a default box in the image centre (nobody seen yet; assumed {z:g} m away)")


class _InferenceError(RuntimeError):
    """The session failed on a frame (bad model output or an ONNX Runtime error)."""
