"""Dataset readers/writers (training.datasets) against tiny fixtures written in each dataset's exact format.

Fixtures in tests/assets/datasets/ (generated once, independently of the writers, to mimic the releases):
- pku_mmd/skeleton/0002-L.txt: 5 frames, "%f", later lines start with a space (as released). Body 0 in
  every frame = a template skeleton shifted by (+0.01 t, 0, -0.02 t) m; body 1 only in frames 2 and 3 =
  template + (0.9, 0.02, 0.4). pku_mmd/label/0002-L.txt: "12,0,3,2" and "41,3,4,1".
- cad60/data1/0512164529.txt: frames 1-3, mm, "%g", trailing commas, "END" without newline. Frame k
  (0-based) = template - 5k mm in z; HEAD orientation in frame 2 = 30 deg about y; LEFT_KNEE orientation
  confidence and LEFT_FOOT position confidence are 0 in frame 3. cad60/data1/activityLabel.txt: 2 ids.
- coco/person_keypoints_tiny.json: images 101 (2 people: 9001 with 17 keypoints, 9002 with 4) and 102 (9003).
- lsp/joints.mat: 3x14x3 with LSP's inverted flag; lspet/joints.mat: 14x3x2 (the same first two images).
- amass/01_01_poses.npz: 10 frames, poses[t, k] = 0.001 (k + 1) (-1)^t, trans[t] = (0.1 t, 0.02, 0.9),
  betas = linspace(-1.5, 1.5, 16), female, 120 fps. amass/shape.npz: a subject shape file.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from training.datasets import amass, cad60, coco, joint_sets, lsp, pku_mmd
from training.datasets.joint_sets import (
    CANONICAL_JOINT_NAMES, FRAME_KINECT, FRAME_OPENCV, JOINT_SETS, KINECT_V1_JOINT_NAMES, KINECT_V2_JOINT_NAMES,
    SMPL_JOINT_NAMES, DatasetFormatError, SkeletonSequence,
)

ASSETS = Path(__file__).parent / "assets" / "datasets"
PKU_SKELETON = ASSETS / "pku_mmd" / "skeleton" / "0002-L.txt"
PKU_LABEL = ASSETS / "pku_mmd" / "label" / "0002-L.txt"
CAD_SKELETON = ASSETS / "cad60" / "data1" / "0512164529.txt"
CAD_LABELS = ASSETS / "cad60" / "data1" / "activityLabel.txt"
COCO_JSON = ASSETS / "coco" / "person_keypoints_tiny.json"
LSP_MAT = ASSETS / "lsp" / "joints.mat"
LSPET_MAT = ASSETS / "lspet" / "joints.mat"
AMASS_NPZ = ASSETS / "amass" / "01_01_poses.npz"
AMASS_SHAPE = ASSETS / "amass" / "shape.npz"

V2 = {n: i for i, n in enumerate(KINECT_V2_JOINT_NAMES)}
V1 = {n: i for i, n in enumerate(KINECT_V1_JOINT_NAMES)}
SMPL = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}


def test_fixtures_stay_small():
    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert total < 100_000


# ------------------------------------------------------------------------------------------------ joint sets

def test_joint_set_sizes_and_unique_names():
    sizes = {name: js.num_joints for name, js in JOINT_SETS.items()}
    assert sizes == {"smpl": 24, "kinect_v1": 15, "kinect_v2": 25, "coco": 17, "lsp": 14}
    for js in JOINT_SETS.values():
        assert len(set(js.joint_names)) == js.num_joints


def test_flip_permutations_are_involutions_that_swap_known_pairs():
    for name, js in JOINT_SETS.items():
        perm = joint_sets.flip_permutation(name)
        assert np.array_equal(perm[perm], np.arange(js.num_joints)), name
    v2 = joint_sets.flip_permutation("kinect_v2")
    assert v2[V2["ShoulderLeft"]] == V2["ShoulderRight"] and v2[V2["HandTipLeft"]] == V2["HandTipRight"]
    assert v2[V2["SpineShoulder"]] == V2["SpineShoulder"]
    v1 = joint_sets.flip_permutation("kinect_v1")
    assert v1[V1["LEFT_FOOT"]] == V1["RIGHT_FOOT"] and v1[V1["TORSO"]] == V1["TORSO"]
    lsp_perm = joint_sets.flip_permutation("lsp")
    assert lsp_perm[0] == 5 and lsp_perm[12] == 12 and lsp_perm[13] == 13  # right_ankle <-> left_ankle
    smpl = joint_sets.flip_permutation("smpl")
    assert smpl[SMPL["left_collar"]] == SMPL["right_collar"] and smpl[SMPL["spine3"]] == SMPL["spine3"]


def test_smpl_correspondence_known_values():
    js = JOINT_SETS["kinect_v2"]
    assert js.smpl_index[V2["SpineBase"]] == SMPL["pelvis"] and not js.smpl_exact[V2["SpineBase"]]
    assert js.smpl_index[V2["ElbowLeft"]] == SMPL["left_elbow"] and js.smpl_exact[V2["ElbowLeft"]]
    assert js.smpl_index[V2["SpineShoulder"]] == SMPL["neck"] and js.smpl_index[V2["Neck"]] == -1
    v1 = JOINT_SETS["kinect_v1"]
    assert v1.smpl_index[V1["LEFT_HAND"]] == SMPL["left_wrist"] and not v1.smpl_exact[V1["LEFT_HAND"]]
    assert v1.smpl_index[V1["RIGHT_FOOT"]] == SMPL["right_ankle"] and v1.smpl_index[V1["TORSO"]] == SMPL["spine2"]
    src, dst, exact = joint_sets.smpl_correspondence("coco")
    assert 0 not in src and len(src) == 12  # nose, eyes, ears have no SMPL joint
    assert [SMPL_JOINT_NAMES[d] for d in dst] == [JOINT_SETS["coco"].joint_names[s] for s in src]
    src, dst, exact = joint_sets.smpl_correspondence("lsp")
    assert 13 not in src and dst[list(src).index(12)] == SMPL["neck"]  # head_top unmapped, neck ~ SMPL neck
    assert exact.sum() == 8  # elbows, wrists, knees, ankles


def test_smpl_correspondence_commutes_with_flipping():
    smpl_flip = JOINT_SETS["smpl"].flip
    for name, js in JOINT_SETS.items():
        for j in np.flatnonzero(js.smpl_index >= 0):
            assert smpl_flip[js.smpl_index[j]] == js.smpl_index[js.flip[j]], (name, js.joint_names[j])


def test_to_canonical_picks_the_documented_joints():
    for name in ("smpl", "kinect_v1", "kinect_v2"):
        n = JOINT_SETS[name].num_joints
        ids = np.arange(n, dtype=float)[:, None].repeat(3, axis=1)[None]  # (1, J, 3), value = joint index
        out = joint_sets.to_canonical(ids, name)
        assert out.shape == (1, 15, 3)
        if name == "kinect_v2":
            assert out[0, 1, 0] == V2["SpineShoulder"] and out[0, 5, 0] == V2["WristLeft"]
        if name == "kinect_v1":
            assert out[0, 5, 0] == V1["LEFT_HAND"] and out[0, 11, 0] == V1["LEFT_FOOT"]
        if name == "smpl":
            assert out[0, 2, 0] == SMPL["spine2"] and out[0, 14, 0] == SMPL["right_ankle"]
        # mirror-consistent: flipping then extracting = extracting then flipping the canonical names
        canon_flip = [CANONICAL_JOINT_NAMES.index(n.replace("left", "#").replace("right", "left").replace("#", "right"))
                      for n in CANONICAL_JOINT_NAMES]
        flipped = joint_sets.to_canonical(ids[:, JOINT_SETS[name].flip], name)
        assert np.array_equal(flipped, out[:, canon_flip])
    with pytest.raises(ValueError, match="25"):
        joint_sets.to_canonical(np.zeros((24, 3)), "kinect_v2")
    with pytest.raises(ValueError, match="canonical"):
        joint_sets.to_canonical(np.zeros((17, 3)), "coco")


def test_kinect_to_opencv_is_a_rotation_that_keeps_the_subjects_sides():
    assert np.allclose(joint_sets.kinect_to_opencv([1.0, 2.0, 3.0]), [-1.0, -2.0, 3.0])
    assert np.linalg.det(joint_sets.KINECT_TO_OPENCV) == pytest.approx(1.0)
    seq = pku_mmd.read_pku_mmd_skeleton(PKU_SKELETON)
    cv = seq.to_opencv()
    assert cv.frame == FRAME_OPENCV and seq.frame == FRAME_KINECT
    assert np.allclose(cv.joints[3, 0, V2["Head"]], [0.215, -0.95, 2.49])
    assert np.array_equal(cv.joints[0, 1], np.zeros((25, 3)))  # absent body stays zero
    # a subject facing the camera: their left shoulder is at smaller Kinect x (sensor's right) and, in the
    # OpenCV frame, on the right of the image (larger x) -- a proper rotation, no mirroring
    left, right = V2["ShoulderLeft"], V2["ShoulderRight"]
    assert seq.joints[0, 0, left, 0] < seq.joints[0, 0, right, 0]
    assert cv.joints[0, 0, left, 0] > cv.joints[0, 0, right, 0]
    assert np.allclose(cv.to_frame(FRAME_KINECT).joints, seq.joints)


def _forward_kinematics(pose: np.ndarray, rest: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    parents = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
    rots = Rotation.from_rotvec(pose.reshape(24, 3)).as_matrix()
    glob_r, pos = [rots[0]], [rest[0]]
    for j in range(1, 24):
        p = parents[j]
        pos.append(pos[p] + glob_r[p] @ (rest[j] - rest[p]))
        glob_r.append(glob_r[p] @ rots[j])
    return np.array(pos)


def test_flip_smpl_pose_mirrors_forward_kinematics():
    rng = np.random.default_rng(3)
    perm = JOINT_SETS["smpl"].flip
    mirror = np.array([-1.0, 1.0, 1.0])
    rest = rng.normal(size=(24, 3)) * 0.3
    rest = 0.5 * (rest + (rest * mirror)[perm])  # left/right-symmetric rest skeleton
    assert np.allclose((rest * mirror)[perm], rest)
    pose = rng.normal(size=72) * 0.5
    flipped = joint_sets.flip_smpl_pose(pose)
    assert np.allclose(joint_sets.flip_smpl_pose(flipped), pose)
    expected = (_forward_kinematics(pose, rest) * mirror)[perm]
    assert np.allclose(_forward_kinematics(flipped, rest), expected, atol=1e-9)
    with pytest.raises(ValueError, match="72"):
        joint_sets.flip_smpl_pose(np.zeros(69))


def test_joint_names_agree_with_model_body():
    try:
        from model import body
    except Exception as e:  # model/ is another engineer's work in progress, and pulls in torch
        pytest.skip(f"model.body not importable: {e}")
    assert tuple(body.SMPL_JOINT_NAMES) == SMPL_JOINT_NAMES
    assert tuple(body.LSP_JOINT_NAMES) == joint_sets.LSP_JOINT_NAMES


def test_dataset_format_error_is_one_line_with_file_and_line():
    err = DatasetFormatError("/data/x.txt", "expected 150 numbers", 7)
    assert str(err) == "/data/x.txt:7: expected 150 numbers" and err.line == 7
    assert str(DatasetFormatError("y.mat", "no 'joints'")) == "y.mat: no 'joints'"


def test_skeleton_sequence_validates_shapes():
    with pytest.raises(ValueError, match="valid"):
        SkeletonSequence(np.zeros((2, 1, 15, 3)), np.ones((3, 1)), KINECT_V1_JOINT_NAMES, FRAME_KINECT, "t")
    with pytest.raises(ValueError, match="frame"):
        SkeletonSequence(np.zeros((2, 1, 15, 3)), np.ones((2, 1)), KINECT_V1_JOINT_NAMES, "world", "t")


# ------------------------------------------------------------------------------------------------ PKU-MMD

def test_read_pku_mmd_skeleton_known_values():
    seq = pku_mmd.read_pku_mmd_skeleton(PKU_SKELETON)
    assert seq.joints.shape == (5, 2, 25, 3) and seq.fps == 30.0 and seq.frame == FRAME_KINECT
    assert seq.joint_names == KINECT_V2_JOINT_NAMES
    assert seq.valid.tolist() == [[True, False], [True, False], [True, True], [True, True], [True, False]]
    assert np.allclose(seq.joints[3, 0, V2["Head"]], [-0.215, 0.95, 2.49])           # template + 3 * (0.01, 0, -0.02)
    assert np.allclose(seq.joints[2, 1, V2["ShoulderLeft"]], [0.48, 0.71, 2.98])     # template + (0.9, 0.02, 0.4)
    assert np.allclose(seq.joints[4, 0, V2["ThumbRight"]], [0.01, 0.09, 2.44])
    assert np.array_equal(seq.frame_ids, np.arange(5))


def test_pku_mmd_writer_reproduces_the_released_layout_byte_for_byte(tmp_path):
    out = tmp_path / "0002-L.txt"
    pku_mmd.write_pku_mmd_skeleton(out, pku_mmd.read_pku_mmd_skeleton(PKU_SKELETON))
    assert out.read_bytes() == PKU_SKELETON.read_bytes()


def test_pku_mmd_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    joints = rng.uniform(-1.0, 3.0, size=(7, 2, 25, 3))
    valid = np.ones((7, 2), dtype=bool)
    valid[1, 0] = False  # first body missing while the second is present (happens in PKU-MMD)
    valid[4:, 1] = False
    seq = SkeletonSequence(joints, valid, KINECT_V2_JOINT_NAMES, FRAME_KINECT, "synthetic")
    pku_mmd.write_pku_mmd_skeleton(tmp_path / "a.txt", seq)
    back = pku_mmd.read_pku_mmd_skeleton(tmp_path / "a.txt")
    assert np.array_equal(back.valid, valid)
    assert np.allclose(back.joints[valid], joints[valid], atol=5.1e-7)  # "%f" = 1 um
    assert np.all(back.joints[~valid] == 0.0)
    # an OpenCV-frame, single-person sequence is converted and zero-padded
    one = SkeletonSequence(joints[:, :1], np.ones((7, 1), bool), KINECT_V2_JOINT_NAMES, FRAME_KINECT, "s").to_opencv()
    pku_mmd.write_pku_mmd_skeleton(tmp_path / "b.txt", one)
    back = pku_mmd.read_pku_mmd_skeleton(tmp_path / "b.txt")
    assert np.allclose(back.joints[:, 0], joints[:, 0], atol=5.1e-7) and not back.valid[:, 1].any()
    with pytest.raises(ValueError, match="Kinect v2"):
        pku_mmd.write_pku_mmd_skeleton(tmp_path / "c.txt", cad60.read_cad60_skeleton(CAD_SKELETON).skeleton)


def test_pku_mmd_labels(tmp_path):
    actions = pku_mmd.read_pku_mmd_labels(PKU_LABEL)
    assert actions == [pku_mmd.PkuMmdAction(12, 0, 3, 2), pku_mmd.PkuMmdAction(41, 3, 4, 1)]
    pku_mmd.write_pku_mmd_labels(tmp_path / "l.txt", actions)
    assert (tmp_path / "l.txt").read_text() == PKU_LABEL.read_text()
    (tmp_path / "s.txt").write_text("5 10 20 2\r\n")  # the evaluation script also accepts spaces
    assert pku_mmd.read_pku_mmd_labels(tmp_path / "s.txt") == [pku_mmd.PkuMmdAction(5, 10, 20, 2)]


def _pku_lines() -> list[str]:
    return PKU_SKELETON.read_text().splitlines()


@pytest.mark.parametrize("edit, line, fragment", [
    (lambda ls: ls[:1] + [" ".join(ls[1].split()[:-1])] + ls[2:], 2, "expected 150 numbers"),
    (lambda ls: ls[:2] + [ls[2].replace("0.950000", "0.95O000", 1)] + ls[3:], 3, "'0.95O000' is not a number"),
    (lambda ls: ls[:3] + [" ".join(["nan"] + ls[3].split()[1:])] + ls[4:], 4, "non-finite value 'nan' (value 1)"),
    (lambda ls: ls[:1] + [""] + ls[1:], 2, "blank line"),
    (lambda ls: [], None, "no frames"),
])
def test_pku_mmd_bad_skeleton_files(tmp_path, edit, line, fragment):
    bad = tmp_path / "0003-M.txt"
    bad.write_text("\n".join(edit(_pku_lines())) + "\n")
    with pytest.raises(DatasetFormatError) as info:
        pku_mmd.read_pku_mmd_skeleton(bad)
    assert info.value.line == line and fragment in str(info.value)
    assert str(info.value).startswith(f"{bad}:{line}: " if line else f"{bad}: ") and "\n" not in str(info.value)


@pytest.mark.parametrize("text, line, fragment", [
    ("12,0,3,2\n7,4,9\n", 2, "expected 4 integers"),
    ("12,0,3,2\n7,9,4,1\n", 2, "start frame 9 is after end frame 4"),
    ("12,zero,3,2\n", 1, "'zero' is not an integer"),
])
def test_pku_mmd_bad_label_files(tmp_path, text, line, fragment):
    bad = tmp_path / "label.txt"
    bad.write_text(text)
    with pytest.raises(DatasetFormatError, match=fragment) as info:
        pku_mmd.read_pku_mmd_labels(bad)
    assert info.value.line == line


def test_pku_mmd_names_and_media_paths(tmp_path):
    assert pku_mmd.parse_pku_mmd_name(PKU_SKELETON) == ("0002", "L")
    assert pku_mmd.parse_pku_mmd_name("A01N01-R.txt") == ("A01N01", "R")
    with pytest.raises(DatasetFormatError, match="not a PKU-MMD sequence name"):
        pku_mmd.parse_pku_mmd_name("0002_L.txt")
    (tmp_path / "rgb").mkdir()
    (tmp_path / "rgb" / "0002-L.avi").write_bytes(b"")
    frames = tmp_path / "depth" / "0002-L"
    frames.mkdir(parents=True)
    for n in (10, 2, 1):
        (frames / f"depth-{n}.png").write_bytes(b"")
    media = pku_mmd.find_pku_mmd_media("0002-L", tmp_path / "rgb", tmp_path / "depth")
    assert media.rgb_video == tmp_path / "rgb" / "0002-L.avi" and media.depth_video is None
    assert [p.name for p in media.depth_frames] == ["depth-1.png", "depth-2.png", "depth-10.png"]
    assert pku_mmd.find_pku_mmd_media("0003-L", tmp_path / "rgb").rgb_video is None


# ------------------------------------------------------------------------------------------------ CAD-60

def test_read_cad60_skeleton_known_values():
    rec = cad60.read_cad60_skeleton(CAD_SKELETON)
    seq = rec.skeleton
    assert seq.joints.shape == (3, 1, 15, 3) and seq.joint_names == KINECT_V1_JOINT_NAMES
    assert np.array_equal(seq.frame_ids, [1, 2, 3]) and seq.valid.all() and seq.frame == FRAME_KINECT
    assert np.allclose(seq.joints[1, 0, V1["LEFT_HAND"]], [-0.2401, -0.0906, 2.4652])  # mm -> m, -5 mm in z
    assert np.allclose(seq.joints[0, 0, V1["HEAD"]], [0.0125, 0.6403, 2.4807])
    c, s = 0.866025, 0.5
    assert np.allclose(rec.orientations[1, V1["HEAD"]], [[c, 0, s], [0, 1, 0], [-s, 0, c]])  # row-major
    assert np.allclose(rec.orientations[0, V1["HEAD"]], np.eye(3))
    assert rec.orientation_confidence[2, V1["LEFT_KNEE"]] == 0 and rec.orientation_confidence[1].all()
    assert seq.confidence[2, 0, V1["LEFT_FOOT"]] == 0 and seq.confidence[2, 0].sum() == 14
    assert np.allclose(joint_sets.to_canonical(seq.joints, "kinect_v1")[1, 0, 5], [-0.2401, -0.0906, 2.4652])


def test_cad60_activity_labels(tmp_path):
    labels = cad60.read_cad60_activity_labels(CAD_LABELS)
    assert labels == {"0512164529": "brushing teeth", "0512165243": "rinsing mouth with water"}
    cad60.write_cad60_activity_labels(tmp_path / "activityLabel.txt", labels)
    assert cad60.read_cad60_activity_labels(tmp_path / "activityLabel.txt") == labels
    assert (tmp_path / "activityLabel.txt").read_text() == CAD_LABELS.read_text()


def test_cad60_round_trip_and_line_layout(tmp_path):
    rec = cad60.read_cad60_skeleton(CAD_SKELETON)
    cad60.write_cad60_skeleton(tmp_path / "x.txt", rec.skeleton, rec.orientations, rec.orientation_confidence)
    back = cad60.read_cad60_skeleton(tmp_path / "x.txt")
    assert np.allclose(back.skeleton.joints, rec.skeleton.joints, atol=1e-12)
    assert np.array_equal(back.orientations, rec.orientations)
    assert np.array_equal(back.orientation_confidence, rec.orientation_confidence)
    assert np.array_equal(back.skeleton.confidence, rec.skeleton.confidence)
    lines = (tmp_path / "x.txt").read_text().split("\n")
    assert lines[-1] == "END" and len(lines) == 4
    assert all(len(line.split(",")) == 172 and line.endswith(",") for line in lines[:-1])

    # a synthetic sequence (OpenCV frame, no orientations, a lost frame) written for loader tests
    rng = np.random.default_rng(1)
    joints = rng.uniform(-1.0, 3.0, size=(4, 1, 15, 3))
    valid = np.array([[True], [False], [True], [True]])
    seq = SkeletonSequence(joints, valid, KINECT_V1_JOINT_NAMES, FRAME_OPENCV, "synthetic")
    cad60.write_cad60_skeleton(tmp_path / "y.txt", seq)
    back = cad60.read_cad60_skeleton(tmp_path / "y.txt")
    assert np.array_equal(back.skeleton.frame_ids, [1, 2, 3, 4]) and np.array_equal(back.skeleton.valid, valid)
    kinect = seq.to_frame(FRAME_KINECT).joints
    assert np.allclose(back.skeleton.joints[valid[:, 0]], kinect[valid[:, 0]], atol=1e-9)
    assert np.all(back.skeleton.joints[1] == 0.0)
    assert np.allclose(back.orientations, np.eye(3)) and not back.orientation_confidence.any()
    with pytest.raises(ValueError, match="15 OpenNI joints"):
        cad60.write_cad60_skeleton(tmp_path / "z.txt", pku_mmd.read_pku_mmd_skeleton(PKU_SKELETON))
    two = SkeletonSequence(np.zeros((2, 2, 15, 3)), np.ones((2, 2), bool), KINECT_V1_JOINT_NAMES, FRAME_KINECT, "2p")
    with pytest.raises(ValueError, match="one person"):
        cad60.write_cad60_skeleton(tmp_path / "z.txt", two)


def _cad_lines() -> list[str]:
    return CAD_SKELETON.read_text().split("\n")


@pytest.mark.parametrize("edit, line, fragment", [
    (lambda ls: ls[:-1], None, "no END line"),
    (lambda ls: ls[:1] + [ls[1].rsplit(",", 2)[0] + ","] + ls[2:], 2, "expected 171 comma-separated values"),
    (lambda ls: ls + ["4,1,2"], 5, "text after the END line"),
    (lambda ls: [ls[1], ls[0]] + ls[2:], 2, "frame number 1 does not increase"),
    (lambda ls: ls[:2] + [ls[2].replace("2470.7", "2470..7", 1)] + ls[3:], 3, "'2470..7' is not a number (value 13)"),
    (lambda ls: ["1.5" + ls[0][1:]] + ls[1:], 1, "frame number '1.5'"),
])
def test_cad60_bad_skeleton_files(tmp_path, edit, line, fragment):
    bad = tmp_path / "0512164529.txt"
    bad.write_text("\n".join(edit(_cad_lines())))
    with pytest.raises(DatasetFormatError) as info:
        cad60.read_cad60_skeleton(bad)
    assert info.value.line == line and fragment in str(info.value) and str(bad) in str(info.value)


@pytest.mark.parametrize("text, line, fragment", [
    ("0512164529,brushing teeth,\n", None, "no END line"),
    ("512164529,brushing teeth,\nEND\n", 1, "not a 10-digit number"),
    ("0512164529,brushing teeth,\n0512164529,cooking (chopping),\nEND\n", 2, "listed twice"),
    ("0512164529,\nEND\n", 1, "expected '<10-digit id>,<activity name>,'"),
])
def test_cad60_bad_label_files(tmp_path, text, line, fragment):
    bad = tmp_path / "activityLabel.txt"
    bad.write_text(text)
    with pytest.raises(DatasetFormatError, match=fragment.replace("(", r"\(")) as info:
        cad60.read_cad60_activity_labels(bad)
    assert info.value.line == line


def test_cad60_projection_known_values():
    w, h = 320, 240
    pts = np.array([[0.0, 0.0, 2.0], [cad60.OPENNI_X_TO_Z / 2 * 2.0, cad60.OPENNI_Y_TO_Z / 2 * 2.0, 2.0]])
    assert np.allclose(cad60.cad60_project(pts, w, h), [[160.0, 120.0], [320.0, 0.0]])
    with pytest.raises(ValueError, match="z > 0"):
        cad60.cad60_project([0.0, 0.0, 0.0], w, h)


def test_load_cad60_rgbd(tmp_path):
    import cv2

    seq_dir = tmp_path / "0512164529"
    seq_dir.mkdir()
    bgr = np.zeros((3, 4, 3), np.uint8)
    bgr[..., 0] = 200  # blue in OpenCV's BGR order
    depth_mm = np.array([[0, 1000, 2500, 65535]] * 3, np.uint16)
    rgb_path, depth_path = cad60.cad60_frame_paths(seq_dir, 5)
    assert (rgb_path.name, depth_path.name) == ("RGB_5.png", "Depth_5.png")
    cv2.imwrite(str(rgb_path), bgr)
    cv2.imwrite(str(depth_path), depth_mm)
    rgb, depth = cad60.load_cad60_rgbd(seq_dir, 5)
    assert rgb.shape == (3, 4, 3) and rgb[0, 0].tolist() == [0, 0, 200]  # returned in RGB order
    assert depth.dtype == np.float32 and np.allclose(depth[1], [0.0, 1.0, 2.5, 65.535])
    cv2.imwrite(str(depth_path), (depth_mm // 256).astype(np.uint8))
    with pytest.raises(DatasetFormatError, match="16-bit"):
        cad60.load_cad60_rgbd(seq_dir, 5)
    with pytest.raises(FileNotFoundError, match="RGB_6.png"):
        cad60.load_cad60_rgbd(seq_dir, 6)


# ------------------------------------------------------------------------------------------------ COCO

def test_read_coco_keypoints_known_values():
    data = coco.read_coco_keypoints(COCO_JSON, image_dir="val2017")
    assert sorted(data.images) == [101, 102] and len(data.people) == 3
    assert data.images[101].width == 640 and data.images[101].height == 427
    assert data.images[102].path == Path("val2017") / "000000000102.jpg"
    assert [p.id for p in data.people_in(101)] == [9001, 9002] and data.people_in(999) == []
    p3 = data.people_in(102)[0]
    names = data.keypoint_names
    assert p3.keypoints[names.index("left_wrist")].tolist() == [201.0, 181.0]
    assert p3.visibility[names.index("left_wrist")] == 2 and p3.visibility[names.index("right_wrist")] == 0
    assert p3.visibility[names.index("right_shoulder")] == 1 and p3.num_keypoints == 11
    assert np.allclose(p3.bbox, [118.0, 40.0, 95.5, 280.25]) and not p3.iscrowd
    assert data.people[1].num_keypoints == 4 and data.people[1].visibility.tolist().count(0) == 13
    # skeleton edges become 0-based: COCO's first edge [16, 14] is left_ankle - left_knee
    assert [names[i] for i in data.skeleton[0]] == ["left_ankle", "left_knee"]


def _coco() -> dict:
    return json.loads(COCO_JSON.read_text())


def _set(d: dict, path: list, value) -> dict:
    target = d
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return d


@pytest.mark.parametrize("edit, fragment", [
    (lambda d: _set(d, ["annotations", 1, "num_keypoints"], 5), "annotations[1] (id=9002): num_keypoints is 5 but 4"),
    (lambda d: _set(d, ["annotations", 0, "keypoints", 2], 3), "annotations[0] (id=9001): visibility flags"),
    (lambda d: _set(d, ["annotations", 2, "keypoints"], [0] * 50), "annotations[2] (id=9003): keypoints must be 51"),
    (lambda d: _set(d, ["annotations", 2, "image_id"], 103), "image_id 103 is not in 'images'"),
    (lambda d: _set(d, ["annotations", 0, "bbox"], [1, 2, -3, 4]), "bbox must be [x, y, width, height]"),
    (lambda d: _set(d, ["categories", 0, "name"], "people"), "no category named 'person'"),
    (lambda d: _set(d, ["images", 1, "id"], 101), "images[1]: duplicate image id 101"),
    (lambda d: {k: v for k, v in d.items() if k != "images"}, "has no 'images' field"),
])
def test_coco_bad_files(tmp_path, edit, fragment):
    bad = tmp_path / "person_keypoints_bad.json"
    bad.write_text(json.dumps(edit(_coco())))
    with pytest.raises(DatasetFormatError) as info:
        coco.read_coco_keypoints(bad)
    assert fragment in str(info.value) and str(bad) in str(info.value)


def test_coco_json_syntax_error_names_the_line(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{\n  "images": [],\n  "annotations": [,],\n  "categories": []\n}\n')
    with pytest.raises(DatasetFormatError, match="invalid JSON") as info:
        coco.read_coco_keypoints(bad)
    assert info.value.line == 3


# ------------------------------------------------------------------------------------------------ LSP

def test_read_lsp_both_layouts_agree_with_one_visibility_meaning():
    orig = lsp.read_lsp_joints(LSP_MAT, image_dir="images")
    ext = lsp.read_lsp_joints(LSPET_MAT)
    assert (orig.layout, ext.layout) == ("lsp", "lspet")
    assert orig.joints.shape == (3, 14, 2) and ext.joints.shape == (2, 14, 2)
    assert orig.image_names == ("im0001.jpg", "im0002.jpg", "im0003.jpg")
    assert ext.image_names == ("im00001.jpg", "im00002.jpg") and ext.image_paths is None
    assert orig.image_paths[2] == Path("images") / "im0003.jpg"
    assert np.array_equal(orig.joints[:2], ext.joints) and np.array_equal(orig.visible[:2], ext.visible)
    # image 1: left_knee and left_elbow occluded (LSP stores 1 there, LSPET 0)
    assert np.flatnonzero(~orig.visible[0]).tolist() == [4, 10] and orig.visible[2].all()
    assert orig.joints[0, 13].tolist() == [76.0, 10.0]        # head_top
    assert orig.joints[1, 0].tolist() == [63.5, 198.0]        # right_ankle, image 2
    assert orig.joint_names[0] == "right_ankle"


def test_lsp_bad_files(tmp_path):
    from scipy.io import savemat

    cases = [
        ({"pose": np.zeros((3, 14, 2))}, "no 'joints' array"),
        ({"joints": np.zeros((2, 14, 3))}, "expected 3x14xN (LSP) or 14x3xN (LSPET)"),
    ]
    for i, (content, fragment) in enumerate(cases):
        savemat(tmp_path / f"bad{i}.mat", content)
        with pytest.raises(DatasetFormatError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            lsp.read_lsp_joints(tmp_path / f"bad{i}.mat")
    flags = np.zeros((14, 3, 2))
    flags[3, 2, 1] = 2.0
    savemat(tmp_path / "flags.mat", {"joints": flags})
    with pytest.raises(DatasetFormatError, match=r"visibility flags must be 0 or 1, found \[2.0\]"):
        lsp.read_lsp_joints(tmp_path / "flags.mat")
    (tmp_path / "text.mat").write_text("not a mat file")
    with pytest.raises(DatasetFormatError, match="not a readable MATLAB"):
        lsp.read_lsp_joints(tmp_path / "text.mat")


# ------------------------------------------------------------------------------------------------ AMASS

def test_read_amass_known_values():
    seq = amass.read_amass_npz(AMASS_NPZ)
    assert (seq.gender, seq.fps, seq.layout, seq.num_frames) == ("female", 120.0, "smplh", 10)
    assert seq.poses.shape == (10, 156) and seq.betas.shape == (16,)
    assert seq.poses[3, 0] == pytest.approx(-0.001) and seq.poses[2, 155] == pytest.approx(0.156)
    assert np.allclose(seq.trans[9], [0.9, 0.02, 0.9])
    assert np.allclose(seq.global_orient[1], [-0.001, -0.002, -0.003])
    assert seq.body_pose.shape == (10, 63) and seq.body_pose[0, -1] == pytest.approx(0.066)
    pose = seq.smpl_pose()
    assert pose.shape == (10, 72) and np.array_equal(pose[:, :66], seq.poses[:, :66]) and not pose[:, 66:].any()
    hands = seq.smpl_pose(hands="index1")
    assert np.allclose(hands[1, 66:], [-0.067, -0.068, -0.069, -0.112, -0.113, -0.114])
    assert np.allclose(seq.smpl_betas(), np.linspace(-1.5, 1.5, 16)[:10])


def test_amass_bad_files(tmp_path):
    with pytest.raises(DatasetFormatError, match="shape.npz"):
        amass.read_amass_npz(AMASS_SHAPE)
    good = dict(np.load(AMASS_NPZ))
    cases = [
        ({**good, "poses": np.zeros((10, 100))}, r"'poses' has shape \(10, 100\)"),
        ({**good, "trans": np.zeros((9, 3))}, r"'trans' has shape \(9, 3\); expected \(10, 3\)"),
        ({k: v for k, v in good.items() if k != "mocap_framerate"}, r"missing keys \['mocap_framerate'\]"),
        ({**good, "gender": np.array(["female", None], dtype=object)}, "cannot read without pickle"),
        ({**good, "poses": np.full((10, 156), np.nan)}, "'poses' contains nan/inf"),
    ]
    for i, (content, fragment) in enumerate(cases):
        np.savez(tmp_path / f"bad{i}.npz", **content)
        with pytest.raises(DatasetFormatError, match=fragment) as info:
            amass.read_amass_npz(tmp_path / f"bad{i}.npz")
        assert f"bad{i}.npz" in str(info.value)
    (tmp_path / "x_poses.npz").write_text("not a zip")
    with pytest.raises(DatasetFormatError, match="not a readable .npz"):
        amass.read_amass_npz(tmp_path / "x_poses.npz")


def test_z_up_to_y_up_rotates_the_posed_body():
    from scipy.spatial.transform import Rotation

    orient, trans = amass.z_up_to_y_up(np.zeros((1, 3)), np.array([[1.0, 2.0, 3.0]]), np.array([0.0, 0.2, 0.0]))
    assert np.allclose(orient, [[-np.pi / 2, 0.0, 0.0]])
    assert np.allclose(trans, [[1.0, 2.8, -2.2]])  # Q (J0 + t) - J0 with Q: (x, y, z) -> (x, z, -y)
    # for any root pose, the re-expressed body = the original body rotated by Q
    rng = np.random.default_rng(2)
    go, t, j0 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), rng.normal(size=3)
    go2, t2 = amass.z_up_to_y_up(go, t, j0)
    x = rng.normal(size=(8, 3))  # rest-pose points of the body
    for k in range(5):
        before = Rotation.from_rotvec(go[k]).apply(x - j0) + j0 + t[k]
        after = Rotation.from_rotvec(go2[k]).apply(x - j0) + j0 + t2[k]
        assert np.allclose(after, before @ amass.Z_UP_TO_Y_UP.T)
