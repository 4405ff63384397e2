r"""Synthetic phantoms with known fibres: spatial (curved bundles) and voxel-wise.

Spatial phantom
---------------
Geometry lives in voxel-index coordinates and is drawn from the seed:

- several smooth bundles: sinusoidal tubes and circular arcs with random in-plane orientation,
  curvature, radius and a slow through-plane undulation (so fibres leave the slice plane),
- one kissing pair (two arcs touching tangentially),
- one fanning bundle (a cone whose fibres diverge from an apex),
- a brain mask (super-ellipse in plane), CSF-like tissue in a rim at the mask margin and in an
  ellipsoidal ventricle, GM-like tissue wherever white matter is absent.

The tube cross-section is elliptic, stretched through-plane so that bundles cover most slices of
a thin slab; the partial-volume weight of a bundle falls linearly from 1 to 0 over one voxel at
its boundary. Within a voxel the fibres of all bundles are merged when nearly parallel
(< ``merge_deg``), fibres with a small share are given to the GM compartment, and at most 3 are
kept. The signal is then generated from exactly this truth with the multi-compartment tensor
model of :mod:`shdeconv.sim._signal` (not the SH-convolution fitting model).

Voxel-wise phantom
------------------
Independent voxels with 1, 2 or 3 fibres in equal numbers (ISBI 2013 / ESD style): random
orientations, pairwise crossing angles uniform in [30, 90] degrees, fractions of at least 0.2
of the white matter, small random GM/CSF fractions.

Bundle truth (spatial phantom only)
-----------------------------------
Every bundle also gets a volume and two end regions, for scoring tractograms
(:mod:`shdeconv.evaluation._tractometry`). These add no random draw: the phantom's arrays are
the same with or without them.

- **Volume**: the voxels where the bundle's partial-volume weight, after the brain mask and the
  CSF share have cut it (the white matter really there), is at least ``BUNDLE_MIN_WEIGHT``.
  A volume cut into several 26-connected pieces (a bundle crossing the ventricle, or leaving
  and re-entering the brain) gives one bundle per piece (names ending in ``a``, ``b``, ...);
  pieces shorter than ``MIN_PIECE_LENGTH`` voxels along the bundle are left out.
- **End regions**: where the bundle's fibres end. A voxel of the bundle's tube (geometric
  weight at least ``BUNDLE_MIN_WEIGHT``, any tissue left, within 2 voxels of the piece) is in
  the *second* end region if following its fibre direction forward (along the centreline's
  order; away from the apex for the fan) for at most ``END_MARGIN`` voxels leaves the tissue
  (reaches a voxel whose white-matter share, brain mask times one minus CSF, is below 0.5 and
  below the start's), the grid (the slab's faces) or the bundle's length (the centreline's last
  point; the cone's far end); in the *first* end region if following it backward does (the
  first point; the apex). Where both happen the nearer one wins. End regions therefore cover
  the caps where a bundle meets the CSF rim or ends in the brain, the ventricle's edge, and the
  slab faces that the through-plane undulation makes the fibres cross. Labels: 0 none,
  1 first end, 2 second end.

All truth directions are unit vectors in the world frame (the frame of the gradient directions
and of every file written); ``affine`` maps voxel indices to world millimetres.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from ._schemes import acquisition_scheme
from ._signal import TISSUE_S0, add_rician_noise, tensor_signal
from ._variation import (
    PhantomVariation,
    bias_field,
    disperse,
    jitter_diffusivities,
    smooth_noise,
)

__all__ = [
    "BUNDLE_MIN_WEIGHT",
    "END_MARGIN",
    "GENERATOR_VERSION",
    "SIZES",
    "Phantom",
    "default_affine",
    "spatial_phantom",
    "voxelwise_phantom",
]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "1"
MAX_FIBRES = 3
#: named sizes: spatial shape and number of voxel-wise voxels
SIZES = {
    "default": {"spatial": (32, 32, 10), "voxelwise": 3000},
    "quick": {"spatial": (16, 16, 6), "voxelwise": 300},
}
_S0 = 100.0
#: a voxel belongs to a bundle's volume where the bundle's partial-volume weight is at least this
BUNDLE_MIN_WEIGHT = 0.5
#: depth of a bundle's end regions: voxels from where its fibres end, along the fibres
END_MARGIN = 1.5
#: pieces of a bundle's volume shorter than this along the bundle (voxels) are left out of the truth
MIN_PIECE_LENGTH = 4.0


@dataclass
class Phantom:
    """A simulated acquisition and its ground truth.

    Attributes
    ----------
    dwi : ndarray, shape ``(X, Y, Z, G)``, float32
        Noisy diffusion-weighted signal.
    bvals : ndarray, shape ``(G,)``
    directions_world : ndarray, shape ``(G, 3)``
        Unit world-frame gradient directions, zeros for b=0.
    affine : ndarray, shape ``(4, 4)``
    mask : ndarray, shape ``(X, Y, Z)``, bool
    peak_dirs : ndarray, shape ``(X, Y, Z, 3, 3)``
        World-frame unit fibre directions sorted by fraction, zeros where absent.
    peak_fractions : ndarray, shape ``(X, Y, Z, 3)``
        Volume fraction of every fibre (of the whole voxel).
    n_fibres : ndarray, shape ``(X, Y, Z)``, int
    gm, csf, wm : ndarray, shape ``(X, Y, Z)``
        Tissue fractions; ``wm`` is the sum of ``peak_fractions``; ``gm + csf + wm = 1``
        inside the mask.
    meta : dict
        ``kind``, ``scheme``, ``snr``, ``seed``, ``shape``, ``generator_version``, ``s0``,
        ``sigma``.
    bundle_masks : ndarray, shape ``(X, Y, Z, B)``, bool, or None
        Volume of every bundle (spatial phantom only; None for the voxel-wise phantom).
    bundle_ends : ndarray, shape ``(X, Y, Z, B)``, int8, or None
        End regions of every bundle: 0 none, 1 first end, 2 second end (they may reach up to
        2 voxels beyond ``bundle_masks``, into the partial-volume fringe).
    bundle_names : tuple of str
        Name of every bundle (``sine1``, ``arc``, ``kissing1a``, ``fan``, ...), length ``B``.
    """

    dwi: np.ndarray
    bvals: np.ndarray
    directions_world: np.ndarray
    affine: np.ndarray
    mask: np.ndarray
    peak_dirs: np.ndarray
    peak_fractions: np.ndarray
    n_fibres: np.ndarray
    gm: np.ndarray
    csf: np.ndarray
    wm: np.ndarray
    meta: dict = field(default_factory=dict)
    bundle_masks: np.ndarray | None = None
    bundle_ends: np.ndarray | None = None
    bundle_names: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(X, Y, Z)``."""
        return tuple(self.mask.shape)

    def crossing_angles(self) -> np.ndarray:
        """Smallest pairwise fibre angle (degrees) per voxel, NaN below 2 fibres, ``(X, Y, Z)``."""
        return _min_pair_angle(self.peak_dirs, self.n_fibres)


def default_affine(voxel_size: float = 2.0, shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """Plain diagonal affine (positive determinant) centred on the volume, shape ``(4, 4)``."""
    a = np.diag([voxel_size, voxel_size, voxel_size, 1.0])
    if shape is not None:
        a[:3, 3] = -voxel_size * (np.asarray(shape, dtype=np.float64) - 1) / 2
    return a


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.where(n > 0, v / np.where(n > 0, n, 1.0), 0.0)


def _min_pair_angle(dirs: np.ndarray, n: np.ndarray) -> np.ndarray:
    out = np.full(n.shape, np.nan)
    k = dirs.shape[-2]
    for i in range(k):
        for j in range(i + 1, k):
            ok = n > j
            c = np.abs(np.sum(dirs[..., i, :] * dirs[..., j, :], axis=-1))
            ang = np.degrees(np.arccos(np.clip(c, 0.0, 1.0)))
            out = np.where(ok, np.fmin(out, ang), out)
    return out


def _check_common(scheme: str, snr: float | None, affine: np.ndarray | None, shape) -> np.ndarray:
    if snr is not None and not snr > 0:
        raise ValueError(f"snr must be positive (or None for no noise), got {snr}")
    if affine is None:
        return default_affine(2.0, shape)
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError(f"affine must be a non-singular 4x4 matrix, got {affine.tolist()}")
    return affine


def _vox_to_world_dirs(t_vox: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Physical (world) unit direction of voxel-index tangents ``(..., 3)``."""
    return _unit(t_vox @ affine[:3, :3].T)


def _finish(kind, shape, scheme, snr, seed, affine, mask, dirs_w, fracs, lpar, lperp, gm, csf,
            d_gm, rng, extra_meta=None, variation: PhantomVariation | None = None) -> Phantom:
    """Signal from the truth arrays (flattened over voxels) and assemble the Phantom."""
    bvals, gdirs = acquisition_scheme(scheme, seed=seed)
    nvox = int(np.prod(shape))
    n_fib = (fracs > 0).sum(axis=1)
    variation = variation or PhantomVariation()
    vrng = PhantomVariation.rng(seed)
    s_dirs, s_fracs, s_lpar, s_lperp, s_dgm = dirs_w, fracs, lpar, lperp, d_gm
    if variation.diffusivity_jitter > 0:
        s_lpar, s_lperp, s_dgm = jitter_diffusivities(lpar, lperp, d_gm, variation.diffusivity_jitter, vrng)
    if variation.dispersion_deg > 0:
        s_dirs, s_fracs, s_lpar, s_lperp = disperse(s_dirs, s_fracs, s_lpar, s_lperp, variation.dispersion_deg, vrng)
    sig = tensor_signal(bvals, gdirs, s_dirs, s_fracs, s_lpar, s_lperp, gm, csf, s_dgm, s0=_S0)
    if variation.bias_field > 0:
        sig *= bias_field(shape, variation.bias_field, vrng)[:, None]
    sig[~mask.reshape(-1)] = 0.0
    sigma = 0.0 if snr is None else _S0 / float(snr)
    correlate = None
    if variation.noise_fwhm > 0:
        def correlate(noise):
            return smooth_noise(noise, shape, variation.noise_fwhm)
    sig = add_rician_noise(sig, sigma, rng, correlate)
    wm = fracs.sum(axis=1)
    meta = {"kind": kind, "scheme": scheme, "snr": snr, "seed": int(seed), "shape": list(shape),
            "generator_version": GENERATOR_VERSION, "s0": _S0, "sigma": sigma,
            "tissue_s0": dict(TISSUE_S0)}
    if variation.active:
        meta["variation"] = variation.to_dict()
    meta.update(extra_meta or {})
    ph = Phantom(
        dwi=sig.reshape(*shape, -1).astype(np.float32),
        bvals=bvals, directions_world=gdirs, affine=affine, mask=mask,
        peak_dirs=dirs_w.reshape(*shape, MAX_FIBRES, 3),
        peak_fractions=fracs.reshape(*shape, MAX_FIBRES),
        n_fibres=n_fib.reshape(shape).astype(np.int64),
        gm=gm.reshape(shape), csf=csf.reshape(shape), wm=wm.reshape(shape), meta=meta)
    counts = np.bincount(ph.n_fibres[mask], minlength=4)
    logger.info("%s phantom %s, scheme %s, snr %s, seed %d: voxels by fibre count %s (%d in "
                "mask of %d)", kind, shape, scheme, snr, seed, counts.tolist(), mask.sum(), nvox)
    return ph


# ---------------------------------------------------------------------------------------------
# spatial phantom
# ---------------------------------------------------------------------------------------------

@dataclass
class _Bundle:
    points: np.ndarray  # (M, 3) voxel coordinates of the centre curve
    tangents: np.ndarray  # (M, 3) unit tangents (voxel frame)
    radius: float
    lambda_par: float
    lambda_perp: float
    fan: tuple | None = None  # (apex (3,), axis (3,), r0, tan_alpha, length)
    kind: str = "bundle"  # sine, arc, kissing or fan (names the bundle)


def _z_wave(s: np.ndarray, z_size: int, rng: np.random.Generator) -> np.ndarray:
    zc = (z_size - 1) / 2 + rng.uniform(-0.15, 0.15) * z_size
    amp = rng.uniform(0.0, 0.25) * z_size
    lam = rng.uniform(1.0, 2.0) * 32.0
    return zc + amp * np.sin(2 * np.pi * s / lam + rng.uniform(0, 2 * np.pi))


def _sampled(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.gradient(points, axis=0)
    return points, _unit(t)


def _sine_bundle(shape, rng, theta) -> tuple[np.ndarray, np.ndarray]:
    x, y, z = shape
    length = 1.6 * np.hypot(x, y)
    s = np.arange(-length / 2, length / 2, 0.25)
    d = np.array([np.cos(theta), np.sin(theta)])
    nrm = np.array([-d[1], d[0]])
    p = np.array([(x - 1) / 2, (y - 1) / 2]) + rng.uniform(-0.25, 0.25, 2) * np.array([x, y])
    amp = rng.uniform(0.0, 0.1) * x
    lam = rng.uniform(1.5, 2.5) * x
    off = amp * np.sin(2 * np.pi * s / lam + rng.uniform(0, 2 * np.pi))
    xy = p + s[:, None] * d + off[:, None] * nrm
    pts = np.column_stack([xy, _z_wave(s * 32.0 / max(x, 1), z, rng)])
    return _sampled(pts)


def _arc(centre_xy, radius, phi0, span, z, rng) -> tuple[np.ndarray, np.ndarray]:
    ds = 0.25 / radius
    phi = np.arange(phi0 - span, phi0 + span, ds)
    xy = centre_xy + radius * np.column_stack([np.cos(phi), np.sin(phi)])
    pts = np.column_stack([xy, _z_wave(radius * phi * 32.0 / max(2 * radius, 1), z, rng)])
    return _sampled(pts)


def _arc_bundle(shape, rng, theta):
    x, y, z = shape
    r = rng.uniform(0.6, 1.2) * x
    ang = theta + np.pi / 2 + np.pi * rng.integers(0, 2)  # tangent at the middle along theta
    mid = np.array([(x - 1) / 2, (y - 1) / 2]) + rng.uniform(-0.2, 0.2, 2) * np.array([x, y])
    centre = mid - r * np.array([np.cos(ang), np.sin(ang)])
    return _arc(centre, r, ang, np.pi / 2, z, rng)


def _kissing_pair(shape, rng, theta):
    x, y, z = shape
    p = np.array([(x - 1) / 2, (y - 1) / 2]) + rng.uniform(-0.2, 0.2, 2) * np.array([x, y])
    ang = theta + np.pi / 2  # common tangent at the touching point along theta
    n = np.array([np.cos(ang), np.sin(ang)])
    r1, r2 = rng.uniform(0.35, 0.7, 2) * x
    a = _arc(p + r1 * n, r1, ang + np.pi, 0.4 * np.pi, z, rng)
    b = _arc(p - r2 * n, r2, ang, 0.4 * np.pi, z, rng)
    return a, b


def _bundle_weights(b: _Bundle, coords: np.ndarray, zstretch: float):
    """Partial-volume weight ``(N,)`` and voxel-frame fibre direction ``(N, 3)`` of a bundle."""
    if b.fan is not None:
        apex, axis, r0, tan_a, length = b.fan
        rel = coords - apex
        s = rel @ axis
        perp = rel - s[:, None] * axis
        perp[:, 2] /= zstretch
        dist = np.linalg.norm(perp, axis=1)
        r = r0 + np.clip(s, 0, None) * tan_a
        w = np.clip(r + 0.5 - dist, 0.0, 1.0) * ((s >= 0) & (s <= length))
        perp[:, 2] *= zstretch
        dirs = _unit(axis + perp / r[:, None] * tan_a)
        return w, dirs
    scl = np.array([1.0, 1.0, 1.0 / zstretch])
    tree = cKDTree(b.points * scl)
    dist, idx = tree.query(coords * scl)
    w = np.clip(b.radius + 0.5 - dist, 0.0, 1.0)
    return w, b.tangents[idx]


def _draw_bundles(shape, rng) -> list[_Bundle]:
    x = shape[0]
    scale = x / 32.0

    def diff():
        return rng.uniform(1.5e-3, 2.0e-3), rng.uniform(0.2e-3, 0.5e-3)

    bundles = []
    # free bundles with mid-course orientations spread over 180 degrees, so that their
    # crossings (whose area grows like 1/sin(angle)) are not dominated by shallow angles
    n_free = int(rng.integers(3, 5))
    theta0 = rng.uniform(0, np.pi)
    for k in rng.permutation(n_free):
        theta = theta0 + np.pi * (k + rng.uniform(-0.12, 0.12)) / n_free
        maker = _sine_bundle if rng.random() < 0.6 else _arc_bundle
        pts, tan = maker(shape, rng, theta)
        kind = "sine" if maker is _sine_bundle else "arc"
        bundles.append(_Bundle(pts, tan, rng.uniform(1.5, 3.5) * max(scale, 0.6), *diff(), kind=kind))
    # kissing pair and fan oriented between free bundles (at least 90/n_free degrees away)
    between = theta0 + np.pi * (rng.permutation(n_free)[:2] + 0.5) / n_free
    for pts, tan in _kissing_pair(shape, rng, between[0]):
        bundles.append(_Bundle(pts, tan, rng.uniform(1.5, 2.5) * max(scale, 0.6), *diff(), kind="kissing"))
    # fanning cone: apex inside the volume, axis in-plane-ish
    theta = between[1] + np.pi * rng.integers(0, 2)
    axis = _unit(np.array([np.cos(theta), np.sin(theta), rng.uniform(-0.2, 0.2)]))
    centre = (np.asarray(shape, dtype=np.float64) - 1) / 2
    apex = centre - axis * 0.35 * x + np.r_[rng.uniform(-0.15, 0.15, 2) * x, 0.0]
    fan = (apex, axis, 1.0 * max(scale, 0.6), np.tan(np.radians(rng.uniform(10, 20))), 0.6 * x)
    bundles.append(_Bundle(np.zeros((1, 3)), np.zeros((1, 3)), 0.0, *diff(), fan=fan, kind="fan"))
    return bundles


def _bundle_names(bundles: list[_Bundle], n_pieces: list[int]) -> list[str]:
    """One name per kept piece: the kind, its rank within the kind when several (``sine2``) and a
    letter when the bundle is cut into several pieces (``arc1b``)."""
    names, seen = [], {}
    for b, n in zip(bundles, n_pieces):
        seen[b.kind] = seen.get(b.kind, 0) + 1
        total = sum(c.kind == b.kind for c in bundles)
        base = b.kind if total == 1 else f"{b.kind}{seen[b.kind]}"
        names += [base] if n == 1 else [base + "abcdefghijklmnopqrstuvwxyz"[j % 26] for j in range(n)]
    return names


def _exit_distance(b: _Bundle, coords: np.ndarray, dirs: np.ndarray, sign: float, tissue: np.ndarray,
                   shape: tuple[int, int, int], pos: np.ndarray) -> np.ndarray:
    """Distance (voxels, ``inf`` beyond ``END_MARGIN``) over which the fibres of the voxels
    ``coords`` ``(M, 3)``, followed along ``sign * dirs`` ``(M, 3)``, leave the tissue (reach a
    voxel whose ``tissue`` ``(N,)`` is below 0.5 and below the starting voxel's), the grid, or the
    bundle's length (``pos`` ``(M,)``: arc length for a tube, axial position for the fan)."""
    out = np.full(len(coords), np.inf)
    length = b.fan[4] if b.fan is not None else np.linalg.norm(np.diff(b.points, axis=0), axis=1).sum()
    t3 = tissue.reshape(shape)
    here = t3[tuple(np.rint(coords).astype(np.int64).T)]
    for k in np.arange(0.25, END_MARGIN + 1e-9, 0.25)[::-1]:
        u = coords + sign * k * dirs
        vox = np.rint(u).astype(np.int64)
        gone = ~np.all((vox >= 0) & (vox < np.asarray(shape)), axis=1)
        inside = ~gone
        gone[inside] = t3[tuple(vox[inside].T)] < np.minimum(0.5, here[inside])
        if b.fan is not None:
            along = (u - b.fan[0]) @ b.fan[1]
        else:
            along = pos + sign * k
        gone |= (along < 0.0) | (along > length)
        out[gone] = k
    return out


def _bundle_regions(b: _Bundle, coords: np.ndarray, weight: np.ndarray, dirs: np.ndarray,
                    tissue: np.ndarray, shape: tuple[int, int, int],
                    zstretch: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """Volume ``(N,)`` bool and end labels ``(N,)`` int8 (0, 1, 2) of every piece of one bundle.

    ``coords`` ``(N, 3)`` are the voxel-index coordinates of the flattened grid, ``weight``
    ``(N,)`` and ``dirs`` ``(N, 3)`` the bundle's geometric partial-volume weight (before the
    tissue factor) and voxel-frame fibre direction, ``tissue`` ``(N,)`` the share of the voxel
    open to white matter (brain mask times one minus the CSF map). See the module docstring for
    the rules; pieces are ordered along the bundle.
    """
    from scipy import ndimage

    vol = weight * tissue >= BUNDLE_MIN_WEIGHT
    if not vol.any():
        return []
    labels, n = ndimage.label(vol.reshape(shape), structure=np.ones((3, 3, 3)))
    # the tube's voxels with any tissue left, each given to the nearest piece (within 2 voxels)
    dist, near = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    owner = np.where(dist <= 2.0, labels[tuple(near)], 0).reshape(-1)
    cand = np.nonzero((weight >= BUNDLE_MIN_WEIGHT) & (tissue > 0) & (owner > 0))[0]
    if b.fan is not None:
        pos = (coords[cand] - b.fan[0]) @ b.fan[1]
    else:
        scl = np.array([1.0, 1.0, 1.0 / zstretch])
        arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(b.points, axis=0), axis=1))]
        pos = arc[cKDTree(b.points * scl).query(coords[cand] * scl)[1]]
    fwd = _exit_distance(b, coords[cand], dirs[cand], 1.0, tissue, shape, pos)
    bwd = _exit_distance(b, coords[cand], dirs[cand], -1.0, tissue, shape, pos)
    lab = np.where(np.isfinite(fwd) & (fwd <= bwd), 2, np.where(np.isfinite(bwd), 1, 0)).astype(np.int8)
    labels = labels.reshape(-1)
    pieces = []
    for k in range(1, n + 1):
        piece = labels == k
        mine = owner[cand] == k
        along = pos[mine]
        if along.size == 0 or along.max() - along.min() < MIN_PIECE_LENGTH:
            continue
        ends = np.zeros(len(coords), dtype=np.int8)
        ends[cand[mine]] = lab[mine]
        pieces.append((along.min(), piece, ends))
    pieces.sort(key=lambda p: p[0])
    return [(piece, ends) for _, piece, ends in pieces]


def _merge_voxel(w, d, lp, lq, merge_cos):
    """Merge nearly parallel fibres of one voxel; returns lists sorted by weight."""
    order = np.argsort(-w)
    groups: list[list] = []
    for k in order:
        for g in groups:
            if abs(d[k] @ g[1]) >= merge_cos:
                sgn = 1.0 if d[k] @ g[1] >= 0 else -1.0
                tot = g[0] + w[k]
                g[1] = _unit(g[0] * g[1] + w[k] * sgn * d[k])
                g[2] = (g[0] * g[2] + w[k] * lp[k]) / tot
                g[3] = (g[0] * g[3] + w[k] * lq[k]) / tot
                g[0] = tot
                break
        else:
            groups.append([w[k], d[k].copy(), lp[k], lq[k]])
    groups.sort(key=lambda g: -g[0])
    return groups


def spatial_phantom(shape: tuple[int, int, int] | None = None, scheme: str = "clinical",
                    snr: float | None = 20.0, seed: int = 0, *, size: str = "default",
                    affine: np.ndarray | None = None, merge_deg: float = 15.0,
                    min_fraction: float = 0.1, min_relative: float = 0.2,
                    variation: PhantomVariation | None = None) -> Phantom:
    """Curved, crossing, kissing and fanning bundles in GM/CSF-like tissue.

    Parameters
    ----------
    shape : tuple of 3 int, optional
        Spatial shape ``(X, Y, Z)``; default from ``size`` (``(32, 32, 10)`` or quick
        ``(16, 16, 6)``).
    scheme : str
        Acquisition scheme name, see :func:`~shdeconv.sim.acquisition_scheme`.
    snr : float or None
        SNR of the pure-WM b=0 signal; ``None`` for noise-free.
    seed : int
        Seed of the geometry, the diffusivities, the scheme's directions and the noise.
    size : {"default", "quick"}
        Named size used when ``shape`` is None.
    affine : ndarray, shape ``(4, 4)``, optional
        Voxel-to-world affine; default 2 mm isotropic diagonal.
    merge_deg : float
        Fibres of different bundles closer than this angle are merged into one.
    min_fraction, min_relative : float
        Fibres whose fraction is below ``min_fraction`` of the voxel or below ``min_relative``
        times the voxel's largest fibre become GM-like tissue.
    variation : PhantomVariation, optional
        Dispersion, diffusivity jitter, correlated noise, bias field (:mod:`shdeconv.sim._variation`);
        none by default. The truth is the same with or without.

    Returns
    -------
    Phantom
        With ``bundle_masks``, ``bundle_ends`` and ``bundle_names`` (see the module docstring).
    """
    if shape is None:
        if size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
        shape = SIZES[size]["spatial"]
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive ints, got {shape}")
    affine = _check_common(scheme, snr, affine, shape)
    rng = np.random.default_rng([int(seed), 17])
    x, y, z = shape
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape],
                                indexing="ij"), axis=-1).reshape(-1, 3)
    n = grid.shape[0]
    centre = (np.asarray(shape, dtype=np.float64) - 1) / 2

    # mask and CSF: super-ellipse in plane, CSF rim and a ventricle blob
    semi = np.maximum(0.47 * np.array([x, y]), 1.0)
    rho = (np.abs((grid[:, :2] - centre[:2]) / semi) ** 4).sum(axis=1) ** 0.25
    mask = rho <= 1.0
    csf_map = np.clip((rho - 0.8) / 0.2, 0.0, 1.0)
    v_c = centre + np.r_[rng.uniform(-0.2, 0.2, 2) * [x, y], 0.0]
    v_r = np.r_[rng.uniform(0.08, 0.15, 2) * [x, y], max(0.4 * z, 1.0)]
    v_rho = np.linalg.norm((grid - v_c) / v_r, axis=1)
    csf_map = np.maximum(csf_map, np.clip((1.3 - v_rho) / 0.6, 0.0, 1.0))
    csf_map[~mask] = 0.0

    # bundles
    zstretch = max(1.0, 0.6 * z / 2.5)
    bundles = _draw_bundles(shape, rng)
    nb = len(bundles)
    w = np.zeros((n, nb))
    d = np.zeros((n, nb, 3))
    for i, b in enumerate(bundles):
        w[:, i], d[:, i] = _bundle_weights(b, grid, zstretch)
    tissue = mask * (1.0 - csf_map)
    regions = [_bundle_regions(b, grid, w[:, i], d[:, i], tissue, shape, zstretch)
               for i, b in enumerate(bundles)]
    w *= tissue[:, None]
    lp = np.array([b.lambda_par for b in bundles])[None, :] * rng.uniform(0.95, 1.05, (n, nb))
    lq = np.array([b.lambda_perp for b in bundles])[None, :] * rng.uniform(0.95, 1.05, (n, nb))
    d_w = _vox_to_world_dirs(d, affine)

    purity = rng.uniform(0.85, 1.0, n)
    wsum = w.sum(axis=1)
    wm_total = np.minimum(wsum, 1.0) * purity
    share = np.where(wsum[:, None] > 0, w / np.where(wsum > 0, wsum, 1.0)[:, None], 0.0)
    frac_b = share * wm_total[:, None]

    fracs = np.zeros((n, MAX_FIBRES))
    dirs = np.zeros((n, MAX_FIBRES, 3))
    lpar = np.full((n, MAX_FIBRES), 1.7e-3)
    lperp = np.full((n, MAX_FIBRES), 0.3e-3)
    merge_cos = np.cos(np.radians(merge_deg))
    present = frac_b > 0
    for v in np.nonzero(present.any(axis=1))[0]:
        ks = np.nonzero(present[v])[0]
        groups = _merge_voxel(frac_b[v, ks], d_w[v, ks], lp[v, ks], lq[v, ks], merge_cos)
        top = groups[0][0]
        kept = [g for g in groups if g[0] >= min_fraction and g[0] >= min_relative * top]
        for j, g in enumerate(kept[:MAX_FIBRES]):
            fracs[v, j], dirs[v, j], lpar[v, j], lperp[v, j] = g
    wm = fracs.sum(axis=1)
    iso = np.where(mask, 1.0 - wm, 0.0)
    csf = iso * csf_map
    gm = iso - csf
    d_gm = rng.uniform(0.7e-3, 0.9e-3, n)
    mask3 = mask.reshape(shape)
    ph = _finish("spatial", shape, scheme, snr, seed, affine, mask3, dirs, fracs, lpar, lperp,
                 gm, csf, d_gm, rng, {"n_bundles": nb}, variation)
    pieces = [p for r in regions for p in r]
    ph.bundle_masks = np.zeros((n, len(pieces)), dtype=bool)
    ph.bundle_ends = np.zeros((n, len(pieces)), dtype=np.int8)
    for j, (vol, ends) in enumerate(pieces):
        ph.bundle_masks[:, j], ph.bundle_ends[:, j] = vol, ends
    ph.bundle_masks = ph.bundle_masks.reshape(*shape, len(pieces))
    ph.bundle_ends = ph.bundle_ends.reshape(*shape, len(pieces))
    ph.bundle_names = tuple(_bundle_names(bundles, [len(r) for r in regions]))
    return ph


# ---------------------------------------------------------------------------------------------
# voxel-wise phantom
# ---------------------------------------------------------------------------------------------

def _random_unit(rng, n) -> np.ndarray:
    return _unit(rng.normal(size=(n, 3)))


def _at_angle(u: np.ndarray, angle_deg: np.ndarray, rng) -> np.ndarray:
    """Unit vectors at ``angle_deg`` from ``u`` ``(N, 3)`` with uniform random azimuth."""
    a = np.where(np.abs(u[:, :1]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
    e1 = _unit(np.cross(u, a))
    e2 = np.cross(u, e1)
    psi = rng.uniform(0, 2 * np.pi, len(u))[:, None]
    t = np.radians(angle_deg)[:, None]
    return _unit(np.cos(t) * u + np.sin(t) * (np.cos(psi) * e1 + np.sin(psi) * e2))


def voxelwise_phantom(n_voxels: int | None = None, scheme: str = "clinical",
                      snr: float | None = 20.0, seed: int = 0, *, size: str = "default",
                      layout: str = "block", affine: np.ndarray | None = None,
                      min_angle: float = 30.0, max_angle: float = 90.0,
                      min_fraction: float = 0.2, variation: PhantomVariation | None = None) -> Phantom:
    """Independent voxels with 1, 2 or 3 fibres in equal numbers.

    Parameters
    ----------
    n_voxels : int, optional
        Number of simulated voxels; default from ``size`` (3000, quick 300).
    scheme, snr, seed, size, affine, variation
        As in :func:`spatial_phantom`.
    layout : {"block", "line"}
        ``"line"``: shape ``(n, 1, 1)``; ``"block"``: the smallest ``(k, k, m)`` block holding
        ``n`` voxels, the extra voxels outside the mask.
    min_angle, max_angle : float
        Range of the pairwise crossing angles (degrees), drawn uniformly.
    min_fraction : float
        Smallest share of a fibre in the white matter of its voxel.

    Returns
    -------
    Phantom
    """
    if n_voxels is None:
        if size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
        n_voxels = SIZES[size]["voxelwise"]
    n_voxels = int(n_voxels)
    if n_voxels < 1:
        raise ValueError(f"n_voxels must be positive, got {n_voxels}")
    if not 0 <= min_fraction <= 1.0 / MAX_FIBRES:
        raise ValueError(f"min_fraction must be in [0, 1/3], got {min_fraction}")
    if layout == "line":
        shape = (n_voxels, 1, 1)
    elif layout == "block":
        k = int(np.ceil(n_voxels ** (1 / 3)))
        shape = (k, k, int(np.ceil(n_voxels / k**2)))
    else:
        raise ValueError(f"layout must be 'block' or 'line', got {layout!r}")
    affine = _check_common(scheme, snr, affine, shape)
    rng = np.random.default_rng([int(seed), 29])
    n = n_voxels
    nf = rng.permutation(np.arange(n) % MAX_FIBRES + 1)

    dirs = np.zeros((n, MAX_FIBRES, 3))
    dirs[:, 0] = _random_unit(rng, n)
    dirs[:, 1] = _at_angle(dirs[:, 0], rng.uniform(min_angle, max_angle, n), rng)
    # third fibre: its angles to both others in [min_angle, max_angle] (rejection sampling)
    todo = np.nonzero(nf == 3)[0]
    for _ in range(1000):
        if todo.size == 0:
            break
        cand = _at_angle(dirs[todo, 0], rng.uniform(min_angle, max_angle, todo.size), rng)
        c1 = np.degrees(np.arccos(np.clip(np.abs((cand * dirs[todo, 1]).sum(1)), 0, 1)))
        ok = (c1 >= min_angle) & (c1 <= max_angle)
        dirs[todo[ok], 2] = cand[ok]
        todo = todo[~ok]
    if todo.size:
        raise RuntimeError(f"could not place a third fibre in {todo.size} voxels")
    live = np.arange(MAX_FIBRES)[None, :] < nf[:, None]
    dirs[~live] = 0.0

    gm = rng.uniform(0.0, 0.2, n)
    csf = rng.uniform(0.0, 0.1, n)
    wm = 1.0 - gm - csf
    raw = rng.dirichlet(np.ones(MAX_FIBRES), n) * live
    raw /= raw.sum(axis=1, keepdims=True)
    share = min_fraction + (1.0 - min_fraction * nf[:, None]) * raw
    fracs = np.where(live, share, 0.0) * wm[:, None]
    order = np.argsort(-fracs, axis=1)
    fracs = np.take_along_axis(fracs, order, axis=1)
    dirs = np.take_along_axis(dirs, order[..., None], axis=1)
    lpar = rng.uniform(1.5e-3, 2.0e-3, (n, MAX_FIBRES))
    lperp = rng.uniform(0.2e-3, 0.5e-3, (n, MAX_FIBRES))
    d_gm = rng.uniform(0.7e-3, 0.9e-3, n)
    # world-frame truth: voxel-frame independent random directions are world directions too
    total = int(np.prod(shape))
    pad = total - n

    def padded(a, fill=0.0):
        return np.concatenate([a, np.full((pad,) + a.shape[1:], fill)], axis=0)

    mask = np.arange(total) < n
    return _finish("voxelwise", shape, scheme, snr, seed, affine, mask.reshape(shape),
                   padded(dirs), padded(fracs), padded(lpar, 1.7e-3), padded(lperp, 0.3e-3),
                   padded(gm), padded(csf), padded(d_gm, 0.8e-3), rng,
                   {"n_voxels": n, "layout": layout}, variation)
