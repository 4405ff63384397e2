"""The gradient-table check: one tensor fit, 24 candidate tables ranked by fibre coherence.

Calibration (``Z_MARGIN``, ``REL_MARGIN``, ``MIN_VOXELS``): correct tables must not be flagged on
the phantoms (where the given table ranks first) nor on DIPY's real ``small_64D``, ``small_25``
and ``small_101D``, while flips and swaps of the phantoms' in-plane axes and a flip of x in
``small_64D`` are.
"""

import argparse

import nibabel as nib
import numpy as np
import pytest
from dipy.data import get_fnames

from shdeconv.direction import GradientCheck, check_gradients
from shdeconv.direction._gradcheck import (
    MIN_VOXELS,
    REL_MARGIN,
    Z_MARGIN,
    candidate_tables,
)
from shdeconv.direction._gradcheck_cli import add_parser, cmd_check_gradients
from shdeconv.io import InputError, load_dwi, world_to_fsl_bvecs
from shdeconv.signal._response import _tensor_fit
from shdeconv.sim import acquisition_scheme, spatial_phantom

CORRUPTIONS = {
    "flip x": np.diag([-1.0, 1.0, 1.0]),
    "flip y": np.diag([1.0, -1.0, 1.0]),
    "flip z": np.diag([1.0, 1.0, -1.0]),
    "swap x-y": np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
}
SEED = 2  # the quick phantom of seed 2 has z-slopes enough to see a through-plane flip


def _undoes(result: GradientCheck, corruption: np.ndarray) -> bool:
    """The suggested matrix turns the corrupted table back into the true one (up to the sign of
    the whole table, which no tensor can see)."""
    p = result.best_matrix @ corruption
    return bool(np.allclose(p, np.eye(3)) or np.allclose(p, -np.eye(3)))


def _fsl(ph, affine=None):
    return world_to_fsl_bvecs(ph.directions_world, ph.affine if affine is None else affine)


@pytest.fixture(scope="module")
def phantom():
    return spatial_phantom(scheme="clinical", snr=20, seed=SEED, size="quick")


@pytest.fixture(scope="module")
def turned(phantom):
    """The same object with the voxel axes y and z swapped (and the affine's columns with them):
    its bundles lie in the x-z plane, so a flip of z is an in-plane flip. The affine's
    determinant is negative: FSL's x is not negated."""
    affine = phantom.affine[:, [0, 2, 1, 3]]
    dwi = np.ascontiguousarray(phantom.dwi.transpose(0, 2, 1, 3))
    return dwi, affine, phantom.mask.transpose(0, 2, 1), _fsl(phantom, affine)


def test_candidates_are_the_24_signed_permutations_up_to_sign():
    cands = candidate_tables()
    assert len(cands) == 24 and cands[0][0] == "as given" and np.array_equal(cands[0][1], np.eye(3))
    labels = [label for label, _ in cands]
    assert len(set(labels)) == 24 and {"flip x", "swap x-y", "swap x-y, flip z", "permute to y-z-x"} <= set(labels)
    for _, m in cands:
        assert np.array_equal(np.abs(m).sum(0), np.ones(3)) and np.allclose(m @ m.T, np.eye(3))
    for i in range(24):  # distinct even up to the sign of the whole table
        for j in range(i):
            assert not np.allclose(cands[i][1], cands[j][1]) and not np.allclose(cands[i][1], -cands[j][1])
    # flipping two axes is flipping the third, up to sign
    m = dict(cands)["flip z"]
    assert np.allclose(-m, np.diag([-1.0, -1.0, 1.0]))
    assert np.allclose(dict(cands)["swap x-y, flip z"] @ np.array([1.0, 2.0, 3.0]), [2.0, 1.0, -3.0])
    assert np.allclose(dict(cands)["permute to y-z-x"] @ np.array([1.0, 2.0, 3.0]), [2.0, 3.0, 1.0])


def test_principal_direction_follows_the_table(rng):
    """The one fit that serves all 24: fitted with ``b' = M b``, the tensor is ``M D M^T`` and its
    principal direction ``M e1`` (checked, not assumed)."""
    bvals, dirs = acquisition_scheme("clinical", seed=0)
    e = rng.normal(size=(50, 3))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    d = 0.3e-3 * np.eye(3) + 1.4e-3 * e[:, :, None] * e[:, None, :]  # (50, 3, 3) tensors
    s = np.exp(-bvals * np.einsum("gi,nij,gj->ng", dirs, d, dirs))
    s *= 1 + 0.01 * rng.normal(size=s.shape)
    fa, _, e1 = _tensor_fit(s, bvals, dirs)
    assert np.all(np.abs(np.sum(e1 * e, axis=1)) > 0.99)
    for label, m in candidate_tables():
        fa_m, _, e1_m = _tensor_fit(s, bvals, dirs @ m.T)
        np.testing.assert_allclose(fa_m, fa, atol=1e-8, err_msg=label)
        np.testing.assert_allclose(np.abs(np.sum(e1_m * (e1 @ m.T), axis=1)), 1.0, atol=1e-8, err_msg=label)


@pytest.mark.parametrize("name", ["as given", "flip x", "flip y", "swap x-y"])
def test_phantom_corruptions_are_named_and_flagged(phantom, name):
    c = CORRUPTIONS.get(name, np.eye(3))
    r = check_gradients(phantom.dwi, phantom.bvals, _fsl(phantom) @ c.T, phantom.affine, phantom.mask)
    print(f"{name}: {r.message} (z {r.z_score:.1f}, relative {r.relative_gain:.2f})")
    assert _undoes(r, c), r.ranking[:3]
    assert r.clearly_better == (name != "as given")
    assert len(r.ranking) == 24 and r.n_voxels >= MIN_VOXELS
    if name == "as given":
        assert r.ranking[0][0] == "as given" and r.best_label == "as given" and "looks right" in r.message
    else:
        assert r.z_score > Z_MARGIN and r.relative_gain > REL_MARGIN and "looks wrong" in r.message
        assert r.given_score < r.ranking[0][1]
        np.testing.assert_allclose(r.corrected_bvecs(_fsl(phantom) @ c.T), _fsl(phantom), atol=1e-12)


def test_through_plane_flip_is_undone_but_needs_fibres_that_leave_the_plane(phantom, turned):
    """The phantom's fibres lie nearly in the x-y plane, so flipping z changes them little: the
    true table still ranks first, but not by the margins. Turned so that z is in-plane, the
    same object shows a flip of z as clearly as one of x."""
    c = CORRUPTIONS["flip z"]
    r = check_gradients(phantom.dwi, phantom.bvals, _fsl(phantom) @ c.T, phantom.affine, phantom.mask)
    assert _undoes(r, c) and r.relative_gain < REL_MARGIN
    dwi, affine, mask, bvecs = turned
    r = check_gradients(dwi, phantom.bvals, bvecs @ c.T, affine, mask)
    assert _undoes(r, c) and r.clearly_better and r.best_label == "flip z"


@pytest.mark.parametrize("name", ["as given", "flip x", "flip z", "swap x-y"])
def test_turned_phantom_with_a_negative_determinant(phantom, turned, name):
    dwi, affine, mask, bvecs = turned
    assert np.linalg.det(affine[:3, :3]) < 0
    c = CORRUPTIONS.get(name, np.eye(3))
    r = check_gradients(dwi, phantom.bvals, bvecs @ c.T, affine, mask)
    assert _undoes(r, c) and r.clearly_better == (name != "as given")
    if name == "as given":  # the same object as the phantom: the same score, whatever its axes
        plain = check_gradients(phantom.dwi, phantom.bvals, _fsl(phantom), phantom.affine, phantom.mask)
        assert r.given_score == pytest.approx(plain.given_score, rel=1e-6)


def _oblique_affine():
    """25 degrees about (1, 1, 0.3), voxels 1.8 x 2 x 2.4 mm, first axis reversed (det < 0)."""
    axis = np.array([1.0, 1.0, 0.3]) / np.linalg.norm([1.0, 1.0, 0.3])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = np.radians(25.0)
    rot = np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k
    a = np.eye(4)
    a[:3, :3] = rot @ np.diag([-1.8, 2.0, 2.4])
    a[:3, 3] = [20.0, -12.0, -5.0]
    return a


@pytest.mark.parametrize("name", ["as given", "flip x", "flip y", "swap x-y"])
def test_oblique_anisotropic_affine(name):
    ph = spatial_phantom(scheme="clinical", snr=20, seed=SEED, size="quick", affine=_oblique_affine())
    c = CORRUPTIONS.get(name, np.eye(3))
    r = check_gradients(ph.dwi, ph.bvals, _fsl(ph) @ c.T, ph.affine, ph.mask)
    assert _undoes(r, c), r.ranking[:3]
    assert r.clearly_better == (name != "as given")


def test_block_sampling_is_deterministic_and_still_right(phantom):
    bvecs = _fsl(phantom) @ CORRUPTIONS["flip x"].T
    everything = check_gradients(phantom.dwi, phantom.bvals, bvecs, phantom.affine, phantom.mask)
    for seed in (0, 1):
        a = check_gradients(phantom.dwi, phantom.bvals, bvecs, phantom.affine, phantom.mask, max_voxels=300,
                            seed=seed)
        b = check_gradients(phantom.dwi, phantom.bvals, bvecs, phantom.affine, phantom.mask, max_voxels=300,
                            seed=seed)
        assert a.ranking == b.ranking and a.n_voxels == b.n_voxels
        assert 300 <= a.n_voxels < everything.n_voxels
        assert a.best_label == "flip x" and a.clearly_better


def test_without_a_mask_and_with_too_few_voxels(phantom):
    r = check_gradients(phantom.dwi, phantom.bvals, _fsl(phantom), phantom.affine)
    assert r.best_label == "as given" and not r.clearly_better
    crop = phantom.dwi[4:9, 4:9]  # 5 x 5 x 6 voxels: too few to judge
    r = check_gradients(crop, phantom.bvals, _fsl(phantom) @ CORRUPTIONS["flip x"].T, phantom.affine)
    assert r.n_voxels < MIN_VOXELS and not r.clearly_better and "inconclusive" in r.message
    with pytest.raises(ValueError, match="bvecs"):
        check_gradients(phantom.dwi, phantom.bvals, _fsl(phantom)[:-1], phantom.affine)


def _dipy(name):
    return load_dwi(*get_fnames(name=name))


def test_small_64D_real_oblique_scan():
    dwi = _dipy("small_64D")
    r = check_gradients(dwi.data, dwi.bvals, dwi.bvecs, dwi.affine)
    print(f"small_64D as given: {r.message}")
    assert r.best_label == "as given" and not r.clearly_better and r.n_voxels >= MIN_VOXELS
    flipped = dwi.bvecs @ CORRUPTIONS["flip x"].T
    r = check_gradients(dwi.data, dwi.bvals, flipped, dwi.affine)
    print(f"small_64D flip x: {r.message} (z {r.z_score:.1f}, relative {r.relative_gain:.2f})")
    assert r.clearly_better and r.best_label == "flip x"
    np.testing.assert_allclose(r.corrected_bvecs(flipped), dwi.bvecs, atol=1e-12)
    np.testing.assert_allclose(r.corrected_bvecs(flipped.T), dwi.bvecs.T, atol=1e-12)  # FSL layout in, out


@pytest.mark.parametrize("name", ["small_25", "small_101D"])
def test_other_real_scans_are_not_flagged(name):
    """small_25 (10 x 8 x 2 voxels) has too few high-FA voxels for a verdict; small_101D's given
    table is not the best ranked (a 6-voxel-thin crop) but by far less than the margins."""
    dwi = _dipy(name)
    r = check_gradients(dwi.data, dwi.bvals, dwi.bvecs, dwi.affine)
    print(f"{name}: {r.message} (z {r.z_score:.1f}, relative {r.relative_gain:.2f}, {r.n_voxels} voxels)")
    assert not r.clearly_better
    np.testing.assert_array_equal(r.corrected_bvecs(dwi.bvecs), dwi.bvecs)  # nothing suggested


def _write(tmp_path, ph, bvecs):
    nib.save(nib.Nifti1Image(ph.dwi, ph.affine), tmp_path / "dwi.nii.gz")
    np.savetxt(tmp_path / "dwi.bval", ph.bvals[None], fmt="%g")
    np.savetxt(tmp_path / "dwi.bvec", bvecs.T, fmt="%.8f")
    nib.save(nib.Nifti1Image(ph.mask.astype(np.uint8), ph.affine), tmp_path / "mask.nii.gz")


def _namespace(tmp_path, **kw):
    args = argparse.Namespace(dwi=tmp_path / "dwi.nii.gz", bvals=tmp_path / "dwi.bval", bvecs=tmp_path / "dwi.bvec",
                              mask=tmp_path / "mask.nii.gz", output=tmp_path / "fixed.bvec", grad=None, force=False)
    vars(args).update(kw)
    return args


def test_cli_prints_the_ranking_and_writes_the_corrected_table(phantom, tmp_path, capsys):
    _write(tmp_path, phantom, _fsl(phantom) @ CORRUPTIONS["flip x"].T)
    args = _namespace(tmp_path)
    assert cmd_check_gradients(args) == 0
    out = capsys.readouterr().out
    assert "rank" in out and "flip x" in out and "as given" in out and "looks wrong" in out
    written = (tmp_path / "fixed.bvec").read_text().splitlines()
    assert len(written) == 3 and all(len(line.split()) == len(phantom.bvals) for line in written)
    assert all(len(v.split(".")[1]) == 6 for v in written[0].split())
    np.testing.assert_allclose(np.loadtxt(tmp_path / "fixed.bvec").T, _fsl(phantom), atol=2e-6)

    with pytest.raises(InputError, match="--force"):  # an existing -o is refused ...
        cmd_check_gradients(args)
    (tmp_path / "fixed.bvec").write_text("keep\n")
    with pytest.raises(InputError):
        cmd_check_gradients(args)
    assert (tmp_path / "fixed.bvec").read_text() == "keep\n"  # ... untouched
    assert cmd_check_gradients(_namespace(tmp_path, force=True, mask=None)) == 0  # ... unless --force
    np.testing.assert_allclose(np.loadtxt(tmp_path / "fixed.bvec").T, _fsl(phantom), atol=2e-6)

    with pytest.raises(InputError, match="dwi.bval"):
        (tmp_path / "dwi.bval").write_text("0 1000\n")
        cmd_check_gradients(_namespace(tmp_path, output=None))


def test_cli_parser():
    parser = argparse.ArgumentParser(prog="shdeconv")
    sub = parser.add_subparsers(dest="command")
    seen = []

    def common(p):
        seen.append(p)
        p.add_argument("--force", action="store_true", help="overwrite")

    p = add_parser(sub, argparse.RawDescriptionHelpFormatter, common)
    assert seen == [p]
    args = parser.parse_args(["check-gradients", "dwi.nii.gz", "--bvals", "b.bval", "--bvecs", "b.bvec",
                              "-o", "fixed.bvec"])
    assert args.func is cmd_check_gradients and str(args.output) == "fixed.bvec" and args.mask is None
    assert all(a.help for a in p._actions)
    text = p.format_help()
    assert "shdeconv check-gradients dwi.nii.gz --bvals dwi.bval --bvecs dwi.bvec" in text


def test_neighbour_coherence_tells_bundles_from_independent_voxels_whatever_the_table(phantom):
    """0 for orientations drawn voxel by voxel, near 1 along bundles (``--denoise auto``'s
    evidence), unchanged by a corrupted table (every direction turns alike)."""
    from shdeconv.sim import voxelwise_phantom

    given = check_gradients(phantom.dwi, phantom.bvals, _fsl(phantom), phantom.affine, phantom.mask)
    assert given.neighbour_coherence > 0.8 and given.neighbour_pairs > 1000
    wrong = check_gradients(phantom.dwi, phantom.bvals, _fsl(phantom) @ CORRUPTIONS["swap x-y"].T, phantom.affine,
                            phantom.mask)
    assert wrong.neighbour_pairs == given.neighbour_pairs
    assert wrong.neighbour_coherence == pytest.approx(given.neighbour_coherence, abs=1e-6)
    independent = voxelwise_phantom(scheme="clinical", snr=20, seed=SEED, size="quick")
    result = check_gradients(independent.dwi, independent.bvals, _fsl(independent), independent.affine,
                             independent.mask)
    assert abs(result.neighbour_coherence) < 0.1 and result.neighbour_pairs > 100


def test_standard_error_spans_the_correlation_of_large_volumes():
    """On a large volume whose values are correlated over ~10 voxels the error is read from
    blocks larger than 4 voxels (larger than the 4-voxel one); a 16 x 16 x 6 volume has too
    few large blocks and keeps the 4-voxel error."""
    from scipy.ndimage import gaussian_filter

    from shdeconv.direction._gradcheck import _jackknife_se

    def fixed4(values, coords):
        _, block = np.unique(coords // 4, axis=0, return_inverse=True)
        block = block.ravel()
        nb = block.max() + 1
        loo = (values.sum() - np.bincount(block, values, nb)) / (values.size - np.bincount(block, None, nb))
        return float(np.sqrt((nb - 1) / nb * np.sum((loo - loo.mean()) ** 2)))

    rng = np.random.default_rng(0)
    field = gaussian_filter(rng.normal(size=(64, 64, 64)), 5)
    coords = np.argwhere(np.ones(field.shape, bool))
    values = field.ravel()
    assert _jackknife_se(values, coords) > 2.0 * fixed4(values, coords)
    small = gaussian_filter(rng.normal(size=(16, 16, 6)), 5)
    coords = np.argwhere(np.ones(small.shape, bool))
    assert _jackknife_se(small.ravel(), coords) == pytest.approx(fixed4(small.ravel(), coords))


@pytest.mark.parametrize("seed", [1, 2])
def test_fibres_that_no_table_makes_coherent_are_not_flagged(seed):
    """The brain phantom's fibres follow smooth random fields, not their own paths: no table
    is right by coherence, and a check that understates the error (4-voxel blocks) or ignores
    that the best of 23 alternatives is tested (z > 2) flagged these correct tables."""
    from shdeconv.sim._brain import brain_phantom

    ph = brain_phantom((60, 72, 60), scheme="clinical", snr=20, seed=seed)
    r = check_gradients(ph.dwi, ph.bvals, _fsl(ph), ph.affine, ph.mask)
    assert r.n_voxels >= MIN_VOXELS and not r.clearly_better, r.message
