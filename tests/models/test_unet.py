"""SphericalUNet: shapes, fast vs dense, grid-symmetry/translation equivariance, folding."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from shdeconv.models import ChannelBatchNorm, SphericalUNet
from shdeconv.sphere import fold_map, grid_symmetries, hemisphere_indices


@contextlib.contextmanager
def default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def make_net(hemisphere, dtype=torch.float64, **kw):
    cfg = dict(nside=2, depth=2, width=4, K=3, hemisphere=hemisphere)
    cfg.update(kw)
    with default_dtype(dtype):
        net = SphericalUNet(2, 3, **cfg)
    # non-trivial batch-norm statistics and affine parameters, then eval mode
    gen = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, ChannelBatchNorm):
            m.running_mean.normal_(generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(generator=gen)
    return net.eval()


def transform(x, q, g):
    """Signed axis permutation on space (last 3 dims) jointly with pixel permutation g (dim 2)."""
    cols = [int(np.flatnonzero(q[r])[0]) for r in range(3)]
    nd = x.dim()
    y = x.permute(*range(nd - 3), *(nd - 3 + c for c in cols))
    flips = [nd - 3 + r for r in range(3) if q[r, cols[r]] < 0]
    y = y.flip(flips) if flips else y
    out = torch.empty_like(y)
    out[:, :, torch.as_tensor(g)] = y
    return out


@pytest.mark.parametrize("hemisphere", [True, False])
def test_shapes_and_fast_vs_dense(hemisphere):
    net = make_net(hemisphere, torch.float32, nside=4, depth=3, spatial_levels=1).train()
    x = torch.randn(2, 2, net.V, 4, 4, 2)
    y = net(x)
    assert y.shape == (2, 3, net.V, 4, 4, 2)
    g = torch.autograd.grad(y.square().sum(), [*net.parameters()])
    net.impl = "dense"
    assert all(m.impl == "dense" for m in net.modules() if hasattr(m, "chebyshev"))
    y2 = net(x)
    g2 = torch.autograd.grad(y2.square().sum(), [*net.parameters()])
    torch.testing.assert_close(y, y2, rtol=1e-4, atol=1e-4)
    for a, b in zip(g, g2):  # batch norm in train mode amplifies float32 rounding
        assert (a - b).abs().max() <= 1e-3 * a.abs().max() + 1e-6
    net.impl, net.chebyshev = "fast", "dense"  # the inference path of predict
    assert net.chebyshev == "dense"
    assert all(m.chebyshev == "dense" for m in net.modules() if hasattr(m, "chebyshev"))
    y3 = net(x)
    g3 = torch.autograd.grad(y3.square().sum(), [*net.parameters()])
    torch.testing.assert_close(y, y3, rtol=1e-4, atol=1e-4)
    for a, b in zip(g, g3):
        assert (a - b).abs().max() <= 1e-3 * a.abs().max() + 1e-6


@pytest.mark.parametrize("hemisphere", [True, False])
@pytest.mark.parametrize("impl", ["fast", "dense"])
def test_grid_symmetry_equivariance(hemisphere, impl):
    net = make_net(hemisphere, impl=impl)
    x = torch.randn(1, 2, net.V, 4, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        y = net(x)
        for q, perm in grid_symmetries(2):
            g = fold_map(2)[perm[hemisphere_indices(2)]] if hemisphere else perm
            torch.testing.assert_close(net(transform(x, q, g)), transform(y, q, g), rtol=0, atol=1e-10)


def test_translation_equivariance():
    """Shifts by a multiple of 2**spatial_levels, compared where no border is in view."""
    net = make_net(True, depth=2, spatial_levels=1)
    x = torch.randn(1, 2, net.V, 20, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        y = net(x)
        ys = net(torch.roll(x, 2, dims=-3))
    # receptive radius along x: 2 (enc0) + 2 * 2 (enc1 at half res) + 2 (dec0) + rounding < 9
    torch.testing.assert_close(ys[..., 11, :, :], y[..., 9, :, :], rtol=0, atol=1e-10)


@pytest.mark.parametrize("impl", ["fast", "dense"])
def test_hemisphere_equals_full_sphere_on_symmetric_signals(impl):
    hemi = make_net(True, impl=impl)
    full = make_net(False, impl=impl)
    full.load_state_dict(hemi.state_dict())
    fold = torch.as_tensor(np.array(fold_map(2)))
    xh = torch.randn(2, 2, hemi.V, 4, 2, 6, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(full(xh[:, :, fold]), hemi(xh)[:, :, fold], rtol=0, atol=1e-10)


def test_voxelwise_esd_and_no_spatial_pooling():
    net = make_net(False, torch.float32, kernel_size=1, spatial_levels=0, depth=2)
    x = torch.randn(1, 2, net.V, 3, 1, 5)
    assert net(x).shape == (1, 3, net.V, 3, 1, 5)
    # voxel-wise: voxels do not talk to each other
    x2 = x.clone()
    x2[..., 0, 0, 0] += 1
    with torch.no_grad():
        d = (net(x2) - net(x)).abs().amax(dim=(0, 1, 2))
    assert d[0, 0, 0] > 0 and d.flatten()[1:].max() == 0


def test_errors():
    with pytest.raises(ValueError, match="cannot be halved"):
        SphericalUNet(1, 1, nside=2, depth=3)
    with pytest.raises(ValueError, match="spatial_levels"):
        SphericalUNet(1, 1, nside=4, depth=2, spatial_levels=2)
    net = SphericalUNet(1, 1, nside=2, depth=2, width=2, K=2)
    with pytest.raises(ValueError, match="divisible by 2"):
        net(torch.randn(1, 1, 24, 2, 3, 2))
    with pytest.raises(ValueError, match=r"\[B, 1, 24"):
        net(torch.randn(1, 1, 48, 2, 2, 2))
    r = repr(net)
    assert "nside=2" in r and "depth=2" in r and "impl='fast'" in r
