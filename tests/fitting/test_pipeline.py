"""End to end: fit and csd on a tiny phantom write every output, load in DIPY, resume works."""

import json
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from shdeconv._options import OptionError
from shdeconv.fitting import (
    DirectConfig,
    FitConfig,
    default_loss_weights,
    run_csd,
    run_fit,
    run_predict,
    start_for,
)
from shdeconv.io import InputError
from shdeconv.models import NetworkConfig
from shdeconv.sim import simulate_to_dir, spatial_phantom, write_phantom

TINY_FIT = FitConfig(iterations=4, batch_size=2, patch_size=8, checkpoint_every=2, seed=0)


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    return simulate_to_dir(tmp_path_factory.mktemp("ph"), kind="spatial", scheme="clinical", snr=20, seed=1,
                           size="quick")


def _inputs(ph):
    return ph / "dwi.nii.gz", ph / "bvals", ph / "bvecs"


def test_fit_writes_all_outputs_and_resumes(phantom, tmp_path):
    out = tmp_path / "fit"
    rep = run_fit(*_inputs(phantom), out, mask=phantom / "mask.nii.gz", variant="shd-tv", fit_config=TINY_FIT,
                  progress=False)
    for name in ("fodf.nii.gz", "gm.nii.gz", "peaks.nii.gz", "response_wm.txt", "checkpoint.pt", "report.json",
                 "qc.png"):
        assert (out / name).exists(), name
    assert not list(out.glob(".*")), "temporary files left behind"
    fodf = nib.load(out / "fodf.nii.gz")
    dwi = nib.load(phantom / "dwi.nii.gz")
    assert fodf.shape == dwi.shape[:3] + (153,)  # lmax 16: orders above the response's 8 from the priors
    np.testing.assert_allclose(fodf.affine, dwi.affine)
    peaks = nib.load(out / "peaks.nii.gz")
    assert peaks.shape == dwi.shape[:3] + (9,)
    report = json.loads((out / "report.json").read_text())
    assert len(report["loss_curve"]) == 4 and report["network"]["variant"] == "shd-tv"
    ck = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ck["iteration"] == 4
    # resume to 6 iterations: continues from 4, history extended, not restarted
    more = FitConfig(iterations=6, batch_size=2, patch_size=8, checkpoint_every=2, seed=0)
    rep2 = run_fit(*_inputs(phantom), out, mask=phantom / "mask.nii.gz", variant="shd-tv", fit_config=more,
                   resume=True, progress=False)
    assert rep2["resumed_from"] == 4 and len(rep2["loss_curve"]) == 6
    assert rep2["loss_curve"][:4] == rep["loss_curve"]


@pytest.mark.slow
def test_resume_is_deterministic(phantom, tmp_path):
    """Stopping at 2 and resuming to 4 gives exactly the weights of a straight run to 4."""
    cfg = FitConfig(iterations=4, batch_size=2, patch_size=8, checkpoint_every=2, seed=3)
    kw = dict(mask=phantom / "mask.nii.gz", variant="shd-tv", progress=False)
    run_fit(*_inputs(phantom), tmp_path / "a", fit_config=cfg, **kw)
    half = FitConfig(iterations=2, batch_size=2, patch_size=8, checkpoint_every=2, seed=3)
    run_fit(*_inputs(phantom), tmp_path / "b", fit_config=half, **kw)
    run_fit(*_inputs(phantom), tmp_path / "b", fit_config=cfg, resume=True, **kw)
    wa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["model"]
    wb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["model"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k])


@pytest.mark.parametrize("variant", ["esd", "rtesd", "shd"])
def test_other_variants_run(phantom, tmp_path, variant):
    cfg = FitConfig(iterations=1, batch_size=1, patch_size=8)
    rep = run_fit(*_inputs(phantom), tmp_path / variant, mask=phantom / "mask.nii.gz", variant=variant,
                  fit_config=cfg, net_config=NetworkConfig(depth=2, width=4, K=2), progress=False)
    assert rep["network"]["variant"] == variant
    assert (tmp_path / variant / "fodf.nii.gz").exists()


TINY_DIRECT = DirectConfig(iterations=4, lr=0.1, checkpoint_every=2, schedule="constant")


def test_direct_writes_outputs_lowers_the_loss_and_resumes(phantom, tmp_path):
    out = tmp_path / "direct"
    rep = run_fit(*_inputs(phantom), out, mask=phantom / "mask.nii.gz", variant="direct",
                  direct_config=TINY_DIRECT, progress=False)
    assert rep["model"] == "direct" and rep["direct"]["iterations"] == 4 and rep["loss_weights"]["tv"] == 0.5
    fodf = nib.load(out / "fodf.nii.gz").get_fdata()
    mask = nib.load(phantom / "mask.nii.gz").get_fdata() > 0
    assert fodf.shape[-1] == 153 and np.all(fodf[~mask] == 0) and np.all(fodf[mask][:, 0] > 0)
    iso = nib.load(out / "gm.nii.gz").get_fdata()
    assert np.all(iso[mask] > 0)
    curve = [h["loss"] for h in rep["loss_curve"]]
    assert curve[-1] < curve[0]
    # a constant rate: extending a cosine schedule changes the steps still to come
    more = DirectConfig(iterations=6, lr=0.1, checkpoint_every=2, schedule="constant")
    straight = run_fit(*_inputs(phantom), tmp_path / "straight", mask=phantom / "mask.nii.gz", variant="direct",
                       direct_config=more, progress=False)
    resumed = run_fit(*_inputs(phantom), out, mask=phantom / "mask.nii.gz", variant="direct", direct_config=more,
                      resume=True, progress=False)
    assert resumed["resumed_from"] == 4 and len(resumed["loss_curve"]) == 6
    np.testing.assert_allclose([h["loss"] for h in resumed["loss_curve"]],
                               [h["loss"] for h in straight["loss_curve"]], rtol=1e-5)
    # fewer iterations than the checkpoint holds: refused, rather than recording 2 steps of a
    # 6-step state (and repeating steps 3-6 on the next resume)
    before = (out / "checkpoint.pt").read_bytes()
    with pytest.raises(InputError, match="at step 6, beyond --iterations 2"):
        run_fit(*_inputs(phantom), out, mask=phantom / "mask.nii.gz", variant="direct",
                direct_config=replace(more, iterations=2), resume=True, progress=False)
    assert (out / "checkpoint.pt").read_bytes() == before


def test_direct_slabs_give_the_single_slab_result(phantom, tmp_path):
    """Cut into blocks of a few voxels, every step adds the exact sums: same fODF as in one piece."""
    kw = dict(mask=phantom / "mask.nii.gz", variant="direct", progress=False)
    run_fit(*_inputs(phantom), tmp_path / "one", direct_config=DirectConfig(iterations=3), **kw)
    run_fit(*_inputs(phantom), tmp_path / "slabs", direct_config=DirectConfig(iterations=3, chunk_voxels=200), **kw)
    a = nib.load(tmp_path / "one" / "fodf.nii.gz").get_fdata()
    b = nib.load(tmp_path / "slabs" / "fodf.nii.gz").get_fdata()
    np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(a).max())


def test_direct_starts_from_csd(phantom, tmp_path):
    """init="csd": the start is DIPY CSD's fODF (lmax 8, rotated to the voxel frame), so the
    first iteration's loss is that of CSD's answer, not of the smoother linear solution."""
    kw = dict(mask=phantom / "mask.nii.gz", variant="direct", progress=False)
    lin = run_fit(*_inputs(phantom), tmp_path / "lin", direct_config=DirectConfig(iterations=1, init="linear"), **kw)
    csd = run_fit(*_inputs(phantom), tmp_path / "csd", direct_config=DirectConfig(iterations=1, init="csd"), **kw)
    assert csd["direct"]["init"] == "csd"
    assert csd["loss_curve"][0]["sparsity"] < lin["loss_curve"][0]["sparsity"]  # CSD's fODF is sparser
    with pytest.raises(ValueError, match="init"):
        DirectConfig(init="mrtrix")


def test_direct_starts_from_the_shipped_prediction_in_the_right_frame(tmp_path):
    """init="predict": the start is the shipped model's prediction in the fit's voxel frame. With no
    iteration the fit writes its start: on an oblique grid with a reversed axis (where a frame slip shows)
    its lmax-8 part is the written `predict` output, scaled to leave the isotropic tissues their
    start and raised where it was negative."""
    rot = Rotation.from_rotvec(np.radians(25.0) * np.array([1.0, 1.0, 0.3]) / np.linalg.norm([1.0, 1.0, 0.3]))
    affine = np.eye(4)
    affine[:3, :3] = rot.as_matrix() @ np.diag([-2.0, 2.0, 2.0])
    ph = write_phantom(spatial_phantom(scheme="clinical", snr=30, seed=2, size="quick", affine=affine),
                       tmp_path / "ph")
    kw = dict(mask=ph / "mask.nii.gz", progress=False)
    rep = run_fit(*_inputs(ph), tmp_path / "fit", variant="direct", direct_config=DirectConfig(iterations=0,
                                                                                                init="predict"), **kw)
    assert rep["direct"]["init"] == "predict"
    run_predict(*_inputs(ph), tmp_path / "predict", **kw)
    mask = nib.load(ph / "mask.nii.gz").get_fdata() > 0
    start = nib.load(tmp_path / "fit" / "fodf.nii.gz").get_fdata()[mask][:, :45]
    pred = nib.load(tmp_path / "predict" / "fodf.nii.gz").get_fdata()[mask]
    assert np.corrcoef(start[:, 1:].ravel(), pred[:, 1:].ravel())[0, 1] > 0.95  # the orientations
    assert 0.85 < np.median(start[:, 0] / pred[:, 0]) < 1.05


def test_the_default_start_is_predict_on_one_low_b_shell_and_linear_otherwise(phantom, tmp_path):
    shells = ([0, 1000], [1000], [0, 700], [0, 1000, 2000, 3000], [0, 3000], [0, 2000])
    assert [start_for("auto", s) for s in shells] == ["predict"] * 3 + ["linear"] * 3
    assert start_for("csd", [0, 1000, 2000]) == "csd" and start_for("predict", [0, 1000, 3000]) == "predict"
    multi = simulate_to_dir(tmp_path / "ms", kind="spatial", scheme="multishell", snr=20, seed=1, size="quick")
    for ph, expected in ((phantom, "predict"), (multi, "linear")):
        rep = run_fit(*_inputs(ph), tmp_path / expected, mask=ph / "mask.nii.gz", variant="direct",
                      direct_config=DirectConfig(iterations=0), progress=False)
        assert rep["direct"]["init"] == "auto" and rep["start"] == expected


def test_a_config_of_the_other_kind_of_fit_is_refused_not_ignored(phantom, tmp_path):
    kw = dict(mask=phantom / "mask.nii.gz", progress=False)
    with pytest.raises(ValueError, match="direct_config"):
        run_fit(*_inputs(phantom), tmp_path / "a", variant="direct", fit_config=FitConfig(iterations=1), **kw)
    with pytest.raises(ValueError, match="fit_config"):
        run_fit(*_inputs(phantom), tmp_path / "b", variant="shd-tv", direct_config=TINY_DIRECT, **kw)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_direct_refuses_a_network_checkpoint(phantom, tmp_path):
    out = tmp_path / "mixed"
    run_fit(*_inputs(phantom), out, mask=phantom / "mask.nii.gz", variant="shd-tv",
            fit_config=FitConfig(iterations=1, batch_size=1), net_config=NetworkConfig(depth=2, width=4, K=2),
            progress=False)
    with pytest.raises(InputError, match="not a checkpoint of a direct fit"):
        run_fit(*_inputs(phantom), out, mask=phantom / "mask.nii.gz", variant="direct", direct_config=TINY_DIRECT,
                resume=True, progress=False)


def test_csd_outputs(phantom, tmp_path):
    out = tmp_path / "csd"
    run_csd(*_inputs(phantom), out, mask=phantom / "mask.nii.gz")
    for name in ("fodf.nii.gz", "peaks.nii.gz", "report.json", "qc.png", "response_wm.txt"):
        assert (out / name).exists(), name


def test_the_report_lists_what_loading_warned_about(phantom, tmp_path):
    """A repaired voxel is a dropped voxel: report.json names it, not only stderr."""
    img = nib.load(phantom / "dwi.nii.gz")
    data = np.asarray(img.dataobj, dtype=np.float32)
    data[3, 4, 2, 5] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), tmp_path / "dwi.nii.gz")
    with pytest.warns(UserWarning, match="1 voxel contains NaN"):
        report = run_csd(tmp_path / "dwi.nii.gz", phantom / "bvals", phantom / "bvecs", tmp_path / "csd",
                         mask=phantom / "mask.nii.gz")
    assert any("1 voxel contains NaN or Inf; set to 0 and excluded from the mask" in w for w in report["warnings"])
    assert any("lmax 8 needs 45 coefficients" in w for w in report["warnings"])  # the fit's own warning too
    assert json.loads((tmp_path / "csd" / "report.json").read_text())["warnings"] == report["warnings"]


def test_recorded_warnings_collects_each_message_once_and_issues_it_again():
    import warnings

    from shdeconv.fitting import recorded_warnings

    with pytest.warns(UserWarning) as shown:
        with recorded_warnings() as messages:
            for _ in range(3):
                warnings.warn("same", UserWarning)
            warnings.warn("other", UserWarning)
    assert messages == ["same", "other"]
    assert [str(w.message) for w in shown] == ["same", "other"]
    with pytest.warns(UserWarning, match="before the error"), pytest.raises(RuntimeError):
        with recorded_warnings() as messages:
            warnings.warn("before the error", UserWarning)
            raise RuntimeError("stop")
    assert messages == ["before the error"]


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["clinical", "multishell"])
def test_mppca_denoising_brings_the_signal_closer_to_the_noise_free_one(scheme):
    from shdeconv.fitting import denoise_mppca
    from shdeconv.sim import spatial_phantom

    noisy = spatial_phantom(scheme=scheme, snr=10, seed=4, size="quick")
    clean = spatial_phantom(scheme=scheme, snr=None, seed=4, size="quick")
    m = noisy.mask
    den = denoise_mppca(noisy.dwi, m)
    before = np.sqrt(np.mean((noisy.dwi[m] - clean.dwi[m]) ** 2))
    after = np.sqrt(np.mean((den[m] - clean.dwi[m]) ** 2))
    assert after < 0.8 * before


def test_local_pca_denoises_white_noise_and_keeps_working_on_correlated_noise():
    """MP-PCA's noise level comes from the Marchenko-Pastur law of white noise; local PCA's
    from a separate noise map, so smoothing the noise in space (FWHM 1.5 voxels) defeats the
    first far more than the second."""
    from shdeconv._options import OptionError
    from shdeconv.fitting import denoise_pca
    from shdeconv.sim import PhantomVariation, spatial_phantom

    clean = spatial_phantom(snr=None, seed=4, size="quick")
    m = clean.mask

    def rmse(d):
        return np.sqrt(np.mean((d[m] - clean.dwi[m]) ** 2))

    errors = {}
    for fwhm in (0.0, 1.5):
        noisy = spatial_phantom(snr=10, seed=4, size="quick", variation=PhantomVariation(noise_fwhm=fwhm))
        for method in ("mppca", "localpca"):
            den = denoise_pca(noisy.dwi, m, method, bvals=noisy.bvals, directions=noisy.directions_world)
            assert den.shape == noisy.dwi.shape and np.isfinite(den).all()
            errors[fwhm, method] = rmse(den) / rmse(noisy.dwi)
    assert errors[0.0, "mppca"] < 0.6 and errors[0.0, "localpca"] < 0.6
    assert errors[1.5, "localpca"] < 0.7 * errors[1.5, "mppca"]
    with pytest.raises(OptionError):
        denoise_pca(clean.dwi, m, "nlmeans")
    with pytest.raises(ValueError, match="bvals"):
        denoise_pca(clean.dwi, m, "localpca")


def test_choose_denoise_runs_mppca_only_where_neighbouring_fibres_agree():
    from shdeconv.direction import GradientCheck
    from shdeconv.fitting import AUTO_DENOISE_COHERENCE, choose_denoise
    from shdeconv.fitting._subject import AUTO_DENOISE_MIN_PAIRS

    def check(c, pairs):
        return GradientCheck([], 0.0, "as given", np.eye(3), False, "", neighbour_coherence=c, neighbour_pairs=pairs)

    enough = AUTO_DENOISE_MIN_PAIRS
    assert choose_denoise(check(0.9, 5000))[0] == "mppca"
    assert choose_denoise(check(AUTO_DENOISE_COHERENCE, enough))[0] == "mppca"
    method, record = choose_denoise(check(0.01, 5000))
    assert method == "none" and record["method"] == "none" and record["neighbour_coherence"] == 0.01
    assert "unrelated" in record["reason"] and record["pairs"] == 5000
    # too few pairs, or none, to judge: MP-PCA, the published pipeline's
    assert choose_denoise(check(0.01, enough - 1))[0] == "mppca"
    method, record = choose_denoise(check(float("nan"), 0))
    assert method == "mppca" and record["neighbour_coherence"] is None
    json.dumps(record)  # the report's record


@pytest.mark.slow
def test_fit_denoise_auto_skips_mppca_on_independent_voxels_and_runs_it_on_bundles(tmp_path):
    """``fit``'s default on a phantom of independent voxels applies no denoising (its signal is the
    raw one); on bundles it is MP-PCA, the same signal as ``denoise="mppca"``; the report says
    which and why."""
    from shdeconv.fitting import load_subject

    for kind, expected in (("voxelwise", "none"), ("spatial", "mppca")):
        ph = simulate_to_dir(tmp_path / kind, kind=kind, scheme="clinical", snr=20, seed=3, size="quick")
        auto = load_subject(*_inputs(ph), ph / "mask.nii.gz", denoise="auto")
        fixed = load_subject(*_inputs(ph), ph / "mask.nii.gz", denoise=expected)
        assert auto.denoise == expected and auto.denoise_record["method"] == expected, kind
        assert fixed.denoise == expected and fixed.denoise_record is None
        np.testing.assert_array_equal(auto.signal, fixed.signal)
    report = run_fit(*_inputs(ph), tmp_path / "fit", mask=ph / "mask.nii.gz", denoise="auto",
                     direct_config=DirectConfig(iterations=2), progress=False)
    saved = json.loads((tmp_path / "fit" / "report.json").read_text())
    assert report["denoise"] == saved["denoise"] == "mppca"
    assert saved["denoise_choice"]["requested"] == "auto" and saved["denoise_choice"]["neighbour_coherence"] > 0.5
    assert json.loads((tmp_path / "fit" / "fodf.json").read_text())["Model"]["Parameters"]["denoise"] == "mppca"


def test_load_subject_without_raw_normalises_in_place_with_the_same_result(phantom):
    """keep_raw=False (fit, predict, training cache): one volume-sized array, same subject."""
    from shdeconv.fitting import load_subject

    kept = load_subject(*_inputs(phantom), phantom / "mask.nii.gz")
    lean = load_subject(*_inputs(phantom), phantom / "mask.nii.gz", keep_raw=False)
    assert kept.dwi.data is not None and not np.shares_memory(kept.signal, kept.dwi.data)
    assert lean.dwi.data is None and lean.signal.dtype == np.float32
    np.testing.assert_array_equal(lean.signal, kept.signal)
    np.testing.assert_array_equal(lean.mask, kept.mask)
    np.testing.assert_array_equal(lean.s0, kept.s0)
    np.testing.assert_array_equal(lean.responses.wm, kept.responses.wm)
    assert lean.responses.s0_scale == kept.responses.s0_scale
    # the caller's array is untouched by default
    from shdeconv.fitting._subject import prepare_subject

    data = np.asarray(nib.load(phantom / "dwi.nii.gz").dataobj, dtype=np.float32)
    before = data.copy()
    bvals = np.loadtxt(phantom / "bvals")
    prepare_subject(data, bvals, kept.directions, kept.mask)
    np.testing.assert_array_equal(data, before)
    lean2 = prepare_subject(data, bvals, kept.directions, kept.mask, keep_raw=False)
    assert np.shares_memory(lean2.signal, data)


@pytest.mark.parametrize("bad", [{"iterations": -1}, {"batch_size": 0}, {"patch_size": 0}, {"lr": 0.0},
                                 {"checkpoint_every": 0}, {"tile_overlap": 1.0}, {"tile_overlap": -0.1}])
def test_fit_config_rejects_bad_values(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        FitConfig(**bad)
    assert FitConfig().tile_overlap == 0.25  # as predict's default (benchmarks/tile_overlap.py)


def test_jobs_warn_about_a_flipped_gradient_table_and_use_it_as_given(tmp_path):
    from dipy.data import get_fnames

    dwi, bvals, bvecs = get_fnames(name="small_64D")
    table = np.loadtxt(bvecs)  # (65, 3): one row per volume in this file
    table[:, 0] *= -1  # x flipped, as a wrong conversion would leave it
    flipped = tmp_path / "flipped.bvec"
    np.savetxt(flipped, table, fmt="%.6f")
    with pytest.warns(UserWarning, match="flip x"):
        report = run_csd(dwi, bvals, flipped, tmp_path / "csd")
    assert report["gradient_check"]["clearly_better"] and report["gradient_check"]["best"] == "flip x"
    assert any("check-gradients" in w for w in report["warnings"])
    # the given table gives no warning and says so in the report
    report = run_csd(dwi, bvals, bvecs, tmp_path / "ok")
    assert not report["gradient_check"]["clearly_better"] and report["gradient_check"]["warning"] is None


def test_fit_network_learns_a_target_volume(phantom):
    """A warm-start target is the supervised term's target on every sampled patch."""
    from shdeconv.fitting import default_loss_weights
    from shdeconv.fitting._fit import fit_network
    from shdeconv.fitting._subject import build_network, load_subject
    from shdeconv.losses import DeconvLoss

    subject = load_subject(*_inputs(phantom), phantom / "mask.nii.gz", lmax=8, keep_raw=False)
    cfg = NetworkConfig(width=4, K=2).with_variant("shd-tv")
    torch.manual_seed(0)
    net, fm = build_network(subject, cfg, None)
    target = np.zeros(subject.mask.shape + (153,), np.float32)
    target[..., 0] = 0.2
    loss = DeconvLoss(fm, default_loss_weights("shd-tv", supervised=1.0), lmax=cfg.lmax)
    res = fit_network(net, loss, subject.signal, subject.mask, FitConfig(iterations=6, batch_size=2, lr=1e-2),
                      device=torch.device("cpu"), progress=False, target=target)
    sup = [h["supervised"] for h in res.history]
    assert all(np.isfinite(sup)) and sup[-1] < sup[0]
    with pytest.raises(ValueError, match="does not match"):
        fit_network(net, loss, subject.signal, subject.mask, TINY_FIT, device=torch.device("cpu"),
                    progress=False, target=target[1:])
    with pytest.raises(ValueError, match="one supervised target"):
        fit_network(net, loss, subject.signal, subject.mask, TINY_FIT, device=torch.device("cpu"),
                    progress=False, target=target, teacher=net)


def test_network_fit_warm_started_from_direct(phantom, tmp_path):
    """FitConfig(init="direct"): the direct solution is the supervised target of every step."""
    cfg = FitConfig(iterations=3, batch_size=2, patch_size=8, seed=0, init="direct")
    rep = run_fit(*_inputs(phantom), tmp_path / "warm", mask=phantom / "mask.nii.gz", variant="shd-tv",
                  fit_config=cfg, net_config=NetworkConfig(width=4, K=2), progress=False)
    assert rep["fit"]["init"] == "direct" and rep["loss_weights"]["supervised"] == 1.0
    assert all(h["supervised"] > 0 for h in rep["loss_curve"])
    cold = run_fit(*_inputs(phantom), tmp_path / "cold", mask=phantom / "mask.nii.gz", variant="shd-tv",
                   fit_config=replace(cfg, init="random"), net_config=NetworkConfig(width=4, K=2), progress=False)
    assert cold["loss_weights"]["supervised"] == 0.0 and "supervised" not in cold["loss_curve"][0]
    with pytest.raises(OptionError, match="init"):
        FitConfig(init="csd")
    with pytest.raises(OptionError, match="supervised loss weight"):  # a warm start nobody would learn
        run_fit(*_inputs(phantom), tmp_path / "unweighted", mask=phantom / "mask.nii.gz", variant="shd-tv",
                fit_config=cfg, net_config=NetworkConfig(width=4, K=2), progress=False,
                loss_weights=default_loss_weights("shd-tv"))


def test_force_leaves_only_the_new_runs_outputs(phantom, tmp_path):
    """A multi-shell fit (WM/GM/CSF, a checkpoint) overwritten with --force by a single-shell
    csd: the folder then holds csd's files alone, not the fit's CSF map, responses or checkpoint."""
    multi = simulate_to_dir(tmp_path / "multi", kind="spatial", scheme="multishell", snr=20, seed=1, size="quick")
    out = tmp_path / "out"
    run_fit(*_inputs(multi), out, mask=multi / "mask.nii.gz", variant="direct",
            direct_config=DirectConfig(iterations=2), progress=False)
    before = {p.name for p in out.iterdir()}
    assert {"csf.nii.gz", "csf.json", "response_csf.txt", "checkpoint.pt"} <= before
    report = run_csd(*_inputs(phantom), out, mask=phantom / "mask.nii.gz", force=True)
    after = {p.name for p in out.iterdir()}
    assert after == set(report["outputs"].values()) | {"report.json"}
    assert not after & {"csf.nii.gz", "csf.json", "gm.nii.gz", "response_csf.txt", "checkpoint.pt"}


def test_fit_times_and_names_its_start(phantom, tmp_path):
    """The default start of a single-shell direct fit is the shipped model's prediction: its
    seconds are reported (they were in no timing) and the model file is named with its hash."""
    from shdeconv.models import LoadedModel

    rep = run_fit(*_inputs(phantom), tmp_path / "out", mask=phantom / "mask.nii.gz", variant="direct",
                  direct_config=DirectConfig(iterations=2), progress=False)
    assert rep["start"] == "predict" and rep["isotropic_tissues"] == ["gm"]  # single-shell default
    shipped = LoadedModel.load()
    assert rep["start_model"] == {"path": str(shipped.path), "sha256": shipped.sha256}
    t = rep["timings_s"]
    assert t["start"] > 0 and t["load"] + t["start"] + t["fit"] + t["predict"] + t["write"] <= t["total"] + 1e-6


def test_a_collapsed_fit_is_warned_about(phantom, tmp_path, monkeypatch):
    """A network fit whose output is 0 everywhere (a diverged optimisation can end there with a
    finite loss) is written, but with a warning on stderr and in report.json."""
    from shdeconv.fitting import _pipeline

    def zeros(net, signal, mask, **kwargs):
        return np.zeros(mask.shape + (45,), np.float32), np.zeros(mask.shape + (1,), np.float32)

    monkeypatch.setattr(_pipeline, "predict_volume", zeros)
    with pytest.warns(UserWarning, match="collapsed"):
        rep = run_fit(*_inputs(phantom), tmp_path / "out", mask=phantom / "mask.nii.gz", variant="shd",
                      fit_config=replace(TINY_FIT, iterations=1),
                      net_config=NetworkConfig(depth=2, width=4, K=2, lmax=8), progress=False)
    assert any("collapsed" in w for w in rep["warnings"])
