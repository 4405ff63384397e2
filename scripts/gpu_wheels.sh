#!/usr/bin/env bash
# Downloads into .whl/ (git-ignored) the wheels of the dependencies that the lent GPU machines'
# image lacks, for its Python (CPython 3.12, x86-64 Linux), at the versions installed in .venv,
# so that the GPU run uses what the CPU tests used. That image already holds torch, numpy,
# scipy, matplotlib, h5py, tqdm, typer, packaging and PyYAML; it cannot reach PyPI, so the
# wheels travel with the working tree and benchmarks/gpu_run.sh installs them first.
#
#   bash scripts/gpu_wheels.sh          # then carry .whl with the call that runs gpu_run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
NAMES="nibabel dipy trx-python deepdiff orderly-set healpy astropy astropy-iers-data pyerfa isal"
SPECS=$("$PY" - $NAMES <<'PY'
import sys
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in sys.argv[1:]))
PY
)
rm -rf .whl
mkdir -p .whl
# pip matches a manylinux tag exactly: name the ones these projects publish
PLATFORMS=""
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
           manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS="$PLATFORMS --platform $tag"
done
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  $PLATFORMS -d .whl $SPECS
ls .whl
du -sh .whl
