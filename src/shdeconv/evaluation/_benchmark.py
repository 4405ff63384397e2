r"""The accuracy benchmark of issue 5: phantoms with known fibres, every method, one table per cell.

Suite (``size="default"``)
--------------------------
- **bar case**: spatial phantom, clinical scheme (b=1000 x 30 + 3 b=0), SNR 20, with every
  method of :data:`METHODS` that applies to single-shell data;
- **grid**: schemes clinical, sparse and multishell x SNR 10, 20, 30 on the spatial phantom with
  ``csd``, ``csd+mppca``, ``msmt``/``msmt+mppca`` (multishell), ``mrtrix-csd`` and ``shd-tv``
  (the bar case is the grid's clinical/SNR 20 cell);
- **voxel-wise**: the voxel-wise crossing phantom (clinical, SNR 20) with ``csd``,
  ``csd+mppca``, ``esd`` and ``shd-tv``.

Every network is fitted per subject with the unsupervised loss for the same number of
iterations (:attr:`BenchmarkConfig.fit_iterations`). Multishell cells are scored on their
central axial slice for every method, because DIPY's MSMT-CSD fits one voxel at a time (about
50-80 ms per voxel) and is run on that slice only. DIPY CSD on multishell data uses its highest
shell (b=3000), as :func:`~shdeconv.baselines.csd_fit` does. MP-PCA is run once per cell and its
time is added to every method that uses it. MRtrix3's arms run ``dwi2response`` and
``dwi2fod`` as users run them (``tournier`` + ``csd`` on one shell, ``dhollander`` +
``msmt_csd`` on several) and are skipped, with a note, when MRtrix3 is not installed.

Layout of ``outdir``::

    config.json                      the settings the directory was made with (resume guard)
    <cell>/phantom/                  the simulated phantom (shdeconv simulate)
    <cell>/mppca/dwi.nii.gz          MP-PCA denoised signal, shared by the "+mppca" methods
    <cell>/<method>/                 the method's outputs and scores.json (seconds and scores)
    results.md  results.json  accuracy_*.png

A method whose ``scores.json`` exists is not run again (resume); an interrupted network fit
continues from its checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .._options import OptionError, check_device
from ..io import InputError
from ._metrics import (
    CROSSING_BINS,
    crossing_error,
    evaluate_dirs,
    format_comparison,
    score,
)

__all__ = [
    "BAR_CELL",
    "METHODS",
    "BenchmarkConfig",
    "Cell",
    "MethodSpec",
    "bar_checks",
    "estimate_seconds",
    "format_bars",
    "machine_info",
    "mrtrix_version",
    "plan_cells",
    "run_benchmark",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodSpec:
    """One method of the benchmark.

    ``engine`` is ``"dipy"`` (``variant`` ``"ssst"`` or ``"msmt"``), ``"mrtrix"``, ``"net"``
    (``variant`` the network variant, fitted per subject) or ``"pretrained"`` (the shipped
    amortized model, ``shdeconv predict``, one pass); ``denoise`` runs MP-PCA (DIPY) or ``dwidenoise``
    (MRtrix3) first.
    """

    name: str
    label: str
    engine: str
    variant: str | None = None
    denoise: bool = False
    multishell_only: bool = False


#: unsupervised fine-tuning steps of the ``predict+finetune`` arm
FINETUNE_STEPS = 50

#: every method, in table order
METHODS: dict[str, MethodSpec] = {m.name: m for m in (
    MethodSpec("csd", "DIPY CSD", "dipy", "ssst"),
    MethodSpec("csd+mppca", "MP-PCA + DIPY CSD", "dipy", "ssst", denoise=True),
    MethodSpec("msmt", "DIPY MSMT-CSD", "dipy", "msmt", multishell_only=True),
    MethodSpec("msmt+mppca", "MP-PCA + DIPY MSMT-CSD", "dipy", "msmt", denoise=True, multishell_only=True),
    MethodSpec("mrtrix-csd", "MRtrix3 dwi2fod", "mrtrix"),
    MethodSpec("mrtrix-csd+dwidenoise", "MRtrix3 dwidenoise + dwi2fod", "mrtrix", denoise=True),
    MethodSpec("esd", "ESD (fit)", "net", "esd"),
    MethodSpec("rtesd", "RT-ESD (fit)", "net", "rtesd"),
    MethodSpec("shd", "SHD (fit)", "net", "shd"),
    MethodSpec("shd-tv", "SHD-TV (fit)", "net", "shd-tv"),
    MethodSpec("shd-tv+mppca", "MP-PCA + SHD-TV (fit)", "net", "shd-tv", denoise=True),
    MethodSpec("direct", "direct (the objective, no network)", "net", "direct"),
    MethodSpec("predict", "SHD-TV amortized (shipped model, predict)", "pretrained"),
    MethodSpec("predict+finetune", f"predict + {FINETUNE_STEPS} fine-tuning steps (prior kept)", "pretrained",
               str(FINETUNE_STEPS)),
)}

_GRID_METHODS = ("csd", "csd+mppca", "msmt", "msmt+mppca", "mrtrix-csd", "shd-tv", "predict")
_VOXELWISE_METHODS = ("csd", "csd+mppca", "esd", "direct", "shd-tv", "predict")

#: the cell of the issue's bars: spatial phantom, clinical 30-direction scheme, SNR 20
BAR_CELL = "spatial-clinical-snr20"

#: per size: the grid's (scheme, SNR) cells, the networks' iterations and the scored slab of
#: multishell cells (axial slices). 200 iterations, not FitConfig's 300, keep the default suite
#: within 60 minutes on 2 CPU cores: ESD and RT-ESD cost 2-3 times SHD-TV per iteration.
SUITES = {
    "default": {"grid": tuple((scheme, snr) for scheme in ("clinical", "sparse", "multishell")
                              for snr in (10.0, 20.0, 30.0)),
                "iterations": 200, "region_slices": 1},
    "quick": {"grid": (("clinical", 10.0), ("multishell", 20.0)), "iterations": 5, "region_slices": 1},
}

#: rough costs on this project's 2-core CPU VM (seconds), measured for issue 5; used for the
#: up-front estimate only. Voxels are those of the mask, volumes those of the scheme.
_COST = {
    "net_per_iteration": {"shd-tv": 0.55, "shd": 0.65, "rtesd": 1.65, "esd": 1.1, "direct": 0.3},
    "net_per_voxel": 1.2e-3,  # responses, prediction and outputs
    "pretrained_per_voxel": 2.5e-3,  # responses, one pass on 8^3 tiles, outputs
    "csd_per_voxel": 6e-4,
    "mppca_per_voxel_volume": 1.6e-5,
    "msmt_per_voxel": 0.07,
    "mrtrix_csd": 25.0,  # dwi2response tournier (an iterative script) dominates
    "mrtrix_msmt": 5.0,  # dwi2response dhollander
    "mrtrix_msmt_per_voxel_volume": 1.2e-5,
    "dwidenoise_per_voxel": 7e-5,  # at 33 volumes, growing as (volumes / 33) ** 2.5
    "score_per_voxel": 1.6e-4,
    "simulate": 1.5,
}
_SPATIAL_MASK_FRACTION = 0.82


# ---------------------------------------------------------------------------------------------
# configuration and plan
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Cell:
    """One phantom of the suite and the methods run on it."""

    kind: str
    scheme: str
    snr: float
    methods: tuple[str, ...]

    @property
    def name(self) -> str:
        """Directory name, e.g. ``spatial-clinical-snr20``."""
        return f"{self.kind}-{self.scheme}-snr{self.snr:g}"

    @property
    def multishell(self) -> bool:
        """Whether the scheme has several non-zero shells."""
        from ..sim import SCHEMES

        return len(SCHEMES[self.scheme][1]) > 1


def _full_suite(size: str) -> list[Cell]:
    suite = SUITES[size]
    everything = tuple(m for m, spec in METHODS.items() if not spec.multishell_only)
    cells = [Cell("spatial", "clinical", 20.0, everything)]
    for scheme, snr in suite["grid"]:
        cell = Cell("spatial", scheme, float(snr), _GRID_METHODS)
        if cell.name != BAR_CELL:
            cells.append(cell)
    cells.append(Cell("voxelwise", "clinical", 20.0, _VOXELWISE_METHODS))
    return [Cell(c.kind, c.scheme, c.snr, tuple(m for m in c.methods
                                                if c.multishell or not METHODS[m].multishell_only))
            for c in cells]


@dataclass(frozen=True)
class BenchmarkConfig:
    """Settings of one benchmark run, validated once.

    Parameters
    ----------
    size : {"default", "quick"}
        ``default``: the issue's suite, sized for 60 minutes on 2 CPU cores; ``quick``: small
        phantoms, few iterations and cells (for tests).
    seed : int
        Seed of the phantoms, their noise and the network fits.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` for the network fits.
    iterations : int or None
        Iterations of every network fit; None: the size's default (:data:`SUITES`).
    methods : tuple of str or None
        Run only these methods (names of :data:`METHODS`); None: all.
    cells : tuple of str or None
        Run only these cells (names such as ``spatial-clinical-snr20``); None: all.
    progress : bool
        Progress bars.
    model : str or None
        Model file for the ``predict`` methods (e.g. one made by ``shdeconv train``); None: the
        shipped model.
    """

    size: str = "default"
    seed: int = 0
    device: str = "auto"
    iterations: int | None = None
    methods: tuple[str, ...] | None = None
    cells: tuple[str, ...] | None = None
    progress: bool = True
    model: str | None = None

    def __post_init__(self):
        if self.model is not None:
            if not Path(self.model).is_file():
                raise InputError(self.model, "model file does not exist")
            object.__setattr__(self, "model", str(Path(self.model).resolve()))
        if self.size not in SUITES:
            raise OptionError(f"size must be one of {sorted(SUITES)}, got {self.size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise OptionError(f"seed must be an int, got {self.seed!r}")
        check_device(self.device)
        if self.iterations is not None and (isinstance(self.iterations, bool) or int(self.iterations) != self.iterations
                                            or self.iterations < 0):
            raise OptionError(f"iterations must be a non-negative int or None, got {self.iterations!r}")
        for field_name, known in (("methods", tuple(METHODS)),
                                  ("cells", tuple(c.name for c in _full_suite(self.size)))):
            value = getattr(self, field_name)
            if value is None:
                continue
            value = tuple(v.strip() for v in value.split(",") if v.strip()) if isinstance(value, str) else tuple(value)
            unknown = [v for v in value if v not in known]
            if unknown or not value:
                raise OptionError(f"unknown {field_name} {unknown or list(value)}; expected some of {list(known)}")
            object.__setattr__(self, field_name, value)

    @property
    def fit_iterations(self) -> int:
        """Iterations of every network fit."""
        return int(SUITES[self.size]["iterations"] if self.iterations is None else self.iterations)


def plan_cells(config: BenchmarkConfig, *, mrtrix: bool = True) -> list[Cell]:
    """The cells to run and their methods, after the ``methods``/``cells`` filters.

    Parameters
    ----------
    config : BenchmarkConfig
    mrtrix : bool
        Whether MRtrix3's arms can run; without it they are left out.

    Returns
    -------
    list of Cell
        Cells with at least one method.
    """
    out = []
    for cell in _full_suite(config.size):
        if config.cells is not None and cell.name not in config.cells:
            continue
        methods = tuple(m for m in cell.methods if (config.methods is None or m in config.methods)
                        and (mrtrix or METHODS[m].engine != "mrtrix"))
        if methods:
            out.append(Cell(cell.kind, cell.scheme, cell.snr, methods))
    return out


def _scheme_volumes(scheme: str) -> int:
    from ..sim import SCHEMES

    n_b0, shells = SCHEMES[scheme]
    return n_b0 + sum(n for _, n in shells)


def _cell_voxels(cell: Cell, size: str) -> tuple[float, float]:
    """Estimated voxels in the mask and in the scored region."""
    from ..sim import SIZES

    if cell.kind == "voxelwise":
        n = float(SIZES[size]["voxelwise"])
        return n, n
    shape = SIZES[size]["spatial"]
    n = _SPATIAL_MASK_FRACTION * float(np.prod(shape))
    if cell.multishell:
        return n, n * min(1.0, SUITES[size]["region_slices"] / shape[2])
    return n, n


def estimate_seconds(config: BenchmarkConfig, *, mrtrix: bool | None = None) -> dict:
    """Up-front estimate of the run time on a 2-core CPU (a GPU makes the networks faster).

    Parameters
    ----------
    config : BenchmarkConfig
    mrtrix : bool, optional
        Whether MRtrix3's arms will run; default: whether MRtrix3 is installed.

    Returns
    -------
    dict
        ``total`` and ``networks`` (seconds) and ``by_cell`` (cell name -> seconds).
    """
    if mrtrix is None:
        mrtrix = mrtrix_version() is not None
    c = _COST
    it = config.fit_iterations
    by_cell, nets = {}, 0.0
    for cell in plan_cells(config, mrtrix=mrtrix):
        vox, region = _cell_voxels(cell, config.size)
        vols = _scheme_volumes(cell.scheme)
        t = c["simulate"]
        specs = [METHODS[m] for m in cell.methods]
        if any(s.denoise and s.engine != "mrtrix" for s in specs):
            t += c["mppca_per_voxel_volume"] * vox * vols
        for s in specs:
            if s.engine == "net":
                cost = c["net_per_iteration"][s.variant] * it + c["net_per_voxel"] * vox
                nets += cost
                t += cost
            elif s.engine == "pretrained":
                t += c["pretrained_per_voxel"] * vox + c["net_per_iteration"]["shd-tv"] * int(s.variant or 0)
            elif s.engine == "dipy":
                t += c["msmt_per_voxel"] * region if s.variant == "msmt" else c["csd_per_voxel"] * vox
            else:
                t += (c["mrtrix_msmt"] + c["mrtrix_msmt_per_voxel_volume"] * vox * vols if cell.multishell
                      else c["mrtrix_csd"])
                if s.denoise:
                    t += c["dwidenoise_per_voxel"] * vox * (vols / 33.0) ** 2.5
            t += c["score_per_voxel"] * region
        by_cell[cell.name] = t
    return {"total": float(sum(by_cell.values())), "networks": float(nets), "by_cell": by_cell}


# ---------------------------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------------------------

_MRTRIX_TOOLS = ("dwi2response", "dwi2fod", "dwidenoise")


def mrtrix_version() -> str | None:
    """MRtrix3's version when ``dwi2response``, ``dwi2fod`` and ``dwidenoise`` are on PATH, else None."""
    if not all(shutil.which(t) for t in _MRTRIX_TOOLS):
        return None
    try:
        out = subprocess.run([shutil.which("dwi2fod"), "-version"], check=False, capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        logger.warning("MRtrix3's dwi2fod is on PATH but does not run (%s)", e)
        return None
    m = re.search(r"dwi2fod\s+(\S+)", out.stdout)
    return m.group(1) if m else (out.stdout.strip().splitlines() or ["unknown"])[0]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: str = "auto") -> dict:
    """Where the benchmark ran: CPU, platform, library versions, the device and MRtrix3's version."""
    import dipy
    import torch

    from .. import __version__
    from .._options import resolve_device

    dev = resolve_device(device)
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "shdeconv": __version__,
        "torch": torch.__version__,
        "dipy": dipy.__version__,
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "mrtrix3": mrtrix_version(),
    }


# ---------------------------------------------------------------------------------------------
# running one cell
# ---------------------------------------------------------------------------------------------

def _label(name: str, cell: Cell) -> str:
    spec = METHODS[name]
    if name == "csd" and cell.multishell:
        return "DIPY CSD (highest shell)"
    if name == "csd+mppca" and cell.multishell:
        return "MP-PCA + DIPY CSD (highest shell)"
    if spec.engine == "mrtrix":
        algo = "msmt_csd (dhollander)" if cell.multishell else "csd (tournier)"
        return f"{spec.label} {algo}"
    if spec.engine == "dipy" and spec.variant == "msmt":
        return f"{spec.label} (central slice)"
    return spec.label


def _simulate(cell: Cell, phantom_dir: Path, config: BenchmarkConfig) -> Path:
    from ..sim import simulate_to_dir

    if (phantom_dir / "truth" / "truth.json").exists():
        return phantom_dir
    tmp = phantom_dir.with_name(phantom_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    simulate_to_dir(tmp, kind=cell.kind, scheme=cell.scheme, snr=cell.snr, seed=config.seed, size=config.size)
    os.replace(tmp, phantom_dir)
    return phantom_dir


def _region(cell: Cell, phantom_dir: Path, config: BenchmarkConfig) -> tuple[np.ndarray, dict] | None:
    """The scored region of a multishell cell (its central axial slab) and its description, else None."""
    if not cell.multishell or cell.kind != "spatial":
        return None
    import nibabel as nib

    from ..io import atomic_save_nifti

    img = nib.load(str(phantom_dir / "mask.nii.gz"))
    mask = np.asarray(img.dataobj) > 0
    k = min(SUITES[config.size]["region_slices"], mask.shape[2])
    z0 = (mask.shape[2] - k) // 2
    region = np.zeros_like(mask)
    region[:, :, z0:z0 + k] = mask[:, :, z0:z0 + k]
    path = phantom_dir.parent / "region_mask.nii.gz"
    if not path.exists():
        atomic_save_nifti(region.astype(np.uint8), img.affine, path)
    slices = f"z={z0}" if k == 1 else f"z={z0}-{z0 + k - 1}"
    return region, {"slices": slices, "voxels": int(region.sum()), "mask": str(path)}


def _mppca(phantom_dir: Path, out: Path) -> float:
    """MP-PCA denoised ``out/dwi.nii.gz`` (once per cell); returns the seconds it took."""
    import nibabel as nib

    from ..fitting import denoise_mppca
    from ..io import atomic_save_nifti, atomic_write_text

    record = out / "mppca.json"
    if record.exists() and (out / "dwi.nii.gz").exists():
        return float(json.loads(record.read_text())["seconds"])
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    img = nib.load(str(phantom_dir / "dwi.nii.gz"))
    data = np.asarray(img.get_fdata(dtype=np.float32))
    mask = np.asarray(nib.load(str(phantom_dir / "mask.nii.gz")).dataobj) > 0
    atomic_save_nifti(denoise_mppca(data, mask), img.affine, out / "dwi.nii.gz")
    seconds = time.perf_counter() - t
    atomic_write_text(record, json.dumps({"seconds": seconds}) + "\n")
    return seconds


def _mrtrix(args: list, cwd: Path) -> None:
    cmd = [str(a) for a in args]
    r = subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = " ".join((r.stderr or r.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"{' '.join(cmd[:2])} failed (exit {r.returncode}): {tail}")


def _dhollander_erode(mask_shape) -> int:
    """``dwi2response dhollander -erode``: its default 3 passes, fewer where they would empty a thin slab."""
    return int(min(3, max(0, (min(mask_shape) - 1) // 2 - 1)))


def _run_mrtrix(phantom_dir: Path, out: Path, *, multishell: bool, denoise: bool, nthreads: int,
                erode: int = 3) -> None:
    """``dwi2response`` + ``dwi2fod`` (and ``dwidenoise`` first) as users run them; writes ``fodf.nii.gz``.

    ``erode``: mask erosion passes of ``dwi2response dhollander`` (multi-shell only).
    """
    out.mkdir(parents=True, exist_ok=True)
    p = phantom_dir.resolve()
    dwi = p / "dwi.nii.gz"
    grad = ["-fslgrad", p / "bvecs", p / "bvals"]
    opts = ["-mask", p / "mask.nii.gz", "-nthreads", nthreads, "-force", "-quiet"]
    if denoise:
        _mrtrix(["dwidenoise", dwi, "dwi_denoised.nii.gz", *opts], out)
        dwi = out.resolve() / "dwi_denoised.nii.gz"
    if multishell:
        _mrtrix(["dwi2response", "dhollander", dwi, "response_wm.txt", "response_gm.txt", "response_csf.txt",
                 "-erode", erode, *grad, *opts], out)
        _mrtrix(["dwi2fod", "msmt_csd", dwi, "response_wm.txt", "fodf.nii.gz", "response_gm.txt", "gm.nii.gz",
                 "response_csf.txt", "csf.nii.gz", *grad, *opts], out)
    else:
        _mrtrix(["dwi2response", "tournier", dwi, "response_wm.txt", *grad, *opts], out)
        _mrtrix(["dwi2fod", "csd", dwi, "response_wm.txt", "fodf.nii.gz", *grad, *opts], out)


def _score(method_dir: Path, phantom_dir: Path, region: np.ndarray | None) -> dict:
    """:func:`evaluate_dirs`, restricted to ``region`` when given (same peaks, same matching)."""
    if region is None:
        return evaluate_dirs(method_dir, phantom_dir)
    import nibabel as nib

    from ..sim import load_truth
    from ._peaks import sh_peaks

    truth = load_truth(phantom_dir)
    fodf = method_dir / "fodf.nii.gz"
    img = nib.load(str(fodf))
    if not np.allclose(img.affine, truth.affine, atol=1e-3):
        warnings.warn(f"{fodf}: affine differs from the truth's; directions are compared in the world frame "
                      "as stored", stacklevel=2)
    sh = np.asarray(img.dataobj, dtype=np.float64)
    region = region & truth.mask
    dirs, amps = sh_peaks(sh, mask=region)
    out = score(dirs, amps, truth.peak_dirs, truth.n_fibres, region)
    out.update(source="fodf", pred_path=str(fodf), truth=truth.meta, region_voxels=int(region.sum()))
    return out


def _run_method(name: str, cell: Cell, cell_dir: Path, phantom_dir: Path,
                region: tuple[np.ndarray, dict] | None, config: BenchmarkConfig) -> dict:
    """Run one method on one cell; returns its record (also written to ``scores.json``).

    ``region``: the scored region and its description (:func:`_region`), or None.
    """
    import torch

    from ..fitting import DirectConfig, FitConfig, run_csd, run_fit, run_predict
    from ..io import atomic_write_text

    spec = METHODS[name]
    out = cell_dir / name
    inputs = (phantom_dir / "bvals", phantom_dir / "bvecs")
    dwi = phantom_dir / "dwi.nii.gz"
    mask = phantom_dir / "mask.nii.gz"
    denoise_s = 0.0
    if spec.denoise and spec.engine != "mrtrix":
        denoise_s = _mppca(phantom_dir, cell_dir / "mppca")
        dwi = cell_dir / "mppca" / "dwi.nii.gz"
    record = {"method": name, "label": _label(name, cell), "cell": cell.name}
    t = time.perf_counter()
    if spec.engine == "net":
        fit_config = FitConfig(iterations=config.fit_iterations, seed=config.seed)
        report = run_fit(dwi, *inputs, out, mask=mask, variant=spec.variant, device=config.device,
                         fit_config=fit_config, direct_config=DirectConfig(iterations=config.fit_iterations),
                         progress=config.progress, resume=(out / "checkpoint.pt").exists(), force=True)
        record.update(iterations=config.fit_iterations, device=report.get("device"),
                      resumed_from=report.get("resumed_from"))
    elif spec.engine == "pretrained":
        finetune = int(spec.variant or 0)
        report = run_predict(dwi, *inputs, out, mask=mask, device=config.device, progress=config.progress,
                             finetune=finetune, seed=config.seed, model=config.model, force=True)
        record.update(device=report.get("device"), model=report.get("model"))
        if config.model is not None:
            record["label"] = record["label"].replace("shipped model", f"model {Path(config.model).name}")
    elif spec.engine == "dipy":
        if spec.variant == "msmt" and region is not None:
            mask = Path(region[1]["mask"])
        run_csd(dwi, *inputs, out, mask=mask, algorithm=spec.variant, force=True)
    else:
        import nibabel as nib

        erode = _dhollander_erode(nib.load(str(mask)).shape)
        if cell.multishell and erode != 3:
            record["label"] += f" -erode {erode}"
        _run_mrtrix(phantom_dir, out, multishell=cell.multishell, denoise=spec.denoise,
                    nthreads=torch.get_num_threads(), erode=erode)
    seconds = time.perf_counter() - t + denoise_s
    scores = _score(out, phantom_dir, None if region is None else region[0])
    record.update(seconds=seconds, denoise_seconds=denoise_s, scores=scores)
    atomic_write_text(out / "scores.json", json.dumps(record, indent=2, default=float) + "\n")
    return record


# ---------------------------------------------------------------------------------------------
# bars and the report
# ---------------------------------------------------------------------------------------------

#: the issue's bars for SHD-TV in the bar case: reference -> (min. 2-fibre success gain in
#: points, max. ratio of the mean angular error on crossing voxels)
BARS = {"csd": (10.0, 0.8), "csd+mppca": (0.0, 1.0)}


def _success2(scores: dict | None) -> float | None:
    return None if scores is None else scores["groups"]["2"]["success_rate"]


def bar_checks(scores: dict[str, dict], method: str = "shd-tv") -> list[dict]:
    """The issue's bars for ``method`` against DIPY CSD and MP-PCA + CSD, from the scores.

    Parameters
    ----------
    scores : dict
        Method name -> scores (:func:`~shdeconv.evaluation.score`) of the bar case; needs
        ``method``, ``"csd"`` and ``"csd+mppca"`` (missing ones give status ``"n/a"``).
    method : str
        The method held to the bars.

    Returns
    -------
    list of dict
        Per reference and figure: ``reference``, ``figure`` (``"success_2"``: 2-fibre
        success rate, measured as a difference in points; ``"crossing_ae"``: mean angular
        error on 2-3-fibre voxels, measured as the ratio method / reference), ``method_value``,
        ``reference_value``, ``measured``, ``bar`` and ``status`` (``"PASS"``, ``"MISS"`` or
        ``"n/a"``).
    """
    ours = scores.get(method)
    rows = []
    for ref, (min_points, max_ratio) in BARS.items():
        theirs = scores.get(ref)
        a, b = _success2(ours), _success2(theirs)
        diff = None if a is None or b is None else 100.0 * (a - b)
        rows.append({"reference": ref, "figure": "success_2", "method_value": a, "reference_value": b,
                     "measured": diff, "bar": min_points,
                     "status": "n/a" if diff is None else ("PASS" if diff >= min_points else "MISS")})
        a = None if ours is None else crossing_error(ours)
        b = None if theirs is None else crossing_error(theirs)
        ratio = None if a is None or not b else a / b
        rows.append({"reference": ref, "figure": "crossing_ae", "method_value": a, "reference_value": b,
                     "measured": ratio, "bar": max_ratio,
                     "status": "n/a" if ratio is None else ("PASS" if ratio <= max_ratio else "MISS")})
    return rows


def _f(x, spec=".3f") -> str:
    return "–" if x is None else format(x, spec)


def format_bars(rows: list[dict], method_label: str = "SHD-TV") -> str:
    """Markdown table of :func:`bar_checks` rows, with a one-line summary."""
    lines = [f"| {method_label} vs | figure | {method_label} | reference | measured | bar | result |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        ref = METHODS[r["reference"]].label if r["reference"] in METHODS else r["reference"]
        if r["figure"] == "success_2":
            measured = "–" if r["measured"] is None else f"{r['measured']:+.1f} points"
            status = r["status"] + (f" by {r['bar'] - r['measured']:.1f} points" if r["status"] == "MISS" else "")
            lines.append(f"| {ref} | 2-fibre success | {_f(r['method_value'])} | {_f(r['reference_value'])} | "
                         f"{measured} | ≥ {r['bar']:+.0f} points | {status} |")
        else:
            measured = "–" if r["measured"] is None else f"ratio {r['measured']:.3f} ({100 * (r['measured'] - 1):+.1f}%)"
            status = r["status"] + (f" by {r['measured'] - r['bar']:.3f}" if r["status"] == "MISS" else "")
            lines.append(f"| {ref} | mean AE crossings (°) | {_f(r['method_value'], '.2f')} | "
                         f"{_f(r['reference_value'], '.2f')} | {measured} | ratio ≤ {r['bar']:.2f} | {status} |")
    met = sum(r["status"] == "PASS" for r in rows)
    known = sum(r["status"] != "n/a" for r in rows)
    summary = f"{met} of {len(rows)} bars met" + ("" if known == len(rows) else f" ({len(rows) - known} not measured)")
    return "\n".join(lines) + f"\n\n{summary}.\n"


def _scheme_text(scheme: str) -> str:
    from ..sim import SCHEMES

    n_b0, shells = SCHEMES[scheme]
    return " + ".join([f"b=0 x {n_b0}"] + [f"b={b:g} x {n}" for b, n in shells])


def _cell_heading(cell: dict) -> str:
    what = "spatial phantom" if cell["kind"] == "spatial" else "voxel-wise crossings"
    head = f"### {what}, {cell['scheme']} ({_scheme_text(cell['scheme'])}), SNR {cell['snr']:g}"
    return head + (" — bar case" if cell["name"] == BAR_CELL else "")


def format_results(results: dict) -> str:
    """The Markdown report (results.md) of a :func:`run_benchmark` result."""
    cfg, m = results["config"], results["machine"]
    est, wall = results["estimate_s"], results["wall_seconds"]
    args = [" --quick" if cfg["size"] == "quick" else "", f" --seed {cfg['seed']}",
            f" --device {cfg['device']}" if cfg["device"] != "auto" else "",
            f" --iterations {cfg['iterations']}" if cfg["iterations"] != SUITES[cfg["size"]]["iterations"] else "",
            f" --methods {','.join(cfg['methods'])}" if cfg["methods"] else "",
            f" --model {cfg['model']}" if cfg.get("model") else ""]
    cells = f" Cells restricted to {', '.join(cfg['cells'])}." if cfg["cells"] else ""
    script = "" if any(args[2:]) or cells else " (or `python benchmarks/accuracy.py" + args[0] + "`)"
    lines = [
        "# Accuracy benchmark (issue 5)", "",
        (f"Command: `shdeconv benchmark -o OUTDIR{''.join(args)}`{script}. "
         f"Size `{cfg['size']}`, seed {cfg['seed']}, every network fitted per subject for "
         f"{cfg['iterations']} iterations (unsupervised loss, same budget for all).{cells}"), "",
        (f"Machine: {m['cpu']}, {m['cpu_count']} CPUs ({m['torch_threads']} torch threads), {m['platform']}; "
         f"device {m['device']}" + (f" ({m['gpu']})" if m.get("gpu") else "") +
         f"; Python {m['python']}, torch {m['torch']}, DIPY {m['dipy']}, shdeconv {m['shdeconv']}, "
         f"MRtrix3 {m['mrtrix3'] or 'not installed'}."), "",
        (f"Time: estimated {est['total'] / 60:.1f} min up front (2-core CPU model), this invocation "
         f"{wall / 60:.1f} min; the sum of the method times below is "
         f"{results['method_seconds'] / 60:.1f} min. Seconds per method: fitting only (plus MP-PCA "
         "where used), not scoring."), "",
        ("Scoring: peaks of every `fodf.nii.gz` extracted identically (`shdeconv evaluate`); success = right "
         "number of peaks, all within 25°; AE crossings = mean angular error of matched peaks in 2- and "
         "3-fibre voxels; coherence = main-peak mean |cos| between same-bundle neighbours. The phantoms' "
         "signal comes from a multi-tensor model, not from the fitting model."), "",
    ]
    bar = results["cells"].get(BAR_CELL)
    lines += ["## Bars (spatial phantom, clinical 30 directions, SNR 20)", ""]
    if bar is not None:
        points, ratio = BARS["csd"]
        lines += [(f"Issue 5: SHD-TV's 2-fibre success at least {points:g} points above DIPY CSD and its mean "
                   f"angular error on crossing voxels at least {100 * (1 - ratio):.0f}% below CSD's; SHD-TV no "
                   "worse than MP-PCA + CSD on both."), "", format_bars(results["bars"])]
        if results.get("bars_predict"):
            lines += ["The same bars for the shipped amortized model (`shdeconv predict`, no per-subject "
                      "optimisation):", "", format_bars(results["bars_predict"], "predict")]
    else:
        lines += ["The bar case was not run.", ""]
    lines += ["## Cells", ""]
    for cell in results["cells"].values():
        lines += [_cell_heading(cell), ""]
        if cell["region"] is not None:
            r = cell["region"]
            lines += [(f"Scored on the central axial slice ({r['slices']}, {r['voxels']} voxels in the mask) for "
                       "every method: DIPY's MSMT-CSD fits one voxel at a time and is run on that slice only. "
                       "DIPY CSD uses the highest shell (b=3000)."), ""]
        rows = [(rec["label"], rec["seconds"], rec["scores"]) for rec in cell["methods"].values()]
        lines += [format_comparison(rows) if rows else "No method finished.\n"]
        cr = _crossing_table(cell)
        if cr:
            lines += [cr]
    lines += ["## Figures", ""]
    for f in results["figures"]:
        lines += [f"![{f}]({f})", ""]
    notes = list(results["notes"])
    notes += [f"{f['cell']}/{f['method']} failed: {f['error']}" for f in results["failures"]]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines)


def _crossing_table(cell: dict) -> str:
    """2-fibre success by crossing angle for every method of a cell (Markdown)."""
    recs = list(cell["methods"].values())
    if not recs:
        return ""
    bins = list(CROSSING_BINS)
    counts = [recs[0]["scores"]["crossing"][b]["n_voxels"] for b in bins]
    lines = ["| 2-fibre success by crossing angle | " + " | ".join(f"{b}° (n={n})" for b, n in zip(bins, counts)) + " |",
             "|---|" + "---:|" * len(bins)]
    for rec in recs:
        cr = rec["scores"]["crossing"]
        lines.append(f"| {rec['label']} | " + " | ".join(_f(cr[b]["success_rate"]) for b in bins) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------

def _figures(results: dict, outdir: Path) -> list[str]:
    from ..viz._benchmark_figures import (
        plot_error_vs_snr,
        plot_glyph_panel,
        plot_success_vs_angle,
    )

    # colours: tab20's dark/light pairs, a method next to its denoised twin, SHD-TV in dark red
    order = ["csd", "csd+mppca", "msmt", "msmt+mppca", "mrtrix-csd", "mrtrix-csd+dwidenoise", "direct", "shd-tv",
             "shd-tv+mppca", "predict", "predict+finetune", "esd", "rtesd", "shd"]
    style = {"labels": {n: s.label for n, s in METHODS.items()}, "order": order,
             "emphasis": ("shd-tv", "shd-tv+mppca", "predict")}
    labels = style["labels"]
    cells = results["cells"].values()
    names = []
    # success vs crossing angle at SNR 20, one panel per scheme (and the voxel-wise phantom)
    panels = {}
    for c in cells:
        if c["snr"] == 20.0 and c["methods"]:
            title = f"{c['scheme']}" if c["kind"] == "spatial" else f"voxel-wise, {c['scheme']}"
            panels[title] = {m: rec["scores"]["crossing"] for m, rec in c["methods"].items()}
    plot_success_vs_angle(panels, outdir / "accuracy_success_vs_angle.png", **style)
    names.append("accuracy_success_vs_angle.png")
    # crossing angular error vs SNR, one panel per scheme (spatial phantom)
    panels = {}
    for c in cells:
        if c["kind"] != "spatial":
            continue
        p = panels.setdefault(c["scheme"], {})
        for m, rec in c["methods"].items():
            p.setdefault(m, {})[c["snr"]] = crossing_error(rec["scores"])
    plot_error_vs_snr(panels, outdir / "accuracy_error_vs_snr.png", **style)
    names.append("accuracy_error_vs_snr.png")
    # glyphs of one crossing region in the bar case
    bar = results["cells"].get(BAR_CELL)
    if bar is not None:
        fodfs = {f"{labels[m]} (2-fibre success {_f(bar['methods'][m]['scores']['groups']['2']['success_rate'])})":
                 outdir / BAR_CELL / m / "fodf.nii.gz"
                 for m in ("csd", "csd+mppca", "shd-tv", "predict") if m in bar["methods"]}
        if fodfs:
            crop = 12 if results["config"]["size"] == "default" else 8
            plot_glyph_panel(outdir / BAR_CELL / "phantom", fodfs, outdir / "accuracy_glyphs.png", crop=crop,
                             title="bar case (clinical, SNR 20): fODF glyphs on the crop with the most crossings")
            names.append("accuracy_glyphs.png")
    return names


# ---------------------------------------------------------------------------------------------
# the suite
# ---------------------------------------------------------------------------------------------

def _check_config_file(outdir: Path, stamp: dict) -> None:
    from ..io import atomic_write_text

    path = outdir / "config.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old != stamp:
            raise InputError(outdir, f"holds a benchmark made with {old}, not {stamp}; use another output "
                                     "directory or the same settings to resume it")
    else:
        atomic_write_text(path, json.dumps(stamp, indent=2) + "\n")


def run_benchmark(outdir, *, size: str = "default", seed: int = 0, device: str = "auto",
                  iterations: int | None = None, methods=None, cells=None, progress: bool = True,
                  model=None) -> dict:
    """Run the accuracy suite (resumable) and write results.md, results.json and the figures.

    Parameters
    ----------
    outdir : path-like
        Output directory; a directory holding an earlier run with the same settings is resumed.
    size : {"default", "quick"}
        See :class:`BenchmarkConfig`.
    seed : int
        Seed of the phantoms and the fits.
    device : str
        Device of the network fits (``auto``, ``cpu``, ``cuda``).
    iterations : int, optional
        Iterations of every network fit (default: the size's, :data:`SUITES`).
    methods : iterable of str or comma-separated str, optional
        Only these methods (:data:`METHODS`).
    cells : iterable of str or comma-separated str, optional
        Only these cells (e.g. ``spatial-clinical-snr20``).
    progress : bool
        Progress bars.
    model : path-like, optional
        Model file for the ``predict`` methods (default: the shipped model). An output
        directory is tied to its model: resuming with another one is refused.

    Returns
    -------
    dict
        What results.json holds: ``config``, ``machine``, ``estimate_s``, ``cells`` (name ->
        kind, scheme, snr, region, methods -> {label, seconds, scores, ...}), ``bars``,
        ``figures``, ``notes``, ``failures``, ``wall_seconds`` and ``method_seconds``.

    Raises
    ------
    ValueError
        Unknown size, method or cell names, a bad device or iteration count, or an ``outdir``
        made with other settings.
    """
    from tqdm.auto import tqdm

    from ..io import atomic_write_text, check_output_dir
    from ..sim import GENERATOR_VERSION

    config = BenchmarkConfig(size=size, seed=seed, device=device, iterations=iterations, methods=methods,
                             cells=cells, progress=progress, model=None if model is None else str(model))
    t_start = time.perf_counter()
    outdir = check_output_dir(outdir)
    stamp = {"size": config.size, "seed": int(config.seed), "iterations": config.fit_iterations,
             "phantom_generator": GENERATOR_VERSION}
    if config.model is not None:  # the shipped model's runs keep their old stamp (resumable)
        stamp["model"] = config.model
    _check_config_file(outdir, stamp)
    machine = machine_info(config.device)
    have_mrtrix = machine["mrtrix3"] is not None
    notes = []
    if not have_mrtrix:
        wanted = [m for m in (config.methods or METHODS) if METHODS[m].engine == "mrtrix"]
        if wanted:
            notes.append(f"MRtrix3 (dwi2response, dwi2fod, dwidenoise) is not installed: {', '.join(wanted)} skipped.")
            logger.warning(notes[-1])
    plan = plan_cells(config, mrtrix=have_mrtrix)
    if not plan:
        raise OptionError(f"no cell has any of the methods {list(config.methods or [])}")
    estimate = estimate_seconds(config, mrtrix=have_mrtrix)
    logger.info("benchmark: %d cells, %d method runs, networks at %d iterations; estimated %.1f min on a 2-core "
                "CPU (networks %.1f min)", len(plan), sum(len(c.methods) for c in plan), config.fit_iterations,
                estimate["total"] / 60, estimate["networks"] / 60)
    if config.size == "default" and estimate["total"] > 3600:
        logger.warning("the estimated time (%.0f min) is over the suite's 60-minute budget on 2 CPU cores",
                       estimate["total"] / 60)

    results = {"config": {**asdict(config), "iterations": config.fit_iterations}, "machine": machine,
               "estimate_s": estimate, "cells": {}, "notes": notes, "failures": []}
    bar = tqdm(total=sum(len(c.methods) for c in plan), desc="benchmark", disable=not progress, dynamic_ncols=True)
    for cell in plan:
        cell_dir = outdir / cell.name
        cell_dir.mkdir(parents=True, exist_ok=True)
        bar.set_postfix_str(f"{cell.name}: phantom")
        phantom_dir = _simulate(cell, cell_dir / "phantom", config)
        region = _region(cell, phantom_dir, config)
        entry = {"name": cell.name, "kind": cell.kind, "scheme": cell.scheme, "snr": cell.snr,
                 "region": None if region is None else region[1], "methods": {}}
        for name in cell.methods:
            bar.set_postfix_str(f"{cell.name}/{name}")
            done = cell_dir / name / "scores.json"
            if done.exists():
                entry["methods"][name] = json.loads(done.read_text())
                logger.info("%s/%s: done before, not run again", cell.name, name)
            else:
                try:
                    entry["methods"][name] = _run_method(name, cell, cell_dir, phantom_dir, region, config)
                except Exception as e:  # one failing arm must not lose the rest of a long suite
                    logger.exception("%s/%s failed", cell.name, name)
                    results["failures"].append({"cell": cell.name, "method": name, "error": f"{type(e).__name__}: {e}"})
            bar.update(1)
        results["cells"][cell.name] = entry
    bar.close()

    bar_case = results["cells"].get(BAR_CELL, {}).get("methods", {})
    results["bars"] = bar_checks({m: rec["scores"] for m, rec in bar_case.items()})
    if "predict" in bar_case:
        results["bars_predict"] = bar_checks({m: rec["scores"] for m, rec in bar_case.items()}, method="predict")
    results["method_seconds"] = float(sum(rec["seconds"] for c in results["cells"].values()
                                          for rec in c["methods"].values()))
    results["figures"] = _figures(results, outdir)
    results["wall_seconds"] = time.perf_counter() - t_start
    atomic_write_text(outdir / "results.json", json.dumps(results, indent=2, default=float) + "\n")
    atomic_write_text(outdir / "results.md", format_results(results))
    logger.info("benchmark written to %s in %.1f min", outdir, results["wall_seconds"] / 60)
    return results
