from dataclasses import replace

import numpy as np
import pytest
import torch

from shdeconv.models import DeconvNet, NetworkConfig
from shdeconv.models._deconv import GATE
from shdeconv.signal import ForwardModel, linear_deconvolution
from shdeconv.signal._grid import grid_directions
from shdeconv.sphere import n_coeffs, rotate_sh, sh_degrees, sh_matrix

LINEAR_HEAD = dict(head="linear", nside=4, lmax=8, response_lmax=8)


def _rot90z(t: torch.Tensor) -> torch.Tensor:
    """SH ``[B, S, ...]`` rotated 90 degrees about z (a rotation that maps the HEALPix grid to itself)."""
    q = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    return torch.as_tensor(rotate_sh(t.movedim(1, -1).numpy(), q)).movedim(-1, 1)


def _assert_commutes_with_rotation(net: DeconvNet, lin: torch.Tensor, n_wm: int = 45) -> None:
    """``net(linear=R lin) == R net(linear=lin)`` for the WM SH (the tissue rows do not rotate)."""
    with torch.no_grad():
        out = net(linear=lin)[0]
        turned = net(linear=torch.cat([_rot90z(lin[:, :n_wm]), lin[:, n_wm:]], 1))[0]
    torch.testing.assert_close(turned, _rot90z(out), atol=1e-8, rtol=1e-6)


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
    net = DeconvNet(NetworkConfig(variant=variant, depth=2, width=4, K=2, **LINEAR_HEAD), g, shell, [1], n_iso=2,
                    init_matrix=d)
    x = torch.rand(1, len(g), 4, 4, 4)
    wm, iso = net.eval()(x)
    lin = torch.einsum("pg,bgxyz->bpxyz", torch.as_tensor(d, dtype=torch.float32), x)
    torch.testing.assert_close(wm, lin[:, :45], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(iso, lin[:, 45:].clamp(1e-3, 10), rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="rows"):
        DeconvNet(NetworkConfig(depth=2, width=4, **LINEAR_HEAD), g, shell, [1], n_iso=2, init_matrix=d[:10])


def test_softplus_head_starts_isotropic_and_is_nonnegative_on_the_grid(rng):
    g, shell, fm = _acq(rng)
    cfg = NetworkConfig(depth=2, width=4, K=2)  # nside 8, lmax 16, response 8
    fresh = DeconvNet(cfg, g, shell, [1], n_iso=2).eval()
    x = torch.rand(1, len(g), 4, 4, 4)
    with torch.no_grad():  # the start: the same even fODF of unit WM fraction in every voxel
        wm0, iso0 = fresh(x)
    torch.testing.assert_close(wm0[:, 0], torch.full_like(wm0[:, 0], 1 / np.sqrt(4 * np.pi)), rtol=1e-4, atol=0)
    assert wm0[:, 1:].abs().max() < 1e-5 and torch.allclose(iso0, torch.full_like(iso0, 0.1))
    net = DeconvNet(cfg, g, shell, [1], n_iso=2).eval()
    torch.nn.init.normal_(net.unet.head.theta)  # as after training: no longer constant
    assert net.n_coeffs == n_coeffs(16) and net.n_input_coeffs == 45
    seen = {}
    net.unet.register_forward_hook(lambda m, i, o: seen.setdefault("y", o))
    with torch.no_grad():
        wm, iso = net(x)
    grid_vals = torch.nn.functional.softplus(seen["y"][:, 0])  # [B, V, X, Y, Z], >= 0 by construction
    assert (grid_vals >= 0).all()
    torch.testing.assert_close(wm, torch.einsum("sv,bvxyz->bsxyz", net.to_sh, grid_vals))
    assert wm.shape == (1, 153, 4, 4, 4) and iso.shape == (1, 2, 4, 4, 4) and (iso > 0).all()
    # the grid resolves lmax 16: the projection of a non-negative band-limited fODF is exact
    b = torch.as_tensor(sh_matrix(grid_directions(8, True), 16), dtype=torch.float32)
    c = torch.zeros(153)
    c[0], c[3], c[10] = 0.3, 0.1, 0.05
    torch.testing.assert_close(net.to_sh @ (b @ c), c, atol=1e-5, rtol=0)


def test_softplus_head_is_rotation_equivariant(rng):
    """90 degrees about z maps the HEALPix hemisphere to itself (up to antipodes): a linear-input
    network with the Softplus head then commutes with that rotation of its input SH exactly."""
    cfg = NetworkConfig(depth=2, width=4, K=2, nside=4, lmax=8, response_lmax=8, inputs="linear")
    net = DeconvNet(cfg).double().eval()
    torch.nn.init.normal_(net.unet.head.theta)
    lin = torch.randn(1, 45, 2, 2, 2, dtype=torch.float64)
    q = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    rot = lambda t: torch.as_tensor(rotate_sh(t.movedim(1, -1).numpy(), q)).movedim(-1, 1)  # noqa: E731
    with torch.no_grad():
        out = net(linear=lin)[0]
        out_rot = net(linear=rot(lin))[0]
    torch.testing.assert_close(out_rot, rot(out), atol=1e-8, rtol=1e-6)


def test_softplus_skip_starts_at_the_positive_part_of_the_linear_solution_and_stays_equivariant(rng):
    """The skip adds the linear solution before the Softplus: a fresh network returns its positive
    part on the grid (projected to lmax 10), a trained one stays non-negative and equivariant."""
    cfg = NetworkConfig(depth=2, width=4, K=2, nside=4, lmax=10, response_lmax=8, inputs="linear", skip=True)
    net = DeconvNet(cfg, n_iso=2).double().eval()
    lin = torch.randn(2, 47, 4, 4, 4, dtype=torch.float64)
    grid = torch.einsum("vs,bsxyz->bvxyz", net.to_grid.double(), lin[:, :45])
    with torch.no_grad():
        wm, iso = net(linear=lin)
    torch.testing.assert_close(wm, torch.einsum("sv,bvxyz->bsxyz", net.to_sh.double(), grid.clamp_min(1e-3)))
    torch.testing.assert_close(iso, lin[:, 45:].clamp(1e-3, 10.0))
    torch.nn.init.normal_(net.unet.head.theta)
    seen = {}
    hook = net.unet.register_forward_hook(lambda m, i, o: seen.update(y=o))
    with torch.no_grad():
        wm = net(linear=lin)[0]
    hook.remove()
    y = seen["y"][:, 0] + torch.log(torch.expm1(grid.clamp_min(1e-3)))
    assert (torch.nn.functional.softplus(y) >= 0).all()
    torch.testing.assert_close(wm, torch.einsum("sv,bvxyz->bsxyz", net.to_sh.double(), torch.nn.functional.softplus(y)))
    q = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    rot = lambda t: torch.as_tensor(rotate_sh(t.movedim(1, -1).numpy(), q)).movedim(-1, 1)  # noqa: E731
    lin2 = lin[:1, :45, :2, :2, :2]
    with torch.no_grad():
        torch.testing.assert_close(net(linear=rot(lin2))[0], rot(net(linear=lin2)[0]), atol=1e-8, rtol=1e-6)
    with pytest.raises(ValueError, match="skip"):
        NetworkConfig(skip=True)  # 'signal' inputs have no linear solution to add


def test_linear_input_softplus_network_returns_the_subjects_tissues(rng):
    """A multi-shell-trained network (GM, CSF) on a single-shell subject (one isotropic tissue):
    the linear input's rows say which; the first of the network's tissues is returned."""
    cfg = NetworkConfig(depth=2, width=4, K=2, nside=4, lmax=10, response_lmax=8, inputs="linear")
    net = DeconvNet(cfg, n_iso=2).eval()
    lin = torch.randn(1, 47, 4, 4, 4)
    with torch.no_grad():
        both, one, none = (net(linear=lin[:, :k])[1] for k in (47, 46, 45))
    assert both.shape[1] == 2 and one.shape[1] == 1 and none is None
    torch.testing.assert_close(one, both[:, :1])
    g, shell, fm = _acq(rng)
    net.set_init_matrix(linear_deconvolution(fm)[:46])  # 45 WM rows + one tissue: allowed
    with pytest.raises(ValueError, match="rows"):
        net.set_init_matrix(linear_deconvolution(fm)[:44])


def test_config_validation():
    with pytest.raises(ValueError, match="variant"):
        NetworkConfig(variant="csd")
    with pytest.raises(ValueError, match="halved"):
        NetworkConfig(nside=2, depth=3)
    with pytest.raises(ValueError, match="spatial_levels"):
        NetworkConfig(depth=1)
    assert NetworkConfig(depth=1, spatial_levels=0).patch_multiple == 1
    with pytest.raises(ValueError, match="too few"):
        NetworkConfig(nside=4, lmax=16)
    with pytest.raises(ValueError, match="head"):
        NetworkConfig(head="relu")
    with pytest.raises(ValueError, match="exceeds"):
        NetworkConfig(lmax=8, response_lmax=10, nside=4)


def test_named_scales_are_the_laptop_default_and_the_published_network():
    assert NetworkConfig.at_scale("laptop") == NetworkConfig()
    published = NetworkConfig.at_scale("published", variant="shd")
    assert (published.nside, published.depth, published.width, published.K) == (8, 4, 32, 5)
    assert published.variant == "shd" and NetworkConfig.at_scale("published", width=16).width == 16
    with pytest.raises(ValueError, match="scale"):
        NetworkConfig.at_scale("huge")


def test_configs_saved_before_the_softplus_head_load_as_linear():
    old = {"variant": "shd-tv", "nside": 4, "depth": 2, "width": 8, "K": 3, "lmax": 8, "inputs": "linear"}
    cfg = NetworkConfig.from_dict(old)
    assert cfg.head == "linear" and cfg.response_lmax == 8 and cfg.lmax == 8
    assert NetworkConfig.from_dict(NetworkConfig().to_dict()) == NetworkConfig()


def test_neighbourhood_coherence_tells_a_bundle_from_unrelated_neighbours(rng):
    from shdeconv.models import neighbourhood_coherence

    g = torch.as_tensor(rng.random((1, 40, 1, 1, 1))).expand(2, 40, 5, 4, 3).clone()
    torch.testing.assert_close(neighbourhood_coherence(g), torch.ones(2, 5, 4, 3, dtype=g.dtype))
    noise = torch.as_tensor(rng.normal(size=(1, 40, 10, 10, 10)))
    assert neighbourhood_coherence(noise).abs().mean() < 0.15
    # the same voxels flipped or with axes swapped give the same map, flipped or swapped
    c = neighbourhood_coherence(noise)
    torch.testing.assert_close(neighbourhood_coherence(noise.flip(3)), c.flip(2))
    torch.testing.assert_close(neighbourhood_coherence(noise.transpose(2, 4)), c.transpose(1, 3))
    # a constant fODF (no shape) agrees with nothing; a single voxel has no neighbours
    assert neighbourhood_coherence(torch.ones(1, 40, 3, 3, 3)).abs().max() == 0
    assert neighbourhood_coherence(noise[..., :1, :1, :1]).abs().max() == 0
    for weighted in (False, True):  # the weighted form keeps every symmetry and the null
        c = neighbourhood_coherence(noise, weighted=weighted)
        torch.testing.assert_close(neighbourhood_coherence(noise.flip(3), weighted=weighted), c.flip(2))
        torch.testing.assert_close(neighbourhood_coherence(noise.permute(0, 1, 3, 4, 2), weighted=weighted),
                                   c.permute(0, 2, 3, 1))
        assert c.abs().mean() < 0.15
    # a bundle's edge: a shaped fODF with a nearly isotropic, noisy neighbour on one side
    shape = torch.as_tensor(rng.random((1, 40, 1, 1, 1)))
    edge = shape.expand(1, 40, 3, 1, 1).clone()
    edge[:, :, 0] = 1.0 + 1e-3 * torch.as_tensor(rng.normal(size=(1, 40, 1, 1)))
    plain, weighted = neighbourhood_coherence(edge)[0, 1, 0, 0], neighbourhood_coherence(edge, weighted=True)[0, 1, 0, 0]
    assert plain < 0.75 and weighted > 0.99


def test_coherence_input_keeps_the_network_equivariant(rng):
    """The coherence channel is a rotation-invariant scalar: the network still commutes with a
    rotation of its input SH (90 degrees about z, which maps the grid to itself)."""
    cfg = NetworkConfig(depth=2, width=4, K=2, nside=4, lmax=10, response_lmax=8, inputs="linear", skip=True,
                        coherence=True)
    net = DeconvNet(cfg, n_iso=2).double().eval()
    torch.nn.init.normal_(net.unet.head.theta)
    lin = torch.randn(1, 47, 4, 4, 4, dtype=torch.float64)
    _assert_commutes_with_rotation(net, lin)
    seen = {}
    hook = net.unet.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    with torch.no_grad():
        net(linear=lin)
    hook.remove()
    from shdeconv.models import neighbourhood_coherence

    x = seen["x"]  # [B, 2, V, X, Y, Z]: the linear fODF on the grid and its coherence
    assert x.shape[1] == 2
    # measured on the orders up to coherence_lmax (2: the 6 first coefficients) only
    # and weighted by the neighbours' anisotropy
    low = torch.einsum("vs,bsxyz->bvxyz", net.to_grid[:, :6], lin[:, :6])
    torch.testing.assert_close(x[:, 1], neighbourhood_coherence(low, weighted=True)[:, None].expand_as(x[:, 1]))
    assert not torch.allclose(x[:, 1], neighbourhood_coherence(low)[:, None].expand_as(x[:, 1]))
    every_order = DeconvNet(replace(cfg, coherence_lmax=8, coherence_weighted=False), n_iso=2).double().eval()
    hook = every_order.unet.register_forward_pre_hook(lambda m, args: seen.update(x=args[0]))
    with torch.no_grad():
        every_order(linear=lin)
    hook.remove()
    x = seen["x"]
    torch.testing.assert_close(x[:, 1], neighbourhood_coherence(x[:, 0])[:, None].expand_as(x[:, 1]))
    assert NetworkConfig.from_dict(cfg.to_dict()) == cfg
    assert not NetworkConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "coherence"}).coherence
    # a model saved before coherence_lmax existed measured coherence over every order, alike
    older = {k: v for k, v in cfg.to_dict().items() if k not in ("coherence_lmax", "coherence_weighted")}
    assert NetworkConfig.from_dict(older).coherence_lmax == 8
    assert not NetworkConfig.from_dict(older).coherence_weighted
    with pytest.raises(ValueError, match="coherence_lmax"):
        replace(cfg, coherence_lmax=10)
    with pytest.raises(ValueError, match="coherence"):
        NetworkConfig(coherence=True)  # 'signal' inputs


def test_gated_network_starts_at_the_linear_solution_and_stays_equivariant(rng):
    """The gate blends a voxel-wise path into the spatial one by neighbourhood coherence (a
    rotation-invariant scalar): both heads start at zero, so the network returns the linear
    solution; with random heads it still commutes with a rotation of its input SH."""
    cfg = NetworkConfig(depth=2, width=4, K=2, inputs="linear", gate=True, **LINEAR_HEAD)
    net = DeconvNet(cfg, n_iso=2).double().eval()
    assert net.voxel_unet is not None and net.voxel_unet.kernel_size == 1
    # the gate is set, not learned, and saved with the weights (a learned one from an older file loads)
    assert all(p is not net.gate for p in net.parameters()) and "gate" in net.state_dict()
    torch.testing.assert_close(net.gate, torch.tensor(GATE, dtype=torch.float64))
    older = DeconvNet(cfg, n_iso=2).double()
    older.load_state_dict({**net.state_dict(), "gate": torch.tensor([5.0, 0.7], dtype=torch.float64)})
    torch.testing.assert_close(older.gate, torch.tensor([5.0, 0.7], dtype=torch.float64))
    lin = torch.randn(1, 47, 4, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(net(linear=lin)[0], lin[:, :45])
    for head in (net.unet.head, net.voxel_unet.head):
        torch.nn.init.normal_(head.theta)
    _assert_commutes_with_rotation(net, lin)
    with torch.no_grad():
        # the voxel-wise path decides where the neighbourhood is incoherent
        net.gate.copy_(torch.tensor([8.0, 10.0]))  # gate ~0 everywhere: the voxel-wise path alone
        alone = net(linear=lin)[0]
        shifted = lin.clone()
        shifted[..., 0, 0, 0] += 1.0
        torch.testing.assert_close(net(linear=shifted)[0][..., 2:, 2:, 2:], alone[..., 2:, 2:, 2:])
    with pytest.raises(ValueError, match="gate"):
        NetworkConfig(gate=True, inputs="linear", variant="esd")


def test_gate_keeps_isotropic_voxels_on_the_spatial_path_and_runs_the_voxel_path_only_where_it_counts(rng):
    """The voxel-wise share is scaled by the voxel's own order-2 anisotropy (a ramp over
    GATE_ANISOTROPY): a voxel without an orientation (grey matter) keeps the spatial output
    whatever its neighbours. Without gradients the voxel-wise path runs only where its share
    exceeds VOXEL_PATH_MIN, within that fraction of the dense blend. Files saved before the
    ramp existed gate by the coherence alone."""
    from shdeconv.models import grid_anisotropy
    from shdeconv.models._deconv import GATE_ANISOTROPY, VOXEL_PATH_MIN

    g = torch.as_tensor(rng.normal(size=(2, 40, 3, 3, 3)))
    torch.testing.assert_close(grid_anisotropy(torch.full((1, 40, 2, 2, 2), 3.0)), torch.zeros(1, 2, 2, 2))
    torch.testing.assert_close(grid_anisotropy(2.0 * g + 7.0), 2.0 * grid_anisotropy(g))
    torch.testing.assert_close(grid_anisotropy(g[:, torch.randperm(40)]), grid_anisotropy(g))

    cfg = NetworkConfig(depth=2, width=4, K=2, inputs="linear", gate=True, **LINEAR_HEAD)
    assert cfg.gate_anisotropy
    net = DeconvNet(cfg, n_iso=2).double().eval()
    torch.testing.assert_close(net.gate_anisotropy, torch.tensor(GATE_ANISOTROPY, dtype=torch.float64))
    assert "gate_anisotropy" in net.state_dict()
    for head in (net.unet.head, net.voxel_unet.head):
        torch.nn.init.normal_(head.theta)
    lin = torch.as_tensor(rng.normal(size=(1, 47, 4, 4, 4)))  # unrelated neighbours: an incoherent field
    lin[:, 1:6, :2] = 0.0  # the half x < 2 has no order-2 shape: isotropic for the gate
    with torch.no_grad():
        out = net(linear=lin)[0]
        net.gate.copy_(torch.tensor([8.0, -10.0]))  # the spatial path alone
        spatial = net(linear=lin)[0]
        net.gate.copy_(torch.tensor(GATE))
    torch.testing.assert_close(out[..., :2, :, :], spatial[..., :2, :, :], rtol=0, atol=0)
    assert (out[..., 2:, :, :] - spatial[..., 2:, :, :]).abs().amax() > 0.1
    with torch.enable_grad():  # the dense blend, every voxel through both paths
        dense = net(linear=lin)[0]
    torch.testing.assert_close(out, dense.detach(), rtol=0,
                               atol=VOXEL_PATH_MIN * float((dense.detach() - spatial).abs().max()))

    # predict's setting: the dense Chebyshev projector on both paths, the same outputs
    assert net.chebyshev == "sparse" and net.voxel_unet.chebyshev == "sparse"
    net.chebyshev = "dense"
    assert net.unet.chebyshev == net.voxel_unet.chebyshev == "dense"
    with torch.no_grad():
        torch.testing.assert_close(net(linear=lin)[0], out)
    net.chebyshev = "sparse"

    older = NetworkConfig.from_dict({k: v for k, v in cfg.to_dict().items() if k != "gate_anisotropy"})
    assert not older.gate_anisotropy
    plain = DeconvNet(older, n_iso=2).double().eval()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if k != "gate_anisotropy"})
    with torch.no_grad():
        assert (plain(linear=lin)[0][..., :2, :, :] - spatial[..., :2, :, :]).abs().amax() > 0.1


@pytest.mark.parametrize("chebyshev", ["dense", "sparse"])
def test_bfloat16_precision_rounds_the_paths_only_and_restores_float32_exactly(rng, chebyshev):
    """The gated network in bfloat16: float32 outputs within bfloat16's rounding of the float32
    ones, the paths' weights bfloat16 meanwhile, every parameter and buffer bit-exact after
    switching back, and no use with gradients (bfloat16 weights are not for training)."""
    cfg = NetworkConfig(inputs="linear", width=4, depth=2, K=3, gate=True, **LINEAR_HEAD)
    torch.manual_seed(0)
    net = DeconvNet(cfg, n_iso=2).eval()
    for p in net.parameters():  # a trained-like network: a non-zero head and batch-norm statistics
        torch.nn.init.normal_(p, std=0.3)
    net.chebyshev = chebyshev
    lin = torch.as_tensor(rng.normal(size=(1, 47, 4, 4, 4)), dtype=torch.float32)

    def state():
        return {k: (v.to_dense() if v.layout != torch.strided else v).clone()
                for k, v in [*net.named_parameters(), *net.named_buffers()] if v is not None}

    before = state()
    with torch.no_grad():
        ref = net(linear=lin)
        net.precision = "bfloat16"
        assert net.precision == "bfloat16" and net.unet.head.theta.dtype == torch.bfloat16
        assert net.voxel_unet.head.theta.dtype == torch.bfloat16 and net.to_sh.dtype == torch.float32
        low = net(linear=lin)
        with pytest.raises(RuntimeError, match="inference"), torch.enable_grad():
            net(linear=lin)
        net.precision = "float32"
        again = net(linear=lin)
    for r, x, y in zip(ref, low, again):
        assert x.dtype == torch.float32
        rel = float((x - r).norm() / r.norm())
        assert 1e-5 < rel < 0.03
        torch.testing.assert_close(y, r, rtol=0, atol=0)
    after = state()
    assert after.keys() == before.keys()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
    with pytest.raises(ValueError, match="precision"):
        net.precision = "float16"
