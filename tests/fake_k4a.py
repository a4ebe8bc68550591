"""A fake Azure Kinect at the one hardware boundary: pyk4a's native `k4a_module` device functions.

Like pyk4a's own `tests/plugins/device.py`, this replaces the *device* functions of the C extension
(`device_open`, `device_start_cameras`, `device_get_capture`, `capture_get_color_image`, ...) with Python
ones, so `pyk4a.PyK4A` and everything above it (our `KinectSource`) run their real code against a
device made of numpy arrays. Playback, recording and calibration functions stay real; the fake device's
`device_get_calibration` uses libk4a's own `calibration_get_from_raw` on the fake's raw JSON.

Usage (in a test)::

    device = FakeDevice(unplug_after=5)
    FakeK4A(device).install(monkeypatch)
    source = KinectSource(0)

Images of capture i (what the device "sees"; tests compare against the same functions):
`fake_color(i, h, w)` (H, W, 3) uint8 BGR, `fake_depth(i, h, w)` (H, W) uint16 mm with an invalid
(zero) border; device timestamp `T0_USEC + i * period` (µs), host timestamp = perf_counter_ns at capture.

Fault switches (`FakeDevice` fields) are listed on the class. Blocking calls honour the SDK timeout
(milliseconds; an infinite wait is capped at 1 s so a broken test cannot hang).
"""
from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import cv2
import numpy as np

import k4a_module  # the native extension pyk4a calls; imported by `import pyk4a` anyway

REPO = Path(__file__).resolve().parent.parent
CALIBRATION_JSON = (REPO / "assets" / "calibration" / "azure_kinect_default.json").read_text()
T0_USEC = 200_000
SUCCESS, FAILED, TIMEOUT = 0, 1, 2       # k4a_wait_result_t / k4a_result_t

_COLOR_SIZES = {1: (1280, 720), 2: (1920, 1080), 3: (2560, 1440), 4: (2048, 1536), 5: (3840, 2160), 6: (4096, 3072)}
_DEPTH_SIZES = {1: (320, 288), 2: (640, 576), 3: (512, 512), 4: (1024, 1024), 5: (1024, 1024)}
_FPS = {0: 5, 1: 15, 2: 30}
_MJPG, _BGRA32 = 0, 3


@functools.lru_cache(maxsize=4)
def _color_base(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    img[..., 0] = 128 + 90 * np.sin(x / 41.0)
    img[..., 1] = 128 + 90 * np.cos(y / 29.0)
    img[..., 2] = 40 + 170 * (x + y) / (width + height)
    out = np.clip(img, 0, 255).astype(np.uint8)
    out.setflags(write=False)
    return out


def fake_color(i: int, height: int = 720, width: int = 1280) -> np.ndarray:
    """What the fake color camera sees at capture i: a smooth picture with a block that moves with i."""
    img = _color_base(height, width).copy()
    x0 = (40 * i) % max(1, width - height // 4)
    cv2.rectangle(img, (x0, height // 3), (x0 + height // 4, height // 3 + height // 4),
                  (int(30 + 7 * i) % 256, 200, 90), -1)
    return img


@functools.lru_cache(maxsize=4)
def _depth_base(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    depth = (1500 + 2 * x + y).astype(np.uint16)
    border = max(1, width // 20)
    depth[:, :border] = 0          # invalid band, like the sensor's unlit border
    depth[:, -border:] = 0
    depth.setflags(write=False)
    return depth


def fake_depth(i: int, height: int = 576, width: int = 640) -> np.ndarray:
    """What the fake depth camera measures at capture i (mm; 0 = invalid)."""
    base = _depth_base(height, width)
    return np.where(base > 0, base + np.uint16(i), np.uint16(0)).astype(np.uint16)


@dataclass
class FakeDevice:
    """One fake device: fault switches, then the state the fake records (read it in assertions).

    fail_open: device_open fails (device in use / no permission).
    fail_start: device_start_cameras fails (the device never starts).
    stall_after: after this many delivered captures every get_capture times out (0: never streams).
    unplug_after: after this many delivered captures get_capture fails for good (device unplugged).
    timeout_attempts: get_capture call numbers (0-based, counting every call) that time out once.
    hang_s: every get_capture blocks this long, ignoring its timeout (a stuck driver).
    crash_at: get_capture raises RuntimeError("fake driver crash") when this many captures were delivered.
    frame_interval_s: wall time between captures (0: a capture is always ready).
    no_color_at / no_depth_at: capture indices whose color / depth image is absent.
    corrupt_color_at: capture indices whose MJPG color buffer is not a JPEG.
    black_color_at / zero_depth_at: capture indices with an all-black color / all-zero depth image.
    old_at: capture indices whose host timestamp is 2 s in the past (stale images).
    wall_clock_stamps: host timestamps from time.time_ns() instead of perf_counter_ns (another driver's clock).
    timestamps_usec: capture index -> device timestamp override (backwards jumps, repeats).
    """

    serial: str = "000123456789"
    calibration_json: str = CALIBRATION_JSON
    fail_open: bool = False
    fail_start: bool = False
    stall_after: Optional[int] = None
    unplug_after: Optional[int] = None
    timeout_attempts: frozenset = frozenset()
    hang_s: float = 0.0
    crash_at: Optional[int] = None
    frame_interval_s: float = 0.0
    no_color_at: frozenset = frozenset()
    no_depth_at: frozenset = frozenset()
    corrupt_color_at: frozenset = frozenset()
    black_color_at: frozenset = frozenset()
    zero_depth_at: frozenset = frozenset()
    old_at: frozenset = frozenset()
    wall_clock_stamps: bool = False
    timestamps_usec: Mapping[int, int] = field(default_factory=dict)
    # ---- recorded state
    open_count: int = 0
    close_count: int = 0
    started: bool = False
    imu_started: bool = False
    config: Optional[tuple] = None
    attempts: int = 0
    delivered: int = 0
    unplugged: bool = False

    @property
    def is_open(self) -> bool:
        return self.open_count > self.close_count


class _Handle:
    def __init__(self, device: FakeDevice):
        self.device = device
        self.lock = threading.Lock()
        self.start_time = 0.0


class _Capture:
    """Stands in for the capture capsule: per stream (array | None, device ts, system ts)."""

    def __init__(self, color: tuple, depth: tuple):
        self.color, self.depth = color, depth


class FakeK4A:
    """The fake device functions for a list of devices (index = device id)."""

    def __init__(self, *devices: FakeDevice):
        self.devices = list(devices) if devices else [FakeDevice()]
        self._real_calibration_get_from_raw = k4a_module.calibration_get_from_raw

    def install(self, monkeypatch: Any) -> "FakeK4A":
        """Patch k4a_module's device functions for the test (undone by monkeypatch)."""
        fakes = {
            "device_get_installed_count": self.device_get_installed_count,
            "device_open": self.device_open,
            "device_close": self.device_close,
            "device_get_serialnum": self.device_get_serialnum,
            "device_get_raw_calibration": self.device_get_raw_calibration,
            "device_get_calibration": self.device_get_calibration,
            "device_start_cameras": self.device_start_cameras,
            "device_stop_cameras": self.device_stop_cameras,
            "device_start_imu": self.device_start_imu,
            "device_stop_imu": self.device_stop_imu,
            "device_get_capture": self.device_get_capture,
            "capture_get_color_image": self.capture_get_color_image,
            "capture_get_depth_image": self.capture_get_depth_image,
            "capture_get_ir_image": self.capture_get_ir_image,
        }
        for name, fn in fakes.items():
            monkeypatch.setattr(k4a_module, name, fn)
        # every other device function would hand our fake handle to C: make that a clear test failure
        for name in dir(k4a_module):
            if (name.startswith("device_") or name.startswith("color_image_")) and name not in fakes:
                monkeypatch.setattr(k4a_module, name, _not_faked(name))
        return self

    # ---- device lifetime
    def device_get_installed_count(self) -> int:
        return len(self.devices)

    def device_open(self, device_id: int, thread_safe: bool):
        if not 0 <= device_id < len(self.devices) or self.devices[device_id].fail_open:
            return FAILED, None
        device = self.devices[device_id]
        device.open_count += 1
        return SUCCESS, _Handle(device)

    def device_close(self, handle: _Handle, thread_safe: bool) -> int:
        handle.device.close_count += 1
        return SUCCESS

    def device_get_serialnum(self, handle: _Handle, thread_safe: bool) -> str:
        return handle.device.serial

    def device_get_raw_calibration(self, handle: _Handle, thread_safe: bool) -> str:
        return handle.device.calibration_json

    def device_get_calibration(self, handle: _Handle, thread_safe: bool, depth_mode: int, color_resolution: int):
        return self._real_calibration_get_from_raw(thread_safe, handle.device.calibration_json, depth_mode,
                                                   color_resolution)

    def device_start_cameras(self, handle: _Handle, thread_safe: bool, *config: Any) -> int:
        device = handle.device
        if device.fail_start or device.unplugged:
            return FAILED
        device.config = tuple(int(v) for v in config)
        device.started = True
        handle.start_time = time.monotonic()
        return SUCCESS

    def device_stop_cameras(self, handle: _Handle, thread_safe: bool) -> int:
        handle.device.started = False
        return SUCCESS

    def device_start_imu(self, handle: _Handle, thread_safe: bool) -> int:
        handle.device.imu_started = True
        return SUCCESS

    def device_stop_imu(self, handle: _Handle, thread_safe: bool) -> int:
        handle.device.imu_started = False
        return SUCCESS

    # ---- captures
    def device_get_capture(self, handle: _Handle, thread_safe: bool, timeout_ms: int):
        device = handle.device
        max_wait = timeout_ms / 1000.0 if timeout_ms >= 0 else 1.0
        with handle.lock:
            attempt = device.attempts
            device.attempts += 1
            if device.hang_s:
                time.sleep(device.hang_s)
            if device.crash_at is not None and device.delivered >= device.crash_at:
                raise RuntimeError("fake driver crash")
            if not device.started:
                return FAILED, None
            if device.unplugged or (device.unplug_after is not None and device.delivered >= device.unplug_after):
                device.unplugged = True
                return FAILED, None
            if attempt in device.timeout_attempts or (device.stall_after is not None
                                                      and device.delivered >= device.stall_after):
                time.sleep(max_wait)
                return TIMEOUT, None
            if device.frame_interval_s > 0:
                due = handle.start_time + device.delivered * device.frame_interval_s
                wait = due - time.monotonic()
                if wait > max_wait:
                    time.sleep(max_wait)
                    return TIMEOUT, None
                if wait > 0:
                    time.sleep(wait)
            capture = self._make_capture(device, device.delivered)
            device.delivered += 1
            return SUCCESS, capture

    def _make_capture(self, device: FakeDevice, i: int) -> _Capture:
        color_format, color_res, depth_mode, fps = device.config[:4]
        period = 1_000_000 // _FPS[fps]
        ts = device.timestamps_usec.get(i, T0_USEC + i * period)
        now_ns = time.time_ns() if device.wall_clock_stamps else time.perf_counter_ns()
        system_ns = now_ns - (2_000_000_000 if i in device.old_at else 0)
        color = (None, 0, 0)
        if color_res and i not in device.no_color_at:
            w, h = _COLOR_SIZES[color_res]
            bgr = np.zeros((h, w, 3), np.uint8) if i in device.black_color_at else fake_color(i, h, w)
            if color_format == _MJPG:
                if i in device.corrupt_color_at:
                    buf = np.frombuffer(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8, np.uint8).copy()
                else:
                    buf = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), 90])[1].reshape(-1)
            elif color_format == _BGRA32:
                buf = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
            else:
                raise AssertionError(f"fake device: color format {color_format} not faked")
            color = (buf, ts, system_ns)
        depth = (None, 0, 0)
        if depth_mode and i not in device.no_depth_at:
            w, h = _DEPTH_SIZES[depth_mode]
            d = np.zeros((h, w), np.uint16) if i in device.zero_depth_at else fake_depth(i, h, w)
            depth = (d, ts, system_ns)
        return _Capture(color, depth)

    def capture_get_color_image(self, capture: _Capture, thread_safe: bool):
        return capture.color

    def capture_get_depth_image(self, capture: _Capture, thread_safe: bool):
        return capture.depth

    def capture_get_ir_image(self, capture: _Capture, thread_safe: bool):
        return (None, 0, 0)


def _not_faked(name: str):
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"k4a_module.{name} is not faked by tests/fake_k4a.py")
    return fail
