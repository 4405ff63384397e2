"""The benchmark's figures: success by crossing angle, crossing error by SNR, fODF glyphs and tractography."""

from __future__ import annotations

from pathlib import Path

from .._metrics import _fmt, crossing_error
from ._suite import BAR_CELL, METHODS

__all__ = ["make_figures"]


def make_figures(results: dict, outdir: Path) -> list[str]:
    """Write the accuracy_*.png figures of a :func:`run_benchmark` result to ``outdir``; returns their names."""
    from ...viz._benchmark_figures import (
        plot_error_vs_snr,
        plot_glyph_panel,
        plot_success_vs_angle,
        plot_tractometry,
    )

    # colours: tab20's dark/light pairs, a method next to its denoised twin
    order = ["csd", "csd+mppca", "msmt", "msmt+mppca", "mrtrix-csd", "mrtrix-csd+dwidenoise", "direct", "fit", "shd-tv",
             "shd-tv+mppca", "predict", "predict+finetune", "esd", "rtesd", "shd"]
    style = {"labels": {n: s.label for n, s in METHODS.items()}, "order": order,
             "emphasis": ("fit", "predict")}
    labels = style["labels"]
    cells = results["cells"].values()
    names = []
    # success vs crossing angle at SNR 20, one panel per scheme (and the voxel-wise phantom)
    panels = {}
    for c in cells:
        if c["snr"] == 20.0 and c["methods"]:
            title = f"{c['scheme']}" if c["kind"] == "spatial" else f"voxel-wise, {c['scheme']}"
            panels[title] = {m: rec["scores"]["crossing"] for m, rec in c["methods"].items()}
    plot_success_vs_angle(panels, outdir / "accuracy_success_vs_angle.png", **style)
    names.append("accuracy_success_vs_angle.png")
    # crossing angular error vs SNR, one panel per scheme (spatial phantom)
    panels = {}
    for c in cells:
        if c["kind"] != "spatial":
            continue
        p = panels.setdefault(c["scheme"], {})
        for m, rec in c["methods"].items():
            p.setdefault(m, {})[c["snr"]] = crossing_error(rec["scores"])
    plot_error_vs_snr(panels, outdir / "accuracy_error_vs_snr.png", **style)
    names.append("accuracy_error_vs_snr.png")
    # glyphs of one crossing region in the bar case
    bar = results["cells"].get(BAR_CELL)
    if bar is not None:
        fodfs = {f"{labels[m]} (2-fibre success {_fmt(bar['methods'][m]['scores']['groups']['2']['success_rate'])})":
                 outdir / BAR_CELL / m / "fodf.nii.gz"
                 for m in ("csd", "csd+mppca", "direct", "fit", "shd-tv", "predict") if m in bar["methods"]}
        if fodfs:
            crop = 12 if results["config"]["size"] == "default" else 8
            plot_glyph_panel(outdir / BAR_CELL / "phantom", fodfs, outdir / "accuracy_glyphs.png", crop=crop,
                             title="bar case (clinical, SNR 20): fODF glyphs on the crop with the most crossings")
            names.append("accuracy_glyphs.png")
    # streamline classes of the bar case's tractography
    tr = results.get("tractography")
    if tr and tr["methods"]:
        fractions = {m: {k: rec[f"{k}_fraction"] for k in ("valid", "invalid", "no_connection")}
                     for m, rec in tr["methods"].items()}
        plot_tractometry(fractions, outdir / "accuracy_tractography.png", labels=labels, order=order,
                         title=f"bar case tractography: {tr['seed_voxels']} seeds in the true white matter")
        names.append("accuracy_tractography.png")
    return names
