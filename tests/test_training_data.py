"""training/data.py: shard sources, Kinect-like skeleton views, flip augmentation, 50/50 mixed batches."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from model.body import BodyModel
from training.config import SourceConfig, train_config_from_dict
from training.data import (CANONICAL_FLIP, LSP_FLIP, SKELETON_VIEWS, SMPL_FLIP, MixedBatchSampler, TrainingData, collate,
                           load_source, write_procedural_shards)
from training.datasets.joint_sets import (CANONICAL_JOINT_NAMES, KINECT_V1_JOINT_NAMES, KINECT_V2_JOINT_NAMES,
                                          SMPL_JOINT_NAMES)
from tests.toy_body import write_toy_body

S = 64


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    body = BodyModel.from_file(write_toy_body(root / "toy.npz"))
    folder = root / "shards"
    write_procedural_shards(folder, 40, size=S, body=body, seed=3, shard_size=16)
    return body, folder


def _src(folder, **kw):
    return SourceConfig(path=str(folder), **kw)


# ------------------------------------------------------------------------------------ skeleton views
def test_kinect_v2_view_is_kinect_camera_space_in_metres():
    j = np.zeros((1, 24, 3))
    j[0, SMPL_JOINT_NAMES.index("left_elbow")] = (0.3, -0.2, 2.0)
    v2 = SKELETON_VIEWS["kinect_v2_like"]
    skel = v2.from_smpl(j)  # no noise without seeds
    assert skel.shape == (1, 25, 3)
    np.testing.assert_allclose(skel[0, KINECT_V2_JOINT_NAMES.index("ElbowLeft")], (-0.3, 0.2, 2.0), atol=1e-12)
    np.testing.assert_allclose(v2.to_camera_axes(skel)[0, KINECT_V2_JOINT_NAMES.index("ElbowLeft")], (0.3, -0.2, 2.0))


def test_kinect_v1_view_is_millimetres_in_a_tilted_room_frame():
    j = np.zeros((1, 24, 3))
    j[0, SMPL_JOINT_NAMES.index("left_elbow")] = (0.3, -0.2, 2.0)
    j[0, SMPL_JOINT_NAMES.index("left_wrist")] = (0.3, 0.1, 2.0)  # forearm points down (+y) by 0.3 m
    skel = SKELETON_VIEWS["kinect_v1_like"].from_smpl(j)
    # Kinect axes (-0.3, 0.2, 2.0), 20 deg about x, + (0, 0.8, 0) m, in mm (hand computation)
    c, s = np.cos(np.deg2rad(20)), np.sin(np.deg2rad(20))
    want = 1000 * np.array([-0.3, c * 0.2 - s * 2.0 + 0.8, s * 0.2 + c * 2.0])
    np.testing.assert_allclose(skel[0, KINECT_V1_JOINT_NAMES.index("LEFT_ELBOW")], want, atol=1e-9)
    np.testing.assert_allclose(want, (-300.0, 303.90, 1947.79), atol=0.01)
    # NITE's hand point lies 7 cm beyond the wrist along the forearm
    hand = SKELETON_VIEWS["kinect_v1_like"].to_camera_axes(skel)[0, KINECT_V1_JOINT_NAMES.index("LEFT_HAND")]
    wrist = SKELETON_VIEWS["kinect_v1_like"].to_camera_axes(skel)[0, KINECT_V1_JOINT_NAMES.index("LEFT_ELBOW")]
    assert np.linalg.norm(hand - wrist) == pytest.approx(0.37, abs=1e-9)


def test_view_noise_is_a_pure_function_of_the_sample_index():
    j = np.random.default_rng(0).normal(size=(3, 24, 3)) + (0, 0, 3)
    v = SKELETON_VIEWS["kinect_v1_like"]
    a, b = v.from_smpl(j, seeds=[5, 6, 7]), v.from_smpl(j, seeds=[5, 6, 7])
    np.testing.assert_array_equal(a, b)
    clean = v.from_smpl(j)
    noise_mm = np.linalg.norm(a - clean, axis=-1)
    assert 5 < noise_mm.mean() < 40  # sigma 15 mm per axis


def test_canonical_flip_swaps_left_and_right():
    names = np.array(CANONICAL_JOINT_NAMES)
    assert names[CANONICAL_FLIP][names.tolist().index("left_wrist")] == "right_wrist"
    assert names[CANONICAL_FLIP][0] == "head"


# ------------------------------------------------------------------------------------ sources
def test_kinect_source_hides_smpl_and_exposes_its_skeleton(toy):
    body, folder = toy
    src = load_source(_src(folder, labels="kinect_v2_like", select=(0.0, 0.5)))
    assert len(src) == 20 and src.index.tolist() == list(range(20))
    assert not src.has_smpl.any() and not src.has_global.any()
    assert src.canon.shape == (20, 15, 3) and src.skel24.shape == (20, 24, 3)
    # the skeleton's elbows are exact SMPL joints (plus 1 cm tracker noise), in metres with OpenCV axes
    e = SMPL_JOINT_NAMES.index("left_elbow")
    d = np.linalg.norm(src.skel24[:, e] - src.joints3d[:, e], axis=-1)
    assert d.max() < 0.06 and d.mean() > 0.002
    assert src.skel24_mask[e] and not src.skel24_mask[SMPL_JOINT_NAMES.index("left_collar")]
    gt = load_source(_src(folder, labels="smpl", select=(0.5, 1.0)))
    assert gt.has_smpl.all() and gt.has_global.all() and gt.index.tolist() == list(range(20, 40))


def test_uscg_labels_are_matched_by_sample_index(toy, tmp_path):
    _, folder = toy
    index = np.arange(39, -1, -1)  # reversed order in the file
    theta = np.zeros((40, 72), np.float32)
    theta[:, 3] = index / 100.0  # a value that names its sample
    np.savez(tmp_path / "l.npz", index=index, theta=theta, betas=np.zeros((40, 10), np.float32),
             accepted=index % 2 == 0, err_mm=np.zeros(40, np.float32))
    src = load_source(_src(folder, labels="kinect_v1_like", smpl_labels=str(tmp_path / "l.npz"), select=(0.25, 0.5)))
    assert src.index.tolist() == list(range(10, 20))
    np.testing.assert_allclose(src.theta[:, 3], np.arange(10, 20) / 100.0, atol=1e-7)
    assert src.has_smpl.tolist() == [i % 2 == 0 for i in range(10, 20)]
    assert not src.has_global.any()
    np.savez(tmp_path / "short.npz", index=np.arange(5), theta=theta[:5], betas=np.zeros((5, 10)),
             accepted=np.ones(5, bool))
    with pytest.raises(ValueError, match="no label for 10 of 10 samples"):
        load_source(_src(folder, labels="kinect_v1_like", smpl_labels=str(tmp_path / "short.npz"), select=(0.25, 0.5)))


def test_rgb_only_items_have_zero_depth_and_no_depth_flag(toy):
    _, folder = toy
    ds = TrainingData([load_source(_src(folder, kind="rgb", labels="none"))], S)
    it = ds[3]
    assert not it["has_depth"] and it["ref_depth"] == 0.0 and not it["depth"].any()
    assert not it["has_smpl"] and it["rgb"].shape == (3, S, S) and it["rgb"].any()
    rgbd = TrainingData([load_source(_src(folder))], S)[3]
    assert rgbd["has_depth"] and 2.0 < rgbd["ref_depth"] < 4.5 and rgbd["depth"].max() == pytest.approx(4.5)


def test_resizing_to_the_model_input_scales_keypoints(toy):
    _, folder = toy
    full = TrainingData([load_source(_src(folder))], S)[5]
    half = TrainingData([load_source(_src(folder))], S // 2)[5]
    assert half["rgb"].shape == (3, 32, 32) and half["depth"].shape == (1, 32, 32)
    px_full = (full["kp2d"] + 1) / 2 * S
    px_half = (half["kp2d"] + 1) / 2 * (S // 2)
    np.testing.assert_allclose(px_half, (px_full + 0.5) / 2 - 0.5, atol=1e-5)


# ------------------------------------------------------------------------------------ flip
def test_flip_mirrors_image_keypoints_and_3d_labels_consistently(toy):
    body, folder = toy
    src = load_source(_src(folder))
    plain = TrainingData([src], S)[7]
    flipped = TrainingData([src], S, flip_prob=1.0)[7]
    np.testing.assert_array_equal(flipped["rgb"], plain["rgb"][:, :, ::-1])
    np.testing.assert_array_equal(flipped["depth"], plain["depth"][:, :, ::-1])
    # 2D: crop pixel x -> S - 1 - x, left <-> right
    px = (plain["kp2d"] + 1) / 2 * S
    fpx = (flipped["kp2d"] + 1) / 2 * S
    np.testing.assert_allclose(fpx[:, 0], (S - 1) - px[LSP_FLIP, 0], atol=1e-4)
    np.testing.assert_allclose(fpx[:, 1], px[LSP_FLIP, 1], atol=1e-4)
    # 3D: x -> -x, left <-> right; and the flipped pose's forward kinematics gives the flipped joints
    np.testing.assert_allclose(flipped["lsp3d"], plain["lsp3d"][LSP_FLIP] * [-1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(flipped["joints3d"], plain["joints3d"][SMPL_FLIP] * [-1, 1, 1], atol=1e-6)

    def fk(item):  # zero betas: the toy body's template is left-right symmetric, its random shapedirs are not
        rot = torch.as_tensor(item["smpl_rotmat"])[None]
        with torch.no_grad():
            j = body(betas=None, body_pose=rot[:, 1:], global_orient=rot[:, :1], pose2rot=False).joints[0].numpy()
        return j - j[0]

    np.testing.assert_allclose(fk(flipped), fk(plain)[SMPL_FLIP] * [-1, 1, 1], atol=2e-5)


# ------------------------------------------------------------------------------------ mixed batches
def test_batches_are_half_rgbd_half_rgb_only(toy):
    _, folder = toy
    cfg = train_config_from_dict({"data": {"sources": [
        {"path": str(folder), "labels": "kinect_v1_like", "select": [0, 0.3]},
        {"path": str(folder), "labels": "kinect_v2_like", "select": [0.3, 0.6]},
        {"path": str(folder), "kind": "rgb", "labels": "none", "select": [0.6, 1.0]}]}})
    ds = TrainingData.from_config(cfg.data, S)
    assert [len(p) for p in ds.pools] == [24, 16]
    sampler = MixedBatchSampler(ds.pools, batch_size=8, rgb_fraction=0.5, seed=1)
    assert sampler.batches_per_epoch == 4  # the RGB-only pool (16) runs out first at 4 per batch
    steps = list(sampler.steps(2, 7))  # crosses into the second epoch
    assert len(steps) == 5 and {step for b in steps for _, step in b} == {2, 3, 4, 5, 6}
    for batch_keys in steps:
        batch = collate([ds[k] for k in batch_keys])
        assert batch["rgb"].shape == (8, 3, S, S)
        assert int(batch["has_depth"].sum()) == 4
        assert not batch["depth"][~batch["has_depth"]].any()
        assert (batch["depth"][batch["has_depth"]] > 0).any()
    # epochs reshuffle; within an epoch no RGB-only sample repeats
    e0, e1 = sampler.epoch(0), sampler.epoch(1)
    rgb0 = [i for b in e0 for i in b if i in set(ds.pools[1].tolist())]
    assert len(rgb0) == len(set(rgb0)) == 16 and e0 != e1
    assert sampler.batch(5) == e1[1]


def test_ranks_get_disjoint_halves_of_the_global_batch(toy):
    _, folder = toy
    ds = TrainingData([load_source(_src(folder, select=(0, 0.5))),
                       load_source(_src(folder, kind="rgb", labels="none", select=(0.5, 1.0)))], S)
    ranks = [MixedBatchSampler(ds.pools, 8, 0.5, seed=4, rank=r, world_size=2) for r in range(2)]
    for step in range(2):
        a, b = ranks[0].batch(step), ranks[1].batch(step)
        assert len(a) == len(b) == 4 and not set(a) & set(b)
        assert sum(i in set(ds.pools[1].tolist()) for i in a) == 2
    with pytest.raises(ValueError, match="not divisible by the 3 ranks"):
        MixedBatchSampler(ds.pools, 8, 0.5, world_size=3)


def test_augmentation_depends_only_on_sample_and_step(toy):
    _, folder = toy
    ds = TrainingData([load_source(_src(folder))], S, flip_prob=0.5, color_jitter=0.2, seed=9)
    a, b = ds[(4, 11)], ds[(4, 11)]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    plain = TrainingData([ds.sources[0]], S)[4]
    flips = [bool(np.array_equal(ds[(4, s)]["depth"], plain["depth"][:, :, ::-1])) for s in range(40)]
    assert 10 < sum(flips) < 30  # p = 0.5 per (sample, step)
    assert not np.array_equal(ds[(4, 1)]["rgb"], ds[(4, 2)]["rgb"])  # colour jitter differs per step


def test_procedural_shards_have_consistent_labels(toy):
    body, folder = toy
    src = load_source(_src(folder))
    from training.synth.shards import SynthShards

    raw = SynthShards(folder)[0]
    K, box = raw["K"], raw["crop_box"]
    uv = raw["lsp3d"][:, :2] / raw["lsp3d"][:, 2:] * K[0, 0] + K[:2, 2]
    np.testing.assert_allclose((uv - box[:2]) * box[3] / box[2], raw["lsp2d"], atol=1e-3)
    rot = Rotation.from_rotvec(raw["theta"][:3]).as_matrix()
    assert rot[1, 1] < -0.4  # upright in the camera frame (y down): body +Y maps to camera -y
    assert src.lsp_vis.all()


def test_invalid_2d_projections_become_invisible_zeros(toy, tmp_path):
    from training.synth.shards import SynthShards, write_shard

    body, _ = toy
    folder = tmp_path / "nan"
    write_procedural_shards(folder, 4, size=S, body=body, seed=8, shard_size=4)
    arrays = dict(SynthShards(folder).shard(0))
    arrays["lsp2d"] = arrays["lsp2d"].copy()
    arrays["lsp2d"][1, [0, 5]] = np.nan  # the renderer's mark for an invalid projection
    write_shard(folder / "shard-00000.npz", arrays)
    it = TrainingData([load_source(_src(folder))], S)[1]
    assert np.isfinite(it["kp2d"]).all()
    assert not it["vis2d"][0] and not it["vis2d"][5] and it["vis2d"][1:5].all()
