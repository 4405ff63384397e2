"""The commands on MRtrix3 inputs: a .mif dwi with its own gradient table, --grad, .mif masks;
the gradient table given twice, half or not at all is refused before anything is written."""

from __future__ import annotations

import json
import subprocess

import nibabel as nib
import numpy as np
import pytest

from shdeconv.cli import main


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from shdeconv.sim import simulate_to_dir

    return simulate_to_dir(tmp_path_factory.mktemp("mrtrix") / "ph", scheme="clinical", snr=20, seed=3, size="quick")


def _fsl(ph):
    return [str(ph / "dwi.nii.gz"), "--bvals", str(ph / "bvals"), "--bvecs", str(ph / "bvecs")]


@pytest.mark.parametrize("args,message", [
    ([], "needs its gradient table"),
    (["--bvals", "{ph}/bvals"], "--bvals needs --bvecs"),
    (["--bvals", "{ph}/bvals", "--bvecs", "{ph}/bvecs", "--grad", "{ph}/bvals"], "twice"),
])
@pytest.mark.parametrize("command", ["predict", "csd", "fit", "check-gradients"])
def test_gradient_table_given_twice_half_or_not_at_all_exits_2(tmp_path, capsys, phantom, command, args, message):
    out = tmp_path / "out"
    extra = ["-o", str(out / "table")] if command == "check-gradients" else ["-o", str(out)]
    code = main([command, str(phantom / "dwi.nii.gz"), *[a.format(ph=phantom) for a in args], *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_mif_dwi_grad_file_and_mif_mask_give_the_fsl_results(tmp_path, capsys, phantom, mrtrix):
    ph = phantom
    fsl = ["-fslgrad", ph / "bvecs", ph / "bvals"]
    run = lambda *a: subprocess.run([str(x) for x in a], check=True)  # noqa: E731
    run("mrconvert", "-quiet", ph / "dwi.nii.gz", tmp_path / "dwi.mif.gz", *fsl, "-strides", "-1,2,3,4")
    run("mrconvert", "-quiet", ph / "dwi.nii.gz", tmp_path / "plain.mif")
    run("mrconvert", "-quiet", ph / "mask.nii.gz", tmp_path / "mask.mif", "-datatype", "bit")
    run("mrinfo", "-quiet", tmp_path / "dwi.mif.gz", "-export_grad_mrtrix", tmp_path / "grad.b")
    mask = ["--mask", str(ph / "mask.nii.gz")]
    runs = {"fsl": _fsl(ph) + mask,
            "header": [str(tmp_path / "dwi.mif.gz"), "--mask", str(tmp_path / "mask.mif")],
            "grad": [str(ph / "dwi.nii.gz"), "--grad", str(tmp_path / "grad.b"), "--mask", str(tmp_path / "mask.mif")]}
    for name, args in runs.items():
        for command in ("csd", "predict"):
            assert main([command, *args, "-o", str(tmp_path / f"{command}-{name}"), "-q"]) == 0
    for command in ("csd", "predict"):
        ref = nib.load(tmp_path / f"{command}-fsl" / "fodf.nii.gz")
        for name in ("header", "grad"):
            other = nib.load(tmp_path / f"{command}-{name}" / "fodf.nii.gz")
            np.testing.assert_allclose(other.affine, ref.affine, atol=1e-4)
            np.testing.assert_allclose(other.get_fdata(), ref.get_fdata(), atol=1e-5)
            report = json.loads((tmp_path / f"{command}-{name}" / "report.json").read_text())
            assert report["inputs"]["gradient_table"] == {"header": "image-header", "grad": "mrtrix-grad"}[name]
    code = main(["predict", str(tmp_path / "plain.mif"), "-o", str(tmp_path / "none")])
    assert code == 2 and "no dw_scheme" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_check_gradients_writes_the_table_in_the_format_given(tmp_path, capsys, phantom):
    from shdeconv.io import fsl_bvecs_to_world, load_dwi

    ph = phantom
    d = load_dwi(ph / "dwi.nii.gz", ph / "bvals", ph / "bvecs")
    grad = tmp_path / "dwi.b"
    np.savetxt(grad, np.c_[d.directions_world, d.bvals], fmt="%.8f")
    flipped = np.loadtxt(grad)
    flipped[:, 0] *= -1  # a wrong table: x flipped in the world frame
    np.savetxt(tmp_path / "flipped.b", flipped, fmt="%.8f")
    out = tmp_path / "fixed.b"
    assert main(["check-gradients", str(ph / "dwi.nii.gz"), "--grad", str(tmp_path / "flipped.b"), "-o", str(out)]) == 0
    assert "gradient table corrected" in capsys.readouterr().out
    fixed = np.loadtxt(out)
    assert fixed.shape == (len(d.bvals), 4)
    np.testing.assert_allclose(fixed[:, 3], d.bvals, atol=1e-3)
    expected = fsl_bvecs_to_world(d.bvecs, d.affine)
    np.testing.assert_allclose(np.abs(np.sum(fixed[:, :3] * expected, axis=1))[d.bvals > 50], 1.0, atol=1e-5)
    # -q: nothing on stdout for a table found right, the verdict alone for one found wrong
    assert main(["check-gradients", str(ph / "dwi.nii.gz"), "--grad", str(grad), "-o", str(tmp_path / "q.b"),
                 "-q"]) == 0
    assert capsys.readouterr().out == "" and (tmp_path / "q.b").exists()
    assert main(["check-gradients", str(ph / "dwi.nii.gz"), "--grad", str(tmp_path / "flipped.b"), "-q"]) == 0
    said = capsys.readouterr().out
    assert "gradient table corrected" not in said and len(said.strip().splitlines()) == 1


def test_real_oblique_data_through_mrconvert_gives_the_same_world_fodf(tmp_path, mrtrix):
    """DIPY's real small_64D (oblique, axes permuted against the scanner's): mrconvert stores
    it near RAS, so the .mif's grid is the NIfTI's with axes swapped and flipped (negative
    strides; in float32, as preprocessing writes, they reach the network unscaled). In world
    space the fODFs must agree: CSD exactly (voxel by voxel), predict to its tiling's precision."""
    from dipy.data import get_fnames

    from shdeconv.direction import sh_peaks

    nii, bval, bvec = map(str, get_fnames(name="small_64D"))
    subprocess.run(["mrconvert", "-quiet", nii, "-fslgrad", bvec, bval, "-datatype", "float32",
                    str(tmp_path / "dwi.mif")], check=True)
    for command in ("csd", "predict"):
        assert main([command, nii, "--bvals", bval, "--bvecs", bvec, "-o", str(tmp_path / f"{command}-nii"), "-q"]) == 0
        assert main([command, str(tmp_path / "dwi.mif"), "-o", str(tmp_path / f"{command}-mif"), "-q"]) == 0
        a, b = (nib.as_closest_canonical(nib.load(tmp_path / f"{command}-{k}" / "fodf.nii.gz")) for k in ("nii", "mif"))
        np.testing.assert_allclose(a.affine, b.affine, atol=1e-3)
        fa, fb = a.get_fdata(dtype=np.float32), b.get_fdata(dtype=np.float32)
        if command == "csd":
            np.testing.assert_allclose(fb, fa, atol=1e-5)
        wm = np.abs(fa[..., 0]) > 0.05
        pa, pb = sh_peaks(fa, max_peaks=1)[0][wm, 0], sh_peaks(fb, max_peaks=1)[0][wm, 0]
        angle = np.degrees(np.arccos(np.clip(np.abs((pa * pb).sum(-1)), 0, 1)))
        assert wm.sum() > 500 and np.median(angle) < 1.0
