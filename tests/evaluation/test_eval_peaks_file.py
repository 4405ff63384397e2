import subprocess

import nibabel as nib
import numpy as np
import pytest

from shdeconv.direction import sh_peaks
from shdeconv.io import read_peaks, write_peaks
from shdeconv.sphere import zonal_to_sh

DELTA_ZONAL = np.array([np.sqrt((2 * l + 1) / (4 * np.pi)) for l in range(0, 9, 2)])


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_round_trip_with_missing_peaks(tmp_path, rng):
    dirs = _unit(rng.normal(size=(4, 3, 2, 3, 3)))
    amps = rng.uniform(0.1, 1.0, size=(4, 3, 2, 3))
    amps[0, 0, 0, 1:] = 0.0  # one peak
    amps[1, 1, 1, :] = 0.0  # no peak
    amps[2, 0, 0, 2] = np.nan  # NaN amplitude means missing too
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    path = write_peaks(tmp_path / "peaks.nii.gz", dirs * 3.0, amps, aff)
    raw = np.asarray(nib.load(path).dataobj)
    assert raw.shape == (4, 3, 2, 9)
    assert np.all(np.isnan(raw[0, 0, 0, 3:])) and np.all(np.isnan(raw[1, 1, 1]))
    np.testing.assert_allclose(raw[0, 0, 0, :3], dirs[0, 0, 0, 0] * amps[0, 0, 0, 0], rtol=1e-6)
    d, a = read_peaks(path)
    ok = np.isfinite(amps) & (amps > 0)
    np.testing.assert_allclose(a, np.where(ok, amps, 0.0), rtol=1e-6)
    np.testing.assert_allclose(d[ok], dirs[ok], atol=1e-6)
    assert np.all(d[~ok] == 0)
    assert not list(tmp_path.glob(".*"))  # no temporary left behind


def test_bad_shapes(tmp_path):
    with pytest.raises(ValueError, match="X, Y, Z, P, 3"):
        write_peaks(tmp_path / "p.nii.gz", np.zeros((2, 2, 3)), np.zeros((2, 2)), np.eye(4))
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 4), np.float32), np.eye(4)), tmp_path / "b.nii")
    with pytest.raises(ValueError, match="3\\*P"):
        read_peaks(tmp_path / "b.nii")


@pytest.mark.mrtrix
def test_layout_matches_mrtrix_sh2peaks(mrtrix, tmp_path, rng):
    """MRtrix3 reads our world-frame fODF and writes peaks our reader understands."""
    u = _unit(rng.normal(size=(3, 3)))
    v = _unit(np.cross(u, rng.normal(size=(3, 3))))
    v = _unit(np.cos(np.radians(70)) * u + np.sin(np.radians(70)) * v)
    sh = np.stack([zonal_to_sh(DELTA_ZONAL, a, 8) + 0.6 * zonal_to_sh(DELTA_ZONAL, b, 8)
                   for a, b in zip(u, v)]).reshape(3, 1, 1, 45)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(sh.astype(np.float32), aff), tmp_path / "fodf.nii.gz")
    subprocess.run(["sh2peaks", "-quiet", "-force", "-num", "3", str(tmp_path / "fodf.nii.gz"),
                    str(tmp_path / "peaks.nii.gz")], check=True)
    d_mr, a_mr = read_peaks(tmp_path / "peaks.nii.gz")
    d_us, a_us = sh_peaks(sh)
    for i in range(3):
        mr = d_mr[i, 0, 0][a_mr[i, 0, 0] > 0.2 * a_mr[i, 0, 0].max()]
        us = d_us[i, 0, 0][a_us[i, 0, 0] > 0]
        assert len(mr) == len(us) == 2
        for w in (u[i], v[i]):
            assert np.degrees(np.arccos(np.abs(mr @ w).max())) < 2.0
            assert np.degrees(np.arccos(np.abs(us @ w).max())) < 2.0
    # our writer's layout is what sh2peaks writes: reading ours back gives the same peaks
    write_peaks(tmp_path / "ours.nii.gz", d_mr, a_mr, aff)
    d2, a2 = read_peaks(tmp_path / "ours.nii.gz")
    np.testing.assert_allclose(a2, a_mr, rtol=1e-5)
