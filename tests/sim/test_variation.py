"""Departures from the clean phantom: dispersion, diffusivity jitter, correlated noise, bias field."""

import json

import numpy as np
import pytest

from shdeconv._options import OptionError
from shdeconv.cli import main
from shdeconv.sim import PhantomVariation, spatial_phantom, voxelwise_phantom
from shdeconv.sim._variation import (
    DISPERSION_SAMPLES,
    bias_field,
    disperse,
    jitter_diffusivities,
    smooth_noise,
)


@pytest.fixture(scope="module")
def clean():
    return spatial_phantom(size="quick", snr=20, seed=5)


def test_no_variation_is_the_clean_phantom_and_truth_never_changes(clean):
    same = spatial_phantom(size="quick", snr=20, seed=5, variation=PhantomVariation())
    np.testing.assert_array_equal(same.dwi, clean.dwi)
    assert "variation" not in same.meta
    for settings in ({"dispersion_deg": 10}, {"diffusivity_jitter": 0.1}, {"noise_fwhm": 1.0}, {"bias_field": 0.2}):
        ph = spatial_phantom(size="quick", snr=20, seed=5, variation=PhantomVariation(**settings))
        assert not np.array_equal(ph.dwi, clean.dwi), settings
        for name in ("peak_dirs", "peak_fractions", "n_fibres", "gm", "csf", "mask"):
            np.testing.assert_array_equal(getattr(ph, name), getattr(clean, name))
        assert ph.meta["variation"] == PhantomVariation(**settings).to_dict()
        assert ph.dwi.min() >= 0  # still a magnitude signal


@pytest.mark.parametrize("kwargs", [{"dispersion_deg": -1}, {"dispersion_deg": 50}, {"noise_fwhm": -0.5},
                                    {"bias_field": 1.0}, {"diffusivity_jitter": "x"}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(OptionError):
        PhantomVariation(**kwargs)


def test_dispersion_spreads_sticks_around_the_fibre():
    rng = np.random.default_rng(0)
    u = np.array([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]] * 500)  # (N, 2, 3)
    u[:, 1] = 0.0  # an absent second fibre stays absent
    f = np.tile([0.6, 0.0], (500, 1))
    lp, lq = np.full((500, 2), 1.7e-3), np.full((500, 2), 0.3e-3)
    d, ff, lp2, lq2 = disperse(u, f, lp, lq, 15.0, rng)
    m = DISPERSION_SAMPLES
    assert d.shape == (500, 2 * m, 3) and ff.shape == lp2.shape == lq2.shape == (500, 2 * m)
    np.testing.assert_allclose(ff.sum(1), 0.6)
    live = d[:, :m]
    np.testing.assert_allclose(np.linalg.norm(live, axis=-1), 1.0, atol=1e-12)
    assert np.all(d[:, m:] == 0)
    angle = np.degrees(np.arccos(np.clip(live[..., 2], -1, 1)))
    # Rayleigh of scale 15 degrees: mean 15 sqrt(pi/2) = 18.8; mean axis still the fibre
    assert abs(angle.mean() - 15 * np.sqrt(np.pi / 2)) < 0.5
    np.testing.assert_allclose(live.reshape(-1, 3).mean(0)[:2], 0.0, atol=0.01)


def test_dispersion_lowers_the_signal_anisotropy():
    clean = voxelwise_phantom(60, snr=None, seed=2)
    disp = voxelwise_phantom(60, snr=None, seed=2, variation=PhantomVariation(dispersion_deg=20))
    one = (clean.n_fibres == 1) & clean.mask
    dw = clean.bvals > 50
    spread = [ph.dwi[one][:, dw].std(1) / ph.dwi[one][:, dw].mean(1) for ph in (clean, disp)]
    assert np.all(spread[1] < spread[0])


def test_jitter_is_log_normal_and_keeps_radial_below_axial():
    rng = np.random.default_rng(1)
    lp, lq, dg = np.full((20000, 3), 1.7e-3), np.full((20000, 3), 0.3e-3), np.full(20000, 0.8e-3)
    lp2, lq2, dg2 = jitter_diffusivities(lp, lq, dg, 0.15, rng)
    for new, old in ((lp2, lp), (dg2, dg)):
        assert abs(np.log(new / old).std() - 0.15) < 0.005 and abs(np.log(new / old).mean()) < 0.005
    assert np.all(lq2 < lp2)


def test_smoothed_noise_keeps_its_sd_and_has_the_gaussian_correlation():
    rng = np.random.default_rng(3)
    shape = (40, 40, 20)
    fwhm = 2.0
    out = smooth_noise(rng.standard_normal((np.prod(shape), 4)), shape, fwhm).reshape(*shape, 4)
    assert abs(out.std() - 1.0) < 0.02
    s = fwhm / (2 * np.sqrt(2 * np.log(2)))
    for axis in range(3):
        a, b = np.moveaxis(out, axis, 0)[:-1], np.moveaxis(out, axis, 0)[1:]
        r = np.corrcoef(a.ravel(), b.ravel())[0, 1]
        assert abs(r - np.exp(-1 / (4 * s**2))) < 0.03, (axis, r)
    # an axis of length 1 is not smoothed (the voxel-wise phantom's line layout)
    line = smooth_noise(rng.standard_normal((500, 2)), (500, 1, 1), fwhm)
    assert abs(line.std() - 1.0) < 0.08


def test_bias_field_scales_the_signal_not_the_noise():
    field = bias_field((16, 16, 6), 0.3, np.random.default_rng(0))
    assert abs(np.abs(field - 1).max() - 0.3) < 1e-9 and field.min() > 0
    clean = spatial_phantom(size="quick", snr=None, seed=5)
    biased = spatial_phantom(size="quick", snr=None, seed=5, variation=PhantomVariation(bias_field=0.3))
    m = clean.mask
    ratio = biased.dwi[m] / clean.dwi[m]
    np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones_like(ratio), rtol=1e-5)  # one factor per voxel
    assert 0.69 < ratio.min() and ratio.max() < 1.31 and ratio.max() - ratio.min() > 0.2


def test_simulate_cli_records_the_variation_and_refuses_bad_values(tmp_path, capsys):
    bad = tmp_path / "bad"
    assert main(["simulate", str(bad), "--quick", "--dispersion", "60", "-q"]) == 2
    assert not bad.exists()
    assert "--dispersion must be at most 45" in capsys.readouterr().err
    assert main(["simulate", str(bad), "--quick", "--noise-fwhm", "-1", "-q"]) == 2
    assert "--noise-fwhm must be >= 0" in capsys.readouterr().err and not bad.exists()
    for option, value, said in (("--snr", "0", "--snr must be a positive number"),
                                ("--snr", "nan", "--snr must be a positive number"),
                                ("--snr", "inf", "--snr must be a positive number"),  # was "snr": Infinity in JSON
                                ("--seed", "-1", "--seed must be >= 0")):  # were tracebacks
        assert main(["simulate", str(bad), "--quick", option, value, "-q"]) == 2
        assert said in capsys.readouterr().err and not bad.exists()
    good = tmp_path / "good"
    assert main(["simulate", str(good), "--quick", "--dispersion", "12", "--noise-fwhm", "1.5", "-q"]) == 0
    meta = json.loads((good / "truth" / "truth.json").read_text())
    assert meta["variation"]["dispersion_deg"] == 12 and meta["variation"]["noise_fwhm"] == 1.5
