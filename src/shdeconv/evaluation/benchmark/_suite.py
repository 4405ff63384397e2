"""The benchmark's methods, its cells and their sizes, and the validated settings of a run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..._options import FIT_DENOISE, OptionError, check_device
from ...io import InputError

__all__ = ["BAR_CELL", "METHODS", "SUITES", "TRACKING", "BenchmarkConfig", "Cell", "MethodSpec", "plan_cells"]


@dataclass(frozen=True)
class MethodSpec:
    """One method of the benchmark.

    ``engine`` is ``"dipy"`` (``variant`` ``"ssst"`` or ``"msmt"``), ``"mrtrix"``, ``"net"``
    (``variant`` the network variant, fitted per subject) or ``"pretrained"`` (the shipped
    amortized model, ``shdeconv predict``, one pass); ``denoise`` runs MP-PCA (DIPY) or ``dwidenoise``
    (MRtrix3) first, once per cell for every method that asks; ``job_denoise`` is the job's own
    ``--denoise`` (``fit``'s default: ``auto``, which looks at the data first); ``init`` is where
    ``direct`` starts (``"linear"``: no trained model; ``"auto"``: as ``shdeconv fit`` by default,
    the shipped model's answer on single-shell data up to b=1500).
    """

    name: str
    label: str
    engine: str
    variant: str | None = None
    denoise: bool = False
    multishell_only: bool = False
    init: str | None = None
    job_denoise: str = "none"


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
    MethodSpec("direct", "direct (the objective, no network)", "net", "direct", init="linear"),
    MethodSpec("fit", "fit (its defaults: auto denoising, then direct from the auto start)", "net", "direct",
               init="auto", job_denoise=FIT_DENOISE),
    MethodSpec("predict", "SHD-TV amortized (shipped model, predict)", "pretrained"),
    MethodSpec("predict+finetune", f"predict + {FINETUNE_STEPS} fine-tuning steps (prior kept)", "pretrained",
               str(FINETUNE_STEPS)),
)}

#: the rest of the grid runs ``fit``'s defaults (``direct`` after its denoising, from the ``auto`` start), not
#: the per-subject networks: with the published head they cost 4-15 minutes each on 2 cores and are
#: compared in the bar case, beside ``direct`` from the linear start (the objective alone)
_GRID_METHODS = ("csd", "csd+mppca", "msmt", "msmt+mppca", "mrtrix-csd", "fit", "predict")
_VOXELWISE_METHODS = ("csd", "csd+mppca", "direct", "fit", "shd-tv", "predict")

#: the cell of the accuracy targets (the bars): spatial phantom, clinical 30-direction scheme, SNR 20
BAR_CELL = "spatial-clinical-snr20"

#: per size: the grid's (scheme, SNR) cells, the networks' iterations, the scored slab of
#: multishell cells (axial slices) and the number of seed voxels of the bar case's tractography
#: (a fixed random subset of the true white matter, the same for every method). 200 iterations,
#: not FitConfig's 300: the default suite then takes about 65 minutes on 2 CPU cores, 40 of them
#: the bar case's per-subject networks (ESD and RT-ESD cost 2-4 times SHD-TV per iteration).
SUITES = {
    "default": {"grid": tuple((scheme, snr) for scheme in ("clinical", "sparse", "multishell")
                              for snr in (10.0, 20.0, 30.0)),
                "iterations": 200, "region_slices": 1, "tracking_seed_voxels": 1000},
    "quick": {"grid": (("clinical", 10.0), ("multishell", 20.0)), "iterations": 5, "region_slices": 1,
              "tracking_seed_voxels": 100},
}

#: tractography of the bar case (:func:`~shdeconv.evaluation._tractometry.track_and_score`):
#: the settings of ``shdeconv track``, one seed at the centre of every seed voxel
TRACKING = {"algorithm": "det", "seeds_per_voxel": 1, "step_size": 0.5, "max_angle": 30.0, "wm_threshold": 0.25}


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
        from ...sim import SCHEMES

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
        ``default``: the full suite, sized for 60 minutes on 2 CPU cores; ``quick``: small
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
            from ...models._store import load_model

            load_model(self.model)  # a file that is not a usable model fails now, not after hours of other methods
            object.__setattr__(self, "model", str(Path(self.model).resolve()))
        if self.size not in SUITES:
            raise OptionError(f"size must be one of {sorted(SUITES)}, got {self.size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise OptionError(f"seed must be an int >= 0, got {self.seed!r}")
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
