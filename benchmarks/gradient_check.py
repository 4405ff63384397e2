"""The gradient-table check (``shdeconv check-gradients``, run by every command): how often it
flags a correct table (false alarms) and how often it finds a wrong one (power).

Cases, each checked with the table as given and with four wrong tables (x, y or z flipped, x
and y swapped):

* ``quick``: the quick spatial phantoms (16 x 16 x 6, clinical, SNR 20), ``--seeds``;
* ``spatial``: larger spatial phantoms (``--spatial-shape``, default 48 x 48 x 16);
* ``brain``: the whole-brain phantom of ``benchmarks/wholebrain.py`` (``--brain-shapes``: 90 x
  108 x 90 at 2 mm, and smaller grids of the same design).
  Its fibres follow smooth random fields that are not tangent to their own paths, so no table
  makes them coherent: a check should find nothing there, whatever the table;
* ``real``: DIPY's ``small_64D``, ``small_101D`` and ``small_25`` with their given tables.

A wrong table counts as flagged when the check reports it, and as undone when the suggested
table also turns it back into the true one (up to the sign of the whole table; where every
fibre lies nearly in one plane a flip across that plane cannot be seen, so a suggestion may
differ from the truth by it). ``--rules`` compares verdict rules: ``shipped`` (the jackknife standard error
is the largest over 4-, 8- and 16-voxel blocks that leave at least 30 blocks, and the best of the
23 alternatives must beat the given table by 2.85 of them), ``blocks-z2`` (the same blocks, 2
standard errors) and ``block4-z2`` (fixed 4-voxel blocks, 2 standard errors: the earlier rule).

Usage: python benchmarks/gradient_check.py [--cases quick,spatial,brain,real] [--seeds 0,1,2]
       [--markdown benchmarks/results/gradient_check_cpu.md]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
from _report import publish

import shdeconv.direction._gradcheck as gradcheck

WRONG = {
    "flip x": np.diag([-1.0, 1.0, 1.0]),
    "flip y": np.diag([1.0, -1.0, 1.0]),
    "flip z": np.diag([1.0, 1.0, -1.0]),
    "swap x-y": np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
}
LEGEND = """Rules: `shipped`, the jackknife error is the largest over 4-, 8- and 16-voxel blocks that leave
at least 30 blocks and the best of the 23 alternatives must beat the given table by 2.85 of them
(a family-wise 5% level); `blocks-z2`, the same blocks and 2 errors; `block4-z2`, 4-voxel blocks
and 2 errors (the earlier rule). Cases: `quick` 16 x 16 x 6 and `spatial` 48 x 48 x 16 bundle
phantoms (clinical, SNR 20); `brain` the whole-brain phantom at 90 x 108 x 90 and two smaller
grids, whose fibres follow smooth random fields, not their own paths, so that no table makes
them coherent; `real` DIPY's small_64D, small_101D and small_25 with their given tables.
Wrong tables: x, y or z flipped, x and y swapped; undone: the suggested table is the true one
(up to the sign of the whole table)."""

#: rule: (jackknife block sides, z margin)
RULES = {"shipped": (gradcheck.JACKKNIFE_BLOCKS, gradcheck.Z_MARGIN), "blocks-z2": (gradcheck.JACKKNIFE_BLOCKS, 2.0),
         "block4-z2": ((4,), 2.0)}


def _machine() -> str:
    from shdeconv.evaluation.benchmark import machine_info

    m = machine_info("cpu")
    return f"Machine: {m['cpu']}, {m['cpu_count']} CPUs; shdeconv {m['shdeconv']}, DIPY {m['dipy']}."


def _undoes(result, corruption: np.ndarray) -> bool:
    p = result.best_matrix @ corruption
    return bool(np.allclose(p, np.eye(3)) or np.allclose(p, -np.eye(3)))


def _volumes(case: str, seeds: list[int], spatial_shape: tuple[int, int, int], brain_shapes: list[tuple]):
    """Yield (name, dwi, bvals, fsl bvecs, affine, mask, has_truth_table)."""
    from shdeconv.io import world_to_fsl_bvecs

    if case in ("quick", "spatial", "brain"):
        from shdeconv.sim import spatial_phantom
        from shdeconv.sim._brain import brain_phantom

        for seed in seeds:
            if case == "quick":
                ph = spatial_phantom(scheme="clinical", snr=20, seed=seed, size="quick")
            elif case == "spatial":
                ph = spatial_phantom(spatial_shape, scheme="clinical", snr=20, seed=seed)
            else:
                for shape in brain_shapes:
                    ph = brain_phantom(shape, scheme="clinical", snr=20, seed=seed)
                    yield (f"brain {'x'.join(map(str, shape))} seed {seed}", ph.dwi, ph.bvals,
                           world_to_fsl_bvecs(ph.directions_world, ph.affine), ph.affine, ph.mask)
                continue
            yield (f"{case} seed {seed}", ph.dwi, ph.bvals, world_to_fsl_bvecs(ph.directions_world, ph.affine),
                   ph.affine, ph.mask)
    elif case == "real":
        import nibabel as nib
        from dipy.data import get_fnames
        from dipy.io import read_bvals_bvecs

        for name in ("small_64D", "small_101D", "small_25"):
            img_path, bval_path, bvec_path = get_fnames(name=name)[:3]
            img = nib.load(img_path)
            bvals, bvecs = read_bvals_bvecs(bval_path, bvec_path)
            yield name, img.get_fdata(dtype=np.float32), bvals, bvecs, img.affine, None
    else:
        raise SystemExit(f"unknown case {case!r}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="quick,spatial,brain,real")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--brain-seeds", default="0,1,2", help="seeds of the whole-brain phantom")
    p.add_argument("--brain-shapes", default="90,108,90;60,72,60;48,56,48")
    p.add_argument("--spatial-shape", default="48,48,16")
    p.add_argument("--rules", default=",".join(RULES))
    p.add_argument("--markdown", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    seeds = [int(s) for s in args.seeds.split(",")]
    brain_seeds = [int(s) for s in args.brain_seeds.split(",")]
    shape = tuple(int(s) for s in args.spatial_shape.split(","))
    brain_shapes = [tuple(int(s) for s in b.split(",")) for b in args.brain_shapes.split(";")]
    rules = args.rules.split(",")

    rows = []
    t0 = time.perf_counter()
    for case in args.cases.split(","):
        for name, dwi, bvals, bvecs, affine, mask in _volumes(case, brain_seeds if case == "brain" else seeds, shape,
                                                                   brain_shapes):
            wrongs = {"as given": np.eye(3)} if case == "real" else {"as given": np.eye(3), **WRONG}
            for table, m in wrongs.items():
                for rule in rules:
                    gradcheck.JACKKNIFE_BLOCKS, gradcheck.Z_MARGIN = RULES[rule]
                    r = gradcheck.check_gradients(dwi, bvals, bvecs @ m.T, affine, mask)
                    if table == "as given":
                        verdict = "false alarm" if r.clearly_better else "ok"
                    else:
                        verdict = ("missed" if not r.clearly_better else "found" if _undoes(r, m)
                                   else "flagged, other fix")
                    rows.append((case, name, table, rule, r.best_label, r.z_score, r.relative_gain, verdict))
                    print(f"{name:22s} {table:9s} {rule:8s} best {r.best_label:26s} z {r.z_score:5.2f} "
                          f"rel {r.relative_gain:4.2f} {verdict}", flush=True)
    gradcheck.JACKKNIFE_BLOCKS, gradcheck.Z_MARGIN = RULES["shipped"]

    lines = [
        "# The gradient-table check: false alarms and power (`benchmarks/gradient_check.py`)",
        "",
        _machine(),
        f"Command: `python benchmarks/gradient_check.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
        f" ({time.perf_counter() - t0:.0f} s)",
        "",
        "| case | rule | correct tables flagged | wrong tables flagged | of which undone |",
        "|---|---|---:|---:|---:|",
    ]
    for case in dict.fromkeys(r[0] for r in rows):
        for rule in rules:
            sel = [r for r in rows if r[0] == case and r[3] == rule]
            given = [r for r in sel if r[2] == "as given"]
            wrong = [r for r in sel if r[2] != "as given"]
            flagged = sum(r[7] != "missed" for r in wrong)
            found = f"{flagged} / {len(wrong)} | {sum(r[7] == 'found' for r in wrong)}" if wrong else "- | -"
            lines.append(f"| {case} | {rule} | {sum(r[7] == 'false alarm' for r in given)} / {len(given)} "
                         f"| {found} |")
    lines += ["", LEGEND, "", "Every check:", "", "| volume | table | rule | best candidate | z | share of spread | verdict |",
              "|---|---|---|---|---:|---:|---|"]
    lines += [f"| {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]:.2f} | {r[6]:.2f} | {r[7]} |" for r in rows]
    publish("\n".join(lines) + "\n", args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
