r"""Pooling across sphere resolutions and across space.

Shapes: ``[B, C, V, X, Y, Z]`` (the sphere poolings accept any number of trailing dims).
Sphere pooling follows the NESTED hierarchy (parent = child // 4); on the hemisphere the
children come from :func:`shdeconv.sphere.pooling_children` (unfold, pool, fold back), which
is exact for antipodally symmetric signals.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..sphere import check_nside, pooling_children
from ._chebyshev import n_pixels

__all__ = ["SpherePool", "SphereUnpool", "SpatialPool", "SpatialUnpool", "upsample_nearest2"]

POOL_MODES = ("mean", "max")


@lru_cache(maxsize=None)
def _parent_of(nside: int, hemisphere: bool) -> np.ndarray:
    """``parent[j]`` = pixel at ``nside // 2`` whose children include ``j``, shape ``(V,)``."""
    children = pooling_children(nside, hemisphere)
    parent = np.full(n_pixels(nside, hemisphere), -1, dtype=np.int64)
    parent[children.reshape(-1)] = np.repeat(np.arange(children.shape[0]), 4)
    if (parent < 0).any() or np.unique(children).size != children.size:
        raise RuntimeError("pooling children do not partition the pixels")  # internal invariant
    parent.setflags(write=False)
    return parent


def _check_sphere_input(x: torch.Tensor, V: int, what: str) -> None:
    if x.dim() < 3 or x.shape[2] != V:
        raise ValueError(f"{what} expects [B, C, {V}, ...] (V sphere pixels on dim 2), "
                         f"got shape {tuple(x.shape)}")


class SpherePool(nn.Module):
    r"""Pool sphere pixels from ``nside`` to ``nside // 2`` over their 4 NESTED children.

    .. math:: y_p = \mathrm{mean}_{c \in ch(p)} x_c \quad (\text{or } \max)

    ``[B, C, V_{nside}, ...]`` -> ``[B, C, V_{nside/2}, ...]``.
    """

    def __init__(self, nside: int, hemisphere: bool = True, mode: str = "mean"):
        super().__init__()
        if mode not in POOL_MODES:
            raise ValueError(f"mode must be one of {POOL_MODES}, got {mode!r}")
        self.nside, self.hemisphere, self.mode = check_nside(nside), bool(hemisphere), mode
        self.V = n_pixels(self.nside, self.hemisphere)
        children = torch.as_tensor(np.array(pooling_children(self.nside, self.hemisphere)))
        self.register_buffer("child_index", children.reshape(-1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, V, ...]`` -> ``[B, C, V / 4, ...]``."""
        _check_sphere_input(x, self.V, type(self).__name__)
        y = x.index_select(2, self.child_index)
        y = y.view(*x.shape[:2], self.V // 4, 4, *x.shape[3:])
        return y.mean(3) if self.mode == "mean" else y.amax(3)

    def extra_repr(self) -> str:
        return f"nside={self.nside}, hemisphere={self.hemisphere}, mode={self.mode!r}"


class SphereUnpool(nn.Module):
    r"""Nearest unpooling from ``nside // 2`` to ``nside``: every child copies its parent.

    ``[B, C, V_{nside/2}, ...]`` -> ``[B, C, V_{nside}, ...]``.
    """

    def __init__(self, nside: int, hemisphere: bool = True):
        super().__init__()
        self.nside, self.hemisphere = check_nside(nside), bool(hemisphere)
        self.V = n_pixels(self.nside, self.hemisphere)
        parent = torch.as_tensor(np.array(_parent_of(self.nside, self.hemisphere)))
        self.register_buffer("parent", parent, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, V / 4, ...]`` -> ``[B, C, V, ...]``."""
        _check_sphere_input(x, self.V // 4, type(self).__name__)
        return x.index_select(2, self.parent)

    def extra_repr(self) -> str:
        return f"nside={self.nside}, hemisphere={self.hemisphere}"


def _check_spatial_input(x: torch.Tensor, what: str, even: bool) -> None:
    if x.dim() < 4:
        raise ValueError(f"{what} expects [..., X, Y, Z], got shape {tuple(x.shape)}")
    if even and any(n % 2 for n in x.shape[-3:]):
        raise ValueError(f"{what} needs even X, Y, Z, got spatial shape {tuple(x.shape[-3:])}")


class SpatialPool(nn.Module):
    r"""2x2x2 average (or max) pooling over the last three dims.

    ``[B, C, V, X, Y, Z]`` -> ``[B, C, V, X/2, Y/2, Z/2]``.
    """

    def __init__(self, mode: str = "mean"):
        super().__init__()
        if mode not in POOL_MODES:
            raise ValueError(f"mode must be one of {POOL_MODES}, got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_spatial_input(x, type(self).__name__, even=True)
        lead, (nx, ny, nz) = x.shape[:-3], x.shape[-3:]
        flat = x.reshape(-1, 1, nx, ny, nz)
        if self.mode == "max":
            y = F.max_pool3d(flat, 2)
        elif flat.dtype == torch.bfloat16 and not flat.is_cuda:  # no bfloat16 avg_pool3d on a CPU
            y = F.avg_pool3d(flat.float(), 2).to(flat.dtype)
        else:
            y = F.avg_pool3d(flat, 2)
        return y.view(*lead, nx // 2, ny // 2, nz // 2)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


class SpatialUnpool(nn.Module):
    r"""Nearest 2x upsampling over the last three dims.

    ``[B, C, V, X, Y, Z]`` -> ``[B, C, V, 2X, 2Y, 2Z]``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_spatial_input(x, type(self).__name__, even=False)
        return upsample_nearest2(x)


def upsample_nearest2(x: torch.Tensor) -> torch.Tensor:
    """Nearest 2x upsampling of the last three dims: ``[..., X, Y, Z]`` -> ``[..., 2X, 2Y, 2Z]``.

    One axis at a time, innermost first, so that the copies along ``y`` and ``x`` move whole
    contiguous rows and planes (one copy interleaving all three axes moves pairs of floats
    and is about 5x slower on a CPU).
    """
    lead, (nx, ny, nz) = x.shape[:-3], x.shape[-3:]
    y = x.reshape(-1, nx, ny, nz, 1).expand(-1, nx, ny, nz, 2).reshape(-1, nx, ny, 1, 2 * nz)
    y = y.expand(-1, nx, ny, 2, 2 * nz).reshape(-1, nx, 1, 4 * ny * nz)
    y = y.expand(-1, nx, 2, 4 * ny * nz)
    return y.reshape(*lead, 2 * nx, 2 * ny, 2 * nz)
