"""Multi-subject training of an amortized network (docs/method.md, section 6), on one device or many.

One network with ``"linear"`` inputs (the linear-deconvolution fODF on the grid, the same for every
acquisition) is trained on many subjects with the unsupervised loss of each subject's own forward
model, plus a supervised term where a ground truth exists. Every step, each process draws one
subject (a fresh shuffled round over the subjects, so subjects are balanced) and a batch of
patches from it. Several processes (``torchrun``) run PyTorch DistributedDataParallel: gloo on
CPU, nccl on GPU; gradients are averaged, so all ranks keep identical weights.

Outputs in ``outdir``: ``model.pt`` (weights + configs, loadable by ``shdeconv predict --model``),
``checkpoint.pt`` (every ``checkpoint_every`` steps; ``resume=True`` continues from it) and
``train_log.jsonl`` (one JSON object per logged step: loss parts, seconds, voxels per second).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .._options import ValidatedConfig, check_patch_size
from ..fitting._fit import optimisation_step
from ..fitting._subject import head_tissues
from ..io import InputError, check_fingerprint, checkpoint_step, fingerprint, refuse_earlier_outputs
from ..io._atomic import atomic_torch_save, atomic_write_text
from ..losses import DeconvLoss, LossWeights
from ..models._deconv import DeconvNet, NetworkConfig
from ..models._store import load_model, save_model
from ._data import load_training_subjects, source_key

__all__ = ["TRAIN_OUTPUT_FILES", "TrainConfig", "parameter_checksum", "train"]

log = logging.getLogger(__name__)

#: What ``train`` writes in its output directory (refused there unless resume or force).
TRAIN_OUTPUT_FILES = ("model.pt", "checkpoint.pt", "train_log.jsonl")


@dataclass(frozen=True)
class TrainConfig(ValidatedConfig):
    """Training settings, validated once."""

    iterations: int = 2000
    batch_size: int = 4
    patch_size: int = 8
    lr: float = 1.7e-3
    seed: int = 0
    checkpoint_every: int = 100
    log_every: int = 10
    grad_clip: float = 1.0
    amp: bool = False

    def __post_init__(self):
        self._positive("iterations", "batch_size", "patch_size", "lr", "checkpoint_every", "log_every")
        self._non_negative("grad_clip", "seed")


def parameter_checksum(module: torch.nn.Module, *, buffers: bool = True) -> str:
    """SHA-256 of every parameter (and persistent buffer), in state-dict order (bitwise identity)."""
    h = hashlib.sha256()
    names = set(module.state_dict()) if buffers else {k for k, _ in module.named_parameters()}
    for k, v in module.state_dict().items():
        if k not in names:
            continue
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _launched_by_torchrun() -> bool:
    """True inside a process that ``torchrun`` started (it sets these variables for every rank)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))


def _distributed_setup(device: str) -> tuple[int, int, torch.device, str | None]:
    """``(rank, world size, device, backend)``; the backend is ``None`` outside ``torchrun``.

    Under ``torchrun`` the process group is used even with one process, so that
    ``torchrun --nproc_per_node 1`` on a one-GPU machine runs the same nccl path as several GPUs.
    """
    from .._options import resolve_device

    dev = resolve_device(device)
    if not _launched_by_torchrun():
        return 0, 1, dev, None
    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if dev.type == "cuda":
        dev = torch.device(f"cuda:{local}")
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        cuda = dev.type == "cuda"
        dist.init_process_group("nccl" if cuda else "gloo", device_id=dev if cuda else None)
    return rank, dist.get_world_size(), dev, dist.get_backend()


def start_from(net: DeconvNet, path) -> dict:
    """Copy the weights of the model file ``path`` into ``net`` where names and shapes agree.

    Every tensor of the file must find its place in ``net`` (a file of another architecture is
    refused, naming it); ``net``'s other tensors keep their initial values. Returns a record:
    the file, its SHA-256, and how many tensors were copied and kept.
    """
    path = Path(path)
    source, _ = load_model(path)
    theirs, ours = source.state_dict(), net.state_dict()
    wrong = [k for k, v in theirs.items() if k not in ours or ours[k].shape != v.shape]
    if wrong:
        raise InputError(path, f"its weights do not fit this network ({len(wrong)} tensors differ, e.g. "
                               f"{wrong[0]!r}); start from a model of the same architecture")
    net.load_state_dict(theirs, strict=False)
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "copied": len(theirs), "kept": len(ours) - len(theirs)}


def train(subject_dirs, outdir, *, net_config: NetworkConfig | None = None, weights: LossWeights | None = None,
          config: TrainConfig = TrainConfig(), device: str = "auto", resume: bool = False, progress: bool = True,
          cache_dir=None, extra_meta: dict | None = None, force: bool = False, init=None,
          frozen: tuple[str, ...] = ()) -> dict:
    """Train one network on many subjects; returns a summary (also written in ``model.pt``).

    Parameters
    ----------
    subject_dirs : sequence of path-like
        Subject folders (see :mod:`shdeconv.training._data`); schemes and shells may differ.
    outdir : path-like
    net_config : NetworkConfig
        Forced to ``inputs="linear"`` and ``n_iso=2`` outputs (GM and CSF are used where a
        subject's responses have them).
    weights : LossWeights
        Loss weights; ``supervised > 0`` adds the ground-truth term for subjects that have one.
    cache_dir : path-like, optional
        Where the memory-mapped subject caches go (default ``outdir/cache``).
    init : path-like, optional
        A model file whose weights start the network (:func:`start_from`): e.g. a trained
        model's spatial path for a gated network, whose voxel-wise path starts fresh.
    frozen : sequence of str
        Submodules of the network (e.g. ``("unet",)``, the spatial path) whose weights and
        batch-norm statistics stay as ``init`` gave them; needs ``init``.
    resume, force
        An ``outdir`` holding a model, log or checkpoint is refused unless ``force`` (start over)
        or ``resume`` (continue its checkpoint, which must come from the same subjects, whose
        files are unchanged, and the same settings but the number of iterations).
    """
    from dataclasses import replace

    outdir = Path(outdir)
    refuse_earlier_outputs(outdir, TRAIN_OUTPUT_FILES, force=force, resume=resume)
    net_config = replace(net_config or NetworkConfig(), inputs="linear")
    patch = check_patch_size(config.patch_size, net_config.patch_multiple, "patch_size")
    rank, world, dev, backend = _distributed_setup(device)
    distributed = backend is not None
    if rank == 0:
        outdir.mkdir(parents=True, exist_ok=True)
    weights = weights or LossWeights()
    subject_dirs = [Path(p) for p in subject_dirs]
    if not subject_dirs:
        raise ValueError("no training subjects given")
    cache_dir = Path(cache_dir) if cache_dir is not None else outdir / "cache"
    # what the caches hold: inputs and forward model at the responses' order, targets at the
    # output's, and the isotropic tissue(s) the head fits on single-shell subjects
    cache_settings = {"lmax": net_config.response_lmax, "target_lmax": net_config.lmax,
                      "single_shell": head_tissues(net_config)}
    if rank == 0:
        subjects = load_training_subjects(subject_dirs, cache_dir, progress=progress, **cache_settings)
    if distributed:
        dist.barrier()
    if rank != 0:
        subjects = load_training_subjects(subject_dirs, cache_dir, **cache_settings)
    losses = [DeconvLoss(s.forward_model(), weights, lmax=net_config.lmax).to(dev) for s in subjects]
    sources = "".join(source_key(p, **cache_settings) for p in subject_dirs)
    torch.manual_seed(config.seed)  # identical initial weights on every rank
    net = DeconvNet(net_config, n_iso=2)
    started = start_from(net, init) if init is not None else None
    if frozen and started is None:
        raise ValueError("frozen submodules need init= (weights to keep)")
    frozen_modules = [net.get_submodule(name) for name in frozen]
    for m in frozen_modules:
        m.requires_grad_(False)
    net = net.to(dev)
    run_id = fingerprint([np.frombuffer(sources.encode(), np.uint8)],
                         {"subjects": [str(p.resolve()) for p in subject_dirs], "net_config": net_config.to_dict(),
                          "loss_weights": asdict(weights), "train_config": asdict(config), "world_size": world,
                          **({"init": started["sha256"]} if started else {}),
                          **({"frozen": list(frozen)} if frozen else {})})
    model = net
    # the persistent buffers are the batch-norm statistics; the others are geometry (graph
    # Laplacians, sparse, and projection matrices) built identically on every rank
    persistent = set(net.state_dict())
    synced_buffers = [b for k, b in net.named_buffers() if k in persistent]
    if distributed:
        DDP = torch.nn.parallel.DistributedDataParallel
        DDP._set_params_and_buffers_to_ignore_for_model(
            net, [k for k, _ in net.named_buffers() if k not in persistent])
        model = DDP(net)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=config.lr)
    rng = np.random.default_rng([config.seed, rank])
    log_path, ckpt_path = outdir / "train_log.jsonl", outdir / "checkpoint.pt"
    start, order = 0, []
    if resume and not ckpt_path.exists():
        log.warning("--resume: %s does not exist; training from the start", ckpt_path)
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=dev, weights_only=False)
        check_fingerprint(state.get("fingerprint"), run_id, ckpt_path)
        start = checkpoint_step(state["iteration"], config.iterations, ckpt_path)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"][rank]
        order = list(state["order"][rank])
        log.info("resumed from %s at step %d", ckpt_path, start)
    elif rank == 0:
        atomic_write_text(log_path, "")
    amp = config.amp and dev.type == "cuda"
    if config.amp and not amp:
        log.warning("mixed precision needs a CUDA device; training in float32")

    def save_checkpoint(iteration: int):
        rng_states = [rng.bit_generator.state]
        orders = [list(order)]
        if distributed:
            rng_states, orders = [None] * world, [None] * world
            dist.all_gather_object(rng_states, rng.bit_generator.state)
            dist.all_gather_object(orders, list(order))
        if rank == 0:
            atomic_torch_save({"model": net.state_dict(), "optimizer": opt.state_dict(), "rng": rng_states,
                               "order": orders, "iteration": iteration, "train_config": asdict(config),
                               "net_config": net_config.to_dict(), "fingerprint": run_id}, ckpt_path)

    model.train()
    for m in frozen_modules:
        m.eval()  # batch norm keeps the statistics it was trained with
    bar = tqdm(range(start, config.iterations), initial=start, total=config.iterations, desc="train",
               disable=not progress or rank != 0, dynamic_ncols=True)
    t_log, vox = time.perf_counter(), 0
    first_loss = last_loss = None
    for it in bar:
        if not order:
            order = list(rng.permutation(len(subjects)))
        k = int(order.pop())
        batch = {key: v.to(dev, non_blocking=True) for key, v in subjects[k].sample(config.batch_size, patch, rng).items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            wm, iso = model(linear=batch["linear"])
        loss, parts = losses[k](wm.float(), None if iso is None else iso.float(), batch["signal"], batch["mask"],
                                target=batch.get("target"))
        value = optimisation_step(loss, net.parameters(), opt, config.grad_clip, f"training step {it + 1}")
        first_loss = value if first_loss is None else first_loss
        last_loss = value
        vox += int(batch["mask"].sum())
        if (it + 1) % config.log_every == 0:
            t = time.perf_counter()
            record = {"iteration": it + 1, "rank": rank, "subject": subjects[k].name, "loss": value, **parts,
                      "voxels_per_s": vox * world / max(t - t_log, 1e-9), "seconds": t - t_log}
            t_log, vox = t, 0
            if rank == 0:
                with open(log_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{value:.4g}")
        if (it + 1) % config.checkpoint_every == 0:
            save_checkpoint(it + 1)
    bar.close()
    # DDP keeps parameters identical; batch-norm statistics are synchronised from rank 0 at
    # each forward, so do that once more for the last step's update
    param_checksums = [parameter_checksum(net, buffers=False)]
    if distributed:
        for b in synced_buffers:
            dist.broadcast(b, 0)
    save_checkpoint(config.iterations)
    checksums = [parameter_checksum(net)]
    if distributed:
        param_checksums, checksums = [None] * world, [None] * world
        dist.all_gather_object(param_checksums, parameter_checksum(net, buffers=False))
        dist.all_gather_object(checksums, parameter_checksum(net))
    summary = {"iterations": config.iterations, "world_size": world, "backend": backend, "device": str(dev),
               "subjects": [str(p) for p in subject_dirs], "train_config": asdict(config),
               "loss_weights": asdict(weights), "rank_checksums": checksums, "rank_parameter_checksums": param_checksums,
               "first_loss": first_loss, "last_loss": last_loss, **({"init": started} if started else {}),
               **({"frozen": list(frozen)} if frozen else {}),
               **(extra_meta or {})}
    if rank == 0:
        with open(log_path, "a") as f:
            f.write(json.dumps({"event": "end", **summary}) + "\n")
        save_model(outdir / "model.pt", net, summary)
    if distributed:
        dist.barrier()
    return summary
