"""Synthetic phantoms: acquisition schemes, a multi-compartment tensor forward model,
spatial and voxel-wise phantoms with known fibres (optionally with dispersion, diffusivity
jitter, correlated noise and a bias field), and their files on disk."""

from ._io import (
    PHANTOM_FILES,
    Truth,
    load_truth,
    simulate_to_dir,
    truth_fodf_sh,
    write_phantom,
)
from ._phantom import (
    GENERATOR_VERSION,
    SIZES,
    Phantom,
    default_affine,
    spatial_phantom,
    voxelwise_phantom,
)
from ._schemes import SCHEMES, acquisition_scheme, repulsion_directions
from ._signal import add_rician_noise, tensor_signal
from ._variation import PhantomVariation

__all__ = [
    "GENERATOR_VERSION",
    "PHANTOM_FILES",
    "SCHEMES",
    "SIZES",
    "Phantom",
    "PhantomVariation",
    "Truth",
    "acquisition_scheme",
    "add_rician_noise",
    "default_affine",
    "load_truth",
    "repulsion_directions",
    "simulate_to_dir",
    "spatial_phantom",
    "tensor_signal",
    "truth_fodf_sh",
    "voxelwise_phantom",
    "write_phantom",
]
