"""Command-line conventions MRtrix3 and DIPY users expect: --force, checked --resume, one meaning
per option name, -v/-q/--nthreads after the subcommand, and errors that keep bugs visible."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from shdeconv.cli import build_parser, main
from shdeconv.sim import simulate_to_dir

COMMANDS = ("fit", "predict", "train", "csd", "demo", "benchmark", "track", "simulate", "evaluate", "bids",
            "check-gradients")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("ph")
    return [simulate_to_dir(root / f"s{s}", scheme="clinical", snr=20, seed=s, size="quick") for s in (3, 4)]


def _args(ph):
    return [str(ph / "dwi.nii.gz"), "--bvals", str(ph / "bvals"), "--bvecs", str(ph / "bvecs"), "--mask",
            str(ph / "mask.nii.gz"), "-q", "--denoise", "none"]


def _snapshot(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def test_output_directory_with_earlier_outputs_is_refused_untouched_unless_force(phantoms, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["fit", *_args(phantoms[0]), "--iterations", "2", "-o", str(out)]
    assert main(base) == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert main(base) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--force" in err and "fodf.nii.gz" in err
    assert _snapshot(out) == before  # nothing touched
    assert main(["csd", *_args(phantoms[0]), "-o", str(out)]) == 2
    assert main(base + ["--force"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["resumed_from"] is None


def test_resume_refuses_a_checkpoint_of_another_subject_or_settings(phantoms, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["fit", *_args(phantoms[0]), "--iterations", "3", "-o", str(out)]) == 0
    capsys.readouterr()
    # another subject in the same folder
    assert main(["fit", *_args(phantoms[1]), "--iterations", "5", "--resume", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt" in err and "other input data" in err
    # other settings
    assert main(["fit", *_args(phantoms[0]), "--iterations", "5", "--tv-weight", "2", "--resume",
                 "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "settings differ" in err and "tv" in err
    # the same run, more iterations: continues
    assert main(["fit", *_args(phantoms[0]), "--iterations", "5", "--resume", "-o", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["resumed_from"] == 3 and len(report["loss_curve"]) == 5


def test_a_lone_checkpoint_needs_resume_or_force(phantoms, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    torch.save({"kind": "direct"}, out / "checkpoint.pt")
    assert main(["fit", *_args(phantoms[0]), "--iterations", "2", "-o", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    for command in ("predict", "csd"):  # they have no --resume to suggest
        assert main([command, *_args(phantoms[0]), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert "another command" in err and "--force" in err and "--resume" not in err
    # a checkpoint written before fingerprints existed cannot be checked: refused by name
    assert main(["fit", *_args(phantoms[0]), "--iterations", "2", "--resume", "-o", str(out)]) == 2
    assert "no fingerprint" in capsys.readouterr().err


def test_train_resume_refuses_other_subjects(phantoms, tmp_path, capsys):
    out = tmp_path / "model"
    base = ["train", "-o", str(out), "--iterations", "2", "--batch-size", "1", "--device", "cpu", "-q"]
    assert main([*base[:1], str(phantoms[0]), *base[1:]]) == 0
    capsys.readouterr()
    assert main([*base[:1], str(phantoms[0]), *base[1:]]) == 2  # a finished training: --force or --resume
    assert "--force" in capsys.readouterr().err
    assert main([*base[:1], str(phantoms[1]), *base[1:], "--resume", "--iterations", "3"]) == 2
    assert "another run" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["predict", "--lmax", "4"], "--lmax"),
    (["predict", "--tile", "8"], "--patch-size"),
    (["predict", "--batch", "2"], "--batch-size"),
    (["fit", "--model", "direct"], "--variant"),
    (["train", "--model", "shd"], "--variant"),
])
def test_options_of_another_meaning_are_refused_with_the_new_name(argv, message, capsys):
    cmd, *rest = argv
    with pytest.raises(SystemExit) as e:
        main([cmd, "d.nii.gz", "--bvals", "b", "--bvecs", "v", "-o", "o", *rest] if cmd != "train"
             else [cmd, "s", "-o", "o", *rest])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_verbosity_threads_and_force_are_accepted_after_the_subcommand():
    p = build_parser()
    args = p.parse_args(["fit", "d.nii.gz", "--bvals", "b", "--bvecs", "v", "-o", "o", "-v", "--nthreads", "1",
                         "--force"])
    assert args.verbose and args.nthreads == 1 and args.force
    args = p.parse_args(["-q", "csd", "d.nii.gz", "--bvals", "b", "--bvecs", "v", "-o", "o"])
    assert args.quiet
    with pytest.raises(SystemExit) as e:
        p.parse_args(["--version"])
    assert e.value.code == 0


def test_nthreads_sets_torch_threads(monkeypatch, capsys):
    from shdeconv.cli import _main

    seen = []
    p = build_parser()
    p._subparsers._group_actions[0].choices["predict"].set_defaults(
        func=lambda args: seen.append(torch.get_num_threads()) or 0)
    monkeypatch.setattr(_main, "build_parser", lambda: p)
    before = torch.get_num_threads()
    base = ["predict", "x", "--bvals", "b", "--bvecs", "v", "-o", "o"]
    try:
        assert main(base + ["--nthreads", "1"]) == 0 and seen == [1]
    finally:
        torch.set_num_threads(before)
    assert main(base + ["--nthreads", "0"]) == 2 and "--nthreads" in capsys.readouterr().err


def test_every_option_has_help_and_shows_its_default():
    sub = build_parser()._subparsers._group_actions[0].choices
    assert set(COMMANDS) <= set(sub)  # a command that disappears fails here
    for name, p in sub.items():
        for action in p._actions:
            if action.help == "==SUPPRESS==" or action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        text = " ".join(p.format_help().split())
        assert "example:" in text
    fit_help = " ".join(sub["fit"].format_help().split())
    assert "(default: direct)" in fit_help and "(default: auto)" in fit_help and "(default: 0)" in fit_help


def test_console_script_is_installed_and_lists_every_command():
    exe = shutil.which("shdeconv") or str(Path(sys.executable).with_name("shdeconv"))
    r = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for cmd in COMMANDS:
        assert f"    {cmd} " in r.stdout or f"    {cmd}\n" in r.stdout, cmd
    r = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("shdeconv ")
    for cmd in COMMANDS:
        assert subprocess.run([exe, cmd, "--help"], capture_output=True).returncode == 0, cmd


def test_help_does_not_load_torch():
    """Building the command line imports no torch (several seconds): ``--help`` answers at once."""
    code = ("import sys; from shdeconv.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'dipy', 'bids') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", r.stdout


def test_bugs_keep_their_traceback_user_errors_exit_2(monkeypatch, capsys):
    from shdeconv._options import OptionError
    from shdeconv.cli import _main

    def raiser(exc):
        def cmd(args):
            raise exc
        return cmd

    def run(exc):
        p = build_parser()
        p._subparsers._group_actions[0].choices["simulate"].set_defaults(func=raiser(exc))
        monkeypatch.setattr(_main, "build_parser", lambda: p)
        return main(["simulate", "x"])

    with pytest.raises(ValueError, match="a bug"):
        run(ValueError("a bug"))
    assert run(OptionError("bad option")) == 2
    assert run(MemoryError()) == 1 and "out of the machine's memory" in capsys.readouterr().err
    assert run(RuntimeError("CUDA out of memory. Tried to allocate")) == 1
    with pytest.raises(RuntimeError, match="unrelated"):
        run(RuntimeError("unrelated"))
    assert run(KeyboardInterrupt()) == 130
    assert "--resume" not in capsys.readouterr().err  # simulate has no --resume


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without a GPU")
def test_device_is_checked_before_the_data_is_loaded(tmp_path, capsys):
    # the dwi does not even exist: the device error comes first
    code = main(["predict", str(tmp_path / "nope.nii.gz"), "--bvals", "b", "--bvecs", "v", "-o",
                 str(tmp_path / "o"), "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2 and "CUDA" in err and "nope.nii.gz" not in err
    code = main(["fit", str(tmp_path / "nope.nii.gz"), "--bvals", "b", "--bvecs", "v", "-o",
                 str(tmp_path / "o"), "--device", "cuda"])
    assert code == 2 and "CUDA" in capsys.readouterr().err


def test_track_gives_exactly_the_seeds_asked_for():
    from shdeconv.tracking import track_seeds

    mask = np.zeros((5, 5, 5), bool)
    mask[1:4, 2, 1:3] = True
    for n in (1, 2, 3, 4, 5, 8):
        seeds = track_seeds(mask, np.diag([2.0, 2.0, 2.0, 1.0]), n, seed=1)
        assert len(seeds) == n * mask.sum()
    # reproducible with the seed
    assert np.array_equal(track_seeds(mask, np.eye(4), 3, seed=1), track_seeds(mask, np.eye(4), 3, seed=1))
