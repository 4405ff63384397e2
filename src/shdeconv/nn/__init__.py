"""Spherical and spatio-spherical graph layers, pooling (docs/method.md, section 4)."""

from ._chebyshev import (
    chebyshev_projector,
    n_pixels,
    rescaled_laplacian,
    sparse_rescaled_laplacian,
)
from ._conv import SpatioSphericalConv, SphericalChebConv, separable_class_stencil
from ._pool import SpatialPool, SpatialUnpool, SpherePool, SphereUnpool

__all__ = [
    "SpatialPool",
    "SpatialUnpool",
    "SpatioSphericalConv",
    "SpherePool",
    "SphereUnpool",
    "SphericalChebConv",
    "chebyshev_projector",
    "n_pixels",
    "rescaled_laplacian",
    "separable_class_stencil",
    "sparse_rescaled_laplacian",
]
