"""Networks built from :mod:`shdeconv.nn`: the spatio-spherical U-Net and deconvolution heads."""

from ._deconv import VARIANTS, DeconvNet, NetworkConfig
from ._unet import ChannelBatchNorm, SphericalUNet

__all__ = ["VARIANTS", "ChannelBatchNorm", "DeconvNet", "NetworkConfig", "SphericalUNet"]
