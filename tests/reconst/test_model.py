"""DIPY-style API: SHDModel(gtab).fit(data, mask) -> shm_coeff, odf(sphere), peaks, predict."""

import numpy as np
from dipy.core.gradients import gradient_table
from dipy.data import get_sphere

from shdeconv.fitting import FitConfig
from shdeconv.models import NetworkConfig
from shdeconv.reconst import SHDModel
from shdeconv.sim import spatial_phantom
from shdeconv.sphere import convert_sh_basis, sh_matrix


def test_model_fit_api():
    ph = spatial_phantom(scheme="clinical", snr=30, seed=2, size="quick")
    gtab = gradient_table(ph.bvals, bvecs=ph.directions_world, b0_threshold=50)
    model = SHDModel(gtab, fit_config=FitConfig(iterations=3, batch_size=1, patch_size=8),
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
    model = SHDModel(gtab, fit_config=FitConfig(iterations=2, batch_size=1, patch_size=8, init="direct"),
                     net_config=NetworkConfig(depth=2, width=4, K=2))
    assert model.loss_weights.supervised == 1.0
    fit = model.fit(ph.dwi, ph.mask)
    assert all(h["supervised"] > 0 for h in fit.history)
