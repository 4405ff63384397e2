import numpy as np
import pytest

from shdeconv.direction import sh_peaks
from shdeconv.sphere import dense_directions, sh_matrix, zonal_to_sh


def _delta_zonal(lmax):
    return np.array([np.sqrt((2 * l + 1) / (4 * np.pi)) for l in range(0, lmax + 1, 2)])


def _crossing(u, angle_deg, axis_hint, lmax, w2=0.8):
    a = np.cross(u, axis_hint)
    a /= np.linalg.norm(a)
    v = np.cos(np.radians(angle_deg)) * u + np.sin(np.radians(angle_deg)) * a
    z = _delta_zonal(lmax)
    return zonal_to_sh(z, u, lmax) + w2 * zonal_to_sh(z, v, lmax), v


def _ang(a, b):
    return np.degrees(np.arccos(np.clip(np.abs(a @ b), 0, 1)))


@pytest.mark.parametrize("angle", [60.0, 90.0])
def test_two_lobes_recovered(angle, rng):
    errs = []
    for _ in range(10):
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        sh, v = _crossing(u, angle, rng.normal(size=3), lmax=12)
        d, a = sh_peaks(sh)
        assert d.shape == (3, 3) and a.shape == (3,)
        assert (a > 0).sum() == 2 and a[0] >= a[1]
        errs += [_ang(d[0], u), _ang(d[1], v)]
        np.testing.assert_allclose(np.linalg.norm(d[:2], axis=1), 1.0)
    assert max(errs) < 2.0, errs


def test_refined_peak_is_the_functions_maximum(rng):
    """Against a brute-force maximum over 60k directions (about 0.9 degree spacing)."""
    dense = dense_directions(60000)
    for _ in range(5):
        u = rng.normal(size=3)
        u /= np.linalg.norm(u)
        sh, _ = _crossing(u, 75.0, rng.normal(size=3), lmax=8, w2=0.5)
        vals = sh_matrix(dense, 8) @ sh
        best = dense[np.argmax(vals)]
        d, a = sh_peaks(sh)
        assert _ang(d[0], best) < 1.0
        assert a[0] >= vals.max() - 1e-9
        coarse, _ = sh_peaks(sh, refine=False)
        assert _ang(coarse[0], best) < 6.0


def test_thresholds_and_limits(rng):
    u = np.array([0.0, 0.0, 1.0])
    sh_big, v = _crossing(u, 90.0, np.array([1.0, 0, 0]), lmax=8, w2=0.15)
    d, a = sh_peaks(sh_big, rel_threshold=0.25)
    assert (a > 0).sum() == 1 and _ang(d[0], u) < 1.0
    d, a = sh_peaks(sh_big, rel_threshold=0.15)  # the 0.15-weight lobe, not the ringing
    assert (a > 0).sum() == 2 and _ang(d[1], v) < 1.0
    d, a = sh_peaks(sh_big, rel_threshold=0.15, max_peaks=1)
    assert d.shape == (1, 3) and a[0] > 0
    d, a = sh_peaks(sh_big, abs_threshold=10.0)
    assert np.all(a == 0) and np.all(d == 0)


def test_volume_shapes_mask_and_empty_voxels(rng):
    sh = np.zeros((3, 2, 2, 45))
    sh[0, 0, 0] = zonal_to_sh(_delta_zonal(8), [0, 1.0, 0], 8)
    sh[1, 1, 1] = zonal_to_sh(_delta_zonal(8), [1.0, 0, 0], 8)
    mask = np.ones((3, 2, 2), bool)
    mask[1, 1, 1] = False
    d, a = sh_peaks(sh, mask=mask)
    assert d.shape == (3, 2, 2, 3, 3) and a.shape == (3, 2, 2, 3)
    assert _ang(d[0, 0, 0, 0], np.array([0, 1.0, 0])) < 0.5
    assert np.all(a[1, 1, 1] == 0)  # masked out
    assert np.all(a[2] == 0)  # zero SH: no peaks
    with pytest.raises(ValueError):
        sh_peaks(np.zeros((4, 44)))


def test_float32_input_gives_the_float64_peaks_and_leaves_the_mask_alone(rng):
    """float32 SH (as written to disk) is converted chunk by chunk, never as a whole volume: the
    peaks equal those of the same numbers passed as float64; the caller's mask is not modified."""
    u = rng.normal(size=(40, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    sh = np.stack([_crossing(v, 70.0, np.array([0.3, 0.5, 0.8]), 8)[0] for v in u]).astype(np.float32)
    sh = sh.reshape(4, 5, 2, 45)
    sh[0, 0, 0] = 0.0  # an empty voxel
    mask = np.ones((4, 5, 2), bool)
    d32, a32 = sh_peaks(sh, mask=mask)
    d64, a64 = sh_peaks(sh.astype(np.float64), mask=mask)
    np.testing.assert_array_equal(d32, d64)
    np.testing.assert_array_equal(a32, a64)
    assert mask.all() and np.all(a32[0, 0, 0] == 0) and np.all(a32[1:, :, :, 0] > 0)


def test_separation_merges_close_lobes():
    u = np.array([0.0, 0.0, 1.0])
    sh, _ = _crossing(u, 20.0, np.array([1.0, 0, 0]), lmax=12, w2=1.0)
    d, a = sh_peaks(sh, min_separation_deg=25.0)
    live = d[a > 0]
    for i in range(len(live)):
        for j in range(i + 1, len(live)):
            assert _ang(live[i], live[j]) >= 25.0


def test_shipped_sphere_is_dipys_default_sphere():
    """The extraction sphere read from ``peak_sphere.npz`` is DIPY's ``default_sphere``, and
    extracting peaks does not import ``dipy.data`` (about a second)."""
    import subprocess
    import sys

    from dipy.data import default_sphere

    from shdeconv.direction import peak_sphere
    from shdeconv.direction._peaks import _sphere_tables

    verts, table = peak_sphere()
    ref_verts, ref_table = _sphere_tables("dipy", default_sphere)
    np.testing.assert_array_equal(verts, ref_verts)
    np.testing.assert_array_equal(table, ref_table)
    code = ("import sys, numpy as np; from shdeconv.direction import sh_peaks; "
            "sh_peaks(np.r_[1.0, np.zeros(14)][None]); print('dipy.data' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
