"""MRtrix3 inputs: .mif/.mif.gz/.mih images, -grad tables, masks stored in another axis order.

Files are written here by a small writer of the documented format, and (with MRtrix3
installed) by ``mrconvert`` itself, whose conversion of FSL bvecs is the reference for the frame.
"""

from __future__ import annotations

import gzip
import subprocess

import nibabel as nib
import numpy as np
import pytest

from shdeconv.io import InputError, fsl_bvecs_to_world, load_dwi, load_mask, world_to_fsl_bvecs
from shdeconv.io._mrtrix import read_mrtrix_grad, read_mrtrix_image

SHAPE = (5, 4, 3)
AFFINE = np.array([[-2.0, 0, 0, 10], [0, 2.0, 0, -7], [0, 0, 2.5, 3], [0, 0, 0, 1]])
_NUMPY = {"Float32LE": "<f4", "Float32BE": ">f4", "Float64LE": "<f8", "Int16BE": ">i2", "UInt8": "u1",
          "Int32LE": "<i4"}


def write_mif(path, data, affine, *, layout=None, datatype="Float32LE", scheme=None, scaling=None):
    """Write ``data`` in MRtrix3's format: ``.mif`` (data after the header), ``.mif.gz`` or
    ``.mih`` (data in a ``.dat`` beside it). ``layout``: the header's signed ranks."""
    path = str(path)
    ndim = data.ndim
    layout = layout or ",".join(f"+{a}" for a in range(ndim))
    signs = [t.strip().startswith("-") for t in layout.split(",")]
    ranks = [abs(int(t)) for t in layout.split(",")]
    stored = data[tuple(slice(None, None, -1) if s else slice(None) for s in signs)]
    stored = np.transpose(stored, sorted(range(ndim), key=lambda a: ranks[a], reverse=True))
    if datatype == "Bit":
        payload = np.packbits(stored.ravel().astype(bool), bitorder="big").tobytes()
    else:
        payload = np.ascontiguousarray(stored).astype(_NUMPY[datatype]).tobytes()
    vox = np.r_[np.linalg.norm(affine[:3, :3], axis=0), np.ones(ndim - 3)]
    rot = affine[:3, :3] / vox[:3]
    lines = ["mrtrix image", "dim: " + ",".join(str(n) for n in data.shape),
             "vox: " + ",".join(f"{v:g}" for v in vox), f"layout: {layout}", f"datatype: {datatype}"]
    lines += [f"transform: {r[0]:.10g},{r[1]:.10g},{r[2]:.10g},{t:.10g}" for r, t in zip(rot, affine[:3, 3])]
    if scaling is not None:
        lines.append(f"scaling: {scaling[0]:g},{scaling[1]:g}")
    lines += [f"dw_scheme: {x:.10g},{y:.10g},{z:.10g},{b:g}" for x, y, z, b in (scheme if scheme is not None else [])]
    if path.endswith(".mih"):
        dat = path[:-4] + ".dat"
        with open(dat, "wb") as f:
            f.write(payload)
        with open(path, "w") as f:
            f.write("\n".join(lines + [f"file: {dat.rsplit('/', 1)[-1]} 0"]) + "\n")
        return
    head = "\n".join(lines) + "\n"
    offset = len(head) + len("file: . 0000000\nEND\n")
    blob = (head + f"file: . {offset:07d}\nEND\n").encode() + payload
    with (gzip.open(path, "wb") if path.endswith(".gz") else open(path, "wb")) as f:
        f.write(blob)


@pytest.mark.parametrize("name,layout,datatype", [
    ("a.mif", "+0,+1,+2,+3", "Float32LE"),
    ("b.mif", "-0,+2,-1,+3", "Float32BE"),
    ("c.mif.gz", "+3,+0,+1,+2", "Float64LE"),
    ("d.mih", "+1,-0,+2,+3", "Int32LE"),
])
def test_reader_puts_every_layout_and_datatype_on_the_header_axes(tmp_path, rng, name, layout, datatype):
    data = rng.integers(0, 1000, size=SHAPE + (6,)).astype(np.float32)
    write_mif(tmp_path / name, data, AFFINE, layout=layout, datatype=datatype)
    img = read_mrtrix_image(tmp_path / name).image
    np.testing.assert_array_equal(np.asarray(img.dataobj, dtype=np.float32), data)
    assert min(np.asarray(img.dataobj).strides) > 0  # reversed axes are copied, not viewed
    np.testing.assert_allclose(img.affine, AFFINE, atol=1e-9)
    assert img.header.get_sform(coded=True)[1] == 1


def test_reader_applies_scaling_and_unpacks_bits(tmp_path, rng):
    data = rng.integers(0, 200, size=SHAPE + (2,)).astype(np.float32)
    write_mif(tmp_path / "s.mif", data, AFFINE, datatype="UInt8", scaling=(-3.0, 0.5))
    np.testing.assert_allclose(read_mrtrix_image(tmp_path / "s.mif").image.get_fdata(), data * 0.5 - 3.0)
    mask = rng.random(SHAPE) > 0.5  # an odd number of voxels: the last byte is partly padding
    write_mif(tmp_path / "m.mif", mask, AFFINE, layout="-1,+0,+2", datatype="Bit")
    np.testing.assert_array_equal(np.asarray(read_mrtrix_image(tmp_path / "m.mif").image.dataobj) != 0, mask)


@pytest.mark.parametrize("damage,problem", [
    (lambda b: b"nifti " + b[6:], "does not start with 'mrtrix image'"),
    (lambda b: b.replace(b"datatype: Float32LE", b"datatype: CFloat32LE"), "not supported"),
    (lambda b: b.replace(b"layout: +0,+1,+2,+3", b"layout: +0,+1,+1,+3"), "not a permutation"),
    (lambda b: b.replace(b"\ntransform:", b"\nxtransform:", 1), "three 'transform' rows"),
    (lambda b: b[:-10], "bytes short"),
])
def test_damaged_images_are_input_errors_naming_the_file(tmp_path, rng, damage, problem):
    path = tmp_path / "dwi.mif"
    write_mif(path, rng.random(SHAPE + (4,)).astype(np.float32), AFFINE)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(InputError, match=problem) as e:
        read_mrtrix_image(path)
    assert e.value.path == str(path)


def _scheme(rng, n_dw=12):
    v = rng.normal(size=(n_dw, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return np.r_[np.zeros((2, 4)), np.c_[v, np.full(n_dw, 1000.0)]]


@pytest.fixture
def mif_dataset(tmp_path, rng):
    """One data set three ways: NIfTI + FSL files, NIfTI + MRtrix3 grad file, and a .mif with
    its table in the header (stored in another axis order)."""
    scheme = _scheme(rng)
    data = rng.uniform(50, 100, size=SHAPE + (len(scheme),)).astype(np.float32)
    data[..., :2] = 200
    nib.save(nib.Nifti1Image(data, AFFINE), tmp_path / "dwi.nii.gz")
    np.savetxt(tmp_path / "bvals", scheme[:, 3][None], fmt="%g")
    np.savetxt(tmp_path / "bvecs", world_to_fsl_bvecs(scheme[:, :3], AFFINE).T, fmt="%.10f")
    np.savetxt(tmp_path / "dwi.b", scheme, fmt="%.10g")
    write_mif(tmp_path / "dwi.mif", data, AFFINE, layout="-0,+1,+2,+3", scheme=scheme)
    return tmp_path, data, scheme


def test_grad_file_and_header_table_equal_the_fsl_files(mif_dataset):
    d, data, scheme = mif_dataset
    fsl = load_dwi(d / "dwi.nii.gz", d / "bvals", d / "bvecs")
    for other in (load_dwi(d / "dwi.nii.gz", grad_path=d / "dwi.b"), load_dwi(d / "dwi.mif")):
        np.testing.assert_array_equal(other.data, fsl.data)
        np.testing.assert_allclose(other.bvals, fsl.bvals)
        np.testing.assert_allclose(other.directions_world, fsl.directions_world, atol=1e-9)
        np.testing.assert_allclose(other.bvecs, fsl.bvecs, atol=1e-9)
    np.testing.assert_allclose(fsl.directions_world[2:], scheme[2:, :3], atol=1e-9)
    assert read_mrtrix_grad(d / "dwi.b").shape == (len(scheme), 4)
    # as mrinfo -export_grad_mrtrix writes b=0 rows of a table whose b=0 vectors were NaN
    with_nan = scheme.copy()
    with_nan[:2, :3] = np.nan
    np.savetxt(d / "nan.b", with_nan, fmt="%.10g")
    assert "nan" in (d / "nan.b").read_text()
    other = load_dwi(d / "dwi.nii.gz", grad_path=d / "nan.b")
    np.testing.assert_allclose(other.directions_world, fsl.directions_world, atol=1e-9)


def test_gradient_table_problems_are_input_errors(mif_dataset, rng):
    d, data, scheme = mif_dataset
    write_mif(d / "nograd.mif", data, AFFINE)
    with pytest.raises(InputError, match="no gradient table.*no dw_scheme"):
        load_dwi(d / "nograd.mif")
    with pytest.raises(InputError, match="no gradient table"):
        load_dwi(d / "dwi.nii.gz")
    np.savetxt(d / "short.b", scheme[:-1], fmt="%.10g")
    with pytest.raises(InputError, match="rows but the dwi has") as e:
        load_dwi(d / "dwi.nii.gz", grad_path=d / "short.b")
    assert e.value.path == str(d / "short.b")
    np.savetxt(d / "three.b", scheme[:, :3], fmt="%.10g")
    with pytest.raises(InputError, match="4 columns"):
        load_dwi(d / "dwi.nii.gz", grad_path=d / "three.b")
    bad = scheme.copy()
    bad[5, :3] *= 1.5
    np.savetxt(d / "norm.b", bad, fmt="%.10g")
    with pytest.raises(InputError, match="not unit vectors"):
        load_dwi(d / "dwi.nii.gz", grad_path=d / "norm.b")
    bad = scheme.copy()
    bad[5, :3] = np.nan  # a diffusion-weighted volume
    np.savetxt(d / "nandw.b", bad, fmt="%.10g")
    with pytest.raises(InputError, match="NaN or Inf gradient direction"):
        load_dwi(d / "dwi.nii.gz", grad_path=d / "nandw.b")
    bad = scheme.copy()
    bad[4, 3] = np.nan
    np.savetxt(d / "nanb.b", bad, fmt="%.10g")
    with pytest.raises(InputError, match="row 4 of the gradient table has a b-value of nan"):
        load_dwi(d / "dwi.nii.gz", grad_path=d / "nanb.b")
    with pytest.raises(ValueError, match="once"):
        load_dwi(d / "dwi.nii.gz", d / "bvals", d / "bvecs", grad_path=d / "dwi.b")
    with pytest.raises(ValueError, match="together"):
        load_dwi(d / "dwi.nii.gz", d / "bvals")


@pytest.mark.parametrize("order,flips", [((0, 1, 2), (True, False, False)), ((2, 0, 1), (False, True, True))])
def test_mask_stored_in_another_axis_order_is_put_on_the_dwi_grid(tmp_path, rng, order, flips):
    mask = rng.random(SHAPE) > 0.4
    # the same voxels stored with axes permuted and reversed: index j of stored axis k is
    # index i of dwi axis order[k] with i = j, or n - 1 - j when reversed
    stored = np.transpose(mask, order)[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]
    affine = np.eye(4)
    for k, a in enumerate(order):
        affine[:3, k] = AFFINE[:3, a] * (-1 if flips[k] else 1)
        affine[:3, 3] += AFFINE[:3, a] * ((SHAPE[a] - 1) if flips[k] else 0)
    affine[:3, 3] += AFFINE[:3, 3]
    nib.save(nib.Nifti1Image(stored.astype(np.uint8), affine), tmp_path / "m.nii.gz")
    np.testing.assert_array_equal(load_mask(tmp_path / "m.nii.gz", SHAPE, AFFINE), mask)
    shifted = affine.copy()
    shifted[:3, 3] += AFFINE[:3, 0]  # one voxel along x: another grid
    nib.save(nib.Nifti1Image(stored.astype(np.uint8), shifted), tmp_path / "s.nii.gz")
    with pytest.raises(InputError, match="nor does any order of its axes"):
        load_mask(tmp_path / "s.nii.gz", SHAPE, AFFINE)


def _mrconvert(*args):
    subprocess.run(["mrconvert", "-quiet", "-force", *map(str, args)], check=True)


def test_mrconvert_outputs_read_as_the_nifti_they_came_from(tmp_path, rng, mrtrix):
    """mrconvert writes the images (other strides, an integer type, gzip, a Bit mask) and
    converts the FSL bvecs into its own scanner-frame table: both must agree with ours."""
    oblique = AFFINE.copy()
    c, s = np.cos(0.3), np.sin(0.3)
    oblique[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ AFFINE[:3, :3]
    scheme = _scheme(rng)
    data = rng.integers(50, 200, size=SHAPE + (len(scheme),)).astype(np.int16)
    mask = rng.random(SHAPE) > 0.3
    nib.save(nib.Nifti1Image(data, oblique), tmp_path / "dwi.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), oblique), tmp_path / "mask.nii.gz")
    bvecs = world_to_fsl_bvecs(scheme[:, :3], oblique)
    np.savetxt(tmp_path / "bvals", scheme[:, 3][None], fmt="%g")
    np.savetxt(tmp_path / "bvecs", bvecs.T, fmt="%.10f")
    fsl = ("-fslgrad", tmp_path / "bvecs", tmp_path / "bvals")
    _mrconvert(tmp_path / "dwi.nii.gz", tmp_path / "a.mif", *fsl)
    _mrconvert(tmp_path / "dwi.nii.gz", tmp_path / "b.mif.gz", *fsl, "-strides", "-1,3,-2,4", "-datatype", "int16be")
    _mrconvert(tmp_path / "dwi.nii.gz", tmp_path / "c.mih", "-strides", "4,1,2,3", "-datatype", "float64")
    _mrconvert(tmp_path / "mask.nii.gz", tmp_path / "mask.mif", "-datatype", "bit", "-strides", "-3,1,2")
    subprocess.run(["mrinfo", "-quiet", tmp_path / "a.mif", "-export_grad_mrtrix", tmp_path / "grad.b"], check=True)
    ref = load_dwi(tmp_path / "dwi.nii.gz", tmp_path / "bvals", tmp_path / "bvecs", tmp_path / "mask.nii.gz")
    canonical = nib.as_closest_canonical(nib.load(tmp_path / "dwi.nii.gz"))
    for name in ("a.mif", "b.mif.gz"):
        d = load_dwi(tmp_path / name, mask_path=tmp_path / "mask.mif")
        ours = nib.as_closest_canonical(nib.Nifti1Image(d.data, d.affine))
        np.testing.assert_array_equal(np.asarray(ours.dataobj), canonical.get_fdata(dtype=np.float32))
        np.testing.assert_allclose(ours.affine, canonical.affine, atol=1e-4)
        assert d.mask.sum() == mask.sum()
        np.testing.assert_allclose(d.bvals, scheme[:, 3], rtol=1e-6)
        np.testing.assert_allclose(d.directions_world, ref.directions_world, atol=1e-6)
    c = read_mrtrix_image(tmp_path / "c.mih").image
    np.testing.assert_array_equal(np.asarray(nib.as_closest_canonical(c).dataobj), canonical.get_fdata())
    g = load_dwi(tmp_path / "dwi.nii.gz", grad_path=tmp_path / "grad.b", mask_path=tmp_path / "mask.mif")
    np.testing.assert_array_equal(g.mask, mask)
    np.testing.assert_allclose(g.directions_world, fsl_bvecs_to_world(bvecs, oblique), atol=1e-6)
    np.testing.assert_allclose(g.bvecs, ref.bvecs, atol=1e-6)
