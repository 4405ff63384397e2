"""Saving and loading trained networks, and the pretrained model shipped inside the package.

A model file (``torch.save`` of a plain dict) holds ``format``, ``net_config`` (a
:class:`NetworkConfig` dict), ``n_iso``, ``state_dict`` and ``meta`` (how it was trained). The
shipped weights live in ``shdeconv/models/pretrained/`` next to a JSON record of the command,
data and seed that produced them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

from ..io import InputError
from ..io._atomic import atomic_torch_save
from ._deconv import DeconvNet, NetworkConfig

__all__ = ["PRETRAINED", "LoadedModel", "load_model", "pretrained_path", "save_model"]

FORMAT = "shdeconv-model-1"
#: Name of the shipped amortized model (``shdeconv predict`` without ``--model``).
PRETRAINED = "shd-tv-amortized"


def save_model(path, net: DeconvNet, meta: dict | None = None) -> Path:
    """Write ``net``'s weights and configuration to ``path`` atomically (float32, CPU)."""
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return atomic_torch_save({"format": FORMAT, "net_config": net.config.to_dict(), "n_iso": net.n_iso,
                              "state_dict": state, "meta": meta or {}}, path)


def load_model(path) -> tuple[DeconvNet, dict]:
    """Rebuild the (``"linear"``-input) network saved by :func:`save_model`; returns ``(net, meta)``.

    The network still needs ``net.set_init_matrix(D)`` for a subject before
    ``net(signal)``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "model file not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(path, f"not a readable shdeconv model file ({e})") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise InputError(path, f"not a shdeconv model file (expected format {FORMAT!r})")
    config = NetworkConfig.from_dict(blob["net_config"])
    if config.inputs != "linear":
        raise InputError(path, "a per-subject ('signal'-input) network is tied to its subject's acquisition "
                               "and cannot predict other subjects; train one with `shdeconv train`")
    net = DeconvNet(config, n_iso=int(blob["n_iso"]))
    net.load_state_dict(blob["state_dict"])
    return net, dict(blob["meta"])


@dataclass
class LoadedModel:
    """A model file read once for many subjects (e.g. a cohort): its network, metadata, the
    SHA-256 of the file, and its trained weights, restored by :meth:`fresh` before each subject
    (fine-tuning changes the network in place)."""

    path: Path
    net: DeconvNet
    meta: dict
    sha256: str
    state: dict = field(repr=False)

    @classmethod
    def load(cls, path=None) -> LoadedModel:
        """Read ``path`` (default: the shipped model) with :func:`load_model`."""
        path = Path(path) if path is not None else pretrained_path()
        net, meta = load_model(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        return cls(path, net, meta, digest, state)

    def fresh(self) -> DeconvNet:
        """The network with its trained weights (undoing any fine-tuning of an earlier subject)."""
        self.net.load_state_dict(self.state)
        return self.net

    @property
    def patch_size(self) -> int:
        """Edge of the patches the network was trained on (8 where the file does not say): the
        tile it predicts best on."""
        return int(self.meta.get("train_config", {}).get("patch_size", 8))


def pretrained_path(name: str = PRETRAINED) -> Path:
    """Path of a model shipped in the package (``FileNotFoundError`` if absent)."""
    p = Path(str(resources.files("shdeconv.models").joinpath("pretrained", f"{name}.pt")))
    if not p.exists():
        raise FileNotFoundError(f"{p}: the shipped model {name!r} is not installed")
    return p


def pretrained_record(name: str = PRETRAINED) -> dict:
    """The JSON record of how the shipped model was trained."""
    return json.loads(pretrained_path(name).with_suffix(".json").read_text())
