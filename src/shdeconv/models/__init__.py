"""Networks built from :mod:`shdeconv.nn`: the spatio-spherical U-Net and deconvolution heads."""

from ._unet import ChannelBatchNorm, SphericalUNet

__all__ = ["ChannelBatchNorm", "SphericalUNet"]

try:  # the deconvolution heads are maintained separately; export them when importable
    from ._deconv import VARIANTS, DeconvNet, NetworkConfig  # noqa: F401

    __all__ += ["VARIANTS", "DeconvNet", "NetworkConfig"]
except ImportError:  # pragma: no cover
    pass
