"""Training data: synthetic shard folders as torch Datasets, Kinect-like skeleton views, mixed 50/50 batches.

    ds = TrainingData.from_config(cfg.data, input_size=cfg.model.input_size, seed=cfg.run.seed)
    sampler = MixedBatchSampler(ds.pools, cfg.data.batch_size, cfg.data.rgb_fraction, seed, rank, world)
    loader = DataLoader(ds, batch_sampler=sampler.steps(start, stop), collate_fn=collate)

One item (`ds[(i, step)]`; the step seeds its augmentation, so results do not depend on workers or on
resuming) is a dict of numpy arrays (S = model input size; camera frame = OpenCV, metres):

    rgb (3,S,S) uint8; depth (1,S,S) float32 m (all 0 for RGB-only sources); ref_depth () float32 m;
    has_depth () bool; kp2d (14,2) float32 LSP joints in normalised crop coordinates [-1, 1] (pixel
    centre p <-> 2 p / S - 1, app/crop.py); vis2d (14,) bool;
    smpl_rotmat (24,3,3) float32, smpl_betas (10,), has_smpl () bool, has_global () bool: the SMPL
        target (ground truth, or the USCG's pseudo label where it passed the quality check);
    skel24 (24,3) float32 m, skel24_mask (24,) bool, has_skel () bool: a Kinect-like skeleton's joints
        at their SMPL partners (`joint_sets.smpl_correspondence`), in the dataset's own frame with
        OpenCV axes (`SkeletonView.to_camera_axes`), for the 3D loss of the single-dataset baseline;
    canon (15,3) float32 m, has_canon () bool: the same skeleton as the canonical USCG joint set;
    lsp3d (14,3), joints3d (24,3) float32 m: ground truth (camera frame), for evaluation only;
    source () int64, index () int64 (sample index in its folder).

Sources (see training/config.py): 'rgbd' folders feed both streams; 'rgb' folders are the paper's
RGB-only datasets (COCO/LSP role): depth is replaced by zeros and only 2D labels (plus ground-truth SMPL
if `labels: smpl`) are used. `labels: kinect_v1_like / kinect_v2_like` hides the SMPL ground truth and
exposes only a skeleton in that convention (`SKELETON_VIEWS`), reproducing the paper's cross-dataset
problem: different joint placements, units and coordinate frames. `labels: skeleton` is the real thing: a
dataset converted by `python -m training.datasets.convert` (CAD-60) exposes the skeleton it stores.

Flip augmentation mirrors the crop (column j -> S-1-j), the 2D joints (x -> S-1-x in crop pixels, left
and right swapped), the 3D joints (x -> -x, swapped) and the SMPL pose (`joint_sets.flip_smpl_pose`).

`write_procedural_shards` writes small stand-in data sets in the shard format without rendering (stick
figures of a posed body): for tests, benchmarks and smoke runs, not for training real models.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch.utils.data import Dataset, DistributedSampler

from model.body import SMPL_JOINT_NAMES
from model.preprocess import reference_depth
from training.datasets.joint_sets import (CANONICAL_JOINT_NAMES, flip_permutation, flip_smpl_pose,
                                          kinect_to_opencv, smpl_correspondence, to_canonical)

__all__ = [
    "SkeletonView", "SKELETON_VIEWS", "SKELETON_LABELS", "read_skeleton_source", "SourceArrays", "TrainingData", "MixedBatchSampler", "StepBatches",
    "collate", "load_source", "write_procedural_shards", "CANONICAL_FLIP",
]

LSP_FLIP = flip_permutation("lsp")
SMPL_FLIP = flip_permutation("smpl")
CANONICAL_FLIP = np.array([CANONICAL_JOINT_NAMES.index(
    n.replace("left", "#").replace("right", "left").replace("#", "right")) for n in CANONICAL_JOINT_NAMES])
_J = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}


# ------------------------------------------------------------------------------------ skeleton views
def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


@dataclass(frozen=True)
class SkeletonView:
    """A Kinect-like skeleton convention for synthetic data: joint placement, frame, units and noise.

    joint_set: 'kinect_v1' (15 OpenNI/NITE joints, CAD-60) or 'kinect_v2' (25 SDK-2 joints, PKU-MMD).
    The dataset frame is the Kinect camera frame (x to the sensor's left, y up, z forward; see
    joint_sets.FRAME_KINECT) rotated by `tilt_deg` about its x axis and shifted by `offset_m`;
    coordinates are stored in `units_per_m` (1000 = millimetres). `noise_m`: per-joint Gaussian noise
    (a skeleton tracker's jitter), drawn per sample from its index.
    """

    name: str
    joint_set: str
    units_per_m: float
    tilt_deg: float
    offset_m: tuple[float, float, float]
    noise_m: float

    @property
    def num_joints(self) -> int:
        return 15 if self.joint_set == "kinect_v1" else 25

    def rotation(self) -> np.ndarray:
        """(3, 3) OpenCV camera frame -> dataset frame (Kinect axes, then the tilt)."""
        tilt = Rotation.from_euler("x", self.tilt_deg, degrees=True).as_matrix()
        return tilt @ np.diag([-1.0, -1.0, 1.0])

    def from_smpl(self, joints: np.ndarray, seeds: Sequence[int] | None = None) -> np.ndarray:
        """SMPL joints (N, 24, 3) m, OpenCV camera frame -> (N, J, 3) skeletons in this view's frame and units.

        seeds: one int per sample for the tracker noise (None = no noise).
        """
        j = np.asarray(joints, dtype=np.float64)
        if j.ndim != 3 or j.shape[1:] != (24, 3):
            raise ValueError(f"from_smpl needs SMPL joints (N, 24, 3), got {j.shape}")
        pts = _kinect_v1_points(j) if self.joint_set == "kinect_v1" else _kinect_v2_points(j)
        if seeds is not None and self.noise_m > 0:
            noise = np.stack([np.random.default_rng([int(s), 7919]).normal(0.0, self.noise_m, pts.shape[1:])
                              for s in seeds])
            pts = pts + noise
        out = pts @ self.rotation().T + np.asarray(self.offset_m)
        return out * self.units_per_m

    def to_camera_axes(self, skeleton: np.ndarray) -> np.ndarray:
        """(..., J, 3) in this view's units -> metres with OpenCV axes (`joint_sets.kinect_to_opencv`, what
        the dataset readers do). The frame's undocumented tilt and offset remain: that is the
        cross-dataset problem (root-relative use removes only the offset)."""
        return kinect_to_opencv(np.asarray(skeleton, dtype=np.float64) / self.units_per_m)

    def canonical(self, skeleton: np.ndarray) -> np.ndarray:
        """(..., J, 3) skeletons in this view's units -> (..., 15, 3) canonical USCG joints (`to_camera_axes`)."""
        return to_canonical(self.to_camera_axes(skeleton), self.joint_set)

    def smpl_targets(self, skeleton: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, J, 3) skeletons -> (N, 24, 3) at the SMPL partner joints (`to_camera_axes`), and the (24,) mask."""
        src, dst, _ = smpl_correspondence(self.joint_set)
        m = self.to_camera_axes(skeleton)
        out = np.zeros(m.shape[:-2] + (24, 3))
        out[..., dst, :] = m[..., src, :]
        mask = np.zeros(24, dtype=bool)
        mask[dst] = True
        return out, mask


def _frame_axes(j: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample: body up (pelvis -> neck), subject's left (right hip -> left hip), head up (neck -> head)."""
    up = _unit(j[:, _J["neck"]] - j[:, _J["pelvis"]])[:, None]
    left = _unit(j[:, _J["left_hip"]] - j[:, _J["right_hip"]])[:, None]
    head_up = _unit(j[:, _J["head"]] - j[:, _J["neck"]])[:, None]
    return up[:, 0], left[:, 0], head_up[:, 0]


def _kinect_v1_points(j: np.ndarray) -> np.ndarray:
    """OpenNI/NITE-like joints (N, 15, 3), OpenCV frame: head centre above SMPL's head joint, palm points
    beyond the wrists, hips higher and wider, foot points at the ankles (joint_sets' table)."""
    up, left, head_up = _frame_axes(j)
    g = lambda n: j[:, _J[n]]  # noqa: E731
    pts = {
        "HEAD": g("head") + 0.10 * head_up, "NECK": g("neck"), "TORSO": 0.5 * (g("spine1") + g("spine2")),
        "LEFT_SHOULDER": g("left_shoulder") + 0.03 * up, "RIGHT_SHOULDER": g("right_shoulder") + 0.03 * up,
        "LEFT_ELBOW": g("left_elbow"), "RIGHT_ELBOW": g("right_elbow"),
        "LEFT_HIP": g("left_hip") + 0.06 * up + 0.03 * left, "RIGHT_HIP": g("right_hip") + 0.06 * up - 0.03 * left,
        "LEFT_KNEE": g("left_knee"), "RIGHT_KNEE": g("right_knee"),
        "LEFT_HAND": g("left_wrist") + 0.07 * _unit(g("left_wrist") - g("left_elbow")),
        "RIGHT_HAND": g("right_wrist") + 0.07 * _unit(g("right_wrist") - g("right_elbow")),
        "LEFT_FOOT": g("left_ankle") + 0.02 * _unit(g("left_foot") - g("left_ankle")),
        "RIGHT_FOOT": g("right_ankle") + 0.02 * _unit(g("right_foot") - g("right_ankle")),
    }
    from training.datasets.joint_sets import KINECT_V1_JOINT_NAMES
    return np.stack([pts[n] for n in KINECT_V1_JOINT_NAMES], axis=1)


def _kinect_v2_points(j: np.ndarray) -> np.ndarray:
    """Kinect-SDK-2-like joints (N, 25, 3), OpenCV frame (joint_sets' table: SpineBase a little above the
    pelvis, Head at the head centre, hips higher and wider, Hand/HandTip/Thumb from the hand joint)."""
    up, left, head_up = _frame_axes(j)
    g = lambda n: j[:, _J[n]]  # noqa: E731
    pts: dict[str, np.ndarray] = {
        "SpineBase": g("pelvis") + 0.03 * up, "SpineMid": g("spine2"), "Neck": 0.5 * (g("neck") + g("head")),
        "Head": g("head") + 0.08 * head_up, "SpineShoulder": g("neck"),
    }
    for side, s in (("Left", 1.0), ("Right", -1.0)):
        lo = side.lower()
        hand_dir = _unit(g(f"{lo}_hand") - g(f"{lo}_wrist"))
        pts.update({
            f"Shoulder{side}": g(f"{lo}_shoulder") + 0.02 * up, f"Elbow{side}": g(f"{lo}_elbow"),
            f"Wrist{side}": g(f"{lo}_wrist"), f"Hand{side}": g(f"{lo}_hand"),
            f"Hip{side}": g(f"{lo}_hip") + 0.05 * up + s * 0.02 * left, f"Knee{side}": g(f"{lo}_knee"),
            f"Ankle{side}": g(f"{lo}_ankle"), f"Foot{side}": g(f"{lo}_foot"),
            f"HandTip{side}": g(f"{lo}_hand") + 0.06 * hand_dir,
            f"Thumb{side}": g(f"{lo}_hand") + 0.02 * hand_dir + 0.03 * up,
        })
    from training.datasets.joint_sets import KINECT_V2_JOINT_NAMES
    return np.stack([pts[n] for n in KINECT_V2_JOINT_NAMES], axis=1)


SKELETON_VIEWS: dict[str, SkeletonView] = {
    # CAD-60-like: NITE skeleton in millimetres, in a room frame tilted 20 deg and 0.8 m above the sensor
    "kinect_v1_like": SkeletonView("kinect_v1_like", "kinect_v1", 1000.0, 20.0, (0.0, 0.8, 0.0), 0.015),
    # PKU-MMD-like: Kinect v2 skeleton in metres, Kinect camera space
    "kinect_v2_like": SkeletonView("kinect_v2_like", "kinect_v2", 1.0, 0.0, (0.0, 0.0, 0.0), 0.010),
}


def stored_skeleton_view(folder: str | Path) -> SkeletonView:
    """The view of the skeletons a converted real dataset stores (`training.datasets.convert`): its joint
    set, metres, the dataset's own frame (no tilt or offset added, no noise)."""
    from training.synth.shards import SynthShards

    source = SynthShards(folder).manifest.get("source") or {}
    joint_set_name = (source.get("skeleton") or {}).get("joint_set")
    if joint_set_name not in ("kinect_v1", "kinect_v2"):
        raise ValueError(f"{folder}: the manifest names no stored skeleton (source.skeleton.joint_set); "
                         f"`labels: skeleton` is for folders written by `python -m training.datasets.convert`")
    return SkeletonView(str(source.get("dataset", "real")), joint_set_name, 1.0, 0.0, (0.0, 0.0, 0.0), 0.0)


SKELETON_LABELS = (*SKELETON_VIEWS, "skeleton")
"""Source labels that expose a skeleton: the synthetic views, and 'skeleton' (a converted real dataset's own)."""


def read_skeleton_source(folder: str | Path, labels: str, select: Sequence[float] = (0.0, 1.0)
                         ) -> tuple[dict[str, np.ndarray], SkeletonView, np.ndarray]:
    """(`_read_folder` arrays, the view, skeletons (N, J, 3) in the view's units) of a folder seen with
    skeleton `labels` (one of SKELETON_LABELS): stored skeletons for 'skeleton', else the synthetic view
    made from the SMPL joints (with the per-sample tracker noise)."""
    folder = Path(folder)
    if labels == "skeleton":
        a = _read_folder(folder, select, ("skeleton",))
        return a, stored_skeleton_view(folder), a["skeleton"].astype(np.float64)
    view = skeleton_view(labels)
    a = _read_folder(folder, select)
    return a, view, view.from_smpl(a["joints3d"], seeds=a["index"])


def skeleton_view(name: str) -> SkeletonView:
    if name not in SKELETON_VIEWS:
        raise ValueError(f"unknown skeleton view {name!r}; expected one of {sorted(SKELETON_VIEWS)}")
    return SKELETON_VIEWS[name]


# ------------------------------------------------------------------------------------ sources
@dataclass
class SourceArrays:
    """One source, loaded into memory (N samples of crop side S0; see the module docstring for units).

    rgb (N,S0,S0,3) uint8; depth_mm (N,S0,S0) uint16 (None for RGB-only); ref_depth (N,) m;
    lsp2d (N,14,2) crop px; lsp_vis (N,14); theta (N,72) / betas (N,10) SMPL targets, has_smpl (N,),
    has_global (N,); skel24 (N,24,3) m + skel24_mask (24,) + canon (N,15,3) m (skeleton views only);
    lsp3d (N,14,3), joints3d (N,24,3) ground truth; index (N,).
    """

    name: str
    kind: str
    rgb: np.ndarray
    depth_mm: np.ndarray | None
    ref_depth: np.ndarray
    lsp2d: np.ndarray
    lsp_vis: np.ndarray
    theta: np.ndarray
    betas: np.ndarray
    has_smpl: np.ndarray
    has_global: np.ndarray
    skel24: np.ndarray | None
    skel24_mask: np.ndarray
    canon: np.ndarray | None
    lsp3d: np.ndarray
    joints3d: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return int(self.index.shape[0])

    @property
    def size(self) -> int:
        return int(self.rgb.shape[1])


def _read_folder(folder: Path, select: Sequence[float], extra: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The training arrays of samples [select[0], select[1]) of a shard folder; `extra`: more arrays."""
    from training.synth.shards import SynthShards

    shards = SynthShards(folder)
    n = len(shards)
    start, stop = int(math.floor(select[0] * n)), int(math.floor(select[1] * n))
    if stop <= start:
        raise ValueError(f"{folder}: select {list(select)} leaves no sample of {n}")
    keep = ("rgb", "depth_mm", "mask", "betas", "theta", "joints3d", "lsp3d", "lsp2d", "lsp_vis", "index", *extra)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keep}
    first = 0
    for k, entry in enumerate(shards.shards):
        lo, hi = max(start, first), min(stop, first + entry.count)
        if lo < hi:
            arrays = shards.shard(k)
            absent = [name for name in extra if name not in arrays]
            if absent:
                raise ValueError(f"{folder}: {entry.file} has no {absent} arrays; `labels: skeleton` reads the "
                                 f"skeletons stored by `python -m training.datasets.convert` (synthetic folders: "
                                 f"use kinect_v1_like / kinect_v2_like)")
            for name in keep:
                parts[name].append(arrays[name][lo - first:hi - first])
        first += entry.count
    return {k: np.concatenate(v) for k, v in parts.items()}


def _ref_depths(depth_mm: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = np.zeros(depth_mm.shape[0], dtype=np.float32)
    for i in range(depth_mm.shape[0]):
        d = depth_mm[i].astype(np.float32) / 1000.0
        m = mask[i] & (d > 0)
        try:
            out[i] = reference_depth(d, m if m.any() else None)
        except ValueError:
            out[i] = 0.0  # no valid depth at all: the depth input is all zeros anyway
    return out


def load_uscg_labels(path: str | Path, index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """USCG pseudo labels for the samples `index` (N,): theta (N,72), betas (N,10), accepted (N,) bool.

    The file is `python -m training.uscg generate`'s npz (index, theta, betas, accepted, err_mm).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"USCG label file not found: {path}")
    with np.load(path, allow_pickle=False) as z:
        missing = {"index", "theta", "betas", "accepted"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: not a USCG label file (missing {sorted(missing)})")
        lab = {k: z[k] for k in ("index", "theta", "betas", "accepted")}
    pos = {int(i): k for k, i in enumerate(lab["index"])}
    lost = [int(i) for i in index if int(i) not in pos]
    if lost:
        raise ValueError(f"{path}: no label for {len(lost)} of {len(index)} samples (first index {lost[0]}); "
                         f"generate labels for this folder/selection")
    rows = np.array([pos[int(i)] for i in index])
    return lab["theta"][rows], lab["betas"][rows], lab["accepted"][rows].astype(bool)


def load_source(src: Any, name: str = "") -> SourceArrays:
    """Load one `training.config.SourceConfig` into memory."""
    folder = Path(src.path)
    if src.labels in SKELETON_LABELS:
        a, view, skel = read_skeleton_source(folder, src.labels, src.select)
    else:
        a = _read_folder(folder, src.select)
    n = a["index"].shape[0]
    rgbd = src.kind == "rgbd"
    skel24 = canon = None
    skel_mask = np.zeros(24, dtype=bool)
    theta = a["theta"].astype(np.float32)
    betas = a["betas"].astype(np.float32)
    has_smpl = np.ones(n, dtype=bool)
    has_global = np.ones(n, dtype=bool)
    if src.labels in SKELETON_LABELS:
        t24, skel_mask = view.smpl_targets(skel)
        skel24, canon = t24.astype(np.float32), view.canonical(skel).astype(np.float32)
        if src.smpl_labels:
            theta, betas, has_smpl = load_uscg_labels(src.smpl_labels, a["index"])
            theta, betas = theta.astype(np.float32), betas.astype(np.float32)
        else:
            theta, betas, has_smpl = np.zeros_like(theta), np.zeros_like(betas), np.zeros(n, dtype=bool)
        has_global = np.zeros(n, dtype=bool)  # pseudo labels live in the dataset's frame, not the camera's
    elif src.labels == "none":
        has_smpl = np.zeros(n, dtype=bool)
        has_global = has_smpl.copy()
    return SourceArrays(
        name=name or folder.name, kind=src.kind, rgb=a["rgb"], depth_mm=a["depth_mm"] if rgbd else None,
        ref_depth=_ref_depths(a["depth_mm"], a["mask"]) if rgbd else np.zeros(n, dtype=np.float32),
        lsp2d=a["lsp2d"].astype(np.float32), lsp_vis=a["lsp_vis"].astype(bool), theta=theta, betas=betas,
        has_smpl=has_smpl, has_global=has_global, skel24=skel24, skel24_mask=skel_mask, canon=canon,
        lsp3d=a["lsp3d"].astype(np.float32), joints3d=a["joints3d"].astype(np.float32),
        index=a["index"].astype(np.int64),
    )


# ------------------------------------------------------------------------------------ dataset
def _aa_to_rotmat(theta: np.ndarray) -> np.ndarray:
    return Rotation.from_rotvec(np.asarray(theta, dtype=np.float64).reshape(-1, 3)).as_matrix().astype(np.float32)


class TrainingData(Dataset):
    """All sources concatenated; `pools` groups global indices by kind: pools[0] RGB-D, pools[1] RGB-only.

    Items are addressed as `ds[(i, step)]` (or `ds[i]`, step 0): the pair seeds the augmentation.
    input_size: the model's crop side (shards of another size are resized); flip_prob, color_jitter:
    augmentation (0 = off, e.g. for evaluation); seed: the run's seed.
    """

    def __init__(self, sources: Sequence[SourceArrays], input_size: int, flip_prob: float = 0.0,
                 color_jitter: float = 0.0, seed: int = 0) -> None:
        if not sources:
            raise ValueError("no training sources: add entries to data.sources")
        self.sources = list(sources)
        self.input_size = int(input_size)
        self.flip_prob, self.color_jitter, self.seed = float(flip_prob), float(color_jitter), int(seed)
        self._starts = np.cumsum([0] + [len(s) for s in self.sources])
        kinds = np.concatenate([np.full(len(s), s.kind == "rgb") for s in self.sources])
        self.pools: list[np.ndarray] = [np.flatnonzero(~kinds), np.flatnonzero(kinds)]

    @classmethod
    def from_config(cls, data_cfg: Any, input_size: int, seed: int = 0, augment: bool = True) -> "TrainingData":
        sources = [load_source(s, name=f"{i}:{Path(s.path).name}:{s.labels}") for i, s in enumerate(data_cfg.sources)]
        return cls(sources, input_size, data_cfg.flip_prob if augment else 0.0,
                   data_cfg.color_jitter if augment else 0.0, seed)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """Global index -> (source number, row in that source)."""
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        k = int(np.searchsorted(self._starts, i, side="right") - 1)
        return k, i - int(self._starts[k])

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, np.ndarray]:
        i, step = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (int(key), 0)
        k, r = self.locate(i)
        src = self.sources[k]
        rng = np.random.default_rng([self.seed, step, i, 104729])
        s0, s = src.size, self.input_size
        rgb = src.rgb[r]
        depth = (src.depth_mm[r].astype(np.float32) / 1000.0) if src.depth_mm is not None else None
        kp = src.lsp2d[r].astype(np.float64)
        if s0 != s:
            rgb, depth, kp = _resize(rgb, depth, kp, s)
        finite = np.all(np.isfinite(kp), axis=-1)  # the renderer writes NaN where a projection is invalid
        kp = np.where(finite[:, None], kp, 0.0)
        vis = src.lsp_vis[r] & finite & np.all((kp >= -0.5) & (kp <= s - 0.5), axis=-1)
        theta, betas = src.theta[r], src.betas[r]
        lsp3d, joints3d = src.lsp3d[r], src.joints3d[r]
        skel24 = src.skel24[r] if src.skel24 is not None else np.zeros((24, 3), np.float32)
        skel_mask = src.skel24_mask
        canon = src.canon[r] if src.canon is not None else np.zeros((15, 3), np.float32)

        flip = self.flip_prob > 0 and rng.random() < self.flip_prob
        if flip:
            rgb, kp, vis = rgb[:, ::-1], kp[LSP_FLIP], vis[LSP_FLIP]
            kp = kp.copy()
            kp[:, 0] = (s - 1) - kp[:, 0]
            if depth is not None:
                depth = depth[:, ::-1]
            theta = flip_smpl_pose(theta).astype(np.float32)
            mirror = np.array([-1.0, 1.0, 1.0], dtype=np.float32)
            lsp3d, joints3d = lsp3d[LSP_FLIP] * mirror, joints3d[SMPL_FLIP] * mirror
            skel24, skel_mask = skel24[SMPL_FLIP] * mirror, skel_mask[SMPL_FLIP]
            canon = canon[CANONICAL_FLIP] * mirror
        rgb = np.ascontiguousarray(rgb)
        if self.color_jitter > 0:
            c = self.color_jitter
            gain = rng.uniform(1 - c, 1 + c)
            contrast = rng.uniform(1 - c, 1 + c)
            x = rgb.astype(np.float32) * gain
            x = (x - x.mean()) * contrast + x.mean()
            rgb = np.clip(x + 0.5, 0, 255).astype(np.uint8)
        has_depth = depth is not None
        if depth is None:
            depth = np.zeros((s, s), np.float32)
        return {
            "rgb": np.ascontiguousarray(rgb.transpose(2, 0, 1)),
            "depth": np.ascontiguousarray(depth, dtype=np.float32)[None],
            "ref_depth": np.float32(src.ref_depth[r] if has_depth else 0.0),
            "has_depth": np.bool_(has_depth),
            "kp2d": (kp / s * 2.0 - 1.0).astype(np.float32),
            "vis2d": vis.astype(bool),
            "smpl_rotmat": _aa_to_rotmat(theta).reshape(24, 3, 3),
            "smpl_betas": np.asarray(betas, np.float32),
            "has_smpl": np.bool_(src.has_smpl[r]),
            "has_global": np.bool_(src.has_global[r]),
            "skel24": np.asarray(skel24, np.float32),
            "skel24_mask": np.asarray(skel_mask, bool),
            "has_skel": np.bool_(src.skel24 is not None),
            "canon": np.asarray(canon, np.float32),
            "has_canon": np.bool_(src.canon is not None),
            "lsp3d": np.asarray(lsp3d, np.float32),
            "joints3d": np.asarray(joints3d, np.float32),
            "source": np.int64(k),
            "index": np.int64(src.index[r]),
        }


def _resize(rgb: np.ndarray, depth: np.ndarray | None, kp: np.ndarray, s: int) -> tuple:
    import cv2

    s0 = rgb.shape[0]
    interp = cv2.INTER_AREA if s < s0 else cv2.INTER_LINEAR
    rgb = cv2.resize(rgb, (s, s), interpolation=interp)
    if depth is not None:
        depth = cv2.resize(depth, (s, s), interpolation=cv2.INTER_NEAREST)
    return rgb, depth, (kp + 0.5) * (s / s0) - 0.5


def collate(items: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack item dicts into a batch of tensors."""
    return {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}


# ------------------------------------------------------------------------------------ batches
class MixedBatchSampler:
    """Batches mixing the RGB-D pool and the RGB-only pool in fixed proportions, split over DDP ranks.

    pools: [rgbd global indices, rgb-only global indices] (either may be empty); batch_size: the global
    batch; rgb_fraction: share of RGB-only samples (paper: 0.5) when both pools are non-empty. Each
    rank gets batch_size / world samples per step, round(that * rgb_fraction) of them RGB-only. Per
    pool, a `torch.utils.data.DistributedSampler` (shuffled, seeded, `set_epoch` per epoch) gives this
    rank's disjoint share; an epoch ends when the first pool runs out.
    """

    def __init__(self, pools: Sequence[np.ndarray], batch_size: int, rgb_fraction: float = 0.5, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if batch_size % world_size:
            raise ValueError(f"data.batch_size {batch_size} is not divisible by the {world_size} ranks")
        per_rank = batch_size // world_size
        nonempty = [len(p) > 0 for p in pools]
        if not any(nonempty):
            raise ValueError("no samples in any pool")
        if all(nonempty):
            n_rgb = int(round(per_rank * rgb_fraction))
            counts = [per_rank - n_rgb, n_rgb]
        else:
            counts = [per_rank if ne else 0 for ne in nonempty]
        self.pools = [np.asarray(p, dtype=np.int64) for p in pools]
        self.counts = counts
        self.per_rank, self.seed, self.rank, self.world = per_rank, int(seed), int(rank), int(world_size)
        self._samplers = [DistributedSampler(range(len(p)), num_replicas=world_size, rank=rank, shuffle=True,
                                             seed=seed, drop_last=False) if c > 0 else None
                          for p, c in zip(self.pools, counts)]
        lens = [len(s) // c for s, c in zip(self._samplers, counts) if c > 0]
        self.batches_per_epoch = min(lens)
        if self.batches_per_epoch < 1:
            small = [i for i, (s, c) in enumerate(zip(self._samplers, counts)) if c > 0 and len(s) < c]
            raise ValueError(f"pool {small} has fewer samples per rank than its share of a batch ({counts}); "
                             f"add data or lower data.batch_size")

    def epoch(self, epoch: int) -> list[list[int]]:
        """All of this rank's batches of one epoch (global indices)."""
        parts = []
        for pool, sampler, c in zip(self.pools, self._samplers, self.counts):
            if c == 0:
                parts.append(None)
                continue
            sampler.set_epoch(epoch)
            order = pool[np.fromiter(iter(sampler), dtype=np.int64)]
            parts.append(order)
        out = []
        for b in range(self.batches_per_epoch):
            batch: list[int] = []
            for order, c in zip(parts, self.counts):
                if c:
                    batch.extend(int(x) for x in order[b * c:(b + 1) * c])
            out.append(batch)
        return out

    def batch(self, step: int) -> list[int]:
        """This rank's batch at global step `step` (0-based)."""
        return self.epoch(step // self.batches_per_epoch)[step % self.batches_per_epoch]

    def steps(self, start: int, stop: int) -> "StepBatches":
        """Batch sampler for a DataLoader: steps start..stop-1, items as (index, step) pairs."""
        return StepBatches(self, start, stop)


class StepBatches:
    """Iterable of batches [(index, step), ...] for steps [start, stop) (resumable at any step)."""

    def __init__(self, sampler: MixedBatchSampler, start: int, stop: int) -> None:
        self.sampler, self.start, self.stop = sampler, int(start), int(stop)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        cached_epoch, batches = -1, []
        bpe = self.sampler.batches_per_epoch
        for step in range(self.start, self.stop):
            e = step // bpe
            if e != cached_epoch:
                batches, cached_epoch = self.sampler.epoch(e), e
            yield [(i, step) for i in batches[step % bpe]]


# ------------------------------------------------------------------------------------ procedural shards
_BONE_COLORS = {  # subject's left side warm, right side cool, trunk grey: flips are visible
    "left": (230, 120, 40), "right": (40, 140, 230), "centre": (150, 150, 150),
}


def _side(name: str) -> str:
    return "left" if name.startswith("left") else "right" if name.startswith("right") else "centre"


def write_procedural_shards(folder: str | Path, n: int, size: int = 64, body: Any = None, seed: int = 0,
                            shard_size: int = 64, distance_m: tuple[float, float] = (2.5, 3.5)) -> dict:
    """Write `n` stick-figure samples in the shard format (training/synth/shards.py) + manifest.json.

    No rendering engine: a body (model.body.BodyModel; the default asset if None) is posed with the synth
    pose sampler, faces the camera (yaw +-60 deg) at `distance_m`, and its bones are drawn as thick
    lines into a depth map (mm, painter's order, wall at 4.5 m) and an RGB crop (left limbs orange,
    right limbs blue). Labels are exact (all joints visible). Returns the manifest.
    """
    import cv2

    from app.crop import box_around
    from model.body import DEFAULT_BODY_PATH, BodyModel
    from training.synth.poses import sample_body_poses
    from training.synth.shards import FORMAT, SHARD_ARRAYS, VERSION, write_shard

    if body is None:
        body = BodyModel.from_file(DEFAULT_BODY_PATH)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    body_pose = sample_body_poses(n, rng)
    yaw = rng.uniform(-np.pi / 3, np.pi / 3, n)
    orient = (Rotation.from_euler("x", np.pi) * Rotation.from_euler("y", yaw[:, None])).as_rotvec()
    theta = body_pose.copy()
    theta[:, :3] = orient
    betas = np.clip(rng.normal(0, 1.0, (n, 10)), -2.5, 2.5)
    transl = np.stack([rng.uniform(-0.3, 0.3, n), rng.uniform(-0.2, 0.2, n), rng.uniform(*distance_m, n)], 1)
    with torch.no_grad():
        t = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
        out = body(betas=t(betas), body_pose=t(theta[:, 3:]), global_orient=t(theta[:, :3]), transl=t(transl))
    joints, lsp = out.joints.numpy().astype(np.float64), out.lsp_joints.numpy().astype(np.float64)
    f, cx, cy = 504.0, 320.0, 288.0
    K = np.array([[f, 0, cx], [0, f, cy], [0, 0, 1]], dtype=np.float32)

    def project(p: np.ndarray) -> np.ndarray:
        return np.stack([f * p[..., 0] / p[..., 2] + cx, f * p[..., 1] / p[..., 2] + cy], -1)

    arrays: dict[str, list] = {k: [] for k in SHARD_ARRAYS}
    for i in range(n):
        uv, uv_lsp = project(joints[i]), project(lsp[i])
        allp = np.concatenate([uv, uv_lsp])
        box = box_around((*allp.min(0) - 4, *allp.max(0) + 4), size, margin=1.25)
        c24, c14 = box.source_to_crop(uv), box.source_to_crop(uv_lsp)
        depth = np.full((size, size), 4500, np.uint16)
        rgb = np.empty((size, size, 3), np.uint8)
        rgb[:] = rng.integers(30, 90, 3)
        mask = np.zeros((size, size), np.uint8)
        bones = [(c, p) for c, p in enumerate(body.parents) if p >= 0]
        zs = [0.5 * (joints[i, c, 2] + joints[i, p, 2]) for c, p in bones]
        for (c, p), z in sorted(zip(bones, zs), key=lambda x: -x[1]):
            width = max(1, int(round(0.09 * f / z * box.scale)))
            a = tuple(int(round(v)) for v in c24[p])
            b = tuple(int(round(v)) for v in c24[c])
            cv2.line(depth, a, b, int(z * 1000), width)
            cv2.line(rgb, a, b, _BONE_COLORS[_side(SMPL_JOINT_NAMES[c])], width)
            cv2.line(mask, a, b, 1, width)
        head = tuple(int(round(v)) for v in c14[13])
        cv2.circle(depth, head, max(1, int(0.06 * f / joints[i, 15, 2] * box.scale)), int(joints[i, 15, 2] * 1000), -1)
        inside = lambda c: np.all((c >= -0.5) & (c <= size - 0.5), axis=-1)  # noqa: E731
        sample = {
            "rgb": rgb, "depth_mm": depth, "mask": mask.astype(bool), "betas": betas[i], "theta": theta[i],
            "transl": transl[i], "joints3d": joints[i], "lsp3d": lsp[i], "joints2d": c24, "lsp2d": c14,
            "joints_vis": inside(c24), "lsp_vis": inside(c14),
            "crop_box": np.array([box.x0, box.y0, box.side, size]), "bbox": np.array([*allp.min(0), *allp.max(0)]),
            "K": K, "dist": np.zeros(8), "index": i, "depth_mode": 2, "color_resolution": 1,
        }
        for k in SHARD_ARRAYS:
            arrays[k].append(np.asarray(sample[k]))
    shards = []
    for s0 in range(0, n, shard_size):
        name = f"shard-{len(shards):05d}.npz"
        chunk = {k: np.stack(v[s0:s0 + shard_size]).astype(SHARD_ARRAYS[k][0]) for k, v in arrays.items()}
        sha = write_shard(folder / name, chunk)
        shards.append({"file": name, "count": int(chunk["index"].shape[0]), "first_index": s0, "sha256": sha})
    manifest = {"format": FORMAT, "version": VERSION, "seed": int(seed), "generator": "procedural",
                "out_size": int(size), "shard_size": int(shard_size),
                "counts": {"samples": int(n), "shards": len(shards)},
                "body": {"model_id": getattr(body, "model_id", ""), "sha256": getattr(body, "sha256", "")},
                "shards": shards}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def folder_digest(folder: str | Path) -> str:
    """sha256 over a shard folder's manifest (identifies a data set in run summaries)."""
    return hashlib.sha256((Path(folder) / "manifest.json").read_bytes()).hexdigest()[:16]
