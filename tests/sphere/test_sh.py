import subprocess

import nibabel as nib
import numpy as np
import pytest
from scipy.special import sph_harm_y

from shdeconv.sphere import (
    cart2sphere,
    convert_sh_basis,
    dense_directions,
    n_coeffs,
    rotate_sh,
    sh_degrees,
    sh_eval,
    sh_eval_pointwise,
    sh_fit,
    sh_matrix,
    sh_orders,
    zonal_to_sh,
)


def _random_dirs(rng, n):
    u = rng.normal(size=(n, 3))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def _scipy_reference(u, lmax):
    """MRtrix3 basis from scipy's complex SH (with Condon-Shortley phase)."""
    theta, phi = cart2sphere(u)
    cols = []
    for l in range(0, lmax + 1, 2):
        for m in range(-l, l + 1):
            y = sph_harm_y(l, abs(m), theta, phi)
            if m < 0:
                cols.append(np.sqrt(2) * y.imag)
            elif m == 0:
                cols.append(y.real)
            else:
                cols.append(np.sqrt(2) * y.real)
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("lmax", [0, 2, 4, 8, 12])
def test_sh_matches_independent_evaluations(lmax, rng):
    u = _random_dirs(rng, 200)
    b = sh_matrix(u, lmax)
    assert b.shape == (200, n_coeffs(lmax))
    np.testing.assert_allclose(b, _scipy_reference(u, lmax), atol=1e-10)
    from dipy.reconst.shm import real_sh_tournier

    theta, phi = cart2sphere(u)
    np.testing.assert_allclose(b, real_sh_tournier(lmax, theta, phi, legacy=False)[0], atol=1e-10)


def test_sh_at_poles_axes_and_unnormalised_vectors():
    """Where the azimuth is degenerate (poles) or the input is not unit, the recurrence for
    cos/sin(m phi) still matches scipy (lmax 16: the recurrence runs 16 steps)."""
    u = np.array([[0, 0, 1.0], [0, 0, -1.0], [1.0, 0, 0], [0, 1.0, 0], [-1.0, 0, 0], [0, -1.0, 0],
                  [1e-9, 0, 1.0], [3.0, -4.0, 12.0], [-2.0, -2.0, -1.0]])
    unit = u / np.linalg.norm(u, axis=1, keepdims=True)
    np.testing.assert_allclose(sh_matrix(u, 16), _scipy_reference(unit, 16), atol=1e-10)
    with pytest.raises(ValueError, match="zero vector"):
        sh_matrix(np.zeros((1, 3)), 4)


def test_index_order():
    np.testing.assert_array_equal(sh_degrees(4), [0, 2, 2, 2, 2, 2, 4, 4, 4, 4, 4, 4, 4, 4, 4])
    np.testing.assert_array_equal(sh_orders(2), [0, -2, -1, 0, 1, 2])


def test_orthonormal_under_quadrature():
    u = dense_directions(20000)
    b = sh_matrix(u, 8)
    gram = b.T @ b * (4 * np.pi / len(u))
    np.testing.assert_allclose(gram, np.eye(45), atol=2e-3)


def test_fit_evaluate_round_trip(rng):
    u = _random_dirs(rng, 90)
    c = rng.normal(size=(5, 45))
    vals = sh_eval(c, u)
    np.testing.assert_allclose(sh_fit(vals, u, 8, lambda_lb=0.0), c, atol=1e-8)
    # regularised fit is close for smooth functions
    c_smooth = c * np.exp(-0.05 * sh_degrees(8) ** 2)
    got = sh_fit(sh_eval(c_smooth, u), u, 8, lambda_lb=1e-6)
    np.testing.assert_allclose(got, c_smooth, atol=1e-3)


def test_pointwise_evaluation_equals_row_by_row():
    rng = np.random.default_rng(4)
    c = rng.normal(size=(5, n_coeffs(6)))
    u = _random_dirs(rng, 5 * 7).reshape(5, 7, 3)
    got = sh_eval_pointwise(c, u)
    assert got.shape == (5, 7)
    np.testing.assert_allclose(got, np.stack([sh_eval(c[i], u[i]) for i in range(5)]), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="must agree"):
        sh_eval_pointwise(c, u[:4])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zonal_rotated_to_u_peaks_at_u(seed):
    rng = np.random.default_rng(seed)
    u = _random_dirs(rng, 1)[0]
    zonal = np.array([1.0, 0.9, 0.6, 0.3, 0.1])  # a fibre-like lobe
    c = zonal_to_sh(zonal, u, 8)
    d = dense_directions(20000)
    vals = sh_eval(c, d)
    best = d[np.argmax(vals)]
    assert abs(best @ u) > np.cos(np.deg2rad(1.5))
    # antipodal symmetry
    np.testing.assert_allclose(sh_eval(c, u[None]), sh_eval(c, -u[None]), atol=1e-12)


def test_rotate_sh(rng):
    from scipy.spatial.transform import Rotation

    q = Rotation.random(random_state=3).as_matrix()
    c = rng.normal(size=(3, 45))
    c_rot = rotate_sh(c, q)
    u = _random_dirs(rng, 50)
    np.testing.assert_allclose(sh_eval(c_rot, u), sh_eval(c, u @ q), atol=1e-9)
    refl = np.diag([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(sh_eval(rotate_sh(c, refl), u), sh_eval(c, u @ refl), atol=1e-9)


def test_rotate_sh_keeps_float32_and_blocks_agree(rng, monkeypatch):
    """float32 in, float32 out, computed in float64 a block at a time: the same numbers as the
    float64 path rounded once, whatever the block size."""
    from scipy.spatial.transform import Rotation

    import shdeconv.sphere._sh as sh_module

    q = Rotation.random(random_state=5).as_matrix()
    c = rng.normal(size=(7, 5, 3, 45)).astype(np.float32)
    ref = rotate_sh(c.astype(np.float64), q)
    monkeypatch.setattr(sh_module, "_ROTATE_BLOCK", 8)  # 105 voxels: 14 blocks, the last one partial
    out = rotate_sh(c, q)
    assert out.dtype == np.float32 and out.shape == c.shape
    np.testing.assert_array_equal(out, ref.astype(np.float32))
    assert rotate_sh(c.astype(np.float64), q).dtype == np.float64


def test_descoteaux_round_trip(rng):
    from dipy.reconst.shm import real_sh_descoteaux

    c = rng.normal(size=45)
    d = convert_sh_basis(c, "mrtrix3", "descoteaux07")
    u = _random_dirs(rng, 40)
    theta, phi = cart2sphere(u)
    np.testing.assert_allclose(real_sh_descoteaux(8, theta, phi, legacy=False)[0] @ d, sh_matrix(u, 8) @ c, atol=1e-9)
    np.testing.assert_allclose(convert_sh_basis(d, "descoteaux07", "mrtrix3"), c, atol=1e-12)
    with pytest.raises(ValueError, match="unknown SH basis"):
        convert_sh_basis(c, "mrtrix3", "fsl")


@pytest.mark.mrtrix
def test_matches_mrtrix_sh2amp(mrtrix, tmp_path, rng):
    c = rng.normal(size=45)
    nib.save(nib.Nifti1Image(c.reshape(1, 1, 1, 45).astype(np.float32), np.eye(4)), tmp_path / "sh.nii")
    u = _random_dirs(rng, 30)
    np.savetxt(tmp_path / "dirs.txt", u)
    subprocess.run(["sh2amp", "-quiet", "-force", str(tmp_path / "sh.nii"), str(tmp_path / "dirs.txt"),
                    str(tmp_path / "amp.nii")], check=True)
    amp = nib.load(tmp_path / "amp.nii").get_fdata().ravel()
    np.testing.assert_allclose(amp, sh_matrix(u, 8) @ c.astype(np.float32), atol=1e-4)
