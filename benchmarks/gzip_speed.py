"""Gzip speed of the NIfTI reads and writes: ISA-L (``isal.igzip``, what shdeconv uses) against
Python's ``gzip`` (zlib, what nibabel uses and shdeconv falls back to), on whole-brain files.

The files: a brain phantom's ``dwi.nii.gz`` (90 x 108 x 90, clinical b0 + 30 directions or
HCP-like b0 + 3 x 90, as ``benchmarks/wholebrain.py`` simulates it) read by ``load_dwi``'s
chunked reader and written again, and the fODF ``predict`` writes for it (45 SH coefficients per
voxel), written by ``atomic_save_nifti``.
Both compressors in the same process, rounds alternating, medians; every file written by one is
read back by the other and compared bit for bit.

Usage: python benchmarks/gzip_speed.py [-o bench_out/gzip] [--scheme clinical|multishell] [--data DIR] [--fodf FILE]
       [--rounds 5] [--markdown benchmarks/results/gzip_speed_cpu.md]
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import statistics
import time
from pathlib import Path

from _report import brain_fodf, publish

logger = logging.getLogger("gzip_speed")


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, default=Path("bench_out/gzip"))
    p.add_argument("--data", type=Path, default=None,
                   help="folder with dwi.nii.gz, bvals, bvecs, mask.nii.gz (default: simulate the clinical brain)")
    p.add_argument("--fodf", type=Path, default=None, help="an fODF image to write (with --data)")
    p.add_argument("--scheme", default="clinical", choices=["clinical", "multishell"],
                   help="scheme of the simulated brain (multishell: HCP-like, 3 x 90 directions)")
    p.add_argument("--shape", default="90,108,90", help="shape of the simulated brain (smaller for a smoke test)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--markdown", type=Path, default=None)
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error(f"--rounds must be >= 1, got {args.rounds}")
    if (args.data is None) != (args.fodf is None):
        p.error("--data and --fodf go together (without them the brain phantom and its fODF are made)")
    if args.data is not None and (args.scheme != "clinical" or args.shape != "90,108,90"):
        p.error("--scheme and --shape describe the simulated brain: not with --data")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import nibabel as nib
    import numpy as np
    import torch

    from shdeconv.evaluation.benchmark import cpu_model
    from shdeconv.io import _gzip, atomic_save_nifti
    from shdeconv.io._nifti import _read_float32

    if _gzip.backend() != "isal.igzip":
        raise SystemExit("isal is not installed: nothing to compare")
    if args.data is None:
        logger.info("the %s brain volume and predict's fODF for it (made once)", args.scheme)
        data, fodf_path = brain_fodf(args.output, args.scheme, args.shape)
    else:
        data, fodf_path = args.data, args.fodf
    dwi_path = data / "dwi.nii.gz"
    fodf_img = nib.load(fodf_path)
    fodf = np.asarray(fodf_img.dataobj, dtype=np.float32)
    dwi = _read_float32(nib.load(dwi_path), dwi_path)

    impls = {"isal": _gzip._impl, "zlib": gzip}
    times = {name: {"read": [], "write_fodf": [], "write_dwi": []} for name in impls}
    sizes = {}
    work = args.output / "files"
    work.mkdir(parents=True, exist_ok=True)
    try:
        for r in range(args.rounds):  # reads and writes apart: a write's fsync is not a read's cost
            for name, impl in impls.items():
                _gzip._impl = impl
                t, got = _timed(lambda: _read_float32(nib.load(dwi_path), dwi_path))
                times[name]["read"].append(t)
                if not np.array_equal(got, dwi):
                    raise RuntimeError(f"{name} read different data")
                del got
        for r in range(args.rounds):
            for name, impl in impls.items():
                _gzip._impl = impl
                for what, arr in (("fodf", fodf), ("dwi", dwi)):
                    out = work / f"{what}-{name}.nii.gz"
                    t, _ = _timed(lambda: atomic_save_nifti(arr, fodf_img.affine, out))
                    times[name][f"write_{what}"].append(t)
                    sizes[(name, what)] = os.path.getsize(out)
                logger.info("round %d/%d %s: %s", r + 1, args.rounds, name,
                            {k: round(v[-1], 3) for k, v in times[name].items()})
        for what, arr in (("fodf", fodf), ("dwi", dwi)):  # each compressor's file, read by the other
            for writer, reader in (("isal", "zlib"), ("zlib", "isal")):
                path = work / f"{what}-{writer}.nii.gz"
                _gzip._impl = impls[reader]
                if not np.array_equal(_read_float32(nib.load(path), path), arr):
                    raise RuntimeError(f"{path} does not read back as written")
    finally:
        _gzip._impl = impls["isal"]

    med = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}
    mb = {"read": dwi.nbytes / 1e6, "write_fodf": fodf.nbytes / 1e6, "write_dwi": dwi.nbytes / 1e6}
    rows = [("read `dwi.nii.gz` (`load_dwi`'s reader)", "read", None),
            ("write `fodf.nii.gz` (`atomic_save_nifti`, level 1)", "write_fodf", "fodf"),
            ("write the dwi as `.nii.gz` (level 1)", "write_dwi", "dwi")]
    lines = [f"Machine: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}; "
             f"isal {_version('isal')}, zlib {_zlib_version()}, nibabel {nib.__version__}.",
             f"Command: `python benchmarks/gzip_speed.py --rounds {args.rounds}"
             + ("" if args.data else f" --scheme {args.scheme}")
             + (f" --shape {args.shape}" if args.shape != "90,108,90" else "") + "`; one thread, medians of "
             f"{args.rounds} rounds alternating the two (reads first, then writes). "
             f"Files: `{dwi_path.name}` {dwi.shape} ({mb['read']:.0f} MB of float32), "
             f"the fODF {fodf.shape} ({mb['write_fodf']:.0f} MB).", "",
             "| operation | MB (uncompressed) | zlib s | ISA-L s | zlib / ISA-L | compressed MB zlib / ISA-L |",
             "|---|---:|---:|---:|---:|---:|"]
    for label, key, what in rows:
        z, i = med["zlib"][key], med["isal"][key]
        size = "-" if what is None else f"{sizes[('zlib', what)] / 1e6:.1f} / {sizes[('isal', what)] / 1e6:.1f}"
        lines.append(f"| {label} | {mb[key]:.0f} | {z:.2f} | {i:.2f} | {z / i:.2f}x | {size} |")
    lines += ["", "Every file written by one compressor was read back by the other, bit for bit."]
    publish("\n".join(lines), args.markdown)
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def _zlib_version() -> str:
    import zlib

    return zlib.ZLIB_RUNTIME_VERSION


if __name__ == "__main__":
    raise SystemExit(main())
