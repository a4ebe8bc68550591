"""training/export.py, quantize.py, checkpoint.py: export -> load -> run -> compare with torch, per variant;
metadata round trip; single file; calibration frames from shards; checkpoints that rebuild their model.

One module fixture goes the whole way a user does: save a checkpoint, run `python -m training.export`
(main) on it with calibration shards, then every test reads the three files it wrote. The network is the
`lite` preset at 64 px on the toy body, with random weights whose regressor decoders are scaled up so
the outputs move with the input by centimetres (with plain random weights they move by ~0.3 mm, and a
parity check could not tell a right graph from a wrong one).
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from app.runtime import ModelContract, default_normalization, read_metadata
from model.body import LSP_JOINT_NAMES, SMPL_JOINT_NAMES, BodyModel
from model.config import config_from_dict, preset
from model.network import build_fusemesh
from tests.toy_body import write_toy_body
from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.export import (VARIANTS, torch_outputs, build_contract, compare_with_torch, export_onnx, main,
                             mean_init, with_mean_init)
from training.quantize import FrameSet, heavy_nodes, pseudo_frames, shard_frames, stream_mask_pattern

S = 64
SUMMARY = {"dataset": "unit-test shards", "steps": 3}


def sensitive_lite(body: BodyModel, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = build_fusemesh(config_from_dict({"preset": "lite", "input_size": S}), body).eval()
    with torch.no_grad():
        for name in ("dec_pose", "dec_betas", "dec_cam"):
            getattr(net.regressor, name).weight.mul_(50.0)
    return net


def write_shards(folder: Path, frames: FrameSet, size: int, per_shard: int) -> np.ndarray:
    """Frames as training/synth shard files (HWC rgb, depth_mm, mask, joints3d), resampled to `size`."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    n = len(frames)
    rgb = np.stack([cv2.resize(frames.rgb[i].transpose(1, 2, 0), (size, size), interpolation=cv2.INTER_NEAREST)
                    for i in range(n)])
    depth_mm = np.stack([cv2.resize(np.round(frames.depth[i, 0] * 1000).astype(np.uint16), (size, size),
                                    interpolation=cv2.INTER_NEAREST) for i in range(n)])
    mask = depth_mm < np.median(depth_mm, axis=(1, 2), keepdims=True)
    joints = np.random.default_rng(0).normal(0, 0.3, (n, 24, 3)).astype(np.float32)
    for k, lo in enumerate(range(0, n, per_shard)):
        np.savez(folder / f"shard-{k:05d}.npz", rgb=rgb[lo:lo + per_shard], depth_mm=depth_mm[lo:lo + per_shard],
                 mask=mask[lo:lo + per_shard], joints3d=joints[lo:lo + per_shard])
    return joints


@pytest.fixture(scope="module")
def toy_path(tmp_path_factory) -> Path:
    return write_toy_body(tmp_path_factory.mktemp("body") / "toy.npz")


@pytest.fixture(scope="module")
def body(toy_path) -> BodyModel:
    return BodyModel.from_file(toy_path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, toy_path, body):
    """Checkpoint -> `python -m training.export` with shards -> {variant: path}, plus the torch model."""
    root = tmp_path_factory.mktemp("export")
    net = sensitive_lite(body)
    ckpt = save_checkpoint(root / "ckpt.pt", net, config_from_dict({"preset": "lite", "input_size": S}), body,
                           {"train_summary": SUMMARY})
    write_shards(root / "shards", pseudo_frames(S, 24, seed=11), size=80, per_shard=10)
    rc = main(["--checkpoint", str(ckpt), "--body", str(toy_path), "--out-dir", str(root / "models"),
               "--name", "lite64", "--calib-shards", str(root / "shards"), "--calib-frames", "16",
               "--eval-frames", "8"])
    assert rc == 0
    files = {v: root / "models" / f"lite64.{v}.onnx" for v in VARIANTS}
    model, _, _ = load_checkpoint(ckpt, body=body)
    return {"files": files, "model": model, "root": root, "ckpt": ckpt}


@pytest.fixture(scope="module")
def frames() -> FrameSet:
    return pseudo_frames(S, 10, seed=5)


def cold_feeds(path: Path, frames: FrameSet, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
    """Raw ONNX feeds of `frames`, with the warm-start inputs at the file's mean (the cold start)."""
    return with_mean_init(frames, ModelContract.from_file(path).warm_start_mean()).feeds(start, stop)


def ort_run(path: Path, frames: FrameSet, **feeds_override) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {**cold_feeds(path, frames), **feeds_override}
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


# ------------------------------------------------------------------------------------------ parity
def test_fp32_matches_torch_over_a_batch_and_the_check_can_fail(exported, frames):
    ref = torch_outputs(exported["model"], frames)
    assert ref["vertices"].std(axis=0).max() > 0.01  # the outputs depend on the input by centimetres
    got = ort_run(exported["files"]["fp32"], frames)
    for name in ("theta", "beta", "cam", "vertices", "joints", "lsp_joints"):
        assert got[name].shape == ref[name].shape, name
    assert np.abs(got["vertices"] - ref["vertices"]).max() < 2e-5
    assert np.abs(got["joints"] - ref["joints"]).max() < 2e-5
    assert np.abs(got["lsp_joints"] - ref["lsp_joints"]).max() < 2e-5
    # negative control: BGR instead of RGB, or depth 10 cm off the reference, changes vertices by >> 2e-5
    bgr = ort_run(exported["files"]["fp32"], frames, rgb=np.ascontiguousarray(frames.rgb[:, ::-1]))
    assert np.abs(bgr["vertices"] - ref["vertices"]).max() > 1e-3
    shifted = ort_run(exported["files"]["fp32"], frames, ref_depth=frames.ref_depth + np.float32(0.1))
    assert np.abs(shifted["vertices"] - ref["vertices"]).max() > 1e-3


def test_dynamic_batch_axis_single_frame_equals_batched(exported, frames):
    path = exported["files"]["fp32"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.shape[0] for i in sess.get_inputs()] == ["batch"] * 7  # 4 inputs + the 3 warm-start ones
    batched = sess.run(["vertices"], cold_feeds(path, frames, 0, 3))[0]
    singles = np.concatenate([sess.run(["vertices"], cold_feeds(path, frames, i, i + 1))[0] for i in range(3)])
    np.testing.assert_allclose(singles, batched, atol=1e-5)


@pytest.mark.parametrize("variant, max_vertex_m", [("fp16", 1e-3), ("int8", 1.5e-2)])
def test_reduced_precision_change_is_bounded(exported, frames, variant, max_vertex_m):
    acc = compare_with_torch(exported["model"], exported["files"][variant], frames)
    assert acc["pa_mpjpe_mm"] <= 2.0  # the goal: PA-MPJPE change <= 2 mm
    assert acc["vertices_max_abs_m"] <= max_vertex_m
    assert acc["vertices_max_abs_m"] > 1e-6  # it really runs in reduced precision


def test_export_reports_accuracy_against_labels_in_metadata(exported):
    for v in VARIANTS:
        meta = read_metadata(exported["files"][v])
        acc = json.loads(meta["accuracy"])
        assert acc["frames"] == 8 and "synthetic shards" in acc["source"] and "[16:24]" in acc["source"]
        labels = acc["pa_mpjpe_vs_labels_mm"]
        assert labels["change"] == pytest.approx(labels["onnx"] - labels["torch"])
        assert abs(labels["change"]) <= 2.0
    assert json.loads(read_metadata(exported["files"]["fp32"])["accuracy"])["vertices_max_abs_m"] < 2e-5


CUDA_PROVIDER_LACKS = {"Atan"}
"""Op types with no kernel in ONNX Runtime 1.31's CUDA provider, seen on an H100 (docs/gpu.md): one such node
runs on the CPU mid-graph (a copy each way per frame) and rules out the CUDA-graph replay."""


def test_graphs_have_no_op_the_cuda_provider_lacks(exported):
    bundled = Path(__file__).resolve().parents[1] / "assets" / "weights" / "fusemesh_lite.onnx"
    for variant, path in [*exported["files"].items(), ("bundled", bundled)]:
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert not ops & CUDA_PROVIDER_LACKS, (variant, sorted(ops & CUDA_PROVIDER_LACKS))


def test_variant_graphs_keep_io_and_skinning_in_fp32(exported):
    fp32 = onnx.load(str(exported["files"]["fp32"]))
    fp16 = onnx.load(str(exported["files"]["fp16"]))
    int8 = onnx.load(str(exported["files"]["int8"]))
    io_types = lambda m: [(v.name, v.type.tensor_type.elem_type) for v in list(m.graph.input) + list(m.graph.output)]
    assert io_types(fp16) == io_types(fp32) == io_types(int8)
    assert [t for _, t in io_types(fp32)][:4] == [onnx.TensorProto.UINT8, onnx.TensorProto.FLOAT,
                                                   onnx.TensorProto.FLOAT, onnx.TensorProto.BOOL]
    heavy = heavy_nodes(fp32)
    conv_weights = {n.input[1] for n in fp16.graph.node if n.op_type == "Conv"}
    inits = {t.name: t.data_type for t in fp16.graph.initializer}
    assert conv_weights and all(inits[w] == onnx.TensorProto.FLOAT16 for w in conv_weights)
    # the body's skinning weights and templates stay float32
    body_inits = {t.name: t.data_type for t in fp16.graph.initializer if t.name.startswith("net.body.")}
    assert "net.body.v_template" in body_inits and set(body_inits.values()) == {onnx.TensorProto.FLOAT}
    q_consumers = {n.name for n in int8.graph.node
                   if any(i.endswith("_DequantizeLinear_Output") for i in n.input)}
    deep = heavy_nodes(fp32, re.compile(r"^net\.(rgb_encoder\.layer4|depth_encoder\.(layer3|layer4))(\.|$)"))
    stems = heavy_nodes(fp32, re.compile(r"^net\.(rgb_encoder\.(conv1|bn1|layer[123])|depth_encoder\.(conv1|bn1|layer[12]))(\.|$)"))
    assert stems and deep & heavy
    # only the encoders' last stages are quantised: stems, early stages, fusion and regressor stay float
    assert q_consumers and q_consumers <= deep and not q_consumers & stems
    assert {n.name for n in fp32.graph.node if n.name in deep and n.op_type == "Conv"} <= q_consumers
    sizes = {v: exported["files"][v].stat().st_size for v in VARIANTS}
    assert sizes["fp16"] < 0.6 * sizes["fp32"] and sizes["int8"] < 0.8 * sizes["fp32"]


# -------------------------------------------------------------------------------------- metadata
def test_metadata_round_trip(exported, body):
    path = exported["files"]["int8"]
    c = ModelContract.from_file(path)
    assert (c.preset, c.variant, c.input_size) == ("lite", "int8", S)
    assert c.has_warm_start and set(c.inputs) == {"rgb", "depth", "ref_depth", "stream_mask", "init_pose6d",
                                                  "init_beta", "init_cam"}
    for name, value in mean_init(exported["model"]).items():  # the regressor's buffers, bit for bit
        np.testing.assert_array_equal(c.warm_start_mean()[name], value, err_msg=name)
    assert c.normalization == default_normalization()
    assert c.normalization["depth"]["clip_m"] == 1.5 and c.normalization["rgb"]["mean"] == [0.485, 0.456, 0.406]
    assert c.joint_names == SMPL_JOINT_NAMES and c.lsp_joint_names == LSP_JOINT_NAMES
    assert (c.body_model_id, c.body_model_sha256, c.body_num_vertices) == (body.model_id, body.sha256, 222)
    np.testing.assert_array_equal(c.faces(), body.faces)
    assert c.random_weights is False
    assert c.training_data["dataset"] == SUMMARY["dataset"] and c.training_data["checkpoint"] == "ckpt.pt"
    assert config_from_dict(c.model_config) == config_from_dict({"preset": "lite", "input_size": S})
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert c.git_commit.startswith(head) and len(head) == 40
    calib = json.loads(c.extra["calibration"])
    assert calib["frames"] == 16 and "[0:16]" in calib["source"]
    # our metadata reader agrees with ONNX Runtime's
    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert meta == read_metadata(path)


def test_random_weights_are_flagged(body):
    c = build_contract(preset("lite"), body, "fp32", random_weights=True, commit="abc")
    meta = c.to_metadata()
    assert meta["random_weights"] == "true" and meta["git_commit"] == "abc"
    assert json.loads(meta["training_data"])["random_weights"] is True
    assert ModelContract.from_metadata(meta) == c


def test_single_file_with_weights_inside(exported):
    files = sorted(p.name for p in (exported["root"] / "models").iterdir())
    assert files == sorted(f"lite64.{v}.onnx" for v in VARIANTS)
    m = onnx.load(str(exported["files"]["fp32"]), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
    onnx.checker.check_model(m)


def test_cli_refuses_untagged_random_weights(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--preset", "lite"])
    assert e.value.code == 2 and "--random-weights" in capsys.readouterr().err


def test_cli_refuses_to_replace_an_existing_export_without_overwrite(exported, toy_path, tmp_path, capsys):
    out = tmp_path / "models"
    out.mkdir()
    (out / "lite64.int8.onnx").write_bytes(b"earlier export")
    argv = ["--checkpoint", str(exported["ckpt"]), "--body", str(toy_path), "--out-dir", str(out), "--name", "lite64",
            "--pseudo-frames", "--eval-frames", "0", "--calib-frames", "4"]
    capsys.readouterr()
    assert main(argv + ["--variants", "fp32", "int8"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {out / 'lite64.int8.onnx'}: already exists (pass --overwrite to replace)\n"
    assert sorted(p.name for p in out.iterdir()) == ["lite64.int8.onnx"]  # refused before writing anything
    assert (out / "lite64.int8.onnx").read_bytes() == b"earlier export"
    (out / "lite64.fp32.onnx").write_bytes(b"earlier export")
    assert main(argv + ["--variants", "fp32", "--overwrite"]) == 0
    assert ModelContract.from_file(out / "lite64.fp32.onnx").variant == "fp32"  # a real export replaced it
    assert (out / "lite64.int8.onnx").read_bytes() == b"earlier export"    # not named: left alone


def test_export_onnx_rejects_unknown_variant(body, tmp_path):
    net = sensitive_lite(body)
    with pytest.raises(ValueError, match="unknown variant 'int4'"):
        export_onnx(net, preset("lite"), body, tmp_path / "x.onnx", "int4")


# -------------------------------------------------------------------------------------- frames
def test_shard_frames_reads_resamples_and_offsets(tmp_path):
    src = pseudo_frames(S, 12, seed=3)
    joints = write_shards(tmp_path / "s", src, size=S, per_shard=5)
    f = shard_frames(tmp_path / "s", S, 4, start=4)  # crosses the shard-0/shard-1 border
    np.testing.assert_array_equal(f.rgb, src.rgb[4:8])
    np.testing.assert_allclose(f.depth, np.round(src.depth[4:8] * 1000) / 1000, atol=1e-6)
    np.testing.assert_array_equal(f.joints3d, joints[4:8])
    assert f.depth.dtype == np.float32 and f.rgb.shape == (4, 3, S, S)
    mask = (np.round(src.depth[5, 0] * 1000) < np.median(np.round(src.depth[5, 0] * 1000)))
    valid = mask & (f.depth[1, 0] > 0)
    assert f.ref_depth[1] == pytest.approx(np.median(f.depth[1, 0][valid]), abs=1e-6)
    resampled = shard_frames(tmp_path / "s", 32, 2)
    assert resampled.rgb.shape == (2, 3, 32, 32) and resampled.depth.shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="need 20"):
        shard_frames(tmp_path / "s", S, 10, start=10)
    (tmp_path / "bad").mkdir()
    np.savez(tmp_path / "bad" / "shard-00000.npz", rgb=np.zeros((1, S, S, 3), np.uint8))
    with pytest.raises(ValueError, match="lacks array 'depth_mm'"):
        shard_frames(tmp_path / "bad", S, 1)


def test_pseudo_frames_are_deterministic_person_like_and_mix_streams():
    a, b = pseudo_frames(S, 5, seed=1), pseudo_frames(S, 5, seed=1)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.depth, b.depth)
    assert not np.array_equal(a.rgb, pseudo_frames(S, 5, seed=2).rgb)
    assert a.joints3d is None and "pseudo" in a.source
    assert ((a.ref_depth >= 1.7) & (a.ref_depth <= 4.1)).all()  # person at 2-4 m (minus body bulge)
    valid = a.depth > 0
    assert 0.85 < valid.mean() < 0.999  # sensor-like holes
    np.testing.assert_array_equal(a.stream_mask, stream_mask_pattern(5))
    assert a.stream_mask.tolist() == [[True, True], [True, True], [True, True], [True, False], [False, True]]


@pytest.mark.slow
def test_synth_engine_frames_are_labelled(body):
    from training.quantize import engine_frames

    f = engine_frames(body, S, 2, seed=0)
    assert f.rgb.shape == (2, 3, S, S) and f.joints3d.shape == (2, 24, 3)
    assert ((f.ref_depth > 0.5) & (f.ref_depth < 10)).all()
    assert (f.depth > 0).mean() > 0.5


# -------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_rebuilds_its_model(exported, body, frames):
    model, cfg, meta = load_checkpoint(exported["ckpt"], body=body)
    assert cfg == config_from_dict({"preset": "lite", "input_size": S}) and not model.training
    assert meta["train_summary"] == SUMMARY and meta["body_model"]["sha256"] == body.sha256
    ref = torch_outputs(sensitive_lite(body), frames)
    np.testing.assert_array_equal(torch_outputs(model, frames)["vertices"], ref["vertices"])
    raw = torch.load(exported["ckpt"], weights_only=True)
    assert not any(k.startswith("body.") for k in raw["state_dict"])


def test_checkpoint_refuses_another_body(exported, tmp_path):
    other = BodyModel.from_file(write_toy_body(tmp_path / "other.npz", seed=1))
    with pytest.raises(CheckpointError, match="body model mismatch: checkpoint wants 'toy'") as e:
        load_checkpoint(exported["ckpt"], body=other)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="but the default body open_body_neutral.npz has sha256"):
        load_checkpoint(exported["ckpt"])  # no body given: the default asset, which it was not trained with


def test_checkpoint_errors_are_one_line(tmp_path, body):
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "nope.pt", body=body)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a loadable FuseMesh checkpoint"):
        load_checkpoint(tmp_path / "text.pt", body=body)
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a FuseMesh checkpoint"):
        load_checkpoint(tmp_path / "other.pt", body=body)
    torch.save({"x": Path("/etc/passwd")}, tmp_path / "unsafe.pt")  # not allowed by weights_only
    with pytest.raises(CheckpointError, match="not a loadable") as e:
        load_checkpoint(tmp_path / "unsafe.pt", body=body)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="'state_dict' is reserved"):
        save_checkpoint(tmp_path / "x.pt", sensitive_lite(body), preset("lite"), body, {"state_dict": 1})


# -------------------------------------------------------------------------------------- paper preset
@pytest.mark.slow
def test_paper_preset_exports_and_matches_torch(tmp_path):
    from model.body import DEFAULT_BODY_PATH

    body = BodyModel.from_file(DEFAULT_BODY_PATH)
    torch.manual_seed(0)
    cfg = preset("paper")
    net = build_fusemesh(cfg, body).eval()
    frames = pseudo_frames(cfg.input_size, 3, seed=1)
    r = export_onnx(net, cfg, body, tmp_path / "paper.onnx", "fp32", random_weights=True, eval_frames=frames)
    assert r.accuracy["vertices_max_abs_m"] < 2e-5
    c = ModelContract.from_file(r.path)
    assert (c.preset, c.input_size, c.body_num_vertices, c.random_weights) == ("paper", 224, body.num_vertices, True)
    assert r.size_mb < 2000 and not list(tmp_path.glob("*.data"))
