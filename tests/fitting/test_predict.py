"""Amortized inference: ``run_predict`` / ``shdeconv predict`` with a saved model."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from shdeconv.cli import main
from shdeconv.fitting import load_subject, run_predict
from shdeconv.fitting._subject import acquisition_model
from shdeconv.inference import auto_batch, threads_per_worker, tile_workers
from shdeconv.models import DeconvNet, NetworkConfig
from shdeconv.models._store import save_model
from shdeconv.signal import linear_deconvolution
from shdeconv.sim import simulate_to_dir
from shdeconv.sphere import rotate_sh

SMALL = NetworkConfig(inputs="linear", width=4, depth=2, K=2, head="linear", nside=4, lmax=8)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return simulate_to_dir(tmp_path_factory.mktemp("ph") / "multi", scheme="multishell", snr=30, seed=5,
                           size="quick")


@pytest.fixture(scope="module")
def zero_model(tmp_path_factory):
    """A linear-input network whose correction head is still zero: it must return the linear solution."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("m") / "zero.pt"
    save_model(path, DeconvNet(SMALL, n_iso=2))
    return path


def _inputs(ph):
    return ph / "dwi.nii.gz", ph / "bvals", ph / "bvecs"


def test_zero_head_model_predicts_the_linear_deconvolution_in_the_world_frame(phantom, zero_model, tmp_path):
    report = run_predict(*_inputs(phantom), tmp_path / "out", mask=phantom / "mask.nii.gz", model=zero_model,
                         tile=8, progress=False)
    assert report["tile"] == 8 and set(report["outputs"]) >= {"fodf", "gm", "csf", "peaks"}
    subject = load_subject(*_inputs(phantom), phantom / "mask.nii.gz")
    fm, _, _ = acquisition_model(subject.bvals, subject.directions, subject.responses, 8)
    lin = subject.signal @ linear_deconvolution(fm).T
    expected = rotate_sh(lin[..., :45], subject.rotation) * subject.mask[..., None]
    got = np.asarray(nib.load(tmp_path / "out" / "fodf.nii.gz").dataobj)
    np.testing.assert_allclose(got, expected, atol=2e-5 * np.abs(expected).max())
    gm = np.asarray(nib.load(tmp_path / "out" / "gm.nii.gz").dataobj)[subject.mask]
    np.testing.assert_allclose(gm, np.clip(lin[..., 45][subject.mask], 1e-3, 10), rtol=1e-3, atol=1e-4)


def test_finetune_runs_unsupervised_steps_first(phantom, zero_model, tmp_path, monkeypatch):
    from shdeconv.fitting import _pipeline

    tuned = {}

    def recording_fit(net, *args, **kwargs):  # the network as fine-tuned, before it predicts
        result = fit_network(net, *args, **kwargs)
        tuned.update({k: v.detach().clone() for k, v in net.state_dict().items()})
        return result

    fit_network = _pipeline.fit_network
    monkeypatch.setattr(_pipeline, "fit_network", recording_fit)
    run_predict(*_inputs(phantom), tmp_path / "ft", mask=phantom / "mask.nii.gz", model=zero_model, finetune=3,
                seed=4, progress=False)
    report = json.loads((tmp_path / "ft" / "report.json").read_text())
    assert report["finetune"] == 3 and report["seed"] == 4 and len(report["loss_curve"]) == 3
    assert not (tmp_path / "ft" / "checkpoint.pt").exists()  # predict has no --resume to use one
    card = json.loads((tmp_path / "ft" / "fodf.json").read_text())
    assert card["Model"]["Parameters"]["Seed"] == 4
    t = report["timings_s"]
    assert min(t[k] for k in ("load", "finetune", "predict", "write")) > 0
    assert t["total"] >= t["load"] + t["finetune"] + t["predict"] + t["write"]
    # where loading and writing spent their time, stage by stage, adding up to each
    stages = report["stage_seconds"]
    assert list(stages["load"]) == ["read", "mask", "gradient_check", "responses_and_normalisation"]
    assert list(stages["write"]) == ["uncrop", "peaks", "qc_figure", "nifti_after_the_rest", "responses_and_sidecars"]
    for part in ("load", "write"):
        assert min(stages[part].values()) >= 0 and sum(stages[part].values()) <= t[part] + 1e-3
        # the stages cover the part but for a few fixed milliseconds (on this tiny phantom a part takes ~0.1 s)
        assert t[part] - sum(stages[part].values()) < max(0.2 * t[part], 0.05)
    assert report["tile"] == 8  # no training record in this model file: the default patch size
    assert report["tiles_per_batch"] == auto_batch(DeconvNet(SMALL, n_iso=2), torch.device("cpu"), 8)
    # the prior: the pretrained prediction is the supervised target from the first step (where
    # the student still equals it), and batch norm keeps its trained statistics
    parts = report["loss_curve"]
    assert len(parts) == 3 and all("supervised" in h for h in parts)
    assert parts[0]["supervised"] < 1e-10 < parts[-1]["supervised"]
    trained = torch.load(zero_model, weights_only=False)["state_dict"]
    stats = [k for k in trained if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(tuned[k], trained[k]) for k in stats)


def test_predict_cli_errors(phantom, tmp_path, capsys):
    args = [str(p) for p in _inputs(phantom)]
    code = main(["predict", args[0], "--bvals", args[1], "--bvecs", args[2], "-o", str(tmp_path / "o"),
                 "--model", str(tmp_path / "missing.pt")])
    assert code == 2 and "missing.pt" in capsys.readouterr().err
    signal_net = DeconvNet(NetworkConfig(width=4, K=2), np.eye(3), np.array([1, 1, 1]), [1])
    save_model(tmp_path / "per_subject.pt", signal_net)
    code = main(["predict", args[0], "--bvals", args[1], "--bvecs", args[2], "-o", str(tmp_path / "o2"),
                 "--model", str(tmp_path / "per_subject.pt")])
    assert code == 2 and "cannot predict other subjects" in capsys.readouterr().err
    assert not (tmp_path / "o2" / "fodf.nii.gz").exists()


def test_auto_batch_fits_the_budget():
    net = DeconvNet(NetworkConfig(inputs="linear", nside=4, lmax=8), n_iso=2)
    cpu = torch.device("cpu")
    per_tile = 135 * 8 * 96 * 8 ** 3
    for budget in (1 << 26, 1 << 28, 1 << 30):
        n = auto_batch(net, cpu, 8, budget_bytes=budget, cache_bytes=1 << 40, workers=1)
        assert 1 <= n <= 64
        assert n * per_tile <= budget or n == 1
        assert (n + 1) * per_tile > budget or n == 64
        # two workers hold two batches at once: each gets half the budget
        assert auto_batch(net, cpu, 8, budget_bytes=budget, cache_bytes=1 << 40, workers=2) == \
            max(1, min(64, budget // (2 * per_tile)))
    assert auto_batch(net, cpu, 8) <= auto_batch(net, cpu, 8, budget_bytes=3 << 30)


def test_auto_batch_keeps_cpu_batches_in_cache():
    net = DeconvNet(NetworkConfig(inputs="linear", nside=4, lmax=8), n_iso=2)
    cpu = torch.device("cpu")
    per_tile = 4 * 4 * 8 * 96 * 8 ** 3  # float32 distance-class outputs of a top-level layer
    assert auto_batch(net, cpu, 8, budget_bytes=3 << 30, cache_bytes=32 << 20, workers=1) == (16 << 20) // per_tile == 2
    assert auto_batch(net, cpu, 8, budget_bytes=3 << 30, cache_bytes=1 << 20, workers=1) == 1
    # concurrent tile workers share the cache (and the memory budget)
    for w in (1, 2, None):
        workers = tile_workers(cpu) if w is None else w
        assert auto_batch(net, cpu, 8, budget_bytes=3 << 30, cache_bytes=64 << 20, workers=w) == \
            max(1, (32 << 20) // (workers * per_tile))
    assert auto_batch(net, cpu, 8, budget_bytes=3 << 30, cache_bytes=64 << 20, workers=2) == 2
    # bfloat16 outputs take half the bytes: twice the tiles
    assert auto_batch(net, cpu, 8, budget_bytes=3 << 30, cache_bytes=64 << 20, workers=2, precision="bfloat16") == \
        (32 << 20) // (2 * per_tile // 2) == 5
    # the cache rule is for CPUs only: a GPU batch is sized by its memory
    assert auto_batch(net, torch.device("cuda"), 8, budget_bytes=1 << 30, cache_bytes=1 << 20) == \
        (1 << 30) // (135 * 8 * 96 * 8 ** 3)


@pytest.mark.parametrize("order", ["F", "C", "strided"])
def test_channels_first_applies_the_matrix_per_voxel_in_any_memory_order(order):
    from shdeconv.inference import channels_first

    rng = np.random.default_rng(0)
    base = rng.normal(size=(5, 6, 7, 9)).astype(np.float32)
    sig = {"F": np.asfortranarray(base), "C": base, "strided": np.asfortranarray(rng.normal(
        size=(10, 6, 7, 9)).astype(np.float32))[::2]}[order]
    mat = torch.from_numpy(rng.normal(size=(4, 9)).astype(np.float32))
    got = channels_first(sig, mat)
    ref = np.einsum("pg,xyzg->pxyz", mat.numpy(), sig)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(channels_first(sig).numpy(), np.moveaxis(sig, -1, 0))
    box = (slice(1, 4), slice(2, 6), slice(3, 7))  # only the box is computed
    np.testing.assert_allclose(channels_first(sig, mat, box).numpy(), ref[(slice(None),) + box], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(channels_first(sig, box=box).numpy(), np.moveaxis(sig, -1, 0)[(slice(None),) + box])


def test_predict_volume_on_precomputed_linear_input_equals_tiling_the_signal(phantom):
    """The shortcut (D s once per voxel, then tiles of it) gives the network's forward(signal) tiles."""
    from shdeconv.inference import SlidingWindowInferer, predict_volume, volume_input

    subject = load_subject(*_inputs(phantom), phantom / "mask.nii.gz")
    fm, _, _ = acquisition_model(subject.bvals, subject.directions, subject.responses, 8)
    torch.manual_seed(1)
    net = DeconvNet(SMALL, n_iso=2, init_matrix=linear_deconvolution(fm)).eval()
    for p in net.parameters():  # a non-trivial correction head
        torch.nn.init.normal_(p, std=0.3)
    wm, iso = predict_volume(net, subject.signal, subject.mask, tile=8, overlap=0.25, device=torch.device("cpu"))
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(subject.signal, -1, 0)))
        ref = SlidingWindowInferer(8, overlap=0.25, device="cpu", prune=True)(
            x, lambda t: torch.cat(net(t), 1), roi_mask=torch.from_numpy(subject.mask)).numpy()
    ref = np.moveaxis(ref, 0, -1) * subject.mask[..., None]
    assert np.abs(wm).max() > 0
    np.testing.assert_allclose(wm, ref[..., :45], rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    np.testing.assert_allclose(iso, ref[..., 45:], rtol=1e-4, atol=1e-4 * np.abs(ref[..., 45:]).max())
    # the input computed first (so that the caller can free the signal) gives the same volume
    inputs = volume_input(net, subject.signal, subject.mask)
    assert inputs.linear and inputs.x.shape[0] == 47 and not np.shares_memory(inputs.x.numpy(), subject.signal)
    wm2, iso2 = predict_volume(net, inputs, subject.mask, tile=8, overlap=0.25, device=torch.device("cpu"))
    np.testing.assert_array_equal(wm2, wm)
    np.testing.assert_array_equal(iso2, iso)
    empty = np.zeros_like(subject.mask)
    assert volume_input(net, subject.signal, empty) is None
    wm0, iso0 = predict_volume(net, None, empty, tile=8, overlap=0.25, device=torch.device("cpu"))
    assert not wm0.any() and wm0.shape == subject.mask.shape + (45,) and iso0 is None


def test_tile_workers_give_the_single_worker_volume_and_restore_torch_threads(phantom):
    """Tiles predicted in two threads, each single-threaded, stitch to the one-worker result."""
    from shdeconv.inference import predict_volume

    subject = load_subject(*_inputs(phantom), phantom / "mask.nii.gz")
    fm, _, _ = acquisition_model(subject.bvals, subject.directions, subject.responses, 8)
    torch.manual_seed(1)
    net = DeconvNet(SMALL, n_iso=2, init_matrix=linear_deconvolution(fm)).eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    cpu, threads = torch.device("cpu"), torch.get_num_threads()
    seen = []
    net.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    one = predict_volume(net, subject.signal, subject.mask, tile=8, overlap=0.25, device=cpu, workers=1)
    assert set(seen) == {threads}
    seen.clear()
    two = predict_volume(net, subject.signal, subject.mask, tile=8, overlap=0.25, device=cpu, workers=2,
                         sw_batch_size=1)
    assert set(seen) == {max(1, threads // 2)}  # the workers share the threads
    assert torch.get_num_threads() == threads  # and they are restored
    assert np.abs(one[0]).max() > 0
    for a, b in zip(one, two):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * np.abs(a).max())


def test_threads_per_worker_divides_torch_threads_on_a_cpu_only_and_restores_them():
    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="inside"), threads_per_worker(2, torch.device("cpu")):
        assert torch.get_num_threads() == max(1, threads // 2)
        raise RuntimeError("inside")
    assert torch.get_num_threads() == threads
    with threads_per_worker(2, torch.device("cuda")):  # a GPU's one worker keeps every CPU thread
        assert torch.get_num_threads() == threads


def test_tile_workers_divide_the_threads_into_at_most_four_workers():
    cpu = torch.device("cpu")
    got = {n: tile_workers(cpu, threads=n) for n in (1, 2, 3, 4, 6, 7, 8, 10, 12, 16, 64)}
    assert got == {1: 1, 2: 2, 3: 3, 4: 4, 6: 3, 7: 1, 8: 4, 10: 2, 12: 4, 16: 4, 64: 4}
    assert tile_workers(cpu) == tile_workers(cpu, threads=torch.get_num_threads())
    assert tile_workers(torch.device("cuda"), threads=16) == 1


def test_anisotropic_voxels_are_reported_and_warned_about(zero_model, tmp_path, caplog):
    from shdeconv.sim import spatial_phantom, write_phantom

    ph = write_phantom(spatial_phantom(scheme="clinical", snr=30, seed=3, size="quick",
                                       affine=np.diag([1.0, 1.0, 3.0, 1.0])), tmp_path / "aniso")
    with caplog.at_level("WARNING", logger="shdeconv"):
        report = run_predict(*_inputs(ph), tmp_path / "out", mask=ph / "mask.nii.gz", model=zero_model,
                             progress=False)
    assert report["voxel_size_mm"] == [1.0, 1.0, 3.0]
    assert len(report["warnings"]) == 1 and "anisotropic" in report["warnings"][0]
    assert any("anisotropic" in r.getMessage() for r in caplog.records)


def test_isotropic_voxels_give_no_warning(phantom, zero_model, tmp_path):
    report = run_predict(*_inputs(phantom), tmp_path / "out", mask=phantom / "mask.nii.gz", model=zero_model,
                         progress=False)
    assert report["voxel_size_mm"] == [2.0, 2.0, 2.0] and report["warnings"] == []


@pytest.mark.parametrize("read", ["voxels", "box"])
def test_a_mask_smaller_than_the_image_is_read_alone_with_the_same_outputs(phantom, tmp_path, monkeypatch, read):
    """With a mask predict reads only its voxels (or, where neighbours are needed before the
    network, its box: load_dwi(crop=...)); the outputs are those of the whole image, on the
    image's grid, and the report says what was read."""
    import shdeconv.fitting._subject as subject_module

    torch.manual_seed(1)
    net = DeconvNet(SMALL, n_iso=2)
    for p in net.parameters():  # a non-trivial spatial correction
        torch.nn.init.normal_(p, std=0.3)
    save_model(tmp_path / "m.pt", net)
    img = nib.load(phantom / "mask.nii.gz")
    small = np.asarray(img.dataobj).astype(bool)
    small[:9], small[:, 20:], small[..., :2] = False, False, False
    small[12, 12, 5] = False  # a hole
    nib.save(nib.Nifti1Image(small.astype(np.uint8), img.affine), tmp_path / "small.nii.gz")
    args = {"mask": tmp_path / "small.nii.gz", "model": tmp_path / "m.pt", "tile": 8, "progress": False}
    load_dwi = subject_module.load_dwi
    seen = []

    def spy(*a, crop=None, **k):
        seen.append(crop)
        return load_dwi(*a, crop=0 if read == "box" else crop, **k)

    monkeypatch.setattr(subject_module, "load_dwi", spy)
    part = run_predict(*_inputs(phantom), tmp_path / "part", **args)
    assert seen == ["voxels"]
    box = part["mask"].get("box")
    assert (box is None) == (read == "voxels") and (part["mask"].get("read") is None) == (read == "box")
    if read == "box":
        assert box[0][0] == int(np.flatnonzero(small.any((1, 2)))[0]) and box[1][1] <= 20 and box[2][0] >= 2
    monkeypatch.setattr(subject_module, "load_dwi", lambda *a, crop=None, **k: load_dwi(*a, **k))
    whole = run_predict(*_inputs(phantom), tmp_path / "whole", **args)
    assert "box" not in whole["mask"] and "read" not in whole["mask"]
    assert {k: v for k, v in part["mask"].items() if k not in ("box", "read")} == whole["mask"]
    assert part["gradient_check"]["best"] == whole["gradient_check"]["best"]
    for name in ("fodf", "gm", "csf", "peaks"):
        a, b = nib.load(tmp_path / "part" / f"{name}.nii.gz"), nib.load(tmp_path / "whole" / f"{name}.nii.gz")
        assert a.shape == b.shape and a.shape[:3] == small.shape
        np.testing.assert_array_equal(a.affine, b.affine)
        np.testing.assert_allclose(np.asarray(a.dataobj), np.asarray(b.dataobj), atol=1e-6)
    fodf = np.asarray(nib.load(tmp_path / "part" / "fodf.nii.gz").dataobj)
    assert fodf[small, 0].all() and not fodf[~small].any()


def test_denoising_a_volume_too_thin_for_it_is_recorded_as_not_done(tmp_path):
    """DIPY's small_25 has 2 slices: MP-PCA cannot run, and report.json and the sidecar say so
    (denoise "none", the warning listed) instead of recording the MP-PCA that was asked for."""
    from dipy.data import get_fnames

    report = run_predict(*get_fnames(name="small_25"), tmp_path / "out", denoise="mppca", progress=False)
    assert report["denoise"] == "none" and "denoise" not in report["stage_seconds"]["load"]
    assert any("MP-PCA skipped" in w and "too thin" in w for w in report["warnings"])
    card = json.loads((tmp_path / "out" / "fodf.json").read_text())
    assert card["Model"]["Parameters"]["Denoise"] == "none"
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}
    assert len(set(modes.values())) == 1, modes  # qc.png as readable as the rest (it was 0600)
