"""The accuracy benchmark: the quick suite end to end, resume, the bars, config checks and the CLI."""

import json
import shutil

import pytest

from shdeconv.baselines import mrtrix_version
from shdeconv.cli import build_parser, main
from shdeconv.evaluation import (
    METHODS,
    BenchmarkConfig,
    bar_checks,
    estimate_seconds,
    format_bars,
    run_benchmark,
)
from shdeconv.evaluation import benchmark as bm

HAVE_MRTRIX = mrtrix_version() is not None
E2E_METHODS = ["csd", "csd+mppca", "direct", "fit", "shd-tv", "predict"] + (["mrtrix-csd"] if HAVE_MRTRIX else [])
E2E_CELLS = [bm.BAR_CELL, "spatial-multishell-snr20"]
FIGURES = ("accuracy_success_vs_angle.png", "accuracy_error_vs_snr.png", "accuracy_glyphs.png")


def _run(outdir, **kw):
    args = {"size": "quick", "seed": 0, "device": "cpu", "iterations": 2, "methods": E2E_METHODS,
            "cells": E2E_CELLS, "progress": False}
    return run_benchmark(outdir, **{**args, **kw})


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return out, _run(out)


@pytest.mark.slow  # the quick suite (shared fixture)
def test_quick_suite_writes_report_json_and_figures(quick_run):
    out, res = quick_run
    assert res["failures"] == []
    assert set(res["cells"]) == set(E2E_CELLS)
    # the networks and direct from the linear start run in the bar case only; fit's defaults everywhere
    expected = {bm.BAR_CELL: set(E2E_METHODS), "spatial-multishell-snr20": set(E2E_METHODS) - {"shd-tv", "direct"}}
    for cell in E2E_CELLS:
        assert set(res["cells"][cell]["methods"]) == expected[cell]
        for m in expected[cell]:
            rec = json.loads((out / cell / m / "scores.json").read_text())
            assert rec["seconds"] > 0 and rec["scores"]["groups"]["all"]["n_voxels"] > 0
    assert res["cells"][bm.BAR_CELL]["region"] is None
    region = res["cells"]["spatial-multishell-snr20"]["region"]
    assert region["voxels"] > 0
    assert res["cells"]["spatial-multishell-snr20"]["methods"]["csd"]["scores"]["region_voxels"] == region["voxels"]
    assert res["cells"][bm.BAR_CELL]["methods"]["shd-tv"]["iterations"] == 2
    starts = {m: json.loads((out / bm.BAR_CELL / m / "report.json").read_text())["start"] for m in ("direct", "fit")}
    assert starts == {"direct": "linear", "fit": "predict"}
    # fit's own default denoising: auto sees bundles and runs MP-PCA (the cell's shared signal)
    fit = json.loads((out / bm.BAR_CELL / "fit" / "scores.json").read_text())
    assert fit["denoise"] == "mppca" and fit["denoise_choice"]["neighbour_coherence"] > 0.5
    assert fit["denoise_seconds"] > 0
    md = (out / "results.md").read_text()
    assert "## Bars" in md and "## Cells" in md and "Machine:" in md and "MRtrix3" in md
    assert md.count("| method | seconds |") == len(E2E_CELLS)
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["iterations"] == 2 and set(saved["cells"]) == set(E2E_CELLS)
    for name in FIGURES:
        assert name in res["figures"]
        assert (out / name).stat().st_size > 1000
        assert f"]({name})" in md


@pytest.mark.slow  # the quick suite (shared fixture)
def test_bars_section_is_computed_from_the_scores(quick_run):
    out, res = quick_run
    scores = {m: rec["scores"] for m, rec in res["cells"][bm.BAR_CELL]["methods"].items()}
    rows = bar_checks(scores)
    assert rows == res["bars"]
    assert format_bars(rows) in (out / "results.md").read_text()
    csd, ours = scores["csd"]["groups"]["2"]["success_rate"], scores["shd-tv"]["groups"]["2"]["success_rate"]
    assert rows[0]["measured"] == pytest.approx(100 * (ours - csd))
    assert rows[0]["status"] == ("PASS" if 100 * (ours - csd) >= 10 else "MISS")
    assert res["bars_predict"] == bar_checks(scores, method="predict")
    assert format_bars(res["bars_predict"], "predict") in (out / "results.md").read_text()


@pytest.mark.slow  # the quick suite (shared fixture)
def test_rerun_skips_finished_methods(quick_run):
    out, _ = quick_run
    done = {p: p.stat().st_mtime_ns for p in out.glob("*/*/scores.json")}
    fodf = out / bm.BAR_CELL / "shd-tv" / "fodf.nii.gz"
    fodf_mtime = fodf.stat().st_mtime_ns
    redo = out / bm.BAR_CELL / "csd" / "scores.json"
    redo.unlink()
    res = _run(out)
    assert res["failures"] == []
    assert fodf.stat().st_mtime_ns == fodf_mtime
    for p, t in done.items():
        if p != redo:
            assert p.stat().st_mtime_ns == t, p
    assert redo.exists()
    with pytest.raises(ValueError, match="other output directory|another output"):
        _run(out, seed=1)


def _scores(success2, ae2, ae3=None, n3=0):
    def group(n, success, ae):
        return {"n_voxels": n, "success_rate": success, "angular_error_mean": ae}

    return {"groups": {"2": group(100, success2, ae2), "3": group(n3, 0.0 if n3 else None, ae3)}}


def test_bar_checks_pass_and_miss_from_numbers():
    passing = bar_checks({"shd-tv": _scores(0.40, 8.0), "csd": _scores(0.25, 12.0), "csd+mppca": _scores(0.40, 8.0)})
    assert [r["status"] for r in passing] == ["PASS"] * 4
    assert passing[0]["measured"] == pytest.approx(15.0)
    assert passing[1]["measured"] == pytest.approx(8.0 / 12.0)
    assert passing[2]["measured"] == pytest.approx(0.0)  # "no worse" holds at equality
    assert passing[3]["measured"] == pytest.approx(1.0)

    missing = bar_checks({"shd-tv": _scores(0.30, 10.0, ae3=20.0, n3=100), "csd": _scores(0.25, 12.0, ae3=18.0, n3=100),
                          "csd+mppca": _scores(0.31, 9.0)})
    assert [r["status"] for r in missing] == ["MISS", "MISS", "MISS", "MISS"]
    assert missing[0]["measured"] == pytest.approx(5.0)
    assert missing[1]["measured"] == pytest.approx(15.0 / 15.0)  # 2- and 3-fibre voxels weighted by count
    assert missing[2]["measured"] == pytest.approx(-1.0)
    assert missing[3]["measured"] == pytest.approx(15.0 / 9.0)
    text = format_bars(missing)
    assert "+5.0 points" in text and "-1.0 points" in text and "0 of 4 bars met" in text
    assert "MISS by 5.0 points" in text and "MISS by 0.667" in text

    partial = bar_checks({"shd-tv": _scores(0.40, 8.0), "csd": _scores(0.25, 12.0)})
    assert [r["status"] for r in partial] == ["PASS", "PASS", "n/a", "n/a"]
    assert "2 of 4 bars met (2 not measured)" in format_bars(partial)


def test_unknown_names_and_bad_settings_raise(tmp_path):
    with pytest.raises(ValueError, match="unknown methods"):
        BenchmarkConfig(methods=("csd", "nope"))
    with pytest.raises(ValueError, match="unknown methods"):
        run_benchmark(tmp_path / "x", size="quick", methods="csd,nope")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="unknown cells"):
        BenchmarkConfig(size="quick", cells=("spatial-sparse-snr10",))
    with pytest.raises(ValueError, match="size"):
        BenchmarkConfig(size="huge")
    with pytest.raises(ValueError, match="iterations"):
        BenchmarkConfig(iterations=-1)
    with pytest.raises(ValueError, match="device"):
        BenchmarkConfig(device="tpu")
    with pytest.raises(ValueError, match="seed must be an int >= 0"):  # was a traceback after writing
        run_benchmark(tmp_path / "s", size="quick", seed=-1)
    assert not (tmp_path / "s").exists()
    assert BenchmarkConfig(methods="csd, shd-tv").methods == ("csd", "shd-tv")


def test_suite_plan_and_budget():
    cells = {c.name: c for c in bm.plan_cells(BenchmarkConfig())}
    assert len(cells) == 1 + 8 + 1  # bar case, the rest of the 3 x 3 grid, voxel-wise
    assert set(cells[bm.BAR_CELL].methods) == {m for m, s in METHODS.items() if not s.multishell_only}
    assert {"msmt", "msmt+mppca"} <= set(cells["spatial-multishell-snr10"].methods)
    assert "msmt" not in cells["spatial-sparse-snr30"].methods
    assert set(cells["voxelwise-clinical-snr20"].methods) == {"csd", "csd+mppca", "direct", "fit", "shd-tv", "predict"}
    assert "fit" in cells["spatial-sparse-snr30"].methods and "shd-tv" not in cells["spatial-sparse-snr30"].methods
    no_mrtrix = bm.plan_cells(BenchmarkConfig(), mrtrix=False)
    assert not any(METHODS[m].engine == "mrtrix" for c in no_mrtrix for m in c.methods)
    assert estimate_seconds(BenchmarkConfig(), mrtrix=True)["total"] <= 70 * 60
    assert estimate_seconds(BenchmarkConfig(size="quick"), mrtrix=True)["total"] <= 300


def test_cli_benchmark_quick_exits_0(tmp_path, monkeypatch, capsys):
    # without MRtrix3 its arms are skipped with a note, and the rest still runs
    monkeypatch.setattr("shdeconv.baselines.mrtrix_version", lambda: None)
    out = tmp_path / "cli"
    code = main(["benchmark", "-o", str(out), "--quick", "--seed", "0", "--device", "cpu", "--iterations", "0",
                 "--methods", "csd,mrtrix-csd", "--no-progress"])
    assert code == 0
    assert "bars met" in capsys.readouterr().out
    md = (out / "results.md").read_text()
    assert "not installed" in md and "mrtrix-csd skipped" in md
    assert not any(out.glob("*/mrtrix-csd"))


def test_cli_benchmark_unknown_method_exits_2(tmp_path, capsys):
    assert main(["benchmark", "-o", str(tmp_path / "o"), "--quick", "--methods", "csd,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_fit_denoises_by_default_as_the_benchmark_found():
    args = build_parser().parse_args(["fit", "d.nii.gz", "--bvals", "b", "--bvecs", "v", "-o", "o",
                                      "--denoise", "none"])
    assert args.denoise == "none"
    assert build_parser().parse_args(["fit", "d.nii.gz", "--bvals", "b", "--bvecs", "v", "-o", "o"]).denoise == "auto"
    assert build_parser().parse_args(["predict", "d.nii.gz", "--bvals", "b", "--bvecs", "v", "-o", "o"]).denoise == "none"


@pytest.mark.skipif(not HAVE_MRTRIX, reason="MRtrix3 not installed")
def test_mrtrix_version_is_parsed():
    assert shutil.which("dwi2fod")
    assert mrtrix_version()[0].isdigit()


def test_predict_arms_take_a_model_file(tmp_path, capsys):
    import torch

    from shdeconv.models import DeconvNet, NetworkConfig
    from shdeconv.models._store import save_model

    torch.manual_seed(0)
    model = tmp_path / "mine.pt"
    save_model(model, DeconvNet(NetworkConfig(inputs="linear", width=4, K=2, head="linear", nside=4, lmax=8), n_iso=2))
    out = tmp_path / "b"
    res = _run(out, methods="predict", cells=[bm.BAR_CELL], model=model)
    rec = res["cells"][bm.BAR_CELL]["methods"]["predict"]
    assert rec["model"] == str(model.resolve()) and "mine.pt" in rec["label"]
    assert json.loads((out / "config.json").read_text())["model"] == str(model.resolve())
    assert f"--model {model.resolve()}" in (out / "results.md").read_text()
    other = tmp_path / "other.pt"
    shutil.copyfile(model, other)
    with pytest.raises(ValueError, match="another output"):
        _run(out, methods="predict", cells=[bm.BAR_CELL], model=other)
    assert main(["benchmark", "-o", str(tmp_path / "c"), "--quick", "--methods", "predict",
                 "--model", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    (tmp_path / "notes.pt").write_text("not a model")
    assert main(["benchmark", "-o", str(tmp_path / "d"), "--quick", "--methods", "predict",
                 "--model", str(tmp_path / "notes.pt")]) == 2
    assert "notes.pt: not a readable shdeconv model file" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
