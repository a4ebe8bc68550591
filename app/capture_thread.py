"""The capture thread: reads one `FrameSource` and feeds a `LatestFrameMailbox`.

Threads and ownership:
- the capture thread (`CaptureThread.run`, thread name "capture:<source>") is the only caller of the
  source's `read` and its `close`, and the only producer of the mailbox;
- the consumer thread (the inference worker) only calls `get` / the mailbox's `get`;
- any thread may call `stop`. Stopping sets an event checked between reads; every blocking call in the
  loop is bounded by `read_timeout_s`, so the thread ends within read_timeout_s plus one read, and `stop`
  waits at most `join_timeout_s`.

Delivery policy: `every_frame=False` (default for live sources): latest frame wins, an unread frame is
replaced and counted (`mailbox.dropped`). `every_frame=True` (default for recordings and folders):
blocking backpressure, nothing dropped, deterministic. A real-time replay (`MkvSource(realtime=True)`)
paces and drops inside the source, so backpressure there only delays the next read.

Failures are never silent: a `SourceError` (or any other exception) ends the thread, closes the source
and the mailbox with the error, so the consumer's next `get` raises a `SourceError` naming the source and
the problem; `error` holds it too. A live source that delivers nothing for `stall_timeout_s` (device
never starts streaming, or stalls) is such an error. The end of a recording closes the mailbox normally
(`get` raises `EndOfStream`).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Optional

from app.frames import RgbdFrame, SourceError, SourceTimeout
from app.mailbox import LatestFrameMailbox
from app.sources import FrameSource

__all__ = ["CaptureThread"]

log = logging.getLogger(__name__)


class CaptureThread(threading.Thread):
    """Runs on its own daemon thread; owns `source` (reads and closes it) and produces into `mailbox`.

    source: any FrameSource; mailbox: created if None; every_frame: None -> `not source.is_live`;
    read_timeout_s: bound on each read (and on each backpressure wait); stall_timeout_s: a source with no
    frame for this long is an error; join_timeout_s: how long `stop` waits for the thread.
    Use as a context manager (starts on enter, stops on exit, also on Ctrl-C).
    """

    def __init__(self, source: FrameSource, mailbox: Optional[LatestFrameMailbox] = None, *,
                 every_frame: Optional[bool] = None, read_timeout_s: float = 0.2, stall_timeout_s: float = 5.0,
                 join_timeout_s: float = 2.0):
        super().__init__(name=f"capture:{source.name}", daemon=True)
        for key, value in (("read_timeout_s", read_timeout_s), ("stall_timeout_s", stall_timeout_s),
                           ("join_timeout_s", join_timeout_s)):
            if not value > 0:
                raise ValueError(f"{key} must be > 0, got {value!r}")
        self.source = source
        self.mailbox = mailbox if mailbox is not None else LatestFrameMailbox()
        self.every_frame = (not source.is_live) if every_frame is None else bool(every_frame)
        self.read_timeout_s = float(read_timeout_s)
        self.stall_timeout_s = float(stall_timeout_s)
        self.join_timeout_s = float(join_timeout_s)
        self.error: Optional[BaseException] = None
        self.frames_read = 0
        self.timeouts = 0
        self.eof = False
        self._stop_event = threading.Event()

    # ------------------------------------------------------------------ capture thread
    def run(self) -> None:
        error: Optional[BaseException] = None
        try:
            self._loop()
        except BaseException as exc:  # reported to the consumer through the mailbox, never swallowed
            if not isinstance(exc, SourceError):
                log.exception("capture thread for %s crashed", self.source.name)
                exc_new = SourceError(f"{self.source.name}: capture crashed: {type(exc).__name__}: {exc}")
                exc_new.__cause__ = exc
                exc = exc_new
            error = exc
            self.error = exc
        finally:
            try:
                self.source.close()
            except Exception as exc:
                log.warning("%s: close failed (ignored): %s", self.source.name, exc)
            self.mailbox.close(error)

    def _loop(self) -> None:
        last_frame = time.monotonic()
        while not self._stop_event.is_set():
            try:
                frame = self.source.read(self.read_timeout_s)
            except SourceTimeout:
                self.timeouts += 1
                idle = time.monotonic() - last_frame
                if idle > self.stall_timeout_s:
                    what = "since start (device never started streaming?)" if self.frames_read == 0 \
                        else f"after frame {self.frames_read}"
                    raise SourceError(f"{self.source.name}: no frame for {idle:.1f} s {what}") from None
                continue
            if frame is None:
                self.eof = True
                return
            last_frame = time.monotonic()
            self.frames_read += 1
            if not self._deliver(frame):
                return

    def _deliver(self, frame: RgbdFrame) -> bool:
        if not self.every_frame:
            self.mailbox.put(frame)
            return True
        while not self._stop_event.is_set():
            if self.mailbox.put_wait(frame, timeout=self.read_timeout_s):
                return True
        return False

    # ------------------------------------------------------------------ any thread
    def stop(self) -> bool:
        """Ask the thread to end and wait up to join_timeout_s; True if it has ended."""
        self._stop_event.set()
        if self.ident is None:  # never started: release what it owns here
            self.source.close()
            self.mailbox.close()
            return True
        if self.is_alive() and threading.current_thread() is not self:
            self.join(self.join_timeout_s)
        if self.is_alive():
            log.warning("%s did not stop within %.1f s (a read is blocked in the driver)", self.name,
                        self.join_timeout_s)
            return False
        return True

    @property
    def stopping(self) -> bool:
        return self._stop_event.is_set()

    # ------------------------------------------------------------------ consumer thread
    def get(self, timeout: Optional[float] = None) -> Optional[RgbdFrame]:
        """The newest frame (see LatestFrameMailbox.get): None on timeout, EndOfStream at the end,
        SourceError if capture failed."""
        return self.mailbox.get(timeout)

    def __enter__(self) -> "CaptureThread":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
