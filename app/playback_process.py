"""Azure Kinect recordings read in a child process that is restarted when libk4arecord crashes.

libk4arecord 1.4.2 (the Azure Kinect SDK's playback, shipped in pyk4a-bundle) corrupts its heap now and
then while reading: in a tight replay loop, one SIGSEGV or glibc abort every ~2,000-190,000 captures,
in one thread with nothing else loaded (docs/reliability.md, `tests/stress_k4a_playback.py`). In the
app's process that kills the viewer and the run. `PlaybackProcess` keeps the SDK out of it: a child
process owns the `pyk4a.PyK4APlayback` and sends each capture's color and depth over a pipe; when the
child dies, a new one reopens the file, returns to the position the caller had reached (the seek it
asked for, or just past the last capture it received, checked by its timestamps) and the call is
retried, so the caller sees the same captures as from an uninterrupted playback. Each restart is logged
and counted (`restarts`); three crashes in a row at one position raise `pyk4a.K4AException`.

The interface is the part of `pyk4a.PyK4APlayback` that `app.sources.MkvSource` uses: `open()`,
`configuration`, `length`, `calibration` (raises K4AException without a calibration attachment),
`calibration_raw`, `use_handle_less_calibration()`, `get_next_capture()` (EOFError at the end) -> a
`Capture` (color raw buffer, depth (H, W) uint16, their device timestamps in µs), `seek(offset,
origin)`, `close()`; `InProcessPlayback` is the same interface without the child (non-POSIX systems,
where the socket cannot be inherited; `open_playback` picks). The child is a fresh interpreter (`python -c ...`, ~0.2 s to start; never a re-run
of the caller's main script, as multiprocessing's spawn would do) talking over a socket pair (POSIX).
Cost: the arrays cross the socket (~1 MB a capture, a few ms of CPU split over both processes).
"""
from __future__ import annotations

import logging
import socket
import subprocess
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Optional

import numpy as np

__all__ = ["Capture", "InProcessPlayback", "PlaybackProcess", "open_playback"]

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_CRASHES = 3


@dataclass
class Capture:
    """One capture as `MkvSource` reads it: color (raw: MJPG bytes (N,) or BGRA (H, W, 4) uint8) and
    depth (H, W) uint16 mm, None when the capture lacks that image; device timestamps µs (0 if absent)."""

    color: Optional[np.ndarray]
    depth: Optional[np.ndarray]
    color_timestamp_usec: int
    depth_timestamp_usec: int

    @property
    def times(self) -> tuple[int, ...]:
        """Device timestamps of the images present (identifies the capture)."""
        return tuple(t for img, t in ((self.color, self.color_timestamp_usec), (self.depth, self.depth_timestamp_usec))
                     if img is not None)


# ------------------------------------------------------------------------------------------ child side
def _serve(conn: Any, path: str) -> None:
    """Child process: run requests (name, *args) on one `InProcessPlayback`; reply ("ok", value), ("eof",),
    ("k4a", message) or ("error", message)."""
    import pyk4a
    playback = InProcessPlayback(path)
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        name, args = request[0], request[1:]
        try:
            if name == "open":
                value = playback.open()
            elif name == "info":
                try:
                    has_calibration = playback.calibration
                except pyk4a.K4AException:
                    has_calibration = False
                value = (playback.configuration, playback.length, has_calibration)
            elif name == "calibration_raw":
                value = playback.calibration_raw
            elif name == "handle_less_calibration":
                value = playback.use_handle_less_calibration()
            elif name == "next":
                value = playback.get_next_capture()
            elif name == "seek":
                value = playback.seek(*args)
            elif name == "close":
                playback.close()
                conn.send(("ok", None))
                return
            else:
                raise ValueError(f"unknown request {name!r}")
            reply: tuple = ("ok", value)
        except EOFError:
            reply = ("eof",)
        except pyk4a.K4AException as exc:
            reply = ("k4a", str(exc) or type(exc).__name__)
        except Exception as exc:  # noqa: BLE001 - sent to the parent, which raises it there
            reply = ("error", f"{type(exc).__name__}: {exc}")
        conn.send(reply)


_ROOT = str(Path(__file__).resolve().parents[1])
_CHILD = ("import sys; sys.path.insert(0, sys.argv[1]); from app.playback_process import _child_main; "
          "_child_main(int(sys.argv[2]), sys.argv[3])")


def _child_main(fd: int, path: str) -> None:
    """Entry of the child interpreter: serve requests on the inherited socket `fd`."""
    _serve(Connection(fd), path)


# ------------------------------------------------------------------------------------------ parent side
class PlaybackProcess:
    """A recording read by a child process (see module docstring). Not thread-safe: one caller thread."""

    def __init__(self, path: str):
        import pyk4a
        self.path = str(path)
        self._pyk4a = pyk4a
        self._proc: Any = None
        self._conn: Any = None
        self._info: Optional[tuple[dict, int, bool]] = None
        self._handle_less = False
        # where a new child must return to: ("start",), ("seek", *args) or ("after", seek ts, times)
        self._resume: tuple = ("start",)
        self.restarts = 0

    # -- process management ---------------------------------------------------------------------------
    def _spawn(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            proc = subprocess.Popen([sys.executable, "-c", _CHILD, _ROOT, str(theirs.fileno()), self.path],
                                    pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self._proc, self._conn = proc, Connection(ours.detach())

    def _kill(self) -> None:
        proc, conn, self._proc, self._conn = self._proc, self._conn, None, None
        if conn is not None:
            conn.close()
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)

    def _exchange(self, request: tuple) -> tuple:
        """Send one request to the current child; raises ConnectionError if it died."""
        try:
            self._conn.send(request)
            return self._conn.recv()
        except (EOFError, OSError) as exc:
            raise ConnectionError(str(exc)) from None

    def _unwrap(self, reply: tuple) -> Any:
        kind = reply[0]
        if kind == "ok":
            return reply[1]
        if kind == "eof":
            raise EOFError()
        if kind == "k4a":
            raise self._pyk4a.K4AException(f"{self.path}: {reply[1]}")
        raise RuntimeError(f"{self.path}: playback process: {reply[1]}")

    def _restore(self) -> None:
        """Start a child and bring it to the position the caller had reached."""
        self._spawn()
        self._unwrap(self._exchange(("open",)))
        if self._handle_less:
            self._unwrap(self._exchange(("handle_less_calibration",)))
        kind = self._resume[0]
        if kind == "seek":
            self._unwrap(self._exchange(("seek", *self._resume[1:])))
        elif kind == "after":
            _, seek_ts, times = self._resume
            self._unwrap(self._exchange(("seek", seek_ts, int(self._pyk4a.SeekOrigin.DEVICE_TIME))))
            for _ in range(64):     # the SDK lands on the first capture with an image at or after seek_ts
                reply = self._exchange(("next",))
                if reply[0] == "ok" and reply[1].times == times:
                    return
                self._unwrap(reply)
            raise self._pyk4a.K4AException(f"{self.path}: could not return to the capture at {times} µs "
                                           "after the reader process crashed")

    def _where(self) -> str:
        kind = self._resume[0]
        if kind == "start":
            return "opening the file"
        if kind == "seek":
            return f"after a seek to {self._resume[1:]}"
        return f"after the capture at {self._resume[2]} µs"

    def _call(self, request: tuple) -> Any:
        """Run a request; when the child dies (here or while restoring), restart it and retry."""
        crashes = 0
        while True:
            try:
                if self._conn is None:
                    self._restore()
                return self._unwrap(self._exchange(request))
            except ConnectionError:
                code = None
                if self._proc is not None:
                    try:
                        code = self._proc.wait(timeout=2)     # (negative: killed by that signal)
                    except subprocess.TimeoutExpired:
                        pass
                self._kill()
                crashes += 1
                self.restarts += 1
                log.warning("%s: the recording reader (libk4arecord) died (exit code %s) %s; restarting it "
                            "there (restart %d)", self.path, code, self._where(), self.restarts)
                if crashes >= MAX_CONSECUTIVE_CRASHES:
                    raise self._pyk4a.K4AException(
                        f"{self.path}: libk4arecord crashed {crashes} times in a row at the same place") from None

    # -- the PyK4APlayback subset ---------------------------------------------------------------------
    def open(self) -> None:
        """Start the reader and open the file (pyk4a.K4AException if libk4arecord cannot open it)."""
        try:
            self._info = self._call(("info",))
        except BaseException:
            self._kill()
            raise

    @property
    def configuration(self) -> dict:
        return dict(self._info[0])

    @property
    def length(self) -> int:
        return self._info[1]

    @property
    def calibration(self) -> bool:
        """True when the recording has a calibration attachment; K4AException otherwise (as pyk4a)."""
        if not self._info[2]:
            raise self._pyk4a.K4AException(f"{self.path}: no calibration attachment")
        return True

    @property
    def calibration_raw(self) -> str:
        return self._call(("calibration_raw",))

    def use_handle_less_calibration(self) -> None:
        """Let captures be read without a calibration attachment (the caller supplies calibration)."""
        self._call(("handle_less_calibration",))
        self._handle_less = True

    def get_next_capture(self) -> Capture:
        capture: Capture = self._call(("next",))
        times = capture.times
        self._resume = ("after", min(times), times) if times else self._resume
        return capture

    def seek(self, offset: int, origin: Any = None) -> None:
        args = (int(offset),) if origin is None else (int(offset), int(origin))
        self._call(("seek", *args))
        self._resume = ("seek", *args)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._exchange(("close",))
            except ConnectionError:
                pass
        self._kill()

    def __del__(self) -> None:
        try:
            self._kill()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class InProcessPlayback:
    """`PlaybackProcess`'s interface on a PyK4APlayback in this process (no crash isolation)."""

    restarts = 0

    def __init__(self, path: str):
        import pyk4a
        self.path = str(path)
        self._pyk4a = pyk4a
        self._playback = pyk4a.PyK4APlayback(self.path)

    def open(self) -> None:
        self._playback.open()

    @property
    def configuration(self) -> dict:
        return dict(self._playback.configuration)

    @property
    def length(self) -> int:
        return int(self._playback.length)

    @property
    def calibration(self) -> bool:
        self._playback.calibration          # K4AException without a calibration attachment
        return True

    @property
    def calibration_raw(self) -> str:
        return self._playback.calibration_raw

    def use_handle_less_calibration(self) -> None:
        """Let captures be read without a calibration attachment: pyk4a builds every capture with
        `playback.calibration`, which fails without one; captures only need it for SDK transforms, never
        called here, so the playback gets a handle-less Calibration (pyk4a 1.5 private attribute)."""
        cfg = self._playback.configuration
        self._playback._calibration = self._pyk4a.Calibration(handle=None, depth_mode=cfg["depth_mode"],
                                                              color_resolution=cfg["color_resolution"])

    def get_next_capture(self) -> Capture:
        c = self._playback.get_next_capture()
        color, depth = c.color, c.depth
        return Capture(color, depth, int(c.color_timestamp_usec) if color is not None else 0,
                       int(c.depth_timestamp_usec) if depth is not None else 0)

    def seek(self, offset: int, origin: Any = None) -> None:
        if origin is None:
            self._playback.seek(int(offset))
        else:
            self._playback.seek(int(offset), self._pyk4a.SeekOrigin(int(origin)))

    def close(self) -> None:
        self._playback.close()


def open_playback(path: str, isolated: Optional[bool] = None):
    """A not yet opened playback of `path`: `PlaybackProcess` on POSIX systems (isolated=None), else
    `InProcessPlayback`; isolated=True / False forces the choice."""
    import os
    if isolated is None:
        isolated = os.name == "posix"
    return PlaybackProcess(path) if isolated else InProcessPlayback(path)
