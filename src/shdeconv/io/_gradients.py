r"""The orientation frame of gradient directions and fODFs: the one place that knows it.

FSL ``bvecs`` are given in the voxel axes, with ``x`` negated when the 3x3 part ``A`` of the
image's sform/qform has a positive determinant (FSL's radiological convention). MRtrix3
turns them into scanner (world) directions

.. math:: g_{world} = R F b, \quad F = \mathrm{diag}(-1, 1, 1)\ \text{if}\ \det A > 0\ \text{else}\ I,

with ``R`` the columns of ``A`` scaled to unit length, and expresses fODF SH in that world
frame; ``sh2peaks`` and ``tckgen`` read them so. shdeconv follows MRtrix3 for every file it
writes (``fodf.nii.gz``, ``peaks.nii.gz``) and DIPY's convention (directions as given) for
the Python ``Model``/``Fit`` API.
"""

from __future__ import annotations

import numpy as np

__all__ = ["voxel_to_world_matrix", "fsl_bvecs_to_world", "world_to_fsl_bvecs", "voxel_axes_rotation",
           "tensor_conditioning"]


def voxel_to_world_matrix(affine: np.ndarray) -> np.ndarray:
    """The 3x3 matrix ``M = R F`` that maps FSL bvecs to world directions, ``g = M b``."""
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    norms = np.linalg.norm(a, axis=0)
    if np.any(norms == 0) or abs(np.linalg.det(a)) < 1e-12:
        raise ValueError(f"the image affine is singular: {a.tolist()}")
    r = a / norms
    f = np.diag([-1.0, 1.0, 1.0]) if np.linalg.det(a) > 0 else np.eye(3)
    return r @ f


def _normalise_rows(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.where(n > 0, v / np.where(n > 0, n, 1.0), 0.0)


def fsl_bvecs_to_world(bvecs: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World-frame unit directions ``(G, 3)`` from FSL bvecs ``(G, 3)``; zero rows stay zero."""
    b = np.asarray(bvecs, dtype=np.float64)
    return _normalise_rows(b @ voxel_to_world_matrix(affine).T)


def world_to_fsl_bvecs(directions: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Inverse of :func:`fsl_bvecs_to_world`: FSL bvecs ``(G, 3)`` for world directions."""
    g = np.asarray(directions, dtype=np.float64)
    return _normalise_rows(g @ np.linalg.inv(voxel_to_world_matrix(affine)).T)


def voxel_axes_rotation(affine: np.ndarray) -> np.ndarray:
    """Orthogonal 3x3 ``R`` whose columns are the world directions of the voxel axes.

    The nearest orthogonal matrix (polar decomposition) to ``A`` with unit columns, so that
    sheared affines still give a rotation (or a rotation-reflection when ``det A < 0``).
    Networks run in the voxel-axes frame (``u_vox = R^T u_world``), where the 3-D grid's own
    symmetries act on space and sphere alike; their SH are turned into the world frame
    with ``rotate_sh(c, R)``.
    """
    a = np.asarray(affine, dtype=np.float64)[:3, :3]
    if abs(np.linalg.det(a)) < 1e-12:
        raise ValueError(f"the image affine is singular: {a.tolist()}")
    u, _, vt = np.linalg.svd(a / np.linalg.norm(a, axis=0))
    return u @ vt


def tensor_conditioning(directions: np.ndarray) -> float:
    r"""How well unit ``directions`` ``(N, 3)`` determine a diffusion tensor, in [0, 1].

    The ratio of the smallest to the largest singular value of the orthonormal real SH
    design of orders 0 and 2 (6 columns, the space a tensor's signal spans),
    :math:`B_{ij} = Y_j(g_i)`. Uniform directions give values near 1 (0.4-0.6 for good
    6-direction schemes); 0 when the directions cannot determine a tensor (fewer than 6
    distinct axes, or all on one cone through the origin, such as a plane). Noise in the
    worst-determined component is amplified by its inverse relative to the best one.
    """
    g = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
    if len(g) < 6:
        return 0.0
    x, y, z = g.T
    c0, c1, c2 = 0.5 / np.sqrt(np.pi), np.sqrt(15 / (4 * np.pi)), np.sqrt(5 / (16 * np.pi))
    design = np.stack([np.full_like(x, c0), c1 * x * y, c1 * y * z, c2 * (3 * z * z - 1), c1 * x * z,
                       0.5 * c1 * (x * x - y * y)], axis=1)
    s = np.linalg.svd(design, compute_uv=False)
    return float(s[-1] / s[0]) if s[0] > 0 else 0.0
