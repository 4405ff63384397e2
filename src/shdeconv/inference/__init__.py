"""Whole-volume inference on overlapping, blended tiles."""

from ._sliding_window import (
    SlidingWindowInferer,
    blend_weights,
    sliding_window_inference,
    tile_starts,
)

__all__ = ["SlidingWindowInferer", "blend_weights", "sliding_window_inference", "tile_starts"]
