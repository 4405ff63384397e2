import json

import nibabel as nib
import numpy as np
import pytest

from shdeconv.io import InputError, fsl_bvecs_to_world
from shdeconv.sim import load_truth, simulate_to_dir, spatial_phantom, write_phantom


@pytest.mark.parametrize("det_sign", [1, -1])
def test_write_and_load_round_trip(tmp_path, det_sign):
    aff = np.diag([2.0 * det_sign, 2.0, 2.0, 1.0])
    ph = spatial_phantom(size="quick", scheme="clinical", snr=20, seed=2, affine=aff)
    out = write_phantom(ph, tmp_path / "ph")
    dwi = nib.load(out / "dwi.nii.gz")
    assert dwi.shape == ph.dwi.shape
    np.testing.assert_allclose(dwi.affine, aff)
    np.testing.assert_allclose(np.asarray(dwi.dataobj), ph.dwi)
    np.testing.assert_array_equal(np.asarray(nib.load(out / "mask.nii.gz").dataobj) > 0, ph.mask)
    bvals = np.loadtxt(out / "bvals")
    bvecs = np.loadtxt(out / "bvecs")
    assert bvecs.shape == (3, len(bvals))
    np.testing.assert_allclose(bvals, ph.bvals)
    np.testing.assert_allclose(fsl_bvecs_to_world(bvecs.T, aff), ph.directions_world, atol=1e-7)
    if det_sign > 0:  # FSL convention: x negated for a positive-determinant affine
        np.testing.assert_allclose(bvecs[0], -ph.directions_world[:, 0], atol=1e-7)
    for where in (out, out / "truth"):
        t = load_truth(where)
        np.testing.assert_array_equal(t.n_fibres, ph.n_fibres)
        np.testing.assert_allclose(t.peak_dirs, ph.peak_dirs, atol=1e-6)
        np.testing.assert_allclose(t.peak_fractions, ph.peak_fractions, atol=1e-6)
        np.testing.assert_allclose(t.gm, ph.gm, atol=1e-6)
        np.testing.assert_array_equal(t.mask, ph.mask)
    meta = json.loads((out / "truth" / "truth.json").read_text())
    assert {"scheme", "snr", "seed", "shape", "generator_version"} <= set(meta)
    assert meta["shape"] == list(ph.shape)


def test_simulate_to_dir_voxelwise(tmp_path):
    out = simulate_to_dir(tmp_path / "v", kind="voxelwise", scheme="sparse", snr=30, seed=1,
                          size="quick")
    t = load_truth(out)
    assert t.meta["kind"] == "voxelwise" and t.mask.sum() == 300
    with pytest.raises(ValueError, match="kind"):
        simulate_to_dir(tmp_path / "x", kind="tractogram")


def test_load_truth_missing(tmp_path):
    with pytest.raises(InputError, match="truth.json"):
        load_truth(tmp_path)
