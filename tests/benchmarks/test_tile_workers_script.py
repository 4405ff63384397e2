"""benchmarks/tile_workers.py end to end at a tiny shape (the real run is the 90 x 108 x 90 brain)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shdeconv.models import DeconvNet, NetworkConfig
from shdeconv.models._store import save_model

pytestmark = pytest.mark.slow  # runs a benchmark script end to end

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "tile_workers.py"


def test_tile_workers_script_compares_one_and_two_workers(tmp_path):
    torch.manual_seed(0)
    save_model(tmp_path / "m.pt", DeconvNet(NetworkConfig(inputs="linear", width=4, K=2, head="linear", nside=4, lmax=8), n_iso=2))
    args = [sys.executable, str(SCRIPT), "--shape", "20,24,20", "--repeats", "1", "-o", str(tmp_path / "wb"),
            "--model", str(tmp_path / "m.pt"), "--markdown", str(tmp_path / "tw.md")]
    proc = subprocess.run(args, env=dict(os.environ, OMP_NUM_THREADS="2"), capture_output=True, text=True,
                          check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = [line for line in (tmp_path / "tw.md").read_text().splitlines() if line.startswith("| 1 |")]
    assert len(row) == 1
    _, a, b, speedup, diff = (c.strip() for c in row[0].strip("|").split("|"))
    assert float(a) > 0 and float(b) > 0 and speedup.endswith("x")
    assert float(diff) < 1e-4  # the same volume either way
    # one torch thread: nothing to compare, a clear error
    proc = subprocess.run(args, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          check=False, timeout=600)
    assert proc.returncode == 2 and "nothing to compare" in proc.stderr
