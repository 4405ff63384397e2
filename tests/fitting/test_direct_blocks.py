"""The direct fit's blocks tile the box once, and its heap setting is applied and undone."""

from __future__ import annotations

import platform

import numpy as np
import pytest

from shdeconv.fitting._allocator import _glibc, reused_heap
from shdeconv.fitting._direct import CPU_BLOCK_VOXELS, _blocks


@pytest.mark.parametrize("shape,chunk", [((60, 72, 60), CPU_BLOCK_VOXELS), ((16, 16, 6), CPU_BLOCK_VOXELS),
                                         ((7, 5, 3), 10), ((1, 1, 1), 1)])
def test_blocks_tile_the_box_once_within_the_budget(shape, chunk):
    count = np.zeros(shape, int)
    for rx, ry, rz in _blocks(shape, chunk):
        count[rx[0]:rx[1], ry[0]:ry[1], rz[0]:rz[1]] += 1
        assert (rx[1] - rx[0]) * (ry[1] - ry[0]) * (rz[1] - rz[0]) <= max(chunk, 1)
    assert (count == 1).all()
    if np.prod(shape) <= chunk:
        assert len(_blocks(shape, chunk)) == 1


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_reused_heap_sets_and_restores_glibc():
    libc = _glibc()
    assert libc is not None
    calls = []
    real = libc.mallopt

    class Spy:
        def __getattr__(self, name):
            return getattr(libc, name)

        def mallopt(self, param, value):
            calls.append((param, value))
            return real(param, value)

    import shdeconv.fitting._allocator as alloc

    original = alloc._glibc
    alloc._glibc = lambda: Spy()
    try:
        with reused_heap():
            inside = list(calls)
        with reused_heap(enabled=False):
            pass
    finally:
        alloc._glibc = original
    assert inside == [(-3, alloc.HEAP_BELOW), (-1, alloc.KEEP_FREE)]
    assert calls[2:] == [(-1, 128 << 10)]  # the trim threshold back to glibc's default; nothing when disabled
