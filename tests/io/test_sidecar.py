"""Every output map has a BIDS-Derivatives (BEP016) JSON sidecar that says what it holds."""

import json

import nibabel as nib
import numpy as np
import pytest

from shdeconv.fitting import DirectConfig, run_csd, run_fit
from shdeconv.sim import simulate_to_dir
from shdeconv.sphere import lmax_from_ncoeffs


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return simulate_to_dir(tmp_path_factory.mktemp("ph") / "ph", scheme="clinical", snr=20, seed=3, size="quick")


def _inputs(ph):
    return ph / "dwi.nii.gz", ph / "bvals", ph / "bvecs"


def _load(d, name):
    return json.loads((d / name).read_text())


def test_fit_sidecars_describe_the_maps(phantom, tmp_path):
    out = tmp_path / "fit"
    report = run_fit(*_inputs(phantom), out, mask=phantom / "mask.nii.gz", direct_config=DirectConfig(iterations=2),
                     progress=False, denoise="none")
    assert {"fodf_json", "gm_json", "peaks_json"} <= set(report["outputs"])
    fodf = _load(out, "fodf.json")
    enc = fodf["OrientationEncoding"]
    assert enc == {"Type": "sh", "SphericalHarmonicBasis": "mrtrix3", "EncodingAxis": 3, "Reference": "xyz",
                   "AntipodalSymmetry": True,
                   "SphericalHarmonicDegree": lmax_from_ncoeffs(nib.load(out / "fodf.nii.gz").shape[-1])}
    assert enc["SphericalHarmonicDegree"] == 16
    assert fodf["NonNegativity"] == "constrained"
    assert fodf["Model"]["Parameters"]["variant"] == "direct" and fodf["Model"]["URL"]
    assert fodf["GeneratedBy"][0]["Name"] == "shdeconv" and "CommandLine" in fodf
    wm = fodf["ResponseFunction"]["wm"]
    assert wm["Type"] == "zsh" and wm["Shells"] == [0.0, 1000.0] and len(wm["Coefficients"][1]) == 5
    # the single-shell GM-like tissue: a fixed isotropic response, sqrt(4 pi) exp(-b D), D = 0.8e-3
    gm = _load(out, "gm.json")["ResponseFunction"]
    np.testing.assert_allclose(np.ravel(gm["Coefficients"]), np.sqrt(4 * np.pi) * np.exp(-np.array([0, 1000]) * 8e-4))
    assert _load(out, "peaks.json")["OrientationEncoding"]["Type"] == "vector"


def test_csd_sidecars_name_dipy_and_its_degree(phantom, tmp_path):
    out = tmp_path / "csd"
    run_csd(*_inputs(phantom), out, mask=phantom / "mask.nii.gz", lmax=6)
    fodf = _load(out, "fodf.json")
    assert fodf["OrientationEncoding"]["SphericalHarmonicDegree"] == 6
    assert "DIPY" in fodf["Model"]["Description"] and fodf["NonNegativity"] == "constrained"
    assert not (out / "gm.json").exists()  # single-shell CSD has no tissue maps
