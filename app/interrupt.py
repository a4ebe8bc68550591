"""Ctrl-C as a request: while active, SIGINT sets a flag that a loop polls instead of raising wherever the
main thread happens to be (inside a frame being written, or inside Qt / Open3D C++ code).

    with CtrlCRequest() as ctrl_c:            # python -m app --headless: finish the frame, then stop
        while not ctrl_c.requested: ...
    with CtrlCRequest(grace_s=2.0, only_over_default=True): ...   # the viewer loop

A second Ctrl-C more than `grace_s` seconds after the first raises KeyboardInterrupt at once (a stuck
loop). Only installed on the main thread (Python delivers signals there); with `only_over_default` a
SIGINT that is ignored (a background job) or has another custom handler is left alone.
"""
from __future__ import annotations

import signal
import threading
import time
from typing import Any, Optional

__all__ = ["CtrlCRequest"]


class CtrlCRequest:
    """Context manager; `requested` is True once Ctrl-C was pressed while it was active."""

    def __init__(self, grace_s: float = 0.0, only_over_default: bool = False) -> None:
        self.grace_s, self.only_over_default = float(grace_s), bool(only_over_default)
        self.requested_at: Optional[float] = None
        self._previous: Any = None

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.requested_at is None:
            self.requested_at = now
        elif now - self.requested_at > self.grace_s:
            raise KeyboardInterrupt

    def __enter__(self) -> "CtrlCRequest":
        if threading.current_thread() is threading.main_thread() and (
                not self.only_over_default or signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
