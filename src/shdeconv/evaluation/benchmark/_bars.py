"""The accuracy targets (bars) in the bar case: a method against DIPY CSD and MP-PCA + CSD, checked and tabled."""

from __future__ import annotations

from .._metrics import _fmt, crossing_error
from ._suite import METHODS

__all__ = ["BARS", "bar_checks", "format_bars"]

#: the targets for SHD-TV in the bar case: reference -> (min. 2-fibre success gain in
#: points, max. ratio of the mean angular error on crossing voxels)
BARS = {"csd": (10.0, 0.8), "csd+mppca": (0.0, 1.0)}


def _success2(scores: dict | None) -> float | None:
    return None if scores is None else scores["groups"]["2"]["success_rate"]


def bar_checks(scores: dict[str, dict], method: str = "shd-tv") -> list[dict]:
    """The targets for ``method`` against DIPY CSD and MP-PCA + CSD, from the scores.

    Parameters
    ----------
    scores : dict
        Method name -> scores (:func:`~shdeconv.evaluation.score`) of the bar case; needs
        ``method``, ``"csd"`` and ``"csd+mppca"`` (missing ones give status ``"n/a"``).
    method : str
        The method held to the bars.

    Returns
    -------
    list of dict
        Per reference and figure: ``reference``, ``figure`` (``"success_2"``: 2-fibre
        success rate, measured as a difference in points; ``"crossing_ae"``: mean angular
        error on 2-3-fibre voxels, measured as the ratio method / reference), ``method_value``,
        ``reference_value``, ``measured``, ``bar`` and ``status`` (``"PASS"``, ``"MISS"`` or
        ``"n/a"``).
    """
    ours = scores.get(method)
    rows = []
    for ref, (min_points, max_ratio) in BARS.items():
        theirs = scores.get(ref)
        a, b = _success2(ours), _success2(theirs)
        diff = None if a is None or b is None else 100.0 * (a - b)
        rows.append({"reference": ref, "figure": "success_2", "method_value": a, "reference_value": b,
                     "measured": diff, "bar": min_points,
                     "status": "n/a" if diff is None else ("PASS" if diff >= min_points else "MISS")})
        a = None if ours is None else crossing_error(ours)
        b = None if theirs is None else crossing_error(theirs)
        ratio = None if a is None or not b else a / b
        rows.append({"reference": ref, "figure": "crossing_ae", "method_value": a, "reference_value": b,
                     "measured": ratio, "bar": max_ratio,
                     "status": "n/a" if ratio is None else ("PASS" if ratio <= max_ratio else "MISS")})
    return rows


def format_bars(rows: list[dict], method_label: str = "SHD-TV") -> str:
    """Markdown table of :func:`bar_checks` rows, with a one-line summary."""
    lines = [f"| {method_label} vs | figure | {method_label} | reference | measured | bar | result |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        ref = METHODS[r["reference"]].label if r["reference"] in METHODS else r["reference"]
        if r["figure"] == "success_2":
            measured = "–" if r["measured"] is None else f"{r['measured']:+.1f} points"
            status = r["status"] + (f" by {r['bar'] - r['measured']:.1f} points" if r["status"] == "MISS" else "")
            lines.append(f"| {ref} | 2-fibre success | {_fmt(r['method_value'])} | {_fmt(r['reference_value'])} | "
                         f"{measured} | ≥ {r['bar']:+.0f} points | {status} |")
        else:
            measured = "–" if r["measured"] is None else f"ratio {r['measured']:.3f} ({100 * (r['measured'] - 1):+.1f}%)"
            status = r["status"] + (f" by {r['measured'] - r['bar']:.3f}" if r["status"] == "MISS" else "")
            lines.append(f"| {ref} | mean AE crossings (°) | {_fmt(r['method_value'], '.2f')} | "
                         f"{_fmt(r['reference_value'], '.2f')} | {measured} | ratio ≤ {r['bar']:.2f} | {status} |")
    met = sum(r["status"] == "PASS" for r in rows)
    known = sum(r["status"] != "n/a" for r in rows)
    summary = f"{met} of {len(rows)} bars met" + ("" if known == len(rows) else f" ({len(rows) - known} not measured)")
    return "\n".join(lines) + f"\n\n{summary}.\n"
