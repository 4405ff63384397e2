r"""Deconvolution networks: signal -> (hemi)sphere grid -> U-Net -> WM fODF SH + tissue fractions.

Variants (docs/method.md, sections 4, 5 and 7):

==========  ===========  =============  =================================
variant     sphere       spatial kernel  loss
==========  ===========  =============  =================================
``esd``     full sphere  none (1x1x1)   reconstruction + nonneg + sparsity
``rtesd``   full sphere  3x3x3          same
``shd``     hemisphere   3x3x3          same
``shd-tv``  hemisphere   3x3x3          same + spatial total variation
==========  ===========  =============  =================================

Heads (``NetworkConfig.head``): ``"softplus"``, as published, passes the last layer's WM
channel through a Softplus on the grid (a non-negative fODF at every grid point) and projects
it to SH up to ``lmax`` (16 by default) while the response stops at ``response_lmax`` (8):
the orders in between are decided by the priors alone. ``"linear"`` adds the last layer to a
linear deconvolution of the signal up to ``response_lmax`` (the head of the models trained
before the published head; kept so they load and predict as before).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._options import OptionError, ValidatedConfig, check_even_order, check_precision
from ..nn._chebyshev import n_pixels
from ..signal._grid import grid_directions, grid_to_sh_matrix, signal_to_grid_matrix
from ..sphere import n_coeffs, sh_matrix
from ._unet import SphericalUNet

__all__ = ["HEADS", "INPUTS", "NETWORK_SCALES", "PRECISION_DTYPES", "VARIANTS", "DeconvNet", "NetworkConfig",
           "grid_anisotropy", "neighbourhood_coherence"]

VARIANTS = ("esd", "rtesd", "shd", "shd-tv")
#: Named network sizes (HEALPix nside, U-Net depth, channels at the top level, Chebyshev order
#: K): ``"laptop"``, the default, and ``"published"``, the network of the SHD paper.
NETWORK_SCALES = {"laptop": {"nside": 8, "depth": 2, "width": 8, "K": 3},
                  "published": {"nside": 8, "depth": 4, "width": 32, "K": 5}}
#: What the U-Net sees: ``"signal"``, each non-zero shell resampled on the grid (one channel per
#: shell, tied to an acquisition), or ``"linear"``, the linear-deconvolution fODF on the grid (one
#: channel, the same for every acquisition: what a network shared by many subjects needs).
INPUTS = ("signal", "linear")
HEADS = ("softplus", "linear")
#: Starting values of the Softplus head: the fODF of a unit WM fraction spread evenly
#: (1 / 4 pi on the sphere) and an isotropic fraction of 0.1.
_START_FODF, _START_ISO = 1.0 / (4.0 * np.pi), 0.1
#: Smallest value of the linear solution passed through the inverse Softplus (skip, linear head)
_LINEAR_FLOOR = 1e-3


def softplus_inverse(y: torch.Tensor) -> torch.Tensor:
    r""":math:`\log(e^y - 1)`, elementwise, for ``y > 0``."""
    return y + torch.log(-torch.expm1(-y))


#: ``(a, b)`` of the gate's weight of the spatial path, ``sigmoid(a (c - b))``, set from the
#: anisotropy-weighted order-2 coherence ``c`` of white-matter voxels in the training phantoms
#: rather than learned: among unrelated neighbours (voxel-wise sets) its 90th percentile is
#: 0.25-0.27 at every scheme and SNR (zero mean, sd ~0.18: a mean of inner products of unit
#: vectors in the 5 dimensions of order 2); inside bundles its 25th percentile is 0.54 at the
#: lowest (15 directions, SNR 10) and 0.72-0.95 elsewhere. ``b`` is halfway between 0.26 and
#: 0.54 and ``a`` gives the spatial path under 5% of the first and over 95% of the second.
#: Learned on a training set of as many voxel-wise as spatial phantoms, the threshold drifted
#: to 0.71 and sent most bundle voxels at low SNR to the voxel-wise path.
GATE = (21.0, 0.40)

#: ``(lo, hi)`` of the ramp that scales the voxel-wise path's share by the voxel's own
#: order-2 anisotropy ``A`` (:func:`grid_anisotropy` of the linear fODF): 0 below ``lo``, 1
#: above ``hi``. Set from the training phantoms: grey matter and CSF (true WM fraction < 0.2)
#: have ``A`` at most 0.04 at their 90th percentile for 30 or more directions (0.06 at 15
#: directions, SNR 10), white matter with 2 or 3 fibres at least 0.05 at its 5th percentile.
#: Without it, grey matter beside a bundle (incoherent: its neighbours have no orientation)
#: took the voxel-wise path, whose WM fraction there is higher, and tractography no longer
#: stopped at a bundle's end.
GATE_ANISOTROPY = (0.03, 0.07)

#: At inference, voxels whose voxel-wise share is at most this skip that path (the spatial
#: output is kept there, off by at most this fraction of the difference between the paths).
VOXEL_PATH_MIN = 1e-3

#: The torch type of each of :data:`~shdeconv._options.PRECISIONS` (:attr:`DeconvNet.precision`).
PRECISION_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def neighbourhood_coherence(g: torch.Tensor, weighted: bool = False) -> torch.Tensor:
    r"""How much each voxel's fODF shape agrees with its 6 face neighbours'.

    ``g`` ``[B, V, X, Y, Z]``: values on a sphere grid. With :math:`a_x` the voxel's values minus
    their mean over the grid and :math:`u_x = a_x / \lVert a_x \rVert` (zero where they are
    constant), :math:`c_x = \sum_{y \in N_x} w_y \langle u_x, u_y \rangle / \sum_{y \in N_x} w_y`
    over the face neighbours inside the volume, with :math:`w_y = 1`, or with ``weighted``
    :math:`w_y = \lVert a_y \rVert` (neighbours without an orientation, such as grey matter
    or CSF beside a bundle's edge, then count for little). Near 1 inside a coherent bundle,
    near 0 among unrelated orientations. Invariant to rotations of the sphere (inner products
    and norms of grid values on an equal-area grid) and to the 48 flips and axis permutations
    of the volume. Returns ``[B, X, Y, Z]``.
    """
    a = g - g.mean(1, keepdim=True)
    norm = a.norm(dim=1, keepdim=True)
    u = a / norm.clamp_min(1e-12)
    w = norm[:, 0] if weighted else torch.ones_like(u[:, 0])
    total = torch.zeros_like(u[:, 0])
    count = torch.zeros_like(total)
    for axis in (1, 2, 3):
        n = total.shape[axis]
        if n < 2:
            continue
        dot = (u.narrow(axis + 1, 0, n - 1) * u.narrow(axis + 1, 1, n - 1)).sum(1)
        for start, other in ((0, 1), (1, 0)):  # the voxel at start, its neighbour at other
            weight = w.narrow(axis, other, n - 1)
            total.narrow(axis, start, n - 1).add_(weight * dot)
            count.narrow(axis, start, n - 1).add_(weight)
    return total / count.clamp_min(1e-12)  # no neighbour (or none with a shape): total is 0


def grid_anisotropy(g: torch.Tensor) -> torch.Tensor:
    r"""Root mean square over the grid of each voxel's values minus their mean.

    ``g`` ``[B, V, X, Y, Z]`` -> ``[B, X, Y, Z]``: :math:`\sqrt{\mathrm{mean}_v (g_v - \bar g)^2}`,
    0 for an isotropic function; on an equal-area grid it approximates the function's
    anisotropic L2 norm over the sphere divided by the sphere's area, whatever the grid's
    resolution, and is invariant to rotations. In units of ``g`` (for the linear fODF of
    b=0-normalised data: signal fraction).
    """
    return (g - g.mean(1, keepdim=True)).pow(2).mean(1).sqrt()


def _linear_iso_logit(fractions: torch.Tensor) -> torch.Tensor:
    """Pre-Softplus value of the linear solution's isotropic fractions, clamped to [floor, 10]."""
    return softplus_inverse(fractions.clamp(_LINEAR_FLOOR, 10.0))


@dataclass(frozen=True)
class NetworkConfig(ValidatedConfig):
    """Architecture settings, validated once. Defaults are sized for a laptop CPU."""

    variant: str = "shd-tv"
    nside: int = 8
    depth: int = 2
    width: int = 8
    K: int = 3
    lmax: int = 16
    spatial_levels: int = 1
    impl: str = "fast"
    inputs: str = "signal"
    head: str = "softplus"
    response_lmax: int = 8
    skip: bool = False
    coherence: bool = False
    gate: bool = False
    coherence_lmax: int = 2
    coherence_weighted: bool = True
    gate_anisotropy: bool = True

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise OptionError(f"unknown model variant {self.variant!r}; expected one of {VARIANTS}")
        if self.inputs not in INPUTS:
            raise OptionError(f"unknown network inputs {self.inputs!r}; expected one of {INPUTS}")
        if self.head not in HEADS:
            raise OptionError(f"unknown head {self.head!r}; expected one of {HEADS}")
        if self.skip and not (self.head == "softplus" and self.inputs == "linear"):
            raise OptionError("skip (the linear solution added before the Softplus) needs the softplus head "
                              "and 'linear' inputs")
        if self.gate and (self.inputs != "linear" or self.kernel_size == 1):
            raise OptionError("gate (a per-voxel blend of a voxel-wise and a spatial path) needs 'linear' inputs "
                              "and a spatial variant")
        if self.coherence and self.inputs != "linear":
            raise OptionError("coherence (a neighbourhood-agreement input channel) needs 'linear' inputs")
        if self.depth < 1 or self.width < 1 or self.K < 1:
            raise OptionError(f"depth, width and K must be positive, got {self.depth}, {self.width}, {self.K}")
        if self.nside < 2 ** (self.depth - 1):
            raise OptionError(f"nside {self.nside} cannot be halved {self.depth - 1} times")
        if not 0 <= self.spatial_levels <= self.depth - 1:
            raise OptionError(f"depth {self.depth} pools {self.depth - 1} times, so spatial_levels "
                              f"{self.spatial_levels} is impossible; use depth >= {self.spatial_levels + 1} "
                              f"or spatial_levels in [0, {self.depth - 1}]")
        for name in ("lmax", "response_lmax", "coherence_lmax"):
            check_even_order(getattr(self, name), name)
        if self.coherence_lmax > self.response_lmax:
            raise OptionError(f"coherence_lmax {self.coherence_lmax} exceeds response_lmax {self.response_lmax}")
        if self.response_lmax > self.lmax:
            raise OptionError(f"response_lmax {self.response_lmax} exceeds the output lmax {self.lmax}")
        pixels = n_pixels(self.nside, self.hemisphere)
        if pixels < n_coeffs(self.lmax):
            raise OptionError(f"nside {self.nside} has {pixels} pixels, too few for the {n_coeffs(self.lmax)} "
                             f"SH coefficients of lmax {self.lmax}; raise nside or lower lmax")

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
    def from_dict(cls, d: dict) -> NetworkConfig:
        """Inverse of :meth:`to_dict`; a dict without ``head`` is a model saved before the
        Softplus head existed: linear head, response at the output's ``lmax``; one without
        ``coherence_lmax`` measured coherence over every order of the linear fODF, one without
        ``coherence_weighted`` weighted every neighbour alike, one without ``gate_anisotropy``
        gated by the coherence alone."""
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if "head" not in d:
            d = {"nside": 4, "lmax": 8, **d, "head": "linear"}
            d.setdefault("response_lmax", d["lmax"])
        if "coherence_lmax" not in d:
            d["coherence_lmax"] = d.get("response_lmax", cls.response_lmax)
        d.setdefault("coherence_weighted", False)
        d.setdefault("gate_anisotropy", False)
        return cls(**d)

    @classmethod
    def at_scale(cls, scale: str, **settings) -> NetworkConfig:
        """The network of the named size in :data:`NETWORK_SCALES`, ``settings`` overriding it
        (``NetworkConfig.at_scale("published", variant="shd")``)."""
        if scale not in NETWORK_SCALES:
            raise OptionError(f"unknown network scale {scale!r}; expected one of {tuple(NETWORK_SCALES)}")
        return cls(**{**NETWORK_SCALES[scale], **settings})

    def with_variant(self, variant: str) -> NetworkConfig:
        return replace(self, variant=variant)


class DeconvNet(nn.Module):
    """Map normalised signals to WM fODF SH and isotropic fractions.

    Parameters
    ----------
    config : NetworkConfig
    directions : ndarray ``(G, 3)``
        Gradient directions in the frame the SH should be expressed in (only for
        ``config.inputs == "signal"``).
    shell_index : ndarray ``(G,)``
        Shell row of each volume (``"signal"`` inputs only).
    input_shells : sequence of int
        Shell rows that become input channels (``"signal"`` inputs only).
    n_iso : int
        Number of isotropic tissue fractions to predict (0; 1 for single-shell data; 2, GM and
        CSF, for multi-shell data).
    init_matrix : ndarray ``(R + T, G)``, optional
        A fixed linear deconvolution (e.g. :func:`shdeconv.signal.linear_deconvolution`) with
        ``R`` the coefficients up to ``config.response_lmax`` and ``T`` = ``n_iso`` or 0. Required
        for ``"linear"`` inputs (or set later with :meth:`set_init_matrix`), which see its WM part.
        With the ``"linear"`` head the network predicts a correction to it:
        ``wm_sh = D_wm s + head``, ``iso = softplus(head_iso + softplus^-1(D_iso s))``, and the
        last layer starts at zero (the regularised least-squares solution).

    Heads, with ``y`` the last layer's output on the grid (``V`` pixels):

    * ``"softplus"``: ``wm_sh = P softplus(y_0)`` with ``P`` ``(S, V)`` the grid's SH
      pseudo-inverse up to ``config.lmax``; ``iso_t = softplus(mean_v y_t)``, for the subject's
      ``T'`` tissues only with ``"linear"`` inputs (a single-shell subject's one isotropic
      tissue is the first of a multi-shell network's GM and CSF).
      With ``config.skip`` the linear solution enters before the Softplus:
      ``wm_sh = P softplus(y_0 + softplus^-1(max(B D_wm s, eps)))`` with ``B`` the SH -> grid
      matrix, and ``iso_t = softplus(mean_v y_t + softplus^-1(clamp(D_iso s)))``, so that the
      network starts at the positive part of the linear solution and stays non-negative.
    * ``"linear"``: ``wm_sh = P y_0 + D_wm s`` (orders up to ``response_lmax``), ``iso`` as above
      around the linear solution's fractions.

    With ``config.coherence`` (``"linear"`` inputs) the U-Net gets a second input channel, the
    :func:`neighbourhood_coherence` of the linear fODF's orders up to ``config.coherence_lmax``,
    constant over the grid: it tells a voxel inside a bundle from one among unrelated
    neighbours, where pooling them would blur (order 2, the voxel's tensor shape, keeps that
    contrast at low SNR, where the noise of the higher orders decorrelates neighbours), each
    neighbour weighted by its anisotropy with ``config.coherence_weighted`` (so that a bundle's
    edge, beside grey matter, still reads as coherent).
    With ``config.gate`` a second U-Net with 1x1x1 kernels (``voxel_unet``, the voxel-wise path)
    is blended into the last layer's output per voxel: ``y = g y_spatial + (1 - g) y_voxel``,
    ``g = sigmoid(a (c - b))`` with ``c`` that coherence and ``(a, b)`` = :data:`GATE` (the
    ``gate`` buffer, saved with the weights).

    ``forward(signal)``: ``signal`` ``[B, G, X, Y, Z]`` -> ``(wm_sh [B, S, X, Y, Z],
    iso [B, T, X, Y, Z] or None)``; ``forward(linear=lin)`` with ``lin = D s`` ``[B, R + T', X, Y, Z]``
    skips the acquisition-specific first step (``"linear"`` inputs; with the ``"linear"`` head
    ``iso`` is None when ``T' = 0``). X, Y, Z must be multiples of ``config.patch_multiple``.
    """

    def __init__(self, config: NetworkConfig, directions=None, shell_index=None, input_shells=(1,),
                 n_iso: int = 0, init_matrix=None):
        super().__init__()
        self.config = config
        self.n_iso = int(n_iso)
        hemi = config.hemisphere
        to_sh = grid_to_sh_matrix(config.nside, hemi, config.lmax)
        self.register_buffer("to_sh", torch.as_tensor(np.array(to_sh), dtype=torch.float32), persistent=False)
        if config.inputs == "signal":
            if directions is None or shell_index is None:
                raise ValueError("'signal' inputs need the acquisition's directions and shell_index")
            to_grid = signal_to_grid_matrix(directions, shell_index, list(input_shells), config.nside, hemi)
            in_channels = len(input_shells)
        else:
            # SH -> grid evaluation of the linear fODF: the same matrix for every acquisition
            to_grid = sh_matrix(grid_directions(config.nside, hemi), config.response_lmax)
            in_channels = 2 if config.coherence else 1
        self.register_buffer("to_grid", torch.as_tensor(np.ascontiguousarray(to_grid), dtype=torch.float32),
                             persistent=False)
        def unet(kernel_size: int) -> SphericalUNet:
            return SphericalUNet(in_channels=in_channels, out_channels=1 + self.n_iso, nside=config.nside,
                                 depth=config.depth, width=config.width, K=config.K, hemisphere=hemi,
                                 kernel_size=kernel_size, impl=config.impl,
                                 spatial_levels=0 if kernel_size == 1 else config.spatial_levels)

        self.unet = unet(config.kernel_size)
        self.voxel_unet = unet(1) if config.gate else None
        # gate: weight of the spatial path sigmoid(a (c - b)), c the neighbourhood coherence; a
        # buffer (saved with the weights), not learned: see GATE
        self.register_buffer("gate", torch.tensor(GATE) if config.gate else None)
        self.register_buffer("gate_anisotropy", torch.tensor(GATE_ANISOTROPY)
                             if config.gate and config.gate_anisotropy else None)
        self.register_buffer("init_matrix", None, persistent=False)
        self._precision, self._float32_tensors = "float32", []
        for net in self.paths:
            self._start(net.head)
        if init_matrix is not None:
            self.set_init_matrix(init_matrix)

    def _start(self, head) -> None:
        config = self.config
        if config.head == "linear" or config.skip:
            # start exactly at the linear solution (its positive part with the skip): zero the
            # head's spherical weights and bias (not its radial weights: the product
            # theta * radial would sit on a saddle)
            torch.nn.init.zeros_(head.theta)
            if head.bias is not None:
                torch.nn.init.zeros_(head.bias)
        else:
            # start every voxel at the same smooth answer: an even fODF of unit WM fraction and
            # isotropic fractions of 0.1 (zero spherical weights; the features still get gradients
            # from the second step on). A Kaiming-random last layer instead starts from per-pixel
            # noise, whose orders up to lmax are spurious peaks the priors take long to remove.
            torch.nn.init.zeros_(head.theta)
            if head.bias is not None:
                with torch.no_grad():
                    head.bias[0] = softplus_inverse(torch.tensor(_START_FODF))
                    head.bias[1:] = softplus_inverse(torch.tensor(_START_ISO))

    @property
    def paths(self) -> tuple[SphericalUNet, ...]:
        """The networks whose outputs are blended: the spatial one, and the voxel-wise one when gated."""
        return (self.unet,) if self.voxel_unet is None else (self.unet, self.voxel_unet)

    @property
    def chebyshev(self) -> str:
        """How every path's convolutions apply the Chebyshev polynomials (``"sparse"``: the
        recursion, training's setting; ``"dense"``: the projector, faster without gradients);
        see :attr:`SphericalUNet.chebyshev`."""
        return self.unet.chebyshev

    @chebyshev.setter
    def chebyshev(self, value: str) -> None:
        for net in self.paths:
            net.chebyshev = value

    @property
    def precision(self) -> str:
        """The floating-point format the U-Nets compute in: ``"float32"`` (the default) or
        ``"bfloat16"``, for inference only.

        In bfloat16 the paths' weights, geometry buffers and activations are bfloat16 (8
        significant bits, float32's range; products accumulate in float32), which halves their
        memory traffic and, on CPUs with bfloat16 instructions (AVX512-BF16, AMX) and on GPUs,
        runs the matrix products faster. The linear deconvolution, the gate and the head stay
        float32: the paths' input is cast to bfloat16 and their output back. A forward pass
        with gradients enabled raises. Setting ``"float32"`` again restores the float32 weights
        exactly (they are kept aside meanwhile).
        """
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        if check_precision(value) == self._precision:
            return

        def cast(t: torch.Tensor) -> bool:  # sparse Laplacians stay float32 (no bfloat16 sparse products)
            return t.is_floating_point() and t.layout == torch.strided

        if value == "bfloat16":
            kept = self._float32_tensors = []

            def lower(t: torch.Tensor) -> torch.Tensor:
                if not cast(t):
                    return t
                kept.append(t.data)  # the float32 tensor itself, not the parameter that will hold bfloat16
                return t.to(torch.bfloat16)

            for net in self.paths:
                net._apply(lower)
        else:
            kept = iter(self._float32_tensors)
            for net in self.paths:
                net._apply(lambda t: next(kept).to(t.device) if cast(t) else t)
            self._float32_tensors = []
        self._precision = value

    def _run_path(self, net: SphericalUNet, x: torch.Tensor) -> torch.Tensor:
        """``net(x)`` in :attr:`precision`, returned as float32."""
        if self._precision == "float32":
            return net(x)
        if torch.is_grad_enabled():
            raise RuntimeError(f"DeconvNet.precision = {self._precision!r} is for inference: "
                               "run it under torch.no_grad() or set precision = 'float32'")
        return net(x.to(PRECISION_DTYPES[self._precision])).float()

    @property
    def n_coeffs(self) -> int:
        """SH coefficients of the output fODF (up to ``config.lmax``)."""
        return self.to_sh.shape[0]

    @property
    def n_input_coeffs(self) -> int:
        """WM rows of the linear deconvolution (up to ``config.response_lmax``)."""
        return n_coeffs(self.config.response_lmax)

    def set_init_matrix(self, init_matrix) -> None:
        """Use a subject's linear deconvolution ``(R + T, G)`` (``T`` = ``n_iso`` or 0)."""
        init = torch.as_tensor(np.asarray(init_matrix), dtype=torch.float32, device=self.to_sh.device)
        r = self.n_input_coeffs
        if self.config.inputs == "signal":
            allowed = (r + self.n_iso,)
        elif self.config.head == "softplus":  # the subject's tissues: the first T of the network's
            allowed = tuple(range(r, r + self.n_iso + 1))
        else:
            allowed = (r, r + self.n_iso)
        if init.dim() != 2 or init.shape[0] not in allowed:
            raise ValueError(f"init_matrix has {init.shape[0]} rows, expected "
                             + " or ".join(str(a) for a in sorted(set(allowed), reverse=True)))
        self.init_matrix = init

    def forward(self, signal: torch.Tensor | None = None, *, linear: torch.Tensor | None = None):
        if linear is None:
            if signal is None:
                raise TypeError("forward needs a signal or linear=")
            if self.init_matrix is not None and (self.config.inputs == "linear" or self.config.head == "linear"):
                linear = torch.einsum("pg,bgxyz->bpxyz", self.init_matrix, signal)
        if self.config.inputs == "linear":
            if linear is None:
                raise ValueError("a 'linear'-input network needs set_init_matrix() before forward(signal)")
            x = torch.einsum("vs,bsxyz->bvxyz", self.to_grid, linear[:, : self.n_input_coeffs]).unsqueeze(1)
            if self.config.coherence or self.config.gate:
                k = n_coeffs(self.config.coherence_lmax)
                low = x[:, 0] if k == self.n_input_coeffs else torch.einsum(
                    "vs,bsxyz->bvxyz", self.to_grid[:, :k], linear[:, :k])
                coherence = neighbourhood_coherence(low, weighted=self.config.coherence_weighted)
                if self.gate_anisotropy is not None:
                    lo, hi = self.gate_anisotropy
                    anisotropic = ((grid_anisotropy(low) - lo) / (hi - lo)).clamp(0, 1)
            if self.config.coherence:
                x = torch.cat([x, coherence[:, None, None].expand_as(x)], 1)
        else:
            if signal is None:
                raise ValueError("a 'signal'-input network needs the signal")
            x = torch.einsum("cvg,bgxyz->bcvxyz", self.to_grid, signal)
        y = self._run_path(self.unet, x)  # [B, 1 + T, V, X, Y, Z]
        if self.voxel_unet is not None:
            share = 1 - torch.sigmoid(self.gate[0] * (coherence - self.gate[1]))  # [B, X, Y, Z]
            if self.gate_anisotropy is not None:
                share = share * anisotropic
            y = self._add_voxel_path(y, x, share)
        if self.config.head == "softplus":
            # "linear" inputs carry the subject's tissues (the first T' of the network's)
            r = self.n_input_coeffs
            t = self.n_iso if linear is None else min(self.n_iso, linear.shape[1] - r)
            pre, iso_logit = y[:, 0], y[:, 1:1 + t].mean(2)
            if self.config.skip:
                pre = pre + softplus_inverse(x[:, 0].clamp_min(_LINEAR_FLOOR))
                iso_logit = iso_logit + _linear_iso_logit(linear[:, r:r + t])
            wm_sh = torch.einsum("sv,bvxyz->bsxyz", self.to_sh, F.softplus(pre))
            return wm_sh, (F.softplus(iso_logit) if t else None)
        return self._linear_head(y, linear)

    def _add_voxel_path(self, y: torch.Tensor, x: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
        """``y + share (voxel_unet(x) - y)``: ``y`` ``[B, O, V, X, Y, Z]``, ``x`` ``[B, C, V, X, Y, Z]``,
        ``share`` ``[B, X, Y, Z]``.

        The voxel-wise path mixes no voxels, so without gradients it runs only on the voxels
        whose share exceeds :data:`VOXEL_PATH_MIN`, gathered as one row of voxels: in a
        coherent bundle or in grey matter it costs nothing.
        """
        if torch.is_grad_enabled():
            return y + share[:, None, None] * (self._run_path(self.voxel_unet, x) - y)
        where = (share > VOXEL_PATH_MIN).nonzero(as_tuple=True)
        if not where[0].numel():
            return y
        rows = x.permute(0, 3, 4, 5, 1, 2)[where]  # [N, C, V]
        n = rows.shape[0]
        if self._precision != "float32":
            # bfloat16 products go through oneDNN, which compiles and caches a kernel per shape:
            # N rounded up to a multiple of 64 keeps the shapes (and the cache) few
            rows = F.pad(rows, (0, 0, 0, 0, 0, -n % 64))
        path = self._run_path(self.voxel_unet, rows.permute(1, 2, 0)[None, :, :, :, None, None])[0, :, :, :n, 0, 0]
        out = y.permute(0, 3, 4, 5, 1, 2)  # a view: [B, X, Y, Z, O, V]
        spatial = out[where]
        out[where] = spatial + share[where][:, None, None] * (path.permute(2, 0, 1) - spatial)
        return y

    def _linear_head(self, y: torch.Tensor, linear: torch.Tensor | None):
        r = self.n_input_coeffs
        wm_sh = torch.einsum("sv,bvxyz->bsxyz", self.to_sh, y[:, 0])
        if linear is not None:
            wm_sh = torch.cat([wm_sh[:, :r] + linear[:, :r], wm_sh[:, r:]], 1)
        if not self.n_iso or (linear is not None and linear.shape[1] == r):
            return wm_sh, None
        iso_logit = y[:, 1:].mean(2)
        if linear is not None:
            iso_logit = iso_logit + _linear_iso_logit(linear[:, r:])
        return wm_sh, F.softplus(iso_logit)

    def extra_repr(self) -> str:
        c = self.config
        return (f"variant={c.variant}, inputs={c.inputs}, head={c.head}, nside={c.nside}, lmax={c.lmax}, "
                f"response_lmax={c.response_lmax}, skip={c.skip}, coherence={c.coherence}, gate={c.gate}, "
                f"coherence_lmax={c.coherence_lmax}, coherence_weighted={c.coherence_weighted}, "
                f"gate_anisotropy={c.gate_anisotropy}, "
                f"n_iso={self.n_iso}")
