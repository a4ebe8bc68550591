"""Live plots of the pipeline: frame rate, per-stage latency, dropped frames and stream status over time.

Two layers:
- `StatsHistory` (numpy, no Qt): ring buffers filled from `FrameResult`s, one sample per result, on
  the host clock (`time.perf_counter()` seconds unless the caller passes `now_s`);
- `LivePlots`: a pyqtgraph window drawing a `StatsHistory`. pyqtgraph / PySide6 are imported when a
  `LivePlots` is created, never at import of this module.

Series (all the same length, oldest first): t_s (seconds since the first result), fps (results per
second over the last `RateMeter.window_s`), latency per stage in `app.results.STAGES` (ms, NaN when a
stage did not run) and total_ms (sum of the stages that ran), dropped (the worker's
`FrameResult.dropped_frames`, a running count as reported), skipped (results the viewer itself never
showed, running count), mode (0 none, 1 rgb, 2 depth, 3 rgbd: `MODE_LEVELS`), color_ok / depth_ok
(1 / 0, NaN when the frame is unknown).

Threads: everything here belongs to the GUI thread (Qt objects must be touched only there); the
viewer posts results to it rather than calling in from the worker.
Without a display set `QT_QPA_PLATFORM=offscreen` before the first `LivePlots` (tests, screenshots);
close every `LivePlots` before the process exits: PySide6 crashes at exit while a shown window lives.
"""
from __future__ import annotations

import collections
import ctypes.util
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

from app.frames import RgbdFrame, StreamStatus
from app.results import STAGES, FrameResult, InputMode

__all__ = ["MODE_LEVELS", "RateMeter", "StatsHistory", "LivePlots", "qt_platform_problem"]

MODE_LEVELS = {InputMode.NONE.value: 0, InputMode.RGB.value: 1, InputMode.DEPTH.value: 2, InputMode.RGBD.value: 3}
"""Plot level of each input mode (the y ticks of the stream plot)."""

STAGE_COLORS = {"capture": (120, 120, 120), "decode": (170, 110, 220), "align": (90, 170, 255),
                "crop": (80, 200, 200), "infer": (255, 150, 60), "post": (240, 220, 80), "render": (110, 220, 110)}


class RateMeter:
    """Events per second over a sliding window of the last `window_s` seconds (host clock, seconds).

    `tick(now_s)` records one event and returns the rate: (events in the window - 1) / (their time span);
    NaN until two events have been seen.
    """

    def __init__(self, window_s: float = 1.0):
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = float(window_s)
        self._times: collections.deque[float] = collections.deque()

    def tick(self, now_s: Optional[float] = None) -> float:
        now = time.perf_counter() if now_s is None else float(now_s)
        self._times.append(now)
        while len(self._times) > 2 and now - self._times[0] > self.window_s:
            self._times.popleft()
        return self.rate

    @property
    def rate(self) -> float:
        if len(self._times) < 2 or self._times[-1] <= self._times[0]:
            return float("nan")
        return (len(self._times) - 1) / (self._times[-1] - self._times[0])


class StatsHistory:
    """The last `length` results as plot series (see the module docstring). GUI thread only."""

    def __init__(self, length: int = 300, rate_window_s: float = 1.0):
        if int(length) != length or length < 2:
            raise ValueError(f"length must be an integer >= 2, got {length!r}")
        self.length = int(length)
        self.rate = RateMeter(rate_window_s)
        self._t0: Optional[float] = None
        names = ("t_s", "fps", "total_ms", "dropped", "skipped", "mode", "color_ok", "depth_ok", "frame_id",
                 *(f"{s}_ms" for s in STAGES))
        self._data: dict[str, collections.deque[float]] = {n: collections.deque(maxlen=self.length) for n in names}
        self.count = 0
        self.last: Optional[FrameResult] = None
        self.last_streams = ""

    def add(self, result: FrameResult, frame: Optional[RgbdFrame] = None, now_s: Optional[float] = None,
            render_ms: Optional[float] = None, skipped: int = 0) -> None:
        """One result (and its frame, for stream statuses). `render_ms` fills the "render" stage when the
        result has none (the viewer times its own drawing); `skipped`: the viewer's running count of
        results it never showed."""
        if not isinstance(result, FrameResult):
            raise TypeError(f"StatsHistory.add needs a FrameResult, got {type(result).__name__}")
        now = time.perf_counter() if now_s is None else float(now_s)
        if self._t0 is None:
            self._t0 = now
        d = self._data
        d["t_s"].append(now - self._t0)
        d["fps"].append(self.rate.tick(now))
        timings = dict(result.timings_ms)
        if render_ms is not None and "render" not in timings:
            timings["render"] = float(render_ms)
        total = 0.0
        for stage in STAGES:
            value = timings.get(stage)
            d[f"{stage}_ms"].append(float("nan") if value is None else float(value))
            total += 0.0 if value is None else float(value)
        d["total_ms"].append(total if timings else float("nan"))
        d["dropped"].append(float(result.dropped_frames))
        d["skipped"].append(float(skipped))
        d["mode"].append(float(MODE_LEVELS[InputMode(result.mode).value]))
        d["frame_id"].append(float(result.frame_id))
        if frame is not None:
            d["color_ok"].append(1.0 if frame.color_status is StreamStatus.OK else 0.0)
            d["depth_ok"].append(1.0 if frame.depth_status is StreamStatus.OK else 0.0)
            self.last_streams = f"color {frame.color_status.value}, depth {frame.depth_status.value}"
        else:
            d["color_ok"].append(float("nan"))
            d["depth_ok"].append(float("nan"))
        self.count += 1
        self.last = result

    def series(self) -> dict[str, np.ndarray]:
        """Every series as a float64 array, oldest first (keys: see the module docstring)."""
        return {name: np.fromiter(values, dtype=np.float64, count=len(values)) for name, values in self._data.items()}

    def __len__(self) -> int:
        return len(self._data["t_s"])


def qt_platform_problem() -> Optional[str]:
    """Why Qt could not open windows here (one line), or None. Qt aborts the whole process in these
    cases instead of raising, so we check first: no display on Linux without an offscreen platform, or
    the xcb platform without libxcb-cursor."""
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform.startswith(("offscreen", "minimal", "vnc", "eglfs", "linuxfb")) or not sys.platform.startswith("linux"):
        return None
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return ("no display for the plot window (set QT_QPA_PLATFORM=offscreen to draw without one, "
                "or pass show_plots=False)")
    if (platform in ("", "xcb") and not os.environ.get("WAYLAND_DISPLAY")
            and ctypes.util.find_library("xcb-cursor") is None):
        return "Qt's xcb platform needs the system library libxcb-cursor0 (apt-get install libxcb-cursor0)"
    return None


class LivePlots:
    """A pyqtgraph window with four stacked plots sharing the time axis: fps, per-stage latency (ms),
    dropped / skipped frames, input mode. Fed with `add`; `refresh` pushes the history to the curves.

    Thread: the GUI thread creates it and is the only caller (Qt rule). The caller pumps Qt's events
    (`process_events`, or a running Qt event loop) and calls `refresh` at a few Hz.
    history: samples kept; show: open the window (False: build it hidden, e.g. for `grab`).
    """

    def __init__(self, history: int = 300, title: str = "FuseMesh: pipeline", show: bool = True,
                 size: tuple[int, int] = (560, 720)):
        problem = qt_platform_problem()
        if problem is not None:
            raise RuntimeError(problem)
        import pyqtgraph as pg  # lazy: Qt is heavy and must not start at import

        self._pg = pg
        self.history = StatsHistory(history)
        self.app = pg.mkQApp("FuseMesh")
        pg.setConfigOptions(antialias=False, background=(24, 24, 28), foreground=(220, 220, 220))
        self.widget = pg.GraphicsLayoutWidget(title=title)
        self.widget.resize(*size)
        self.status = self.widget.addLabel("", row=0, col=0, justify="left")
        self.plots: dict[str, Any] = {}
        self.curves: dict[str, Any] = {}
        layout = (("fps", "frames / s"), ("latency", "latency (ms)"), ("dropped", "dropped frames"),
                  ("mode", "input mode"))
        for row, (key, label) in enumerate(layout, start=1):
            plot = self.widget.addPlot(row=row, col=0)
            plot.setLabel("left", label)
            if row > 1:
                plot.setXLink(self.plots["fps"])
            self.plots[key] = plot
        self.plots["mode"].setLabel("bottom", "time (s)")
        self.plots["dropped"].addLegend(offset=(5, 1), labelTextSize="7pt", colCount=2, verSpacing=-6,
                                        brush=(24, 24, 28, 210))
        for key in ("fps", "latency", "dropped"):
            self.plots[key].setLimits(yMin=0)
            self.plots[key].enableAutoRange(axis="x", enable=False)
        self.curves["fps"] = self.plots["fps"].plot(pen=pg.mkPen((110, 220, 110), width=2))
        for stage in STAGES:
            self.curves[f"{stage}_ms"] = self.plots["latency"].plot(
                pen=pg.mkPen(STAGE_COLORS.get(stage, (200, 200, 200)), width=1.5), name=stage, connect="finite")
        self.curves["total_ms"] = self.plots["latency"].plot(pen=pg.mkPen((255, 255, 255), width=2), name="total",
                                                             connect="finite")
        self.curves["dropped"] = self.plots["dropped"].plot(pen=pg.mkPen((255, 90, 90), width=2), name="capture")
        self.curves["skipped"] = self.plots["dropped"].plot(pen=pg.mkPen((255, 200, 90), width=1.5), name="viewer")
        self.curves["mode"] = self.plots["mode"].plot(pen=pg.mkPen((90, 170, 255), width=2), stepMode="right")
        levels = sorted(MODE_LEVELS.items(), key=lambda kv: kv[1])
        self.plots["mode"].getAxis("left").setTicks([[(lvl, name) for name, lvl in levels]])
        self.plots["mode"].setYRange(-0.3, 3.3, padding=0)
        self._status_text = ""
        self._closed = False
        if show:
            self.widget.show()

    # ------------------------------------------------------------------ data
    def add(self, result: FrameResult, frame: Optional[RgbdFrame] = None, now_s: Optional[float] = None,
            render_ms: Optional[float] = None, skipped: int = 0) -> None:
        """Record one result (see `StatsHistory.add`); drawn at the next `refresh`."""
        self.history.add(result, frame, now_s=now_s, render_ms=render_ms, skipped=skipped)

    def set_status(self, text: str) -> None:
        """One line above the plots (the viewer shows mode, toggles, paused / recording state)."""
        self._status_text = text

    def refresh(self) -> None:
        """Push the history into the curves and titles (~1 ms for 300 samples)."""
        if self._closed:
            return
        s = self.history.series()
        t = s["t_s"]
        for name, curve in self.curves.items():
            curve.setData(t, s[name])
        if len(t):
            self.plots["fps"].setXRange(t[0], max(t[-1], t[0] + 1.0), padding=0.02)
            top = np.nanmax(s["fps"]) if np.isfinite(s["fps"]).any() else 0.0
            self.plots["fps"].setYRange(0.0, max(5.0, 1.15 * top), padding=0)
            top = np.nanmax(s["total_ms"]) if np.isfinite(s["total_ms"]).any() else 0.0
            self.plots["latency"].setYRange(0.0, max(10.0, 1.15 * top), padding=0)
        last = self.history.last
        if last is not None:
            fps = s["fps"][-1]
            total = s["total_ms"][-1]
            self.plots["fps"].setTitle(f"{fps:.1f} fps" if np.isfinite(fps) else "fps: -", size="9pt")
            self.plots["latency"].setTitle(self._latency_title(s), size="9pt")
            self.plots["dropped"].setTitle(f"capture dropped {int(s['dropped'][-1])}, "
                                           f"viewer skipped {int(s['skipped'][-1])}", size="9pt")
            streams = f" ({self.history.last_streams})" if self.history.last_streams else ""
            self.plots["mode"].setTitle(f"mode {InputMode(last.mode).value}{streams}", size="9pt")
        self.status.setText(self._status_text, size="9pt")

    @staticmethod
    def _latency_title(s: dict[str, np.ndarray]) -> str:
        """Two lines: the total, then each stage's last value in its curve's color (the legend)."""
        total = s["total_ms"][-1]
        head = f"total {total:.1f} ms" if np.isfinite(total) else "no timings"
        parts = []
        for stage in STAGES:
            value = s[f"{stage}_ms"][-1]
            r, g, b = STAGE_COLORS.get(stage, (200, 200, 200))
            text = f"{stage} {value:.1f}" if np.isfinite(value) else f"{stage} -"
            parts.append(f"<span style='color:#{r:02x}{g:02x}{b:02x}'>{text}</span>")
        return f"{head}<br><span style='font-size:8pt'>{' &nbsp;'.join(parts)}</span>"

    # ------------------------------------------------------------------ Qt
    def process_events(self) -> None:
        """Let Qt handle pending events (the viewer's loop calls this every iteration)."""
        if not self._closed:
            self.app.processEvents()

    @property
    def is_visible(self) -> bool:
        return not self._closed and self.widget.isVisible()

    def grab(self, path: Union[str, Path]) -> Path:
        """Save the panel as a PNG (works offscreen). Returns the path; RuntimeError if Qt fails."""
        if self._closed:
            raise RuntimeError("LivePlots is closed")
        self.refresh()
        self.app.processEvents()
        path = Path(path)
        if not self.widget.grab().save(str(path)):
            raise RuntimeError(f"could not write the plot image {path}")
        return path

    def close(self) -> None:
        """Close and delete the window (idempotent). Call before the process exits."""
        if self._closed:
            return
        self._closed = True
        self.widget.close()
        self.widget.deleteLater()
        self.app.processEvents()

    def __enter__(self) -> "LivePlots":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
