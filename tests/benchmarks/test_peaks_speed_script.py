"""benchmarks/peaks_speed.py end to end on a small brain, against the committed code."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _tables import table_rows

pytestmark = pytest.mark.slow  # simulates a phantom, runs predict and two extraction processes

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "peaks_speed.py"


def test_peaks_speed_times_both_arms_and_compares_their_peaks(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--shape", "24,28,24", "--rounds", "1", "--baseline", "HEAD",
                           "-o", str(tmp_path / "o"), "--markdown", str(tmp_path / "o.md")],
                          env=env, capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "o.md").read_text()
    assert len(table_rows(text, first="1")) == 2
    assert "x the speed" in text
    same = float(text.split("with the same number of peaks: ")[1].split()[0])
    assert same > 0.99  # the committed code and this tree extract (nearly) the same peaks


def test_peaks_speed_refuses_zero_rounds_and_ignored_options(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "0", "-o", str(tmp_path)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 2 and "--rounds" in proc.stderr
    proc = subprocess.run([sys.executable, str(SCRIPT), "--fodf", "f.nii.gz", "--shape", "20,20,20"],
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 2 and "--shape" in proc.stderr  # it would be ignored: refused
