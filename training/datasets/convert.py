"""Real RGB-D datasets -> training shards, so `training.train`, `training.evaluate` and `training.uscg`
read them exactly like the synthetic folders (`training/synth/shards.py` layout).

    python -m training.datasets.convert cad60 --root /data/CAD-60 --out data/cad60 --size 128 --every 3 \
        --sheet data/cad60/sheet.png          # look at the first 8 samples (color, depth, keypoints, mask)

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
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from training.datasets.joint_sets import (FRAME_KINECT, DatasetFormatError, joint_set, kinect_to_opencv,
                                          smpl_correspondence)

__all__ = ["RealFrame", "ConvertConfig", "lsp_from_skeleton", "person_mask", "frame_to_arrays",
           "cad60_frames", "convert_frames", "convert_cad60", "write_sheet", "REAL_ARRAYS"]

# arrays a converted shard holds besides `training.synth.shards.SHARD_ARRAYS`
REAL_ARRAYS = ("skeleton", "skeleton_conf", "sequence", "frame_id")


@dataclass
class RealFrame:
    """One frame of a real RGB-D dataset, ready to crop.

    rgb (H, W, 3) uint8 RGB; depth_m (H, W) float32 metres on the same pixel grid (0 = no reading);
    K (3, 3) pinhole of that grid (OpenCV: pixel centres at integers); skeleton (J, 3) metres in the
    dataset's frame; joints_cv (J, 3) the same joints in the camera frame with OpenCV axes; conf (J,)
    tracker confidence (> 0 = tracked); joint_set: 'kinect_v1' or 'kinect_v2'; sequence, frame_id: ids.
    """

    rgb: np.ndarray
    depth_m: np.ndarray
    K: np.ndarray
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


def lsp_from_skeleton(joint_set_name: str) -> tuple[np.ndarray, np.ndarray]:
    """(LSP joint indices (K,), skeleton joint indices (K,)): the LSP joints that share an SMPL partner
    with a joint of `joint_set_name`, and that joint. LSP's head_top never has one."""
    lsp_partner = joint_set("lsp").smpl_index
    src, dst, _ = smpl_correspondence(joint_set_name)
    by_smpl = {int(d): int(s) for s, d in zip(src, dst)}
    pairs = [(k, by_smpl[int(p)]) for k, p in enumerate(lsp_partner) if p >= 0 and int(p) in by_smpl]
    return np.array([k for k, _ in pairs], np.int64), np.array([s for _, s in pairs], np.int64)


def _project(K: np.ndarray, pts: np.ndarray) -> np.ndarray:
    z = np.where(pts[:, 2] > 1e-6, pts[:, 2], np.nan)
    return np.stack([K[0, 0] * pts[:, 0] / z + K[0, 2], K[1, 1] * pts[:, 1] / z + K[1, 2]], axis=-1)


def person_mask(depth_m: np.ndarray, uv: np.ndarray, z: np.ndarray, K: np.ndarray, band_m: float) -> np.ndarray:
    """(H, W) bool: valid depth pixels inside the tracked joints' box (widened by 0.2 m at the person's
    depth, 0.25 m above for the head) whose depth lies within `band_m` of the joints' depth range.
    uv (J, 2) px and z (J,) m of the tracked joints."""
    h, w = depth_m.shape
    zc = float(np.median(z))
    pad_x, pad_y = 0.2 * K[0, 0] / zc, 0.2 * K[1, 1] / zc
    x0 = int(max(0, np.floor(uv[:, 0].min() - pad_x)))
    x1 = int(min(w, np.ceil(uv[:, 0].max() + pad_x) + 1))
    y0 = int(max(0, np.floor(uv[:, 1].min() - 1.25 * pad_y)))
    y1 = int(min(h, np.ceil(uv[:, 1].max() + 0.5 * pad_y) + 1))
    mask = np.zeros((h, w), bool)
    if x1 > x0 and y1 > y0:
        d = depth_m[y0:y1, x0:x1]
        mask[y0:y1, x0:x1] = (d > 0) & (d >= z.min() - band_m) & (d <= z.max() + band_m)
    return mask


def frame_to_arrays(frame: RealFrame, cfg: ConvertConfig) -> tuple[dict[str, np.ndarray] | None, str]:
    """One frame -> (the shard arrays of one sample (no `index`), '') or (None, why it was skipped)."""
    from app.crop import box_around, crop_color, crop_depth, crop_mask

    h, w = frame.depth_m.shape
    S = cfg.out_size
    uv_all = _project(frame.K, frame.joints_cv)
    inside = np.all(np.isfinite(uv_all), axis=1) & (uv_all[:, 0] >= -0.5) & (uv_all[:, 0] <= w - 0.5) \
        & (uv_all[:, 1] >= -0.5) & (uv_all[:, 1] <= h - 0.5)
    tracked = (frame.conf > 0) & (frame.joints_cv[:, 2] > 0.1) & inside
    if int(tracked.sum()) < cfg.min_joints:
        return None, "too few tracked joints in the image"
    uv, z = uv_all[tracked], frame.joints_cv[tracked, 2]
    mask = person_mask(frame.depth_m, uv, z, frame.K, cfg.depth_band_m)
    lo, hi = uv.min(axis=0), uv.max(axis=0)
    if mask.any():
        ys, xs = np.nonzero(mask)
        lo = np.minimum(lo, [xs.min() - 0.5, ys.min() - 0.5])
        hi = np.maximum(hi, [xs.max() + 0.5, ys.max() + 0.5])
    if not np.all(hi > lo):
        return None, "empty person box"
    bbox = np.array([*lo, *hi], np.float32)
    box = box_around(bbox, S, cfg.crop_margin)
    depth_mm = np.clip(np.rint(frame.depth_m * 1000.0), 0, 65535).astype(np.uint16)
    lsp_idx, sk_idx = lsp_from_skeleton(frame.joint_set)
    lsp2d = np.full((14, 2), np.nan, np.float32)
    lsp2d[lsp_idx] = box.source_to_crop(uv_all[sk_idx])
    vis = np.zeros(14, bool)
    in_crop = np.all((lsp2d[lsp_idx] >= -0.5) & (lsp2d[lsp_idx] <= S - 0.5), axis=1)
    vis[lsp_idx] = tracked[sk_idx] & in_crop
    nan3 = np.full(3, np.nan, np.float32)
    return {
        "rgb": crop_color(frame.rgb, box), "depth_mm": crop_depth(depth_mm, box), "mask": crop_mask(mask, box),
        "betas": np.zeros(10, np.float32), "theta": np.zeros(72, np.float32), "transl": nan3,
        "joints3d": np.full((24, 3), np.nan, np.float32), "lsp3d": np.full((14, 3), np.nan, np.float32),
        "joints2d": np.full((24, 2), np.nan, np.float32), "lsp2d": lsp2d,
        "joints_vis": np.zeros(24, bool), "lsp_vis": vis,
        "crop_box": np.array([box.x0, box.y0, box.side, S], np.float32), "bbox": bbox,
        "K": frame.K.astype(np.float32), "dist": np.zeros(8, np.float32),
        "depth_mode": np.int8(0), "color_resolution": np.int8(0),
        "skeleton": frame.skeleton.astype(np.float32), "skeleton_conf": frame.conf.astype(np.float32),
        "sequence": np.int64(frame.sequence), "frame_id": np.int64(frame.frame_id),
    }, ""


# ------------------------------------------------------------------------------------------------ CAD-60
def cad60_intrinsics(width: int, height: int) -> np.ndarray:
    """(3, 3) pinhole of a CAD-60 image of width x height after un-mirroring (see the module docstring)."""
    from training.datasets.cad60 import OPENNI_X_TO_Z, OPENNI_Y_TO_Z

    return np.array([[width / OPENNI_X_TO_Z, 0.0, width / 2 - 0.5],
                     [0.0, height / OPENNI_Y_TO_Z, height / 2 - 0.5], [0.0, 0.0, 1.0]])


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
            yield RealFrame(rgb=np.ascontiguousarray(rgb[:, ::-1]), depth_m=np.ascontiguousarray(depth[:, ::-1]),
                            K=cad60_intrinsics(w, h), skeleton=skeleton, joints_cv=kinect_to_opencv(skeleton),
                            conf=conf, joint_set="kinect_v1", sequence=int(skel_path.stem),
                            frame_id=int(frame_ids[t]))


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


def convert_frames(frames: Iterator[RealFrame], out: str | Path, cfg: ConvertConfig, source: dict,
                   stats: dict | None = None, progress: bool = True) -> dict:
    """Crop and label `frames` into the shard folder `out` (replaces the shards of an earlier
    conversion there); returns the manifest. `source`: what to record about the dataset."""
    from training.synth.shards import FORMAT, MANIFEST, SHARD_ARRAYS, VERSION

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("shard-*.npz"):
        old.unlink()
    (out / MANIFEST).unlink(missing_ok=True)
    stats = {} if stats is None else stats
    writer = _Writer(out, cfg.shard_size)
    set_name = None
    bar = _progress(progress)
    try:
        for frame in frames:
            if set_name is None:
                set_name = frame.joint_set
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
        "source": {**source, "skeleton": {"joint_set": set_name, "frame": FRAME_KINECT, "units": "m"},
                   "convert": {"crop_margin": cfg.crop_margin, "every": cfg.every, "depth_band_m": cfg.depth_band_m,
                               "min_joints": cfg.min_joints}},
        "counts": {"samples": writer.count, "shards": len(writer.shards),
                   "skipped": dict(sorted(stats.items()))},
        "arrays": {**arrays_meta, "skeleton": {"dtype": "float32", "shape": ["N", "J", 3]},
                   "skeleton_conf": {"dtype": "float32", "shape": ["N", "J"]},
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


def _progress(enabled: bool):
    class _Quiet:
        def update(self, n: int) -> None:
            pass

        def close(self) -> None:
            pass

    if not enabled:
        return _Quiet()
    from tqdm import tqdm

    return tqdm(unit="frame", desc="convert")


def convert_cad60(root: str | Path, out: str | Path, cfg: ConvertConfig = ConvertConfig(),
                  progress: bool = True) -> dict:
    """CAD-60 folder -> shard folder (see the module docstring); returns the manifest."""
    stats: dict = {}
    frames = cad60_frames(root, cfg.every, stats)
    return convert_frames(frames, out, cfg, {"dataset": "cad60", "root": str(root), "mirrored_input": True,
                                             "registration": "OpenNI (depth resized to the RGB grid)"},
                          stats, progress)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.datasets.convert", description=__doc__.split("\n\n")[0],
                                epilog="Then train with `{path: OUT, kind: rgbd, labels: skeleton, smpl_labels: "
                                       "USCG.npz}` and evaluate with `--test NAME=OUT:skeleton`.")
    p.add_argument("dataset", choices=["cad60"], help="which dataset layout ROOT holds")
    p.add_argument("--root", required=True, help="the dataset folder (CAD-60: the one holding data1/ .. data4/)")
    p.add_argument("--out", required=True, help="output shard folder")
    p.add_argument("--size", type=int, default=ConvertConfig.out_size, help="crop side in px (default %(default)s)")
    p.add_argument("--every", type=int, default=1, help="keep every n-th frame (default %(default)s)")
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many samples (0 = all)")
    p.add_argument("--sheet", default="", help="also draw the first 8 samples into this PNG")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        cfg = ConvertConfig(out_size=args.size, every=args.every, max_frames=args.max_frames)
        m = convert_cad60(args.root, args.out, cfg, progress=not args.no_progress)
        if args.sheet:
            write_sheet(args.out, args.sheet)
    except (FileNotFoundError, ValueError, DatasetFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    c = m["counts"]
    print(f"wrote {c['samples']} samples in {c['shards']} shards to {args.out}"
          + (f" (skipped: {c['skipped']})" if c["skipped"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
