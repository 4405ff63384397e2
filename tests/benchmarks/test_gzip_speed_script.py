"""benchmarks/gzip_speed.py end to end on a small brain (the real run uses 90 x 108 x 90)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _tables import table_rows

pytestmark = pytest.mark.slow  # simulates a phantom and runs predict

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gzip_speed.py"


def test_gzip_speed_times_both_compressors_and_cross_reads(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--shape", "24,28,24", "--rounds", "1",
                           "-o", str(tmp_path / "o"), "--markdown", str(tmp_path / "o.md")],
                          env=env, capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "o.md").read_text()
    rows = [cells for cells in table_rows(text) if cells[0].startswith(("read", "write"))]
    assert len(rows) == 3
    for cells in rows:
        zlib_s, isal_s = float(cells[2]), float(cells[3])
        assert zlib_s >= 0 and isal_s >= 0 and cells[4].endswith("x")
    assert "read back by the other, bit for bit" in text
    assert (tmp_path / "o" / "predict-data-clinical" / "fodf.nii.gz").exists()


def test_gzip_speed_refuses_zero_rounds_and_ignored_options(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--rounds", "0", "-o", str(tmp_path)],
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 2 and "--rounds" in proc.stderr
    for args, named in ((["--fodf", "f.nii.gz"], "--data and --fodf"),
                        (["--data", "d", "--fodf", "f.nii.gz", "--scheme", "multishell"], "--scheme and --shape")):
        proc = subprocess.run([sys.executable, str(SCRIPT), *args, "-o", str(tmp_path)],
                              capture_output=True, text=True, check=False, timeout=120)
        assert proc.returncode == 2 and named in proc.stderr  # an option that would be ignored is refused
