r"""The accuracy benchmark: phantoms with known fibres, every method, one table per cell.

Suite (``size="default"``)
--------------------------
- **bar case**: spatial phantom, clinical scheme (b=1000 x 30 + 3 b=0), SNR 20, with every
  method of :data:`METHODS` that applies to single-shell data;
- **grid**: schemes clinical, sparse and multishell x SNR 10, 20, 30 on the spatial phantom with
  ``csd``, ``csd+mppca``, ``msmt``/``msmt+mppca`` (multishell), ``mrtrix-csd`` and ``shd-tv``
  (the bar case is the grid's clinical/SNR 20 cell);
- **voxel-wise**: the voxel-wise crossing phantom (clinical, SNR 20) with ``csd``,
  ``csd+mppca``, ``esd`` and ``shd-tv``;
- **tractography** of the bar case: every method's fODF tracked (``shdeconv track``'s settings)
  from the same seeds in the phantom's true white matter and scored against its known bundles,
  Tractometer-style (valid / invalid / no connection, overlap, overreach;
  :mod:`shdeconv.evaluation._tractometry`).

Every network is fitted per subject with the unsupervised loss for the same number of
iterations (:attr:`BenchmarkConfig.fit_iterations`). Multishell cells are scored on their
central axial slice for every method, because DIPY's MSMT-CSD fits one voxel at a time (about
50-80 ms per voxel) and is run on that slice only. DIPY CSD on multishell data uses its highest
shell (b=3000), as :func:`~shdeconv.baselines.csd_fit` does. MP-PCA is run once per cell and its
time is added to every method that uses it. MRtrix3's arms run ``dwi2response`` and
``dwi2fod`` as users run them (``tournier`` + ``csd`` on one shell, ``dhollander`` +
``msmt_csd`` on several; :func:`~shdeconv.baselines.run_mrtrix_csd`) and are skipped, with a
note, when MRtrix3 is not installed.

Layout of ``outdir``::

    config.json                      the settings the directory was made with (resume guard)
    <cell>/phantom/                  the simulated phantom (shdeconv simulate)
    <cell>/mppca/dwi.nii.gz          MP-PCA denoised signal, shared by the "+mppca" methods
    <cell>/<method>/                 the method's outputs and scores.json (seconds and scores)
    <bar cell>/<method>/tractometry.json  the bar case's tractography scores of the method
    results.md  results.json  accuracy_*.png

A method whose ``scores.json`` exists is not run again (resume), nor is a tractography whose
``tractometry.json`` exists with the same settings; an interrupted network fit continues from
its checkpoint.

Modules: ``_suite`` (methods, cells, settings), ``_cost`` (time estimate), ``_machine``
(machine description), ``_cell`` (phantom, scored region, MP-PCA), ``_run`` (running and
resuming the suite), ``_tractography`` (the bar case's tracking), ``_bars``, ``_report``
(results.md) and ``_figures``.
"""

from ._bars import bar_checks, format_bars
from ._cost import estimate_seconds
from ._machine import cpu_model, machine_info
from ._report import format_results
from ._run import run_benchmark
from ._suite import (
    BAR_CELL,
    METHODS,
    SUITES,
    TRACKING,
    BenchmarkConfig,
    Cell,
    MethodSpec,
    plan_cells,
)

__all__ = [
    "BAR_CELL",
    "METHODS",
    "SUITES",
    "TRACKING",
    "BenchmarkConfig",
    "Cell",
    "MethodSpec",
    "bar_checks",
    "estimate_seconds",
    "format_bars",
    "format_results",
    "cpu_model",
    "machine_info",
    "plan_cells",
    "run_benchmark",
]
