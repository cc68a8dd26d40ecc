"""The per-test data the report reads: its keys and their empty values, defined once.

The plugin keeps one such dict per test in ``item.user_properties`` as
``(PROPERTY, {...})``; checks add their figures to it through ``CheckContext``; the report
(:mod:`pytest_imagegen.report`) reads it back from each test report. Standard library
only: the plugin imports it at collection time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

#: The user property holding a test's data (and the attribute of a prepared test report).
PROPERTY = "imagegen"

#: What a test is about: set when the data is created.
IDENTITY_KEYS = ("endpoint", "check", "area")
#: How the test went: set by the plugin after the test's phases.
VERDICT_KEYS = ("outcome", "category", "hint")
#: Figures added up while the test runs (requests, spend, bytes, images).
MEASURE_KEYS = (
    "latencies_s",
    "attempts",
    "successes",
    "cost_usd",
    "response_bytes",
    "images",
    "deviations",  # DeviationWarning messages (outcome "warned" when the test passed)
)
#: The cassette the test used and what became of it.
CASSETTE_KEYS = ("cassette", "cassette_status", "cassette_unplayed")

KEYS = (*IDENTITY_KEYS, *VERDICT_KEYS, *MEASURE_KEYS, *CASSETTE_KEYS)


def _empty(key: str) -> Any:
    return {
        "latencies_s": [],
        "images": [],
        "deviations": [],
        "attempts": 0,
        "successes": 0,
        "response_bytes": 0,
        "cost_usd": 0.0,
    }.get(key)


def new_data(*, endpoint: str | None, check: str | None, area: str | None) -> dict[str, Any]:
    """A test's data before it runs: every key, with its empty value."""
    data = {key: _empty(key) for key in KEYS}
    data.update(endpoint=endpoint, check=check, area=area)
    return data


def with_measures(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with every figure a check may add present (empty where missing)."""
    for key in MEASURE_KEYS:
        data.setdefault(key, _empty(key))
    return data


def is_data_entry(entry: object) -> bool:
    """Is this ``user_properties`` entry a test's data?"""
    return isinstance(entry, tuple) and len(entry) == 2 and entry[0] == PROPERTY


def find_data(user_properties: list[tuple[str, object]]) -> dict[str, Any] | None:
    """The test data kept in ``user_properties``, or None."""
    for entry in user_properties:
        if is_data_entry(entry) and isinstance(entry[1], dict):
            return entry[1]
    return None


def cost_adder(data: dict[str, Any]) -> Callable[[float], None]:
    """An ``on_cost`` callback for :func:`pytest_imagegen.budget.event_hooks`: adds each
    request's estimated price to ``data["cost_usd"]``."""

    def add_cost(amount: float) -> None:
        data["cost_usd"] = float(data.get("cost_usd") or 0.0) + amount

    return add_cost


def measuring_hooks(
    data: dict[str, Any], plays: list[dict[str, Any]] | None = None
) -> dict[str, list[Callable[[Any], None]]]:
    """httpx2 event hooks that add each answered request's latency, and whether it
    succeeded, to ``data``.

    ``plays`` is the cassette's list of replayed answers (``CassetteSession.plays``): an
    answer that came from it counts with the live latency the recording kept (and its date),
    and this run's replay time goes to ``replay_latencies_s``; replaying is fast, the
    endpoint was not.
    """
    started: dict[int, float] = {}
    played = [len(plays) if plays is not None else 0]

    def on_request(request: Any) -> None:
        played[0] = len(plays) if plays is not None else 0
        started[id(request)] = time.perf_counter()

    def on_response(response: Any) -> None:
        began = started.pop(id(response.request), None)
        if began is not None:
            took = round(time.perf_counter() - began, 4)
            if plays is not None and len(plays) > played[0]:
                recorded = plays[-1]
                data.setdefault("replay_latencies_s", []).append(took)
                if recorded.get("recorded_at"):
                    data["recorded_at"] = max(
                        recorded["recorded_at"], data.get("recorded_at") or ""
                    )
                if recorded.get("latency_s") is not None:
                    took = round(float(recorded["latency_s"]), 4)
            data["latencies_s"].append(took)
        data["attempts"] += 1
        data["successes"] += 1 if response.status_code < 400 else 0

    return {"request": [on_request], "response": [on_response]}
