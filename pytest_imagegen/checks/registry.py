"""The check registry: :func:`check` registers a function as check ``area.name``;
:func:`select_checks`, :func:`run` and :func:`catalogue` read what is registered.

The areas' modules import this one; ``pytest_imagegen.checks`` imports them (so importing
the package registers every check).
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_imagegen.checks.context import CheckSkipped
from pytest_imagegen.errors import ConformanceFailure, Diagnosis

if TYPE_CHECKING:
    import openai

    from pytest_imagegen.budget import Budget
    from pytest_imagegen.checks.context import CheckContext
    from pytest_imagegen.config import Endpoint
    from pytest_imagegen.reference import ReferenceServer, RemoteReference

__all__ = [
    "AREAS",
    "NEEDS_FAULTS",
    "NEEDS_LIVE",
    "NEEDS_UPSTREAM",
    "REGISTRY",
    "Check",
    "CheckResult",
    "applicable",
    "catalogue",
    "check",
    "get_check",
    "run",
    "run_check",
    "select_checks",
]

#: The areas, in the order the suite runs them (``cost`` last: it reads the run's spend).
AREAS = (
    "separation",
    "request_shape",
    "response_shape",
    "edits",
    "streaming",
    "errors",
    "fallback",
    "gateway",
    "efficiency",
    "cost",
)

#: The skip reason of a check that needs faults against any other endpoint.
NEEDS_FAULTS = (
    "needs fault injection: endpoint {name!r} is not the reference server and declares no "
    "upstream (see docs/gateways.md)"
)
#: The skip reason of a timing check when the endpoint's answers would come from a cassette.
NEEDS_LIVE = (
    "measures the timing of a live stream, which a cassette cannot keep: endpoint {name!r} is "
    "replayed; run it live with --imagegen-record-mode=once (or new_episodes, all)"
)
#: The skip reason of a gateway check for an endpoint without an upstream.
NEEDS_UPSTREAM = (
    "needs an upstream: endpoint {name!r} declares none (upstream = {{ listen = ... }} makes the "
    "reference server its upstream; see docs/gateways.md)"
)


@dataclass(frozen=True)
class Check:
    """One registered check."""

    id: str  # "area.name", stable: it is the test name and the cassette name
    area: str
    name: str
    func: Callable[[CheckContext], None] = field(repr=False)
    summary: str  # the docstring's first paragraph: what the check asserts
    failure: str  # the docstring's "Fails with:" text
    needs_faults: bool = False  # scripts faults on the reference server (or a gateway's upstream)
    sends_requests: bool = True
    needs_upstream: bool = False  # judges what a gateway's upstream received
    # measures the timing of live traffic: runs without a cassette (vcrpy reads a whole
    # answer before the client sees any of it), and is skipped when answers are replayed
    live_timing: bool = False
    # scripts a stall whose outcome a cassette keeps (the timeout, see
    # pytest_imagegen.cassettes.note_timeout): recorded like the others, replayed at once
    records_faults: bool = False

    def __call__(self, ctx: CheckContext) -> None:
        if self.live_timing and ctx.replaying:
            raise CheckSkipped(NEEDS_LIVE.format(name=ctx.endpoint.name))
        if self.needs_upstream and not ctx.through_gateway:
            raise CheckSkipped(NEEDS_UPSTREAM.format(name=ctx.endpoint.name))
        if self.needs_faults and not ctx.can_inject_faults:
            raise CheckSkipped(NEEDS_FAULTS.format(name=ctx.endpoint.name))
        self.func(ctx)


#: Every check, by id, in suite order (area order, then registration order).
REGISTRY: dict[str, Check] = {}


def _parse_doc(doc: str | None) -> tuple[str, str]:
    text = inspect.cleandoc(doc or "")
    summary = " ".join(text.split("\n\n", 1)[0].split())  # the first paragraph
    failure = ""
    marker = "Fails with:"
    if marker in text:
        failure = " ".join(text.split(marker, 1)[1].split())
    return summary, failure


def check(
    area: str,
    *,
    needs_faults: bool = False,
    sends_requests: bool = True,
    needs_upstream: bool = False,
    live_timing: bool = False,
    records_faults: bool = False,
) -> Callable[[Callable[[CheckContext], None]], Callable[[CheckContext], None]]:
    """Register the decorated function as check ``area.<function name>``."""
    if area not in AREAS:
        raise ValueError(f"unknown check area {area!r}; areas: {', '.join(AREAS)}")

    def register(func: Callable[[CheckContext], None]) -> Callable[[CheckContext], None]:
        summary, failure = _parse_doc(func.__doc__)
        if not summary or not failure:
            raise ValueError(
                f"check {func.__name__}: the docstring must say what it asserts "
                "and, after 'Fails with:', its failure text"
            )
        entry = Check(
            id=f"{area}.{func.__name__}",
            area=area,
            name=func.__name__,
            func=func,
            summary=summary,
            failure=failure,
            needs_faults=needs_faults,
            sends_requests=sends_requests,
            needs_upstream=needs_upstream,
            live_timing=live_timing,
            records_faults=records_faults,
        )
        if entry.id in REGISTRY:
            raise ValueError(f"check {entry.id} is registered twice")
        REGISTRY[entry.id] = entry
        ordered = sorted(REGISTRY.values(), key=lambda c: AREAS.index(c.area))
        REGISTRY.clear()
        REGISTRY.update((c.id, c) for c in ordered)
        return func

    return register


def get_check(check_id: str) -> Check:
    """The check with this id (KeyError naming the closest ids otherwise)."""
    try:
        return REGISTRY[check_id]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(check_id, list(REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(
            f"no check {check_id!r}.{hint} See pytest_imagegen.checks.REGISTRY."
        ) from None


def applicable(entry: Check, endpoint: Endpoint) -> bool:
    """Whether ``entry`` belongs in a run against ``endpoint``: the ``gateway`` checks only for
    an endpoint with an upstream (for others they are not applicable, not skipped)."""
    return endpoint.upstream is not None or not entry.needs_upstream


def select_checks(select: str | Iterable[str] | None = None) -> list[Check]:
    """The checks named by ``select``: ids, area names or ``fnmatch`` patterns (all when None).

    Raises ValueError for an entry that matches nothing.
    """
    if select is None:
        return list(REGISTRY.values())
    entries = [select] if isinstance(select, str) else list(select)
    chosen: set[str] = set()
    for entry in entries:
        matched = [
            c.id
            for c in REGISTRY.values()
            if entry in (c.id, c.area) or fnmatch.fnmatchcase(c.id, entry)
        ]
        if not matched:
            import difflib

            close = difflib.get_close_matches(entry, [*AREAS, *REGISTRY], n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"{entry!r} names no check or area.{hint}")
        chosen.update(matched)
    return [c for c in REGISTRY.values() if c.id in chosen]


@dataclass(frozen=True)
class CheckResult:
    """The result of one check against one endpoint, outside pytest."""

    id: str
    endpoint: str
    status: str  # "passed" | "warned" | "failed" | "skipped"
    message: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    diagnosis: Diagnosis | None = None

    @property
    def passed(self) -> bool:
        """Passed, with or without deviation warnings."""
        return self.status in ("passed", "warned")


def run_check(entry: Check, ctx: CheckContext) -> CheckResult:
    """Run one check and turn its outcome into a :class:`CheckResult` (never raises for a
    failure or a skip; other exceptions, which are bugs, propagate).

    A check that passed with :class:`~pytest_imagegen.verdict.DeviationWarning` s is
    ``warned`` (their messages joined); the warnings are issued as usual, so one the warning
    filters turn into an error fails the check.
    """
    from pytest_imagegen.verdict import DeviationWarning

    name = ctx.endpoint.name
    try:
        entry(ctx)
    except CheckSkipped as exc:
        return CheckResult(entry.id, name, "skipped", exc.reason, ctx.data)
    except ConformanceFailure as exc:
        return CheckResult(entry.id, name, "failed", str(exc), ctx.data, exc.diagnosis)
    except DeviationWarning as exc:  # an error by the caller's warning filters
        return CheckResult(entry.id, name, "failed", str(exc), ctx.data)
    deviations = ctx.data.get("deviations") or []
    if deviations:
        return CheckResult(entry.id, name, "warned", "\n".join(deviations), ctx.data)
    return CheckResult(entry.id, name, "passed", "", ctx.data)


def run(
    endpoint: Endpoint,
    *,
    select: str | Iterable[str] | None = None,
    reference: ReferenceServer | RemoteReference | None = None,
    client_factory: Callable[..., openai.OpenAI] | None = None,
    budget: Budget | None = None,
) -> list[CheckResult]:
    """Run the selected checks against ``endpoint``, without pytest.

    ``select``: check ids, area names or patterns (when None: every check that
    :func:`applicable` says belongs to the endpoint). ``reference`` is the
    :class:`~pytest_imagegen.reference.ReferenceServer` the endpoint points at, when it
    does, or the upstream of a gateway endpoint (``endpoint.upstream``; a
    ``ReferenceServer`` or ``RemoteReference``): checks that need scripted faults run only
    then (and are skipped otherwise), and the ``gateway`` checks only with an upstream; an
    embedded reference endpoint (empty ``base_url``) is pointed at it, and it is reset after
    each check. ``client_factory(**overrides)`` makes the ``openai.OpenAI`` clients (default
    ``endpoint.client``; it must accept ``http_client``). ``budget`` (a
    :class:`~pytest_imagegen.budget.Budget`) caps the estimated spend; without one, nothing
    is refused and ``cost.within_budget`` is skipped.
    """
    from pytest_imagegen.checks.context import CheckContext
    from pytest_imagegen.config import bind_reference

    endpoint = bind_reference(endpoint, reference)
    results = []
    chosen = select_checks(select)
    if select is None:
        chosen = [c for c in chosen if applicable(c, endpoint)]
    for entry in chosen:
        ctx = CheckContext(
            endpoint, reference=reference, budget=budget, client_factory=client_factory
        )
        try:
            results.append(run_check(entry, ctx))
        finally:
            if reference is not None:
                reference.reset()
    return results


def catalogue() -> str:
    """The check catalogue as a Markdown table (id, what it asserts, failure text)."""
    lines = ["| check id | asserts | fails with |", "|---|---|---|"]
    for entry in REGISTRY.values():
        needs = ""
        if entry.needs_faults:
            needs = " *(needs fault injection: the reference server or a gateway's upstream)*"
        if entry.needs_upstream:
            needs = " *(gateways with an upstream only)*"
        if entry.live_timing:
            needs = " *(live only: a cassette cannot keep the timing)*"
        lines.append(f"| `{entry.id}` | {entry.summary}{needs} | {entry.failure} |")
    return "\n".join(lines)
