"""Figures of the accuracy benchmark: success by crossing angle, crossing error vs SNR, fODF glyphs,
tractography classes.

All functions take plain data (method name -> numbers) and write a PNG atomically with
matplotlib's Agg backend. Colours follow ``order`` (a list of method names), so one method
has the same colour in every figure.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io import atomic_path
from ._qc import glyph_outlines

__all__ = ["plot_error_vs_snr", "plot_glyph_panel", "plot_success_vs_angle", "plot_tractometry"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        _pyplot().close(fig)
    return path


def _style(name: str, order: list[str], emphasis: tuple[str, ...] = ()) -> dict:
    cmap = _pyplot().get_cmap("tab20" if len(order) > 10 else "tab10")
    k = order.index(name) if name in order else len(order)
    strong = name in emphasis
    return {"color": cmap(k % cmap.N), "marker": "osD^v<>ph*"[k % 10], "linewidth": 2.6 if strong else 1.4,
            "zorder": 3 if strong else 2}


def _value(x) -> float:
    return np.nan if x is None else float(x)


def _rank(labels: dict[str, str]):
    """Sort key of method names: the order of ``labels``, unknown names last."""
    names = list(labels)
    return lambda m: names.index(m) if m in names else len(names)


def _legend(fig, handles: dict, labels: dict[str, str]) -> None:
    if handles:
        names = sorted(handles, key=_rank(labels))
        fig.legend([handles[n] for n in names], [labels.get(n, n) for n in names], loc="center right", fontsize=8)


def _empty(ax, text="no data"):
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)


def plot_success_vs_angle(panels: dict[str, dict[str, dict]], path, *, labels: dict[str, str] | None = None,
                          order: list[str] | None = None, emphasis: tuple[str, ...] = ()) -> Path:
    """2-fibre success rate by crossing angle, one panel per scheme, one line per method.

    Parameters
    ----------
    panels : dict
        Panel title -> method name -> the ``"crossing"`` part of a score dict (bin label ->
        ``{"n_voxels", "success_rate", ...}``).
    path : path-like
        PNG to write.
    labels : dict, optional
        Method name -> legend label.
    order : list of str, optional
        Method names in colour order.
    emphasis : tuple of str
        Methods drawn with thicker lines.

    Returns
    -------
    Path
    """
    labels = labels or {}

    def draw(ax, methods, style):
        bins = list(next(iter(methods.values())))
        x = np.arange(len(bins))
        handles = {}
        for name in sorted(methods, key=_rank(labels)):
            y = [_value(methods[name][b]["success_rate"]) for b in bins]
            (handles[name],) = ax.plot(x, y, label=labels.get(name, name), **style(name))
        counts = [next(iter(methods.values()))[b]["n_voxels"] for b in bins]
        ax.set_xticks(x)
        ax.set_xticklabels([f"{b}°\nn={c}" for b, c in zip(bins, counts)], fontsize=8)
        ax.set_xlabel("crossing angle")
        ax.set_ylim(-0.02, 1.02)
        return handles

    return _panel_figure(panels, draw, path, "2-fibre success rate (SNR 20)", labels, order, emphasis)


def plot_error_vs_snr(panels: dict[str, dict[str, dict[float, float | None]]], path, *,
                      labels: dict[str, str] | None = None, order: list[str] | None = None,
                      emphasis: tuple[str, ...] = ()) -> Path:
    """Mean angular error on crossing voxels against SNR, one panel per scheme.

    Parameters
    ----------
    panels : dict
        Panel title -> method name -> SNR -> mean angular error (degrees) or None.
    path : path-like
        PNG to write.
    labels, order, emphasis
        As in :func:`plot_success_vs_angle`.

    Returns
    -------
    Path
    """
    labels = labels or {}

    def draw(ax, methods, style):
        handles = {}
        for name in sorted(methods, key=_rank(labels)):
            pts = sorted(methods[name].items())
            (handles[name],) = ax.plot([p[0] for p in pts], [_value(p[1]) for p in pts],
                                       label=labels.get(name, name), **style(name))
        ax.set_xticks(sorted({s for v in methods.values() for s in v}))
        ax.set_xlabel("SNR")
        return handles

    return _panel_figure(panels, draw, path, "mean angular error, 2-3-fibre voxels (°)", labels, order, emphasis)


def _panel_figure(panels: dict, draw, path, ylabel: str, labels: dict[str, str], order: list[str] | None,
                  emphasis: tuple[str, ...]) -> Path:
    """One row of panels sharing y, one legend on the right; ``draw(ax, methods, style)`` fills a
    non-empty panel and returns its ``{method: line handle}``."""
    plt = _pyplot()
    order = order or sorted({m for p in panels.values() for m in p})
    n = max(len(panels), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n + 2.5, 4.2), squeeze=False, sharey=True)
    handles = {}
    for ax, (title, methods) in zip(axes[0], panels.items()):
        if not methods:
            _empty(ax)
            continue
        for name, h in draw(ax, methods, lambda m: _style(m, order, emphasis)).items():
            handles.setdefault(name, h)
        ax.set_title(title)
        ax.grid(alpha=0.3)
    if not panels:
        _empty(axes[0, 0])
    axes[0, 0].set_ylabel(ylabel)
    _legend(fig, handles, labels)
    fig.tight_layout(rect=(0, 0, 1 - 2.4 / (4.2 * n + 2.5), 1))
    return _save(fig, path)


def _crossing_crop(n_fibres: np.ndarray, mask: np.ndarray, crop: int) -> tuple[int, int, int, int]:
    """``(z, x0, y0, c)``: the axial ``c x c`` window with the most 2-3-fibre voxels."""
    c = int(min(crop, n_fibres.shape[0], n_fibres.shape[1]))
    cross = ((n_fibres >= 2) & mask).astype(np.int64)
    s = np.zeros((cross.shape[0] + 1, cross.shape[1] + 1, cross.shape[2]), dtype=np.int64)
    s[1:, 1:] = cross.cumsum(0).cumsum(1)
    win = s[c:, c:] - s[:-c, c:] - s[c:, :-c] + s[:-c, :-c]  # window sums, (X-c+1, Y-c+1, Z)
    x0, y0, z = np.unravel_index(int(np.argmax(win)), win.shape)
    return int(z), int(x0), int(y0), c


def _draw_glyphs(ax, sh: np.ndarray, background: np.ndarray, title: str) -> None:
    from matplotlib.collections import PolyCollection

    a, b = sh.shape[:2]
    ax.imshow(background.T, origin="lower", cmap="gray", vmin=0.0, vmax=1.0,
              extent=(-0.5, a - 0.5, -0.5, b - 0.5))
    keep = np.abs(sh).sum(-1) > 0
    if keep.any():
        xy, colour = glyph_outlines(sh, axis=2)
        centres = np.stack(np.meshgrid(np.arange(a), np.arange(b), indexing="ij"), -1)
        polys = (centres[..., None, :] + xy)[keep]
        ax.add_collection(PolyCollection(polys, facecolors=colour[keep], edgecolors="none", alpha=0.9))
    ax.set_xlim(-0.5, a - 0.5)
    ax.set_ylim(-0.5, b - 0.5)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def plot_glyph_panel(phantom_dir, fodfs: dict[str, str | os.PathLike], path, *, crop: int = 12,
                     title: str | None = None) -> Path:
    """fODF glyphs of the same crossing region for several methods, next to the truth.

    The region is the axial ``crop x crop`` window of the phantom with the most 2-3-fibre
    voxels. Glyphs are drawn in the voxel-axes frame over the true WM fraction; the truth panel
    shows the phantom's fibres as apodised deltas weighted by their fractions
    (:func:`~shdeconv.sim.truth_fodf_sh`).

    Parameters
    ----------
    phantom_dir : path-like
        Phantom written by :func:`~shdeconv.sim.simulate_to_dir`.
    fodfs : dict
        Panel title -> ``fodf.nii.gz`` (MRtrix3 basis, world frame, the phantom's grid).
    path : path-like
        PNG to write.
    crop : int
        Side of the window in voxels.
    title : str, optional
        Figure title.

    Returns
    -------
    Path
    """
    import nibabel as nib

    from ..io import voxel_axes_rotation
    from ..sim import load_truth, truth_fodf_sh
    from ..sphere import rotate_sh

    plt = _pyplot()
    truth = load_truth(phantom_dir)
    rot = voxel_axes_rotation(truth.affine)
    z, x0, y0, c = _crossing_crop(truth.n_fibres, truth.mask, crop)
    win = (slice(x0, x0 + c), slice(y0, y0 + c), z)
    background = truth.wm[win]
    panels = [(f"truth (z={z}, x {x0}-{x0 + c - 1}, y {y0}-{y0 + c - 1})",
               truth_fodf_sh(truth.peak_dirs[win], truth.peak_fractions[win], rotation=rot))]
    for name, f in fodfs.items():
        sh = np.asarray(nib.load(str(f)).dataobj, dtype=np.float64)[win]
        panels.append((name, rotate_sh(sh, rot.T)))
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.8 * n, 4.2), squeeze=False)
    for ax, (name, sh) in zip(axes[0], panels):
        _draw_glyphs(ax, sh, background, name)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_tractometry(fractions: dict[str, dict[str, float | None]], path, *, labels: dict[str, str] | None = None,
                     order: list[str] | None = None, title: str | None = None) -> Path:
    """Valid / invalid / no-connection share of every method's streamlines, one stacked bar each.

    Parameters
    ----------
    fractions : dict
        Method name -> ``{"valid", "invalid", "no_connection"}`` fractions of its streamlines
        (None when it has none).
    path : path-like
        PNG to write.
    labels : dict, optional
        Method name -> label.
    order : list of str, optional
        Method names in display order (unknown names last).
    title : str, optional

    Returns
    -------
    Path
    """
    plt = _pyplot()
    labels = labels or {}
    names = sorted(fractions, key=_rank({m: m for m in (order or [])}))
    parts = (("valid", "valid", "#2ca02c"), ("invalid", "invalid", "#d62728"),
             ("no_connection", "no connection", "#bbbbbb"))
    fig, ax = plt.subplots(figsize=(8.5, 0.45 * max(len(names), 1) + 1.6))
    y = np.arange(len(names))[::-1]
    left = np.zeros(len(names))
    for key, text, colour in parts:
        w = np.array([_value(fractions[m].get(key)) for m in names], dtype=float)
        w = np.nan_to_num(w) * 100
        ax.barh(y, w, left=left, color=colour, label=text, height=0.7)
        for yi, li, wi in zip(y, left, w):
            if wi >= 6:
                ax.text(li + wi / 2, yi, f"{wi:.0f}", ha="center", va="center", fontsize=8)
        left += w
    ax.set_yticks(y)
    ax.set_yticklabels([labels.get(m, m) for m in names], fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of streamlines")
    if not names:
        _empty(ax)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
