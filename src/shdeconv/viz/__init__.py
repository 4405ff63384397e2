"""Figures: the QC picture of a fit and the accuracy benchmark's figures."""

from ._benchmark_figures import (
    plot_error_vs_snr,
    plot_glyph_panel,
    plot_success_vs_angle,
)
from ._qc import glyph_outlines, save_qc_figure

__all__ = ["glyph_outlines", "plot_error_vs_snr", "plot_glyph_panel", "plot_success_vs_angle", "save_qc_figure"]
