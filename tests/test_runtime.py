"""app/runtime.py: no torch import, provider choice and fallback, contract checks, file errors, per-frame
inputs, reused buffers, IO binding, parity with torch through the app's call.

The model is a real export (training.export) of a small lite-derived network at 64 px on the toy body.
"""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from app.runtime import (LSP_JOINT_NAMES, SMPL_JOINT_NAMES, ContractMismatchError, ExpectedInputs, InferenceSession,
                         ModelContract, ModelFileError, cuda_unusable_reason, decode_faces, default_normalization,
                         encode_faces, plan_providers, read_metadata)
from model import body as model_body
from model.body import BodyModel
from model.config import config_from_dict
from model.network import build_fusemesh
from tests.toy_body import write_toy_body
from training.export import torch_outputs, export_onnx
from training.quantize import pseudo_frames

S = 64
GPU_USABLE = cuda_unusable_reason(0) is None


@pytest.fixture(scope="module")
def body(tmp_path_factory) -> BodyModel:
    return BodyModel.from_file(write_toy_body(tmp_path_factory.mktemp("body") / "toy.npz"))


@pytest.fixture(scope="module")
def net(body):
    torch.manual_seed(1)
    cfg = config_from_dict({"preset": "lite", "input_size": S, "rgb_encoder": {"width": 8},
                            "depth_encoder": {"width": 8}, "fusion": {"hidden": [32, 32]},
                            "regressor": {"hidden": [32, 32]}})
    net = build_fusemesh(cfg, body).eval()
    with torch.no_grad():  # make the outputs move with the input (see tests/test_export.py)
        for name in ("dec_pose", "dec_betas", "dec_cam"):
            getattr(net.regressor, name).weight.mul_(50.0)
    return net, cfg


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, net, body) -> Path:
    model, cfg = net
    r = export_onnx(model, cfg, body, tmp_path_factory.mktemp("onnx") / "tiny.fp32.onnx", "fp32", random_weights=True)
    return r.path


@pytest.fixture(scope="module")
def sess(model_path) -> InferenceSession:
    return InferenceSession(model_path, providers=("cpu",), cpu_threads=1)


@pytest.fixture(scope="module")
def frames():
    return pseudo_frames(S, 4, seed=9)


def hwc(frames, i):
    return np.ascontiguousarray(frames.rgb[i].transpose(1, 2, 0))


def with_metadata(src: Path, dst: Path, **changes: str) -> Path:
    m = onnx.load(str(src))
    for entry in m.metadata_props:
        if entry.key in changes:
            entry.value = changes[entry.key]
    onnx.save(m, str(dst))
    return dst


# ------------------------------------------------------------------------------------ import boundary
def test_runtime_module_does_not_import_torch():
    code = "import app.runtime, sys; assert 'torch' not in sys.modules, 'torch imported'"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr


def test_joint_names_are_the_body_models_own():
    # one definition (model/skeleton.py, torch-free) shared by the app and the body model
    assert SMPL_JOINT_NAMES is model_body.SMPL_JOINT_NAMES and LSP_JOINT_NAMES is model_body.LSP_JOINT_NAMES
    assert len(SMPL_JOINT_NAMES) == 24 and len(LSP_JOINT_NAMES) == 14


# ------------------------------------------------------------------------------------------ providers
@pytest.mark.skipif(GPU_USABLE, reason="this machine has a usable CUDA GPU")
def test_falls_back_to_cpu_without_cuda_and_says_why_once(model_path, caplog):
    with caplog.at_level(logging.INFO, logger="app.runtime"):
        s = InferenceSession(model_path, cpu_threads=1)  # default preference: tensorrt, cuda, cpu
    assert s.provider == "CPUExecutionProvider" and not s.io_binding
    cuda = s.skipped["CUDAExecutionProvider"]
    assert any(w in cuda for w in ("libcuda.so.1", "no CUDA device", "driver", "do not load")), cuda
    assert s.skipped["TensorrtExecutionProvider"]
    records = [r for r in caplog.records if r.name == "app.runtime"]
    assert len(records) == 1
    line = records[0].getMessage()
    assert "running on CPUExecutionProvider" in line and cuda in line and "tiny.fp32.onnx" in line


def test_provider_plan_honours_the_preference():
    plan = plan_providers(["cpu"])
    assert [p for p, _ in plan.providers] == ["CPUExecutionProvider"]
    assert plan.skipped == {"TensorrtExecutionProvider": "not requested", "CUDAExecutionProvider": "not requested"}
    with pytest.raises(ValueError, match="unknown provider 'cdua'"):
        plan_providers(["cdua", "cpu"])
    full = plan_providers()
    assert full.providers[-1][0] == "CPUExecutionProvider"
    assert GPU_USABLE or set(full.skipped) == {"TensorrtExecutionProvider", "CUDAExecutionProvider"}


def test_cuda_graph_is_a_cuda_provider_option_only_when_asked(monkeypatch):
    from app import runtime
    monkeypatch.setattr(runtime, "cuda_unusable_reason", lambda device_id=0: None)
    graph = dict(runtime.plan_providers(["cuda", "cpu"], cuda_graph=True).providers)
    plain = dict(runtime.plan_providers(["cuda", "cpu"]).providers)
    assert graph["CUDAExecutionProvider"]["enable_cuda_graph"] == "1"
    assert "enable_cuda_graph" not in plain["CUDAExecutionProvider"]
    assert graph["CPUExecutionProvider"] == {}


@pytest.mark.skipif(GPU_USABLE, reason="this machine has a usable CUDA GPU")
def test_cuda_graph_request_without_cuda_runs_plain_cpu(model_path, sess, frames):
    s = InferenceSession(model_path, providers=("cuda", "cpu"), cpu_threads=1, warmup_runs=1, cuda_graph=True)
    assert s.provider == "CPUExecutionProvider" and not s.cuda_graph and not s.io_binding
    a = s.run(hwc(frames, 1), frames.depth[1, 0], frames.ref_depth[1])
    b = sess.run(hwc(frames, 1), frames.depth[1, 0], frames.ref_depth[1])
    for k in b:
        np.testing.assert_allclose(a[k], b[k], atol=1e-6, err_msg=k)
    batch = s.run(frames.rgb[:2], frames.depth[:2], frames.ref_depth[:2])  # no graph: batches still work
    assert batch["vertices"].shape[0] == 2


def test_a_refused_cuda_graph_keeps_the_provider_and_says_why(model_path, monkeypatch, frames):
    """ORT refuses enable_cuda_graph at creation (a node outside the CUDA provider): same provider, no graph."""
    import onnxruntime as ort
    from app import runtime
    real = ort.InferenceSession
    tried = []

    def creation(path, sess_options=None, providers=None, provider_options=None):
        tried.append([dict(o) for o in provider_options])
        if any(o.get("enable_cuda_graph") == "1" for o in provider_options):
            raise RuntimeError("This session cannot use the CUDA Graph feature as requested by the user as all "
                               "compute graph nodes have not been partitioned to the CUDA EP.")
        return real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

    def plan(prefer=(), **kw):  # this machine's CPU provider stands in for CUDA's options
        opts = {"enable_cuda_graph": "1"} if kw.get("cuda_graph") else {}
        return runtime.ProviderPlan([("CPUExecutionProvider", opts)], {})

    monkeypatch.setattr(ort, "InferenceSession", creation)
    monkeypatch.setattr(runtime, "plan_providers", plan)
    s = InferenceSession(model_path, providers=("cuda", "cpu"), cpu_threads=1, warmup_runs=1, cuda_graph=True)
    assert [o[0] for o in tried] == [{"enable_cuda_graph": "1"}, {}]
    assert s.provider == "CPUExecutionProvider" and not s.cuda_graph
    assert "partitioned to the CUDA EP" in s.skipped["CUDA graph"]
    batch = s.run(frames.rgb[:2], frames.depth[:2], frames.ref_depth[:2])  # batch 1 is fixed for a graph only
    assert batch["vertices"].shape[0] == 2


@pytest.mark.parametrize("flag, want", [([], True), (["--no-cuda-graph"], False)])
def test_app_asks_for_the_cuda_graph_unless_told_not_to(model_path, monkeypatch, flag, want):
    from app import cli, runtime
    made = {}
    real = runtime.InferenceSession

    def recording(*args, **kw):
        made.update(kw)
        return real(*args, **kw)

    monkeypatch.setattr(runtime, "InferenceSession", recording)
    args = cli.build_parser().parse_args(["--model", str(model_path), "--providers", "cpu", *flag])
    sess = cli._open_session(args, ["cpu"])
    assert made["cuda_graph"] is want and sess.provider == "CPUExecutionProvider"


def test_a_failing_graph_run_falls_back_to_the_plain_session_for_that_frame_too(model_path, sess, frames, caplog):
    """A CUDA-graph replay that raises (e.g. on another thread) costs no frame: the session is recreated
    without the graph, the same frame is answered, and the reason is logged once and kept in `skipped`."""
    s = InferenceSession(model_path, providers=("cpu",), cpu_threads=1, io_binding=True, warmup_runs=1)
    real = s.session

    class FailingReplay:  # the graph session's run_with_iobinding fails; everything else is ORT's
        def __getattr__(self, name):
            return getattr(real, name)

        def run_with_iobinding(self, binding):
            raise RuntimeError("CUDA failure 700: an illegal memory access was encountered; cudaGraphLaunch")

    s.session, s.cuda_graph = FailingReplay(), True   # what a replaying CUDA session looks like from here
    with caplog.at_level(logging.WARNING, logger="app.runtime"):
        got = s.run(hwc(frames, 1), frames.depth[1, 0], frames.ref_depth[1])
        again = s.run(hwc(frames, 2), frames.depth[2, 0], frames.ref_depth[2])
    want = sess.run(hwc(frames, 1), frames.depth[1, 0], frames.ref_depth[1])
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-6, err_msg=k)
    assert not s.cuda_graph and not isinstance(s.session, FailingReplay) and again["vertices"].shape[0] == 1
    assert "cudaGraphLaunch" in s.skipped["CUDA graph"]
    assert sum("CUDA graph turned off" in r.getMessage() for r in caplog.records) == 1


def test_cpu_session_uses_the_given_threads_without_spinning(sess):
    opts = sess.session.get_session_options()
    assert opts.intra_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert sess.warmup_ms > 0


# ------------------------------------------------------------------------------------------- parity
def test_app_call_matches_torch(sess, net, frames):
    ref = torch_outputs(net[0], frames)
    assert ref["vertices"].std(axis=0).max() > 2e-3  # 100x the tolerance: a wrong graph would show
    for i in range(len(frames)):
        out = sess.run(hwc(frames, i), frames.depth[i, 0], float(frames.ref_depth[i]), frames.stream_mask[i])
        assert out["vertices"].shape == (1, 222, 3) and out["lsp_joints"].shape == (1, 14, 3)
        for name in ("theta", "beta", "cam", "vertices", "joints", "lsp_joints"):
            np.testing.assert_allclose(out[name][0], ref[name][i], atol=2e-5, err_msg=name)


def test_batch_call_matches_torch(sess, net, frames):
    ref = torch_outputs(net[0], frames)
    out = sess.run(frames.rgb, frames.depth, frames.ref_depth, frames.stream_mask)
    np.testing.assert_allclose(out["vertices"], ref["vertices"], atol=2e-5)


def test_input_layouts_and_units_agree(sess, frames):
    rgb, depth_m, ref = hwc(frames, 0), frames.depth[0, 0], frames.ref_depth[0]
    depth_mm = np.round(depth_m * 1000).astype(np.uint16)
    a = sess.run(rgb, depth_mm, ref)["vertices"].copy()
    b = sess.run(frames.rgb[0], depth_mm.astype(np.float32) / 1000, ref, (True, True))["vertices"]
    depth_f64 = (depth_mm.astype(np.float64) / 1000)[None, None]
    c = sess.run(frames.rgb[:1], depth_f64, np.array([ref]), [[1, 1]])["vertices"]
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, c, atol=1e-6)
    rgb_only = sess.run(rgb, depth_mm, ref, (True, False))["vertices"]
    assert np.abs(rgb_only - a).max() > 1e-3  # dropping the depth stream changes the answer
    # with the depth stream off, the reference depth is not needed
    np.testing.assert_allclose(sess.run(rgb, depth_mm, float("nan"), (True, False))["vertices"], rgb_only, atol=1e-6)


def test_buffers_are_reused_and_results_are_not_overwritten(sess, frames):
    buf = sess._feeds["rgb"]
    first = sess.run(hwc(frames, 0), frames.depth[0, 0], frames.ref_depth[0])
    kept = first["vertices"].copy()
    sess.run(hwc(frames, 1), frames.depth[1, 0], frames.ref_depth[1])
    assert sess._feeds["rgb"] is buf
    np.testing.assert_array_equal(buf[0], frames.rgb[1])
    np.testing.assert_array_equal(first["vertices"], kept)


def test_io_binding_path_matches_plain_run(model_path, sess, frames):
    bound = InferenceSession(model_path, providers=("cpu",), cpu_threads=1, io_binding=True, warmup_runs=1)
    assert bound.io_binding
    a = bound.run(hwc(frames, 2), frames.depth[2, 0], frames.ref_depth[2])
    kept = {k: v.copy() for k, v in a.items()}
    b = bound.run(hwc(frames, 3), frames.depth[3, 0], frames.ref_depth[3])
    plain = sess.run(hwc(frames, 3), frames.depth[3, 0], frames.ref_depth[3])
    for k in plain:
        np.testing.assert_allclose(b[k], plain[k], atol=1e-6, err_msg=k)
        np.testing.assert_array_equal(a[k], kept[k], err_msg=k)


@pytest.mark.parametrize("args, message", [
    (dict(rgb=np.zeros((S, S, 3), np.float32)), "rgb must be uint8"),
    (dict(rgb=np.zeros((S + 1, S, 3), np.uint8)), f"rgb must be \\({S}, {S}, 3\\)"),
    (dict(depth=np.full((S, S), 2500.0, np.float32)), "depth looks like millimetres"),
    (dict(depth=np.zeros((S, S), np.int32)), "depth must be float metres or uint16"),
    (dict(depth=np.zeros((S // 2, S // 2), np.float32)), "depth must be"),
    (dict(ref=float("nan")), "ref_depth must be a positive depth in metres"),
    (dict(ref=2500.0), "ref_depth must be a positive depth in metres"),
    (dict(mask=(False, False)), "both streams off"),
    (dict(mask=(1, 2)), "stream_mask must be bool or 0/1"),
    (dict(mask=np.ones((2, 2), bool)), "stream_mask must be \\(2,\\) or \\(1, 2\\)"),
])
def test_bad_inputs_get_one_line_errors(sess, args, message):
    call = dict(rgb=np.zeros((S, S, 3), np.uint8), depth=np.full((S, S), 2.5, np.float32), ref=2.5, mask=None)
    call.update(args)
    with pytest.raises(ValueError, match=message) as e:
        sess.run(call["rgb"], call["depth"], call["ref"], call["mask"])
    assert "\n" not in str(e.value)


def test_both_streams_off_only_with_the_explicit_opt_in(model_path, sess, net, frames):
    off = np.zeros((len(frames), 2), bool)
    with pytest.raises(ValueError, match="both streams off .* allow_no_streams=True"):
        sess.run(frames.rgb, frames.depth, frames.ref_depth, off)  # the app's session refuses
    lenient = InferenceSession(model_path, providers=("cpu",), cpu_threads=1, warmup_runs=0, allow_no_streams=True)
    got = lenient.run(frames.rgb, frames.depth, frames.ref_depth, off)
    with torch.no_grad():
        ref = net[0](torch.from_numpy(frames.rgb), torch.from_numpy(frames.depth), torch.from_numpy(frames.ref_depth),
                     stream_mask=torch.from_numpy(off))
    np.testing.assert_allclose(got["vertices"], ref["vertices"].numpy(), atol=2e-5)
    # nothing reaches the network: every frame gets the same answer, whatever its images (and ref depth)
    np.testing.assert_allclose(got["vertices"], np.broadcast_to(got["vertices"][:1], got["vertices"].shape), atol=1e-6)
    one = lenient.run(hwc(frames, 0), frames.depth[0, 0], float("nan"), (False, False))
    np.testing.assert_allclose(one["vertices"][0], got["vertices"][0], atol=1e-6)
    # mixed batches still work, and the on-rows match the strict session
    mixed = lenient.run(frames.rgb, frames.depth, frames.ref_depth, frames.stream_mask)["vertices"]
    np.testing.assert_allclose(mixed, sess.run(frames.rgb, frames.depth, frames.ref_depth,
                                               frames.stream_mask)["vertices"], atol=1e-6)


def test_robustness_runs_every_stream_state_from_an_onnx_file(model_path, net, frames):
    from training.evaluate import TorchPredictor
    from training.robustness import STATES, OnnxStatePredictor, load_model

    onnx_pred = load_model(model_path)
    assert isinstance(onnx_pred, OnnxStatePredictor) and onnx_pred.input_size == S
    torch_pred = TorchPredictor(net[0])
    for state in STATES:  # the fourth, both off, is what the app's session refuses
        mask = np.tile(np.array(state, bool), (len(frames), 1))
        got = onnx_pred(frames.rgb, frames.depth, frames.ref_depth, mask)
        ref = torch_pred(frames.rgb, frames.depth, frames.ref_depth, mask)
        np.testing.assert_allclose(got[0], ref[0], atol=2e-5, err_msg=str(state))
        np.testing.assert_allclose(got[1], ref[1], atol=2e-5, err_msg=str(state))


# ------------------------------------------------------------------------------------------ contract
def test_contract_round_trip_and_faces(model_path, body):
    c = ModelContract.from_file(model_path)
    assert ModelContract.from_metadata(c.to_metadata()) == c
    np.testing.assert_array_equal(c.faces(), body.faces)
    f = np.array([[0, 1, 2], [2, 3, 70000]])
    np.testing.assert_array_equal(decode_faces(encode_faces(f), 2), f)


def test_input_size_mismatch_is_refused(model_path):
    message = r"input size mismatch: the model takes 64x64 crops, the app feeds 128x128"
    with pytest.raises(ContractMismatchError, match=message):
        InferenceSession(model_path, expected=ExpectedInputs(input_size=128))
    InferenceSession(model_path, expected=ExpectedInputs(input_size=S), providers=("cpu",), warmup_runs=0)


def test_normalisation_mismatch_is_refused(model_path, tmp_path):
    norm = default_normalization()
    norm["rgb"]["mean"] = [0.5, 0.5, 0.5]
    import json

    bad = with_metadata(model_path, tmp_path / "old_norm.onnx", normalization=json.dumps(norm))
    with pytest.raises(ContractMismatchError, match=r"old_norm.onnx: rgb normalisation mismatch at mean.0"):
        InferenceSession(bad)
    app_norm = default_normalization()
    app_norm["depth"]["clip_m"] = 2.0
    with pytest.raises(ContractMismatchError, match=r"depth normalisation mismatch at clip_m"):
        InferenceSession(model_path, expected=ExpectedInputs(normalization=app_norm))


def test_joint_name_mismatch_is_refused(model_path, tmp_path):
    import json

    names = list(SMPL_JOINT_NAMES)
    names[1], names[2] = names[2], names[1]
    bad = with_metadata(model_path, tmp_path / "swapped.onnx", joint_names=json.dumps(names))
    with pytest.raises(ContractMismatchError, match=r"joint_names mismatch at index 1: model has 'right_hip', "
                                                    r"app expects 'left_hip'"):
        InferenceSession(bad)


def test_unsupported_contract_version_is_refused(model_path, tmp_path):
    bad = with_metadata(model_path, tmp_path / "future.onnx", contract_version="99")
    with pytest.raises(ModelFileError, match="contract version 99 is not supported"):
        InferenceSession(bad)


# ------------------------------------------------------------------------------------------ file errors
def test_file_errors_name_the_file_and_the_problem(model_path, tmp_path):
    cases = {}
    cases["missing.onnx"] = "model file not found"
    (tmp_path / "empty.onnx").write_bytes(b"")
    cases["empty.onnx"] = "file is empty"
    (tmp_path / "notes.onnx").write_text("this is a text file, not a model\n" * 20)
    cases["notes.onnx"] = "not an ONNX model"
    np.savez(tmp_path / "weights.npz", a=np.zeros(3))
    (tmp_path / "weights.npz").rename(tmp_path / "weights.onnx")
    cases["weights.onnx"] = "a zip archive"
    data = model_path.read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(data[: len(data) * 2 // 3])
    cases["truncated.onnx"] = "truncated or corrupt"
    plain = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])]))
    onnx.save(plain, str(tmp_path / "other.onnx"))
    cases["other.onnx"] = "no FuseMesh metadata"
    for name, message in cases.items():
        with pytest.raises(ModelFileError, match=message) as e:
            InferenceSession(tmp_path / name)
        assert str(tmp_path / name) in str(e.value) and "\n" not in str(e.value), name
        assert isinstance(e.value, ValueError)


def test_read_metadata_skips_the_weights(model_path):
    meta = read_metadata(model_path)
    assert meta["format"] == "fusemesh.onnx" and meta["variant"] == "fp32" and meta["random_weights"] == "true"


# ------------------------------------------------------------------------------------------ GPU
@pytest.mark.gpu
@pytest.mark.skipif(not GPU_USABLE, reason="no usable CUDA GPU")
def test_cuda_graph_replays_new_frames_like_cpu(model_path, sess, frames):
    gpu = InferenceSession(model_path, providers=("cuda", "cpu"), warmup_runs=3, cuda_graph=True)
    assert gpu.provider == "CUDAExecutionProvider" and gpu.io_binding
    assert gpu.cuda_graph, gpu.skipped.get("CUDA graph")
    for i in (0, 1, 2, 1):  # each replay reads the frame just copied into the bound inputs
        a = gpu.run(hwc(frames, i), frames.depth[i, 0], frames.ref_depth[i])
        b = sess.run(hwc(frames, i), frames.depth[i, 0], frames.ref_depth[i])
        for k in b:
            np.testing.assert_allclose(a[k], b[k], atol=2e-3, err_msg=f"frame {i} {k}")  # cuDNN's TF32
    with pytest.raises(ValueError, match="batch-1 CUDA graph"):
        gpu.run(frames.rgb[:2], frames.depth[:2], frames.ref_depth[:2])


@pytest.mark.gpu
@pytest.mark.skipif(not GPU_USABLE, reason="no usable CUDA GPU")
def test_cuda_graph_captured_on_one_thread_replays_on_another(model_path, sess, frames):
    """The app creates (and so captures) the session on the main thread and runs it on its inference thread."""
    import threading
    gpu = InferenceSession(model_path, providers=("cuda", "cpu"), warmup_runs=3, cuda_graph=True)
    assert gpu.cuda_graph, gpu.skipped.get("CUDA graph")
    got: dict = {}
    frame = (hwc(frames, 2), frames.depth[2, 0], frames.ref_depth[2])
    worker = threading.Thread(target=lambda: got.update(gpu.run(*frame)))
    worker.start()
    worker.join(60)
    want = sess.run(hwc(frames, 2), frames.depth[2, 0], frames.ref_depth[2])
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=2e-3, err_msg=k)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU_USABLE, reason="no usable CUDA GPU")
def test_cuda_session_binds_io_and_matches_cpu(model_path, sess, frames):
    gpu = InferenceSession(model_path, providers=("cuda", "cpu"))
    assert gpu.provider == "CUDAExecutionProvider" and gpu.io_binding
    a = gpu.run(hwc(frames, 0), frames.depth[0, 0], frames.ref_depth[0])
    b = sess.run(hwc(frames, 0), frames.depth[0, 0], frames.ref_depth[0])
    for k in b:  # 2 mm / 2e-3 rad: the CUDA provider's convolutions use TF32 (1 of 666 values was 1.05e-3 off)
        np.testing.assert_allclose(a[k], b[k], atol=2e-3, err_msg=k)
