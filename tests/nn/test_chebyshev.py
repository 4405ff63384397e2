"""Chebyshev projector: recursion, shapes, hemisphere folding, sparse recursion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shdeconv.nn import (
    chebyshev_projector,
    rescaled_laplacian,
    sparse_rescaled_laplacian,
)
from shdeconv.nn._conv import _chebyshev_recursion, _sparse_laplacian_tensors
from shdeconv.sphere import fold_map


@pytest.mark.parametrize("nside", [1, 2, 4])
@pytest.mark.parametrize("hemisphere", [True, False])
def test_projector_blocks(nside, hemisphere):
    K = 4
    P = chebyshev_projector(nside, K, hemisphere)
    L = rescaled_laplacian(nside, hemisphere)
    V = L.shape[0]
    assert P.shape == (K * V, V) and P.dtype == np.float64
    blocks = P.reshape(K, V, V)
    np.testing.assert_allclose(blocks[0], np.eye(V))
    np.testing.assert_allclose(blocks[1], L)
    np.testing.assert_allclose(blocks[3], 4 * L @ L @ L - 3 * L, atol=1e-12)
    # Chebyshev polynomials of a matrix with spectrum in [-1, 1] stay bounded
    assert np.linalg.norm(blocks[3], 2) <= 1 + 1e-8


@pytest.mark.parametrize("nside", [2, 4])
def test_hemisphere_projector_folds_full(nside):
    """T_k(L~+) x_h == (T_k(L~) x_full) on the hemisphere, for antipodally symmetric x."""
    K = 5
    fold = fold_map(nside)
    Ph = chebyshev_projector(nside, K, True)
    Pf = chebyshev_projector(nside, K, False)
    x = np.random.default_rng(0).standard_normal(len(fold) // 2)
    yh = (Ph @ x).reshape(K, -1)
    yf = (Pf @ x[fold]).reshape(K, -1)
    np.testing.assert_allclose(yf, yh[:, fold], atol=1e-12)


@pytest.mark.parametrize("hemisphere", [True, False])
def test_sparse_recursion_matches_projector(hemisphere):
    torch.set_default_dtype(torch.float64)
    try:
        lap, lap_t = _sparse_laplacian_tensors(4, hemisphere)
    finally:
        torch.set_default_dtype(torch.float32)
    P = torch.tensor(chebyshev_projector(4, 5, hemisphere))
    x = torch.randn(P.shape[1], 7, dtype=torch.float64)
    z = torch.cat(_chebyshev_recursion(lap, lap_t, x, 5), dim=0)
    torch.testing.assert_close(z, P @ x, rtol=0, atol=1e-12)
    assert sparse_rescaled_laplacian(4, hemisphere).nnz < 12 * P.shape[1]


def test_bad_K():
    with pytest.raises(ValueError, match="K"):
        chebyshev_projector(2, 0, True)
