"""Signal models: tissue responses, the convolution forward model and signal-to-grid maps."""

from ._forward import ForwardModel, linear_deconvolution
from ._grid import grid_directions, grid_to_sh_matrix, input_lmax, signal_to_grid_matrix
from ._mask import brain_mask
from ._response import Responses, estimate_responses, zonal_design

__all__ = [
    "ForwardModel",
    "Responses",
    "brain_mask",
    "estimate_responses",
    "grid_directions",
    "grid_to_sh_matrix",
    "input_lmax",
    "linear_deconvolution",
    "signal_to_grid_matrix",
    "zonal_design",
]
