import nibabel as nib
import numpy as np
import pytest

from shdeconv.evaluation import evaluate_dirs, format_scores, score
from shdeconv.io import InputError, write_peaks
from shdeconv.sim import spatial_phantom, write_phantom
from shdeconv.sphere import sh_degrees, sh_matrix


@pytest.fixture(scope="module")
def phantom():
    return spatial_phantom(size="quick", scheme="sparse", snr=None, seed=5)


def _rot_x(deg):
    t = np.radians(deg)
    return np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])


def test_truth_against_itself_is_perfect(phantom):
    s = score(phantom.peak_dirs, phantom.peak_fractions, phantom.peak_dirs, phantom.n_fibres,
              phantom.mask)
    for k in ("all", "1", "2", "3"):
        g = s["groups"][k]
        assert g["n_voxels"] > 0
        assert g["success_rate"] == 1.0 and g["n_minus"] == 0 and g["n_plus"] == 0
        assert g["angular_error_mean"] == pytest.approx(0.0, abs=1e-5)
    assert s["groups"]["0"]["success_rate"] == 1.0
    c = s["coherence"]
    assert c["n_pairs"] > 0 and c["pred_abs_cos"] == pytest.approx(c["truth_abs_cos"])


def test_random_peaks_score_badly(phantom, rng):
    d = rng.normal(size=phantom.peak_dirs.shape)
    a = rng.uniform(0.1, 1, size=phantom.peak_fractions.shape)
    s = score(d, a, phantom.peak_dirs, phantom.n_fibres, phantom.mask)
    g = s["groups"]["all"]
    assert g["success_rate"] < 0.1 and g["angular_error_mean"] > 20 and g["n_plus"] > 0.5
    assert s["coherence"]["pred_abs_cos"] < 0.7


@pytest.mark.parametrize("deg,success", [(10.0, 1.0), (30.0, 0.0)])
def test_known_rotation_gives_exact_error(deg, success):
    shape = (4, 3, 2)
    true = np.zeros((*shape, 3, 3))
    true[..., 0, :] = [0.0, 0.0, 1.0]
    n = np.ones(shape, int)
    pred = true @ _rot_x(deg).T  # every fibre along z turned by exactly deg about x
    amps = np.zeros((*shape, 3))
    amps[..., 0] = 1.0
    s = score(pred, amps, true, n)
    g = s["groups"]["1"]
    assert g["angular_error_mean"] == pytest.approx(deg, abs=1e-6)
    assert g["angular_error_median"] == pytest.approx(deg, abs=1e-6)
    assert g["success_rate"] == success
    assert g["n_minus"] == g["n_plus"] == (1.0 - success)
    assert s["coherence"]["pred_abs_cos"] == pytest.approx(1.0)
    assert s["groups"]["2"]["n_voxels"] == 0 and s["groups"]["2"]["success_rate"] is None


def test_hungarian_counts_and_crossing_bins():
    x, y, z = np.eye(3)
    t = np.radians(50)
    w = np.cos(t) * x + np.sin(t) * y
    true = np.zeros((4, 1, 1, 3, 3))
    n = np.array([2, 2, 1, 3]).reshape(4, 1, 1)
    true[0, 0, 0, :2] = [x, w]
    true[1, 0, 0, :2] = [x, y]
    true[2, 0, 0, 0] = z
    true[3, 0, 0] = [x, y, z]
    pred = np.zeros((4, 1, 1, 4, 3))
    amps = np.zeros((4, 1, 1, 4))
    # voxel 0: both found, listed in the "wrong" order (greedy by amplitude would still work)
    pred[0, 0, 0, :2] = [w, x]
    amps[0, 0, 0, :2] = [1.0, 0.5]
    # voxel 1: one fibre found, one spurious peak far from both
    pred[1, 0, 0, :2] = [x, z]
    amps[1, 0, 0, :2] = 1.0
    # voxel 2: correct plus a spurious peak
    pred[2, 0, 0, :2] = [z, x]
    amps[2, 0, 0, :2] = [1.0, 0.3]
    # voxel 3: two of three found (missing one)
    pred[3, 0, 0, :2] = [y, z]
    amps[3, 0, 0, :2] = 1.0
    s = score(pred, amps, true, n)
    g2, g1, g3 = s["groups"]["2"], s["groups"]["1"], s["groups"]["3"]
    assert g2["success_rate"] == 0.5 and g2["n_minus"] == 0.5 and g2["n_plus"] == 0.5
    assert g1["success_rate"] == 0.0 and g1["n_plus"] == 1.0 and g1["n_minus"] == 0.0
    assert g3["n_minus"] == 1.0 and g3["n_plus"] == 0.0
    assert s["crossing"]["45-60"]["n_voxels"] == 1 and s["crossing"]["45-60"]["success_rate"] == 1
    assert s["crossing"]["75-90"]["n_voxels"] == 1 and s["crossing"]["75-90"]["success_rate"] == 0
    assert s["groups"]["all"]["n_voxels"] == 4


def test_shape_mismatch_raises(phantom):
    with pytest.raises(ValueError, match="shape mismatch"):
        score(phantom.peak_dirs[:-1], phantom.peak_fractions[:-1], phantom.peak_dirs,
              phantom.n_fibres)


def test_evaluate_dirs_from_fodf_and_peaks(phantom, tmp_path):
    out = write_phantom(phantom, tmp_path / "ph")
    # an ideal method: sharp lobes at the true directions, weighted by the true fractions
    lmax = 8
    zonal = np.array([np.sqrt((2 * l + 1) / (4 * np.pi)) for l in range(0, lmax + 1, 2)])
    d = phantom.peak_dirs.reshape(-1, 3, 3)
    f = phantom.peak_fractions.reshape(-1, 3)
    safe = np.where(f[..., None] > 0, d, [0.0, 0.0, 1.0])
    ys = sh_matrix(safe.reshape(-1, 3), lmax).reshape(-1, 3, 45)
    ls = sh_degrees(lmax)
    sh = np.einsum("np,nps->ns", f, ys) * zonal[ls // 2] * np.sqrt(4 * np.pi / (2 * ls + 1))
    pred = tmp_path / "method"
    pred.mkdir()
    nib.save(nib.Nifti1Image(sh.reshape(*phantom.shape, 45).astype(np.float32),
                             phantom.affine), pred / "fodf.nii.gz")
    s = evaluate_dirs(pred, out)
    assert s["source"] == "fodf"
    g = s["groups"]
    assert g["1"]["success_rate"] > 0.97 and g["1"]["angular_error_mean"] < 1.0
    # peaks file only
    only = tmp_path / "peaks_only"
    only.mkdir()
    write_peaks(only / "peaks.nii.gz", phantom.peak_dirs, phantom.peak_fractions, phantom.affine)
    s2 = evaluate_dirs(only, out / "truth")
    assert s2["source"] == "peaks" and s2["groups"]["all"]["success_rate"] == 1.0
    text = format_scores(s2, "oracle")
    assert text.startswith("### oracle") and "| 2 fibres |" in text and "75-90°" in text
    with pytest.raises(InputError, match="neither fodf.nii.gz nor peaks.nii.gz"):
        evaluate_dirs(tmp_path, out)


def test_evaluate_checks_its_json_path_before_scoring(phantom, tmp_path, capsys):
    from shdeconv.cli import main

    out = write_phantom(phantom, tmp_path / "ph")
    (tmp_path / "dir").mkdir()
    for target, said in ((tmp_path / "nodir" / "x.json", f"{tmp_path / 'nodir'}: output directory does not exist"),
                         (tmp_path / "dir", f"{tmp_path / 'dir'}: is a directory")):
        assert main(["evaluate", str(out / "truth"), str(out), "--json", str(target), "--force"]) == 2
        captured = capsys.readouterr()
        assert said in captured.err and captured.out == ""  # refused before any scoring
    assert not (tmp_path / "nodir").exists()
