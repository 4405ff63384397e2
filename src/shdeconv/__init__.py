"""shdeconv: equivariant spatio-hemispherical networks for diffusion MRI deconvolution."""

__version__ = "0.1.0"
