"""benchmarks/gradient_check.py end to end on the quick phantom and the real crops (the brain
phantom's verdicts are tested in tests/direction/test_gradcheck.py)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs a benchmark script end to end

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gradient_check.py"


def test_gradient_check_script_counts_every_rule(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = tmp_path / "g.md"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--cases", "quick,real", "--seeds", "2",
                           "--markdown", str(out)], env=env, capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for case in ("quick", "real"):
        for rule in ("shipped", "blocks-z2", "block4-z2"):
            assert f"| {case} | {rule} |" in text, (case, rule)
    # the quick phantom of seed 2: its in-plane flips are found by every rule, its table is right
    assert "| quick | shipped | 0 / 1 |" in text
    assert text.count("| quick seed 2 | flip x |") == 3
    assert all(" found |" in line for line in text.splitlines() if line.startswith("| quick seed 2 | flip x |"))
