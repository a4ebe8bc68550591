"""Joint sets of the paper's datasets, their correspondence to SMPL joints, and the Kinect camera frame.

Joint sets (names in each dataset's own spelling and order):

- `smpl`      24  SMPL joints (same names and order as `model.body.SMPL_JOINT_NAMES`).
- `kinect_v1` 15  OpenNI/NITE skeleton on a Kinect v1, as stored by CAD-60 (HEAD, NECK, TORSO, ...).
                  (Microsoft's own Kinect v1 SDK has 20 joints; CAD-60 was recorded with OpenNI/NITE.)
- `kinect_v2` 25  Kinect for Windows SDK 2.0 `JointType` order, as stored by PKU-MMD (SpineBase, ...).
- `coco`      17  COCO person keypoints (nose, left_eye, ...).
- `lsp`       14  Leeds Sports Pose (right_ankle, ..., neck, head_top); same as `model.body.LSP_JOINT_NAMES`.

Left/right is always the subject's own side.

Correspondence to SMPL joints (`JointSet.smpl_index`, -1 = no SMPL joint; E = the same anatomical joint
centre, A = approximate: a nearby point that a tracker or annotator places differently):

| dataset joint                         | SMPL joint   |   | note                                                    |
|---------------------------------------|--------------|---|---------------------------------------------------------|
| v2 SpineBase                          | pelvis       | A | both between the hips; heights differ by a few cm        |
| v2 SpineMid, v1 TORSO                 | spine2       | A | mid-trunk; NITE's TORSO is the trunk centroid            |
| v2 SpineShoulder, v1 NECK             | neck         | A | base of the neck, between the shoulders                  |
| v2 Neck                               | -            |   | mid-neck, between SMPL neck and head                     |
| v2 Head, v1 HEAD                      | head         | A | Kinect: head centre; SMPL: top of the neck (~10 cm lower)|
| v2/v1/COCO/LSP shoulders              | shoulder     | A | trackers/annotators mark the visible shoulder            |
| v2/v1/COCO/LSP elbows                 | elbow        | E |                                                          |
| v2 Wrist, COCO/LSP wrists             | wrist        | E |                                                          |
| v1 HAND                               | wrist        | A | NITE's hand point lies beyond the wrist (palm)           |
| v2 Hand                               | hand         | A | Kinect: palm centre; SMPL: knuckles                      |
| v2 HandTip, v2 Thumb                  | -            |   |                                                          |
| v2/v1/COCO/LSP hips                   | hip          | A | skeleton trackers and COCO/LSP annotators place hips     |
|                                       |              |   | higher and wider than SMPL's hip joint centres           |
| v2/v1/COCO/LSP knees                  | knee         | E |                                                          |
| v2 Ankle, COCO/LSP ankles             | ankle        | E |                                                          |
| v1 FOOT                               | ankle        | A | NITE's foot point is near the ankle (believed: check the |
|                                       |              |   | knee-to-foot length on CAD-60 data, ~ shin length)       |
| v2 Foot                               | foot         | A | Kinect: front of the foot; SMPL: toe base                |
| LSP neck                              | neck         | A | LSP's neck is annotated near the top of the neck         |
| LSP head_top, COCO nose/eyes/ears     | -            |   | surface points: use the body model's vertex keypoints    |

Canonical USCG joint set (`CANONICAL_JOINT_NAMES`, 15 joints common to Kinect v1, Kinect v2 and SMPL;
`to_canonical(joints, set_name)` extracts it from any of the three):

| canonical      | kinect_v1      | kinect_v2     | smpl           |
|----------------|----------------|---------------|----------------|
| head           | HEAD           | Head          | head           |
| neck           | NECK           | SpineShoulder | neck           |
| torso          | TORSO          | SpineMid      | spine2         |
| left_shoulder  | LEFT_SHOULDER  | ShoulderLeft  | left_shoulder  |
| left_elbow     | LEFT_ELBOW     | ElbowLeft     | left_elbow     |
| left_wrist     | LEFT_HAND      | WristLeft     | left_wrist     |
| right_shoulder | RIGHT_SHOULDER | ShoulderRight | right_shoulder |
| right_elbow    | RIGHT_ELBOW    | ElbowRight    | right_elbow    |
| right_wrist    | RIGHT_HAND     | WristRight    | right_wrist    |
| left_hip       | LEFT_HIP       | HipLeft       | left_hip       |
| left_knee      | LEFT_KNEE      | KneeLeft      | left_knee      |
| left_ankle     | LEFT_FOOT      | AnkleLeft     | left_ankle     |
| right_hip      | RIGHT_HIP      | HipRight      | right_hip      |
| right_knee     | RIGHT_KNEE     | KneeRight     | right_knee     |
| right_ankle    | RIGHT_FOOT     | AnkleRight    | right_ankle    |

Coordinate frames (all in metres once read):

- `FRAME_KINECT` ("kinect_camera"): Kinect camera space, used by both PKU-MMD (Kinect v2 SDK
  `CameraSpacePoint`) and CAD-60 (OpenNI "real world" coordinates, mm in the file). Origin at the depth
  sensor; +X towards the *sensor's* left (the right side of a subject facing the sensor), +Y up (tilts with
  the sensor), +Z out along the optical axis. Right-handed.
- `FRAME_OPENCV` ("opencv_camera"): FuseMesh's camera frame: +X right (as seen from behind the camera),
  +Y down, +Z forward. `kinect_to_opencv` is a 180 degree rotation about Z, x -> -x, y -> -y (a proper
  rotation: handedness and the subject's left/right are preserved).

This module also holds what every reader shares: `SkeletonSequence`, `DatasetFormatError`, and the
text helpers `read_text_lines` / `parse_numbers`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

__all__ = [
    "DatasetFormatError", "SkeletonSequence", "JointSet", "JOINT_SETS",
    "SMPL_JOINT_NAMES", "KINECT_V1_JOINT_NAMES", "KINECT_V2_JOINT_NAMES", "COCO_JOINT_NAMES",
    "LSP_JOINT_NAMES", "CANONICAL_JOINT_NAMES", "CANONICAL_INDEX",
    "FRAME_KINECT", "FRAME_OPENCV", "KINECT_TO_OPENCV",
    "kinect_to_opencv", "opencv_to_kinect", "joint_set", "smpl_correspondence", "flip_permutation",
    "to_canonical", "flip_smpl_pose", "read_text_lines", "parse_numbers",
]


class DatasetFormatError(ValueError):
    """A dataset file does not follow its format. `str()` is one line: `path[:line]: problem`.

    path: the offending file; line: 1-based line number where it applies, else None.
    """

    def __init__(self, path: str | Path, problem: str, line: int | None = None):
        self.path = Path(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        super().__init__(f"{where}: {problem}")


def read_text_lines(path: str | Path) -> list[str]:
    """Lines of a dataset text file (UTF-8, any line ending) without line ends; trailing blank lines dropped.

    Raises DatasetFormatError for undecodable bytes; OSError (e.g. FileNotFoundError) passes through.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DatasetFormatError(path, f"not a text file (undecodable byte at offset {e.start})") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def parse_numbers(tokens: list[str], path: str | Path, line: int) -> np.ndarray:
    """(N,) float64 from text tokens; DatasetFormatError naming file, line and the bad token, or nan/inf."""
    try:
        values = np.array(tokens, dtype=np.float64)  # fast path: numpy converts in C
    except ValueError:
        for i, token in enumerate(tokens):
            try:
                float(token)
            except ValueError:
                raise DatasetFormatError(path, f"{token.strip()!r} is not a number (value {i + 1})", line) from None
        raise DatasetFormatError(path, "values are not all numbers", line) from None
    if not np.all(np.isfinite(values)):
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise DatasetFormatError(path, f"non-finite value {tokens[bad].strip()!r} (value {bad + 1})", line)
    return values


# ----------------------------------------------------------------------------------------------------------
# Joint names
# ----------------------------------------------------------------------------------------------------------

SMPL_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hand", "right_hand",
)

KINECT_V1_JOINT_NAMES: tuple[str, ...] = (
    "HEAD", "NECK", "TORSO", "LEFT_SHOULDER", "LEFT_ELBOW", "RIGHT_SHOULDER", "RIGHT_ELBOW",
    "LEFT_HIP", "LEFT_KNEE", "RIGHT_HIP", "RIGHT_KNEE", "LEFT_HAND", "RIGHT_HAND", "LEFT_FOOT", "RIGHT_FOOT",
)

KINECT_V2_JOINT_NAMES: tuple[str, ...] = (
    "SpineBase", "SpineMid", "Neck", "Head", "ShoulderLeft", "ElbowLeft", "WristLeft", "HandLeft",
    "ShoulderRight", "ElbowRight", "WristRight", "HandRight", "HipLeft", "KneeLeft", "AnkleLeft", "FootLeft",
    "HipRight", "KneeRight", "AnkleRight", "FootRight", "SpineShoulder", "HandTipLeft", "ThumbLeft",
    "HandTipRight", "ThumbRight",
)

COCO_JOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)

LSP_JOINT_NAMES: tuple[str, ...] = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "right_wrist",
    "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist", "neck", "head_top",
)

# dataset joint name -> (SMPL joint name, exact?)  (see the module docstring's table)
_V2_TO_SMPL: dict[str, tuple[str, bool]] = {
    "SpineBase": ("pelvis", False), "SpineMid": ("spine2", False), "SpineShoulder": ("neck", False),
    "Head": ("head", False),
    **{f"Shoulder{s}": (f"{s.lower()}_shoulder", False) for s in ("Left", "Right")},
    **{f"Elbow{s}": (f"{s.lower()}_elbow", True) for s in ("Left", "Right")},
    **{f"Wrist{s}": (f"{s.lower()}_wrist", True) for s in ("Left", "Right")},
    **{f"Hand{s}": (f"{s.lower()}_hand", False) for s in ("Left", "Right")},
    **{f"Hip{s}": (f"{s.lower()}_hip", False) for s in ("Left", "Right")},
    **{f"Knee{s}": (f"{s.lower()}_knee", True) for s in ("Left", "Right")},
    **{f"Ankle{s}": (f"{s.lower()}_ankle", True) for s in ("Left", "Right")},
    **{f"Foot{s}": (f"{s.lower()}_foot", False) for s in ("Left", "Right")},
}
_V1_TO_SMPL: dict[str, tuple[str, bool]] = {
    "HEAD": ("head", False), "NECK": ("neck", False), "TORSO": ("spine2", False),
    **{f"{s}_SHOULDER": (f"{s.lower()}_shoulder", False) for s in ("LEFT", "RIGHT")},
    **{f"{s}_ELBOW": (f"{s.lower()}_elbow", True) for s in ("LEFT", "RIGHT")},
    **{f"{s}_HAND": (f"{s.lower()}_wrist", False) for s in ("LEFT", "RIGHT")},
    **{f"{s}_HIP": (f"{s.lower()}_hip", False) for s in ("LEFT", "RIGHT")},
    **{f"{s}_KNEE": (f"{s.lower()}_knee", True) for s in ("LEFT", "RIGHT")},
    **{f"{s}_FOOT": (f"{s.lower()}_ankle", False) for s in ("LEFT", "RIGHT")},
}
_LIMB_EXACT = {"elbow": True, "wrist": True, "knee": True, "ankle": True, "shoulder": False, "hip": False}
_COCO_TO_SMPL: dict[str, tuple[str, bool]] = {
    f"{s}_{part}": (f"{s}_{part}", exact) for s in ("left", "right") for part, exact in _LIMB_EXACT.items()
}
_LSP_TO_SMPL: dict[str, tuple[str, bool]] = {**_COCO_TO_SMPL, "neck": ("neck", False)}


# ----------------------------------------------------------------------------------------------------------
# Joint sets
# ----------------------------------------------------------------------------------------------------------

_SIDE_SWAP = re.compile(r"(left|right|Left|Right|LEFT|RIGHT)")
_SWAP = {"left": "right", "right": "left", "Left": "Right", "Right": "Left", "LEFT": "RIGHT", "RIGHT": "LEFT"}


def _mirror_permutation(names: tuple[str, ...]) -> np.ndarray:
    """perm with names[perm[j]] = names[j] with left and right swapped (identity for central joints)."""
    index = {n: i for i, n in enumerate(names)}
    perm = [index[_SIDE_SWAP.sub(lambda m: _SWAP[m.group(0)], n)] for n in names]
    return np.asarray(perm, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class JointSet:
    """One dataset's joint set.

    joint_names: (J,) names in file order; smpl_index: (J,) SMPL joint index or -1;
    smpl_exact: (J,) True where the correspondence is the same anatomical joint (see module table);
    flip: (J,) permutation swapping left and right joints (an involution).
    """

    name: str
    joint_names: tuple[str, ...]
    smpl_index: np.ndarray = field(repr=False)
    smpl_exact: np.ndarray = field(repr=False)
    flip: np.ndarray = field(repr=False)

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @classmethod
    def build(cls, name: str, joint_names: tuple[str, ...], to_smpl: dict[str, tuple[str, bool]]) -> JointSet:
        idx = np.array([SMPL_JOINT_NAMES.index(to_smpl[n][0]) if n in to_smpl else -1 for n in joint_names])
        exact = np.array([to_smpl[n][1] if n in to_smpl else False for n in joint_names])
        for arr in (idx, exact):
            arr.setflags(write=False)
        flip = _mirror_permutation(joint_names)
        flip.setflags(write=False)
        return cls(name, joint_names, idx, exact, flip)


JOINT_SETS: dict[str, JointSet] = {
    "smpl": JointSet.build("smpl", SMPL_JOINT_NAMES, {n: (n, True) for n in SMPL_JOINT_NAMES}),
    "kinect_v1": JointSet.build("kinect_v1", KINECT_V1_JOINT_NAMES, _V1_TO_SMPL),
    "kinect_v2": JointSet.build("kinect_v2", KINECT_V2_JOINT_NAMES, _V2_TO_SMPL),
    "coco": JointSet.build("coco", COCO_JOINT_NAMES, _COCO_TO_SMPL),
    "lsp": JointSet.build("lsp", LSP_JOINT_NAMES, _LSP_TO_SMPL),
}


def joint_set(name: str) -> JointSet:
    """The joint set called `name` (one of `JOINT_SETS`); a clear error names the valid ones."""
    try:
        return JOINT_SETS[name]
    except KeyError:
        raise ValueError(f"unknown joint set {name!r}; expected one of {sorted(JOINT_SETS)}") from None


def smpl_correspondence(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(src (K,), smpl (K,), exact (K,)): joints of set `name` that have an SMPL partner, in file order.

    Use as `dataset_joints[..., src, :]` against `smpl_joints[..., smpl, :]`.
    """
    js = joint_set(name)
    src = np.flatnonzero(js.smpl_index >= 0)
    return src, js.smpl_index[src].copy(), js.smpl_exact[src].copy()


def flip_permutation(name: str) -> np.ndarray:
    """(J,) index array: `joints[..., perm, :]` relabels left as right after mirroring an image/skeleton.

    Mirror the coordinates separately: image x -> W - x (pixel-edge coordinates), camera x -> -x.
    """
    return joint_set(name).flip.copy()


# ----------------------------------------------------------------------------------------------------------
# Canonical USCG joint set
# ----------------------------------------------------------------------------------------------------------

CANONICAL_JOINT_NAMES: tuple[str, ...] = (
    "head", "neck", "torso", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow",
    "right_wrist", "left_hip", "left_knee", "left_ankle", "right_hip", "right_knee", "right_ankle",
)
_CANONICAL_SOURCES: dict[str, tuple[str, ...]] = {
    "smpl": ("head", "neck", "spine2", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder",
             "right_elbow", "right_wrist", "left_hip", "left_knee", "left_ankle", "right_hip", "right_knee",
             "right_ankle"),
    "kinect_v1": ("HEAD", "NECK", "TORSO", "LEFT_SHOULDER", "LEFT_ELBOW", "LEFT_HAND", "RIGHT_SHOULDER",
                  "RIGHT_ELBOW", "RIGHT_HAND", "LEFT_HIP", "LEFT_KNEE", "LEFT_FOOT", "RIGHT_HIP", "RIGHT_KNEE",
                  "RIGHT_FOOT"),
    "kinect_v2": ("Head", "SpineShoulder", "SpineMid", "ShoulderLeft", "ElbowLeft", "WristLeft",
                  "ShoulderRight", "ElbowRight", "WristRight", "HipLeft", "KneeLeft", "AnkleLeft", "HipRight",
                  "KneeRight", "AnkleRight"),
}
CANONICAL_INDEX: dict[str, np.ndarray] = {
    k: np.array([JOINT_SETS[k].joint_names.index(n) for n in names]) for k, names in _CANONICAL_SOURCES.items()
}
for _idx in CANONICAL_INDEX.values():
    _idx.setflags(write=False)


def to_canonical(joints: np.ndarray, set_name: str) -> np.ndarray:
    """(..., J, C) joints of `set_name` ("smpl", "kinect_v1" or "kinect_v2") -> (..., 15, C) canonical joints.

    Units and frame are unchanged. The canonical set is mirror-consistent: its flip permutation is
    `flip_permutation` applied to `CANONICAL_JOINT_NAMES` (left/right names swap).
    """
    if set_name not in CANONICAL_INDEX:
        raise ValueError(f"no canonical USCG mapping for {set_name!r}; expected one of {sorted(CANONICAL_INDEX)}")
    joints = np.asarray(joints)
    expected = JOINT_SETS[set_name].num_joints
    if joints.ndim < 2 or joints.shape[-2] != expected:
        raise ValueError(f"to_canonical({set_name!r}) needs (..., {expected}, C) joints, got shape {joints.shape}")
    return joints[..., CANONICAL_INDEX[set_name], :]


# ----------------------------------------------------------------------------------------------------------
# Mirroring SMPL pose parameters
# ----------------------------------------------------------------------------------------------------------

def flip_smpl_pose(pose: np.ndarray) -> np.ndarray:
    """Mirror SMPL pose parameters across the body's sagittal plane (x -> -x in SMPL's frame).

    pose: (..., 72) axis-angle, joint-major in SMPL order (global orient first). Returns the pose whose
    forward kinematics equals the mirrored (x -> -x) joints of `pose` with left and right swapped, for a
    left/right-symmetric rest skeleton. Each joint's axis-angle (x, y, z) becomes (x, -y, -z) and the
    joints are permuted by the SMPL flip permutation. Applying it twice gives `pose` back.
    """
    pose = np.asarray(pose)
    if pose.shape[-1] != 72:
        raise ValueError(f"flip_smpl_pose needs (..., 72) axis-angle, got shape {pose.shape}")
    aa = pose.reshape(*pose.shape[:-1], 24, 3)[..., JOINT_SETS["smpl"].flip, :]
    return (aa * np.array([1.0, -1.0, -1.0])).reshape(pose.shape)


# ----------------------------------------------------------------------------------------------------------
# Frames
# ----------------------------------------------------------------------------------------------------------

FRAME_KINECT = "kinect_camera"
FRAME_OPENCV = "opencv_camera"
_FRAMES = (FRAME_KINECT, FRAME_OPENCV)

KINECT_TO_OPENCV = np.diag([-1.0, -1.0, 1.0])
KINECT_TO_OPENCV.setflags(write=False)


def kinect_to_opencv(points: np.ndarray) -> np.ndarray:
    """(..., 3) points in Kinect camera space -> FuseMesh/OpenCV camera frame (x -> -x, y -> -y). Units kept."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-1] != 3:
        raise ValueError(f"kinect_to_opencv needs (..., 3) points, got shape {points.shape}")
    return points * np.array([-1.0, -1.0, 1.0])


def opencv_to_kinect(points: np.ndarray) -> np.ndarray:
    """Inverse of `kinect_to_opencv` (the same 180 degree rotation about Z)."""
    return kinect_to_opencv(points)


# ----------------------------------------------------------------------------------------------------------
# The shared container
# ----------------------------------------------------------------------------------------------------------

@dataclass
class SkeletonSequence:
    """3D skeletons of up to P people over T frames.

    joints: (T, P, J, 3) float64 metres in `frame`; rows of absent people are zeros (see `valid`).
    valid: (T, P) bool, person p tracked in frame t.
    joint_names: (J,) names of the joint set (e.g. `KINECT_V2_JOINT_NAMES`).
    frame: `FRAME_KINECT` or `FRAME_OPENCV` (see the module docstring).
    source: where it came from (file path or a description).
    confidence: (T, P, J) float64 per-joint confidence as stored by the dataset, or None.
    frame_ids: (T,) int64 frame numbers as in the file (CAD-60 counts from 1), or None = 0..T-1.
    fps: frames per second when the dataset states it, else None.
    """

    joints: np.ndarray
    valid: np.ndarray
    joint_names: tuple[str, ...]
    frame: str
    source: str
    confidence: np.ndarray | None = None
    frame_ids: np.ndarray | None = None
    fps: float | None = None

    def __post_init__(self) -> None:
        self.joints = np.asarray(self.joints, dtype=np.float64)
        self.valid = np.asarray(self.valid, dtype=bool)
        self.joint_names = tuple(self.joint_names)
        if self.joints.ndim != 4 or self.joints.shape[-1] != 3:
            raise ValueError(f"SkeletonSequence.joints must be (T, P, J, 3), got {self.joints.shape}")
        t, p, j, _ = self.joints.shape
        if self.valid.shape != (t, p):
            raise ValueError(f"SkeletonSequence.valid must be {(t, p)}, got {self.valid.shape}")
        if len(self.joint_names) != j:
            raise ValueError(f"SkeletonSequence has {j} joints but {len(self.joint_names)} joint names")
        if self.frame not in _FRAMES:
            raise ValueError(f"SkeletonSequence.frame must be one of {_FRAMES}, got {self.frame!r}")
        if self.confidence is not None:
            self.confidence = np.asarray(self.confidence, dtype=np.float64)
            if self.confidence.shape != (t, p, j):
                raise ValueError(f"SkeletonSequence.confidence must be {(t, p, j)}, got {self.confidence.shape}")
        if self.frame_ids is not None:
            self.frame_ids = np.asarray(self.frame_ids, dtype=np.int64)
            if self.frame_ids.shape != (t,):
                raise ValueError(f"SkeletonSequence.frame_ids must be ({t},), got {self.frame_ids.shape}")

    @property
    def num_frames(self) -> int:
        return self.joints.shape[0]

    def to_frame(self, frame: str) -> SkeletonSequence:
        """A copy in `frame`; absent people stay all-zero."""
        if frame not in _FRAMES:
            raise ValueError(f"frame must be one of {_FRAMES}, got {frame!r}")
        if frame == self.frame:
            return replace(self, joints=self.joints.copy())
        return replace(self, joints=kinect_to_opencv(self.joints) + 0.0, frame=frame)  # + 0.0: no -0.0

    def to_opencv(self) -> SkeletonSequence:
        """A copy in FuseMesh's camera frame (x right, y down, z forward, metres)."""
        return self.to_frame(FRAME_OPENCV)
