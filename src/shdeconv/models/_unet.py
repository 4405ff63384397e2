r"""Spatio-spherical U-Net (docs/method.md, section 4) on the full sphere or the hemisphere.

Shapes ``[B, C, V, X, Y, Z]``. Level ``l`` works at sphere resolution ``nside / 2^l`` with
``width 2^l`` channels; space is halved at the first ``spatial_levels`` poolings. Every
piece (Chebyshev convolutions, pooling over the NESTED hierarchy, batch norm over channels,
ReLU) commutes with the grid symmetries acting jointly on space and sphere and with
translations, so the network is equivariant to them (exactly, in eval mode).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ..nn import (
    SpatialPool,
    SpatialUnpool,
    SpatioSphericalConv,
    SpherePool,
    SphereUnpool,
)
from ..nn._chebyshev import n_pixels
from ..sphere import check_nside

__all__ = ["ChannelBatchNorm", "SphericalUNet"]

logger = logging.getLogger(__name__)


class ChannelBatchNorm(nn.BatchNorm1d):
    r"""Batch norm with one statistic per channel over batch, sphere and space.

    .. math:: y_{bc\dots} = \gamma_c \frac{x_{bc\dots} - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}} + \beta_c

    ``[B, C, V, *spatial]`` -> same shape. An antipodally symmetric full-sphere signal has the
    same statistics as its hemisphere (every value appears twice), so SHD and RT-ESD agree.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError(f"{type(self).__name__} expects [B, C, V, ...], got shape {tuple(x.shape)}")
        return super().forward(x.reshape(x.shape[0], x.shape[1], -1)).view(x.shape)


class _ConvBlock(nn.Sequential):
    """SpatioSphericalConv (no bias) -> ChannelBatchNorm -> ReLU, twice."""

    def __init__(self, c_in: int, c_out: int, nside: int, K: int, hemisphere: bool,
                 kernel_size: int, impl: str):
        layers = []
        for c in (c_in, c_out):
            layers += [
                SpatioSphericalConv(c, c_out, nside, K=K, hemisphere=hemisphere,
                                    kernel_size=kernel_size, impl=impl, bias=False),
                ChannelBatchNorm(c_out),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


class SphericalUNet(nn.Module):
    r"""U-Net of spatio-spherical Chebyshev convolutions.

    Parameters
    ----------
    in_channels, out_channels : int
    nside : int
        Sphere resolution of the input; halved at each of the ``depth - 1`` poolings
        (needs ``nside >= 2^(depth-1)``).
    depth : int
        Number of resolution levels.
    width : int
        Channels at the top level, doubled per level.
    K : int
        Chebyshev terms of every convolution.
    hemisphere : bool
        SHD (hemisphere, ``V = 6 nside^2``) or RT-ESD / ESD (full sphere, ``V = 12 nside^2``).
    kernel_size : {3, 1}
        Spatial kernel; 1 gives the voxel-wise ESD network.
    impl : {"fast", "dense"}
        Implementation of every :class:`~shdeconv.nn.SpatioSphericalConv` (switchable later
        through :attr:`impl`).
    spatial_levels : int, optional
        Number of poolings that also halve space (default ``depth - 1``; 0 never pools space).

    Notes
    -----
    ``forward(x)``: ``x`` ``[B, Cin, V, X, Y, Z]`` -> ``[B, Cout, V, X, Y, Z]`` with X, Y, Z
    divisible by ``2^spatial_levels``. Skip connections concatenate encoder features; the
    last layer is a voxel-wise ``K = 1`` convolution to ``out_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int, nside: int = 8, depth: int = 4,
                 width: int = 32, K: int = 5, hemisphere: bool = True, kernel_size: int = 3,
                 impl: str = "fast", spatial_levels: int | None = None):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("depth", depth), ("width", width), ("K", K)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        nside = check_nside(nside)
        if nside < 2 ** (depth - 1):
            raise ValueError(f"nside {nside} cannot be halved {depth - 1} times (depth {depth}); "
                             f"need nside >= {2 ** (depth - 1)}")
        if spatial_levels is None:
            spatial_levels = depth - 1
        if int(spatial_levels) != spatial_levels or not 0 <= spatial_levels <= depth - 1:
            raise ValueError(f"spatial_levels must be an integer in [0, {depth - 1}], got {spatial_levels!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.nside, self.depth, self.width, self.K = nside, int(depth), int(width), int(K)
        self.hemisphere, self.kernel_size = bool(hemisphere), int(kernel_size)
        self.spatial_levels = int(spatial_levels)
        self.V = n_pixels(nside, self.hemisphere)

        chans = [self.width * 2**level for level in range(self.depth)]
        sides = [nside // 2**level for level in range(self.depth)]
        block = dict(K=self.K, hemisphere=self.hemisphere, kernel_size=self.kernel_size, impl=impl)
        self.encoders = nn.ModuleList(
            _ConvBlock(self.in_channels if lv == 0 else chans[lv - 1], chans[lv], sides[lv], **block)
            for lv in range(self.depth)
        )
        self.decoders = nn.ModuleList(
            _ConvBlock(chans[lv + 1] + chans[lv], chans[lv], sides[lv], **block)
            for lv in range(self.depth - 1)
        )
        self.sphere_pools = nn.ModuleList(SpherePool(sides[lv], self.hemisphere) for lv in range(self.depth - 1))
        self.sphere_unpools = nn.ModuleList(SphereUnpool(sides[lv], self.hemisphere) for lv in range(self.depth - 1))
        self.spatial_pool, self.spatial_unpool = SpatialPool(), SpatialUnpool()
        self.head = SpatioSphericalConv(chans[0], self.out_channels, nside, K=1,
                                        hemisphere=self.hemisphere, kernel_size=1, impl=impl)

    def _set_on_convolutions(self, name: str, value: str) -> None:
        for m in self.modules():
            if isinstance(m, SpatioSphericalConv):
                setattr(m, name, value)

    @property
    def impl(self) -> str:
        """Implementation used by every convolution (``"fast"`` or ``"dense"``)."""
        return self.head.impl

    @impl.setter
    def impl(self, value: str) -> None:
        self._set_on_convolutions("impl", value)

    @property
    def chebyshev(self) -> str:
        """How every ``"fast"`` convolution applies the Chebyshev polynomials (``"sparse"`` or ``"dense"``)."""
        return self.head.chebyshev

    @chebyshev.setter
    def chebyshev(self, value: str) -> None:
        self._set_on_convolutions("chebyshev", value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, Cin, V, X, Y, Z]`` -> ``[B, Cout, V, X, Y, Z]``."""
        if x.dim() != 6 or x.shape[1] != self.in_channels or x.shape[2] != self.V:
            raise ValueError(f"{type(self).__name__} expects [B, {self.in_channels}, {self.V}, X, Y, Z], "
                             f"got shape {tuple(x.shape)}")
        m = 2**self.spatial_levels
        if any(n % m for n in x.shape[-3:]):
            raise ValueError(f"spatial size {tuple(x.shape[-3:])} must be divisible by {m} "
                             f"(2**spatial_levels, spatial_levels={self.spatial_levels})")
        skips = []
        for lv, enc in enumerate(self.encoders):
            if lv > 0:
                x = self.sphere_pools[lv - 1](x)
                if lv - 1 < self.spatial_levels:
                    x = self.spatial_pool(x)
            x = enc(x)
            skips.append(x)
        fused = self.impl == "fast" and self.chebyshev == "dense"
        for lv in range(self.depth - 2, -1, -1):
            spatial = lv < self.spatial_levels
            if fused:  # the first convolution works on the coarse grid (same result, fewer operations)
                first, *rest = self.decoders[lv]
                x = first.forward_unpooled(x, skips[lv], self.sphere_unpools[lv].parent, spatial)
                for layer in rest:
                    x = layer(x)
                continue
            x = self.sphere_unpools[lv](x)
            if spatial:
                x = self.spatial_unpool(x)
            x = self.decoders[lv](torch.cat([x, skips[lv]], dim=1))
        return self.head(x)

    def extra_repr(self) -> str:
        n_params = sum(p.numel() for p in self.parameters())
        return (f"{self.in_channels}, {self.out_channels}, nside={self.nside}, depth={self.depth}, "
                f"width={self.width}, K={self.K}, hemisphere={self.hemisphere}, V={self.V}, "
                f"kernel_size={self.kernel_size}, spatial_levels={self.spatial_levels}, "
                f"impl={self.impl!r}, params={n_params}")
