"""Real dataset -> training shards (training/datasets/convert.py), on a CAD-60 folder in the released layout.

The fixture skeleton (tests/assets/datasets/cad60, 3 frames of a person facing the sensor at 2.5 m) gets
images written here the way CAD-60 stores them: mirrored 640x480 RGB PNGs and 320x240 16-bit depth PNGs
in mm, drawn at the dataset's own projection (`cad60.cad60_project`). The subject's left hand is painted
red and the right hand green, each joint's depth is painted at its z, so the crops and keypoints can be
checked pixel by pixel after conversion.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.datasets import cad60
from training.datasets.convert import ConvertConfig, convert_cad60, lsp_from_joint_set, main
from training.datasets.joint_sets import KINECT_V1_JOINT_NAMES, kinect_to_opencv, to_canonical

ASSETS = Path(__file__).parent / "assets" / "datasets" / "cad60" / "data1"
SEQ = "0512164529"
V1 = {n: i for i, n in enumerate(KINECT_V1_JOINT_NAMES)}
LSP_R_WRIST, LSP_L_WRIST, LSP_L_ANKLE, LSP_HEAD_TOP = 6, 11, 5, 13
RED, GREEN = (255, 0, 0), (0, 255, 0)
BONES = [("HEAD", "NECK"), ("NECK", "TORSO"), ("NECK", "LEFT_SHOULDER"), ("NECK", "RIGHT_SHOULDER"),
         ("LEFT_SHOULDER", "LEFT_ELBOW"), ("LEFT_ELBOW", "LEFT_HAND"), ("RIGHT_SHOULDER", "RIGHT_ELBOW"),
         ("RIGHT_ELBOW", "RIGHT_HAND"), ("TORSO", "LEFT_HIP"), ("TORSO", "RIGHT_HIP"), ("LEFT_HIP", "LEFT_KNEE"),
         ("LEFT_KNEE", "LEFT_FOOT"), ("RIGHT_HIP", "RIGHT_KNEE"), ("RIGHT_KNEE", "RIGHT_FOOT")]


def _draw(img: np.ndarray, uv: np.ndarray, thick: int, color, hands: dict | None = None) -> None:
    p = {n: tuple(int(round(c)) for c in uv[V1[n]]) for n in KINECT_V1_JOINT_NAMES}
    for a, b in BONES:
        cv2.line(img, p[a], p[b], color, thick)
    for name, (col, radius) in (hands or {}).items():
        cv2.circle(img, p[name], radius, col, -1)


@pytest.fixture(scope="module")
def cad_root(tmp_path_factory) -> Path:
    """A CAD-60 data1/ folder: the fixture skeleton and label files plus painted mirrored images."""
    root = tmp_path_factory.mktemp("cad60")
    data = root / "data1"
    data.mkdir()
    shutil.copy(ASSETS / f"{SEQ}.txt", data)
    (data / "activityLabel.txt").write_text(f"{SEQ},brushing teeth,\nEND\n")
    seq = cad60.read_cad60_skeleton(data / f"{SEQ}.txt").skeleton
    (data / SEQ).mkdir()
    for t, fid in enumerate(seq.frame_ids):
        joints = seq.joints[t, 0]
        rgb = np.full((480, 640, 3), 90, np.uint8)
        _draw(rgb, cad60.cad60_project(joints, 640, 480), 14, (200, 170, 150),
              {"LEFT_HAND": (RED, 9), "RIGHT_HAND": (GREEN, 9)})
        depth = np.full((240, 320), 4000, np.uint16)  # a wall at 4 m
        uv = cad60.cad60_project(joints, 320, 240)
        _draw(depth, uv, 7, int(round(np.median(joints[:, 2]) * 1000)))
        for name in ("LEFT_HAND", "RIGHT_HAND", "HEAD"):
            cv2.circle(depth, tuple(int(round(c)) for c in uv[V1[name]]), 4, int(round(joints[V1[name], 2] * 1000)), -1)
        rgb_path, depth_path = cad60.cad60_frame_paths(data / SEQ, int(fid))
        cv2.imwrite(str(rgb_path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(depth_path), depth)
    return root


@pytest.fixture(scope="module")
def converted(cad_root, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cad60_shards")
    manifest = convert_cad60(cad_root, out, ConvertConfig(out_size=128), progress=False)
    return out, manifest


def _shard(folder: Path) -> dict[str, np.ndarray]:
    from training.synth.shards import SynthShards

    return SynthShards(folder, verify=True).shard(0)


def test_lsp_partners_of_the_kinect_v1_skeleton():
    lsp, sk = lsp_from_joint_set("kinect_v1")
    pairs = dict(zip(lsp.tolist(), sk.tolist()))
    assert LSP_HEAD_TOP not in pairs and len(pairs) == 13
    assert pairs[LSP_L_WRIST] == V1["LEFT_HAND"] and pairs[LSP_R_WRIST] == V1["RIGHT_HAND"]
    assert pairs[LSP_L_ANKLE] == V1["LEFT_FOOT"] and pairs[12] == V1["NECK"]


def test_manifest_and_arrays(converted):
    folder, m = converted
    assert m["counts"]["samples"] == 3 and m["source"]["dataset"] == "cad60"
    assert m["source"]["skeleton"] == {"joint_set": "kinect_v1", "frame": "kinect_camera", "units": "m"}
    a = _shard(folder)
    assert a["rgb"].shape == (3, 128, 128, 3) and a["depth_mm"].dtype == np.uint16
    assert a["sequence"].tolist() == [int(SEQ)] * 3 and a["frame_id"].tolist() == [1, 2, 3]
    seq = cad60.read_cad60_skeleton(ASSETS / f"{SEQ}.txt").skeleton
    assert np.allclose(a["skeleton"], seq.joints[:, 0], atol=1e-6)
    assert np.isnan(a["lsp3d"]).all() and not a["theta"].any()


def test_crops_are_unmirrored_and_keypoints_land_on_the_painted_hands(converted):
    a = _shard(converted[0])
    for i in range(3):
        kp, rgb = a["lsp2d"][i], a["rgb"][i]
        for j, color in ((LSP_L_WRIST, RED), (LSP_R_WRIST, GREEN)):
            x, y = np.rint(kp[j]).astype(int)
            assert a["lsp_vis"][i, j]
            assert np.abs(rgb[y, x].astype(int) - color).max() < 40, (i, j, rgb[y, x])
        # facing the sensor, the subject's left hand is on the right of a (non-mirrored) camera image
        assert kp[LSP_L_WRIST, 0] > kp[LSP_R_WRIST, 0] + 20
        assert not a["lsp_vis"][i, LSP_HEAD_TOP] and np.isnan(kp[LSP_HEAD_TOP]).all()


def test_depth_crop_holds_the_joint_depths(converted):
    a = _shard(converted[0])
    for i in range(3):
        for j, name in ((LSP_L_WRIST, "LEFT_HAND"), (LSP_R_WRIST, "RIGHT_HAND")):
            x, y = np.rint(a["lsp2d"][i, j]).astype(int)
            assert abs(int(a["depth_mm"][i, y, x]) - a["skeleton"][i, V1[name], 2] * 1000) <= 1.0
        m = a["mask"][i]
        assert m.any() and np.all(a["depth_mm"][i][m] < 3000)  # the person, not the 4 m wall


def test_untracked_joints_are_not_visible(converted):
    a = _shard(converted[0])
    assert a["skeleton_conf"][2, V1["LEFT_FOOT"]] == 0
    assert not a["lsp_vis"][2, LSP_L_ANKLE] and a["lsp_vis"][0, LSP_L_ANKLE]


def test_training_source_with_the_stored_skeleton(converted):
    import torch

    from training.config import SourceConfig, train_config_from_dict
    from training.data import TrainingData, collate, load_source
    from training.loop import Trainer
    from model.body import BodyModel

    folder = converted[0]
    src = load_source(SourceConfig(path=str(folder), kind="rgbd", labels="skeleton"))
    a = _shard(folder)
    assert not src.has_smpl.any() and not src.has_global.any()
    cv = kinect_to_opencv(a["skeleton"].astype(np.float64))
    assert np.allclose(src.canon, to_canonical(cv, "kinect_v1"), atol=1e-5)
    assert 2.4 < float(np.median(src.ref_depth)) < 2.6
    ds = TrainingData([src], 64, flip_prob=0.5)
    batch = collate([ds[(i, 1)] for i in range(3)])
    assert torch.isfinite(batch["kp2d"]).all() and batch["has_skel"].all()
    cfg = train_config_from_dict({"model": {"preset": "lite", "input_size": 64},
                                  "objective": {"w_3d": 1.0}, "run": {"steps": 2}})
    body = BodyModel.from_file(Path(__file__).parents[1] / "assets" / "body" / "open_body_neutral.npz")
    scalars = Trainer(cfg, body, "cpu").step(batch, 0)
    assert all(np.isfinite(v) for v in scalars.values()), scalars
    assert scalars["loss_3d"] > 0


def test_evaluation_and_uscg_read_the_stored_skeleton(converted):
    from scipy.spatial.transform import Rotation

    from model.uscg import CANONICAL_SMPL_INDEX
    from training.evaluate import evaluate, make_test_set
    from training.uscg import skeletons_from_view

    folder = converted[0]
    test = make_test_set("CAD", folder, "skeleton")
    assert test.target == "skeleton" and len(test.data) == 3
    index, canon, truth = skeletons_from_view(folder, "skeleton")
    assert index.tolist() == [0, 1, 2] and canon.shape == (3, 15, 3) and np.isnan(truth).all()

    rot = Rotation.from_euler("y", 40, degrees=True).as_matrix()

    def predictor(offset: float):
        def predict(rgb, depth, ref, mask):  # SMPL joints whose canonical subset is a similar copy of the skeleton
            joints = np.zeros((rgb.shape[0], 24, 3))
            joints[:, list(CANONICAL_SMPL_INDEX)] = 0.8 * canon[: rgb.shape[0]] @ rot.T + 0.3
            joints[:, list(CANONICAL_SMPL_INDEX)[0]] += offset  # move the head
            return joints, np.zeros((rgb.shape[0], 14, 3))
        return predict

    exact = evaluate(predictor(0.0), [test], modes=("rgbd",))[("CAD", "rgbd")]
    off = evaluate(predictor(0.15), [test], modes=("rgbd",))[("CAD", "rgbd")]
    assert exact < 1e-3 and off > 5.0


def test_skeleton_labels_need_a_converted_folder(tmp_path):
    from training.config import SourceConfig
    from training.data import load_source, write_procedural_shards

    write_procedural_shards(tmp_path / "syn", n=4, size=32)
    with pytest.raises(ValueError, match="training.datasets.convert"):
        load_source(SourceConfig(path=str(tmp_path / "syn"), kind="rgbd", labels="skeleton"))


def test_cli(cad_root, tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    assert main(["cad60", "--root", str(cad_root), "--out", str(tmp_path / "o"), "--every", "2", "--no-progress",
                 "--sheet", str(sheet)]) == 0
    assert "wrote 2 samples" in capsys.readouterr().out
    assert cv2.imread(str(sheet)).shape[0] > 256
    before = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert main(["cad60", "--root", str(cad_root), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "already holds a data set" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == before  # nothing deleted
    assert main(["cad60", "--root", str(cad_root), "--out", str(tmp_path / "o"), "--no-progress", "--overwrite"]) == 0
    assert "wrote 3 samples" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["cad60", "--root", str(tmp_path / "empty"), "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    assert "not a CAD-60 folder" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ PKU-MMD
PKU_SKELETON = Path(__file__).parent / "assets" / "datasets" / "pku_mmd" / "skeleton" / "0002-L.txt"


@pytest.fixture(scope="module")
def pku_root(tmp_path_factory) -> Path:
    """A PKU-MMD folder: the fixture skeleton (body 0 facing the sensor at ~2.5 m), an MJPG RGB video and
    per-frame depth PNGs, both mirrored like the Kinect SDK's, painted through `kinect_v2_default_rig`:
    WristLeft red and WristRight green in color, the wrists' depths in the depth frames."""
    from training.datasets import pku_mmd
    from training.datasets.convert import kinect_v2_default_rig
    from training.datasets.joint_sets import KINECT_V2_JOINT_NAMES

    v2 = {n: i for i, n in enumerate(KINECT_V2_JOINT_NAMES)}
    bones = [("Head", "Neck"), ("Neck", "SpineShoulder"), ("SpineShoulder", "SpineMid"), ("SpineMid", "SpineBase"),
             *[(f"{a}{s}", f"{b}{s}") for s in ("Left", "Right") for a, b in
               (("Shoulder", "Elbow"), ("Elbow", "Wrist"), ("Hip", "Knee"), ("Knee", "Ankle"))],
             ("SpineShoulder", "ShoulderLeft"), ("SpineShoulder", "ShoulderRight"), ("SpineBase", "HipLeft"),
             ("SpineBase", "HipRight")]
    rig = kinect_v2_default_rig()
    root = tmp_path_factory.mktemp("pku")
    for d in ("skeleton", "rgb", "depth/0002-L"):
        (root / d).mkdir(parents=True)
    shutil.copy(PKU_SKELETON, root / "skeleton")
    seq = pku_mmd.read_pku_mmd_skeleton(PKU_SKELETON)
    video = cv2.VideoWriter(str(root / "rgb" / "0002-L.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30, rig.color.size)
    for t in range(seq.joints.shape[0]):
        cam = kinect_to_opencv(seq.joints[t, 0])
        uv_d = rig.depth.project(cam)
        uv_c = rig.color.project(cam @ rig.depth_to_color.R.T + rig.depth_to_color.t)
        px = lambda uv, n: (int(round(uv[v2[n], 0])), int(round(uv[v2[n], 1])))  # noqa: E731
        rgb = np.full((1080, 1920, 3), 90, np.uint8)
        depth = np.full((424, 512), 4000, np.uint16)
        for a, b in bones:
            cv2.line(rgb, px(uv_c, a), px(uv_c, b), (200, 170, 150), 40)
            cv2.line(depth, px(uv_d, a), px(uv_d, b), int(round(np.median(cam[:, 2]) * 1000)), 12)
        for n, col in (("WristLeft", RED), ("WristRight", GREEN)):
            cv2.circle(rgb, px(uv_c, n), 22, col, -1)
            cv2.circle(depth, px(uv_d, n), 5, int(round(cam[v2[n], 2] * 1000)), -1)
        video.write(cv2.cvtColor(np.ascontiguousarray(rgb[:, ::-1]), cv2.COLOR_RGB2BGR))  # mirrored, as the SDK
        cv2.imwrite(str(root / "depth" / "0002-L" / f"{t:05d}.png"), np.ascontiguousarray(depth[:, ::-1]))
    video.release()
    return root


def test_pku_mmd_conversion_aligns_color_to_depth_and_lands_on_the_wrists(pku_root, tmp_path):
    from training.datasets.convert import convert_pku_mmd

    m = convert_pku_mmd(pku_root, tmp_path / "pku", ConvertConfig(out_size=128), progress=False)
    assert m["counts"]["samples"] == 5 and m["source"]["skeleton"]["joint_set"] == "kinect_v2"
    assert m["source"]["rig_is_default"] is True
    a = _shard(tmp_path / "pku")
    for i in range(5):
        kp, rgb, depth = a["lsp2d"][i], a["rgb"][i], a["depth_mm"][i]
        for j, color, joint in ((LSP_L_WRIST, RED, 6), (LSP_R_WRIST, GREEN, 10)):  # WristLeft 6, WristRight 10
            x, y = np.rint(kp[j]).astype(int)
            assert a["lsp_vis"][i, j]
            assert np.abs(rgb[y, x].astype(int) - color).max() < 60, (i, j, rgb[y, x])
            assert abs(int(depth[y, x]) - a["skeleton"][i, joint, 2] * 1000) <= 1.0
        assert kp[LSP_L_WRIST, 0] > kp[LSP_R_WRIST, 0] + 10  # un-mirrored: the subject's left on the right
    assert a["frame_id"].tolist() == [0, 1, 2, 3, 4] and len(set(a["sequence"].tolist())) == 1


def test_pku_mmd_cli_and_bad_inputs(pku_root, tmp_path, capsys):
    assert main(["pku_mmd", "--root", str(pku_root), "--out", str(tmp_path / "o"), "--every", "2",
                 "--no-progress"]) == 0
    assert "wrote 3 samples" in capsys.readouterr().out
    assert main(["pku_mmd", "--root", str(tmp_path), "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    assert "not a PKU-MMD skeleton folder" in capsys.readouterr().err
    bad = tmp_path / "bad"
    shutil.copytree(pku_root, bad)
    cv2.imwrite(str(bad / "depth" / "0002-L" / "00002.png"), np.zeros((424, 512), np.uint8))
    assert main(["pku_mmd", "--root", str(bad), "--out", str(tmp_path / "o3"), "--no-progress"]) == 2
    assert "16-bit PNG" in capsys.readouterr().err
    shutil.rmtree(bad / "depth" / "0002-L")  # a release with depth videos only
    (bad / "depth" / "0002-L.avi").write_bytes(b"")
    assert main(["pku_mmd", "--root", str(bad), "--out", str(tmp_path / "o4"), "--no-progress"]) == 2
    assert "depth only as a video (not supported" in capsys.readouterr().err


def test_the_paper_chain_on_a_converted_folder(converted, tmp_path):
    """convert -> `uscg generate --view skeleton` -> a `labels: skeleton` source with those pseudo labels
    -> one training step with Lsmpl on them."""
    import torch

    from model.body import BodyModel
    from model.network import build_uscg
    from training.config import SourceConfig, train_config_from_dict
    from training.data import TrainingData, collate, load_source
    from training.loop import Trainer
    from training.uscg import generate, save_uscg

    folder = converted[0]
    body = BodyModel.from_file(Path(__file__).parents[1] / "assets" / "body" / "open_body_neutral.npz")
    cfg = train_config_from_dict({"model": {"preset": "lite", "input_size": 64, "uscg": {"n_layers": 4, "hidden": 64}},
                                  "run": {"steps": 2}})
    torch.manual_seed(0)
    save_uscg(tmp_path / "u.pt", build_uscg(cfg.model, body), None, 0, cfg, body)
    summary = generate(tmp_path / "u.pt", tmp_path / "cad.npz", data=str(folder), view="skeleton",
                       threshold_mm=1e6, body=body, verbose=False)
    assert summary["n"] == 3 and summary["accepted"] == 3
    src = load_source(SourceConfig(path=str(folder), kind="rgbd", labels="skeleton",
                                   smpl_labels=str(tmp_path / "cad.npz")))
    assert src.has_smpl.all() and not src.has_global.any()
    assert np.allclose(src.theta, np.load(tmp_path / "cad.npz")["theta"])
    batch = collate([TrainingData([src], 64)[(i, 0)] for i in range(3)])
    scalars = Trainer(cfg, body, "cpu").step(batch, 0)
    assert np.isfinite(scalars["loss"]) and scalars["loss_smpl"] > 0


# ------------------------------------------------------------------------------------------------ COCO / LSP
DATASETS = Path(__file__).parent / "assets" / "datasets"


def _paint_wrists(h: int, w: int, left: np.ndarray, right: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """An RGB image: grey, a skin-coloured blob over the keypoints, the subject's left wrist red, right green."""
    rgb = np.full((h, w, 3), 90, np.uint8)
    for p in pts:
        cv2.circle(rgb, (int(round(p[0])), int(round(p[1]))), 6, (200, 170, 150), -1)
    cv2.circle(rgb, (int(round(left[0])), int(round(left[1]))), 7, RED, -1)
    cv2.circle(rgb, (int(round(right[0])), int(round(right[1]))), 7, GREEN, -1)
    return rgb


def test_coco_people_become_rgb_only_samples(tmp_path):
    from training.config import SourceConfig
    from training.data import load_source
    from training.datasets.coco import read_coco_keypoints
    from training.datasets.convert import convert_coco

    ann = DATASETS / "coco" / "person_keypoints_tiny.json"
    coco = read_coco_keypoints(ann)
    images = tmp_path / "images"
    images.mkdir()
    for image in coco.images.values():  # COCO: 9 = left_wrist, 10 = right_wrist
        people = [p for p in coco.people if p.image_id == image.id]
        main_p = max(people, key=lambda p: p.num_keypoints)
        rgb = _paint_wrists(image.height, image.width, main_p.keypoints[9], main_p.keypoints[10],
                            main_p.keypoints[main_p.visibility > 0])
        cv2.imwrite(str(images / image.file_name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    m = convert_coco(ann, images, tmp_path / "coco", progress=False)
    assert m["source"]["kind"] == "rgb" and "skeleton" not in m["source"]
    a = _shard(tmp_path / "coco")
    kept = [p for p in coco.people if p.num_keypoints >= 6]
    assert a["frame_id"].tolist() == [p.id for p in kept]           # 9002 (4 keypoints) is skipped
    assert m["counts"]["skipped"] == {"too few labelled keypoints": 1}
    for i, p in enumerate(kept):
        assert not a["lsp_vis"][i, 12] and not a["lsp_vis"][i, LSP_HEAD_TOP]   # no neck / head top in COCO
        for j, coco_j, color in ((LSP_L_WRIST, 9, RED), (LSP_R_WRIST, 10, GREEN)):
            assert a["lsp_vis"][i, j] == (p.visibility[coco_j] > 0)
            if a["lsp_vis"][i, j]:
                x, y = np.rint(a["lsp2d"][i, j]).astype(int)
                assert np.abs(a["rgb"][i, y, x].astype(int) - color).max() < 50, (p.id, j, a["rgb"][i, y, x])
    assert not a["depth_mm"].any() and np.isnan(a["K"]).all()
    src = load_source(SourceConfig(path=str(tmp_path / "coco"), kind="rgb", labels="none"))
    assert src.depth_mm is None and not src.has_smpl.any() and len(src) == len(kept)


def test_lsp_images_become_rgb_only_samples(tmp_path):
    from training.datasets.convert import convert_lsp
    from training.datasets.lsp import read_lsp_joints

    mat = DATASETS / "lsp" / "joints.mat"
    ann = read_lsp_joints(mat, tmp_path / "images")
    (tmp_path / "images").mkdir()
    for i, path in enumerate(ann.image_paths):
        kp = ann.joints[i] - 1.0  # MATLAB 1-based
        h, w = int(kp[:, 1].max() + 60), int(kp[:, 0].max() + 60)
        rgb = _paint_wrists(h, w, kp[LSP_L_WRIST], kp[LSP_R_WRIST], kp)
        cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    m = convert_lsp(mat, tmp_path / "images", tmp_path / "lsp", progress=False)
    a = _shard(tmp_path / "lsp")
    assert m["counts"]["samples"] == len(ann.image_paths) == a["rgb"].shape[0]
    for i in range(a["rgb"].shape[0]):
        assert a["lsp_vis"][i].all()  # original LSP: occluded joints are annotated too
        for j, color in ((LSP_L_WRIST, RED), (LSP_R_WRIST, GREEN)):
            x, y = np.rint(a["lsp2d"][i, j]).astype(int)
            assert np.abs(a["rgb"][i, y, x].astype(int) - color).max() < 50


def test_rgb_datasets_need_annotations_on_the_cli(tmp_path, capsys):
    assert main(["coco", "--root", str(tmp_path), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "needs --annotations" in capsys.readouterr().err
