"""Whole-volume inference: overlapping, blended tiles, batch sizing and CPU tile workers."""

from ._sliding_window import (
    SlidingWindowInferer,
    blend_weights,
    sliding_window_inference,
    tile_starts,
)
from ._volume import (
    BYTES_PER_CHANNEL_PIXEL,
    DEFAULT_TILE_OVERLAP,
    MAX_TILE_WORKERS,
    VolumeInput,
    auto_batch,
    channels_first,
    native_bfloat16,
    predict_volume,
    threads_per_worker,
    tile_workers,
    volume_input,
)

__all__ = [
    "BYTES_PER_CHANNEL_PIXEL",
    "DEFAULT_TILE_OVERLAP",
    "MAX_TILE_WORKERS",
    "SlidingWindowInferer",
    "VolumeInput",
    "auto_batch",
    "blend_weights",
    "channels_first",
    "native_bfloat16",
    "predict_volume",
    "sliding_window_inference",
    "threads_per_worker",
    "tile_starts",
    "tile_workers",
    "volume_input",
]
