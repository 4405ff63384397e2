"""Scoring against phantoms with known fibres (peaks and, Tractometer-style, tractograms), and the
accuracy benchmark."""

from ._metrics import (
    CROSSING_BINS,
    crossing_error,
    evaluate_dirs,
    format_comparison,
    format_scores,
    score,
)
from ._tractometry import (
    rasmm_to_voxel,
    score_tractogram,
    seed_voxels,
    track_and_score,
    track_from_mask,
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
    "rasmm_to_voxel",
    "run_benchmark",
    "score",
    "score_tractogram",
    "seed_voxels",
    "track_and_score",
    "track_from_mask",
]
