"""DIPY CSD/MSMT-CSD baseline: crossings, and the orientation frame checked against MRtrix3."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _frame_phantoms import (  # tests/ is on the pytest path (pyproject)
    AFFINES,
    _acq,
    _angle,
    _frame_phantom,
    _peaks,
    _run,
    _simulate,
    _unit,
)
from dipy.core.gradients import gradient_table
from dipy.data import get_fnames, get_sphere
from dipy.direction import peak_directions
from dipy.reconst.shm import real_sh_descoteaux
from dipy.sims.voxel import single_tensor
from scipy.spatial.transform import Rotation

from shdeconv.baselines import csd_fit
from shdeconv.io import DWIData, atomic_save_nifti, load_dwi, world_to_fsl_bvecs
from shdeconv.signal import Responses, brain_mask, estimate_responses
from shdeconv.sphere import cart2sphere, dense_directions, sh_basis_change, sh_matrix

logger = logging.getLogger(__name__)


def _dwi(data, bvals, dirs, affine=np.eye(4)):
    return DWIData(data=data.astype(np.float32), affine=affine, header=None, bvals=bvals, bvecs=dirs,
                   directions_world=dirs, mask=None, path=Path("memory"))


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_dipy_basis_conversion():
    """DIPY's legacy descoteaux07 coefficients map to MRtrix3's by a signed permutation."""
    m = sh_basis_change(8, "descoteaux07-legacy", "mrtrix3")
    np.testing.assert_allclose(np.abs(m).sum(0), 1.0, atol=1e-9)
    u = dense_directions(300)
    theta, phi = cart2sphere(u)
    c = np.random.default_rng(0).normal(size=45)
    np.testing.assert_allclose(sh_matrix(u, 8) @ (m @ c), real_sh_descoteaux(8, theta, phi, legacy=True)[0] @ c,
                               atol=1e-10)


@pytest.mark.parametrize("crossing", [60, 90])
def test_csd_finds_crossing_peaks(rng, crossing):
    """Two fibres crossing at 60 or 90 degrees (SNR 50): both peaks within 10 degrees."""
    bvals, dirs = _acq(60, shells=(2000,))
    f1 = _unit([1.0, 0.3, 0.2])
    axis = _unit(np.cross(f1, [0.0, 0.0, 1.0]))
    f2 = Rotation.from_rotvec(np.radians(crossing) * axis).apply(f1)
    fib = np.zeros((4, 2, 2, 2, 3))
    fib[:2, ..., 0, :] = _unit(rng.normal(size=(2, 2, 2, 3)))  # single-fibre voxels for the response
    fib[2:, ..., 0, :] = f1
    fib[2:, ..., 1, :] = f2
    data = _simulate(fib, bvals, dirs, snr=50, rng=rng)
    resp = estimate_responses(data[:2], bvals, dirs, np.ones((2, 2, 2), bool), wm_min_voxels=8)
    out = csd_fit(_dwi(data, bvals, dirs), np.ones(data.shape[:3], bool), resp)
    assert out["algorithm"] == "csd" and out["gm"] is None and out["fodf"].shape == (4, 2, 2, 45)
    sphere = get_sphere(name="repulsion724")
    amp = out["fodf"][2:].reshape(-1, 45) @ sh_matrix(sphere.vertices, 8).T
    for odf in amp:
        peaks, _, _ = peak_directions(odf, sphere, relative_peak_threshold=0.3, min_separation_angle=25)
        assert len(peaks) == 2
        err = np.sort([min(_angle(p, f1), _angle(p, f2)) for p in peaks])
        assert err.max() < 10, err


@pytest.mark.mrtrix
@pytest.mark.parametrize("name", list(AFFINES))
def test_frame_matches_mrtrix(tmp_path, rng, mrtrix, name):
    """Ours (load_dwi -> csd_fit -> fodf.nii) and MRtrix3's dwi2fod both peak on the world truth."""
    affine = AFFINES[name]
    bvals, dirs, truth, data = _frame_phantom(rng)
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), tmp_path / "dwi.nii.gz")
    np.savetxt(tmp_path / "bvals", bvals[None], fmt="%g")
    np.savetxt(tmp_path / "bvecs", world_to_fsl_bvecs(dirs, affine).T, fmt="%.8f")

    dwi = load_dwi(tmp_path / "dwi.nii.gz", tmp_path / "bvals", tmp_path / "bvecs")
    mask = np.ones(dwi.shape, bool)
    resp = estimate_responses(dwi.data, dwi.bvals, dwi.directions_world, mask)
    resp.to_files(tmp_path)
    out = csd_fit(dwi, mask, resp)
    atomic_save_nifti(out["fodf"], dwi.affine, tmp_path / "fodf.nii.gz", header=dwi.header)
    _run(["sh2peaks", "fodf.nii.gz", "peaks_ours.nii", "-num", "1"], tmp_path)
    _run(["dwi2fod", "csd", "dwi.nii.gz", "-fslgrad", "bvecs", "bvals", "response_wm.txt", "fod_mrtrix.nii"],
         tmp_path)
    _run(["sh2peaks", "fod_mrtrix.nii", "peaks_mrtrix.nii", "-num", "1"], tmp_path)
    ours, theirs = _peaks(tmp_path / "peaks_ours.nii"), _peaks(tmp_path / "peaks_mrtrix.nii")
    a_ours, a_mr, a_both = _angle(ours, truth), _angle(theirs, truth), _angle(ours, theirs)
    logger.info("%s: median angle ours-truth %.2f, MRtrix3-truth %.2f, ours-MRtrix3 %.2f deg", name,
                np.median(a_ours), np.median(a_mr), np.median(a_both))
    print(f"frame {name}: ours-truth {np.median(a_ours):.2f} (max {a_ours.max():.2f}), MRtrix3-truth "
          f"{np.median(a_mr):.2f}, ours-MRtrix3 {np.median(a_both):.2f} (max {a_both.max():.2f}) deg")
    assert np.median(a_ours) < 2 and a_ours.max() < 6
    assert np.median(a_mr) < 2 and a_mr.max() < 6
    assert np.median(a_both) < 1.5 and a_both.max() < 5
    # the SH themselves agree, not only the peaks (same response, same frame, same basis)
    fod = nib.load(tmp_path / "fod_mrtrix.nii").get_fdata()
    assert np.corrcoef(fod.ravel(), out["fodf"].ravel())[0, 1] > 0.99


@pytest.mark.mrtrix
def test_small_64d_matches_mrtrix(tmp_path, mrtrix):
    """DIPY's small_64D (oblique real scan): our peaks agree with dwi2fod's in high-FA voxels."""
    from dipy.reconst.dti import TensorModel

    dwi_f, bval_f, bvec_f = get_fnames(name="small_64D")
    dwi = load_dwi(dwi_f, bval_f, bvec_f)
    mask = brain_mask(dwi.data, dwi.bvals, dwi.directions_world)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        resp = estimate_responses(dwi.data, dwi.bvals, dwi.directions_world, mask)
    resp.to_files(tmp_path)
    out = csd_fit(dwi, mask, resp)
    atomic_save_nifti(out["fodf"], dwi.affine, tmp_path / "fodf.nii.gz", header=dwi.header)
    _run(["sh2peaks", "fodf.nii.gz", "peaks_ours.nii", "-num", "1"], tmp_path)
    _run(["dwi2fod", "csd", str(dwi_f), "-fslgrad", str(bvec_f), str(bval_f), "response_wm.txt",
          "fod_mrtrix.nii"], tmp_path)
    _run(["sh2peaks", "fod_mrtrix.nii", "peaks_mrtrix.nii", "-num", "1"], tmp_path)
    gtab = gradient_table(dwi.bvals, bvecs=dwi.bvecs, b0_threshold=50)
    fa = np.nan_to_num(TensorModel(gtab).fit(dwi.data, mask=mask).fa)
    sel = mask & (fa > 0.5)
    a = _angle(_peaks(tmp_path / "peaks_ours.nii"), _peaks(tmp_path / "peaks_mrtrix.nii"))[sel]
    print(f"small_64D: {sel.sum()} voxels with FA > 0.5, median ours-MRtrix3 {np.median(a):.2f} deg, "
          f"90th percentile {np.percentile(a, 90):.2f}")
    assert sel.sum() >= 10
    assert np.median(a) < 4 and np.percentile(a, 90) < 10


def test_msmt_fractions_and_peaks(rng):
    """MSMT-CSD (3 shells): WM, GM and CSF voxels get the right signal fractions; WM peaks."""
    pytest.importorskip("cvxpy")
    bvals, dirs = _acq(30, shells=(1000, 2000, 3000), n_b0=3)
    gtab = gradient_table(bvals, bvecs=dirs, b0_threshold=50)
    fib = _unit(rng.normal(size=(3, 2, 1, 3)))
    wm = _simulate(fib[..., None, :], bvals, dirs, snr=None, rng=rng)
    gm = np.broadcast_to(single_tensor(gtab, S0=1000, evals=(0.8e-3,) * 3), (3, 2, 1, len(bvals)))
    csf = np.broadcast_to(single_tensor(gtab, S0=1000, evals=(3e-3,) * 3), (3, 2, 1, len(bvals)))
    data = np.concatenate([wm, gm, csf], axis=2) + rng.normal(scale=10, size=(3, 2, 3, len(bvals)))
    c = np.sqrt(4 * np.pi)
    with pytest.warns(UserWarning, match="GM/CSF"):  # WM-only input: GM/CSF are replaced below
        wm_r = estimate_responses(wm, bvals, dirs, np.ones((3, 2, 1), bool), wm_min_voxels=6)
    resp = Responses(wm_r.bvals, wm_r.wm, gm=c * np.exp(-wm_r.bvals * 0.8e-3), csf=c * np.exp(-wm_r.bvals * 3e-3))
    out = csd_fit(_dwi(data, bvals, dirs), np.ones(data.shape[:3], bool), resp)
    assert out["algorithm"] == "msmt"
    np.testing.assert_allclose(out["wm"][..., 0], 1, atol=0.1)
    np.testing.assert_allclose(out["gm"][..., 1], 1, atol=0.1)
    np.testing.assert_allclose(out["csf"][..., 2], 1, atol=0.1)
    np.testing.assert_allclose(out["csf"][..., 0] + out["gm"][..., 0], 0, atol=0.1)
    u = dense_directions(3000)
    peaks = u[np.argmax(out["fodf"][..., 0, :] @ sh_matrix(u, 8).T, axis=-1)]
    assert _angle(peaks, fib[..., 0, :]).max() < 5


def test_multi_shell_option_errors(rng):
    bvals, dirs = _acq(30, shells=(1000,))
    data = _simulate(_unit(rng.normal(size=(2, 1, 1, 1, 3))), bvals, dirs, snr=None, rng=rng)
    resp = Responses(np.array([0.0, 1000]), np.array([[np.sqrt(4 * np.pi), 0], [1.7, -0.6]]))
    with pytest.raises(ValueError, match="MSMT-CSD needs at least 2 non-zero shells"):
        csd_fit(_dwi(data, bvals, dirs), None, resp, multi_shell=True)
    with pytest.raises(ValueError, match="multi_shell must be"):
        csd_fit(_dwi(data, bvals, dirs), None, resp, multi_shell="yes")


def test_parallel_csd_matches_serial(tmp_path, monkeypatch):
    from shdeconv.baselines import _csd
    from shdeconv.fitting import run_csd
    from shdeconv.sim import simulate_to_dir

    monkeypatch.setattr(_csd, "PARALLEL_MIN_VOXELS", 0)  # joblib even on this small phantom

    ph = simulate_to_dir(tmp_path / "ph", scheme="clinical", snr=30, seed=2, size="quick")
    args = (ph / "dwi.nii.gz", ph / "bvals", ph / "bvecs")
    run_csd(*args, tmp_path / "serial", mask=ph / "mask.nii.gz")
    report = run_csd(*args, tmp_path / "two", mask=ph / "mask.nii.gz", n_jobs=2)
    assert report["n_jobs"] == 2 and report["n_jobs_requested"] == 2
    small = run_csd(*args, tmp_path / "small", mask=ph / "mask.nii.gz", n_jobs=-1)
    assert small["n_jobs"] == -1  # PARALLEL_MIN_VOXELS is 0 here
    monkeypatch.setattr(_csd, "PARALLEL_MIN_VOXELS", 10**9)
    small = run_csd(*args, tmp_path / "serial-again", mask=ph / "mask.nii.gz", n_jobs=-1)
    assert small["n_jobs"] == 1 and small["n_jobs_requested"] == -1  # what ran, below the threshold
    # what ran is recorded, not the "auto" asked for: single-shell data -> single-shell CSD
    assert report["algorithm"] == "ssst" and report["algorithm_requested"] == "auto"
    card = json.loads((tmp_path / "two" / "fodf.json").read_text())
    assert card["Model"]["Parameters"]["Algorithm"] == "ssst"
    a = np.asarray(nib.load(tmp_path / "serial" / "fodf.nii.gz").dataobj)
    b = np.asarray(nib.load(tmp_path / "two" / "fodf.nii.gz").dataobj)
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
