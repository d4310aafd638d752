"""Small statistics and formatting helpers shared by the benchmarks (stdlib only).

Every figure the benchmarks report is a median or p90 over repeated trials, and every headline is a ratio of
two things measured in the same run, interleaved: the machine is shared and noisy, absolute times drift.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def p90(values: Sequence[float]) -> float:
    return quantile(values, 0.9)


def summary(values: Sequence[float]) -> dict[str, Any]:
    """median, p90, min, max and n of a sample (JSON-ready)."""
    vals = list(values)
    return {
        "median": median(vals),
        "p90": p90(vals),
        "min": min(vals) if vals else math.nan,
        "max": max(vals) if vals else math.nan,
        "n": len(vals),
    }


def paired(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Per-trial ratios of two interleaved series (same trial index = measured back to back)."""
    return [a / b for a, b in zip(numerators, denominators, strict=True) if b > 0]


def differences(minuends: Sequence[float], subtrahends: Sequence[float]) -> list[float]:
    return [a - b for a, b in zip(minuends, subtrahends, strict=True)]


def ms(seconds: float) -> float:
    return seconds * 1000.0


def fmt_ms(value_ms: float, width: int = 0) -> str:
    text = "-" if math.isnan(value_ms) else (f"{value_ms:.1f}" if value_ms < 100 else f"{value_ms:.0f}")
    return text.rjust(width)


def fmt_us(value_us: float) -> str:
    return "-" if math.isnan(value_us) else (f"{value_us:.1f}" if value_us < 100 else f"{value_us:.0f}")


def fmt_ratio(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


def fmt_delta(value_ms: float) -> str:
    """A signed difference in ms: +42.0, -1.3."""
    return "-" if math.isnan(value_ms) else f"{value_ms:+.1f}"


def fmt_pct(value: float) -> str:
    if math.isnan(value):
        return "-"
    if value < 0.001:
        return f"{value * 100:.3f}%"
    return f"{value * 100:.1f}%" if value < 0.1 else f"{value * 100:.0f}%"


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    body = [list(map(str, row)) for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        out = [cells[0].ljust(widths[0])]
        out += [cell.rjust(widths[i]) for i, cell in enumerate(cells) if i > 0]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(list(headers)), rule, *(line(row) for row in body)])
