"""training/evaluate.py and training/robustness.py: known models on fixtures give known numbers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from model.body import BodyModel
from model.network import build_fusemesh
from training.checkpoint import save_checkpoint
from training.config import train_config_from_dict
from training.data import write_procedural_shards
from training.evaluate import (TorchPredictor, evaluate, format_table, main, make_test_set, per_sample_errors,
                               results_table)
from training.robustness import STATES, expected_grid, robustness, state_errors
from training.synth.shards import SynthShards, write_shard
from tests.toy_body import write_toy_body

S = 64
N = 12
TINY = {"preset": "lite", "input_size": S, "rgb_encoder": {"width": 8}, "depth_encoder": {"width": 8},
        "fusion": {"hidden": [32, 32]}, "regressor": {"hidden": [32, 32]}}


def _rewrite_lsp3d(folder, lsp3d: np.ndarray) -> None:
    """Replace the ground-truth LSP joints of every sample of a shard folder (N, 14, 3)."""
    ds = SynthShards(folder)
    start = 0
    for k, entry in enumerate(ds.shards):
        arrays = dict(ds.shard(k))
        arrays["lsp3d"] = lsp3d[start:start + entry.count].astype(np.float32)
        write_shard(folder / entry.file, arrays)
        start += entry.count


def _constant_model(body):
    """A network whose output is its mean pose whatever the input: zero IEF decoders."""
    cfg = train_config_from_dict({"model": TINY}).model
    torch.manual_seed(0)
    net = build_fusemesh(cfg, body)
    with torch.no_grad():
        for lin in (net.regressor.dec_pose, net.regressor.dec_betas, net.regressor.dec_cam):
            lin.weight.zero_()
            lin.bias.zero_()
    return net.eval(), cfg


def _off_manifold(p0: np.ndarray, rng: np.random.Generator, mean_norm: float) -> np.ndarray:
    """A perturbation d (14, 3) with sum_j d_j = 0 and sum_j d_j p0_j^T = 0 (p0 centred): the similarity
    Procrustes of p0 onto p0 + d is then the identity, so PA-MPJPE = mean_j |d_j| exactly."""
    a = []
    for i in range(3):
        for k in range(3):
            m = np.zeros((14, 3))
            m[:, i] = p0[:, k]
            a.append(m.reshape(-1))
        m = np.zeros((14, 3))
        m[:, i] = 1.0
        a.append(m.reshape(-1))
    _, _, vt = np.linalg.svd(np.array(a))
    null = vt[len(a):]
    d = (rng.normal(size=null.shape[0]) @ null).reshape(14, 3)
    return d * mean_norm / np.linalg.norm(d, axis=1).mean()


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    body = BodyModel.from_file(write_toy_body(root / "toy.npz"))
    folder = root / "test"
    write_procedural_shards(folder, N, size=S, body=body, seed=5, shard_size=5)
    net, cfg = _constant_model(body)
    pred = TorchPredictor(net)
    ts = make_test_set("T", folder, input_size=S)
    b = ts.data[0]
    _, lsp = pred(b["rgb"][None], b["depth"][None], b["ref_depth"][None], np.array([[True, True]]))
    l0 = lsp[0]
    rng = np.random.default_rng(0)
    gt = []
    for i in range(N):
        if i % 2 == 0:  # any similarity transform of the prediction: 0 mm
            r = Rotation.random(random_state=i).as_matrix()
            gt.append(1.3 * l0 @ r.T + rng.normal(size=3))
        else:  # prediction + an off-manifold perturbation of mean norm 50 mm: exactly 50 mm
            gt.append(l0 + _off_manifold(l0 - l0.mean(0), rng, 0.050))
    _rewrite_lsp3d(folder, np.array(gt))
    ckpt = save_checkpoint(root / "const.pt", net, cfg, body)
    return root, body, folder, net, ckpt


def test_constant_model_gives_known_errors_in_every_mode(fixture):
    root, body, folder, net, _ = fixture
    ts = make_test_set("T", folder, input_size=S)
    errs = per_sample_errors(TorchPredictor(net), ts, (True, False), batch=5)
    np.testing.assert_allclose(errs[0::2], 0.0, atol=0.05)
    np.testing.assert_allclose(errs[1::2], 50.0, atol=0.05)
    res = evaluate(TorchPredictor(net), [ts])
    assert set(res) == {("T", "rgb"), ("T", "depth"), ("T", "rgbd")}
    for v in res.values():
        assert v == pytest.approx(25.0, abs=0.05)


def test_cli_prints_the_paper_layout(fixture, capsys):
    root, body, folder, net, ckpt = fixture
    code = main(["--checkpoint", str(ckpt), "--checkpoint", str(ckpt), "--label", "Fusion", "--label", "HMR_RGB:rgb",
                 "--test", f"PKU={folder}", "--body", str(root / "toy.npz")])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[1].split() == ["Input", "Fusion", "HMR_RGB"]
    assert out[3].split() == ["RGB", "25.00", "25.00"]
    assert out[4].split() == ["D", "25.00", "-"]
    assert out[5].split() == ["RGB-D", "25.00", "-"]
    code = main(["--checkpoint", str(ckpt), "--test", f"PKU={folder}:kinect_v9", "--body", str(root / "toy.npz")])
    assert code == 2 and "labels must be 'smpl', 'skeleton'" in capsys.readouterr().err


def test_modes_reach_the_network(fixture, tmp_path):
    """Ground truth = a random network's own RGB-D predictions: RGB-D scores 0, the other modes do not."""
    _, body, _, _, _ = fixture
    folder = tmp_path / "t"
    write_procedural_shards(folder, 8, size=S, body=body, seed=6, shard_size=8)
    torch.manual_seed(1)
    net = build_fusemesh(train_config_from_dict({"model": TINY}).model, body).eval()
    with torch.no_grad():  # the IEF decoders start near zero (gain 0.01): make the output depend on the input
        net.regressor.dec_pose.weight.mul_(100.0)
    pred = TorchPredictor(net)
    ts = make_test_set("T", folder, input_size=S)
    lsp = []
    for i in range(len(ts.data)):
        b = ts.data[i]
        lsp.append(pred(b["rgb"][None], b["depth"][None], b["ref_depth"][None], np.array([[True, True]]))[1][0])
    _rewrite_lsp3d(folder, np.array(lsp))
    res = evaluate(pred, [make_test_set("T", folder, input_size=S)])
    assert res[("T", "rgbd")] < 0.01
    assert res[("T", "rgb")] > 0.5 and res[("T", "depth")] > 0.5 and res[("T", "rgb")] != res[("T", "depth")]


def test_skeleton_targets_use_the_canonical_joints(fixture):
    _, _, folder, net, _ = fixture
    ts = make_test_set("CAD", folder, "kinect_v1_like", (0.0, 0.5), input_size=S)
    assert ts.target == "skeleton" and len(ts.data) == N // 2
    errs = per_sample_errors(TorchPredictor(net), ts, (True, True))
    # a mean-pose prediction against posed, convention-shifted, noisy skeletons: large but finite errors
    assert errs.shape == (N // 2,) and np.all((errs > 20) & (errs < 400))


def test_tables_follow_the_paper_layout():
    one = results_table([{("PKU", "rgb"): 133.7}, {("PKU", "rgbd"): 136.18}], ["HMR_RGB", "HMR_RGBD"], ["PKU"])
    lines = one.splitlines()
    assert lines[0].split() == ["Input", "HMR_RGB", "HMR_RGBD"]
    assert lines[2].split() == ["RGB", "133.70", "-"] and lines[4].split() == ["RGB-D", "-", "136.18"]
    two = results_table([{("PKU", "rgb"): 1.0, ("CAD", "rgb"): 2.0}], ["A"], ["PKU", "CAD"], modes=("rgb",))
    assert [l.split()[:3] for l in two.splitlines()[2:]] == [["RGB", "(PKU)", "1.00"], ["RGB", "(CAD)", "2.00"]]
    assert format_table(["x"], [("r", [float("nan")])]).splitlines()[-1].split() == ["r", "-"]


# ------------------------------------------------------------------------------------ robustness
def test_expected_grid_is_the_exact_expectation():
    errors = np.array([[10.0, 20.0, 30.0, 40.0], [10.0, 20.0, 30.0, 40.0]])  # both, rgb only, depth only, none
    assert STATES == ((True, True), (True, False), (False, True), (False, False))
    g = expected_grid(errors, [0.0, 0.5, 1.0], [0.0, 0.5, 1.0])
    assert g[0, 0] == 10.0  # nothing dropped
    assert g[0, 2] == 20.0  # depth always dropped: RGB only
    assert g[2, 0] == 30.0  # RGB always dropped: depth only
    assert g[2, 2] == 40.0  # both dropped
    assert g[1, 1] == pytest.approx(25.0)
    assert g[1, 0] == pytest.approx(20.0)  # RGB dropped half the time
    with pytest.raises(ValueError, match="probabilities"):
        expected_grid(errors, [1.5], [0.0])


def test_robustness_writes_a_png_and_numbers(fixture, tmp_path):
    root, body, folder, net, _ = fixture
    ts = make_test_set("T", folder, input_size=S)
    errs = state_errors(TorchPredictor(net), ts)
    np.testing.assert_allclose(errs.mean(0), 25.0, atol=0.05)  # the constant model ignores its inputs
    torch.manual_seed(2)
    other = TorchPredictor(build_fusemesh(train_config_from_dict({"model": TINY}).model, body).eval())
    res = robustness(TorchPredictor(net), other, ts, tmp_path / "fig.png", steps=3)
    png = (tmp_path / "fig.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert (tmp_path / "fig.json").is_file()
    np.testing.assert_allclose(res["grids_mm"]["fusion"], 25.0, atol=0.05)
    assert np.array(res["grids_mm"]["concat"]).shape == (3, 3)
    # without a baseline: one panel, the fusion grid only (a narrower picture than the three-panel one)
    alone = robustness(TorchPredictor(net), None, ts, tmp_path / "alone.png", steps=3)
    assert set(alone["grids_mm"]) == {"fusion"} and alone["grids_mm"]["fusion"] == res["grids_mm"]["fusion"]
    import cv2
    assert cv2.imread(str(tmp_path / "alone.png")).shape[1] < 0.5 * cv2.imread(str(tmp_path / "fig.png")).shape[1]


@pytest.mark.slow
def test_onnx_export_scores_like_the_checkpoint(fixture, tmp_path):
    from training.evaluate import OnnxPredictor
    from training.export import export_onnx

    root, body, folder, _, _ = fixture
    torch.manual_seed(3)
    cfg = train_config_from_dict({"model": TINY}).model
    net = build_fusemesh(cfg, body).eval()
    export_onnx(net, cfg, body, tmp_path / "m.onnx", "fp32", random_weights=True)
    ts = make_test_set("T", folder, input_size=S)
    a = evaluate(TorchPredictor(net), [ts])
    b = evaluate(OnnxPredictor(tmp_path / "m.onnx", threads=1), [ts])
    for k in a:
        assert b[k] == pytest.approx(a[k], abs=0.05)
