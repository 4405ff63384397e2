"""The shipped amortized model: present, documented, and better than its linear start and CSD on a held-out phantom."""

from __future__ import annotations

import json

import pytest

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
