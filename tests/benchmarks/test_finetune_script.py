"""benchmarks/finetune.py end to end on a quick phantom (the real run uses the default size)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _tables import table_rows

pytestmark = pytest.mark.slow  # runs a benchmark script end to end

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "finetune.py"


def _run(tmp_path, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, str(SCRIPT), "--size", "quick", "-o", str(tmp_path / "o"), *args],
                          env=env, capture_output=True, text=True, check=False, timeout=600)


def test_finetune_script_arms_reach_the_steps(tmp_path):
    proc = _run(tmp_path, "--cells", "voxelwise:clinical:20", "--arms", "1/1e-12,3,3@0.1",
                "--markdown", str(tmp_path / "o.md"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (tmp_path / "o.md").read_text()
    rows = {cells[1]: [float(c) for c in cells[3:]]
            for cells in table_rows(text.split("## Per phantom")[1], first="voxelwise:clinical:20")}
    assert set(rows) == {"predict", "finetune 1/1e-12", "finetune 3", "finetune 3@0.1"}
    # a step that cannot move the weights reproduces predict: fine-tuning changes nothing else
    assert rows["finetune 1/1e-12"] == rows["predict"]
    folder = tmp_path / "o" / "voxelwise-clinical-20"
    fodf = {d: np.asarray(nib.load(str(folder / d / "fodf.nii.gz")).dataobj)
            for d in ("predict", "finetune-3", "finetune-3w0.1")}
    assert not np.allclose(fodf["finetune-3"], fodf["predict"])  # the steps ran
    assert not np.allclose(fodf["finetune-3"], fodf["finetune-3w0.1"])  # the prior weight reached them
    assert json.loads((folder / "finetune-3w0.1" / "report.json").read_text())["finetune"] == 3
    assert re.search(r"\| finetune 3@0\.1 \| [0-9]+ \| [0-9.]+ \|", text)  # the summary row


def test_finetune_script_refuses_a_malformed_arm_before_simulating(tmp_path):
    proc = _run(tmp_path, "--arms", "50,x@1")
    assert proc.returncode != 0 and "ValueError" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_finetune_script_denoises_every_arm(tmp_path):
    proc = _run(tmp_path, "--cells", "spatial:clinical:20", "--arms", "1", "--denoise", "mppca",
                "--markdown", str(tmp_path / "o.md"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "o" / "spatial-clinical-20"
    for arm in ("predict", "finetune-1"):
        assert json.loads((folder / arm / "report.json").read_text())["denoise"] == "mppca", arm
    text = (tmp_path / "o.md").read_text()
    assert "every arm on the MP-PCA-denoised signal" in text and "--denoise mppca`" in text
