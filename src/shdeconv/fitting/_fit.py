"""Per-subject unsupervised fitting of a network (docs/method.md, section 6).

The network is optimised on the subject's own data: patches are sampled inside the mask,
the unsupervised loss is computed inside the mask, and a checkpoint is written atomically
every ``checkpoint_every`` iterations so that an interrupted fit resumes where it stopped.
Its whole-volume prediction is :func:`shdeconv.inference.predict_volume`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .._options import OptionError, ValidatedConfig, check_patch_size
from ..inference import DEFAULT_TILE_OVERLAP
from ..io import InputError, check_fingerprint, checkpoint_step
from ..io._atomic import atomic_torch_save
from ..losses import DeconvLoss
from ..models._deconv import DeconvNet

__all__ = ["NETWORK_INITS", "FitConfig", "FitResult", "fit_network", "optimisation_step", "sample_patches"]

log = logging.getLogger(__name__)


#: How a per-subject network fit starts: from its random initialisation, or warm from the
#: ``direct`` fit's solution, used as the supervised target of every step.
NETWORK_INITS = ("random", "direct")


@dataclass(frozen=True)
class FitConfig(ValidatedConfig):
    """Optimisation settings, validated once."""

    iterations: int = 300
    batch_size: int = 4
    patch_size: int = 8
    lr: float = 1.7e-3
    seed: int = 0
    checkpoint_every: int = 50
    tile_overlap: float = DEFAULT_TILE_OVERLAP  # of the final whole-volume prediction
    grad_clip: float = 1.0
    init: str = "random"  # "direct": first fit --variant direct, whose WM SH the network then learns

    def __post_init__(self):
        self._non_negative("iterations", "grad_clip", "seed")
        self._positive("batch_size", "patch_size", "lr", "checkpoint_every")
        self._fraction("tile_overlap")
        self._choice("init", NETWORK_INITS)


@dataclass
class FitResult:
    """What a fit did: the loss curve (one dict per logged iteration) and timings."""

    history: list[dict] = field(default_factory=list)
    iterations_done: int = 0
    seconds: float = 0.0
    resumed_from: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def resume(self, state: dict, checkpoint, iterations: int) -> int:
        """Take the history of a checkpoint ``state``; returns the iteration to continue from
        (refused when it lies beyond ``iterations``)."""
        self.resumed_from = checkpoint_step(state["iteration"], iterations, checkpoint)
        self.history = list(state["history"])
        log.info("resumed from %s at iteration %d", checkpoint, self.resumed_from)
        return self.resumed_from


def read_checkpoint(checkpoint, device: torch.device, kind: str, fingerprint: dict | None) -> dict:
    """The state saved at ``checkpoint`` by a fit of ``kind`` (``"network"`` or ``"direct"``),
    refused (:class:`~shdeconv.io.InputError`) if it is another kind's or another run's."""
    state = torch.load(checkpoint, map_location=device, weights_only=False)
    if not isinstance(state, dict) or state.get("kind") != kind:
        raise InputError(checkpoint, f"not a checkpoint of a {kind} fit; remove it or drop --resume")
    if fingerprint is not None:
        check_fingerprint(state.get("fingerprint"), fingerprint, checkpoint)
    return state


def optimisation_step(loss: torch.Tensor, parameters, optimizer: torch.optim.Optimizer, grad_clip: float,
                      where: str) -> float:
    """One step of every network optimisation (per-subject fits and multi-subject training):
    gradients of ``loss``, their norm clipped to ``grad_clip`` (0: no clipping), the optimiser's
    step. Returns the loss; a non-finite one is a :class:`FloatingPointError` naming ``where``."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    optimizer.step()
    value = float(loss.detach())
    if not math.isfinite(value):
        raise FloatingPointError(f"the loss became {value} at {where}; try a lower --lr")
    return value


def _pad_to(volume: torch.Tensor, size: int, multiple: int) -> torch.Tensor:
    """Zero-pad the last three dims up to at least ``size`` and a multiple of ``multiple``."""
    pads = []
    for n in reversed(volume.shape[-3:]):
        target = max(n, size)
        target = int(math.ceil(target / multiple) * multiple)
        pads += [0, target - n]
    return torch.nn.functional.pad(volume, pads) if any(pads) else volume


def sample_patches(signal: torch.Tensor, mask: torch.Tensor, centres: torch.Tensor, patch: int):
    """Cut cubes of side ``patch`` around ``centres`` ``[B, 3]`` (clamped inside the volume).

    ``signal`` ``[G, X, Y, Z]``, ``mask`` ``[X, Y, Z]`` -> ``[B, G, p, p, p]``, ``[B, p, p, p]``.
    """
    shape = torch.tensor(signal.shape[1:], device=centres.device)
    starts = (centres - patch // 2).clamp(min=torch.zeros(3, dtype=torch.long, device=centres.device),
                                            max=shape - patch)
    sig, msk = [], []
    for s in starts.tolist():
        ix = (slice(s[0], s[0] + patch), slice(s[1], s[1] + patch), slice(s[2], s[2] + patch))
        sig.append(signal[(slice(None),) + ix])
        msk.append(mask[ix])
    return torch.stack(sig), torch.stack(msk)


def fit_network(
    net: DeconvNet,
    loss_fn: DeconvLoss,
    signal: np.ndarray,
    mask: np.ndarray,
    config: FitConfig,
    *,
    device: torch.device,
    checkpoint: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    teacher: torch.nn.Module | None = None,
    target: np.ndarray | None = None,
    fingerprint: dict | None = None,
) -> FitResult:
    """Optimise ``net`` on one subject. ``signal`` ``[X, Y, Z, G]``, ``mask`` ``[X, Y, Z]``.

    ``target`` ``[X, Y, Z, S]``: the supervised term's target on each sampled patch (weight
    ``loss_fn.weights.supervised``). ``config.init == "direct"`` makes it the ``direct`` fit's
    WM SH (:func:`~shdeconv.fitting.direct_solution`, computed first, its seconds counted in
    the result's): the network starts by learning that solution and the unsupervised loss
    refines it. Not with ``teacher``.

    ``teacher`` (fine-tuning a trained network): a frozen copy whose WM SH on each sampled
    patch is the ``target`` of the loss's supervised term (weight ``loss_fn.weights.supervised``),
    so the steps fit the subject without leaving the learned prior; the batch-norm layers of
    ``net`` then keep their trained statistics (eval mode) instead of a 4-patch batch's.

    ``fingerprint`` (:func:`~shdeconv.io.fingerprint` of the run) is stored in every checkpoint,
    and ``resume`` continues a checkpoint only if it holds the same one.
    """
    if sum(x is not None for x in (teacher, target)) + (config.init == "direct") > 1:
        raise ValueError("fit_network takes one supervised target: a teacher, a target volume or init 'direct'")
    warm_seconds = 0.0
    if config.init == "direct":  # recomputed on resume: deterministic, and seconds to minutes
        if loss_fn.weights.supervised <= 0:
            raise OptionError("init 'direct' needs a supervised loss weight above 0 (the warm start's target)")
        from ._direct import direct_solution  # noqa: PLC0415 (_direct builds on this module)

        log.info("warm start: direct fit on %d voxels", int(np.count_nonzero(mask)))
        t = time.perf_counter()
        target = direct_solution(loss_fn.forward_model, signal, mask, loss_fn.lmax, device=device, progress=progress)
        warm_seconds = time.perf_counter() - t
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    net.to(device).train()
    if teacher is not None:
        teacher.to(device).eval().requires_grad_(False)
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    loss_fn.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr)
    multiple = net.config.patch_multiple
    patch = check_patch_size(config.patch_size, multiple, "patch_size")
    sig = _pad_to(torch.from_numpy(np.ascontiguousarray(np.moveaxis(signal, -1, 0))), patch, multiple).to(device)
    msk = _pad_to(torch.from_numpy(mask.astype(np.bool_)), patch, multiple).to(device)
    tgt = None
    if target is not None:
        if target.shape[:3] != mask.shape:
            raise ValueError(f"target shape {target.shape} does not match the mask's {mask.shape}")
        tgt = _pad_to(torch.from_numpy(np.ascontiguousarray(np.moveaxis(target, -1, 0), np.float32)),
                      patch, multiple).to(device)
    coords = torch.nonzero(msk)
    if len(coords) == 0:
        raise ValueError("the mask is empty: nothing to fit")
    result = FitResult()
    start = 0
    if resume and checkpoint is not None and Path(checkpoint).exists():
        state = read_checkpoint(checkpoint, device, "network", fingerprint)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        start = result.resume(state, checkpoint, config.iterations)
    t0 = time.perf_counter()
    bar = tqdm(range(start, config.iterations), initial=start, total=config.iterations, desc="fit",
               disable=not progress, dynamic_ncols=True)

    def save(iteration: int):
        if checkpoint is None:
            return
        atomic_torch_save(
            {"kind": "network", "model": net.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
             "history": result.history, "iteration": iteration, "fit_config": asdict(config),
             "net_config": net.config.to_dict(), "fingerprint": fingerprint},
            checkpoint,
        )

    for it in bar:
        idx = torch.randint(len(coords), (config.batch_size,), generator=gen)
        centres = coords[idx.to(device)]
        x, m = sample_patches(sig, msk, centres, patch)
        wm, iso = net(x)
        patch_target = None
        if teacher is not None:
            with torch.no_grad():
                patch_target = teacher(x)[0]
        elif tgt is not None:
            patch_target = sample_patches(tgt, msk, centres, patch)[0]
        loss, parts = loss_fn(wm, iso, x, m, patch_target)
        value = optimisation_step(loss, net.parameters(), opt, config.grad_clip, f"iteration {it + 1}")
        result.history.append({"iteration": it + 1, "loss": value, **parts})
        bar.set_postfix(loss=f"{value:.4g}", recon=f"{parts['reconstruction']:.3g}")
        if config.checkpoint_every and (it + 1) % config.checkpoint_every == 0:
            save(it + 1)
    bar.close()
    result.iterations_done = config.iterations
    result.seconds = time.perf_counter() - t0 + warm_seconds
    save(config.iterations)
    return result
