"""benchmarks/published_scale.py times each arm in its own process and reports same-code ratios."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs a benchmark script end to end

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "published_scale.py"


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, str(SCRIPT), *args], env=dict(os.environ, OMP_NUM_THREADS="2"),
                          capture_output=True, text=True, check=False, timeout=timeout)


def test_layer_table_with_ratios(tmp_path):
    md = tmp_path / "ps.md"
    proc = _run("--arms", "SHD,ours", "--patches", "", "--reps", "1", "--markdown", str(md))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r.split("|")[1].strip(): r.strip("|").split("|") for r in md.read_text().splitlines()
            if r.startswith(("| SHD", "| ours"))}
    assert set(rows) == {"SHD", "ours"}
    for cells in rows.values():
        assert cells[1].strip() == "18,496"  # 32 x 64 x (K 5 + 4 distance classes) + 64 biases, both arms
        assert float(cells[2]) > 0 and float(cells[3]) > 0  # forward, forward+backward ms
    assert rows["ours"][7].strip() == "1.00x"  # time relative to ours
    assert rows["SHD"][5].strip() == "-"  # no RT-ESD arm: no ratio against it
    floor = [r for r in md.read_text().splitlines() if r.startswith("Our layer's class mixing alone")]
    assert len(floor) == 1 and "float32" in floor[0], md.read_text()
    gemm_ms = float(floor[0].split(": ")[1].split(" ms")[0])
    # the layer's three GEMMs are most of it (about 0.7 of its time): timed alone, not much more
    assert 0 < gemm_ms < 1.5 * float(rows["ours"][3])


def test_bad_reference_and_arms_are_refused(tmp_path):
    proc = _run("--reference", str(tmp_path), "--patches", "")
    assert proc.returncode == 2 and "conv_benchmark" in proc.stderr
    proc = _run("--arms", "ours,nope", "--patches", "")
    assert proc.returncode == 2 and "nope" in proc.stderr
    proc = _run("--dtype", "float16", "--patches", "")
    assert proc.returncode == 2 and "float16" in proc.stderr


def test_bfloat16_arms_and_a_failed_arm_reported_not_dropped(tmp_path):
    ref = tmp_path / "conv_benchmark"
    (ref / "utils").mkdir(parents=True)
    (ref / "utils" / "unet.py").write_text("")  # looks like their folder, but nothing imports
    md = tmp_path / "ps.md"
    proc = _run("--reference", str(ref), "--arms", "ours", "--patches", "", "--reps", "1", "--dtype", "bfloat16",
                "--markdown", str(md))
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = md.read_text()
    assert "batch 1, bfloat16;" in text and "(its three GEMMs, bfloat16, same run)" in text
    assert any(r.startswith("| ours | 18,496 |") for r in text.splitlines())
    for arm in ("published RT-ESD", "published SHD"):
        assert f"{arm}: failed (" in text and "Error" in text.split(f"{arm}: failed (")[1].splitlines()[0], text
