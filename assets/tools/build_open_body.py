"""Build FuseMesh's open, SMPL-format neutral body from the `anny` body model (dev tool).

    python -m assets.tools.build_open_body --out assets/body/open_body_neutral.npz

Needs `anny==0.6.2` (assets/tools/requirements-build.txt; not a runtime requirement). Steps:

1. sample `n_bodies + n_heldout` adult phenotypes from anny's `SimpleShapeDistribution`;
2. re-pose every body from anny's A-pose into SMPL's T-pose (arms along +/-X, palms down, legs
   without splay, feet flat) with anny's own skinning, then convert axes
   ((x, y, z)_smpl = (x, z, -y)_anny) and shift so the mean body's pelvis joint is at the origin;
3. PCA of the T-posed vertices about their mean -> `v_template`, `shapedirs (V,3,10)` scaled so that
   beta ~ N(0, 1), beta[0] > 0 = taller;
4. merge anny's 104 bone weights into SMPL's 24 joints (`weights (V,24)`), fit a non-negative,
   sum-to-one `J_regressor (24,V)` to anny's joint locations, pick keypoint vertices;
5. write the SMPL-format .npz and a small reference .npz (held-out bodies: betas, anny's joints,
   a few vertices) that lets tests check the asset without anny.

Output frame and units: metres, SMPL frame (Y up, +Z forward = the way the body faces,
+X = subject's left); theta = 0 is the T-pose. Deterministic given --seed (same machine and library
versions).
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODEL_ID = "fusemesh-open-body-neutral-v1"
ANNY_VERSION = "0.6.2"
UINT32_ROOT = 4294967295

SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
)
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
KEYPOINT_NAMES = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "head_top")

# (x, y, z)_smpl = ANNY_TO_SMPL @ (x, y, z)_anny: anny is Z up, -Y forward; SMPL is Y up, +Z forward.
ANNY_TO_SMPL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

_TOES = [f"toe{i}-{k}" for i in range(1, 6) for k in (1, 2, 3) if not (i == 1 and k == 3)]
_HAND_FINGERS = [f"finger{i}-{k}" for i in range(2, 6) for k in (1, 2, 3)]


def _sided(names: list[str], side: str) -> list[str]:
    return [f"{n}.{side}" for n in names]


def smpl_bone_groups() -> dict[str, list[str]]:
    """SMPL joint name -> the anny bones (rig `anny`, 104 bones) whose skinning weights it takes."""
    groups: dict[str, list[str]] = {
        "pelvis": ["root", "pelvis.L", "pelvis.R", "spine05", "spine04"],
        "spine1": ["spine03"],
        "spine2": ["spine02"],
        "spine3": ["spine01"],
        "neck": ["neck01", "neck02", "neck03"],
        "head": ["head", "eye.L", "eye.R"],
    }
    for side, s in (("left", "L"), ("right", "R")):
        groups[f"{side}_hip"] = _sided(["upperleg01", "upperleg02"], s)
        groups[f"{side}_knee"] = _sided(["lowerleg01", "lowerleg02"], s)
        groups[f"{side}_ankle"] = _sided(["foot"], s)
        groups[f"{side}_foot"] = _sided(_TOES, s)
        groups[f"{side}_collar"] = _sided(["clavicle", "shoulder01"], s)
        groups[f"{side}_shoulder"] = _sided(["upperarm01", "upperarm02"], s)
        groups[f"{side}_elbow"] = _sided(["lowerarm01", "lowerarm02"], s)
        groups[f"{side}_wrist"] = _sided(
            ["wrist", "metacarpal1", "metacarpal2", "metacarpal3", "metacarpal4",
             "finger1-1", "finger1-2", "finger1-3"], s)
        groups[f"{side}_hand"] = _sided(_HAND_FINGERS, s)
    return groups


def smpl_joint_bones() -> dict[str, list[str]]:
    """SMPL joint name -> anny bones whose heads, averaged, give the joint's location."""
    bones = {
        "pelvis": ["root"], "spine1": ["spine03"], "spine2": ["spine02"], "spine3": ["spine01"],
        "neck": ["neck01"], "head": ["head"],
    }
    for side, s in (("left", "L"), ("right", "R")):
        bones[f"{side}_hip"] = [f"upperleg01.{s}"]
        bones[f"{side}_knee"] = [f"lowerleg01.{s}"]
        bones[f"{side}_ankle"] = [f"foot.{s}"]
        bones[f"{side}_foot"] = _sided([f"toe{i}-1" for i in range(1, 6)], s)
        bones[f"{side}_collar"] = [f"clavicle.{s}"]
        bones[f"{side}_shoulder"] = [f"upperarm01.{s}"]
        bones[f"{side}_elbow"] = [f"lowerarm01.{s}"]
        bones[f"{side}_wrist"] = [f"wrist.{s}"]
        bones[f"{side}_hand"] = _sided([f"finger{i}-1" for i in range(2, 6)], s)
    return bones


@dataclass(frozen=True)
class BuildConfig:
    """Everything that determines the built asset."""

    seed: int = 0
    n_bodies: int = 2000          # PCA / regressor training bodies
    n_heldout: int = 200          # held-out bodies for the quality numbers
    n_reference: int = 5          # held-out bodies written to the reference file
    n_betas: int = 10
    topology: str = "anny-notongue"
    min_age_years: float = 18.0   # morphological age range of the adult sampler
    max_age_years: float = 90.0
    regressor_support: int = 2000  # nearest vertices a joint's regressor may use
    regressor_fit_bodies: int = 1000
    batch_size: int = 100

    def __post_init__(self) -> None:
        if self.n_bodies < 2 * self.n_betas:
            raise ValueError(f"n_bodies={self.n_bodies} is too small for {self.n_betas} components")
        if not 1 <= self.n_reference <= self.n_heldout:
            raise ValueError(f"n_reference={self.n_reference} must be in [1, n_heldout={self.n_heldout}]")
        if not 0 <= self.min_age_years < self.max_age_years:
            raise ValueError(f"bad age range [{self.min_age_years}, {self.max_age_years}]")


# ----------------------------------------------------------------------------------------------
# anny side (torch)
# ----------------------------------------------------------------------------------------------

def load_anny(topology: str, cache_dir: str | None = None):
    """anny model (rig `anny`, float64, plain torch LBS); builds its cache on first use (~1-2 min)."""
    try:
        import anny
        import anny.paths
    except ImportError as e:
        raise RuntimeError(f"anny is not importable ({e}); install it with "
                           "`pip install -r assets/tools/requirements-build.txt`") from None
    if anny.__version__ != ANNY_VERSION:
        raise RuntimeError(f"anny {anny.__version__} installed, this tool was written for {ANNY_VERSION}")
    if cache_dir is not None:
        anny.paths.set_anny_cache_path(cache_dir)
    return anny.Anny(rig="anny", topology=topology, skinning_method="lbs")


def sample_phenotypes(model, n: int, seed: int, min_age: float, max_age: float):
    """(n, 6) phenotypes (order `model.phenotype_labels`) of adults from anny's realistic sampler."""
    import torch
    from anny.shape_distribution import SimpleShapeDistribution

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        age = torch.distributions.Uniform(torch.tensor(min_age, dtype=model.dtype),
                                          torch.tensor(max_age, dtype=model.dtype))
        _, values = SimpleShapeDistribution(model, morphological_age_distribution=age).sample(n)
    return torch.stack([values[k] for k in model.phenotype_labels], dim=1)


def _rotation_between(a, b):
    """(..., 3, 3) smallest rotation taking direction a (..., 3) onto direction b (..., 3)."""
    import torch

    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    axis = torch.linalg.cross(a, b)
    s = axis.norm(dim=-1, keepdim=True)
    c = (a * b).sum(-1, keepdim=True)
    angle = torch.atan2(s, c)
    axis = axis / s.clamp_min(1e-12)
    return _rotvec_to_matrix(axis * angle)


def _rotvec_to_matrix(rotvec):
    import roma

    return roma.rotvec_to_rotmat(rotvec)


def tpose_world_rotations(model, heads):
    """(B, 104, 3, 3) world rotation of every anny bone taking its A-pose rest state to the T-pose.

    heads: (B, 104, 3) rest bone heads, anny frame (Z up, -Y forward, +X left), metres.
    Upper arm, forearm and hand are turned, each about its own head, so that shoulder->elbow,
    elbow->wrist and wrist->knuckles point along +X (left) / -X (right); the smallest rotations keep
    the palms facing down. Each thigh turns about the forward axis so the ankle sits under the hip;
    the feet keep their rest orientation (soles flat). Every other bone follows its parent.
    """
    import torch

    labels = list(model.bone_labels)
    idx = {name: i for i, name in enumerate(labels)}
    parents = model.bone_parents
    B = heads.shape[0]
    eye = torch.eye(3, dtype=heads.dtype).expand(B, 3, 3)
    G: list = [eye] * len(labels)
    targets = {"L": torch.tensor([1.0, 0.0, 0.0], dtype=heads.dtype),
               "R": torch.tensor([-1.0, 0.0, 0.0], dtype=heads.dtype)}

    def knuckles(s: str):
        return torch.stack([heads[:, idx[f"finger{i}-1.{s}"]] for i in range(2, 6)], 1).mean(1)

    for c in range(1, len(labels)):
        name = labels[c]
        Gp = G[parents[c]]
        base, _, side = name.partition(".")
        if base in ("upperarm01", "lowerarm01", "wrist"):
            h = heads[:, c]
            if base == "upperarm01":
                tip = heads[:, idx[f"lowerarm01.{side}"]]
            elif base == "lowerarm01":
                tip = heads[:, idx[f"wrist.{side}"]]
            else:
                tip = knuckles(side)
            d = torch.einsum("bij,bj->bi", Gp, tip - h)
            G[c] = _rotation_between(d, targets[side].expand_as(d)) @ Gp
        elif base == "upperleg01":
            d = heads[:, idx[f"foot.{side}"]] - heads[:, c]
            phi = torch.atan2(-d[:, 0], -d[:, 2])  # about +Y (anny's backward axis): x' = 0
            rotvec = torch.zeros_like(d)
            rotvec[:, 1] = -phi
            G[c] = _rotvec_to_matrix(rotvec) @ Gp
        elif base == "foot":
            G[c] = eye
        else:
            G[c] = Gp
    return torch.stack(G, 1)


def tpose_bodies(model, phenotypes):
    """T-posed bodies of a batch of phenotypes, anny frame.

    Returns vertices (B, V, 3) and posed bone heads (B, 104, 3), metres, via anny's own forward
    ('world-orient' pose parameterisation: each delta is the bone's world orientation).
    """
    import torch

    with torch.no_grad():
        rest = model(phenotype_kwargs=phenotypes)
        R = rest["rest_bone_poses"][..., :3, :3]
        heads = rest["rest_bone_heads"]
        G = tpose_world_rotations(model, heads)
        delta = torch.zeros(G.shape[:2] + (4, 4), dtype=G.dtype)
        delta[..., :3, :3] = G @ R
        delta[..., :3, 3] = heads  # only the root's is read: it stays where it is
        delta[..., 3, 3] = 1.0
        out = model(pose_parameters=delta, phenotype_kwargs=phenotypes,
                    pose_parameterization="world-orient")
    return out["vertices"], out["bone_poses"][..., :3, 3]


def anny_joint_matrix(model) -> np.ndarray:
    """(24, 104) averaging matrix: SMPL joints = matrix @ anny bone heads."""
    labels = list(model.bone_labels)
    M = np.zeros((24, len(labels)))
    bones = smpl_joint_bones()
    for j, name in enumerate(SMPL_JOINT_NAMES):
        for b in bones[name]:
            M[j, labels.index(b)] = 1.0 / len(bones[name])
    return M


def merged_skinning_weights(model) -> np.ndarray:
    """(V, 24) SMPL skinning weights: each anny bone's weights summed into its SMPL joint."""
    import anny.skinning.skinning as skinning

    labels = list(model.bone_labels)
    dense = skinning.dense_bone_weights(model.vertex_bone_weights, model.vertex_bone_indices,
                                        len(labels)).double().numpy()
    groups = smpl_bone_groups()
    to_smpl = np.zeros((len(labels), 24))
    for j, name in enumerate(SMPL_JOINT_NAMES):
        for b in groups[name]:
            to_smpl[labels.index(b), j] = 1.0
    unmapped = [labels[i] for i in np.flatnonzero(to_smpl.sum(1) != 1)]
    if unmapped:
        raise RuntimeError(f"anny bones mapped to no or several SMPL joints: {unmapped}")
    w = dense @ to_smpl
    return w / w.sum(1, keepdims=True)


def coco_keypoint_weights(model, names: tuple[str, ...]) -> np.ndarray:
    """(K, V) anny's COCO keypoint regressor rows for `names`, on the model's topology."""
    import torch
    from anny.paths import get_anny_root_dir

    data = torch.load(get_anny_root_dir() / "data" / "keypoints" / "coco.pth", weights_only=True)
    idx = model.base_mesh_vertex_indices.cpu()
    return np.stack([data[n][idx].double().numpy() for n in names])


# ----------------------------------------------------------------------------------------------
# numpy side: PCA, regressor, symmetry
# ----------------------------------------------------------------------------------------------

@dataclass
class ShapeSpace:
    """PCA shape space. mean (V,3); dirs (V,3,K) scaled so beta ~ N(0,1); ratio (K,) explained."""

    mean: np.ndarray
    dirs: np.ndarray
    ratio: np.ndarray

    def project(self, verts: np.ndarray) -> np.ndarray:
        """(N,V,3) vertices -> (N,K) betas (least squares; the directions are orthogonal)."""
        D = self.dirs.reshape(-1, self.dirs.shape[-1])
        X = (verts - self.mean).reshape(len(verts), -1)
        return X @ D / (D * D).sum(0)

    def reconstruct(self, betas: np.ndarray) -> np.ndarray:
        """(N,K) betas -> (N,V,3) vertices."""
        return self.mean + np.einsum("vck,nk->nvc", self.dirs, betas)


def fit_shape_space(verts: np.ndarray, n_components: int, heights: np.ndarray) -> ShapeSpace:
    """PCA about the mean of (N,V,3) vertices; component 0 signed so that beta[0] > 0 = taller.

    Other components are signed so that their largest-magnitude entry is positive.
    """
    N = len(verts)
    mean = verts.mean(0)
    X = (verts - mean).reshape(N, -1)
    gram = X @ X.T
    evals, evecs = np.linalg.eigh(gram)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    total = evals.clip(min=0).sum()
    k = n_components
    U = X.T @ evecs[:, :k] / np.sqrt(evals[:k])  # (3V, k) orthonormal
    scores = X @ U
    for c in range(k):
        if c == 0:
            flip = np.corrcoef(scores[:, 0], heights)[0, 1] < 0
        else:
            flip = U[np.argmax(np.abs(U[:, c])), c] < 0
        if flip:
            U[:, c] *= -1
    std = np.sqrt(evals[:k] / (N - 1))
    dirs = (U * std).reshape(verts.shape[1], 3, k)
    return ShapeSpace(mean=mean, dirs=dirs, ratio=evals[:k] / total)


def mirror_vertex_map(verts: np.ndarray, tol: float = 2e-3) -> np.ndarray | None:
    """Index of each vertex's left/right mirror image (x -> -x) on a (V,3) mesh, or None.

    None when the nearest mirrored neighbours do not form an involution within `tol` metres.
    """
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(verts).query(verts * np.array([-1.0, 1.0, 1.0]))
    if dist.max() > tol or not np.array_equal(idx[idx], np.arange(len(verts))):
        return None
    return idx


def fit_joint_regressor(verts: np.ndarray, joints: np.ndarray, support: int,
                        mirror: np.ndarray | None) -> np.ndarray:
    """(24, V) non-negative, rows-sum-to-one regressor with joints ~= regressor @ vertices.

    verts (N,V,3), joints (N,24,3): T-posed training bodies. Each joint uses only the `support`
    vertices nearest its mean position (NNLS with a heavily weighted sum-to-one row). With a mirror
    map, left/right rows are averaged with their mirror images (exact symmetry on symmetric bodies).
    """
    from scipy.optimize import nnls
    from scipy.spatial import cKDTree

    N, V, _ = verts.shape
    mean_v = verts.mean(0)
    tree = cKDTree(mean_v)
    reg = np.zeros((24, V))
    lam = 10.0 * np.sqrt(N)
    for j in range(24):
        _, near = tree.query(joints[:, j].mean(0), k=min(support, V))
        A = verts[:, near, :].transpose(0, 2, 1).reshape(N * 3, -1)
        b = joints[:, j, :].reshape(-1)
        A = np.vstack([A, np.full((1, A.shape[1]), lam)])
        b = np.append(b, lam)
        w, _ = nnls(A, b, maxiter=50 * A.shape[1])
        reg[j, near] = w / w.sum()
    if mirror is not None:
        swap = [SMPL_JOINT_NAMES.index(_mirror_name(n)) for n in SMPL_JOINT_NAMES]
        mirrored = reg[swap][:, mirror]
        reg = 0.5 * (reg + mirrored)
    reg[reg < 1e-6] = 0.0
    return reg / reg.sum(1, keepdims=True)


def _mirror_name(name: str) -> str:
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


def keypoint_vertices(mean_verts: np.ndarray, coco_weights: np.ndarray,
                      mirror: np.ndarray | None) -> np.ndarray:
    """Vertex index per KEYPOINT_NAMES on the mean T-posed mesh (V,3), SMPL frame.

    nose/eyes/ears: the vertex nearest anny's COCO keypoint regressor output; head_top: the highest
    vertex. Right-side ids are the mirror images of the left ones when a mirror map exists.
    """
    from scipy.spatial import cKDTree

    pts = coco_weights @ mean_verts  # nose, left_eye, right_eye, left_ear, right_ear
    _, ids = cKDTree(mean_verts).query(pts)
    ids = list(ids)
    if mirror is not None:
        ids[2], ids[4] = mirror[ids[1]], mirror[ids[3]]
    ids.append(int(np.argmax(mean_verts[:, 1])))
    return np.asarray(ids, dtype=np.int64)


def body_heights(verts: np.ndarray) -> np.ndarray:
    """(N,) vertical extent (y) of (N,V,3) bodies, metres."""
    return verts[..., 1].max(-1) - verts[..., 1].min(-1)


# ----------------------------------------------------------------------------------------------
# the build
# ----------------------------------------------------------------------------------------------

@dataclass
class BuildResult:
    body: dict[str, np.ndarray]       # the SMPL-format arrays
    reference: dict[str, np.ndarray]  # held-out reference data for tests
    report: dict[str, object]         # quality numbers


def _tpose_all(model, phenotypes, batch_size: int, joint_matrix: np.ndarray):
    """(N,V,3) vertices and (N,24,3) anny joints, SMPL frame (before the origin shift)."""
    from tqdm import tqdm

    verts, joints = [], []
    for start in tqdm(range(0, len(phenotypes), batch_size), desc="T-posing anny bodies", unit="batch"):
        v, heads = tpose_bodies(model, phenotypes[start:start + batch_size])
        verts.append(v.numpy() @ ANNY_TO_SMPL.T)
        joints.append(np.einsum("jb,nbc->njc", joint_matrix, heads.numpy()) @ ANNY_TO_SMPL.T)
    return np.concatenate(verts), np.concatenate(joints)


def build(config: BuildConfig, cache_dir: str | None = None, log=print) -> BuildResult:
    """Run the whole build (a few minutes on 2 CPU cores)."""
    t0 = time.time()
    model = load_anny(config.topology, cache_dir)
    n_total = config.n_bodies + config.n_heldout
    phen = sample_phenotypes(model, n_total, config.seed, config.min_age_years, config.max_age_years)
    verts, joints = _tpose_all(model, phen, config.batch_size, anny_joint_matrix(model))
    # origin: the mean training body's pelvis joint
    offset = -joints[: config.n_bodies, 0].mean(0)
    offset[0] = 0.0
    verts += offset
    joints += offset
    tr_v, ho_v = verts[: config.n_bodies], verts[config.n_bodies:]
    tr_j, ho_j = joints[: config.n_bodies], joints[config.n_bodies:]
    del verts
    log(f"T-posed {n_total} bodies in {time.time() - t0:.0f} s; "
        f"heights {body_heights(tr_v).min():.3f}-{body_heights(tr_v).max():.3f} m")

    space = fit_shape_space(tr_v, config.n_betas, body_heights(tr_v))
    ho_b = space.project(ho_v)
    ho_rec = space.reconstruct(ho_b)
    rec_err = np.linalg.norm(ho_rec - ho_v, axis=-1)
    log(f"PCA: explained {space.ratio.sum():.5f}; held-out vertex error "
        f"mean {rec_err.mean() * 1e3:.2f} mm, max {rec_err.max() * 1e3:.1f} mm")

    mirror = mirror_vertex_map(space.mean)
    log("mirror map: " + ("found" if mirror is not None else "NOT found (no symmetrisation)"))
    n_fit = min(config.regressor_fit_bodies, config.n_bodies)
    J_reg = fit_joint_regressor(tr_v[:n_fit], tr_j[:n_fit], config.regressor_support, mirror)
    err_true = np.linalg.norm(np.einsum("jv,nvc->njc", J_reg, ho_v) - ho_j, axis=-1)
    err_model = np.linalg.norm(np.einsum("jv,nvc->njc", J_reg, ho_rec) - ho_j, axis=-1)
    log(f"J_regressor ({(J_reg > 0).sum()} non-zeros): held-out joint error on anny vertices "
        f"mean {err_true.mean() * 1e3:.2f} / max {err_true.max() * 1e3:.1f} mm; "
        f"from projected betas mean {err_model.mean() * 1e3:.2f} / max {err_model.max() * 1e3:.1f} mm")

    weights = merged_skinning_weights(model)
    kp_ids = keypoint_vertices(space.mean, coco_keypoint_weights(model, KEYPOINT_NAMES[:5]), mirror)
    faces = model.faces.cpu().numpy().astype(np.int64)
    V = space.mean.shape[0]
    parents = np.array(SMPL_PARENTS, dtype=np.int64)
    body = {
        "v_template": space.mean.astype(np.float32),
        "shapedirs": space.dirs.astype(np.float32),
        "posedirs": np.zeros((V, 3, 207), dtype=np.float32),
        "J_regressor": J_reg.astype(np.float32),
        "weights": weights.astype(np.float32),
        "kintree_table": np.stack([np.where(parents < 0, UINT32_ROOT, parents), np.arange(24)]),
        "f": faces,
        "joint_names": np.array(SMPL_JOINT_NAMES),
        "vertex_ids_names": np.array(KEYPOINT_NAMES),
        "vertex_ids": kp_ids,
        "model_id": np.array(MODEL_ID),
        "seed": np.array(config.seed, dtype=np.int64),
        "anny_version": np.array(ANNY_VERSION),  # load_anny checked the installed version
        "anny_topology": np.array(config.topology),
        "n_bodies": np.array(config.n_bodies, dtype=np.int64),
        "explained_variance": space.ratio.astype(np.float64),
    }
    # rows of float32 arrays that must sum to one: renormalise after the cast
    for key in ("J_regressor", "weights"):
        a = body[key].astype(np.float64)
        body[key] = (a / a.sum(1, keepdims=True)).astype(np.float32)

    n_ref = config.n_reference
    ref_ids = np.unique(np.concatenate([kp_ids, np.linspace(0, V - 1, 26).astype(np.int64)]))
    reference = {
        "model_id": np.array(MODEL_ID),
        "betas": ho_b[:n_ref].astype(np.float32),
        "joints": ho_j[:n_ref].astype(np.float32),
        "vertex_indices": ref_ids,
        "vertices": ho_v[:n_ref, ref_ids].astype(np.float32),
        "phenotypes": phen[config.n_bodies:config.n_bodies + n_ref].numpy().astype(np.float32),
        "phenotype_labels": np.array(model.phenotype_labels),
        "seed": np.array(config.seed, dtype=np.int64),
    }
    report = _quality_report(body, space, tr_v, rec_err, err_true, err_model, mirror, time.time() - t0)
    return BuildResult(body=body, reference=reference, report=report)


def _quality_report(body, space, tr_v, rec_err, err_true, err_model, mirror, seconds) -> dict:
    """Numbers for assets/body/README.md."""
    J_reg = body["J_regressor"].astype(np.float64)
    hs = {}
    for b0 in (-2.0, -1.0, 0.0, 1.0, 2.0):
        betas = np.zeros((1, space.dirs.shape[-1]))
        betas[0, 0] = b0
        hs[b0] = float(body_heights(space.reconstruct(betas))[0])
    J0 = J_reg @ space.mean
    mirrored = J0[[SMPL_JOINT_NAMES.index(_mirror_name(n)) for n in SMPL_JOINT_NAMES]] * [-1, 1, 1]
    arm = {}
    for side in ("left", "right"):
        d = J0[SMPL_JOINT_NAMES.index(f"{side}_wrist")] - J0[SMPL_JOINT_NAMES.index(f"{side}_shoulder")]
        arm[side] = float(np.degrees(np.arctan2(d[1], np.hypot(d[0], d[2]))))
    per_joint = {n: round(float(err_model[:, j].mean() * 1e3), 2) for j, n in enumerate(SMPL_JOINT_NAMES)}
    counts = (body["weights"] > 0).sum(1)
    return {
        "build_seconds": round(seconds, 1),
        "n_vertices": int(space.mean.shape[0]),
        "n_faces": int(body["f"].shape[0]),
        "train_height_range_m": [float(body_heights(tr_v).min()), float(body_heights(tr_v).max())],
        "explained_variance": [float(r) for r in space.ratio],
        "explained_variance_total": float(space.ratio.sum()),
        "heldout_vertex_error_mm": {"mean": float(rec_err.mean() * 1e3), "max": float(rec_err.max() * 1e3)},
        "heldout_joint_error_from_anny_vertices_mm": {"mean": float(err_true.mean() * 1e3),
                                                      "max": float(err_true.max() * 1e3)},
        "heldout_joint_error_from_betas_mm": {"mean": float(err_model.mean() * 1e3),
                                              "max": float(err_model.max() * 1e3)},
        "heldout_joint_error_per_joint_mm": per_joint,
        "J_regressor_nonzeros": int((J_reg > 0).sum()),
        "height_vs_beta0_m": hs,
        "mean_joint_symmetry_error_mm": float(np.linalg.norm(J0 - mirrored, axis=1).max() * 1e3),
        "mirror_map": mirror is not None,
        "arm_elevation_deg": arm,
        "max_joints_per_vertex": int(counts.max()),
        "floor_y_at_mean_m": float(space.mean[:, 1].min()),
    }


def save(result: BuildResult, out: Path, reference_out: Path) -> None:
    """Write both .npz files (compressed)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **result.body)
    np.savez_compressed(reference_out, **result.reference)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    defaults = BuildConfig()
    p.add_argument("--out", type=Path, default=Path("assets/body/open_body_neutral.npz"))
    p.add_argument("--reference-out", type=Path, default=None,
                   help="reference file for tests (default: open_body_reference.npz beside --out)")
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--n-bodies", type=int, default=defaults.n_bodies)
    p.add_argument("--n-heldout", type=int, default=defaults.n_heldout)
    p.add_argument("--anny-cache-dir", default=None,
                   help="anny's cache (default: $ANNY_CACHE_DIR or ~/.cache/anny)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import json

    args = parse_args(argv)
    if args.out.suffix != ".npz":
        raise SystemExit(f"error: --out must end in .npz, got {args.out}")
    try:
        config = dataclasses.replace(BuildConfig(), seed=args.seed, n_bodies=args.n_bodies,
                                     n_heldout=args.n_heldout)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    reference_out = args.reference_out or args.out.with_name("open_body_reference.npz")
    try:
        result = build(config, cache_dir=args.anny_cache_dir)
    except RuntimeError as e:
        raise SystemExit(f"error: {e}") from None
    save(result, args.out, reference_out)
    print(json.dumps(result.report, indent=1))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) and {reference_out} "
          f"({reference_out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
