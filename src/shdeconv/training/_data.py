"""Training data for amortized networks: subjects cached as memory-mapped arrays.

Each subject folder holds ``dwi.nii.gz``, ``bvals``, ``bvecs`` and optionally ``mask.nii.gz``,
``response_wm.txt`` (+ ``response_gm.txt``, ``response_csf.txt``) and a phantom's ``truth/``.
:func:`prepare_training_subject` loads it once (the same checks, mask, responses and frame as
``shdeconv fit``) and writes, in the network's voxel-axes frame:

* ``signal.npy`` ``(X, Y, Z, G)`` float32, ``S / S0``;
* ``linear.npy`` ``(X, Y, Z, S + T)`` float32, the linear deconvolution ``D s`` (the network input);
* ``mask.npy`` ``(X, Y, Z)`` bool; ``target.npy`` ``(X, Y, Z, S')`` (up to the output's order) when ``truth/`` exists;
* ``acquisition.npz`` (directions, response rows, WM kernel, isotropic responses) and ``meta.json``.

Training reads only the patches it samples (``np.load(mmap_mode="r")``), so the number of
subjects is bounded by disk, not memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..io import InputError
from ..io._atomic import atomic_write_text
from ..signal._forward import ForwardModel, linear_deconvolution

__all__ = ["CACHE_VERSION", "TrainingSubject", "load_training_subjects", "prepare_training_subject"]

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def _save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def source_key(folder: Path, lmax: int, target_lmax: int | None = None, single_shell: tuple[str, ...] = ()) -> str:
    target = "" if target_lmax in (None, lmax) else f" target{target_lmax}"
    tissues = f" single-shell {','.join(single_shell)}" if single_shell else ""
    h = hashlib.sha256(f"v{CACHE_VERSION} lmax{lmax}{target}{tissues}".encode())
    for name in ("dwi.nii.gz", "bvals", "bvecs", "mask.nii.gz", "response_wm.txt", "response_gm.txt",
                 "response_csf.txt", "truth/peaks.nii.gz", "truth/fractions.nii.gz"):
        p = folder / name
        if p.exists():
            st = p.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def prepare_training_subject(folder, cache_root, *, lmax: int = 8, target_lmax: int | None = None,
                             single_shell: tuple[str, ...] = ()) -> Path:
    """Cache one subject folder under ``cache_root``; reuse the cache when the sources are unchanged.

    ``lmax`` is the responses' (the forward model and the linear input); the ground-truth target
    goes up to ``target_lmax`` (default ``lmax``), the network's output order. ``single_shell``:
    the isotropic tissues of single-shell subjects (see
    :func:`~shdeconv.fitting._subject.isotropic_responses`; none by default, as the linear head
    was trained); multi-shell subjects always get GM and CSF from their responses.

    Returns the cache directory. Raises :class:`~shdeconv.io.InputError` (naming the file) on
    bad inputs, like ``shdeconv fit``.
    """
    from ..fitting._subject import acquisition_model, isotropic_responses, load_subject
    from ..sim._io import load_truth, truth_fodf_sh

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a subject folder")
    target_lmax = lmax if target_lmax is None else target_lmax
    single_shell = tuple(single_shell)
    key = source_key(folder, lmax, target_lmax, single_shell)
    cache = Path(cache_root) / f"{folder.name}-{key}"
    if (cache / "meta.json").exists():
        return cache
    responses = None
    if (folder / "response_wm.txt").exists():
        responses = {k: folder / f"response_{k}.txt" for k in ("wm", "gm", "csf")
                     if (folder / f"response_{k}.txt").exists()}
    mask = folder / "mask.nii.gz"
    subject = load_subject(folder / "dwi.nii.gz", folder / "bvals", folder / "bvecs",
                           mask if mask.exists() else None, response_files=responses, lmax=lmax, keep_raw=False)
    # as cached for training: isotropic tissues only where the responses have them (multi-shell)
    fm, rows, _ = acquisition_model(subject.bvals, subject.directions, subject.responses, lmax,
                                    single_shell=single_shell)
    d = linear_deconvolution(fm)
    cache.mkdir(parents=True, exist_ok=True)
    signal = np.where(subject.mask[..., None], subject.signal, 0).astype(np.float32)
    _save_npy(cache / "signal.npy", signal)
    _save_npy(cache / "linear.npy", (signal @ d.T.astype(np.float32)).astype(np.float32))
    _save_npy(cache / "mask.npy", subject.mask.astype(bool))
    has_truth = (folder / "truth" / "truth.json").exists()
    if has_truth:
        truth = load_truth(folder / "truth")
        target = truth_fodf_sh(truth.peak_dirs, truth.peak_fractions, target_lmax, rotation=subject.rotation)
        _save_npy(cache / "target.npy", target.astype(np.float32))
    iso = np.zeros((len(subject.responses.wm), 0)) if fm.a_iso is None else \
        isotropic_responses(subject.responses, single_shell)[1]
    tmp = cache / f".acquisition.tmp{os.getpid()}.npz"
    np.savez(tmp, directions=subject.directions, rows=rows, kernel=subject.responses.kernel(lmax), iso=iso,
             bvals=subject.bvals)
    os.replace(tmp, cache / "acquisition.npz")
    meta = {"source": str(folder.resolve()), "key": key, "lmax": lmax, "target_lmax": target_lmax,
            "single_shell": list(single_shell), "shape": list(subject.mask.shape),
            "volumes": len(subject.bvals), "voxels_in_mask": int(subject.mask.sum()),
            "n_iso": int(fm.n_iso), "has_truth": has_truth, "cache_version": CACHE_VERSION}
    atomic_write_text(cache / "meta.json", json.dumps(meta, indent=2) + "\n")
    log.info("cached %s -> %s", folder, cache)
    return cache


@dataclass
class TrainingSubject:
    """One cached subject, memory-mapped. Arrays are channels-last ``(X, Y, Z, C)``."""

    name: str
    signal: np.ndarray
    linear: np.ndarray
    mask: np.ndarray
    target: np.ndarray | None
    acquisition: dict
    coords: np.ndarray  # (N, 3) mask voxels

    @classmethod
    def open(cls, cache) -> TrainingSubject:
        cache = Path(cache)
        meta = json.loads((cache / "meta.json").read_text())
        acq = dict(np.load(cache / "acquisition.npz"))
        mask = np.load(cache / "mask.npy")
        target = np.load(cache / "target.npy", mmap_mode="r") if meta["has_truth"] else None
        return cls(Path(meta["source"]).name, np.load(cache / "signal.npy", mmap_mode="r"),
                   np.load(cache / "linear.npy", mmap_mode="r"), mask, target, acq, np.argwhere(mask))

    def forward_model(self) -> ForwardModel:
        iso = self.acquisition["iso"]
        return ForwardModel(self.acquisition["directions"], self.acquisition["rows"],
                            self.acquisition["kernel"], iso if iso.shape[1] else None)

    def sample(self, n: int, patch: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """``n`` cubes of side ``patch`` centred on random mask voxels (zero-padded at borders).

        Returns ``signal [n, G, p, p, p]``, ``linear [n, S + T, p, p, p]``, ``mask [n, p, p, p]``
        and ``target [n, S, p, p, p]`` when the subject has a ground truth.
        """
        shape = np.array(self.mask.shape)
        centres = self.coords[rng.integers(len(self.coords), size=n)]
        starts = np.clip(centres - patch // 2, 0, np.maximum(shape - patch, 0))
        arrays = {"signal": self.signal, "linear": self.linear, "mask": self.mask}
        if self.target is not None:
            arrays["target"] = self.target
        out = {}
        for key, arr in arrays.items():
            cubes = []
            for s in starts:
                cube = np.asarray(arr[s[0]:s[0] + patch, s[1]:s[1] + patch, s[2]:s[2] + patch])
                pad = [(0, patch - c) for c in cube.shape[:3]] + [(0, 0)] * (cube.ndim - 3)
                cubes.append(np.pad(cube, pad))
            stacked = np.stack(cubes)
            out[key] = torch.from_numpy(stacked if key == "mask" else
                                        np.ascontiguousarray(np.moveaxis(stacked, -1, 1), dtype=np.float32))
        return out


def load_training_subjects(folders, cache_root, *, lmax: int = 8, target_lmax: int | None = None,
                           single_shell: tuple[str, ...] = (), progress: bool = False) -> list[TrainingSubject]:
    """Prepare (or reuse) the cache of every folder and open them memory-mapped."""
    from tqdm.auto import tqdm

    caches = [prepare_training_subject(f, cache_root, lmax=lmax, target_lmax=target_lmax, single_shell=single_shell)
              for f in tqdm(list(folders), desc="prepare", disable=not progress)]
    return [TrainingSubject.open(c) for c in caches]
