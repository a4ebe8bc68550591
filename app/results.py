"""What the inference worker hands to the viewer and the output writers, one per processed frame.

Frames: every 3D quantity is in the *depth camera's* frame (OpenCV convention: x right, y down,
z forward), metres — the frame of the sensor's point cloud, so the mesh sits on the points.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np


class InputMode(str, Enum):
    """Which streams the model was fed for a frame (a dropped stream is fed as zeros)."""

    RGBD = "rgbd"
    DEPTH = "depth"
    RGB = "rgb"
    NONE = "none"      # nothing usable: no inference this frame


STAGES = ("capture", "decode", "align", "crop", "infer", "post", "render")
"""Per-frame pipeline stages timed in milliseconds (`FrameResult.timings_ms` keys)."""


@dataclass
class BodyEstimate:
    """One person's body for one frame.

    theta: (72,) axis-angle, SMPL joint order; global orientation in the depth camera frame.
    beta: (10,) shape. transl: (3,) metres, camera frame (added to the posed body model's vertices).
    vertices: (V, 3) metres, camera frame. joints: (24, 3) metres, camera frame, SMPL order.
    cam: (3,) the network's weak-perspective camera (s, tx, ty) on its crop.
    bbox: (4,) x0, y0, x1, y1 in depth-image pixels of the crop's person box.
    """

    theta: np.ndarray
    beta: np.ndarray
    transl: np.ndarray
    vertices: np.ndarray
    joints: np.ndarray
    cam: np.ndarray
    bbox: np.ndarray


@dataclass
class FrameResult:
    """The worker's output for one frame (always produced, also when no body was found).

    frame_id / timestamp_usec: copied from the input frame (device clock, microseconds).
    mode: the input mode used; requested_mode: what the user/auto policy asked for.
    body: None when no person was found or no stream was usable (`message` says why).
    timings_ms: {stage: milliseconds} for the stages in STAGES that ran.
    warm_start: the model started from the previous frame's estimate (same person, body in the previous
    frame) instead of its mean parameters.
    """

    frame_id: int
    timestamp_usec: int
    mode: InputMode
    requested_mode: str
    body: BodyEstimate | None
    message: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)
    dropped_frames: int = 0
    warm_start: bool = False
