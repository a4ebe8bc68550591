"""training/uscg.py: USCG training pairs, training, pseudo labels with the quality gate and its report."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from model.body import BodyModel
from model.uscg import ROOT_JOINTS
from training.config import train_config_from_dict
from training.data import write_procedural_shards
from training.uscg import (PoseSource, camera_orientations, generate, load_uscg, main, make_pairs, pass_rate_report,
                           save_uscg, train_uscg)
from tests.toy_body import write_toy_body


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("uscg")
    path = write_toy_body(root / "toy.npz")
    body = BodyModel.from_file(path)
    write_procedural_shards(root / "d", 24, size=64, body=body, seed=1, shard_size=24)
    return root, path, body


def small_cfg(root, steps=60):
    return train_config_from_dict({"model": {"uscg": {"n_layers": 4, "hidden": 128}},
                                   "uscg": {"steps": steps, "batch_size": 64, "lr": 1e-3, "out": str(root / "u.pt"),
                                            "ckpt_every": 30},
                                   "run": {"threads": 1, "seed": 2}})


def test_training_orientations_are_upright_camera_views():
    rng = np.random.default_rng(0)
    from scipy.spatial.transform import Rotation

    r = Rotation.from_rotvec(camera_orientations(500, rng, tilt_deg=30.0)).as_matrix()
    up = r[:, :, 1]  # the body's +Y (up) in the camera frame (y down)
    tilt = np.degrees(np.arccos(np.clip(-up[:, 1], -1, 1)))
    assert tilt.max() < 32.0 and tilt.mean() > 5.0
    facing = r[:, :, 2]  # the body's forward direction: all around (yaw over 360 deg)
    assert (facing[:, 2] > 0.5).any() and (facing[:, 2] < -0.5).any()


def test_pairs_are_root_relative_canonical_joints(toy):
    _, _, body = toy
    noisy, clean, rot, betas = make_pairs(body, PoseSource(), 16, np.random.default_rng(1), 30.0, 1.0, 0.01)
    assert noisy.shape == clean.shape == (16, 15, 3) and rot.shape == (16, 24, 3, 3) and betas.shape == (16, 10)
    root = clean[:, list(ROOT_JOINTS)].mean(1)
    assert torch.allclose(root, torch.zeros_like(root), atol=1e-6)
    assert 0.003 < (noisy - clean).norm(dim=-1).mean().item() < 0.03
    head, ankle = clean[:, 0], clean[:, 11]
    assert (head[:, 1] < ankle[:, 1]).float().mean() > 0.9  # camera y points down: heads above feet


def test_training_improves_the_cycle_and_resumes(toy):
    root, _, body = toy
    cfg0 = small_cfg(root, steps=1)
    before = train_uscg(cfg0, body=body, progress=False)
    after_30 = train_uscg(small_cfg(root, steps=30), body=body, progress=False, resume=True)
    after = train_uscg(small_cfg(root, steps=60), body=body, progress=False, resume=True)
    assert after["val_cycle_pa_mpjpe_mm"] < 0.8 * before["val_cycle_pa_mpjpe_mm"]
    assert after_30["steps"] == 30 and after["steps"] == 60
    uscg, data = load_uscg(root / "u.pt", body)
    assert data["step"] == 60 and not any(k.startswith("body.") for k in data["uscg"])
    other = BodyModel.from_file(write_toy_body(root / "toy2.npz", seed=1))
    with pytest.raises(ValueError, match="is not the one the USCG was trained with"):
        load_uscg(root / "u.pt", other)


def test_generate_gates_labels_and_reports_the_pass_rate(toy, capsys):
    root, path, body = toy
    cfg = small_cfg(root, steps=1)
    torch.manual_seed(0)
    from model.network import build_uscg

    save_uscg(root / "g.pt", build_uscg(cfg.model, body), None, 0, cfg, body)
    loose = generate(root / "g.pt", root / "loose.npz", data=str(root / "d"), view="kinect_v2_like",
                     select=(0.0, 0.5), threshold_mm=1e6, body=body)
    strict = generate(root / "g.pt", root / "strict.npz", data=str(root / "d"), view="kinect_v2_like",
                      select=(0.0, 0.5), threshold_mm=1e-3, body=body)
    assert loose["n"] == strict["n"] == 12 and loose["accepted"] == 12 and strict["accepted"] == 0
    z = np.load(root / "loose.npz")
    assert z["index"].tolist() == list(range(12)) and z["theta"].shape == (12, 72) and z["betas"].shape == (12, 10)
    mid = float(np.median(z["err_mm"]))
    part = generate(root / "g.pt", root / "mid.npz", data=str(root / "d"), view="kinect_v2_like", select=(0.0, 0.5),
                    threshold_mm=mid, body=body)
    zm = np.load(root / "mid.npz")
    assert zm["accepted"].tolist() == (z["err_mm"] <= mid).tolist() and part["accepted"] == int((z["err_mm"] <= mid).sum())
    out = capsys.readouterr().out
    assert f"accepted (cycle PA-MPJPE <= {mid:g} mm): {part['accepted']} / 12" in out
    assert "pseudo label vs true SMPL joints" in out


def test_report_format():
    labels = {"accepted": np.array([True, True, False, True]), "err_mm": np.array([10.0, 50.0, 150.0, 90.0])}
    text = pass_rate_report("x", labels, 100.0)
    assert "accepted (cycle PA-MPJPE <= 100 mm): 3 / 4 = 75.0 %" in text
    assert "mean 75.0, median 70.0" in text and "max 150.0" in text


def test_cli_errors_are_one_line(toy, capsys):
    root, _, _ = toy
    assert main(["generate", "--uscg", str(root / "missing.pt"), "--out", str(root / "x.npz"), "--data", "d"]) == 2
    assert "USCG state not found" in capsys.readouterr().err


def test_generate_reads_the_real_skeleton_formats(toy):
    from pathlib import Path

    from training.datasets.cad60 import read_cad60_skeleton
    from training.datasets.pku_mmd import read_pku_mmd_skeleton

    root, _, body = toy
    cfg = small_cfg(root, steps=1)
    from model.network import build_uscg

    save_uscg(root / "r.pt", build_uscg(cfg.model, body), None, 0, cfg, body)
    assets = Path(__file__).resolve().parent / "assets" / "datasets"
    pku = assets / "pku_mmd" / "skeleton" / "0002-L.txt"
    cad = assets / "cad60" / "data1" / "0512164529.txt"
    r1 = generate(root / "r.pt", root / "pku.npz", pku_mmd=str(pku), threshold_mm=1e6, body=body, verbose=False)
    r2 = generate(root / "r.pt", root / "cad.npz", cad60=str(cad), threshold_mm=1e6, body=body, verbose=False)
    seq = read_pku_mmd_skeleton(pku)
    assert r1["n"] == int(seq.valid.sum()) and r1["accepted"] == r1["n"]
    assert np.load(root / "pku.npz")["index"].tolist() == np.flatnonzero(seq.valid.reshape(-1)).tolist()
    assert r2["n"] == int(read_cad60_skeleton(cad).skeleton.valid.sum())


def test_skeleton_layer_gives_the_body_models_joints(toy):
    from model.camera import axis_angle_to_matrix
    from training.uscg import SkeletonLayer

    _, _, body = toy
    g = torch.Generator().manual_seed(0)
    rot = axis_angle_to_matrix(0.6 * torch.randn(6, 24, 3, generator=g))
    betas = torch.randn(6, 10, generator=g)
    with torch.no_grad():
        want = body(betas=betas, body_pose=rot[:, 1:], global_orient=rot[:, :1], pose2rot=False).joints
        got = SkeletonLayer(body)(rot, betas)
    assert torch.allclose(got, want, atol=1e-5)
