"""Tractography from a world-frame fodf.nii.gz: streamlines follow the true bundle direction."""

import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from shdeconv.io import InputError, atomic_save_nifti
from shdeconv.sphere import rotate_sh, zonal_to_sh
from shdeconv.tracking import fodf_to_voxel_frame, track

ZONAL = np.array([0.3, 0.25, 0.18, 0.1, 0.04])  # a sharp single-fibre lobe


def _straight_bundle(affine, direction_world, shape=(12, 12, 12)):
    c = zonal_to_sh(ZONAL, direction_world, 8)
    return np.broadcast_to(c, shape + (45,)).astype(np.float32).copy()


@pytest.mark.parametrize("algorithm", ["det", "prob"])
@pytest.mark.parametrize("oblique", [False, True])
def test_streamlines_follow_the_world_direction(tmp_path, algorithm, oblique):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    if oblique:
        affine[:3, :3] = 2.0 * Rotation.from_rotvec([0.3, -0.2, 0.4]).as_matrix()
    u = np.array([1.0, 1.0, 0.0]) / np.sqrt(2)
    atomic_save_nifti(_straight_bundle(affine, u), affine, tmp_path / "fodf.nii.gz")
    n = track(tmp_path, tmp_path / "t.trk", algorithm=algorithm, step_size=0.5, seed=1, min_length=4)
    assert n > 10
    from dipy.io.streamline import load_tractogram

    sl = load_tractogram(str(tmp_path / "t.trk"), "same", bbox_valid_check=False).streamlines
    lengths = np.array([np.linalg.norm(np.diff(s, axis=0), axis=1).sum() for s in sl])
    assert lengths.min() >= 4.0 - 1e-3, lengths.min()  # min_length: n points span n - 1 steps
    seg = np.concatenate([np.diff(s, axis=0) for s in sl])
    seg /= np.linalg.norm(seg, axis=1, keepdims=True)
    cos = np.abs(seg @ u)
    assert np.median(cos) > (0.99 if algorithm == "det" else 0.9)


def test_voxel_frame_round_trip(rng):
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_rotvec([0.1, 0.5, -0.3]).as_matrix() @ np.diag([-1.5, 2, 2.5])
    c = rng.normal(size=45)
    from shdeconv.io import voxel_axes_rotation

    back = rotate_sh(fodf_to_voxel_frame(c, affine), voxel_axes_rotation(affine))
    np.testing.assert_allclose(back, c, atol=1e-8)


def test_missing_fodf(tmp_path):
    with pytest.raises(InputError, match="fodf.nii.gz"):
        track(tmp_path, tmp_path / "t.trk")
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 45), np.float32), np.eye(4)), tmp_path / "fodf.nii.gz")
    with pytest.raises(InputError, match=".trk or .tck"):
        track(tmp_path, tmp_path / "t.txt")


@pytest.mark.parametrize("setting, value, said", [
    ("step_size", 0.0, "--step-size"), ("step_size", -1.0, "--step-size"), ("step_size", float("nan"), "--step-size"),
    ("max_angle", 0.0, "--max-angle"), ("max_angle", 120.0, "--max-angle"), ("wm_threshold", -0.1, "--wm-threshold"),
    ("relative_peak_threshold", 1.0, "relative_peak_threshold"), ("min_length", -1.0, "min_length"),
    ("seed", -1, "--seed")])
def test_settings_out_of_range_are_refused_before_reading(tmp_path, setting, value, said):
    """A zero step was a ZeroDivisionError, a negative one DIPY's ValueError, a negative threshold
    or an angle above 90 degrees was used as given; all are option errors, and no fODF is read
    (there is none here) and nothing is written."""
    from shdeconv._options import OptionError
    from shdeconv.cli import main

    with pytest.raises(OptionError, match=said):
        track(tmp_path, tmp_path / "t.trk", **{setting: value})
    assert not (tmp_path / "t.trk").exists()
    if said.startswith("--"):
        assert main(["track", str(tmp_path), "-o", str(tmp_path / "t.tck"), said, str(value)]) == 2
        assert not (tmp_path / "t.tck").exists()
