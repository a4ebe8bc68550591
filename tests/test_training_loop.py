"""training/loop.py + training/train.py: the update, resume, DDP under torchrun, checkpoints."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from model.body import BodyModel
from training.checkpoint import load_checkpoint, read_checkpoint
from training.config import train_config_from_dict
from training.data import write_procedural_shards
from training.loop import Trainer, build_prior_bank, skeleton_3d_loss
from training.train import read_scalars_csv, train, weight_digest
from tests.toy_body import write_toy_body

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = {"preset": "lite", "input_size": 64, "rgb_encoder": {"width": 8}, "depth_encoder": {"width": 8},
              "fusion": {"hidden": [64, 64]}, "regressor": {"hidden": [64, 64]},
              "discriminator": {"pose_hidden": [64, 64]}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    body_path = write_toy_body(root / "toy.npz")
    body = BodyModel.from_file(body_path)
    write_procedural_shards(root / "d", 48, size=64, body=body, seed=0, shard_size=20)
    return root, body_path, body


def tiny_config(root: Path, out: str, steps: int = 6, **run) -> dict:
    d = str(root / "d")
    return {"model": TINY_MODEL,
            "data": {"sources": [{"path": d, "labels": "kinect_v1_like", "select": [0, 0.5]},
                                 {"path": d, "labels": "smpl", "select": [0.5, 0.75]},
                                 {"path": d, "kind": "rgb", "labels": "none", "select": [0.75, 1.0]}],
                     "batch_size": 8, "prior_size": 64},
            "objective": {"w_3d": 1.0},
            "run": {"steps": steps, "log_every": 1, "ckpt_every": 100, "out_dir": str(root / out), "threads": 1,
                    **run}}


# ------------------------------------------------------------------------------------ pieces
def test_skeleton_3d_loss_is_root_relative_and_masked():
    pred = torch.zeros(2, 24, 3)
    target = torch.zeros(2, 24, 3)
    pred[:, 1, 0], pred[:, 2, 0] = 0.1, -0.1  # hips at +-10 cm: root at the origin
    target[:, 1, 0], target[:, 2, 0] = 0.1, -0.1
    target[:, 5] = torch.tensor([0.0, 0.3, 0.0])  # one joint 30 cm off
    target = target + torch.tensor([5.0, -2.0, 9.0])  # another frame origin: irrelevant
    mask = torch.zeros(2, 24, dtype=torch.bool)
    mask[:, [1, 2, 5, 7]] = True
    valid = torch.tensor([True, False])
    loss = skeleton_3d_loss(pred, target, mask, valid)
    assert loss.item() == pytest.approx(0.09 / 4, rel=1e-6)  # 0.3^2 over 4 present joints of the valid sample


def test_stream_masks_follow_the_policy_and_rgb_only_samples(setup):
    root, _, body = setup
    cfg = train_config_from_dict({"model": TINY_MODEL, "run": {"seed": 3}})
    tr = Trainer(cfg, body, "cpu")
    has_depth = torch.ones(20000, dtype=torch.bool)
    has_depth[:100] = False
    m = tr.stream_mask(has_depth, step=0)
    assert (m[:100] == torch.tensor([1.0, 0.0])).all()
    rest = m[100:]
    assert abs((rest[:, 0] == 0).float().mean().item() - 0.3) < 0.02  # p_miss of RGB
    assert abs((rest[:, 1] == 0).float().mean().item() - 0.3) < 0.02  # p_miss of depth
    assert (rest.sum(1) >= 1).all()  # never both off
    assert torch.equal(tr.stream_mask(has_depth, step=0), m) and not torch.equal(tr.stream_mask(has_depth, 1), m)
    concat = Trainer(train_config_from_dict({"model": {**TINY_MODEL, "fusion": {"dynamic": False}}}), body, "cpu")
    assert (concat.stream_mask(has_depth[100:], 0) == 1).all()
    rgb = Trainer(train_config_from_dict({"model": TINY_MODEL, "run": {"input": "rgb"}}), body, "cpu")
    assert (rgb.stream_mask(has_depth, 0) == torch.tensor([1.0, 0.0])).all()


def test_cosine_schedule_with_warmup():
    cfg = train_config_from_dict({"model": TINY_MODEL, "run": {"steps": 100},
                                  "optim": {"lr": 1e-3, "schedule": "cosine", "warmup_steps": 10}})
    tr = Trainer.__new__(Trainer)
    tr.cfg = cfg
    assert tr.lr_at(0, 1e-3) == pytest.approx(1e-4 * (0.01 + 0.99))
    assert tr.lr_at(50, 1e-3) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    assert tr.lr_at(100, 1e-3) == pytest.approx(1e-5)


def test_cosine_schedule_follows_the_clock_when_it_runs_ahead():
    cfg = train_config_from_dict({"model": TINY_MODEL, "run": {"steps": 100},
                                  "optim": {"lr": 1e-3, "schedule": "cosine", "warmup_steps": 0}})
    tr = Trainer.__new__(Trainer)
    tr.cfg = cfg
    assert tr.lr_at(10, 1e-3, progress=0.5) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))  # time is ahead
    assert tr.lr_at(10, 1e-3, progress=1.7) == pytest.approx(1e-5)  # past the limit: the floor, not beyond
    assert tr.lr_at(50, 1e-3, progress=0.1) == tr.lr_at(50, 1e-3)  # steps are ahead: unchanged


def test_time_limit_stops_cleanly_with_a_resumable_checkpoint(setup):
    root, _, body = setup
    cfg = train_config_from_dict(tiny_config(root, "timed", steps=500, time_limit_s=1e-6))
    res = train(cfg, body=body, progress=False)
    assert res.stopped.startswith("time limit") and res.end_step == 1 and len(res.history) == 1
    summary = json.loads((root / "timed" / "summary.json").read_text())
    assert summary["end_step"] == 1 and summary["stopped"].startswith("time limit")
    assert sorted(read_scalars_csv(root / "timed" / "scalars.csv")) == [1]
    state = read_checkpoint(root / "timed" / "last.pt")
    assert state["train_state"]["step"] == 1
    untimed = train(train_config_from_dict(tiny_config(root, "untimed", steps=2)), body=body, progress=False)
    assert untimed.stopped == "" and untimed.end_step == 2


def test_prior_bank_from_amass_holds_its_rotations():
    bank = build_prior_bank(32, seed=0, amass_dir=str(REPO / "tests" / "assets" / "datasets" / "amass"))
    assert bank.rotmat.shape == (32, 23, 3, 3) and bank.betas.shape == (32, 10)
    det = torch.linalg.det(bank.rotmat)
    assert torch.allclose(det, torch.ones_like(det), atol=1e-5)
    from training.datasets.amass import read_amass_npz

    seq = read_amass_npz(REPO / "tests" / "assets" / "datasets" / "amass" / "01_01_poses.npz")
    np.testing.assert_allclose(bank.betas[0].numpy(), seq.smpl_betas(10), atol=1e-6)
    sampler = build_prior_bank(16, seed=0)
    assert sampler.rotmat.shape == (16, 23, 3, 3) and sampler.betas.abs().max() <= 2.5


# ------------------------------------------------------------------------------------ runs
def test_training_fits_the_2d_keypoints_of_a_few_samples(setup):
    root, _, body = setup
    model = {**TINY_MODEL, "fusion": {"hidden": [64, 64], "dynamic": False}, "regressor": {"hidden": [64, 64],
             "dropout": 0.0}, "loss": {"w_smpl": 0.0, "w_drc": 0.0, "w_adv": 0.0}}
    cfg = train_config_from_dict({
        "model": model, "optim": {"lr": 3e-3},
        "data": {"sources": [{"path": str(root / "d"), "select": [0, 1 / 6]}], "batch_size": 8, "flip_prob": 0.0,
                 "color_jitter": 0.0},
        "run": {"steps": 40, "log_every": 10, "out_dir": str(root / "fit"), "threads": 1}})
    res = train(cfg, body=body, progress=False)
    l2d = [h["loss_2d"] for h in res.history]
    assert np.mean(l2d[-5:]) < 0.5 * np.mean(l2d[:3]), (l2d[:3], l2d[-5:])
    assert set(res.history[0]) >= {"loss", "loss_2d"} and "loss_adv" not in res.history[0]


def test_every_loss_term_reports_when_switched_on(setup):
    root, _, body = setup
    res = train(train_config_from_dict(tiny_config(root, "terms", steps=2)), body=body, progress=False)
    assert {"loss_2d", "loss_smpl", "loss_drc", "loss_adv", "loss_3d", "disc", "rgb_on", "depth_on"} <= set(res.history[0])
    h = res.history[0]
    assert all(np.isfinite(v) for v in h.values())
    assert h["depth_on"] < 1.0  # RGB-only samples (a quarter of the data) never get the depth stream


def test_resume_continues_the_same_loss_curve(setup):
    root, _, body = setup
    straight = train(train_config_from_dict(tiny_config(root, "straight", steps=6)), body=body, progress=False)
    first = train(train_config_from_dict(tiny_config(root, "resumed", steps=3)), body=body, progress=False)
    rest = train(train_config_from_dict(tiny_config(root, "resumed", steps=6)), body=body, progress=False, resume=True)
    assert rest.start_step == 3 and len(rest.history) == 3
    a = [h["loss"] for h in straight.history]
    b = [h["loss"] for h in first.history + rest.history]
    np.testing.assert_allclose(b, a, rtol=1e-6)
    assert len(set(np.round(a, 4))) > 1  # a real curve, not a constant
    assert rest.digests == straight.digests
    logged = read_scalars_csv(root / "resumed" / "scalars.csv")
    assert sorted(logged) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([logged[s] for s in range(1, 7)], a, rtol=1e-6)


def test_tensorboard_events_hold_the_same_scalars_as_the_csv(setup):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    root, _, body = setup
    res = train(train_config_from_dict(tiny_config(root, "tb", steps=3)), body=body, progress=False,
                use_tensorboard=True)
    acc = EventAccumulator(str(root / "tb" / "tb"))
    acc.Reload()
    events = {e.step: e.value for e in acc.Scalars("train/loss")}
    csv_rows = read_scalars_csv(root / "tb" / "scalars.csv")
    assert sorted(events) == sorted(csv_rows) == [1, 2, 3]
    np.testing.assert_allclose([events[s] for s in (1, 2, 3)], [h["loss"] for h in res.history], rtol=1e-6)


def test_checkpoint_rebuilds_the_model_alone(setup):
    root, body_path, body = setup
    res = train(train_config_from_dict(tiny_config(root, "ckpt", steps=2)), body=body, progress=False)
    model, cfg, meta = load_checkpoint(res.checkpoint, body=BodyModel.from_file(body_path))
    assert cfg.input_size == 64 and cfg.rgb_encoder.width == 8
    assert weight_digest(model) == res.digests[0]
    assert meta["train_state"]["step"] == 2 and "optimizer" in meta["train_state"]
    assert meta["train_summary"]["steps"] == 2 and meta["train_summary"]["fusion"] == "dynamic"
    summary = json.loads((root / "ckpt" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["ranks_in_sync"] and summary["samples_per_s"] > 0
    with pytest.raises(ValueError, match="nothing to do"):
        train(train_config_from_dict(tiny_config(root, "ckpt", steps=2)), body=body, progress=False, resume=True)


def test_slim_checkpoint_rebuilds_the_model_and_starts_a_new_run(setup):
    from training.checkpoint import read_checkpoint, slim_checkpoint
    root, body_path, body = setup
    res = train(train_config_from_dict(tiny_config(root, "full", steps=2)), body=body, progress=False)
    slim = slim_checkpoint(res.checkpoint, root / "slim.pt")
    ck = read_checkpoint(slim)
    assert "train_state" not in ck and ck["train_summary"]["weights_dtype"] == "float16"
    assert all(v.dtype == torch.float16 for v in ck["state_dict"].values() if v.is_floating_point())
    assert slim.stat().st_size < 0.6 * res.checkpoint.stat().st_size
    full_model, _, _ = load_checkpoint(res.checkpoint, body=body)
    slim_model, _, _ = load_checkpoint(slim, body=body)
    for (k, a), (_, b) in zip(full_model.state_dict().items(), slim_model.state_dict().items()):
        if a.is_floating_point():
            torch.testing.assert_close(b, a.half().float(), rtol=0, atol=0, msg=k)
    # --init-from: the new run's first loss equals a run whose weights were set to the slim file's
    fresh = train(train_config_from_dict(tiny_config(root, "init", steps=1)), body=body, progress=False,
                  init_from=slim)
    scratch = train(train_config_from_dict(tiny_config(root, "scratch", steps=1)), body=body, progress=False)
    assert fresh.start_step == 0
    assert fresh.history[0]["loss"] != pytest.approx(scratch.history[0]["loss"], rel=1e-6)
    other = tiny_config(root, "other", steps=1)
    other["model"] = {**TINY_MODEL, "fusion": {"hidden": [32, 32]}}
    with pytest.raises(ValueError, match="differs from the run's in fusion"):
        train(train_config_from_dict(other), body=body, progress=False, init_from=slim)


def test_cli_help_and_bad_config(tmp_path):
    out = subprocess.run([sys.executable, "-m", "training.train", "--help"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0 and "--resume" in out.stdout and "torchrun" in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: {stepz: 3}\n")
    out = subprocess.run([sys.executable, "-m", "training.train", "--config", str(bad)], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 2 and "did you mean 'run.steps'?" in out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_gloo_processes_end_with_identical_weights(setup):
    root, body_path, body = setup
    cfg = tiny_config(root, "ddp", steps=3)
    path = root / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "training.train", "--config", str(path), "--body",
           str(body_path), "--no-progress"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    summary = json.loads((root / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["device"] == "cpu"
    d = summary["rank_weight_digests"]
    assert len(d) == 2 and d[0] == d[1] and summary["ranks_in_sync"]
    # the ranks did train: the weights moved away from the (seeded, shared) initial ones
    torch.manual_seed(0)
    init = Trainer(train_config_from_dict(cfg), body, "cpu")
    assert weight_digest(init.model) != d[0]
    model, _, meta = load_checkpoint(root / "ddp" / "last.pt", body=body)
    assert weight_digest(model) == d[0] and meta["train_state"]["step"] == 3
    losses = read_scalars_csv(root / "ddp" / "scalars.csv")
    assert sorted(losses) == [1, 2, 3] and all(np.isfinite(v) for v in losses.values())
