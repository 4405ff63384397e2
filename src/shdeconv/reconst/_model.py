"""DIPY-style API: ``SHDModel(gtab, ...).fit(data, mask)`` (the per-subject fit) and
``SHDPredictModel(gtab).fit(data, mask)`` (the trained network, one pass), returning a fit with
``shm_coeff``.

Directions are taken from the DIPY ``GradientTable`` exactly as given (DIPY's convention),
and ``shm_coeff`` is expressed in that same frame, in ``sh_basis`` (DIPY's default
``descoteaux07`` unless asked otherwise). Files on disk, by contrast, use the MRtrix3 world
frame (see :mod:`shdeconv.io`).

Every variant is fitted to the whole volume at once (the spatial TV term and the networks
couple neighbouring voxels), so unlike DIPY's voxel-wise models ``fit`` must be called on the
volume, not voxel by voxel: use
``fit.peaks()`` instead of ``dipy.direction.peaks_from_model`` (which refits per voxel), and
``fit.shm_coeff`` with ``basis_type=fit.sh_basis, legacy=False`` in DIPY's direction getters.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .._options import OptionError, check_precision, resolve_device
from ..fitting._direct import DirectConfig, fit_direct, linear_start, start_for
from ..fitting._fit import FitConfig, fit_network
from ..fitting._pipeline import FIT_MODELS, default_loss_weights
from ..fitting._subject import (
    acquisition_model,
    amortized_prediction,
    build_network,
    predicted_start,
    prepare_subject,
)
from ..inference import predict_volume
from ..io import B0_THRESHOLD, tensor_conditioning
from ..losses import DeconvLoss, LossWeights
from ..models._deconv import NetworkConfig
from ..signal import Responses
from ..sphere import convert_sh_basis, sh_matrix

__all__ = ["SHDModel", "SHDPredictModel", "SHDFit"]


class SHDModel:
    """The unsupervised SHD objective, fitted per subject (``shdeconv fit``).

    Parameters
    ----------
    gtab : dipy.core.gradients.GradientTable
    responses : Responses, optional
        Estimated from the data at ``fit`` time when omitted.
    variant : {'direct', 'shd-tv', 'shd', 'rtesd', 'esd'}
        ``'direct'`` (default, as ``shdeconv fit``): the objective minimised over free
        per-voxel values, set by ``direct_config``; or a network, set by ``net_config`` and
        ``fit_config``. A config of the other kind is refused, not ignored.
    sh_order_max : int
        Maximum SH order of the fODF (DIPY's name for lmax; default 16). The response stops at
        order 8: higher orders are set by the priors.
    sh_basis : {'descoteaux07', 'tournier07'}
        Basis of ``SHDFit.shm_coeff`` (both with ``legacy=False``).

    The data are fitted as given: ``shdeconv fit`` denoises with MP-PCA first by default where
    neighbouring voxels' fibres agree (:func:`shdeconv.fitting.choose_denoise`), this API leaves
    that to the caller (``dipy.denoise.localpca.mppca``).
    """

    def __init__(self, gtab, responses: Responses | None = None, *, variant: str = "direct", sh_order_max: int = 16,
                 sh_basis: str = "descoteaux07", net_config: NetworkConfig | None = None,
                 fit_config: FitConfig | None = None, direct_config: DirectConfig | None = None,
                 loss_weights: LossWeights | None = None, device: str = "auto", progress: bool = False):
        _check_gtab(gtab, sh_basis)
        if variant not in FIT_MODELS:
            raise OptionError(f"unknown variant {variant!r}; expected one of {FIT_MODELS}")
        self.gtab = gtab
        self.responses = responses
        self.variant = variant
        self.sh_order_max = int(sh_order_max)
        self.sh_basis = sh_basis
        self.net_config = self.fit_config = self.direct_config = None
        if variant == "direct":
            if net_config is not None or fit_config is not None:
                raise OptionError("net_config and fit_config set a network; variant 'direct' takes direct_config")
            self.direct_config = direct_config or DirectConfig(lmax=self.sh_order_max)
            if self.direct_config.lmax != self.sh_order_max:
                raise OptionError(f"direct_config.lmax {self.direct_config.lmax} differs from sh_order_max "
                                  f"{self.sh_order_max}")
            if self.direct_config.init == "csd":
                raise OptionError(f"init {self.direct_config.init!r} needs the raw data files: use "
                                  f"`shdeconv fit --init {self.direct_config.init}`")
            self.response_lmax = NetworkConfig().response_lmax
            init = "random"
        else:
            if direct_config is not None:
                raise OptionError(f"direct_config sets variant 'direct'; the network {variant!r} takes net_config "
                                  "and fit_config")
            self.net_config = (net_config or NetworkConfig(lmax=self.sh_order_max)).with_variant(variant)
            self.fit_config = fit_config or FitConfig()
            self.response_lmax = self.net_config.response_lmax
            init = self.fit_config.init
        self.loss_weights = loss_weights or default_loss_weights(variant, init=init)
        self.device = resolve_device(device)
        self.progress = progress

    def fit(self, data: np.ndarray, mask: np.ndarray | None = None) -> "SHDFit":
        """Fit ``data`` ``(X, Y, Z, G)`` inside ``mask`` (default: every voxel with b=0 signal):
        ``direct`` in one optimisation, a network by training it and predicting every voxel."""
        data, mask = _volume(data, mask, len(self.gtab.bvals))
        subject = prepare_subject(data, self.gtab.bvals, self.gtab.bvecs, mask, responses=self.responses,
                                  lmax=self.response_lmax)
        if self.variant == "direct":
            fm, _, _ = acquisition_model(subject.bvals, subject.directions, subject.responses, self.response_lmax)
            start = (predicted_start(subject, self.device)
                     if start_for(self.direct_config.init, subject.responses.bvals) == "predict"
                     else linear_start(fm, subject.signal))
            wm, iso_maps, result = fit_direct(DeconvLoss(fm, self.loss_weights, lmax=self.sh_order_max),
                                              subject.signal, subject.mask, self.direct_config,
                                              start_sh=start, device=self.device,
                                              progress=self.progress)
        else:
            torch.manual_seed(self.fit_config.seed)
            net, fm = build_network(subject, self.net_config)
            result = fit_network(net, DeconvLoss(fm, self.loss_weights, lmax=self.sh_order_max), subject.signal,
                                 subject.mask, self.fit_config, device=self.device, progress=self.progress)
            wm, iso_maps = predict_volume(net, subject.signal, subject.mask, tile=self.fit_config.patch_size,
                                          overlap=self.fit_config.tile_overlap, device=self.device)
        coeff = convert_sh_basis(wm, "mrtrix3", self.sh_basis)
        return SHDFit(self, coeff.astype(np.float32), iso_maps, subject.mask, result.history, subject.responses,
                      fm.iso_names)


class SHDPredictModel:
    """A trained amortized network (``shdeconv predict``; default: the shipped one), one pass.

    Seconds to minutes where :class:`SHDModel` optimises; the fODF's order is the network's
    (``sh_order_max``: 8 for the shipped model). ``fit`` returns an :class:`SHDFit` like
    :class:`SHDModel`'s, with an empty ``history``.

    Parameters
    ----------
    gtab : dipy.core.gradients.GradientTable
        Directions as given, taken as the voxel axes' frame (DIPY's convention): the network's
        spatial prior relates each fibre's direction to its neighbours' positions.
    responses : Responses, optional
        Estimated from the data at ``fit`` time when omitted.
    model : str or Path, optional
        A ``model.pt`` from ``shdeconv train`` (default: the shipped model), read once.
    sh_basis : {'descoteaux07', 'tournier07'}
        Basis of ``SHDFit.shm_coeff`` (both with ``legacy=False``).
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    precision : {'float32', 'bfloat16'}
        Number format of the network pass (``shdeconv predict --precision``): bfloat16 makes the
        matrix products cheaper on devices with bfloat16 instructions and moves the fODF by
        about 1%.

    The data are used as given (``shdeconv predict --denoise`` denoises first; here that is
    the caller's, e.g. ``dipy.denoise.localpca.mppca``).
    """

    def __init__(self, gtab, responses: Responses | None = None, *, model=None, sh_basis: str = "descoteaux07",
                 device: str = "auto", precision: str = "float32", progress: bool = False):
        from ..models._store import LoadedModel

        _check_gtab(gtab, sh_basis)
        self.precision = check_precision(precision)
        self.gtab = gtab
        self.responses = responses
        self.sh_basis = sh_basis
        self.loaded = LoadedModel.load(model)
        self.sh_order_max = self.loaded.net.config.lmax
        self.response_lmax = self.loaded.net.config.response_lmax
        self.device = resolve_device(device)
        self.progress = progress

    def fit(self, data: np.ndarray, mask: np.ndarray | None = None) -> "SHDFit":
        """Predict ``data`` ``(X, Y, Z, G)`` inside ``mask`` (default: every voxel with b=0 signal)."""
        data, mask = _volume(data, mask, len(self.gtab.bvals))
        subject = prepare_subject(data, self.gtab.bvals, self.gtab.bvecs, mask, responses=self.responses,
                                  lmax=self.response_lmax)
        wm, iso, names = amortized_prediction(subject, self.device, self.loaded, precision=self.precision,
                                              progress=self.progress)
        coeff = convert_sh_basis(wm, "mrtrix3", self.sh_basis)
        return SHDFit(self, coeff.astype(np.float32), iso, subject.mask, [], subject.responses, names)


def _check_gtab(gtab, sh_basis: str) -> None:
    if sh_basis not in ("descoteaux07", "tournier07"):
        raise ValueError(f"sh_basis must be 'descoteaux07' or 'tournier07', got {sh_basis!r}")
    dw = np.asarray(gtab.bvals, float) > B0_THRESHOLD
    if tensor_conditioning(np.asarray(gtab.bvecs, float)[dw]) < 1e-6:
        raise ValueError(f"gtab: its {int(dw.sum())} diffusion-weighted directions cannot determine a diffusion "
                         "tensor (at least 6 distinct axes, not all on one cone such as a plane, are needed)")
    b0s = getattr(gtab, "b0s_mask", None)
    if b0s is not None and np.any(np.asarray(b0s, bool) != ~dw):
        warnings.warn(f"gtab's b0_threshold ({getattr(gtab, 'b0_threshold', '?')}) is not used: these models take "
                      f"b <= {B0_THRESHOLD:g} as b=0 ({int((~dw).sum())} volumes here, {int(np.sum(b0s))} by gtab)",
                      UserWarning, stacklevel=3)


def _volume(data, mask, g: int) -> tuple[np.ndarray, np.ndarray]:
    """``data`` as a float32 volume ``(X, Y, Z, G)`` and its mask (default: all voxels), checked."""
    data = np.asarray(data, dtype=np.float32)
    if data.shape[-1:] != (g,):
        raise ValueError(f"data has {data.shape[-1] if data.ndim else 0} volumes, gtab {g} "
                         f"(data shape {data.shape})")
    if data.ndim != 4:
        raise ValueError(f"data must be a volume (X, Y, Z, {g}), got {data.shape}: these fits use each "
                         f"voxel's neighbours; voxels without neighbours go in as data.reshape(-1, 1, 1, {g})")
    mask = np.ones(data.shape[:3], bool) if mask is None else np.asarray(mask, bool)
    if mask.shape != data.shape[:3]:
        raise ValueError(f"mask shape {mask.shape} does not match the data's {data.shape[:3]}")
    bad = ~np.isfinite(data).all(axis=-1)
    if bad.any():  # as the command line: zeroed (the networks read neighbours) and left out, not spread
        data = np.where(bad[..., None], np.float32(0), data)
        n = int(np.count_nonzero(bad & mask))
        mask = mask & ~bad
        if n:
            warnings.warn(f"{n} voxel{'s' if n > 1 else ''} of the mask hold NaN or Inf: left out of the fit "
                          "(their coefficients are 0)", UserWarning, stacklevel=3)
    return data, mask


class SHDFit:
    """Result of :meth:`SHDModel.fit` and :meth:`SHDPredictModel.fit`.

    Attributes
    ----------
    shm_coeff : ndarray ``(X, Y, Z, S)`` in ``model.sh_basis`` (legacy=False), gtab frame.
    iso : ndarray ``(X, Y, Z, T)`` or None: isotropic fractions (GM, CSF for multi-shell data;
        the single-shell tissues otherwise, with the Softplus head).
    iso_names : tuple of str, their names.
    gm, csf : ndarray ``(X, Y, Z)`` or None, where fitted.
    mask : ndarray ``(X, Y, Z)``.
    history : list of dict, the loss curve.
    responses : Responses, those of this fit (given or estimated from its data).
    """

    def __init__(self, model: SHDModel, shm_coeff, iso, mask, history, responses: Responses,
                 iso_names: tuple[str, ...] = ()):
        self.model = model
        self.shm_coeff = shm_coeff
        self.mask = mask
        self.history = history
        self.responses = responses
        self.iso = iso
        self.iso_names = tuple(iso_names)
        self.gm = iso[..., self.iso_names.index("gm")] if "gm" in self.iso_names else None
        self.csf = iso[..., self.iso_names.index("csf")] if "csf" in self.iso_names else None

    @property
    def sh_basis(self) -> str:
        return self.model.sh_basis

    def _mrtrix_coeff(self) -> np.ndarray:
        if self.sh_basis == "tournier07":
            return self.shm_coeff
        return convert_sh_basis(self.shm_coeff, "descoteaux07", "mrtrix3")

    def odf(self, sphere) -> np.ndarray:
        """fODF amplitudes on a DIPY ``Sphere``: ``(X, Y, Z, n_vertices)``."""
        return self._mrtrix_coeff() @ sh_matrix(np.asarray(sphere.vertices), self.model.sh_order_max).T

    def peaks(self, *, rel_threshold: float | None = None, min_separation_deg: float | None = None,
              max_peaks: int = 3):
        """Peak directions ``(X, Y, Z, P, 3)`` and amplitudes ``(X, Y, Z, P)`` in the gtab frame."""
        from ..direction import sh_peaks

        kw = {k: v for k, v in (("rel_threshold", rel_threshold), ("min_separation_deg", min_separation_deg))
              if v is not None}
        return sh_peaks(self._mrtrix_coeff(), max_peaks=max_peaks, **kw)

    def predict(self, gtab=None, S0: float | np.ndarray = 1.0) -> np.ndarray:
        """Signal predicted by the fitted fODF and fractions for ``gtab`` (default: the model's)."""
        gtab = gtab or self.model.gtab
        bvals = np.asarray(gtab.bvals, float)
        dirs = np.where(bvals[:, None] > B0_THRESHOLD, np.asarray(gtab.bvecs, float), 0.0)
        fm, _, _ = acquisition_model(bvals, dirs, self.responses, self.model.response_lmax,
                                     single_shell=self.iso_names)
        iso = None if self.iso is None else torch.as_tensor(self.iso, dtype=torch.float32)
        with torch.no_grad():
            s = fm(torch.as_tensor(self._mrtrix_coeff(), dtype=torch.float32), iso).numpy()
        return s * np.asarray(S0)[..., None] if np.ndim(S0) else s * S0
