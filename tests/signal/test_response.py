"""Response estimation, the Funk-Hecke kernel and MRtrix3 response files."""

from __future__ import annotations

import subprocess

import nibabel as nib
import numpy as np
import pytest
from _frame_phantoms import _acq  # tests/ is on the pytest path (pyproject)
from dipy.core.gradients import gradient_table
from dipy.sims.voxel import multi_tensor, single_tensor
from scipy.special import eval_legendre

from shdeconv.io import (
    InputError,
    read_response_file,
    world_to_fsl_bvecs,
    write_response_file,
)
from shdeconv.signal import Responses, estimate_responses
from shdeconv.sphere import dense_directions, n_coeffs, sh_degrees, sh_fit, sh_matrix

EVALS = (1.7e-3, 0.3e-3, 0.3e-3)
SQRT_4PI = np.sqrt(4 * np.pi)


def _analytic_zonal(b, lmax=8, evals=EVALS):
    """Zonal coefficients of exp(-b u^T D u) (axis z) by Gauss-Legendre quadrature, S0 = 1."""
    t, w = np.polynomial.legendre.leggauss(80)
    d_par, d_perp = evals[0], evals[1]
    f = np.exp(-b * (d_perp + (d_par - d_perp) * t**2))
    return np.array([2 * np.pi * np.sum(w * f * np.sqrt((2 * l + 1) / (4 * np.pi)) * eval_legendre(l, t))
                     for l in range(0, lmax + 1, 2)])


def _single_fibre_volume(bvals, dirs, rng, shape=(6, 6, 3), snr=None, s0=800.0):
    gtab = gradient_table(bvals, bvecs=dirs, b0_threshold=50)
    v = rng.normal(size=shape + (3,))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    data = np.zeros(shape + (len(bvals),))
    for ijk in np.ndindex(shape):
        ang = [np.degrees([np.arccos(v[ijk][2]), np.arctan2(v[ijk][1], v[ijk][0])])]
        data[ijk] = multi_tensor(gtab, np.array([EVALS]), S0=s0, angles=ang, fractions=[100], snr=snr, rng=rng)[0]
    return data, v


def test_single_fibre_response_matches_analytic(rng):
    bvals, dirs = _acq(60, shells=(1000, 3000))
    data, _ = _single_fibre_volume(bvals, dirs, rng, snr=100)
    with pytest.warns(UserWarning, match="GM/CSF thresholds"):  # a pure-WM phantom has no GM/CSF
        r = estimate_responses(data, bvals, dirs, np.ones(data.shape[:3], bool), lmax=8)
    np.testing.assert_allclose(r.bvals, [0, 1000, 3000])
    np.testing.assert_allclose(r.wm[0], [SQRT_4PI, 0, 0, 0, 0], atol=1e-9)
    for k, b in ((1, 1000), (2, 3000)):
        ref = _analytic_zonal(b)
        # l = 0, 2, 4 carry the response; relative to the largest coefficient
        np.testing.assert_allclose(r.wm[k, :3], ref[:3], rtol=0.03, atol=0.01 * abs(ref[0]))
    assert r.s0_scale == pytest.approx(800, rel=0.02)
    assert r.gm is not None and r.csf is not None  # two non-zero shells


def test_tensor_fit_matches_dipy_wls(rng):
    """Our batched WLS tensor fit (normal equations) agrees with DIPY's TensorModel(WLS)."""
    from dipy.reconst.dti import TensorModel

    from shdeconv.signal._response import _tensor_fit

    bvals, dirs = _acq(30, shells=(1000, 2500))
    data, v = _single_fibre_volume(bvals, dirs, rng, shape=(5, 5, 4), snr=30)
    iso = np.exp(-bvals * 1e-3) * 800  # an isotropic voxel: FA near 0
    s = np.concatenate([data.reshape(-1, len(bvals)), iso[None]]) / 800
    fa, md, e1 = _tensor_fit(s, bvals, dirs)
    use = bvals <= 1600
    ref = TensorModel(gradient_table(bvals[use], bvecs=dirs[use], b0_threshold=50), fit_method="WLS").fit(
        np.maximum(s[:, use], 1e-6))
    np.testing.assert_allclose(fa, ref.fa, atol=1e-6)
    np.testing.assert_allclose(md, ref.md, rtol=1e-6)
    np.testing.assert_allclose(np.abs(np.sum(e1 * ref.evecs[..., 0], -1))[:-1], 1, atol=1e-6)
    np.testing.assert_allclose(np.abs(np.sum(e1[:-1] * v.reshape(-1, 3), -1)), 1, atol=0.02)
    assert fa[-1] < 1e-6 and md[-1] == pytest.approx(1e-3, rel=1e-6)


def test_deconvolved_peak_is_the_fibre(rng):
    """Deconvolving a noiseless single-fibre signal with the estimated kernel peaks on the fibre."""
    bvals, dirs = _acq(60)
    data, v = _single_fibre_volume(bvals, dirs, rng, shape=(5, 5, 2))
    r = estimate_responses(data, bvals, dirs, np.ones(data.shape[:3], bool), lmax=8)
    assert r.gm is None and r.csf is None  # one non-zero shell
    kern = r.kernel(8)[1]
    dw = bvals > 50
    s = data[..., dw] / data[..., ~dw].mean(-1, keepdims=True)
    c = sh_fit(s, dirs[dw], 8, lambda_lb=0.0) / kern  # (X, Y, Z, S)
    u = dense_directions(4000)
    amp = c @ sh_matrix(u, 8).T
    peaks = u[np.argmax(amp, axis=-1)]
    ang = np.degrees(np.arccos(np.clip(np.abs(np.sum(peaks * v, -1)), 0, 1)))
    assert np.max(ang) < 3.0


def test_kernel_funk_hecke():
    wm = np.array([[SQRT_4PI, 0, 0], [1.8, -0.6, 0.1]])
    r = Responses(bvals=np.array([0.0, 1000.0]), wm=wm)
    k = r.kernel(6)
    assert k.shape == (2, n_coeffs(6))
    ls = sh_degrees(6)
    np.testing.assert_allclose(k[1], np.sqrt(4 * np.pi / (2 * ls + 1)) * np.r_[wm[1], 0][ls // 2])
    np.testing.assert_allclose(k[0], np.where(ls == 0, 4 * np.pi, 0.0))
    # a fibre along z convolved with the kernel reproduces the response's amplitude along z
    c = sh_matrix(np.array([[0, 0, 1.0]]), 6)[0]  # delta at z (truncated)
    np.testing.assert_allclose((k[1] * c) @ sh_matrix(np.array([[0, 0, 1.0]]), 6)[0],
                               sum(wm[1, i] * np.sqrt((4 * i + 1) / (4 * np.pi)) for i in range(3)))


def test_responses_validation():
    with pytest.raises(ValueError, match="2 rows but there are 3 shells"):
        Responses(bvals=np.array([0.0, 1000, 2000]), wm=np.ones((2, 3)))
    with pytest.raises(ValueError, match="together"):
        Responses(bvals=np.array([0.0, 1000]), wm=np.ones((2, 3)), gm=np.ones(2))


def _multi_shell_responses():
    return Responses(
        bvals=np.array([0.0, 1000, 2000]),
        wm=np.array([[SQRT_4PI, 0, 0, 0], [1.78, -0.63, 0.1, -0.01], [1.01, -0.59, 0.19, -0.04]]),
        gm=np.array([SQRT_4PI, 1.6, 0.7]), csf=np.array([SQRT_4PI, 0.18, 0.01]), s0_scale=950.0)


def test_files_round_trip_multi_shell(tmp_path):
    r = _multi_shell_responses()
    files = r.to_files(tmp_path)
    assert files == {"response_wm": "response_wm.txt", "response_gm": "response_gm.txt",
                     "response_csf": "response_csf.txt"}
    c, shells = read_response_file(tmp_path / "response_wm.txt")
    assert shells == [0, 1000, 2000] and c.shape == (3, 4)
    np.testing.assert_allclose(c, r.wm * 950, rtol=1e-9)
    bvals = np.r_[0, 5, np.full(10, 1000), np.full(10, 1995)]
    back = Responses.from_files(tmp_path / "response_wm.txt", tmp_path / "response_gm.txt",
                                tmp_path / "response_csf.txt", bvals_of_data=bvals)
    np.testing.assert_allclose(back.wm, r.wm, rtol=1e-9)
    np.testing.assert_allclose(back.gm, r.gm, rtol=1e-9)
    np.testing.assert_allclose(back.csf, r.csf, rtol=1e-9)
    assert back.s0_scale == pytest.approx(950)
    np.testing.assert_allclose(back.bvals, [2.5, 1000, 1995])


def test_files_round_trip_single_shell(tmp_path):
    r = Responses(bvals=np.array([0.0, 1000]), wm=np.array([[SQRT_4PI, 0, 0], [1.78, -0.63, 0.1]]), s0_scale=500.0)
    r.to_files(tmp_path)
    c, shells = read_response_file(tmp_path / "response_wm.txt")
    assert shells == [1000] and c.shape == (1, 3)  # what dwi2fod csd reads
    bvals = np.r_[0, 0, np.full(10, 1000.0)]
    with pytest.raises(InputError, match="no b=0 row, so its S0 scale is unknown"):
        Responses.from_files(tmp_path / "response_wm.txt", bvals_of_data=bvals)
    back = Responses.from_files(tmp_path / "response_wm.txt", bvals_of_data=bvals, s0_scale=500.0)
    np.testing.assert_allclose(back.wm, r.wm, rtol=1e-9)
    assert back.gm is None
    lazy = Responses.from_files(tmp_path / "response_wm.txt", bvals_of_data=bvals, s0_scale=lambda: 500.0)
    np.testing.assert_allclose(lazy.wm, r.wm, rtol=1e-9)


def test_a_file_with_a_b0_row_is_scaled_by_it_whatever_scale_is_passed(tmp_path):
    r = _multi_shell_responses()
    r.to_files(tmp_path)
    bvals = np.r_[0, 5, np.full(10, 1000), np.full(10, 1995)]
    called = []
    back = Responses.from_files(tmp_path / "response_wm.txt", bvals_of_data=bvals,
                                s0_scale=lambda: called.append(1) or 123.0)
    np.testing.assert_allclose(back.wm, r.wm, rtol=1e-9)
    assert back.s0_scale == pytest.approx(950) and not called  # the data's scale is not even computed
    np.testing.assert_allclose(Responses.from_files(tmp_path / "response_wm.txt", bvals_of_data=bvals,
                                                    s0_scale=123.0).wm, r.wm, rtol=1e-9)


def test_responses_written_by_a_run_read_back_to_the_same_fodf(tmp_path):
    """The files of a run are the responses it used: given back (single-shell, no b=0 row), they
    are scaled by the S0 of the same single-fibre voxels, so the fODF is the same. The mask keeps
    the centre of a real crop, whose median b=0 differs from that of its WM voxels."""
    import nibabel as nib
    from dipy.data import get_fnames

    from shdeconv.fitting import run_predict
    from shdeconv.io import load_dwi
    from shdeconv.signal import wm_s0_scale

    files = get_fnames(name="small_64D")
    dwi = load_dwi(*files)
    mask = np.zeros(dwi.shape, np.uint8)
    mask[2:8, 2:8, 2:8] = 1
    nib.save(nib.Nifti1Image(mask, dwi.affine), tmp_path / "mask.nii.gz")
    first = run_predict(*files, tmp_path / "a", mask=tmp_path / "mask.nii.gz", progress=False)
    again = run_predict(*files, tmp_path / "b", mask=tmp_path / "mask.nii.gz", progress=False,
                        response_files={"wm": tmp_path / "a" / "response_wm.txt"})
    a, b = (np.asarray(nib.load(tmp_path / k / "fodf.nii.gz").dataobj) for k in ("a", "b"))
    np.testing.assert_allclose(b, a, atol=1e-5 * np.abs(a).max())
    assert first["inputs"]["responses"] == "estimated"
    assert again["inputs"]["responses"] == {"wm": str(tmp_path / "a" / "response_wm.txt")}
    good = mask.astype(bool)
    scale = wm_s0_scale(dwi.data, dwi.bvals, dwi.directions_world, good)
    assert scale == estimate_responses(dwi.data, dwi.bvals, dwi.directions_world, good).s0_scale
    b0 = dwi.data[..., dwi.bvals <= 50].mean(-1)
    assert abs(np.median(b0[good]) / scale - 1) > 0.05  # the whole mask's scale would not do


def test_from_files_shell_mismatch(tmp_path):
    _multi_shell_responses().to_files(tmp_path)
    bvals = np.r_[0, np.full(10, 1000), np.full(10, 3000)]
    p = tmp_path / "response_wm.txt"
    with pytest.raises(InputError) as e:
        Responses.from_files(p, tmp_path / "response_gm.txt", tmp_path / "response_csf.txt", bvals_of_data=bvals)
    assert str(e.value).startswith(f"{p}: no response row for the data's b=3000 shell")
    # no Shells comment and a row count that fits nothing
    write_response_file(tmp_path / "bad.txt", np.ones((2, 3)))
    with pytest.raises(InputError, match="2 response rows and no Shells comment"):
        Responses.from_files(tmp_path / "bad.txt", bvals_of_data=np.r_[0, np.full(5, 1000), np.full(5, 2000),
                                                                      np.full(5, 3000)], s0_scale=1.0)
    with pytest.raises(InputError, match="together"):
        Responses.from_files(p, tmp_path / "response_gm.txt", bvals_of_data=bvals)


def _three_tissue_volume(rng):
    """Two shells; WM single fibres, GM-like and CSF-like slabs (4 x 4 x 2 each) with noise."""
    bvals, dirs = _acq(30, shells=(1000, 2000))
    wm, _ = _single_fibre_volume(bvals, dirs, rng, shape=(4, 4, 2), s0=1000)
    gtab = gradient_table(bvals, bvecs=dirs, b0_threshold=50)
    gm = np.broadcast_to(single_tensor(gtab, S0=1000, evals=(0.8e-3,) * 3), (4, 4, 2, len(bvals)))
    csf = np.broadcast_to(single_tensor(gtab, S0=3000, evals=(3e-3,) * 3), (4, 4, 2, len(bvals)))
    data = np.concatenate([wm, gm, csf], axis=2) + rng.normal(scale=5, size=(4, 4, 6, len(bvals)))
    return bvals, dirs, data


def test_iso_tissues_selected(rng):
    """GM-like and CSF-like voxels give isotropic responses that decay like their diffusivity."""
    bvals, dirs, data = _three_tissue_volume(rng)
    r = estimate_responses(data, bvals, dirs, np.ones((4, 4, 6), bool))
    np.testing.assert_allclose(r.gm, SQRT_4PI * np.exp(-np.array([0, 1000, 2000]) * 0.8e-3), rtol=0.03)
    np.testing.assert_allclose(r.csf[:2], SQRT_4PI * np.exp(-np.array([0, 1000]) * 3e-3), rtol=0.05)
    assert r.s0_scale == pytest.approx(1000, rel=0.02)


def test_responses_independent_of_memory_layout_and_skip_non_finite_voxels(rng):
    """Volume-by-volume reading: Fortran- and C-ordered volumes and the flat (N, G) form agree
    (to the last bit but summation order), and a voxel with a NaN in any volume is left out."""
    bvals, dirs, data = _three_tissue_volume(rng)
    mask = np.ones((4, 4, 6), bool)
    ref = estimate_responses(np.ascontiguousarray(data), bvals, dirs, mask)
    for variant in (np.asfortranarray(data.astype(np.float32)).astype(np.float64, order="F"),
                    np.asfortranarray(data.astype(np.float32)),  # as images are read: kept in float32
                    data.reshape(-1, len(bvals))):
        r = estimate_responses(variant, bvals, dirs, mask.reshape(variant.shape[:-1]))
        for a, b in ((r.wm, ref.wm), (r.gm, ref.gm), (r.csf, ref.csf)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-12)
    bad = data.copy()
    bad[..., 2:4, -1] = np.nan  # the last volume of the GM slab: those voxels must not count
    r = estimate_responses(bad, bvals, dirs, mask)
    assert np.all(np.isfinite(r.wm)) and np.all(np.isfinite(r.gm)) and np.all(np.isfinite(r.csf))


@pytest.mark.parametrize("chunk", [1, 7, 40])
def test_responses_do_not_depend_on_the_tensor_fit_chunks(rng, monkeypatch, chunk):
    """The mask's voxels are tensor-fitted a chunk at a time (memory): any chunking, a NaN voxel
    included, gives the same responses (to BLAS rounding: the batched solves sum in another order)."""
    import shdeconv.signal._response as response

    bvals, dirs, data = _three_tissue_volume(rng)
    data = np.asfortranarray(data.astype(np.float32))
    data[1, 2, 3, 5] = np.nan
    mask = np.ones((4, 4, 6), bool)
    ref = estimate_responses(data, bvals, dirs, mask)
    monkeypatch.setattr(response, "_TENSOR_CHUNK", chunk)
    r = estimate_responses(data, bvals, dirs, mask)
    for a, b in ((r.wm, ref.wm), (r.gm, ref.gm), (r.csf, ref.csf)):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-14)


@pytest.mark.mrtrix
def test_mrtrix_msmt_reads_our_files(tmp_path, mrtrix, rng):
    """``dwi2fod msmt_csd`` accepts the multi-shell files written by ``to_files``."""
    bvals, dirs = _acq(30, shells=(1000, 2000))
    data, _ = _single_fibre_volume(bvals, dirs, rng, shape=(3, 3, 2), s0=1000)
    with pytest.warns(UserWarning, match="GM/CSF thresholds"):
        r = estimate_responses(data, bvals, dirs, np.ones((3, 3, 2), bool), wm_min_voxels=5)
    r = Responses(r.bvals, r.wm, gm=SQRT_4PI * np.exp(-r.bvals * 0.8e-3), csf=SQRT_4PI * np.exp(-r.bvals * 3e-3),
                  s0_scale=r.s0_scale)
    r.to_files(tmp_path)
    affine = np.diag([-2.0, 2, 2, 1])
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), tmp_path / "dwi.nii")
    np.savetxt(tmp_path / "bvals", bvals[None], fmt="%g")
    np.savetxt(tmp_path / "bvecs", world_to_fsl_bvecs(dirs, affine).T, fmt="%.8f")
    subprocess.run(["dwi2fod", "msmt_csd", "dwi.nii", "-fslgrad", "bvecs", "bvals",
                    "response_wm.txt", "wm.nii", "response_gm.txt", "gm.nii", "response_csf.txt", "csf.nii",
                    "-quiet"], cwd=tmp_path, check=True)
    wm_frac = SQRT_4PI * nib.load(tmp_path / "wm.nii").get_fdata()[..., 0]
    gm_frac = nib.load(tmp_path / "gm.nii").get_fdata()
    # MRtrix3's fractions are in units of our responses: WM signal fraction ~ 1, no GM
    np.testing.assert_allclose(wm_frac, 1.0, atol=0.05)
    assert np.all(np.abs(gm_frac) < 0.05 * SQRT_4PI)
