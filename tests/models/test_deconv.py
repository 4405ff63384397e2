import numpy as np
import pytest
import torch

from shdeconv.models import DeconvNet, NetworkConfig
from shdeconv.signal import ForwardModel, linear_deconvolution
from shdeconv.sphere import sh_degrees


def _kernel():
    ls = sh_degrees(8)
    kernel = np.zeros((2, 45))
    kernel[0, 0] = 4 * np.pi
    kernel[1] = np.sqrt(4 * np.pi / (2 * ls + 1)) * np.array([1.0, -0.45, 0.18, -0.06, 0.015])[ls // 2]
    return kernel


def _acq(rng, n=30):
    g = rng.normal(size=(n + 2, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    g[:2] = 0
    shell = np.r_[[0, 0], [1] * n]
    iso = np.array([[np.sqrt(4 * np.pi)] * 2, [0.6, 0.05]])
    return g, shell, ForwardModel(g, shell, _kernel(), iso)


def test_linear_deconvolution_recovers_a_smooth_fodf(rng):
    """WM + one isotropic tissue are identifiable from b=0 and one shell (two would not be)."""
    g, shell, _ = _acq(rng, 60)
    fm = ForwardModel(g, shell, _kernel(), np.array([[np.sqrt(4 * np.pi)], [0.05]]))
    c = np.zeros(45)
    c[0], c[3] = 0.15, 0.08
    phi = np.array([0.1])
    s = fm(torch.as_tensor(c, dtype=torch.float32), torch.as_tensor(phi, dtype=torch.float32)).numpy()
    p = linear_deconvolution(fm, regularisation=1e-6) @ s
    np.testing.assert_allclose(p[:45], c, atol=2e-3)
    np.testing.assert_allclose(p[45:], phi, atol=2e-3)


@pytest.mark.parametrize("variant", ["shd-tv", "esd"])
def test_network_starts_at_the_linear_solution(rng, variant):
    g, shell, fm = _acq(rng)
    d = linear_deconvolution(fm)
    net = DeconvNet(NetworkConfig(variant=variant, depth=2, width=4, K=2), g, shell, [1], n_iso=2, init_matrix=d)
    x = torch.rand(1, len(g), 4, 4, 4)
    wm, iso = net.eval()(x)
    lin = torch.einsum("pg,bgxyz->bpxyz", torch.as_tensor(d, dtype=torch.float32), x)
    torch.testing.assert_close(wm, lin[:, :45], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(iso, lin[:, 45:].clamp(1e-3, 10), rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="rows"):
        DeconvNet(NetworkConfig(depth=2, width=4), g, shell, [1], n_iso=2, init_matrix=d[:10])


def test_config_validation():
    with pytest.raises(ValueError, match="variant"):
        NetworkConfig(variant="csd")
    with pytest.raises(ValueError, match="halved"):
        NetworkConfig(nside=2, depth=3)
