"""benchmarks/robustness.py and benchmarks/real_subsampled.py end to end, on quick phantoms and a
subset of the methods (the real runs use the default size and every method)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _tables import table_rows

pytestmark = pytest.mark.slow  # runs benchmark scripts end to end

ROOT = Path(__file__).resolve().parents[2] / "benchmarks"
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def test_robustness_script_scores_and_tracks_every_arm(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "robustness.py"), "--size", "quick", "--kinds",
                           "clean,all,voxelwise-all", "--methods", "predict,csd+localpca", "--track",
                           "-o", str(tmp_path / "r"), "--markdown", str(tmp_path / "r.md")],
                          env=ENV, capture_output=True, text=True, check=False, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "r.md").read_text()
    assert "--methods predict,csd+localpca --kinds clean,all,voxelwise-all" in text  # the command as run
    scores, tracking = text.split("Tractography")
    success = table_rows(scores, first="20")
    assert [r[1] for r in success] == ["clean", "all four", "voxel-wise phantom, all four"]
    for r in success:
        for cell in r[2:]:
            overall = float(cell.split(" / ")[0])
            assert 0 < overall <= 1, r
    tracked = table_rows(tracking, first="20")  # spatial phantoms only, each method; MRtrix3 columns where installed
    assert len(tracked) == 4 and {r[2] for r in tracked} == {"predict (shipped model)", "local PCA + DIPY CSD"}
    for r in tracked:
        for cell in r[3:]:
            valid = float(cell.split(" / ")[0])
            assert 0 < valid <= 1, r


def test_real_subsampled_script_compares_each_method_with_itself_and_csd(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "real_subsampled.py"), "--methods", "predict,csd",
                           "-o", str(tmp_path / "s"), "--markdown", str(tmp_path / "s.md")],
                          env=ENV, capture_output=True, text=True, check=False, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "s.md").read_text()
    assert text.count("## FA > ") == 4
    for method in ("predict", "csd"):
        rows = table_rows(text, first=method)
        assert len(rows) == 4, method
        for r in rows:
            angles = [float(c.split(" / ")[0]) for c in r[1:]]
            assert all(0 <= a < 45 for a in angles), r
    # against itself on all 64 directions: identical there
    assert table_rows(text, first="predict")[0][1] == "0.0 / 1.00"
