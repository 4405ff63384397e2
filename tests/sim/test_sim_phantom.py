import numpy as np
import pytest

from shdeconv.sim import (
    acquisition_scheme,
    spatial_phantom,
    tensor_signal,
    voxelwise_phantom,
)


@pytest.fixture(scope="module")
def quick():
    return spatial_phantom(size="quick", scheme="clinical", snr=20, seed=0)


@pytest.fixture(scope="module")
def default_clean():
    return spatial_phantom(size="default", scheme="sparse", snr=None, seed=0)


def _check_truth(ph):
    x = ph.shape
    assert ph.dwi.shape == (*x, len(ph.bvals)) and ph.dwi.dtype == np.float32
    assert ph.peak_dirs.shape == (*x, 3, 3) and ph.peak_fractions.shape == (*x, 3)
    assert ph.n_fibres.min() >= 0 and ph.n_fibres.max() <= 3
    live = np.arange(3) < ph.n_fibres[..., None]
    np.testing.assert_allclose(np.linalg.norm(ph.peak_dirs[live], axis=-1), 1.0, atol=1e-9)
    assert np.all(ph.peak_dirs[~live] == 0) and np.all(ph.peak_fractions[~live] == 0)
    assert np.all(ph.peak_fractions[live] > 0)
    assert np.all(np.diff(ph.peak_fractions, axis=-1) <= 1e-12)  # sorted, largest first
    np.testing.assert_allclose(ph.wm, ph.peak_fractions.sum(-1), atol=1e-9)
    for t in (ph.gm, ph.csf, ph.wm):
        assert t.min() >= -1e-12 and t.max() <= 1 + 1e-12
    total = ph.wm + ph.gm + ph.csf
    np.testing.assert_allclose(total[ph.mask], 1.0, atol=1e-9)
    assert np.all(ph.n_fibres[~ph.mask] == 0)


def test_spatial_truth_consistent(quick):
    _check_truth(quick)
    counts = np.bincount(quick.n_fibres[quick.mask], minlength=4)
    assert np.all(counts > 0), counts  # GM/CSF, 1, 2 and 3 fibres all present
    assert quick.csf.max() > 0.99 and quick.gm.max() > 0.99
    assert 0.5 < quick.mask.mean() < 0.95


def test_spatial_crossings_spread(default_clean):
    ph = default_clean
    _check_truth(ph)
    ang = ph.crossing_angles()
    assert np.nanmin(ang) >= 15.0 - 1e-9  # nearly parallel bundles are merged
    two = ang[ph.n_fibres == 2]
    hist = np.histogram(two, [30, 45, 60, 75, 90.001])[0]
    assert np.all(hist >= 20), hist
    assert ph.mask.size <= 20000


def test_spatial_fibres_leave_the_plane(default_clean):
    ph = default_clean
    z = np.abs(ph.peak_dirs[..., 0, 2])[ph.n_fibres > 0]
    assert np.percentile(z, 90) > 0.1


def test_spatial_deterministic_and_seeded(quick):
    again = spatial_phantom(size="quick", scheme="clinical", snr=20, seed=0)
    np.testing.assert_array_equal(again.dwi, quick.dwi)
    np.testing.assert_array_equal(again.peak_dirs, quick.peak_dirs)
    other = spatial_phantom(size="quick", scheme="clinical", snr=20, seed=1)
    assert (other.n_fibres != quick.n_fibres).mean() > 0.1


def test_noise_free_signal_matches_forward_model():
    ph = voxelwise_phantom(60, scheme="clinical", snr=None, seed=2)
    s = ph.dwi.reshape(-1, len(ph.bvals))[ph.mask.reshape(-1)]
    b0 = s[:, ph.bvals == 0].mean(axis=1)
    # b=0 is the tissue-weighted proton density; diffusion weighting only attenuates
    assert np.all(s[:, ph.bvals > 0] <= b0[:, None] * (1 + 1e-6))
    # a pure single tensor reproduces the tensor formula
    bvals, g = acquisition_scheme("clinical")
    u = np.array([[[0.0, 0.0, 1.0], [0, 0, 0], [0, 0, 0]]])
    sig = tensor_signal(bvals, g, u, np.array([[1.0, 0, 0]]), np.array([[1.7e-3, 0, 0]]),
                        np.array([[0.3e-3, 0, 0]]), np.zeros(1), np.zeros(1), np.zeros(1),
                        s0=1.0)
    expect = np.exp(-bvals * (0.3e-3 + 1.4e-3 * g[:, 2] ** 2))
    np.testing.assert_allclose(sig[0], expect, rtol=1e-12)


def test_rician_noise_level():
    ph = spatial_phantom(size="quick", scheme="clinical", snr=10, seed=4)
    bg = ph.dwi[~ph.mask]
    sigma = ph.meta["sigma"]
    assert sigma == pytest.approx(10.0)
    # background is Rayleigh distributed: mean sigma * sqrt(pi / 2)
    assert bg.mean() == pytest.approx(sigma * np.sqrt(np.pi / 2), rel=0.05)


def test_voxelwise_phantom():
    ph = voxelwise_phantom(600, scheme="sparse", snr=30, seed=1)
    _check_truth(ph)
    assert ph.mask.sum() == 600
    np.testing.assert_array_equal(np.bincount(ph.n_fibres[ph.mask], minlength=4), [0, 200, 200, 200])
    d, n = ph.peak_dirs[ph.mask], ph.n_fibres[ph.mask]
    for i, j in ((0, 1), (0, 2), (1, 2)):
        sel = n > j
        ang = np.degrees(np.arccos(np.clip(np.abs((d[sel, i] * d[sel, j]).sum(-1)), 0, 1)))
        assert ang.min() >= 30 - 1e-6 and ang.max() <= 90 + 1e-6
    share = ph.peak_fractions[ph.mask] / ph.wm[ph.mask][:, None]
    assert share[np.arange(3) < n[:, None]].min() >= 0.2 - 1e-9
    line = voxelwise_phantom(10, scheme="sparse", seed=1, layout="line")
    assert line.shape == (10, 1, 1)


def test_oblique_affine_truth_in_world_frame():
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot * 2.0
    plain = spatial_phantom(size="quick", snr=None, seed=3)
    turned = spatial_phantom(size="quick", snr=None, seed=3, affine=aff)
    np.testing.assert_allclose(turned.peak_dirs, plain.peak_dirs @ rot.T, atol=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match="snr"):
        spatial_phantom(size="quick", snr=0)
    with pytest.raises(ValueError, match="size"):
        spatial_phantom(size="huge")
    with pytest.raises(ValueError, match="layout"):
        voxelwise_phantom(10, layout="ring")
