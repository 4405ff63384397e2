"""Which voxels are fitted: the automatic mask and the audit of what any mask leaves out.

Without a user mask, DIPY's ``median_otsu`` is used only where the volume has background: a
cropped volume has none, and Otsu's threshold then splits the tissue itself (on a brain crop
it keeps the bright CSF and drops the white matter). The background test looks at the outer
faces of each axis (a slab acquisition has tissue on its first and last slices but air
around the head): the volume has background if, on the two faces of some axis,

* more than half of the voxels have no positive b=0 signal (zero-filled, skull-stripped
  volumes), or
* the voxels' median attenuation ``mean(S_dw) / mean(S_b0)`` is above
  :data:`NOISE_ATTENUATION`: noise is not attenuated by diffusion weighting, tissue is
  (white matter at b=1000 keeps 0.3-0.6 of its b=0 signal, CSF less).

Otherwise every voxel with a positive b=0 signal is fitted, as MRtrix3's ``dwi2fod`` and
DIPY's CSD fit every voxel they are given.

Whatever the mask, the voxels it leaves out that clearly hold tissue (b=0 signal comparable to
the mask's, attenuated by diffusion weighting, FA above :data:`TISSUE_FA`) are counted, and a
warning is raised when they are many: :func:`brain_mask` returns that record for the report.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from ..io import B0_THRESHOLD, Beyond, make_mask
from ._normalise import b0_mean
from ._response import _tensor_fit

__all__ = ["NOISE_ATTENUATION", "TISSUE_FA", "automatic_mask", "brain_mask", "has_background"]

log = logging.getLogger(__name__)

#: Border voxels whose median ``mean(S_dw) / mean(S_b0)`` is above this are background noise.
NOISE_ATTENUATION = 0.75
#: FA above which a left-out voxel counts as clear (white-matter-like) diffusion signal.
TISSUE_FA = 0.25
#: b=0 signal, relative to the mask's median, above which a left-out voxel may be tissue (low:
#: white matter's b=0 can be a fifth of CSF's, which an automatic threshold tends to keep).
TISSUE_B0 = 0.05
#: A warning is raised when the left-out tissue voxels are at least this share of the mask ...
WARN_FRACTION = 0.05
#: ... and at least this many.
WARN_MIN_VOXELS = 20
#: Left-out candidates whose FA is computed (a regular subsample beyond; the count is scaled).
_MAX_AUDIT = 50_000


def _means(data: np.ndarray, bvals: np.ndarray, index) -> tuple[np.ndarray, np.ndarray]:
    """Mean b=0 and mean diffusion-weighted signal of the voxels ``data[index]``, read one volume
    at a time (no ``(N, G)`` copy: on an HCP-sized volume that would be gigabytes)."""
    b0 = bvals <= B0_THRESHOLD
    n = index[0].size
    s0, sdw = np.zeros(n), np.zeros(n)
    for g in range(bvals.size):
        col = data[..., g][index]
        if b0[g]:
            s0 += col
        else:
            sdw += col
    return s0 / max(1, int(b0.sum())), sdw / max(1, int((~b0).sum()))


def _face_pairs(shape):
    """Per axis with at least 3 voxels, the indices of its two outer faces."""
    for axis, n in enumerate(shape):
        if n < 3:
            continue
        faces = np.zeros(shape, bool)
        sl = [slice(None)] * 3
        for k in (0, n - 1):
            sl[axis] = k
            faces[tuple(sl)] = True
        yield np.nonzero(faces)


def has_background(data: np.ndarray, bvals: np.ndarray) -> bool:
    """Whether the faces of some axis of ``data`` ``(X, Y, Z, G)`` are background, not tissue
    (see the module). A volume too thin to have faces is left to median_otsu (True)."""
    bvals = np.asarray(bvals, float)
    pairs = list(_face_pairs(data.shape[:3]))
    if not pairs:
        return True
    for index in pairs:
        s0, sdw = _means(data, bvals, index)
        ok = np.isfinite(s0) & np.isfinite(sdw) & (s0 > 0)
        if ok.mean() < 0.5 or np.median(sdw[ok] / s0[ok]) > NOISE_ATTENUATION:
            return True
    return False


def _b0_image(data: np.ndarray, bvals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean b=0 image ``(X, Y, Z)`` and where it is finite and positive."""
    volumes = np.flatnonzero(np.asarray(bvals, float) <= B0_THRESHOLD)
    return b0_mean(data, volumes, np.ones(data.shape[:3], bool))


def automatic_mask(data: np.ndarray, bvals: np.ndarray,
                   valid: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """The mask used without a user's (see the module) and how it was chosen; it holds only
    voxels with a finite, positive mean b=0 signal (``valid``, when the caller has it)."""
    valid = _b0_image(data, bvals)[1] if valid is None else valid
    if has_background(data, bvals):
        return make_mask(data, bvals) & valid, "median_otsu"
    return valid, "every voxel with a positive b=0 signal (the volume's border is tissue, not background)"


def _tissue_rows(rows: np.ndarray, s0: np.ndarray, bvals: np.ndarray, directions: np.ndarray) -> int:
    """How many of the voxels ``rows`` ``(N, G)`` (mean b=0 ``s0`` ``(N,)``, all positive) have
    an FA above :data:`TISSUE_FA`."""
    if not len(rows):
        return 0
    fa, _, _ = _tensor_fit(np.asarray(rows, dtype=np.float64) / s0[:, None], bvals, np.asarray(directions, float))
    return int(np.count_nonzero(fa > TISSUE_FA))


def left_out_tissue(data: np.ndarray, bvals: np.ndarray, directions: np.ndarray, mask: np.ndarray,
                    valid: np.ndarray, b0: np.ndarray, beyond: Beyond | None = None) -> int:
    """About how many voxels of ``valid & ~mask`` hold clear diffusion signal (see the module).

    ``b0`` ``(X, Y, Z)``: the voxels' mean b=0 signal. At most :data:`_MAX_AUDIT`
    candidates are read (a regular subsample; the count is scaled back). ``beyond``: the
    sample of the image outside what ``data`` holds, when only the mask's box or voxels were
    read (:func:`~shdeconv.io.load_dwi` with ``crop``); its voxels count ``beyond.weight`` each.
    """
    bvals = np.asarray(bvals, float)
    if not mask.any():
        return 0
    level = float(np.median(b0[mask]))
    count = 0
    if beyond is not None and len(beyond.rows):
        b0_vol = bvals <= B0_THRESHOLD
        s0 = beyond.rows[:, b0_vol].mean(1, dtype=np.float64)
        sdw = beyond.rows[:, ~b0_vol].mean(1, dtype=np.float64)
        keep = (s0 > TISSUE_B0 * level) & (sdw < NOISE_ATTENUATION * s0)
        count += round(_tissue_rows(beyond.rows[keep], s0[keep], bvals, directions) * beyond.weight)
    index = np.nonzero(valid & ~mask & (b0 > TISSUE_B0 * level))
    if index[0].size == 0:
        return count
    step = max(1, -(-index[0].size // _MAX_AUDIT))
    index = tuple(i[::step] for i in index)
    s0, sdw = _means(data, bvals, index)
    attenuated = (s0 > 0) & (sdw < NOISE_ATTENUATION * s0)
    rows = data[tuple(i[attenuated] for i in index)]
    return count + _tissue_rows(rows, s0[attenuated], bvals, directions) * step


def brain_mask(data: np.ndarray, bvals: np.ndarray, directions: np.ndarray, mask: np.ndarray | None = None,
               *, source: str | None = None, beyond: Beyond | None = None) -> tuple[np.ndarray, dict]:
    """The voxels to fit and a record of how they were chosen.

    Parameters
    ----------
    data : ndarray ``(X, Y, Z, G)``
    bvals : ndarray ``(G,)``
    directions : ndarray ``(G, 3)``, unit for diffusion-weighted volumes (any frame)
    mask : ndarray ``(X, Y, Z)`` bool, optional
        The user's mask; ``None`` for the automatic one.
    source : str, optional
        Where ``mask`` came from (its file), for the record.
    beyond : Beyond, optional
        When ``data`` is only the user mask's box or voxels of the image: what lies outside,
        so that the record and the audit still cover the whole image.

    Returns
    -------
    mask : ndarray ``(X, Y, Z)`` bool
        Always limited to voxels with a finite, positive mean b=0 signal.
    record : dict
        ``source``, ``method``, ``voxels``, ``voxels_with_b0_signal``, ``left_out_tissue_voxels``
        and ``warning`` (None or the messages also given to :func:`warnings.warn`); with a user
        mask also ``mask_voxels`` (its own count) and ``left_out_without_b0_signal`` (its voxels
        with no positive, finite b=0 signal, which cannot be fitted: warned about).
    """
    bvals = np.asarray(bvals, float)
    b0, valid = _b0_image(data, bvals)
    if mask is not None:
        chosen, method = np.asarray(mask, bool) & valid, "user mask"
    else:
        chosen, method = automatic_mask(data, bvals, valid)
    if beyond is not None and mask is None:
        raise ValueError("only data cropped to a user mask's box come with what lies beyond it")
    record = {"source": source or ("automatic" if mask is None else "array"), "method": method,
              "voxels": int(chosen.sum()),
              "voxels_with_b0_signal": int(valid.sum()) + (beyond.n_valid if beyond is not None else 0),
              "left_out_tissue_voxels": left_out_tissue(data, bvals, directions, chosen, valid, b0, beyond),
              "warning": None}
    messages = []
    if mask is not None:
        record["mask_voxels"] = int(np.count_nonzero(mask))
        record["left_out_without_b0_signal"] = record["mask_voxels"] - record["voxels"]
        if record["left_out_without_b0_signal"]:
            messages.append(f"{record['left_out_without_b0_signal']} of the {record['mask_voxels']} voxels of the "
                            f"mask ({record['source']}) have no positive b=0 signal and are left out")
    n_out = record["left_out_tissue_voxels"]
    if n_out >= max(WARN_MIN_VOXELS, WARN_FRACTION * record["voxels"]):
        messages.append(f"the mask ({record['source']}, {method}) keeps {record['voxels']} voxels and leaves "
                        f"out about {n_out} with clear diffusion signal (FA > {TISSUE_FA}); "
                        + ("check the mask" if mask is not None else "pass --mask to choose the voxels"))
    if messages:  # one message, so that the report lists it once
        record["warning"] = "; ".join(messages)
        warnings.warn(record["warning"], UserWarning, stacklevel=2)
    log.info("mask: %s, %d voxels", method, record["voxels"])
    return chosen, record
