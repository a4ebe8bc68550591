"""model/fusion.py: the stream-dropping policy and the fusion MLP."""
from __future__ import annotations

import pytest
import torch

from model.fusion import FeatureFusion, sample_stream_mask


def test_policy_gives_30_30_40_and_never_drops_both():
    g = torch.Generator().manual_seed(0)
    mask = sample_stream_mask(10_000, 0.3, generator=g)
    assert mask.shape == (10_000, 2) and mask.dtype == torch.bool
    rgb_off = (~mask[:, 0]).float().mean().item()
    depth_off = (~mask[:, 1]).float().mean().item()
    both_on = mask.all(dim=1).float().mean().item()
    # binomial std at n = 10k is <= 0.005; 0.015 is three of them
    assert rgb_off == pytest.approx(0.3, abs=0.015)
    assert depth_off == pytest.approx(0.3, abs=0.015)
    assert both_on == pytest.approx(0.4, abs=0.015)
    assert mask.any(dim=1).all()  # never both dropped


def test_policy_is_reproducible_and_zero_is_the_baseline():
    a = sample_stream_mask(500, 0.3, generator=torch.Generator().manual_seed(7))
    b = sample_stream_mask(500, 0.3, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert sample_stream_mask(1000, 0.0).all()
    # near the limit still never both
    assert sample_stream_mask(5000, 0.49, generator=torch.Generator().manual_seed(1)).any(dim=1).all()


@pytest.mark.parametrize("p", [0.5, 0.7, -0.1])
def test_policy_rejects_p_miss_that_could_drop_both(p):
    with pytest.raises(ValueError, match="p_miss must be in \\[0, 0.5\\)"):
        sample_stream_mask(4, p)
    with pytest.raises(ValueError, match="p_miss"):
        FeatureFusion(8, 8, (16,), p_miss=p)


def test_fusion_concatenates_then_two_relu_layers():
    fusion = FeatureFusion(6, 4, hidden=(12, 5), p_miss=0.3)
    linears = [m for m in fusion.mlp if isinstance(m, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(10, 12), (12, 5)]
    assert sum(isinstance(m, torch.nn.ReLU) for m in fusion.mlp) == 2
    a, b = torch.randn(3, 6), torch.randn(3, 4)
    out = fusion(a, b)
    assert out.shape == (3, 5) and fusion.out_dim == 5
    assert (out >= 0).all()  # ReLU output
    # order of concatenation: RGB first
    expected = torch.relu(linears[1](torch.relu(linears[0](torch.cat([a, b], 1)))))
    torch.testing.assert_close(out, expected)
    assert fusion.sample_mask(2000, torch.Generator().manual_seed(3)).any(dim=1).all()
