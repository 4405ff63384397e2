"""Gzip streams for ``.nii.gz`` and ``.mif.gz`` files.

The Intel ISA-L deflate (``isal.igzip``, a dependency) reads and writes the same gzip format as
Python's :mod:`gzip` several times faster: on a 157 MB fODF image, level-1 compression takes
about a seventh of zlib's time at the same size, decompression about half
(``benchmarks/gzip_speed.py``). Where ``isal`` cannot be imported, Python's :mod:`gzip` is used;
the files are the same format either way, and both raise the same errors (``EOFError`` for a
truncated stream, ``gzip.BadGzipFile`` for a corrupt one).
"""

from __future__ import annotations

import gzip
from os import PathLike
from typing import BinaryIO

try:
    from isal import igzip as _impl
except ImportError:  # pragma: no cover - isal is a dependency; a platform without its wheel
    _impl = gzip

__all__ = ["COMPRESS_LEVEL", "BadGzipFile", "backend", "open_gzip_read", "open_gzip_write"]

#: Compression level of every ``.gz`` output: the fastest, nibabel's own default for ``.nii.gz``.
COMPRESS_LEVEL = 1

BadGzipFile = gzip.BadGzipFile


def backend() -> str:
    """The module that compresses and decompresses: ``"isal.igzip"`` or ``"gzip"``."""
    return _impl.__name__


def open_gzip_read(path: str | PathLike) -> BinaryIO:
    """A binary reader of the decompressed bytes of the gzip file ``path`` (with ``seek``/``readinto``)."""
    return _impl.open(path, "rb")


def open_gzip_write(fileobj: BinaryIO) -> BinaryIO:
    """A binary writer compressing into the open file ``fileobj`` at :data:`COMPRESS_LEVEL`.

    The gzip header carries no file name and a zero time stamp (as nibabel writes it), so the
    same data give the same bytes. Closing the writer does not close ``fileobj``.
    """
    return _impl.GzipFile(filename="", mode="wb", compresslevel=COMPRESS_LEVEL, fileobj=fileobj, mtime=0)
