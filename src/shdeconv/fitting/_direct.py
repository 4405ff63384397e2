r"""``fit --variant direct``: the unsupervised objective minimised over free per-voxel values.

No network: each voxel in the mask owns ``V`` grid values :math:`u_x` (the nside-8 hemisphere)
and ``T`` isotropic logits :math:`v_x`; its fODF is :math:`c_x = P\, \mathrm{softplus}(u_x)`
(``P`` the grid's SH pseudo-inverse up to ``lmax``, non-negative at every grid point) and its
isotropic fractions :math:`\mathrm{softplus}(v_x)`. The loss is :class:`~shdeconv.losses.DeconvLoss`
(reconstruction, dense non-negativity, Cauchy sparsity, TV on the fODF's shape), minimised by
full-batch Adam over the whole mask. From the linear start it is the objective's own ceiling,
without a network's spatial prior, and the bar the network variants are compared with. ``fit``
starts it from the shipped model's prediction on single-shell data at b ~1000 (``init="auto"``,
:func:`start_for`): a start nearer a lower minimum of the same objective, which it then refines
voxel by voxel.

The volume is cut into blocks (a one-voxel halo on every side for the TV pairs): every
iteration adds the exact per-term sums of all blocks before the step, so the result does not
depend on the block size. On a CPU the blocks are small (:data:`CPU_BLOCK_VOXELS`), so that
each block's arrays are reused from the allocator's free memory from block to block and step to
step instead of being mapped and faulted in afresh: that was a third of a whole-brain step.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .._options import OptionError, ValidatedConfig, check_even_order
from ..io import B0_THRESHOLD, InputError
from ..io._atomic import atomic_torch_save
from ..losses import TV_WEIGHT, DeconvLoss, LossWeights
from ..models._deconv import softplus_inverse
from ..nn._chebyshev import n_pixels
from ..signal._forward import ForwardModel, linear_deconvolution
from ..signal._grid import grid_directions, grid_to_sh_matrix
from ..sphere import lmax_from_ncoeffs, n_coeffs, sh_matrix
from ._allocator import reused_heap
from ._fit import FitResult, read_checkpoint

__all__ = ["DirectConfig", "fit_direct", "linear_start"]

log = logging.getLogger(__name__)

#: Share of the b=0 signal the isotropic tissues start with (the WM start takes the rest).
ISO_START = 0.1
INITS = ("auto", "predict", "linear", "csd")
#: ``init="auto"`` starts from ``predict``'s answer only on one shell at most this b (s/mm^2): the
#: predict start won at b=1000 (15 and 30 directions) and lost at b=2000 and 3000 (60 and 64
#: directions; held-out phantoms, docs/benchmarks.md); 1500 lies between, where nothing was measured
PREDICT_START_MAX_B = 1500.0


@dataclass(frozen=True)
class DirectConfig(ValidatedConfig):
    """Settings of the direct minimiser, validated once."""

    iterations: int = 300
    lr: float = 1.0
    nside: int = 8
    lmax: int = 16
    checkpoint_every: int = 50
    chunk_voxels: int | None = None  # voxels per block; None: CPU_BLOCK_VOXELS on a CPU, GPU_BLOCK_VOXELS on a GPU
    init: str = "auto"  # the start: "predict", "linear" or "csd" (DIPY CSD); "auto": see start_for
    schedule: str = "constant"  # learning rate: "constant" or "cosine" (from lr down to 0)

    def __post_init__(self):
        self._choice("init", INITS)
        self._choice("schedule", ("cosine", "constant"))
        self._non_negative("iterations")
        self._positive("lr", "checkpoint_every")
        if self.chunk_voxels is not None:
            self._positive("chunk_voxels")
        check_even_order(self.lmax)
        if n_pixels(self.nside, True) < n_coeffs(self.lmax):
            raise OptionError(f"nside {self.nside} has too few hemisphere pixels for lmax {self.lmax}")


def start_for(init: str, shells) -> str:
    """The start ``init`` stands for on an acquisition with these ``shells`` (b-values, e.g.
    :attr:`~shdeconv.signal.Responses.bvals`; b=0 may be among them).

    ``"auto"`` is ``"predict"`` (the shipped model's answer) on single-shell data at b up to
    :data:`PREDICT_START_MAX_B` (clinical b=1000 scans, where that answer is strong) and
    ``"linear"`` (the linear deconvolution) otherwise: several shells or a high b. Measured on
    held-out phantoms, each is the start from which the same steps end best on its kind of
    data. Other values are returned as given.
    """
    if init != "auto":
        return init
    b = np.asarray(shells, dtype=float)
    b = b[b > B0_THRESHOLD]
    return "predict" if b.size == 1 and b[0] <= PREDICT_START_MAX_B else "linear"


def _start(start_sh: np.ndarray, grid_sh: np.ndarray, n_iso: int):
    """Start values from a WM fODF ``[N, R]`` on the grid: made positive and scaled to leave
    :data:`ISO_START` of the signal to the isotropic tissues, which share it evenly."""
    f = start_sh @ grid_sh.T  # [N, V]
    floor = 0.05 * np.abs(f).mean(1, keepdims=True) + 1e-6
    scale = 1.0 - ISO_START if n_iso else 1.0
    u = softplus_inverse(torch.as_tensor(np.maximum(f * scale, floor), dtype=torch.float32))
    v = softplus_inverse(torch.full((len(f), n_iso), ISO_START / max(n_iso, 1)))
    return u, v


#: Core voxels per block of a ``direct`` fit on a CPU: a block's largest arrays (its grid values,
#: up to ``(b + 2)^3 x 384`` floats with the halo) stay near 24 MiB, under the 32 MiB below which
#: :func:`~shdeconv.fitting._allocator.reused_heap` serves them from reused memory; larger blocks
#: were mapped afresh at every step (benchmarks/results/direct_speed_cpu.md).
CPU_BLOCK_VOXELS = 1 << 14
#: On a GPU, where the caching allocator reuses memory and each block costs kernel launches.
GPU_BLOCK_VOXELS = 1 << 18


def _blocks(shape: tuple[int, int, int], chunk_voxels: int) -> list[tuple[tuple[int, int], ...]]:
    """Core ranges ``((x0, x1), (y0, y1), (z0, z1))`` of blocks of about ``chunk_voxels`` voxels
    tiling a box of ``shape``: near-cubes (an axis shorter than the cube's side is not cut)."""
    side = [int(n) for n in shape]
    while math.prod(side) > chunk_voxels and max(side) > 1:
        a = int(np.argmax(side))
        side[a] = (side[a] + 1) // 2
    ranges = [[(a, min(n, a + step)) for a in range(0, n, step)] for n, step in zip(shape, side)]
    return [(rx, ry, rz) for rx in ranges[0] for ry in ranges[1] for rz in ranges[2]]


def linear_start(forward_model: ForwardModel, signal: np.ndarray) -> np.ndarray:
    """The default start of :func:`fit_direct`: the linear deconvolution's WM SH ``[..., R]`` of
    ``signal`` ``[..., G]`` (regularised least squares, float32)."""
    return signal @ linear_deconvolution(forward_model, wm_only=True).T.astype(np.float32)


def direct_solution(forward_model: ForwardModel, signal: np.ndarray, mask: np.ndarray, lmax: int, *,
                    device: torch.device, progress: bool = False) -> np.ndarray:
    """WM SH ``[X, Y, Z, S]`` of ``fit --variant direct`` with the published loss weights (TV
    :data:`~shdeconv.losses.TV_WEIGHT`) and :class:`DirectConfig` at ``lmax``, started from the
    linear deconvolution (no trained model), in the signal's frame: the warm start of a network fit."""
    loss_fn = DeconvLoss(forward_model, LossWeights(tv=TV_WEIGHT), lmax=lmax)
    wm, _, _ = fit_direct(loss_fn, signal, mask, DirectConfig(lmax=lmax, init="linear"),
                          start_sh=linear_start(forward_model, signal),
                          device=device, progress=progress)
    return wm


def fit_direct(loss_fn: DeconvLoss, signal: np.ndarray, mask: np.ndarray, config: DirectConfig, *,
               start_sh: np.ndarray, device: torch.device, checkpoint: Path | None = None,
               resume: bool = False, progress: bool = True, fingerprint: dict | None = None):
    """Minimise ``loss_fn`` over free per-voxel values.

    ``signal`` ``[X, Y, Z, G]`` (normalised), ``mask`` ``[X, Y, Z]``, ``start_sh``
    ``[X, Y, Z, R]`` the WM fODF to start from (any even order; in the signal's frame, units
    of S0), e.g. :func:`linear_start`. ``fingerprint``: as in
    :func:`~shdeconv.fitting.fit_network` (stored in checkpoints, checked on ``resume``). Returns
    ``(wm_sh [X, Y, Z, S], iso [X, Y, Z, T] or None, FitResult)``, zero outside the mask.
    """
    mask = np.asarray(mask, bool)
    if not mask.any():
        raise ValueError("the mask is empty: nothing to fit")
    if loss_fn.lmax != config.lmax:
        raise ValueError(f"the loss is built for lmax {loss_fn.lmax}, the direct fit for {config.lmax}")
    n_iso = loss_fn.forward_model.n_iso
    grid = grid_directions(config.nside, True)
    to_sh = torch.as_tensor(np.array(grid_to_sh_matrix(config.nside, True, config.lmax)), dtype=torch.float32,
                            device=device)
    start_sh = np.asarray(start_sh)
    if start_sh.shape[:3] != mask.shape:
        raise ValueError(f"start_sh {start_sh.shape} does not match the mask {mask.shape}")
    u0, v0 = _start(start_sh[mask].astype(np.float64), sh_matrix(grid, lmax_from_ncoeffs(start_sh.shape[-1])), n_iso)
    u = u0.to(device).requires_grad_(True)
    v = v0.to(device).requires_grad_(True)
    params = [u, v] if n_iso else [u]
    for p in params:
        p.grad = torch.zeros_like(p)
    # fused: one pass over each parameter, without the parameter-sized temporaries of the default step
    opt = torch.optim.Adam(params, lr=config.lr, fused=True)
    loss_fn.to(device)

    nzi = np.argwhere(mask)
    lo, hi = nzi.min(0), nzi.max(0) + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    mbox = mask[box]
    rows = np.full(mbox.shape, -1, np.int64)
    rows[mbox] = np.arange(int(mbox.sum()))
    sig = torch.from_numpy(np.ascontiguousarray(np.moveaxis(signal[box], -1, 0))).float()
    chunk = config.chunk_voxels or (GPU_BLOCK_VOXELS if torch.device(device).type == "cuda" else CPU_BLOCK_VOXELS)
    blocks = []
    for core_range in _blocks(mbox.shape, chunk):
        halo = tuple(slice(max(0, a - 1), min(n, b + 1)) for (a, b), n in zip(core_range, mbox.shape))
        m = torch.from_numpy(mbox[halo])
        if not m.any():
            continue
        core = torch.zeros_like(m)
        core[tuple(slice(a - h.start, b - h.start) for (a, b), h in zip(core_range, halo))] = True
        idx = torch.from_numpy(rows[halo][mbox[halo]])  # the block's rows of u and v, in C order
        blocks.append((sig[(slice(None),) + halo].unsqueeze(0).to(device), m.unsqueeze(0).to(device),
                      core.unsqueeze(0).to(device), m.to(device), idx.to(device)))

    def fields(m3, us, vs):
        """The block's WM SH and isotropic fractions ``[1, S or T, x, y, z]`` from its rows ``us``, ``vs``."""
        shape = tuple(m3.shape)
        # SH of the mask's voxels only, then placed in the block (the box around a brain is about
        # half background: a grid array over the whole box doubled the largest temporaries)
        wm = torch.zeros(shape + (to_sh.shape[0],), device=device)
        wm[m3] = F.softplus(us) @ to_sh.T
        wm = wm.movedim(-1, 0).unsqueeze(0)
        iso = None
        if n_iso:
            iso = torch.zeros(shape + (n_iso,), device=device)
            iso[m3] = F.softplus(vs)
            iso = iso.movedim(-1, 0).unsqueeze(0)
        return wm, iso

    with torch.no_grad():  # the counts of every term, for exact normalisation over blocks
        counts: dict[str, torch.Tensor] = {}
        for s, m, core, m3, idx in blocks:
            wm, iso = fields(m3, u[idx], v[idx])
            for k, (_, n) in loss_fn.sums(wm, iso, s, m, core=core).items():
                counts[k] = counts.get(k, 0.0) + n
    result = FitResult()
    start = 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        state = read_checkpoint(checkpoint, device, "direct", fingerprint)
        if tuple(state["u"].shape) != tuple(u.shape):
            raise InputError(checkpoint, f"holds {tuple(state['u'].shape)} values, this fit has {tuple(u.shape)}")
        with torch.no_grad():
            u.copy_(state["u"])
            v.copy_(state["v"])
        opt.load_state_dict(state["optimizer"])
        start = result.resume(state, checkpoint, config.iterations)

    def save(iteration: int):
        if checkpoint is not None:
            atomic_torch_save({"kind": "direct", "u": u.detach(), "v": v.detach(), "optimizer": opt.state_dict(),
                               "history": result.history, "iteration": iteration, "config": asdict(config),
                               "fingerprint": fingerprint},
                              checkpoint)

    weights = loss_fn.weights
    t0 = time.perf_counter()
    bar = tqdm(range(start, config.iterations), initial=start, total=config.iterations, desc="direct",
               disable=not progress, dynamic_ncols=True)
    with reused_heap(torch.device(device).type == "cpu"):
        for it in bar:
            if config.schedule == "cosine":  # a function of the iteration alone, so a resumed fit continues it
                for group in opt.param_groups:
                    group["lr"] = 0.5 * config.lr * (1.0 + math.cos(math.pi * it / max(1, config.iterations)))
            parts = {k: 0.0 for k in counts}
            for p in params:
                p.grad.zero_()
            for s, m, core, m3, idx in blocks:
                # each block differentiates with respect to its own rows, added into the kept gradients:
                # differentiating u[idx] itself would zero-fill a gradient the size of all of u per block
                us, vs = (p.detach()[idx].requires_grad_(True) for p in (u, v))
                wm, iso = fields(m3, us, vs)
                sums = loss_fn.sums(wm, iso, s, m, core=core)
                loss = sum(getattr(weights, k) * sm / counts[k].clamp_min(1.0) for k, (sm, _) in sums.items())
                loss.backward()
                u.grad.index_add_(0, idx, us.grad)
                if n_iso:
                    v.grad.index_add_(0, idx, vs.grad)
                for k, (sm, _) in sums.items():
                    parts[k] += float(sm.detach() / counts[k].clamp_min(1.0))
            value = sum(getattr(weights, k) * p for k, p in parts.items())
            if not math.isfinite(value):
                raise FloatingPointError(f"the loss became {value} at iteration {it}; try a lower --lr")
            opt.step()
            result.history.append({"iteration": it + 1, "loss": value, **parts})
            bar.set_postfix(loss=f"{value:.4g}", recon=f"{parts['reconstruction']:.3g}")
            if (it + 1) % config.checkpoint_every == 0:
                save(it + 1)
    bar.close()

    result.iterations_done = config.iterations
    result.seconds = time.perf_counter() - t0
    save(config.iterations)

    with torch.no_grad():
        wm_out = np.zeros(mask.shape + (to_sh.shape[0],), np.float32)
        wm_out[mask] = (F.softplus(u) @ to_sh.T).cpu().numpy()
        iso_out = None
        if n_iso:
            iso_out = np.zeros(mask.shape + (n_iso,), np.float32)
            iso_out[mask] = F.softplus(v).cpu().numpy()
    return wm_out, iso_out, result
