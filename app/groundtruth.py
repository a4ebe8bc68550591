"""Score a replay against its ground-truth sidecar: per-frame and mean PA-MPJPE (mm).

Recordings made by `python -m training.synth record` come with `clip.gt.npz` next to `clip.mkv`, keyed by
device timestamp (µs): `timestamps_usec (N,)`, `joints3d (N, 24, 3)` metres in the depth camera frame
(SMPL joint order), and more (see training/synth/record.py). `GroundTruth` reads the keys it needs;
`ReplayScore` matches each `FrameResult` to the sidecar row with the same device timestamp and scores
the 24 SMPL joints after a similarity Procrustes alignment (model.metrics.pa_mpjpe, the function
training/evaluate.py uses; torch is imported only when scoring is switched on, not on the app's hot path).

Frames without a body, or whose timestamp is not in the sidecar, are counted but not scored.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from app.results import FrameResult

__all__ = ["GroundTruthError", "GroundTruth", "ReplayScore", "sidecar_for"]

_TIMESTAMP_TOLERANCE_USEC = 500  # device timestamps round-trip exactly; allow sub-millisecond slack


class GroundTruthError(ValueError):
    """A sidecar that cannot be used (missing keys, wrong shapes, not an npz); the message names the file."""


def sidecar_for(source: str | Path) -> Optional[Path]:
    """`clip.gt.npz` next to `clip.mkv` if it exists, else None."""
    path = Path(source)
    candidate = path.with_suffix(".gt.npz")
    return candidate if path.suffix.lower() == ".mkv" and candidate.is_file() else None


@dataclass(frozen=True)
class GroundTruth:
    """timestamps_usec (N,) int64, strictly increasing; joints3d (N, 24, 3) float64 metres, depth camera frame."""

    path: Path
    timestamps_usec: np.ndarray
    joints3d: np.ndarray

    @classmethod
    def from_sidecar(cls, path: str | Path) -> "GroundTruth":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in ("timestamps_usec", "joints3d") if k not in data.files]
                if missing:
                    raise GroundTruthError(f"{path}: ground-truth sidecar lacks {', '.join(missing)}")
                stamps = np.asarray(data["timestamps_usec"], dtype=np.int64)
                joints = np.asarray(data["joints3d"], dtype=np.float64)
        except FileNotFoundError:
            raise GroundTruthError(f"{path}: ground-truth sidecar not found") from None
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            if isinstance(e, GroundTruthError):
                raise
            raise GroundTruthError(f"{path}: not a readable .npz sidecar ({e})") from None
        n = stamps.shape[0]
        if stamps.ndim != 1 or joints.shape != (n, 24, 3):
            raise GroundTruthError(f"{path}: expected timestamps_usec (N,) and joints3d (N, 24, 3), "
                                   f"got {stamps.shape} and {joints.shape}")
        if n > 1 and np.any(np.diff(stamps) <= 0):
            raise GroundTruthError(f"{path}: timestamps_usec must be strictly increasing")
        return cls(path=path, timestamps_usec=stamps, joints3d=joints)

    def __len__(self) -> int:
        return int(self.timestamps_usec.shape[0])

    def index_of(self, timestamp_usec: int) -> Optional[int]:
        """Row whose timestamp is within 0.5 ms of `timestamp_usec`, or None."""
        t = self.timestamps_usec
        i = int(np.searchsorted(t, timestamp_usec))
        best = None
        for j in (i - 1, i):
            if 0 <= j < len(t) and abs(int(t[j]) - int(timestamp_usec)) <= _TIMESTAMP_TOLERANCE_USEC:
                if best is None or abs(int(t[j]) - timestamp_usec) < abs(int(t[best]) - timestamp_usec):
                    best = j
        return best


@dataclass
class ReplayScore:
    """Accumulates PA-MPJPE (mm, 24 SMPL joints) of a replay's frames against `truth`.

    `add(result)` returns the frame's error in mm, or None when the frame had no body or no ground truth.
    `per_mode` keeps the errors by input mode ("rgbd", "depth", "rgb").
    """

    truth: GroundTruth
    errors_mm: list[float] = field(default_factory=list)
    per_mode: dict[str, list[float]] = field(default_factory=dict)
    frames: int = 0
    no_body: int = 0
    no_truth: int = 0

    def add(self, result: FrameResult) -> Optional[float]:
        self.frames += 1
        row = self.truth.index_of(int(result.timestamp_usec))
        if row is None:
            self.no_truth += 1
            return None
        if result.body is None:
            self.no_body += 1
            return None
        pred = np.asarray(result.body.joints, dtype=np.float64)
        if pred.shape != (24, 3) or not np.all(np.isfinite(pred)):
            self.no_body += 1
            return None
        err = pa_mpjpe_mm(pred, self.truth.joints3d[row])
        self.errors_mm.append(err)
        self.per_mode.setdefault(str(getattr(result.mode, "value", result.mode)), []).append(err)
        return err

    @property
    def mean_mm(self) -> float:
        return float(np.mean(self.errors_mm)) if self.errors_mm else float("nan")

    def summary(self) -> str:
        """One line: mean (median) PA-MPJPE over scored frames, per mode, and what was not scored."""
        if not self.errors_mm:
            return (f"PA-MPJPE vs {self.truth.path.name}: no frame scored ({self.no_body} without a body, "
                    f"{self.no_truth} without ground truth)")
        modes = ", ".join(f"{m} {np.mean(v):.1f} mm ({len(v)})" for m, v in sorted(self.per_mode.items()))
        return (f"PA-MPJPE vs {self.truth.path.name} (24 SMPL joints): mean {self.mean_mm:.1f} mm, median "
                f"{np.median(self.errors_mm):.1f} mm over {len(self.errors_mm)}/{self.frames} frames; by mode: "
                f"{modes}; not scored: {self.no_body} without a body, {self.no_truth} without ground truth")


def pa_mpjpe_mm(pred: np.ndarray, gt: np.ndarray) -> float:
    """PA-MPJPE (mm) of one joint set pred (J, 3) against gt (J, 3), metres in, model.metrics underneath."""
    import torch

    from model.metrics import pa_mpjpe

    err = pa_mpjpe(torch.as_tensor(pred, dtype=torch.float64)[None], torch.as_tensor(gt, dtype=torch.float64)[None])
    return float(err[0])
