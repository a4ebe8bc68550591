"""Per-frame outputs of a run: SMPL parameters (.npz, AMASS-like keys), a .jsonl stream, meshes, a BVH.

`OutputWriter` runs on the thread that consumes the worker's `FrameResult`s (the CLI's main thread).
Everything is in the depth camera frame (OpenCV: x right, y down, z forward), metres, unless stated.

Files in the output folder (the folder is created if missing; paths are used as given):

    frames.jsonl   one JSON object per frame, appended and flushed as each frame arrives: row, frame_id,
                   timestamp_usec, mode, requested_mode, message, dropped_frames (running count),
                   timings_ms, mesh (file
                   name or null), body (null, or theta (72), beta, transl (3), joints (24x3), cam (3) =
                   (s, tx, ty), bbox (4) depth px). Non-finite numbers are written as null.
    results.npz    one row per frame (frames without a body: NaN rows, valid False):
                   poses (T,72) float32 axis-angle (global orientation in the camera frame), betas (T,10),
                   trans (T,3) (the body model's transl), joints (T,24,3) camera frame, cam (T,3), bbox (T,4),
                   valid (T,) bool, frame_ids (T,) int64, timestamps_usec (T,) int64, modes (T,) str,
                   requested_modes (T,) str, mocap_framerate () float64, gender () 'neutral',
                   joint_names (24,) str, coordinate_frame () str. Loads with np.load(allow_pickle=False).
    motion.bvh     the motion as a BVH (SMPL skeleton, Y-up world = camera frame turned 180 deg about x,
                   centimetres, ZXY Euler channels); frames without a body repeat the nearest earlier
                   body (the first body for leading frames). Not written when no frame had a body.
    meshes/mesh_<row>.ply | .obj   optional: camera-frame vertices (+ faces when known) per frame.

Crash safety: frames.jsonl is flushed per frame (and fsynced with `fsync=True`); results.npz and
motion.bvh are rewritten atomically (temporary file + os.replace) every `chunk_frames` frames (or every
10 % of the frames so far, whichever is more: total cost stays linear) and at close, so after a fault
they hold a complete prefix of the run and never a torn file; meshes are written atomically too.
Existing outputs are never replaced unless `overwrite=True` (then this writer's own files are removed
first; other files in the folder are left alone).

Memory: the rows of results.npz are kept as compact numpy columns (the file's own dtypes, ~0.7 kB per
frame; 8 h at 30 fps is ~0.6 GB), not as Python objects; the BVH text is streamed into its file.
Each rewrite of results.npz / motion.bvh still handles the whole run, so its cost and its transient
memory (float64 rotations for the BVH, several kB per frame while it is written) grow with the run; a
bounded design would write closed chunks (results_000.npz, ...) and keep only the open one in memory,
which is a format change (docs/reliability.md).
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from app.results import FrameResult
from model.skeleton import SMPL_JOINT_NAMES, SMPL_PARENTS  # torch-free; re-exported for the viewer

__all__ = ["OutputError", "OutputWriter", "SMPL_JOINT_NAMES", "SMPL_PARENTS", "write_bvh", "write_mesh",
           "bvh_rest_offsets"]

log = logging.getLogger(__name__)

_CAM_TO_BVH = np.diag([1.0, -1.0, -1.0])  # camera (y down, z forward) -> BVH world (y up, z toward the camera)
_BVH_UNITS = 100.0                         # metres -> centimetres
RESULTS, FRAMES, BVH, MESH_DIR = "results.npz", "frames.jsonl", "motion.bvh", "meshes"


class OutputError(RuntimeError):
    """An output cannot be written (existing file without overwrite, bad folder); one-line message."""


def _atomic_write(path: Path, write: Any, fsync: bool = False) -> None:
    """Call write(file object) on a temporary file next to `path`, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------- meshes
def write_mesh(path: Union[str, Path], vertices: np.ndarray, faces: Optional[np.ndarray] = None,
               fsync: bool = False) -> Path:
    """Write vertices (V, 3) [+ faces (F, 3) int] as binary little-endian PLY (.ply) or OBJ (.obj), atomically."""
    path = Path(path)
    v = np.ascontiguousarray(vertices, dtype="<f4")
    if v.ndim != 2 or v.shape[1] != 3:
        raise OutputError(f"vertices must be (V, 3), got {v.shape}")
    f = None if faces is None else np.ascontiguousarray(faces, dtype="<i4")
    if f is not None and (f.ndim != 2 or f.shape[1] != 3 or (f.size and (f.min() < 0 or f.max() >= len(v)))):
        raise OutputError(f"faces must be (F, 3) indices into {len(v)} vertices")
    suffix = path.suffix.lower()
    if suffix == ".ply":
        header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(v)}", "property float x",
                  "property float y", "property float z"]
        if f is not None:
            header += [f"element face {len(f)}", "property list uchar int vertex_indices"]
        header_bytes = ("\n".join(header + ["end_header"]) + "\n").encode("ascii")

        def write(fh: Any) -> None:
            fh.write(header_bytes)
            fh.write(v.tobytes())
            if f is not None:
                rows = np.empty(len(f), dtype=[("n", "u1"), ("i", "<i4", (3,))])
                rows["n"] = 3
                rows["i"] = f
                fh.write(rows.tobytes())
    elif suffix == ".obj":
        def write(fh: Any) -> None:
            text = io.StringIO()
            text.write("# FuseMesh body, metres, depth camera frame (x right, y down, z forward)\n")
            np.savetxt(text, v, fmt="v %.5f %.5f %.5f")
            if f is not None:
                np.savetxt(text, f + 1, fmt="f %d %d %d")
            fh.write(text.getvalue().encode("ascii"))
    else:
        raise OutputError(f"{path}: mesh files must end in .ply or .obj")
    _atomic_write(path, write, fsync)
    return path


# ---------------------------------------------------------------------------------------- BVH
def _rotmats(theta: np.ndarray) -> np.ndarray:
    """(..., 72) axis-angle -> (..., 24, 3, 3) local rotation matrices."""
    from scipy.spatial.transform import Rotation

    aa = np.asarray(theta, dtype=np.float64).reshape(-1, 3)
    return Rotation.from_rotvec(aa).as_matrix().reshape(theta.shape[:-1] + (24, 3, 3))


def _global_rotations(local: np.ndarray, parents: Sequence[int]) -> np.ndarray:
    """(T, 24, 3, 3) local -> global rotations along the kinematic chain."""
    g = np.empty_like(local)
    for j, p in enumerate(parents):
        g[:, j] = local[:, j] if p < 0 else g[:, p] @ local[:, j]
    return g


def bvh_rest_offsets(poses: np.ndarray, joints: np.ndarray, parents: Sequence[int] = SMPL_PARENTS) -> np.ndarray:
    """Rest-pose bone offsets (24, 3) metres in the body model's canonical frame (Y up), from posed frames.

    SMPL's posed joints satisfy J_j - J_parent = G_parent (Jrest_j - Jrest_parent) with G the global
    rotations of the kinematic chain, so each frame gives the rest offsets exactly; they are averaged over
    the frames (betas may drift slightly). poses (T, 72), joints (T, 24, 3); row 0 (the root) is zero.
    """
    g = _global_rotations(_rotmats(poses), parents)
    offsets = np.zeros((len(parents), 3))
    for j, p in enumerate(parents):
        if p >= 0:
            bone = joints[:, j] - joints[:, p]                        # (T, 3) camera frame
            offsets[j] = np.einsum("tji,tj->ti", g[:, p], bone).mean(axis=0)  # G_p^T bone
    return offsets


def write_bvh(path: Union[str, Path], poses: np.ndarray, joints: np.ndarray, frame_time_s: float,
              parents: Sequence[int] = SMPL_PARENTS, names: Sequence[str] = SMPL_JOINT_NAMES,
              fsync: bool = False) -> Path:
    """Write poses (T, 72) + camera-frame joints (T, 24, 3) m (all rows valid) as a BVH file, atomically.

    World: Y up (camera frame turned 180 deg about x), centimetres; root channels Xposition Yposition
    Zposition Zrotation Xrotation Yrotation, joints Zrotation Xrotation Yrotation (R = Rz Rx Ry), degrees.
    """
    from scipy.spatial.transform import Rotation

    path = Path(path)
    poses = np.asarray(poses, dtype=np.float64)
    joints = np.asarray(joints, dtype=np.float64)
    T = poses.shape[0]
    if T == 0 or poses.shape != (T, 72) or joints.shape != (T, 24, 3):
        raise OutputError(f"write_bvh needs poses (T, 72) and joints (T, 24, 3) with T >= 1, got {poses.shape}, "
                          f"{joints.shape}")
    if not (np.isfinite(poses).all() and np.isfinite(joints).all()):
        raise OutputError("write_bvh: poses and joints must be finite (fill frames without a body first)")
    offsets = bvh_rest_offsets(poses, joints, parents) * _BVH_UNITS
    children: dict[int, list[int]] = {j: [] for j in range(len(parents))}
    for j, p in enumerate(parents):
        if p >= 0:
            children[p].append(j)

    lines = ["HIERARCHY"]

    def emit(j: int, depth: int) -> None:
        pad = "  " * depth
        kind = "ROOT" if parents[j] < 0 else "JOINT"
        lines.append(f"{pad}{kind} {names[j]}")
        lines.append(f"{pad}{{")
        o = offsets[j]
        lines.append(f"{pad}  OFFSET {o[0]:.4f} {o[1]:.4f} {o[2]:.4f}")
        if parents[j] < 0:
            lines.append(f"{pad}  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation")
        else:
            lines.append(f"{pad}  CHANNELS 3 Zrotation Xrotation Yrotation")
        if children[j]:
            for c in children[j]:
                emit(c, depth + 1)
        else:  # end site: half the incoming bone again
            e = 0.5 * offsets[j] if np.linalg.norm(offsets[j]) > 0 else np.array([0.0, 5.0, 0.0])
            lines.append(f"{pad}  End Site")
            lines.append(f"{pad}  {{")
            lines.append(f"{pad}    OFFSET {e[0]:.4f} {e[1]:.4f} {e[2]:.4f}")
            lines.append(f"{pad}  }}")
        lines.append(f"{pad}}}")

    emit(0, 0)
    order: list[int] = []

    def walk(j: int) -> None:
        order.append(j)
        for c in children[j]:
            walk(c)

    walk(0)
    local = _rotmats(poses)                                  # (T, 24, 3, 3)
    local[:, 0] = _CAM_TO_BVH @ local[:, 0]                  # root orientation in the BVH world
    euler = Rotation.from_matrix(local.reshape(-1, 3, 3)).as_euler("ZXY", degrees=True).reshape(T, 24, 3)
    root = joints[:, 0] @ _CAM_TO_BVH.T * _BVH_UNITS
    motion = np.concatenate([root, euler[:, order].reshape(T, -1)], axis=1)
    lines += ["MOTION", f"Frames: {T}", f"Frame Time: {frame_time_s:.6f}"]
    header = ("\n".join(lines) + "\n").encode("ascii")

    def write(fh: Any) -> None:  # row by row into the file: no copy of the whole text in memory
        fh.write(header)
        np.savetxt(fh, motion, fmt="%.4f")

    _atomic_write(path, write, fsync)
    return path


# ---------------------------------------------------------------------------------------- writer
def _json_value(x: Any) -> Any:
    """numpy -> JSON-able, non-finite floats -> None."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind == "f":
            return [_json_value(v) for v in x.tolist()] if x.ndim else _json_value(float(x))
        return x.tolist()
    if isinstance(x, (list, tuple)):
        return [_json_value(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


class OutputWriter:
    """Writes a run's outputs (see the module docstring). Use from one thread; use as a context manager.

    out_dir: folder (created if missing); meshes: None | "ply" | "obj"; faces: (F, 3) int for the mesh
    files (None: vertices only); bvh: write motion.bvh; overwrite: replace this writer's existing files;
    chunk_frames: rewrite results.npz / motion.bvh at least this often; fps: frame rate for the npz and the
    BVH (None: from the timestamps, else 30); fsync: fsync every write (power-loss safety, slower).
    """

    def __init__(self, out_dir: Union[str, Path], *, meshes: Optional[str] = None, faces: Optional[np.ndarray] = None,
                 bvh: bool = True, overwrite: bool = False, chunk_frames: int = 30, fps: Optional[float] = None,
                 fsync: bool = False):
        self.out_dir = Path(out_dir)
        if meshes not in (None, "ply", "obj"):
            raise OutputError(f"meshes must be None, 'ply' or 'obj', got {meshes!r}")
        if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
            raise OutputError(f"chunk_frames must be an int >= 1, got {chunk_frames!r}")
        if fps is not None and not (isinstance(fps, (int, float)) and fps > 0):
            raise OutputError(f"fps must be > 0, got {fps!r}")
        self.meshes, self.bvh, self.overwrite = meshes, bool(bvh), bool(overwrite)
        self.faces = None if faces is None else np.asarray(faces, dtype=np.int64)
        self.chunk_frames, self.fps, self.fsync = chunk_frames, fps, bool(fsync)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise OutputError(f"{self.out_dir}: exists and is not a folder")
        self._check_existing()
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if meshes:
                (self.out_dir / MESH_DIR).mkdir(exist_ok=True)
            # unbuffered: every line reaches the file in write(), and a failed line can be cut off again
            self._jsonl = open(self.out_dir / FRAMES, "wb" if overwrite else "xb", buffering=0)
        except FileExistsError as exc:
            raise OutputError(f"{exc.filename}: already exists (pass --overwrite to replace)") from exc
        except OSError as exc:
            raise OutputError(f"{self.out_dir}: cannot write outputs ({exc.strerror or exc})") from exc
        self._table = _Table()
        self._last_flush_rows = 0
        self._jsonl_bytes = 0
        self.closed = False

    # ------------------------------------------------------------------ paths
    @property
    def results_path(self) -> Path:
        return self.out_dir / RESULTS

    @property
    def frames_path(self) -> Path:
        return self.out_dir / FRAMES

    @property
    def bvh_path(self) -> Path:
        return self.out_dir / BVH

    def _mesh_files(self) -> list[Path]:
        folder = self.out_dir / MESH_DIR
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.name.startswith("mesh_") and p.suffix in (".ply", ".obj"))

    def _check_existing(self) -> None:
        mine = [self.out_dir / RESULTS, self.out_dir / FRAMES, self.out_dir / BVH]
        existing = [p for p in mine if p.exists()] + self._mesh_files()
        if not existing:
            return
        if not self.overwrite:
            more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
            raise OutputError(f"{existing[0]}{more}: already exists (pass --overwrite to replace)")
        for p in existing:
            if p.is_dir():
                raise OutputError(f"{p}: is a folder; will not replace it")
            p.unlink()

    # ------------------------------------------------------------------ writing
    @property
    def frames_written(self) -> int:
        return self._table.rows

    def write(self, result: FrameResult) -> None:
        """Record one frame: append to frames.jsonl (flushed), mesh file, and the in-memory table."""
        if self.closed:
            raise OutputError("OutputWriter is closed")
        row = self._table.rows
        body = result.body
        mesh_name = None
        if body is not None and self.meshes:
            mesh_name = f"{MESH_DIR}/mesh_{row:06d}.{self.meshes}"
            write_mesh(self.out_dir / mesh_name, np.asarray(body.vertices), self.faces, self.fsync)
        record = {
            "row": row, "frame_id": int(result.frame_id), "timestamp_usec": int(result.timestamp_usec),
            "mode": getattr(result.mode, "value", str(result.mode)), "requested_mode": str(result.requested_mode),
            "message": result.message, "dropped_frames": int(result.dropped_frames),
            "timings_ms": {k: _json_value(round(float(v), 3)) for k, v in result.timings_ms.items()},
            "mesh": mesh_name,
            "body": None if body is None else {
                "theta": _json_value(np.asarray(body.theta, dtype=np.float64).round(6)),
                "beta": _json_value(np.asarray(body.beta, dtype=np.float64).round(6)),
                "transl": _json_value(np.asarray(body.transl, dtype=np.float64).round(6)),
                "joints": _json_value(np.asarray(body.joints, dtype=np.float64).round(6)),
                "cam": _json_value(np.asarray(body.cam, dtype=np.float64).round(6)),
                "bbox": _json_value(np.asarray(body.bbox, dtype=np.float64).round(3)),
            },
        }
        self._append_line((json.dumps(record, allow_nan=False) + "\n").encode("utf-8"), row)
        self._table.append(int(result.frame_id), int(result.timestamp_usec), record["mode"],
                           record["requested_mode"], body)
        rows = self._table.rows
        due = max(self.chunk_frames, int(0.1 * rows))
        if rows - self._last_flush_rows >= due:
            self.flush()

    def _append_line(self, data: bytes, row: int) -> None:
        """Append one frames.jsonl line, all of it or nothing: a write that fails part-way (disk full, file
        size limit) is cut back to the previous line and raises OutputError naming the file."""
        fd = self._jsonl.fileno()
        start = self._jsonl_bytes
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self.fsync:
                os.fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, start)
                os.lseek(fd, start, os.SEEK_SET)
            except OSError:
                pass
            raise OutputError(f"{self.out_dir / FRAMES}: cannot write frame row {row} ({exc.strerror or exc}); "
                              f"the {row} rows before it are complete") from exc
        self._jsonl_bytes = start + len(data)

    def _frame_rate(self) -> float:
        if self.fps is not None:
            return float(self.fps)
        steps = np.diff(self._table.column("timestamps_usec"))
        steps = steps[steps > 0]
        return float(1e6 / np.median(steps)) if steps.size else 30.0

    def _arrays(self) -> dict[str, np.ndarray]:
        """The results.npz arrays; the per-frame ones are views of the writer's columns (no copy)."""
        out = self._table.arrays()
        out["mocap_framerate"] = np.array(self._frame_rate())
        out["gender"] = np.array("neutral")
        out["joint_names"] = np.array(SMPL_JOINT_NAMES)
        out["coordinate_frame"] = np.array("depth camera, OpenCV axes (x right, y down, z forward), metres")
        return out

    def table(self) -> dict[str, np.ndarray]:
        """The results.npz arrays for the frames written so far (copies: the caller may change them)."""
        return {k: v.copy() for k, v in self._arrays().items()}

    def flush(self) -> None:
        """Rewrite results.npz and motion.bvh atomically with every frame so far."""
        table = self._arrays()
        _atomic_write(self.results_path, lambda fh: np.savez(fh, **table), self.fsync)
        if self.bvh and table["valid"].any():
            poses, joints = _hold_fill(table["poses"], table["valid"]), _hold_fill(table["joints"], table["valid"])
            write_bvh(self.bvh_path, poses, joints, 1.0 / float(table["mocap_framerate"]), fsync=self.fsync)
        self._last_flush_rows = self._table.rows

    def close(self) -> None:
        """Final flush; closes frames.jsonl. Idempotent."""
        if self.closed:
            return
        try:
            self.flush()
            if self.bvh and self._table.rows and not self._table.column("valid").any():
                log.warning("no frame had a body: %s not written", self.bvh_path)
        except OSError as exc:  # disk full etc.: the files from the last successful flush stay as they were
            raise OutputError(f"{self.out_dir}: the final {RESULTS} / motion.bvh could not be written "
                              f"({exc.strerror or exc}); they hold the rows up to row "
                              f"{self._last_flush_rows}, {FRAMES} holds all {self._table.rows}") from exc
        finally:
            self.closed = True
            self._jsonl.close()

    def __enter__(self) -> "OutputWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Table:
    """The results.npz rows in memory, stored as the file stores them: one preallocated numpy column per
    key (float32 bodies, int64 ids and timestamps, '<U5' modes, bool valid), grown by doubling. Columns
    are allocated with np.empty and each row is written once, so resident memory grows by the bytes of
    the rows written (~0.7 kB per frame with 10 betas) however large the capacity. Frames without a body
    are NaN rows, valid False. `betas` gets its width from the first body (10 until then); earlier rows
    are NaN, a later body's betas are cut or NaN-padded to that width."""

    _BODY = (("poses", "theta", (72,)), ("betas", "beta", None), ("trans", "transl", (3,)),
             ("joints", "joints", (24, 3)), ("cam", "cam", (3,)), ("bbox", "bbox", (4,)))
    _FIXED = {"valid": ((), bool), "frame_ids": ((), np.int64), "timestamps_usec": ((), np.int64),
              "modes": ((), "<U5"), "requested_modes": ((), "<U5")}

    def __init__(self, capacity: int = 256) -> None:
        self.rows = 0
        self._capacity = int(capacity)
        self._n_beta: Optional[int] = None
        self._cols: dict[str, np.ndarray] = {}
        for key, (shape, dtype) in self._FIXED.items():
            self._cols[key] = np.empty((self._capacity,) + shape, dtype)
        for key, _, shape in self._BODY:
            if shape is not None:
                self._cols[key] = np.empty((self._capacity,) + shape, np.float32)

    def _grow(self) -> None:
        self._capacity *= 2
        for key, col in self._cols.items():
            bigger = np.empty((self._capacity,) + col.shape[1:], col.dtype)
            bigger[:self.rows] = col[:self.rows]
            self._cols[key] = bigger

    def append(self, frame_id: int, timestamp_usec: int, mode: str, requested_mode: str, body: Any) -> None:
        """One row; body: None or anything with theta (72), beta, transl (3), joints (24, 3), cam (3), bbox (4)."""
        if self.rows == self._capacity:
            self._grow()
        i = self.rows
        if body is not None and self._n_beta is None:  # the first body fixes the betas width
            self._n_beta = int(np.asarray(body.beta).reshape(-1).shape[0])
            self._cols["betas"] = np.empty((self._capacity, self._n_beta), np.float32)
            self._cols["betas"][:i] = np.nan
        c = self._cols
        c["frame_ids"][i], c["timestamps_usec"][i] = frame_id, timestamp_usec
        c["modes"][i], c["requested_modes"][i] = mode, requested_mode
        c["valid"][i] = body is not None
        for key, attr, _ in self._BODY:
            if key not in c:
                continue
            if body is None:
                c[key][i] = np.nan
            elif key == "betas":
                beta = np.asarray(body.beta, dtype=np.float32).reshape(-1)[:self._n_beta]
                c[key][i] = np.nan
                c[key][i, :beta.shape[0]] = beta
            else:
                c[key][i] = np.asarray(getattr(body, attr), dtype=np.float32)
        self.rows = i + 1

    def column(self, key: str) -> np.ndarray:
        """The first `rows` entries of a column (a view)."""
        return self._cols[key][:self.rows]

    def arrays(self) -> dict[str, np.ndarray]:
        """Every per-frame results.npz key -> a view of its first `rows` entries (betas (T, 10) NaN before
        any body)."""
        out = {key: self.column(key) for key, _, _ in self._BODY if key in self._cols}
        if "betas" not in out:
            out["betas"] = np.full((self.rows, 10), np.nan, np.float32)
        out = {key: out[key] for key, _, _ in self._BODY}
        out.update({key: self.column(key) for key in self._FIXED})
        return out


def _hold_fill(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Rows where valid is False take the nearest earlier valid row (leading ones the first valid row)."""
    idx = np.where(valid, np.arange(len(valid)), -1)
    idx = np.maximum.accumulate(idx)
    idx[idx < 0] = int(np.flatnonzero(valid)[0])
    return values[idx].astype(np.float64)
