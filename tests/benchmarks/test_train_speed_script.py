"""benchmarks/train_speed.py trains the shipped configuration and reports a float32 row per batch size."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs a benchmark script end to end

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_speed.py"


def test_train_speed_script_reports_each_batch(tmp_path):
    md = tmp_path / "ts.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--size", "quick", "--batches", "1,2", "--steps", "3",
                           "--warmup", "1", "-o", str(tmp_path / "o"), "--markdown", str(md)],
                          env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [re.split(r"\s*\|\s*", line.strip())[1:-1] for line in md.read_text().splitlines()
            if re.match(r"\| \d+ \| float32 \|", line)]
    assert [r[0] for r in rows] == ["1", "2"]  # CPU: no bfloat16 arm
    for r in rows:
        assert float(r[2]) > 0 and float(r[3]) > 0 and r[4] == "1.00" and r[6] == "-"
    assert "bfloat16" not in md.read_text()
