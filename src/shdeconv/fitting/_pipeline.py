"""The jobs: a dMRI volume in, fODFs, tissue maps, peaks and a report out.

``run_fit`` (per-subject fit: ``direct`` or a network), ``run_predict`` (a trained network)
and ``run_csd`` (DIPY CSD / MSMT-CSD baseline) share everything but the estimator: input
checks, masking, responses (:mod:`._subject`), and the writing of outputs in the MRtrix3 world
frame. All outputs are written atomically (temporary name, then rename), nothing is written
before the inputs have passed their checks, and an output directory holding an earlier run's
outputs is refused unless ``force``.
"""

from __future__ import annotations

import json
import logging
import platform
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from .._options import OptionError, check_even_order, check_patch_size, check_precision, resolve_device
from ..direction import sh_peaks
from ..inference import (
    DEFAULT_TILE_OVERLAP,
    auto_batch,
    native_bfloat16,
    predict_volume,
    tile_workers,
    volume_input,
)
from ..io import (
    atomic_save_nifti,
    atomic_write_text,
    check_output_dir,
    fingerprint,
    refuse_earlier_outputs,
    write_peaks,
    write_sidecars,
)
from ..losses import TV_WEIGHT, DeconvLoss, LossWeights
from ..models._deconv import VARIANTS, NetworkConfig
from ..models._store import LoadedModel
from ..sphere import lmax_from_ncoeffs, rotate_sh
from ..viz._qc import save_qc_figure
from ._direct import DirectConfig, fit_direct, linear_start, start_for
from ._fit import FitConfig, fit_network
from ._subject import (
    Stopwatch,
    Subject,
    acquisition_model,
    amortized_prediction,
    attach_subject,
    build_network,
    isotropic_responses,
    load_subject,
    network_iso_names,
    recorded_warnings,
    subject_arrays,
)

__all__ = [
    "FIT_MODELS",
    "OUTPUT_FILES",
    "default_loss_weights",
    "run_csd",
    "run_fit",
    "run_predict",
    "write_outputs",
]

log = logging.getLogger(__name__)

#: Variants of ``fit``: the networks and ``direct`` (the same objective over free per-voxel values).
FIT_MODELS = VARIANTS + ("direct",)
#: Every file ``fit``, ``predict`` and ``csd`` may write in their output directory: a directory
#: holding any of them is refused unless ``force`` (see :func:`~shdeconv.io.refuse_earlier_outputs`).
OUTPUT_FILES = ("fodf.nii.gz", "gm.nii.gz", "csf.nii.gz", "peaks.nii.gz", "fodf.json", "gm.json", "csf.json",
                "peaks.json", "response_wm.txt", "response_gm.txt", "response_csf.txt", "qc.png", "report.json",
                "checkpoint.pt")
#: What the maps' sidecars cite for the SHD method and for DIPY's CSD.
SHD_URL = "https://arxiv.org/abs/2411.11819"
DIPY_CSD_URL = "https://docs.dipy.org/stable/examples_built/reconstruction/reconst_csd.html"
#: ``predict --finetune``: weight of the pretrained network's own prediction as a supervised
#: target (the weight its training gave the true fODF).
FINETUNE_PRIOR_WEIGHT = 1.0


#: Weight of the supervised term towards the ``direct`` solution in a warm-started network fit
#: (``FitConfig(init="direct")``): as the truth's in training.
WARM_START_WEIGHT = 1.0


def default_loss_weights(variant: str, *, init: str = "random", **overrides) -> LossWeights:
    """The published weights, with spatial TV switched on for ``shd-tv`` and ``direct`` only, and
    the supervised term (:data:`WARM_START_WEIGHT`) for a network warm-started from ``direct``
    (``init="direct"``)."""
    base = {"tv": TV_WEIGHT if variant in ("shd-tv", "direct") else 0.0,
            "supervised": WARM_START_WEIGHT if init == "direct" and variant != "direct" else 0.0}
    base.update({k: v for k, v in overrides.items() if v is not None})
    return LossWeights(**base)


def write_outputs(outdir: Path, subject: Subject, fodf_world: np.ndarray, iso: np.ndarray | None, *,
                  history: list[dict], report: dict, title: str, iso_names: tuple[str, ...] = ("gm", "csf"),
                  model_card: dict | None = None, nonnegativity: str = "constrained",
                  checkpoint: bool = False) -> dict:
    """Write fodf/gm/csf/peaks/responses/report/qc; ``fodf_world`` ``[X, Y, Z, S]`` in the MRtrix3 frame.

    Any other of :data:`OUTPUT_FILES` in ``outdir`` (an earlier run's, overwritten with
    ``--force``: e.g. a multi-shell run's ``csf.nii.gz``) is removed, so that the folder holds
    this run's outputs alone; ``checkpoint.pt`` stays where ``checkpoint`` (``fit``'s, for
    ``--resume``).

    ``iso`` ``[X, Y, Z, T]`` is written as ``<name>.nii.gz`` per ``iso_names``. Every map gets a
    JSON sidecar (:func:`~shdeconv.io.write_sidecars`) describing ``model_card`` (Description,
    URL, Parameters), ``nonnegativity`` and the responses. ``report["timings_s"]`` gains
    ``write`` (these outputs, peaks included), which is added to its ``total``;
    ``report["stage_seconds"]`` splits ``load`` (``subject.load_seconds``) and ``write`` into
    their stages (the NIfTI files are written in the background: ``nifti_after_the_rest`` is
    only what they took beyond the peaks and the QC figure).
    """
    t_write = time.perf_counter()
    stages = Stopwatch()
    affine = subject.affine
    if iso is not None and len(iso_names) != iso.shape[-1]:
        raise ValueError(f"{iso.shape[-1]} isotropic maps but names {iso_names}")
    # on the image's grid, also where only the mask's box or voxels were read
    fodf_world = subject.uncrop(np.where(subject.mask[..., None], fodf_world, 0).astype(np.float32, copy=False))
    iso = None if iso is None else subject.uncrop(iso)
    # The compressed NIfTI writes run in a background thread (zlib releases the GIL) while the
    # peaks are extracted and the QC figure drawn; every write is awaited before the report.
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending = [writer.submit(atomic_save_nifti, fodf_world, affine, outdir / "fodf.nii.gz")]
        files = {"fodf": "fodf.nii.gz"}
        for k, name in enumerate(iso_names if iso is not None else ()):
            pending.append(writer.submit(atomic_save_nifti, iso[..., k].astype(np.float32), affine,
                                         outdir / f"{name}.nii.gz"))
            files[name] = f"{name}.nii.gz"
        stages.lap("uncrop")
        dirs, amps = sh_peaks(fodf_world, workers=torch.get_num_threads())
        stages.lap("peaks")
        pending.append(writer.submit(write_peaks, outdir / "peaks.nii.gz", dirs, amps, affine))
        files["peaks"] = "peaks.nii.gz"
        wm_fraction = np.sqrt(4 * np.pi) * fodf_world[..., 0]  # the l = 0 coefficient is rotation invariant
        save_qc_figure(outdir / "qc.png", fodf_world, wm_fraction, history, title=title,
                       rotation=subject.rotation.T)
        stages.lap("qc_figure")
        for job in pending:
            job.result()
        stages.lap("nifti_after_the_rest")
    files.update(subject.responses.to_files(outdir))
    r = subject.responses
    tissue_responses = {"wm": (r.bvals, r.wm)}
    if iso is not None:
        names, coeffs = isotropic_responses(r, iso_names if r.gm is None else None)
        tissue_responses.update({n: (r.bvals, coeffs[:, [k]]) for k, n in enumerate(names) if n in iso_names})
    files.update(write_sidecars(outdir, files, lmax=lmax_from_ncoeffs(fodf_world.shape[-1]),
                                model=model_card or {"Description": title}, nonnegativity=nonnegativity,
                                responses=tissue_responses, software={"Name": "shdeconv", "Version": __version__}))
    files["qc"] = "qc.png"
    ours = set(files.values()) | {"report.json"} | ({"checkpoint.pt"} if checkpoint else set())
    for name in set(OUTPUT_FILES) - ours:
        (outdir / name).unlink(missing_ok=True)
    write = time.perf_counter() - t_write
    stages.lap("responses_and_sidecars")
    timings = dict(report.get("timings_s", {}))
    timings.update(write=write, total=timings.get("total", 0.0) + write)
    report = dict(report, outputs=files, timings_s=timings,
                  stage_seconds={"load": dict(subject.load_seconds), "write": stages.seconds})
    warned = list(report.get("warnings", []))
    for key, record in (("mask", subject.mask_record), ("gradient_check", subject.gradient_check),
                        ("denoise_choice", subject.denoise_record)):
        if record is not None:
            report[key] = record
            if record.get("warning"):
                warned.append(record["warning"])
    # and whatever else loading warned about (repaired voxels, the gradient table, ...), once
    report["warnings"] = warned + [m for m in subject.warnings if m not in warned]
    atomic_write_text(outdir / "report.json", json.dumps(report, indent=2, default=_json_default))
    return report


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")


def versions() -> dict:
    import dipy
    import nibabel

    return {"shdeconv": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "dipy": dipy.__version__, "nibabel": nibabel.__version__, "python": platform.python_version()}


#: Largest voxel-size ratio (longest / shortest axis) the spatial networks take without a warning.
ANISOTROPY_TOLERANCE = 1.2


def spatial_grid_report(affine: np.ndarray, what: str) -> dict:
    """Voxel sizes for the report, and a warning where the spatial networks' assumption fails.

    The networks' 3x3x3 kernels weight a neighbour by its number of non-zero offsets, i.e. they
    take the grid as isotropic (so the 48 axis permutations are symmetries). On voxels of
    e.g. 1 x 1 x 3 mm a through-plane neighbour is treated like an in-plane one; the result is
    still computed, with a logged warning and ``warnings`` in the report.
    """
    sizes = np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)
    out = {"voxel_size_mm": [round(float(v), 4) for v in sizes], "warnings": []}
    ratio = float(sizes.max() / sizes.min())
    if ratio > ANISOTROPY_TOLERANCE:
        msg = (f"anisotropic voxels {tuple(round(float(v), 3) for v in sizes)} mm (ratio {ratio:.2f}): "
               f"{what}'s spatial kernels assume an isotropic grid; "
               "consider resampling to isotropic voxels first (e.g. MRtrix3 mrgrid regrid -vox)")
        log.warning(msg)
        out["warnings"].append(msg)
    return out


def input_record(dwi, bvals, bvecs, grad, mask, response_files=None) -> dict:
    """The report's record of the input files; ``gradient_table`` says where the table came
    from: FSL files, an MRtrix3 grad file or the MRtrix3 image's header; ``responses`` the
    response files read, or ``"estimated"`` from the data."""
    source = "fsl" if bvals is not None else "mrtrix-grad" if grad is not None else "image-header"
    given = {k: str(v) for k, v in (response_files or {}).items() if v is not None}
    return {"dwi": str(dwi), "bvals": None if bvals is None else str(bvals),
            "bvecs": None if bvecs is None else str(bvecs), "grad": None if grad is None else str(grad),
            "gradient_table": source, "mask": str(mask) if mask else None,
            "responses": given if given.get("wm") else "estimated"}


def run_fit(dwi, bvals, bvecs, outdir, *, grad=None, mask=None, response_files=None, variant="direct", lmax=None,
            device="auto", fit_config: FitConfig | None = None, net_config: NetworkConfig | None = None,
            loss_weights: LossWeights | None = None, resume=False, progress=True, denoise="none",
            direct_config: DirectConfig | None = None, single_shell_tissues: tuple[str, ...] | None = None,
            force: bool = False) -> dict:
    """Per-subject unsupervised fit, end to end. Returns the report dict (also in report.json).

    The gradient table (here and in :func:`run_predict`, :func:`run_csd`): FSL ``bvals`` and
    ``bvecs``, or both None and an MRtrix3 ``grad`` file, or neither for an MRtrix3 image's own
    (:func:`~shdeconv.io.load_dwi`). An ``outdir`` holding outputs of an earlier run is refused unless ``force``; with
    ``resume`` its ``checkpoint.pt`` is continued only if it was written by this same run (same
    data and settings but the number of iterations), else :class:`~shdeconv.io.InputError`.

    ``variant``: a network (:data:`~shdeconv.models.VARIANTS`, trained on the subject with
    ``fit_config``) or ``"direct"`` (:func:`fit_direct`, with ``direct_config``). ``lmax``: order
    of the output fODF (default 16; the response stays at ``net_config.response_lmax``, 8).
    ``single_shell_tissues``: isotropic tissues of single-shell data (default
    :data:`SINGLE_SHELL_TISSUES`; multi-shell data fit GM and CSF). A config of the other kind
    of fit (``fit_config`` with ``"direct"``, ``direct_config`` with a network) is refused
    (``OptionError``, a ``ValueError``) rather than ignored.
    """
    if variant not in FIT_MODELS:
        raise OptionError(f"unknown fit variant {variant!r}; expected one of {FIT_MODELS}")
    if variant == "direct" and fit_config is not None:
        raise OptionError("fit_config sets a network's optimisation; variant 'direct' takes direct_config")
    if variant != "direct" and direct_config is not None:
        raise OptionError(f"direct_config sets variant 'direct'; the network {variant!r} takes fit_config")
    t_start = time.perf_counter()
    refuse_earlier_outputs(outdir, OUTPUT_FILES, force=force, resume=resume)
    net_config = net_config or NetworkConfig()
    if lmax is not None:
        net_config = replace(net_config, lmax=lmax)
    fit_config = fit_config or FitConfig()
    if variant != "direct":
        check_patch_size(fit_config.patch_size, net_config.with_variant(variant).patch_multiple, "--patch-size")
    direct_config = direct_config or DirectConfig(**({} if lmax is None else {"lmax": lmax}))
    dev = resolve_device(device)
    csd_start = variant == "direct" and direct_config.init == "csd"
    subject = load_subject(dwi, bvals, bvecs, mask, grad=grad, response_files=response_files,
                           lmax=net_config.response_lmax, denoise=denoise, keep_raw=csd_start)
    t_loaded = time.perf_counter()
    grid = spatial_grid_report(subject.affine, "fit")
    outdir = check_output_dir(outdir)
    weights = loss_weights or default_loss_weights(variant, init=fit_config.init)
    start = start_for(direct_config.init, subject.responses.bvals) if variant == "direct" else None
    settings = {"variant": variant, "loss_weights": asdict(weights), "denoise": subject.denoise,
                "single_shell_tissues": single_shell_tissues,
                **({"direct": asdict(direct_config), "start": start} if variant == "direct"
                   else {"network": net_config.with_variant(variant).to_dict(), "fit": asdict(fit_config)})}
    run_id = fingerprint(subject_arrays(subject), settings)
    start_seconds, start_model = 0.0, None
    if variant == "direct":
        fm, _, _ = acquisition_model(subject.bvals, subject.directions, subject.responses, net_config.response_lmax,
                                     single_shell=single_shell_tissues)
        loss_fn = DeconvLoss(fm, weights, lmax=direct_config.lmax)
        log.info("direct fit on %d voxels (%s)", int(subject.mask.sum()), dev)
        t_begin = time.perf_counter()
        if csd_start:
            from ..baselines import csd_fit

            start_sh = csd_fit(subject.dwi, subject.mask, subject.responses, lmax=net_config.response_lmax)["fodf"]
            start_sh = rotate_sh(start_sh, subject.rotation.T)  # world -> the fit's voxel frame
            subject.dwi = replace(subject.dwi, data=None)
        elif start == "predict":
            shipped = LoadedModel.load()
            start_model = {"path": str(shipped.path), "sha256": shipped.sha256}
            start_sh = amortized_prediction(subject, dev, shipped, progress=progress)[0]
        else:
            start_sh = linear_start(fm, subject.signal)
        start_seconds = time.perf_counter() - t_begin
        log.info("direct fit from the %s start", start)
        fodf, iso, result = fit_direct(loss_fn, subject.signal, subject.mask, direct_config, start_sh=start_sh,
                                       device=dev, checkpoint=outdir / "checkpoint.pt", resume=resume,
                                       progress=progress, fingerprint=run_id)
        t_pred = time.perf_counter()  # its output is the fit itself: no prediction pass
    else:
        net_config = net_config.with_variant(variant)
        torch.manual_seed(fit_config.seed)
        net, fm = build_network(subject, net_config, single_shell_tissues)
        loss_fn = DeconvLoss(fm, weights, lmax=net_config.lmax)
        log.info("fitting %s on %d voxels (%s)", variant, int(subject.mask.sum()), dev)
        result = fit_network(net, loss_fn, subject.signal, subject.mask, fit_config, device=dev,
                             checkpoint=outdir / "checkpoint.pt", resume=resume, progress=progress,
                             fingerprint=run_id)
        t_pred = time.perf_counter()
        fodf, iso = predict_volume(net, subject.signal, subject.mask, tile=fit_config.patch_size,
                                   overlap=fit_config.tile_overlap, device=dev, progress=progress)
    t_done = time.perf_counter()
    collapsed = []
    if not np.any(fodf[subject.mask]):
        collapsed.append(f"the fitted fODF is 0 in all {int(subject.mask.sum())} voxels of the mask: the "
                         "optimisation collapsed (try a lower --lr)")
        warnings.warn(collapsed[0], UserWarning, stacklevel=2)
    report = {
        "command": "fit",
        "model": variant,
        "versions": versions(),
        "inputs": input_record(dwi, bvals, bvecs, grad, mask, response_files),
        "device": str(dev),
        **settings,
        "voxels_in_mask": int(subject.mask.sum()),
        **grid,
        **({"start_model": start_model} if start_model else {}),
        "isotropic_tissues": list(fm.iso_names),  # what was fitted (single_shell_tissues None: the default)
        "loss_curve": result.history,
        "resumed_from": result.resumed_from,
        "warnings": collapsed,
        "timings_s": {"load": t_loaded - t_start, "start": start_seconds, "fit": result.seconds,
                      "predict": t_done - t_pred, "total": t_done - t_start},
    }
    card = {"Description": f"shdeconv fit --variant {variant}: the unsupervised SHD objective minimised "
                           + ("over free per-voxel values" if variant == "direct" else f"through a {variant} network")
                           + " for this subject",
            "URL": SHD_URL, "Parameters": {"lmax": lmax_from_ncoeffs(fodf.shape[-1]),
                                           **json.loads(json.dumps(settings, default=_json_default))}}
    return write_outputs(outdir, subject, rotate_sh(fodf, subject.rotation), iso, history=result.history,
                         report=report, title=variant, iso_names=fm.iso_names, model_card=card,
                         nonnegativity="constrained", checkpoint=True)


def run_predict(dwi, bvals, bvecs, outdir, *, grad=None, mask=None, response_files=None, model=None,
                finetune: int = 0, device="auto", tile: int | None = None, overlap: float = DEFAULT_TILE_OVERLAP,
                batch: int | None = None, seed: int = 0, progress=True, denoise="none", precision: str = "float32",
                force: bool = False) -> dict:
    """Amortized inference: a trained network (default: the shipped one) predicts a subject in one pass.

    ``finetune > 0`` first runs that many steps on the subject: the loss of ``shdeconv fit``
    for the model's variant plus, as a supervised target, the pretrained network's own
    prediction (:data:`FINETUNE_PRIOR_WEIGHT`), with batch norm kept at its trained statistics.
    ``tile`` defaults to the model's training patch size (networks predict best on tiles like
    those they were trained on), ``batch`` (tiles per forward pass) to :func:`auto_batch`; on a
    CPU :func:`tile_workers` threads predict tiles at once. An ``outdir`` holding outputs of an
    earlier run is refused unless ``force``. ``model``: a model file (default: the shipped one)
    or a :class:`~shdeconv.models.LoadedModel` read once for many subjects. ``precision``:
    ``"bfloat16"`` runs the prediction pass (not the fine-tuning) in bfloat16
    (:attr:`~shdeconv.models.DeconvNet.precision`), with a warning where the device has no
    bfloat16 matrix products (:func:`~shdeconv.inference.native_bfloat16`).
    Returns the report dict (also in report.json).
    """
    from ..models._store import load_model

    if finetune < 0:
        raise OptionError(f"--finetune must be >= 0, got {finetune}")
    if not 0.0 <= overlap < 1.0:
        raise OptionError(f"--overlap must be in [0, 1), got {overlap}")
    if batch is not None and batch < 1:
        raise OptionError(f"--batch-size must be >= 1, got {batch}")
    check_precision(precision)
    t_start = time.perf_counter()
    refuse_earlier_outputs(outdir, OUTPUT_FILES, force=force)
    dev = resolve_device(device)
    loaded = model if isinstance(model, LoadedModel) else LoadedModel.load(model)
    net, meta, model_path = loaded.fresh(), loaded.meta, loaded.path
    tile = loaded.patch_size if tile is None else check_patch_size(tile, net.config.patch_multiple, "--patch-size")
    # a 'linear'-input network's input is per voxel: with a mask and nothing spatial before the
    # network (no denoising, no fine-tuning on patches), only the mask's voxels are read
    voxels_only = (mask is not None and not finetune and denoise == "none" and net.config.inputs == "linear")
    subject = load_subject(dwi, bvals, bvecs, mask, grad=grad, response_files=response_files,
                           lmax=net.config.response_lmax, denoise=denoise, keep_raw=False, voxels_only=voxels_only)
    t_loaded = time.perf_counter()
    grid = spatial_grid_report(subject.affine, "predict")
    if precision == "bfloat16" and not native_bfloat16(dev):
        msg = (f"--precision bfloat16: this {dev.type.upper()} has no bfloat16 matrix products, so they are "
               "emulated and predict runs slower than in float32")
        log.warning(msg)
        grid["warnings"].append(msg)
    outdir = check_output_dir(outdir)
    fm = attach_subject(net, subject)
    history, t_fit = [], time.perf_counter()
    if finetune:
        # the unsupervised loss of `fit` plus the pretrained network's own prediction as the
        # supervised target (weight 1, as the model was trained against the truth): the steps
        # adapt to this subject without unlearning the prior
        torch.manual_seed(seed)
        config = FitConfig(iterations=finetune, seed=seed)
        teacher, _ = load_model(model_path)  # a second, frozen copy (deepcopy cannot copy sparse buffers)
        teacher.set_init_matrix(net.init_matrix)
        weights = default_loss_weights(net.config.variant, supervised=FINETUNE_PRIOR_WEIGHT)
        result = fit_network(net, DeconvLoss(fm, weights, lmax=net.config.lmax), subject.signal, subject.mask,
                             config, device=dev, checkpoint=None, progress=progress,  # predict cannot resume
                             teacher=teacher)
        history = result.history
    t_pred = time.perf_counter()
    batch = batch or auto_batch(net, dev, tile, precision=precision)
    workers = tile_workers(dev)
    # the network's input (D s over the mask's box) first, then the signal goes: the largest
    # array (1.7 GiB for the mask's voxels of HCP-sized data) is not held while tiles are
    # predicted and written
    inputs = volume_input(net, subject.signal, subject.mask, voxels=subject.voxels)
    subject.signal = None
    on_grid = subject.voxels is not None  # the input, and so the prediction, on the image's grid
    fodf, iso = predict_volume(net, inputs, subject.uncrop(subject.mask) if on_grid else subject.mask, tile=tile,
                               overlap=overlap, device=dev, progress=progress, sw_batch_size=batch, workers=workers,
                               precision=precision)
    del inputs
    if on_grid:
        fodf, iso = subject.crop(fodf), None if iso is None else subject.crop(iso)
    t_done = time.perf_counter()
    report = {
        "command": "predict",
        "versions": versions(),
        "inputs": input_record(dwi, bvals, bvecs, grad, mask, response_files),
        "model": str(model_path),
        "model_sha256": loaded.sha256,
        "model_meta": {k: meta[k] for k in ("recipe", "iterations", "world_size") if k in meta},
        "device": str(dev),
        "denoise": subject.denoise,
        "finetune": finetune,
        **({"seed": seed, "loss_curve": history} if finetune else {}),
        "tile": tile,
        "overlap": overlap,
        "tiles_per_batch": batch,
        "tile_workers": workers,
        "precision": precision,
        "voxels_in_mask": int(subject.mask.sum()),
        **grid,
        "timings_s": {"load": t_loaded - t_start, "finetune": t_pred - t_fit, "predict": t_done - t_pred,
                      "total": t_done - t_start},
    }
    names = network_iso_names(fm, iso)
    card = {"Description": "shdeconv predict: a trained (amortized) network"
                           + (f", fine-tuned {finetune} steps on this subject" if finetune else ""),
            "URL": SHD_URL, "Parameters": {"Model": str(model_path), "ModelSHA256": loaded.sha256,
                                           "Variant": net.config.variant, "Head": net.config.head,
                                           "Finetune": finetune, **({"Seed": seed} if finetune else {}),
                                           "Denoise": subject.denoise,
                                           "Precision": precision}}
    # the Softplus head is non-negative on its grid; the linear head only penalises negative values
    return write_outputs(outdir, subject, rotate_sh(fodf, subject.rotation), iso, history=history, iso_names=names,
                         report=report, title="predict" + (f" + finetune {finetune}" if finetune else ""),
                         model_card=card, nonnegativity="constrained" if net.config.head == "softplus"
                         else "regularized")


def run_csd(dwi, bvals, bvecs, outdir, *, grad=None, mask=None, response_files=None, lmax=8, algorithm="auto",
            denoise="none", n_jobs: int = 1, force: bool = False) -> dict:
    """DIPY CSD (single shell) or MSMT-CSD (several shells) with the same inputs and outputs as fit.

    ``n_jobs``: worker processes of single-shell CSD (DIPY's joblib engine; -1 for all cores).
    An ``outdir`` holding outputs of an earlier run is refused unless ``force``.
    """
    from ..baselines import csd_fit

    if algorithm not in ("auto", "ssst", "msmt"):
        raise OptionError(f"algorithm must be 'auto', 'ssst' or 'msmt', got {algorithm!r}")
    check_even_order(lmax, "--lmax")
    t_start = time.perf_counter()
    refuse_earlier_outputs(outdir, OUTPUT_FILES, force=force)
    subject = load_subject(dwi, bvals, bvecs, mask, grad=grad, response_files=response_files, lmax=lmax,
                           denoise=denoise)
    t_loaded = time.perf_counter()
    outdir = check_output_dir(outdir)
    multi = {"auto": "auto", "ssst": False, "msmt": True}[algorithm]
    t_fit = time.perf_counter()
    with recorded_warnings() as fit_warnings:
        out = csd_fit(subject.dwi, subject.mask, subject.responses, lmax=lmax, multi_shell=multi, n_jobs=n_jobs)
    t_done = time.perf_counter()
    iso = None if out.get("gm") is None else np.stack([out["gm"], out["csf"]], -1)
    ran = "msmt" if out["algorithm"] == "msmt" else "ssst"  # "auto" resolved by the number of shells
    report = {
        "command": "csd",
        "versions": versions(),
        "inputs": input_record(dwi, bvals, bvecs, grad, mask, response_files),
        "algorithm": ran,
        "algorithm_requested": algorithm,
        "denoise": subject.denoise,
        "n_jobs": out["n_jobs"],  # what ran: 1 for MSMT and for small volumes
        "n_jobs_requested": n_jobs,
        "voxels_in_mask": int(subject.mask.sum()),
        "warnings": fit_warnings,
        "timings_s": {"load": t_loaded - t_start, "fit": t_done - t_fit, "total": t_done - t_start},
    }
    card = {"Description": f"DIPY constrained spherical deconvolution ({out['algorithm'].upper()})",
            "URL": DIPY_CSD_URL, "Parameters": {"Algorithm": ran, "lmax": lmax, "Denoise": subject.denoise}}
    return write_outputs(outdir, subject, out["fodf"], iso, history=[], report=report, title=f"CSD ({ran})",
                         model_card=card, nonnegativity="constrained")
