"""The brain-sized phantom used by benchmarks/wholebrain.py (run here at a small shape)."""

import numpy as np

from shdeconv.sim._brain import brain_phantom


def test_brain_phantom_geometry_and_signal():
    ph = brain_phantom((30, 36, 30), scheme="clinical", snr=20, seed=1)
    m = ph.mask
    assert 0.3 < m.mean() < 0.6  # an ellipsoidal brain inside the box, as in a real scan
    np.testing.assert_allclose((ph.wm + ph.gm + ph.csf)[m], 1.0, atol=1e-6)
    assert set(np.unique(ph.n_fibres[m])) <= {0, 1, 2} and (ph.n_fibres[m] == 2).any()
    norms = np.linalg.norm(ph.peak_dirs[m][ph.peak_fractions[m] > 0], axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-9)
    np.testing.assert_allclose(ph.peak_fractions.sum(-1)[m], ph.wm[m], atol=1e-6)
    assert ph.dwi.shape == (30, 36, 30, len(ph.bvals)) and (ph.dwi[~m] == 0).all()
    b0 = ph.dwi[m][:, ph.bvals < 50].mean()
    assert 80 < b0 < 140 and (ph.dwi[m][:, ph.bvals > 50].mean() < b0)
    again = brain_phantom((30, 36, 30), scheme="clinical", snr=20, seed=1)
    np.testing.assert_array_equal(again.dwi, ph.dwi)
