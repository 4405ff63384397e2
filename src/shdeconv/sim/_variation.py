r"""Departures from the clean phantom that real scans have and the fitting model does not.

:class:`PhantomVariation` switches them on; all are off by default and then the phantom is
the clean one, bit for bit. They draw from their own random stream (``[seed, 41]``), so a
phantom with a variation has the same geometry, fractions and noise draws as without it.

- **Fibre dispersion** (``dispersion_deg``): every fibre becomes a fan of
  ``DISPERSION_SAMPLES`` sticks whose directions deviate from it by an angle drawn from a
  Rayleigh law of scale ``dispersion_deg`` (small-angle Watson), azimuth uniform. The signal is
  their mean; the truth keeps the fibre's own direction.
- **Diffusivity jitter** (``diffusivity_jitter``): every fibre's axial and radial diffusivity
  and the GM-like diffusivity are multiplied, voxel by voxel, by independent log-normal factors
  :math:`e^{s z}`, :math:`z \sim N(0, 1)`, ``s = diffusivity_jitter`` (radial kept below axial).
- **Spatially correlated noise** (``noise_fwhm``, voxels): the two Gaussian noise channels are
  smoothed over space by a Gaussian kernel of that FWHM and rescaled so that each voxel's noise
  keeps the standard deviation :math:`\sigma` (as after k-space filtering, partial Fourier or
  parallel-imaging reconstruction). The Rician magnitude is taken after smoothing.
- **Receive bias field** (``bias_field``): the noise-free signal of every volume is multiplied
  by a smooth field :math:`1 + a\,g(x)`, ``a = bias_field``, with :math:`g` a random quadratic
  polynomial of the normalised voxel coordinates scaled to :math:`\max |g| = 1` over the volume.
  The noise is not, so the local SNR varies by the same factor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .._options import OptionError, ValidatedConfig

__all__ = ["DISPERSION_SAMPLES", "PhantomVariation"]

#: sticks per fibre that model its dispersion
DISPERSION_SAMPLES = 24
_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


@dataclass(frozen=True)
class PhantomVariation(ValidatedConfig):
    """Which departures from the clean phantom to simulate (module docstring); all 0 = none."""

    dispersion_deg: float = 0.0
    diffusivity_jitter: float = 0.0
    noise_fwhm: float = 0.0
    bias_field: float = 0.0

    def __post_init__(self):
        self._non_negative("dispersion_deg", "diffusivity_jitter", "noise_fwhm", "bias_field")
        if self.dispersion_deg > 45:
            raise OptionError(f"dispersion_deg must be at most 45, got {self.dispersion_deg!r}")
        if self.bias_field >= 1:
            raise OptionError(f"bias_field must be below 1 (the field must stay positive), got {self.bias_field!r}")

    @property
    def active(self) -> bool:
        return any(v > 0 for v in asdict(self).values())

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def rng(seed: int) -> np.random.Generator:
        """The variations' own random stream (independent of the clean phantom's draws)."""
        return np.random.default_rng([int(seed), 41])


def disperse(dirs: np.ndarray, fractions: np.ndarray, lpar: np.ndarray, lperp: np.ndarray,
             spread_deg: float, rng: np.random.Generator):
    """Replace every fibre by ``DISPERSION_SAMPLES`` sticks around it.

    ``dirs`` ``(N, K, 3)`` unit vectors, ``fractions``, ``lpar``, ``lperp`` ``(N, K)`` ->
    the same arrays with ``K * DISPERSION_SAMPLES`` fibres, each stick carrying
    ``1 / DISPERSION_SAMPLES`` of its fibre's fraction and its diffusivities.
    """
    n, k, _ = dirs.shape
    m = DISPERSION_SAMPLES
    u = dirs[:, :, None, :]
    helper = np.where(np.abs(u[..., :1]) < 0.9, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))
    e1 = np.cross(u, helper)
    e1 /= np.maximum(np.linalg.norm(e1, axis=-1, keepdims=True), 1e-12)
    e2 = np.cross(u, e1)
    theta = np.radians(spread_deg) * rng.rayleigh(1.0, (n, k, m, 1))
    psi = rng.uniform(0.0, 2.0 * np.pi, (n, k, m, 1))
    sticks = np.cos(theta) * u + np.sin(theta) * (np.cos(psi) * e1 + np.sin(psi) * e2)
    sticks = np.where(np.linalg.norm(u, axis=-1, keepdims=True) > 0, sticks, 0.0)

    def spread(a):
        return np.repeat(a, m, axis=1)

    return sticks.reshape(n, k * m, 3), spread(fractions) / m, spread(lpar), spread(lperp)


def jitter_diffusivities(lpar: np.ndarray, lperp: np.ndarray, d_gm: np.ndarray, sd: float,
                         rng: np.random.Generator):
    """Log-normal per-voxel factors on ``lpar``, ``lperp`` ``(N, K)`` and ``d_gm`` ``(N,)``."""
    lpar = lpar * np.exp(sd * rng.standard_normal(lpar.shape))
    lperp = np.minimum(lperp * np.exp(sd * rng.standard_normal(lperp.shape)), 0.9 * lpar)
    d_gm = d_gm * np.exp(sd * rng.standard_normal(d_gm.shape))
    return lpar, lperp, d_gm


def smooth_noise(noise: np.ndarray, shape: tuple[int, int, int], fwhm: float) -> np.ndarray:
    """Gaussian-smooth ``noise`` ``(prod(shape), G)`` over space, keeping its standard deviation.

    Periodic boundaries (the noise field is stationary, so every voxel keeps the variance);
    axes of length 1 are left alone; the rescaling is the kernel's own energy.
    """
    sigma = fwhm * _FWHM_TO_SIGMA
    out = noise.reshape(*shape, -1)
    gain = 1.0
    for axis, size in enumerate(shape):
        if size < 2:
            continue
        out = gaussian_filter1d(out, sigma, axis=axis, mode="wrap")
        radius = int(4.0 * sigma + 0.5)
        impulse = np.zeros(2 * radius + 1)
        impulse[radius] = 1.0
        gain *= float(np.sum(gaussian_filter1d(impulse, sigma, mode="constant") ** 2))
    return (out / np.sqrt(gain)).reshape(noise.shape)


def bias_field(shape: tuple[int, int, int], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth positive field ``(prod(shape),)``: ``1 + amplitude * g``, ``max |g| = 1``."""
    axes = [np.linspace(-1.0, 1.0, s) if s > 1 else np.zeros(1) for s in shape]
    x = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    lin = rng.normal(size=3)
    quad = rng.normal(size=(3, 3))
    g = x @ lin + 0.5 * np.einsum("ni,ij,nj->n", x, quad + quad.T, x)
    g = g - g.mean()
    return 1.0 + amplitude * g / max(float(np.abs(g).max()), 1e-12)
