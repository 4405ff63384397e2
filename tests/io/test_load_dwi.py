"""load_dwi: every bad input is an InputError naming the file and the problem."""

from __future__ import annotations

import warnings

import nibabel as nib
import numpy as np
import pytest

from shdeconv.io import (
    InputError,
    bvals_shells,
    combine_masks,
    fsl_bvecs_to_world,
    load_dwi,
    make_mask,
    tensor_conditioning,
    world_to_fsl_bvecs,
)
from shdeconv.io._nifti import POOR_CONDITIONING
from shdeconv.signal import brain_mask

SHAPE = (6, 5, 4)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _directions(n, rng):
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def dataset(tmp_path, rng):
    """A valid small data set on disk: 2 b=0 + 10 b=1000 volumes; returns paths and arrays."""
    bvals = np.r_[0.0, 0.0, np.full(10, 1000.0)]
    dirs = np.r_[np.zeros((2, 3)), _directions(10, rng)]
    data = rng.uniform(50, 100, size=SHAPE + (12,)).astype(np.float32)
    data[..., :2] = 200
    paths = {k: tmp_path / n for k, n in
             dict(dwi="dwi.nii.gz", bvals="bvals", bvecs="bvecs", mask="mask.nii.gz").items()}
    nib.save(nib.Nifti1Image(data, AFFINE), paths["dwi"])
    np.savetxt(paths["bvals"], bvals[None], fmt="%g")
    np.savetxt(paths["bvecs"], world_to_fsl_bvecs(dirs, AFFINE).T, fmt="%.8f")
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.uint8), AFFINE), paths["mask"])
    return dict(paths=paths, bvals=bvals, dirs=dirs, data=data, tmp=tmp_path)


def _load(p, **kw):
    return load_dwi(p["dwi"], p["bvals"], p["bvecs"], p.get("mask"), **kw)


def test_valid_dataset_loads(dataset):
    d = _load(dataset["paths"])
    assert d.data.shape == SHAPE + (12,) and d.data.dtype == np.float32
    np.testing.assert_allclose(d.bvals, dataset["bvals"])
    np.testing.assert_allclose(d.directions_world, dataset["dirs"], atol=1e-7)
    assert d.bvecs.shape == (12, 3)
    assert d.mask.dtype == bool and d.mask.all()
    assert brain_mask(d.data, d.bvals, d.directions_world, d.mask)[0].all()


def test_column_layout_is_accepted(dataset):
    p = dataset["paths"]
    np.savetxt(p["bvals"], dataset["bvals"][:, None], fmt="%g")
    np.savetxt(p["bvecs"], world_to_fsl_bvecs(dataset["dirs"], AFFINE), fmt="%.8f")
    np.testing.assert_allclose(_load(p).directions_world, dataset["dirs"], atol=1e-7)


@pytest.mark.parametrize("affine", [np.diag([2.0, 2, 2, 1]), np.diag([-2.0, 2, 2, 1]),
                                    np.array([[0, -2, 0, 1], [-1.9, 0, -0.5, 2], [-0.5, 0, 1.9, 3], [0, 0, 0, 1.0]])])
def test_bvecs_world_round_trip(rng, affine):
    g = _directions(20, rng)
    b = world_to_fsl_bvecs(g, affine)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(fsl_bvecs_to_world(b, affine), g, atol=1e-12)


def _write(path, text):
    path.write_text(text)


def _corrupt(kind, ds):
    """Damage the data set in one way; return (the file the message must name, problem words)."""
    p, tmp = ds["paths"], ds["tmp"]
    G = 12
    if kind == "missing_dwi":
        p["dwi"].unlink()
        return p["dwi"], "does not exist"
    if kind == "missing_bvecs":
        p["bvecs"] = tmp / "nope"
        return p["bvecs"], "does not exist"
    if kind == "garbage_dwi":
        p["dwi"] = tmp / "garbage.nii.gz"
        _write(p["dwi"], "this is not an image")
        return p["dwi"], "not a readable NIfTI"
    if kind == "dwi_3d":
        nib.save(nib.Nifti1Image(ds["data"][..., 0], AFFINE), p["dwi"])
        return p["dwi"], "4-D"
    if kind == "bvals_count":
        np.savetxt(p["bvals"], ds["bvals"][None, :-1], fmt="%g")
        return p["bvals"], "11 b-values but the dwi has 12 volumes"
    if kind == "bvecs_count":
        np.savetxt(p["bvecs"], world_to_fsl_bvecs(ds["dirs"], AFFINE).T[:, :-1], fmt="%.8f")
        return p["bvecs"], "expected 3x12"
    if kind == "bvals_text":
        _write(p["bvals"], "0 0 1000 abc\n")
        return p["bvals"], "not numeric"
    if kind == "bvecs_not_unit":
        b = world_to_fsl_bvecs(ds["dirs"], AFFINE)
        b[5] *= 1.5
        np.savetxt(p["bvecs"], b.T, fmt="%.8f")
        return p["bvecs"], "not unit vectors"
    if kind == "bvecs_zero_dw":
        b = world_to_fsl_bvecs(ds["dirs"], AFFINE)
        b[5] = 0
        np.savetxt(p["bvecs"], b.T, fmt="%.8f")
        return p["bvecs"], "zero gradient direction"
    if kind == "bvecs_all_zero":
        np.savetxt(p["bvecs"], np.zeros((3, G)), fmt="%g")
        return p["bvecs"], "all gradient directions are zero"
    if kind == "bvecs_in_a_plane":  # e.g. a z column lost: no tensor, let alone fibres
        b = world_to_fsl_bvecs(ds["dirs"], AFFINE)
        b[2:, 2] = 0
        b[2:] /= np.linalg.norm(b[2:], axis=1, keepdims=True)
        np.savetxt(p["bvecs"], b.T, fmt="%.8f")
        return p["bvecs"], "10 diffusion-weighted directions cannot determine a diffusion tensor"
    if kind == "five_directions":
        b = world_to_fsl_bvecs(ds["dirs"], AFFINE)
        b[7:] = b[2:7]
        np.savetxt(p["bvecs"], b.T, fmt="%.8f")
        return p["bvecs"], "cannot determine a diffusion tensor"
    if kind == "no_b0":
        np.savetxt(p["bvals"], np.r_[100.0, 100.0, ds["bvals"][2:]][None], fmt="%g")
        b = world_to_fsl_bvecs(ds["dirs"], AFFINE)
        b[:2] = [[1, 0, 0], [0, 1, 0]]
        np.savetxt(p["bvecs"], b.T, fmt="%.8f")
        return p["bvals"], "no b=0 volume"
    if kind == "complex":
        nib.save(nib.Nifti1Image((ds["data"] * (1 + 0.5j)).astype(np.complex64), AFFINE), p["dwi"])
        return p["dwi"], "holds complex numbers (complex64)"
    if kind == "too_many_nan":
        d = ds["data"].copy()
        d[0, 0, 0, 3] = np.nan
        d[1, 1, 1, 0] = np.inf
        nib.save(nib.Nifti1Image(d, AFFINE), p["dwi"])
        return p["dwi"], "contain NaN or Inf"
    if kind == "mask_shape":
        nib.save(nib.Nifti1Image(np.ones((6, 5, 3), np.uint8), AFFINE), p["mask"])
        return p["mask"], "mask shape"
    if kind == "mask_affine":
        a = AFFINE.copy()
        a[0, 3] = 0.5
        nib.save(nib.Nifti1Image(np.ones(SHAPE, np.uint8), a), p["mask"])
        return p["mask"], "mask affine"
    if kind == "mask_garbage":
        _write(p["mask"], "garbage")
        return p["mask"], "not a readable NIfTI"
    if kind == "affine_nonfinite":
        # nibabel refuses to write a NaN affine: patch the raw NIfTI-1 header instead
        p["dwi"] = tmp / "nan_affine.nii"
        img = nib.Nifti1Image(ds["data"], AFFINE)
        img.set_qform(None, code=0)
        img.set_sform(AFFINE, code=1)
        nib.save(img, p["dwi"])
        raw = bytearray(p["dwi"].read_bytes())
        raw[280:284] = np.float32(np.nan).tobytes()  # srow_x[0]
        p["dwi"].write_bytes(bytes(raw))
        return p["dwi"], "non-finite affine"
    raise AssertionError(kind)


BAD_INPUTS = ["missing_dwi", "missing_bvecs", "garbage_dwi", "dwi_3d", "bvals_count", "bvecs_count",
              "bvals_text", "bvecs_not_unit", "bvecs_zero_dw", "bvecs_all_zero", "bvecs_in_a_plane",
              "five_directions", "no_b0", "complex", "too_many_nan",
              "mask_shape", "mask_affine", "mask_garbage", "affine_nonfinite"]


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_names_file_and_problem(dataset, kind):
    path, problem = _corrupt(kind, dataset)
    with pytest.raises(InputError) as e:
        _load(dataset["paths"])
    msg = str(e.value)
    assert msg.startswith(f"{path}: "), msg
    assert problem in msg, msg
    assert "\n" not in msg
    assert e.value.path == str(path)


def test_few_nan_voxels_are_repaired(dataset):
    p = dataset["paths"]
    d = dataset["data"].copy()
    d[2, 2, 2, 5] = np.nan
    nib.save(nib.Nifti1Image(d, AFFINE), p["dwi"])
    with pytest.warns(UserWarning, match="1 voxel contains NaN"):
        out = _load(p, max_bad_fraction=0.01)
    assert np.all(np.isfinite(out.data)) and np.all(out.data[2, 2, 2] == 0)
    assert out.bad_voxels.sum() == 1 and not out.mask[2, 2, 2] and not brain_mask(out.data, out.bvals, out.directions_world)[0][2, 2, 2]


def test_nan_voxels_up_to_the_fraction_are_repaired_and_one_more_refused(dataset):
    p = dataset["paths"]
    n = int(np.prod(SHAPE))
    d = dataset["data"].copy()
    d[2, 2, 2, 5] = np.nan
    nib.save(nib.Nifti1Image(d, AFFINE), p["dwi"])
    with pytest.warns(UserWarning, match="1 voxel contains NaN"):
        _load(p, max_bad_fraction=1 / n)  # exactly the largest fraction repaired
    d[3, 3, 3, 0] = np.inf
    nib.save(nib.Nifti1Image(d, AFFINE), p["dwi"])
    with pytest.raises(InputError, match=f"2 of {n} voxels .* contain NaN or Inf, more than"):
        _load(p, max_bad_fraction=1 / n)
    # with a mask, what counts is the fraction of its voxels: the two outside a small mask are repaired
    small = np.zeros(SHAPE, np.uint8)
    small[:2] = 1
    nib.save(nib.Nifti1Image(small, AFFINE), p["mask"])
    with pytest.warns(UserWarning, match="2 voxels contain NaN"):
        out = _load(p, max_bad_fraction=1 / n)
    assert out.mask.sum() == small.sum() and out.bad_voxels.sum() == 2
    d[0, 0, 0, 3] = np.nan  # one inside the 40-voxel mask: 2.5%
    nib.save(nib.Nifti1Image(d, AFFINE), p["dwi"])
    with pytest.raises(InputError, match="1 of 40 voxels of the mask .* contain NaN or Inf"):
        _load(p, max_bad_fraction=0.02)


def test_clustered_directions_are_warned_about(dataset):
    """Six directions within about 25 degrees of z determine a tensor only poorly."""
    p = dataset["paths"]
    t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
    tilt = np.linspace(0.1, 0.45, 10)
    clustered = np.stack([np.sin(tilt) * np.cos(t), np.sin(tilt) * np.sin(t), np.cos(tilt)], 1)
    assert tensor_conditioning(clustered) < POOR_CONDITIONING
    np.savetxt(p["bvecs"], np.r_[np.zeros((2, 3)), clustered].T, fmt="%.8f")
    with pytest.warns(UserWarning, match=r"the 10 diffusion-weighted directions cluster \(tensor conditioning 0\.0"):
        _load(p)


def test_tensor_conditioning(rng):
    from shdeconv.sim import acquisition_scheme

    bvals, dirs = acquisition_scheme("clinical")
    dw = dirs[bvals > 50]
    assert tensor_conditioning(dw) > 0.9  # 30 well-spread directions
    rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    assert tensor_conditioning(dw @ rot.T) == pytest.approx(tensor_conditioning(dw), rel=1e-9)  # frame-free
    assert tensor_conditioning(-dw) == pytest.approx(tensor_conditioning(dw), rel=1e-12)  # antipodal
    assert tensor_conditioning(dw[:5]) == 0.0
    a = np.linspace(0, np.pi, 20, endpoint=False)
    assert tensor_conditioning(np.stack([np.cos(a), np.sin(a), 0 * a], 1)) < 1e-12  # a plane
    cone = np.stack([0.5 * np.cos(a), 0.5 * np.sin(a), np.full_like(a, 0.75 ** 0.5)], 1)
    assert tensor_conditioning(cone) < 1e-12


def test_nan_bvecs_of_b0_volumes_are_zeroed(dataset):
    """Some files (DIPY's small_64D) hold NaN directions for b=0 volumes."""
    p = dataset["paths"]
    b = world_to_fsl_bvecs(dataset["dirs"], AFFINE)
    b[0] = np.nan
    np.savetxt(p["bvecs"], b.T, fmt="%.8f")
    out = _load(p)
    assert np.all(out.directions_world[:2] == 0)
    b[4] = np.nan
    np.savetxt(p["bvecs"], b.T, fmt="%.8f")
    with pytest.raises(InputError, match="volume 4 .* NaN"):
        _load(p)


def test_bvals_shells():
    b = np.array([5, 0, 1000, 995, 2010, 1990, 3000, 40, 1005])
    values, idx = bvals_shells(b)
    np.testing.assert_allclose(values, [15, 1000, 2000, 3000])
    np.testing.assert_array_equal(idx, [0, 0, 1, 1, 2, 2, 3, 0, 1])
    values, idx = bvals_shells(np.array([1000.0, 2000.0]))
    np.testing.assert_allclose(values, [1000, 2000])


def test_make_mask_and_combine(rng):
    data = np.zeros((16, 16, 8, 3), np.float32)
    data[4:12, 4:12, 2:6] = 100 + rng.normal(size=(8, 8, 4, 3))
    m = make_mask(data, np.array([0.0, 1000, 1000]))
    assert m[8, 8, 4] and not m[0, 0, 0]
    flat = np.ones((4, 4, 4, 2), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert make_mask(flat, np.array([0.0, 1000])).all()
    assert combine_masks(m, None, np.zeros_like(m)).sum() == 0


@pytest.mark.parametrize("dtype,slope,inter,endian", [("float32", None, None, "<"), ("int16", 0.5, 3.0, "<"),
                                                      ("float32", None, None, ">"), ("uint8", 2.0, 0.0, "<")])
def test_gz_reader_equals_nibabel(tmp_path, dtype, slope, inter, endian):
    """The chunked gzip reader (no double buffering) gives nibabel's float32 data bit for bit."""
    from shdeconv.io._nifti import _read_float32

    a = (np.random.default_rng(0).normal(size=(7, 6, 5, 9)) * 50 + 100).astype(dtype)
    if endian == ">":
        img = nib.Nifti1Image(a.astype(">f4"), np.eye(4), nib.Nifti1Header().as_byteswapped(">"))
    else:
        img = nib.Nifti1Image(a, np.eye(4))
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    path = tmp_path / "x.nii.gz"
    nib.save(img, path)
    loaded = nib.load(path)
    got = _read_float32(loaded, path)
    assert got.dtype == np.float32 and got.flags["F_CONTIGUOUS"]
    np.testing.assert_array_equal(got, np.asarray(loaded.get_fdata(dtype=np.float32)))


def test_truncated_gz_is_a_clear_error(tmp_path):
    from shdeconv.io import InputError, load_dwi

    bvals = np.array([0, 1000, 1000, 1000, 1000, 1000, 1000])
    dti6 = np.array([[1, 0, 1], [-1, 0, 1], [0, 1, 1], [0, 1, -1], [1, 1, 0], [-1, 1, 0]]) / np.sqrt(2)
    bvecs = np.vstack([np.zeros(3), dti6])
    data = np.random.default_rng(1).uniform(100, 200, size=(6, 6, 4, 7)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "full.nii.gz")
    blob = (tmp_path / "full.nii.gz").read_bytes()
    (tmp_path / "dwi.nii.gz").write_bytes(blob[: len(blob) // 2])
    np.savetxt(tmp_path / "bvals", bvals[None], fmt="%d")
    np.savetxt(tmp_path / "bvecs", bvecs.T, fmt="%.6f")
    with pytest.raises(InputError, match="dwi.nii.gz"):
        load_dwi(tmp_path / "dwi.nii.gz", tmp_path / "bvals", tmp_path / "bvecs")


@pytest.mark.parametrize("order", ["F", "C"])
def test_nonfinite_voxels_in_either_memory_order(order):
    """The volume-by-volume (Fortran) and slab-by-slab (C) scans find exactly the voxels with a
    NaN or Inf in any volume."""
    from shdeconv.io._nifti import _nonfinite_voxels

    rng = np.random.default_rng(4)
    data = rng.normal(size=(9, 6, 5, 7)).astype(np.float32)
    data[1, 2, 3, 0] = np.nan
    data[8, 5, 4, 6] = np.inf
    data[0, 0, 0, 3] = -np.inf
    data = np.asarray(data, order=order)
    expected = ~np.all(np.isfinite(data), axis=-1)
    bad = _nonfinite_voxels(data)
    np.testing.assert_array_equal(bad, expected)
    assert bad.sum() == 3
