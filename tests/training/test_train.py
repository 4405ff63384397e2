"""Multi-subject training: caches, sampling, loss decrease, resume, DDP with torchrun, model files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from shdeconv.io import InputError
from shdeconv.losses import LossWeights
from shdeconv.models import DeconvNet, NetworkConfig
from shdeconv.models._store import load_model, save_model
from shdeconv.sim import simulate_to_dir, truth_fodf_sh
from shdeconv.sphere import sh_eval, sh_matrix
from shdeconv.training import (
    TrainConfig,
    TrainingSubject,
    parameter_checksum,
    prepare_training_subject,
    train,
)

SMALL = NetworkConfig(inputs="linear", width=4, depth=2, K=2, nside=4, lmax=8)


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_subjects")
    return [simulate_to_dir(root / "clin", scheme="clinical", snr=30, seed=11, size="quick"),
            simulate_to_dir(root / "multi", scheme="multishell", snr=30, seed=12, size="quick")]


def test_truth_fodf_peaks_at_the_fibre_and_rotates():
    u = np.array([0.0, 0.6, 0.8])
    t = truth_fodf_sh(u[None], np.array([1.0]), 8)
    dense = np.random.default_rng(0).normal(size=(4000, 3))
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    assert abs(dense[np.argmax(sh_eval(t, dense))] @ u) > 0.99
    np.testing.assert_allclose(t[0], sh_matrix(u[None], 0)[0, 0])  # l = 0 untouched: fraction 1
    q = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
    t_rot = truth_fodf_sh(u[None], np.array([1.0]), 8, rotation=q)
    np.testing.assert_allclose(sh_eval(t_rot, (q.T @ u)[None]), sh_eval(t, u[None]), rtol=1e-10)


def test_cache_is_reused_and_sampling_pads_borders(subjects, tmp_path):
    c1 = prepare_training_subject(subjects[0], tmp_path)
    mtime = (c1 / "signal.npy").stat().st_mtime_ns
    assert prepare_training_subject(subjects[0], tmp_path) == c1
    assert (c1 / "signal.npy").stat().st_mtime_ns == mtime
    s = TrainingSubject.open(c1)
    assert isinstance(s.signal, np.memmap)
    batch = s.sample(3, 20, np.random.default_rng(0))  # larger than the 16 x 16 x 6 volume
    g = s.signal.shape[-1]
    assert batch["signal"].shape == (3, g, 20, 20, 20) and batch["linear"].shape == (3, 45, 20, 20, 20)
    assert batch["target"].shape == (3, 45, 20, 20, 20) and batch["mask"].dtype == torch.bool
    assert not batch["mask"][:, :, :, 6:].any() and batch["mask"].any()
    np.testing.assert_array_equal(batch["signal"][0].numpy()[:, :16, :16, :6], np.moveaxis(s.signal, -1, 0))


def test_cache_for_a_softplus_head_holds_targets_at_its_order_and_the_single_shell_tissue(subjects, tmp_path):
    """Inputs stay at the responses' order (45 + tissues); targets go to the output's (lmax 10:
    66); a single-shell subject gets the GM-like tissue in its forward model and linear input."""
    plain = prepare_training_subject(subjects[0], tmp_path)
    c = prepare_training_subject(subjects[0], tmp_path, lmax=8, target_lmax=10, single_shell=("gm",))
    assert c != plain  # a separate cache: nothing reused across settings
    s = TrainingSubject.open(c)
    assert s.linear.shape[-1] == 46 and s.target.shape[-1] == 66
    assert s.acquisition["iso"].shape[1] == 1 and s.forward_model().n_iso == 1
    np.testing.assert_allclose(s.target[..., :45], TrainingSubject.open(plain).target, rtol=1e-5, atol=1e-7)
    multi = TrainingSubject.open(prepare_training_subject(subjects[1], tmp_path, target_lmax=10, single_shell=("gm",)))
    assert multi.forward_model().n_iso == 2 and multi.linear.shape[-1] == 47  # GM and CSF from its responses


def test_train_lowers_the_loss_and_resumes_bit_exactly(subjects, tmp_path):
    cfg = {"batch_size": 2, "patch_size": 8, "lr": 5e-3, "seed": 3, "log_every": 1, "checkpoint_every": 6}
    w = LossWeights(tv=0.01, supervised=1.0)
    cache = tmp_path / "cache"
    full = train(subjects, tmp_path / "full", net_config=SMALL, weights=w, config=TrainConfig(iterations=12, **cfg),
                 progress=False, cache_dir=cache)
    log = [json.loads(x) for x in (tmp_path / "full" / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "iteration" in r]
    assert len(steps) == 12 and log[-1]["event"] == "end"
    assert np.mean([r["supervised"] for r in steps[-3:]]) < np.mean([r["supervised"] for r in steps[:3]])
    train(subjects, tmp_path / "part", net_config=SMALL, weights=w, config=TrainConfig(iterations=6, **cfg),
          progress=False, cache_dir=cache)
    resumed = train(subjects, tmp_path / "part", net_config=SMALL, weights=w,
                    config=TrainConfig(iterations=12, **cfg), progress=False, cache_dir=cache, resume=True)
    assert resumed["rank_checksums"] == full["rank_checksums"]
    net, meta = load_model(tmp_path / "full" / "model.pt")
    assert parameter_checksum(net) == full["rank_checksums"][0] and meta["iterations"] == 12
    with pytest.raises(InputError, match="at step 12, beyond --iterations 6"):
        train(subjects, tmp_path / "full", net_config=SMALL, weights=w, config=TrainConfig(iterations=6, **cfg),
              progress=False, cache_dir=cache, resume=True)


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_keep_identical_weights(subjects, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "shdeconv", "train", *map(str, subjects), "-o", str(out), "--iterations", "16",
           "--width", "4", "--batch-size", "2", "--lr", "5e-3", "--supervised-weight", "1",
           "--device", "cpu", "--no-progress", "--checkpoint-every", "8", "--log-every", "1"]
    proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    end = log[-1]
    assert end["world_size"] == 2 and len(end["rank_checksums"]) == 2 and end["backend"] == "gloo"
    assert end["rank_parameter_checksums"][0] == end["rank_parameter_checksums"][1]  # before any sync
    assert end["rank_checksums"][0] == end["rank_checksums"][1]  # with batch-norm statistics
    steps = [r for r in log if "iteration" in r]
    assert np.mean([r["supervised"] for r in steps[-3:]]) < np.mean([r["supervised"] for r in steps[:3]])
    net, _ = load_model(out / "model.pt")
    assert parameter_checksum(net) == end["rank_checksums"][0]


def test_training_starts_from_a_model_where_its_weights_fit(subjects, tmp_path):
    """A gated network started from an ungated model: the spatial path gets that model's
    weights, the voxel-wise path starts fresh; the file is recorded; another architecture is
    refused, naming the file."""
    from dataclasses import replace

    from shdeconv.training._train import start_from

    torch.manual_seed(0)
    plain = DeconvNet(replace(SMALL, head="linear"), n_iso=2)
    for p in plain.parameters():
        torch.nn.init.normal_(p)
    save_model(tmp_path / "plain.pt", plain)
    gated = DeconvNet(replace(SMALL, head="linear", gate=True), n_iso=2)
    fresh = {k: v.clone() for k, v in gated.state_dict().items()}
    record = start_from(gated, tmp_path / "plain.pt")
    theirs, ours = plain.state_dict(), gated.state_dict()
    assert record["copied"] == len(theirs) and record["kept"] == len(ours) - len(theirs) > 0
    for k, v in ours.items():
        torch.testing.assert_close(v, theirs[k] if k in theirs else fresh[k])
    summary = train(subjects[:1], tmp_path / "run", net_config=replace(SMALL, head="linear", gate=True),
                    config=TrainConfig(iterations=1, batch_size=1, patch_size=8, log_every=1),
                    progress=False, cache_dir=tmp_path / "cache", init=tmp_path / "plain.pt")
    assert summary["init"]["sha256"] == record["sha256"]
    # the spatial path frozen: its weights and batch-norm statistics stay, the voxel-wise path learns
    gated_config = replace(SMALL, head="linear", gate=True)
    summary = train(subjects[:1], tmp_path / "frozen", net_config=gated_config,
                    config=TrainConfig(iterations=2, batch_size=1, patch_size=8, log_every=1),
                    progress=False, cache_dir=tmp_path / "cache", init=tmp_path / "plain.pt", frozen=("unet",))
    assert summary["frozen"] == ["unet"]
    after, _ = load_model(tmp_path / "frozen" / "model.pt")
    trained = after.state_dict()
    for k, v in theirs.items():
        torch.testing.assert_close(trained[k], v)
    assert any(not torch.equal(trained[k], fresh[k]) for k in fresh if k.startswith("voxel_unet.") and
               trained[k].is_floating_point())
    with pytest.raises(ValueError, match="init"):
        train(subjects[:1], tmp_path / "no_init", net_config=gated_config, config=TrainConfig(iterations=1),
              progress=False, cache_dir=tmp_path / "cache", frozen=("unet",))
    wide = DeconvNet(replace(SMALL, head="linear", width=8), n_iso=2)
    with pytest.raises(InputError, match="plain.pt"):
        start_from(wide, tmp_path / "plain.pt")


def test_model_file_round_trip_and_bad_files(tmp_path):
    torch.manual_seed(0)
    net = DeconvNet(SMALL, n_iso=2)
    torch.nn.init.normal_(net.unet.head.theta)
    save_model(tmp_path / "m.pt", net, {"note": "x"})
    back, meta = load_model(tmp_path / "m.pt")
    assert meta == {"note": "x"} and back.config == SMALL
    assert parameter_checksum(back) == parameter_checksum(net)
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.pt"):
        load_model(tmp_path / "bad.pt")
    with pytest.raises(InputError, match="nope.pt"):
        load_model(tmp_path / "nope.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a shdeconv model"):
        load_model(tmp_path / "other.pt")


def test_train_cli_builds_the_requested_head(subjects, tmp_path):
    from shdeconv.cli import main

    out = tmp_path / "m"
    assert main(["train", *map(str, subjects), "-o", str(out), "--iterations", "2", "--nside", "4", "--lmax", "10",
                 "--skip", "--width", "4", "--batch-size", "1", "--no-progress", "-q"]) == 0
    net, _ = load_model(out / "model.pt")
    assert (net.config.nside, net.config.lmax, net.config.skip, net.config.head) == (4, 10, True, "softplus")
    assert (net.config.width, net.config.depth, net.config.K) == (4, 2, 3)  # the laptop scale, width given
    assert net.n_coeffs == 66


def test_train_cli_starts_from_a_model(subjects, tmp_path, capsys):
    """``--init``: the architecture and loss weights come from the file (the weights can be
    overridden), the start is recorded; architecture options beside it, a missing file and
    ``--freeze-spatial`` without a gated model are refused with exit 2 and nothing written."""
    from dataclasses import asdict, replace

    from shdeconv.cli import main
    from shdeconv.models import pretrained_path

    torch.manual_seed(0)
    gated = DeconvNet(replace(SMALL, head="linear", gate=True), n_iso=2)
    save_model(tmp_path / "gated.pt", gated, {"loss_weights": asdict(LossWeights(tv=0.07, supervised=0.5))})
    save_model(tmp_path / "plain.pt", DeconvNet(replace(SMALL, head="linear"), n_iso=2))
    base = [str(subjects[0]), "--iterations", "2", "--batch-size", "1", "--no-progress", "-q"]

    assert main(["train", *base, "-o", str(tmp_path / "a"), "--init", str(tmp_path / "gated.pt"),
                 "--freeze-spatial", "--tv-weight", "0.2"]) == 0
    net, meta = load_model(tmp_path / "a" / "model.pt")
    assert net.config == gated.config
    assert (meta["loss_weights"]["tv"], meta["loss_weights"]["supervised"]) == (0.2, 0.5)  # given, recorded
    assert meta["init"]["path"] == str(tmp_path / "gated.pt") and meta["frozen"] == ["unet"]
    for k, v in gated.state_dict().items():
        if k.startswith("unet."):
            torch.testing.assert_close(net.state_dict()[k], v)

    refused = [(["--init", str(tmp_path / "plain.pt"), "--width", "8"], "--width"),
               (["--init", str(tmp_path / "nothing.pt")], "nothing.pt"),
               (["--freeze-spatial"], "--init"),
               (["--init", str(tmp_path / "plain.pt"), "--freeze-spatial"], "voxel-wise")]
    for extra, message in refused:
        capsys.readouterr()
        assert main(["train", *base, "-o", str(tmp_path / "b"), *extra]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "b" / "model.pt").exists()

    assert main(["train", *base, "-o", str(tmp_path / "c"), "--init", "shipped"]) == 0
    net, meta = load_model(tmp_path / "c" / "model.pt")
    shipped, shipped_meta = load_model(pretrained_path())
    assert net.config == shipped.config and meta["loss_weights"] == shipped_meta["loss_weights"]
