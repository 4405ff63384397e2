"""Keeping freed memory for reuse during a long CPU optimisation (glibc's ``mallopt``).

A ``direct`` step allocates and frees the same block-sized arrays over and over. glibc returns
freed memory at the top of its heap to the system once more than ``M_TRIM_THRESHOLD`` of it is
free (about 64 MiB once its thresholds have adapted), so the next block maps the pages again and
the kernel zero-fills them: a third of a whole-brain step went there. Inside
:func:`reused_heap`, allocations under 32 MiB come from the heap (glibc's own upper bound for
its adaptive threshold) and up to 256 MiB of free heap is kept; on exit the trim threshold goes
back to glibc's default and the free memory is returned. Elsewhere than glibc (macOS, musl) it
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from contextlib import contextmanager
from functools import lru_cache

__all__ = ["reused_heap"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Allocations below this come from the heap while inside :func:`reused_heap`.
HEAP_BELOW = 32 << 20
#: Free heap memory kept while inside :func:`reused_heap`.
KEEP_FREE = 256 << 20
_DEFAULT_TRIM = 128 << 10


@lru_cache(maxsize=1)
def _glibc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not all(hasattr(libc, f) for f in ("mallopt", "malloc_trim", "gnu_get_libc_version")):
        return None
    return libc


@contextmanager
def reused_heap(enabled: bool = True):
    """Inside, freed memory is kept for reuse (see the module docstring); a no-op when not
    ``enabled`` (e.g. on a GPU, whose caching allocator does this already) or without glibc."""
    libc = _glibc() if enabled else None
    if libc is None or not (libc.mallopt(_M_MMAP_THRESHOLD, HEAP_BELOW) and libc.mallopt(_M_TRIM_THRESHOLD,
                                                                                         KEEP_FREE)):
        yield
        return
    log.debug("glibc keeps up to %d MiB of freed memory for reuse", KEEP_FREE >> 20)
    try:
        yield
    finally:
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM)
        libc.malloc_trim(0)
