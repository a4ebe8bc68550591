"""Frame sources: live Azure Kinect, Azure Kinect .mkv replay, a folder of RGB-D images; `open_source`.

Every source implements `FrameSource`: `read(timeout_s)` returns the next `RgbdFrame` (raw color + depth
+ the `RgbdRig` calibration; nothing is aligned here) or None at the end of a recording; live sources
raise `SourceTimeout` when no capture arrives in time and `SourceError` when the device is lost. Per
frame, each stream gets a `StreamStatus` (OK / OFF / MISSING / UNDECODABLE / EMPTY / STALE, see
`app.frames`); a stream fault never raises, it is a status the consumer's `StreamHealth` acts on (a
layout mistake, such as an 8-bit depth PNG in a folder, does raise). Every frame carries `decode_ms`,
the time spent decoding its images where that happens here (MJPEG -> BGR or BGRA -> BGR of a Kinect or
.mkv capture; reading and decoding the image files of a folder), and `host_time_s`, taken before that.

`open_source(spec)`: "clip.mkv" -> MkvSource, a folder -> FolderSource, "k4a" or "k4a:<index>" ->
KinectSource.

Live (`KinectSource`, pyk4a). Default: 720P MJPG color (decoded here with OpenCV, so a corrupt JPEG is an
UNDECODABLE frame instead of a silent drop inside the SDK), NFOV_UNBINNED depth, 30 fps, synchronized
images only. The IMU is not started. Orbbec Femto cameras are meant to be used through Orbbec's K4A
wrapper (a drop-in libk4a): set `K4A_DLL_DIR` to the folder holding the wrapper's `k4a.dll` (Windows)
or `libk4a.so*` (Linux) *before* the first `import pyk4a` in the process; `KinectSource` then adds the
folder to the DLL search path (Windows) or preloads its libk4a with RTLD_GLOBAL (Linux) so pyk4a's calls
bind to it. NOT verified on a Femto (no device here). pyk4a-bundle links its own libk4a under a hashed
name; if the wrapper is not picked up, install plain `pyk4a` built against the wrapper instead.

Replay (`MkvSource`, `pyk4a.PyK4APlayback` in a child process that is restarted where it stopped when
libk4arecord crashes: `app.playback_process`). Color tracks in MJPG (JPEG-decoded) or BGRA32; a missing
track is OFF for the whole clip. Default: every capture in file order (deterministic); `realtime=True`
paces by device timestamps and skips captures that are already late (counted in `dropped`); waits
longer than `max_wait_s` (a recording gap) are not slept through. `loop=True` restarts at EOF (frame ids
restart at 0, `loops` counts). `seek_frame(i)` / `seek_time(s)` use an index built by one scan of the
file on first use. Faults: a file that is not Matroska, or one libk4arecord cannot open (truncated or
unfinished recordings lack the cues it needs) -> SourceError at open; no calibration attachment ->
SourceError unless `calibration=` supplies a rig JSON / raw Kinect JSON / `RgbdRig`. Known limit: a
corrupt cluster *inside* an otherwise complete file makes libk4arecord end the clip there without any
error (its reported length shrinks too), so such a file plays as a shorter recording.

Folder (`FolderSource`), the common RGB-D dataset layout::

    DIR/color/000000.jpg | .jpeg | .png    8-bit color, any size the calibration says
    DIR/depth/000000.png                   16-bit single-channel PNG, millimetres, 0 = invalid
    DIR/calibration.json                   our RgbdRig JSON, or an Azure Kinect raw calibration
                                           (modes inferred from the image sizes)
    DIR/timestamps.txt                     optional: one integer device timestamp (µs) per frame,
                                           in frame order; '#' comments and blank lines ignored

Frames are the union of the stems in color/ and depth/, sorted numerically when all stems are digits;
frame_id is the position in that order; a stem present in only one folder gives a MISSING stream;
without timestamps.txt, timestamp = frame_id * 1e6 / fps. Either subfolder may be absent (stream OFF).
"""
from __future__ import annotations

import bisect
import ctypes
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional, Protocol, Union, runtime_checkable

import cv2
import numpy as np

from app.frames import RgbdFrame, SourceError, SourceTimeout, StreamStatus
from app.health import FrameChecker, FrameChecks
from calibration.errors import CalibrationError
from calibration.kinect import COLOR_RESOLUTIONS, DEPTH_MODES
from calibration.rig import RgbdRig

__all__ = ["FolderSource", "FrameSource", "KinectSource", "MkvSource", "open_source"]

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
CalibrationArg = Union[None, RgbdRig, str, Path]
_MATROSKA_MAGIC = b"\x1a\x45\xdf\xa3"
_FPS_VALUES = {0: 5, 1: 15, 2: 30}         # pyk4a FPS enum value -> frames per second
_COLOR_FORMATS = ("MJPG", "BGRA32")        # formats decoded here


@runtime_checkable
class FrameSource(Protocol):
    """Where frames come from. One thread uses a source at a time (the capture thread owns it).

    name: shown in messages ("k4a:0", a path); is_live: frames come from a running sensor (latest-wins
    delivery makes sense); rig: the calibration every frame carries.
    """

    name: str
    is_live: bool
    rig: RgbdRig

    def read(self, timeout_s: float) -> Optional[RgbdFrame]:
        """Next frame, None at the end of a recording. SourceTimeout: nothing within timeout_s (live,
        real-time replay); SourceError: the source failed (message names it and the problem)."""
        ...

    def close(self) -> None:
        """Release the device / file. Idempotent."""
        ...

    def __enter__(self) -> "FrameSource": ...

    def __exit__(self, *exc: Any) -> None: ...


# ---------------------------------------------------------------------------------------- helpers
def _decode_color(raw: Optional[np.ndarray], color_format: str, size_wh: tuple[int, int]
                  ) -> tuple[Optional[np.ndarray], StreamStatus]:
    """A K4A color buffer -> ((H, W, 3) uint8 BGR, OK) or (None, UNDECODABLE); (None, MISSING) if absent."""
    if raw is None:
        return None, StreamStatus.MISSING
    width, height = size_wh
    if color_format == "MJPG":
        buf = np.asarray(raw, dtype=np.uint8).reshape(-1)
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    else:  # BGRA32: (H, W, 4)
        bgr = cv2.cvtColor(raw, cv2.COLOR_BGRA2BGR) if raw.ndim == 3 and raw.shape[2] == 4 else None
    if bgr is None or bgr.shape != (height, width, 3):
        return None, StreamStatus.UNDECODABLE
    return bgr, StreamStatus.OK


def _depth_ok_shape(raw: np.ndarray, size_wh: tuple[int, int]) -> bool:
    return raw.dtype == np.uint16 and raw.shape == (size_wh[1], size_wh[0])


def load_rig(calibration: Union[RgbdRig, PathLike], depth_mode: Optional[str] = None,
             color_resolution: Optional[str] = None) -> RgbdRig:
    """An RgbdRig from an RgbdRig, our rig JSON, or an Azure Kinect raw calibration JSON (which needs the
    depth mode and color resolution names). SourceError naming the file otherwise."""
    if isinstance(calibration, RgbdRig):
        return calibration
    path = Path(calibration)
    if not path.is_file():
        raise SourceError(f"calibration file not found: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise SourceError(f"{path}: calibration is not valid JSON ({exc})") from exc
    try:
        if isinstance(doc, dict) and "CalibrationInformation" in doc:
            if depth_mode is None or color_resolution is None:
                raise SourceError(f"{path}: a raw Kinect calibration needs the depth mode and color resolution")
            return RgbdRig.from_kinect_raw_json(text, depth_mode, color_resolution)
        return RgbdRig.from_dict(doc)
    except CalibrationError as exc:
        raise SourceError(f"{path}: bad calibration: {exc}") from exc
    except (ValueError, TypeError, OverflowError) as exc:  # a malformed value the rig parser did not name
        raise SourceError(f"{path}: bad calibration: {type(exc).__name__}: {exc}") from exc


def _check_rig_sizes(rig: RgbdRig, where: str, color_wh: Optional[tuple[int, int]],
                     depth_wh: Optional[tuple[int, int]]) -> None:
    for what, cam, wh in (("color", rig.color, color_wh), ("depth", rig.depth, depth_wh)):
        if wh is not None and (cam.width, cam.height) != tuple(wh):
            raise SourceError(f"{where}: {what} images are {wh[0]}x{wh[1]} but the calibration's {what} camera "
                              f"is {cam.width}x{cam.height}")


def _frame_timestamp(color_ts: Optional[int], depth_ts: Optional[int], fallback: int) -> int:
    if depth_ts is not None:
        return depth_ts
    if color_ts is not None:
        return color_ts
    return fallback


# ---------------------------------------------------------------------------------------- live
def _prepare_k4a_library() -> Optional[Path]:
    """Honour K4A_DLL_DIR (e.g. Orbbec's K4A wrapper) before pyk4a loads libk4a. Returns the folder used."""
    value = os.environ.get("K4A_DLL_DIR")
    if not value:
        return None
    folder = Path(value)
    if not folder.is_dir():
        raise SourceError(f"K4A_DLL_DIR={value!r} is not a folder (it should hold k4a.dll or libk4a.so)")
    if sys.platform == "win32":
        if not (folder / "k4a.dll").is_file():
            raise SourceError(f"K4A_DLL_DIR={value!r} has no k4a.dll")
    else:
        libs = sorted(p for p in folder.iterdir() if p.name.startswith("libk4a") and ".so" in p.name
                      and not p.name.startswith("libk4arecord"))
        if not libs:
            raise SourceError(f"K4A_DLL_DIR={value!r} has no libk4a.so*")
    if "k4a_module" in sys.modules:
        log.warning("K4A_DLL_DIR=%s is set but pyk4a is already loaded in this process; it has no effect", value)
        return folder
    if sys.platform == "win32":
        os.add_dll_directory(str(folder))  # type: ignore[attr-defined]
    else:
        try:
            ctypes.CDLL(str(libs[0]), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise SourceError(f"K4A_DLL_DIR: cannot load {libs[0]}: {exc}") from exc
    log.info("using libk4a from K4A_DLL_DIR=%s", folder)
    return folder


class KinectSource:
    """A live Azure Kinect (or K4A-compatible) camera through pyk4a. Opens and starts in the constructor.

    device_index: which connected device (0 = first); color_resolution: "720P" ... "3072P" or "OFF";
    color_format: "MJPG" | "BGRA32"; depth_mode: "NFOV_UNBINNED" ... or "OFF"; fps: 5, 15, 30;
    synchronized_images_only: only captures with both images (forced off when a stream is OFF).
    frame_id counts captures received since start. Used by one thread at a time.
    """

    is_live = True

    def __init__(self, device_index: int = 0, *, color_resolution: str = "720P", color_format: str = "MJPG",
                 depth_mode: str = "NFOV_UNBINNED", fps: int = 30, synchronized_images_only: bool = True,
                 checks: FrameChecks = FrameChecks()):
        if isinstance(device_index, bool) or not isinstance(device_index, int) or device_index < 0:
            raise SourceError(f"device_index must be an int >= 0, got {device_index!r}")
        self.name = f"k4a:{device_index}"
        cr, dm = str(color_resolution).upper(), str(depth_mode).upper()
        if cr != "OFF" and cr not in COLOR_RESOLUTIONS:
            raise SourceError(f"{self.name}: color_resolution must be OFF or one of {list(COLOR_RESOLUTIONS)}, "
                              f"got {color_resolution!r}")
        if dm != "OFF" and dm not in DEPTH_MODES:
            raise SourceError(f"{self.name}: depth_mode must be OFF or one of {list(DEPTH_MODES)}, got {depth_mode!r}")
        if dm == "PASSIVE_IR":
            raise SourceError(f"{self.name}: depth_mode PASSIVE_IR gives no depth; use an NFOV/WFOV mode")
        if color_format not in _COLOR_FORMATS:
            raise SourceError(f"{self.name}: color_format must be one of {_COLOR_FORMATS}, got {color_format!r}")
        if fps not in (5, 15, 30):
            raise SourceError(f"{self.name}: fps must be 5, 15 or 30, got {fps!r}")
        if fps == 30 and (cr == "3072P" or dm == "WFOV_UNBINNED"):
            raise SourceError(f"{self.name}: 30 fps is not available with {cr if cr == '3072P' else dm} (max 15)")
        if cr == "OFF" and dm == "OFF":
            raise SourceError(f"{self.name}: both color and depth are OFF; nothing to capture")
        self.color_format = color_format
        self.has_color, self.has_depth = cr != "OFF", dm != "OFF"
        self.fps = fps
        self.checker = FrameChecker(checks, nominal_period_usec=1_000_000 // fps)
        self.frames_received = 0
        self._lost: Optional[str] = None
        self._last_ts = 0
        self._device = None

        _prepare_k4a_library()
        import pyk4a  # lazy: only live capture needs the device library

        self._pyk4a = pyk4a
        config = pyk4a.Config(
            color_resolution=pyk4a.ColorResolution[f"RES_{cr}" if cr != "OFF" else "OFF"],
            color_format=pyk4a.ImageFormat[f"COLOR_{color_format}"],
            depth_mode=pyk4a.DepthMode[dm],
            camera_fps=pyk4a.FPS[f"FPS_{fps}"],
            synchronized_images_only=bool(synchronized_images_only and self.has_color and self.has_depth))
        count = pyk4a.connected_device_count()
        if device_index >= count:
            raise SourceError(f"{self.name}: no such device ({count} Azure Kinect device(s) connected)")
        device = pyk4a.PyK4A(config=config, device_id=device_index)
        try:
            device.open()
        except pyk4a.K4AException as exc:
            raise SourceError(f"{self.name}: cannot open the device (in use by another program, or no USB "
                              f"permission: install the udev rules)") from exc
        self._device = device
        try:
            raw = device.calibration_raw
            if not raw:
                raise SourceError(f"{self.name}: the device returned no calibration")
            self.rig = RgbdRig.from_kinect_raw_json(raw, dm if self.has_depth else "NFOV_UNBINNED",
                                                    cr if self.has_color else "720P")
            # Cameras only: the IMU is not needed, and starting it would fill its queue unread.
            device._start_cameras()
            device.is_running = True
        except pyk4a.K4AException as exc:
            self._close_device()
            raise SourceError(f"{self.name}: cannot start the cameras (color {cr} {color_format}, depth {dm}, "
                              f"{fps} fps): device not ready, USB bandwidth or power") from exc
        except CalibrationError as exc:
            self._close_device()
            raise SourceError(f"{self.name}: bad device calibration: {exc}") from exc
        except BaseException:
            self._close_device()
            raise

    def read(self, timeout_s: float) -> RgbdFrame:
        """Next capture (blocks up to timeout_s). SourceTimeout if none arrived; SourceError if the device
        stopped delivering (unplugged, USB error)."""
        if self._device is None:
            raise SourceError(f"{self.name}: source is closed")
        if self._lost is not None:
            raise SourceError(self._lost)
        pyk4a = self._pyk4a
        try:
            capture = self._device.get_capture(timeout=max(0, int(round(timeout_s * 1000))))
        except pyk4a.K4ATimeoutException:
            raise SourceTimeout(f"{self.name}: no capture within {timeout_s:.3g} s") from None
        except pyk4a.K4AException as exc:
            self._lost = (f"{self.name}: device stopped delivering captures after {self.frames_received} frames "
                          f"(unplugged, USB error or power loss)")
            raise SourceError(self._lost) from exc
        host_time = time.perf_counter()
        color, color_status, color_ts = None, StreamStatus.OFF, None
        decode_ms = None
        if self.has_color:
            raw = capture.color
            if raw is not None:
                color_ts = int(capture.color_timestamp_usec)
            t0 = time.perf_counter()
            color, color_status = _decode_color(raw, self.color_format, self.rig.color.size)
            decode_ms = (time.perf_counter() - t0) * 1e3
            if color is not None:
                color_status = self.checker.check_color(color, color_ts, capture.color_system_timestamp_nsec)
        depth, depth_status, depth_ts = None, StreamStatus.OFF, None
        if self.has_depth:
            raw = capture.depth
            if raw is None:
                depth_status = StreamStatus.MISSING
            else:
                depth_ts = int(capture.depth_timestamp_usec)
                if _depth_ok_shape(raw, self.rig.depth.size):
                    depth = raw
                    depth_status = self.checker.check_depth(raw, depth_ts, capture.depth_system_timestamp_nsec)
                else:
                    depth_status = StreamStatus.UNDECODABLE
        ts = _frame_timestamp(color_ts, depth_ts, self._last_ts)
        self.checker.note_frame(ts)
        self._last_ts = ts
        frame = RgbdFrame(self.frames_received, ts, color, depth, self.rig, self.name, color_status, depth_status,
                          host_time, decode_ms)
        self.frames_received += 1
        return frame

    def _close_device(self) -> None:
        device, self._device = self._device, None
        if device is None:
            return
        try:
            if device.is_running:
                device.stop()
            elif device.opened:
                device.close()
        except Exception as exc:  # a lost device may refuse to stop; the handle is released anyway
            log.warning("%s: error while closing the device (ignored): %s", self.name, exc)

    def close(self) -> None:
        self._close_device()

    def __enter__(self) -> "KinectSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------------- replay
class MkvSource:
    """An Azure Kinect recording (.mkv written by the SDK or `training.synth.k4a_writer`).

    path: the file; loop: restart at EOF; realtime: pace by device timestamps, skipping late captures;
    start_frame: first capture to deliver; calibration: overrides / supplies the calibration (RgbdRig,
    rig JSON or raw Kinect JSON path), required when the recording has no calibration attachment;
    max_wait_s: longest real-time wait (longer gaps are skipped over). frame_id = capture index.
    """

    is_live = False

    def __init__(self, path: PathLike, loop: bool = False, realtime: bool = False, start_frame: int = 0, *,
                 calibration: CalibrationArg = None, checks: FrameChecks = FrameChecks(), max_wait_s: float = 1.0):
        self.path = Path(path)
        self.name = str(self.path)
        self.loop, self.realtime, self.max_wait_s = bool(loop), bool(realtime), float(max_wait_s)
        self.dropped = 0          # captures skipped by real-time pacing
        self.loops = 0            # completed passes with loop=True
        self._playback = None
        self._check_file()
        import pyk4a  # lazy: replay needs libk4arecord

        self._pyk4a = pyk4a
        from app.playback_process import open_playback
        playback = open_playback(str(self.path))   # libk4arecord in a child process (it crashes now and then)
        try:
            playback.open()
        except pyk4a.K4AException as exc:
            raise SourceError(f"{self.path}: libk4arecord cannot open it (truncated or unfinished recording "
                              f"without its index, or not an Azure Kinect recording): {exc}") from exc
        self._playback = playback
        try:
            self._setup(calibration, checks)
            if start_frame:
                self.seek_frame(start_frame)
        except BaseException:
            self.close()
            raise

    def _check_file(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"{self.path}: recording not found")
        with open(self.path, "rb") as fh:
            head = fh.read(4)
        if head != _MATROSKA_MAGIC:
            raise SourceError(f"{self.path}: not a Matroska file (starts with {head!r}, expected the EBML "
                              f"header 1a45dfa3)")

    def _setup(self, calibration: CalibrationArg, checks: FrameChecks) -> None:
        pyk4a, pb = self._pyk4a, self._playback
        cfg = pb.configuration
        self.has_color = bool(cfg["color_track_enabled"])
        self.has_depth = bool(cfg["depth_track_enabled"])
        if not self.has_color and not self.has_depth:
            raise SourceError(f"{self.path}: the recording has neither a color nor a depth track")
        fmt = pyk4a.ImageFormat(cfg["color_format"]).name.replace("COLOR_", "")
        if self.has_color and fmt not in _COLOR_FORMATS:
            raise SourceError(f"{self.path}: color track format {fmt} is not supported (MJPG or BGRA32)")
        self.color_format = fmt
        self.fps = _FPS_VALUES[int(cfg["camera_fps"])]
        self._period_usec = 1_000_000 // self.fps
        cr = pyk4a.ColorResolution(cfg["color_resolution"]).name.replace("RES_", "") if self.has_color else "720P"
        dm = pyk4a.DepthMode(cfg["depth_mode"]).name if self.has_depth else "NFOV_UNBINNED"
        if dm == "PASSIVE_IR":
            raise SourceError(f"{self.path}: depth track is PASSIVE_IR (IR only, no depth)")
        self.rig = self._load_calibration(calibration, dm, cr)
        _check_rig_sizes(self.rig, str(self.path), COLOR_RESOLUTIONS[cr].output if self.has_color else None,
                         DEPTH_MODES[dm].output if self.has_depth else None)
        self.start_usec = int(cfg["start_timestamp_offset_usec"])
        self.length_usec = int(pb.length)
        self.checker = FrameChecker(checks, nominal_period_usec=self._period_usec)
        self._next_index = 0                 # capture index the next read returns
        self._pending: Optional[Any] = None  # a capture already taken from the playback (seek, pacing)
        self._index: Optional[list[tuple[int, int]]] = None  # per capture: (frame ts, seek ts)
        self._last_read_ts: Optional[int] = None
        self._eof = False
        self._anchor: Optional[tuple[float, int]] = None      # real-time pacing: (monotonic s, device µs)
        if not self.has_color:
            log.info("%s: no color track; color is OFF", self.path)
        if not self.has_depth:
            log.info("%s: no depth track; depth is OFF", self.path)

    def _load_calibration(self, calibration: CalibrationArg, dm: str, cr: str) -> RgbdRig:
        pyk4a, pb = self._pyk4a, self._playback
        try:
            pb.calibration
            has_attachment = True
        except pyk4a.K4AException:
            has_attachment = False
        if calibration is not None:
            if not has_attachment:
                self._use_external_calibration()
            return load_rig(calibration, dm, cr)
        if not has_attachment:
            raise SourceError(f"{self.path}: the recording has no calibration (no calibration.json attachment); "
                              f"pass calibration=<rig JSON, raw Kinect JSON or RgbdRig>")
        try:
            return RgbdRig.from_kinect_raw_json(pb.calibration_raw, dm, cr)
        except (CalibrationError, pyk4a.K4AException) as exc:
            raise SourceError(f"{self.path}: bad calibration attachment: {exc}") from exc

    def _use_external_calibration(self) -> None:
        # pyk4a builds every capture with `playback.calibration`, which fails without the attachment (after
        # the capture was consumed). Captures only need it for SDK transforms, which this layer never calls.
        self._playback.use_handle_less_calibration()

    # -- raw captures -----------------------------------------------------------------------------
    def _get_next_capture(self) -> Any:
        """The next capture from the playback (EOFError at the end)."""
        try:
            return self._playback.get_next_capture()
        except self._pyk4a.K4AException:
            raise SourceError(f"{self.path}: cannot read capture {self._next_index} (file corrupt)") from None

    def _capture_times(self, capture: Any) -> tuple[int, int, list[int]]:
        """(frame ts, seek ts, all image ts) of a raw capture; µs device time."""
        color_ts = int(capture.color_timestamp_usec) if self.has_color and capture.color is not None else None
        depth_ts = int(capture.depth_timestamp_usec) if self.has_depth and capture.depth is not None else None
        present = [t for t in (color_ts, depth_ts) if t is not None]
        fallback = self._last_read_ts if self._last_read_ts is not None else self.start_usec
        frame_ts = _frame_timestamp(color_ts, depth_ts, fallback)
        return frame_ts, min(present) if present else frame_ts, present

    def _take(self) -> Optional[tuple[Any, int]]:
        """(capture, index) of the next capture, handling EOF and loop; None at the end."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            return pending
        if self._eof:
            return None
        for attempt in range(2):
            try:
                capture = self._get_next_capture()
            except EOFError:
                if not self.loop or attempt:
                    self._eof = True
                    return None
                self._restart()
                continue
            index = self._next_index
            self._next_index += 1
            self._last_read_ts = max(self._capture_times(capture)[2], default=self._last_read_ts)
            return capture, index
        return None

    def _restart(self) -> None:
        self._playback.seek(0)
        self._next_index = 0
        self._last_read_ts = None
        self._anchor = None
        self.checker.reset()
        self.loops += 1

    # -- FrameSource --------------------------------------------------------------------------------
    def read(self, timeout_s: float = 1.0) -> Optional[RgbdFrame]:
        """Next frame in file order, None at the end (never with loop=True). Real-time: SourceTimeout if the
        next frame is not due within timeout_s (it is kept for the next call)."""
        if self._playback is None:
            raise SourceError(f"{self.path}: source is closed")
        while True:
            item = self._take()
            if item is None:
                return None
            capture, index = item
            frame_ts, _, _ = self._capture_times(capture)
            if self.realtime and not self._pace(capture, index, frame_ts, timeout_s):
                continue
            return self._frame(capture, index, frame_ts)

    def _pace(self, capture: Any, index: int, ts: int, timeout_s: float) -> bool:
        """Real-time pacing: False = drop this capture (late); sleeps until it is due; SourceTimeout if that
        is more than timeout_s away."""
        now = time.monotonic()
        if self._anchor is None or ts < self._anchor[1]:
            self._anchor = (now, ts)
        due = self._anchor[0] + (ts - self._anchor[1]) / 1e6
        if due - now > self.max_wait_s:  # a gap in the recording: continue from here
            self._anchor, due = (now, ts), now
        if now - due > self._period_usec / 1e6:
            self.dropped += 1
            return False
        wait = due - now
        if wait > timeout_s:
            time.sleep(max(0.0, timeout_s))
            self._pending = (capture, index)
            raise SourceTimeout(f"{self.path}: next frame not due within {timeout_s:.3g} s")
        if wait > 0:
            time.sleep(wait)
        return True

    def _frame(self, capture: Any, index: int, ts: int) -> RgbdFrame:
        host_time = time.perf_counter()
        color, color_status = None, StreamStatus.OFF
        decode_ms = None
        if self.has_color:
            raw = capture.color
            t0 = time.perf_counter()
            color, color_status = _decode_color(raw, self.color_format, self.rig.color.size)
            decode_ms = (time.perf_counter() - t0) * 1e3
            if color is not None:
                color_status = self.checker.check_color(color, int(capture.color_timestamp_usec))
        depth, depth_status = None, StreamStatus.OFF
        if self.has_depth:
            raw = capture.depth
            if raw is None:
                depth_status = StreamStatus.MISSING
            elif not _depth_ok_shape(raw, self.rig.depth.size):
                depth_status = StreamStatus.UNDECODABLE
            else:
                depth = raw
                depth_status = self.checker.check_depth(raw, int(capture.depth_timestamp_usec))
        self.checker.note_frame(ts)
        return RgbdFrame(index, ts, color, depth, self.rig, self.name, color_status, depth_status, host_time, decode_ms)

    # -- seeking ------------------------------------------------------------------------------------
    def _build_index(self) -> list[tuple[int, int]]:
        """Scan the whole file once: (frame ts, seek ts) per capture; the read position is kept."""
        if self._index is not None:
            return self._index
        position = self._pending[1] if self._pending is not None else self._next_index
        eof = self._eof
        self._playback.seek(0)
        self._next_index, self._last_read_ts = 0, None
        index: list[tuple[int, int]] = []
        while True:
            try:
                capture = self._get_next_capture()
            except EOFError:
                break
            frame_ts, seek_ts, present = self._capture_times(capture)
            self._last_read_ts = max(present, default=frame_ts)
            self._next_index += 1
            index.append((frame_ts, seek_ts))
        self._index = index
        self._pending, self._eof = None, eof
        if not eof and position < len(index):
            self._position(position)
        return index

    def _position(self, i: int) -> None:
        """Make capture i the next one read (seek, verify the landing, fall back to counting from 0)."""
        index = self._index
        assert index is not None
        self._pending, self._eof = None, False
        # the SDK seeks to the first capture with an image at or after the time: with repeated timestamps
        # that is the first of the run (j), so count forward from there
        j = bisect.bisect_left([seek_ts for _, seek_ts in index], index[i][1])
        if j == 0:
            self._playback.seek(0)
        else:
            self._playback.seek(index[j][1], self._pyk4a.SeekOrigin.DEVICE_TIME)
        for _ in range(i - j + 1):
            capture = self._safe_next()
        if capture is None or self._capture_times(capture)[0] != index[i][0]:
            self._playback.seek(0)
            for _ in range(i + 1):
                capture = self._safe_next()
            if capture is None:
                raise SourceError(f"{self.path}: cannot position at capture {i}")
        self._pending = (capture, i)
        self._next_index = i + 1
        self._last_read_ts = max(self._capture_times(capture)[2], default=None)
        self._anchor = None
        self.checker.reset()

    def _safe_next(self) -> Any:
        try:
            return self._get_next_capture()
        except EOFError:
            return None

    @property
    def n_frames(self) -> int:
        """Number of captures (scans the file once)."""
        return len(self._build_index())

    @property
    def duration_s(self) -> float:
        """Recorded length (seconds), from the file's header."""
        return self.length_usec / 1e6

    def seek_frame(self, i: int) -> None:
        """Make capture i (0-based) the next frame read."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
            raise SourceError(f"{self.path}: frame index must be an int, got {i!r}")
        n = len(self._build_index())
        if not 0 <= i < n:
            raise SourceError(f"{self.path}: frame {i} is out of range (the recording has {n} frames)")
        self._position(int(i))

    def seek_time(self, seconds: float) -> int:
        """Make the first capture at or after `seconds` from the recording start the next frame read;
        returns its index."""
        if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
            raise SourceError(f"{self.path}: seek time must be a finite number of seconds >= 0, got {seconds!r}")
        index = self._build_index()
        target = self.start_usec + int(round(seconds * 1e6))
        i = bisect.bisect_left([ts for ts, _ in index], target)
        if i >= len(index):
            raise SourceError(f"{self.path}: time {seconds:.3f} s is past the last frame "
                              f"({(index[-1][0] - self.start_usec) / 1e6:.3f} s)")
        self._position(i)
        return i

    def close(self) -> None:
        playback, self._playback = self._playback, None
        self._pending = None
        if playback is not None:
            try:
                playback.close()
            except Exception as exc:  # pragma: no cover - close of an open handle does not fail in practice
                log.warning("%s: error while closing (ignored): %s", self.path, exc)

    def __enter__(self) -> "MkvSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------------- folder
_COLOR_EXTS = (".jpg", ".jpeg", ".png")
_SIZE_TO_DEPTH_MODE = {info.output: name for name, info in DEPTH_MODES.items() if name != "PASSIVE_IR"}
_SIZE_TO_COLOR_RES = {info.output: name for name, info in COLOR_RESOLUTIONS.items()}


def _list_images(folder: Path, exts: tuple[str, ...]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for p in folder.iterdir():
        if p.is_file() and p.suffix.lower() in exts:
            if p.stem in files:
                raise SourceError(f"{folder}: two images for frame {p.stem!r} ({files[p.stem].name}, {p.name})")
            files[p.stem] = p
    return files


def _image_size(path: Path) -> tuple[int, int]:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise SourceError(f"{path}: cannot decode the image")
    return img.shape[1], img.shape[0]


class FolderSource:
    """A folder of color images + 16-bit depth PNGs + calibration.json (layout: module docstring).

    loop: restart after the last frame; fps: nominal rate for timestamps when there is no
    timestamps.txt; calibration: overrides DIR/calibration.json (RgbdRig or JSON path).
    """

    is_live = False

    def __init__(self, folder: PathLike, *, loop: bool = False, fps: float = 30.0,
                 calibration: CalibrationArg = None, checks: FrameChecks = FrameChecks()):
        self.folder = Path(folder)
        self.name = str(self.folder)
        self.loop = bool(loop)
        self.loops = 0
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder}: folder not found")
        if not (isinstance(fps, (int, float)) and fps > 0):
            raise SourceError(f"{self.folder}: fps must be > 0, got {fps!r}")
        color_dir, depth_dir = self.folder / "color", self.folder / "depth"
        self.has_color, self.has_depth = color_dir.is_dir(), depth_dir.is_dir()
        if not self.has_color and not self.has_depth:
            raise SourceError(f"{self.folder}: no color/ or depth/ subfolder (see app.sources for the layout)")
        self._color = _list_images(color_dir, _COLOR_EXTS) if self.has_color else {}
        self._depth = _list_images(depth_dir, (".png",)) if self.has_depth else {}
        stems = set(self._color) | set(self._depth)
        if not stems:
            raise SourceError(f"{self.folder}: no images in color/ or depth/")
        numeric = all(s.isdecimal() for s in stems)  # what int() accepts ('²'.isdigit() is True, int('²') fails)
        self._stems = sorted(stems, key=(lambda s: (int(s), s)) if numeric else None)
        period = 1e6 / fps
        self.timestamps = self._read_timestamps() or [int(round(i * period)) for i in range(len(self._stems))]
        first_color = next((self._color[s] for s in self._stems if s in self._color), None)
        first_depth = next((self._depth[s] for s in self._stems if s in self._depth), None)
        color_wh = _image_size(first_color) if first_color is not None else None
        depth_wh = _image_size(first_depth) if first_depth is not None else None
        self.rig = self._load_calibration(calibration, color_wh, depth_wh)
        _check_rig_sizes(self.rig, str(self.folder), color_wh, depth_wh)
        self.checker = FrameChecker(checks, nominal_period_usec=int(round(period)))
        self._i = 0
        self._closed = False

    def _read_timestamps(self) -> Optional[list[int]]:
        path = self.folder / "timestamps.txt"
        if not path.is_file():
            return None
        try:
            content = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SourceError(f"{path}: not UTF-8 text ({exc})") from None
        values = []
        for lineno, line in enumerate(content.splitlines(), 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                value = int(text)
            except ValueError:
                raise SourceError(f"{path}:{lineno}: expected an integer timestamp in µs, got {text!r}") from None
            if not 0 <= value < 2**63:  # device time is a non-negative int64 (outputs store it as one)
                raise SourceError(f"{path}:{lineno}: timestamp {value} is outside 0 .. 2**63-1 µs")
            values.append(value)
        if len(values) != len(self._stems):
            raise SourceError(f"{path}: {len(values)} timestamps for {len(self._stems)} frames")
        return values

    def _load_calibration(self, calibration: CalibrationArg, color_wh: Optional[tuple[int, int]],
                          depth_wh: Optional[tuple[int, int]]) -> RgbdRig:
        if calibration is None:
            calibration = self.folder / "calibration.json"
            if not calibration.is_file():
                raise SourceError(f"{self.folder}: no calibration.json (our rig JSON or a raw Kinect calibration)")
        dm = _SIZE_TO_DEPTH_MODE.get(depth_wh, None) if depth_wh else "NFOV_UNBINNED"
        cr = _SIZE_TO_COLOR_RES.get(color_wh, None) if color_wh else "720P"
        try:
            return load_rig(calibration, dm, cr)
        except SourceError as exc:
            if (dm is None or cr is None) and "needs the depth mode" in str(exc):
                raise SourceError(f"{calibration}: a raw Kinect calibration needs Kinect image sizes; got color "
                                  f"{color_wh} and depth {depth_wh}") from None
            raise

    def __len__(self) -> int:
        return len(self._stems)

    def seek_frame(self, i: int) -> None:
        """Make frame i the next one read."""
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < len(self._stems):
            raise SourceError(f"{self.folder}: frame {i!r} is out of range (the folder has {len(self._stems)} frames)")
        self._i = int(i)
        self.checker.reset()

    def read(self, timeout_s: float = 1.0) -> Optional[RgbdFrame]:
        """Next frame in order; None after the last (never with loop=True)."""
        if self._closed:
            raise SourceError(f"{self.folder}: source is closed")
        if self._i >= len(self._stems):
            if not self.loop:
                return None
            self._i = 0
            self.loops += 1
            self.checker.reset()
        i = self._i
        self._i += 1
        stem, ts = self._stems[i], self.timestamps[i]
        host_time = time.perf_counter()
        decode_s = 0.0
        color, color_status = None, StreamStatus.OFF
        if self.has_color:
            color_status = StreamStatus.MISSING
            if stem in self._color:
                t0 = time.perf_counter()
                img = cv2.imread(str(self._color[stem]), cv2.IMREAD_COLOR)
                decode_s += time.perf_counter() - t0
                if img is None or img.shape[:2] != (self.rig.color.height, self.rig.color.width):
                    color_status = StreamStatus.UNDECODABLE
                else:
                    color = img
                    color_status = self.checker.check_color(img, ts)
        depth, depth_status = None, StreamStatus.OFF
        if self.has_depth:
            depth_status = StreamStatus.MISSING
            if stem in self._depth:
                path = self._depth[stem]
                t0 = time.perf_counter()
                img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                decode_s += time.perf_counter() - t0
                if img is None:
                    depth_status = StreamStatus.UNDECODABLE
                elif img.dtype != np.uint16 or img.ndim != 2:
                    raise SourceError(f"{path}: depth PNGs must be 16-bit single-channel millimetres, got "
                                      f"{img.dtype} with shape {img.shape}")
                elif img.shape != (self.rig.depth.height, self.rig.depth.width):
                    depth_status = StreamStatus.UNDECODABLE
                else:
                    depth = img
                    depth_status = self.checker.check_depth(img, ts)
        self.checker.note_frame(ts)
        return RgbdFrame(i, ts, color, depth, self.rig, self.name, color_status, depth_status, host_time,
                         decode_s * 1e3)

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> "FolderSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------------------- factory
def open_source(spec: PathLike, **options: Any) -> FrameSource:
    """"clip.mkv" -> MkvSource, a folder -> FolderSource, "k4a" / "k4a:<index>" -> KinectSource.
    `options` go to the source's constructor."""
    text = str(spec)
    if text == "k4a" or text.startswith("k4a:"):
        index_text = text[4:] if text != "k4a" else "0"
        if not index_text.isdigit():
            raise SourceError(f"bad device spec {text!r}: expected 'k4a' or 'k4a:<index>' (e.g. k4a:1)")
        return KinectSource(int(index_text), **options)
    path = Path(text)
    if path.is_dir():
        return FolderSource(path, **options)
    if path.suffix.lower() == ".mkv":
        return MkvSource(path, **options)
    if not path.exists():
        raise SourceError(f"{text}: no such file or folder (expected a .mkv, a folder or 'k4a[:index]')")
    raise SourceError(f"{text}: not a source (expected a .mkv recording, an RGB-D folder or 'k4a[:index]')")
