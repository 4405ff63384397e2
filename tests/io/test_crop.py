"""load_dwi(crop=...): only the mask's box is read, in one pass, and nothing about the rest is lost
(non-finite voxels, the mask's audit); outputs go back on the image's grid."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from dipy.data import get_fnames

from shdeconv.io import Beyond, load_dwi, mask_box, world_to_fsl_bvecs
from shdeconv.signal import brain_mask
from shdeconv.signal._mask import left_out_tissue

SHAPE = (10, 9, 8)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


@pytest.fixture(params=["dwi.nii.gz", "dwi.nii"])
def dataset(request, tmp_path, rng):
    g = 12
    bvals = np.r_[0.0, 0.0, np.full(g - 2, 1000.0)]
    dirs = rng.normal(size=(g, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    dirs[:2] = 0
    data = rng.uniform(50, 100, size=SHAPE + (g,)).astype(np.float32)
    data[..., :2] = 200
    data[0, 0, 0, 5] = np.nan  # outside the mask's box
    data[3, 4, 2, 7] = np.inf  # inside
    mask = np.zeros(SHAPE, bool)
    mask[2:6, 3:7, 1:5] = True
    mask[4, 5, 3] = False
    img = nib.Nifti1Image(data, AFFINE)
    p = {"dwi": tmp_path / request.param, "bvals": tmp_path / "bvals", "bvecs": tmp_path / "bvecs",
         "mask": tmp_path / "mask.nii.gz"}
    nib.save(img, p["dwi"])
    np.savetxt(p["bvals"], bvals[None], fmt="%g")
    np.savetxt(p["bvecs"], world_to_fsl_bvecs(dirs, AFFINE).T, fmt="%.8f")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), AFFINE), p["mask"])
    return p, data, mask


def _load(p, **kw):
    with pytest.warns(UserWarning, match="2 voxels contain NaN or Inf"):
        # one of the mask's 63 voxels is bad: 1.6% of the mask
        return load_dwi(p["dwi"], p["bvals"], p["bvecs"], p["mask"], max_bad_fraction=0.02, **kw)


def test_crop_reads_the_masks_box_and_puts_arrays_back_on_the_image_grid(dataset):
    p, _, _ = dataset
    full = _load(p)
    assert full.box is None and full.beyond is None and full.uncrop(full.data) is full.data
    d = _load(p, crop=0)
    box = (slice(2, 6), slice(3, 7), slice(1, 5))
    assert d.box == box and d.image_shape == SHAPE and d.shape == (4, 4, 4)
    assert d.data.flags.f_contiguous and d.data.dtype == np.float32
    np.testing.assert_array_equal(d.data, full.data[box])  # the inf voxel is zeroed there too
    np.testing.assert_array_equal(d.mask, full.mask[box])
    assert not d.mask[1, 1, 1] and full.bad_voxels.sum() == 2 and d.bad_voxels.sum() == 1
    back = d.uncrop(d.data[..., :3])
    assert back.shape == SHAPE + (3,)
    np.testing.assert_array_equal(back[box], d.data[..., :3])
    beyond = np.ones(SHAPE, bool)
    beyond[box] = False
    assert not back[beyond].any()
    # what lies beyond: every outside voxel here (few), finite rows only, each standing for itself
    outside = np.prod(SHAPE) - 64
    assert d.beyond.weight == 1.0 and d.beyond.n_valid == outside - 1 and len(d.beyond.rows) == outside - 1
    # a margin grows the box within the volume; a callable gets the number of volumes
    assert _load(p, crop=3).box == (slice(0, 9), slice(0, 9), slice(0, 8))
    assert _load(p, crop=lambda n: n // 12).box == (slice(1, 7), slice(2, 8), slice(0, 6))
    with pytest.warns(UserWarning, match="2 voxels"):
        no_mask = load_dwi(p["dwi"], p["bvals"], p["bvecs"], max_bad_fraction=0.01, crop=0)
    assert no_mask.box is None and no_mask.shape == SHAPE


def test_a_scaled_integer_image_is_cropped_as_it_is_read_whole(dataset, tmp_path):
    p, data, _ = dataset
    ints = np.nan_to_num(data, nan=0.0, posinf=0.0).astype(np.int16)
    img = nib.Nifti1Image(ints, AFFINE)
    img.header.set_slope_inter(0.5, 3.0)
    q = dict(p, dwi=tmp_path / "int.nii.gz")
    nib.save(img, q["dwi"])
    full = load_dwi(q["dwi"], q["bvals"], q["bvecs"], q["mask"])
    d = load_dwi(q["dwi"], q["bvals"], q["bvecs"], q["mask"], crop=1)
    np.testing.assert_array_equal(d.data, full.data[d.box])
    np.testing.assert_allclose(full.data, ints * 0.5 + 3.0)


def test_mask_box():
    m = np.zeros((5, 6, 7), bool)
    m[1, 2, 3] = m[2, 4, 3] = True
    assert mask_box(m) == (slice(1, 3), slice(2, 5), slice(3, 4))
    assert mask_box(m, 2) == (slice(0, 5), slice(0, 6), slice(1, 6))


def test_the_audit_of_a_cropped_mask_sees_the_whole_image(tmp_path):
    """A mask that keeps a corner of a real brain crop: cropped, the record and the left-out count
    are those of the whole image (exactly, with every outside voxel sampled; within the sampling
    error, with a lattice)."""
    files = get_fnames(name="small_64D")
    whole = load_dwi(*files)
    small = np.zeros(whole.shape, bool)
    small[:5, :5, :6] = True
    nib.save(nib.Nifti1Image(small.astype(np.uint8), whole.affine), tmp_path / "m.nii.gz")
    full = load_dwi(*files, tmp_path / "m.nii.gz")
    cropped = load_dwi(*files, tmp_path / "m.nii.gz", crop=0)
    assert cropped.shape == (5, 5, 6)
    with pytest.warns(UserWarning, match="clear diffusion signal"):
        _, expected = brain_mask(full.data, full.bvals, full.directions_world, full.mask)
    with pytest.warns(UserWarning, match="clear diffusion signal"):
        _, got = brain_mask(cropped.data, cropped.bvals, cropped.directions_world, cropped.mask,
                            beyond=cropped.beyond)
    assert got == expected and expected["left_out_tissue_voxels"] > 300
    # every other voxel along each axis: the count is scaled back by 8
    b = cropped.beyond
    lattice = np.zeros(whole.shape, bool)
    lattice[::2, ::2, ::2] = True
    lattice[:5, :5, :6] = False
    sample = Beyond(n_valid=b.n_valid, rows=whole.data[lattice], weight=8.0)
    b0 = cropped.data[..., cropped.bvals <= 50].mean(-1)
    n = left_out_tissue(cropped.data, cropped.bvals, cropped.directions_world, cropped.mask,
                        np.ones(cropped.shape, bool), b0, sample)
    assert abs(n - expected["left_out_tissue_voxels"]) < 0.15 * expected["left_out_tissue_voxels"]
    with pytest.raises(ValueError, match="user mask"):
        brain_mask(cropped.data, cropped.bvals, cropped.directions_world, None, beyond=b)


def test_a_truncated_image_is_refused_when_cropping_too(dataset, tmp_path):
    import gzip

    from shdeconv.io import InputError

    p, _, _ = dataset
    gz = str(p["dwi"]).endswith(".gz")
    raw = gzip.decompress(p["dwi"].read_bytes()) if gz else p["dwi"].read_bytes()
    cut = tmp_path / ("cut.nii.gz" if gz else "cut.nii")
    cut.write_bytes(gzip.compress(raw[:-1000]) if gz else raw[:-1000])
    with pytest.raises(InputError, match="cut.nii.*cannot read the image data"):
        load_dwi(cut, p["bvals"], p["bvecs"], p["mask"], crop=0)


def test_crop_to_the_masks_voxels(dataset):
    from shdeconv.io import MaskedImage

    p, _, mask = dataset
    full = _load(p)
    d = _load(p, crop="voxels")
    n = int(mask.sum())
    assert d.data.shape == (n, 1, 1, 12) and d.data.flags.f_contiguous and d.box is None
    np.testing.assert_array_equal(d.voxels, mask)
    np.testing.assert_array_equal(d.data[:, 0, 0], full.data[mask])  # C order; the inf voxel zeroed
    np.testing.assert_array_equal(d.mask[:, 0, 0], full.mask[mask])
    np.testing.assert_array_equal(d.uncrop(d.data), np.where(mask[..., None], full.data, 0))
    np.testing.assert_array_equal(d.crop(d.uncrop(d.data)), d.data)
    assert d.beyond.n_valid == np.prod(SHAPE) - n - 1  # the NaN voxel is outside the mask
    image = d.image()
    assert isinstance(image, MaskedImage) and image.shape == full.data.shape
    idx = (np.array([2, 0, 5]), np.array([3, 0, 6]), np.array([1, 0, 4]))  # in, out, in
    np.testing.assert_array_equal(image[idx], np.where(mask[idx][:, None], full.data[idx], 0))
    with pytest.raises(ValueError, match="voxels"):
        load_dwi(p["dwi"], p["bvals"], p["bvecs"], p["mask"], crop="everything")


def test_the_gradient_check_on_the_masks_voxels_is_the_whole_images():
    from shdeconv.direction import check_gradients

    files = get_fnames(name="small_64D")
    whole = load_dwi(*files)
    mask = np.zeros(whole.shape, bool)
    mask[1:9, 1:9, 2:8] = True
    expected = check_gradients(whole.data, whole.bvals, whole.bvecs, whole.affine, mask)
    d = load_dwi(*files, _save_mask(mask, whole.affine), crop="voxels")
    got = check_gradients(d.image(), d.bvals, d.bvecs, d.affine, d.uncrop(d.mask))
    assert got.ranking == expected.ranking and got.n_voxels == expected.n_voxels > 0
    with pytest.raises(ValueError, match="needs its mask"):
        check_gradients(d.image(), d.bvals, d.bvecs, d.affine)


def _save_mask(mask, affine):
    import tempfile

    path = tempfile.mkdtemp() + "/mask.nii.gz"
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), path)
    return path


def test_mppca_is_refused_on_the_masks_voxels_alone(dataset):
    from shdeconv.fitting import load_subject

    p, _, _ = dataset
    with pytest.raises(ValueError, match="neighbours"):
        load_subject(p["dwi"], p["bvals"], p["bvecs"], p["mask"], denoise="mppca", voxels_only=True)
