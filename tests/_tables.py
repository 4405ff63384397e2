"""Reading the markdown tables that the benchmark scripts write."""

import re


def table_rows(text: str, first: str | None = None) -> list[list[str]]:
    """The cells of every markdown table row in ``text``, separator rows left out; with ``first``,
    only the rows whose first cell is ``first``."""
    rows = [re.split(r"\s*\|\s*", line.strip())[1:-1] for line in text.splitlines() if line.lstrip().startswith("|")]
    rows = [r for r in rows if r and not all(c and set(c) <= set("-:") for c in r)]
    return rows if first is None else [r for r in rows if r[0] == first]
