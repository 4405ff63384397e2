"""Tractometer-style scoring: the phantom's bundle truth, the streamline rules, tracking the truth,
the bundle files and the bar case's tractography in the benchmark."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import ndimage

from shdeconv.evaluation import benchmark as bm
from shdeconv.evaluation import (
    rasmm_to_voxel,
    run_benchmark,
    score_tractogram,
    seed_voxels,
    track_and_score,
)
from shdeconv.io import InputError, atomic_save_nifti
from shdeconv.sim import (
    load_truth,
    simulate_to_dir,
    spatial_phantom,
    truth_fodf_sh,
    voxelwise_phantom,
    write_phantom,
)

# sums of the phantom arrays as generated before the bundle truth existed: it must add no random draw
ORIGINAL_SUMS = {
    (0, "default"): (13831362.0, -1636.2836012617875, 3476.5162986465302, 8440),
    (0, "quick"): (2060949.875, -267.7863024021107, 446.97189431762035, 1248),
    (3, "default"): (13809889.0, 5254.213827829977, 4052.804568792744, 8440),
    (3, "quick"): (2058480.25, 823.477247629655, 519.9456611224242, 1248),
}


@pytest.mark.parametrize(("seed", "size"), sorted(ORIGINAL_SUMS))
def test_bundle_truth_leaves_the_phantom_unchanged(seed, size):
    ph = spatial_phantom(seed=seed, size=size)
    dwi, dirs, fractions, mask = ORIGINAL_SUMS[(seed, size)]
    assert float(ph.dwi.sum()) == pytest.approx(dwi, rel=1e-7)
    assert float(ph.peak_dirs.sum()) == pytest.approx(dirs, rel=1e-9, abs=1e-9)
    assert float(ph.peak_fractions.sum()) == pytest.approx(fractions, rel=1e-9)
    assert int(ph.mask.sum()) == mask
    b = len(ph.bundle_names)
    assert b >= ph.meta["n_bundles"] - 1 and len(set(ph.bundle_names)) == b and "fan" in ph.bundle_names
    assert ph.bundle_masks.shape == ph.shape + (b,) and ph.bundle_masks.dtype == bool
    assert ph.bundle_ends.shape == ph.shape + (b,) and ph.bundle_ends.dtype == np.int8
    assert set(np.unique(ph.bundle_ends)) <= {0, 1, 2}
    for i in range(b):
        vol, ends = ph.bundle_masks[..., i], ph.bundle_ends[..., i]
        assert vol.sum() > 0 and (ends == 1).any() and (ends == 2).any(), ph.bundle_names[i]
        assert not (vol & ~ph.mask).any()
        near = ndimage.binary_dilation(vol, structure=np.ones((3, 3, 3)), iterations=2)
        assert not ((ends > 0) & ~near).any()


def test_voxelwise_phantom_has_no_bundles():
    ph = voxelwise_phantom(size="quick")
    assert ph.bundle_masks is None and ph.bundle_ends is None and ph.bundle_names == ()


# ---------------------------------------------------------------------------------------------
# the rules on a hand-made truth: two straight tubes along x
# ---------------------------------------------------------------------------------------------

def _two_tubes():
    shape = (24, 24, 3)
    masks = np.zeros(shape + (2,), dtype=bool)
    ends = np.zeros(shape + (2,), dtype=np.int8)
    for b, y in enumerate((5, 17)):
        masks[2:22, y - 1:y + 2, :, b] = True
        ends[2:4, y - 1:y + 2, :, b] = 1
        ends[20:22, y - 1:y + 2, :, b] = 2
    return SimpleNamespace(bundle_masks=masks, bundle_ends=ends, bundle_names=("a", "b"))


def _line(p, q, n=120):
    return np.linspace(p, q, n)


def test_rules_valid_invalid_no_connection():
    truth = _two_tubes()
    along_a = _line([2.0, 5.0, 1.0], [21.0, 5.0, 1.0])
    along_b_reversed = _line([21.0, 17.0, 1.0], [2.0, 17.0, 1.0])
    jump = _line([2.0, 5.0, 1.0], [21.0, 17.0, 1.0])  # end 1 of a to end 2 of b
    short = _line([8.0, 5.0, 1.0], [14.0, 5.0, 1.0])  # inside a, no end region
    leaves = np.concatenate([_line([2.0, 5.0, 1.0], [11.0, 12.0, 1.0], 60),
                             _line([11.0, 12.0, 1.0], [21.0, 5.0, 1.0], 60)])  # a's ends, out of a on the way
    u_turn = np.concatenate([_line([2.0, 5.0, 1.0], [10.0, 5.0, 1.0], 40), _line([10.0, 5.5, 1.0], [2.5, 5.5, 1.0], 40)])
    r = score_tractogram([along_a, along_b_reversed, jump, short, leaves, u_turn], truth)
    assert (r["n_streamlines"], r["valid"], r["invalid"], r["no_connection"]) == (6, 2, 3, 1)
    assert r["valid_fraction"] == pytest.approx(2 / 6) and r["invalid_fraction"] == pytest.approx(3 / 6)
    assert r["no_connection_fraction"] == pytest.approx(1 / 6)
    assert r["bundles"]["a"]["valid"] == 1 and r["bundles"]["b"]["valid"] == 1
    assert r["n_bundles"] == 2 and r["valid_bundles"] == 2
    # one centreline visits one row of the 3 x 3 x 20 tube, z = 1 only: 20 of 180 voxels
    assert r["bundles"]["a"]["overlap"] == pytest.approx(20 / 180)
    assert r["bundles"]["a"]["overreach"] == 0.0
    assert r["mean_overlap"] == pytest.approx(20 / 180)
    assert r["rules"] == {"min_inside": 0.9, "dilation": 1}


def test_overlap_and_overreach():
    truth = _two_tubes()
    rows = [_line([2.0, y, z], [21.0, y, z]) for y in (4.0, 5.0, 6.0) for z in (0.0, 1.0, 2.0)]
    r = score_tractogram(rows, truth)
    assert r["valid"] == 9 and r["bundles"]["a"]["overlap"] == pytest.approx(1.0)
    assert r["bundles"]["a"]["overreach"] == 0.0 and r["bundles"]["b"]["overlap"] == 0.0
    # a valid streamline with a short excursion two voxels out of the tube raises overreach only
    detour = np.concatenate([_line([2.0, 5.0, 1.0], [10.0, 5.0, 1.0], 50), _line([10.0, 8.0, 1.0], [12.0, 8.0, 1.0], 9),
                             _line([12.0, 5.0, 1.0], [21.0, 5.0, 1.0], 50)])
    r2 = score_tractogram(rows + [detour], truth)
    assert r2["valid"] == 10
    assert r2["bundles"]["a"]["overlap"] == pytest.approx(1.0)
    assert r2["bundles"]["a"]["overreach"] == pytest.approx(3 / 180)
    # the same excursion for more than 10% of the points makes it invalid
    long_detour = np.concatenate([detour[:50], _line([10.0, 8.0, 1.0], [13.0, 8.0, 1.0], 20), detour[-50:]])
    assert score_tractogram([long_detour], truth)["invalid"] == 1
    assert score_tractogram([long_detour], truth, min_inside=0.8)["valid"] == 1


def test_dilation_and_grid_edges():
    truth = _two_tubes()
    past_the_ends = _line([1.0, 5.0, 1.0], [22.0, 5.0, 1.0])  # one voxel beyond both ends: dilated regions
    r = score_tractogram([past_the_ends], truth)
    assert r["valid"] == 1 and r["bundles"]["a"]["overreach"] == pytest.approx(2 / 180)
    assert score_tractogram([past_the_ends], truth, dilation=0)["no_connection"] == 1
    outside = _line([-5.0, 5.0, 1.0], [21.0, 5.0, 1.0])  # starts outside the grid: lies in no voxel
    assert score_tractogram([outside], truth)["no_connection"] == 1
    empty = score_tractogram([], truth)
    assert empty["n_streamlines"] == 0 and empty["valid_fraction"] is None and empty["mean_overlap"] == 0.0


def test_rasmm_to_voxel_inverts_the_affine():
    affine = np.array([[-2.0, 0, 0, 30], [0, 2.0, 0, -20], [0, 0, 2.5, 5], [0, 0, 0, 1]])
    vox = _line([2.0, 5.0, 1.0], [21.0, 5.0, 1.0], 10)
    world = vox @ affine[:3, :3].T + affine[:3, 3]
    np.testing.assert_allclose(rasmm_to_voxel([world], affine)[0], vox, atol=1e-12)


def test_truth_without_bundles_is_refused():
    with pytest.raises(InputError, match="no bundles"):
        score_tractogram([], SimpleNamespace(bundle_masks=None, bundle_ends=None, bundle_names=()))


# ---------------------------------------------------------------------------------------------
# tracking the truth
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick_phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("tract")
    ph = spatial_phantom(seed=0, size="quick")
    write_phantom(ph, root / "phantom")
    return root, ph


def test_tracking_the_true_fodf_is_mostly_valid(quick_phantom):
    root, ph = quick_phantom
    (root / "truth_fit").mkdir()
    (root / "iso_fit").mkdir()
    true_sh = truth_fodf_sh(ph.peak_dirs, ph.peak_fractions)
    atomic_save_nifti(true_sh.astype(np.float32), ph.affine, root / "truth_fit" / "fodf.nii.gz")
    iso = np.zeros_like(true_sh)
    iso[..., 0] = ph.wm / np.sqrt(4 * np.pi)  # same WM (stopping), no direction
    atomic_save_nifti(iso.astype(np.float32), ph.affine, root / "iso_fit" / "fodf.nii.gz")
    good = track_and_score(root / "truth_fit", root / "phantom")
    flat = track_and_score(root / "iso_fit", root / "phantom")
    assert good["seeds"] == flat["seeds"] == int((ph.mask & (ph.wm > 0.25)).sum())
    assert good["n_streamlines"] >= good["seeds"]
    # quick phantom, seed 0: 69% valid, 28% invalid (switches at shallow crossings and kissing), 2% none
    assert good["valid_fraction"] >= 0.6 and good["no_connection_fraction"] <= 0.1
    assert good["mean_overlap"] >= 0.6 and good["valid_bundles"] >= len(ph.bundle_names) - 1
    # the isotropic fODF: 17% valid, by chance in a small phantom
    assert flat["valid_fraction"] <= good["valid_fraction"] - 0.3


def test_seed_subset_is_fixed_and_shared(quick_phantom):
    root, _ = quick_phantom
    truth = load_truth(root / "phantom")
    full = seed_voxels(truth)
    sub = seed_voxels(truth, max_voxels=50, seed=3)
    assert sub.sum() == 50 and not (sub & ~full).any()
    np.testing.assert_array_equal(sub, seed_voxels(truth, max_voxels=50, seed=3))
    assert not np.array_equal(sub, seed_voxels(truth, max_voxels=50, seed=4))


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------

def test_bundle_files_round_trip_and_old_folders(quick_phantom, tmp_path):
    root, ph = quick_phantom
    truth_dir = root / "phantom" / "truth"
    assert (truth_dir / "bundles.nii.gz").exists() and (truth_dir / "bundle_ends.nii.gz").exists()
    t = load_truth(root / "phantom")
    np.testing.assert_array_equal(t.bundle_masks, ph.bundle_masks)
    np.testing.assert_array_equal(t.bundle_ends, ph.bundle_ends)
    assert t.bundle_names == ph.bundle_names and t.bundle_ends.dtype == np.int8
    assert json.loads((truth_dir / "truth.json").read_text())["bundle_names"] == list(ph.bundle_names)
    # a folder written before the bundle files existed still loads, without bundles
    old = write_phantom(ph, tmp_path / "old")
    for name in ("bundles.nii.gz", "bundle_ends.nii.gz"):
        (old / "truth" / name).unlink()
    t_old = load_truth(old)
    assert t_old.bundle_masks is None and t_old.bundle_names == ()
    np.testing.assert_array_equal(t_old.n_fibres, ph.n_fibres)
    with pytest.raises(InputError, match="no bundles"):
        score_tractogram([], old)
    vw = simulate_to_dir(tmp_path / "vw", kind="voxelwise", size="quick")
    assert not (vw / "truth" / "bundles.nii.gz").exists() and load_truth(vw).bundle_masks is None


# ---------------------------------------------------------------------------------------------
# the benchmark's bar case
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow  # two quick benchmark runs of one method
def test_benchmark_tracks_the_bar_case_once(tmp_path):
    out = tmp_path / "bench"
    kw = {"size": "quick", "seed": 0, "device": "cpu", "iterations": 0, "methods": "csd",
          "cells": [bm.BAR_CELL], "progress": False}
    res = run_benchmark(out, **kw)
    assert res["failures"] == []
    tr = res["tractography"]
    assert tr["cell"] == bm.BAR_CELL and tr["seed_voxels"] == bm.SUITES["quick"]["tracking_seed_voxels"]
    rec = tr["methods"]["csd"]
    assert rec["n_streamlines"] > 0 and rec["valid"] + rec["invalid"] + rec["no_connection"] == rec["n_streamlines"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["tractography"]["methods"]["csd"]["valid"] == rec["valid"]
    md = (out / "results.md").read_text()
    assert "## Tractography (Tractometer-style)" in md
    assert "| method | valid % | invalid % | no connection % | mean overlap | mean overreach | streamlines |" in md
    assert f"| {rec['label']} | {100 * rec['valid_fraction']:.1f} |" in md
    assert "accuracy_tractography.png" in res["figures"] and (out / "accuracy_tractography.png").stat().st_size > 1000
    # resume: the tracking is not redone; a phantom folder without bundle files gets them back
    done = out / bm.BAR_CELL / "csd" / "tractometry.json"
    mtime = done.stat().st_mtime_ns
    truth = out / bm.BAR_CELL / "phantom" / "truth"
    (truth / "bundles.nii.gz").unlink()
    (truth / "bundle_ends.nii.gz").unlink()
    again = run_benchmark(out, **kw)
    assert again["failures"] == [] and done.stat().st_mtime_ns == mtime
    assert again["tractography"]["methods"]["csd"]["valid"] == rec["valid"]
    np.testing.assert_array_equal(load_truth(truth).bundle_ends, spatial_phantom(seed=0, size="quick").bundle_ends)
