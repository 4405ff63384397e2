"""benchmarks/precision.py end to end on quick phantoms (the real run uses the default size)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from _tables import table_rows

pytestmark = pytest.mark.slow  # runs a benchmark script end to end

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "precision.py"


def test_precision_script_scores_both_precisions_and_their_agreement(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--size", "quick", "--snrs", "20", "--schemes", "clinical",
                           "-o", str(tmp_path / "o"), "--markdown", str(tmp_path / "o.md"),
                           "--volume", str(tmp_path / "o" / "spatial-clinical-snr20" / "phantom"), "--rounds", "2"],
                          env=env, capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "o.md").read_text()
    summary = {cells[0]: [float(c) for c in cells[1:]] for cells in table_rows(text.split("## Per phantom")[0])
               if cells[0] in ("float32", "bfloat16")}
    assert set(summary) == {"float32", "bfloat16"} and summary["float32"][0] == 1.0
    assert abs(summary["bfloat16"][1] - summary["float32"][1]) < 0.03  # success all
    rows = [cells for cells in table_rows(text) if cells[:3] in (["spatial", "clinical", "20"],
                                                                  ["voxelwise", "clinical", "20"])]
    assert len(rows) == 2
    for cells in rows:
        assert 1e-4 < float(cells[-2]) < 0.03  # relative difference: bfloat16 ran, and only rounded
    for d in ("predict-float32", "predict-bfloat16"):
        assert (tmp_path / "o" / "spatial-clinical-snr20" / d / "fodf.nii.gz").exists()
    volume = text.split("## Network phase on")[1].split("## Profile")[0]
    assert re.search(r"\| float32 \| [0-9]+ \| [0-9.]+, [0-9.]+ \| [0-9.]+ \| 1\.00 \|", volume)
    assert re.search(r"\| bfloat16 \| [0-9]+ \| [0-9.]+, [0-9.]+ \| [0-9.]+ \| [0-9.]+ \|", volume)
    rel = float(re.search(r"bfloat16 vs float32: ([0-9]+\.[0-9]+)", volume).group(1))
    assert 1e-4 < rel < 0.03
    profile = text.split("## Profile")[1]
    assert "| `aten::bmm` |" in profile and re.search(r"\| all \| [0-9.]+ \| [0-9.]+ \|", profile)
    assert '"precision": "bfloat16"' in (tmp_path / "o" / "spatial-clinical-snr20" / "predict-bfloat16"
                                        / "report.json").read_text()
