"""Peak extraction from fODF SH and scoring against phantoms with known fibres."""

from ..io._peaks_file import read_peaks, write_peaks
from ._metrics import CROSSING_BINS, crossing_error, evaluate_dirs, format_comparison, format_scores, score
from ._peaks import peak_sphere, sh_peaks

__all__ = [
    "CROSSING_BINS",
    "crossing_error",
    "evaluate_dirs",
    "format_comparison",
    "format_scores",
    "peak_sphere",
    "read_peaks",
    "score",
    "sh_peaks",
    "write_peaks",
]
