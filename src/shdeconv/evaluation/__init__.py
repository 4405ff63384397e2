"""Scoring against phantoms with known fibres, and the accuracy benchmark."""

from ._metrics import (
    CROSSING_BINS,
    crossing_error,
    evaluate_dirs,
    format_comparison,
    format_scores,
    score,
)
from .benchmark import (
    METHODS,
    BenchmarkConfig,
    bar_checks,
    estimate_seconds,
    format_bars,
    run_benchmark,
)

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
    "run_benchmark",
    "score",
]
