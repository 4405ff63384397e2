"""The automatic mask keeps the tissue of cropped volumes, and any mask that leaves clear
diffusion signal out says so."""

import warnings

import nibabel as nib
import numpy as np
import pytest
from dipy.data import get_fnames

from shdeconv.fitting import load_subject
from shdeconv.io import load_dwi, make_mask
from shdeconv.signal import brain_mask
from shdeconv.signal._mask import has_background
from shdeconv.sim import spatial_phantom


def _fa(dwi):
    from shdeconv.signal._response import _tensor_fit

    b0 = dwi.data[..., dwi.bvals <= 50].mean(-1)
    rows = dwi.data.reshape(-1, dwi.data.shape[-1]) / b0.reshape(-1, 1)
    return _tensor_fit(rows, dwi.bvals, dwi.directions_world)[0].reshape(b0.shape)


def test_cropped_real_brain_keeps_its_white_matter():
    # DIPY's small_64D is a 10^3 crop inside a brain: no background. median_otsu alone split the
    # tissue and kept 119 voxels (30 of the 686 with FA > 0.25)
    files = get_fnames(name="small_64D")
    dwi = load_dwi(*files)
    assert make_mask(dwi.data, dwi.bvals).sum() < 200  # what the old default did
    assert not has_background(dwi.data, dwi.bvals)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # the default mask leaves nothing out: no warning
        mask, record = brain_mask(dwi.data, dwi.bvals, dwi.directions_world)
    fa = _fa(dwi)
    assert mask.sum() == (dwi.data[..., 0] > 0).sum() >= 990
    assert mask[fa > 0.25].all()
    assert record["left_out_tissue_voxels"] == 0 and record["warning"] is None
    assert "border is tissue" in record["method"]


def test_load_subject_records_the_mask_for_the_report():
    files = get_fnames(name="small_64D")
    subject = load_subject(*files)
    assert subject.mask.sum() >= 990
    assert subject.mask_record["voxels"] == int(subject.mask.sum())
    assert subject.mask_record["source"] == "automatic"


def test_a_mask_that_drops_white_matter_warns_and_counts_it():
    files = get_fnames(name="small_64D")
    dwi = load_dwi(*files)
    small = make_mask(dwi.data, dwi.bvals)
    with pytest.warns(UserWarning, match="clear diffusion signal"):
        mask, record = brain_mask(dwi.data, dwi.bvals, dwi.directions_world, small, source="m.nii.gz")
    assert mask.sum() == small.sum()  # a user's mask is used as given
    assert record["left_out_tissue_voxels"] > 400
    assert "m.nii.gz" in record["warning"] and "check the mask" in record["warning"]


@pytest.mark.parametrize("snr", [10.0, 30.0])
def test_volume_with_background_still_gets_median_otsu(snr):
    # a phantom: tissue in the middle, Rician noise around it (noise is not attenuated by
    # diffusion weighting, tissue is)
    ph = spatial_phantom(scheme="clinical", snr=snr, seed=3, size="quick")
    assert has_background(ph.dwi, ph.bvals)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        mask, record = brain_mask(ph.dwi, ph.bvals, ph.directions_world)
    assert record["method"] == "median_otsu"
    inter = (mask & ph.mask).sum()
    assert inter / ph.mask.sum() > 0.9 and inter / mask.sum() > 0.85  # median_otsu dilates a little


def test_zero_filled_border_counts_as_background():
    ph = spatial_phantom(scheme="clinical", snr=None, seed=3, size="quick")
    assert has_background(ph.dwi, ph.bvals)  # noise-free: the border is exactly 0


@pytest.mark.parametrize("denoise", ["mppca", "localpca"])
def test_small_101d_is_fitted_with_either_denoising(tmp_path, denoise):
    # DIPY's small_101D (b=0 stored as b=15, 6 x 10 x 10): it used to be refused ("no voxel with a
    # positive b=0 signal") because MP-PCA returned NaN on the few voxels the old mask kept
    from shdeconv.fitting import DirectConfig, run_fit

    files = get_fnames(name="small_101D")
    report = run_fit(*files, tmp_path / "out", direct_config=DirectConfig(iterations=2), denoise=denoise,
                     progress=False)
    assert report["voxels_in_mask"] == 600 and report["denoise"] == denoise
    assert np.isfinite(nib.load(tmp_path / "out" / "fodf.nii.gz").get_fdata()).all()


def test_mppca_failure_on_a_small_mask_keeps_the_raw_signal(tmp_path):
    from shdeconv.fitting import DirectConfig, run_fit

    files = get_fnames(name="small_101D")
    dwi = load_dwi(*files)
    small = make_mask(dwi.data, dwi.bvals)
    nib.save(nib.Nifti1Image(small.astype(np.uint8), dwi.affine), tmp_path / "m.nii.gz")
    with pytest.warns(UserWarning, match="MP-PCA left"):
        report = run_fit(*files, tmp_path / "out", mask=tmp_path / "m.nii.gz", denoise="mppca",
                         direct_config=DirectConfig(iterations=2), progress=False)
    assert report["voxels_in_mask"] == small.sum()
    assert report["mask"]["left_out_tissue_voxels"] > 0 and report["warnings"]


def test_user_mask_voxels_without_b0_signal_are_counted_and_warned_about():
    files = get_fnames(name="small_64D")
    dwi = load_dwi(*files)
    data = dwi.data.copy()
    data[:3, :3, :3] = 0
    user = np.zeros(dwi.shape, bool)
    user[:3, :3, :3] = True
    user[2:8, 2:8, 2:8] = True
    with pytest.warns(UserWarning, match="no positive b=0 signal"):
        mask, record = brain_mask(data, dwi.bvals, dwi.directions_world, user, source="m.nii.gz")
    assert record["mask_voxels"] == user.sum() == 242
    assert record["left_out_without_b0_signal"] == 27 == user.sum() - mask.sum()
    assert record["voxels"] == 215 and "27 of the 242 voxels of the mask (m.nii.gz)" in record["warning"]
