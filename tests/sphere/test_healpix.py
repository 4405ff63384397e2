import numpy as np
import pytest

from shdeconv.sphere import (
    antipode_map,
    fold_map,
    grid_symmetries,
    hemisphere_directions,
    hemisphere_indices,
    pixel_directions,
    pooling_children,
    sphere_graph,
)

NSIDES = [1, 2, 4, 8, 16]


@pytest.mark.parametrize("nside", NSIDES)
def test_hemisphere_splits_antipodal_pairs(nside):
    v = pixel_directions(nside)
    a = antipode_map(nside)
    h = hemisphere_indices(nside)
    assert len(v) == 12 * nside**2 and len(h) == len(v) // 2
    np.testing.assert_allclose(v[a], -v, atol=1e-12)
    assert set(h) | set(a[h]) == set(range(len(v)))
    hv = hemisphere_directions(nside)
    assert np.all((hv[:, 2] > -1e-12))
    f = fold_map(nside)
    np.testing.assert_array_equal(f[h], np.arange(len(h)))
    np.testing.assert_array_equal(f[a], f)


def test_nside8_has_384_hemisphere_pixels():
    assert len(hemisphere_indices(8)) == 384


@pytest.mark.parametrize("nside", NSIDES)
def test_hemispherical_laplacian_is_exact_on_symmetric_signals(nside, rng):
    g = sphere_graph(nside)
    h, f = hemisphere_indices(nside), fold_map(nside)
    x_h = rng.normal(size=(len(h), 3))
    x = x_h[f]  # antipodally symmetric signal on the full sphere
    np.testing.assert_allclose(g.laplacian_hemi @ x_h, (g.laplacian @ x)[h], atol=1e-10)
    # and the rescaled operators too, so Chebyshev filters agree
    np.testing.assert_allclose(g.rescaled(True) @ x_h, (g.rescaled(False) @ x)[h], atol=1e-10)


@pytest.mark.parametrize("nside", [2, 4, 8])
def test_graph_properties(nside):
    g = sphere_graph(nside)
    lap = g.laplacian
    np.testing.assert_allclose(lap, lap.T, atol=1e-14)
    ev = np.linalg.eigvalsh(lap)
    assert ev[0] > -1e-10 and abs(ev[0]) < 1e-8  # connected graph: one zero eigenvalue
    assert ev[1] > 1e-6
    assert abs(ev[-1] - g.lambda_max) < 1e-8
    deg = np.asarray((g.weights > 0).sum(axis=1)).ravel()
    assert deg.min() >= 8
    rt = g.rescaled(False)
    assert np.linalg.eigvalsh(rt)[[0, -1]] == pytest.approx([-1.0, 1.0], abs=1e-6)


@pytest.mark.parametrize("nside", [2, 4, 8])
def test_graph_invariant_under_grid_symmetries(nside):
    g = sphere_graph(nside)
    syms = grid_symmetries(nside)
    assert len(syms) == 16
    a = antipode_map(nside)
    for _, p in syms + ((-np.eye(3), a),):
        np.testing.assert_allclose(g.laplacian[np.ix_(p, p)], g.laplacian, atol=1e-12)


@pytest.mark.parametrize("nside", [2, 4, 8, 16])
def test_pooling_maps_commute_with_antipodes(nside):
    full = pooling_children(nside, hemisphere=False)
    assert full.shape == (12 * (nside // 2) ** 2, 4)
    a_child, a_parent = antipode_map(nside), antipode_map(nside // 2)
    np.testing.assert_array_equal(np.sort(a_child[full], axis=1), np.sort(full[a_parent], axis=1))
    hemi = pooling_children(nside, hemisphere=True)
    assert hemi.shape == (len(hemisphere_indices(nside // 2)), 4)
    assert np.unique(hemi).size == len(hemisphere_indices(nside))
    # children lie close to their parent
    pv = pixel_directions(nside // 2)[hemisphere_indices(nside // 2)]
    cv = pixel_directions(nside)[hemisphere_indices(nside)][hemi]
    cos = np.abs(np.einsum("pd,pcd->pc", pv, cv))
    assert cos.min() > np.cos(np.deg2rad(60.0 / nside))


def test_bad_nside():
    with pytest.raises(ValueError, match="power of two"):
        pixel_directions(3)
