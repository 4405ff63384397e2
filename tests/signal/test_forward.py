import numpy as np
import torch
from scipy.special import eval_legendre

from shdeconv.signal._forward import ForwardModel
from shdeconv.signal._grid import grid_to_sh_matrix, input_lmax, signal_to_grid_matrix
from shdeconv.sphere import (
    dense_directions,
    hemisphere_directions,
    n_coeffs,
    sh_degrees,
    sh_eval,
    sh_matrix,
)


def _dirs(rng, n):
    u = rng.normal(size=(n, 3))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


def test_funk_hecke_single_fibre_gives_the_response(rng):
    """A Dirac fODF at u convolved with R gives R(angle(g, u)) for every g."""
    lmax = 8
    zonal = np.array([[1.2, -0.5, 0.2, -0.05, 0.01], [0.8, -0.6, 0.35, -0.15, 0.05]])
    ls = sh_degrees(lmax)
    kernel = np.sqrt(4 * np.pi / (2 * ls + 1))[None, :] * zonal[:, ls // 2]
    g = _dirs(rng, 40)
    shell = rng.integers(0, 2, size=40)
    fm = ForwardModel(g, shell, kernel)
    u = _dirs(rng, 1)[0]
    dirac = sh_matrix(u[None], lmax)[0]
    got = fm(torch.as_tensor(dirac, dtype=torch.float32)).numpy()
    cosang = g @ u
    want = sum(zonal[shell, l // 2] * np.sqrt((2 * l + 1) / (4 * np.pi)) * eval_legendre(l, cosang)
               for l in range(0, lmax + 1, 2))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_isotropic_compartments_and_b0():
    g = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    shell = np.array([0, 1, 1])
    kernel = np.zeros((2, n_coeffs(4)))
    kernel[0, 0] = np.sqrt(4 * np.pi) * np.sqrt(4 * np.pi)  # Funk-Hecke factor x r_0 = sqrt(4 pi) at b=0
    iso = np.array([[np.sqrt(4 * np.pi), np.sqrt(4 * np.pi)], [0.5, 0.1]])
    fm = ForwardModel(g, shell, kernel, iso)
    assert fm.n_iso == 2
    c = torch.zeros(n_coeffs(4))
    c[0] = 0.3 / np.sqrt(4 * np.pi)  # WM fraction 0.3
    phi = torch.tensor([0.5, 0.2])
    s = fm(c, phi).numpy()
    # b=0: fractions add up (0.3 + 0.5 + 0.2 = 1)
    np.testing.assert_allclose(s[0], 1.0, rtol=1e-5)
    np.testing.assert_allclose(s[1:], (0.5 * 0.5 + 0.2 * 0.1) / np.sqrt(4 * np.pi), rtol=1e-5)


def test_signal_to_grid_reproduces_smooth_signals(rng):
    g = _dirs(rng, 60)
    c = np.zeros(n_coeffs(4))
    c[[0, 3, 10]] = [1.0, 0.3, 0.1]
    s = sh_eval(c, g)
    m = signal_to_grid_matrix(g, np.ones(60, int), [1], nside=8, hemisphere=True, lambda_lb=0.0)
    grid = hemisphere_directions(8)
    np.testing.assert_allclose(m[0] @ s, sh_eval(c, grid), atol=1e-8)
    assert input_lmax(30) == 6 and input_lmax(15) == 4 and input_lmax(90) == 8


def test_grid_to_sh_inverts_grid_sampling(rng):
    c = rng.normal(size=45)
    for hemi in (True, False):
        d = hemisphere_directions(4) if hemi else dense_directions(10)[:0]
        if not hemi:
            from shdeconv.sphere import pixel_directions

            d = pixel_directions(4)
        np.testing.assert_allclose(grid_to_sh_matrix(4, hemi, 8) @ (sh_matrix(d, 8) @ c), c, atol=1e-9)
