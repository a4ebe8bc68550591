"""AMASS / MoSh++ motion files (`<subject>/<name>_poses.npz`, SMPL+H release): a typed reader.

Keys read (np.load without pickle):
- `poses` (T, 156) float64 axis-angle, SMPL-H joint-major: global orient (3) + 21 body joints (63) = the
  first 66 values, then 15 left-hand joints (45) and 15 right-hand joints (45), MANO finger order (index1..3,
  middle1..3, pinky1..3, ring1..3, thumb1..3). Also accepted: (T, 72) SMPL and (T, 165) SMPL-X
  (66 body + jaw, eyes (9) + hands (90)); only the first 66 values are shared by all three.
- `betas` (16,) SMPL-H shape coefficients (SMPL uses 10; the first 10 of an SMPL-H fit are only an
  approximation of the SMPL shape), `trans` (T, 3) metres, `gender` ("male"/"female"/"neutral"),
  `mocap_framerate` (or `mocap_frame_rate`) frames per second. `dmpls` (soft tissue) is ignored.
Subject folders also contain `shape.npz` (betas and gender only); reading it raises a clear error.

Frame: AMASS's mocap world frame, Z up, metres. `z_up_to_y_up` re-expresses a sequence with Y up (the SMPL
body frame convention used by FuseMesh's synthetic data).

SMPL's 72 pose values = the 66 SMPL-H body values + SMPL's left_hand and right_hand joints (22, 23), which
SMPL-H replaces by fingers: `AmassSequence.smpl_pose(hands="zeros")` (default, the usual choice) or
`hands="index1"` (the first index-finger joint of each hand: a rough stand-in for the whole hand's bend).
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.datasets.joint_sets import DatasetFormatError

__all__ = ["AmassSequence", "read_amass_npz", "z_up_to_y_up"]

BODY_POSE_DIMS = 66  # global orient + 21 body joints
_LAYOUTS = {72: "smpl", 156: "smplh", 165: "smplx"}
# offset of the left / right hand's first (index1) joint in each layout
_INDEX1 = {"smplh": (66, 111), "smplx": (75, 120)}


@dataclass
class AmassSequence:
    """One AMASS sequence.

    poses: (T, D) axis-angle, D = 156 (SMPL-H), 72 (SMPL) or 165 (SMPL-X); layout names which.
    betas: (B,) shape coefficients (16 for SMPL-H); trans: (T, 3) metres, Z-up world; gender: str; fps: float.
    """

    poses: np.ndarray = field(repr=False)
    betas: np.ndarray = field(repr=False)
    trans: np.ndarray = field(repr=False)
    gender: str
    fps: float
    layout: str
    source: str

    @property
    def num_frames(self) -> int:
        return self.poses.shape[0]

    @property
    def global_orient(self) -> np.ndarray:
        """(T, 3) root axis-angle in the Z-up world frame."""
        return self.poses[:, :3].copy()

    @property
    def body_pose(self) -> np.ndarray:
        """(T, 63) axis-angle of the 21 body joints (SMPL joints 1-21)."""
        return self.poses[:, 3:BODY_POSE_DIMS].copy()

    def smpl_pose(self, hands: str = "zeros") -> np.ndarray:
        """(T, 72) SMPL pose: the 66 body values + SMPL's left_hand, right_hand rotations.

        hands: "zeros" (hand joints at rest) or "index1" (each hand's first index-finger rotation; SMPL-H and
        SMPL-X files only). An SMPL (72) file is returned unchanged.
        """
        if hands not in ("zeros", "index1"):
            raise ValueError(f"hands must be 'zeros' or 'index1', got {hands!r}")
        if self.layout == "smpl":
            return self.poses.copy()
        out = np.zeros((self.num_frames, 72))
        out[:, :BODY_POSE_DIMS] = self.poses[:, :BODY_POSE_DIMS]
        if hands == "index1":
            left, right = _INDEX1[self.layout]
            out[:, 66:69] = self.poses[:, left:left + 3]
            out[:, 69:72] = self.poses[:, right:right + 3]
        return out

    def smpl_betas(self, n: int = 10) -> np.ndarray:
        """(n,) the first n shape coefficients (zero-padded if the file has fewer)."""
        out = np.zeros(n)
        k = min(n, self.betas.size)
        out[:k] = self.betas[:k]
        return out


def _scalar_str(value: np.ndarray) -> str:
    v = value.item() if value.shape == () else value.reshape(-1)[0]
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def read_amass_npz(path: str | Path) -> AmassSequence:
    """Read an AMASS `*_poses.npz` (see module docstring).

    Raises DatasetFormatError naming the file for a non-npz file, a `shape.npz`, pickled (object) arrays,
    missing keys, a pose width other than 72/156/165, frame counts that disagree, or nan/inf.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"AMASS file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise DatasetFormatError(path, "not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except ValueError as e:
        raise DatasetFormatError(path, f"cannot read without pickle ({e})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:  # a damaged archive
        raise DatasetFormatError(path, f"not a readable .npz file ({type(e).__name__}: {e})") from None
    if "poses" not in data and "betas" in data:
        raise DatasetFormatError(path, "has betas but no 'poses': this is a subject shape.npz, not a motion file")
    missing = [k for k in ("poses", "betas", "trans", "gender") if k not in data]
    fps_key = next((k for k in ("mocap_framerate", "mocap_frame_rate") if k in data), None)
    if fps_key is None:
        missing.append("mocap_framerate")
    if missing:
        raise DatasetFormatError(path, f"missing keys {missing} (found {sorted(data)})")
    poses = np.asarray(data["poses"], dtype=np.float64)
    trans = np.asarray(data["trans"], dtype=np.float64)
    betas = np.asarray(data["betas"], dtype=np.float64).reshape(-1)
    if poses.ndim != 2 or poses.shape[1] not in _LAYOUTS:
        raise DatasetFormatError(
            path, f"'poses' has shape {poses.shape}; expected (T, 156) SMPL-H, (T, 72) or (T, 165)")
    if trans.shape != (poses.shape[0], 3):
        raise DatasetFormatError(
            path, f"'trans' has shape {trans.shape}; expected ({poses.shape[0]}, 3) to match 'poses'")
    for name, arr in (("poses", poses), ("trans", trans), ("betas", betas)):
        if not np.all(np.isfinite(arr)):
            raise DatasetFormatError(path, f"'{name}' contains nan/inf")
    fps = float(np.asarray(data[fps_key]).reshape(-1)[0])
    if not fps > 0:
        raise DatasetFormatError(path, f"'{fps_key}' must be positive, got {fps}")
    return AmassSequence(
        poses=poses, betas=betas, trans=trans, gender=_scalar_str(np.asarray(data["gender"])), fps=fps,
        layout=_LAYOUTS[poses.shape[1]], source=str(path),
    )


# Rotation taking AMASS's Z-up world to a Y-up world: (x, y, z) -> (x, z, -y), i.e. -90 degrees about X.
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
Z_UP_TO_Y_UP.setflags(write=False)


def z_up_to_y_up(global_orient: np.ndarray, trans: np.ndarray,
                 pelvis_rest: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-express SMPL root parameters so that the posed body is rotated by `Z_UP_TO_Y_UP`.

    global_orient: (T, 3) axis-angle; trans: (T, 3) metres; pelvis_rest: (3,) the body model's pelvis joint
    at zero pose for this shape (SMPL rotates about it, so the translation changes with it).
    Returns (global_orient', trans') with R' = Q R and t' = Q (J0 + t) - J0.
    """
    from scipy.spatial.transform import Rotation

    global_orient = np.asarray(global_orient, dtype=np.float64)
    trans = np.asarray(trans, dtype=np.float64)
    j0 = np.asarray(pelvis_rest, dtype=np.float64).reshape(3)
    if global_orient.ndim != 2 or global_orient.shape[1] != 3 or trans.shape != global_orient.shape:
        raise ValueError(f"z_up_to_y_up needs (T, 3) global_orient and trans, got {global_orient.shape}, {trans.shape}")
    q = Rotation.from_matrix(Z_UP_TO_Y_UP)
    orient = (q * Rotation.from_rotvec(global_orient)).as_rotvec()
    return orient, (j0 + trans) @ Z_UP_TO_Y_UP.T - j0
