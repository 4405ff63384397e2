"""The gzip streams of ``.nii.gz`` outputs and inputs: ISA-L's, standard gzip files either way."""

import gzip

import nibabel as nib
import numpy as np
import pytest

from shdeconv.io import _gzip, atomic_save_nifti
from shdeconv.io._nifti import _read_float32


def _image(seed=0):
    return np.random.default_rng(seed).normal(size=(9, 8, 7, 15)).astype(np.float32)


def _affine():
    a = np.diag([2.0, 2.0, 2.5, 1.0])
    a[:3, 3] = [-10.0, 4.0, 7.5]
    return a


def test_isal_is_the_backend():
    """The dependency is installed and used: a broken import would silently cost the speed."""
    assert _gzip.backend() == "isal.igzip"


@pytest.mark.parametrize("backend", ["isal", "gzip"])
def test_nii_gz_is_the_nii_compressed(tmp_path, monkeypatch, backend):
    """``.nii.gz`` decompresses (by Python's gzip) to exactly the bytes of the ``.nii`` of the same
    image, with either compressor; nibabel reads the data and affine back."""
    if backend == "gzip":
        monkeypatch.setattr(_gzip, "_impl", gzip)
    data, affine = _image(), _affine()
    atomic_save_nifti(data, affine, tmp_path / "a.nii.gz")
    atomic_save_nifti(data, affine, tmp_path / "a.nii")
    assert gzip.decompress((tmp_path / "a.nii.gz").read_bytes()) == (tmp_path / "a.nii").read_bytes()
    img = nib.load(tmp_path / "a.nii.gz")
    np.testing.assert_array_equal(img.get_fdata(dtype=np.float32), data)
    np.testing.assert_allclose(img.affine, affine)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii", "a.nii.gz"]  # no temporary left


def test_nii_gz_is_deterministic(tmp_path):
    """No file name (the temporary's would leak) and no time stamp in the gzip header."""
    data = _image()
    atomic_save_nifti(data, _affine(), tmp_path / "a.nii.gz")
    atomic_save_nifti(data, _affine(), tmp_path / "b.nii.gz")
    raw = (tmp_path / "a.nii.gz").read_bytes()
    assert raw == (tmp_path / "b.nii.gz").read_bytes()
    flags, mtime = raw[3], int.from_bytes(raw[4:8], "little")
    assert not flags & 0x08 and mtime == 0  # FNAME unset


@pytest.mark.parametrize("writer", ["isal", "gzip"])
def test_reader_reads_either_compressor(tmp_path, monkeypatch, writer):
    """The chunked reader gives the data of a file written by nibabel (zlib) or by us (ISA-L),
    bit for bit, with ISA-L and with the fallback."""
    data = _image(1)
    path = tmp_path / "x.nii.gz"
    if writer == "gzip":
        nib.save(nib.Nifti1Image(data, _affine()), path)
    else:
        atomic_save_nifti(data, _affine(), path)
    for impl in (_gzip._impl, gzip):
        monkeypatch.setattr(_gzip, "_impl", impl)
        np.testing.assert_array_equal(_read_float32(nib.load(path), path), data)


def test_corrupt_stream_raises_bad_gzip(tmp_path):
    """A flipped CRC is an error, not silently accepted data."""
    path = tmp_path / "x.nii.gz"
    atomic_save_nifti(_image(), _affine(), path)
    raw = bytearray(path.read_bytes())
    raw[-6] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(_gzip.BadGzipFile), _gzip.open_gzip_read(path) as f:
        f.read()


def test_reader_reads_a_multi_member_gzip(tmp_path):
    """A ``.nii.gz`` made of several gzip members (as bgzip and some parallel compressors write)
    reads as the whole image."""
    data = _image(2)
    plain = tmp_path / "x.nii"
    atomic_save_nifti(data, _affine(), plain)
    raw = plain.read_bytes()
    cuts = [0, 1000, len(raw) // 2, len(raw)]
    path = tmp_path / "x.nii.gz"
    path.write_bytes(b"".join(gzip.compress(raw[a:b]) for a, b in zip(cuts, cuts[1:])))
    np.testing.assert_array_equal(_read_float32(nib.load(path), path), data)
