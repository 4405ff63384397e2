"""Networks built from :mod:`shdeconv.nn`: the spatio-spherical U-Net and deconvolution heads."""

from ._deconv import NETWORK_SCALES, VARIANTS, DeconvNet, NetworkConfig, grid_anisotropy, neighbourhood_coherence
from ._store import LoadedModel, load_model, pretrained_path, save_model
from ._unet import ChannelBatchNorm, SphericalUNet

__all__ = [
    "NETWORK_SCALES",
    "VARIANTS",
    "ChannelBatchNorm",
    "DeconvNet",
    "LoadedModel",
    "NetworkConfig",
    "SphericalUNet",
    "grid_anisotropy",
    "load_model",
    "neighbourhood_coherence",
    "pretrained_path",
    "save_model",
]
