"""Latency figures shared by the efficiency check and the report: nearest-rank percentiles
and the ratings of DESIGN.md."""

from __future__ import annotations

import math
from collections.abc import Iterable

#: Upper bounds (seconds, inclusive) of the latency ratings of DESIGN.md, judged on p50.
RATINGS = (("excellent", 3.0), ("good", 8.0), ("acceptable", 15.0))
POOR = "poor"


def percentile(values: Iterable[float], pct: float) -> float | None:
    """Nearest-rank percentile: the smallest observed value with at least ``pct`` % of the
    values at or below it; None for no values.

    Nearest rank never invents a latency nobody saw, and it is well defined for the handful
    of samples a conformance run produces (p95 of 10 samples is the slowest one).
    """
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def rating(p50_s: float | None) -> str | None:
    """The latency rating of DESIGN.md for a median latency; None without samples."""
    if p50_s is None:
        return None
    for name, limit in RATINGS:
        if p50_s <= limit:
            return name
    return POOR
