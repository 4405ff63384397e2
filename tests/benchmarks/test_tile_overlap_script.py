"""benchmarks/tile_overlap.py end to end on a quick phantom (the real run uses the default size)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _tables import table_rows

pytestmark = pytest.mark.slow  # runs a benchmark script end to end

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "tile_overlap.py"


def test_tile_overlap_script_scores_every_overlap(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--size", "quick", "--snrs", "20", "--schemes", "clinical",
                           "--overlaps", "0,0.5", "--tiles", "12", "-o", str(tmp_path / "o"),
                           "--markdown", str(tmp_path / "o.md")],
                          env=env, capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "o.md").read_text()
    summary = {(int(cells[0]), float(cells[1])): [float(c) for c in cells[2:]]
               for cells in table_rows(text.split("## Per phantom")[0]) if cells[0].isdigit()}
    # the default is always measured: it is the reference; a 12^3 tile keeps its 2-voxel overlap
    assert sorted(summary) == [(8, 0.0), (8, 0.25), (8, 0.5), (12, 0.167)]
    assert summary[(8, 0.25)][0] == 1.0
    for ratio, success_all, *_ in summary.values():
        assert ratio > 0 and 0 < success_all <= 1
    assert len([line for line in text.splitlines() if line.startswith("| clinical | 20 |")]) == 4
    assert (tmp_path / "o" / "clinical-snr20" / "predict-overlap0.25" / "fodf.nii.gz").exists()
    report = (tmp_path / "o" / "clinical-snr20" / "predict-tile12" / "report.json").read_text()
    assert '"tile": 12' in report
