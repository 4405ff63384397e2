"""Figures: the QC picture of a fit."""

from ._qc import glyph_outlines, save_qc_figure

__all__ = ["glyph_outlines", "save_qc_figure"]
