"""Per-subject fitting (networks and ``direct``), whole-volume prediction and the end-to-end jobs."""

from ._direct import DirectConfig, fit_direct
from ._fit import (
    DEFAULT_TILE_OVERLAP,
    FitConfig,
    FitResult,
    auto_batch,
    fit_network,
    normalise_signal,
    predict_volume,
    resolve_device,
    sample_patches,
    threads_per_worker,
    tile_workers,
)
from ._pipeline import (
    FIT_MODELS,
    Subject,
    build_network,
    default_loss_weights,
    denoise_mppca,
    load_subject,
    run_csd,
    run_fit,
    run_predict,
    write_outputs,
)

__all__ = [
    "DEFAULT_TILE_OVERLAP",
    "FIT_MODELS",
    "DirectConfig",
    "FitConfig",
    "FitResult",
    "Subject",
    "auto_batch",
    "build_network",
    "default_loss_weights",
    "denoise_mppca",
    "fit_direct",
    "fit_network",
    "load_subject",
    "normalise_signal",
    "predict_volume",
    "resolve_device",
    "run_csd",
    "run_fit",
    "run_predict",
    "sample_patches",
    "threads_per_worker",
    "tile_workers",
    "write_outputs",
]
