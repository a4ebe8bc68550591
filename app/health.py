"""Stream health: per-frame checks (inside the sources) and the hysteresis that picks the input mode.

Two stages:

1. `FrameChecker` (owned by a source, runs on the capture thread) turns a decoded image into a
   `StreamStatus`: EMPTY for an all-black color image or a depth image with fewer than
   `min_depth_valid_fraction` valid (non-zero) pixels; STALE for a timestamp that did not advance (a
   repeated or backwards device timestamp) or, for live sources, an image older than `max_age_s` on the
   host clock (`time.perf_counter_ns`, the clock pyk4a documents for its system timestamps; if a driver's
   stamps turn out to be on another clock the age check switches itself off with a warning). It also
   counts timestamp gaps (more than `gap_factor` nominal frame periods).
2. `StreamHealth` (owned by the consumer, e.g. the inference worker) keeps one usable/unusable state per
   stream with hysteresis: a usable stream is dropped after `drop_after` consecutive bad frames, an
   unusable one restored after `restore_after` consecutive good frames, so a flicker does not thrash the
   model's mode. The first frame decides the initial state. The mode is 'rgbd' | 'depth' | 'rgb' | 'none'.

While a stream is still "usable" during a short dropout the frame itself may lack that image; the
consumer substitutes (e.g. treats it as a dropout) rather than switching modes.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from app.frames import RgbdFrame, StreamStatus, streams_label

__all__ = ["FrameChecks", "FrameChecker", "HealthReport", "StreamHealth"]

log = logging.getLogger(__name__)
_CLOCK_MISMATCH_S = 3600.0  # an image "older" than this (or from the future) means a clock-domain mismatch


@dataclass(frozen=True)
class FrameChecks:
    """Thresholds of the per-frame checks.

    min_depth_valid_fraction: depth with fewer valid pixels (0..1 of the image) is EMPTY.
    max_age_s: live only; an image whose host timestamp is older than this is STALE (None: no check).
    gap_factor: a timestamp step above gap_factor x the nominal frame period counts as a gap.
    """

    min_depth_valid_fraction: float = 0.02
    max_age_s: Optional[float] = 0.5
    gap_factor: float = 1.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_depth_valid_fraction <= 1.0:
            raise ValueError(f"min_depth_valid_fraction must be in [0, 1], got {self.min_depth_valid_fraction}")
        if self.max_age_s is not None and self.max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0 or None, got {self.max_age_s}")
        if self.gap_factor <= 1.0:
            raise ValueError(f"gap_factor must be > 1, got {self.gap_factor}")


class FrameChecker:
    """Per-stream content and timestamp checks of one source. Not thread-safe: the source's thread only.

    nominal_period_usec: expected device-time step between frames (for gap counting; None: no count).
    """

    def __init__(self, checks: FrameChecks = FrameChecks(), nominal_period_usec: Optional[int] = None):
        self.checks = checks
        self.nominal_period_usec = nominal_period_usec
        self.gaps = 0            # timestamp steps > gap_factor periods since construction
        self.stale = 0           # images flagged STALE since construction
        self.age_check = True    # switched off if host timestamps turn out to use another clock
        self._last: dict[str, int] = {}
        self._last_frame_ts: Optional[int] = None

    def reset(self) -> None:
        """Forget the previous timestamps (after a seek or a loop: the next one may legitimately be lower)."""
        self._last.clear()
        self._last_frame_ts = None

    def _timestamp_status(self, stream: str, ts: int, system_ns: Optional[int]) -> StreamStatus:
        last = self._last.get(stream)
        self._last[stream] = ts  # a backwards jump re-anchors: only the jump frame itself is STALE
        if last is not None and ts <= last:
            self.stale += 1
            return StreamStatus.STALE
        max_age = self.checks.max_age_s
        if system_ns and max_age is not None and self.age_check:
            age_s = (time.perf_counter_ns() - system_ns) / 1e9
            if not -1.0 < age_s < _CLOCK_MISMATCH_S:  # host stamp from another clock (a K4A-compatible driver)
                self.age_check = False
                log.warning("image host timestamps are %.0f s off perf_counter: not the same clock; image age "
                            "check disabled", age_s)
            elif age_s > max_age:
                self.stale += 1
                return StreamStatus.STALE
        return StreamStatus.OK

    def check_color(self, bgr: np.ndarray, ts: int, system_ns: Optional[int] = None) -> StreamStatus:
        """A decoded (H, W, 3) uint8 image -> OK | EMPTY | STALE. system_ns: host time (perf_counter_ns
        clock) of the image, live sources only."""
        status = self._timestamp_status("color", ts, system_ns)
        if status is StreamStatus.OK and not bgr[::4, ::4].any():  # black frame (subsampled: cheap)
            return StreamStatus.EMPTY
        return status

    def check_depth(self, depth: np.ndarray, ts: int, system_ns: Optional[int] = None) -> StreamStatus:
        """An (H, W) uint16 mm image -> OK | EMPTY | STALE."""
        status = self._timestamp_status("depth", ts, system_ns)
        if status is StreamStatus.OK:
            valid = np.count_nonzero(depth)
            if valid == 0 or valid < self.checks.min_depth_valid_fraction * depth.size:
                return StreamStatus.EMPTY
        return status

    def note_frame(self, ts: int) -> None:
        """Count a gap when the frame timestamp jumps forward by more than gap_factor periods."""
        last, self._last_frame_ts = self._last_frame_ts, ts
        period = self.nominal_period_usec
        if last is not None and period and ts - last > self.checks.gap_factor * period:
            self.gaps += 1


@dataclass(frozen=True)
class HealthReport:
    """Result of `StreamHealth.update` for one frame.

    color / depth: the frame's own statuses; color_usable / depth_usable: after hysteresis;
    mode: 'rgbd' | 'depth' | 'rgb' | 'none' from the usable flags; changed: mode differs from the
    previous frame's.
    """

    frame_id: int
    color: StreamStatus
    depth: StreamStatus
    color_usable: bool
    depth_usable: bool
    mode: str
    changed: bool


class _Hysteresis:
    def __init__(self, drop_after: int, restore_after: int):
        self.drop_after, self.restore_after = drop_after, restore_after
        self.usable: Optional[bool] = None
        self.bad_run = 0
        self.good_run = 0

    def update(self, ok: bool) -> bool:
        if self.usable is None:
            self.usable = ok
        elif self.usable:
            self.bad_run = 0 if ok else self.bad_run + 1
            if self.bad_run >= self.drop_after:
                self.usable, self.good_run = False, 0
        else:
            self.good_run = self.good_run + 1 if ok else 0
            if self.good_run >= self.restore_after:
                self.usable, self.bad_run = True, 0
        return self.usable


class StreamHealth:
    """Which streams the model may use, with hysteresis. One instance per consumer thread.

    drop_after: consecutive non-OK frames that make a usable stream unusable (>= 1).
    restore_after: consecutive OK frames that make an unusable stream usable again (>= 1).
    """

    def __init__(self, drop_after: int = 3, restore_after: int = 5):
        for name, value in (("drop_after", drop_after), ("restore_after", restore_after)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.drop_after, self.restore_after = drop_after, restore_after
        self.reset()

    def reset(self) -> None:
        """Forget all history (new source)."""
        self._color = _Hysteresis(self.drop_after, self.restore_after)
        self._depth = _Hysteresis(self.drop_after, self.restore_after)
        self.mode: Optional[str] = None
        self.mode_changes = 0

    def update(self, frame: RgbdFrame) -> HealthReport:
        """Feed one frame (in order); returns its statuses and the mode to run it in."""
        color_usable = self._color.update(frame.color_status is StreamStatus.OK)
        depth_usable = self._depth.update(frame.depth_status is StreamStatus.OK)
        mode = streams_label(color_usable, depth_usable)
        changed = self.mode is not None and mode != self.mode
        self.mode_changes += int(changed)
        self.mode = mode
        return HealthReport(frame.frame_id, frame.color_status, frame.depth_status, color_usable, depth_usable,
                            mode, changed)
