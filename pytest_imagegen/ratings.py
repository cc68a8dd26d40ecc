"""The three ratings of an endpoint: response time, success rate and cost per image.

Each is judged against four thresholds, for ``excellent``, ``good``, ``acceptable`` and
``poor``; a value beyond the last is ``unacceptable``. The defaults are the field's common
practice for image generation; ``[tool.imagegen.ratings]`` overrides them::

    [tool.imagegen.ratings]
    response_time_s = [3, 8, 15, 30]         # p50 at most, seconds
    success_rate = [0.98, 0.95, 0.90, 0.85]  # at least
    cost_per_image_usd = [0.02, 0.04, 0.06, 0.10]  # at most, at the configured parameters

Standard library only: the config model and the report both import it.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: The levels, best first; a value past the last threshold is :data:`UNACCEPTABLE`.
LEVELS = ("excellent", "good", "acceptable", "poor")
UNACCEPTABLE = "unacceptable"


@dataclass(frozen=True)
class Rating:
    """One rated figure: its config key, what it measures, and which way is better."""

    key: str
    label: str
    unit: str
    higher_is_better: bool
    default: tuple[float, float, float, float]


RESPONSE_TIME = Rating("response_time_s", "response time (p50)", "s", False, (3.0, 8.0, 15.0, 30.0))
SUCCESS_RATE = Rating("success_rate", "success rate", "", True, (0.98, 0.95, 0.90, 0.85))
COST_PER_IMAGE = Rating(
    "cost_per_image_usd", "cost per image", "USD", False, (0.02, 0.04, 0.06, 0.10)
)

#: The ratings, in report order, by config key.
RATINGS: Mapping[str, Rating] = {r.key: r for r in (RESPONSE_TIME, SUCCESS_RATE, COST_PER_IMAGE)}

#: The default thresholds of every rating, by config key.
DEFAULT_THRESHOLDS: Mapping[str, tuple[float, ...]] = {k: r.default for k, r in RATINGS.items()}


def threshold_problem(key: str, values: Sequence[float]) -> str | None:
    """Why ``values`` cannot be the thresholds of rating ``key``, or None when they can."""
    rating = RATINGS[key]
    if len(values) != len(LEVELS):
        return (
            f"give {len(LEVELS)} thresholds ({', '.join(LEVELS)}), e.g. "
            f"{key} = {list(rating.default)}"
        )
    if any(v < 0 for v in values) or (rating.key == "success_rate" and any(v > 1 for v in values)):
        bound = "between 0 and 1" if rating.key == "success_rate" else ">= 0"
        return f"thresholds must be {bound}, e.g. {key} = {list(rating.default)}"
    pairs = list(itertools.pairwise(values))
    ordered = (
        all(a > b for a, b in pairs) if rating.higher_is_better else all(a < b for a, b in pairs)
    )
    if not ordered:
        way = "decreasing" if rating.higher_is_better else "increasing"
        return (
            f"thresholds must be strictly {way} (excellent first), e.g. "
            f"{key} = {list(rating.default)}"
        )
    return None


def rate(key: str, value: float | None, thresholds: Sequence[float] | None = None) -> str | None:
    """The level of ``value`` for rating ``key`` (thresholds inclusive); None for no value."""
    if value is None:
        return None
    rating = RATINGS[key]
    limits = tuple(thresholds) if thresholds is not None else rating.default
    for level, limit in zip(LEVELS, limits, strict=True):
        if (value >= limit) if rating.higher_is_better else (value <= limit):
            return level
    return UNACCEPTABLE


def describe_thresholds(key: str, thresholds: Sequence[float]) -> str:
    """``excellent <= 3 s, good <= 8 s, ...`` for the report's settings and legend."""
    rating = RATINGS[key]
    sign = ">=" if rating.higher_is_better else "<="
    shown = []
    for level, limit in zip(LEVELS, thresholds, strict=True):
        if rating.key == "success_rate":
            text = f"{limit:.0%}"
        elif rating.unit == "USD":
            text = f"${limit:g}"
        else:
            text = f"{limit:g} {rating.unit}"
        shown.append(f"{level} {sign} {text}")
    return ", ".join(shown)
