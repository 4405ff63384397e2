"""benchmarks/wholebrain.py end to end at a tiny shape (the real run is 90 x 108 x 90)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shdeconv.models import DeconvNet, NetworkConfig
from shdeconv.models._store import save_model

pytestmark = pytest.mark.slow  # runs a benchmark script end to end

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "wholebrain.py"


def test_wholebrain_script_runs_every_arm(tmp_path):
    torch.manual_seed(0)
    save_model(tmp_path / "m.pt", DeconvNet(NetworkConfig(inputs="linear", width=4, K=2, head="linear", nside=4, lmax=8), n_iso=2))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--schemes", "clinical", "--shape", "20,24,20",
                           "-o", str(tmp_path / "wb"), "--model", str(tmp_path / "m.pt"), "--score",
                           "--markdown", str(tmp_path / "wb.md")],
                          env=env, capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "wb" / "results.json").read_text())
    assert [r["method"] for r in rows] == ["predict", "predict-overlap0.125", "csd", "csd-parallel"]
    assert all(r["voxels"] > 1000 and r["core_s"] > 0 and 0 <= r["success"] <= 1 for r in rows)
    assert [r["overlap"] for r in rows[:2]] == [0.25, 0.125]
    text = (tmp_path / "wb.md").read_text()
    assert "predict throughput =" in text and "predict-overlap0.125 throughput =" in text and "voxels/s" in text
    # where the time went, for every arm
    assert "| scheme | method | load: read | load: mask | load: gradient check |" in text
    assert all(set(r["stages"]) == {"load", "write"} and r["stages"]["write"]["peaks"] > 0 for r in rows)
    stage_rows = [line for line in text.split("Where the time goes")[1].splitlines() if line.startswith("| clinical |")]
    assert len(stage_rows) == 4
    # a subset of the arms (the GPU run skips the serial CSD), on the simulated data already there,
    # and fit at its defaults (MP-PCA, the start auto resolves to: predict on this one b=1000 shell)
    proc = subprocess.run([sys.executable, str(SCRIPT), "--schemes", "clinical", "--shape", "20,24,20",
                           "-o", str(tmp_path / "wb"), "--model", str(tmp_path / "m.pt"), "--methods",
                           "predict-overlap0,predict-auto,fit", "--fit-iterations", "20", "--score"],
                          env=env, capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "wb" / "results.json").read_text())
    assert [(r["method"], r.get("overlap")) for r in rows] == [("predict-overlap0", 0.0), ("predict-auto", 0.25),
                                                                ("fit", None)]
    assert [r["denoise"] for r in rows] == ["none", "mppca", "mppca"]  # auto decides MP-PCA on a brain
    assert rows[2]["start"] == "predict" and 0 <= rows[1]["success"] <= 1 and 0 <= rows[2]["success"] <= 1
    assert rows[2]["iterations"] == 20 and "--fit-iterations 20" in (tmp_path / "wb" / "results.md").read_text()
    assert "throughput =" not in (tmp_path / "wb" / "results.md").read_text()
    for wrong in ("predict,fast", "predict-overlap1.5"):
        bad = subprocess.run([sys.executable, str(SCRIPT), "--methods", wrong], env=env, capture_output=True,
                             text=True, check=False, timeout=120)
        assert bad.returncode == 2 and "--methods" in bad.stderr
    bad = subprocess.run([sys.executable, str(SCRIPT), "--fit-iterations", "0"], env=env, capture_output=True,
                         text=True, check=False, timeout=120)
    assert bad.returncode == 2 and "--fit-iterations" in bad.stderr


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_an_arms_peak_memory_is_its_own():
    """A process spawned by a parent holding 400 MiB reports its own peak, not the parent's
    (ru_maxrss after fork + exec keeps the parent's)."""
    import numpy as np

    held = np.ones(400 * 2**20 // 8)  # touched: resident in this process
    code = f"import sys; sys.path.insert(0, {str(SCRIPT.parent)!r}); from wholebrain import peak_rss_gib; print(peak_rss_gib())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert float(proc.stdout) < 0.3, proc.stdout
    assert held[-1] == 1.0
