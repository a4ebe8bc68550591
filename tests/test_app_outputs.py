"""app.outputs: results.npz / frames.jsonl / meshes / motion.bvh, crash safety and overwrite refusal.

Bodies come from the toy SMPL-format body through the real smplx-based BodyModel (so joints, poses and
the kinematic chain are consistent); meshes are read back with Open3D and the BVH is parsed and
forward-kinematised here, independently of the writer.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from app.outputs import (SMPL_JOINT_NAMES, SMPL_PARENTS, OutputError, OutputWriter, bvh_rest_offsets, write_bvh,
                         write_mesh)
from app.results import BodyEstimate, FrameResult, InputMode
from app.results_reader import load_results
from model.body import BodyModel
from toy_body import TOY_JOINTS, write_toy_body

PERIOD = 33_333  # µs, 30 fps


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> BodyModel:
    return BodyModel.from_file(write_toy_body(tmp_path_factory.mktemp("toy") / "toy.npz"))


def posed(toy: BodyModel, n: int, seed: int = 0, same_shape: bool = False) -> tuple[np.ndarray, ...]:
    """n random bodies in a camera frame: theta (n,72) (root turns the Y-up body upright for a y-down
    camera), betas (n,10), transl (n,3), vertices (n,V,3), joints (n,24,3) (transl included)."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0.0, 0.3, (n, 72))
    theta[:, :3] = np.array([math.pi, 0.0, 0.0]) + rng.normal(0, 0.2, (n, 3))
    betas = rng.normal(0.0, 0.5, (1 if same_shape else n, 10)).repeat(n if same_shape else 1, axis=0)
    transl = np.array([0.1, 0.2, 2.5]) + rng.normal(0, 0.1, (n, 3))
    with torch.no_grad():
        out = toy(betas=torch.tensor(betas, dtype=torch.float32),
                  body_pose=torch.tensor(theta[:, 3:], dtype=torch.float32),
                  global_orient=torch.tensor(theta[:, :3], dtype=torch.float32),
                  transl=torch.tensor(transl, dtype=torch.float32))
    return theta, betas, transl, out.vertices.numpy().astype(np.float64), out.joints.numpy().astype(np.float64)


def result(i: int, body: BodyEstimate | None, mode: InputMode = InputMode.RGBD, message: str = "") -> FrameResult:
    return FrameResult(frame_id=100 + i, timestamp_usec=1_000_000 + i * PERIOD, mode=mode, requested_mode="auto",
                       body=body, message=message, timings_ms={"infer": 12.5, "post": 1.0}, dropped_frames=i % 2)


def bodies(toy: BodyModel, n: int, seed: int = 0) -> list[BodyEstimate]:
    theta, betas, transl, verts, joints = posed(toy, n, seed)
    return [BodyEstimate(theta=theta[i].astype(np.float32), beta=betas[i].astype(np.float32),
                         transl=transl[i].astype(np.float32), vertices=verts[i].astype(np.float32),
                         joints=joints[i].astype(np.float32), cam=np.array([0.9, 0.01, -0.02], np.float32),
                         bbox=np.array([10.5, 20.5, 110.5, 300.5], np.float32)) for i in range(n)]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------- tables
def test_every_frame_is_a_row_in_npz_and_jsonl(toy, tmp_path):
    bs = bodies(toy, 3)
    seq = [result(0, bs[0]), result(1, None, InputMode.DEPTH, "no person in view"), result(2, bs[1], InputMode.DEPTH),
           result(3, None, InputMode.NONE, "no usable stream"), result(4, bs[2], InputMode.RGB)]
    with OutputWriter(tmp_path / "out") as w:
        for r in seq:
            w.write(r)
    with np.load(tmp_path / "out" / "results.npz", allow_pickle=False) as z:
        assert z["poses"].shape == (5, 72) and z["betas"].shape == (5, 10) and z["trans"].shape == (5, 3)
        assert z["joints"].shape == (5, 24, 3) and z["cam"].shape == (5, 3) and z["bbox"].shape == (5, 4)
        assert z["valid"].tolist() == [True, False, True, False, True]
        assert z["frame_ids"].tolist() == [100, 101, 102, 103, 104]
        assert z["timestamps_usec"].tolist() == [1_000_000 + i * PERIOD for i in range(5)]
        assert z["modes"].tolist() == ["rgbd", "depth", "depth", "none", "rgb"]
        assert float(z["mocap_framerate"]) == pytest.approx(1e6 / PERIOD)
        assert str(z["gender"]) == "neutral" and z["joint_names"][0] == "pelvis"
        assert np.isnan(z["poses"][1]).all() and np.isnan(z["trans"][3]).all()
        np.testing.assert_allclose(z["poses"][2], bs[1].theta)
        np.testing.assert_allclose(z["trans"][4], bs[2].transl)
        np.testing.assert_allclose(z["joints"][0], bs[0].joints)
        np.testing.assert_allclose(z["betas"][0], bs[0].beta)
    rows = read_jsonl(tmp_path / "out" / "frames.jsonl")
    assert [r["row"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[1]["body"] is None and rows[1]["message"] == "no person in view" and rows[1]["mode"] == "depth"
    assert rows[3]["dropped_frames"] == 1 and rows[0]["timings_ms"] == {"infer": 12.5, "post": 1.0}
    np.testing.assert_allclose(rows[2]["body"]["theta"], bs[1].theta, atol=1e-6)
    np.testing.assert_allclose(rows[4]["body"]["joints"], bs[2].joints, atol=1e-6)
    assert rows[0]["body"]["bbox"] == [10.5, 20.5, 110.5, 300.5] and rows[0]["mesh"] is None


def test_columns_grow_past_their_capacity_with_the_file_dtypes_and_beta_width(toy, tmp_path):
    bs = bodies(toy, 3)
    wide = BodyEstimate(**{**bs[1].__dict__, "beta": np.arange(16, dtype=np.float32)})   # cut to 10
    narrow = BodyEstimate(**{**bs[2].__dict__, "beta": np.arange(8, dtype=np.float32)})  # NaN-padded to 10
    n = 600                                                 # the columns start at 256 rows: two doublings
    seq = [None] * 5 + [bs[0]] + [wide, narrow, None] * ((n - 6) // 3)
    with OutputWriter(tmp_path / "out", bvh=False, chunk_frames=1000) as w:
        for i, b in enumerate(seq):
            w.write(result(i, b, InputMode.RGBD if b is not None else InputMode.DEPTH))
        assert w.frames_written == n
        table = w.table()
        table["poses"][:] = 0.0                             # a copy: the writer's rows are not touched
    with np.load(tmp_path / "out" / "results.npz", allow_pickle=False) as z:
        assert list(z.keys())[:11] == ["poses", "betas", "trans", "joints", "cam", "bbox", "valid", "frame_ids",
                                       "timestamps_usec", "modes", "requested_modes"]
        assert {k: z[k].dtype.str for k in ("poses", "betas", "joints", "valid", "frame_ids", "modes")} == {
            "poses": "<f4", "betas": "<f4", "joints": "<f4", "valid": "|b1", "frame_ids": "<i8", "modes": "<U5"}
        assert z["betas"].shape == (n, 10) and z["frame_ids"].tolist() == [100 + i for i in range(n)]
        assert z["valid"].tolist() == [b is not None for b in seq]
        assert np.isnan(z["betas"][:5]).all() and np.isnan(z["poses"][:5]).all()
        np.testing.assert_array_equal(z["betas"][5], bs[0].beta)
        np.testing.assert_array_equal(z["betas"][n - 3], np.arange(10))
        np.testing.assert_array_equal(z["betas"][n - 2, :8], np.arange(8))
        assert np.isnan(z["betas"][n - 2, 8:]).all() and np.isnan(z["joints"][n - 1]).all()
        np.testing.assert_array_equal(z["poses"][n - 3], bs[1].theta)
        np.testing.assert_array_equal(z["joints"][n - 2], bs[2].joints)
        assert z["modes"][4] == "depth" and z["modes"][n - 2] == "rgbd"


def test_the_rows_in_memory_cost_about_the_bytes_of_the_file(toy, tmp_path):
    import tracemalloc

    b = bodies(toy, 1)[0]
    n = 2000
    w = OutputWriter(tmp_path / "out", bvh=False)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            w.write(result(i, b if i % 4 else None))
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
        w.close()
    # a row is 705 bytes in the file (72 + 10 + 3 + 72 + 3 + 4 float32, 2 int64, 2 '<U5', a bool); the
    # columns hold 2048 rows; Python objects per row (the earlier design) cost ~1.8 kB
    assert held < 1.05 * 2048 * 705 + 64 * 1024, held


def test_jsonl_is_flushed_per_frame_and_npz_is_rewritten_atomically_in_chunks(toy, tmp_path):
    bs = bodies(toy, 7)
    out = tmp_path / "run"
    w = OutputWriter(out, chunk_frames=3)
    for i in range(2):
        w.write(result(i, bs[i]))
    assert len(read_jsonl(out / "frames.jsonl")) == 2        # on disk before close
    assert not (out / "results_000.npz").exists() and not (out / "results.npz").exists()
    w.write(result(2, bs[2]))                                 # third frame: the open part is written
    with np.load(out / "results_000.npz") as z:
        assert z["frame_ids"].tolist() == [100, 101, 102]
    w.write(result(3, bs[3]))
    with np.load(out / "results_000.npz") as z:               # still the complete 3-frame prefix
        assert len(z["frame_ids"]) == 3
    assert load_results(out)["frame_ids"].tolist() == [100, 101, 102]
    assert (out / "motion.bvh").read_text().count("\n") > 0
    assert "Frames: 3" in (out / "motion.bvh").read_text().splitlines()
    w.close()
    w.close()  # idempotent
    with np.load(out / "results.npz") as z:                   # joined at close (one part: renamed)
        assert len(z["frame_ids"]) == 4
    assert sorted(p.name for p in out.iterdir()) == ["frames.jsonl", "motion.bvh", "results.npz"]  # no temp files
    assert "Frames: 4" in (out / "motion.bvh").read_text().splitlines()
    with pytest.raises(OutputError, match="closed"):
        w.write(result(5, None))


def test_nonfinite_numbers_are_json_null(toy, tmp_path):
    body = bodies(toy, 1)[0]
    body.cam = np.array([np.nan, 0.0, np.inf], np.float32)
    with OutputWriter(tmp_path / "o", bvh=False) as w:
        w.write(result(0, body))
    row = read_jsonl(tmp_path / "o" / "frames.jsonl")[0]
    assert row["body"]["cam"] == [None, 0.0, None]


# ---------------------------------------------------------------------------------------- overwrite
def test_existing_outputs_are_never_replaced_without_overwrite(toy, tmp_path):
    out = tmp_path / "o"
    with OutputWriter(out, meshes="ply", faces=toy.faces) as w:
        w.write(result(0, bodies(toy, 1)[0]))
    (out / "notes.txt").write_text("mine")
    before = (out / "results.npz").read_bytes()
    with pytest.raises(OutputError, match=r"results\.npz.*already exists \(pass --overwrite to replace\)"):
        OutputWriter(out)
    assert (out / "results.npz").read_bytes() == before and (out / "meshes" / "mesh_000000.ply").exists()
    with OutputWriter(out, overwrite=True, bvh=False) as w:
        w.write(result(0, None))
    assert not (out / "meshes" / "mesh_000000.ply").exists() and not (out / "motion.bvh").exists()
    assert (out / "notes.txt").read_text() == "mine"          # not ours: left alone
    with np.load(out / "results.npz") as z:
        assert z["valid"].tolist() == [False]


def test_bad_output_arguments_are_one_line_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        OutputWriter(tmp_path / "file")
    with pytest.raises(OutputError, match="meshes must be"):
        OutputWriter(tmp_path / "o", meshes="stl")
    with pytest.raises(OutputError, match=r"\.ply or \.obj"):
        write_mesh(tmp_path / "m.stl", np.zeros((3, 3)))
    with pytest.raises(OutputError, match="faces must be"):
        write_mesh(tmp_path / "m.ply", np.zeros((3, 3)), np.array([[0, 1, 3]]))


# ---------------------------------------------------------------------------------------- meshes
@pytest.mark.parametrize("fmt", ["ply", "obj"])
def test_mesh_files_read_back_with_open3d(toy, tmp_path, fmt):
    import open3d as o3d

    bs = bodies(toy, 2)
    with OutputWriter(tmp_path / "o", meshes=fmt, faces=toy.faces) as w:
        w.write(result(0, bs[0]))
        w.write(result(1, None))
        w.write(result(2, bs[1]))
    rows = read_jsonl(tmp_path / "o" / "frames.jsonl")
    assert [r["mesh"] for r in rows] == [f"meshes/mesh_000000.{fmt}", None, f"meshes/mesh_000002.{fmt}"]
    mesh = o3d.io.read_triangle_mesh(str(tmp_path / "o" / rows[2]["mesh"]))
    faces = np.asarray(toy.faces)
    corners = np.asarray(mesh.vertices)[np.asarray(mesh.triangles)]  # (F, 3, 3): the OBJ reader re-indexes
    assert corners.shape == (len(faces), 3, 3)
    np.testing.assert_allclose(corners, bs[1].vertices[faces], atol=1e-5)
    if fmt == "ply":  # PLY keeps the vertex table as written, unused vertices included
        np.testing.assert_allclose(np.asarray(mesh.vertices), bs[1].vertices, atol=1e-6)


# ---------------------------------------------------------------------------------------- BVH
def parse_bvh(text: str) -> tuple[list[str], list[int], np.ndarray, list[list[str]], np.ndarray, float]:
    """-> names, parents, offsets (J,3), channels per joint, motion (T, C), frame time."""
    tokens = text.split()
    names, parents, offsets, channels = [], [], [], []
    stack: list[int] = []
    i = 0
    while tokens[i] != "MOTION":
        tok = tokens[i]
        if tok in ("ROOT", "JOINT"):
            names.append(tokens[i + 1])
            parents.append(stack[-1] if stack else -1)
            stack.append(len(names) - 1)
            i += 2
        elif tok == "End":
            stack.append(-2)  # end site
            i += 2
        elif tok == "OFFSET":
            if stack[-1] != -2:
                offsets.append([float(t) for t in tokens[i + 1:i + 4]])
            i += 4
        elif tok == "CHANNELS":
            n = int(tokens[i + 1])
            channels.append(tokens[i + 2:i + 2 + n])
            i += 2 + n
        elif tok == "}":
            stack.pop()
            i += 1
        else:
            i += 1
    frames = int(tokens[i + 2])
    frame_time = float(tokens[i + 5])
    motion = np.array(tokens[i + 6:], dtype=np.float64).reshape(frames, -1)
    return names, parents, np.array(offsets), channels, motion, frame_time


def _axis(axis: str, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return {"X": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), "Y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "Z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def bvh_fk(parents, offsets, channels, row) -> np.ndarray:
    """World positions (J, 3) of one motion row (BVH convention: channels applied in the listed order)."""
    J = len(parents)
    R, P = [None] * J, np.zeros((J, 3))
    k = 0
    for j in range(J):
        local, pos = np.eye(3), np.zeros(3)
        for ch in channels[j]:
            v = row[k]
            k += 1
            if ch.endswith("position"):
                pos["XYZ".index(ch[0])] = v
            else:
                local = local @ _axis(ch[0], v)
        if parents[j] < 0:
            R[j], P[j] = local, pos + offsets[j]
        else:
            p = parents[j]
            R[j], P[j] = R[p] @ local, P[p] + R[p] @ offsets[j]
    return P


def test_bvh_forward_kinematics_reproduces_the_joints(toy, tmp_path):
    theta, _, _, _, joints = posed(toy, 6, seed=3, same_shape=True)  # a BVH has one skeleton
    write_bvh(tmp_path / "m.bvh", theta, joints, 1 / 30)
    names, parents, offsets, channels, motion, frame_time = parse_bvh((tmp_path / "m.bvh").read_text())
    assert names[0] == "pelvis" and len(names) == 24 and motion.shape == (6, 6 + 23 * 3)
    assert frame_time == pytest.approx(1 / 30, abs=1e-6)
    smpl_index = [SMPL_JOINT_NAMES.index(n) for n in names]  # BVH lists the joints depth-first
    assert [-1 if p < 0 else smpl_index[p] for p in parents] == [SMPL_PARENTS[j] for j in smpl_index]
    to_cam = np.diag([1.0, -1.0, -1.0])  # BVH world (y up) -> camera frame, and cm -> m below
    for t in range(6):
        world = bvh_fk(parents, offsets, channels, motion[t]) / 100.0
        np.testing.assert_allclose(world @ to_cam.T, joints[t][smpl_index], atol=2e-4)


def test_bvh_rest_offsets_are_the_rest_skeleton(toy):
    theta, betas, _, _, joints = posed(toy, 4, seed=5)
    betas[:] = 0.0
    with torch.no_grad():
        out = toy(betas=torch.zeros(4, 10), body_pose=torch.tensor(theta[:, 3:], dtype=torch.float32),
                  global_orient=torch.tensor(theta[:, :3], dtype=torch.float32))
    offsets = bvh_rest_offsets(theta, out.joints.numpy().astype(np.float64))
    rest = TOY_JOINTS - TOY_JOINTS[list(SMPL_PARENTS)]  # toy joints are at beta 0 exactly
    rest[0] = 0.0
    np.testing.assert_allclose(offsets, rest, atol=1e-5)


def test_bvh_repeats_the_last_body_on_frames_without_one(toy, tmp_path):
    bs = bodies(toy, 2, seed=1)
    with OutputWriter(tmp_path / "o") as w:
        for r in (result(0, None), result(1, bs[0]), result(2, None), result(3, bs[1])):
            w.write(r)
    *_, motion, _ = parse_bvh((tmp_path / "o" / "motion.bvh").read_text())
    assert motion.shape[0] == 4
    np.testing.assert_array_equal(motion[0], motion[1])       # leading frame: the first body
    np.testing.assert_array_equal(motion[2], motion[1])       # held
    assert not np.allclose(motion[3], motion[1])


def test_no_bvh_when_no_frame_had_a_body(tmp_path):
    with OutputWriter(tmp_path / "o") as w:
        w.write(result(0, None, InputMode.DEPTH, "no person in view"))
    assert not (tmp_path / "o" / "motion.bvh").exists()
    with np.load(tmp_path / "o" / "results.npz") as z:
        assert z["valid"].tolist() == [False]


# ---------------------------------------------------------------------------------------- bounded memory: parts
def test_parts_close_at_the_boundary_and_rows_in_memory_never_exceed_a_part(toy, tmp_path):
    bs = bodies(toy, 5)
    out = tmp_path / "o"
    seq = [bs[i % 5] if i % 3 else None for i in range(21)]
    w = OutputWriter(out, part_frames=8, chunk_frames=3, bvh=False)
    for i, b in enumerate(seq):
        w.write(result(i, b))
        assert w.rows_in_memory <= 8 and w.rows_allocated <= 8
        if i == 6:                                            # open part 0: rewritten at 3 and 6 rows
            assert not (out / "results_001.npz").exists()
            with np.load(out / "results_000.npz") as z:
                assert z["frame_ids"].tolist() == list(range(100, 106))
        if i == 7:                                            # 8th row: part 0 closed, part 1 not begun
            with np.load(out / "results_000.npz") as z:
                assert z["frame_ids"].tolist() == list(range(100, 108))
            assert w.rows_in_memory == 0 and w.parts_closed == 1 and not (out / "results_001.npz").exists()
    assert w.frames_written == 21 and w.rows_in_memory == 5 and w.parts_closed == 2
    with np.load(out / "results_001.npz") as z:
        assert z["frame_ids"].tolist() == list(range(108, 116)) and z["valid"].tolist() == [b is not None
                                                                                          for b in seq[8:16]]
    # before close: every closed part and the open part's last rewrite (3 of its 5 rows), in frame order
    assert load_results(out)["frame_ids"].tolist() == list(range(100, 119))
    w.close()
    assert sorted(p.name for p in out.iterdir()) == ["frames.jsonl", "results.npz"]   # parts joined and removed
    with np.load(out / "results.npz", allow_pickle=False) as z:
        assert z["frame_ids"].tolist() == list(range(100, 121))
        assert z["timestamps_usec"].tolist() == [1_000_000 + i * PERIOD for i in range(21)]
        assert z["valid"].tolist() == [b is not None for b in seq] and z["poses"].dtype == np.float32
        assert z["betas"].shape == (21, 10) and np.isnan(z["poses"][18]).all()
        np.testing.assert_array_equal(z["poses"][20], bs[0].theta)
        np.testing.assert_array_equal(z["joints"][10], bs[0].joints)
        np.testing.assert_array_equal(z["trans"][16], bs[1].transl)
        assert float(z["mocap_framerate"]) == pytest.approx(1e6 / PERIOD)


def test_the_memory_of_a_long_run_is_one_part(toy, tmp_path):
    """tracemalloc: after 1600 more frames (bodies, BVH on) the writer holds no more than one part's rows
    (allocated during the warm-up), and its peak while parts are rewritten, appended and closed stays
    a fraction of a megabyte; the earlier writer held every row (1.1 MB here) and copied the run for each rewrite."""
    import gc
    import tracemalloc

    b = bodies(toy, 1)[0]
    w = OutputWriter(tmp_path / "out", part_frames=128)
    for i in range(40):                                       # warm-up: columns allocated, scipy imported
        w.write(result(i, b))
    gc.collect()                                              # earlier tests' garbage is not counted
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(40, 1640):
            w.write(result(i, b if i % 4 else None))
            if i == 839:
                tracemalloc.reset_peak()                     # the second half: as long a run as the first
        peak = tracemalloc.get_traced_memory()[1] - base
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
        w.close()
    assert w.rows_allocated == 128
    assert held < 64 * 1024, held                             # the old writer: 1600 more rows = 1.1 MB
    assert peak < 600 * 1024, peak                            # measured 0.27 MB
    assert load_results(tmp_path / "out")["frame_ids"].tolist() == [100 + i for i in range(1640)]


KILLED_RUN = r"""
import os, signal, sys
import numpy as np
from app.outputs import OutputWriter
from app.results import BodyEstimate, FrameResult, InputMode

rng = np.random.default_rng(0)
w = OutputWriter(sys.argv[1], part_frames=16, chunk_frames=4)
for i in range(54):
    body = None if i % 5 == 0 else BodyEstimate(
        theta=rng.normal(0, 0.3, 72).astype(np.float32), beta=np.zeros(10, np.float32),
        transl=np.zeros(3, np.float32), vertices=np.zeros((4, 3), np.float32),
        joints=rng.normal(0, 0.5, (24, 3)).astype(np.float32), cam=np.ones(3, np.float32),
        bbox=np.arange(4, dtype=np.float32))
    w.write(FrameResult(i, 1_000_000 + i * 33_333, InputMode.RGBD, "auto", body))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_kill_mid_part_leaves_the_closed_parts_and_a_readable_prefix(tmp_path):
    import signal
    import subprocess
    import sys

    out = tmp_path / "killed"
    r = subprocess.run([sys.executable, "-c", KILLED_RUN, str(out)], cwd=Path(__file__).resolve().parents[1],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == -signal.SIGKILL, r.stderr
    # 54 frames: parts 0-2 closed (16 rows each), part 3 last rewritten at 4 of its 6 rows; no join
    assert sorted(p.name for p in out.iterdir()) == ["frames.jsonl", "motion.bvh", "results_000.npz",
                                                     "results_001.npz", "results_002.npz", "results_003.npz"]
    for k in range(3):
        with np.load(out / f"results_00{k}.npz", allow_pickle=False) as z:
            assert z["frame_ids"].tolist() == list(range(16 * k, 16 * k + 16))
    table = load_results(out)
    rows = read_jsonl(out / "frames.jsonl")
    assert len(rows) == 54 and table["frame_ids"].tolist() == list(range(52))
    assert table["frame_ids"].tolist() == [row["frame_id"] for row in rows[:52]]
    assert table["valid"].tolist() == [row["body"] is not None for row in rows[:52]]
    np.testing.assert_allclose(table["poses"][51], rows[51]["body"]["theta"], atol=1e-6)
    # the BVH holds whole rows and says how many: the rows of the last append
    text = (out / "motion.bvh").read_text()
    names, parents, offsets, channels, motion, frame_time = parse_bvh(text)
    assert "Frames: 52" in text.splitlines() and motion.shape == (52, 6 + 23 * 3)
    assert frame_time == pytest.approx(0.033333, abs=1e-9)
    # the folder is not reused by accident
    with pytest.raises(OutputError, match=r"frames\.jsonl and 5 more: already exists"):
        OutputWriter(out)


def test_the_bvh_stays_correct_across_parts_and_is_built_without_holding_the_run(toy, tmp_path):
    n, first = 300, 70                                        # no body before frame 70: spans part 0 and 1
    theta, _, _, _, joints = posed(toy, n, seed=7, same_shape=True)
    valid = np.array([i >= first and i % 7 != 3 for i in range(n)])
    out = tmp_path / "o"
    w = OutputWriter(out, part_frames=64, chunk_frames=10)
    for i in range(n):
        body = None if not valid[i] else BodyEstimate(
            theta=theta[i].astype(np.float32), beta=np.zeros(10, np.float32), transl=np.zeros(3, np.float32),
            vertices=np.zeros((4, 3), np.float32), joints=joints[i].astype(np.float32),
            cam=np.ones(3, np.float32), bbox=np.arange(4, dtype=np.float32))
        w.write(result(i, body))
        assert w.rows_in_memory <= 64
        if i == 200:  # mid-run: the file parses, holds whole rows and says how many (all but the unflushed)
            *_, motion, _ = parse_bvh((out / "motion.bvh").read_text())
            assert 201 - 10 <= motion.shape[0] <= 201
    w.close()
    text = (out / "motion.bvh").read_text()
    assert f"Frames: {n}" in text.splitlines()
    names, parents, offsets, channels, motion, frame_time = parse_bvh(text)
    assert motion.shape == (n, 6 + 23 * 3) and frame_time == pytest.approx(PERIOD * 1e-6, abs=1e-12)
    smpl_index = [SMPL_JOINT_NAMES.index(nm) for nm in names]
    # the skeleton is the mean rest skeleton of the bodies
    expected = bvh_rest_offsets(theta[valid], joints[valid]) * 100.0
    np.testing.assert_allclose(offsets, expected[smpl_index], atol=2e-4)
    to_cam = np.diag([1.0, -1.0, -1.0])
    for t in np.flatnonzero(valid)[::9]:
        world = bvh_fk(parents, offsets, channels, motion[t]) / 100.0
        np.testing.assert_allclose(world @ to_cam.T, joints[t][smpl_index], atol=3e-4)
    for t in range(n):                                        # held rows: the last body, or the first
        if not valid[t]:
            np.testing.assert_array_equal(motion[t], motion[max(t - 1, first)])


def test_a_failed_bvh_append_is_cut_back_and_the_file_stays_whole(toy, tmp_path):
    """RLIMIT_FSIZE (SIGXFSZ ignored: writes fail with EFBIG, as on a full disk) during an append."""
    import resource
    import signal

    from app.outputs import BvhStream

    theta, _, _, _, joints = posed(toy, 30, seed=2, same_shape=True)
    stream = BvhStream(tmp_path / "m.bvh", 1 / 30)
    stream.add(theta[:10], joints[:10], np.ones(10, bool))
    size = (tmp_path / "m.bvh").stat().st_size
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 1500, hard))   # room for 2 of the 10 new rows
    try:
        with pytest.raises(OSError):
            stream.add(theta[10:20], joints[10:20], np.ones(10, bool))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert (tmp_path / "m.bvh").stat().st_size == size
    *_, motion, _ = parse_bvh((tmp_path / "m.bvh").read_text())
    assert motion.shape[0] == 10 and stream.frames == 10
    stream.add(theta[20:23], joints[20:23], np.ones(3, bool))
    stream.close()
    text = (tmp_path / "m.bvh").read_text()
    *_, motion, _ = parse_bvh(text)
    assert "Frames: 13" in text.splitlines() and motion.shape[0] == 13


def test_an_existing_part_alone_blocks_a_new_run(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "results_003.npz").write_bytes(b"earlier")
    with pytest.raises(OutputError, match=r"results_003\.npz: already exists \(pass --overwrite to replace\)"):
        OutputWriter(out)
    assert (out / "results_003.npz").read_bytes() == b"earlier" and not (out / "frames.jsonl").exists()
    with OutputWriter(out, overwrite=True) as w:
        w.write(result(0, None))
    assert sorted(p.name for p in out.iterdir()) == ["frames.jsonl", "results.npz"]


def test_bad_part_size_is_a_one_line_error(tmp_path):
    with pytest.raises(OutputError, match=r"part_frames must be an int >= 1, got 0"):
        OutputWriter(tmp_path / "o", part_frames=0)
