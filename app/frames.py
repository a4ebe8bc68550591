"""What the capture layer hands on: one RGB-D frame, the status of each of its streams, the errors.

A frame carries the *raw* images of one capture (no alignment: that is the worker's job, with
`calibration.align`) plus the calibration they belong to:

- color_bgr: (H, W, 3) uint8 BGR in the color camera's pixel grid, or None;
- depth_mm:  (H, W) uint16 millimetres along the depth camera's z axis, 0 = invalid, or None;
- timestamp_usec: device timestamp in microseconds (the depth image's when depth is present, else the
  color image's); frame_id: the source's frame counter (capture index in a recording or a folder,
  captures received since start for a live device).

Images are read-only views: several threads may hold the same frame.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from calibration.rig import RgbdRig

__all__ = ["RgbdFrame", "SourceError", "SourceTimeout", "StreamStatus", "streams_label"]


class SourceError(RuntimeError):
    """A frame source failed; the message is one line naming the file or device and the problem."""


class SourceTimeout(SourceError):
    """A live source (or a real-time replay) had no frame ready within the read timeout."""


class StreamStatus(str, enum.Enum):
    """State of one stream (color or depth) in one frame.

    OK: image present and plausible.  OFF: the source has no such stream at all (track absent from the
    recording, stream not configured).  MISSING: the stream exists but this capture has no image.
    UNDECODABLE: the image is there but cannot be decoded (corrupt JPEG, wrong size).  EMPTY: decoded
    but blank (color all black, or depth with too few valid pixels).  STALE: the image's timestamp did
    not advance (repeated or backwards) or, live, the image is older than allowed.

    The image array is present for OK / EMPTY / STALE and None for OFF / MISSING / UNDECODABLE.
    """

    OK = "ok"
    OFF = "off"
    MISSING = "missing"
    UNDECODABLE = "undecodable"
    EMPTY = "empty"
    STALE = "stale"

    @property
    def has_image(self) -> bool:
        return self in (StreamStatus.OK, StreamStatus.EMPTY, StreamStatus.STALE)


def streams_label(color_ok: bool, depth_ok: bool) -> str:
    """'rgbd' | 'depth' | 'rgb' | 'none': the input mode the model can run with these streams."""
    if color_ok and depth_ok:
        return "rgbd"
    if depth_ok:
        return "depth"
    if color_ok:
        return "rgb"
    return "none"


def _frozen_image(image: Optional[np.ndarray], what: str, ndim: int, dtype: type, status: StreamStatus,
                  channels: Optional[int] = None) -> Optional[np.ndarray]:
    if image is None:
        if status.has_image:
            raise ValueError(f"{what} is None but its status is {status.name}")
        return None
    if not status.has_image:
        raise ValueError(f"{what} is given but its status is {status.name} (expected no image)")
    if not isinstance(image, np.ndarray) or image.dtype != dtype or image.ndim != ndim \
            or (channels is not None and image.shape[-1] != channels):
        shape = "(H, W, 3)" if channels else "(H, W)"
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{what} must be a {shape} {np.dtype(dtype).name} array, got {got}")
    view = image.view()
    view.setflags(write=False)
    return view


@dataclass(frozen=True, eq=False)
class RgbdFrame:
    """One capture: raw color + depth images, their statuses, device timestamp (µs) and calibration.

    `host_time_s` is `time.perf_counter()` when the source produced the frame (for latency meters).
    `decode_ms` is how long the source spent decoding the images (MJPEG / BGRA conversion of a Kinect
    or .mkv capture, image files of a folder), None when the source does not say; the worker reports
    it as the "decode" stage of `FrameResult.timings_ms`.
    """

    frame_id: int
    timestamp_usec: int
    color_bgr: Optional[np.ndarray]
    depth_mm: Optional[np.ndarray]
    rig: RgbdRig
    source: str
    color_status: StreamStatus = StreamStatus.OK
    depth_status: StreamStatus = StreamStatus.OK
    host_time_s: float = field(default=0.0)
    decode_ms: Optional[float] = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "color_status", StreamStatus(self.color_status))
        object.__setattr__(self, "depth_status", StreamStatus(self.depth_status))
        object.__setattr__(self, "color_bgr", _frozen_image(self.color_bgr, "color_bgr", 3, np.uint8,
                                                            self.color_status, channels=3))
        object.__setattr__(self, "depth_mm", _frozen_image(self.depth_mm, "depth_mm", 2, np.uint16,
                                                           self.depth_status))
        if not isinstance(self.rig, RgbdRig):
            raise ValueError(f"rig must be an RgbdRig, got {type(self.rig).__name__}")
        if self.decode_ms is not None and not (isinstance(self.decode_ms, (int, float)) and 0 <= self.decode_ms < 1e9):
            raise ValueError(f"decode_ms must be None or milliseconds >= 0, got {self.decode_ms!r}")

    @property
    def streams(self) -> str:
        """The streams usable in *this* frame alone: 'rgbd' | 'depth' | 'rgb' | 'none' (no hysteresis;
        see `app.health.StreamHealth` for the mode to run)."""
        return streams_label(self.color_status is StreamStatus.OK, self.depth_status is StreamStatus.OK)

    def __repr__(self) -> str:
        return (f"RgbdFrame(id={self.frame_id}, t={self.timestamp_usec} us, color={self.color_status.value}, "
                f"depth={self.depth_status.value}, source={self.source!r})")
