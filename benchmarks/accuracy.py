"""The accuracy benchmark: every method on phantoms with known fibres (``shdeconv benchmark``).

Runs :func:`shdeconv.evaluation.run_benchmark` (resumable: rerun with the same ``-o`` to continue)
and, at the default size, copies its report and figures to ``benchmarks/results/``
(``accuracy_cpu.md`` or ``accuracy_gpu.md`` by the device used, and ``accuracy_*.png``).

Usage: python benchmarks/accuracy.py [-o bench_out/accuracy] [--quick] [--seed 0] [--device auto]
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from shdeconv.evaluation import run_benchmark

logger = logging.getLogger("accuracy")

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("bench_out/accuracy"))
    parser.add_argument("--quick", action="store_true", help="small phantoms, few iterations (not copied)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    results = run_benchmark(args.output, size="quick" if args.quick else "default", seed=args.seed,
                            device=args.device)
    if not args.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        kind = "gpu" if results["machine"]["device"].startswith("cuda") else "cpu"
        shutil.copyfile(args.output / "results.md", RESULTS / f"accuracy_{kind}.md")
        for name in results["figures"]:
            shutil.copyfile(args.output / name, RESULTS / name)
        logger.info("copied results.md and %d figures to %s", len(results["figures"]), RESULTS)
    for f in results["failures"]:
        logger.error("%s/%s failed: %s", f["cell"], f["method"], f["error"])
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
