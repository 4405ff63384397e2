"""Running the suite: every cell's methods, each scored once (resume), then the bars, report and figures."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..._options import OptionError
from ...io import InputError
from .._metrics import evaluate_dirs
from ._bars import bar_checks
from ._cell import cell_region, mppca_signal, simulate_cell
from ._cost import estimate_seconds
from ._figures import make_figures
from ._machine import machine_info
from ._report import format_results
from ._suite import BAR_CELL, METHODS, BenchmarkConfig, Cell, plan_cells
from ._tractography import TRACTOMETRY_FILE, track_cell

__all__ = ["run_benchmark"]

logger = logging.getLogger(__name__)


def _label(name: str, cell: Cell) -> str:
    spec = METHODS[name]
    if name == "csd" and cell.multishell:
        return "DIPY CSD (highest shell)"
    if name == "csd+mppca" and cell.multishell:
        return "MP-PCA + DIPY CSD (highest shell)"
    if spec.engine == "mrtrix":
        algo = "msmt_csd (dhollander)" if cell.multishell else "csd (tournier)"
        return f"{spec.label} {algo}"
    if spec.engine == "dipy" and spec.variant == "msmt":
        return f"{spec.label} (central slice)"
    return spec.label


def _auto_denoise(phantom_dir: Path) -> tuple[str, dict]:
    """What ``--denoise auto`` chooses for the phantom (as ``load_subject`` does: its check of the
    raw signal within the mask, then :func:`~shdeconv.fitting.choose_denoise`)."""
    from ...direction import check_gradients
    from ...fitting import choose_denoise
    from ...io import load_dwi

    dwi = load_dwi(phantom_dir / "dwi.nii.gz", phantom_dir / "bvals", phantom_dir / "bvecs",
                   phantom_dir / "mask.nii.gz")
    return choose_denoise(check_gradients(dwi.data, dwi.bvals, dwi.bvecs, dwi.affine, dwi.mask))


def _run_method(name: str, cell: Cell, cell_dir: Path, phantom_dir: Path,
                region: tuple[np.ndarray, dict] | None, config: BenchmarkConfig) -> dict:
    """Run one method on one cell; returns its record (also written to ``scores.json``).

    ``region``: the scored region and its description (:func:`cell_region`), or None.
    """
    import torch

    from ...baselines import dhollander_erode, run_mrtrix_csd
    from ...fitting import DirectConfig, FitConfig, run_csd, run_fit, run_predict
    from ...io import atomic_write_text

    spec = METHODS[name]
    out = cell_dir / name
    inputs = (phantom_dir / "bvals", phantom_dir / "bvecs")
    dwi = phantom_dir / "dwi.nii.gz"
    mask = phantom_dir / "mask.nii.gz"
    denoise_s = 0.0
    record = {"method": name, "label": _label(name, cell), "cell": cell.name}
    job_denoise = spec.job_denoise
    if job_denoise == "auto":
        job_denoise, record["denoise_choice"] = _auto_denoise(phantom_dir)
    if spec.job_denoise != "none":
        record["denoise"] = job_denoise
    if (spec.denoise and spec.engine != "mrtrix") or job_denoise == "mppca":
        # the cell's MP-PCA signal, shared: the same as the job's own on these phantoms, whose
        # mask fills the volume (the job would denoise the mask's bounding box)
        denoise_s = mppca_signal(phantom_dir, cell_dir / "mppca")
        dwi = cell_dir / "mppca" / "dwi.nii.gz"
        job_denoise = "none"
    (out / TRACTOMETRY_FILE).unlink(missing_ok=True)  # tracked from the fODF this run replaces
    t = time.perf_counter()
    if spec.engine == "net":
        budget = ({"direct_config": DirectConfig(iterations=config.fit_iterations, init=spec.init)}
                  if spec.variant == "direct"
                  else {"fit_config": FitConfig(iterations=config.fit_iterations, seed=config.seed)})
        report = run_fit(dwi, *inputs, out, mask=mask, variant=spec.variant, device=config.device, **budget,
                         progress=config.progress, resume=(out / "checkpoint.pt").exists(),
                         denoise=job_denoise, force=True)
        record.update(iterations=config.fit_iterations, device=report.get("device"),
                      resumed_from=report.get("resumed_from"))
    elif spec.engine == "pretrained":
        finetune = int(spec.variant or 0)
        report = run_predict(dwi, *inputs, out, mask=mask, device=config.device, progress=config.progress,
                             finetune=finetune, seed=config.seed, model=config.model, force=True)
        record.update(device=report.get("device"), model=report.get("model"))
        if config.model is not None:
            record["label"] = record["label"].replace("shipped model", f"model {Path(config.model).name}")
    elif spec.engine == "dipy":
        if spec.variant == "msmt" and region is not None:
            mask = Path(region[1]["mask"])
        run_csd(dwi, *inputs, out, mask=mask, algorithm=spec.variant, force=True)
    else:
        import nibabel as nib

        erode = dhollander_erode(nib.load(str(mask)).shape)
        if cell.multishell and erode != 3:
            record["label"] += f" -erode {erode}"
        run_mrtrix_csd(phantom_dir, out, multishell=cell.multishell, denoise=spec.denoise,
                       nthreads=torch.get_num_threads(), erode=erode)
    seconds = time.perf_counter() - t + denoise_s
    scores = evaluate_dirs(out, phantom_dir, region=None if region is None else region[0])
    record.update(seconds=seconds, denoise_seconds=denoise_s, scores=scores)
    atomic_write_text(out / "scores.json", json.dumps(record, indent=2, default=float) + "\n")
    return record


def _check_config_file(outdir: Path, stamp: dict) -> None:
    from ...io import atomic_write_text

    path = outdir / "config.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != stamp:
            raise InputError(outdir, f"holds a benchmark made with {old}, not {stamp}; use another output "
                                     "directory or the same settings to resume it")
    else:
        atomic_write_text(path, json.dumps(stamp, indent=2) + "\n")


def run_benchmark(outdir, *, size: str = "default", seed: int = 0, device: str = "auto",
                  iterations: int | None = None, methods=None, cells=None, progress: bool = True,
                  model=None) -> dict:
    """Run the accuracy suite (resumable) and write results.md, results.json and the figures.

    Parameters
    ----------
    outdir : path-like
        Output directory; a directory holding an earlier run with the same settings is resumed.
    size : {"default", "quick"}
        See :class:`BenchmarkConfig`.
    seed : int
        Seed of the phantoms and the fits.
    device : str
        Device of the network fits (``auto``, ``cpu``, ``cuda``).
    iterations : int, optional
        Iterations of every network fit (default: the size's, :data:`SUITES`).
    methods : iterable of str or comma-separated str, optional
        Only these methods (:data:`METHODS`).
    cells : iterable of str or comma-separated str, optional
        Only these cells (e.g. ``spatial-clinical-snr20``).
    progress : bool
        Progress bars.
    model : path-like, optional
        Model file for the ``predict`` methods (default: the shipped model). An output
        directory is tied to its model: resuming with another one is refused.

    Returns
    -------
    dict
        What results.json holds: ``config``, ``machine``, ``estimate_s``, ``cells`` (name ->
        kind, scheme, snr, region, methods -> {label, seconds, scores, ...}), ``bars``,
        ``tractography`` (the bar case's methods tracked from the same seeds and scored against
        the phantom's bundles; see :mod:`._tractography`), ``figures``, ``notes``,
        ``failures``, ``wall_seconds`` and ``method_seconds``.

    Raises
    ------
    ValueError
        Unknown size, method or cell names, a bad device or iteration count, or an ``outdir``
        made with other settings.
    """
    from tqdm.auto import tqdm

    from ...io import atomic_write_text, check_output_dir
    from ...sim import GENERATOR_VERSION

    config = BenchmarkConfig(size=size, seed=seed, device=device, iterations=iterations, methods=methods,
                             cells=cells, progress=progress, model=None if model is None else str(model))
    t_start = time.perf_counter()
    outdir = check_output_dir(outdir)
    stamp = {"size": config.size, "seed": int(config.seed), "iterations": config.fit_iterations,
             "phantom_generator": GENERATOR_VERSION}
    if config.model is not None:  # the shipped model's runs keep their old stamp (resumable)
        stamp["model"] = config.model
    _check_config_file(outdir, stamp)
    machine = machine_info(config.device)
    have_mrtrix = machine["mrtrix3"] is not None
    notes = []
    if not have_mrtrix:
        wanted = [m for m in (config.methods or METHODS) if METHODS[m].engine == "mrtrix"]
        if wanted:
            notes.append(f"MRtrix3 (dwi2response, dwi2fod, dwidenoise) is not installed: {', '.join(wanted)} skipped.")
            logger.warning(notes[-1])
    plan = plan_cells(config, mrtrix=have_mrtrix)
    if not plan:
        raise OptionError(f"no cell has any of the methods {list(config.methods or [])}")
    estimate = estimate_seconds(config, mrtrix=have_mrtrix)
    logger.info("benchmark: %d cells, %d method runs, networks at %d iterations; estimated %.1f min on a 2-core "
                "CPU (networks %.1f min)", len(plan), sum(len(c.methods) for c in plan), config.fit_iterations,
                estimate["total"] / 60, estimate["networks"] / 60)
    if config.size == "default" and estimate["total"] > 3600:
        logger.warning("the estimated time (%.0f min) is over the suite's 60-minute budget on 2 CPU cores",
                       estimate["total"] / 60)

    results = {"config": {**asdict(config), "iterations": config.fit_iterations}, "machine": machine,
               "estimate_s": estimate, "cells": {}, "tractography": None, "notes": notes,
               "failures": []}
    bar = tqdm(total=sum(len(c.methods) for c in plan), desc="benchmark", disable=not progress, dynamic_ncols=True)
    for cell in plan:
        cell_dir = outdir / cell.name
        cell_dir.mkdir(parents=True, exist_ok=True)
        bar.set_postfix_str(f"{cell.name}: phantom")
        phantom_dir = simulate_cell(cell, cell_dir / "phantom", config)
        region = cell_region(cell, phantom_dir, config)
        entry = {"name": cell.name, "kind": cell.kind, "scheme": cell.scheme, "snr": cell.snr,
                 "region": None if region is None else region[1], "methods": {}}
        for name in cell.methods:
            bar.set_postfix_str(f"{cell.name}/{name}")
            done = cell_dir / name / "scores.json"
            if done.exists():
                entry["methods"][name] = json.loads(done.read_text())
                logger.info("%s/%s: done before, not run again", cell.name, name)
            else:
                try:
                    entry["methods"][name] = _run_method(name, cell, cell_dir, phantom_dir, region, config)
                except Exception as e:  # one failing arm must not lose the rest of a long suite
                    logger.exception("%s/%s failed", cell.name, name)
                    results["failures"].append({"cell": cell.name, "method": name, "error": f"{type(e).__name__}: {e}"})
            bar.update(1)
        results["cells"][cell.name] = entry
        if cell.name == BAR_CELL and entry["methods"]:
            bar.set_postfix_str(f"{cell.name}: tractography")
            results["tractography"] = track_cell(cell, cell_dir, phantom_dir, entry["methods"], config,
                                                 results["failures"])
    bar.close()

    bar_case = results["cells"].get(BAR_CELL, {}).get("methods", {})
    results["bars"] = bar_checks({m: rec["scores"] for m, rec in bar_case.items()})
    if "predict" in bar_case:
        results["bars_predict"] = bar_checks({m: rec["scores"] for m, rec in bar_case.items()}, method="predict")
    results["method_seconds"] = float(sum(rec["seconds"] for c in results["cells"].values()
                                          for rec in c["methods"].values()))
    results["figures"] = make_figures(results, outdir)
    results["wall_seconds"] = time.perf_counter() - t_start
    atomic_write_text(outdir / "results.json", json.dumps(results, indent=2, default=float) + "\n")
    atomic_write_text(outdir / "results.md", format_results(results))
    logger.info("benchmark written to %s in %.1f min", outdir, results["wall_seconds"] / 60)
    return results
