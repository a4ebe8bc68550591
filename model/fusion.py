"""Dynamic data fusion (paper 3.2): feature concatenation + two FC layers, and the stream-dropping policy.

The fusion layer is the same for the paper's method and its baseline; what differs is training:

- baseline ("concat"): every sample sees [phi_RGB, phi_D];
- dynamic policy: per sample, with probability p_miss the RGB stream's *input* is replaced by zeros,
  with probability p_miss the depth stream's, never both. The fusion therefore sees
  [phi_RGB, phi_D] (1 - 2 p_miss), [phi_void, phi_D] (p_miss) and [phi_RGB, phi_void] (p_miss), where
  phi_void = encoder(zeros) (not a zero feature).

At inference a missing stream is the same zero input. The mask is applied by the network after input
normalisation (see model/preprocess.py), so a "void" stream is exactly a zero tensor.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def sample_stream_mask(batch: int, p_miss: float, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> torch.Tensor:
    """Per-sample stream switches for training: (batch, 2) bool, column 0 = RGB on, column 1 = depth on.

    One uniform draw u per sample: u < p_miss drops RGB, p_miss <= u < 2 p_miss drops depth, otherwise
    both stay on. So P(RGB off) = P(depth off) = p_miss, P(both on) = 1 - 2 p_miss, never both off.
    p_miss = 0 gives the paper's concatenation baseline (all on). Requires 0 <= p_miss < 0.5.
    """
    if not 0.0 <= p_miss < 0.5:
        raise ValueError(f"p_miss must be in [0, 0.5) so a stream is never dropped twice, got {p_miss}")
    if batch < 0:
        raise ValueError(f"batch must be >= 0, got {batch}")
    gen_device = generator.device if generator is not None else device
    u = torch.rand(batch, generator=generator, device=gen_device)
    rgb_on = u >= p_miss
    depth_on = (u < p_miss) | (u >= 2.0 * p_miss)
    mask = torch.stack([rgb_on, depth_on], dim=1)
    return mask.to(device) if device is not None else mask


class FeatureFusion(nn.Module):
    """[phi_RGB, phi_D] -> phi_fuse: concatenation, then Linear+ReLU per entry of `hidden`.

    (B, rgb_dim), (B, depth_dim) -> (B, hidden[-1]). The paper uses hidden = (4096, 2048) on two
    2048-d ResNet-50 features. `p_miss` is the training policy's drop probability (0 = baseline); it
    does not change the forward pass, only `sample_mask`.
    """

    def __init__(self, rgb_dim: int, depth_dim: int, hidden: Sequence[int] = (4096, 2048),
                 p_miss: float = 0.3) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("fusion needs at least one hidden layer")
        if not 0.0 <= p_miss < 0.5:
            raise ValueError(f"p_miss must be in [0, 0.5), got {p_miss}")
        self.rgb_dim, self.depth_dim, self.p_miss = rgb_dim, depth_dim, float(p_miss)
        layers: list[nn.Module] = []
        d = rgb_dim + depth_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
            d = h
        self.mlp = nn.Sequential(*layers)
        self.out_dim = d

    def sample_mask(self, batch: int, generator: torch.Generator | None = None,
                    device: torch.device | str | None = None) -> torch.Tensor:
        """This module's training policy: `sample_stream_mask(batch, self.p_miss, ...)`, (B, 2) bool."""
        return sample_stream_mask(batch, self.p_miss, generator=generator, device=device)

    def forward(self, phi_rgb: torch.Tensor, phi_depth: torch.Tensor) -> torch.Tensor:
        """(B, rgb_dim), (B, depth_dim) -> (B, out_dim) fused feature."""
        return self.mlp(torch.cat([phi_rgb, phi_depth], dim=1))
