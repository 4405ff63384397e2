"""Output directory checks and atomic writes."""

from __future__ import annotations

import os
import tempfile

import nibabel as nib
import numpy as np
import pytest
import torch

from shdeconv.io import (
    InputError,
    atomic_save_nifti,
    atomic_torch_save,
    atomic_write_bytes,
    atomic_write_text,
    check_output_dir,
)


def test_check_output_dir_creates(tmp_path):
    p = check_output_dir(tmp_path / "a" / "b")
    assert p.is_dir()


def test_output_dir_is_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(InputError, match=f"^{f}: output path exists and is not a directory$"):
        check_output_dir(f)


def test_output_dir_under_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(InputError, match=f"^{f / 'sub'}: cannot create the output directory"):
        check_output_dir(f / "sub")


def test_output_dir_not_writable(tmp_path, monkeypatch):
    """Root ignores permission bits, so the failure of the real write probe is simulated too."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    try:
        if os.geteuid() != 0:
            with pytest.raises(InputError, match="not writable"):
                check_output_dir(d)

        def refuse(*a, **k):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
        with pytest.raises(InputError, match=f"^{d}: output directory is not writable \\(Permission denied\\)$"):
            check_output_dir(d)
    finally:
        d.chmod(0o755)


def test_atomic_text_bytes_torch(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "hello\n")
    assert (tmp_path / "a.txt").read_text() == "hello\n"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "m.pt")
    assert torch.equal(torch.load(tmp_path / "m.pt")["w"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "m.pt"]
    mode = (tmp_path / "a.txt").stat().st_mode & 0o777
    assert mode & 0o044  # readable by others, not mkstemp's 0600


def test_atomic_save_nifti(tmp_path, rng):
    hdr = nib.Nifti1Image(np.zeros((2, 2, 2, 5), np.int16), np.eye(4)).header
    aff = np.array([[0, -2, 0, 1], [-1.9, 0, -0.5, 2], [-0.5, 0, 1.9, 3], [0, 0, 0, 1.0]])
    x = rng.normal(size=(3, 4, 2, 6)).astype(np.float32)
    atomic_save_nifti(x, aff, tmp_path / "f.nii.gz", header=hdr)
    img = nib.load(tmp_path / "f.nii.gz")
    np.testing.assert_array_equal(img.get_fdata(dtype=np.float32), x)
    np.testing.assert_allclose(img.affine, aff, atol=1e-5)
    assert img.get_data_dtype() == np.float32
    atomic_save_nifti(np.ones((2, 2, 2), bool), np.eye(4), tmp_path / "m.nii")
    assert nib.load(tmp_path / "m.nii").get_fdata().sum() == 8


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "f.nii.gz"
    atomic_save_nifti(np.zeros((2, 2, 2), np.float32), np.eye(4), target)
    before = target.read_bytes()

    def boom(self, file_map):
        file_map["image"].fileobj.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib.Nifti1Image, "to_file_map", boom)
    with pytest.raises(OSError, match="No space"):
        atomic_save_nifti(np.ones((2, 2, 2), np.float32), np.eye(4), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["f.nii.gz"]
    monkeypatch.undo()
    new = tmp_path / "new.nii.gz"
    monkeypatch.setattr(nib.Nifti1Image, "to_file_map", boom)
    with pytest.raises(OSError):
        atomic_save_nifti(np.ones((2, 2, 2), np.float32), np.eye(4), new)
    assert not new.exists()
