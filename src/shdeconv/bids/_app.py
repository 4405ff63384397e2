"""Run fit, predict or csd on every diffusion series of a BIDS dataset; store a BIDS-Derivatives dataset.

Each series is computed in its own working folder, ``OUTPUT_DIR/shdeconv/.work/<dwi stem>/``,
by the library job (:func:`~shdeconv.fitting.run_predict`, :func:`~shdeconv.fitting.run_fit`
or :func:`~shdeconv.fitting.run_csd`); its files are then moved (:func:`os.replace`, atomic per
file) to ``OUTPUT_DIR/shdeconv/sub-X[/ses-Y]/dwi/`` under the BEP016 (diffusion derivatives)
names of :func:`output_names`, the report last, and the working folder is removed. A series
whose WM fODF and report are already there is skipped unless ``force``. A failing series (a bad
file, or a bug) is reported and leaves no outputs; the others still run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from os import PathLike
from pathlib import Path

from .._options import DENOISERS, FIT_DENOISE, OptionError, check_device, check_precision
from ..io import InputError, atomic_write_text, check_output_dir
from ._layout import DwiSeries, find_dwi

__all__ = ["METHODS", "PIPELINE", "output_names", "run_bids"]

log = logging.getLogger(__name__)

#: The jobs ``--method`` chooses from.
METHODS = ("predict", "fit", "csd")
#: Name of the derivative dataset, a folder of the output directory.
PIPELINE = "shdeconv"

#: BEP016 name (after ``<entities>_model-<method>_``) of each file a job writes.
_NAMES = {
    "fodf.nii.gz": "param-fod_label-WM_dwimap.nii.gz",
    "gm.nii.gz": "param-fod_label-GM_dwimap.nii.gz",
    "csf.nii.gz": "param-fod_label-CSF_dwimap.nii.gz",
    "peaks.nii.gz": "param-peaks_dwimap.nii.gz",
    "response_wm.txt": "param-response_label-WM_dwimap.txt",
    "response_gm.txt": "param-response_label-GM_dwimap.txt",
    "response_csf.txt": "param-response_label-CSF_dwimap.txt",
    "qc.png": "desc-qc_dwimap.png",
    "report.json": "desc-report_dwimap.json",
}


def output_names(prefix: str, method: str) -> dict[str, str]:
    """The BIDS name of every file a job may write, keyed by its name in the working folder.

    ``prefix``: the series' kept entities (``sub-01_ses-1``); ``method``: ``predict``, ``fit``
    or ``csd``. The JSON sidecar of a NIfTI (``fodf.json``) takes the NIfTI's name with
    ``.json`` (``..._label-WM_dwimap.json``).
    """
    names = {}
    for work, tail in _NAMES.items():
        names[work] = f"{prefix}_model-{method}_{tail}"
        if work.endswith(".nii.gz"):
            names[work[: -len(".nii.gz")] + ".json"] = f"{prefix}_model-{method}_{tail[: -len('.nii.gz')]}.json"
    return names


def _finished(folder: Path, names: dict[str, str]) -> bool:
    return (folder / names["fodf.nii.gz"]).is_file() and (folder / names["report.json"]).is_file()


def _remove(folder: Path, names) -> None:
    for name in names:
        try:
            (folder / name).unlink()
        except FileNotFoundError:
            pass


def _dataset_description(root: Path, bids_dir: Path) -> None:
    from .. import __version__

    path = root / "dataset_description.json"
    if path.exists():
        return
    desc = {
        "Name": "shdeconv: fODFs, tissue maps and peaks",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "shdeconv", "Version": __version__}],
        "SourceDatasets": [{"URL": bids_dir.resolve().as_uri()}],
    }
    atomic_write_text(path, json.dumps(desc, indent=2) + "\n")


def _run_job(series: DwiSeries, work: Path, method: str, *, model, device: str, progress: bool,
             n_jobs: int, denoise: str, precision: str) -> dict:
    from ..fitting import run_csd, run_fit, run_predict

    if series.bval is None or series.bvec is None:
        missing = " and ".join(e for e, p in ((".bval", series.bval), (".bvec", series.bvec)) if p is None)
        raise InputError(series.dwi, f"no {missing} file found for it")
    inputs = (series.dwi, series.bval, series.bvec, work)
    if method == "predict":
        return run_predict(*inputs, mask=series.mask, model=model, device=device, progress=progress,
                           denoise=denoise, precision=precision, force=True)
    if method == "fit":
        return run_fit(*inputs, mask=series.mask, device=device, progress=progress, denoise=denoise, force=True)
    return run_csd(*inputs, mask=series.mask, n_jobs=n_jobs, denoise=denoise, force=True)


def _store(work: Path, folder: Path, names: dict[str, str], report: dict) -> dict[str, str]:
    """Move a finished job's files from ``work`` to their BIDS names in ``folder``; the report,
    rewritten to list those names, goes last. Returns ``{key: BIDS name}``."""
    files = dict(report["outputs"])
    for key, name in list(files.items()):  # sidecars a job writes without listing them
        sidecar = name[: -len(".nii.gz")] + ".json" if name.endswith(".nii.gz") else None
        if sidecar and sidecar not in files.values() and (work / sidecar).is_file():
            files[f"{key}_json"] = sidecar
    unknown = sorted(n for n in files.values() if n not in names)
    if unknown:
        log.warning("%s: no BIDS name for %s; not kept", work, ", ".join(unknown))
    moves = {key: (name, names[name]) for key, name in files.items() if name in names}
    stored = {key: target for key, (_, target) in moves.items()}
    on_disk = json.loads((work / "report.json").read_text(encoding="utf-8"))
    on_disk["outputs"] = stored
    atomic_write_text(work / "report.json", json.dumps(on_disk, indent=2) + "\n")
    folder.mkdir(parents=True, exist_ok=True)
    _remove(folder, set(names.values()) - set(stored.values()))  # an earlier run's files this one lacks
    for name, target in moves.values():
        os.replace(work / name, folder / target)
    os.replace(work / "report.json", folder / names["report.json"])
    return {**stored, "report": names["report.json"]}


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        print(text, flush=True)


def run_bids(bids_dir: str | PathLike, output_dir: str | PathLike, *, participant_label=None, session_label=None,
             method: str = "predict", model=None, device: str = "auto", force: bool = False, progress: bool = True,
             quiet: bool = False, n_jobs: int = 1, denoise: str | None = None, precision: str = "float32") -> dict:
    """Run ``method`` on every diffusion series of a BIDS dataset (the participant level of a BIDS App).

    Parameters
    ----------
    bids_dir : path-like
        A BIDS dataset: raw, or a derivative one such as QSIPrep's (see :func:`find_dwi`).
    output_dir : path-like
        Where the derivative dataset ``shdeconv/`` is written (created if needed).
    participant_label, session_label : str or list of str, optional
        Only these participants / sessions (with or without ``sub-`` / ``ses-``); default: all.
    method : {"predict", "fit", "csd"}
        The job run on each series, with its defaults.
    model : path-like, optional
        Model file of ``predict`` (default: the shipped one), read once for all series.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (``predict`` and ``fit``).
    force : bool
        Redo series whose outputs exist (default: skip them).
    progress : bool
        Progress bars of the jobs.
    quiet : bool
        No line per series on stdout (failures are still reported on stderr).
    n_jobs : int
        Worker processes of ``csd`` (-1: every core).
    denoise : {"none", "mppca", "localpca", "auto"}, optional
        Denoising before the job; default: the command's own (``fit``: ``auto``, MP-PCA where
        neighbouring voxels' fibres agree, as ``shdeconv fit``; ``predict`` and ``csd``: none).
    precision : {"float32", "bfloat16"}
        Number format of ``predict``'s network pass (``shdeconv predict --precision``).

    Returns
    -------
    dict
        ``output_dir`` (the derivative dataset), ``method``, ``series``: one record per series
        (``subject``, ``session``, ``dwi``, ``status``: ``done``, ``skipped`` or ``failed``,
        ``outputs``: ``{key: path}``, ``error``), and the counts ``done``, ``skipped``, ``failed``.

    Raises
    ------
    InputError
        For a missing or non-BIDS ``bids_dir``, no series found, or an unreadable model;
        nothing is written then. A series' own failure is reported in the summary instead.
    OptionError
        For a bad ``method``, ``device`` or ``precision``, or ``model`` or bfloat16 given with
        another method.
    """
    if method not in METHODS:
        raise OptionError(f"method must be one of {METHODS}, got {method!r}")
    if denoise is None:
        denoise = FIT_DENOISE if method == "fit" else "none"
    if denoise not in DENOISERS:
        raise OptionError(f"denoise must be one of {DENOISERS}, got {denoise!r}")
    check_device(device)
    if model is not None and method != "predict":
        raise OptionError(f"--model is an option of --method predict, not {method}")
    if check_precision(precision) != "float32" and method != "predict":
        raise OptionError(f"--precision is an option of --method predict, not {method}")
    if method in ("predict", "fit"):
        from .._options import resolve_device

        resolve_device(device)  # a CUDA device asked for on a machine without one: before any work
    bids_dir = Path(bids_dir)
    series = find_dwi(bids_dir, participant_label=participant_label, session_label=session_label)
    root = Path(output_dir) / PIPELINE
    plans = []
    for s in series:
        names = output_names(s.prefix, method)
        plans.append((s, names, not force and _finished(root / s.folder, names)))
    loaded = None
    if method == "predict" and not all(skip for _, _, skip in plans):
        from ..models import LoadedModel

        loaded = LoadedModel.load(model)
    root = check_output_dir(root)
    _dataset_description(root, bids_dir)
    records = []
    try:
        for s, names, skip in plans:
            folder = root / s.folder
            record = {"subject": s.subject, "session": s.session, "dwi": str(s.dwi), "status": "skipped",
                      "outputs": {}, "error": None}
            records.append(record)
            if skip:
                record["outputs"] = {"fodf": str(folder / names["fodf.nii.gz"]),
                                     "report": str(folder / names["report.json"])}
                _say(quiet, f"shdeconv bids: {s.label}: skipped (outputs exist in {folder}; --force to redo)")
                continue
            work = root / ".work" / s.stem
            shutil.rmtree(work, ignore_errors=True)
            storing = False
            try:
                report = _run_job(s, work, method, model=loaded, device=device, progress=progress, n_jobs=n_jobs,
                                  denoise=denoise, precision=precision)
                storing = True
                stored = _store(work, folder, names, report)
            except Exception as e:
                if storing or not _finished(folder, names):
                    _remove(folder, names.values())
                users = isinstance(e, (InputError, OptionError)) or (isinstance(e, OSError) and e.filename is not None)
                record.update(status="failed", error=str(e) if users else f"{type(e).__name__}: {e}")
                print(f"shdeconv bids: {s.label}: {record['error']}", file=sys.stderr, flush=True)
                if not users:  # a bug: its traceback, as the other commands keep it
                    log.error("%s: %s failed", s.label, method, exc_info=True)
            else:
                record.update(status="done", outputs={k: str(folder / v) for k, v in stored.items()})
                _say(quiet, f"shdeconv bids: {s.label}: done ({len(stored)} files in {folder})")
            finally:
                shutil.rmtree(work, ignore_errors=True)
    finally:  # also when interrupted: no empty working folder is left behind
        try:
            (root / ".work").rmdir()
        except OSError:  # absent, or holding another run's series
            pass
    counts = {k: sum(r["status"] == k for r in records) for k in ("done", "skipped", "failed")}
    return {"output_dir": str(root), "method": method, "series": records, **counts}
