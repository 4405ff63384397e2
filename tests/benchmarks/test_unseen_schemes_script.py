"""benchmarks/unseen_schemes.py end to end on quick phantoms (the real run uses the default size)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs a benchmark script end to end

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "unseen_schemes.py"


def test_unseen_schemes_script_scores_every_arm(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--size", "quick", "--snrs", "20",
                           "--schemes", "b3000,ukbiobank", "-o", str(tmp_path / "u"),
                           "--markdown", str(tmp_path / "u.md")],
                          env=env, capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "u.md").read_text()
    assert "## b3000, SNR 20" in text and "## ukbiobank, SNR 20" in text
    for name, n in (("SHD-TV amortized (shipped model, predict)", 2), ("fit (its defaults; denoising: mppca)", 2),
                    ("DIPY CSD", 1), ("MP-PCA + DIPY CSD", 1), ("DIPY CSD (b=2000 shell)", 1),
                    ("MP-PCA + DIPY CSD (b=2000 shell)", 1)):
        rows = [line for line in text.splitlines() if line.startswith(f"| {name} |")]
        assert len(rows) == n, name
        overall = [float(re.split(r"\s*\|\s*", r)[6]) for r in rows]  # success all
        assert all(0 < v <= 1 for v in overall), rows
