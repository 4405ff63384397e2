"""Signal models: tissue responses, the convolution forward model and signal-to-grid maps."""

from ._forward import ForwardModel, linear_deconvolution
from ._grid import grid_directions, grid_to_sh_matrix, input_lmax, signal_to_grid_matrix
from ._mask import automatic_mask, brain_mask
from ._normalise import b0_mean, normalise_signal
from ._response import Responses, estimate_responses, wm_s0_scale, zonal_design

__all__ = [
    "ForwardModel",
    "Responses",
    "automatic_mask",
    "b0_mean",
    "brain_mask",
    "estimate_responses",
    "wm_s0_scale",
    "grid_directions",
    "grid_to_sh_matrix",
    "input_lmax",
    "linear_deconvolution",
    "normalise_signal",
    "signal_to_grid_matrix",
    "zonal_design",
]
