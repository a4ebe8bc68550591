"""Leeds Sports Pose (LSP) and LSP-extended (LSPET) `joints.mat`: a reader for both layouts.

Both files hold one MATLAB array `joints` with x, y (pixels) and a visibility flag per joint and image, in
`joint_sets.LSP_JOINT_NAMES` order (right_ankle, right_knee, right_hip, left_hip, left_knee, left_ankle,
right_wrist, right_elbow, right_shoulder, left_shoulder, left_elbow, left_wrist, neck, head_top; left/right
= the subject's own side). The two releases differ:

| release            | shape          | flag meaning                              | images               |
|--------------------|----------------|-------------------------------------------|----------------------|
| LSP (original)     | 3 x 14 x 2000  | 0 = visible, 1 = occluded (inverted!)     | images/im0001.jpg..  |
| LSP-extended       | 14 x 3 x 10000 | 1 = visible, 0 = not visible              | images/im00001.jpg.. |

`read_lsp_joints` detects the layout from the shape and returns visibility with one meaning (True = visible).
Coordinates are returned as stored: MATLAB-style pixel coordinates, so the centre of the top-left pixel is
most likely (1, 1) (the releases do not say); subtract 1 for 0-based pixel centres. In the original LSP,
occluded joints still carry an annotated position; in LSPET, not-visible joints may hold guessed positions.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.datasets.joint_sets import LSP_JOINT_NAMES, DatasetFormatError

__all__ = ["LspAnnotations", "read_lsp_joints"]

NUM_JOINTS = 14
LAYOUT_LSP = "lsp"
LAYOUT_LSPET = "lspet"


@dataclass
class LspAnnotations:
    """joints (N, 14, 2) float64 pixels (x right, y down, as stored); visible (N, 14) bool;
    layout "lsp" or "lspet"; image_names (N,) e.g. "im0001.jpg"; image_paths (N,) or None without image_dir."""

    joints: np.ndarray
    visible: np.ndarray
    layout: str
    image_names: tuple[str, ...]
    image_paths: tuple[Path, ...] | None
    source: str
    joint_names: tuple[str, ...] = LSP_JOINT_NAMES


def read_lsp_joints(path: str | Path, image_dir: str | Path | None = None) -> LspAnnotations:
    """Read an LSP (3x14xN) or LSPET (14x3xN) `joints.mat`; see the module docstring for the flag conventions.

    image_dir: the release's `images/` folder; fills `image_paths` (existence not checked).
    Raises DatasetFormatError naming the file for an unreadable .mat, no `joints` array, an unknown shape,
    non-finite coordinates or flags other than 0/1.
    """
    from scipy.io import loadmat  # scipy.io is slow to import; only this reader needs it

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LSP joints file not found: {path}")
    try:
        mat = loadmat(str(path))
    except Exception as e:  # scipy raises ValueError/TypeError/MatReadError for non-.mat input
        raise DatasetFormatError(path, f"not a readable MATLAB .mat file ({type(e).__name__}: {e})") from None
    if "joints" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetFormatError(path, f"no 'joints' array in the .mat file (found {keys})")
    raw = np.asarray(mat["joints"])
    if raw.dtype.kind not in "fiu":
        raise DatasetFormatError(path, f"'joints' must be numeric, got dtype {raw.dtype}")
    raw = raw.astype(np.float64)
    if raw.ndim == 3 and raw.shape[:2] == (3, NUM_JOINTS):
        layout = LAYOUT_LSP
        per_image = raw.transpose(2, 1, 0)  # (N, 14, 3)
    elif raw.ndim == 3 and raw.shape[:2] == (NUM_JOINTS, 3):
        layout = LAYOUT_LSPET
        per_image = raw.transpose(2, 0, 1)
    else:
        raise DatasetFormatError(path, f"'joints' has shape {raw.shape}; expected 3x14xN (LSP) or 14x3xN (LSPET)")
    if not np.all(np.isfinite(per_image)):
        raise DatasetFormatError(path, "'joints' contains nan/inf")
    flags = per_image[:, :, 2]
    if not np.all(np.isin(flags, (0.0, 1.0))):
        bad = np.unique(flags[~np.isin(flags, (0.0, 1.0))])[:5]
        raise DatasetFormatError(path, f"visibility flags must be 0 or 1, found {bad.tolist()}")
    visible = flags == 0.0 if layout == LAYOUT_LSP else flags == 1.0
    n = per_image.shape[0]
    width = 4 if layout == LAYOUT_LSP else 5
    names = tuple(f"im{i + 1:0{width}d}.jpg" for i in range(n))
    paths = tuple(Path(image_dir) / name for name in names) if image_dir is not None else None
    return LspAnnotations(
        joints=per_image[:, :, :2].copy(), visible=visible, layout=layout, image_names=names,
        image_paths=paths, source=str(path),
    )
