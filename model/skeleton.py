"""SMPL's kinematic tree and the joint sets FuseMesh names: plain Python constants, no torch.

The app (which runs without torch) and model/body.py import the same tuples from here.
"""

from __future__ import annotations

__all__ = ["SMPL_JOINT_NAMES", "SMPL_PARENTS", "LSP_JOINT_NAMES"]

# The 24 SMPL joints in SMPL's order.
SMPL_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
)
# Parent of each SMPL joint (root -1).
SMPL_PARENTS: tuple[int, ...] = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)

# The paper's 14 L2d joints in LSP order. All but head_top are SMPL joints of the same name.
LSP_JOINT_NAMES: tuple[str, ...] = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
    "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top",
)
