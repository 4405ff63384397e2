"""Whole-volume prediction on overlapping tiles with blended seams (MONAI-style).

The predictor is any callable mapping a batch of tiles ``[B, C, x, y, z]`` to
``[B, C_out, x, y, z]``; it knows nothing about tiling. Every voxel is predicted by the few
tiles that cover it, and their outputs are averaged with weights that fall off towards the
tile borders (where zero padding shows), so seams vanish. Unlike a patch-per-voxel loop, each
voxel is computed about ``(1 / (1 - overlap))**3`` times, not 27.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from tqdm.auto import tqdm

__all__ = ["SlidingWindowInferer", "blend_weights", "sliding_window_inference", "tile_starts"]


def blend_weights(roi_size: Sequence[int], mode: str = "gaussian", sigma_scale: float = 0.125) -> torch.Tensor:
    """Tile weight map ``[x, y, z]``: Gaussian (sigma = ``sigma_scale * roi``) or constant."""
    if mode == "constant":
        return torch.ones(tuple(roi_size))
    if mode != "gaussian":
        raise ValueError(f"blend mode must be 'gaussian' or 'constant', got {mode!r}")
    axes = []
    for n in roi_size:
        x = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
        sigma = max(sigma_scale * n, 0.5)
        axes.append(torch.exp(-0.5 * (x / sigma) ** 2))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    w = w / w.max()
    return w.clamp_min(1e-3).float()


def tile_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start indices of tiles of length ``roi`` covering ``[0, size)`` with the given overlap."""
    if roi >= size:
        return [0]
    step = max(1, math.floor(roi * (1.0 - overlap)))
    starts = list(range(0, size - roi + 1, step))
    if starts[-1] != size - roi:
        starts.append(size - roi)
    return starts


def _prune_redundant_tiles(starts: list, roi: tuple, mask: torch.Tensor) -> list:
    """Drop edge tiles whose mask voxels all lie in other kept tiles (greedy, fewest mask voxels first).

    Only tiles that straddle the mask's edge (hold voxels outside it) are candidates. At the
    default 25% overlap an interior tile has voxels no other tile holds and is kept anyway
    (except, rarely, the shifted last tile of an axis); at 50% overlap this keeps the
    interior's overlap, where dropping any covered tile would keep only a non-overlapping
    subset. Every mask voxel
    stays in at least one kept tile; the kept tiles keep their grid order.
    """
    cover = torch.zeros(mask.shape, dtype=torch.int32)
    views = [(slice(a, a + roi[0]), slice(b, b + roi[1]), slice(c, c + roi[2])) for a, b, c in starts]
    for v in views:
        cover[v] += 1
    counts = [int(mask[v].sum()) for v in views]
    full = math.prod(roi)
    dropped = set()
    for i in sorted(range(len(starts)), key=lambda k: (counts[k], k)):
        v = views[i]
        if counts[i] < full and bool((cover[v][mask[v]] >= 2).all()):
            cover[v] -= 1
            dropped.add(i)
    return [t for i, t in enumerate(starts) if i not in dropped]


def sliding_window_inference(
    inputs: torch.Tensor,
    roi_size: int | Sequence[int],
    predictor: Callable[[torch.Tensor], torch.Tensor],
    *,
    overlap: float = 0.25,
    sw_batch_size: int = 4,
    blend: str = "gaussian",
    sw_device: torch.device | str | None = None,
    device: torch.device | str | None = None,
    weights: torch.Tensor | None = None,
    progress: bool = False,
    roi_mask: torch.Tensor | None = None,
    prune: bool = False,
    workers: int = 1,
) -> torch.Tensor:
    """Predict a whole volume ``inputs`` ``[C, X, Y, Z]`` tile by tile -> ``[C_out, X, Y, Z]``.

    Args:
        roi_size: tile size (int for a cube). The volume is zero-padded up to it if smaller.
        predictor: network callable on ``[B, C, *roi]``.
        overlap: fraction of a tile shared with its neighbour along each axis, in [0, 1).
        sw_batch_size: tiles per predictor call.
        sw_device: where the predictor runs; ``device``: where the output is stitched.
        roi_mask: optional bool ``[X, Y, Z]``; tiles holding none of its voxels are skipped and
            the output is zero where no tile ran (e.g. outside a brain mask).
        prune: with ``roi_mask``, also skip tiles on the mask's edge whose mask voxels all lie
            in other tiles that run (:func:`_prune_redundant_tiles`).
        workers: predictor calls in flight at once, each in its own thread (with the calling
            thread's gradient mode). On a CPU a few calls that share the cores beat one call
            spread over all of them (the caller divides torch's intra-op threads; see
            :func:`shdeconv.inference.tile_workers`). The calling thread stitches the results in
            tile order, so the output does not depend on ``workers``.
    """
    if int(workers) != workers or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if inputs.dim() != 4:
        raise ValueError(f"inputs must be [C, X, Y, Z], got shape {tuple(inputs.shape)}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    roi = (roi_size,) * 3 if isinstance(roi_size, int) else tuple(int(r) for r in roi_size)
    sw_device = torch.device(sw_device) if sw_device is not None else inputs.device
    device = torch.device(device) if device is not None else inputs.device
    spatial = inputs.shape[1:]
    pad = [max(r - s, 0) for r, s in zip(roi, spatial)]
    if any(pad):
        inputs = torch.nn.functional.pad(inputs, (0, pad[2], 0, pad[1], 0, pad[0]))
    full = inputs.shape[1:]
    w = (weights if weights is not None else blend_weights(roi, blend)).to(device)
    starts = list(itertools.product(*(tile_starts(n, r, overlap) for n, r in zip(full, roi))))
    if roi_mask is not None:
        if tuple(roi_mask.shape) != tuple(spatial):
            raise ValueError(f"roi_mask shape {tuple(roi_mask.shape)} differs from the inputs' {tuple(spatial)}")
        m = torch.nn.functional.pad(roi_mask.bool(), (0, pad[2], 0, pad[1], 0, pad[0]))
        starts = [(a, b, c) for a, b, c in starts if m[a : a + roi[0], b : b + roi[1], c : c + roi[2]].any()]
        if prune:
            starts = _prune_redundant_tiles(starts, roi, m)
    out = None
    norm = torch.zeros(full, device=device)
    bar = tqdm(total=len(starts), desc="tiles", disable=not progress, leave=False)
    chunks = [starts[i : i + sw_batch_size] for i in range(0, len(starts), sw_batch_size)]
    grad = torch.is_grad_enabled()

    def run(chunk):
        with torch.set_grad_enabled(grad):  # grad mode is per thread
            tiles = torch.stack(
                [inputs[:, a : a + roi[0], b : b + roi[1], c : c + roi[2]] for a, b, c in chunk]
            ).to(sw_device)
            return predictor(tiles).to(device)

    for chunk, pred in zip(chunks, _ordered_map(run, chunks, int(workers))):
        if out is None:
            out = torch.zeros((pred.shape[1],) + tuple(full), device=device, dtype=pred.dtype)
        for (a, b, c), p in zip(chunk, pred):
            out[:, a : a + roi[0], b : b + roi[1], c : c + roi[2]] += p * w
            norm[a : a + roi[0], b : b + roi[1], c : c + roi[2]] += w
        bar.update(len(chunk))
    bar.close()
    if out is None:  # nothing to predict: learn the output channels from one tile
        out = torch.zeros((predictor(inputs[None, :, : roi[0], : roi[1], : roi[2]].to(sw_device)).shape[1],)
                          + tuple(full), device=device)
    # in place (no output-sized temporaries); where no tile ran, out is 0 and stays 0
    out.div_(norm.clamp_min(1e-12))
    return out[:, : spatial[0], : spatial[1], : spatial[2]]


def _ordered_map(fn: Callable, items: Sequence, workers: int) -> Iterator:
    """``map(fn, items)`` in order, with up to ``workers`` calls running in threads.

    At most ``2 * workers`` results wait unconsumed, so memory stays bounded however slowly
    the caller consumes them.
    """
    if workers == 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="shdeconv-tile") as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # an error or an abandoned generator: do not start the rest
            for f in pending:
                f.cancel()


class SlidingWindowInferer:
    """Thin wrapper of :func:`sliding_window_inference` that caches the blend weights."""

    def __init__(self, roi_size, *, overlap=0.25, sw_batch_size=4, blend="gaussian", sw_device=None, device=None,
                 prune=False, workers=1):
        self.roi_size = (roi_size,) * 3 if isinstance(roi_size, int) else tuple(roi_size)
        self.overlap = overlap
        self.sw_batch_size = sw_batch_size
        self.sw_device = sw_device
        self.device = device
        self.prune = prune
        self.workers = workers
        self.weights = blend_weights(self.roi_size, blend)

    def __call__(self, inputs, predictor, progress=False, roi_mask=None):
        return sliding_window_inference(
            inputs, self.roi_size, predictor, overlap=self.overlap, sw_batch_size=self.sw_batch_size,
            sw_device=self.sw_device, device=self.device, weights=self.weights, progress=progress,
            roi_mask=roi_mask, prune=self.prune, workers=self.workers,
        )
