"""benchmarks/direct_speed.py end to end at a tiny shape (the real run is a 60 x 72 x 60 brain)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs a benchmark script end to end

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "direct_speed.py"


def test_direct_speed_script_times_every_arm_to_the_same_loss(tmp_path):
    args = [sys.executable, str(SCRIPT), "--shape", "16,18,16", "--iterations", "2", "--rounds", "1", "--allocator",
            "-o", str(tmp_path / "ds"), "--markdown", str(tmp_path / "ds.md")]
    proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.strip("|").split("|") for line in (tmp_path / "ds.md").read_text().splitlines()
            if line.startswith("| 1 |")]
    arms = [r[1].strip() for r in rows]
    assert arms == ["blocked", "one-block", "blocked + glibc trimming off", "one-block + glibc trimming off"]
    assert all(float(r[2]) > 0 for r in rows)
    losses = {float(r[-1]) for r in rows}
    assert len(losses) == 1  # the blocks change a sum's order, not the objective
    assert "blocked = " in (tmp_path / "ds.md").read_text()
    from shdeconv.evaluation.benchmark import cpu_model

    assert (tmp_path / "ds.md").read_text().startswith(f"Machine: {cpu_model()}, ")  # the CPU's model name


def test_direct_speed_script_refuses_unknown_arms(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--arms", "blocked,fast", "-o", str(tmp_path)],
                          capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 2 and "--arms" in proc.stderr
