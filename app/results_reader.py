"""Read a run's results table back: one `results.npz`, or the `results_NNN.npz` parts a run left behind.

The table (see app.outputs) has one row per processed frame, in frame order:
poses (T, 72) float32 axis-angle, betas (T, B) float32, trans (T, 3), joints (T, 24, 3) metres, depth
camera frame, cam (T, 3), bbox (T, 4) depth px, valid (T,) bool, frame_ids (T,) int64, timestamps_usec (T,)
int64, modes (T,) '<U5', requested_modes (T,) '<U5'; and the run-wide values mocap_framerate () float64,
gender () str, joint_names (24,) str, coordinate_frame () str.

Layouts on disk, in the order `load_results` looks for them:

    results.npz                     the whole table in one file: what a run that closed normally leaves
                                    (the writer joins its parts at close), and the only layout before
                                    parts existed. When it is present, leftover parts are ignored (a
                                    crash between the join and the removal of the parts leaves both).
    results_000.npz, _001, ...      parts of `part_frames` rows each, every one holding the same keys
                                    as results.npz for its rows; the last one may be shorter (the part
                                    that was open when the run stopped: a complete prefix of it). Rows
                                    follow the part numbers; the run-wide values come from the last part.

`python -m app.results_reader FOLDER [--join]` prints the rows and files; --join turns the parts of a
killed run into results.npz. Every file is read with np.load(allow_pickle=False). Nothing here holds
more than one part in memory except `load_results`, which returns the joined table (its size is the
run's); `iter_parts` and `join_parts` work one part at a time.
"""
from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Any, Iterator, Union

import numpy as np

__all__ = ["ResultsError", "RESULTS", "ROW_KEYS", "part_name", "part_files", "result_files", "iter_parts",
           "load_results", "concat_tables", "join_parts", "count_rows", "main"]

RESULTS = "results.npz"
ROW_KEYS = ("poses", "betas", "trans", "joints", "cam", "bbox", "valid", "frame_ids", "timestamps_usec", "modes",
            "requested_modes")                       # one entry per frame; every other key is run-wide
PART_PATTERN = re.compile(r"results_(\d{3,})\.npz")  # a part's file name; group 1: its number


class ResultsError(RuntimeError):
    """The results in a folder are missing, incomplete or unreadable; one-line message naming the file."""


def atomic_write(path: Path, write: Any, fsync: bool = False) -> None:
    """Call write(file object) on a temporary file next to `path`, then rename it over `path` (a reader sees
    the old file or the new one, never a torn one; the temporary file is removed on any failure)."""
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


def part_name(index: int) -> str:
    """File name of part `index` (0-based): results_000.npz, ..., results_999.npz, results_1000.npz."""
    return f"results_{index:03d}.npz"


def part_files(out_dir: Union[str, Path]) -> list[Path]:
    """The parts in `out_dir`, in row order; ResultsError when a number is missing (results_000, _002)."""
    out_dir = Path(out_dir)
    found: dict[int, Path] = {}
    if out_dir.is_dir():
        for p in out_dir.iterdir():
            m = PART_PATTERN.fullmatch(p.name)
            if m and p.is_file():
                found[int(m.group(1))] = p
    for k in range(len(found)):
        if k not in found:
            raise ResultsError(f"{out_dir / part_name(k)}: missing (parts {sorted(found)} present); rows after "
                               f"part {k - 1} cannot be placed in order")
    return [found[k] for k in range(len(found))]


def read_part(path: Path) -> dict[str, np.ndarray]:
    """All arrays of one results file (a part or results.npz); ResultsError naming it when unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ResultsError(f"{path}: not a readable results file ({exc})") from exc


def _check_rows(path: Path, table: dict[str, np.ndarray]) -> int:
    missing = [k for k in ROW_KEYS if k not in table]
    if missing:
        raise ResultsError(f"{path}: no {missing[0]!r} array (not a FuseMesh results file?)")
    lengths = {k: table[k].shape[0] if table[k].ndim else -1 for k in ROW_KEYS}
    if len(set(lengths.values())) != 1:
        raise ResultsError(f"{path}: per-frame arrays disagree on the row count {lengths}")
    return lengths["poses"]


def result_files(out_dir: Union[str, Path]) -> list[Path]:
    """[results.npz] if present, else the parts in row order; ResultsError when there is neither."""
    out_dir = Path(out_dir)
    single = out_dir / RESULTS
    paths = [single] if single.is_file() else part_files(out_dir)
    if not paths:
        raise ResultsError(f"{out_dir}: no {RESULTS} and no {part_name(0)} (no results written here)")
    return paths


def iter_parts(out_dir: Union[str, Path]) -> Iterator[dict[str, np.ndarray]]:
    """Yield the table one file at a time, in row order: results.npz alone if present, else each part."""
    for path in result_files(out_dir):
        table = read_part(path)
        _check_rows(path, table)
        yield table


def _beta_width(parts: list[dict[str, Any]]) -> int:
    """The betas width of the joined table: that of the first part with a body (the writer fixes it at the
    first body; parts closed before it have NaN betas of the default width), else the first part's."""
    for p in parts:
        if np.any(p["valid"]):
            return int(p["betas"].shape[1])
    return int(parts[0]["betas"].shape[1])


def _fit_betas(betas: np.ndarray, width: int) -> np.ndarray:
    if betas.shape[1] == width:
        return betas
    out = np.full((betas.shape[0], width), np.nan, betas.dtype)
    n = min(width, betas.shape[1])
    out[:, :n] = betas[:, :n]
    return out


def concat_tables(tables: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Join tables (key -> array, each as one results file holds it) in row order: per-frame keys are
    concatenated (betas cut or NaN-padded to the first body's width), run-wide keys come from the last."""
    if not tables:
        raise ResultsError("no results tables to join")
    if len(tables) == 1:
        return tables[0]
    width = _beta_width(tables)
    out: dict[str, np.ndarray] = {}
    for key in tables[-1]:
        if key in ROW_KEYS:
            cols = [_fit_betas(t[key], width) if key == "betas" else t[key] for t in tables]
            out[key] = np.concatenate(cols, axis=0)
        else:
            out[key] = tables[-1][key]
    return out


def load_results(out_dir: Union[str, Path]) -> dict[str, np.ndarray]:
    """The whole results table of the run in `out_dir` (key -> array, in results.npz's key order), from
    results.npz or joined from its parts in frame order. Memory: the size of the table."""
    return concat_tables(list(iter_parts(out_dir)))


def count_rows(out_dir: Union[str, Path]) -> int:
    """Rows in the run's table (reads each file's frame_ids only)."""
    total = 0
    for path in result_files(out_dir):
        try:
            with np.load(path, allow_pickle=False) as z:
                total += int(z["frame_ids"].shape[0])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            raise ResultsError(f"{path}: not a readable results file ({exc})") from exc
    return total


def join_parts(out_dir: Union[str, Path], fsync: bool = False, remove_parts: bool = True) -> Path:
    """Write results.npz from the parts in `out_dir` (same keys, dtypes and order as np.savez would give),
    one part's column at a time, atomically (temporary file + rename); then remove the parts.

    Memory: one column of one part. Disk: the parts' size again until they are removed. Refuses to
    replace an existing results.npz. A single part is renamed, not copied.
    """
    out_dir = Path(out_dir)
    target = out_dir / RESULTS
    if target.exists():
        raise ResultsError(f"{target}: already exists; not joining the parts over it")
    paths = part_files(out_dir)
    if not paths:
        raise ResultsError(f"{out_dir}: no {part_name(0)} to join")
    if len(paths) == 1:
        os.replace(paths[0], target)
        return target
    rows, keys, valid_any, shapes = [], None, [], []
    for path in paths:  # first pass: shapes and dtypes only (frame_ids and valid are small)
        try:
            with np.load(path, allow_pickle=False) as z:
                keys = keys or list(z.files)
                if list(z.files) != keys:
                    raise ResultsError(f"{path}: keys {z.files} differ from {paths[0].name}'s {keys}")
                rows.append(int(z["frame_ids"].shape[0]))
                valid_any.append(bool(np.any(z["valid"])))
                shapes.append({k: (z[k].shape, z[k].dtype) for k in ROW_KEYS})
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            raise ResultsError(f"{path}: not a readable results file ({exc})") from exc
    first_body = next((i for i, v in enumerate(valid_any) if v), 0)
    width = int(shapes[first_body]["betas"][0][1])
    total = sum(rows)

    def write(fh: Any) -> None:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key in keys:
                with zf.open(key + ".npy", "w", force_zip64=True) as member:
                    if key not in ROW_KEYS:
                        with np.load(paths[-1], allow_pickle=False) as z:
                            np.lib.format.write_array(member, z[key], allow_pickle=False)
                        continue
                    shape, dtype = shapes[0][key]
                    shape = (total, width) if key == "betas" else (total,) + tuple(shape[1:])
                    np.lib.format.write_array_header_1_0(member, {
                        "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
                    for path in paths:
                        with np.load(path, allow_pickle=False) as z:
                            col = z[key]
                        if key == "betas":
                            col = _fit_betas(col, width)
                        member.write(np.ascontiguousarray(col, dtype=dtype).tobytes())

    atomic_write(target, write, fsync)
    if remove_parts:
        for path in paths:
            path.unlink(missing_ok=True)
    return target


def main(argv: Any = None) -> int:
    """`python -m app.results_reader FOLDER [--join]`: print the rows and files of a run's results;
    --join writes results.npz from the parts a killed run left (and removes them)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m app.results_reader", description=main.__doc__.splitlines()[0])
    ap.add_argument("folder", help="a run's output folder")
    ap.add_argument("--join", action="store_true", help="join results_NNN.npz into results.npz")
    args = ap.parse_args(argv)
    try:
        folder = Path(args.folder)
        if args.join:
            join_parts(folder)
        files = result_files(folder)
        print(f"{folder}: {count_rows(folder)} rows in {', '.join(p.name for p in files)}")
    except (ResultsError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
