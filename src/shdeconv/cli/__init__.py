"""Command-line interface: ``shdeconv COMMAND ...`` (see ``shdeconv --help``)."""

from ._main import build_parser, main

__all__ = ["build_parser", "main"]
