"""The shipped open body (assets/body/open_body_neutral.npz) and its build tool's numpy parts.

Known values come from the build (`python -m assets.tools.build_open_body`, seed 0) and from
`assets/body/open_body_reference.npz`, which holds anny's own joint locations for 5 held-out bodies, so
nothing here needs anny. Frame: SMPL's (Y up, +Z forward, +X = subject's left), metres.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from assets.tools import build_open_body as tool
from model.body import BodyModel

BODY_DIR = Path(__file__).resolve().parent.parent / "assets" / "body"
BODY_PATH = BODY_DIR / "open_body_neutral.npz"
REFERENCE_PATH = BODY_DIR / "open_body_reference.npz"

SMPL_JOINT_NAMES = [
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
]
SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
J = {n: i for i, n in enumerate(SMPL_JOINT_NAMES)}
MIRROR = [J[n.replace("left_", "@").replace("right_", "left_").replace("@", "right_")] for n in SMPL_JOINT_NAMES]


@pytest.fixture(scope="module")
def arrays() -> dict[str, np.ndarray]:
    with np.load(BODY_PATH, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(REFERENCE_PATH, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def body() -> BodyModel:
    return BodyModel.from_file(BODY_PATH)


def shaped(arrays, betas: np.ndarray) -> np.ndarray:
    """(N,V,3) T-pose vertices for (N,10) betas, plain numpy."""
    return arrays["v_template"].astype(np.float64) + np.einsum(
        "vck,nk->nvc", arrays["shapedirs"].astype(np.float64), betas)


def zero_pose(body: BodyModel, betas: torch.Tensor | None = None, body_pose: torch.Tensor | None = None):
    with torch.no_grad():
        return body(betas=betas, body_pose=body_pose)


# ---------------------------------------------------------------------------------- file layout
def test_file_layout_shapes_and_dtypes(arrays):
    V = arrays["v_template"].shape[0]
    F = arrays["f"].shape[0]
    assert V == 13492 and F == 26972  # anny-notongue topology, ~2x SMPL's vertex count
    expected = {
        "v_template": (V, 3), "shapedirs": (V, 3, 10), "posedirs": (V, 3, 207), "J_regressor": (24, V),
        "weights": (V, 24), "kintree_table": (2, 24), "f": (F, 3), "joint_names": (24,),
        "vertex_ids_names": (6,), "vertex_ids": (6,), "explained_variance": (10,),
    }
    for key, shape in expected.items():
        assert arrays[key].shape == shape, key
    for key in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights"):
        assert arrays[key].dtype.kind == "f" and np.isfinite(arrays[key]).all(), key
    assert arrays["f"].dtype.kind == "i" and arrays["f"].min() == 0 and arrays["f"].max() == V - 1
    assert np.all(arrays["posedirs"] == 0)
    assert arrays["joint_names"].tolist() == SMPL_JOINT_NAMES
    assert arrays["kintree_table"][0, 0] == 4294967295
    assert arrays["kintree_table"][0, 1:].tolist() == SMPL_PARENTS[1:]
    assert arrays["kintree_table"][1].tolist() == list(range(24))
    assert arrays["vertex_ids_names"].tolist() == ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "head_top"]
    assert arrays["vertex_ids"].dtype.kind == "i" and 0 <= arrays["vertex_ids"].min() and arrays["vertex_ids"].max() < V


def test_metadata(arrays):
    assert str(arrays["model_id"]) == "fusemesh-open-body-neutral-v1"
    assert str(arrays["anny_version"]) == "0.6.2"
    assert int(arrays["n_bodies"]) == 2000
    assert int(arrays["seed"]) == 0
    ev = arrays["explained_variance"]
    assert np.all(np.diff(ev) <= 0) and ev[0] > 0.95 and 0.999 < ev.sum() <= 1.0


def test_file_sizes_within_budget():
    assert BODY_PATH.stat().st_size <= 3_000_000
    assert REFERENCE_PATH.stat().st_size < 200_000


def test_weights_and_regressor_are_convex(arrays):
    w = arrays["weights"].astype(np.float64)
    assert w.min() >= 0
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
    r = arrays["J_regressor"].astype(np.float64)
    assert r.min() >= 0
    np.testing.assert_allclose(r.sum(1), 1.0, atol=1e-5)
    assert 24 * 3 <= (r > 0).sum() <= 24 * 100  # sparse, but more than a vertex per joint


def test_skinning_follows_the_bones(arrays):
    """Vertices beyond the left wrist move with the left wrist/hand; soles with the ankle/foot (>99 %)."""
    v, w = arrays["v_template"], arrays["weights"]
    joints = arrays["J_regressor"] @ v
    hand = v[:, 0] > joints[J["left_wrist"], 0] + 0.03
    assert hand.sum() > 100
    assert w[hand][:, [J["left_wrist"], J["left_hand"]]].sum(1).min() > 0.99
    sole = (v[:, 1] < v[:, 1].min() + 0.025) & (v[:, 0] > 0)  # bottom 2.5 cm of the left foot
    assert sole.sum() > 100
    assert w[sole][:, [J["left_ankle"], J["left_foot"]]].sum(1).min() > 0.99
    # every joint drives some vertices (the collars least: max weight ~0.48)
    assert (w.max(0) > 0.4).all()


# ---------------------------------------------------------------------------------- T-pose geometry
def test_mean_body_pelvis_at_origin_and_facing_plus_z(body):
    out = zero_pose(body)
    joints, verts = out.joints[0].numpy(), out.vertices[0].numpy()
    np.testing.assert_allclose(joints[J["pelvis"]], 0.0, atol=1e-3)
    assert joints[J["head"], 1] > joints[J["neck"], 1] > joints[J["pelvis"], 1] > joints[J["left_knee"], 1]
    nose = verts[body.vertex_ids["nose"]]
    assert nose[2] > joints[J["head"], 2] + 0.08         # the face is on +Z
    assert joints[J["left_foot"], 2] > joints[J["left_ankle"], 2] + 0.08  # toes point +Z
    assert joints[J["left_hip"], 0] > 0.05 and joints[J["left_shoulder"], 0] > 0.1  # left is +X
    assert verts[:, 1].min() == pytest.approx(-0.90, abs=0.01)  # soles ~0.9 m below the pelvis


def test_tpose_arms_horizontal_and_straight(body):
    joints = zero_pose(body).joints[0].numpy()
    for side, sign in (("left", 1.0), ("right", -1.0)):
        chain = joints[[J[f"{side}_shoulder"], J[f"{side}_elbow"], J[f"{side}_wrist"], J[f"{side}_hand"]]]
        d = chain[-2] - chain[0]
        elevation = np.degrees(np.arctan2(d[1], np.hypot(d[0], d[2])))
        assert abs(elevation) < 2.0, f"{side} arm {elevation:.2f} deg off horizontal"
        assert sign * d[0] > 0.4  # along +X (left) / -X (right), ~0.49 m shoulder -> wrist
        seg = np.diff(chain, axis=0)
        cos = (seg[:-1] * seg[1:]).sum(1) / np.linalg.norm(seg[:-1], axis=1) / np.linalg.norm(seg[1:], axis=1)
        assert (cos > np.cos(np.radians(3))).all()  # elbow and wrist straight
    # legs straight down: ankle under the hip within 2 cm sideways
    for side in ("left", "right"):
        assert abs(joints[J[f"{side}_ankle"], 0] - joints[J[f"{side}_hip"], 0]) < 0.02


def test_palms_face_down(arrays):
    """Arms along +/-X with palms down put both thumbs forward (+Z): the hand reaches much further
    in front of the forearm axis (thumb) than behind it (little finger). Palms up would flip that."""
    v = arrays["v_template"]
    joints = arrays["J_regressor"] @ v
    for side, sign in (("left", 1.0), ("right", -1.0)):
        wrist = joints[J[f"{side}_wrist"]]
        hand = sign * (v[:, 0] - wrist[0]) > 0.01
        ahead, behind = v[hand, 2].max() - wrist[2], wrist[2] - v[hand, 2].min()
        assert ahead > 0.07 and ahead > 1.5 * behind, (side, ahead, behind)


def test_left_right_symmetry(body, arrays):
    joints = zero_pose(body).joints[0].numpy()
    mirrored = joints[MIRROR] * np.array([-1.0, 1.0, 1.0])
    assert np.abs(mirrored - joints).max() < 1e-3
    # the mesh too: every mirrored vertex has a vertex within 1 mm
    from scipy.spatial import cKDTree

    v = arrays["v_template"]
    dist, _ = cKDTree(v).query(v * np.array([-1.0, 1.0, 1.0]))
    assert dist.max() < 1e-3


def test_beta0_is_height_and_monotonic(body):
    b0 = np.linspace(-2.0, 2.0, 9)
    betas = torch.zeros(len(b0), 10)
    betas[:, 0] = torch.tensor(b0, dtype=torch.float32)
    v = zero_pose(body, betas=betas).vertices.numpy()
    heights = v[..., 1].max(1) - v[..., 1].min(1)
    assert np.all(np.diff(heights) > 0.03)
    assert heights[4] == pytest.approx(1.689, abs=0.01)
    assert heights[0] == pytest.approx(1.485, abs=0.02) and heights[-1] == pytest.approx(1.895, abs=0.02)


# ---------------------------------------------------------------------------------- against anny
def test_regressed_joints_match_anny_reference(body, reference):
    """BodyModel joints for the held-out bodies' betas vs anny's own joints (written by the build)."""
    assert str(reference["model_id"]) == "fusemesh-open-body-neutral-v1"
    betas = torch.tensor(reference["betas"], dtype=torch.float32)
    joints = zero_pose(body, betas=betas).joints.numpy()
    err = np.linalg.norm(joints - reference["joints"], axis=-1)
    assert err.shape == (5, 24)
    assert err.mean() < 0.010, f"mean joint error {err.mean() * 1e3:.1f} mm"
    assert err.max() < 0.040, f"worst joint error {err.max() * 1e3:.1f} mm"
    # extremities are regressed tightly (anny's wrist/ankle heads sit inside the surface hull)
    for name in ("left_wrist", "right_wrist", "left_ankle", "right_ankle", "head"):
        assert err[:, J[name]].max() < 0.010, name


def test_shape_space_reproduces_anny_vertices(arrays, reference):
    idx = reference["vertex_indices"]
    verts = shaped(arrays, reference["betas"].astype(np.float64))[:, idx]
    err = np.linalg.norm(verts - reference["vertices"], axis=-1)
    assert err.mean() < 0.003 and err.max() < 0.025


def test_numpy_and_body_model_agree(body, arrays, reference):
    betas = reference["betas"].astype(np.float64)
    joints_np = np.einsum("jv,nvc->njc", arrays["J_regressor"].astype(np.float64), shaped(arrays, betas))
    joints_torch = zero_pose(body, betas=torch.tensor(betas, dtype=torch.float32)).joints.numpy()
    np.testing.assert_allclose(joints_torch, joints_np, atol=2e-5)


# ---------------------------------------------------------------------------------- SMPL pose convention
def test_plus_z_at_left_shoulder_raises_left_arm(body):
    angle = 0.6
    pose = torch.zeros(2, 69)
    pose[0, 3 * (J["left_shoulder"] - 1) + 2] = angle      # +z at the left shoulder
    pose[1, 3 * (J["right_shoulder"] - 1) + 2] = -angle    # -z at the right shoulder (mirror image)
    rest = zero_pose(body).joints[0].numpy()
    posed = zero_pose(body, body_pose=pose).joints.numpy()
    for k, side, other in ((0, "left", "right"), (1, "right", "left")):
        sh, wr = J[f"{side}_shoulder"], J[f"{side}_wrist"]
        arm = np.linalg.norm(rest[wr] - rest[sh])
        # rigid rotation about the shoulder joint in the frontal plane: known rise
        assert posed[k, wr, 1] - rest[wr, 1] == pytest.approx(arm * np.sin(angle), abs=2e-3)
        assert posed[k, wr, 2] == pytest.approx(rest[wr, 2], abs=1e-4)
        np.testing.assert_allclose(posed[k, J[f"{other}_wrist"]], rest[J[f"{other}_wrist"]], atol=1e-5)


def test_plus_x_at_left_knee_bends_shin_backwards(body):
    pose = torch.zeros(1, 69)
    pose[0, 3 * (J["left_knee"] - 1)] = np.pi / 2
    rest = zero_pose(body).joints[0].numpy()
    ankle = zero_pose(body, body_pose=pose).joints[0, J["left_ankle"]].numpy()
    knee = rest[J["left_knee"]]
    shin = np.linalg.norm(rest[J["left_ankle"]] - knee)
    assert ankle[2] < knee[2] - 0.9 * shin        # shin now points backwards (-Z)
    assert abs(ankle[1] - knee[1]) < 0.1 * shin  # and horizontal


def test_keypoint_vertices_are_placed_on_the_face(body):
    v = zero_pose(body).vertices[0].numpy()
    kp = {name: v[i] for name, i in body.vertex_ids.items()}
    assert kp["head_top"][1] == pytest.approx(v[:, 1].max(), abs=1e-6)
    assert abs(kp["nose"][0]) < 0.005 and kp["nose"][2] > max(kp["left_eye"][2], kp["right_eye"][2])
    assert kp["left_eye"][0] > 0.015 and kp["right_eye"][0] < -0.015  # +X is the subject's left
    assert kp["left_eye"][1] > kp["nose"][1] and kp["left_ear"][0] > kp["left_eye"][0] + 0.02
    np.testing.assert_allclose(kp["left_ear"] * [-1, 1, 1], kp["right_ear"], atol=1e-3)


# ---------------------------------------------------------------------------------- the build tool (numpy parts)
def test_bone_groups_cover_anny_rig_once():
    groups = tool.smpl_bone_groups()
    assert sorted(groups) == sorted(SMPL_JOINT_NAMES)
    bones = [b for g in groups.values() for b in g]
    assert len(bones) == len(set(bones)) == 104  # anny's rig `anny` has 104 bones
    for name, heads in tool.smpl_joint_bones().items():
        assert set(heads) <= set(bones), name


def test_shape_space_fit_recovers_known_basis():
    rng = np.random.default_rng(0)
    V, N = 50, 400
    mean = rng.normal(size=(V, 3))
    basis = np.linalg.qr(rng.normal(size=(V * 3, 2)))[0].reshape(V, 3, 2)
    coeffs = rng.normal(size=(N, 2)) * [3.0, 1.0]
    verts = mean + np.einsum("vck,nk->nvc", basis, coeffs)
    heights = -coeffs[:, 0]  # taller = negative first coefficient: the fit must flip the sign
    space = tool.fit_shape_space(verts, 2, heights)
    betas = space.project(verts)
    np.testing.assert_allclose(space.reconstruct(betas), verts, atol=1e-9)
    np.testing.assert_allclose(betas.std(0, ddof=1), 1.0, atol=1e-9)
    assert np.corrcoef(betas[:, 0], heights)[0, 1] > 0.99
    np.testing.assert_allclose(space.ratio.sum(), 1.0, atol=1e-9)


def test_joint_regressor_fit_is_convex_and_exact_on_convex_data():
    rng = np.random.default_rng(1)
    N, V = 60, 40
    verts = rng.normal(size=(N, V, 3))
    true = np.zeros((24, V))
    for j in range(24):
        ids = rng.choice(V, 3, replace=False)
        true[j, ids] = rng.dirichlet(np.ones(3))
    joints = np.einsum("jv,nvc->njc", true, verts)
    reg = tool.fit_joint_regressor(verts, joints, support=V, mirror=None)
    assert reg.min() >= 0
    np.testing.assert_allclose(reg.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.einsum("jv,nvc->njc", reg, verts), joints, atol=1e-4)


def test_build_config_rejects_bad_values():
    with pytest.raises(ValueError, match="n_reference"):
        tool.BuildConfig(n_heldout=3, n_reference=5)
    with pytest.raises(ValueError, match="n_bodies"):
        tool.BuildConfig(n_bodies=5)


def test_render_panel_silhouette_has_known_width(body):
    """The body-sheet renderer's front T-pose silhouette spans the arm span at its pixel scale."""
    from assets.tools.render_body_sheet import FRONT, PanelSpec, render_panel

    out = zero_pose(body)
    verts, joints = out.vertices[0].numpy().astype(np.float64), out.joints[0].numpy().astype(np.float64)
    spec = PanelSpec(width_px=240, height_px=240, px_per_m=100.0)
    img = render_panel(verts, np.asarray(body.faces), joints, list(body.parents), FRONT,
                       np.zeros(3), spec)
    body_px = (img.astype(int).sum(-1) < 3 * 250)  # not white background
    cols = np.flatnonzero(body_px.any(0))
    span = verts[:, 0].max() - verts[:, 0].min()
    assert (cols[-1] - cols[0] + 1) == pytest.approx(span * spec.px_per_m, abs=3)
