"""Sharded synthetic training sets: deterministic parallel generation, .npz shards, manifest, reader.

Layout of a data set folder:

    manifest.json             format, seed, config, counts, body model id/hash, calibration, shard list
    shard-00000.npz ...       `shard_size` samples each (the last may be shorter), arrays below

Shard arrays (N samples, S = config.out_size; camera frame = the depth camera's, OpenCV axes, metres):
    rgb (N,S,S,3) uint8 R,G,B (color aligned to the depth grid, then cropped)   depth_mm (N,S,S) uint16
    mask (N,S,S) bool          betas (N,10)        theta (N,72) axis-angle, global orient in camera frame
    transl (N,3)               joints3d (N,24,3)   lsp3d (N,14,3)
    joints2d (N,24,2), lsp2d (N,14,2) crop pixels; joints_vis (N,24), lsp_vis (N,14) bool
    crop_box (N,4) x0, y0, side, out_size in depth px     bbox (N,4) visible-person box, depth px edges
    K (N,3,3), dist (N,8) depth camera (OpenCV)           index (N,) int64 sample index in the set
    depth_mode (N,) int8, color_resolution (N,) int8: k4a enum values (1 = NFOV_2X2BINNED / 720P, ...)

Determinism: sample i is a pure function of (seed, i, config, body file, calibration file), bodies are
posed in fixed chunks of `sample.CHUNK` indices, and every process runs torch and OpenCV with one thread
(the compiled renderer is single-threaded); shards are written with fixed zip timestamps (`training.synth.npz`;
the bytes depend on its deflate library, isal or zlib). So the same seed gives byte-identical shards,
whatever the worker count (the manifest records each shard's sha256).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from training.synth.npz import write_npz
from training.synth.sample import CHUNK, Sample, SynthConfig, config_from_dict, config_to_dict, load_rig

__all__ = [
    "FORMAT", "VERSION", "SHARD_ARRAYS", "ShardError", "samples_to_arrays", "write_shard", "read_shard",
    "make_shards", "SynthShards", "generate_chunk", "benchmark", "write_contact_sheet",
]

FORMAT = "fusemesh.synth_shards"
VERSION = 1
MANIFEST = "manifest.json"

# k4a enum values, as stored in the shards
_DEPTH_MODE_IDS = {"NFOV_2X2BINNED": 1, "NFOV_UNBINNED": 2, "WFOV_2X2BINNED": 3, "WFOV_UNBINNED": 4}
_COLOR_RES_IDS = {"720P": 1, "1080P": 2, "1440P": 3, "1536P": 4, "2160P": 5, "3072P": 6}

# name -> (dtype, per-sample shape; "S" = out_size)
SHARD_ARRAYS: dict[str, tuple[str, tuple]] = {
    "rgb": ("uint8", ("S", "S", 3)), "depth_mm": ("uint16", ("S", "S")), "mask": ("bool", ("S", "S")),
    "betas": ("float32", (10,)), "theta": ("float32", (72,)), "transl": ("float32", (3,)),
    "joints3d": ("float32", (24, 3)), "lsp3d": ("float32", (14, 3)), "joints2d": ("float32", (24, 2)),
    "lsp2d": ("float32", (14, 2)), "joints_vis": ("bool", (24,)), "lsp_vis": ("bool", (14,)),
    "crop_box": ("float32", (4,)), "bbox": ("float32", (4,)), "K": ("float32", (3, 3)), "dist": ("float32", (8,)),
    "index": ("int64", ()), "depth_mode": ("int8", ()), "color_resolution": ("int8", ()),
}


class ShardError(ValueError):
    """A data set folder, manifest or shard is missing, inconsistent or malformed (message names it)."""


# ------------------------------------------------------------------------------------------ shard files
def samples_to_arrays(samples: Sequence[Sample]) -> dict[str, np.ndarray]:
    """Stack samples into the shard arrays (see module docstring)."""
    if not samples:
        raise ShardError("a shard needs at least one sample")
    out: dict[str, np.ndarray] = {}
    for name, (dtype, _) in SHARD_ARRAYS.items():
        if name == "depth_mode":
            values = [_DEPTH_MODE_IDS[s.depth_mode] for s in samples]
        elif name == "color_resolution":
            values = [_COLOR_RES_IDS[s.color_resolution] for s in samples]
        else:
            values = [getattr(s, name) for s in samples]
        out[name] = np.ascontiguousarray(np.stack([np.asarray(v) for v in values]).astype(dtype, copy=False))
    return out


def write_shard(path: str | Path, arrays: dict[str, np.ndarray]) -> str:
    """Write arrays as an .npz (zip of .npy, deflate; `training.synth.npz`) with fixed timestamps; returns
    the file's sha256. A shard of 4 GiB or more is refused (ShardError: use a smaller shard_size)."""
    path = Path(path)
    try:
        write_npz(path, arrays)
    except ValueError as exc:
        raise ShardError(str(exc)) from None
    return _sha256(path)


def read_shard(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of one shard file (no pickles)."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"shard not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ShardError(f"{path}: not a readable shard ({exc})") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ generation
_ENGINE = None  # per-process engine (workers build theirs in `_init_worker`)


@contextlib.contextmanager
def _single_threaded() -> Iterator[None]:
    """torch and OpenCV with one thread (reproducible sums; workers must not oversubscribe the cores)."""
    import cv2
    import torch
    old_torch, old_cv = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old_torch)
        cv2.setNumThreads(old_cv)


def _build_engine(body_path: str, config_dict: dict) -> Any:
    """A single-threaded engine with every configured mode pair's ray tables and aligner built."""
    from model.body import BodyModel
    from training.synth.sample import SynthEngine
    engine = SynthEngine(BodyModel.from_file(body_path), config_from_dict(config_dict))
    engine.prewarm()
    return engine


def _init_worker(body_path: str, config_dict: dict) -> None:
    import cv2
    import torch
    global _ENGINE
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _ENGINE = _build_engine(body_path, config_dict)


def generate_chunk(task: tuple[int, Sequence[int]]) -> list[Sample]:
    """Worker entry: (seed, indices) -> samples, with the process's engine."""
    seed, indices = task
    if _ENGINE is None:
        raise RuntimeError("generate_chunk called in a process without an engine (_init_worker not run)")
    return _ENGINE.make_samples(seed, list(indices))


def _chunks(n: int) -> list[list[int]]:
    return [list(range(s, min(n, s + CHUNK))) for s in range(0, n, CHUNK)]


def make_shards(out_dir: str | Path, n: int, seed: int = 0, config: SynthConfig = SynthConfig(),
                body_path: str | Path | None = None, workers: int = 1, shard_size: int = 256,
                progress: bool = True, overwrite: bool = False, timing: Optional[dict] = None) -> dict:
    """Generate `n` samples into `out_dir` as shards + manifest.json; returns the manifest.

    workers: processes (spawned; 1 = in this process). Results do not depend on it. shard_size: samples
    per shard file. overwrite: replace an existing data set in `out_dir` (else an error).
    timing: optional dict that receives wall-clock marks (perf_counter s): start, first_chunk, last_chunk
    (when the first / last chunk of samples arrived), end.
    """
    import time
    marks = timing if timing is not None else {}
    marks["start"] = time.perf_counter()
    from model.body import DEFAULT_BODY_PATH, BodyModel

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ShardError(f"n must be a positive integer, got {n!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ShardError(f"workers must be a positive integer, got {workers!r}")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ShardError(f"shard_size must be a positive integer, got {shard_size!r}")
    body_path = Path(body_path) if body_path is not None else DEFAULT_BODY_PATH
    if not body_path.is_file():
        raise ShardError(f"body model file not found: {body_path} (pass --body; tests use tests/toy_body.py)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ShardError(f"output path exists and is not a folder: {out}")
    if (out / MANIFEST).exists() and not overwrite:
        raise ShardError(f"{out} already holds a data set (manifest.json); pass overwrite=True / --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for old in list(out.glob("shard-*.npz")) + [out / MANIFEST]:
            old.unlink(missing_ok=True)

    config_dict = config_to_dict(config)
    body = BodyModel.from_file(body_path)
    calib_path = config.calibration_path
    if not calib_path.is_file():
        raise ShardError(f"calibration file not found: {calib_path}")
    tasks = [(int(seed), idx) for idx in _chunks(n)]

    shards: list[dict] = []
    pending: list[Sample] = []
    stats = {"attempts": 0, "depth_mode": {}, "color_resolution": {}, "visible_joints": 0}

    def flush(final: bool = False) -> None:
        while len(pending) >= shard_size or (final and pending):
            batch = pending[:shard_size]
            del pending[:shard_size]
            name = f"shard-{len(shards):05d}.npz"
            sha = write_shard(out / name, samples_to_arrays(batch))
            shards.append({"file": name, "count": len(batch), "first_index": batch[0].index, "sha256": sha})

    bar = _progress(n, progress)
    try:
        with _single_threaded():
            if workers == 1:
                global _ENGINE
                saved = _ENGINE
                _ENGINE = _build_engine(str(body_path), config_dict)
                try:
                    results: Iterator[list[Sample]] = (generate_chunk(t) for t in tasks)
                    _consume(results, pending, stats, bar, flush, marks)
                finally:
                    _ENGINE = saved
            else:
                ctx = mp.get_context("spawn")
                with ctx.Pool(workers, initializer=_init_worker, initargs=(str(body_path), config_dict)) as pool:
                    _consume(pool.imap(generate_chunk, tasks), pending, stats, bar, flush, marks)
        flush(final=True)
    finally:
        bar.close()

    rigs = {}
    for dm, _ in config.scene.depth_modes:
        for cr, _ in config.scene.color_resolutions:
            rigs[f"{dm}/{cr}"] = load_rig(str(calib_path), dm, cr).to_dict()
    manifest = {
        "format": FORMAT, "version": VERSION, "seed": int(seed), "chunk": CHUNK, "shard_size": shard_size,
        "out_size": config.out_size, "config": config_dict,
        "counts": {"samples": n, "shards": len(shards), "scene_attempts": stats["attempts"],
                   "depth_mode": dict(sorted(stats["depth_mode"].items())),
                   "color_resolution": dict(sorted(stats["color_resolution"].items())),
                   "mean_visible_joints": round(stats["visible_joints"] / n, 3)},
        "body": {"file": body_path.name, "model_id": body.model_id, "sha256": body.sha256,
                 "num_vertices": body.num_vertices, "num_faces": body.num_faces},
        "calibration": {"file": calib_path.name, "sha256": _sha256(calib_path), "rigs": rigs},
        "arrays": {k: {"dtype": d, "shape": ["N", *shape]} for k, (d, shape) in SHARD_ARRAYS.items()},
        "shards": shards,
    }
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, out / MANIFEST)
    marks["end"] = time.perf_counter()
    return manifest


def _consume(results, pending: list, stats: dict, bar, flush, marks: dict) -> None:
    import time
    for chunk in results:
        marks.setdefault("first_chunk", time.perf_counter())
        for s in chunk:
            stats["attempts"] += s.attempts
            stats["depth_mode"][s.depth_mode] = stats["depth_mode"].get(s.depth_mode, 0) + 1
            stats["color_resolution"][s.color_resolution] = stats["color_resolution"].get(s.color_resolution, 0) + 1
            stats["visible_joints"] += int(s.joints_vis.sum())
        pending.extend(chunk)
        bar.update(len(chunk))
        marks["last_chunk"] = time.perf_counter()
        flush()


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, unit="sample", desc="synth", dynamic_ncols=True)


# ------------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class _ShardEntry:
    file: str
    count: int
    first_index: int
    sha256: str


class SynthShards:
    """Random access to a generated data set: `ds[i]` -> {array name: per-sample array} (see module
    docstring). Loads one shard at a time (the last one used is cached). `verify=True` checks every
    shard's sha256 against the manifest on open."""

    def __init__(self, folder: str | Path, verify: bool = False):
        self.folder = Path(folder)
        path = self.folder / MANIFEST
        if not path.is_file():
            raise ShardError(f"no {MANIFEST} in {self.folder}: not a synthetic data set folder")
        try:
            self.manifest = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ShardError(f"{path}: not valid JSON ({exc})") from None
        if self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION:
            raise ShardError(f"{path}: format {self.manifest.get('format')!r} v{self.manifest.get('version')!r}, "
                             f"expected {FORMAT!r} v{VERSION}")
        self.shards = [_ShardEntry(**s) for s in self.manifest["shards"]]
        self._starts = np.cumsum([0] + [s.count for s in self.shards])
        if int(self._starts[-1]) != int(self.manifest["counts"]["samples"]):
            raise ShardError(f"{path}: shards hold {int(self._starts[-1])} samples, counts say "
                             f"{self.manifest['counts']['samples']}")
        for s in self.shards:
            f = self.folder / s.file
            if not f.is_file():
                raise ShardError(f"shard listed in the manifest is missing: {f}")
            if verify and _sha256(f) != s.sha256:
                raise ShardError(f"shard {f} does not match its sha256 in the manifest (modified or truncated)")
        self._cache: tuple[int, dict[str, np.ndarray]] | None = None

    @property
    def config(self) -> SynthConfig:
        """The engine config that rendered this set (ShardError for a converted real dataset: it has none)."""
        if self.manifest.get("config") is None:
            raise ShardError(f"{self.folder}: not rendered by the synthetic engine (source: "
                             f"{(self.manifest.get('source') or {}).get('dataset', 'unknown')}), so it has no engine config")
        return config_from_dict(self.manifest["config"])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def shard(self, k: int) -> dict[str, np.ndarray]:
        """All arrays of shard k."""
        if self._cache is None or self._cache[0] != k:
            arrays = read_shard(self.folder / self.shards[k].file)
            missing = set(SHARD_ARRAYS) - set(arrays)
            if missing:
                raise ShardError(f"{self.shards[k].file} lacks arrays {sorted(missing)}")
            self._cache = (k, arrays)
        return self._cache[1]

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        i = i % len(self)
        k = int(np.searchsorted(self._starts, i, side="right") - 1)
        arrays = self.shard(k)
        j = i - int(self._starts[k])
        return {name: arr[j] for name, arr in arrays.items()}


# ------------------------------------------------------------------------------------------ tools
def write_contact_sheet(out: str | Path, body_path: str | Path, config: SynthConfig = SynthConfig(), n: int = 8,
                        seed: int = 0, columns: int = 4) -> Path:
    """Render samples 0..n-1 of data set `seed` and save a contact sheet PNG (color, depth, keypoints, mask)."""
    import cv2
    from training.synth.sample import contact_sheet
    if n < 1:
        raise ShardError(f"n must be >= 1, got {n}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with _single_threaded():
        engine = _build_engine(str(body_path), config_to_dict(config))
        samples = engine.make_samples(seed, list(range(n)))
    captions = [f"#{s.index} {s.depth_mode} / {s.color_resolution}  vis {int(s.lsp_vis.sum())}/14" for s in samples]
    if not cv2.imwrite(str(out), contact_sheet(samples, columns=columns, captions=captions),
                       [int(cv2.IMWRITE_PNG_COMPRESSION), 9]):
        raise ShardError(f"could not write {out}")
    return out


def _busy_seconds(n: int) -> float:
    """Wall seconds of a pure-Python loop of n additions (the probe of `parallel_speedup`)."""
    import time
    t0 = time.perf_counter()
    x = 0
    for i in range(n):
        x += i
    return time.perf_counter() - t0


def parallel_speedup(workers: int, n: int = 3_000_000) -> float:
    """How many times one process's work `workers` busy processes get done together on this machine: the
    same loop timed alone, then in `workers` spawned processes at once (the slowest one). `workers` on as
    many independent cores gives ~workers; cores that are SMT siblings or shared with the host give less
    (a one-second probe: contention that changes within a minute shows in the rate, not always here)."""
    alone = min(_busy_seconds(n) for _ in range(2))
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        pool.map(_busy_seconds, [n // 10] * workers)   # processes started and warm
        together = min(max(pool.map(_busy_seconds, [n] * workers)) for _ in range(2))   # (best of two, as alone)
    return workers * alone / together


def benchmark(body_path: str | Path, config: SynthConfig = SynthConfig(), n: int = 160, workers: int = 2,
              seed: int = 0, out: Any = None) -> dict:
    """Measure labelled samples/s: (1) one process, warm, per-stage split; (2) `make_shards` with
    `workers` processes into a temporary folder (end to end, and after the first chunk). Prints a report
    to `out` (a text stream) and returns the numbers."""
    import sys
    import tempfile
    import time
    out = out or sys.stdout
    result: dict[str, Any] = {"out_size": config.out_size, "n": n, "workers": workers}
    with _single_threaded():
        t0 = time.perf_counter()
        engine = _build_engine(str(body_path), config_to_dict(config))
        result["startup_s"] = time.perf_counter() - t0
        engine.make_samples(seed + 1, list(range(CHUNK)))           # warm-up (first-use costs)
        engine.timings.clear()
        n1 = max(CHUNK, min(n, 64))
        t0 = time.perf_counter()
        for start in range(0, n1, CHUNK):
            engine.make_samples(seed + 1, list(range(CHUNK + start, CHUNK + min(n1, start + CHUNK))))
        dt = time.perf_counter() - t0
    result["one_process_per_s"] = n1 / dt
    total = sum(engine.timings.values()) or 1.0
    result["stages"] = {k: v / n1 * 1000 for k, v in engine.timings.items()}
    body = engine.body
    print(f"synth bench: body {body.model_id} ({body.num_vertices} vertices), crops {config.out_size}^2, "
          f"modes {[m for m, _ in config.scene.depth_modes]} x {[c for c, _ in config.scene.color_resolutions]}",
          file=out)
    print(f"  startup (body, ray tables, aligners for all mode pairs): {result['startup_s']:.1f} s per process",
          file=out)
    cpu_ms = total / n1 * 1000
    result["cpu_ms_per_sample"] = cpu_ms
    print(f"  1 process, warm: {result['one_process_per_s']:.1f} samples/s wall ({n1} samples); CPU ms/sample by "
          "stage: " + ", ".join(f"{k} {v / n1 * 1000:.1f}"
                                 for k, v in sorted(engine.timings.items(), key=lambda kv: -kv[1]))
          + f" (sum {cpu_ms:.1f}; = {2000.0 / cpu_ms:.1f} samples/s if 2 cores were idle)", file=out)
    with tempfile.TemporaryDirectory(prefix="synth-bench-") as tmp:
        marks: dict = {}
        make_shards(tmp, n, seed=seed, config=config, body_path=body_path, workers=workers, shard_size=256,
                    progress=False, timing=marks)
    end_to_end = n / (marks["end"] - marks["start"])
    # steady state: the samples that arrived after the first chunk, over the time they took to arrive (the
    # shards written meanwhile included); the last shard's write after the last chunk is reported apart
    steady = (n - CHUNK) / max(marks["last_chunk"] - marks["first_chunk"], 1e-9) if n > CHUNK else float("nan")
    tail_s = marks["end"] - marks["last_chunk"]
    result.update(end_to_end_per_s=end_to_end, steady_per_s=steady, final_write_s=tail_s)
    print(f"  make_shards, {workers} worker(s): {end_to_end:.1f} samples/s end to end ({n} samples incl. worker "
          f"start-up and shard writing), {steady:.1f} samples/s from the first to the last chunk (then "
          f"{tail_s:.1f} s for the last shard and the manifest)", file=out)
    if workers > 1:
        speedup = result["parallel_speedup"] = parallel_speedup(workers)
        print(f"  CPU check: {workers} busy processes together did {speedup:.2f}x the work of one "
              f"({workers:.2f}x on independent cores; a 1-s probe, a hint for the rate above)", file=out)
    print("  goal: >= 40 labelled samples/s at 224^2 on 2 cores", file=out)
    return result
