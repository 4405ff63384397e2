"""Quality-control figure: fODF glyphs on a slice over a tissue map, and the loss curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..io import atomic_path
from ..sphere import rotate_sh, sh_matrix

__all__ = ["glyph_outlines", "save_qc_figure"]


def glyph_outlines(sh: np.ndarray, axis: int = 2, n: int = 72) -> tuple[np.ndarray, np.ndarray]:
    """In-plane polar outlines of fODFs for a slice.

    ``sh`` ``[A, B, S]`` (a slice, frame aligned with the voxel axes); ``axis`` is the slice
    normal. Returns ``(xy [A, B, n, 2], colour [A, B, 3])``: the fODF amplitude along ``n``
    in-plane directions (clipped at 0, scaled so the slice's 95th-percentile lobe spans 0.45 voxel)
    and an RGB direction colour of the main in-plane lobe.
    """
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    plane = [i for i in range(3) if i != axis]
    dirs = np.zeros((n, 3))
    dirs[:, plane[0]], dirs[:, plane[1]] = np.cos(t), np.sin(t)
    lmax = int(round((np.sqrt(8 * sh.shape[-1] + 1) - 3) / 2))
    amp = np.clip(sh @ sh_matrix(dirs, lmax).T, 0, None)  # [A, B, n]
    peak = amp.max(-1)
    typical = float(np.percentile(peak[peak > 0], 95)) if np.any(peak > 0) else 1.0
    r = np.minimum(amp * (0.45 / max(typical, 1e-12)), 0.6)
    xy = np.stack([r * np.cos(t), r * np.sin(t)], -1)
    main = dirs[np.argmax(amp, -1)]
    colour = np.abs(main)
    colour[amp.max(-1) <= 0] = 0.5
    return xy, colour


def save_qc_figure(path, fodf: np.ndarray, background: np.ndarray, history: list[dict], *,
                   title: str = "shdeconv", slice_index: int | None = None, max_glyphs: int = 40,
                   background_label: str = "WM fraction", rotation: np.ndarray | None = None) -> Path:
    """Write a PNG with glyphs on the middle axial slice over ``background`` and the loss curve.

    ``fodf`` ``[X, Y, Z, S]`` in the voxel-axes frame, or in another frame with ``rotation``
    the 3x3 matrix that :func:`~shdeconv.sphere.rotate_sh` takes from that frame to the voxel
    axes (only the drawn glyphs are rotated: e.g. ``voxel_axes_rotation(affine).T`` for a
    world-frame file); ``background`` ``[X, Y, Z]``; ``history`` entries have ``iteration``
    and ``loss`` (and optional loss parts). Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    path = Path(path)
    z = fodf.shape[2] // 2 if slice_index is None else slice_index
    step = max(1, int(np.ceil(max(fodf.shape[0], fodf.shape[1]) / max_glyphs)))
    sl = fodf[::step, ::step, z]
    if rotation is not None:
        sl = rotate_sh(sl, rotation)
    xy, colour = glyph_outlines(sl)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5), gridspec_kw={"width_ratios": [1.2, 1]})
    ax = axes[0]
    bg = background[:, :, z].T
    im = ax.imshow(bg, origin="lower", cmap="gray", extent=(-0.5, bg.shape[1] - 0.5, -0.5, bg.shape[0] - 0.5))
    fig.colorbar(im, ax=ax, fraction=0.04, label=background_label)
    centres = np.stack(np.meshgrid(np.arange(sl.shape[0]) * step, np.arange(sl.shape[1]) * step, indexing="ij"), -1)
    keep = np.abs(sl).sum(-1) > 0
    polys = (centres[..., None, :] + xy * step)[keep]
    ax.add_collection(PolyCollection(polys, facecolors=colour[keep], edgecolors="none", alpha=0.9))
    ax.set_title(f"{title}: fODF glyphs, axial slice z={z}")
    ax.set_xlabel("x (voxels)")
    ax.set_ylabel("y (voxels)")
    ax2 = axes[1]
    if history:
        it = [h["iteration"] for h in history]
        ax2.plot(it, [h["loss"] for h in history], label="total", color="k")
        for key in sorted(set().union(*history) - {"iteration", "loss"}):
            vals = [h.get(key, np.nan) for h in history]
            ax2.plot(it, vals, label=key, alpha=0.7)
        ax2.set_yscale("log")
        ax2.legend()
    else:
        ax2.text(0.5, 0.5, "no optimisation (prediction only)", ha="center", va="center")
    ax2.set_xlabel("iteration")
    ax2.set_title("loss")
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=90)
    finally:
        plt.close(fig)
    return path
