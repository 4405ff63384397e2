"""Per-subject fitting (networks and ``direct``) and the end-to-end jobs (fit, predict, csd)."""

from ._direct import DirectConfig, direct_solution, fit_direct, linear_start, start_for
from ._fit import (
    NETWORK_INITS,
    FitConfig,
    FitResult,
    fit_network,
    optimisation_step,
    sample_patches,
)
from ._pipeline import (
    FIT_MODELS,
    OUTPUT_FILES,
    default_loss_weights,
    run_csd,
    run_fit,
    run_predict,
    write_outputs,
)
from ._subject import (
    AUTO_DENOISE_COHERENCE,
    DENOISERS,
    FIT_DENOISE,
    Subject,
    build_network,
    choose_denoise,
    denoise_mppca,
    denoise_pca,
    load_subject,
    recorded_warnings,
)

__all__ = [
    "AUTO_DENOISE_COHERENCE",
    "DENOISERS",
    "FIT_DENOISE",
    "FIT_MODELS",
    "NETWORK_INITS",
    "OUTPUT_FILES",
    "DirectConfig",
    "FitConfig",
    "FitResult",
    "Subject",
    "build_network",
    "choose_denoise",
    "default_loss_weights",
    "denoise_mppca",
    "denoise_pca",
    "direct_solution",
    "fit_direct",
    "fit_network",
    "linear_start",
    "load_subject",
    "optimisation_step",
    "recorded_warnings",
    "run_csd",
    "run_fit",
    "run_predict",
    "sample_patches",
    "start_for",
    "write_outputs",
]
