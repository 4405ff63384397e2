"""``predict --finetune N``: does fine-tuning the shipped model on the subject help it?

Each phantom is predicted by the shipped model as it is and after ``N`` fine-tuning steps on
that phantom (``run_predict(finetune=N)``: ``fit``'s unsupervised loss for the model's variant
plus the pretrained network's own prediction as a supervised target of weight
``FINETUNE_PRIOR_WEIGHT``, batch norm at its trained statistics), and every output is scored
alike (``shdeconv evaluate``). An arm ``N@W`` runs with the prior's weight set to ``W``
instead (a weaker prior lets the subject's own loss move the network further), ``N/LR`` with
Adam's learning rate ``LR`` instead of ``fit``'s (a gentler start from the trained weights);
the module's settings are replaced for that arm and restored.

The phantoms are held out (seed 1 by default; the model was trained on seeds 1000+) and of
three sorts: like the training set (spatial bundles, clinical and sparse schemes), voxel-wise
random crossings, and departures from it (the single-shell b=3000 x 64 and two-shell UK
Biobank schemes of ``benchmarks/unseen_schemes.py``; all four departures of
``benchmarks/robustness.py`` at once), where a per-subject adaptation has the most to fix.
``--denoise mppca`` runs every arm, ``predict`` included, on the MP-PCA-denoised signal
(``predict --denoise mppca``), as ``fit`` fits by default. Seconds: ``timings_s.finetune``.

Usage: python benchmarks/finetune.py [-o bench_out/finetune] [--seed 1] [--arms 50,200@0.1,200/1.7e-4]
       [--cells spatial:clinical:20,...] [--denoise none|mppca] [--markdown benchmarks/results/finetune_cpu.md]
"""

from __future__ import annotations

import argparse
import functools
import logging
from contextlib import contextmanager
from pathlib import Path

from _report import SCORE_KEYS, mean_score_cells, publish, score_cells, score_values
from robustness import ALL

#: kind:scheme:SNR[:departures], the departures those of robustness.py's "all four"
CELLS = ("spatial:clinical:20", "spatial:sparse:10", "voxelwise:clinical:20", "spatial:b3000:10",
         "spatial:ukbiobank:10", "spatial:clinical:20:all")


def parse_arm(arm: str) -> tuple[int, float | None, float | None]:
    """``"N[@W][/LR]"`` -> (steps, prior weight, learning rate), None where shipped."""
    rest, _, lr = arm.partition("/")
    steps, _, weight = rest.partition("@")
    return int(steps), (float(weight) if weight else None), (float(lr) if lr else None)


@contextmanager
def finetune_settings(weight: float | None, lr: float | None):
    """``run_predict``'s fine-tuning prior weight and learning rate replaced meanwhile (None: unchanged)."""
    import shdeconv.fitting._pipeline as pipeline

    shipped = pipeline.FINETUNE_PRIOR_WEIGHT, pipeline.FitConfig
    if weight is not None:
        pipeline.FINETUNE_PRIOR_WEIGHT = weight
    if lr is not None:
        pipeline.FitConfig = functools.partial(shipped[1], lr=lr)
    try:
        yield
    finally:
        pipeline.FINETUNE_PRIOR_WEIGHT, pipeline.FitConfig = shipped


def run(out: Path, cells: list[str], arms: list[str], seed: int, size: str, device: str,
        denoise: str = "none") -> str:
    from shdeconv.evaluation.benchmark import machine_info
    from shdeconv.fitting import FitConfig, run_predict
    from shdeconv.fitting._pipeline import FINETUNE_PRIOR_WEIGHT
    from shdeconv.models import LoadedModel
    from shdeconv.sim import PhantomVariation, simulate_to_dir

    model = LoadedModel.load(None)
    names = ["predict"] + [f"finetune {a}" for a in arms]
    per = {n: {"seconds": 0.0, "scores": []} for n in names}
    rows = []
    for cell in cells:
        kind, scheme, snr, *departures = cell.split(":")
        variation = PhantomVariation(**(ALL if departures == ["all"] else {}))
        ph = simulate_to_dir(out / cell.replace(":", "-") / "phantom", kind=kind, scheme=scheme, snr=float(snr),
                             seed=seed, size=size, variation=variation)
        for name, arm in zip(names, [None] + arms):
            steps, weight, lr = (0, None, None) if arm is None else parse_arm(arm)
            dest = ph.parent / name.replace(" ", "-").replace("@", "w").replace("/", "lr")
            with finetune_settings(weight, lr):
                report = run_predict(ph / "dwi.nii.gz", ph / "bvals", ph / "bvecs", dest, mask=ph / "mask.nii.gz",
                                     model=model, finetune=steps, seed=seed if steps else 0, device=device,
                                     denoise=denoise, progress=False, force=True)
            scores = score_values(dest, ph)
            seconds = report["timings_s"]["finetune"]
            per[name]["seconds"] += seconds
            per[name]["scores"].append(scores)
            rows.append((cell, name, seconds, scores))

    m = machine_info(device)
    lines = [
        "# `predict --finetune N` (`benchmarks/finetune.py`)\n",
        (f"Machine: {m['cpu']}, {m['cpu_count']} CPUs ({m['torch_threads']} torch threads); device {m['device']}; "
         f"torch {m['torch']}, shdeconv {m['shdeconv']}. Seed {seed}, size {size}; the shipped model; arms "
         f"`N` (steps; prior weight {FINETUNE_PRIOR_WEIGHT:g} and learning rate {FitConfig().lr:g} as shipped), `N@W` "
         "(prior weight W), `N/LR` (learning rate LR); every arm on the "
         f"{'raw' if denoise == 'none' else 'MP-PCA-denoised'} signal. Command: "
         f"`python benchmarks/finetune.py --seed {seed} --arms {','.join(arms)} --cells {','.join(cells)}"
         + (f" --denoise {denoise}" if denoise != "none" else "") + "`.\n"),
        "Mean over the phantoms; seconds: the fine-tuning steps, summed over the phantoms.\n",
        "| arm | seconds | " + " | ".join(SCORE_KEYS) + " |",
        "|---|---:|" + "---:|" * len(SCORE_KEYS),
    ]
    for n in names:
        lines.append(f"| {n} | {per[n]['seconds']:.0f} | {mean_score_cells(per[n]['scores'])} |")
    lines += ["", "## Per phantom (kind:scheme:SNR[:departures])\n",
              "| phantom | arm | seconds | " + " | ".join(SCORE_KEYS) + " |",
              "|---|---|---:|" + "---:|" * len(SCORE_KEYS)]
    for cell, name, seconds, scores in rows:
        lines.append(f"| {cell} | {name} | {seconds:.1f} | {score_cells(scores)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, default=Path("bench_out/finetune"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--size", default="default", choices=["default", "quick"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--arms", default="50,200@0.1,200/1.7e-4",
                   help="comma-separated N[@W][/LR]: steps, prior weight, learning rate")
    p.add_argument("--cells", default=",".join(CELLS), help="comma-separated kind:scheme:SNR[:all]")
    p.add_argument("--denoise", default="none", choices=["none", "mppca"],
                   help="every arm on the raw or the MP-PCA-denoised signal (default none)")
    p.add_argument("--markdown", type=Path, default=None, help="also write the report here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    arms = args.arms.split(",")
    for a in arms:
        parse_arm(a)  # a malformed arm fails before any phantom is simulated
    publish(run(args.output, args.cells.split(","), arms, args.seed, args.size, args.device, args.denoise),
            args.markdown)


if __name__ == "__main__":
    main()
