r"""Deconvolution networks: signal -> (hemi)sphere grid -> U-Net -> WM fODF SH + tissue fractions.

Variants (DESIGN.md sections 4 and 7):

==========  ===========  =============  =================================
variant     sphere       spatial kernel  loss
==========  ===========  =============  =================================
``esd``     full sphere  none (1x1x1)   reconstruction + nonneg + sparsity
``rtesd``   full sphere  3x3x3          same
``shd``     hemisphere   3x3x3          same
``shd-tv``  hemisphere   3x3x3          same + spatial total variation
==========  ===========  =============  =================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..signal._grid import grid_to_sh_matrix, signal_to_grid_matrix
from ._unet import SphericalUNet

__all__ = ["VARIANTS", "NetworkConfig", "DeconvNet"]

VARIANTS = ("esd", "rtesd", "shd", "shd-tv")


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture settings, validated once. Defaults are sized for a laptop CPU."""

    variant: str = "shd-tv"
    nside: int = 4
    depth: int = 2
    width: int = 8
    K: int = 3
    lmax: int = 8
    spatial_levels: int = 1
    impl: str = "fast"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown model variant {self.variant!r}; expected one of {VARIANTS}")
        if self.depth < 1 or self.width < 1 or self.K < 1:
            raise ValueError(f"depth, width and K must be positive, got {self.depth}, {self.width}, {self.K}")
        if self.nside < 2 ** (self.depth - 1):
            raise ValueError(f"nside {self.nside} cannot be halved {self.depth - 1} times")
        if self.lmax % 2 or self.lmax < 2:
            raise ValueError(f"lmax must be an even integer >= 2, got {self.lmax}")

    @property
    def hemisphere(self) -> bool:
        return self.variant in ("shd", "shd-tv")

    @property
    def kernel_size(self) -> int:
        return 1 if self.variant == "esd" else 3

    @property
    def patch_multiple(self) -> int:
        """Spatial sizes fed to the network must be multiples of this."""
        return 2 ** (0 if self.variant == "esd" else self.spatial_levels)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def with_variant(self, variant: str) -> "NetworkConfig":
        return replace(self, variant=variant)


class DeconvNet(nn.Module):
    """Map normalised signals to WM fODF SH and isotropic fractions.

    Parameters
    ----------
    config : NetworkConfig
    directions : ndarray ``(G, 3)``
        Gradient directions in the frame the SH should be expressed in.
    shell_index : ndarray ``(G,)``
        Shell row of each volume.
    input_shells : sequence of int
        Shell rows that become input channels (the non-zero shells).
    n_iso : int
        Number of isotropic tissue fractions to predict (0, or 2 for GM and CSF).
    init_matrix : ndarray ``(S + T, G)``, optional
        A fixed linear deconvolution (e.g. :func:`shdeconv.signal.linear_deconvolution`).
        When given, the network predicts a correction to it: ``wm_sh = D_wm s + head``,
        ``iso = softplus(head_iso + softplus^-1(D_iso s))``, and the last layer starts at zero,
        so optimisation starts from the regularised least-squares solution.

    ``forward(signal)``: ``signal`` ``[B, G, X, Y, Z]`` -> ``(wm_sh [B, S, X, Y, Z],
    iso [B, T, X, Y, Z] or None)``. X, Y, Z must be multiples of ``config.patch_multiple``.
    """

    def __init__(self, config: NetworkConfig, directions, shell_index, input_shells, n_iso: int = 0,
                 init_matrix=None):
        super().__init__()
        self.config = config
        self.n_iso = int(n_iso)
        hemi = config.hemisphere
        to_grid = signal_to_grid_matrix(directions, shell_index, list(input_shells), config.nside, hemi)
        self.register_buffer("to_grid", torch.as_tensor(to_grid, dtype=torch.float32), persistent=False)
        to_sh = grid_to_sh_matrix(config.nside, hemi, config.lmax)
        self.register_buffer("to_sh", torch.as_tensor(np.array(to_sh), dtype=torch.float32), persistent=False)
        self.unet = SphericalUNet(
            in_channels=len(input_shells),
            out_channels=1 + self.n_iso,
            nside=config.nside,
            depth=config.depth,
            width=config.width,
            K=config.K,
            hemisphere=hemi,
            kernel_size=config.kernel_size,
            impl=config.impl,
            spatial_levels=0 if config.kernel_size == 1 else config.spatial_levels,
        )
        if init_matrix is not None:
            init = torch.as_tensor(np.asarray(init_matrix), dtype=torch.float32)
            if init.shape[0] != to_sh.shape[0] + self.n_iso:
                raise ValueError(f"init_matrix has {init.shape[0]} rows, expected {to_sh.shape[0] + self.n_iso}")
            self.register_buffer("init_matrix", init, persistent=False)
            # start exactly at the linear solution: zero the head's spherical weights and bias
            # (not its radial weights: the product theta * radial would sit on a saddle)
            torch.nn.init.zeros_(self.unet.head.theta)
            if self.unet.head.bias is not None:
                torch.nn.init.zeros_(self.unet.head.bias)
        else:
            self.init_matrix = None

    def forward(self, signal: torch.Tensor):
        x = torch.einsum("cvg,bgxyz->bcvxyz", self.to_grid, signal)
        y = self.unet(x)  # [B, 1 + T, V, X, Y, Z]
        wm_sh = torch.einsum("sv,bvxyz->bsxyz", self.to_sh, y[:, 0])
        iso_logit = y[:, 1:].mean(2) if self.n_iso else None
        if self.init_matrix is not None:
            lin = torch.einsum("pg,bgxyz->bpxyz", self.init_matrix, signal)
            s = wm_sh.shape[1]
            wm_sh = wm_sh + lin[:, :s]
            if self.n_iso:
                start = lin[:, s:].clamp(1e-3, 10.0)
                iso_logit = iso_logit + start + torch.log(-torch.expm1(-start))  # softplus^-1
        iso = F.softplus(iso_logit) if self.n_iso else None
        return wm_sh, iso

    def extra_repr(self) -> str:
        c = self.config
        return f"variant={c.variant}, nside={c.nside}, lmax={c.lmax}, n_iso={self.n_iso}"
