"""GPU paths: predict, per-subject fit and mixed-precision training on CUDA.

Skipped where no CUDA device is present (CI has none); run on a lent GPU with
``pytest -m cuda``. Each check compares the GPU result with the CPU one, or with the loss
going down, so a broken device path fails rather than merely running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from shdeconv.fitting import FitConfig, run_fit, run_predict
from shdeconv.inference import auto_batch
from shdeconv.losses import LossWeights
from shdeconv.models import NetworkConfig
from shdeconv.models._store import load_model, pretrained_path
from shdeconv.sim import simulate_to_dir
from shdeconv.training import TrainConfig, parameter_checksum, train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda_ph")
    return [simulate_to_dir(root / "clin", scheme="clinical", snr=30, seed=21, size="quick"),
            simulate_to_dir(root / "multi", scheme="multishell", snr=30, seed=22, size="quick")]


def _inputs(ph):
    return ph / "dwi.nii.gz", ph / "bvals", ph / "bvecs"


def _fodf(out):
    return np.asarray(nib.load(out / "fodf.nii.gz").dataobj)


def test_predict_on_cuda_matches_cpu(phantoms, tmp_path):
    """The shipped model gives the same fODFs on the GPU as on the CPU (float32; cuDNN may use TF32)."""
    for ph in phantoms:
        cpu = run_predict(*_inputs(ph), tmp_path / f"{ph.name}-cpu", mask=ph / "mask.nii.gz", device="cpu",
                          progress=False)
        gpu = run_predict(*_inputs(ph), tmp_path / f"{ph.name}-gpu", mask=ph / "mask.nii.gz", device="cuda",
                          progress=False)
        assert gpu["device"].startswith("cuda") and cpu["device"] == "cpu"
        a, b = _fodf(tmp_path / f"{ph.name}-cpu"), _fodf(tmp_path / f"{ph.name}-gpu")
        assert np.isfinite(b).all()
        assert np.linalg.norm(b - a) / np.linalg.norm(a) < 2e-3


def test_bfloat16_predict_on_cuda_stays_close_to_float32(phantoms, tmp_path):
    """``--precision bfloat16`` on the GPU: the network pass rounds, the fODF moves by about 1%."""
    ph = phantoms[0]
    run_predict(*_inputs(ph), tmp_path / "f32", mask=ph / "mask.nii.gz", device="cuda", progress=False)
    report = run_predict(*_inputs(ph), tmp_path / "bf16", mask=ph / "mask.nii.gz", device="cuda", progress=False,
                         precision="bfloat16")
    assert report["precision"] == "bfloat16" and not any("bfloat16" in w for w in report["warnings"])
    a, b = _fodf(tmp_path / "f32"), _fodf(tmp_path / "bf16")
    assert np.isfinite(b).all() and 1e-4 < np.linalg.norm(b - a) / np.linalg.norm(a) < 0.03


def test_auto_batch_on_the_gpu_fits_its_memory():
    net, _ = load_model(pretrained_path())
    n = auto_batch(net, torch.device("cuda"), 8)
    assert 1 <= n <= 64
    assert auto_batch(net, torch.device("cuda"), 8, budget_bytes=1 << 20) == 1


def test_fit_on_cuda_lowers_the_loss(phantoms, tmp_path):
    report = run_fit(*_inputs(phantoms[0]), tmp_path / "fit", mask=phantoms[0] / "mask.nii.gz", variant="shd-tv",
                     device="cuda",
                     fit_config=FitConfig(iterations=30, checkpoint_every=30), progress=False)
    assert report["device"].startswith("cuda")
    assert np.isfinite(_fodf(tmp_path / "fit")).all()
    losses = [h["loss"] for h in json.loads((tmp_path / "fit" / "report.json").read_text())["loss_curve"]]
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


@pytest.mark.parametrize("amp", [False, True])
def test_training_on_cuda_lowers_the_loss(phantoms, tmp_path, amp):
    """``train --amp`` (bfloat16 autocast) learns like float32: the supervised term falls, weights stay float32."""
    cfg = TrainConfig(iterations=40, batch_size=2, patch_size=8, lr=5e-3, seed=3, log_every=1,
                      checkpoint_every=40, amp=amp)
    summary = train(phantoms, tmp_path / "t", net_config=NetworkConfig(inputs="linear", width=4, depth=2, K=2, head="linear", nside=4, lmax=8),
                    weights=LossWeights(tv=0.01, supervised=1.0), config=cfg, device="cuda", progress=False)
    assert summary["device"].startswith("cuda")
    steps = [json.loads(x) for x in (tmp_path / "t" / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in steps if "iteration" in r]
    assert len(steps) == 40 and all(np.isfinite(r["loss"]) for r in steps)
    assert np.mean([r["supervised"] for r in steps[-5:]]) < 0.8 * np.mean([r["supervised"] for r in steps[:5]])
    net, _ = load_model(tmp_path / "t" / "model.pt")
    assert all(p.dtype == torch.float32 for p in net.parameters())


def test_torchrun_on_cuda_uses_nccl(phantoms, tmp_path):
    """``torchrun`` with one rank per GPU (one on a one-GPU machine) trains through nccl and DDP."""
    out, nproc = tmp_path / "ddp", torch.cuda.device_count()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "shdeconv", "train", *map(str, phantoms), "-o", str(out), "--iterations", "30",
           "--width", "4", "--batch-size", "2", "--lr", "5e-3", "--supervised-weight", "1",
           "--device", "cuda", "--no-progress", "--checkpoint-every", "15", "--log-every", "1"]
    proc = subprocess.run(cmd, check=False, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    end = log[-1]
    assert end["backend"] == "nccl" and end["world_size"] == nproc and end["device"].startswith("cuda")
    assert len(set(end["rank_checksums"])) == 1 and len(end["rank_checksums"]) == nproc
    steps = [r for r in log if "iteration" in r]
    assert np.mean([r["supervised"] for r in steps[-5:]]) < 0.8 * np.mean([r["supervised"] for r in steps[:5]])
    net, _ = load_model(out / "model.pt")
    assert parameter_checksum(net) == end["rank_checksums"][0]
