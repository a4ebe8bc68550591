"""A tiny SMPL-format body model for fast tests (not a human: boxes along the SMPL skeleton).

`write_toy_body(path)` writes an .npz with exactly the keys of FuseMesh's open body file
(`v_template, shapedirs (V,3,10), posedirs (V,3,207), J_regressor (24,V), weights (V,24),
kintree_table (2,24), f, joint_names` plus named vertex ids), so every loader and model path can be
exercised in milliseconds without the real asset. Units: metres; frame: SMPL's (Y up, +Z forward,
+X = subject's left). theta = 0 is a T-pose.

Vertices 0..23 sit exactly on the 24 joints and `J_regressor` picks them, so joint positions are known
exactly; the remaining vertices are small boxes around each bone, skinned rigidly to its parent joint.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SMPL_PARENTS = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21])
SMPL_JOINT_NAMES = [
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
]

# T-pose joint positions (metres), roughly a 1.7 m adult; +X is the subject's left.
TOY_JOINTS = np.array([
    [0.00, 0.95, 0.00],   # pelvis
    [0.09, 0.87, 0.00],   # left_hip
    [-0.09, 0.87, 0.00],  # right_hip
    [0.00, 1.07, -0.01],  # spine1
    [0.10, 0.48, 0.01],   # left_knee
    [-0.10, 0.48, 0.01],  # right_knee
    [0.00, 1.20, 0.00],   # spine2
    [0.10, 0.08, -0.03],  # left_ankle
    [-0.10, 0.08, -0.03], # right_ankle
    [0.00, 1.26, 0.01],   # spine3
    [0.11, 0.02, 0.10],   # left_foot
    [-0.11, 0.02, 0.10],  # right_foot
    [0.00, 1.48, -0.01],  # neck
    [0.08, 1.40, 0.00],   # left_collar
    [-0.08, 1.40, 0.00],  # right_collar
    [0.00, 1.56, 0.03],   # head
    [0.18, 1.42, -0.01],  # left_shoulder
    [-0.18, 1.42, -0.01], # right_shoulder
    [0.44, 1.42, -0.02],  # left_elbow
    [-0.44, 1.42, -0.02], # right_elbow
    [0.69, 1.42, -0.01],  # left_wrist
    [-0.69, 1.42, -0.01], # right_wrist
    [0.77, 1.42, -0.01],  # left_hand
    [-0.77, 1.42, -0.01], # right_hand
], dtype=np.float64)

_BOX_CORNERS = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
_BOX_FACES = np.array([
    [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
    [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],
])


def toy_body_arrays(num_betas: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Arrays of the toy body in the SMPL file layout (float64 geometry, int faces)."""
    rng = np.random.default_rng(seed)
    verts = [TOY_JOINTS.copy()]
    weights = [np.eye(24)]
    faces = []
    n = 24
    for j in range(1, 24):
        p = SMPL_PARENTS[j]
        centre = 0.5 * (TOY_JOINTS[j] + TOY_JOINTS[p])
        half = np.maximum(np.abs(TOY_JOINTS[j] - TOY_JOINTS[p]) / 2, 0.03)
        verts.append(centre + _BOX_CORNERS * half)
        w = np.zeros((8, 24))
        w[:, p] = 1.0
        weights.append(w)
        faces.append(_BOX_FACES + n)
        n += 8
    # head box and named keypoint vertices on it
    head = TOY_JOINTS[15] + np.array([0.0, 0.08, 0.0])
    verts.append(head + _BOX_CORNERS * 0.08)
    w = np.zeros((8, 24))
    w[:, 15] = 1.0
    weights.append(w)
    faces.append(_BOX_FACES + n)
    n += 8
    extra = np.array([
        [0.0, 1.62, 0.12],    # nose
        [0.035, 1.66, 0.10],  # left_eye
        [-0.035, 1.66, 0.10], # right_eye
        [0.08, 1.63, 0.0],    # left_ear
        [-0.08, 1.63, 0.0],   # right_ear
        [0.0, 1.74, 0.0],     # head_top
    ])
    verts.append(extra)
    weights.append(np.tile(np.eye(24)[15], (len(extra), 1)))
    v_template = np.concatenate(verts)
    V = len(v_template)
    # beta[0] scales height about the floor, the rest are small random directions
    shapedirs = rng.normal(0, 0.003, size=(V, 3, num_betas))
    shapedirs[:, :, 0] = 0.0
    shapedirs[:, 1, 0] = 0.05 * v_template[:, 1] / 1.7
    J_regressor = np.zeros((24, V))
    J_regressor[np.arange(24), np.arange(24)] = 1.0
    return {
        "v_template": v_template,
        "shapedirs": shapedirs,
        "posedirs": np.zeros((V, 3, 207)),
        "J_regressor": J_regressor,
        "weights": np.concatenate(weights),
        "kintree_table": np.stack([np.where(SMPL_PARENTS < 0, 4294967295, SMPL_PARENTS), np.arange(24)]).astype(np.int64),
        "f": np.concatenate(faces).astype(np.int64),
        "joint_names": np.array(SMPL_JOINT_NAMES),
        "vertex_ids_names": np.array(["nose", "left_eye", "right_eye", "left_ear", "right_ear", "head_top"]),
        "vertex_ids": np.arange(V - 6, V, dtype=np.int64),
    }


def write_toy_body(path: str | Path, **kwargs) -> Path:
    """Write the toy body to `path` (.npz) and return the path."""
    path = Path(path)
    np.savez_compressed(path, **toy_body_arrays(**kwargs))
    return path
