"""Where a benchmark ran: the CPU, the platform, library versions, the device and MRtrix3."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["cpu_model", "machine_info"]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_info(device: str = "auto") -> dict:
    """Where the benchmark ran: CPU, platform, library versions, the device and MRtrix3's version."""
    import dipy
    import torch

    from ... import __version__
    from ..._options import resolve_device
    from ...baselines import mrtrix_version

    dev = resolve_device(device)
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "shdeconv": __version__,
        "torch": torch.__version__,
        "dipy": dipy.__version__,
        "device": str(dev),
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "mrtrix3": mrtrix_version(),
    }
