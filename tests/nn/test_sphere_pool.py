"""Sphere and space pooling: shapes, values, antipodal folding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shdeconv.nn import SpatialPool, SpatialUnpool, SpherePool, SphereUnpool
from shdeconv.sphere import fold_map


def _fold(nside):
    return torch.as_tensor(np.array(fold_map(nside)))


@pytest.mark.parametrize("hemisphere", [True, False])
@pytest.mark.parametrize("mode", ["mean", "max"])
@pytest.mark.parametrize("trailing", [(), (2, 3, 4)])
def test_sphere_pool_shapes(hemisphere, mode, trailing):
    V = 12 * 16 // (2 if hemisphere else 1)
    x = torch.randn(2, 3, V, *trailing)
    y = SpherePool(4, hemisphere, mode)(x)
    assert y.shape == (2, 3, V // 4, *trailing)
    z = SphereUnpool(4, hemisphere)(y)
    assert z.shape == x.shape
    # unpool then pool is the identity (mean and max of four equal values)
    torch.testing.assert_close(SpherePool(4, hemisphere, mode)(z), y)


def test_full_sphere_pool_is_nested():
    x = torch.randn(1, 2, 192)
    torch.testing.assert_close(SpherePool(4, False)(x), x.view(1, 2, 48, 4).mean(-1))
    torch.testing.assert_close(SpherePool(4, False, "max")(x), x.view(1, 2, 48, 4).amax(-1))


@pytest.mark.parametrize("mode", ["mean", "max"])
@pytest.mark.parametrize("nside", [2, 4, 8])
def test_sphere_pool_commutes_with_folding(mode, nside):
    xh = torch.randn(2, 3, 6 * nside**2, 2)
    full = SpherePool(nside, False, mode)(xh[:, :, _fold(nside)])
    hemi = SpherePool(nside, True, mode)(xh)
    torch.testing.assert_close(full, hemi[:, :, _fold(nside // 2)])
    up_full = SphereUnpool(nside, False)(hemi[:, :, _fold(nside // 2)])
    torch.testing.assert_close(up_full, SphereUnpool(nside, True)(hemi)[:, :, _fold(nside)])


def test_spatial_pool_unpool():
    x = torch.randn(2, 3, 5, 4, 6, 2)
    y = SpatialPool()(x)
    assert y.shape == (2, 3, 5, 2, 3, 1)
    torch.testing.assert_close(y[0, 1, 2, 1, 2, 0], x[0, 1, 2, 2:4, 4:6, 0:2].mean())
    assert SpatialPool("max")(x)[0, 0, 0, 0, 0, 0] == x[0, 0, 0, :2, :2, :2].max()
    z = SpatialUnpool()(y)
    assert z.shape == x.shape
    torch.testing.assert_close(z[..., 3, 5, 1], y[..., 1, 2, 0])
    torch.testing.assert_close(SpatialPool()(z), y)
    nearest = y.repeat_interleave(2, -3).repeat_interleave(2, -2).repeat_interleave(2, -1)
    torch.testing.assert_close(z, nearest, rtol=0, atol=0)
    # any strides in, the same values out
    yt = y.transpose(-1, -3).contiguous().transpose(-1, -3)
    torch.testing.assert_close(SpatialUnpool()(yt), nearest, rtol=0, atol=0)


def test_errors():
    with pytest.raises(ValueError, match="nside"):
        SpherePool(1, True)
    with pytest.raises(ValueError, match="mode"):
        SpherePool(4, True, "median")
    with pytest.raises(ValueError, match="96"):
        SpherePool(4, True)(torch.randn(1, 1, 192))
    with pytest.raises(ValueError, match="even"):
        SpatialPool()(torch.randn(1, 1, 1, 3, 2, 2))
