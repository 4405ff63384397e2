"""The command line: help lists every command, bad input exits 2 with one line and no outputs."""

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from shdeconv.cli import build_parser, main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("fit", "predict", "train", "csd", "demo", "track", "simulate", "evaluate"):
        assert cmd in out
    assert "examples:" in out


def _write_dwi(d, shape=(6, 6, 4), n=10, bvals=None):
    rng = np.random.default_rng(0)
    data = rng.uniform(50, 100, size=shape + (n,)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), d / "dwi.nii.gz")
    b = np.r_[0, [1000] * (n - 1)] if bvals is None else bvals
    np.savetxt(d / "bvals", b[None], fmt="%d")
    v = rng.normal(size=(3, n))
    v /= np.linalg.norm(v, axis=0)
    v[:, b == 0] = 0
    np.savetxt(d / "bvecs", v)
    return d / "dwi.nii.gz", d / "bvals", d / "bvecs"


def test_bad_bvals_count_exit_2_no_outputs(tmp_path, capsys):
    dwi, bvals, bvecs = _write_dwi(tmp_path)
    np.savetxt(bvals, np.r_[0, [1000] * 5][None], fmt="%d")
    out = tmp_path / "out"
    code = main(["fit", str(dwi), "--bvals", str(bvals), "--bvecs", str(bvecs), "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "bvals" in err
    assert not out.exists() or not any(out.iterdir())


def test_directions_that_cannot_determine_a_tensor_exit_2_no_outputs(tmp_path, capsys):
    dwi, bvals, bvecs = _write_dwi(tmp_path)
    axes = np.r_[np.zeros((1, 3)), np.tile(np.eye(3), (3, 1))]  # 9 volumes along 3 axes
    np.savetxt(bvecs, axes.T, fmt="%g")
    out = tmp_path / "out"
    code = main(["predict", str(dwi), "--bvals", str(bvals), "--bvecs", str(bvecs), "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and str(bvecs) in err and "cannot determine a diffusion tensor" in err
    assert not out.exists() or not any(out.iterdir())


def test_no_b0_exit_2(tmp_path, capsys):
    dwi, bvals, bvecs = _write_dwi(tmp_path, bvals=np.array([1000] * 10))
    code = main(["csd", str(dwi), "--bvals", str(bvals), "--bvecs", str(bvecs), "-o", str(tmp_path / "o")])
    assert code == 2 and "b=0" in capsys.readouterr().err


def test_missing_file_exit_2(tmp_path, capsys):
    code = main(["fit", str(tmp_path / "nope.nii.gz"), "--bvals", "x", "--bvecs", "y", "-o", str(tmp_path / "o")])
    assert code == 2 and "nope.nii.gz" in capsys.readouterr().err


def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "shdeconv", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and "shdeconv" in r.stdout
    assert build_parser().prog == "shdeconv"


def test_train_rejects_missing_subject_folders(tmp_path, capsys):
    code = main(["train", str(tmp_path / "no_such_subject"), "-o", str(tmp_path / "m"), "--iterations", "1"])
    assert code == 2 and "no_such_subject" in capsys.readouterr().err
    assert not (tmp_path / "m" / "model.pt").exists()


@pytest.mark.parametrize("option", [["--device", "cuda"], ["--seed", "-1"]])
def test_demo_checks_its_options_before_writing(tmp_path, capsys, option):
    import torch

    if option[1] == "cuda" and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--quick", *option]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and option[0] in err, err
    assert not out.exists()


@pytest.mark.slow
def test_quick_demo_runs_every_method(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "demo"), "--quick"]) == 0
    table = capsys.readouterr().out
    for name in ("shdeconv predict", "shdeconv fit (defaults: MP-PCA, then direct from the predict start)",
                 "shdeconv fit --variant shd-tv", "DIPY CSD", "MP-PCA + DIPY CSD"):
        assert name in table
    assert (tmp_path / "demo" / "results.md").read_text().strip() in table
    report = json.loads((tmp_path / "demo" / "direct" / "report.json").read_text())
    assert report["denoise"] == "mppca"  # auto: the bundle phantom's neighbouring fibres agree
    assert report["denoise_choice"]["requested"] == "auto" and report["denoise_choice"]["neighbour_coherence"] > 0.5
    for sub in ("predict", "direct", "shd-tv", "csd", "csd-mppca"):
        assert (tmp_path / "demo" / sub / "fodf.nii.gz").exists()


def test_predict_overlap_defaults_to_the_library_default(tmp_path, monkeypatch, capsys):
    """``--overlap`` omitted: predict gets ``DEFAULT_TILE_OVERLAP`` (one place), and the help states it."""
    from shdeconv import fitting
    from shdeconv.inference import DEFAULT_TILE_OVERLAP

    seen = []

    def fake_run_predict(*args, **kwargs):
        seen.append(kwargs["overlap"])
        return {"outputs": {"fodf": "fodf.nii.gz"}, "timings_s": {"total": 0.0}}

    monkeypatch.setattr(fitting, "run_predict", fake_run_predict)
    dwi, bvals, bvecs = _write_dwi(tmp_path)
    base = ["predict", str(dwi), "--bvals", str(bvals), "--bvecs", str(bvecs), "-o", str(tmp_path / "o")]
    assert main(base) == 0 and main(base + ["--overlap", "0.125"]) == 0
    assert seen == [DEFAULT_TILE_OVERLAP, 0.125]
    # a seed without fine-tuning would change nothing: refused, not ignored
    assert main(base + ["--seed", "3"]) == 2 and "--finetune" in capsys.readouterr().err
    assert main(base + ["--seed", "3", "--finetune", "2"]) == 0 and len(seen) == 3
    help_text = build_parser()._subparsers._group_actions[0].choices["predict"].format_help()
    assert f"default: {DEFAULT_TILE_OVERLAP:g}" in " ".join(help_text.split())


def test_fit_direct_from_the_command_line(tmp_path, capsys):
    from shdeconv.sim import simulate_to_dir

    ph = simulate_to_dir(tmp_path / "ph", scheme="clinical", snr=20, seed=3, size="quick")
    args = [str(ph / "dwi.nii.gz"), "--bvals", str(ph / "bvals"), "--bvecs", str(ph / "bvecs"), "--mask",
            str(ph / "mask.nii.gz"), "--no-progress", "--denoise", "none"]
    out = tmp_path / "direct"
    assert main(["fit", *args, "--variant", "direct", "--iterations", "3", "--lmax", "12", "-o", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == "direct" and report["direct"]["iterations"] == 3 and report["direct"]["lmax"] == 12
    assert nib.load(out / "fodf.nii.gz").shape[-1] == 91
    # network-only options are refused for direct rather than ignored
    for option in (["--batch-size", "2"], ["--scale", "published"], ["--seed", "3"]):
        code = main(["fit", *args, "--variant", "direct", *option, "-o", str(tmp_path / "bad")])
        assert code == 2 and option[0] in capsys.readouterr().err
    # each start belongs to its kind of fit
    code = main(["fit", *args, "--variant", "direct", "--init", "direct", "-o", str(tmp_path / "bad")])
    assert code == 2 and "starts a network" in capsys.readouterr().err
    code = main(["fit", *args, "--variant", "shd-tv", "--init", "csd", "-o", str(tmp_path / "bad")])
    assert code == 2 and "starts --variant direct" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_fit_network_scale_from_the_command_line(tmp_path):
    from shdeconv.models import NETWORK_SCALES
    from shdeconv.sim import simulate_to_dir

    subparsers = build_parser()._subparsers._group_actions[0].choices
    for command in ("fit", "train"):
        scale = next(a for a in subparsers[command]._actions if a.dest == "scale")
        assert list(scale.choices) == list(NETWORK_SCALES)

    ph = simulate_to_dir(tmp_path / "ph", scheme="clinical", snr=20, seed=3, size="quick")
    args = [str(ph / "dwi.nii.gz"), "--bvals", str(ph / "bvals"), "--bvecs", str(ph / "bvecs"), "--mask",
            str(ph / "mask.nii.gz"), "--no-progress", "--denoise", "none", "--variant", "shd-tv", "--iterations", "1",
            "--batch-size", "1", "--lmax", "8"]
    # the published network's depth, nside and K, with a narrower top level given explicitly
    out = tmp_path / "published"
    assert main(["fit", *args, "--scale", "published", "--width", "2", "-o", str(out)]) == 0
    network = json.loads((out / "report.json").read_text())["network"]
    assert (network["nside"], network["depth"], network["K"], network["width"]) == (8, 4, 5, 2)
    out = tmp_path / "laptop"
    assert main(["fit", *args, "--depth", "3", "-o", str(out)]) == 0
    network = json.loads((out / "report.json").read_text())["network"]
    assert (network["nside"], network["depth"], network["K"], network["width"]) == (8, 3, 3, 8)
    # a U-Net too shallow for the spatial pooling is a clear error, not a traceback
    assert main(["fit", *args, "--depth", "1", "-o", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


def test_tile_and_patch_options_are_used_as_given_or_refused(tmp_path, capsys):
    """Sizes the network cannot take, overlaps outside [0, 1) and empty batches exit 2 before any
    work, with nothing written: no silent rounding of a patch or tile, no traceback."""
    from shdeconv._options import OptionError, check_patch_size
    from shdeconv.sim import simulate_to_dir

    assert check_patch_size(8, 2) == 8 and check_patch_size(7, 1) == 7
    for size, multiple, nearest in ((7, 2, "6 or 8"), (1, 2, "(2)"), (10, 4, "8 or 12")):
        with pytest.raises(OptionError, match=nearest.replace("(", r"\(").replace(")", r"\)")):
            check_patch_size(size, multiple)
    with pytest.raises(OptionError, match="positive integer"):
        check_patch_size(0, 2)

    ph = simulate_to_dir(tmp_path / "ph", scheme="clinical", snr=20, seed=3, size="quick")
    args = [str(ph / "dwi.nii.gz"), "--bvals", str(ph / "bvals"), "--bvecs", str(ph / "bvecs"), "--mask",
            str(ph / "mask.nii.gz"), "--no-progress"]
    bad = tmp_path / "bad"
    for option, said in ((["--patch-size", "7"], "6 or 8"), (["--patch-size", "0"], "positive integer"),
                         (["--overlap", "1"], "--overlap"), (["--overlap", "-0.1"], "--overlap"),
                         (["--batch-size", "0"], "--batch-size")):
        assert main(["predict", *args, *option, "-o", str(bad)]) == 2, option
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and said in err, err
        assert not bad.exists()
    code = main(["fit", *args, "--variant", "shd-tv", "--iterations", "1", "--patch-size", "7", "-o", str(bad)])
    assert code == 2 and "6 or 8" in capsys.readouterr().err and not bad.exists()
    from shdeconv.fitting import FitConfig
    from shdeconv.training import TrainConfig

    for config in (FitConfig, TrainConfig):  # a negative seed was taken by torch and refused by numpy
        with pytest.raises(OptionError, match="seed must be >= 0"):
            config(seed=-1)
    code = main(["fit", *args, "--variant", "shd-tv", "--iterations", "1", "--seed", "-1", "-o", str(bad)])
    assert code == 2 and "seed must be >= 0" in capsys.readouterr().err and not bad.exists()
    for lmax in ("7", "0"):  # as fit: an even order >= 2 (an odd one was a traceback after loading)
        assert main(["csd", *args[:-1], "--lmax", lmax, "-o", str(bad)]) == 2
        assert "--lmax must be an even integer >= 2" in capsys.readouterr().err and not bad.exists()
    # an even tile is used as given and reported as used
    out = tmp_path / "tile6"
    assert main(["predict", *args, "--patch-size", "6", "--batch-size", "3", "-o", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (report["tile"], report["tiles_per_batch"]) == (6, 3)


def test_no_voxel_with_b0_signal_exit_2_naming_the_file(tmp_path, capsys):
    """A mask whose voxels all lack b=0 signal names the mask; an image without any names the dwi.
    Neither leaves an output directory behind."""
    dwi, bvals, bvecs = _write_dwi(tmp_path)
    img = nib.load(dwi)
    data = np.asarray(img.dataobj)
    data[:2, :2, :2] = 0
    nib.save(nib.Nifti1Image(data, img.affine), dwi)
    mask = np.zeros(data.shape[:3], np.uint8)
    mask[:2, :2, :2] = 1
    nib.save(nib.Nifti1Image(mask, img.affine), tmp_path / "mask.nii.gz")
    table = ["--bvals", str(bvals), "--bvecs", str(bvecs)]
    for command in ("predict", "csd"):
        out = tmp_path / f"out-{command}"
        code = main([command, str(dwi), *table, "--mask", str(tmp_path / "mask.nii.gz"), "-o", str(out)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert "mask.nii.gz" in err and "none of the mask's 8 voxels" in err
        assert not out.exists()
    data[..., 0] = 0  # the only b=0 volume
    nib.save(nib.Nifti1Image(data, img.affine), dwi)
    code = main(["predict", str(dwi), *table, "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and str(dwi) in err and "no voxel has a positive" in err
    assert not (tmp_path / "out").exists()


def test_a_diverging_fit_exits_2_and_removes_the_directory_it_made(tmp_path, capsys):
    dwi, bvals, bvecs = _write_dwi(tmp_path)
    out = tmp_path / "out"
    code = main(["fit", str(dwi), "--bvals", str(bvals), "--bvecs", str(bvecs), "--iterations", "3",
                 "--lr", "1e38", "--denoise", "none", "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "lower --lr" in err, err
    assert not out.exists()
    out.mkdir()  # a directory the user made is left alone
    assert main(["fit", str(dwi), "--bvals", str(bvals), "--bvecs", str(bvecs), "--iterations", "3",
                 "--lr", "1e38", "--denoise", "none", "-o", str(out), "--no-progress"]) == 2
    assert out.is_dir()
