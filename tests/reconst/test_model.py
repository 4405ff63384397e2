"""DIPY-style API: SHDModel(gtab).fit(data, mask) -> shm_coeff, odf(sphere), peaks, predict."""

import numpy as np
import pytest
from dipy.core.gradients import gradient_table
from dipy.data import get_sphere

from shdeconv.fitting import DirectConfig, FitConfig
from shdeconv.models import NetworkConfig
from shdeconv.reconst import SHDModel
from shdeconv.sim import spatial_phantom
from shdeconv.sphere import convert_sh_basis, sh_matrix


def test_model_fit_api():
    ph = spatial_phantom(scheme="clinical", snr=30, seed=2, size="quick")
    gtab = gradient_table(ph.bvals, bvecs=ph.directions_world, b0_threshold=50)
    model = SHDModel(gtab, variant="shd-tv", fit_config=FitConfig(iterations=3, batch_size=1, patch_size=8),
                     net_config=NetworkConfig(depth=2, width=4, K=2))
    fit = model.fit(ph.dwi, ph.mask)
    assert fit.shm_coeff.shape == ph.dwi.shape[:3] + (153,)  # lmax 16 by default
    assert fit.iso.shape == ph.dwi.shape[:3] + (1,) and fit.iso_names == ("gm",) and fit.csf is None  # single shell
    assert fit.sh_basis == "descoteaux07"
    sphere = get_sphere(name="repulsion724")
    odf = fit.odf(sphere)
    assert odf.shape == ph.dwi.shape[:3] + (len(sphere.vertices),)
    mr = convert_sh_basis(fit.shm_coeff, "descoteaux07", "mrtrix3")
    np.testing.assert_allclose(odf, mr @ sh_matrix(sphere.vertices, 16).T, rtol=1e-4, atol=1e-5)
    dirs, amps = fit.peaks()
    assert dirs.shape == ph.dwi.shape[:3] + (3, 3)
    pred = fit.predict()
    assert pred.shape == ph.dwi.shape and np.isfinite(pred).all()
    assert len(fit.history) == 3
    assert model.responses is None and fit.responses is not None  # a second fit estimates its own


def test_model_fit_warm_started_from_direct():
    """FitConfig(init="direct") is honoured by the DIPY-style API too (with its supervised weight)."""
    ph = spatial_phantom(scheme="clinical", snr=30, seed=2, size="quick")
    gtab = gradient_table(ph.bvals, bvecs=ph.directions_world, b0_threshold=50)
    model = SHDModel(gtab, variant="shd-tv",
                     fit_config=FitConfig(iterations=2, batch_size=1, patch_size=8, init="direct"),
                     net_config=NetworkConfig(depth=2, width=4, K=2))
    assert model.loss_weights.supervised == 1.0
    fit = model.fit(ph.dwi, ph.mask)
    assert all(h["supervised"] > 0 for h in fit.history)


def test_model_direct_starts_from_the_shipped_prediction():
    """DirectConfig(init="predict") is honoured on arrays too: with no iteration the fit is its
    start, whose first peaks follow single fibres far better than the linear start's."""
    ph = spatial_phantom(scheme="clinical", snr=30, seed=2, size="quick")
    gtab = gradient_table(ph.bvals, bvecs=ph.directions_world, b0_threshold=50)
    single = ph.mask & (ph.n_fibres == 1)

    def error(init):
        fit = SHDModel(gtab, direct_config=DirectConfig(iterations=0, init=init)).fit(ph.dwi, ph.mask)
        dirs, _ = fit.peaks()
        cos = np.abs((dirs[single][:, 0] * ph.peak_dirs[single][:, 0]).sum(-1))
        return np.degrees(np.arccos(np.clip(cos, 0, 1))).mean()

    assert error("predict") < 0.7 * error("linear")


def test_model_default_is_direct_as_on_the_command_line():
    ph = spatial_phantom(scheme="clinical", snr=30, seed=2, size="quick")
    gtab = gradient_table(ph.bvals, bvecs=ph.directions_world, b0_threshold=50)
    model = SHDModel(gtab, sh_order_max=12, direct_config=DirectConfig(iterations=20, lmax=12))
    assert model.variant == "direct" and model.loss_weights.tv == 0.5 and model.direct_config.init == "auto"
    fit = model.fit(ph.dwi, ph.mask)
    assert fit.shm_coeff.shape == ph.dwi.shape[:3] + (91,) and fit.iso_names == ("gm",)
    assert len(fit.history) == 20 and fit.history[-1]["loss"] < fit.history[0]["loss"]
    assert np.abs(fit.shm_coeff[~ph.mask]).max() == 0
    assert np.isfinite(fit.predict()).all()
    # at the default lmax 16 the fODF is non-negative on the nside-8 grid and, between its
    # points, its negative lobes hold under 2% of its mass (lmax 12 cannot follow the grid's
    # sharp values as closely: ~5% after 20 steps)
    odf = SHDModel(gtab, direct_config=DirectConfig(iterations=20)).fit(ph.dwi, ph.mask).odf(
        get_sphere(name="repulsion724"))[ph.mask]
    assert -np.minimum(odf, 0).sum() < 0.02 * np.abs(odf).sum()


@pytest.mark.parametrize("kwargs, match", [
    ({"fit_config": FitConfig()}, "network"),
    ({"net_config": NetworkConfig()}, "network"),
    ({"direct_config": DirectConfig(lmax=12)}, "sh_order_max"),
    ({"direct_config": DirectConfig(init="csd")}, "raw data"),  # init="predict" is accepted
    ({"variant": "shd-tv", "direct_config": DirectConfig()}, "direct_config"),
    ({"variant": "csd"}, "variant"),
])
def test_model_refuses_settings_it_would_ignore(kwargs, match):
    gtab = gradient_table(np.r_[0, [1000] * 6], bvecs=np.r_[[[0, 0, 0]], DTI6], b0_threshold=50)
    with pytest.raises(ValueError, match=match):
        SHDModel(gtab, **kwargs)


DTI6 = np.array([[1, 0, 1], [-1, 0, 1], [0, 1, 1], [0, 1, -1], [1, 1, 0], [-1, 1, 0]]) / np.sqrt(2)


def test_model_refuses_directions_that_cannot_determine_a_tensor():
    axes = np.r_[[[0, 0, 0]], np.eye(3), -np.eye(3)]  # 6 volumes, 3 axes
    with pytest.raises(ValueError, match="6 diffusion-weighted directions cannot determine a diffusion tensor"):
        SHDModel(gradient_table(np.r_[0, [1000] * 6], bvecs=axes, b0_threshold=50))


def test_model_says_what_shape_it_needs():
    """A voxel list (DIPY models take any leading shape) or a mask of another grid is a clear
    ValueError naming the shape to use, not a numpy broadcast error."""
    bvecs = np.r_[[[0, 0, 0]], DTI6, -DTI6[:3]]
    model = SHDModel(gradient_table(np.r_[0, [1000] * 9], bvecs=bvecs, b0_threshold=50))
    data = np.ones((4, 4, 2, 10), np.float32)
    with pytest.raises(ValueError, match=r"reshape\(-1, 1, 1, 10\)"):
        model.fit(data[0, 0])
    with pytest.raises(ValueError, match="data has 9 volumes, gtab 10"):
        model.fit(data[..., :9])
    with pytest.raises(ValueError, match=r"mask shape \(3, 4, 2\) does not match the data's \(4, 4, 2\)"):
        model.fit(data, np.ones((3, 4, 2), bool))


def test_predict_model_equals_the_predict_command(tmp_path):
    """SHDPredictModel is `shdeconv predict` on arrays: same network, tiles and responses, so
    the same fODF (MRtrix3 basis, on a grid whose voxel axes are the world's), and the
    caller's array is left as it was."""
    import nibabel as nib

    from shdeconv.cli import main
    from shdeconv.io import load_dwi
    from shdeconv.models import pretrained_path
    from shdeconv.reconst import SHDPredictModel
    from shdeconv.sim import simulate_to_dir

    ph = simulate_to_dir(tmp_path / "ph", scheme="clinical", snr=20, seed=3, size="quick")
    files = [str(ph / "dwi.nii.gz"), "--bvals", str(ph / "bvals"), "--bvecs", str(ph / "bvecs"),
             "--mask", str(ph / "mask.nii.gz")]
    assert main(["predict", *files, "-o", str(tmp_path / "out"), "-q", "--no-progress"]) == 0
    ref = nib.load(tmp_path / "out" / "fodf.nii.gz").get_fdata()
    d = load_dwi(ph / "dwi.nii.gz", ph / "bvals", ph / "bvecs", ph / "mask.nii.gz")
    assert np.allclose(d.affine[:3, :3], np.diag(np.diag(d.affine[:3, :3]))) and np.all(np.diag(d.affine) > 0)
    gtab = gradient_table(d.bvals, bvecs=d.directions_world, b0_threshold=50)
    data = d.data.copy()
    model = SHDPredictModel(gtab, model=pretrained_path(), sh_basis="tournier07")
    fit = model.fit(data, d.mask)
    np.testing.assert_array_equal(data, d.data)
    assert fit.shm_coeff.shape == ref.shape and model.sh_order_max == 8 and fit.history == []
    np.testing.assert_allclose(fit.shm_coeff, ref, atol=2e-5)
    assert fit.peaks()[0].shape == ref.shape[:3] + (3, 3)
    assert np.isfinite(fit.predict()).all()
    desc = SHDPredictModel(gtab).fit(d.data, d.mask)  # DIPY's default basis
    np.testing.assert_allclose(convert_sh_basis(desc.shm_coeff, "descoteaux07", "mrtrix3"), ref, atol=2e-5)
    # --precision bfloat16 reaches the network through both
    assert main(["predict", *files, "-o", str(tmp_path / "bf16"), "-q", "--no-progress", "--precision",
                 "bfloat16"]) == 0
    ref16 = nib.load(tmp_path / "bf16" / "fodf.nii.gz").get_fdata()
    assert 1e-4 < np.linalg.norm(ref16 - ref) / np.linalg.norm(ref) < 0.03
    low = SHDPredictModel(gtab, sh_basis="tournier07", precision="bfloat16").fit(d.data, d.mask)
    np.testing.assert_allclose(low.shm_coeff, ref16, atol=2e-4)
    with pytest.raises(ValueError, match="precision"):
        SHDPredictModel(gtab, precision="float16")


def test_non_finite_voxels_are_left_out_not_spread():
    """A NaN sample in one voxel: that voxel is left out with a warning (coefficients 0); every
    other voxel is as without it, and the caller's array is untouched. As DIPY's models, a
    gtab whose own b0_threshold would count other volumes as b=0 is warned about."""
    from shdeconv.models import pretrained_path
    from shdeconv.reconst import SHDPredictModel

    ph = spatial_phantom(scheme="clinical", snr=30, seed=2, size="quick")
    gtab = gradient_table(ph.bvals, bvecs=ph.directions_world, b0_threshold=50)
    model = SHDPredictModel(gtab, model=pretrained_path())
    ref = model.fit(ph.dwi, ph.mask)
    inside = tuple(np.argwhere(ph.mask)[len(np.argwhere(ph.mask)) // 2])
    data = ph.dwi.astype(np.float32).copy()
    data[inside + (3,)] = np.nan
    before = data.copy()
    with pytest.warns(UserWarning, match="1 voxel of the mask hold"):
        fit = model.fit(data, ph.mask)
    np.testing.assert_array_equal(data, before)
    assert np.isfinite(fit.shm_coeff).all() and not fit.shm_coeff[inside].any() and not fit.mask[inside]
    far = np.ones(ph.mask.shape, bool)
    far[tuple(slice(max(i - 8, 0), i + 9) for i in inside)] = False  # beyond every tile that holds the voxel
    assert far[ph.mask].any()
    np.testing.assert_allclose(fit.shm_coeff[far], ref.shm_coeff[far], atol=1e-6)
    with pytest.warns(UserWarning, match="b0_threshold .* is not used"):
        SHDPredictModel(gradient_table(ph.bvals, bvecs=ph.directions_world, b0_threshold=1500))
