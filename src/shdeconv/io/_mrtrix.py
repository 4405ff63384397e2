r"""MRtrix3 inputs: ``.mif`` / ``.mif.gz`` / ``.mih`` images and ``-grad`` gradient tables.

An MRtrix3 image is a text header (``key: value`` lines between ``mrtrix image`` and ``END``)
and raw voxel data, in the same file at an offset (``file: . <offset>``) or in another file
(``.mih``). The keys read here:

* ``dim``, ``vox``: sizes and voxel sizes of the axes;
* ``layout``: one signed rank per axis; the data are stored with the axis of rank 0 varying
  fastest, and an axis with a ``-`` sign stored from its last index to its first;
* ``datatype``: ``Bit``, ``(U)Int8``, ``(U)Int16/32/64`` and ``Float32/64`` with ``LE``/``BE``;
* ``transform``: three rows of the 3x4 matrix ``T`` from image position (voxel index times
  voxel size) to scanner position, so the NIfTI-style affine is
  :math:`A = [T_{3\times3}\,\mathrm{diag}(v),\ t]`;
* ``scaling``: ``offset,scale``, values read as ``offset + scale * stored``;
* ``dw_scheme``: the gradient table, one ``x,y,z,b`` line per volume, directions in the
  scanner (world) frame: the frame every file shdeconv writes uses
  (:mod:`shdeconv.io._gradients`).

A ``-grad`` file (``dwigradcheck -export_grad_mrtrix``, ``mrinfo -export_grad_mrtrix``) holds
the same table as text, one ``x y z b`` row per volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from os import PathLike
from pathlib import Path

import nibabel as nib
import numpy as np

from ._gzip import BadGzipFile, open_gzip_read
from ._validate import InputError, check_file_exists, read_numeric_table

__all__ = ["MRTRIX_SUFFIXES", "is_mrtrix_image", "read_mrtrix_image", "read_mrtrix_grad", "MRtrixImage"]

#: File names read as MRtrix3 images.
MRTRIX_SUFFIXES = (".mif", ".mif.gz", ".mih")

_MAGIC = b"mrtrix image"
_MAX_HEADER = 1 << 24
_CHUNK = 8 << 20

_DTYPES = {"int8": "i1", "uint8": "u1", "int16": "i2", "uint16": "u2", "int32": "i4", "uint32": "u4",
           "int64": "i8", "uint64": "u8", "float32": "f4", "float64": "f8"}


@dataclass
class MRtrixImage:
    """An MRtrix3 image read into memory.

    Attributes
    ----------
    image : nibabel.Nifti1Image
        The voxel data in the header's axis order (``dim``), with the affine from ``transform``
        and ``vox`` (sform and qform both set, code 1: scanner).
    dw_scheme : ndarray ``(G, 4)`` or None
        The header's gradient table (world-frame ``x, y, z`` and ``b``), if any.
    """

    image: nib.Nifti1Image
    dw_scheme: np.ndarray | None


def is_mrtrix_image(path: str | PathLike) -> bool:
    """Whether ``path`` names an MRtrix3 image (by its suffix)."""
    return str(path).lower().endswith(MRTRIX_SUFFIXES)


def _numbers(path: Path, key: str, value: str) -> list[float]:
    try:
        return [float(v) for v in value.replace(",", " ").split()]
    except ValueError as e:
        raise InputError(path, f"the MRtrix3 header's {key!r} entry is not numeric: {value[:60]!r}") from e


def _header(path: Path, head: bytes) -> dict[str, list[str]]:
    """The header's entries: every value of a repeated key, in order."""
    if not head.startswith(_MAGIC):
        raise InputError(path, "not an MRtrix3 image: it does not start with 'mrtrix image'")
    end = head.find(b"\nEND\n")
    if end < 0 and head.endswith((b"\nEND", b"\nEND\r\n")):
        end = head.rfind(b"\nEND")
    if end < 0:  # a .mih file is all header and may end without END
        if len(head) >= _MAX_HEADER or not str(path).lower().endswith(".mih"):
            raise InputError(path, "the MRtrix3 header has no END line")
        end = len(head)
    try:
        text = head[:end].decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(path, f"the MRtrix3 header is not text ({e})") from e
    entries: dict[str, list[str]] = {}
    for line in text.splitlines()[1:]:
        key, sep, value = line.partition(":")
        if sep:
            entries.setdefault(key.strip().lower(), []).append(value.strip())
    return entries


def _one(path: Path, entries: dict[str, list[str]], key: str) -> str:
    if key not in entries:
        raise InputError(path, f"the MRtrix3 header has no {key!r} entry")
    if len(entries[key]) != 1:
        raise InputError(path, f"the MRtrix3 header has {len(entries[key])} {key!r} entries, expected one")
    return entries[key][0]


def _dtype(path: Path, name: str) -> tuple[np.dtype | None, bool]:
    """numpy dtype of an MRtrix3 datatype name (None for ``Bit``, packed 8 voxels per byte)."""
    low = name.strip().lower()
    if low == "bit":
        return None, True
    order = "<"
    if low.endswith(("le", "be")) and low[:-2] in _DTYPES:
        order, low = ("<" if low.endswith("le") else ">"), low[:-2]
    if low not in _DTYPES:
        raise InputError(path, f"the MRtrix3 datatype {name!r} is not supported (real integer, float or Bit)")
    return np.dtype(order + _DTYPES[low]), False


def _layout(path: Path, value: str, ndim: int) -> tuple[list[int], list[bool]]:
    """Each axis' storage rank (0: fastest) and whether it is stored reversed."""
    tokens = [t.strip() for t in value.split(",")]
    if len(tokens) != ndim:
        raise InputError(path, f"the MRtrix3 header's layout {value!r} has {len(tokens)} axes, dim has {ndim}")
    try:
        ranks = [abs(int(t)) for t in tokens]
    except ValueError as e:
        raise InputError(path, f"the MRtrix3 header's layout {value!r} is not a list of signed ranks") from e
    if sorted(ranks) != list(range(ndim)):
        raise InputError(path, f"the MRtrix3 header's layout {value!r} is not a permutation of 0..{ndim - 1}")
    return ranks, [t.startswith("-") for t in tokens]


def read_mrtrix_image(path: str | PathLike, what: str = "image") -> MRtrixImage:
    """Read a ``.mif``, ``.mif.gz`` or ``.mih`` image (see the module docstring for the format).

    Raises :class:`InputError` naming the file for anything it cannot read: a header without
    a required key, an unsupported datatype (complex), data split over several files, or a
    file shorter than its header says.
    """
    p = check_file_exists(path, what)
    opener = open_gzip_read if str(p).lower().endswith(".gz") else partial(open, mode="rb")
    try:
        with opener(p) as f:
            head = f.read(_MAX_HEADER)
    except (OSError, EOFError, BadGzipFile) as e:
        raise InputError(p, f"cannot read the {what} ({type(e).__name__}: {e})") from e
    entries = _header(p, head)
    dim = [int(round(v)) for v in _numbers(p, "dim", _one(p, entries, "dim"))]
    if not dim or any(d < 1 for d in dim):
        raise InputError(p, f"the MRtrix3 header's dim {dim} is not a list of positive sizes")
    vox = _numbers(p, "vox", _one(p, entries, "vox"))
    if len(vox) != len(dim):
        raise InputError(p, f"the MRtrix3 header has {len(vox)} voxel sizes for {len(dim)} axes")
    ranks, reversed_ = _layout(p, _one(p, entries, "layout"), len(dim))
    dtype, bits = _dtype(p, _one(p, entries, "datatype"))
    rows = [_numbers(p, "transform", t) for t in entries.get("transform", [])]
    if len(rows) != 3 or any(len(r) != 4 for r in rows):
        raise InputError(p, "the MRtrix3 header needs three 'transform' rows of 4 numbers")
    transform = np.asarray(rows, dtype=np.float64)
    affine = np.eye(4)
    spatial = np.ones(3)
    spatial[:min(3, len(vox))] = vox[:3]
    affine[:3, :3] = transform[:, :3] * spatial
    affine[:3, 3] = transform[:, 3]

    files = entries.get("file", [])
    if len(files) != 1:
        raise InputError(p, f"the MRtrix3 header names {len(files)} data files; one is supported "
                         "(convert with `mrconvert in.mif out.mif`)")
    parts = files[0].split()
    name, offset = (" ".join(parts[:-1]), int(parts[-1])) if len(parts) > 1 and parts[-1].isdigit() else (files[0], 0)
    n = int(np.prod(dim))
    nbytes = (n + 7) // 8 if bits else n * dtype.itemsize
    raw = np.empty(nbytes, dtype=np.uint8)
    try:
        with (opener(p) if name == "." else open(p.parent / name, "rb")) as f:
            f.seek(offset)
            got = 0
            while got < nbytes:
                step = f.readinto(memoryview(raw)[got:got + _CHUNK])
                if not step:
                    break
                got += step
    except (OSError, EOFError, BadGzipFile) as e:
        raise InputError(p, f"cannot read the {what}'s voxel data ({type(e).__name__}: {e})") from e
    if got < nbytes:
        raise InputError(p, f"the {what}'s voxel data end {nbytes - got} bytes short of the {nbytes} "
                         "its header describes")
    if bits:  # MRtrix3 packs the first voxel into the highest bit of a byte
        flat = np.unpackbits(raw, bitorder="big")[:n]
    else:
        flat = raw.view(dtype)
        if not dtype.isnative:
            flat = flat.byteswap().view(dtype.newbyteorder("="))
    order = sorted(range(len(dim)), key=lambda a: ranks[a], reverse=True)  # slowest axis first
    stored = flat.reshape([dim[a] for a in order])
    data = np.transpose(stored, np.argsort(order))
    if any(reversed_):  # a copy with positive strides: torch.from_numpy refuses negative ones
        data = np.array(data[tuple(slice(None, None, -1) if r else slice(None) for r in reversed_)], order="K")
    if "scaling" in entries:
        offset_scale = _numbers(p, "scaling", _one(p, entries, "scaling"))
        if len(offset_scale) != 2:
            raise InputError(p, "the MRtrix3 header's scaling must be 'offset,scale'")
        if offset_scale != [0.0, 1.0]:
            data = data.astype(np.float32) * np.float32(offset_scale[1]) + np.float32(offset_scale[0])
    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    scheme = None
    if "dw_scheme" in entries:
        scheme = np.asarray([_numbers(p, "dw_scheme", v) for v in entries["dw_scheme"]], dtype=np.float64)
        if scheme.ndim != 2 or scheme.shape[1] != 4:
            raise InputError(p, "the MRtrix3 header's dw_scheme rows must hold 4 numbers (x, y, z, b)")
    return MRtrixImage(image=image, dw_scheme=scheme)


def read_mrtrix_grad(path: str | PathLike) -> np.ndarray:
    """A gradient table in MRtrix3's ``-grad`` format, ``(G, 4)``: world-frame ``x, y, z`` and
    ``b`` per volume (rows of 4 numbers; ``#`` comments and commas allowed). Directions may be
    NaN where the caller accepts it (b=0 rows: ``mrinfo -export_grad_mrtrix`` writes ``nan`` there);
    b-values must be finite."""
    table = read_numeric_table(path, "gradient table", allow_nonfinite=True)
    if table.shape[1] != 4:
        raise InputError(path, f"an MRtrix3 gradient table has 4 columns (x y z b), this one has {table.shape[1]}")
    if not np.all(np.isfinite(table[:, 3])):
        row = int(np.flatnonzero(~np.isfinite(table[:, 3]))[0])
        raise InputError(path, f"row {row} of the gradient table has a b-value of {table[row, 3]}")
    return table
