"""The live viewer: an Open3D window (point cloud, body mesh, skeleton, floor grid) plus pyqtgraph plots.

    from app.viewer import run_viewer
    run_viewer(results, faces, parents, on_key=callback, show_plots=True)   # returns when the user quits

`results` is either a `queue.Queue`-like object (anything with `get_nowait`) or an iterable; its items
are `(RgbdFrame, FrameResult)` pairs (the frame gives the point cloud) or bare `FrameResult`s (no cloud).
End of stream: the iterable is exhausted, or `None` comes out of the queue; an exception raised by the
iterable, or an exception object put in the queue, is re-raised by `run_viewer` on the main thread
after the window is closed. faces: (F, 3) body mesh faces; parents: (J,) kinematic tree (SMPL_PARENTS).

Keys (also printed at start and on H): see `KEY_BINDINGS`. The viewer handles the display keys
itself (pause, toggles, screenshot, view reset, help, quit) and forwards every action to
`on_key(action)` on the main thread, after handling it, so the CLI can act on it; the strings are in
`KEY_ACTIONS`: "pause" / "resume", "toggle_cloud", "toggle_mesh", "toggle_skeleton", "toggle_grid",
"mode_rgbd", "mode_depth", "mode_rgb", "mode_auto" (the CLI forwards these to the worker),
"record_start" / "record_stop", "screenshot", "reset_view", "help", "quit" (also sent when the window
is closed). An exception raised by `on_key` ends the viewer and propagates.

Threads and ownership (habit 8):
- the main (GUI) thread owns the Open3D window, the `Scene3D` geometry, the `LivePlots` window and
  every callback; nothing else touches them;
- with an iterable, a daemon "viewer-feed" thread pulls items and posts them into a one-slot mailbox
  (newest wins, replaced items counted as `skipped`; `ViewerConfig.every_result` waits instead);
  with a queue, the GUI thread drains it without blocking (newest wins the same way);
- the GUI loop never blocks on the producer: it polls, renders, pumps Qt, and sleeps briefly when idle.
Rendering: the window needs a display. Tests and screenshots use `ViewerConfig(visible=False)`,
which Open3D renders through EGL; the plots need `QT_QPA_PLATFORM=offscreen` then.

Ctrl-C: while `run()` loops (main thread), SIGINT only sets a flag; the loop sees it at its next
iteration, closes the windows in order and `run()` raises KeyboardInterrupt, so the caller ends as on
any Ctrl-C (`python -m app`: outputs finished, exit code 130). No KeyboardInterrupt is raised in Python
code that Qt or Open3D call back from C++ (pyqtgraph's paint methods catch and print every exception, so
one raised there would be lost). A second Ctrl-C more than `CTRL_C_GRACE_S` later raises at once (a
stuck loop).
A SIGINT that is ignored (a background job) or has a custom handler is left alone.

PySide6 / shiboken6 6.12.0 on CPython 3.11 took a reference from None on every Qt call returning None
(~1000 a second with the plots): "Fatal Python error: none_dealloc" after about a minute, or at exit
(issue #8). requirements.txt pins 6.11.3, which does not; tests/test_app_viewer.py checks it. The open
window is released in `close()` (window, then the visualizer holding the key callbacks), never left to
interpreter finalisation.
"""
from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import numpy as np

from app.frames import RgbdFrame
from app.interrupt import CtrlCRequest
from app.results import FrameResult, InputMode
from app.scene3d import GEOMETRY_NAMES, Scene3D, SceneConfig, SensorView, sensor_view

__all__ = ["KeyBinding", "KEY_BINDINGS", "KEY_ACTIONS", "ViewerConfig", "ViewerStats", "ResultFeed", "Viewer",
           "run_viewer", "help_text", "CTRL_C_GRACE_S"]

log = logging.getLogger(__name__)

Item = tuple[Optional[RgbdFrame], FrameResult]


@dataclass(frozen=True)
class KeyBinding:
    """label: as printed; codes: GLFW key codes (letters are upper-case ASCII); action: see KEY_ACTIONS."""

    label: str
    codes: tuple[int, ...]
    action: str
    help: str


_ESC = 256  # GLFW_KEY_ESCAPE
KEY_BINDINGS: tuple[KeyBinding, ...] = (
    KeyBinding("Space", (32,), "pause", "pause / resume the 3D view"),
    KeyBinding("C", (ord("C"),), "toggle_cloud", "point cloud on / off"),
    KeyBinding("M", (ord("M"),), "toggle_mesh", "body mesh on / off"),
    KeyBinding("K", (ord("K"),), "toggle_skeleton", "skeleton on / off (hidden inside the mesh: M or W)"),
    KeyBinding("G", (ord("G"),), "toggle_grid", "floor grid on / off"),
    KeyBinding("1", (ord("1"),), "mode_rgbd", "force RGB-D input"),
    KeyBinding("2", (ord("2"),), "mode_depth", "force depth-only input"),
    KeyBinding("3", (ord("3"),), "mode_rgb", "force RGB-only input"),
    KeyBinding("0", (ord("0"),), "mode_auto", "input mode chosen automatically (stream health)"),
    KeyBinding("R", (ord("R"),), "record", "start / stop recording the outputs (python -m app: into --out, "
               "else ./recordings/<time>)"),
    KeyBinding("P", (ord("P"),), "screenshot", "save a screenshot (3D view + plots)"),
    KeyBinding("V", (ord("V"),), "reset_view", "back to the sensor's viewpoint"),
    KeyBinding("H", (ord("H"),), "help", "print this key list"),
    KeyBinding("Q / Esc", (ord("Q"), _ESC), "quit", "quit"),
)

KEY_ACTIONS: tuple[str, ...] = (
    "pause", "resume", "toggle_cloud", "toggle_mesh", "toggle_skeleton", "toggle_grid", "mode_rgbd",
    "mode_depth", "mode_rgb", "mode_auto", "record_start", "record_stop", "screenshot", "reset_view", "help",
    "quit",
)
"""Every string `on_key` can receive."""

_BINDING_ACTIONS = {b.action for b in KEY_BINDINGS}


def help_text() -> str:
    """The key list printed at start and on H."""
    lines = ["FuseMesh viewer keys:"]
    lines += [f"  {b.label:<8} {b.help}" for b in KEY_BINDINGS]
    lines.append("  Open3D's own: mouse drag rotate / shift+drag pan / wheel zoom, W wireframe, L lighting, "
                 "+/- point size, [ ] field of view")
    return "\n".join(lines)


@dataclass(frozen=True)
class ViewerConfig:
    """window_size: (W, H) px; visible: False renders offscreen (EGL; tests, screenshots);
    plots_refresh_hz: how often the plots redraw; point_size: cloud points in px; background: RGB in [0, 1];
    screenshot_dir: where P saves; record_dir: if set, R also records the 3D view to an MP4 there
    (otherwise "record_start"/"record_stop" are only forwarded); start_recording: the recording state at
    start (the CLI's --out records from the first frame, so its first R is "record_stop");
    close_at_end: quit when the stream ends
    (default: keep the last frame on screen until the user quits); every_result: the feed thread waits
    for each item to be shown instead of replacing it (deterministic, for tests and offline review);
    idle_sleep_s: the loop's sleep when nothing happened; scene: what the 3D scene draws."""

    window_size: tuple[int, int] = (1280, 720)
    title: str = "FuseMesh"
    visible: bool = True
    plots_refresh_hz: float = 5.0
    point_size: float = 3.0
    background: tuple[float, float, float] = (0.1, 0.1, 0.12)
    screenshot_dir: Path = Path("screenshots")
    record_dir: Optional[Path] = None
    record_fps: float = 30.0
    start_recording: bool = False
    close_at_end: bool = False
    every_result: bool = False
    idle_sleep_s: float = 0.005
    scene: SceneConfig = field(default_factory=SceneConfig)

    def __post_init__(self) -> None:
        w, h = self.window_size
        if int(w) != w or int(h) != h or w < 64 or h < 64:
            raise ValueError(f"window_size must be (width, height) >= 64 px, got {self.window_size!r}")
        if not self.plots_refresh_hz > 0:
            raise ValueError(f"plots_refresh_hz must be > 0, got {self.plots_refresh_hz}")
        if not self.record_fps > 0:
            raise ValueError(f"record_fps must be > 0, got {self.record_fps}")
        if self.idle_sleep_s < 0:
            raise ValueError(f"idle_sleep_s must be >= 0, got {self.idle_sleep_s}")


@dataclass
class ViewerStats:
    """What the viewer did: results received, results drawn (not while paused), results the feed
    skipped (newest wins), screenshots and recordings written."""

    received: int = 0
    shown: int = 0
    skipped: int = 0
    screenshots: list[Path] = field(default_factory=list)
    recordings: list[Path] = field(default_factory=list)


def _as_item(item: Any) -> Item:
    if isinstance(item, FrameResult):
        return None, item
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], FrameResult) \
            and (item[0] is None or isinstance(item[0], RgbdFrame)):
        return item[0], item[1]
    raise TypeError(f"viewer items must be FrameResult or (RgbdFrame, FrameResult), got {type(item).__name__}"
                    + (f" of {[type(x).__name__ for x in item]}" if isinstance(item, tuple) else ""))


class ResultFeed:
    """Hands the newest item to the GUI thread without ever blocking it (see the module docstring).

    `poll()` (GUI thread): the newest unseen item or None; raises the producer's exception once every
    item before it was taken. `ended`: the stream is over and nothing is left. `skipped`: items replaced
    before the GUI saw them. `close()` stops the feed thread (bounded wait: `join_timeout_s`).
    """

    def __init__(self, source: Any, every_result: bool = False, join_timeout_s: float = 1.0):
        self.every_result = bool(every_result)
        self.join_timeout_s = float(join_timeout_s)
        self.skipped = 0
        self._queue = source if hasattr(source, "get_nowait") else None
        self._cond = threading.Condition()
        self._slot: Optional[Item] = None
        self._has_item = False
        self._done = False
        self._error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        if self._queue is None:
            if not isinstance(source, Iterable):
                raise TypeError("results must be a queue (with get_nowait) or an iterable, got "
                                f"{type(source).__name__}")
            self._iterator = iter(source)
            self._thread = threading.Thread(target=self._pump, name="viewer-feed", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ feed thread (iterables)
    def _pump(self) -> None:
        try:
            for raw in self._iterator:
                item = _as_item(raw)
                with self._cond:
                    while self.every_result and self._has_item and not self._stop.is_set():
                        self._cond.wait(0.1)
                    if self._stop.is_set():
                        return
                    if self._has_item:
                        self.skipped += 1
                    self._slot, self._has_item = item, True
                if self._stop.is_set():
                    return
        except BaseException as exc:  # handed to the GUI thread, never swallowed
            with self._cond:
                self._error = exc
        finally:
            with self._cond:
                self._done = True

    # ------------------------------------------------------------------ GUI thread
    def poll(self) -> Optional[Item]:
        if self._queue is not None:
            return self._poll_queue()
        with self._cond:
            if self._has_item:
                item, self._slot, self._has_item = self._slot, None, False
                self._cond.notify_all()
                return item
            if self._error is not None:
                error, self._error = self._error, None
                raise error
        return None

    def _poll_queue(self) -> Optional[Item]:
        newest: Optional[Item] = None
        while not self._done:
            try:
                raw = self._queue.get_nowait()
            except queue.Empty:
                break
            if raw is None:
                self._done = True
                break
            if isinstance(raw, BaseException):
                self._done = True
                if newest is None:
                    raise raw
                self._error = raw  # raised at the next poll, after this item is shown
                break
            if newest is not None:
                self.skipped += 1
            newest = _as_item(raw)
            if self.every_result:
                break
        if newest is None and self._error is not None:
            error, self._error = self._error, None
            raise error
        return newest

    @property
    def ended(self) -> bool:
        with self._cond:
            return self._done and not self._has_item and self._error is None

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.join_timeout_s)
            if self._thread.is_alive():
                log.warning("viewer feed thread still blocked in the producer after %.1f s (daemon, left running)",
                            self.join_timeout_s)


CTRL_C_GRACE_S = 2.0
"""A second Ctrl-C this long after the first, with the loop still running, raises KeyboardInterrupt at once."""

def _display_problem() -> Optional[str]:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return "no display for the viewer window (DISPLAY / WAYLAND_DISPLAY unset); use --headless --out DIR"
    return None


class Viewer:
    """The Open3D window, its scene, the optional plots and the key handling (see the module docstring).

    Thread: create, `step`, `press`, `run` and `close` on the main (GUI) thread only.
    Loop: `run()` = `while step(): pass` then `close()`. Tests drive `step()` / `press()` directly.
    """

    def __init__(self, results: Any, faces: Any, parents: Sequence[int],
                 on_key: Optional[Callable[[str], Any]] = None, show_plots: bool = True,
                 config: ViewerConfig = ViewerConfig()):
        import open3d as o3d

        if config.visible:
            problem = _display_problem()
            if problem is not None:
                raise RuntimeError(problem)
        if on_key is not None and not callable(on_key):
            raise TypeError(f"on_key must be callable(str) or None, got {type(on_key).__name__}")
        self.config = config
        self.on_key = on_key
        self.scene = Scene3D(faces, parents, config.scene)
        self.stats = ViewerStats()
        self.paused = False
        self.recording = bool(config.start_recording)
        self.last: Optional[Item] = None
        self._quit = False
        self._closed = False
        self._pending: list[str] = []
        self._view_rig_camera = None
        self._recorder: Any = None
        self._ctrl_c: Optional[CtrlCRequest] = None
        self._next_refresh = 0.0
        self._render_ms: Optional[float] = None
        self.plots = None
        self.vis = None
        self.view: Optional[SensorView] = None  # the view the viewer last set (sensor / nominal); mouse moves it
        self.feed = ResultFeed(results, every_result=config.every_result)
        try:
            self.vis = o3d.visualization.VisualizerWithKeyCallback()
            width, height = config.window_size
            if not self.vis.create_window(window_name=config.title, width=int(width), height=int(height),
                                          visible=config.visible):
                raise RuntimeError("Open3D could not open its window (no display, and no EGL/Mesa for offscreen)")
            option = self.vis.get_render_option()
            option.background_color = np.asarray(config.background, dtype=np.float64)
            option.point_size = float(config.point_size)
            option.mesh_show_back_face = True
            self.scene.attach(self.vis)
            self.view = self._nominal_view()
            self.view.apply(self.vis)
            for binding in KEY_BINDINGS:
                for code in binding.codes:
                    self.vis.register_key_callback(code, self._key_callback(binding.action))
            if show_plots:
                from app.plots import LivePlots
                self.plots = LivePlots(title=f"{config.title}: pipeline", show=True)
        except BaseException:
            self.close()
            raise
        print(help_text(), flush=True)

    # ------------------------------------------------------------------ views
    def _nominal_view(self) -> SensorView:
        """Before the first frame: an Azure Kinect NFOV-like view (75 x 65 deg) out of the sensor."""
        w, h = self.config.window_size
        f = 0.5 * h / np.tan(np.radians(65.0) / 2)
        return SensorView(int(w), int(h), np.array([[f, 0, w / 2 - 0.5], [0, f, h / 2 - 0.5], [0, 0, 1.0]]))

    def _sensor_view(self) -> SensorView:
        if self._view_rig_camera is None:
            return self._nominal_view()
        return sensor_view(self._view_rig_camera, self._window_size())

    def _window_size(self) -> tuple[int, int]:
        params = self.vis.get_view_control().convert_to_pinhole_camera_parameters()
        return int(params.intrinsic.width), int(params.intrinsic.height)

    # ------------------------------------------------------------------ keys
    def _key_callback(self, action: str) -> Callable[[Any], bool]:
        def callback(_vis: Any) -> bool:
            self._pending.append(action)  # handled in step(), outside Open3D's C++ callback
            return False
        return callback

    def press(self, action: str) -> None:
        """Handle one key action now (as if its key was pressed) and forward it to `on_key`."""
        if action not in _BINDING_ACTIONS:
            raise ValueError(f"unknown key action {action!r}; expected one of {sorted(_BINDING_ACTIONS)}")
        forwarded = action
        if action == "pause":
            self.paused = not self.paused
            forwarded = "pause" if self.paused else "resume"
        elif action.startswith("toggle_"):
            self.scene.toggle(action[len("toggle_"):])
            self.scene.sync(self.vis)
        elif action == "record":
            self._toggle_recording()
            forwarded = "record_start" if self.recording else "record_stop"
        elif action == "screenshot":
            self.screenshot()
        elif action == "reset_view":
            self.view = self._sensor_view()
            self.view.apply(self.vis)
        elif action == "help":
            print(help_text(), flush=True)
        elif action == "quit":
            self._quit = True
        if self.on_key is not None:
            self.on_key(forwarded)

    # ------------------------------------------------------------------ loop
    def step(self) -> bool:
        """One loop iteration: take the newest item, update the scene, render, pump Qt, handle keys.
        Returns False once the viewer should stop (quit key, window closed, or stream end with
        `close_at_end`)."""
        if self._closed:
            return False
        if self._ctrl_c is not None and self._ctrl_c.requested:
            self._quit = True
            return False
        busy = False
        item = self.feed.poll()
        if item is not None:
            busy = True
            frame, result = item
            self.last = item
            self.stats.received += 1
            t0 = time.perf_counter()
            if not self.paused:
                self.scene.update(frame, result)
                self.scene.sync(self.vis)
                self.stats.shown += 1
                if self._view_rig_camera is None and frame is not None:
                    self._view_rig_camera = frame.rig.depth
                    self.view = self._sensor_view()
                    self.view.apply(self.vis)
        alive = self.vis.poll_events()
        self.vis.update_renderer()
        if item is not None:
            self._render_ms = (time.perf_counter() - t0) * 1000.0
            if self.recording and not self.paused:
                self._record_frame()
            if self.plots is not None:
                self.plots.add(result, frame, render_ms=self._render_ms, skipped=self.feed.skipped)
        self.stats.skipped = self.feed.skipped
        while self._pending:
            busy = True
            self.press(self._pending.pop(0))
        if self.plots is not None:
            now = time.perf_counter()
            if now >= self._next_refresh:
                self._next_refresh = now + 1.0 / self.config.plots_refresh_hz
                self.plots.set_status(self.status_text())
                self.plots.refresh()
            self.plots.process_events()
        if not alive and not self._quit:
            self._quit = True
            if self.on_key is not None:
                self.on_key("quit")
        if self.feed.ended and self.config.close_at_end:
            self._quit = True
        if not busy and not self._quit and self.config.idle_sleep_s:
            time.sleep(self.config.idle_sleep_s)
        return not self._quit

    def run(self) -> ViewerStats:
        """Loop until quit, then close (also on Ctrl-C or an exception, which propagates). Ctrl-C ends the
        loop at its next iteration; after the windows are closed it is raised as KeyboardInterrupt."""
        with CtrlCRequest(grace_s=CTRL_C_GRACE_S, only_over_default=True) as ctrl_c:
            self._ctrl_c = ctrl_c
            try:
                while self.step():
                    pass
            finally:
                self._ctrl_c = None
                self.close()
        if ctrl_c.requested:
            raise KeyboardInterrupt
        return self.stats

    def status_text(self) -> str:
        """One line: mode, frame id, paused / recording, what is shown."""
        parts = []
        if self.last is not None:
            result = self.last[1]
            parts.append(f"{InputMode(result.mode).value} | frame {result.frame_id}")
            if result.body is None and result.message:
                parts.append(result.message)
        else:
            parts.append("waiting for frames")
        if self.feed.ended:
            parts.append("end of stream")
        if self.paused:
            parts.append("PAUSED")
        if self.recording:
            parts.append("REC")
        shown = " ".join(f"{n}:{'on' if self.scene.visible[n] else 'off'}" for n in GEOMETRY_NAMES)
        parts.append(shown)
        parts.append("H: keys")
        return " | ".join(parts)

    # ------------------------------------------------------------------ outputs
    def screenshot(self, path: Optional[Union[str, Path]] = None) -> list[Path]:
        """Save the 3D view as PNG (and the plots next to it as *_plots.png). Returns the paths."""
        if path is None:
            frame_id = self.last[1].frame_id if self.last is not None else 0
            self.config.screenshot_dir.mkdir(parents=True, exist_ok=True)
            path = self.config.screenshot_dir / f"fusemesh_{frame_id:06d}_{len(self.stats.screenshots):03d}.png"
        path = Path(path)
        self.scene.sync(self.vis)
        self.vis.capture_screen_image(str(path), do_render=True)
        if not path.is_file():
            raise RuntimeError(f"Open3D did not write the screenshot {path}")
        paths = [path]
        if self.plots is not None:
            paths.append(self.plots.grab(path.with_name(path.stem + "_plots.png")))
        self.stats.screenshots.extend(paths)
        print("screenshot: " + ", ".join(str(p) for p in paths), flush=True)
        return paths

    def capture(self) -> np.ndarray:
        """The 3D view now: (H, W, 3) uint8 RGB."""
        self.scene.sync(self.vis)
        img = np.asarray(self.vis.capture_screen_float_buffer(do_render=True))
        return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)

    def _toggle_recording(self) -> None:
        self.recording = not self.recording
        if self._recorder is not None and not self.recording:
            self._recorder.release()
            self._recorder = None
            print(f"recording stopped: {self.stats.recordings[-1]}", flush=True)

    def _record_frame(self) -> None:
        if self.config.record_dir is None:
            return
        import cv2

        img = self.capture()[..., ::-1]
        if self._recorder is None:
            self.config.record_dir.mkdir(parents=True, exist_ok=True)
            path = self.config.record_dir / f"viewer_{time.strftime('%Y%m%d_%H%M%S')}.mp4"
            h, w = img.shape[:2]
            self._recorder = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), self.config.record_fps,
                                             (w - w % 2, h - h % 2))
            if not self._recorder.isOpened():
                self._recorder = None
                self.recording = False
                raise RuntimeError(f"cannot open an MP4 writer (codec mp4v) for {path}")
            self._record_size = (w - w % 2, h - h % 2)
            self.stats.recordings.append(path)
            print(f"recording: {path}", flush=True)
        w, h = self._record_size
        if img.shape[:2] != (h, w):
            img = cv2.resize(img, (w, h))
        self._recorder.write(np.ascontiguousarray(img))

    def close(self) -> None:
        """Stop the feed, close the plots (before exit: PySide6), release the recorder, destroy the window
        and drop the visualizer (and with it the key callbacks, which hold this viewer) now rather than
        at interpreter exit. Idempotent; `vis` is None afterwards."""
        if self._closed:
            return
        self._closed = True
        self.feed.close()
        if self._recorder is not None:
            self._recorder.release()
            self._recorder = None
        if self.plots is not None:
            self.plots.close()
        if self.vis is not None:
            vis, self.vis = self.vis, None
            vis.destroy_window()
            del vis  # the last reference: Open3D frees the visualizer and its Python callbacks here

    def __enter__(self) -> "Viewer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def run_viewer(results: Any, faces: Any, parents: Sequence[int], on_key: Optional[Callable[[str], Any]] = None,
               show_plots: bool = True, config: ViewerConfig = ViewerConfig()) -> ViewerStats:
    """Open the viewer on the main thread and run it until the user quits (see the module docstring).
    Re-raises the producer's exception, if any, after closing the windows."""
    return Viewer(results, faces, parents, on_key=on_key, show_plots=show_plots, config=config).run()
