"""The shipped amortized model: present, documented, and better than its linear start and CSD on a held-out phantom."""

from __future__ import annotations

import json

import pytest

from shdeconv._options import OptionError
from shdeconv.evaluation import evaluate_dirs
from shdeconv.fitting import run_csd, run_predict
from shdeconv.models import DeconvNet
from shdeconv.models._store import (
    PRETRAINED,
    load_model,
    pretrained_path,
    pretrained_record,
    save_model,
)
from shdeconv.sim import simulate_to_dir


def test_shipped_model_loads_and_records_its_training():
    path = pretrained_path()
    assert path.name == f"{PRETRAINED}.pt" and path.stat().st_size < 5 << 20
    net, meta = load_model(path)
    assert net.config.inputs == "linear" and net.config.variant == "shd-tv" and net.n_iso == 2
    record = pretrained_record()
    assert record["command"].startswith("python scripts/train_pretrained.py")
    assert record["seed"] == 0 and record["data"]["seeds"].startswith("1000")
    assert meta["iterations"] == record["train_config"]["iterations"]
    assert json.dumps(record)  # plain data


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """Seed 0 is not among the training seeds (1000+)."""
    return simulate_to_dir(tmp_path_factory.mktemp("held") / "ph", scheme="clinical", snr=20, seed=0,
                           size="quick")


def test_shipped_model_beats_its_linear_start_and_csd_on_a_held_out_phantom(held_out, tmp_path):
    args = (held_out / "dwi.nii.gz", held_out / "bvals", held_out / "bvecs")
    mask = held_out / "mask.nii.gz"
    run_predict(*args, tmp_path / "predict", mask=mask, progress=False)
    net, _ = load_model(pretrained_path())
    zero = DeconvNet(net.config, n_iso=2)  # same architecture, correction head at zero: D s only
    save_model(tmp_path / "linear.pt", zero)
    run_predict(*args, tmp_path / "linear", mask=mask, model=tmp_path / "linear.pt", progress=False)
    run_csd(*args, tmp_path / "csd", mask=mask)
    s = {k: evaluate_dirs(tmp_path / k, held_out)["groups"] for k in ("predict", "linear", "csd")}
    assert s["predict"]["all"]["success_rate"] > s["linear"]["all"]["success_rate"] + 0.05
    assert s["predict"]["all"]["success_rate"] > s["csd"]["all"]["success_rate"] + 0.1
    assert s["predict"]["1"]["angular_error_mean"] < s["csd"]["1"]["angular_error_mean"]


def test_bfloat16_prediction_stays_close_to_float32_and_is_recorded(held_out, tmp_path, monkeypatch):
    """``--precision bfloat16`` changes the fODF by about 1% on a held-out phantom, not its scores;
    the report and the sidecar say which precision ran, and a device without bfloat16 matrix
    products is warned about (it would run slower, not wrong)."""
    import nibabel as nib
    import numpy as np

    import shdeconv.fitting._pipeline as pipeline

    args = (held_out / "dwi.nii.gz", held_out / "bvals", held_out / "bvecs")
    mask = held_out / "mask.nii.gz"
    run_predict(*args, tmp_path / "f32", mask=mask, progress=False)
    monkeypatch.setattr(pipeline, "native_bfloat16", lambda device: False)
    report = run_predict(*args, tmp_path / "bf16", mask=mask, progress=False, precision="bfloat16")
    assert report["precision"] == "bfloat16"
    assert any("no bfloat16 matrix products" in w for w in report["warnings"])
    assert json.loads((tmp_path / "bf16" / "fodf.json").read_text())["Model"]["Parameters"]["Precision"] == "bfloat16"
    m = np.asarray(nib.load(mask).dataobj) > 0
    a, b = (np.asarray(nib.load(tmp_path / d / "fodf.nii.gz").dataobj)[m] for d in ("f32", "bf16"))
    rel = np.linalg.norm(b - a) / np.linalg.norm(a)
    assert 1e-4 < rel < 0.03  # bfloat16 did run, and only rounds
    s = {d: evaluate_dirs(tmp_path / d, held_out)["groups"] for d in ("f32", "bf16")}
    assert abs(s["bf16"]["all"]["success_rate"] - s["f32"]["all"]["success_rate"]) < 0.02
    assert abs(s["bf16"]["1"]["angular_error_mean"] - s["f32"]["1"]["angular_error_mean"]) < 0.2
    with pytest.raises(OptionError, match="--precision"):
        run_predict(*args, tmp_path / "bad", mask=mask, progress=False, precision="float16")
    assert not (tmp_path / "bad").exists()
