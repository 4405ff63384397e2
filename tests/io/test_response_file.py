"""MRtrix3 response files: round trip, malformed files, and MRtrix3 reading ours."""

from __future__ import annotations

import subprocess

import nibabel as nib
import numpy as np
import pytest

from shdeconv.io import (
    InputError,
    read_response_file,
    world_to_fsl_bvecs,
    write_response_file,
)
from shdeconv.sphere import dense_directions


def test_round_trip(tmp_path):
    c = np.array([[3544.9, 0, 0, 0], [1783.1, -632.4, 107.9, -14.3], [1011.4, -590.0, 187.4, -40.6]])
    write_response_file(tmp_path / "r.txt", c, shells=[0, 1000, 2000], comment="hello\nworld")
    text = (tmp_path / "r.txt").read_text()
    assert "# Shells: 0,1000,2000" in text and "# hello" in text
    back, shells = read_response_file(tmp_path / "r.txt")
    np.testing.assert_allclose(back, c, rtol=1e-9)
    assert shells == [0, 1000, 2000]


def test_ragged_rows_and_no_shells(tmp_path):
    (tmp_path / "r.txt").write_text("# command_history: x\n1 2 3\n\n4 5\n")
    c, shells = read_response_file(tmp_path / "r.txt")
    np.testing.assert_array_equal(c, [[1, 2, 3], [4, 5, 0]])
    assert shells is None


@pytest.mark.parametrize("text, problem", [
    ("", "holds no coefficients"),
    ("# only a comment\n", "holds no coefficients"),
    ("1 2 x\n", "line 1 is not a row of numbers"),
    ("# Shells: 0,1000\n1 2 3\n", "lists 2 b-values but the file has 1 rows"),
    ("# Shells: 0,abc\n1 2 3\n", "cannot parse the Shells comment"),
    ("1 nan 3\n", "NaN or Inf"),
])
def test_malformed(tmp_path, text, problem):
    p = tmp_path / "r.txt"
    p.write_text(text)
    with pytest.raises(InputError) as e:
        read_response_file(p)
    assert str(e.value).startswith(f"{p}: ") and problem in str(e.value)


def test_missing(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_response_file(tmp_path / "none.txt")


@pytest.mark.mrtrix
def test_mrtrix_reads_our_response_file(tmp_path, mrtrix):
    """``dwi2fod csd`` accepts the file and its fODF peaks along the simulated fibre."""
    u = dense_directions(60)
    u = u[u[:, 2] > 0]
    bvals = np.r_[0.0, 0.0, np.full(len(u), 1000.0)]
    g = np.r_[np.zeros((2, 3)), u]
    fibre = np.array([1.0, 2.0, 0.5]) / np.linalg.norm([1.0, 2.0, 0.5])
    d_par, d_perp = 1.7e-3, 0.3e-3
    sig = 1000 * np.exp(-bvals * (d_perp + (d_par - d_perp) * (g @ fibre) ** 2))
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.broadcast_to(sig, (3, 3, 3, len(bvals))).astype(np.float32), affine),
             tmp_path / "dwi.nii")
    np.savetxt(tmp_path / "bvals", bvals[None], fmt="%g")
    np.savetxt(tmp_path / "bvecs", world_to_fsl_bvecs(g, affine).T, fmt="%.8f")
    # analytic zonal response by quadrature
    t, w = np.polynomial.legendre.leggauss(64)
    from scipy.special import eval_legendre
    r = [2 * np.pi * np.sum(w * 1000 * np.exp(-1000 * (d_perp + (d_par - d_perp) * t**2))
                            * np.sqrt((2 * l + 1) / (4 * np.pi)) * eval_legendre(l, t)) for l in range(0, 9, 2)]
    write_response_file(tmp_path / "wm.txt", np.array(r)[None], shells=[1000])
    subprocess.run(["dwi2fod", "csd", "dwi.nii", "-fslgrad", "bvecs", "bvals", "wm.txt", "fod.nii", "-quiet"],
                   cwd=tmp_path, check=True)
    subprocess.run(["sh2peaks", "fod.nii", "peaks.nii", "-num", "1", "-quiet"], cwd=tmp_path, check=True)
    fod = nib.load(tmp_path / "fod.nii").get_fdata()
    peak = nib.load(tmp_path / "peaks.nii").get_fdata()[1, 1, 1, :3]
    angle = np.degrees(np.arccos(abs(peak @ fibre) / np.linalg.norm(peak)))
    assert angle < 2.0
    # a perfect response gives a unit-mass fODF: c00 = 1/sqrt(4 pi)
    assert fod[1, 1, 1, 0] == pytest.approx(1 / np.sqrt(4 * np.pi), rel=0.05)
