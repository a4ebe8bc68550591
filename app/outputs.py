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
                   Written at close, by joining the parts below (then removed).
    results_000.npz, results_001.npz, ...
                   the same table in parts of `part_frames` rows (default 4096, ~2.3 min at 30 fps), while
                   the run goes on and after a crash: closed parts are written once; the open part is
                   rewritten as it grows. `app.results_reader.load_results(folder)` reads either layout.
    motion.bvh     the motion as a BVH (SMPL skeleton, Y-up world = camera frame turned 180 deg about x,
                   centimetres, ZXY Euler channels); frames without a body repeat the nearest earlier
                   body (the first body for leading frames). Not written when no frame had a body.
                   The MOTION rows are appended as the run goes; the header (the skeleton's OFFSETs, the
                   mean over the bodies so far, "Frames:" and "Frame Time:") has a fixed byte length and
                   is rewritten in place after each append (the frame time takes up the slack digits).
    meshes/mesh_<row>.ply | .obj   optional: camera-frame vertices (+ faces when known) per frame.

Crash safety: frames.jsonl is flushed per frame (and fsynced with `fsync=True`). Every `chunk_frames`
frames (or every 10 % of the open part's rows, whichever is more) and at each part boundary the open
part is rewritten atomically (temporary file + os.replace) and its new rows are appended to
motion.bvh, then the BVH header is patched. After a crash or kill the folder holds every closed part,
a complete prefix of the open one, and a BVH whose rows are whole (a failed append is cut back) and
whose "Frames:" count is at most the rows present. Meshes are written atomically too. Existing
outputs (parts included) are never replaced unless `overwrite=True` (then this writer's own files are
removed first; other files in the folder are left alone).

Memory is bounded by the part size, not the run: the writer holds the open part's rows as compact numpy
columns (the file's dtypes, ~0.7 kB per frame: at most `part_frames` rows, ~2.9 MB for 4096) and, for
the BVH, only the rows since the last append (float64 rotations of those) plus a running sum for the
skeleton. Joining the parts at close streams one part's column at a time.
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
from app.results_reader import (PART_PATTERN, RESULTS, ResultsError, atomic_write, concat_tables, join_parts,
                                part_name, read_part)
from model.skeleton import SMPL_JOINT_NAMES, SMPL_PARENTS  # torch-free; re-exported for the viewer

__all__ = ["OutputError", "OutputWriter", "BvhStream", "SMPL_JOINT_NAMES", "SMPL_PARENTS", "write_bvh",
           "write_mesh", "bvh_rest_offsets"]

log = logging.getLogger(__name__)

_CAM_TO_BVH = np.diag([1.0, -1.0, -1.0])  # camera (y down, z forward) -> BVH world (y up, z toward the camera)
_BVH_UNITS = 100.0                         # metres -> centimetres
FRAMES, BVH, MESH_DIR = "frames.jsonl", "motion.bvh", "meshes"


class OutputError(RuntimeError):
    """An output cannot be written (existing file without overwrite, bad folder); one-line message."""


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
    atomic_write(path, write, fsync)
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


_OFFSET_MAX = 99_999.0  # cm: keeps every OFFSET number in its fixed-width field
_TIMING_BYTES = 40      # "Frames: N\nFrame Time: T\n" is padded to this many bytes with digits of T


def _bvh_children(parents: Sequence[int]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {j: [] for j in range(len(parents))}
    for j, p in enumerate(parents):
        if p >= 0:
            children[p].append(j)
    return children


def _timing_lines(frames: int, frame_time_s: float) -> str:
    """'Frames: N\\nFrame Time: T\\n' exactly _TIMING_BYTES long: T gets as many decimals as fit (>= 3)."""
    fixed = len(f"Frames: {frames}\nFrame Time: \n")
    whole = len(f"{frame_time_s:.0f}")
    decimals = _TIMING_BYTES - fixed - whole - 1
    if decimals < 3:
        raise OutputError(f"BVH: {frames} frames at {frame_time_s} s do not fit the header's timing field")
    text = f"Frames: {frames}\nFrame Time: {frame_time_s:.{decimals}f}\n"
    if len(text) != _TIMING_BYTES:  # rounding carried into a new digit (9.99.. -> 10.0..)
        text = f"Frames: {frames}\nFrame Time: {frame_time_s:.{decimals - 1}f}\n"
    return text


def _bvh_order(children: dict[int, list[int]]) -> list[int]:
    """Joints depth-first from the root (the BVH's channel order)."""
    order, stack = [], [0]
    while stack:
        j = stack.pop()
        order.append(j)
        stack.extend(reversed(children[j]))
    return order


def _bvh_template(parents: Sequence[int], names: Sequence[str],
                  children: dict[int, list[int]]) -> tuple[str, list[tuple[int, bool]]]:
    """The HIERARCHY section up to "MOTION\n" as a %-template with one fixed-width %11.4f per OFFSET
    number, and the (joint, is_end_site) of each OFFSET line in order."""
    lines: list[str] = ["HIERARCHY"]
    slots: list[tuple[int, bool]] = []
    offset = "OFFSET %11.4f %11.4f %11.4f"

    def emit(j: int, depth: int) -> None:
        pad = "  " * depth
        lines.append(f"{pad}{'ROOT' if parents[j] < 0 else 'JOINT'} {names[j]}")
        lines.append(f"{pad}{{")
        lines.append(f"{pad}  {offset}")
        slots.append((j, False))
        if parents[j] < 0:
            lines.append(f"{pad}  CHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation")
        else:
            lines.append(f"{pad}  CHANNELS 3 Zrotation Xrotation Yrotation")
        for c in children[j]:
            emit(c, depth + 1)
        if not children[j]:
            lines.extend([f"{pad}  End Site", f"{pad}  {{", f"{pad}    {offset}", f"{pad}  }}"])
            slots.append((j, True))
        lines.append(f"{pad}}}")

    emit(0, 0)
    return "\n".join(lines) + "\nMOTION\n", slots


class BvhStream:
    """A BVH file written as frames arrive, with bounded memory. Use from one thread.

    `add(poses (n, 72), joints (n, 24, 3) m camera frame, valid (n,) bool)` appends one MOTION row per
    frame (frames without a body repeat the last body; frames before the first body get the first body's
    row when it arrives: only their count is kept). The file is created at the first body (temporary
    file + rename, so it is never seen without a header). After each append the header is rewritten in
    place with the same byte length: OFFSETs = mean rest offsets over every body so far (fixed-width
    numbers), "Frames:" = rows in the file, "Frame Time:" = `frame_time_s`. An append that fails (disk
    full) is cut back and raises OSError; the file then holds the rows before it.
    Memory: one batch's rotations; the running offset sum (24, 3); the last body's row.
    """

    def __init__(self, path: Union[str, Path], frame_time_s: float, parents: Sequence[int] = SMPL_PARENTS,
                 names: Sequence[str] = SMPL_JOINT_NAMES, fsync: bool = False):
        self.path = Path(path)
        self.frame_time_s = float(frame_time_s)
        self.parents, self.names, self.fsync = list(parents), list(names), bool(fsync)
        self.children = _bvh_children(self.parents)
        self.order = _bvh_order(self.children)
        self._template, self._slots = _bvh_template(self.parents, self.names, self.children)
        self.frames = 0                         # rows in the file
        self._lead = 0                          # frames seen before the first body (no row yet)
        self._last: Optional[np.ndarray] = None  # the last body's motion row (C,)
        self._offset_sum = np.zeros((len(self.parents), 3))
        self._bodies = 0
        self._fh: Optional[Any] = None
        self._end = 0                           # bytes in the file
        self._header_len = 0

    @property
    def pending_rows(self) -> int:
        """Frames counted but without a row in the file yet (only those before the first body)."""
        return self._lead

    def _offsets_cm(self) -> np.ndarray:
        mean = self._offset_sum / max(self._bodies, 1) * _BVH_UNITS
        return np.clip(mean, -_OFFSET_MAX, _OFFSET_MAX)

    def _header(self) -> bytes:
        """The header for the current state: always the same length (fixed-width numbers, _TIMING_BYTES)."""
        offsets = self._offsets_cm()
        values = []
        for j, end in self._slots:  # end site: half the incoming bone again (5 cm up for a zero bone)
            o = offsets[j] if not end else (0.5 * offsets[j] if np.any(offsets[j]) else np.array([0.0, 5.0, 0.0]))
            values.extend(float(v) for v in o)
        return (self._template % tuple(values) + _timing_lines(self.frames, self.frame_time_s)).encode("ascii")

    def _rows(self, poses: np.ndarray, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Motion rows (n, 6 + 3 * 23) and the rest-offset sum (24, 3) m for n bodies."""
        from scipy.spatial.transform import Rotation

        n = poses.shape[0]
        local = _rotmats(poses)                                  # (n, 24, 3, 3)
        g = _global_rotations(local, self.parents)
        offset_sum = np.zeros((len(self.parents), 3))
        for j, p in enumerate(self.parents):
            if p >= 0:
                offset_sum[j] = np.einsum("tji,tj->i", g[:, p], joints[:, j] - joints[:, p])  # sum G_p^T bone
        local[:, 0] = _CAM_TO_BVH @ local[:, 0]                  # root orientation in the BVH world
        euler = Rotation.from_matrix(local.reshape(-1, 3, 3)).as_euler("ZXY", degrees=True).reshape(n, 24, 3)
        root = joints[:, 0] @ _CAM_TO_BVH.T * _BVH_UNITS
        return np.concatenate([root, euler[:, self.order].reshape(n, -1)], axis=1), offset_sum

    def skip(self, frames: int) -> None:
        """Count `frames` frames without a body before the first body (they get its row when it comes)."""
        if self._last is not None or frames < 0:
            raise OutputError("BvhStream.skip: only a count >= 0 of frames before the first body")
        self._lead += int(frames)

    def add(self, poses: np.ndarray, joints: np.ndarray, valid: np.ndarray) -> int:
        """Append the rows of n frames (see the class docstring); -> rows now in the file."""
        valid = np.asarray(valid, dtype=bool).reshape(-1)
        n = valid.shape[0]
        if n == 0:
            return self.frames
        if self._last is None and not valid.any():
            self._lead += n
            return self.frames
        poses = np.asarray(poses, dtype=np.float64)[valid]
        joints = np.asarray(joints, dtype=np.float64)[valid]
        if poses.shape[1:] != (72,) or joints.shape[1:] != (24, 3):
            raise OutputError(f"BVH rows need poses (n, 72) and joints (n, 24, 3), got {poses.shape}, {joints.shape}")
        if not (np.isfinite(poses).all() and np.isfinite(joints).all()):
            raise OutputError("BVH: poses and joints of a valid frame must be finite")
        if poses.shape[0]:
            body_rows, offset_sum = self._rows(poses, joints)
        else:  # only held frames in this batch
            body_rows, offset_sum = np.empty((0, 3 + 3 * len(self.parents))), np.zeros((len(self.parents), 3))
        # hold: each frame takes the latest body at or before it, the previous batch's last body, or
        # (frames before any body) the first body
        idx = np.maximum.accumulate(np.where(valid, np.cumsum(valid) - 1, -1))
        table = body_rows if self._last is None else np.vstack([self._last[None], body_rows])
        idx = np.maximum(idx, 0) if self._last is None else idx + 1
        if self._lead:  # frames before the first body: its row, repeated (in slices: bounded memory)
            line = self._text(body_rows[:1])
            while self._lead:
                k = min(self._lead, 1024)
                self._append(line * k, k)
                self._lead -= k
        self._append(self._text(table[idx]), n)
        if len(body_rows):
            self._last = body_rows[-1].copy()
        self._offset_sum += offset_sum
        self._bodies += int(valid.sum())
        self._patch_header()
        return self.frames

    def _text(self, rows: np.ndarray) -> bytes:
        """MOTION lines: each number as %.4f, space-separated."""
        fmt = " ".join(["%.4f"] * rows.shape[1]) + "\n"
        return "".join(fmt % tuple(r) for r in rows.tolist()).encode("ascii")

    def _append(self, data: bytes, rows: int) -> None:
        if self._fh is None:
            self._create(data, rows)
            return
        fd = self._fh.fileno()
        try:
            view = memoryview(data)
            pos = self._end
            while view:
                k = os.pwrite(fd, view, pos)
                view, pos = view[k:], pos + k
        except OSError:
            try:
                os.ftruncate(fd, self._end)
            except OSError:
                pass
            raise
        self._end += len(data)
        self.frames += rows

    def _create(self, data: bytes, rows: int) -> None:
        self.frames = rows  # the header written with the file already counts these rows
        header = self._header()
        try:
            atomic_write(self.path, lambda fh: (fh.write(header), fh.write(data)), self.fsync)
        except BaseException:
            self.frames = 0
            raise
        self._fh = open(self.path, "r+b", buffering=0)
        self._header_len = len(header)
        self._end = len(header) + len(data)

    def _patch_header(self) -> None:
        header = self._header()
        if len(header) != self._header_len:  # pragma: no cover - fixed-width fields make this impossible
            raise OutputError(f"{self.path}: BVH header changed length ({self._header_len} -> {len(header)})")
        os.pwrite(self._fh.fileno(), header, 0)
        if self.fsync:
            os.fsync(self._fh.fileno())

    def set_frame_time(self, frame_time_s: float) -> None:
        """Frame time for the next header rewrite (the writer refines its frame rate estimate)."""
        self.frame_time_s = float(frame_time_s)

    def close(self) -> None:
        """Rewrite the header one last time and close the file. Idempotent."""
        if self._fh is None:
            return
        try:
            self._patch_header()
        finally:
            self._fh.close()
            self._fh = None


def write_bvh(path: Union[str, Path], poses: np.ndarray, joints: np.ndarray, frame_time_s: float,
              parents: Sequence[int] = SMPL_PARENTS, names: Sequence[str] = SMPL_JOINT_NAMES,
              fsync: bool = False) -> Path:
    """Write poses (T, 72) + camera-frame joints (T, 24, 3) m (all rows valid) as a BVH file, atomically.

    World: Y up (camera frame turned 180 deg about x), centimetres; root channels Xposition Yposition
    Zposition Zrotation Xrotation Yrotation, joints Zrotation Xrotation Yrotation (R = Rz Rx Ry), degrees.
    The file is the one `BvhStream` writes (same header layout), built in a temporary file and renamed.
    """
    path = Path(path)
    poses = np.asarray(poses, dtype=np.float64)
    joints = np.asarray(joints, dtype=np.float64)
    T = poses.shape[0]
    if T == 0 or poses.shape != (T, 72) or joints.shape != (T, 24, 3):
        raise OutputError(f"write_bvh needs poses (T, 72) and joints (T, 24, 3) with T >= 1, got {poses.shape}, "
                          f"{joints.shape}")
    if not (np.isfinite(poses).all() and np.isfinite(joints).all()):
        raise OutputError("write_bvh: poses and joints must be finite (fill frames without a body first)")
    tmp = path.with_name(f".{path.name}.part")
    stream = BvhStream(tmp, frame_time_s, parents, names, fsync)
    try:
        for i in range(0, T, 1024):
            stream.add(poses[i:i + 1024], joints[i:i + 1024], np.ones(min(1024, T - i), bool))
        stream.close()
        os.replace(tmp, path)
    except BaseException:
        stream.close()
        tmp.unlink(missing_ok=True)
        raise
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
    chunk_frames: rewrite the open part / append to motion.bvh at least this often; part_frames: rows per
    results part (the most rows held in memory); fps: frame rate for the npz and the BVH (None: from the
    timestamps of the first part, else 30); fsync: fsync every write (power-loss safety, slower).
    """

    def __init__(self, out_dir: Union[str, Path], *, meshes: Optional[str] = None, faces: Optional[np.ndarray] = None,
                 bvh: bool = True, overwrite: bool = False, chunk_frames: int = 30, part_frames: int = 4096,
                 fps: Optional[float] = None, fsync: bool = False):
        self.out_dir = Path(out_dir)
        if meshes not in (None, "ply", "obj"):
            raise OutputError(f"meshes must be None, 'ply' or 'obj', got {meshes!r}")
        for name, value in (("chunk_frames", chunk_frames), ("part_frames", part_frames)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OutputError(f"{name} must be an int >= 1, got {value!r}")
        if fps is not None and not (isinstance(fps, (int, float)) and fps > 0):
            raise OutputError(f"fps must be > 0, got {fps!r}")
        self.meshes, self.bvh, self.overwrite = meshes, bool(bvh), bool(overwrite)
        self.faces = None if faces is None else np.asarray(faces, dtype=np.int64)
        self.chunk_frames, self.part_frames, self.fps, self.fsync = chunk_frames, part_frames, fps, bool(fsync)
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
        self._table = _Table(min(256, part_frames), part_frames)  # the open part's rows
        self._part = 0                 # index of the open part
        self._closed_rows = 0          # rows in the closed parts
        self._flushed = 0              # rows of the open part in its file and in motion.bvh
        self._rate: Optional[float] = None  # frame rate measured on the first part, then fixed
        self._bvh_stream: Optional[BvhStream] = None
        self._jsonl_bytes = 0
        self.closed = False

    # ------------------------------------------------------------------ paths
    @property
    def results_path(self) -> Path:
        """results.npz: the joined table, written at close."""
        return self.out_dir / RESULTS

    def part_path(self, index: int) -> Path:
        """results_<index:03d>.npz."""
        return self.out_dir / part_name(index)

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

    def _part_files(self) -> list[Path]:
        if not self.out_dir.is_dir():
            return []
        return sorted(p for p in self.out_dir.iterdir() if PART_PATTERN.fullmatch(p.name))

    def _check_existing(self) -> None:
        mine = [self.out_dir / RESULTS, self.out_dir / FRAMES, self.out_dir / BVH]
        existing = [p for p in mine if p.exists()] + self._part_files() + self._mesh_files()
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
        return self._closed_rows + self._table.rows

    @property
    def rows_in_memory(self) -> int:
        """Rows of the open part held in memory (at most part_frames)."""
        return self._table.rows

    @property
    def rows_allocated(self) -> int:
        """Rows the in-memory columns have room for (at most part_frames)."""
        return self._table.capacity

    @property
    def parts_closed(self) -> int:
        return self._part

    def write(self, result: FrameResult) -> None:
        """Record one frame: append to frames.jsonl (flushed), mesh file, and the open part's rows."""
        if self.closed:
            raise OutputError("OutputWriter is closed")
        if self._table.rows >= self.part_frames:  # an earlier close of this part failed (disk full): retry
            self._close_part()
        row = self.frames_written
        if self.folder_gone():
            raise OutputError(f"{self.out_dir}: the output folder was removed or unmounted during the run "
                              f"(at frame row {row}); nothing more can be written there")
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
        if rows >= self.part_frames:
            self._close_part()
        elif rows - self._flushed >= max(self.chunk_frames, int(0.1 * rows)):
            self.flush()

    def folder_gone(self) -> bool:
        """True when frames.jsonl is no longer linked in the file system (its folder was removed, or the disk
        unmounted): writes to the open file would still succeed and silently go nowhere."""
        try:
            return os.fstat(self._jsonl.fileno()).st_nlink == 0 or not self.out_dir.is_dir()
        except (OSError, ValueError):
            return True

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
        """fps if given; else 1 / the median positive timestamp step of the first part that has one (fixed
        when that part closes); 30 until then."""
        if self.fps is not None:
            return float(self.fps)
        if self._rate is not None:
            return self._rate
        steps = np.diff(self._table.column("timestamps_usec"))
        steps = steps[steps > 0]
        return float(1e6 / np.median(steps)) if steps.size else 30.0

    def _arrays(self) -> dict[str, np.ndarray]:
        """The open part's arrays; the per-frame ones are views of the writer's columns (no copy)."""
        out = self._table.arrays()
        out["mocap_framerate"] = np.array(self._frame_rate())
        out["gender"] = np.array("neutral")
        out["joint_names"] = np.array(SMPL_JOINT_NAMES)
        out["coordinate_frame"] = np.array("depth camera, OpenCV axes (x right, y down, z forward), metres")
        return out

    def table(self) -> dict[str, np.ndarray]:
        """The results arrays for every frame written so far: the closed parts read back from disk and the
        open part (copies: the caller may change them). Memory: the whole run; meant for tests and tools."""
        tables = [read_part(self.part_path(k)) for k in range(self._part)]
        return concat_tables(tables + [{k: v.copy() for k, v in self._arrays().items()}])

    def flush(self) -> None:
        """Rewrite the open part atomically and append its new rows to motion.bvh (then patch its header)."""
        table = self._arrays()
        if self._table.rows or self.frames_written == 0:  # an empty run still gets an (empty) results file
            atomic_write(self.part_path(self._part), lambda fh: np.savez(fh, **table), self.fsync)
        if self.bvh:
            new = slice(self._flushed, self._table.rows)
            if self._bvh_stream is None and table["valid"][new].any():
                self._bvh_stream = BvhStream(self.bvh_path, 1.0 / self._frame_rate(), fsync=self.fsync)
                self._bvh_stream.skip(self._closed_rows + self._flushed)  # earlier frames, none with a body
            if self._bvh_stream is not None:
                self._bvh_stream.set_frame_time(1.0 / self._frame_rate())
                self._bvh_stream.add(table["poses"][new], table["joints"][new], table["valid"][new])
        self._flushed = self._table.rows

    def _close_part(self) -> None:
        """The open part is full: write it a last time and start the next one (reusing the columns)."""
        self.flush()
        if self.fps is None and self._rate is None:
            steps = np.diff(self._table.column("timestamps_usec"))
            if (steps > 0).any():
                self._rate = self._frame_rate()
        self._closed_rows += self._table.rows
        self._part += 1
        self._table.reset()
        self._flushed = 0

    def close(self) -> None:
        """Final flush, close motion.bvh, join the parts into results.npz; closes frames.jsonl. Idempotent.

        Raises OutputError when the final rows or the join could not be written (disk full); then the
        folder still holds the parts as last written, readable with app.results_reader.load_results."""
        if self.closed:
            return
        if self.folder_gone():
            self.closed = True
            self._jsonl.close()
            if self._bvh_stream is not None and self._bvh_stream._fh is not None:
                self._bvh_stream._fh.close()
            raise OutputError(f"{self.out_dir}: the output folder was removed or unmounted during the run; "
                              f"its outputs are gone")
        problems: list[str] = []
        try:
            try:
                self.flush()
            except OSError as exc:  # disk full etc.: the files from the last successful flush stay as they were
                problems.append(f"the final rows could not be written ({exc.strerror or exc}); the results hold "
                                f"the rows up to row {self._closed_rows + self._flushed}, {FRAMES} holds all "
                                f"{self.frames_written}")
            if self._bvh_stream is not None:
                try:
                    self._bvh_stream.close()
                except OSError as exc:
                    problems.append(f"{BVH}: header not updated ({exc.strerror or exc})")
            elif self.bvh and self.frames_written:
                log.warning("no frame had a body: %s not written", self.bvh_path)
            try:
                join_parts(self.out_dir, self.fsync)
            except (OSError, ResultsError) as exc:
                problems.append(f"the parts were not joined into {RESULTS} ({getattr(exc, 'strerror', None) or exc});"
                                f" read them with app.results_reader.load_results")
        finally:
            self.closed = True
            self._jsonl.close()
            if self._bvh_stream is not None and self._bvh_stream._fh is not None:
                self._bvh_stream._fh.close()
        if problems:
            raise OutputError(f"{self.out_dir}: " + "; ".join(problems))

    def __enter__(self) -> "OutputWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Table:
    """The open part's rows in memory, stored as the file stores them: one numpy column per key (float32
    bodies, int64 ids and timestamps, '<U5' modes, bool valid), grown by doubling up to `max_rows` and
    reused (reset) for the next part. Columns are allocated with np.empty and each row is written once,
    so resident memory grows by the bytes of the rows written (~0.7 kB per frame with 10 betas) up to
    max_rows rows. Frames without a body are NaN rows, valid False. `betas` gets its width from the first
    body of the run (10 until then); earlier rows of the part are NaN, a later body's betas are cut or
    NaN-padded to that width."""

    _BODY = (("poses", "theta", (72,)), ("betas", "beta", None), ("trans", "transl", (3,)),
             ("joints", "joints", (24, 3)), ("cam", "cam", (3,)), ("bbox", "bbox", (4,)))
    _FIXED = {"valid": ((), bool), "frame_ids": ((), np.int64), "timestamps_usec": ((), np.int64),
              "modes": ((), "<U5"), "requested_modes": ((), "<U5")}

    def __init__(self, capacity: int = 256, max_rows: Optional[int] = None) -> None:
        self.rows = 0
        self.max_rows = max_rows
        self.capacity = int(capacity)
        self._n_beta: Optional[int] = None
        self._cols: dict[str, np.ndarray] = {}
        for key, (shape, dtype) in self._FIXED.items():
            self._cols[key] = np.empty((self.capacity,) + shape, dtype)
        for key, _, shape in self._BODY:
            if shape is not None:
                self._cols[key] = np.empty((self.capacity,) + shape, np.float32)

    def _grow(self) -> None:
        new = 2 * self.capacity if self.max_rows is None else min(2 * self.capacity, self.max_rows)
        if new <= self.capacity:  # pragma: no cover - the writer closes a full part first
            raise OutputError(f"the open part is full ({self.max_rows} rows)")
        self.capacity = new
        for key, col in self._cols.items():
            bigger = np.empty((self.capacity,) + col.shape[1:], col.dtype)
            bigger[:self.rows] = col[:self.rows]
            self._cols[key] = bigger

    def reset(self) -> None:
        """Empty the table for the next part; the columns (and the betas width) are kept."""
        self.rows = 0

    def append(self, frame_id: int, timestamp_usec: int, mode: str, requested_mode: str, body: Any) -> None:
        """One row; body: None or anything with theta (72), beta, transl (3), joints (24, 3), cam (3), bbox (4)."""
        if self.rows == self.capacity:
            self._grow()
        i = self.rows
        if body is not None and self._n_beta is None:  # the first body fixes the betas width
            self._n_beta = int(np.asarray(body.beta).reshape(-1).shape[0])
            self._cols["betas"] = np.empty((self.capacity, self._n_beta), np.float32)
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
        """Every per-frame results key -> a view of its first `rows` entries (betas (T, 10) NaN before
        any body)."""
        out = {key: self.column(key) for key, _, _ in self._BODY if key in self._cols}
        if "betas" not in out:
            out["betas"] = np.full((self.rows, 10), np.nan, np.float32)
        out = {key: out[key] for key, _, _ in self._BODY}
        out.update({key: self.column(key) for key in self._FIXED})
        return out
