"""Latency figures shared by the efficiency check and the report: nearest-rank percentiles
and the ratings of DESIGN.md."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from pytest_imagegen.ratings import LEVELS, RESPONSE_TIME, rate

#: Upper bounds (seconds, inclusive) of the default response-time ratings, judged on p50
#: (``[tool.imagegen.ratings] response_time_s`` changes them; beyond the last: unacceptable).
RATINGS = tuple(zip(LEVELS, RESPONSE_TIME.default, strict=True))
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


def rating(p50_s: float | None, thresholds: Sequence[float] | None = None) -> str | None:
    """The response-time rating of a median latency (the default thresholds unless given);
    None without samples."""
    return rate(RESPONSE_TIME.key, p50_s, thresholds)
