"""model/preprocess.py: the input contract, numpy and torch giving the same numbers."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model.preprocess import DEPTH_CLIP_M, RGB_MEAN, RGB_STD, normalize_depth, normalize_rgb, reference_depth

REPO = Path(__file__).resolve().parent.parent


def test_depth_known_values():
    depth = np.array([[2.0, 2.5, 0.0], [np.nan, 9.0, 1.9]], dtype=np.float32)
    out = normalize_depth(depth, 2.5)
    np.testing.assert_allclose(out, [[-0.5, 0.0, 0.0], [0.0, DEPTH_CLIP_M, -0.6]], atol=1e-6)
    assert out.dtype == np.float32 and not np.isnan(out).any()


def test_depth_numpy_and_torch_agree_per_sample_reference():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 6.0, size=(4, 1, 16, 16)).astype(np.float32)
    depth[rng.random(depth.shape) < 0.2] = 0.0
    depth[0, 0, 0, :3] = np.nan
    ref = np.array([1.0, 2.0, 3.0, 4.5], dtype=np.float32)
    out_np = normalize_depth(depth, ref)
    out_t = normalize_depth(torch.from_numpy(depth), torch.from_numpy(ref))
    assert isinstance(out_t, torch.Tensor) and out_t.shape == (4, 1, 16, 16)
    np.testing.assert_array_equal(out_np, out_t.numpy())
    # each sample is referenced to its own depth
    valid = depth[2] > 0
    np.testing.assert_allclose(out_np[2][valid], np.clip(depth[2][valid] - 3.0, -DEPTH_CLIP_M, DEPTH_CLIP_M), atol=1e-6)
    assert (out_np[depth == 0] == 0).all()


def test_rgb_known_values_and_torch_twin():
    rgb = np.zeros((1, 3, 2, 2), dtype=np.uint8)
    rgb[0, :, 0, 0] = 255
    out = normalize_rgb(rgb)
    np.testing.assert_allclose(out[0, :, 0, 0], (1.0 - np.array(RGB_MEAN)) / np.array(RGB_STD), rtol=1e-6)
    np.testing.assert_allclose(out[0, :, 1, 1], -np.array(RGB_MEAN) / np.array(RGB_STD), rtol=1e-6)
    rnd = np.random.default_rng(1).integers(0, 256, size=(2, 3, 8, 8), dtype=np.uint8)
    np.testing.assert_allclose(normalize_rgb(rnd), normalize_rgb(torch.from_numpy(rnd)).numpy(), rtol=0, atol=1e-6)
    # float 0..255 input means the same as uint8
    np.testing.assert_allclose(normalize_rgb(rnd.astype(np.float32)), normalize_rgb(rnd), atol=1e-6)
    with pytest.raises(ValueError, match="channels-first RGB"):
        normalize_rgb(np.zeros((8, 8, 3), dtype=np.uint8))


def _scene(bent: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """64x64 crop: wall at 4.0 m, person 2.0..2.3 m; bent = the crop centre shows the wall."""
    depth = np.full((64, 64), 4.0)
    mask = np.zeros((64, 64), dtype=bool)
    if bent:
        mask[4:24, 8:56] = True    # torso bent forward across the top
        mask[24:64, 10:18] = True  # legs at the left
    else:
        mask[8:64, 24:40] = True
    yy = np.arange(64)[:, None] * np.ones((1, 64))
    depth[mask] = 2.0 + 0.3 * yy[mask] / 63.0
    depth[::7, ::5] = 0.0  # dropouts
    return depth, mask


@pytest.mark.parametrize("bent", [False, True])
def test_reference_depth_is_the_persons_not_the_crop_centre(bent):
    depth, mask = _scene(bent)
    person = depth[mask & (depth > 0)]
    assert reference_depth(depth, mask) == pytest.approx(np.median(person))
    ref = reference_depth(depth)  # no mask: the near surface
    assert 2.0 <= ref <= 2.3
    if bent:
        assert depth[32, 32] == 4.0  # the centre is background, yet the reference is on the person


def test_reference_depth_errors():
    depth, mask = _scene()
    with pytest.raises(ValueError, match="no valid depth inside the person mask"):
        reference_depth(np.where(mask, 0.0, depth), mask)
    with pytest.raises(ValueError, match="no valid pixel"):
        reference_depth(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="one \\(H, W\\) depth crop"):
        reference_depth(np.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match="person_mask shape"):
        reference_depth(depth, mask[:10])


def test_importing_preprocess_does_not_import_torch():
    code = "import sys, model.preprocess; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
