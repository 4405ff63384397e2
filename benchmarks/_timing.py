"""What the speed benchmark scripts share: timing and peak memory of one call, CPU or CUDA, and a
process's own peak memory. Standard library only at import (torch is imported by the callers)."""

from __future__ import annotations

import resource
import statistics
import time

__all__ = ["median_ms", "peak_mb", "peak_rss_gib"]


def _sync(device):
    if device.type == "cuda":
        import torch

        torch.cuda.synchronize()


def _rss_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise KeyError(field)


def peak_rss_gib() -> float:
    """This process's peak resident memory, GiB.

    VmHWM of /proc/self/status where there is one: ``ru_maxrss`` of a process started by
    fork + exec also counts the parent's resident memory at the fork (Linux keeps the larger
    of the two), so a benchmark arm spawned after its parent simulated a large phantom would
    report the parent's peak.
    """
    try:
        return _rss_kb("VmHWM") / 2**20
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def peak_mb(fn, device):
    """Peak memory of one call above the memory held before it, in MiB."""
    if device.type == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        _sync(device)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _rss_kb("VmRSS")
        fn()
        return (_rss_kb("VmHWM") - base) / 1024
    except OSError:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024


def median_ms(fn, device, reps):
    """Median wall time of ``reps`` calls of ``fn`` after one warm-up, in ms (CUDA synchronised)."""
    fn()
    _sync(device)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        _sync(device)
        ts.append(time.perf_counter() - t)
    return 1e3 * statistics.median(ts)
