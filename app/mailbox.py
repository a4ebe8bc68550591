"""A one-slot, thread-safe mailbox between the capture thread and its consumer.

Policies (the producer picks one per call):
- `put(frame)`: latest frame wins. An unread frame in the slot is replaced and counted in `dropped`
  (live capture: the consumer always gets the newest frame, never a backlog).
- `put_wait(frame, timeout)`: blocking backpressure. Waits until the consumer has taken the previous
  frame, so nothing is dropped (offline replay: every frame, deterministic results).

Counters (read any time): `received` (frames put), `dropped` (replaced before being read),
`delivered` (frames returned by `get`); received == delivered + dropped + (1 if a frame is waiting).

End of stream: the producer calls `close()` (EOF) or `close(error)`; once the slot is empty `get` raises
`EndOfStream` or, after an error, a `SourceError` naming it, so a dead producer is never silent.
"""
from __future__ import annotations

import threading
import time
from typing import Optional

from app.frames import RgbdFrame, SourceError

__all__ = ["EndOfStream", "LatestFrameMailbox"]


class EndOfStream(Exception):
    """The producer closed the mailbox normally (end of a recording) and no frame is left."""


class LatestFrameMailbox:
    """One slot holding the newest `RgbdFrame`. Any thread may call any method."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._slot: Optional[RgbdFrame] = None
        self._closed = False
        self._error: Optional[BaseException] = None
        self.received = 0
        self.dropped = 0
        self.delivered = 0
        self.last_dropped_id: Optional[int] = None

    # ------------------------------------------------------------------ producer side
    def put(self, frame: RgbdFrame) -> None:
        """Store `frame`, replacing (and counting as dropped) an unread one. Raises if closed."""
        with self._cond:
            self._check_open()
            if self._slot is not None:
                self.dropped += 1
                self.last_dropped_id = self._slot.frame_id
            self._slot = frame
            self.received += 1
            self._cond.notify_all()

    def put_wait(self, frame: RgbdFrame, timeout: Optional[float] = None) -> bool:
        """Store `frame` once the slot is empty; False if it stayed full for `timeout` s (frame not stored).
        Raises SourceError if the mailbox is closed meanwhile."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                self._check_open()
                if self._slot is None:
                    self._slot = frame
                    self.received += 1
                    self._cond.notify_all()
                    return True
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)

    def close(self, error: Optional[BaseException] = None) -> None:
        """No more frames. With `error`, the consumer's `get` raises it (as a SourceError) after the last
        frame. Idempotent; the first error is kept."""
        with self._cond:
            self._closed = True
            if error is not None and self._error is None:
                self._error = error
            self._cond.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise SourceError("mailbox is closed: the consumer stopped or the stream ended")

    # ------------------------------------------------------------------ consumer side
    def get(self, timeout: Optional[float] = None) -> Optional[RgbdFrame]:
        """Take the waiting frame; wait up to `timeout` s (None: forever). None on timeout.

        Raises EndOfStream when closed and empty, or SourceError carrying the producer's error.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._slot is None:
                if self._closed:
                    if self._error is None:
                        raise EndOfStream("end of stream")
                    if isinstance(self._error, SourceError):
                        raise self._error
                    raise SourceError(f"capture failed: {type(self._error).__name__}: {self._error}") \
                        from self._error
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._slot = self._slot, None
            self.delivered += 1
            self._cond.notify_all()
            return frame

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def error(self) -> Optional[BaseException]:
        return self._error

    @property
    def pending(self) -> bool:
        """A frame is waiting in the slot."""
        return self._slot is not None
