"""CAD-60 (Cornell Activity Dataset, Kinect v1 + OpenNI/NITE) skeleton and label files; RGB-D frame helpers.

Layout of one subject folder (`data1/` .. `data4/`):
- `activityLabel.txt`: one `<10-digit id>,<activity name>,` line per sequence, then a line `END`.
- `<id>.txt`: the skeleton file, one line per frame, then a line `END`.
- `<id>/RGB_<n>.png`, `<id>/Depth_<n>.png`: the frame images, n = the skeleton file's frame number.

Skeleton line (171 comma-separated values, each line also ends with a comma):
    Frame#, ORI(1), P(1), ORI(2), P(2), ..., ORI(11), P(11), P(12), ..., P(15)
- Frame#: integer, counting from 1.
- ORI(i) (joints 1-11 only): 3x3 orientation matrix row-major (m00, m01, m02, m10, ..., m22) then its
  confidence; the columns are the joint's local x, y, z axes in camera space; identity = the T-pose.
- P(i): x, y, z in millimetres then the position confidence. Confidences are 0 or 1 per the dataset
  README (NITE itself reports 0, 0.5 or 1); they are kept as floats.
- Joints 1-15 in `joint_sets.KINECT_V1_JOINT_NAMES` order: HEAD, NECK, TORSO, LEFT_SHOULDER, LEFT_ELBOW,
  RIGHT_SHOULDER, RIGHT_ELBOW, LEFT_HIP, LEFT_KNEE, RIGHT_HIP, RIGHT_KNEE, LEFT_HAND, RIGHT_HAND, LEFT_FOOT,
  RIGHT_FOOT; joints 12-15 (hands, feet) have no orientation.

Frame: OpenNI/NITE "real world" coordinates, described for this data as +X towards the right side of a
person facing the sensor (= the sensor's left), +Y up, +Z away from the sensor: `joint_sets.FRAME_KINECT`;
readers return metres. The images are mirrored (OpenNI mirror mode): a joint projects to column
u = W/2 + fx * x / z, row v = H/2 - fy * y / z with the OpenNI field of view (`cad60_project`, the formula
the dataset's users apply to its images). Left/right labels are taken as the subject's own sides; not
verified on released frames (check: a subject facing the camera has LEFT_SHOULDER at the smaller x).
The depth PNGs are read as 16-bit millimetres (per the team brief; not verified on a released frame):
`load_cad60_rgbd` raises a clear error for anything else.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from training.datasets.joint_sets import (
    FRAME_KINECT, KINECT_V1_JOINT_NAMES, DatasetFormatError, SkeletonSequence, parse_numbers,
    read_text_lines,
)

__all__ = [
    "Cad60Skeleton", "read_cad60_skeleton", "write_cad60_skeleton", "read_cad60_activity_labels",
    "write_cad60_activity_labels", "cad60_frame_paths", "load_cad60_rgbd", "cad60_project",
    "OPENNI_X_TO_Z", "OPENNI_Y_TO_Z",
]

NUM_JOINTS = 15
NUM_ORIENTED = 11
_ORIENTED_STRIDE = 9 + 1 + 3 + 1  # ORI, conf, xyz, conf
VALUES_PER_LINE = 1 + NUM_ORIENTED * _ORIENTED_STRIDE + (NUM_JOINTS - NUM_ORIENTED) * 4  # 171
END = "END"

# OpenNI's field of view as tangent ratios (2 tan(FOV/2)) of the Kinect v1 depth camera: x/z and y/z
# spans of the image. Pixel focal lengths follow as fx = W / OPENNI_X_TO_Z, fy = H / OPENNI_Y_TO_Z.
OPENNI_X_TO_Z = 1.122133
OPENNI_Y_TO_Z = 0.84176


@dataclass
class Cad60Skeleton:
    """One CAD-60 skeleton file.

    skeleton: SkeletonSequence with joints (T, 1, 15, 3) metres in `FRAME_KINECT`, valid (T, 1) = any
      position confidence > 0, confidence (T, 1, 15) position confidences, frame_ids (T,) from the file.
    orientations: (T, 11, 3, 3) joint orientation matrices (columns = joint axes in camera space).
    orientation_confidence: (T, 11).
    """

    skeleton: SkeletonSequence
    orientations: np.ndarray
    orientation_confidence: np.ndarray


def _split_line(line: str, path: Path, lineno: int) -> list[str]:
    fields = [f.strip() for f in line.split(",")]
    if fields and fields[-1] == "":
        fields.pop()  # every CAD-60 line ends with a comma
    if len(fields) != VALUES_PER_LINE:
        raise DatasetFormatError(
            path, f"expected {VALUES_PER_LINE} comma-separated values (frame#, 11 x [orientation 9, conf, "
                  f"xyz mm, conf], 4 x [xyz mm, conf]), found {len(fields)}", lineno)
    return fields


def read_cad60_skeleton(path: str | Path) -> Cad60Skeleton:
    """Read a CAD-60 skeleton file (see module docstring); positions converted from mm to metres.

    Raises DatasetFormatError (file and line) for a wrong value count, a non-number, a frame number that is
    not an integer or does not increase, a missing END line (truncated file) or text after END.
    """
    path = Path(path)
    lines = read_text_lines(path)
    rows: list[np.ndarray] = []
    frame_ids: list[int] = []
    end_line = None
    for i, line in enumerate(lines):
        lineno = i + 1
        if end_line is not None:
            if line.strip():
                raise DatasetFormatError(path, f"text after the END line (line {end_line})", lineno)
            continue
        if line.strip() == END:
            end_line = lineno
            continue
        fields = _split_line(line, path, lineno)
        if not re.fullmatch(r"\d+", fields[0]):
            raise DatasetFormatError(path, f"frame number {fields[0]!r} is not a non-negative integer", lineno)
        frame = int(fields[0])
        if frame_ids and frame <= frame_ids[-1]:
            raise DatasetFormatError(path, f"frame number {frame} does not increase (previous {frame_ids[-1]})", lineno)
        frame_ids.append(frame)
        rows.append(parse_numbers(fields[1:], path, lineno))
    if end_line is None:
        raise DatasetFormatError(path, f"no END line after {len(lines)} lines (truncated file?)")
    if not rows:
        raise DatasetFormatError(path, "no frames before the END line")

    data = np.stack(rows)  # (T, 170)
    t = data.shape[0]
    oriented = data[:, : NUM_ORIENTED * _ORIENTED_STRIDE].reshape(t, NUM_ORIENTED, _ORIENTED_STRIDE)
    rest = data[:, NUM_ORIENTED * _ORIENTED_STRIDE:].reshape(t, NUM_JOINTS - NUM_ORIENTED, 4)
    positions_mm = np.concatenate([oriented[:, :, 10:13], rest[:, :, :3]], axis=1)
    pos_conf = np.concatenate([oriented[:, :, 13], rest[:, :, 3]], axis=1)
    skeleton = SkeletonSequence(
        joints=positions_mm[:, None] / 1000.0, valid=np.any(pos_conf > 0, axis=1)[:, None],
        joint_names=KINECT_V1_JOINT_NAMES, frame=FRAME_KINECT, source=str(path),
        confidence=pos_conf[:, None], frame_ids=np.array(frame_ids),
    )
    return Cad60Skeleton(skeleton, oriented[:, :, :9].reshape(t, NUM_ORIENTED, 3, 3), oriented[:, :, 9].copy())


def _fmt(v: float) -> str:
    return format(float(v), ".10g")


def write_cad60_skeleton(path: str | Path, skeleton: SkeletonSequence, orientations: np.ndarray | None = None,
                         orientation_confidence: np.ndarray | None = None) -> None:
    """Write a CAD-60 skeleton file (171 values + trailing comma per line, then END).

    skeleton: one person (P = 1), `KINECT_V1_JOINT_NAMES` joints in metres, either frame (written in
      `FRAME_KINECT`, millimetres). Frame numbers: `skeleton.frame_ids`, else 1..T. Position confidence:
      `skeleton.confidence`, else 1 where valid and 0 elsewhere; joints of invalid frames are written as 0.
    orientations: (T, 11, 3, 3), default identity; orientation_confidence: (T, 11), default 0 (unknown)
      when `orientations` is None, else 1.
    Numbers are written with up to 10 significant digits (mm), so a read-back matches to ~1e-9 m.
    """
    if skeleton.joint_names != KINECT_V1_JOINT_NAMES:
        raise ValueError(f"CAD-60 stores the 15 OpenNI joints (KINECT_V1_JOINT_NAMES order); got "
                         f"{len(skeleton.joint_names)} joints starting {skeleton.joint_names[:3]}")
    t, p = skeleton.valid.shape
    if p != 1:
        raise ValueError(f"CAD-60 skeleton files hold one person, got {p}")
    valid = skeleton.valid[:, 0]
    joints_mm = np.where(valid[:, None, None], skeleton.to_frame(FRAME_KINECT).joints[:, 0] * 1000.0, 0.0)
    if skeleton.confidence is not None:
        pos_conf = skeleton.confidence[:, 0]
    else:
        pos_conf = np.repeat(valid.astype(np.float64)[:, None], NUM_JOINTS, axis=1)
    if orientations is None:
        ori = np.broadcast_to(np.eye(3), (t, NUM_ORIENTED, 3, 3))
        ori_conf = np.zeros((t, NUM_ORIENTED)) if orientation_confidence is None else orientation_confidence
    else:
        ori = np.asarray(orientations, dtype=np.float64)
        ori_conf = np.ones((t, NUM_ORIENTED)) if orientation_confidence is None else orientation_confidence
    ori_conf = np.asarray(ori_conf, dtype=np.float64)
    if ori.shape != (t, NUM_ORIENTED, 3, 3) or ori_conf.shape != (t, NUM_ORIENTED):
        raise ValueError(f"orientations must be ({t}, 11, 3, 3) and orientation_confidence ({t}, 11); got "
                         f"{ori.shape} and {ori_conf.shape}")
    frame_ids = skeleton.frame_ids if skeleton.frame_ids is not None else np.arange(1, t + 1)
    if t and (frame_ids.min() < 0 or np.any(np.diff(frame_ids) <= 0)):
        raise ValueError("CAD-60 frame numbers must be non-negative and increasing")
    checks = (("joints", joints_mm), ("confidence", pos_conf), ("orientations", ori),
              ("orientation_confidence", ori_conf))
    for name, arr in checks:
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"write_cad60_skeleton: {name} must be finite")

    out = []
    for k in range(t):
        values: list[float] = []
        for j in range(NUM_ORIENTED):
            values += [*ori[k, j].reshape(9), ori_conf[k, j], *joints_mm[k, j], pos_conf[k, j]]
        for j in range(NUM_ORIENTED, NUM_JOINTS):
            values += [*joints_mm[k, j], pos_conf[k, j]]
        out.append(f"{int(frame_ids[k])}," + ",".join(_fmt(v) for v in values) + ",\n")
    out.append(END)  # the released files end with "END" and no newline
    Path(path).write_text("".join(out), encoding="utf-8")


def read_cad60_activity_labels(path: str | Path) -> dict[str, str]:
    """Read `activityLabel.txt`: {10-digit sequence id: activity name}, in file order, up to the END line."""
    path = Path(path)
    labels: dict[str, str] = {}
    ended = False
    for i, line in enumerate(read_text_lines(path)):
        if ended:
            if line.strip():
                raise DatasetFormatError(path, "text after the END line", i + 1)
            continue
        if line.strip() == END:
            ended = True
            continue
        fields = [f.strip() for f in line.split(",")]
        if fields and fields[-1] == "":
            fields.pop()
        if len(fields) != 2 or not fields[1]:
            raise DatasetFormatError(
                path, f"expected '<10-digit id>,<activity name>,', found {len(fields)} fields", i + 1)
        if not re.fullmatch(r"\d{10}", fields[0]):
            raise DatasetFormatError(path, f"sequence id {fields[0]!r} is not a 10-digit number", i + 1)
        if fields[0] in labels:
            raise DatasetFormatError(path, f"sequence id {fields[0]} listed twice", i + 1)
        labels[fields[0]] = fields[1]
    if not ended:
        raise DatasetFormatError(path, "no END line (truncated file?)")
    return labels


def write_cad60_activity_labels(path: str | Path, labels: Mapping[str, str]) -> None:
    """Write `activityLabel.txt` lines `<id>,<activity>,` then `END`. Ids must be 10 digits, names comma-free."""
    lines = []
    for seq_id, name in labels.items():
        if not re.fullmatch(r"\d{10}", seq_id) or "," in name or not name.strip():
            raise ValueError(f"CAD-60 label needs a 10-digit id and a comma-free name, got {seq_id!r}: {name!r}")
        lines.append(f"{seq_id},{name},\n")
    Path(path).write_text("".join(lines) + END + "\n", encoding="utf-8")


def cad60_frame_paths(sequence_dir: str | Path, frame_id: int) -> tuple[Path, Path]:
    """(RGB_<n>.png, Depth_<n>.png) paths of skeleton frame number `frame_id` in `<data>/<id>/` (unchecked)."""
    d = Path(sequence_dir)
    return d / f"RGB_{int(frame_id)}.png", d / f"Depth_{int(frame_id)}.png"


def load_cad60_rgbd(sequence_dir: str | Path, frame_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Load one frame's images: rgb (H, W, 3) uint8 in RGB order; depth (H', W') float32 metres, 0 = no reading.

    The depth PNG must be single-channel 16-bit (millimetres); anything else raises DatasetFormatError.
    """
    import cv2  # imported here: only this helper decodes images

    rgb_path, depth_path = cad60_frame_paths(sequence_dir, frame_id)
    for p in (rgb_path, depth_path):
        if not p.is_file():
            raise FileNotFoundError(f"CAD-60 frame image not found: {p}")
    bgr = cv2.imread(str(rgb_path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetFormatError(rgb_path, "not a readable image")
    depth = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
    if depth is None:
        raise DatasetFormatError(depth_path, "not a readable image")
    if depth.ndim != 2 or depth.dtype != np.uint16:
        raise DatasetFormatError(
            depth_path, f"depth must be a single-channel 16-bit PNG in mm, got {depth.dtype} with shape {depth.shape}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), depth.astype(np.float32) / 1000.0


def cad60_project(joints: np.ndarray, width: int, height: int) -> np.ndarray:
    """(..., 3) joints in `FRAME_KINECT` (metres or mm, z > 0) -> (..., 2) pixel (u, v) in CAD-60's images.

    OpenNI's projection for an image of `width` x `height` (CAD-60's depth frames: 320 x 240):
    u = W/2 + (W / OPENNI_X_TO_Z) x / z, v = H/2 - (H / OPENNI_Y_TO_Z) y / z (mirrored image, y up).
    """
    joints = np.asarray(joints, dtype=np.float64)
    if joints.shape[-1] != 3:
        raise ValueError(f"cad60_project needs (..., 3) points, got shape {joints.shape}")
    x, y, z = joints[..., 0], joints[..., 1], joints[..., 2]
    if np.any(z <= 0):
        raise ValueError("cad60_project: every point needs z > 0 (in front of the sensor)")
    u = width / 2 + (width / OPENNI_X_TO_Z) * x / z
    v = height / 2 - (height / OPENNI_Y_TO_Z) * y / z
    return np.stack([u, v], axis=-1)
