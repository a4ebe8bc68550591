"""model/metrics.py: MPJPE, PA-MPJPE (batched similarity Procrustes), PVE, in millimetres."""
from __future__ import annotations

import pytest
import torch

from model.metrics import mpjpe, pa_mpjpe, procrustes_align, pve


def _joints(b: int = 4, n: int = 14, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.4 * torch.randn(b, n, 3, generator=g, dtype=torch.float64)


def _similarity(x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    b = x.shape[0]
    q, _ = torch.linalg.qr(torch.randn(b, 3, 3, generator=g, dtype=torch.float64))
    rot = q * torch.linalg.det(q).reshape(b, 1, 1)  # a proper rotation (det +1)
    scale = 0.5 + 2.0 * torch.rand(b, 1, 1, generator=g, dtype=torch.float64)
    t = 3.0 * torch.randn(b, 1, 3, generator=g, dtype=torch.float64)
    return scale * x @ rot.transpose(1, 2) + t


def test_pa_mpjpe_is_zero_for_identical_and_for_similar_inputs():
    gt = _joints()
    assert torch.allclose(pa_mpjpe(gt, gt), torch.zeros(4, dtype=torch.float64), atol=1e-6)
    assert pa_mpjpe(_similarity(gt), gt).max() < 1e-6
    torch.testing.assert_close(procrustes_align(_similarity(gt), gt), gt)


def test_pa_mpjpe_is_invariant_to_a_random_similarity_of_the_prediction():
    gt = _joints(seed=2)
    pred = gt + 0.03 * _joints(seed=3)
    base = pa_mpjpe(pred, gt)
    assert (base > 1.0).all()  # the noise is really there (mm)
    torch.testing.assert_close(pa_mpjpe(_similarity(pred, seed=4), gt), base)
    # ... and not to a mirror image (reflections are excluded)
    mirrored = gt * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    assert (pa_mpjpe(mirrored, gt) > 10.0).all()


def test_mpjpe_known_values_and_root_alignment():
    gt = _joints(b=2)
    shifted = gt + torch.tensor([0.0, 0.010, 0.0], dtype=torch.float64)  # 10 mm everywhere
    torch.testing.assert_close(mpjpe(shifted, gt), torch.full((2,), 10.0, dtype=torch.float64))
    assert mpjpe(shifted, gt, root=0).max() < 1e-9
    assert mpjpe(shifted, gt, root=(2, 3)).max() < 1e-9  # LSP pelvis = mid-hips
    one = gt.clone()
    one[:, 5] += torch.tensor([0.03, 0.04, 0.0], dtype=torch.float64)  # one joint off by 50 mm
    torch.testing.assert_close(mpjpe(one, gt), torch.full((2,), 50.0 / 14, dtype=torch.float64))
    mask = torch.ones(2, 14, dtype=torch.bool)
    mask[:, 5] = False
    assert mpjpe(one, gt, mask=mask).max() < 1e-9
    with pytest.raises(ValueError, match="pred and gt must both be"):
        mpjpe(gt[:, :13], gt)


def test_masked_pa_mpjpe_ignores_a_missing_joint():
    gt = _joints(seed=5)
    pred = _similarity(gt, seed=6)
    pred[:, 3] += 5.0  # garbage at a joint the dataset lacks
    mask = torch.ones(4, 14, dtype=torch.bool)
    mask[:, 3] = False
    assert (pa_mpjpe(pred, gt) > 50.0).all()
    assert pa_mpjpe(pred, gt, mask=mask).max() < 1e-6


def test_pve_known_value():
    v = _joints(b=3, n=100, seed=7)
    torch.testing.assert_close(pve(v + torch.tensor([0.0, 0.0, 0.02], dtype=torch.float64), v),
                               torch.full((3,), 20.0, dtype=torch.float64))
    root = v[:, 0]
    assert pve(v + 1.0, v, pred_root=root + 1.0, gt_root=root).max() < 1e-9
    with pytest.raises(ValueError, match="both pred_root and gt_root"):
        pve(v, v, pred_root=root)
