r"""An automatic check of the gradient table's axis order and signs.

A gradient table whose axes are swapped or whose sign is flipped (a wrong FSL/scanner
convention, a converter's bug, an edit by hand) raises no error: every fit runs and the fibre
directions come out mirrored or permuted. As MRtrix3's ``dwigradcheck``,
:func:`check_gradients` tries every table such an error can give and keeps the one under which
the fibre field is most coherent in space.

Candidates: ``b' = M b`` for the FSL bvecs ``b`` with ``M = F P``, ``P`` one of the 6 axis
permutations and ``F`` one of the 4 sign patterns {none, x, y, z}: 24 tables. The other 4 sign
patterns (two or three axes flipped) equal one of these up to the sign of the whole table,
which no antipodally symmetric model (a tensor, an fODF) can tell apart.

One tensor fit serves all 24: under ``b' = M b`` the fitted tensor is ``M D M^T`` and its
principal direction ``M e1``. Each candidate's direction is turned into a physical one
(MRtrix3's frame, :func:`~shdeconv.io.voxel_to_world_matrix`) and then into voxel-index
steps through the affine, so oblique and anisotropic voxels step where the fibre goes.

Criterion: the fibre coherence index (FCI) of Schilling et al. (2019), "A fiber coherence
index for quality control of B-table orientation in diffusion MRI scans", Magnetic Resonance
Imaging 58, 82-89: with the right table a voxel's fibre points at voxels of the same bundle,
with a wrong one it points across bundles. As implemented, for every voxel ``x`` with FA above
``fa_threshold`` (the seeds) and its fibre ``u``:

* the coherence with each voxel ``y`` of the 7 x 7 x 7 block around ``x`` is ``q(x, y) = (u . e(y))^2`` when ``y``
  is a high-FA voxel of the mask, else 0 (the tissue must go on, as in the FCI);
* the candidate's score at ``x`` is ``q`` interpolated (trilinearly over the voxel grid) at the
  points ``x ± r t`` for ``r = 1, 2, 3``, where ``t`` is the candidate's fibre direction in
  index space scaled to reach the next shell of voxels (its largest component is 1). Unlike
  snapping to the 26 neighbours, small changes of direction (a flip of a nearly in-plane
  fibre) move the points, and the three radii add the evidence of where the bundle goes next;
* from each offset's ``q`` its mean over all seeds is subtracted, whatever their fibre. A
  volume's own shape makes some steps coherent by themselves (a few slices thick along z, or
  structures extruded along one axis, are coherent along that axis everywhere); the score is
  the coherence *above* what a step that way gives on average.

The score of a candidate is the mean over the seeds. The verdict compares the best candidate
with the table as given voxel by voxel (the difference is paired: the same seeds, the same
fit), with the standard error of the mean difference from a delete-one-block jackknife over
:data:`JACKKNIFE_BLOCKS`-sided blocks, the largest error over the block sizes that leave
enough blocks (neighbouring voxels share data and bundles, so they are not independent). A
wrong table is reported (``clearly_better``) only when the best candidate is not the given
one, beats it by :data:`Z_MARGIN` standard errors and by :data:`REL_MARGIN` of the spread of
the 24 scores, with at least :data:`MIN_VOXELS` seeds. Calibration (FA > 0.2;
``benchmarks/gradient_check.py``, ``benchmarks/results/gradient_check_cpu.md``):

* quick spatial phantoms (16 x 16 x 6, SNR 20, seeds 0-5) and larger ones (48 x 48 x 16): no
  correct table flagged (0 of 12); of x, y or z flipped and x-y swapped, 16 of 24 and 18 of 24
  flagged. A flip across the phantoms' nearly flat bundles is undone by the best candidate but
  gains only 0.01-0.14 of the spread (not flagged); on the larger ones a flagged in-plane error
  may come with a suggestion that also flips that through-plane axis (3 of 18);
* the whole-brain phantom (90 x 108 x 90 and two smaller grids, seeds 0-2), whose fibres follow
  smooth random fields rather than their own paths, so that no table makes them coherent: no
  correct table flagged (0 of 9; with 4-voxel blocks and z > 2, 7 of 9 were); a wrong table
  there is flagged in 3 of 36 cases, never with the right fix;
* DIPY's real crops with their given tables: ``small_64D`` (10^3 voxels, oblique) ranks the
  given table first; ``small_101D`` (6 x 10 x 10) ranks "swap y-z" first by z 0.8 and 0.22 of
  the spread; ``small_25`` (10 x 8 x 2, 159 seeds) prefers "swap y-z, flip x" by z 2.7 and 0.74
  of the spread, and is left inconclusive by :data:`MIN_VOXELS`: two slices cannot show where
  a fibre goes through the plane. ``small_64D`` with x flipped: z 3.6, 0.55 of the spread.

A table whose fibres all lie in one plane cannot be checked for a flip of the axis across
that plane (the flip changes no fibre); the same holds for every check of this kind.

Shapes: ``data`` ``(X, Y, Z, G)``, ``bvals`` ``(G,)``, ``bvecs`` ``(G, 3)`` (rows = volumes,
FSL voxel convention), ``affine`` ``(4, 4)``, ``mask`` ``(X, Y, Z)``.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np

from ..io import B0_THRESHOLD, MaskedImage, voxel_to_world_matrix
from ..signal._mask import automatic_mask
from ..signal._response import _tensor_fit, _tensor_volumes

__all__ = [
    "JACKKNIFE_BLOCKS",
    "MIN_BLOCKS",
    "MIN_VOXELS",
    "RADII",
    "REL_MARGIN",
    "Z_MARGIN",
    "GradientCheck",
    "candidate_tables",
    "check_gradients",
]

log = logging.getLogger(__name__)

#: The best candidate must beat the given table by this many standard errors (the best of 23
#: alternatives is tested: a one-sided family-wise 5% level, Bonferroni, Phi^-1(1 - 0.05 / 23)) ...
Z_MARGIN = 2.85
#: ... and by this share of the spread (best - worst) of the 24 scores.
REL_MARGIN = 0.3
#: Fewest seed voxels (FA above the threshold) for a verdict; fewer: inconclusive.
MIN_VOXELS = 300
#: Sides, in voxels, of the blocks of the jackknife standard error (the largest error is kept).
JACKKNIFE_BLOCKS = (4, 8, 16)
#: Fewest non-empty blocks for a jackknife at a block side other than the smallest.
MIN_BLOCKS = 30
#: Steps along the fibre, in shells of voxels, at which the coherence is read.
RADII = (1, 2, 3)
#: Side of the blocks of seed voxels drawn when the mask holds more than ``max_voxels``.
_SAMPLE_BLOCK = 10
#: Voxels per tensor-fit chunk (the WLS temporaries are a few ``(N, G)`` float64 arrays).
_FIT_CHUNK = 65536
#: Seeds per chunk when gathering their neighbourhoods (``(n, 343, 3)`` temporaries).
_SEED_CHUNK = 2048

_AXES = "xyz"
_R = max(RADII)
_SIDE = 2 * _R + 1
#: The ``(2R+1)^3`` offsets of the neighbourhood, C order: offset ``o`` is at
#: ``((o0 + R) * SIDE + (o1 + R)) * SIDE + (o2 + R)``.
_OFFSETS = np.array(list(itertools.product(range(-_R, _R + 1), repeat=3)))
_CORNERS = np.array(list(itertools.product((0, 1), repeat=3)))
#: Columns of the 6 face neighbours in ``_OFFSETS``.
_FACES = np.flatnonzero(np.abs(_OFFSETS).sum(axis=1) == 1)


def _perm_label(perm: tuple[int, ...]) -> str:
    moved = [i for i in range(3) if perm[i] != i]
    if not moved:
        return ""
    if len(moved) == 2:
        return f"swap {_AXES[moved[0]]}-{_AXES[moved[1]]}"
    return "permute to " + "-".join(_AXES[p] for p in perm)


def candidate_tables() -> list[tuple[str, np.ndarray]]:
    """The 24 distinct signed permutations ``M`` (``b' = M b``), the identity ("as given") first.

    Labels read as the operations applied to the file's columns in order: the permutation
    (``"swap x-y"``; ``"permute to y-z-x"`` makes the new x column the old y, the new y the old
    z and the new z the old x), then the sign flip of one column of the result (``"flip z"``).

    Returns
    -------
    list of (str, ndarray ``(3, 3)``)
    """
    out = []
    for perm in itertools.permutations(range(3)):
        p = np.zeros((3, 3))
        p[np.arange(3), perm] = 1.0
        for flip in (None, 0, 1, 2):
            f = np.eye(3)
            parts = [_perm_label(perm)]
            if flip is not None:
                f[flip, flip] = -1.0
                parts.append(f"flip {_AXES[flip]}")
            out.append((", ".join(s for s in parts if s) or "as given", f @ p))
    return out


@dataclass
class GradientCheck:
    """The verdict of :func:`check_gradients`.

    Attributes
    ----------
    ranking : list of (str, float)
        Every candidate's label and score (coherence above the per-direction mean), best first;
        ties keep "as given" first.
    given_score : float
        Score of the table as given (NaN when nothing could be scored).
    best_label : str
        Label of the best candidate.
    best_matrix : ndarray ``(3, 3)``
        The signed permutation ``M`` of the best candidate: the suggested bvecs are ``M b``.
    clearly_better : bool
        True when the best candidate is not the given table and beats it by the margins.
    message : str
        One-line verdict.
    n_voxels : int
        Seed voxels scored.
    z_score : float
        Mean voxel-wise gain of the best candidate over the given table, in jackknife standard
        errors (0 when the given table is the best).
    relative_gain : float
        That gain as a share of the spread (best - worst) of the 24 scores.
    neighbour_coherence : float
        How alike the fibres of face-neighbouring voxels are, whatever the table:
        ``(mean (u . v)^2 - 1/3) / (2/3)`` over the pairs of a seed and a face neighbour of FA
        above the threshold, with ``u``, ``v`` their principal directions. 0 for unrelated
        orientations (the mean of ``(u . v)^2`` over random directions is 1/3), 1 for parallel
        ones; NaN without pairs. No table error changes it (one rotation or reflection of every
        direction keeps their inner products).
    neighbour_pairs : int
        Pairs behind ``neighbour_coherence``.
    """

    ranking: list[tuple[str, float]]
    given_score: float
    best_label: str
    best_matrix: np.ndarray
    clearly_better: bool
    message: str
    n_voxels: int = 0
    z_score: float = 0.0
    relative_gain: float = 0.0
    neighbour_coherence: float = float("nan")
    neighbour_pairs: int = 0

    @property
    def suggested_matrix(self) -> np.ndarray:
        """``best_matrix`` when it is clearly better, else the identity (keep the table), ``(3, 3)``."""
        return self.best_matrix.copy() if self.clearly_better else np.eye(3)

    def corrected_bvecs(self, bvecs: np.ndarray) -> np.ndarray:
        """The suggested table in the layout given: ``(G, 3)`` rows or FSL ``(3, G)``.

        ``M b`` with ``M`` = :attr:`suggested_matrix`: the given table, unchanged, unless a
        candidate is clearly better.
        """
        b = np.asarray(bvecs, dtype=np.float64)
        m = self.suggested_matrix
        if b.ndim == 2 and b.shape[1] == 3:
            return b @ m.T + 0.0  # + 0.0: no negative zeros in the written file
        if b.ndim == 2 and b.shape[0] == 3:
            return m @ b + 0.0
        raise ValueError(f"bvecs must have shape (G, 3) or (3, G), got {b.shape}")


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.where(n > 0, v / np.where(n > 0, n, 1.0), 0.0)


class _Fitted:
    """FA and principal direction of the voxels fitted so far, found through an index volume.

    ``row`` ``(X, Y, Z)`` holds each fitted voxel's row in ``fa`` ``(N,)`` and ``e1``
    ``(N, 3)`` (FSL frame of the table as given), -1 elsewhere.
    """

    def __init__(self, data: np.ndarray, bvals: np.ndarray, directions: np.ndarray, mask: np.ndarray):
        self.data, self.mask = data, mask
        self.cols = np.flatnonzero(_tensor_volumes(bvals))
        self.bvals, self.directions = bvals[self.cols], directions[self.cols]
        self.b0 = self.bvals <= B0_THRESHOLD
        self.row = np.full(mask.shape, -1, dtype=np.int64)
        self._fa: list[np.ndarray] = []
        self._e1: list[np.ndarray] = []
        self.n = 0

    def fit(self, region: np.ndarray) -> None:
        """Fit the voxels of the boolean volume ``region`` in the mask that are not yet fitted."""
        flat = np.flatnonzero(region & self.mask & (self.row < 0))
        for i in range(0, flat.size, _FIT_CHUNK):
            part = flat[i:i + _FIT_CHUNK]
            idx = np.unravel_index(part, self.mask.shape)
            s = np.asarray(self.data[idx][:, self.cols], dtype=np.float64)  # (K, G')
            s0 = s[:, self.b0].mean(axis=1)
            ok = np.isfinite(s0) & (s0 > 0) & np.all(np.isfinite(s), axis=1)
            fa, e1 = np.zeros(part.size), np.zeros((part.size, 3))
            if ok.any():
                fa[ok], _, e1[ok] = _tensor_fit(s[ok] / s0[ok, None], self.bvals, self.directions)
            self.row[idx] = self.n + np.arange(part.size)
            self._fa.append(fa)
            self._e1.append(e1)
            self.n += part.size

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._fa:
            return np.zeros(0), np.zeros((0, 3))
        self._fa, self._e1 = [np.concatenate(self._fa)], [np.concatenate(self._e1)]
        return self._fa[0], self._e1[0]


def _seeds(fitted: _Fitted, fa_threshold: float, max_voxels: int, seed: int) -> np.ndarray:
    """High-FA seed voxels (C-order flat indices, sorted), with every voxel within ``R`` of them
    fitted: all of them when the mask holds at most ``max_voxels`` voxels, else those of
    ``_SAMPLE_BLOCK``-sided blocks drawn at random until at least ``max_voxels`` are found."""
    mask = fitted.mask
    shape = mask.shape
    if int(mask.sum()) <= max_voxels:
        fitted.fit(mask)
        fa, _ = fitted.arrays()
        inside = np.flatnonzero(mask)
        return inside[fa[fitted.row.ravel()[inside]] > fa_threshold]
    grid = [range(0, n, _SAMPLE_BLOCK) for n in shape]
    corners = [c for c in itertools.product(*grid)
               if mask[tuple(slice(a, a + _SAMPLE_BLOCK) for a in c)].any()]
    rng = np.random.default_rng(seed)
    found: list[np.ndarray] = []
    n_found = n_tried = pending = 0
    region = np.zeros(shape, dtype=bool)
    batch = np.zeros(shape, dtype=bool)
    order = rng.permutation(len(corners))
    for j, k in enumerate(order):
        block = tuple(slice(a, a + _SAMPLE_BLOCK) for a in corners[k])
        batch[block] = True
        region[tuple(slice(max(a - _R, 0), a + _SAMPLE_BLOCK + _R) for a in corners[k])] = True
        pending += int(mask[block].sum())
        rate = n_found / n_tried if n_tried else 1.0  # high-FA share of the voxels tried so far
        if pending < (max_voxels - n_found) / max(rate, 0.05) and j < len(order) - 1:
            continue
        fitted.fit(region)
        fa, _ = fitted.arrays()
        part = np.flatnonzero(batch & mask)
        hit = part[fa[fitted.row.ravel()[part]] > fa_threshold]
        found.append(hit)
        n_found, n_tried = n_found + hit.size, n_tried + pending
        batch[:], region[:], pending = False, False, 0
        if n_found >= max_voxels:
            break
    return np.sort(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)


def _coherence(seeds: np.ndarray, fitted: _Fitted, fa_threshold: float, to_world: np.ndarray):
    """``q`` ``(S, (2R+1)^3)`` float32: ``(u . e(y))^2`` for every seed and offset whose voxel is a
    fitted high-FA voxel, else 0; the seeds' world directions ``(S, 3)``; and the number of
    seed-face neighbour pairs whose neighbour is such a voxel."""
    fa, e1 = fitted.arrays()
    high = fa > fa_threshold
    e = _unit(e1 @ to_world.T)
    rows = fitted.row
    shape = np.asarray(rows.shape)
    coords = np.stack(np.unravel_index(seeds, rows.shape), axis=1)
    q = np.zeros((seeds.size, len(_OFFSETS)), dtype=np.float32)
    pairs = 0
    for i in range(0, seeds.size, _SEED_CHUNK):
        c = coords[i:i + _SEED_CHUNK]
        nb = c[:, None, :] + _OFFSETS[None]
        inside = np.all((nb >= 0) & (nb < shape), axis=2)
        r = np.where(inside, rows[tuple(np.clip(nb, 0, shape - 1).transpose(2, 0, 1))], -1)
        ok = r >= 0
        ok[ok] = high[r[ok]]
        u = e[rows[tuple(c.T)]]
        dots = np.einsum("si,ski->sk", u, e[np.where(ok, r, 0)])
        q[i:i + _SEED_CHUNK] = np.where(ok, dots * dots, 0.0)
        pairs += int(ok[:, _FACES].sum())
    return q, e[rows.ravel()[seeds]], pairs


def _candidate_values(q: np.ndarray, u: np.ndarray, m_world: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Per-seed score ``(S,)`` of one candidate (``m_world``: its change of the world directions)."""
    t = _unit(u @ m_world.T) @ np.linalg.inv(np.asarray(affine, dtype=np.float64)[:3, :3]).T
    t /= np.maximum(np.abs(t).max(axis=1, keepdims=True), 1e-12)  # (S, 3) on the unit cube
    seeds = np.arange(len(t))
    total = np.zeros(len(t))
    for r in RADII:
        for sign in (1.0, -1.0):
            y = sign * r * t
            f = np.clip(np.floor(y), -_R, _R - 1)
            hi = y - f  # (S, 3) weights of the upper corner along each axis
            lo = 1.0 - hi
            base = ((f[:, 0].astype(np.int64) + _R) * _SIDE + f[:, 1].astype(np.int64) + _R) * _SIDE \
                + f[:, 2].astype(np.int64) + _R
            for cx, cy, cz in _CORNERS:
                w = (hi[:, 0] if cx else lo[:, 0]) * (hi[:, 1] if cy else lo[:, 1]) * (hi[:, 2] if cz else lo[:, 2])
                total += w * q[seeds, base + (cx * _SIDE + cy) * _SIDE + cz]
    return total / (2 * len(RADII))


def _jackknife_se(values: np.ndarray, coords: np.ndarray) -> float:
    """Standard error of the mean of ``values`` ``(S,)`` by a delete-one-block jackknife
    (``coords`` ``(S, 3)``): the largest over the block sides :data:`JACKKNIFE_BLOCKS` that leave
    at least :data:`MIN_BLOCKS` non-empty blocks (the smallest side where none does).

    Neighbouring voxels share data and bundles, so the voxels' values are correlated over a
    distance; blocks smaller than it understate the error. On a whole brain the values are
    correlated over more than 4 voxels (a field of fibres that are not coherent under any
    table gave z 3.2 with 4-voxel blocks, 1.4 with 10-voxel ones); a small volume has too few
    large blocks for a jackknife, and keeps the smallest side."""
    best = None
    for side in JACKKNIFE_BLOCKS:
        _, block = np.unique(coords // side, axis=0, return_inverse=True)
        block = block.ravel()
        nb = int(block.max()) + 1 if block.size else 0
        if nb < 2 or (nb < MIN_BLOCKS and best is not None):
            break
        sums = np.bincount(block, values, nb)
        counts = np.bincount(block, None, nb)
        loo = (values.sum() - sums) / (values.size - counts)
        se = float(np.sqrt((nb - 1) / nb * np.sum((loo - loo.mean()) ** 2)))
        best = se if best is None else max(best, se)
    return float("inf") if best is None else best


def check_gradients(data: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray, affine: np.ndarray,
                    mask: np.ndarray | None = None, *, max_voxels: int = 20000, seed: int = 0,
                    fa_threshold: float = 0.2) -> GradientCheck:
    """Rank the 24 axis permutations and sign flips of a gradient table by fibre coherence.

    Parameters
    ----------
    data : ndarray ``(X, Y, Z, G)`` or MaskedImage
        Raw diffusion signal, with b=0 volumes (or the mask's voxels of it).
    bvals : ndarray ``(G,)``
    bvecs : ndarray ``(G, 3)`` (or FSL ``(3, G)``)
        The table as in the FSL bvecs file (voxel axes, ``x`` negated for a positive affine
        determinant); non-finite rows of b=0 volumes are ignored.
    affine : ndarray ``(4, 4)``
        The image's voxel-to-world affine.
    mask : ndarray ``(X, Y, Z)`` bool, optional
        Voxels to use; default :func:`~shdeconv.signal.automatic_mask` (the tool's automatic mask:
        DIPY's ``median_otsu`` where the volume has background, else every voxel with b=0 signal).
    max_voxels : int
        About this many seed voxels are scored: a larger mask is sampled in random blocks of
        10 x 10 x 10 voxels (the same ones for the same ``seed``), so a whole brain takes seconds.
    seed : int
        Seed of the block sampling.
    fa_threshold : float
        Voxels with a tensor FA above this are seeds and count as tissue that goes on.

    Returns
    -------
    GradientCheck
    """
    if not isinstance(data, MaskedImage):
        data = np.asarray(data)
    elif mask is None:
        raise ValueError("a MaskedImage needs its mask")
    if data.ndim != 4:
        raise ValueError(f"data must be (X, Y, Z, G), got shape {data.shape}")
    shape, n_vol = tuple(data.shape[:3]), data.shape[3]
    bvals = np.asarray(bvals, dtype=np.float64).ravel()
    if bvals.size != n_vol:
        raise ValueError(f"{bvals.size} b-values for {n_vol} volumes")
    b0 = bvals <= B0_THRESHOLD
    if not b0.any() or b0.all():
        raise ValueError("the gradient check needs b=0 and diffusion-weighted volumes")
    b = np.asarray(bvecs, dtype=np.float64)
    if b.shape != (n_vol, 3):
        if b.shape != (3, n_vol):
            raise ValueError(f"bvecs have shape {b.shape}, expected ({n_vol}, 3) for {n_vol} volumes")
        b = b.T
    directions = _unit(np.where(np.isfinite(b), b, 0.0))
    directions[b0] = 0.0
    if mask is None:
        mask, _ = automatic_mask(data, bvals)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} does not match the data's {shape}")
    affine = np.asarray(affine, dtype=np.float64)

    candidates = candidate_tables()
    fitted = _Fitted(data, bvals, directions, mask)
    seeds = _seeds(fitted, fa_threshold, int(max_voxels), seed)
    to_world = voxel_to_world_matrix(affine)
    from_world = np.linalg.inv(to_world)
    pairs, neighbours = 0, float("nan")
    if seeds.size:
        q, u, pairs = _coherence(seeds, fitted, fa_threshold, to_world)
        if pairs:
            neighbours = (float(q[:, _FACES].astype(np.float64).sum()) / pairs - 1.0 / 3.0) * 1.5
        q -= q.mean(axis=0, keepdims=True)  # coherence above each offset's own mean
        values = np.stack([_candidate_values(q, u, to_world @ m @ from_world, affine) for _, m in candidates])
        scores = values.mean(axis=1)
    else:
        values, scores = np.zeros((len(candidates), 0)), np.full(len(candidates), np.nan)

    order = sorted(range(len(candidates)), key=lambda i: -np.nan_to_num(scores[i], nan=-np.inf))
    ranking = [(candidates[i][0], float(scores[i])) for i in order]
    best = order[0]
    z = rel = 0.0
    if seeds.size and best != 0:
        gain = values[best] - values[0]
        coords = np.stack(np.unravel_index(seeds, shape), axis=1)
        se = _jackknife_se(gain, coords)
        z = float(gain.mean() / se) if se > 0 else float("inf")
        spread = float(scores.max() - scores.min())
        rel = float(gain.mean() / spread) if spread > 0 else 0.0
    enough = seeds.size >= MIN_VOXELS
    clearly = bool(enough and best != 0 and z > Z_MARGIN and rel > REL_MARGIN)
    label, given, top = candidates[best][0], float(scores[0]), float(scores[best])
    if not enough:
        message = (f"gradient check inconclusive: {seeds.size} voxels with FA > {fa_threshold:g}, "
                   f"at least {MIN_VOXELS} needed")
    elif clearly:
        message = (f"the gradient table looks wrong: '{label}' gives a clearly more coherent fibre field "
                   f"({top:.4f} against {given:.4f} as given, {z:.1f} standard errors); check the bvecs")
    elif best == 0:
        runner = ranking[1]
        message = (f"the gradient table looks right: 'as given' scores best ({given:.4f}; next '{runner[0]}' "
                   f"{runner[1]:.4f}; {seeds.size} voxels)")
    else:
        message = (f"no clearly better gradient table: '{label}' scores {top:.4f} against {given:.4f} as given "
                   f"({z:.1f} standard errors, {100 * rel:.0f}% of the spread), within what correct tables show")
    log.info("gradient check: %s", message)
    return GradientCheck(ranking=ranking, given_score=given, best_label=label,
                         best_matrix=candidates[best][1].copy(), clearly_better=clearly, message=message,
                         n_voxels=int(seeds.size), z_score=z, relative_gain=rel, neighbour_coherence=neighbours,
                         neighbour_pairs=pairs)
