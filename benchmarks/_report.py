"""What the benchmark scripts share: their common options, the jobs they name, how they score and publish."""

from __future__ import annotations

import argparse
from pathlib import Path

#: The scores :func:`score_values` returns, in its order.
SCORE_KEYS = ("success all", "success 2", "success 3", "AE 1-fibre (°)", "AE crossings (°)")


def score_values(pred_dir: Path, phantom: Path) -> tuple[float, ...]:
    """:data:`SCORE_KEYS` of a method's output folder against a phantom (``shdeconv evaluate``),
    NaN where a group is empty."""
    import numpy as np

    from shdeconv.evaluation import crossing_error, evaluate_dirs

    s = evaluate_dirs(pred_dir, phantom)
    g = s["groups"]
    return tuple(np.nan if v is None else float(v) for v in (
        g["all"]["success_rate"], g["2"]["success_rate"], g["3"]["success_rate"],
        g["1"]["angular_error_mean"], crossing_error(s)))


def format_score(key: str, value: float) -> str:
    """One of :data:`SCORE_KEYS` as the reports print it: success rates to 3 decimals, angles to 2."""
    return f"{value:.3f}" if key.startswith("success") else f"{value:.2f}"


def score_cells(values) -> str:
    """:func:`score_values`' tuple as the cells of a markdown table row."""
    return " | ".join(format_score(k, v) for k, v in zip(SCORE_KEYS, values))


def mean_score_cells(scores) -> str:
    """The mean of several :func:`score_values` tuples, each score's NaNs skipped, as :func:`score_cells`."""
    import numpy as np

    return score_cells(np.nanmean(np.asarray(scores, dtype=float), axis=0))


def add_phantom_options(p: argparse.ArgumentParser, *, output: str, snrs: str) -> None:
    """``-o``, ``--snrs``, ``--seed``, ``--size``, ``--device`` and ``--markdown``."""
    p.add_argument("-o", "--output", type=Path, default=Path(output))
    p.add_argument("--snrs", default=snrs)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default="default", choices=["default", "quick"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--markdown", type=Path, default=None, help="also write the report here")


def run_job(spec: str, data: Path, out: Path, *, mask: Path | None = None, device: str = "auto",
            model: Path | None = None, iterations: int | None = None) -> tuple[float, dict]:
    """Run the command-line job ``spec`` on ``data`` (``dwi.nii.gz``, ``bvals``, ``bvecs``) into ``out``.

    ``spec``: ``predict``, ``fit`` or ``csd`` at its defaults; ``+D`` denoises with ``D``
    (``none``, ``mppca``, ``localpca``), ``@I`` starts ``fit`` from ``I`` (``--init I``).
    ``model``: ``predict``'s model file; ``iterations``: ``fit``'s steps (None: its default).
    Returns the estimator's seconds and the job's report.
    """
    from shdeconv.fitting import (
        FIT_DENOISE,
        DirectConfig,
        run_csd,
        run_fit,
        run_predict,
    )

    name, _, init = spec.partition("@")
    base, _, denoise = name.partition("+")
    if init and base != "fit":
        raise ValueError(f"only fit takes a start (@{init})")
    inputs = (data / "dwi.nii.gz", data / "bvals", data / "bvecs", out)
    common = {"mask": mask, "force": True}
    if base == "predict":
        report = run_predict(*inputs, model=model, device=device, denoise=denoise or "none", progress=False, **common)
        return report["timings_s"]["predict"], report
    if base == "fit":
        config = {k: v for k, v in (("init", init), ("iterations", iterations)) if v}
        report = run_fit(*inputs, device=device, denoise=denoise or FIT_DENOISE, progress=False, **common,
                         **({"direct_config": DirectConfig(**config)} if config else {}))
    elif base == "csd":
        report = run_csd(*inputs, denoise=denoise or "none", **common)
    else:
        raise ValueError(f"unknown method {spec!r}")
    return report["timings_s"]["fit"], report


def publish(text: str, markdown: Path | None) -> None:
    """Print the report and, with ``markdown``, write it there atomically."""
    print(text)
    if markdown:
        from shdeconv.io import atomic_write_text

        markdown.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(markdown, text)


def package_at(commit: str, folder: str | Path) -> dict:
    """The environment that makes a child process import the package as it was at git ``commit``:
    its ``src/`` exported into ``folder`` and put first on ``PYTHONPATH``."""
    import os
    import subprocess

    root = Path(__file__).resolve().parent.parent
    tar = subprocess.run(["git", "-C", str(root), "archive", commit, "src"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=tar, check=True)
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(Path(folder) / "src"), os.environ.get("PYTHONPATH")]))}


def brain_fodf(output: Path, scheme: str = "clinical", shape: str = "90,108,90") -> tuple[Path, Path]:
    """The brain phantom of ``benchmarks/wholebrain.py`` (``output/data-<scheme>``) and the fODF
    ``predict`` writes for it (``output/predict-data-<scheme>/fodf.nii.gz``), each made once."""
    from shdeconv.fitting import run_predict
    from shdeconv.sim import write_phantom
    from shdeconv.sim._brain import brain_phantom

    data = output / f"data-{scheme}"
    if not (data / "dwi.nii.gz").exists():
        write_phantom(brain_phantom(tuple(int(v) for v in shape.split(",")), scheme=scheme), data)
    fodf = output / f"predict-{data.name}" / "fodf.nii.gz"
    if not fodf.exists():
        run_predict(data / "dwi.nii.gz", data / "bvals", data / "bvecs", fodf.parent, mask=data / "mask.nii.gz",
                    progress=False, force=True)
    return data, fodf
