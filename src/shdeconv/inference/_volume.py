"""Whole-volume prediction with a trained network: tiles, batch sizing and CPU tile workers.

``predict_volume`` runs a :class:`~shdeconv.models.DeconvNet` fully convolutionally over the
mask's bounding box on overlapping, blended tiles of its training patch size
(:class:`~shdeconv.inference.SlidingWindowInferer`); ``auto_batch`` sizes the tiles per pass
from free memory and, on a CPU, the cache; ``tile_workers`` and ``threads_per_worker`` share
the CPU's threads among tile workers.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._options import check_patch_size, check_precision
from ..io import mask_box
from ..models._deconv import PRECISION_DTYPES, DeconvNet
from ._sliding_window import SlidingWindowInferer

__all__ = [
    "BYTES_PER_CHANNEL_PIXEL",
    "DEFAULT_TILE_OVERLAP",
    "MAX_TILE_WORKERS",
    "auto_batch",
    "channels_first",
    "native_bfloat16",
    "predict_volume",
    "threads_per_worker",
    "tile_workers",
]

#: Peak inference memory per voxel of a tile, per top-level channel and sphere pixel (bytes).
#: Measured on CPU (float32, eval, peak RSS of one 16^3 and one 32^3 tile: ~100 kB per voxel at
#: width 8 and 96 hemisphere pixels); ``auto_batch`` sizes batches of tiles with it.
BYTES_PER_CHANNEL_PIXEL = 135


#: Overlap of the 8^3 inference tiles (``predict`` and ``fit``'s final prediction): every voxel
#: at least one voxel from the border of the tile that predicts it; 0.125 is faster and loses
#: 3-fibre success, 0.5 adds nothing measurable for 1.5x the tiles (benchmarks/tile_overlap.py)
DEFAULT_TILE_OVERLAP = 0.25


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively: a CUDA GPU that supports it, or a
    CPU with bfloat16 instructions (AVX512-BF16, AMX) that oneDNN uses. Elsewhere bfloat16 is
    emulated and slower than float32."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # not exposed by this build
        return False


def _available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not available on this OS
        return 8 << 30


def _last_level_cache_bytes(default: int = 16 << 20) -> int:
    """Size of the CPU's largest cache (Linux sysfs), or ``default`` where it cannot be read."""
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = f.read_text().strip().upper()
        try:
            mult = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
            sizes.append(int(text.rstrip("KM")) * mult)
        except (ValueError, OSError):
            continue
    return max(sizes) if sizes else default


#: At most this many tile workers: each pass issues a few hundred small operations from
#: Python, so more workers queue on the interpreter lock (README, "Whole-brain speed").
MAX_TILE_WORKERS = 4


def tile_workers(device: torch.device, threads: int | None = None) -> int:
    """Tile worker threads for ``predict`` on ``device``: 1 on a GPU; on a CPU the largest divisor of
    torch's intra-op threads (``threads``, default ``torch.get_num_threads()``) up to
    :data:`MAX_TILE_WORKERS`, each worker then using ``threads // workers`` of them.

    These layers are bound by memory traffic and by many small operations, so whole tiles in
    parallel scale better than every operation split over all cores; but each pass also holds
    Python's interpreter lock for its few hundred operation calls, so many single-threaded
    workers queue on it (README, "Whole-brain speed").
    """
    if device.type == "cuda":
        return 1
    n = max(1, torch.get_num_threads() if threads is None else int(threads))
    return max(w for w in range(1, min(n, MAX_TILE_WORKERS) + 1) if n % w == 0)


@contextmanager
def threads_per_worker(workers: int, device: torch.device):
    """For the block, divide torch's intra-op threads among ``workers`` tile workers on a CPU
    (``threads // workers`` each; see :func:`tile_workers`); restored afterwards."""
    threads = torch.get_num_threads()
    if workers > 1 and device.type != "cuda":
        torch.set_num_threads(max(1, threads // workers))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def auto_batch(net: DeconvNet, device: torch.device, tile: int, *, budget_bytes: int | None = None,
               hi: int = 64, cache_bytes: int | None = None, workers: int | None = None,
               precision: str = "float32") -> int:
    """How many ``tile``-sided tiles to push through ``net`` at once (per worker).

    The tile side itself stays that of training (a network trained on 8^3 patches predicts
    best on 8^3 tiles: measured in the README), so only the batch adapts.

    * Memory: at most ``budget_bytes`` of activations over all ``workers`` (default
      :func:`tile_workers`); the default budget is 40% of the free memory of ``device`` (GPU)
      or of the machine (CPU), capped at 3 GiB on CPU, so a 16 GiB card or 8 GiB of RAM
      suffices.
    * CPU cache: on CPU the layers are bound by memory traffic, not arithmetic, so the batch
      is also kept small enough that every worker's largest intermediate (the ``4 x width``
      distance-class outputs of a top-level convolution, in ``precision``) fits in half the
      last-level cache (``cache_bytes``, read from sysfs) together. Measured on a 2-core EPYC
      (``benchmarks/predict_batch.py``, two runs): 64 tiles per pass ran at about half the
      throughput of the best small batch (1 to 4 tiles). In bfloat16 the outputs take half
      the bytes, so twice the tiles fit (``benchmarks/precision.py --volume``: faster than one
      tile per pass).
    """
    from ..nn._chebyshev import n_pixels

    c = net.config
    workers = tile_workers(device) if workers is None else int(workers)
    pixels = n_pixels(c.nside, c.hemisphere) * tile ** 3
    if budget_bytes is None:
        budget_bytes = int(0.4 * _available_bytes(device))
        if device.type != "cuda":
            budget_bytes = min(budget_bytes, 3 << 30)
    n = budget_bytes // (workers * BYTES_PER_CHANNEL_PIXEL * c.width * pixels)
    if device.type != "cuda":
        cache = cache_bytes if cache_bytes is not None else _last_level_cache_bytes()
        itemsize = PRECISION_DTYPES[precision].itemsize
        n = min(n, (cache // 2) // (workers * 4 * itemsize * c.width * pixels))
    return int(max(1, min(hi, n)))


def channels_first(signal: np.ndarray, matrix: torch.Tensor | None = None, box: tuple | None = None) -> torch.Tensor:
    """``signal`` ``[X, Y, Z, G]`` -> ``[G, X, Y, Z]`` float32, or ``matrix @ s`` per voxel, ``[P, X, Y, Z]``.

    ``matrix`` is ``(P, G)``; ``box`` (three slices) restricts the result to that sub-volume.
    No copy of a Fortran-ordered signal (as nibabel loads it); the result may be a
    non-contiguous view. There ``matrix @ s`` is computed one z-slice of the box at a time,
    into a ``[P, z, y, x]``-ordered result: no temporary larger than a slice, and nothing
    computed outside the box. Other layouts copy the box's rows for one GEMM.
    """
    t = torch.from_numpy(np.asarray(signal, dtype=np.float32))
    box = tuple(box) if box is not None else (slice(None),) * 3
    if matrix is None:
        return t.permute(3, 0, 1, 2)[(slice(None),) + box]
    g = t.shape[-1]
    sub = t[box]
    if t.permute(3, 2, 1, 0).is_contiguous():  # Fortran order: each [G, y, x] slice is (nearly) a view
        nx, ny, nz = sub.shape[:3]
        out = torch.empty((matrix.shape[0], nz, ny, nx), dtype=torch.float32)
        for k in range(nz):
            out[:, k] = (matrix @ sub[:, :, k].permute(2, 1, 0).reshape(g, -1)).view(-1, ny, nx)
        return out.permute(0, 3, 2, 1)
    out = sub.reshape(-1, g) @ matrix.T  # [N, P] (copies unless C-ordered and the box is everything)
    return out.view(tuple(sub.shape[:3]) + (-1,)).permute(3, 0, 1, 2)


@dataclass(frozen=True)
class VolumeInput:
    """What a network reads of a volume: ``x`` ``[C, bx, by, bz]`` over the mask's bounding
    ``box`` (three slices); ``linear``: ``x`` is the linear deconvolution ``D s`` (``"linear"``
    inputs), else the signal."""

    x: torch.Tensor
    box: tuple
    linear: bool


@torch.no_grad()
def volume_input(net: DeconvNet, signal: np.ndarray, mask: np.ndarray, *,
                 voxels: np.ndarray | None = None) -> VolumeInput | None:
    """The network's input for :func:`predict_volume`, None when ``mask`` is empty.

    A 'linear'-input network only ever sees ``D s`` (S + T coefficients per voxel), which is
    linear in the signal: it is computed once per voxel (a GEMM per z-slice of the box) and
    tiled, rather than tiling the G-channel signal and recomputing ``D s`` for every tile that
    covers a voxel (about twice per voxel at 25% overlap; G = 276 > S + T = 47 on an HCP-like
    scheme). The result does not refer to ``signal``, so a caller may free it before
    predicting (HCP-sized: 3.9 GiB of signal against 0.5 GiB of input).

    ``voxels`` ``(X, Y, Z)`` bool: ``signal`` ``(N, 1, 1, G)`` and ``mask`` ``(N, 1, 1)`` hold
    only those voxels of an image, in C order (``load_subject(..., voxels_only=True)``); the
    input is then laid out on the image's grid, where ``voxels`` and ``mask`` hold (the mask
    :func:`predict_volume` is then given is ``uncrop(mask)``). 'Linear'-input networks only.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return None
    linear = net.config.inputs == "linear" and net.init_matrix is not None
    matrix = net.init_matrix.detach().to("cpu", torch.float32) if linear else None
    if voxels is not None:
        if not linear:
            raise ValueError("only a 'linear'-input network reads its input voxel by voxel")
        rows = mask.reshape(-1)
        inside = np.zeros(voxels.shape, dtype=bool)
        inside[voxels] = rows
        box = mask_box(inside)
        d = channels_first(signal, matrix)[:, torch.from_numpy(rows), 0, 0]  # [P, voxels in the mask]
        x = torch.zeros((d.shape[0],) + tuple(b.stop - b.start for b in box), dtype=torch.float32)
        x[:, torch.from_numpy(inside[box])] = d
        return VolumeInput(x, box, True)
    box = mask_box(mask)
    if linear:  # a z-major layout, read tile by tile as it is (no second copy)
        x = channels_first(signal, matrix, box)
    else:
        x = channels_first(signal, box=box).contiguous()
    return VolumeInput(x, box, linear)


@torch.no_grad()
def predict_volume(net: DeconvNet, signal: np.ndarray | VolumeInput | None, mask: np.ndarray, *, tile: int,
                   overlap: float, device: torch.device, progress: bool = False, sw_batch_size: int = 2,
                   workers: int | None = None, precision: str = "float32"):
    """Whole-volume prediction. Returns ``wm_sh [X, Y, Z, S]`` and ``iso [X, Y, Z, T]`` (or None).

    ``signal`` ``[X, Y, Z, G]``, or its :func:`volume_input` for ``net`` and ``mask`` (None for
    an empty mask); ``tile`` a multiple of ``net.config.patch_multiple`` (else an
    ``OptionError``). Only the bounding box of ``mask`` is processed, and tiles without a mask
    voxel are skipped; outside ``mask`` the outputs are zero. ``workers`` (default
    :func:`tile_workers`) batches of ``sw_batch_size`` tiles run at once in threads; on a CPU
    with more than one worker torch's intra-op threads are divided among them meanwhile (and
    restored). ``precision``: the format the network's paths compute in for this call
    (:attr:`~shdeconv.models.DeconvNet.precision`; ``"bfloat16"`` is faster where the device
    has bfloat16 matrix products, :func:`native_bfloat16`), restored afterwards.
    """
    check_patch_size(tile, net.config.patch_multiple, "tile")
    check_precision(precision)  # before any setting of net changes
    net.to(device).eval()
    mask = np.asarray(mask, dtype=bool)
    s = net.n_coeffs
    inputs = signal if signal is None or isinstance(signal, VolumeInput) else volume_input(net, signal, mask)
    del signal
    if inputs is None:
        return np.zeros(mask.shape + (s,), np.float32), None
    x, box, linear_input = inputs.x, inputs.box, inputs.linear
    del inputs

    def predictor(tiles):
        wm, iso = net(linear=tiles) if linear_input else net(tiles)
        return wm if iso is None else torch.cat([wm, iso], 1)

    # redundant edge tiles pruned: 22% fewer tiles on the whole-brain mask at 25% overlap, whose
    # scores moved by at most 0.0002 (README, "Whole-brain speed")
    inferer = SlidingWindowInferer(tile, overlap=overlap, sw_batch_size=sw_batch_size, sw_device=device,
                                   device="cpu", prune=True,
                                   workers=tile_workers(device) if workers is None else workers)
    # without gradients the dense Chebyshev projector (one GEMM) beats the sparse recursion at
    # every batch size measured on CPU (benchmarks/predict_batch.py); training keeps its setting
    # (both paths of a gated model: 1.15x on a tile whose every voxel takes the voxel-wise path)
    previous = [(u, u.chebyshev) for u in net.paths]
    previous_precision = net.precision
    net.chebyshev = "dense"
    net.precision = precision
    try:
        with threads_per_worker(inferer.workers, device):
            inner = inferer(x, predictor, progress=progress, roi_mask=torch.from_numpy(mask[box])).numpy()
    finally:
        for u, mode in previous:
            u.chebyshev = mode
        net.precision = previous_precision
    del x  # the tiled input: not needed to place the result (HCP-sized: 0.6 GB)
    out = np.zeros(mask.shape + (inner.shape[0],), np.float32)
    out[box] = np.moveaxis(inner, 0, -1)
    out *= mask[..., None]
    return out[..., :s], (out[..., s:] if out.shape[-1] > s else None)
