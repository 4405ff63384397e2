"""benchmarks/predict_batch.py runs and reports both Chebyshev modes, the tile workers and auto_batch's choice."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs a benchmark script end to end

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "predict_batch.py"


def test_predict_batch_script_reports_both_modes(tmp_path):
    md = tmp_path / "pb.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--batches", "1,2", "--repeats", "1", "--markdown", str(md)],
                          env=dict(os.environ, OMP_NUM_THREADS="2"), capture_output=True, text=True,
                          check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = md.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| sparse") or line.startswith("| dense")]
    # sparse, dense, and (two torch threads) dense on two tile workers of one thread each
    assert len(rows) == 3 and all(float(v) > 0 for r in rows for v in r.strip("|").split("|")[1:])
    assert "2 tile workers x 1 thread(s) (predict)" in rows[2]
    assert "`auto_batch` chooses" in text and "each of 2 tile worker(s)" in text
