"""Peak extraction from fODF SH, scoring against phantoms with known fibres, and the accuracy benchmark."""

from ..io._peaks_file import read_peaks, write_peaks
from ._benchmark import (
    METHODS,
    BenchmarkConfig,
    bar_checks,
    estimate_seconds,
    format_bars,
    run_benchmark,
)
from ._metrics import (
    CROSSING_BINS,
    crossing_error,
    evaluate_dirs,
    format_comparison,
    format_scores,
    score,
)
from ._peaks import peak_sphere, sh_peaks

__all__ = [
    "CROSSING_BINS",
    "METHODS",
    "BenchmarkConfig",
    "bar_checks",
    "crossing_error",
    "estimate_seconds",
    "evaluate_dirs",
    "format_bars",
    "format_comparison",
    "format_scores",
    "peak_sphere",
    "read_peaks",
    "run_benchmark",
    "score",
    "sh_peaks",
    "write_peaks",
]
