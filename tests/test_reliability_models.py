"""Model-file faults the existing tests do not cover: ONNX graphs whose inputs do not match their own
contract, graphs with the wrong input names or a missing output, a model that returns NaN, body-model
files with NaN/inf or wrong shapes in every array (npz and the pickle path).

The ONNX files are tiny but real graphs built here with `onnx.helper` (a constant body plus 0 x the mean
depth, so ONNX Runtime really reads the inputs) carrying a FuseMesh contract in their metadata; they run
in the real ONNX Runtime session, the real worker and the real CLI. Nothing is mocked.
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from app.cli import main
from app.frames import RgbdFrame, StreamStatus
from app.results import InputMode
from app.runtime import (INPUT_NAMES, LSP_JOINT_NAMES, SMPL_JOINT_NAMES, ContractMismatchError, InferenceSession,
                         ModelContract, ModelFileError, default_normalization, encode_faces)
from app.worker import InferenceWorker
from calibration import default_rig
from model.body import BodyModel, BodyModelError
from tests.toy_body import toy_body_arrays

REPO = Path(__file__).resolve().parent.parent
CALIBRATION = REPO / "assets" / "calibration" / "azure_kinect_default.json"
RIG = default_rig("NFOV_2X2BINNED", "720P")
S, V = 32, 8
_OUTPUT_SHAPES = {"theta": [1, 72], "beta": [1, 10], "cam": [1, 3], "vertices": [1, V, 3], "joints": [1, 24, 3],
                  "lsp_joints": [1, 14, 3]}


def tiny_outputs(seed: int = 0) -> dict[str, np.ndarray]:
    """The constant outputs of `write_tiny_model` (cam = (0.9, 0, 0): a body-sized scale)."""
    rng = np.random.default_rng(seed)
    out = {name: rng.normal(0.0, 0.1, shape).astype(np.float32) for name, shape in _OUTPUT_SHAPES.items()}
    out["cam"][0] = [0.9, 0.0, 0.0]
    return out


def write_tiny_model(path: Path, *, rgb_shape: Optional[Sequence[int]] = None, depth_type: int = TensorProto.FLOAT,
                     input_names: Sequence[str] = INPUT_NAMES, drop_output: Optional[str] = None,
                     nan_output: bool = False, metadata: bool = True) -> Path:
    """A real ONNX graph with FuseMesh's inputs/outputs: every output = constant + 0 * mean(depth).

    rgb_shape / depth_type / input_names change the graph's declared inputs (the contract in the metadata
    still says S x S, float depth, INPUT_NAMES); drop_output leaves one output out; nan_output puts a NaN
    in theta; metadata=False writes no FuseMesh metadata.
    """
    names = list(input_names)
    inputs = [helper.make_tensor_value_info(names[0], TensorProto.UINT8, list(rgb_shape or [1, 3, S, S])),
              helper.make_tensor_value_info(names[1], depth_type, [1, 1, S, S]),
              helper.make_tensor_value_info(names[2], TensorProto.FLOAT, [1]),
              helper.make_tensor_value_info(names[3], TensorProto.BOOL, [1, 2])]
    nodes = [helper.make_node("Cast", [names[1]], ["depth32"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["depth32"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"])]
    inits = [numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    outputs = []
    for name, value in tiny_outputs().items():
        if name == drop_output:
            continue
        if nan_output and name == "theta":
            value[0, 5] = np.nan
        inits.append(numpy_helper.from_array(value, f"{name}_value"))
        nodes.append(helper.make_node("Add", [f"{name}_value", "nothing"], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, _OUTPUT_SHAPES[name]))
    model = helper.make_model(helper.make_graph(nodes, "tiny", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        contract = ModelContract(
            preset="tiny-test", variant="fp32", input_size=S, normalization=default_normalization(),
            joint_names=SMPL_JOINT_NAMES, lsp_joint_names=LSP_JOINT_NAMES, body_model_id="tiny",
            body_model_sha256="0" * 64, body_num_vertices=V, body_num_faces=2, random_weights=True,
            body_faces=encode_faces(np.array([[0, 1, 2], [2, 3, 4]])))
        for key, value in contract.to_metadata().items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def color_frame(i: int = 0) -> RgbdFrame:
    """A 720p color-only frame (depth OFF): the worker infers on a default box (no localisation needed)."""
    color = np.full((720, 1280, 3), 90 + i, np.uint8)
    return RgbdFrame(i, 1_000_000 + i * 66_667, color, None, RIG, "test", StreamStatus.OK, StreamStatus.OFF)


def color_folder(root: Path, n: int = 3) -> Path:
    """An RGB-only dataset folder (color/ + raw Kinect calibration) of n grey 720p frames."""
    (root / "color").mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(root / "color" / f"{i:06d}.png"), np.full((720, 1280, 3), 90 + i, np.uint8))
    (root / "calibration.json").write_bytes(CALIBRATION.read_bytes())
    return root


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("fusemesh: error: ")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


# ---------------------------------------------------------------------------------------- ONNX graphs
def test_the_tiny_contract_model_runs_through_the_worker(tmp_path):
    """The builder's baseline: a valid tiny model loads, and the worker returns its constants."""
    session = InferenceSession(write_tiny_model(tmp_path / "tiny.onnx"), providers=("cpu",))
    assert session.input_size == S and session.contract.body_num_vertices == V
    r = InferenceWorker(session).process(color_frame())
    assert r.mode is InputMode.RGB and r.body is not None
    np.testing.assert_array_equal(r.body.theta, tiny_outputs()["theta"][0])   # first frame: smoother passes it
    assert r.body.vertices.shape == (V, 3) and np.isfinite(r.body.vertices).all()
    assert 0.2 <= r.body.transl[2] <= 20.0


@pytest.mark.parametrize("change, what", [
    (dict(rgb_shape=[1, 3, S + 8, S + 8]), "rgb"),
    (dict(rgb_shape=[1, 3, S]), "rgb"),
    (dict(depth_type=TensorProto.DOUBLE), "depth"),
], ids=["rgb-size", "rgb-rank", "depth-float64"])
def test_graph_inputs_that_contradict_the_contract_are_a_one_line_error(tmp_path, change, what):
    path = write_tiny_model(tmp_path / "contradicts.onnx", **change)
    with pytest.raises(ContractMismatchError, match=rf"graph input '{what}' is tensor") as e:
        InferenceSession(path, providers=("cpu",))
    msg = str(e.value)
    assert msg.startswith(str(path)) and "\n" not in msg


def test_cli_exits_3_for_a_graph_that_contradicts_its_contract(tmp_path, capsys):
    path = write_tiny_model(tmp_path / "contradicts.onnx", rgb_shape=[1, 3, S + 8, S + 8])
    code = main(["--source", str(color_folder(tmp_path / "ds")), "--model", str(path), "--providers", "cpu",
                 "--headless", "--out", str(tmp_path / "out"), "--no-progress", "--no-overlay"])
    assert code == 3
    assert str(path) in one_line_error(capsys)


@pytest.mark.parametrize("change, message", [
    (dict(input_names=("rgb", "depth", "stream_mask", "ref_depth")), r"graph inputs \('rgb', 'depth', 'stream_mask'"),
    (dict(input_names=("image", "depth", "ref_depth", "stream_mask")), r"graph inputs \('image'"),
    (dict(drop_output="joints"), r"graph lacks outputs \['joints'\]"),
], ids=["inputs-reordered", "input-renamed", "output-missing"])
def test_graph_io_names_that_differ_from_the_app_are_refused(tmp_path, change, message):
    path = write_tiny_model(tmp_path / "io.onnx", **change)
    with pytest.raises(ContractMismatchError, match=message) as e:
        InferenceSession(path, providers=("cpu",))
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_graph_without_metadata_with_any_shapes_is_refused_before_onnx_runtime(tmp_path):
    path = write_tiny_model(tmp_path / "plain.onnx", rgb_shape=[1, 3, 7, 7], metadata=False)
    with pytest.raises(ModelFileError, match="no FuseMesh metadata; not a FuseMesh model") as e:
        InferenceSession(path, providers=("cpu",))
    assert str(path) in str(e.value)


def test_a_model_returning_nan_skips_each_frame_and_the_cli_exits_3_with_complete_outputs(tmp_path, capsys):
    path = write_tiny_model(tmp_path / "nan.onnx", nan_output=True)
    worker = InferenceWorker(InferenceSession(path, providers=("cpu",)))
    results = [worker.process(color_frame(i)) for i in range(3)]
    assert [r.message for r in results] == ["inference failed: the model returned NaN or inf"] * 3
    assert all(r.body is None and r.mode is InputMode.RGB for r in results)
    assert worker.inference_failures == worker.failures == 3
    # the CLI: work cannot go on (the model fails on every frame) -> exit 3, yet every frame is in the outputs
    out = tmp_path / "out"
    code = main(["--source", str(color_folder(tmp_path / "ds")), "--model", str(path), "--providers", "cpu",
                 "--headless", "--out", str(out), "--no-progress", "--no-overlay"])
    assert code == 3
    assert "the model failed on every frame: inference failed: the model returned NaN or inf" in one_line_error(capsys)
    with np.load(out / "results.npz", allow_pickle=False) as z:
        assert z["frame_ids"].tolist() == [0, 1, 2] and not z["valid"].any()
    rows = [json.loads(line) for line in (out / "frames.jsonl").read_text().splitlines()]
    assert [r["frame_id"] for r in rows] == [0, 1, 2] and all(r["body"] is None for r in rows)
    assert not (out / "motion.bvh").exists()  # no body: no BVH (documented)


# ---------------------------------------------------------------------------------------- body-model files
def _save_npz(path: Path, **changes) -> Path:
    arrays = toy_body_arrays()
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


def _poisoned(key: str, value: float) -> np.ndarray:
    a = toy_body_arrays()[key].astype(np.float64).copy()
    a.reshape(-1)[a.size // 2] = value
    return a


@pytest.mark.parametrize("key", ["shapedirs", "posedirs", "J_regressor", "weights"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_nonfinite_values_in_any_body_array_are_refused(tmp_path, key, value):
    path = _save_npz(tmp_path / "body.npz", **{key: _poisoned(key, value)})
    with pytest.raises(BodyModelError) as e:
        BodyModel.from_file(path)
    msg = str(e.value)
    assert msg == f"{path}: {key!r} contains NaN or infinite values"


@pytest.mark.parametrize("key, cut, expected", [
    ("v_template", lambda a: a[:, :2], "'v_template' must be (V, 3)"),
    ("weights", lambda a: a[:, :23], "'weights' must be (V, 24)"),
    ("posedirs", lambda a: a[:, :, :206], "'posedirs' must be (V, 3, 207)"),
    ("kintree_table", lambda a: a[:, :23], "'kintree_table' must be (2, 24)"),
    ("f", lambda a: np.concatenate([a, a[:, :1]], axis=1), "'f' must be (F, 3)"),
], ids=["v_template", "weights", "posedirs", "kintree_table", "faces"])
def test_wrong_shapes_are_refused_naming_the_array(tmp_path, key, cut, expected):
    path = _save_npz(tmp_path / "body.npz", **{key: cut(toy_body_arrays()[key])})
    with pytest.raises(BodyModelError) as e:
        BodyModel.from_file(path)
    assert str(e.value).startswith(f"{path}: {expected}") and "\n" not in str(e.value)


def test_smpl_pickle_with_nan_or_wrong_shapes_is_refused(tmp_path):
    """The official-SMPL path (restricted unpickler): a dict of plain numpy arrays, poisoned."""
    arrays = toy_body_arrays()
    nan = tmp_path / "SMPL_NAN.pkl"
    nan.write_bytes(pickle.dumps({**arrays, "weights": _poisoned("weights", np.nan)}, protocol=2))
    with pytest.raises(BodyModelError, match=r"'weights' contains NaN or infinite values") as e:
        BodyModel.from_file(nan)
    assert str(e.value).startswith(str(nan))
    shape = tmp_path / "SMPL_SHAPE.pkl"
    shape.write_bytes(pickle.dumps({**arrays, "J_regressor": arrays["J_regressor"][:, :-1]}, protocol=2))
    with pytest.raises(BodyModelError, match=r"'J_regressor' must be \(24, V\)"):
        BodyModel.from_file(shape)
    good = tmp_path / "SMPL_GOOD.pkl"  # control: the same route loads the unpoisoned arrays
    good.write_bytes(pickle.dumps(arrays, protocol=2))
    np.testing.assert_allclose(BodyModel.from_file(good).v_template.numpy(), arrays["v_template"], atol=1e-7)
