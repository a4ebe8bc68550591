"""Write real Azure Kinect `.mkv` recordings of synthetic frames, plus a ground-truth sidecar.

The file is written by the Azure Kinect SDK's own `libk4arecord` (shipped inside pyk4a-bundle), called
through ctypes with a NULL device, so `pyk4a.PyK4APlayback` and every other K4A reader open it like a
recording from a sensor. Without a device the SDK stores no calibration, so the caller's raw calibration
JSON (`CalibrationInformation` document, as `k4a_device_get_raw_calibration` returns it) is added as the
`calibration.json` attachment before the header is written.

Images (all row-major, C order):
- color, MJPG recording:   (H, W, 3) uint8 BGR, JPEG-encoded here with OpenCV;
- color, BGRA32 recording: (H, W, 4) uint8 BGRA (or (H, W, 3) BGR, alpha set to 255);
- depth: (H, W) uint16 millimetres along the depth camera's z axis, 0 = invalid;
- ir:    (H, W) uint16 raw IR intensity.
H, W must be the mode's size (`COLOR_RESOLUTIONS`, `DEPTH_MODES`). Device timestamps are microseconds,
strictly increasing; every image of one capture gets the capture's timestamp.

A recording is only readable once `close()` has run: the SDK writes the cues and the segment size at
the end, so a file cut short (interrupted copy) or left unclosed (process killed) makes
`pyk4a.PyK4APlayback.open()` raise `pyk4a.K4AException("Cannot open file ...")`.

Ground truth lives next to the recording (`clip.mkv` -> `clip.gt.npz`, see `write_sidecar`), one row per
frame in timestamp order, keyed by the same device timestamps.

The SDK's shared libraries are loaded on the first `K4ARecordingWriter`, never at import.
"""
from __future__ import annotations

import ctypes
import dataclasses
import difflib
import functools
import importlib.util
import json
import re
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

__all__ = [
    "COLOR_RESOLUTIONS", "DEPTH_MODES", "K4ARecordingConfig", "K4ARecordingWriter", "RecordingError",
    "Sidecar", "read_sidecar", "sidecar_path", "write_sidecar",
]


class RecordingError(RuntimeError):
    """A recording could not be written (bad input, bad configuration or an SDK call that failed)."""


class _Mode(NamedTuple):
    sdk_value: int  # value of the k4a enum
    width: int      # pixels
    height: int     # pixels


# k4a_color_resolution_t values and image sizes (k4atypes.h).
COLOR_RESOLUTIONS: Mapping[str, _Mode] = {
    "720P": _Mode(1, 1280, 720),
    "1080P": _Mode(2, 1920, 1080),
    "1440P": _Mode(3, 2560, 1440),
    "1536P": _Mode(4, 2048, 1536),
    "2160P": _Mode(5, 3840, 2160),
    "3072P": _Mode(6, 4096, 3072),
}
# k4a_depth_mode_t values and depth/IR image sizes (k4atypes.h). PASSIVE_IR records IR only.
DEPTH_MODES: Mapping[str, _Mode] = {
    "OFF": _Mode(0, 0, 0),
    "NFOV_2X2BINNED": _Mode(1, 320, 288),
    "NFOV_UNBINNED": _Mode(2, 640, 576),
    "WFOV_2X2BINNED": _Mode(3, 512, 512),
    "WFOV_UNBINNED": _Mode(4, 1024, 1024),
    "PASSIVE_IR": _Mode(5, 1024, 1024),
}
_COLOR_FORMATS = {"MJPG": 0, "BGRA32": 3}   # k4a_image_format_t
_FMT_DEPTH16, _FMT_IR16 = 4, 5
_FPS = {5: 0, 15: 1, 30: 2}                 # k4a_fps_t
_K4A_RESULT_SUCCEEDED = 0
_WIRED_SYNC_STANDALONE = 0
_TAG_NAME = re.compile(r"^[A-Z0-9_-]+$")
_CALIBRATION_ATTACHMENT = b"calibration.json"


@dataclass(frozen=True)
class K4ARecordingConfig:
    """What the recording holds, in the SDK's own terms (mirrors `k4a_device_configuration_t`).

    color_format: "MJPG", "BGRA32" or None (no color track; `color_resolution` is then ignored).
    color_resolution: one of `COLOR_RESOLUTIONS` ("720P", "1080P", "1440P", "1536P", "2160P", "3072P").
    depth_mode: one of `DEPTH_MODES` ("OFF", "NFOV_2X2BINNED", "NFOV_UNBINNED", "WFOV_2X2BINNED",
        "WFOV_UNBINNED", "PASSIVE_IR").
    fps: 5, 15 or 30 frames per second (30 is not available for 3072P color or WFOV_UNBINNED depth).
    ir: write IR images (required for PASSIVE_IR). The SDK creates the IR track whenever depth is on;
        with ir=False it stays empty and playback returns `capture.ir is None`.
    jpeg_quality: OpenCV JPEG quality 0..100 for MJPG color.
    """

    color_format: str | None = "MJPG"
    color_resolution: str = "720P"
    depth_mode: str = "NFOV_UNBINNED"
    fps: int = 30
    ir: bool = False
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if self.color_format is not None and self.color_format not in _COLOR_FORMATS:
            raise RecordingError(f"color_format must be one of {sorted(_COLOR_FORMATS)} or None, "
                                 f"got {self.color_format!r}")
        if self.color_format is not None and self.color_resolution not in COLOR_RESOLUTIONS:
            raise RecordingError(f"color_resolution must be one of {list(COLOR_RESOLUTIONS)}, "
                                 f"got {self.color_resolution!r}")
        if self.depth_mode not in DEPTH_MODES:
            raise RecordingError(f"depth_mode must be one of {list(DEPTH_MODES)}, got {self.depth_mode!r}")
        if isinstance(self.fps, bool) or self.fps not in _FPS:
            raise RecordingError(f"fps must be one of {sorted(_FPS)}, got {self.fps!r}")
        if self.fps == 30 and self.has_color and self.color_resolution == "3072P":
            raise RecordingError("fps=30 is not available with color_resolution='3072P' (max 15)")
        if self.fps == 30 and self.depth_mode == "WFOV_UNBINNED":
            raise RecordingError("fps=30 is not available with depth_mode='WFOV_UNBINNED' (max 15)")
        if self.ir and self.depth_mode == "OFF":
            raise RecordingError("ir=True needs a depth_mode other than 'OFF' (IR comes from the depth camera)")
        if self.depth_mode == "PASSIVE_IR" and not self.ir:
            raise RecordingError("depth_mode='PASSIVE_IR' records IR only: set ir=True")
        if not self.has_color and self.depth_mode == "OFF":
            raise RecordingError("nothing to record: color_format is None and depth_mode is 'OFF'")
        if not 0 <= int(self.jpeg_quality) <= 100:
            raise RecordingError(f"jpeg_quality must be in 0..100, got {self.jpeg_quality}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "K4ARecordingConfig":
        """Build from a plain mapping (e.g. parsed YAML); an unknown key is an error naming the closest."""
        allowed = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(allowed)}"
                raise RecordingError(f"K4ARecordingConfig: unknown key {key!r}{hint}")
        return cls(**data)

    @property
    def has_color(self) -> bool:
        return self.color_format is not None

    @property
    def has_depth(self) -> bool:
        return self.depth_mode not in ("OFF", "PASSIVE_IR")

    @property
    def color_size(self) -> tuple[int, int]:
        """(height, width) of color images; (0, 0) without color."""
        if not self.has_color:
            return (0, 0)
        mode = COLOR_RESOLUTIONS[self.color_resolution]
        return (mode.height, mode.width)

    @property
    def depth_size(self) -> tuple[int, int]:
        """(height, width) of depth and IR images; (0, 0) with depth_mode 'OFF'."""
        mode = DEPTH_MODES[self.depth_mode]
        return (mode.height, mode.width)


# ---------------------------------------------------------------------------------------------------
# SDK binding (ctypes). Handles are opaque pointers; every k4a_result_t is checked by the caller.

class _DeviceConfiguration(ctypes.Structure):
    """k4a_device_configuration_t (Azure Kinect SDK 1.4, k4atypes.h); enums are C ints."""

    _fields_ = [
        ("color_format", ctypes.c_int),
        ("color_resolution", ctypes.c_int),
        ("depth_mode", ctypes.c_int),
        ("camera_fps", ctypes.c_int),
        ("synchronized_images_only", ctypes.c_bool),
        ("depth_delay_off_color_usec", ctypes.c_int32),
        ("wired_sync_mode", ctypes.c_int),
        ("subordinate_delay_off_master_usec", ctypes.c_uint32),
        ("disable_streaming_indicator", ctypes.c_bool),
    ]


class _Sdk(NamedTuple):
    k4a: ctypes.CDLL
    record: ctypes.CDLL


def _library_dirs() -> list[Path]:
    """Folders that may hold the SDK's .so files: the pyk4a package and the wheel's `.libs` folder."""
    spec = importlib.util.find_spec("pyk4a")
    if spec is None or spec.origin is None:
        raise RecordingError("pyk4a is not installed (pip package pyk4a-bundle); it ships libk4arecord")
    package_dir = Path(spec.origin).parent
    return [package_dir, package_dir.parent / "pyk4a_bundle.libs", package_dir.parent / "pyk4a.libs"]


def _find_library(dirs: list[Path], stem: str) -> Path:
    """`libk4a.so.1.4` / `libk4a-<hash>.so.1.4.2` (auditwheel renames) for stem 'k4a', in `dirs`."""
    pattern = re.compile(rf"^lib{stem}(-[0-9a-f]+)?\.so(\.[0-9]+)*$")
    for folder in dirs:
        if folder.is_dir():
            hits = sorted(p for p in folder.iterdir() if pattern.match(p.name))
            if hits:
                return hits[-1]
    raise RecordingError(f"lib{stem}.so not found in {', '.join(str(d) for d in dirs)}")


def _declare(lib: ctypes.CDLL, name: str, restype: Any, argtypes: list[Any]) -> None:
    fn = getattr(lib, name)
    fn.restype = restype
    fn.argtypes = argtypes


@functools.lru_cache(maxsize=1)
def _sdk() -> _Sdk:
    """Load libk4a and libk4arecord (the copies pyk4a itself uses) and declare every function used."""
    dirs = _library_dirs()
    try:
        k4a = ctypes.CDLL(str(_find_library(dirs, "k4a")), mode=ctypes.RTLD_GLOBAL)
        record = ctypes.CDLL(str(_find_library(dirs, "k4arecord")), mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        raise RecordingError(f"cannot load the Azure Kinect SDK libraries: {exc}") from exc
    handle, handle_p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)
    res = ctypes.c_int  # k4a_result_t
    _declare(k4a, "k4a_capture_create", res, [handle_p])
    _declare(k4a, "k4a_capture_release", None, [handle])
    _declare(k4a, "k4a_capture_set_color_image", None, [handle, handle])
    _declare(k4a, "k4a_capture_set_depth_image", None, [handle, handle])
    _declare(k4a, "k4a_capture_set_ir_image", None, [handle, handle])
    # (format, width, height, stride_bytes, buffer, buffer_size, release_cb, release_cb_context, out)
    _declare(k4a, "k4a_image_create_from_buffer", res,
             [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t,
              ctypes.c_void_p, ctypes.c_void_p, handle_p])
    _declare(k4a, "k4a_image_set_device_timestamp_usec", None, [handle, ctypes.c_uint64])
    _declare(k4a, "k4a_image_release", None, [handle])
    _declare(record, "k4a_record_create", res, [ctypes.c_char_p, handle, _DeviceConfiguration, handle_p])
    _declare(record, "k4a_record_add_attachment", res,
             [handle, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t])
    _declare(record, "k4a_record_add_tag", res, [handle, ctypes.c_char_p, ctypes.c_char_p])
    _declare(record, "k4a_record_write_header", res, [handle])
    _declare(record, "k4a_record_write_capture", res, [handle, handle])
    _declare(record, "k4a_record_flush", res, [handle])
    _declare(record, "k4a_record_close", None, [handle])
    return _Sdk(k4a, record)


def _check(result: int, what: str) -> None:
    if result != _K4A_RESULT_SUCCEEDED:
        raise RecordingError(f"{what} failed (k4a_result_t={result}; the SDK's log above has details)")


def _close_record_handle(record_lib: ctypes.CDLL, handle: int) -> None:
    """Flush and close a k4a_record_t (the SDK flushes inside close). Runs once, from close() or GC."""
    record_lib.k4a_record_close(ctypes.c_void_p(handle))


# ---------------------------------------------------------------------------------------------------

def _validate_calibration(calibration_json: bytes | str) -> bytes:
    if isinstance(calibration_json, str):
        calibration_json = calibration_json.encode("utf-8")
    if not isinstance(calibration_json, (bytes, bytearray)):
        raise RecordingError(f"calibration_json must be bytes, got {type(calibration_json).__name__}")
    data = bytes(calibration_json).rstrip(b"\0")  # the SDK stores the document without its NUL
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise RecordingError(f"calibration_json is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or "CalibrationInformation" not in doc:
        raise RecordingError("calibration_json has no 'CalibrationInformation' object "
                             "(expected the raw Azure Kinect calibration document)")
    return data


def _check_sdk_parses(calibration: bytes, config: K4ARecordingConfig) -> None:
    """Parse the document exactly as playback will (k4a_calibration_get_from_raw, via pyk4a)."""
    from pyk4a import Calibration, ColorResolution, DepthMode, K4AException  # local: loads the SDK

    color = COLOR_RESOLUTIONS[config.color_resolution].sdk_value if config.has_color else 0
    try:
        Calibration.from_raw(calibration.decode("utf-8"), DepthMode(DEPTH_MODES[config.depth_mode].sdk_value),
                             ColorResolution(color))
    except K4AException as exc:
        raise RecordingError("calibration_json is not accepted by the Azure Kinect SDK (it needs cameras "
                             "CALIBRATION_CameraLocationD0 (1024x1024) and ...PV0 and both inertial sensors; "
                             "the SDK's log above names the failing field)") from exc


class K4ARecordingWriter:
    """Writes one Azure Kinect recording; use as a context manager. Not thread-safe: one writer thread.

    `write()` calls must come from one thread in timestamp order; the SDK itself runs a background
    thread that moves finished clusters to disk. `close()` flushes and closes (idempotent); the file is
    a valid recording of everything written so far even when the `with` block raises.
    """

    def __init__(self, path: str | Path, config: K4ARecordingConfig, calibration_json: bytes | str,
                 tags: dict[str, str] | None = None, *, overwrite: bool = False):
        """path: the .mkv to create (its folder must exist); calibration_json: raw CalibrationInformation
        document (bytes); tags: extra Matroska tags, names A-Z 0-9 _ - (not starting with 'K4A_');
        overwrite: replace an existing file instead of raising."""
        if not isinstance(config, K4ARecordingConfig):
            raise RecordingError(f"config must be a K4ARecordingConfig, got {type(config).__name__}")
        self.path = Path(path)
        self.config = config
        self._last_timestamp: int | None = None
        self.frames_written = 0
        if not self.path.parent.is_dir():
            raise RecordingError(f"output folder does not exist: {self.path.parent}")
        if self.path.is_dir():
            raise RecordingError(f"output path is a folder, not a file: {self.path}")
        if self.path.exists() and not overwrite:
            raise RecordingError(f"output file already exists (pass overwrite=True): {self.path}")
        calibration = _validate_calibration(calibration_json)
        _check_sdk_parses(calibration, config)
        tag_items = self._validate_tags(tags or {})

        sdk = _sdk()
        self._sdk = sdk
        device_config = _DeviceConfiguration(
            color_format=_COLOR_FORMATS[config.color_format] if config.has_color else _COLOR_FORMATS["MJPG"],
            color_resolution=COLOR_RESOLUTIONS[config.color_resolution].sdk_value if config.has_color else 0,
            depth_mode=DEPTH_MODES[config.depth_mode].sdk_value,
            camera_fps=_FPS[config.fps],
            synchronized_images_only=config.has_color and config.has_depth,
            depth_delay_off_color_usec=0,
            wired_sync_mode=_WIRED_SYNC_STANDALONE,
            subordinate_delay_off_master_usec=0,
            disable_streaming_indicator=False,
        )
        handle = ctypes.c_void_p()
        _check(sdk.record.k4a_record_create(bytes(self.path), None, device_config, ctypes.byref(handle)),
               f"k4a_record_create({self.path})")
        if not handle.value:
            raise RecordingError(f"k4a_record_create({self.path}) returned a NULL handle")
        self._handle: int | None = handle.value
        self._header_written = False
        self._finalizer = weakref.finalize(self, _close_record_handle, sdk.record, handle.value)
        try:
            _check(sdk.record.k4a_record_add_attachment(self._h, _CALIBRATION_ATTACHMENT, calibration,
                                                        len(calibration)),
                   "k4a_record_add_attachment(calibration.json)")
            for name, value in tag_items:
                _check(sdk.record.k4a_record_add_tag(self._h, name.encode("ascii"), value.encode("utf-8")),
                       f"k4a_record_add_tag({name})")
            _check(sdk.record.k4a_record_write_header(self._h), "k4a_record_write_header")
            self._header_written = True
        except BaseException:
            self.close()
            self.path.unlink(missing_ok=True)  # a header-less file is no recording
            raise

    @staticmethod
    def _validate_tags(tags: Mapping[str, str]) -> list[tuple[str, str]]:
        items = []
        for name, value in tags.items():
            if not isinstance(name, str) or not _TAG_NAME.match(name):
                raise RecordingError(f"tag name {name!r} must be non-empty and use only A-Z, 0-9, '_' and '-'")
            if name.startswith("K4A_"):
                raise RecordingError(f"tag name {name!r}: the 'K4A_' prefix is reserved for the SDK")
            if not isinstance(value, str) or "\0" in value:
                raise RecordingError(f"tag {name!r} value must be a str without NUL characters")
            items.append((name, value))
        return items

    @property
    def _h(self) -> ctypes.c_void_p:
        if self._handle is None:
            raise RecordingError(f"recording {self.path} is closed")
        return ctypes.c_void_p(self._handle)

    @property
    def closed(self) -> bool:
        return self._handle is None

    def __enter__(self) -> "K4ARecordingWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()

    # -- frames ---------------------------------------------------------------------------------------

    def write(self, timestamp_usec: int, color: np.ndarray | None = None, depth: np.ndarray | None = None,
              ir: np.ndarray | None = None) -> None:
        """Write one capture at device time `timestamp_usec` (µs, strictly increasing).

        color: (H, W, 3) uint8 BGR (MJPG: JPEG-encoded here; BGRA32: alpha 255) or (H, W, 4) uint8 BGRA
        (BGRA32 only); depth: (H, W) uint16 mm; ir: (H, W) uint16. Any subset of the enabled streams.
        """
        h = self._h  # raises if closed
        ts = self._validate_timestamp(timestamp_usec)
        cfg = self.config
        images: list[tuple[str, int, int, int, int, np.ndarray]] = []  # (slot, fmt, w, h, stride, buf)
        if color is not None:
            if not cfg.has_color:
                raise RecordingError("color given but the recording has no color track (color_format=None)")
            images.append(self._color_image(color))
        if depth is not None:
            if not cfg.has_depth:
                raise RecordingError(f"depth given but the recording has no depth track "
                                     f"(depth_mode={cfg.depth_mode!r})")
            arr = self._plane(depth, "depth", cfg.depth_size)
            images.append(("depth", _FMT_DEPTH16, arr.shape[1], arr.shape[0], arr.shape[1] * 2, arr))
        if ir is not None:
            if not cfg.ir:
                raise RecordingError("ir given but the recording was configured with ir=False")
            arr = self._plane(ir, "ir", cfg.depth_size)
            images.append(("ir", _FMT_IR16, arr.shape[1], arr.shape[0], arr.shape[1] * 2, arr))
        if not images:
            raise RecordingError("write() needs at least one of color, depth, ir")

        k4a = self._sdk.k4a
        capture = ctypes.c_void_p()
        _check(k4a.k4a_capture_create(ctypes.byref(capture)), "k4a_capture_create")
        try:
            for slot, fmt, width, height, stride, buf in images:
                image = ctypes.c_void_p()
                # The SDK copies the bytes inside k4a_record_write_capture; `buf` outlives the capture.
                _check(k4a.k4a_image_create_from_buffer(fmt, width, height, stride, buf.ctypes.data, buf.nbytes,
                                                        None, None, ctypes.byref(image)),
                       f"k4a_image_create_from_buffer({slot}, {width}x{height})")
                k4a.k4a_image_set_device_timestamp_usec(image, ts)
                getattr(k4a, f"k4a_capture_set_{slot}_image")(capture, image)  # the capture adds a reference
                k4a.k4a_image_release(image)
            _check(self._sdk.record.k4a_record_write_capture(h, capture),
                   f"k4a_record_write_capture(t={ts} us)")
        finally:
            k4a.k4a_capture_release(capture)
        self._last_timestamp = ts
        self.frames_written += 1

    def _validate_timestamp(self, timestamp_usec: int) -> int:
        if isinstance(timestamp_usec, (bool, float)) or not isinstance(timestamp_usec, (int, np.integer)):
            raise RecordingError(f"timestamp_usec must be an int (µs), got {type(timestamp_usec).__name__}")
        ts = int(timestamp_usec)
        if ts < 0:
            raise RecordingError(f"timestamp_usec must be >= 0, got {ts}")
        if self._last_timestamp is not None and ts <= self._last_timestamp:
            raise RecordingError(f"timestamp_usec must increase: {ts} after {self._last_timestamp}")
        return ts

    @staticmethod
    def _plane(arr: Any, name: str, size: tuple[int, int]) -> np.ndarray:
        arr = np.asarray(arr)
        if arr.dtype != np.uint16:
            raise RecordingError(f"{name} must be uint16, got {arr.dtype}")
        if arr.shape != size:
            raise RecordingError(f"{name} must have shape {size} (H, W) for this depth mode, got {arr.shape}")
        return np.ascontiguousarray(arr)

    def _color_image(self, color: Any) -> tuple[str, int, int, int, int, np.ndarray]:
        cfg = self.config
        arr = np.asarray(color)
        height, width = cfg.color_size
        if arr.dtype != np.uint8:
            raise RecordingError(f"color must be uint8, got {arr.dtype}")
        channels = (3,) if cfg.color_format == "MJPG" else (3, 4)
        if arr.ndim != 3 or arr.shape[:2] != (height, width) or arr.shape[2] not in channels:
            want = " or ".join(f"({height}, {width}, {c})" for c in channels)
            raise RecordingError(f"color must have shape {want} for {cfg.color_resolution} "
                                 f"{cfg.color_format}, got {arr.shape}")
        if cfg.color_format == "MJPG":
            import cv2  # local: only MJPG recordings need OpenCV
            ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(arr),
                                    [int(cv2.IMWRITE_JPEG_QUALITY), int(cfg.jpeg_quality)])
            if not ok:
                raise RecordingError("cv2.imencode('.jpg') failed on the color image")
            buf = np.ascontiguousarray(jpeg.reshape(-1))
            return ("color", _COLOR_FORMATS["MJPG"], width, height, 0, buf)
        if arr.shape[2] == 3:
            bgra = np.empty((height, width, 4), np.uint8)
            bgra[..., :3] = arr
            bgra[..., 3] = 255
        else:
            bgra = np.ascontiguousarray(arr)
        return ("color", _COLOR_FORMATS["BGRA32"], width, height, width * 4, bgra)

    def close(self) -> None:
        """Flush everything to disk (cues, segment size) and close the file (idempotent)."""
        if self._handle is None:
            return
        handle = self._h
        self._handle = None
        try:
            if self._header_written:  # (the SDK refuses to flush a file without a header)
                _check(self._sdk.record.k4a_record_flush(handle), f"k4a_record_flush({self.path})")
        finally:
            self._finalizer()  # k4a_record_close (flushes again, cheap: nothing pending)


# ---------------------------------------------------------------------------------------------------
# Ground-truth sidecar: `clip.mkv` -> `clip.gt.npz`, arrays with one row per frame in timestamp order.

_SIDECAR_SUFFIX = ".gt.npz"
_TIMESTAMP_KEY = "timestamps_usec"


def sidecar_path(path: str | Path) -> Path:
    """The sidecar for a recording: `clip.mkv` -> `clip.gt.npz`; a path already ending in .gt.npz as is."""
    path = Path(path)
    if path.name.endswith(_SIDECAR_SUFFIX):
        return path
    if path.suffix.lower() != ".mkv":
        raise RecordingError(f"expected a .mkv recording or a {_SIDECAR_SUFFIX} file, got {path.name}")
    return path.with_name(path.stem + _SIDECAR_SUFFIX)


@dataclass(frozen=True)
class Sidecar:
    """Ground truth of one recording: timestamps_usec (N,) int64 strictly increasing; arrays name -> (N, ...)."""

    timestamps_usec: np.ndarray
    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.timestamps_usec.shape[0])

    def index_of(self, timestamp_usec: int) -> int:
        """Row of the frame recorded at exactly `timestamp_usec` (µs); RecordingError if there is none."""
        i = int(np.searchsorted(self.timestamps_usec, timestamp_usec))
        if i >= len(self) or self.timestamps_usec[i] != timestamp_usec:
            raise RecordingError(f"no ground truth at timestamp {timestamp_usec} us")
        return i

    def frame(self, timestamp_usec: int) -> dict[str, np.ndarray]:
        """All ground-truth arrays of the frame at `timestamp_usec`, e.g. {'joints': (24, 3)}."""
        i = self.index_of(timestamp_usec)
        return {name: arr[i] for name, arr in self.arrays.items()}


def write_sidecar(path: str | Path, timestamps_usec: Any, **arrays: Any) -> Path:
    """Save per-frame ground truth next to a recording; returns the sidecar's path.

    path: the .mkv (the sidecar goes next to it, `clip.gt.npz`) or the .gt.npz itself.
    timestamps_usec: (N,) integer device timestamps, strictly increasing (the frames' `write` times).
    arrays: name -> (N, ...) numeric array, row i belongs to timestamps_usec[i] (e.g. joints (N, 24, 3) m).
    """
    out = sidecar_path(path)
    if not out.parent.is_dir():
        raise RecordingError(f"output folder does not exist: {out.parent}")
    ts = np.asarray(timestamps_usec)
    if ts.ndim != 1 or ts.size == 0 or not np.issubdtype(ts.dtype, np.integer):
        raise RecordingError(f"timestamps_usec must be a non-empty 1-D integer array, got {ts.dtype} {ts.shape}")
    ts = ts.astype(np.int64)
    if np.any(np.diff(ts) <= 0):
        raise RecordingError("timestamps_usec must be strictly increasing")
    if not arrays:
        raise RecordingError("write_sidecar needs at least one ground-truth array")
    payload = {_TIMESTAMP_KEY: ts}
    for name, value in arrays.items():
        if name == _TIMESTAMP_KEY:
            raise RecordingError(f"'{_TIMESTAMP_KEY}' is reserved for the timestamps")
        arr = np.asarray(value)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise RecordingError(f"ground truth {name!r} must be numeric, got dtype {arr.dtype}")
        if arr.ndim == 0 or arr.shape[0] != ts.shape[0]:
            raise RecordingError(f"ground truth {name!r} must have {ts.shape[0]} rows (one per timestamp), "
                                 f"got shape {arr.shape}")
        payload[name] = arr
    np.savez_compressed(out, **payload)
    return out


def read_sidecar(path: str | Path) -> Sidecar:
    """Load a sidecar written by `write_sidecar` (given the .mkv or the .gt.npz)."""
    src = sidecar_path(path)
    if not src.is_file():
        raise RecordingError(f"ground-truth sidecar not found: {src}")
    with np.load(src, allow_pickle=False) as data:
        if _TIMESTAMP_KEY not in data.files:
            raise RecordingError(f"{src.name} has no '{_TIMESTAMP_KEY}' array: not a FuseMesh sidecar")
        ts = data[_TIMESTAMP_KEY]
        arrays = {name: data[name] for name in data.files if name != _TIMESTAMP_KEY}
    return Sidecar(timestamps_usec=ts, arrays=arrays)
