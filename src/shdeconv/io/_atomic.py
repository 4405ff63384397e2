"""Output directories and atomic writes.

Every output is written to a temporary file in the destination directory and moved into
place with :func:`os.replace`, so a file under its final name is always complete: an
interrupted run leaves either the old file or none, never a truncated one.
"""

from __future__ import annotations

import io
import os
import tempfile
from contextlib import contextmanager
from os import PathLike
from pathlib import Path

import nibabel as nib
import numpy as np

from ._gzip import open_gzip_write
from ._validate import InputError

__all__ = ["atomic_path", "atomic_save_nifti", "atomic_torch_save", "atomic_write_bytes", "atomic_write_text",
           "check_output_dir", "check_output_file", "refuse_earlier_outputs"]


def check_output_dir(path: str | PathLike) -> Path:
    """Create ``path`` if needed and make sure files can be written in it.

    Writability is tested by really creating (and removing) a temporary file, which also
    holds for root, read-only mounts and ACLs.

    Raises
    ------
    InputError
        When ``path`` exists but is not a directory, cannot be created, or is not writable.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(p, "output path exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(p, f"cannot create the output directory ({e.strerror or e})") from e
    try:
        fd, tmp = tempfile.mkstemp(dir=p, prefix=".shdeconv-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise InputError(p, f"output directory is not writable ({e.strerror or e})") from e
    return p


def check_output_file(path: str | PathLike, *, force: bool = False) -> Path:
    """Check, before any work, that the file ``path`` can be written: not a directory, in an
    existing writable directory, and not already there unless ``force``.

    Raises
    ------
    InputError
        Naming ``path`` or its directory.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(p, "is a directory; give a file name")
    if not p.parent.is_dir():
        raise InputError(p.parent, "output directory does not exist")
    check_output_dir(p.parent)
    refuse_earlier_outputs(p.parent, [p.name], force=force)
    return p


def refuse_earlier_outputs(path: str | PathLike, names, *, force: bool = False, resume: bool | None = None,
                           checkpoint: str = "checkpoint.pt") -> list[str]:
    """Refuse to run into ``path`` when it already holds any of ``names`` (files a command writes).

    As MRtrix3's ``-force`` and DIPY's ``--force``: nothing is overwritten unless ``force``.
    ``resume``: a directory holding a ``checkpoint`` is accepted with whatever else it holds
    (the run continues, and replaces its outputs; the caller checks that the checkpoint is its
    own), one without a checkpoint is not; ``None`` (the default) for a command that cannot
    resume, whose refusal then does not suggest ``--resume``. Reads only; returns the names found.

    Raises
    ------
    InputError
        Naming ``path`` and the files found.
    """
    p = Path(path)
    if not p.is_dir():
        return []
    found = [n for n in names if (p / n).exists()]
    if force or not found:
        return found
    if resume and checkpoint in found:
        return found
    if found == [checkpoint]:
        if resume is None:  # this command cannot continue it
            raise InputError(p, f"holds {checkpoint} of an unfinished run of another command; use --force to "
                                "replace it or choose another output directory")
        raise InputError(p, f"holds {checkpoint} of an unfinished run; use --resume to continue it or --force "
                            "to start over")
    shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    raise InputError(p, f"already holds outputs of an earlier run ({shown}); use --force to overwrite them or "
                        "choose another output directory")


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | PathLike):
    """Yield a temporary path next to ``path`` (same suffixes) to write to; on success it gets the
    permissions of a new file (the umask's) and replaces ``path``, on failure it is removed."""
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.stem}.tmp-",
                               suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_bytes(path: str | PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, :func:`os.replace`)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return path


def atomic_write_text(path: str | PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_nifti(data: np.ndarray, affine: np.ndarray, path: str | PathLike,
                      header: nib.Nifti1Header | None = None) -> Path:
    """Save an array as NIfTI atomically.

    Parameters
    ----------
    data : ndarray ``(X, Y, Z)`` or ``(X, Y, Z, S)``
        Stored with its own dtype (bool is stored as uint8).
    affine : ndarray ``(4, 4)``
        Written as both sform and qform (code 1, scanner).
    path : str or PathLike
        ``.nii`` or ``.nii.gz`` (compressed by :mod:`._gzip`, at nibabel's level 1).
    header : nibabel header, optional
        Template (e.g. the dwi's); shape, dtype and scaling are reset for ``data``.
    """
    path = Path(path)
    data = np.asarray(data)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    affine = np.asarray(affine, dtype=np.float64)
    hdr = None
    if header is not None:
        hdr = nib.Nifti1Header.from_header(header)
    img = nib.Nifti1Image(data, affine, header=hdr)
    img.header.set_data_dtype(data.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    if header is None:
        img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        if path.name.endswith(".gz"):
            with open_gzip_write(f) as gz:
                img.to_file_map({"image": nib.FileHolder(fileobj=gz)})
        else:
            img.to_file_map({"image": nib.FileHolder(fileobj=f)})
        f.flush()
        os.fsync(f.fileno())
    return path


def atomic_torch_save(obj, path: str | PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())
