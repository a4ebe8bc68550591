"""Warm start of the IEF regressor (issues #7, #8): export, contract, app.runtime, CLI flag.

A small lite-derived network at 64 px on the toy body (as in tests/test_runtime.py) is exported twice:
with the warm-start inputs (today's export) and without them (what files exported before look like).
Its regressor decoders are scaled up so that a different starting point changes the answer by
centimetres; a parity check could not tell otherwise. The worker's use of it is tested in
tests/test_app_worker.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from app.runtime import (WARM_START_INPUTS, ContractMismatchError, InferenceSession, ModelContract, ModelFileError,
                         read_metadata)
from model.body import BodyModel
from model.config import config_from_dict
from model.network import build_fusemesh
from tests.toy_body import write_toy_body
from training.export import export_onnx, mean_init, torch_outputs
from training.quantize import pseudo_frames

S = 64
needs_export = pytest.mark.slow  # the first test to use the files exports the network twice (~60 s on a busy CPU)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    body = BodyModel.from_file(write_toy_body(tmp_path_factory.mktemp("body") / "toy.npz"))
    torch.manual_seed(3)
    cfg = config_from_dict({"preset": "lite", "input_size": S, "rgb_encoder": {"width": 8},
                            "depth_encoder": {"width": 8}, "fusion": {"hidden": [32, 32]},
                            "regressor": {"hidden": [32, 32]}})
    model = build_fusemesh(cfg, body).eval()
    with torch.no_grad():
        for name in ("dec_pose", "dec_betas", "dec_cam"):
            getattr(model.regressor, name).weight.mul_(50.0)
    return model, cfg, body


@pytest.fixture(scope="module")
def files(tmp_path_factory, net) -> dict[str, Path]:
    model, cfg, body = net
    root = tmp_path_factory.mktemp("warm")
    warm = export_onnx(model, cfg, body, root / "warm.onnx", "fp32", random_weights=True).path
    old = export_onnx(model, cfg, body, root / "old.onnx", "fp32", random_weights=True, warm_start=False).path
    return {"warm": warm, "old": old}


@pytest.fixture(scope="module")
def sessions(files) -> dict[str, InferenceSession]:
    return {k: InferenceSession(p, providers=("cpu",), cpu_threads=1, warmup_runs=1) for k, p in files.items()}


@pytest.fixture(scope="module")
def frames():
    return pseudo_frames(S, 4, seed=21)


def run_all(sess: InferenceSession, frames, **init) -> dict[str, np.ndarray]:
    return sess.run(frames.rgb, frames.depth, frames.ref_depth, frames.stream_mask, **init)


@torch.no_grad()
def torch_run(model, frames, start: int, stop: int | None = None, **init) -> dict[str, np.ndarray]:
    f = frames.feeds(start, start + 1 if stop is None else stop)
    out = model(*(torch.from_numpy(f[k]) for k in ("rgb", "depth", "ref_depth", "stream_mask")),
                **{k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in init.items()})
    return {k: v.numpy() for k, v in out.items()}


# ------------------------------------------------------------------------------------------ export
@needs_export
def test_the_graph_and_contract_carry_the_warm_start(files, sessions, net):
    c = ModelContract.from_file(files["warm"])
    assert c.has_warm_start and not ModelContract.from_file(files["old"]).has_warm_start
    names = [i.name for i in sessions["warm"].session.get_inputs()]
    assert names == ["rgb", "depth", "ref_depth", "stream_mask", "init_pose6d", "init_beta", "init_cam"]
    assert [i.shape for i in sessions["warm"].session.get_inputs()][4:] == [["batch", 144], ["batch", 10],
                                                                         ["batch", 3]]
    assert "pose6d" in [o.name for o in sessions["warm"].session.get_outputs()]
    assert c.warm_start["inputs"] == {"init_pose6d": "pose6d", "init_beta": "beta", "init_cam": "cam"}
    buffers = mean_init(net[0])
    for name in WARM_START_INPUTS:  # the mean in the metadata is the regressor's buffer, bit for bit
        np.testing.assert_array_equal(c.warm_start_mean()[name], buffers[name], err_msg=name)
    assert c.warm_start_mean()["init_cam"][0, 0] == pytest.approx(0.9)  # centred_mean_camera's scale


@needs_export
def test_mean_init_reproduces_todays_output_exactly(sessions, net, frames):
    cold = {k: v.copy() for k, v in run_all(sessions["warm"], frames).items()}
    mean = sessions["warm"].init_mean
    explicit = run_all(sessions["warm"], frames, init_pose6d=mean["init_pose6d"][0], init_beta=mean["init_beta"],
                       init_cam=mean["init_cam"])
    older = run_all(sessions["old"], frames)
    for name in ("theta", "beta", "cam", "vertices", "joints", "lsp_joints"):
        np.testing.assert_array_equal(explicit[name], cold[name], err_msg=name)  # None = the mean
        np.testing.assert_allclose(cold[name], older[name], atol=1e-6, err_msg=name)  # = a file without warm start
    ref = torch_outputs(net[0], frames)  # torch without any init
    assert ref["vertices"].std(axis=0).max() > 1e-2  # the outputs depend on the input by centimetres
    for name in ("theta", "beta", "cam", "vertices", "joints"):
        np.testing.assert_allclose(cold[name], ref[name], atol=2e-5, err_msg=name)
    np.testing.assert_allclose(cold["pose6d"], torch_run(net[0], frames, 0, len(frames))["pose6d"], atol=2e-5)


@needs_export
def test_warm_start_matches_torch_and_changes_the_answer(sessions, net, frames):
    sess = sessions["warm"]
    prev = sess.run(frames.rgb[0], frames.depth[0], frames.ref_depth[0], frames.stream_mask[0])
    init = {"init_pose6d": prev["pose6d"].copy(), "init_beta": prev["beta"].copy(), "init_cam": prev["cam"].copy()}
    warm = {k: v.copy() for k, v in sess.run(frames.rgb[1], frames.depth[1], frames.ref_depth[1],
                                             frames.stream_mask[1], **init).items()}
    ref = torch_run(net[0], frames, 1, init_pose=init["init_pose6d"], init_shape=init["init_beta"],
                    init_cam=init["init_cam"])
    for name in ("theta", "beta", "cam", "vertices", "joints", "pose6d"):
        np.testing.assert_allclose(warm[name], ref[name], atol=2e-5, err_msg=name)
    cold = sess.run(frames.rgb[1], frames.depth[1], frames.ref_depth[1], frames.stream_mask[1])
    assert np.abs(warm["vertices"] - cold["vertices"]).max() > 1e-2  # the start really moved the answer


@needs_export
def test_batch_rows_take_their_own_init(sessions, frames):
    sess = sessions["warm"]
    first = {k: v.copy() for k, v in run_all(sess, frames).items()}
    init = {"init_pose6d": first["pose6d"][::-1].copy(), "init_beta": first["beta"][::-1].copy(),
            "init_cam": first["cam"][::-1].copy()}
    batched = run_all(sess, frames, **init)["vertices"].copy()
    for i in range(len(frames)):
        one = sess.run(frames.rgb[i], frames.depth[i], frames.ref_depth[i], frames.stream_mask[i],
                       **{k: v[i] for k, v in init.items()})["vertices"]
        np.testing.assert_allclose(one[0], batched[i], atol=1e-5)
    # a single (n,) init is used for every row; the other two stay at the mean
    pose = first["pose6d"][0]
    shared = run_all(sess, frames, init_pose6d=pose)["vertices"]
    row0 = sess.run(frames.rgb[0], frames.depth[0], frames.ref_depth[0], frames.stream_mask[0], init_pose6d=pose)
    np.testing.assert_allclose(shared[0], row0["vertices"][0], atol=1e-5)


@needs_export
def test_io_binding_path_feeds_the_warm_start(files, sessions, frames):
    bound = InferenceSession(files["warm"], providers=("cpu",), cpu_threads=1, io_binding=True, warmup_runs=0)
    assert bound.io_binding
    prev = sessions["warm"].run(frames.rgb[2], frames.depth[2], frames.ref_depth[2])
    init = {"init_pose6d": prev["pose6d"].copy(), "init_beta": prev["beta"].copy(), "init_cam": prev["cam"].copy()}
    a = bound.run(frames.rgb[3], frames.depth[3], frames.ref_depth[3], **init)
    b = sessions["warm"].run(frames.rgb[3], frames.depth[3], frames.ref_depth[3], **init)
    for k in ("vertices", "pose6d", "cam"):
        np.testing.assert_allclose(a[k], b[k], atol=1e-6, err_msg=k)
    cold = bound.run(frames.rgb[3], frames.depth[3], frames.ref_depth[3])  # the bound buffers go back to the mean
    np.testing.assert_allclose(cold["vertices"], sessions["warm"].run(frames.rgb[3], frames.depth[3],
                                                                       frames.ref_depth[3])["vertices"], atol=1e-6)


# ------------------------------------------------------------------------------------------ older files
@needs_export
def test_an_older_file_runs_and_refuses_only_an_init(sessions, frames):
    old = sessions["old"]
    assert not old.warm_start and old.init_mean == {}
    out = old.run(frames.rgb[0], frames.depth[0], frames.ref_depth[0])
    assert "pose6d" not in out and out["vertices"].shape == (1, 222, 3)
    with pytest.raises(ValueError, match="old.onnx has no warm-start inputs .* to pass init_beta") as e:
        old.run(frames.rgb[0], frames.depth[0], frames.ref_depth[0], init_beta=np.zeros(10, np.float32))
    assert "\n" not in str(e.value)


@needs_export
@pytest.mark.parametrize("init, message", [
    (dict(init_pose6d=np.zeros(143, np.float32)), r"init_pose6d must be \(144,\) or \(1, 144\)"),
    (dict(init_beta=np.full(10, np.nan, np.float32)), "init_beta holds NaN or inf"),
    (dict(init_cam=np.array(["a", "b", "c"])), "init_cam must be float numbers"),
])
def test_bad_init_gets_a_one_line_error(sessions, frames, init, message):
    with pytest.raises(ValueError, match=message) as e:
        sessions["warm"].run(frames.rgb[0], frames.depth[0], frames.ref_depth[0], **init)
    assert "\n" not in str(e.value)


@needs_export
def test_graph_and_metadata_must_agree(files, tmp_path):
    def rewrite(src: Path, dst: Path, **changes) -> Path:
        m = onnx.load(str(src))
        keep = [(p.key, p.value) for p in m.metadata_props if p.key not in changes]
        del m.metadata_props[:]
        for k, v in keep + [(k, v) for k, v in changes.items() if v is not None]:
            entry = m.metadata_props.add()
            entry.key, entry.value = k, v
        onnx.save(m, str(dst))
        return dst

    stripped = rewrite(files["warm"], tmp_path / "stripped.onnx", warm_start=None)
    with pytest.raises(ContractMismatchError, match="has warm-start inputs but its metadata lacks 'warm_start'"):
        InferenceSession(stripped, warmup_runs=0)
    claimed = rewrite(files["old"], tmp_path / "claimed.onnx", warm_start=read_metadata(files["warm"])["warm_start"])
    with pytest.raises(ContractMismatchError, match="declares warm start but the graph lacks its inputs"):
        InferenceSession(claimed, warmup_runs=0)
    ws = json.loads(read_metadata(files["warm"])["warm_start"])
    del ws["mean"]["init_cam"]
    with pytest.raises(ModelFileError, match="'warm_start' must hold a mean for each of"):
        InferenceSession(rewrite(files["warm"], tmp_path / "bad.onnx", warm_start=json.dumps(ws)), warmup_runs=0)


# ------------------------------------------------------------------------------------------ CLI
def test_cli_flag_sets_the_worker_config():
    from app.cli import _worker_config, build_parser
    from app.worker import WorkerConfig

    parser = build_parser()
    assert _worker_config(parser.parse_args(["--warm-start"])).warm_start is True
    assert _worker_config(parser.parse_args(["--no-warm-start"])).warm_start is False
    assert _worker_config(parser.parse_args([])).warm_start is WorkerConfig().warm_start
