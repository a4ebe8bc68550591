"""app/groundtruth.py: sidecar reading, timestamp matching and PA-MPJPE scoring of replay results."""

from __future__ import annotations

import numpy as np
import pytest

from app.groundtruth import GroundTruth, GroundTruthError, ReplayScore, pa_mpjpe_mm, sidecar_for
from app.results import BodyEstimate, FrameResult, InputMode


def _sidecar(tmp_path, n=5, seed=0):
    rng = np.random.default_rng(seed)
    stamps = 1_000_000 + 66_667 * np.arange(n, dtype=np.int64)
    joints = rng.normal(0, 0.3, (n, 24, 3)) + [0, 0, 2.5]
    path = tmp_path / "clip.gt.npz"
    np.savez(path, timestamps_usec=stamps, joints3d=joints.astype(np.float32), betas=np.zeros((n, 10)))
    return path, stamps, joints


def _result(stamp, joints, mode=InputMode.RGBD):
    body = None
    if joints is not None:
        body = BodyEstimate(theta=np.zeros(72), beta=np.zeros(10), transl=np.zeros(3), vertices=np.zeros((10, 3)),
                            joints=joints, cam=np.ones(3), bbox=np.zeros(4))
    return FrameResult(frame_id=0, timestamp_usec=int(stamp), mode=mode, requested_mode="auto", body=body)


def _rot(angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def test_similarity_transformed_truth_scores_zero_and_offsets_score_their_size(tmp_path):
    path, stamps, joints = _sidecar(tmp_path)
    score = ReplayScore(GroundTruth.from_sidecar(path))
    moved = 1.3 * joints[0] @ _rot(0.7).T + [0.2, -0.1, 0.5]
    assert score.add(_result(stamps[0], moved)) == pytest.approx(0.0, abs=1e-3)
    # one joint 10 cm off: alignment spreads it over all joints; least squares bounds the RMS by the unaligned
    # RMS, sqrt(0.1^2 / 24) m, so the mean is positive and below that
    bent = joints[1].copy()
    bent[5] += [0.1, 0, 0]
    err = score.add(_result(stamps[1], bent, InputMode.DEPTH))
    assert 2.0 < err < 1000 * np.sqrt(0.01 / 24)
    assert score.mean_mm == pytest.approx(err / 2, abs=1e-3)
    assert set(score.per_mode) == {"rgbd", "depth"}
    assert "2/2 frames" in score.summary()


def test_frames_without_body_or_truth_are_counted_not_scored(tmp_path):
    path, stamps, joints = _sidecar(tmp_path)
    score = ReplayScore(GroundTruth.from_sidecar(path))
    assert score.add(_result(stamps[2], None, InputMode.NONE)) is None
    assert score.add(_result(stamps[-1] + 33_000, joints[0])) is None      # not in the sidecar
    assert score.add(_result(stamps[3] + 300, joints[3])) == pytest.approx(0.0, abs=1e-3)  # within 0.5 ms
    nan = joints[4].copy()
    nan[0, 0] = np.nan
    assert score.add(_result(stamps[4], nan)) is None
    assert (score.frames, score.no_body, score.no_truth, len(score.errors_mm)) == (4, 2, 1, 1)
    empty = ReplayScore(GroundTruth.from_sidecar(path))
    assert "no frame scored" in empty.summary() and np.isnan(empty.mean_mm)


def test_pa_mpjpe_matches_a_direct_computation():
    rng = np.random.default_rng(1)
    gt = rng.normal(size=(24, 3))
    pred = gt + rng.normal(0, 0.02, (24, 3))
    # reference: orthogonal Procrustes with scale, in plain numpy
    p0, g0 = pred - pred.mean(0), gt - gt.mean(0)
    u, s, vt = np.linalg.svd(g0.T @ p0)
    d = np.sign(np.linalg.det(u @ vt))
    D = np.diag([1, 1, d])
    R = u @ D @ vt
    scale = np.trace(np.diag(s) @ D) / (p0 ** 2).sum()
    aligned = scale * p0 @ R.T + gt.mean(0)
    ref = 1000 * np.linalg.norm(aligned - gt, axis=1).mean()
    assert pa_mpjpe_mm(pred, gt) == pytest.approx(ref, rel=1e-6)


def test_bad_sidecars_are_one_line_errors(tmp_path):
    with pytest.raises(GroundTruthError, match="not found"):
        GroundTruth.from_sidecar(tmp_path / "none.gt.npz")
    (tmp_path / "junk.gt.npz").write_bytes(b"not a zip")
    with pytest.raises(GroundTruthError, match="junk.gt.npz"):
        GroundTruth.from_sidecar(tmp_path / "junk.gt.npz")
    np.savez(tmp_path / "nokey.gt.npz", timestamps_usec=np.arange(3))
    with pytest.raises(GroundTruthError, match="lacks joints3d"):
        GroundTruth.from_sidecar(tmp_path / "nokey.gt.npz")
    np.savez(tmp_path / "shape.gt.npz", timestamps_usec=np.arange(3), joints3d=np.zeros((3, 14, 3)))
    with pytest.raises(GroundTruthError, match=r"\(N, 24, 3\)"):
        GroundTruth.from_sidecar(tmp_path / "shape.gt.npz")
    np.savez(tmp_path / "order.gt.npz", timestamps_usec=np.array([3, 2, 1]), joints3d=np.zeros((3, 24, 3)))
    with pytest.raises(GroundTruthError, match="increasing"):
        GroundTruth.from_sidecar(tmp_path / "order.gt.npz")


def test_sidecar_is_found_next_to_an_mkv_only(tmp_path):
    (tmp_path / "clip.mkv").write_bytes(b"")
    assert sidecar_for(tmp_path / "clip.mkv") is None
    _sidecar(tmp_path)
    assert sidecar_for(tmp_path / "clip.mkv") == tmp_path / "clip.gt.npz"
    assert sidecar_for(tmp_path) is None
