"""Shared test helpers: acquisitions, small multi-tensor phantoms, three affine frames, MRtrix3 peak readers.

Importable from any test (``pythonpath = ["tests"]`` in pyproject's pytest settings).
"""

from __future__ import annotations

import subprocess

import nibabel as nib
import numpy as np
from dipy.core.gradients import gradient_table
from dipy.sims.voxel import multi_tensor
from scipy.spatial.transform import Rotation

from shdeconv.sphere import dense_directions

EVALS = np.array([1.7e-3, 0.3e-3, 0.3e-3])

#: The three frames of the frame test: name -> 4x4 affine.
_R30 = Rotation.from_rotvec(np.radians(30) * np.array([1.0, 1.0, 0.0]) / np.sqrt(2)).as_matrix()
AFFINES = {
    "diag_pos": np.diag([2.0, 2.0, 2.0, 1.0]),
    "diag_neg": np.diag([-2.0, 2.0, 2.0, 1.0]),
    "oblique": np.block([[2.0 * _R30, np.array([[10.0], [-5.0], [3.0]])], [np.zeros((1, 3)), np.ones((1, 1))]]),
}


def _acq(n=60, shells=(1000,), n_b0=4):
    u = dense_directions(2 * n)
    u = u[u[:, 2] > 0]
    bvals = np.concatenate([np.zeros(n_b0)] + [np.full(len(u), b) for b in shells])
    dirs = np.concatenate([np.zeros((n_b0, 3))] + [u] * len(shells))
    return bvals, dirs


def _angles(v):
    v = np.asarray(v, dtype=float)
    return np.degrees([np.arccos(np.clip(v[2], -1, 1)), np.arctan2(v[1], v[0])])


def _simulate(fibres, bvals, dirs, *, snr, rng, s0=1000.0):
    """``fibres``: ``(X, Y, Z, K, 3)`` world directions (zero rows absent) -> ``(X, Y, Z, G)``."""
    gtab = gradient_table(bvals, bvecs=dirs, b0_threshold=50)
    out = np.zeros(fibres.shape[:3] + (len(bvals),))
    for ijk in np.ndindex(fibres.shape[:3]):
        f = [v for v in fibres[ijk] if np.linalg.norm(v) > 0]
        out[ijk] = multi_tensor(gtab, np.array([EVALS] * len(f)), S0=s0, angles=[_angles(v) for v in f],
                                fractions=[100.0 / len(f)] * len(f), snr=snr, rng=rng)[0]
    return out


def _angle(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    c = np.abs(np.sum(a * b, -1)) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)
    return np.degrees(np.arccos(np.clip(c, 0, 1)))


def _unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _frame_phantom(rng):
    bvals, dirs = _acq(60, shells=(1000,))
    truth = _unit(rng.normal(size=(5, 5, 2, 3)))
    return bvals, dirs, truth, _simulate(truth[..., None, :], bvals, dirs, snr=50, rng=rng)


def _run(cmd, cwd):
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)


def _peaks(path):
    return nib.load(path).get_fdata()[..., :3]
