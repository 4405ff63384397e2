"""Run fingerprints: a checkpoint is resumed only by the run that wrote it.

A fingerprint is a plain dict ``{"data": <hex digest>, "settings": {...}}``: the digest of the
arrays the run computes on (signal, mask, gradient table, responses) and the settings that
change its result (model, loss weights, optimiser, seeds). Settings that only say how long to
run (``iterations``, ``checkpoint_every``) are left out, so a finished fit can be resumed
with more iterations.
"""

from __future__ import annotations

import hashlib
import json
from os import PathLike

import numpy as np

from ._validate import InputError

__all__ = ["RESUMABLE_KEYS", "check_fingerprint", "checkpoint_step", "fingerprint"]

#: Settings a resumed run may change: how far it goes, not where it goes.
RESUMABLE_KEYS = frozenset({"iterations", "checkpoint_every", "log_every"})
#: What a refused checkpoint's message tells the user to do.
_START_OVER = "rerun without --resume and with --force to start over, or choose another output directory"


def _strip(settings):
    if isinstance(settings, dict):
        return {str(k): _strip(v) for k, v in settings.items() if k not in RESUMABLE_KEYS}
    if isinstance(settings, (list, tuple)):
        return [_strip(v) for v in settings]
    if isinstance(settings, (np.integer, np.floating)):
        return settings.item()
    return settings


def fingerprint(arrays, settings: dict) -> dict:
    """``{"data": digest, "settings": settings}`` of ``arrays`` (sequence of arrays or None).

    The digest (BLAKE2b) covers each array's dtype, shape and bytes, in order; ``settings``
    is kept as JSON-compatible data (without :data:`RESUMABLE_KEYS`) so that a mismatch can
    be named.
    """
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return {"data": h.hexdigest(), "settings": json.loads(json.dumps(_strip(settings), default=str))}


def _differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(saved) | set(current)):
        a, b = saved.get(k), current.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} {a!r} -> {b!r}")
    return out


def check_fingerprint(saved: dict | None, current: dict, path: str | PathLike) -> None:
    """Raise :class:`~shdeconv.io.InputError` naming ``path`` unless ``saved`` == ``current``."""
    if saved is None:
        raise InputError(path, "the checkpoint records no fingerprint of its run (written by an older "
                               f"shdeconv), so it cannot be checked against this one; {_START_OVER}")
    diffs = _differences(saved.get("settings", {}), current["settings"])
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise InputError(path, f"the checkpoint belongs to another run (settings differ: {shown}); {_START_OVER}")
    if saved.get("data") != current["data"]:
        raise InputError(path, "the checkpoint belongs to another run (other input data: dwi, bvals/bvecs, "
                               f"mask or responses); {_START_OVER}")


def checkpoint_step(saved_step, iterations: int, path: str | PathLike) -> int:
    """The step a checkpoint at ``saved_step`` continues from, refused (naming ``path``) when it
    lies beyond the ``iterations`` asked for: its state is that of more steps than the run would
    record, and going on would repeat steps."""
    step = int(saved_step)
    if step > iterations:
        raise InputError(path, f"the checkpoint is at step {step}, beyond --iterations {iterations}; pass "
                               f"--iterations {step} or more to continue it (or drop --resume)")
    return step
