"""Real datasets (RGB-D and RGB-only) -> training shards, so `training.train`, `training.evaluate` and `training.uscg`
read them exactly like the synthetic folders (`training/synth/shards.py` layout).

    python -m training.datasets.convert cad60 --root /data/CAD-60 --out data/cad60 --size 128 --every 3 \
        --sheet data/cad60/sheet.png          # look at the first 8 samples (color, depth, keypoints, mask)
    python -m training.datasets.convert pku_mmd --root /data/PKU-MMD --out data/pku --every 5 [--rig kv2.json]
    python -m training.datasets.convert coco --root /data/coco/train2017 \
        --annotations /data/coco/annotations/person_keypoints_train2017.json --out data/coco   (RGB only)
    python -m training.datasets.convert lsp --root /data/lsp/images --annotations /data/lsp/joints.mat --out data/lsp

What a converted sample holds (S = --size; camera frame = OpenCV axes of the dataset's depth camera):
- rgb, depth_mm, mask: the square person crop, made by `app.crop` (`box_around` with the app's and the
  synthetic engine's margin, bilinear color, nearest-neighbour depth) around the person's box: the
  projected skeleton joints joined with the depth pixels near the skeleton (`person_mask`).
- lsp2d, lsp_vis: the 14 LSP keypoints in crop pixels, taken from the skeleton joints that share an SMPL
  partner with an LSP joint (`joint_sets`: hands stand for wrists, feet for ankles); LSP's head_top has
  no skeleton partner and is never visible; joints with zero tracker confidence or outside the crop are
  not visible.
- skeleton (J, 3) float32 metres in the dataset's own frame (`joint_sets.FRAME_KINECT`: x to the
  sensor's left, y up), skeleton_conf (J,), and where it came from: sequence (int64 id), frame_id.
- No SMPL ground truth: theta / betas are zeros, the 3D ground-truth arrays (transl, joints3d, lsp3d,
  joints2d) are NaN. Train with `labels: skeleton` (the skeleton feeds the USCG's pseudo labels and the
  3D loss) and evaluate with `--test NAME=FOLDER:skeleton` (PA-MPJPE on the canonical joints).
The manifest's `source` block names the dataset, its joint set and the assumptions below.

CAD-60 (`training/datasets/cad60.py`): RGB_n.png 640x480 and Depth_n.png (16-bit mm, 320x240 or 640x480)
per skeleton frame, registered by OpenNI (the depth map is resized to the RGB grid, nearest neighbour);
the images are mirrored (OpenNI mirror mode) and are flipped back here, so crops look like any camera's
image and the subject's left is on the image's right when facing the sensor. Pinhole from OpenNI's field
of view (`cad60.OPENNI_X_TO_Z`): fx = W / 1.122, cx = W / 2 - 0.5 (pixel centres at integers).

PKU-MMD (`training/datasets/pku_mmd.py`): per sequence `<root>/skeleton/<name>.txt`, the RGB video
`<root>/rgb/<name>.avi` (1920x1080) and the depth frames `<root>/depth/<name>/*.png` (512x424, 16-bit mm;
folder names overridable), skeleton line t = video frame t = the t-th depth PNG; body 0 is converted.
The Kinect v2's color and depth cameras are not registered and the release ships no calibration: the
color frame is aligned to the depth grid by `calibration.align.ColorToDepthAligner` (the app's aligner)
through an `RgbdRig` - `--rig RIG.json` (`calibration.rig.RgbdRig.save` format) with the sensor's own
calibration, else `kinect_v2_default_rig()`, typical Kinect v2 values (depth fx 365.5 px, color fx
1081.4 px, color camera 52 mm to the depth camera's right, no distortion): expect a few pixels of color
misregistration without a real calibration. Both image streams are taken as mirrored (Kinect SDK 2) and
flipped back (`--not-mirrored` if a release is not). Check the result with `--sheet`.

COCO / LSP (RGB only, the paper's other half: train with `kind: rgb, labels: none`): one sample per
annotated person, cropped around COCO's person box or LSP's keypoint box; LSP keypoints only (COCO has no
neck or head top: those are not labelled); depth and mask zeros, no camera (K NaN), no 3D truth.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from calibration.errors import CalibrationError
from training.datasets.joint_sets import (FRAME_KINECT, DatasetFormatError, joint_set, kinect_to_opencv,
                                          smpl_correspondence)

__all__ = ["RealFrame", "ConvertConfig", "lsp_from_joint_set", "person_mask", "frame_to_arrays",
           "cad60_frames", "convert_frames", "convert_cad60", "kinect_v2_default_rig", "pku_mmd_frames",
           "convert_pku_mmd", "RgbFrame", "rgb_frame_to_arrays", "coco_frames", "lsp_frames", "convert_coco",
           "convert_lsp", "write_sheet", "REAL_ARRAYS"]

# arrays a converted shard holds besides `training.synth.shards.SHARD_ARRAYS`
REAL_ARRAYS = ("skeleton", "skeleton_conf", "sequence", "frame_id")


@dataclass
class RealFrame:
    """One frame of a real RGB-D dataset, ready to crop.

    rgb (H, W, 3) uint8 RGB; depth_mm (H, W) uint16 millimetres on the same pixel grid (0 = no reading);
    camera: `calibration.intrinsics.CameraIntrinsics` of that grid; skeleton (J, 3) metres in the
    dataset's frame; joints_cv (J, 3) the same joints in the camera frame with OpenCV axes; conf (J,)
    tracker confidence (> 0 = tracked); joint_set: 'kinect_v1' or 'kinect_v2'; sequence, frame_id: ids.
    """

    rgb: np.ndarray
    depth_mm: np.ndarray
    camera: Any
    skeleton: np.ndarray
    joints_cv: np.ndarray
    conf: np.ndarray
    joint_set: str
    sequence: int
    frame_id: int


@dataclass(frozen=True)
class ConvertConfig:
    """out_size: crop side (px); crop_margin: crop side / person box side (the app's 1.25); every: keep
    every n-th skeleton frame; max_frames: stop after this many samples (0 = all); shard_size: samples
    per shard; depth_band_m: depth pixels within this of the skeleton's depth range belong to the person;
    min_joints: skip frames with fewer tracked joints inside the image."""

    out_size: int = 128
    crop_margin: float = 1.25
    every: int = 1
    max_frames: int = 0
    shard_size: int = 1024
    depth_band_m: float = 0.3
    min_joints: int = 8

    def __post_init__(self) -> None:
        if self.out_size < 16 or self.every < 1 or self.max_frames < 0 or self.shard_size < 1:
            raise ValueError(f"bad convert settings: {self}")


def lsp_from_joint_set(joint_set_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(LSP joint indices (K,), joint indices (K,) in `joint_set_name`): the LSP joints that share an SMPL
    partner with a joint of that set (a skeleton's or COCO's), and that joint. LSP's head_top never has one
    (except in LSP itself: the identity)."""
    if joint_set_name == "lsp":
        return np.arange(14, dtype=np.int64), np.arange(14, dtype=np.int64)
    lsp_partner = joint_set("lsp").smpl_index
    src, dst, _ = smpl_correspondence(joint_set_name)
    by_smpl = {int(d): int(s) for s, d in zip(src, dst)}
    pairs = [(k, by_smpl[int(p)]) for k, p in enumerate(lsp_partner) if p >= 0 and int(p) in by_smpl]
    return np.array([k for k, _ in pairs], np.int64), np.array([s for _, s in pairs], np.int64)


def person_mask(depth_mm: np.ndarray, uv: np.ndarray, z: np.ndarray, K: np.ndarray, band_m: float) -> np.ndarray:
    """(H, W) bool: valid depth pixels inside the tracked joints' box (widened by 0.2 m at the person's
    depth, 0.25 m above for the head) whose depth lies within `band_m` of the joints' depth range.
    depth_mm (H, W) uint16 mm; uv (J, 2) px and z (J,) m of the tracked joints."""
    h, w = depth_mm.shape
    zc = float(np.median(z))
    pad_x, pad_y = 0.2 * K[0, 0] / zc, 0.2 * K[1, 1] / zc
    x0 = int(max(0, np.floor(uv[:, 0].min() - pad_x)))
    x1 = int(min(w, np.ceil(uv[:, 0].max() + pad_x) + 1))
    y0 = int(max(0, np.floor(uv[:, 1].min() - 1.25 * pad_y)))
    y1 = int(min(h, np.ceil(uv[:, 1].max() + 0.5 * pad_y) + 1))
    mask = np.zeros((h, w), bool)
    if x1 > x0 and y1 > y0:
        d = depth_mm[y0:y1, x0:x1].astype(np.float32) / np.float32(1000.0)
        mask[y0:y1, x0:x1] = (d > 0) & (d >= z.min() - band_m) & (d <= z.max() + band_m)
    return mask


def frame_to_arrays(frame: RealFrame, cfg: ConvertConfig) -> tuple[dict[str, np.ndarray] | None, str]:
    """One frame -> (the shard arrays of one sample (no `index`), '') or (None, why it was skipped)."""
    from app.crop import box_around, crop_color, crop_depth, crop_mask

    h, w = frame.depth_mm.shape
    S = cfg.out_size
    uv_all, projected = frame.camera.project_with_mask(frame.joints_cv)
    inside = projected & (uv_all[:, 0] >= -0.5) & (uv_all[:, 0] <= w - 0.5) \
        & (uv_all[:, 1] >= -0.5) & (uv_all[:, 1] <= h - 0.5)
    tracked = (frame.conf > 0) & (frame.joints_cv[:, 2] > 0.1) & inside
    if int(tracked.sum()) < cfg.min_joints:
        return None, "too few tracked joints in the image"
    uv, z = uv_all[tracked], frame.joints_cv[tracked, 2]
    mask = person_mask(frame.depth_mm, uv, z, frame.camera.K, cfg.depth_band_m)
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    if mask.any():
        ys, xs = np.nonzero(mask)
        lo = np.minimum(lo, [xs.min() - 0.5, ys.min() - 0.5])
        hi = np.maximum(hi, [xs.max() + 0.5, ys.max() + 0.5])
    if not np.all(hi > lo):
        return None, "empty person box"
    bbox = np.array([*lo, *hi], np.float32)
    box = box_around(bbox, S, cfg.crop_margin)
    lsp_idx, sk_idx = lsp_from_joint_set(frame.joint_set)
    lsp2d = np.full((14, 2), np.nan, np.float32)
    lsp2d[lsp_idx] = box.source_to_crop(uv_all[sk_idx])
    vis = np.zeros(14, bool)
    in_crop = np.all((lsp2d[lsp_idx] >= -0.5) & (lsp2d[lsp_idx] <= S - 0.5), axis=1)
    vis[lsp_idx] = tracked[sk_idx] & in_crop
    nan3 = np.full(3, np.nan, np.float32)
    return {
        "rgb": crop_color(frame.rgb, box), "depth_mm": crop_depth(frame.depth_mm, box), "mask": crop_mask(mask, box),
        "betas": np.zeros(10, np.float32), "theta": np.zeros(72, np.float32), "transl": nan3,
        "joints3d": np.full((24, 3), np.nan, np.float32), "lsp3d": np.full((14, 3), np.nan, np.float32),
        "joints2d": np.full((24, 2), np.nan, np.float32), "lsp2d": lsp2d,
        "joints_vis": np.zeros(24, bool), "lsp_vis": vis,
        "crop_box": np.array([box.x0, box.y0, box.side, S], np.float32), "bbox": bbox,
        "K": frame.camera.K.astype(np.float32), "dist": frame.camera.opencv_dist_coeffs()[:8].astype(np.float32),
        "depth_mode": np.int8(0), "color_resolution": np.int8(0),
        "skeleton": frame.skeleton.astype(np.float32), "skeleton_conf": frame.conf.astype(np.float32),
        "sequence": np.int64(frame.sequence), "frame_id": np.int64(frame.frame_id),
    }, ""


# ------------------------------------------------------------------------------------------------ CAD-60
def cad60_camera(width: int, height: int):
    """`CameraIntrinsics` (pinhole) of a CAD-60 image of width x height after un-mirroring (module docstring)."""
    from calibration.intrinsics import CameraIntrinsics
    from training.datasets.cad60 import OPENNI_X_TO_Z, OPENNI_Y_TO_Z

    return CameraIntrinsics(width, height, width / OPENNI_X_TO_Z, height / OPENNI_Y_TO_Z, width / 2 - 0.5, height / 2 - 0.5)


def _cad60_sequences(root: Path) -> list[tuple[Path, str]]:
    """(skeleton file, activity) of every sequence listed in the activityLabel.txt files under root."""
    from training.datasets.cad60 import read_cad60_activity_labels

    label_files = sorted(root.rglob("activityLabel.txt"))
    if not label_files:
        raise FileNotFoundError(f"{root}: no activityLabel.txt below it: not a CAD-60 folder "
                                f"(expected data1/ .. data4/ with activityLabel.txt, <id>.txt and <id>/ images)")
    out = []
    for lf in label_files:
        for seq_id, activity in read_cad60_activity_labels(lf).items():
            out.append((lf.parent / f"{seq_id}.txt", activity))
    return out


def cad60_frames(root: str | Path, every: int = 1, stats: dict | None = None) -> Iterator[RealFrame]:
    """Every `every`-th tracked skeleton frame of every CAD-60 sequence under `root`, with its images.
    Frames whose images are missing are counted in stats['missing images'] and skipped."""
    import cv2

    from training.datasets.cad60 import load_cad60_rgbd, read_cad60_skeleton

    stats = {} if stats is None else stats
    for skel_path, _activity in _cad60_sequences(Path(root)):
        if not skel_path.is_file():
            stats["missing skeleton file"] = stats.get("missing skeleton file", 0) + 1
            continue
        seq = read_cad60_skeleton(skel_path).skeleton
        seq_dir = skel_path.with_suffix("")
        frame_ids = seq.frame_ids if seq.frame_ids is not None else np.arange(seq.joints.shape[0])
        for t in range(0, seq.joints.shape[0], every):
            if not seq.valid[t, 0]:
                stats["untracked"] = stats.get("untracked", 0) + 1
                continue
            try:
                rgb, depth = load_cad60_rgbd(seq_dir, int(frame_ids[t]))
            except FileNotFoundError:
                stats["missing images"] = stats.get("missing images", 0) + 1
                continue
            h, w = rgb.shape[:2]
            if depth.shape != (h, w):
                depth = cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)
            skeleton = seq.joints[t, 0]
            conf = seq.confidence[t, 0] if seq.confidence is not None else np.ones(skeleton.shape[0])
            depth_mm = np.clip(np.rint(depth * 1000.0), 0, 65535).astype(np.uint16)  # the PNG's millimetres
            yield RealFrame(rgb=np.ascontiguousarray(rgb[:, ::-1]), depth_mm=np.ascontiguousarray(depth_mm[:, ::-1]),
                            camera=cad60_camera(w, h), skeleton=skeleton, joints_cv=kinect_to_opencv(skeleton),
                            conf=conf, joint_set="kinect_v1", sequence=int(skel_path.stem),
                            frame_id=int(frame_ids[t]))


# ------------------------------------------------------------------------------------------------ PKU-MMD
def kinect_v2_default_rig():
    """`RgbdRig` with typical Kinect v2 values for images flipped back to a pinhole view (no distortion):
    depth 512x424, fx = fy = 365.5 px; color 1920x1080, fx = fy = 1081.4 px; the color camera 52 mm to
    the depth camera's right (OpenCV x), axes parallel. A stand-in for the sensor's own calibration."""
    from calibration.intrinsics import CameraIntrinsics
    from calibration.rig import Extrinsics, RgbdRig

    depth = CameraIntrinsics(512, 424, 365.5, 365.5, 255.5, 211.5)
    color = CameraIntrinsics(1920, 1080, 1081.4, 1081.4, 959.5, 539.5)
    return RgbdRig(depth=depth, color=color, depth_to_color=Extrinsics(np.eye(3), np.array([-0.052, 0.0, 0.0])))


def _pku_sequences(skeleton_dir: Path) -> list[Path]:
    files = sorted(skeleton_dir.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"{skeleton_dir}: no skeleton .txt files: not a PKU-MMD skeleton folder "
                                f"(expected <name>.txt, e.g. 0002-L.txt; see --skeleton-dir)")
    return files


def pku_mmd_frames(root: str | Path, every: int = 1, rig=None, mirrored: bool = True,
                   skeleton_dir: str = "skeleton", rgb_dir: str = "rgb", depth_dir: str = "depth",
                   stats: dict | None = None) -> Iterator[RealFrame]:
    """Every `every`-th frame with a tracked body 0 of every PKU-MMD sequence under `root` whose RGB
    video and depth frames exist, color aligned to the depth grid (see the module docstring)."""
    import cv2

    from calibration.align import ColorToDepthAligner
    from training.datasets.pku_mmd import find_pku_mmd_media, read_pku_mmd_skeleton

    root = Path(root)
    stats = {} if stats is None else stats
    rig = kinect_v2_default_rig() if rig is None else rig
    aligner = ColorToDepthAligner(rig)
    (wd, hd), (wc, hc) = rig.depth.size, rig.color.size
    for skel_path in _pku_sequences(root / skeleton_dir):
        name = skel_path.stem
        media = find_pku_mmd_media(name, root / rgb_dir, root / depth_dir)
        if media.rgb_video is None or not media.depth_frames:
            why = ("depth only as a video (not supported: use the per-frame 16-bit PNG release)"
                   if media.depth_video is not None and media.rgb_video is not None and not media.depth_frames
                   else "sequences without rgb video or depth frames")
            stats[why] = stats.get(why, 0) + 1
            continue
        seq = read_pku_mmd_skeleton(skel_path)
        video = cv2.VideoCapture(str(media.rgb_video))
        if not video.isOpened():
            raise DatasetFormatError(media.rgb_video, "OpenCV cannot open this video")
        try:
            n = min(seq.joints.shape[0], len(media.depth_frames))
            for t in range(n):
                ok, bgr = video.read()
                if not ok:
                    stats["video shorter than the skeleton"] = stats.get("video shorter than the skeleton", 0) + 1
                    break
                if t % every or not seq.valid[t, 0]:
                    continue
                depth = cv2.imread(str(media.depth_frames[t]), cv2.IMREAD_UNCHANGED)
                if depth is None or depth.dtype != np.uint16 or depth.shape != (hd, wd):
                    got = "unreadable" if depth is None else f"{depth.dtype} {depth.shape[::-1]}"
                    raise DatasetFormatError(media.depth_frames[t], f"depth must be a {wd}x{hd} 16-bit PNG in mm "
                                                                    f"(the rig's depth size), got {got}")
                if bgr.shape[:2] != (hc, wc):
                    raise DatasetFormatError(media.rgb_video, f"frames are {bgr.shape[1]}x{bgr.shape[0]}, the rig's "
                                                              f"color camera is {wc}x{hc}")
                if mirrored:
                    bgr, depth = bgr[:, ::-1], depth[:, ::-1]
                depth = np.ascontiguousarray(depth)
                aligned, _valid = aligner(np.ascontiguousarray(bgr), depth)
                skeleton = seq.joints[t, 0]
                yield RealFrame(rgb=cv2.cvtColor(aligned, cv2.COLOR_BGR2RGB), depth_mm=depth,
                                camera=rig.depth, skeleton=skeleton, joints_cv=kinect_to_opencv(skeleton),
                                conf=np.ones(skeleton.shape[0]), joint_set="kinect_v2",
                                sequence=_sequence_number(name), frame_id=t)
        finally:
            video.release()


def _sequence_number(name: str) -> int:
    """An int64 id of a PKU-MMD sequence name: digits of the name, then the view (L=1, M=2, R=3)."""
    from training.datasets.pku_mmd import parse_pku_mmd_name

    seq, view = parse_pku_mmd_name(name + ".txt")
    digits = "".join(ch for ch in seq if ch.isdigit())
    return int(digits or 0) * 10 + "LMR".index(view) + 1


# ------------------------------------------------------------------------------------------------ RGB only
@dataclass
class RgbFrame:
    """One annotated person in an RGB-only dataset (the paper's COCO / LSP role).

    rgb (H, W, 3) uint8 RGB; lsp2d (14, 2) px, pixel centres at integers (NaN = not labelled); labelled
    (14,) bool (positions usable for L2d); box (4,) x0, y0, x1, y1 px, the person; image_id, person_id: ids.
    """

    rgb: np.ndarray
    lsp2d: np.ndarray
    labelled: np.ndarray
    box: np.ndarray
    image_id: int
    person_id: int


def rgb_frame_to_arrays(frame: RgbFrame, cfg: ConvertConfig) -> tuple[dict[str, np.ndarray] | None, str]:
    """One RGB-only person -> (shard arrays of one sample (no `index`), '') or (None, why skipped). Depth
    and mask are zeros, the camera unknown (K NaN), no 3D truth; train with `kind: rgb, labels: none`."""
    from app.crop import box_around, crop_color

    S = cfg.out_size
    if int(frame.labelled.sum()) < cfg.min_joints:
        return None, "too few labelled keypoints"
    x0, y0, x1, y1 = (float(v) for v in frame.box)
    if not (x1 > x0 and y1 > y0):
        return None, "empty person box"
    box = box_around(frame.box, S, cfg.crop_margin)
    lsp2d = np.where(frame.labelled[:, None], box.source_to_crop(frame.lsp2d), np.nan).astype(np.float32)
    vis = frame.labelled & np.all((lsp2d >= -0.5) & (lsp2d <= S - 0.5), axis=1)
    nan = np.float32(np.nan)
    return {
        "rgb": crop_color(frame.rgb, box), "depth_mm": np.zeros((S, S), np.uint16), "mask": np.zeros((S, S), bool),
        "betas": np.zeros(10, np.float32), "theta": np.zeros(72, np.float32), "transl": np.full(3, nan),
        "joints3d": np.full((24, 3), nan), "lsp3d": np.full((14, 3), nan), "joints2d": np.full((24, 2), nan),
        "lsp2d": lsp2d, "joints_vis": np.zeros(24, bool), "lsp_vis": vis,
        "crop_box": np.array([box.x0, box.y0, box.side, S], np.float32), "bbox": np.asarray(frame.box, np.float32),
        "K": np.full((3, 3), nan), "dist": np.zeros(8, np.float32),
        "depth_mode": np.int8(0), "color_resolution": np.int8(0),
        "sequence": np.int64(frame.image_id), "frame_id": np.int64(frame.person_id),
    }, ""


def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetFormatError(path, "not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def coco_frames(annotations: str | Path, image_dir: str | Path, stats: dict | None = None) -> Iterator[RgbFrame]:
    """Every non-crowd person of a COCO person-keypoints file whose image exists under `image_dir`. LSP
    keypoints: COCO's 12 limb joints (labelled = COCO v > 0); neck and head_top are not labelled. The
    person box is COCO's `bbox`."""
    from training.datasets.coco import read_coco_keypoints

    stats = {} if stats is None else stats
    coco = read_coco_keypoints(annotations, image_dir)
    lsp_idx, coco_idx = lsp_from_joint_set("coco")
    for image_id in sorted({p.image_id for p in coco.people}):
        image = coco.images[image_id]
        annotated = coco.people_in(image_id)
        people = [p for p in annotated if not p.iscrowd]
        if len(people) < len(annotated):
            stats["crowd regions"] = stats.get("crowd regions", 0) + len(annotated) - len(people)
        if not people:
            continue
        if image.path is None or not image.path.is_file():
            stats["missing images"] = stats.get("missing images", 0) + len(people)
            continue
        rgb = _read_rgb(image.path)
        for p in people:
            lsp2d = np.full((14, 2), np.nan)
            labelled = np.zeros(14, bool)
            lsp2d[lsp_idx] = p.keypoints[coco_idx]
            labelled[lsp_idx] = p.visibility[coco_idx] > 0
            x, y, w, h = p.bbox
            yield RgbFrame(rgb=rgb, lsp2d=lsp2d, labelled=labelled, box=np.array([x, y, x + w, y + h]),
                           image_id=image_id, person_id=p.id)


def lsp_frames(joints_mat: str | Path, image_dir: str | Path, stats: dict | None = None) -> Iterator[RgbFrame]:
    """Every image of an LSP / LSPET `joints.mat` that exists under `image_dir` (MATLAB 1-based pixel
    coordinates moved to 0-based centres). Labelled: every joint in LSP (occluded joints are annotated
    too), the visible ones in LSPET (others may be guesses). The person box: the keypoints' box, 10 %
    wider each side and 10 % longer at the feet (LSP's head_top already bounds the head)."""
    from training.datasets.lsp import LAYOUT_LSP, read_lsp_joints

    stats = {} if stats is None else stats
    ann = read_lsp_joints(joints_mat, image_dir)
    for i, path in enumerate(ann.image_paths or ()):
        if not path.is_file():
            stats["missing images"] = stats.get("missing images", 0) + 1
            continue
        kp = ann.joints[i] - 1.0
        labelled = np.ones(14, bool) if ann.layout == LAYOUT_LSP else ann.visible[i].copy()
        pts = kp[labelled] if labelled.any() else kp
        (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
        w, h = x1 - x0, y1 - y0
        yield RgbFrame(rgb=_read_rgb(path), lsp2d=kp, labelled=labelled,
                       box=np.array([x0 - 0.1 * w, y0, x1 + 0.1 * w, y1 + 0.1 * h]), image_id=i + 1, person_id=0)


# ------------------------------------------------------------------------------------------------ writer
@dataclass
class _Writer:
    out: Path
    shard_size: int
    pending: list = field(default_factory=list)
    shards: list = field(default_factory=list)
    count: int = 0

    def add(self, arrays: dict[str, np.ndarray]) -> None:
        arrays["index"] = np.int64(self.count)
        self.count += 1
        self.pending.append(arrays)
        if len(self.pending) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        from training.synth.shards import write_shard

        if not self.pending:
            return
        stacked = {k: np.stack([np.asarray(p[k]) for p in self.pending]) for k in self.pending[0]}
        name = f"shard-{len(self.shards):05d}.npz"
        sha = write_shard(self.out / name, stacked)
        self.shards.append({"file": name, "count": len(self.pending), "first_index": int(stacked["index"][0]),
                            "sha256": sha})
        self.pending = []


def convert_frames(frames: Iterator[RealFrame] | Iterator[RgbFrame], out: str | Path, cfg: ConvertConfig,
                   source: dict, stats: dict | None = None, progress: bool = True, overwrite: bool = False) -> dict:
    """Crop and label `frames` (RGB-D `RealFrame`s or RGB-only `RgbFrame`s) into the shard folder `out`;
    returns the manifest. `source`: what to record about the dataset. A folder that already holds a data
    set (manifest or shards) is refused unless `overwrite` (then its shards and manifest are replaced)."""
    from training.synth.shards import FORMAT, MANIFEST, SHARD_ARRAYS, VERSION

    out = Path(out)
    old = sorted(out.glob("shard-*.npz")) + ([out / MANIFEST] if (out / MANIFEST).exists() else [])
    if old and not overwrite:
        raise FileExistsError(f"{out} already holds a data set ({len(old)} files); pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    for f in old:
        f.unlink()
    stats = {} if stats is None else stats
    writer = _Writer(out, cfg.shard_size)
    set_name = None
    from tqdm import tqdm

    bar = tqdm(unit="frame", desc="convert", disable=not progress)
    try:
        for frame in frames:
            if isinstance(frame, RgbFrame):
                arrays, why = rgb_frame_to_arrays(frame, cfg)
            else:
                set_name = set_name or frame.joint_set
                arrays, why = frame_to_arrays(frame, cfg)
            if arrays is None:
                stats[why] = stats.get(why, 0) + 1
                continue
            writer.add(arrays)
            bar.update(1)
            if cfg.max_frames and writer.count >= cfg.max_frames:
                break
        writer.flush()
    finally:
        bar.close()
    if writer.count == 0:
        raise ValueError(f"no usable frame to convert (skipped: {stats or 'none found'})")
    arrays_meta = {k: {"dtype": d, "shape": ["N", *shape]} for k, (d, shape) in SHARD_ARRAYS.items()}
    manifest = {
        "format": FORMAT, "version": VERSION, "out_size": cfg.out_size, "config": None,
        "source": {**source, **({"skeleton": {"joint_set": set_name, "frame": FRAME_KINECT, "units": "m"}}
                                if set_name else {}),
                   "convert": {"crop_margin": cfg.crop_margin, "every": cfg.every, "depth_band_m": cfg.depth_band_m,
                               "min_joints": cfg.min_joints}},
        "counts": {"samples": writer.count, "shards": len(writer.shards),
                   "skipped": dict(sorted(stats.items()))},
        "arrays": {**arrays_meta, **({"skeleton": {"dtype": "float32", "shape": ["N", "J", 3]},
                                      "skeleton_conf": {"dtype": "float32", "shape": ["N", "J"]}} if set_name else {}),
                   "sequence": {"dtype": "int64", "shape": ["N"]}, "frame_id": {"dtype": "int64", "shape": ["N"]}},
        "shards": writer.shards,
    }
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out / MANIFEST)
    return manifest


def write_sheet(folder: str | Path, out: str | Path, n: int = 8) -> Path:
    """A contact sheet (PNG) of the first `n` samples of a converted folder: `training.synth`'s drawing."""
    import cv2

    from training.synth.sample import contact_sheet
    from training.synth.shards import SynthShards

    shards = SynthShards(folder)
    samples = [shards[i] for i in range(min(n, len(shards)))]
    captions = [f"seq {int(s['sequence'])} frame {int(s['frame_id'])}  vis {int(s['lsp_vis'].sum())}/14"
                for s in samples]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), contact_sheet(samples, captions=captions)):
        raise ValueError(f"could not write {out}")
    return out


def convert_cad60(root: str | Path, out: str | Path, cfg: ConvertConfig = ConvertConfig(),
                  progress: bool = True, overwrite: bool = False) -> dict:
    """CAD-60 folder -> shard folder (see the module docstring); returns the manifest."""
    stats: dict = {}
    frames = cad60_frames(root, cfg.every, stats)
    return convert_frames(frames, out, cfg, {"dataset": "cad60", "root": str(root), "mirrored_input": True,
                                             "registration": "OpenNI (depth resized to the RGB grid)"},
                          stats, progress, overwrite)


def convert_pku_mmd(root: str | Path, out: str | Path, cfg: ConvertConfig = ConvertConfig(), rig=None,
                    mirrored: bool = True, dirs: tuple[str, str, str] = ("skeleton", "rgb", "depth"),
                    progress: bool = True, overwrite: bool = False) -> dict:
    """PKU-MMD folder -> shard folder (see the module docstring); returns the manifest."""
    stats: dict = {}
    used = kinect_v2_default_rig() if rig is None else rig
    frames = pku_mmd_frames(root, cfg.every, used, mirrored, *dirs, stats=stats)
    return convert_frames(frames, out, cfg, {"dataset": "pku_mmd", "root": str(root), "mirrored_input": mirrored,
                                             "registration": "calibration.align.ColorToDepthAligner",
                                             "rig": used.to_dict(), "rig_is_default": rig is None},
                          stats, progress, overwrite)


def convert_coco(annotations: str | Path, image_dir: str | Path, out: str | Path,
                 cfg: ConvertConfig = ConvertConfig(min_joints=6), progress: bool = True,
                 overwrite: bool = False) -> dict:
    """COCO person keypoints -> RGB-only shard folder (see `coco_frames`); returns the manifest."""
    stats: dict = {}
    return convert_frames(coco_frames(annotations, image_dir, stats), out, cfg,
                          {"dataset": "coco", "kind": "rgb", "annotations": str(annotations)}, stats, progress,
                          overwrite)


def convert_lsp(joints_mat: str | Path, image_dir: str | Path, out: str | Path,
                cfg: ConvertConfig = ConvertConfig(), progress: bool = True, overwrite: bool = False) -> dict:
    """LSP / LSPET joints.mat + images -> RGB-only shard folder (see `lsp_frames`); returns the manifest."""
    stats: dict = {}
    return convert_frames(lsp_frames(joints_mat, image_dir, stats), out, cfg,
                          {"dataset": "lsp", "kind": "rgb", "annotations": str(joints_mat)}, stats, progress,
                          overwrite)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.datasets.convert", description=__doc__.split("\n\n")[0],
                                epilog="Then train with `{path: OUT, kind: rgbd, labels: skeleton, smpl_labels: "
                                       "USCG.npz}` and evaluate with `--test NAME=OUT:skeleton`.")
    p.add_argument("dataset", choices=["cad60", "pku_mmd", "coco", "lsp"], help="which dataset layout ROOT holds")
    p.add_argument("--root", required=True, help="the dataset folder (CAD-60: the one holding data1/ .. data4/; "
                                                 "PKU-MMD: the one holding the three folders below; COCO / LSP: "
                                                 "the image folder, e.g. val2017/ or images/)")
    p.add_argument("--annotations", default="", help="COCO: person_keypoints_*.json; LSP: joints.mat")
    p.add_argument("--out", required=True, help="output shard folder")
    p.add_argument("--size", type=int, default=ConvertConfig.out_size, help="crop side in px (default %(default)s)")
    p.add_argument("--every", type=int, default=1, help="keep every n-th frame (default %(default)s)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many samples (0 = all)")
    p.add_argument("--rig", default="", help="PKU-MMD: the Kinect v2's calibration as an RgbdRig JSON "
                                             "(default: typical values, see kinect_v2_default_rig)")
    p.add_argument("--not-mirrored", action="store_true", help="PKU-MMD: the images are not mirrored")
    p.add_argument("--skeleton-dir", default="skeleton", help="PKU-MMD: skeleton folder under ROOT (%(default)s)")
    p.add_argument("--rgb-dir", default="rgb", help="PKU-MMD: RGB video folder under ROOT (%(default)s)")
    p.add_argument("--depth-dir", default="depth", help="PKU-MMD: depth frame folders under ROOT (%(default)s)")
    p.add_argument("--sheet", default="", help="also draw the first 8 samples into this PNG")
    p.add_argument("--overwrite", action="store_true", help="replace a data set already in OUT")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        cfg = ConvertConfig(out_size=args.size, every=args.every, max_frames=args.max_frames)
        if args.dataset in ("coco", "lsp") and not args.annotations:
            raise ValueError(f"{args.dataset} needs --annotations (COCO: person_keypoints_*.json; LSP: joints.mat)")
        if args.dataset == "cad60":
            m = convert_cad60(args.root, args.out, cfg, progress=not args.no_progress, overwrite=args.overwrite)
        elif args.dataset == "coco":
            cfg = ConvertConfig(out_size=args.size, every=1, max_frames=args.max_frames, min_joints=6)
            m = convert_coco(args.annotations, args.root, args.out, cfg, progress=not args.no_progress,
                             overwrite=args.overwrite)
        elif args.dataset == "lsp":
            m = convert_lsp(args.annotations, args.root, args.out, cfg, progress=not args.no_progress,
                            overwrite=args.overwrite)
        else:
            from calibration.rig import RgbdRig

            rig = RgbdRig.load(args.rig) if args.rig else None
            m = convert_pku_mmd(args.root, args.out, cfg, rig, not args.not_mirrored,
                                (args.skeleton_dir, args.rgb_dir, args.depth_dir), progress=not args.no_progress,
                                overwrite=args.overwrite)
        if args.sheet:
            write_sheet(args.out, args.sheet)
    except (FileNotFoundError, FileExistsError, ValueError, DatasetFormatError, CalibrationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    c = m["counts"]
    print(f"wrote {c['samples']} samples in {c['shards']} shards to {args.out}"
          + (f" (skipped: {c['skipped']})" if c["skipped"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
