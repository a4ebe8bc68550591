"""model/body.py: loading (npz, official-format pickle), safety, errors, forward values, CLI, export.

Uses the toy body (tests/toy_body.py: vertices 0..23 are the joints, so joint positions are known
exactly) and, when it exists, the real open body assets/body/open_body_neutral.npz.
"""
from __future__ import annotations

import hashlib
import math
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from model.body import (
    DEFAULT_BODY_PATH, LSP_JOINT_NAMES, SMPL_JOINT_NAMES, SMPL_KEYPOINT_VERTEX_IDS, BodyModel, BodyModelError,
    BodyOutput,
)
from model.camera import axis_angle_to_matrix, perspective_project, rot6d_to_matrix
from tests.toy_body import SMPL_PARENTS, TOY_JOINTS, toy_body_arrays, write_toy_body

REPO = Path(__file__).resolve().parent.parent
LEFT_SHOULDER, LEFT_WRIST, RIGHT_WRIST = 16, 20, 21


@pytest.fixture(scope="module")
def toy_path(tmp_path_factory) -> Path:
    return write_toy_body(tmp_path_factory.mktemp("body") / "toy.npz")


@pytest.fixture(scope="module")
def toy(toy_path) -> BodyModel:
    return BodyModel.from_file(toy_path)


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# ---------------------------------------------------------------------- toy body: loading and forward
def test_toy_loads_with_metadata(toy, toy_path):
    arrays = toy_body_arrays()
    V = len(arrays["v_template"])
    assert toy.num_vertices == V
    assert toy.faces.shape == arrays["f"].shape and toy.faces.dtype == np.int64
    np.testing.assert_array_equal(toy.faces, arrays["f"])
    assert toy.model_id == "toy"  # no model_id key: the file stem
    assert toy.sha256 == hashlib.sha256(toy_path.read_bytes()).hexdigest()
    assert toy.vertex_ids == {n: V - 6 + i for i, n in
                              enumerate(["nose", "left_eye", "right_eye", "left_ear", "right_ear", "head_top"])}
    assert list(toy.parents) == SMPL_PARENTS.tolist()
    assert toy.joint_names == tuple(SMPL_JOINT_NAMES)
    assert toy.rest_height() == pytest.approx(1.74 - arrays["v_template"][:, 1].min(), abs=1e-6)


@pytest.mark.parametrize("batch", [1, 5])
def test_forward_shapes_any_batch(toy, batch):
    out = toy(betas=torch.zeros(batch, 10), body_pose=torch.zeros(batch, 69), global_orient=torch.zeros(batch, 3))
    assert isinstance(out, BodyOutput)
    assert out.vertices.shape == (batch, toy.num_vertices, 3)
    assert out.joints.shape == (batch, 24, 3)
    assert out.lsp_joints.shape == (batch, 14, 3)
    assert out.vertices.dtype == out.joints.dtype == torch.float32


def test_zero_pose_joints_are_regressed_template(toy):
    arrays = toy_body_arrays()
    out = toy(body_pose=torch.zeros(2, 69))
    expected = arrays["J_regressor"] @ arrays["v_template"]
    np.testing.assert_allclose(out.joints[1].numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(out.joints[0].numpy(), TOY_JOINTS, atol=1e-6)
    np.testing.assert_allclose(out.vertices[0].numpy(), arrays["v_template"], atol=1e-6)


def test_lsp_joints_map_to_smpl_joints_and_head_top_vertex(toy):
    torch.manual_seed(0)
    out = toy(betas=torch.randn(3, 10), body_pose=0.3 * torch.randn(3, 69), global_orient=torch.randn(3, 3))
    for k, name in enumerate(LSP_JOINT_NAMES[:13]):
        torch.testing.assert_close(out.lsp_joints[:, k], out.joints[:, SMPL_JOINT_NAMES.index(name)], rtol=0, atol=0)
    torch.testing.assert_close(out.lsp_joints[:, 13], out.vertices[:, toy.vertex_ids["head_top"]], rtol=0, atol=0)
    rest = toy().lsp_joints[0].numpy()
    np.testing.assert_allclose(rest[0], TOY_JOINTS[8], atol=1e-6)        # right_ankle
    np.testing.assert_allclose(rest[12], TOY_JOINTS[12], atol=1e-6)      # neck
    np.testing.assert_allclose(rest[13], [0.0, 1.74, 0.0], atol=1e-6)    # head_top vertex


def test_left_shoulder_plus_z_raises_left_wrist(toy):
    angle = 0.5
    pose = torch.zeros(1, 69)
    pose[0, (LEFT_SHOULDER - 1) * 3 + 2] = angle
    posed, rest = toy(body_pose=pose).joints[0].numpy(), toy().joints[0].numpy()
    expected = TOY_JOINTS[LEFT_SHOULDER] + _rot_z(angle) @ (TOY_JOINTS[LEFT_WRIST] - TOY_JOINTS[LEFT_SHOULDER])
    np.testing.assert_allclose(posed[LEFT_WRIST], expected, atol=1e-5)
    assert posed[LEFT_WRIST, 1] > rest[LEFT_WRIST, 1] + 0.1
    np.testing.assert_allclose(posed[RIGHT_WRIST], rest[RIGHT_WRIST], atol=1e-6)


def test_transl_adds(toy):
    torch.manual_seed(1)
    pose, transl = 0.3 * torch.randn(4, 69), torch.randn(4, 3)
    a, b = toy(body_pose=pose), toy(body_pose=pose, transl=transl)
    torch.testing.assert_close(b.vertices, a.vertices + transl[:, None], rtol=0, atol=1e-6)
    torch.testing.assert_close(b.joints, a.joints + transl[:, None], rtol=0, atol=1e-6)
    torch.testing.assert_close(b.lsp_joints, a.lsp_joints + transl[:, None], rtol=0, atol=1e-6)


def test_rotation_matrix_input_equals_axis_angle(toy):
    torch.manual_seed(2)
    B = 3
    betas, pose, orient = torch.randn(B, 10), 0.5 * torch.randn(B, 69), torch.randn(B, 3)
    a = toy(betas=betas, body_pose=pose, global_orient=orient)
    b = toy(betas=betas, body_pose=axis_angle_to_matrix(pose.reshape(B, 23, 3)),
            global_orient=axis_angle_to_matrix(orient).reshape(B, 1, 3, 3), pose2rot=False)
    torch.testing.assert_close(b.vertices, a.vertices, rtol=0, atol=1e-5)
    torch.testing.assert_close(b.lsp_joints, a.lsp_joints, rtol=0, atol=1e-5)


def test_betas_broadcast_and_shape_effect(toy):
    betas = torch.zeros(1, 10)
    betas[0, 0] = 2.0  # the toy's beta0 scales heights by 1 + 0.05 * beta0 / 1.7
    out = toy(betas=betas, body_pose=torch.zeros(4, 69))
    assert out.vertices.shape[0] == 4
    np.testing.assert_allclose(out.joints[3, 15, 1].item(), TOY_JOINTS[15, 1] * (1 + 0.1 / 1.7), atol=1e-5)


@pytest.mark.parametrize("kwargs, name", [
    ({"body_pose": torch.zeros(2, 68)}, "body_pose"),
    ({"body_pose": torch.zeros(2, 69), "global_orient": torch.zeros(3, 3)}, "global_orient"),
    ({"body_pose": torch.zeros(2, 69), "betas": torch.zeros(2, 11)}, "betas"),
    ({"body_pose": torch.zeros(2, 23, 3), "pose2rot": False}, "body_pose"),
])
def test_bad_input_shape_is_named(toy, kwargs, name):
    with pytest.raises(ValueError, match=name):
        toy(**kwargs)


@pytest.mark.parametrize("correctives", [False, True])
def test_forward_matches_smplx_lbs(correctives):
    """Our skinning equals smplx's reference `lbs`; zero posedirs are dropped (no 34 MB multiply of zeros)."""
    from smplx.lbs import lbs
    arrays = toy_body_arrays()
    rng = np.random.default_rng(3)
    if correctives:
        arrays["posedirs"] = rng.normal(0, 0.01, size=arrays["posedirs"].shape)
    body = BodyModel(arrays, model_id="toy")
    assert (body.posedirs is not None) == correctives
    assert ("posedirs" in dict(body.named_buffers())) == correctives
    B = 3
    betas = torch.tensor(rng.normal(0, 1, (B, 10)), dtype=torch.float32)
    pose = torch.tensor(rng.normal(0, 0.4, (B, 72)), dtype=torch.float32)
    transl = torch.tensor(rng.normal(0, 1, (B, 3)), dtype=torch.float32)
    out = body(betas=betas, global_orient=pose[:, :3], body_pose=pose[:, 3:], transl=transl)
    V = len(arrays["v_template"])
    posedirs = torch.tensor(arrays["posedirs"].reshape(V * 3, 207).T, dtype=torch.float32)
    parents = torch.tensor(SMPL_PARENTS, dtype=torch.long)
    ref_v, ref_j = lbs(betas, pose, body.v_template, body.shapedirs, posedirs, body.J_regressor, parents,
                       body.lbs_weights)
    torch.testing.assert_close(out.vertices, ref_v + transl[:, None], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.joints, ref_j + transl[:, None], atol=1e-5, rtol=1e-5)
    if correctives:  # the correctives really move vertices: dropping them would fail the comparison above
        no_pd = BodyModel(toy_body_arrays(), model_id="toy")
        diff = (no_pd(betas=betas, global_orient=pose[:, :3], body_pose=pose[:, 3:]).vertices - ref_v).abs().max()
        assert diff > 1e-3
    assert np.array_equal(body.to_arrays()["posedirs"] != 0, arrays["posedirs"] != 0)


def test_kinematic_parents_travel_with_the_module_as_a_buffer():
    """The skinning indexes joints with a long buffer (not a Python list, which becomes a fresh CPU tensor
    copied to the GPU on every forward); it is not saved in state dicts and moves with `.to()`."""
    body = BodyModel(toy_body_arrays(), model_id="toy")
    assert body.parent_index.dtype == torch.long and body.parent_index.tolist() == list(SMPL_PARENTS[1:])
    assert "parent_index" not in body.state_dict()
    assert body.to("meta").parent_index.device.type == "meta"


# ---------------------------------------------------------------------- the official SMPL .pkl format
def _smpl_sized_toy() -> dict[str, np.ndarray]:
    """The toy body padded to SMPL's 6890 vertices, with its named keypoints at SMPL's standard ids."""
    a = toy_body_arrays()
    V0, V = len(a["v_template"]), 6890
    pad = V - V0
    v = np.concatenate([a["v_template"], np.tile(TOY_JOINTS[0], (pad, 1))])
    w = np.concatenate([a["weights"], np.tile(np.eye(24)[0], (pad, 1))])
    sd = np.concatenate([a["shapedirs"], np.zeros((pad, 3, 10))])
    # new index of each old vertex: named keypoints go to the SMPL ids, the rest fill the other slots
    names = [str(n) for n in a["vertex_ids_names"]]
    target = {int(i): SMPL_KEYPOINT_VERTEX_IDS[n] for n, i in zip(names, a["vertex_ids"])}
    free = iter(sorted(set(range(V)) - set(target.values())))
    new_of_old = np.array([target[i] if i in target else next(free) for i in range(V)])
    perm = np.empty(V, dtype=np.int64)
    perm[new_of_old] = np.arange(V)  # perm[new] = old
    jreg = np.zeros((24, V))
    jreg[:, :V0] = a["J_regressor"]
    return {
        "v_template": v[perm], "shapedirs": sd[perm], "posedirs": np.zeros((V, 3, 207)),
        "J_regressor": jreg[:, perm], "weights": w[perm], "kintree_table": a["kintree_table"],
        "f": new_of_old[a["f"]],
    }


def _fake_chumpy_modules() -> dict[str, types.ModuleType]:
    """Modules named like chumpy's whose Ch pickles the way chumpy's does (its __dict__ minus caches)."""
    chumpy, ch, reordering = (types.ModuleType(n) for n in ("chumpy", "chumpy.ch", "chumpy.reordering"))

    class Ch:
        def __init__(self, x=None, **terms):
            self._dirty_vars, self._itr, self._make_dense, self._make_sparse = set(), None, False, False
            self._depends_on_deps = {}
            self._parents, self._cache = {}, {"r": None, "drs": {}}
            if x is not None:
                self.x = np.asarray(x, dtype=np.float64)
            self.__dict__.update(terms)

        def __getstate__(self):  # chumpy.ch.Ch.__getstate__: drop the weak-ref caches
            state = dict(self.__dict__)
            del state["_parents"], state["_cache"]
            return state

    class Select(Ch):
        pass

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    Select.__module__, Select.__qualname__ = "chumpy.reordering", "Select"
    ch.Ch, reordering.Select = Ch, Select
    chumpy.ch, chumpy.reordering = ch, reordering
    return {"chumpy": chumpy, "chumpy.ch": ch, "chumpy.reordering": reordering}


def _write_fake_official_pickle(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write `arrays` the way SMPL_NEUTRAL.pkl is laid out (protocol 2, chumpy objects, sparse regressor)."""
    mods = _fake_chumpy_modules()
    Ch, Select = mods["chumpy.ch"].Ch, mods["chumpy.reordering"].Select
    V = len(arrays["v_template"])
    joints = arrays["J_regressor"] @ arrays["v_template"]
    data = {
        "J_regressor_prior": sp.csc_matrix(arrays["J_regressor"]),
        "f": arrays["f"].astype(np.uint32),
        "J_regressor": sp.csc_matrix(arrays["J_regressor"]),
        "kintree_table": np.where(arrays["kintree_table"] < 0, 4294967295, arrays["kintree_table"]).astype(np.int64),
        "J": Select(a=Ch(joints.ravel()), idxs=np.arange(72), preferred_shape=(24, 3)),
        "weights_prior": arrays["weights"].copy(),
        "weights": Ch(arrays["weights"]),
        "vert_sym_idxs": np.arange(V),
        "posedirs": arrays["posedirs"],
        "pose_training_info": {"lambda_pose": 0.1, "num_subjects": 40},
        "bs_style": "lbs",
        "v_template": Ch(arrays["v_template"]),
        "shapedirs": Ch(arrays["shapedirs"]),
        "bs_type": "lrotmin",
    }
    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        path.write_bytes(pickle.dumps(data, protocol=2))
    finally:
        for k, m in saved.items():
            if m is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = m
    return path


@pytest.fixture(scope="module")
def fake_pkl(tmp_path_factory) -> Path:
    return _write_fake_official_pickle(tmp_path_factory.mktemp("pkl") / "SMPL_NEUTRAL.pkl", _smpl_sized_toy())


def test_fake_official_pickle_loads_without_chumpy(fake_pkl):
    assert "chumpy" not in sys.modules
    assert b"chumpy.ch" in fake_pkl.read_bytes() and b"csc_matrix" in fake_pkl.read_bytes()
    arrays = _smpl_sized_toy()
    body = BodyModel.from_file(fake_pkl)
    assert "chumpy" not in sys.modules
    assert body.num_vertices == 6890 and body.model_id == "SMPL_NEUTRAL"
    np.testing.assert_allclose(body.v_template.numpy(), arrays["v_template"], atol=1e-7)
    np.testing.assert_allclose(body.shapedirs.numpy(), arrays["shapedirs"], atol=1e-7)
    np.testing.assert_allclose(body.J_regressor.numpy(), arrays["J_regressor"], atol=0)
    np.testing.assert_allclose(body.lbs_weights.numpy(), arrays["weights"], atol=0)
    np.testing.assert_array_equal(body.faces, arrays["f"])
    assert list(body.parents) == SMPL_PARENTS.tolist()
    assert body.vertex_ids == SMPL_KEYPOINT_VERTEX_IDS  # standard SMPL ids added for a 6890-vertex mesh
    out = body()
    np.testing.assert_allclose(out.joints[0].numpy(), TOY_JOINTS, atol=1e-6)
    np.testing.assert_allclose(out.lsp_joints[0, 13].numpy(), [0.0, 1.74, 0.0], atol=1e-6)


def test_chumpy_reordering_object_is_evaluated(tmp_path):
    arrays = _smpl_sized_toy()
    mods = _fake_chumpy_modules()
    Ch, Select = mods["chumpy.ch"].Ch, mods["chumpy.reordering"].Select
    V = len(arrays["v_template"])
    order = np.arange(3 * V)[::-1].copy()  # v_template stored reversed and selected back
    data = {k: arrays[k] for k in ("shapedirs", "posedirs", "weights", "kintree_table", "f")}
    data["J_regressor"] = sp.csc_matrix(arrays["J_regressor"])
    data["v_template"] = Select(a=Ch(arrays["v_template"].ravel()[order]), idxs=order, preferred_shape=(V, 3))
    sys.modules.update(mods)
    try:
        (tmp_path / "m.pkl").write_bytes(pickle.dumps(data, protocol=2))
    finally:
        for k in mods:
            sys.modules.pop(k, None)
    body = BodyModel.from_file(tmp_path / "m.pkl")
    np.testing.assert_allclose(body.v_template.numpy(), arrays["v_template"], atol=1e-7)


class _Exploit:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("how", ["os.system", "builtins.eval"])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, how):
    marker = tmp_path / "pwned"
    if how == "os.system":
        payload = _Exploit(os.system, f"touch {marker}")
        refused = "system"
    else:
        payload = _Exploit(eval, f"open({str(marker)!r}, 'w').close()")
        refused = "eval"
    evil = tmp_path / "SMPL_NEUTRAL.pkl"
    arrays = toy_body_arrays()
    evil.write_bytes(pickle.dumps({"v_template": arrays["v_template"], "pose_training_info": payload}, protocol=2))
    with pytest.raises(BodyModelError) as err:
        BodyModel.from_file(evil)
    msg = str(err.value)
    assert "refused" in msg and refused in msg and str(evil) in msg and "\n" not in msg
    assert not marker.exists()


# ---------------------------------------------------------------------- bad files
def _npz_with(path: Path, **changes) -> Path:
    arrays = toy_body_arrays()
    for k, v in changes.items():
        if v is None:
            del arrays[k]
        else:
            arrays[k] = v
    np.savez(path, **arrays)
    return path


def _bad_files(tmp: Path) -> dict[str, tuple[Path, str]]:
    rng = np.random.default_rng(0)
    good = write_toy_body(tmp / "good.npz").read_bytes()
    a = toy_body_arrays()
    V = len(a["v_template"])
    nan_v = a["v_template"].copy()
    nan_v[5, 1] = np.nan
    bad_f = a["f"].copy()
    bad_f[0, 0] = V
    files = {
        "random_npz": (tmp / "random.npz", "not a body model file"),
        "random_pkl": (tmp / "random.pkl", "not a readable SMPL pickle"),
        "empty": (tmp / "empty.npz", "empty"),
        "truncated": (tmp / "truncated.npz", "truncated"),
        "missing_key": (_npz_with(tmp / "nokey.npz", weights=None), "missing key 'weights'"),
        "wrong_shape": (_npz_with(tmp / "shape.npz", J_regressor=a["J_regressor"][:23]), "'J_regressor' must be (24, V)"),
        "few_betas": (_npz_with(tmp / "betas.npz", shapedirs=a["shapedirs"][:, :, :5]), "'shapedirs' must be (V, 3, >=10)"),
        "nan": (_npz_with(tmp / "nan.npz", v_template=nan_v), "'v_template' contains NaN"),
        "face_range": (_npz_with(tmp / "faces.npz", f=bad_f), "'f' indexes vertices outside"),
        "no_head_top": (_npz_with(tmp / "nohead.npz", vertex_ids_names=a["vertex_ids_names"][:5], vertex_ids=a["vertex_ids"][:5]),
                        "no 'head_top'"),
        "not_found": (tmp / "does_not_exist.npz", "not found"),
    }
    files["random_npz"][0].write_bytes(rng.bytes(4096))
    files["random_pkl"][0].write_bytes(rng.bytes(4096))
    files["empty"][0].write_bytes(b"")
    files["truncated"][0].write_bytes(good[: len(good) // 2])
    return files


@pytest.mark.parametrize("case", ["random_npz", "random_pkl", "empty", "truncated", "missing_key", "wrong_shape",
                                  "few_betas", "nan", "face_range", "no_head_top", "not_found"])
def test_bad_file_gives_one_clear_error(tmp_path, case):
    path, expected = _bad_files(tmp_path)[case]
    with pytest.raises(BodyModelError) as err:
        BodyModel.from_file(path)
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert msg.startswith(str(path)) and expected in msg and "\n" not in msg, msg


# ---------------------------------------------------------------------- command line
def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model.body", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_cli_convert_round_trips_pickle_to_npz(fake_pkl, tmp_path):
    out = tmp_path / "converted.npz"
    res = _run_cli("convert", str(fake_pkl), str(out))
    assert res.returncode == 0, res.stderr
    a, b = BodyModel.from_file(fake_pkl), BodyModel.from_file(out)
    for name in ("v_template", "shapedirs", "posedirs", "J_regressor", "lbs_weights"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=0, atol=0)
    np.testing.assert_array_equal(b.faces, a.faces)
    assert list(b.parents) == list(a.parents)
    assert b.vertex_ids == a.vertex_ids == SMPL_KEYPOINT_VERTEX_IDS
    assert b.model_id == a.model_id == "SMPL_NEUTRAL"
    torch.manual_seed(3)
    kw = dict(betas=torch.randn(2, 10), body_pose=0.4 * torch.randn(2, 69), global_orient=torch.randn(2, 3))
    torch.testing.assert_close(b(**kw).vertices, a(**kw).vertices, rtol=0, atol=0)


def test_cli_info_reports_counts_and_height(toy_path):
    res = _run_cli("info", str(toy_path))
    assert res.returncode == 0, res.stderr
    lines = dict(line.split(": ", 1) for line in res.stdout.strip().splitlines())
    arrays = toy_body_arrays()
    assert int(lines["vertices"]) == len(arrays["v_template"])
    assert int(lines["faces"]) == len(arrays["f"])
    assert lines["model_id"] == "toy"
    assert lines["sha256"] == hashlib.sha256(toy_path.read_bytes()).hexdigest()
    assert float(lines["height_at_beta0_m"]) == pytest.approx(1.74 - arrays["v_template"][:, 1].min(), abs=1e-4)


def test_cli_error_is_one_line(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"nonsense")
    res = _run_cli("info", str(bad))
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and str(bad) in res.stderr and "Traceback" not in res.stderr


# ---------------------------------------------------------------------- ONNX export
def test_body_with_rotations_exports_to_onnx(toy, tmp_path):
    """rot6d -> rotation matrices -> body (pose2rot=False) -> pinhole, exported with a dynamic batch axis."""
    ort = pytest.importorskip("onnxruntime")

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = toy
            self.register_buffer("K", torch.tensor([[500.0, 0, 112], [0, 500.0, 112], [0, 0, 1]]))

        def forward(self, pose6d, betas, transl):
            rot = rot6d_to_matrix(pose6d)
            out = self.body(betas=betas, body_pose=rot[:, 1:], global_orient=rot[:, :1], transl=transl,
                            pose2rot=False)
            return out.vertices, perspective_project(out.lsp_joints, self.K)

    head = Head().eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    path = tmp_path / "head.onnx"
    example = (torch.randn(2, 24, 6), torch.randn(2, 10), torch.tensor([[0.0, 0.0, 3.0]] * 2))
    torch.onnx.export(head, example, str(path), dynamo=True, opset_version=18, external_data=False,
                      input_names=["pose6d", "betas", "transl"], output_names=["vertices", "lsp_px"],
                      dynamic_shapes=({0: batch}, {0: batch}, {0: batch}))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    torch.manual_seed(4)
    inputs = (torch.randn(5, 24, 6), torch.randn(5, 10), torch.tensor([[0.1, -0.2, 3.0]] * 5))
    got = sess.run(None, {n: t.numpy() for n, t in zip(["pose6d", "betas", "transl"], inputs)})
    with torch.no_grad():
        ref = head(*inputs)
    np.testing.assert_allclose(got[0], ref[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(got[1], ref[1].numpy(), atol=1e-3)  # pixels


# ---------------------------------------------------------------------- the real open body
@pytest.fixture(scope="module")
def open_body() -> BodyModel:
    if not DEFAULT_BODY_PATH.exists():
        pytest.skip(f"{DEFAULT_BODY_PATH} not built yet (assets/tools builds it)")
    return BodyModel.from_file(DEFAULT_BODY_PATH)


def test_open_body_loads_and_matches_file(open_body):
    with np.load(DEFAULT_BODY_PATH) as z:
        v_template, j_reg, faces = z["v_template"], z["J_regressor"], z["f"]
        names = [str(n) for n in z["vertex_ids_names"]]
    assert open_body.num_vertices == len(v_template)
    assert open_body.faces.shape == faces.shape
    assert "head_top" in names
    for batch in (1, 5):
        out = open_body(body_pose=torch.zeros(batch, 69))
        assert out.vertices.shape == (batch, len(v_template), 3) and out.lsp_joints.shape == (batch, 14, 3)
    np.testing.assert_allclose(out.joints[0].numpy(), j_reg.astype(np.float64) @ v_template, atol=1e-4)
    assert 1.4 < open_body.rest_height() < 2.1


def test_open_body_lsp_and_left_shoulder(open_body):
    pose = torch.zeros(1, 69)
    pose[0, (LEFT_SHOULDER - 1) * 3 + 2] = 0.5
    rest, posed = open_body(), open_body(body_pose=pose)
    for k, name in enumerate(LSP_JOINT_NAMES[:13]):
        torch.testing.assert_close(rest.lsp_joints[:, k], rest.joints[:, SMPL_JOINT_NAMES.index(name)])
    torch.testing.assert_close(rest.lsp_joints[:, 13], rest.vertices[:, open_body.vertex_ids["head_top"]])
    head_top_y, neck_y = rest.lsp_joints[0, 13, 1].item(), rest.lsp_joints[0, 12, 1].item()
    assert head_top_y > neck_y + 0.1
    assert posed.joints[0, LEFT_WRIST, 1] > rest.joints[0, LEFT_WRIST, 1] + 0.1
    assert rest.joints[0, LEFT_WRIST, 0] > 0.3  # +X is the subject's left
