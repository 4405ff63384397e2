"""SpatioSphericalConv / SphericalChebConv: fast vs dense oracle, equivariance, folding, gradcheck."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from shdeconv.nn import SpatioSphericalConv, SphericalChebConv, separable_class_stencil
from shdeconv.sphere import fold_map, grid_symmetries, hemisphere_indices

# (nside, hemisphere, kernel_size, K)
CASES = [(2, True, 3, 4), (2, False, 3, 4), (4, True, 1, 3), (2, False, 1, 5), (4, True, 3, 2)]
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-11)}


@contextlib.contextmanager
def default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def make_layer(cin, cout, nside, hemisphere, kernel_size, K, dtype, **kw):
    with default_dtype(dtype):
        layer = SpatioSphericalConv(cin, cout, nside, K=K, hemisphere=hemisphere,
                                    kernel_size=kernel_size, **kw)
        with torch.no_grad():
            layer.bias.normal_()
    return layer


def sphere_perm(nside, hemisphere, perm):
    """Pixel permutation g with (Q f)[g[i]] = f[i] on the full sphere or the hemisphere."""
    if hemisphere:
        return fold_map(nside)[perm[hemisphere_indices(nside)]]
    return perm


def transform(x, q, g):
    """Apply a signed axis permutation jointly to space (last 3 dims) and sphere (dim 2)."""
    cols = [int(np.flatnonzero(q[r])[0]) for r in range(3)]
    signs = [q[r, cols[r]] for r in range(3)]
    nd = x.dim()
    y = x.permute(*range(nd - 3), *(nd - 3 + c for c in cols))
    flips = [nd - 3 + r for r in range(3) if signs[r] < 0]
    if flips:
        y = y.flip(flips)
    out = torch.empty_like(y)
    out[:, :, torch.as_tensor(g)] = y
    return out


def stencil_reference(y):
    """sum_r S_r y_r by explicit shifted sums over the 27 taps (y: [R=4, ..., X, Y, Z])."""
    pad = torch.nn.functional.pad(y, (1, 1, 1, 1, 1, 1))
    nx, ny, nz = y.shape[-3:]
    out = torch.zeros_like(y[0])
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                r = abs(dx) + abs(dy) + abs(dz)
                out += pad[r, ..., 1 + dx:1 + dx + nx, 1 + dy:1 + dy + ny, 1 + dz:1 + dz + nz]
    return out


@pytest.mark.parametrize("shape", [(4, 5, 3), (8, 8, 8), (1, 4, 2), (3, 1, 5), (2, 3, 1), (1, 1, 1)])
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_separable_stencil_matches_taps(shape, layout):
    """Forward and adjoint equal the 27-tap reference on both paths: spatial dims laid out
    contiguously (shifts over the flattened volume, wrapped neighbours masked) or not."""
    if layout == "contiguous":
        y = torch.randn(4, 2, 3, *shape, dtype=torch.float64)
    else:
        y = torch.randn(4, 2, 3, *reversed(shape), dtype=torch.float64).transpose(-1, -3)
    y.requires_grad_(True)
    out, ref = separable_class_stencil(y, 0), stencil_reference(y)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(ref)
    (adjoint,) = torch.autograd.grad(out, y, g)
    (adjoint_ref,) = torch.autograd.grad(ref, y, g)
    torch.testing.assert_close(adjoint, adjoint_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("nside,hemisphere,kernel_size,K", CASES)
def test_fast_matches_dense(dtype, nside, hemisphere, kernel_size, K):
    layer = make_layer(3, 4, nside, hemisphere, kernel_size, K, dtype)
    x = torch.randn(2, 3, layer.V, 4, 3, 5, dtype=dtype)
    gy = torch.randn(2, 4, layer.V, 4, 3, 5, dtype=dtype)
    results = {}
    for impl, cheb in (("dense", "dense"), ("fast", "sparse"), ("fast", "dense")):
        layer.impl, layer.chebyshev = impl, cheb
        xi = x.clone().requires_grad_(True)
        y = layer(xi)
        grads = torch.autograd.grad(y, [xi, *layer.parameters()], gy)
        results[impl, cheb] = (y, *grads)
    ref = results["dense", "dense"]
    for key, res in results.items():
        for a, b in zip(res, ref):
            torch.testing.assert_close(a, b, **TOL[dtype], msg=lambda m: f"{key}: {m}")


@pytest.mark.parametrize("impl", ["fast", "dense"])
@pytest.mark.parametrize("nside,hemisphere,kernel_size,K", CASES[:4])
def test_grid_symmetry_equivariance(impl, nside, hemisphere, kernel_size, K):
    layer = make_layer(2, 3, nside, hemisphere, kernel_size, K, torch.float64, impl=impl)
    x = torch.randn(1, 2, layer.V, 4, 4, 4, dtype=torch.float64)
    y = layer(x)
    syms = grid_symmetries(nside)
    assert len(syms) == 16
    for q, perm in syms:
        g = sphere_perm(nside, hemisphere, perm)
        torch.testing.assert_close(layer(transform(x, q, g)), transform(y, q, g), rtol=0, atol=1e-10)


@pytest.mark.parametrize("impl", ["fast", "dense"])
def test_translation_equivariance(impl):
    layer = make_layer(2, 3, 2, True, 3, 3, torch.float64, impl=impl)
    x = torch.zeros(1, 2, layer.V, 7, 6, 8, dtype=torch.float64)
    x[..., 2:5, 2:4, 2:6] = torch.randn(1, 2, layer.V, 3, 2, 4, dtype=torch.float64)
    y = layer(x)
    for shift in ((1, 0, 0), (0, 1, 0), (0, 0, 1), (-1, 1, -1)):
        ys = layer(torch.roll(x, shift, dims=(-3, -2, -1)))
        # zero border of width 2 around the support: padding and wrap-around agree
        torch.testing.assert_close(ys, torch.roll(y, shift, dims=(-3, -2, -1)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("impl", ["fast", "dense"])
@pytest.mark.parametrize("kernel_size", [1, 3])
def test_hemisphere_equals_full_sphere_on_symmetric_signals(impl, kernel_size):
    nside = 4
    hemi = make_layer(2, 3, nside, True, kernel_size, 5, torch.float64, impl=impl)
    full = make_layer(2, 3, nside, False, kernel_size, 5, torch.float64, impl=impl)
    full.load_state_dict(hemi.state_dict())
    fold = torch.as_tensor(np.array(fold_map(nside)))
    xh = torch.randn(2, 2, hemi.V, 3, 4, 2, dtype=torch.float64)
    torch.testing.assert_close(full(xh[:, :, fold]), hemi(xh)[:, :, fold], rtol=0, atol=1e-10)


@pytest.mark.parametrize("chebyshev", ["sparse", "dense"])
def test_gradcheck(chebyshev):
    layer = make_layer(2, 2, 1, True, 3, 3, torch.float64, chebyshev=chebyshev)
    x = torch.randn(1, 2, layer.V, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *p: layer(x), (x, layer.theta, layer.radial, layer.bias))


def test_product_form_and_init():
    torch.manual_seed(0)
    layer = SpatioSphericalConv(32, 64, 2, K=5)
    assert layer.theta.shape == (64, 32, 5) and layer.radial.shape == (64, 32, 4)
    k = layer.dense_kernel()
    assert k.shape == (64, 160, 3, 3, 3)
    # effective tap variance ~ Kaiming 2 / fan_in with fan_in = Cin K 27
    assert 0.7 < k.var().item() * 32 * 5 * 27 / 2 < 1.3
    assert set(layer.state_dict()) == {"theta", "radial", "bias"}
    r = repr(layer)
    assert "nside=2" in r and "K=5" in r and "hemisphere=True" in r and "impl='fast'" in r


def test_errors():
    layer = SpatioSphericalConv(2, 3, 2)
    with pytest.raises(ValueError, match="impl"):
        layer.impl = "slow"
    with pytest.raises(ValueError, match="kernel_size"):
        SpatioSphericalConv(2, 3, 2, kernel_size=5)
    with pytest.raises(ValueError, match=r"\[B, 2, 24"):
        layer(torch.randn(1, 2, 48, 2, 2, 2))
    with pytest.raises(ValueError, match="6 dims"):
        layer(torch.randn(1, 2, 24, 2, 2))
    with pytest.raises(ValueError, match="nside"):
        SpatioSphericalConv(2, 3, 3)


@pytest.mark.parametrize("spatial", [(), (3,), (2, 3, 2)])
def test_spherical_cheb_conv(spatial):
    with default_dtype(torch.float64):
        layer = SphericalChebConv(2, 3, 2, K=4, hemisphere=False)
    P = layer.projector.reshape(4, layer.V, layer.V)
    x = torch.randn(2, 2, layer.V, *spatial, dtype=torch.float64)
    ref = torch.einsum("oik,kvw,biw...->bov...", layer.theta, P, x)
    ref = ref + layer.bias.reshape(3, *[1] * (1 + len(spatial)))
    torch.testing.assert_close(layer(x), ref)
    assert set(layer.state_dict()) == {"theta", "bias"}
    # same as a voxel-wise SpatioSphericalConv with unit radial weight
    if len(spatial) == 3:
        with default_dtype(torch.float64):
            conv = SpatioSphericalConv(2, 3, 2, K=4, hemisphere=False, kernel_size=1)
        with torch.no_grad():
            conv.theta.copy_(layer.theta)
            conv.radial.fill_(1.0)
            conv.bias.copy_(layer.bias)
        torch.testing.assert_close(conv(x), layer(x))


def test_equivariance_check_is_not_vacuous():
    """A random pixel permutation is not a symmetry: the equivariance test can fail."""
    layer = make_layer(2, 3, 2, True, 3, 4, torch.float64)
    x = torch.randn(1, 2, layer.V, 4, 4, 4, dtype=torch.float64)
    g = np.random.default_rng(0).permutation(layer.V)
    q = grid_symmetries(2)[3][0]
    assert (layer(transform(x, q, g)) - transform(layer(x), q, g)).abs().max() > 1e-3


@pytest.mark.parametrize("hemisphere", [True, False])
@pytest.mark.parametrize("spatial", [True, False])
@pytest.mark.parametrize("kernel_size", [3, 1])
def test_forward_unpooled_equals_conv_of_unpooled_concatenation(hemisphere, spatial, kernel_size):
    from shdeconv.nn import SpatialUnpool, SphereUnpool

    torch.manual_seed(1)
    layer = make_layer(5, 4, 4, hemisphere, kernel_size, 3, torch.float64, chebyshev="dense")
    unpool = SphereUnpool(4, hemisphere).double()
    coarse = torch.randn(2, 3, layer.V // 4, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    shape = (4, 6, 4) if spatial else (2, 3, 2)
    skip = torch.randn(2, 2, layer.V, *shape, dtype=torch.float64, requires_grad=True)
    up = unpool(coarse)
    if spatial:
        up = SpatialUnpool()(up)
    ref = layer(torch.cat([up, skip], 1))
    out = layer.forward_unpooled(coarse, skip, unpool.parent, spatial)
    torch.testing.assert_close(out, ref, **TOL[torch.float64])
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, [coarse, skip, layer.theta, layer.radial], g),
                    torch.autograd.grad(ref, [coarse, skip, layer.theta, layer.radial], g)):
        torch.testing.assert_close(a, b, **TOL[torch.float64])
    with pytest.raises(ValueError, match="unpool"):
        layer.forward_unpooled(coarse, skip[..., :1], unpool.parent, spatial)
    with pytest.raises(ValueError, match="after unpooling"):
        layer.forward_unpooled(coarse[:, :2], skip, unpool.parent, spatial)
