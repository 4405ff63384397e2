"""The Markdown report (results.md) of a benchmark run: command, machine, bars and one table per cell."""

from __future__ import annotations

from .._metrics import CROSSING_BINS, _fmt, format_comparison
from ._bars import BARS, format_bars
from ._suite import BAR_CELL, SUITES

__all__ = ["format_results", "format_tractography"]


def _scheme_text(scheme: str) -> str:
    from ...sim import SCHEMES

    n_b0, shells = SCHEMES[scheme]
    return " + ".join([f"b=0 x {n_b0}"] + [f"b={b:g} x {n}" for b, n in shells])


def _cell_heading(cell: dict) -> str:
    what = "spatial phantom" if cell["kind"] == "spatial" else "voxel-wise crossings"
    head = f"### {what}, {cell['scheme']} ({_scheme_text(cell['scheme'])}), SNR {cell['snr']:g}"
    return head + (" — bar case" if cell["name"] == BAR_CELL else "")


def format_results(results: dict) -> str:
    """The Markdown report (results.md) of a :func:`run_benchmark` result."""
    cfg, m = results["config"], results["machine"]
    est, wall = results["estimate_s"], results["wall_seconds"]
    args = [" --quick" if cfg["size"] == "quick" else "", f" --seed {cfg['seed']}",
            f" --device {cfg['device']}" if cfg["device"] != "auto" else "",
            f" --iterations {cfg['iterations']}" if cfg["iterations"] != SUITES[cfg["size"]]["iterations"] else "",
            f" --methods {','.join(cfg['methods'])}" if cfg["methods"] else "",
            f" --cells {','.join(cfg['cells'])}" if cfg["cells"] else "",
            f" --model {cfg['model']}" if cfg.get("model") else ""]
    script = "" if any(args[2:]) else " (or `python benchmarks/accuracy.py" + args[0] + "`)"
    lines = [
        "# Accuracy benchmark", "",
        (f"Command: `shdeconv benchmark -o OUTDIR{''.join(args)}`{script}. "
         f"Size `{cfg['size']}`, seed {cfg['seed']}, every network fitted per subject for "
         f"{cfg['iterations']} iterations (unsupervised loss, same budget for all)."), "",
        (f"Machine: {m['cpu']}, {m['cpu_count']} CPUs ({m['torch_threads']} torch threads), {m['platform']}; "
         f"device {m['device']}" + (f" ({m['gpu']})" if m.get("gpu") else "") +
         f"; Python {m['python']}, torch {m['torch']}, DIPY {m['dipy']}, shdeconv {m['shdeconv']}, "
         f"MRtrix3 {m['mrtrix3'] or 'not installed'}."), "",
        (f"Time: estimated {est['total'] / 60:.1f} min up front (2-core CPU model), this invocation "
         f"{wall / 60:.1f} min; the sum of the method times below is "
         f"{results['method_seconds'] / 60:.1f} min. Seconds per method: fitting only (plus MP-PCA "
         "where used), not scoring."), "",
        ("Scoring: peaks of every `fodf.nii.gz` extracted identically (`shdeconv evaluate`); success = right "
         "number of peaks, all within 25°; AE crossings = mean angular error of matched peaks in 2- and "
         "3-fibre voxels; coherence = main-peak mean |cos| between same-bundle neighbours. The phantoms' "
         "signal comes from a multi-tensor model, not from the fitting model."), "",
    ]
    bar = results["cells"].get(BAR_CELL)
    lines += ["## Bars (spatial phantom, clinical 30 directions, SNR 20)", ""]
    if bar is not None:
        points, ratio = BARS["csd"]
        lines += [(f"Target: SHD-TV's 2-fibre success at least {points:g} points above DIPY CSD and its mean "
                   f"angular error on crossing voxels at least {100 * (1 - ratio):.0f}% below CSD's; SHD-TV no "
                   "worse than MP-PCA + CSD on both."), "", format_bars(results["bars"])]
        if results.get("bars_predict"):
            lines += ["The same bars for the shipped amortized model (`shdeconv predict`, no per-subject "
                      "optimisation):", "", format_bars(results["bars_predict"], "predict")]
    else:
        lines += ["The bar case was not run.", ""]
    lines += ["## Cells", ""]
    for cell in results["cells"].values():
        lines += [_cell_heading(cell), ""]
        if cell["region"] is not None:
            r = cell["region"]
            lines += [(f"Scored on the central axial slice ({r['slices']}, {r['voxels']} voxels in the mask) for "
                       "every method: DIPY's MSMT-CSD fits one voxel at a time and is run on that slice only. "
                       "DIPY CSD uses the highest shell (b=3000)."), ""]
        rows = [(rec["label"], rec["seconds"], rec["scores"]) for rec in cell["methods"].values()]
        lines += [format_comparison(rows) if rows else "No method finished.\n"]
        cr = _crossing_table(cell)
        if cr:
            lines += [cr]
    if results.get("tractography"):
        lines += [format_tractography(results["tractography"])]
    lines += ["## Figures", ""]
    for f in results["figures"]:
        lines += [f"![{f}]({f})", ""]
    notes = list(results["notes"])
    notes += [f"{f['cell']}/{f['method']} failed: {f['error']}" for f in results["failures"]]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _crossing_table(cell: dict) -> str:
    """2-fibre success by crossing angle for every method of a cell (Markdown)."""
    recs = list(cell["methods"].values())
    if not recs:
        return ""
    bins = list(CROSSING_BINS)
    counts = [recs[0]["scores"]["crossing"][b]["n_voxels"] for b in bins]
    lines = ["| 2-fibre success by crossing angle | " + " | ".join(f"{b}° (n={n})" for b, n in zip(bins, counts)) + " |",
             "|---|" + "---:|" * len(bins)]
    for rec in recs:
        cr = rec["scores"]["crossing"]
        lines.append(f"| {rec['label']} | " + " | ".join(_fmt(cr[b]["success_rate"]) for b in bins) + " |")
    return "\n".join(lines) + "\n"


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def format_tractography(tr: dict) -> str:
    """The "Tractography (Tractometer-style)" section: one row per method, then valid streamlines per bundle."""
    st = tr["settings"]
    lines = ["## Tractography (Tractometer-style)", "",
             (f"Bar case (spatial phantom, clinical, SNR 20). Every method's fODF is tracked with `shdeconv track`'s "
              f"settings ({'deterministic' if st['algorithm'] == 'det' else 'probabilistic'}, step "
              f"{st['step_size']:g} mm, max angle {st['max_angle']:g}°, stopping where the method's own WM fraction "
              f"falls below {st['wm_threshold']:g}) from the same {tr['seed_voxels'] or 0} seeds: the centres of a "
              f"fixed random subset of the phantom's true white-matter voxels (at most {st['max_seed_voxels']}). "
              "A streamline is valid when its ends lie in the two end regions of one bundle and at least 90% of its "
              "points in that bundle's volume (both dilated by one voxel), invalid when its ends lie in end regions "
              "otherwise, and makes no connection when an end lies in none. Overlap: share of a bundle's volume "
              "visited by its valid streamlines; overreach: voxels they visit outside it, over its size; both "
              "averaged over the phantom's bundles (`shdeconv.evaluation._tractometry`)."), ""]
    methods = tr["methods"]
    if not methods:
        return "\n".join(lines + ["No method was tracked.", ""])
    lines += ["| method | valid % | invalid % | no connection % | mean overlap | mean overreach | streamlines |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for rec in methods.values():
        lines.append(f"| {rec['label']} | {_pct(rec['valid_fraction'])} | {_pct(rec['invalid_fraction'])} | "
                     f"{_pct(rec['no_connection_fraction'])} | {_fmt(rec['mean_overlap'])} | "
                     f"{_fmt(rec['mean_overreach'])} | {rec['n_streamlines']} |")
    names = list(next(iter(methods.values()))["bundles"])
    lines += ["", "| valid streamlines per bundle | " + " | ".join(names) + " |",
              "|---|" + "---:|" * len(names)]
    for rec in methods.values():
        lines.append(f"| {rec['label']} | " + " | ".join(str(rec["bundles"][b]["valid"]) for b in names) + " |")
    return "\n".join(lines) + "\n"
