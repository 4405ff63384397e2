"""benchmarks/denoise_evidence.py end to end on quick phantoms, one scheme and a small brain."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs a benchmark script end to end

ROOT = Path(__file__).resolve().parents[2] / "benchmarks"


def test_denoise_evidence_tells_independent_voxels_from_bundles_brains_and_real_crops(tmp_path):
    out = tmp_path / "e.md"
    proc = subprocess.run([sys.executable, str(ROOT / "denoise_evidence.py"), "--seeds", "0", "--snrs", "20",
                           "--schemes", "clinical", "--size", "quick", "--brain-shape", "24,28,24",
                           "--markdown", str(out)],
                          env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, check=False,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert "--seeds 0 --snrs 20 --schemes clinical --size quick --brain-shape 24,28,24" in text
    rows = [re.split(r"\s*\|\s*", line)[1:-1] for line in text.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 4 + 1 + 6  # 2 kinds x (clean, all four); the brain; 4 + 1 + 1 real volumes
    for data, _, _, coherence, pairs, choice in rows:
        assert int(pairs) > 0
        expected = "none" if data.startswith("voxelwise") else "mppca"
        assert choice == expected, (data, coherence)
