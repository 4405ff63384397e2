"""The built-in demo: a phantom with known fibres, ``predict``, ``fit`` and ``csd`` on it, and their scores.

The phantom's signal comes from a multi-compartment tensor model with varied diffusivities
(:mod:`shdeconv.sim`), not from the SH convolution model that ``fit`` and ``csd`` assume, so
the demo does not grade the methods on their own assumptions.
"""

from __future__ import annotations

import time
from pathlib import Path

from ._options import OptionError, resolve_device
from .evaluation import evaluate_dirs, format_comparison
from .fitting import FIT_DENOISE, DirectConfig, FitConfig, run_csd, run_fit, run_predict
from .io import refuse_earlier_outputs
from .sim import simulate_to_dir

__all__ = ["run_demo"]


#: What the demo writes in its output directory (refused there unless ``force``).
DEMO_OUTPUTS = ("results.md", "phantom", "predict", "direct", "shd-tv", "csd", "csd-mppca")


def run_demo(outdir="demo_out", *, quick: bool = False, seed: int = 0, device: str = "auto",
             progress: bool = True, force: bool = False) -> str:
    """Simulate a clinical-scheme phantom (30 directions, b=1000, SNR 20), run the methods, score.

    Methods, on the same files: ``predict`` with the shipped amortized model (one pass); the
    per-subject ``fit`` with the command's defaults (``direct`` after MP-PCA), then the shd-tv
    network (raw data, the published random start); DIPY CSD, raw and after MP-PCA. The
    phantom's seed is not among the shipped model's training seeds (1000+).

    Returns the Markdown table that ``shdeconv demo`` prints; it is also written to
    ``OUTDIR/results.md``. An ``outdir`` holding an earlier demo is refused unless ``force``.
    """
    resolve_device(device)  # the options first: nothing is written for a run that cannot go on
    if not (isinstance(seed, int) and seed >= 0):
        raise OptionError(f"--seed must be an integer >= 0, got {seed!r}")
    outdir = Path(outdir)
    refuse_earlier_outputs(outdir, DEMO_OUTPUTS, force=force)
    outdir.mkdir(parents=True, exist_ok=True)
    force = True  # the demo's own folders, checked above
    phantom = simulate_to_dir(outdir / "phantom", kind="spatial", scheme="clinical", snr=20, seed=seed,
                              size="quick" if quick else "default")
    inputs = (phantom / "dwi.nii.gz", phantom / "bvals", phantom / "bvecs")
    mask = phantom / "mask.nii.gz"
    fit_config = FitConfig(seed=seed, iterations=15 if quick else FitConfig().iterations)
    rows = []
    t = time.perf_counter()
    run_predict(*inputs, outdir / "predict", mask=mask, device=device, progress=progress, force=force)
    rows.append(("shdeconv predict (shipped model)", time.perf_counter() - t,
                 evaluate_dirs(outdir / "predict", phantom)))
    t = time.perf_counter()
    report = run_fit(*inputs, outdir / "direct", mask=mask, variant="direct", device=device, denoise=FIT_DENOISE,
                     direct_config=DirectConfig(iterations=30 if quick else DirectConfig().iterations),
                     progress=progress, force=force)
    chosen = {"mppca": "MP-PCA", "none": "no denoising"}[report["denoise"]]
    rows.append((f"shdeconv fit (defaults: {chosen}, then direct from the predict start)", time.perf_counter() - t,
                 evaluate_dirs(outdir / "direct", phantom)))
    t = time.perf_counter()
    run_fit(*inputs, outdir / "shd-tv", mask=mask, variant="shd-tv", device=device, fit_config=fit_config,
            progress=progress, force=force)
    rows.append(("shdeconv fit --variant shd-tv --denoise none", time.perf_counter() - t,
                 evaluate_dirs(outdir / "shd-tv", phantom)))
    for name, denoise, label in (("csd", "none", "DIPY CSD"), ("csd-mppca", "mppca", "MP-PCA + DIPY CSD")):
        t = time.perf_counter()
        run_csd(*inputs, outdir / name, mask=mask, denoise=denoise, force=force)
        rows.append((label, time.perf_counter() - t, evaluate_dirs(outdir / name, phantom)))
    header = (f"Phantom: {phantom} (clinical scheme: b=1000 x 30 directions, SNR 20, seed {seed}; "
              "tensor-model signal, not the fitting model)\n\n")
    table = header + format_comparison(rows)
    (outdir / "results.md").write_text(table + "\n")
    return table
