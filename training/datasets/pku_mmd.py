"""PKU-MMD (Kinect v2, 30 FPS) skeleton and label files: read and write; locate a sequence's RGB/depth media.

Skeleton file (`Skeleton/XXXX-V.txt`, phase 2 `AxxNyy-V.txt`; V = L/M/R camera view): one line per video
frame, 150 whitespace-separated floats = 2 bodies x 25 joints x (x, y, z). Joints in Kinect v2 `JointType`
order (`joint_sets.KINECT_V2_JOINT_NAMES`), metres, Kinect v2 camera space (`joint_sets.FRAME_KINECT`: +X the
sensor's left, +Y up, +Z forward). A body that is not tracked is written as 75 zeros (usually the second;
occasionally the first while the second is present). The released files print "%f" (6 decimals, i.e. 1 um),
separate values with one space, start every line after the first with one space and end each with "\\n";
`write_pku_mmd_skeleton` reproduces that byte for byte. Reading accepts any whitespace.

Label file (`Label/XXXX-V.txt`): one action per line, `action_id,start_frame,end_frame,confidence`
(4 integers; confidence 1 = slight, 2 = strong recommendation; the evaluation script also accepts spaces).
Frame numbers index the skeleton file's lines; the release does not say whether counting starts at 0 or 1
(community loaders slice `lines[start:end]`), so they are returned exactly as written.

Media: RGB video `RGB_VIDEO/XXXX-V.avi` (1920x1080, 30 FPS); depth either per-frame 512x424 16-bit PNGs
in a folder per sequence or a `DEPTH_VIDEO/XXXX-V.avi`, depending on the release. `find_pku_mmd_media`
returns paths only; nothing is decoded here. The Kinect v2 SDK's images are horizontally mirrored relative
to a pinhole view of camera space (believed, not verified on a PKU-MMD frame).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from training.datasets.joint_sets import (
    FRAME_KINECT, KINECT_V2_JOINT_NAMES, DatasetFormatError, SkeletonSequence, parse_numbers,
    read_text_lines,
)

__all__ = [
    "PKU_MMD_FPS", "PkuMmdAction", "PkuMmdMedia", "read_pku_mmd_skeleton", "write_pku_mmd_skeleton",
    "read_pku_mmd_labels", "write_pku_mmd_labels", "parse_pku_mmd_name", "find_pku_mmd_media",
]

PKU_MMD_FPS = 30.0
NUM_BODIES = 2
NUM_JOINTS = 25
VALUES_PER_LINE = NUM_BODIES * NUM_JOINTS * 3  # 150


def read_pku_mmd_skeleton(path: str | Path) -> SkeletonSequence:
    """Read a PKU-MMD skeleton file.

    Returns a SkeletonSequence: joints (T, 2, 25, 3) metres in `FRAME_KINECT`; valid (T, 2) = body has any
    non-zero coordinate; joint_names `KINECT_V2_JOINT_NAMES`; frame_ids 0..T-1 (line index); fps 30.
    Raises DatasetFormatError (file and line) for a line without exactly 150 numbers, a non-number,
    nan/inf, a blank line inside the sequence, or an empty file.
    """
    path = Path(path)
    lines = read_text_lines(path)
    if not lines:
        raise DatasetFormatError(path, "no frames (empty skeleton file)")
    rows = np.empty((len(lines), VALUES_PER_LINE), dtype=np.float64)
    for i, line in enumerate(lines):
        tokens = line.split()
        if not tokens:
            raise DatasetFormatError(path, "blank line inside the sequence (frames would shift)", i + 1)
        if len(tokens) != VALUES_PER_LINE:
            raise DatasetFormatError(
                path, f"expected {VALUES_PER_LINE} numbers (2 bodies x 25 joints x xyz), found {len(tokens)}", i + 1)
        rows[i] = parse_numbers(tokens, path, i + 1)
    joints = rows.reshape(len(lines), NUM_BODIES, NUM_JOINTS, 3)
    valid = np.any(joints != 0.0, axis=(2, 3))
    return SkeletonSequence(
        joints=joints, valid=valid, joint_names=KINECT_V2_JOINT_NAMES, frame=FRAME_KINECT, source=str(path),
        frame_ids=np.arange(len(lines)), fps=PKU_MMD_FPS,
    )


def write_pku_mmd_skeleton(path: str | Path, seq: SkeletonSequence) -> None:
    """Write `seq` as a PKU-MMD skeleton file (one line per frame, "%f", Kinect v2 camera space).

    seq: Kinect v2 joints (`KINECT_V2_JOINT_NAMES`), 1 or 2 people, either frame (converted to
    `FRAME_KINECT`). People with valid = False are written as zeros; a second body is zero-padded.
    Values are rounded to 1 um, as in the released files.
    """
    path = Path(path)
    if seq.joint_names != KINECT_V2_JOINT_NAMES:
        raise ValueError(f"PKU-MMD stores Kinect v2 joints ({NUM_JOINTS}, KINECT_V2_JOINT_NAMES order); "
                         f"got {len(seq.joint_names)} joints starting {seq.joint_names[:3]}")
    t, p = seq.valid.shape
    if p not in (1, 2):
        raise ValueError(f"PKU-MMD stores 1 or 2 bodies per frame, got {p}")
    joints = seq.to_frame(FRAME_KINECT).joints
    out = np.zeros((t, NUM_BODIES, NUM_JOINTS, 3))
    out[:, :p] = np.where(seq.valid[:, :, None, None], joints, 0.0)
    if not np.all(np.isfinite(out)):
        raise ValueError("write_pku_mmd_skeleton: joints of valid bodies must be finite")
    rows = [" ".join(f"{v:.6f}" for v in row) for row in out.reshape(t, VALUES_PER_LINE)]
    text = "".join((row if i == 0 else " " + row) + "\n" for i, row in enumerate(rows))
    path.write_text(text, encoding="utf-8")


@dataclass(frozen=True)
class PkuMmdAction:
    """One labelled action: action_id (1-51 in phase 1, 1-41 in phase 2), start/end frame numbers as written
    in the label file (they index skeleton lines; see module docstring), confidence (1 slight, 2 strong)."""

    action_id: int
    start: int
    end: int
    confidence: int


_LABEL_SPLIT = re.compile(r"[,\s]+")


def read_pku_mmd_labels(path: str | Path) -> list[PkuMmdAction]:
    """Read a PKU-MMD label file: one `action_id,start,end,confidence` line per action, in file order.

    Raises DatasetFormatError (file and line) unless each line holds 4 integers with start <= end.
    """
    path = Path(path)
    actions = []
    for i, line in enumerate(read_text_lines(path)):
        if not line.strip():
            raise DatasetFormatError(path, "blank line inside the label list", i + 1)
        fields = [f for f in _LABEL_SPLIT.split(line.strip()) if f]
        if len(fields) != 4:
            raise DatasetFormatError(
                path, f"expected 4 integers 'action_id,start_frame,end_frame,confidence', found {len(fields)} fields",
                i + 1)
        try:
            action_id, start, end, conf = (int(f) for f in fields)
        except ValueError:
            bad = next(f for f in fields if not re.fullmatch(r"[+-]?\d+", f))
            raise DatasetFormatError(path, f"{bad!r} is not an integer", i + 1) from None
        if start > end:
            raise DatasetFormatError(path, f"start frame {start} is after end frame {end}", i + 1)
        actions.append(PkuMmdAction(action_id, start, end, conf))
    return actions


def write_pku_mmd_labels(path: str | Path, actions: Iterable[PkuMmdAction]) -> None:
    """Write actions as a PKU-MMD label file (`action_id,start,end,confidence` per line)."""
    lines = [f"{a.action_id},{a.start},{a.end},{a.confidence}\n" for a in actions]
    Path(path).write_text("".join(lines), encoding="utf-8")


_NAME = re.compile(r"^(?P<seq>\d{4}|A\d+N\d+)-(?P<view>[LMR])$")


def parse_pku_mmd_name(path: str | Path) -> tuple[str, str]:
    """('0002', 'L') from '.../0002-L.txt' (phase 1) or ('A01N01', 'L') from 'A01N01-L.txt' (phase 2)."""
    stem = Path(path).stem
    m = _NAME.match(stem)
    if m is None:
        raise DatasetFormatError(
            path, f"file name {stem!r} is not a PKU-MMD sequence name (XXXX-V or AxxNyy-V, V in L/M/R)")
    return m.group("seq"), m.group("view")


@dataclass(frozen=True)
class PkuMmdMedia:
    """Media files of one sequence (paths only; None / empty where not found).

    rgb_video: RGB_VIDEO/<name>.avi; depth_video: DEPTH_VIDEO/<name>.avi;
    depth_frames: per-frame depth PNGs (512x424, uint16 mm) sorted by the frame number in their names.
    """

    rgb_video: Path | None
    depth_video: Path | None
    depth_frames: tuple[Path, ...]


def _frame_number(path: Path) -> int:
    numbers = re.findall(r"\d+", path.stem)
    return int(numbers[-1]) if numbers else -1


def find_pku_mmd_media(name: str, rgb_dir: str | Path | None = None,
                       depth_dir: str | Path | None = None) -> PkuMmdMedia:
    """Locate the media of sequence `name` (e.g. '0002-L').

    rgb_dir: folder holding `<name>.avi` RGB videos. depth_dir: folder holding either `<name>.avi` depth
    videos or one `<name>/` folder of per-frame PNGs. Missing items come back as None / ().
    """
    rgb = Path(rgb_dir) / f"{name}.avi" if rgb_dir is not None else None
    depth_video = Path(depth_dir) / f"{name}.avi" if depth_dir is not None else None
    frames: tuple[Path, ...] = ()
    if depth_dir is not None and (Path(depth_dir) / name).is_dir():
        frames = tuple(sorted((Path(depth_dir) / name).glob("*.png"), key=lambda p: (_frame_number(p), p.name)))
    return PkuMmdMedia(
        rgb_video=rgb if rgb is not None and rgb.is_file() else None,
        depth_video=depth_video if depth_video is not None and depth_video.is_file() else None,
        depth_frames=frames,
    )
