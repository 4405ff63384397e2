"""A brain-sized synthetic volume for whole-brain speed (and accuracy) measurements.

Geometry: a lobulated ellipsoidal brain (about 350k voxels in a 90 x 108 x 90 grid at 2 mm), a
cortical GM ribbon, CSF ventricles and outer CSF, and white matter whose fibre directions follow
smooth random fields (one field everywhere in WM, a second crossing field in about a third of
it). Signals come from the same multi-tensor model as the other phantoms, computed in chunks so
memory stays at a few GB even for 270 directions.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.ndimage import gaussian_filter

from ._phantom import _S0, GENERATOR_VERSION, MAX_FIBRES, Phantom, default_affine
from ._schemes import acquisition_scheme
from ._signal import TISSUE_S0, add_rician_noise, tensor_signal

__all__ = ["brain_phantom", "BRAIN_SHAPE"]

logger = logging.getLogger(__name__)

BRAIN_SHAPE = (90, 108, 90)


def _smooth_field(rng, shape, sigma, channels):
    f = rng.normal(size=(channels, *shape))
    return np.stack([gaussian_filter(c, sigma, mode="wrap") for c in f], -1)


def brain_phantom(shape: tuple[int, int, int] = BRAIN_SHAPE, scheme: str = "clinical", snr: float | None = 20.0,
                  seed: int = 0, *, chunk: int = 20000) -> Phantom:
    """A whole-brain-sized phantom (see the module docstring); ``Phantom`` as the other generators."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in shape)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"), -1)
    radius = np.sqrt(((grid / np.array([0.89, 0.93, 0.93])) ** 2).sum(-1))
    radius = radius * (1 + 0.06 * _smooth_field(rng, shape, 4, 1)[..., 0] / 0.03)  # lobulation
    mask = radius < 1.0
    ventricles = np.sqrt(((grid - [0, 0.05, 0.05]) ** 2 / np.array([0.03, 0.12, 0.04])).sum(-1)) < 1.0
    gm = np.clip((radius - 0.78) / 0.12, 0, 1) * mask
    csf = np.clip((radius - 0.95) / 0.05, 0, 1) * mask
    csf = np.where(ventricles & mask, 1.0, csf)
    gm = np.minimum(gm, 1 - csf)
    wm = np.clip(1 - gm - csf, 0, 1) * mask
    f1 = _smooth_field(rng, shape, 6, 3)
    f2 = _smooth_field(rng, shape, 6, 3)
    f2 -= (f2 * f1).sum(-1, keepdims=True) * f1 / (f1 * f1).sum(-1, keepdims=True) * 0.5  # wide crossings
    second = gaussian_filter(rng.normal(size=shape), 5, mode="wrap")
    second = (second > np.quantile(second, 0.66)) & (wm > 0.5)
    share = rng.uniform(0.3, 0.5, size=shape)
    affine = default_affine(2.0, shape)
    idx = np.flatnonzero(mask.reshape(-1))
    n = len(idx)
    dirs = np.zeros((n, MAX_FIBRES, 3))
    fr = np.zeros((n, MAX_FIBRES))
    dirs[:, 0] = f1.reshape(-1, 3)[idx]
    dirs[:, 1] = f2.reshape(-1, 3)[idx]
    dirs /= np.maximum(np.linalg.norm(dirs, axis=-1, keepdims=True), 1e-12)
    dirs = dirs @ affine[:3, :3].T
    dirs /= np.maximum(np.linalg.norm(dirs, axis=-1, keepdims=True), 1e-12)
    w, two, sh = wm.reshape(-1)[idx], second.reshape(-1)[idx], share.reshape(-1)[idx]
    fr[:, 0] = np.where(two, w * (1 - sh), w)
    fr[:, 1] = np.where(two, w * sh, 0.0)
    dirs[fr == 0] = 0.0
    lpar = rng.uniform(1.5e-3, 2.0e-3, size=(n, MAX_FIBRES))
    lperp = rng.uniform(0.2e-3, 0.45e-3, size=(n, MAX_FIBRES))
    d_gm = rng.uniform(0.7e-3, 0.9e-3, size=n)
    bvals, gdirs = acquisition_scheme(scheme, seed=seed)
    sigma = 0.0 if snr is None else _S0 / float(snr)
    dwi = np.zeros((int(np.prod(shape)), len(bvals)), dtype=np.float32)
    for a in range(0, n, chunk):
        b = slice(a, min(a + chunk, n))
        s = tensor_signal(bvals, gdirs, dirs[b], fr[b], lpar[b], lperp[b], gm.reshape(-1)[idx][b],
                          csf.reshape(-1)[idx][b], d_gm[b], s0=_S0)
        dwi[idx[b]] = add_rician_noise(s, sigma, rng)
    full_dirs = np.zeros((int(np.prod(shape)), MAX_FIBRES, 3))
    full_fr = np.zeros((int(np.prod(shape)), MAX_FIBRES))
    full_dirs[idx], full_fr[idx] = dirs, fr
    n_fib = (full_fr > 0).sum(1).reshape(shape)
    meta = {"kind": "brain", "scheme": scheme, "snr": snr, "seed": int(seed), "shape": list(shape),
            "generator_version": GENERATOR_VERSION, "s0": _S0, "sigma": sigma, "tissue_s0": dict(TISSUE_S0)}
    logger.info("brain phantom %s, scheme %s: %d voxels in the mask", shape, scheme, n)
    return Phantom(dwi=dwi.reshape(*shape, -1), bvals=bvals, directions_world=gdirs, affine=affine, mask=mask,
                   peak_dirs=full_dirs.reshape(*shape, MAX_FIBRES, 3),
                   peak_fractions=full_fr.reshape(*shape, MAX_FIBRES), n_fibres=n_fib.astype(np.int64),
                   gm=gm, csf=csf, wm=wm, meta=meta)
