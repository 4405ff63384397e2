"""Per-voxel b=0 averaging and signal normalisation (``S / mean(S_b0)``), in place where asked."""

from __future__ import annotations

import numpy as np

__all__ = ["b0_mean", "normalise_signal"]


def b0_mean(data: np.ndarray, b0_volumes: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean b=0 signal ``s0`` ``[X, Y, Z]`` and ``mask`` restricted to finite, positive ``s0``."""
    s0 = data[..., b0_volumes].mean(-1)
    return s0, mask & np.isfinite(s0) & (s0 > 0)


def normalise_signal(data: np.ndarray, b0_volumes: np.ndarray, mask: np.ndarray, *,
                     out: np.ndarray | None = None):
    """``S / mean(S_b0)`` per voxel, clipped to [0, 2]; voxels with no positive S0 leave the mask.

    Returns ``(signal [X, Y, Z, G] float32, s0 [X, Y, Z], mask)``. ``out`` (float32, the shape
    of ``data``; may be ``data`` itself) receives the signal instead of a new array.
    """
    s0, good = b0_mean(data, b0_volumes, mask)
    denom = np.where(good, s0, 1.0)[..., None]
    # one volume-sized array at most (an HCP-like volume is 1 GB): divide, then clip and zero in place
    signal = np.divide(data, denom, out=out, dtype=np.float32)
    np.clip(signal, 0.0, 2.0, out=signal)
    signal[~good] = 0.0
    return signal, s0.astype(np.float32), good
