import numpy as np
import pytest
import torch

from shdeconv.losses import DeconvLoss, LossWeights, _losses, total_variation
from shdeconv.losses._losses import supervised_sh_loss
from shdeconv.signal._forward import ForwardModel
from shdeconv.sphere import hemisphere_directions, n_coeffs, sh_degrees, sh_matrix


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


def test_orders_above_the_response_change_nothing_in_the_reconstruction(rng):
    fm = _fm(rng)
    c = torch.randn(1, n_coeffs(16), 2, 2, 2)
    s = torch.randn(1, 20, 2, 2, 2)
    loss = DeconvLoss(fm, LossWeights(nonnegativity=0, sparsity=0), lmax=16)
    c2 = c.clone()
    c2[:, 45:] = torch.randn_like(c2[:, 45:])
    m = torch.ones(1, 2, 2, 2)
    assert loss(c, None, s, m)[1]["reconstruction"] == pytest.approx(loss(c2, None, s, m)[1]["reconstruction"])
    with pytest.raises(ValueError, match="lmax 16"):
        loss(c[:, :45], None, s, m)


def test_mask_excludes_voxels(rng):
    fm = _fm(rng)
    c = torch.zeros(1, 45, 2, 2, 2)
    s = torch.zeros(1, 20, 2, 2, 2)
    s[..., 0, 0, 0] = 5.0
    m = torch.ones(1, 2, 2, 2)
    m[0, 0, 0, 0] = 0
    loss = DeconvLoss(fm, LossWeights(nonnegativity=0, sparsity=0))
    assert float(loss(c, None, s, m)[0]) == 0.0


def test_nonnegativity_and_published_cauchy(rng):
    fm = _fm(rng)
    c = torch.zeros(1, 45, 1, 1, 1)
    c[0, 0] = -1.0  # f = -1 / sqrt(4 pi) everywhere
    s = torch.zeros(1, 20, 1, 1, 1)
    m = torch.ones(1, 1, 1, 1)
    w = LossWeights()
    _, parts = DeconvLoss(fm, w)(c, None, s, m)
    f2 = 1 / (4 * np.pi)
    assert parts["nonnegativity"] == pytest.approx(f2, rel=1e-4)
    assert parts["sparsity"] == pytest.approx(2 * np.log1p(f2 / (2 * w.sparsity_sigma)), rel=1e-4)
    _, parts0 = DeconvLoss(fm, w)(torch.zeros_like(c), None, s, m)
    assert parts0["nonnegativity"] == 0 and parts0["sparsity"] == 0


def _dense(c: torch.Tensor, lmax: int) -> torch.Tensor:
    b = torch.as_tensor(sh_matrix(hemisphere_directions(16), lmax), dtype=torch.float64)
    return c.double().movedim(1, -1) @ b.T


def test_total_variation_acts_on_the_shape_on_the_dense_grid():
    rng = np.random.default_rng(0)
    shape = torch.as_tensor(rng.normal(size=45), dtype=torch.float32)
    c = shape[None, :, None, None, None].repeat(1, 1, 4, 4, 4)
    scale = torch.linspace(0.5, 2.0, 4)[None, None, :, None, None]
    m = torch.ones(1, 4, 4, 4)
    assert float(total_variation(c * scale, m)) == pytest.approx(0.0, abs=1e-7)
    c2 = c.clone()
    c2[0, :, 2] = torch.as_tensor(rng.normal(size=45), dtype=torch.float32)[:, None, None]
    tv = float(total_variation(c2, m))
    # the published definition on the 1536 points of the nside-16 hemisphere: each fODF over
    # its full-sphere L2 norm, squared differences averaged over points, then over the pairs
    d = _dense(c2, 8)
    unit = d / (2 * d.pow(2).sum(-1, keepdim=True)).sqrt()
    per_pair = float((unit[0, 1, 0, 0] - unit[0, 2, 0, 0]).pow(2).mean())
    assert tv == pytest.approx(2 * 16 * per_pair / (3 * 48), rel=1e-4)  # 32 of the 144 pairs differ
    m[0, 2] = 0  # masking the plane removes its pairs
    assert float(total_variation(c2, m)) == pytest.approx(0.0, abs=1e-7)


def test_total_variation_gradient_matches_autograd():
    """The written-out TV gradient equals autograd's through the plain formula, with pairs cut by
    the mask and by ``first`` (a slab's core), and a voxel whose fODF is zero (clamped norm)."""
    rng = np.random.default_rng(3)
    c = torch.as_tensor(rng.normal(size=(2, 4, 3, 5, 15)))
    c[0, 1, 2, 3] = 0.0
    mask = torch.as_tensor(rng.random((2, 4, 3, 5)) > 0.2, dtype=torch.float64)
    first = torch.ones_like(mask)
    first[:, 3] = 0.0
    b = torch.as_tensor(rng.normal(size=(40, 15)))
    gram = b.T @ b

    def plain(c):
        q = c @ gram
        norm = (c * q).sum(-1).clamp_min(1e-20).sqrt()
        total = c.new_zeros(())
        for axis in (1, 2, 3):
            n = c.shape[axis]
            cos = (c.narrow(axis, 0, n - 1) * q.narrow(axis, 1, n - 1)).sum(-1) / (
                norm.narrow(axis, 0, n - 1) * norm.narrow(axis, 1, n - 1))
            pair = mask.narrow(axis, 0, n - 1) * mask.narrow(axis, 1, n - 1) * first.narrow(axis, 0, n - 1)
            total = total + ((1 - cos) * pair).sum()
        return total

    ours = c.clone().requires_grad_(True)
    ref = c.clone().requires_grad_(True)
    value, _ = _losses._tv_sums(ours, gram, 40, mask, first)
    (3.0 * value).backward()
    (3.0 * plain(ref) / 40).backward()
    assert float(value.detach()) == pytest.approx(float(plain(c) / 40), rel=1e-12)
    torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-10, atol=1e-12)
    assert float(ours.grad[0, 1, 2, 3].abs().sum()) > 0  # the zero voxel still feels its neighbours


@pytest.mark.parametrize("block_rows", [4096, 3])
def test_grid_penalty_gradient_matches_autograd(rng, monkeypatch, block_rows):
    """Sums and gradient as autograd's, whether the voxels fit in one block or span several."""
    monkeypatch.setattr(_losses, "GRID_BLOCK_ROWS", block_rows)
    fm = _fm(rng)
    w = LossWeights(sparsity=1e-2)
    loss = DeconvLoss(fm, w, lmax=10)
    c = torch.randn(1, 66, 2, 3, 2, dtype=torch.float64) * 0.1
    m = torch.rand(1, 2, 3, 2) > 0.3
    loss = loss.double()
    sums = loss.sums(c.requires_grad_(True), None, torch.zeros(1, 20, 2, 3, 2, dtype=torch.float64), m)
    (sums["nonnegativity"][0] + 3 * sums["sparsity"][0]).backward(retain_graph=True)
    c_ref = c.detach().clone().requires_grad_(True)
    f = c_ref.movedim(1, -1)[m] @ loss.b_dense.T
    ref = f.clamp(max=0).pow(2).mean(-1).sum() + 3 * (2 * torch.log1p(f.pow(2) / (2 * w.sparsity_sigma))).mean(-1).sum()
    ref.backward()
    total = sums["nonnegativity"][0] + 3 * sums["sparsity"][0]
    assert float(total.detach()) == pytest.approx(float(ref.detach()), rel=1e-9)
    torch.testing.assert_close(c.grad, c_ref.grad, rtol=1e-9, atol=1e-12)


def test_chunked_sums_equal_the_whole_volume(rng):
    fm = _fm(rng)
    loss = DeconvLoss(fm, LossWeights(tv=0.5), lmax=12)
    c = torch.randn(1, n_coeffs(12), 6, 3, 4)
    s = torch.randn(1, 20, 6, 3, 4)
    m = torch.rand(1, 6, 3, 4) > 0.3
    whole_total, whole = loss(c, None, s, m)
    acc = {}
    for a, b in ((0, 2), (2, 5), (5, 6)):  # slabs along x with a one-voxel halo
        h0, h1 = max(0, a - 1), min(6, b + 1)
        core = torch.zeros(1, h1 - h0, 3, 4, dtype=torch.bool)
        core[:, a - h0:b - h0] = True
        for k, (sm, n) in loss.sums(c[:, :, h0:h1], None, s[:, :, h0:h1], m[:, h0:h1], core=core).items():
            prev = acc.get(k, (0.0, 0.0))
            acc[k] = (prev[0] + sm, prev[1] + n)
    total, parts = loss.combine(acc)
    assert float(total) == pytest.approx(float(whole_total), rel=1e-5)
    for k in whole:
        assert parts[k] == pytest.approx(whole[k], rel=1e-5)


def test_supervised_compares_the_common_orders():
    c = torch.randn(1, n_coeffs(16), 2, 2, 2)
    t = c[:, :45].clone()
    m = torch.ones(1, 2, 2, 2)
    assert float(supervised_sh_loss(c, t, m)) == pytest.approx(0.0, abs=1e-12)
    assert float(supervised_sh_loss(c, 2 * t, m)) == pytest.approx(0.25, rel=1e-5)


def test_weights_validated():
    with pytest.raises(ValueError, match="non-negative"):
        LossWeights(tv=-1)
