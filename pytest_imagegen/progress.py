"""Progress of a live run, printed through pytest's terminal reporter.

Image generation takes seconds to minutes per request, so a live run can sit on one line of
dots for a long time. Every :data:`EVERY_S` seconds (on the controller, as test reports
arrive, so also under pytest-xdist) a line says how far the run is: tests done of the total,
live requests sent, elapsed time and estimated spend. Replays print nothing: they are fast,
and their requests cost nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

#: Seconds between progress lines (``IMAGEGEN_PROGRESS_S`` overrides it; 0 prints one
#: after every test).
EVERY_S = 5.0
ENV_EVERY_S = "IMAGEGEN_PROGRESS_S"

#: Cassette statuses of tests whose requests really went out.
_LIVE = frozenset({"recorded", "live"})


def every_s(env: Mapping[str, str]) -> float:
    """The interval from the environment (bad or negative values: the default)."""
    try:
        value = float(env.get(ENV_EVERY_S, "") or EVERY_S)
    except ValueError:
        return EVERY_S
    return value if value >= 0 else EVERY_S


class Progress:
    """Tallies finished tests; :meth:`line` says when a progress line is due."""

    def __init__(
        self,
        *,
        total: int,
        every: float = EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.every = every
        self._clock = clock
        self._started = clock()
        self._last = self._started
        self.done = 0
        self.live_requests = 0
        self.spend_usd = 0.0
        self._seen: set[str] = set()

    def add(self, nodeid: str, data: Mapping[str, Any] | None, *, finished: bool) -> None:
        """Count one test report; ``finished`` for the report that ends the test."""
        if not finished or nodeid in self._seen:
            return
        self._seen.add(nodeid)
        self.done += 1
        if not data:
            return
        status = data.get("cassette_status")
        attempts = data.get("requests", data.get("attempts"))
        # No cassette at all (checks with scripted faults) means the requests went out too.
        if isinstance(attempts, int) and (status in _LIVE or data.get("cassette") is None):
            self.live_requests += attempts
        cost = data.get("cost_usd")
        if isinstance(cost, (int, float)) and not isinstance(cost, bool):
            self.spend_usd += float(cost)

    def line(self) -> str | None:
        """The progress line when one is due (live requests sent, interval passed), else None."""
        now = self._clock()
        if self.live_requests == 0 or now - self._last < self.every:
            return None
        self._last = now
        total = f"/{self.total}" if self.total else ""
        return (
            f"imagegen: {self.done}{total} tests, {self.live_requests} live requests, "
            f"{now - self._started:.1f} s elapsed, estimated spend ${self.spend_usd:.4f}"
        )
