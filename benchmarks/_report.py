"""What the phantom benchmark scripts share: their common options and how they publish a report."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_phantom_options(p: argparse.ArgumentParser, *, output: str, snrs: str) -> None:
    """``-o``, ``--snrs``, ``--seed``, ``--size``, ``--device`` and ``--markdown``."""
    p.add_argument("-o", "--output", type=Path, default=Path(output))
    p.add_argument("--snrs", default=snrs)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", default="default", choices=["default", "quick"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--markdown", type=Path, default=None, help="also write the report here")


def publish(text: str, markdown: Path | None) -> None:
    """Print the report and, with ``markdown``, write it there atomically."""
    print(text)
    if markdown:
        from shdeconv.io import atomic_write_text

        markdown.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(markdown, text)
