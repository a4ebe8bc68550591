"""app.results_reader: one results.npz (old and joined runs) or results_NNN.npz parts, read in frame order.

The tables are built here with plain numpy in the layout app.outputs documents (no writer involved), so
the reader is checked against the format, not against the writer's own code.
"""
from __future__ import annotations

import numpy as np
import pytest

from app.results_reader import (ROW_KEYS, ResultsError, count_rows, iter_parts, join_parts, load_results,
                                part_files)

JOINT_NAMES = np.array([f"j{i}" for i in range(24)])


def table(first: int, n: int, valid: list[bool] | None = None, n_beta: int = 10, rate: float = 30.0) -> dict:
    """n rows for frames first .. first + n - 1, values derived from the frame id (NaN where not valid)."""
    valid = [True] * n if valid is None else valid
    ids = np.arange(first, first + n, dtype=np.int64)
    ok = np.array(valid, bool)

    def col(*shape: int) -> np.ndarray:
        x = (ids.reshape((n,) + (1,) * len(shape)) + np.zeros((n,) + shape)).astype(np.float32) / 1000
        x[~ok] = np.nan
        return x

    return {"poses": col(72), "betas": col(n_beta), "trans": col(3), "joints": col(24, 3), "cam": col(3),
            "bbox": col(4), "valid": ok, "frame_ids": ids, "timestamps_usec": 1_000_000 + ids * 33_333,
            "modes": np.array(["rgbd" if v else "none" for v in valid], "<U5"),
            "requested_modes": np.array(["auto"] * n, "<U5"), "mocap_framerate": np.array(rate),
            "gender": np.array("neutral"), "joint_names": JOINT_NAMES, "coordinate_frame": np.array("camera")}


def save(path, t: dict) -> None:
    np.savez(path, **t)


def test_an_old_single_results_npz_reads_as_it_was_written(tmp_path):
    t = table(0, 5, [True, False, True, True, False])
    save(tmp_path / "results.npz", t)
    got = load_results(tmp_path)
    assert list(got) == list(t)                               # results.npz's key order
    for k in t:
        np.testing.assert_array_equal(got[k], t[k])
    assert got["modes"].dtype == np.dtype("<U5") and count_rows(tmp_path) == 5


def test_parts_are_joined_in_frame_order_with_the_run_wide_values_of_the_last(tmp_path):
    # part 0: no body yet (NaN betas, default width 10); parts 1-2: bodies with 16 betas; part 3: open, short
    save(tmp_path / "results_000.npz", table(0, 4, [False] * 4, rate=30.0))
    save(tmp_path / "results_001.npz", table(4, 4, [True, False, True, True], n_beta=16, rate=29.5))
    save(tmp_path / "results_002.npz", table(8, 4, n_beta=16, rate=29.5))
    save(tmp_path / "results_003.npz", table(12, 2, n_beta=16, rate=29.97))
    (tmp_path / "results.npz.txt").write_text("not a part")
    assert [p.name for p in part_files(tmp_path)] == [f"results_00{k}.npz" for k in range(4)]
    got = load_results(tmp_path)
    assert got["frame_ids"].tolist() == list(range(14)) and count_rows(tmp_path) == 14
    assert got["valid"].tolist() == [False] * 4 + [True, False, True, True] + [True] * 6
    assert got["betas"].shape == (14, 16) and np.isnan(got["betas"][:4]).all()
    np.testing.assert_array_equal(got["betas"][9], np.full(16, 0.009, np.float32))
    np.testing.assert_array_equal(got["joints"][13], np.full((24, 3), 0.013, np.float32))
    assert got["joints"].dtype == np.float32 and got["timestamps_usec"][13] == 1_000_000 + 13 * 33_333
    assert float(got["mocap_framerate"]) == 29.97 and got["joint_names"].tolist() == JOINT_NAMES.tolist()
    assert [len(p["frame_ids"]) for p in iter_parts(tmp_path)] == [4, 4, 4, 2]


def test_join_parts_writes_the_old_single_file_one_part_at_a_time(tmp_path):
    parts = [table(0, 3, [False] * 3), table(3, 3, [True, False, True], n_beta=16), table(6, 2, n_beta=16)]
    for k, t in enumerate(parts):
        save(tmp_path / f"results_00{k}.npz", t)
    expected = load_results(tmp_path)
    path = join_parts(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.npz"]          # parts removed, no temp file
    with np.load(path, allow_pickle=False) as z:                                   # plain numpy reads it
        assert z.files == list(expected)
        for k in expected:
            assert z[k].dtype == expected[k].dtype and z[k].shape == expected[k].shape, k
            np.testing.assert_array_equal(z[k], expected[k])
    # the same bytes of data as np.savez of the joined table would hold
    save(tmp_path / "ref.npz", expected)
    with np.load(tmp_path / "ref.npz") as ref, np.load(path) as z:
        assert all(ref[k].tobytes() == z[k].tobytes() for k in ROW_KEYS)
    with pytest.raises(ResultsError, match=r"results\.npz: already exists"):
        join_parts(tmp_path)


def test_a_finished_results_npz_wins_over_leftover_parts(tmp_path):
    save(tmp_path / "results_000.npz", table(0, 2))          # a crash between the join and the removal
    save(tmp_path / "results.npz", table(0, 5))
    assert load_results(tmp_path)["frame_ids"].tolist() == [0, 1, 2, 3, 4]


def test_missing_torn_or_absent_results_are_one_line_errors(tmp_path):
    with pytest.raises(ResultsError, match=r"no results\.npz and no results_000\.npz"):
        load_results(tmp_path)
    save(tmp_path / "results_000.npz", table(0, 2))
    save(tmp_path / "results_002.npz", table(4, 2))
    with pytest.raises(ResultsError, match=r"results_001\.npz: missing \(parts \[0, 2\] present\)"):
        load_results(tmp_path)
    (tmp_path / "results_002.npz").unlink()
    data = (tmp_path / "results_000.npz").read_bytes()
    (tmp_path / "results_001.npz").write_bytes(data[: len(data) // 2])           # torn (not by the writer)
    with pytest.raises(ResultsError, match=r"results_001\.npz: not a readable results file") as exc:
        load_results(tmp_path)
    assert "\n" not in str(exc.value)
    t = table(2, 2)
    del t["valid"]
    save(tmp_path / "results_001.npz", t)
    with pytest.raises(ResultsError, match=r"results_001\.npz: no 'valid' array"):
        load_results(tmp_path)


def test_the_command_line_joins_a_killed_runs_parts(tmp_path, capsys):
    from app.results_reader import main

    save(tmp_path / "results_000.npz", table(0, 3))
    save(tmp_path / "results_001.npz", table(3, 2))
    assert main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == f"{tmp_path}: 5 rows in results_000.npz, results_001.npz"
    assert main([str(tmp_path), "--join"]) == 0
    assert capsys.readouterr().out.strip() == f"{tmp_path}: 5 rows in results.npz"
    assert load_results(tmp_path)["frame_ids"].tolist() == [0, 1, 2, 3, 4]
    assert main([str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nothing'}: no results.npz and no results_000.npz" \
                                              " (no results written here)"
