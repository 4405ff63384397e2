import numpy as np
import torch

from shdeconv.losses import DeconvLoss, LossWeights, total_variation
from shdeconv.signal._forward import ForwardModel
from shdeconv.sphere import sh_degrees
import pytest


def _fm(rng):
    g = rng.normal(size=(20, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    ls = sh_degrees(8)
    kernel = np.sqrt(4 * np.pi / (2 * ls + 1))[None] * np.array([1.0, -0.4, 0.15, -0.05, 0.01])[ls // 2][None]
    return ForwardModel(g, np.zeros(20, int), kernel)


def test_reconstruction_is_zero_for_the_exact_signal(rng):
    fm = _fm(rng)
    c = torch.randn(1, 45, 3, 3, 3)
    s = fm(c.movedim(1, -1)).movedim(-1, 1)
    loss = DeconvLoss(fm, LossWeights(nonnegativity=0, sparsity=0))
    total, parts = loss(c, None, s, torch.ones(1, 3, 3, 3))
    assert float(total) < 1e-10 and parts["reconstruction"] < 1e-10


def test_mask_excludes_voxels(rng):
    fm = _fm(rng)
    c = torch.zeros(1, 45, 2, 2, 2)
    s = torch.zeros(1, 20, 2, 2, 2)
    s[..., 0, 0, 0] = 5.0
    m = torch.ones(1, 2, 2, 2)
    m[0, 0, 0, 0] = 0
    loss = DeconvLoss(fm, LossWeights(nonnegativity=0, sparsity=0))
    assert float(loss(c, None, s, m)[0]) == 0.0


def test_nonnegativity_and_sparsity(rng):
    fm = _fm(rng)
    c = torch.zeros(1, 45, 1, 1, 1)
    c[0, 0] = -1.0  # negative everywhere
    s = torch.zeros(1, 20, 1, 1, 1)
    m = torch.ones(1, 1, 1, 1)
    _, parts = DeconvLoss(fm, LossWeights())(c, None, s, m)
    assert parts["nonnegativity"] == pytest.approx((1 / np.sqrt(4 * np.pi)) ** 2, rel=1e-4)
    c0 = torch.zeros_like(c)
    _, parts0 = DeconvLoss(fm, LossWeights())(c0, None, s, m)
    assert parts0["nonnegativity"] == 0 and parts0["sparsity"] == 0 and parts["sparsity"] > 1


def test_total_variation():
    c = torch.ones(1, 45, 4, 4, 4)
    m = torch.ones(1, 4, 4, 4)
    assert float(total_variation(c, m)) == 0.0
    c[0, 0, 2] += 1.0  # one plane differs in c00 by 1: 16 pairs along x out of 3*48
    assert float(total_variation(c, m)) == pytest.approx(2 * 16 / (3 * 48))
    m[0, 2] = 0  # masking the plane removes its pairs
    assert float(total_variation(c, m)) == 0.0


def test_weights_validated():
    with pytest.raises(ValueError, match="non-negative"):
        LossWeights(tv=-1)
