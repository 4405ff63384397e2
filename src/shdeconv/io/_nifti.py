"""Loading and validating a diffusion data set: NIfTI + FSL bvals/bvecs (+ optional mask).

:func:`load_dwi` is the single entry point for user data. It checks everything it can before
any computation starts and raises :class:`~shdeconv.io.InputError` (``"<file>: <problem>"``)
on the first problem. Gradient directions are turned into the MRtrix3 world frame with
:func:`~shdeconv.io.fsl_bvecs_to_world`, the one place that knows the frame convention.

Shapes: volume ``(X, Y, Z, G)``, ``bvals`` ``(G,)``, ``bvecs``/``directions_world``
``(G, 3)``, masks ``(X, Y, Z)``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import nibabel as nib
import numpy as np

from ._gradients import fsl_bvecs_to_world, tensor_conditioning, world_to_fsl_bvecs
from ._gzip import open_gzip_read
from ._mrtrix import is_mrtrix_image, read_mrtrix_grad, read_mrtrix_image
from ._validate import InputError, check_file_exists, read_numeric_table

__all__ = [
    "B0_THRESHOLD",
    "Beyond",
    "DWIData",
    "MaskedImage",
    "load_dwi",
    "load_mask",
    "bvals_shells",
    "make_mask",
    "mask_box",
    "combine_masks",
]

logger = logging.getLogger(__name__)

#: b-values at or below this (s/mm^2) count as b=0 volumes.
B0_THRESHOLD = 50.0

#: Tolerance on the norm of a non-zero bvec.
_UNIT_TOL = 1e-2

#: Below this :func:`~shdeconv.io.tensor_conditioning` the directions are reported as clustered
#: (well-spread schemes: 0.4 or more; random 10-direction sets: 0.23 in the median).
POOR_CONDITIONING = 0.1

#: Tolerance on the difference between the dwi and mask affines.
_AFFINE_TOL = 1e-3


@dataclass
class Beyond:
    """What an image holds outside the part that was read (its mask's box or voxels), for the
    mask's audit.

    Attributes
    ----------
    n_valid : int
        Voxels outside the part with a finite, positive mean b=0 signal.
    rows : ndarray ``(N, G)`` float32
        The signal of a regular lattice of voxels outside the part (every ``stride``-th voxel
        along each axis), finite ones only.
    weight : float
        How many outside voxels each row stands for (``stride ** 3``; 1 on small images).
    """

    n_valid: int
    rows: np.ndarray
    weight: float


class MaskedImage:
    """The voxels of a 4-D image that were read (``load_dwi(..., crop="voxels")``), indexed by
    voxel coordinates as the image would be: ``image[(i, j, k)]`` with three index arrays gives
    their ``(K, G)`` rows (zeros for voxels not read). ``shape`` is the image's."""

    ndim = 4

    def __init__(self, data: np.ndarray, voxels: np.ndarray):
        self.rows = data.reshape((data.shape[0], data.shape[-1]), order="A")
        self.index = np.full(voxels.shape, -1, dtype=np.int64)
        self.index[voxels] = np.arange(self.rows.shape[0])
        self.shape = tuple(voxels.shape) + (self.rows.shape[1],)
        self.dtype = self.rows.dtype

    def __getitem__(self, key):
        r = self.index[key]
        out = self.rows[np.maximum(r, 0)]
        out[r < 0] = 0
        return out


@dataclass
class DWIData:
    """A validated diffusion data set.

    Attributes
    ----------
    data : ndarray ``(X, Y, Z, G)`` float32
        The diffusion-weighted volumes; voxels that held NaN/Inf are set to 0.
    affine : ndarray ``(4, 4)``
        Voxel-to-world (scanner) affine of the dwi image.
    header : nibabel.Nifti1Header
        Header of the dwi image (to copy into outputs).
    bvals : ndarray ``(G,)``
        b-values as in the file (s/mm^2).
    bvecs : ndarray ``(G, 3)``
        Gradient directions in FSL's voxel convention, one row per volume: as in the bvecs
        file, or converted from an MRtrix3 table.
    directions_world : ndarray ``(G, 3)``
        Unit gradient directions in the MRtrix3 world frame; zero rows for b=0 volumes.
    mask : ndarray ``(X, Y, Z)`` bool or None
        The user's mask (with non-finite voxels removed), or None when none was given.
    path : Path
        The dwi file.
    bad_voxels : ndarray ``(X, Y, Z)`` bool
        Voxels that held NaN/Inf in any volume (excluded from every mask).
    box : tuple of 3 slices or None
        Where ``data``, ``mask`` and ``bad_voxels`` lie in the image when only the mask's box
        was read (``load_dwi(..., crop=...)``); ``None`` when they hold the whole image.
        ``affine`` is the image's either way: :meth:`uncrop` puts an array back on its grid.
    voxels : ndarray ``(X, Y, Z)`` bool or None
        When only the mask's voxels were read (``crop="voxels"``): which, the ``N`` of
        ``data`` ``(N, 1, 1, G)`` in C order.
    image_shape : tuple ``(X, Y, Z)`` or None
        The image's spatial shape when cropped.
    beyond : Beyond or None
        What lies outside the part read, for the mask's audit, when cropped.
    gradient_file : Path or None
        The file holding the gradient directions: the bvecs, the MRtrix3 grad file, or the
        MRtrix3 dwi whose header holds them.
    """

    data: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header
    bvals: np.ndarray
    bvecs: np.ndarray
    directions_world: np.ndarray
    mask: np.ndarray | None
    path: Path
    bad_voxels: np.ndarray = field(default=None, repr=False)
    box: tuple[slice, slice, slice] | None = None
    voxels: np.ndarray | None = field(default=None, repr=False)
    image_shape: tuple[int, int, int] | None = None
    beyond: Beyond | None = field(default=None, repr=False)
    gradient_file: Path | None = None

    def __post_init__(self):
        if self.bad_voxels is None:
            self.bad_voxels = np.zeros(self.data.shape[:3], dtype=bool)

    def uncrop(self, array: np.ndarray) -> np.ndarray:
        """``array`` ``(x, y, z, ...)`` on the data's grid -> the image's grid (zero outside what
        was read)."""
        if self.box is None and self.voxels is None:
            return array
        full = np.zeros(tuple(self.image_shape) + array.shape[3:], dtype=array.dtype)
        if self.box is not None:
            full[self.box] = array
        else:
            full[self.voxels] = array.reshape((-1,) + array.shape[3:])
        return full

    def crop(self, array: np.ndarray) -> np.ndarray:
        """``array`` ``(X, Y, Z, ...)`` on the image's grid -> the data's grid (inverse of :meth:`uncrop`)."""
        return _part(array, self.box, self.voxels)

    def image(self) -> np.ndarray | MaskedImage:
        """The data indexed by the image's voxel coordinates: ``data`` itself unless only the
        mask's voxels were read (then a :class:`MaskedImage` of them)."""
        return self.data if self.voxels is None else MaskedImage(self.data, self.voxels)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(X, Y, Z)``."""
        return tuple(self.data.shape[:3])

    @property
    def b0_mask(self) -> np.ndarray:
        """Volumes counted as b=0 (``bvals <= B0_THRESHOLD``), shape ``(G,)``."""
        return self.bvals <= B0_THRESHOLD


def _load_image(path: Path, what: str) -> tuple[nib.Nifti1Image, np.ndarray | None]:
    """A NIfTI or MRtrix3 image (by its suffix), with an MRtrix3 header's gradient table ``(G, 4)``
    (None for NIfTI or when it has none)."""
    scheme = None
    if is_mrtrix_image(path):
        mif = read_mrtrix_image(path, what)
        img, scheme = mif.image, mif.dw_scheme
    else:
        try:
            img = nib.load(str(path))
        except Exception as e:  # nibabel raises many types for garbage input
            raise InputError(path, f"the {what} is not a readable NIfTI image ({type(e).__name__}: {e})") from e
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputError(path, f"the {what} is a {type(img).__name__}, expected a NIfTI or MRtrix3 image")
        if img.get_data_dtype().kind == "c":  # converting would silently drop the imaginary part
            raise InputError(path, f"the {what} holds complex numbers ({img.get_data_dtype()}); give its magnitude "
                             "(e.g. mrcalc IN -abs OUT) or real part")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise InputError(path, f"the {what} has a non-finite affine {affine[:3].tolist()}")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(path, f"the {what} has a singular affine {affine[:3, :3].tolist()}")
    return img, scheme


def _read_bvals(path: Path, n_volumes: int) -> np.ndarray:
    table = read_numeric_table(path, "bvals")
    if table.ndim != 2 or min(table.shape) != 1:
        raise InputError(path, f"bvals must be one row or one column, got shape {table.shape}")
    bvals = table.ravel()
    if bvals.size != n_volumes:
        raise InputError(path, f"{bvals.size} b-values but the dwi has {n_volumes} volumes")
    if np.any(bvals < 0):
        raise InputError(path, f"negative b-values, e.g. {bvals[bvals < 0][0]}")
    return bvals


def _read_bvecs(path: Path, n_volumes: int) -> np.ndarray:
    table = read_numeric_table(path, "bvecs", allow_nonfinite=True)
    if table.shape == (3, n_volumes):  # FSL layout, preferred when 3 x 3
        return table.T.copy()
    if table.shape == (n_volumes, 3):
        return table.copy()
    raise InputError(
        path, f"bvecs have shape {table.shape}, expected 3x{n_volumes} (FSL) or {n_volumes}x3 "
        f"for a dwi with {n_volumes} volumes")


def _check_bvecs(path: Path, bvecs: np.ndarray, bvals: np.ndarray) -> np.ndarray:
    """Validate directions; returns them with non-finite b=0 rows (as in some scanners'
    files, e.g. DIPY's small_64D) set to zero."""
    dw = bvals > B0_THRESHOLD
    nonfinite = ~np.all(np.isfinite(bvecs), axis=1)
    if np.any(nonfinite & dw):
        i = int(np.flatnonzero(nonfinite & dw)[0])
        raise InputError(path, f"volume {i} (b={bvals[i]:g}) has a NaN or Inf gradient direction")
    bvecs = np.where(nonfinite[:, None], 0.0, bvecs)
    norms = np.linalg.norm(bvecs, axis=1)
    if np.all(norms == 0):
        raise InputError(path, "all gradient directions are zero")
    zero = dw & (norms == 0)
    if np.any(zero):
        i = int(np.flatnonzero(zero)[0])
        raise InputError(path, f"volume {i} has b={bvals[i]:g} but a zero gradient direction")
    bad = (norms > 0) & (np.abs(norms - 1.0) > _UNIT_TOL)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            path, f"{int(bad.sum())} gradient directions are not unit vectors (volume {i} has norm "
            f"{norms[i]:.4f}, expected 1 within {_UNIT_TOL:g})")
    n_dw = int(dw.sum())
    conditioning = tensor_conditioning(bvecs[dw]) if n_dw else 1.0  # no diffusion weighting: refused by the caller
    if conditioning < 1e-6:
        raise InputError(
            path, f"the {n_dw} diffusion-weighted directions cannot determine a diffusion tensor, let alone fibre "
            "orientations: at least 6 distinct axes, not all on one cone (such as a plane), are needed")
    if conditioning < POOR_CONDITIONING:
        warnings.warn(f"{path}: the {n_dw} diffusion-weighted directions cluster (tensor conditioning "
                      f"{conditioning:.3f}; well-spread schemes: 0.4 or more): fibre orientations from them are "
                      "unreliable", UserWarning, stacklevel=3)
    return bvecs


#: Bytes per ``readinto``: small enough to stay in the CPU's caches while decompressed.
_GZ_CHUNK = 8 << 20


def _fill(f, view: memoryview) -> None:
    """Read exactly ``len(view)`` bytes of the open file ``f`` into ``view``, :data:`_GZ_CHUNK` at a time."""
    pos = 0
    while pos < len(view):
        got = f.readinto(view[pos:pos + _GZ_CHUNK])
        if not got:
            raise ValueError(f"the file ends {len(view) - pos} bytes short of the image data")
        pos += got


def _read_float32(img, path: Path) -> np.ndarray:
    """The image's voxel data as float32 (Fortran order), scaled by its slope and intercept.

    For gzipped files the decompressed bytes (:mod:`._gzip`) go straight into the array, 8 MiB at a time:
    nibabel (through Python's gzip ``readinto``) first decompresses the whole image into one
    temporary bytes object, so its peak is twice the image (7.6 GiB for an HCP-sized 4 GB
    volume). Anything unusual falls back to nibabel.
    """
    proxy = img.dataobj
    if not str(path).endswith(".gz") or not hasattr(proxy, "offset") or len(img.shape) != 4:
        return np.asarray(img.get_fdata(dtype=np.float32))
    raw = np.empty(img.shape, dtype=img.get_data_dtype(), order="F")
    view = memoryview(raw.reshape(-1, order="F")).cast("B")  # a view: raw is Fortran-contiguous
    with open_gzip_read(path) as f:
        f.seek(int(proxy.offset))
        _fill(f, view)
    return _scaled_float32(raw, proxy)


def _scaled_float32(raw: np.ndarray, proxy) -> np.ndarray:
    """``raw`` as float32 (itself when it already is), times the image's slope plus its
    intercept, in place."""
    data = raw if raw.dtype == np.dtype(np.float32) else raw.astype(np.float32, order="F")
    slope, inter = float(proxy.slope), float(proxy.inter)
    if slope != 1.0:
        data *= np.float32(slope)
    if inter != 0.0:
        data += np.float32(inter)
    return data


def _iter_volumes(img, path: Path):
    """The image's volumes in order, each ``(X, Y, Z)`` float32 (Fortran order), scaled.

    A gzipped image is decompressed once, front to back, into one volume-sized buffer, which
    a float32 image's volumes are yielded in: use each before asking for the next. Anything
    else is read one volume at a time through nibabel's proxy.
    """
    proxy = img.dataobj
    shape = tuple(img.shape[:3])
    if str(path).endswith(".gz") and hasattr(proxy, "offset"):
        raw = np.empty(shape, dtype=img.get_data_dtype(), order="F")
        view = memoryview(raw.reshape(-1, order="F")).cast("B")
        with open_gzip_read(path) as f:
            f.seek(int(proxy.offset))
            for _ in range(img.shape[3]):
                _fill(f, view)
                yield _scaled_float32(raw, proxy)
    else:
        for g in range(img.shape[3]):
            yield np.asarray(proxy[..., g], dtype=np.float32)


def mask_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice, slice]:
    """The smallest box holding every voxel of ``mask``, grown by ``margin`` within the volume."""
    box = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)


def _read_part(img, path: Path, b0: np.ndarray, *, box: tuple[slice, slice, slice] | None = None,
               voxels: np.ndarray | None = None, max_rows: int = 50_000) -> tuple[np.ndarray, np.ndarray, Beyond]:
    """Part of every volume, the whole image's non-finite voxels ``(X, Y, Z)`` and a sample of
    what lies outside the part (:class:`Beyond`), in one pass over the file: the image itself
    is never held. The part is a ``box`` (returned ``(x, y, z, G)``) or the ``voxels`` of a
    boolean volume (returned ``(N, G)``, voxels in C order); float32, Fortran order."""
    shape = tuple(img.shape[:3])
    n_vol = int(img.shape[3])
    if box is not None:
        out = np.empty(tuple(s.stop - s.start for s in box) + (n_vol,), dtype=np.float32, order="F")
        outside = np.ones(shape, dtype=bool)
        outside[box] = False
    else:
        out = np.empty((int(voxels.sum()), n_vol), dtype=np.float32, order="F")
        outside = ~voxels
    bad = np.zeros(shape, dtype=bool)
    n_out = int(outside.sum())
    stride = 1
    while n_out / stride ** 3 > max_rows:
        stride += 1
    lattice = np.zeros(shape, dtype=bool)
    lattice[::stride, ::stride, ::stride] = True
    lattice &= outside
    lattice_at = _fortran_offsets(lattice)
    voxels_at = None if box is not None else _fortran_offsets(voxels)
    rows = np.empty((len(lattice_at), n_vol), dtype=np.float32, order="F")
    b0_sum = np.zeros(shape, dtype=np.float64)
    for g, vol in enumerate(_iter_volumes(img, path)):
        flat = vol.reshape(-1, order="F")  # a view where vol is Fortran-ordered (gzip), else a copy
        if box is not None:
            out[..., g] = vol[box]
        else:
            np.take(flat, voxels_at, out=out[:, g])
        if not np.isfinite(vol).all():  # one pass without a temporary where, as usual, all are finite
            bad |= ~np.isfinite(vol)
        np.take(flat, lattice_at, out=rows[:, g])
        if b0[g]:
            b0_sum += vol
    s0 = b0_sum / max(1, int(b0.sum()))
    valid = outside & np.isfinite(s0) & (s0 > 0) & ~bad
    keep = np.isfinite(rows).all(axis=1)
    beyond = Beyond(n_valid=int(valid.sum()), rows=rows[keep], weight=float(stride ** 3))
    return out, bad, beyond


def _fortran_offsets(mask: np.ndarray) -> np.ndarray:
    """Offsets of ``mask``'s voxels, in C order, in the Fortran-ordered flattening of its grid:
    ``vol.reshape(-1, order="F")[_fortran_offsets(mask)]`` is ``vol[mask]``, without a boolean
    pass over the volume."""
    x, y, z = np.nonzero(mask)
    return x + mask.shape[0] * (y + mask.shape[1] * z)


def load_mask(mask_path: str | PathLike, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """Read a mask image and check it against the dwi's grid.

    A mask whose voxels are the dwi's stored in another axis order or direction (MRtrix3
    stores images near RAS: ``dwi2mask`` on a NIfTI's ``.mif`` copy gives such a mask) is
    reordered onto the dwi's axes; any other grid is refused.

    Parameters
    ----------
    mask_path : str or PathLike
        NIfTI or MRtrix3 mask; non-zero finite voxels are inside.
    shape : tuple ``(X, Y, Z)``
        Spatial shape of the dwi.
    affine : ndarray ``(4, 4)``
        Affine of the dwi.

    Returns
    -------
    ndarray ``(X, Y, Z)`` bool
    """
    p = check_file_exists(mask_path, "mask")
    img, _ = _load_image(p, "mask")
    mshape = tuple(img.shape)
    if len(mshape) == 4 and mshape[3] == 1:
        mshape = mshape[:3]
    if len(mshape) != 3:
        raise InputError(p, f"the mask must be a 3-D image, got shape {tuple(img.shape)}")
    m = np.asarray(img.dataobj).reshape(mshape)
    same = mshape == tuple(shape) and np.allclose(img.affine, affine, atol=_AFFINE_TOL, rtol=0)
    if not same:
        axes = _axis_reordering(np.asarray(img.affine, dtype=np.float64), mshape, affine, tuple(shape))
        if axes is None:
            if sorted(mshape) != sorted(shape):
                raise InputError(p, f"mask shape {mshape} does not match the dwi's spatial shape {tuple(shape)}")
            raise InputError(
                p, f"mask affine {np.round(img.affine[:3], 4).tolist()} does not match the dwi affine "
                f"{np.round(affine[:3], 4).tolist()} (tolerance {_AFFINE_TOL:g}), nor does any order of its axes")
        order, flips = axes
        m = np.transpose(m, order)[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]
        logger.info("%s: the mask's axes were reordered onto the dwi's (axes %s, flipped %s)", p, order, flips)
    m = np.isfinite(m) & (m != 0)
    if not m.any():
        raise InputError(p, "the mask is empty")
    return m


def _axis_reordering(affine_from: np.ndarray, shape_from: tuple, affine_to: np.ndarray, shape_to: tuple):
    """``(order, flips)`` such that ``np.transpose(a, order)`` with the axes in ``flips`` reversed
    puts an image ``a`` of grid ``(affine_from, shape_from)`` on grid ``(affine_to, shape_to)``,
    when both grids hold the same voxel centres; None otherwise."""
    t = np.linalg.solve(affine_from, affine_to)  # voxel index on the target grid -> on the source grid
    p = np.round(t[:3, :3])
    if not np.allclose(t[:3, :3], p, atol=_AFFINE_TOL) or not np.allclose(np.abs(p).sum(0), 1) \
            or not np.allclose(np.abs(p).sum(1), 1):
        return None
    order = [int(np.argmax(np.abs(p[:, a]))) for a in range(3)]
    flips = [bool(p[order[a], a] < 0) for a in range(3)]
    for a in range(3):
        n = shape_from[order[a]]
        if shape_to[a] != n or abs(t[order[a], 3] - ((n - 1) if flips[a] else 0)) > _AFFINE_TOL:
            return None
    return order, flips


def load_dwi(
    dwi_path: str | PathLike,
    bvals_path: str | PathLike | None = None,
    bvecs_path: str | PathLike | None = None,
    mask_path: str | PathLike | None = None,
    *,
    grad_path: str | PathLike | None = None,
    max_bad_fraction: float = 0.001,
    crop: int | Callable[[int], int] | str | None = None,
) -> DWIData:
    """Load and validate a diffusion data set.

    Parameters
    ----------
    dwi_path : str or PathLike
        4-D image ``(X, Y, Z, G)``: NIfTI, or MRtrix3 ``.mif``/``.mif.gz``/``.mih``.
    bvals_path, bvecs_path : str or PathLike, optional
        FSL b-values (``1xG`` or ``Gx1``) and directions (``3xG`` or ``Gx3``, voxel
        convention; see :mod:`shdeconv.io._gradients`).
    mask_path : str or PathLike, optional
        3-D mask on the same grid (same shape, affine within 1e-3), NIfTI or MRtrix3.
    grad_path : str or PathLike, optional
        Instead of ``bvals_path`` and ``bvecs_path``: an MRtrix3 gradient table (``x y z b``
        rows, world frame). Without either, an MRtrix3 image's own ``dw_scheme`` is used.
    max_bad_fraction : float
        Largest fraction of the mask's voxels (of the image's, without a mask) with NaN/Inf
        values that is repaired (set to 0, excluded from the mask, with a warning) rather than
        refused; such voxels outside the mask are repaired whatever their number.
    crop : int, callable or ``"voxels"``, optional
        With a mask: read only the mask's bounding box grown by this many voxels (or by
        ``crop(number of volumes)``, e.g. a denoising patch's radius), or with ``"voxels"``
        only the mask's voxels, in one pass over the file (the image itself is never in
        memory). The returned data are then on the box's grid (``box`` says where) or, for
        voxels, ``(N, 1, 1, G)`` with the mask's ``N`` voxels in C order (``voxels`` says which;
        for per-voxel work, and :class:`MaskedImage` indexes them by coordinates); ``beyond``
        keeps a sample of the rest of the image for the mask's audit. Ignored without a mask.

    Returns
    -------
    DWIData

    Raises
    ------
    InputError
        Missing or unreadable files, a non-4-D image, no gradient table, counts that do not
        match the number of volumes, non-unit or zero directions, no b=0 volume, too many
        non-finite voxels, a mask on another grid, or a non-finite affine.
    ValueError
        Both FSL files and ``grad_path``, or only one of the FSL files.
    """
    if (bvals_path is None) != (bvecs_path is None):
        raise ValueError("bvals and bvecs go together: give both or neither")
    if grad_path is not None and bvals_path is not None:
        raise ValueError("give the gradient table once: FSL bvals and bvecs, or an MRtrix3 grad file")
    dwi_p = check_file_exists(dwi_path, "dwi")
    bvals_p = check_file_exists(bvals_path, "bvals") if bvals_path is not None else None
    bvecs_p = check_file_exists(bvecs_path, "bvecs") if bvecs_path is not None else None
    grad_p = check_file_exists(grad_path, "gradient table") if grad_path is not None else None
    mask_p = check_file_exists(mask_path, "mask") if mask_path is not None else None

    img, scheme = _load_image(dwi_p, "dwi")
    if len(img.shape) != 4:
        raise InputError(dwi_p, f"the dwi must be a 4-D image (X, Y, Z, volumes), got shape {tuple(img.shape)}")
    n_vol = int(img.shape[3])
    affine = np.asarray(img.affine, dtype=np.float64)

    if bvals_p is not None:
        bvals = _read_bvals(bvals_p, n_vol)
        bvecs = _check_bvecs(bvecs_p, _read_bvecs(bvecs_p, n_vol), bvals)
        table_p = bvals_p
    else:
        if grad_p is not None:
            scheme, table_p = read_mrtrix_grad(grad_p), grad_p
        elif scheme is not None:
            table_p = dwi_p
        else:
            raise InputError(dwi_p, "no gradient table: give FSL --bvals and --bvecs or an MRtrix3 --grad file"
                             + (" (this image's header has no dw_scheme)" if is_mrtrix_image(dwi_p) else ""))
        if len(scheme) != n_vol:
            raise InputError(table_p, f"{len(scheme)} gradient table rows but the dwi has {n_vol} volumes")
        bvals = scheme[:, 3].copy()
        if np.any(bvals < 0):
            raise InputError(table_p, f"negative b-values, e.g. {bvals[bvals < 0][0]}")
        bvecs = world_to_fsl_bvecs(_check_bvecs(table_p, scheme[:, :3], bvals), affine)
    b0 = bvals <= B0_THRESHOLD
    if not b0.any():
        raise InputError(table_p, f"no b=0 volume (b <= {B0_THRESHOLD:g}); smallest b-value is {bvals.min():g}")
    if b0.all():
        raise InputError(table_p, f"all {n_vol} volumes are b=0; no diffusion weighting")

    box = voxels = beyond = user_mask = None
    if mask_p is not None:
        user_mask = load_mask(mask_p, tuple(img.shape[:3]), affine)
        if isinstance(crop, str):
            if crop != "voxels":
                raise ValueError(f"crop must be a margin, a callable or 'voxels', got {crop!r}")
            voxels = user_mask
        elif crop is not None:
            box = mask_box(user_mask, int(crop(n_vol) if callable(crop) else crop))
    try:
        if box is not None:
            data, bad, beyond = _read_part(img, dwi_p, b0, box=box)
        elif voxels is not None:
            rows, bad, beyond = _read_part(img, dwi_p, b0, voxels=voxels)
            data = rows.reshape((rows.shape[0], 1, 1, n_vol), order="F")
        else:
            data = _read_float32(img, dwi_p)
            bad = _nonfinite_voxels(data)
    except Exception as e:
        raise InputError(dwi_p, f"cannot read the image data ({type(e).__name__}: {e})") from e
    n_bad = int(bad.sum())
    if n_bad:  # counted where the fit looks: the user's mask, else the whole image
        n_in, n_region = (n_bad, bad.size) if user_mask is None else (int(np.count_nonzero(bad & user_mask)),
                                                                     int(np.count_nonzero(user_mask)))
        frac = n_in / max(n_region, 1)
        if frac > max_bad_fraction:
            where = "voxels" if user_mask is None else f"voxels of the mask {mask_p}"
            raise InputError(
                dwi_p, f"{n_in} of {n_region} {where} ({100 * frac:.3g}%) contain NaN or Inf, more than "
                f"the {100 * max_bad_fraction:.3g}% that can be repaired")
        data[_part(bad, box, voxels)] = 0.0
        warnings.warn(f"{dwi_p}: {n_bad} voxel{'s' if n_bad > 1 else ''} contain{'' if n_bad > 1 else 's'} NaN or "
                      "Inf; set to 0 and excluded from the mask",
                      UserWarning, stacklevel=2)

    mask = None
    if mask_p is not None:
        mask = user_mask & ~bad
        if not mask.any():
            raise InputError(mask_p, "the mask holds no voxel with finite dwi data")
    image_shape = tuple(int(n) for n in img.shape[:3])
    if mask is not None:
        mask, bad = _part(mask, box, voxels), _part(bad, box, voxels)

    directions = fsl_bvecs_to_world(bvecs, affine)
    directions[b0] = 0.0
    part = "" if box is None else f" (the mask's box, {data.shape[:3]})"
    part = part if voxels is None else f" (the mask's {data.shape[0]} voxels)"
    logger.info("loaded %s: shape %s%s, %d volumes (%d b=0), shells %s", dwi_p, image_shape, part, n_vol,
                int(b0.sum()), bvals_shells(bvals)[0].round().tolist())
    return DWIData(data=data, affine=affine, header=img.header, bvals=bvals, bvecs=bvecs,
                   directions_world=directions, mask=mask, path=dwi_p, bad_voxels=bad, box=box, voxels=voxels,
                   image_shape=None if box is None and voxels is None else image_shape, beyond=beyond,
                   gradient_file=bvecs_p if bvecs_p is not None else table_p)


def _part(array: np.ndarray, box, voxels) -> np.ndarray:
    """``array`` ``(X, Y, Z, ...)`` on the grid of data read with ``box`` or ``voxels`` (or whole)."""
    if box is not None:
        return array[box]
    if voxels is not None:
        return array[voxels].reshape((-1, 1, 1) + array.shape[3:])
    return array


def _nonfinite_voxels(data: np.ndarray) -> np.ndarray:
    """``[X, Y, Z]`` bool: voxels of ``data`` ``[X, Y, Z, G]`` with a NaN or Inf in any volume.

    Volume by volume (Fortran order, as images are read) or slab by slab, so the temporaries
    are one volume's size, not the 4-D image's (1 GB of booleans on HCP-sized data).
    """
    bad = np.zeros(data.shape[:3], dtype=bool)
    if data.flags.f_contiguous:
        for g in range(data.shape[3]):
            bad |= ~np.isfinite(data[..., g])
    else:
        step = max(1, (1 << 24) // max(1, data[0].size))
        for i in range(0, data.shape[0], step):
            bad[i:i + step] = ~np.isfinite(data[i:i + step]).all(axis=-1)
    return bad


def bvals_shells(bvals: np.ndarray, tol: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    """Group b-values into shells.

    b-values at or below :data:`B0_THRESHOLD` form the b=0 shell (listed first). The others
    are sorted and split wherever two consecutive values differ by more than ``tol``;
    each shell's value is the mean of its members.

    Parameters
    ----------
    bvals : ndarray ``(G,)``
    tol : float
        Largest gap between b-values of the same shell.

    Returns
    -------
    shell_values : ndarray ``(n_shells,)``
        Ascending; 0 (the b=0 mean) first when b=0 volumes exist.
    shell_index : ndarray ``(G,)`` int
        Shell of every volume.
    """
    bvals = np.asarray(bvals, dtype=np.float64).ravel()
    index = np.full(bvals.shape, -1, dtype=np.int64)
    values: list[float] = []
    b0 = bvals <= B0_THRESHOLD
    if b0.any():
        values.append(float(bvals[b0].mean()))
        index[b0] = 0
    dw = np.flatnonzero(~b0)
    if dw.size:
        order = dw[np.argsort(bvals[dw], kind="stable")]
        sorted_b = bvals[order]
        breaks = np.flatnonzero(np.diff(sorted_b) > tol) + 1
        for group in np.split(np.arange(order.size), breaks):
            index[order[group]] = len(values)
            values.append(float(sorted_b[group].mean()))
    return np.asarray(values), index


def combine_masks(*masks: np.ndarray | None) -> np.ndarray:
    """Logical AND of the given masks (``None`` entries are ignored), shape ``(X, Y, Z)``."""
    given = [np.asarray(m, dtype=bool) for m in masks if m is not None]
    if not given:
        raise ValueError("combine_masks needs at least one mask that is not None")
    out = given[0].copy()
    for m in given[1:]:
        if m.shape != out.shape:
            raise ValueError(f"cannot combine masks of shapes {out.shape} and {m.shape}")
        out &= m
    return out


def make_mask(data: np.ndarray, bvals: np.ndarray, *, median_radius: int = 2, numpass: int = 1) -> np.ndarray:
    """Brain mask from the mean b=0 image with DIPY's ``median_otsu``.

    Parameters
    ----------
    data : ndarray ``(X, Y, Z, G)``
    bvals : ndarray ``(G,)``

    Returns
    -------
    ndarray ``(X, Y, Z)`` bool
        Excludes non-finite voxels and voxels with a non-positive mean b=0. If Otsu's
        threshold leaves nothing (e.g. a constant phantom), every voxel with a positive
        mean b=0 is kept, with a warning.
    """
    from dipy.segment.mask import median_otsu

    data = np.asarray(data)
    b0 = np.asarray(bvals).ravel() <= B0_THRESHOLD
    if not b0.any():
        raise ValueError("make_mask needs at least one b=0 volume")
    mean_b0 = np.mean(data[..., b0], axis=-1)
    finite = np.isfinite(mean_b0)
    mean_b0 = np.where(finite, mean_b0, 0.0)
    valid = finite & (mean_b0 > 0)
    if np.ptp(mean_b0) == 0:
        mask = valid
    else:
        _, mask = median_otsu(mean_b0.astype(np.float32), median_radius=median_radius, numpass=numpass)
        mask = np.asarray(mask, dtype=bool) & valid
    if not mask.any():
        warnings.warn("median_otsu found no brain voxels; using every voxel with a positive mean b=0",
                      UserWarning, stacklevel=2)
        mask = valid
    return mask
