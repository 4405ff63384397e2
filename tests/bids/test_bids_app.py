"""``shdeconv bids``: discovery in raw and QSIPrep-style datasets, BEP016 output names, skipping,
failure isolation, option errors and the predict path with a model read once."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from shdeconv.bids import add_parser, cmd_bids, find_dwi, output_names, run_bids
from shdeconv.io import InputError
from shdeconv.sim import simulate_to_dir

#: What a csd run on a single-shell series writes, after ``<entities>_model-csd_``.
CSD_TAILS = ("param-fod_label-WM_dwimap.nii.gz", "param-fod_label-WM_dwimap.json", "param-peaks_dwimap.nii.gz",
             "param-peaks_dwimap.json", "param-response_label-WM_dwimap.txt", "desc-qc_dwimap.png",
             "desc-report_dwimap.json")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return simulate_to_dir(tmp_path_factory.mktemp("phantom"), scheme="clinical", snr=20, seed=3, size="quick")


def _description(root: Path, **extra) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.9.0", **extra}))


def _series(phantom: Path, root: Path, stem: str) -> Path:
    """Copy the phantom to ``root/<stem>_dwi.*``; returns the dwi's folder."""
    dwi = root / f"{stem}_dwi.nii.gz"
    dwi.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(phantom / "dwi.nii.gz", dwi)
    shutil.copy(phantom / "bvals", root / f"{stem}_dwi.bval")
    shutil.copy(phantom / "bvecs", root / f"{stem}_dwi.bvec")
    return dwi.parent


@pytest.fixture
def bids_dir(phantom, tmp_path):
    root = tmp_path / "bids"
    _description(root)
    _series(phantom, root, "sub-01/dwi/sub-01")
    _series(phantom, root, "sub-02/ses-1/dwi/sub-02_ses-1")
    (root / "sub-02" / "anat").mkdir()
    (root / "sub-02" / "anat" / "sub-02_T1w.nii.gz").write_bytes(b"")  # not a dwi: never read
    return root


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _parser():
    """The ``bids`` sub-parser under a stand-in for the main parser and its shared options."""
    def common(p):
        p.add_argument("-v", "--verbose", action="store_true", help="log details")
        p.add_argument("-q", "--quiet", action="store_true", help="quiet")
        p.add_argument("--nthreads", type=int, default=None, help="threads")
        p.add_argument("--force", action="store_true", help="overwrite")

    parser = argparse.ArgumentParser(prog="shdeconv")
    add_parser(parser.add_subparsers(dest="command"), argparse.RawDescriptionHelpFormatter, common)
    return parser


def test_csd_on_every_series_writes_bep016_names_then_skips_then_force_reruns(bids_dir, tmp_path, capsys):
    out = tmp_path / "out"
    summary = run_bids(bids_dir, out, method="csd", progress=False)
    assert (summary["done"], summary["skipped"], summary["failed"]) == (2, 0, 0)
    root = out / "shdeconv"
    for folder, prefix in ((root / "sub-01" / "dwi", "sub-01"), (root / "sub-02" / "ses-1" / "dwi", "sub-02_ses-1")):
        assert _files(folder) == sorted(f"{prefix}_model-csd_{t}" for t in CSD_TAILS)
        report = json.loads((folder / f"{prefix}_model-csd_desc-report_dwimap.json").read_text())
        assert report["command"] == "csd"
        assert report["outputs"]["fodf"] == f"{prefix}_model-csd_param-fod_label-WM_dwimap.nii.gz"
    desc = json.loads((root / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["BIDSVersion"] == "1.9.0"
    assert desc["GeneratedBy"][0]["Name"] == "shdeconv" and desc["GeneratedBy"][0]["Version"]
    assert desc["SourceDatasets"][0]["URL"] == bids_dir.resolve().as_uri()
    assert not (root / ".work").exists()
    assert "sub-02 ses-1: done" in capsys.readouterr().out

    wm = root / "sub-01" / "dwi" / "sub-01_model-csd_param-fod_label-WM_dwimap.nii.gz"
    before = wm.stat().st_mtime_ns
    again = run_bids(bids_dir, out, method="csd", progress=False)
    assert (again["done"], again["skipped"]) == (0, 2) and wm.stat().st_mtime_ns == before
    assert "sub-01: skipped" in capsys.readouterr().out
    forced = run_bids(bids_dir, out, method="csd", progress=False, force=True, quiet=True)
    assert (forced["done"], forced["skipped"]) == (2, 0) and wm.stat().st_mtime_ns != before
    assert capsys.readouterr().out == ""


def test_qsiprep_derivative_is_found_with_its_brain_mask(phantom, tmp_path):
    root = tmp_path / "qsiprep"
    _description(root, DatasetType="derivative", GeneratedBy=[{"Name": "qsiprep"}])
    stem = "sub-01_ses-1_run-01_space-T1w"
    folder = _series(phantom, root, f"sub-01/ses-1/dwi/{stem}_desc-preproc")
    mask = folder / f"{stem}_desc-brain_mask.nii.gz"
    shutil.copy(phantom / "mask.nii.gz", mask)
    (root / "sub-01" / "anat").mkdir()
    shutil.copy(phantom / "mask.nii.gz", root / "sub-01" / "anat" / "sub-01_desc-brain_mask.nii.gz")  # not the dwi's

    [series] = find_dwi(root)
    assert (series.subject, series.session, series.mask, series.prefix) == ("01", "1", mask, stem)
    summary = run_bids(root, tmp_path / "out", method="csd", progress=False, quiet=True)
    assert summary["done"] == 1
    out = tmp_path / "out" / "shdeconv" / "sub-01" / "ses-1" / "dwi"
    report = json.loads((out / f"{stem}_model-csd_desc-report_dwimap.json").read_text())
    assert report["inputs"]["mask"] == str(mask)  # run-01 keeps its zero, desc-preproc is dropped
    assert report["voxels_in_mask"] == int(np.count_nonzero(np.asarray(nib.load(mask).dataobj)))


def test_a_failing_series_leaves_no_outputs_and_the_others_still_run(bids_dir, tmp_path, capsys):
    bad = bids_dir / "sub-01" / "dwi" / "sub-01_dwi.bval"
    bad.write_text(" ".join(bad.read_text().split()[:-1]) + "\n")  # one b-value short
    args = _parser().parse_args(["bids", str(bids_dir), str(tmp_path / "out"), "participant", "--method", "csd",
                                 "--no-progress", "--nthreads", "1"])
    assert cmd_bids(args) == 1
    captured = capsys.readouterr()
    assert "shdeconv bids: sub-01: " in captured.err and "b-values" in captured.err
    assert "1 done, 0 skipped, 1 failed" in captured.out
    root = tmp_path / "out" / "shdeconv"
    assert _files(root / "sub-01" / "dwi") == []
    assert len(_files(root / "sub-02" / "ses-1" / "dwi")) == len(CSD_TAILS)
    assert not (root / ".work").exists()


def test_a_bug_in_one_series_is_reported_with_its_type_and_isolated(bids_dir, tmp_path, monkeypatch, capsys):
    import shdeconv.fitting

    real = shdeconv.fitting.run_csd

    def flaky(dwi, *a, **kw):
        if "sub-02" in str(dwi):
            raise RuntimeError("boom")
        return real(dwi, *a, **kw)

    monkeypatch.setattr(shdeconv.fitting, "run_csd", flaky)
    summary = run_bids(bids_dir, tmp_path / "out", method="csd", progress=False, quiet=True)
    assert (summary["done"], summary["failed"]) == (1, 1)
    failed = [r for r in summary["series"] if r["status"] == "failed"]
    assert failed[0]["subject"] == "02" and failed[0]["error"] == "RuntimeError: boom"
    assert "shdeconv bids: sub-02 ses-1: RuntimeError: boom" in capsys.readouterr().err
    assert _files(tmp_path / "out" / "shdeconv" / "sub-02" / "ses-1" / "dwi") == []


def test_an_interrupted_run_leaves_no_working_folder(bids_dir, tmp_path, monkeypatch):
    import shdeconv.fitting

    def interrupted(dwi, bvals, bvecs, outdir, **kw):  # as a csd stopped by Ctrl-C, its folder made
        Path(outdir).mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(shdeconv.fitting, "run_csd", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_bids(bids_dir, tmp_path / "out", method="csd", progress=False, quiet=True)
    assert not (tmp_path / "out" / "shdeconv" / ".work").exists()


def test_each_method_denoises_as_its_own_command_does_unless_told(bids_dir, tmp_path, monkeypatch):
    """``bids --method fit`` is ``shdeconv fit``: auto denoising by default (predict and csd: none)."""
    import shdeconv.fitting
    from shdeconv._options import OptionError

    seen = []

    def job(dwi, *args, denoise, **kwargs):
        seen.append(denoise)
        raise InputError(dwi, "stopped by the test")

    for name in ("run_fit", "run_csd"):
        monkeypatch.setattr(shdeconv.fitting, name, job)
    for method, denoise, expected in (("fit", None, "auto"), ("csd", None, "none"), ("fit", "localpca", "localpca"),
                                      ("csd", "mppca", "mppca")):
        seen.clear()
        summary = run_bids(bids_dir, tmp_path / f"{method}-{denoise}", method=method, denoise=denoise,
                           progress=False, quiet=True)
        assert summary["failed"] == 2 and seen == [expected, expected], (method, denoise)
    with pytest.raises(OptionError, match="denoise"):
        run_bids(bids_dir, tmp_path / "bad", method="fit", denoise="nlmeans")
    p = argparse.ArgumentParser()
    add_parser(p.add_subparsers(), argparse.HelpFormatter, lambda q: None)
    assert p.parse_args(["bids", "in", "out", "participant"]).denoise is None


def test_missing_or_non_bids_dir_is_an_input_error_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(InputError, match="BIDS directory not found") as e:
        run_bids(tmp_path / "nope", out, method="csd")
    assert str(tmp_path / "nope") in str(e.value)
    plain = tmp_path / "plain"
    (plain / "sub-01" / "dwi").mkdir(parents=True)
    with pytest.raises(InputError, match="dataset_description.json"):
        run_bids(plain, out, method="csd")
    empty = tmp_path / "empty"
    _description(empty)
    with pytest.raises(InputError, match="no diffusion series"):
        run_bids(empty, out, method="csd")
    assert not out.exists()


def test_exit_status_2_for_a_missing_bids_dir_through_the_command_line(tmp_path, capsys):
    from shdeconv.cli import build_parser, main

    if "bids" not in build_parser()._subparsers._group_actions[0].choices:
        pytest.skip("the bids command is not wired into shdeconv.cli yet")
    assert main(["bids", str(tmp_path / "nope"), str(tmp_path / "out"), "participant", "-q"]) == 2
    assert "BIDS directory not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_participant_label_selects_and_unknown_labels_are_refused(bids_dir, tmp_path, capsys):
    args = _parser().parse_args(["bids", str(bids_dir), str(tmp_path / "out"), "participant",
                                 "--participant-label", "sub-02", "--method", "csd", "--no-progress",
                                 "--nthreads", "1"])
    assert cmd_bids(args) == 0
    root = tmp_path / "out" / "shdeconv"
    assert not (root / "sub-01").exists() and len(_files(root / "sub-02" / "ses-1" / "dwi")) == len(CSD_TAILS)
    assert "1 done, 0 skipped, 0 failed" in capsys.readouterr().out

    assert [s.subject for s in find_dwi(bids_dir, participant_label=["01", "02"], session_label="ses-1")] == ["02"]
    with pytest.raises(InputError, match="participant.* 03"):
        find_dwi(bids_dir, participant_label=["01", "03"])
    with pytest.raises(InputError, match=str(bids_dir)):
        find_dwi(bids_dir, session_label="9")


def test_parser_options_and_option_errors(bids_dir, tmp_path, capsys):
    parser = _parser()
    args = parser.parse_args(["bids", "in", "out", "participant"])
    assert (args.method, args.device, args.model, args.participant_label, args.precision, args.func) == \
        ("predict", "auto", None, None, "float32", cmd_bids)
    with pytest.raises(SystemExit):
        parser.parse_args(["bids", "in", "out", "group"])
    capsys.readouterr()
    sub = parser._subparsers._group_actions[0].choices["bids"]
    assert all(a.help for a in sub._actions)
    assert "example:" in sub.format_help()

    from shdeconv._options import OptionError

    with pytest.raises(OptionError, match="method"):
        run_bids(bids_dir, tmp_path / "out", method="mrtrix")
    with pytest.raises(OptionError, match="--model"):
        run_bids(bids_dir, tmp_path / "out", method="csd", model="m.pt")
    with pytest.raises(OptionError, match="--precision"):
        run_bids(bids_dir, tmp_path / "out", method="fit", precision="bfloat16")
    with pytest.raises(OptionError, match="--precision"):
        run_bids(bids_dir, tmp_path / "out", precision="float16")
    with pytest.raises(InputError, match="model file not found"):
        run_bids(bids_dir, tmp_path / "out", model=tmp_path / "m.pt", device="cpu")
    assert not (tmp_path / "out").exists()


def test_output_names_cover_every_tissue():
    names = output_names("sub-01_ses-2_acq-hi", "fit")
    assert names["gm.nii.gz"] == "sub-01_ses-2_acq-hi_model-fit_param-fod_label-GM_dwimap.nii.gz"
    assert names["csf.json"] == "sub-01_ses-2_acq-hi_model-fit_param-fod_label-CSF_dwimap.json"
    assert names["response_csf.txt"] == "sub-01_ses-2_acq-hi_model-fit_param-response_label-CSF_dwimap.txt"
    assert len(set(names.values())) == len(names)


def test_predict_reads_the_shipped_model_once_for_every_series(bids_dir, tmp_path, monkeypatch):
    from shdeconv.models import LoadedModel

    real, calls = LoadedModel.load, []
    monkeypatch.setattr(LoadedModel, "load", lambda path=None: calls.append(path) or real(path))
    summary = run_bids(bids_dir, tmp_path / "out", device="cpu", progress=False, quiet=True, precision="bfloat16")
    assert (summary["done"], summary["failed"]) == (2, 0) and calls == [None]
    folder = tmp_path / "out" / "shdeconv" / "sub-01" / "dwi"
    report = json.loads((folder / "sub-01_model-predict_desc-report_dwimap.json").read_text())
    assert report["command"] == "predict" and report["model"].endswith(".pt") and report["model_sha256"]
    assert report["precision"] == "bfloat16"  # the option reaches predict
    assert (folder / "sub-01_model-predict_param-fod_label-WM_dwimap.nii.gz").is_file()
