"""Area ``fallback``: the endpoint's chain (``fallback.generate``) finishes inside
``deadline_s``, recovers from a stalled primary, and stops at once on a non-retryable
category."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_imagegen.checks.context import PROMPT, CheckContext
from pytest_imagegen.checks.registry import check
from pytest_imagegen.errors import Category

if TYPE_CHECKING:
    from pytest_imagegen.fallback import Outcome

# Scheduling noise allowed on top of deadline_s (two cores shared with other test runs).
_DEADLINE_SLACK_S = 0.5


def _run(ctx: CheckContext, *, faulted: bool = False) -> Outcome:
    """One ``generate`` run; its attempts count in the report's latency and success figures
    unless failures were injected on purpose (``faulted``)."""
    from pytest_imagegen.fallback import generate

    played = len(ctx.plays) if ctx.plays is not None else 0
    outcome = generate(ctx.client(), ctx.endpoint, PROMPT, **ctx.cheap_params())
    ctx.record(fallback_trace=outcome.trace(), response_bytes=outcome.response_bytes)
    latencies = [round(a.latency_s, 4) for a in outcome.attempts]
    plays = ctx.plays[played:] if ctx.plays is not None else []
    if plays and len(plays) == len(latencies):
        # Every attempt was answered from the cassette: report the recorded latencies.
        ctx.record(replay_latencies_s=latencies)
        dates = [p["recorded_at"] for p in plays if p.get("recorded_at")]
        if dates:
            ctx.data["recorded_at"] = max([*dates, ctx.data.get("recorded_at") or ""])
        if all(p.get("latency_s") is not None for p in plays):
            latencies = [round(float(p["latency_s"]), 4) for p in plays]
    if not faulted:
        ctx.record(
            latencies_s=latencies,
            attempts=len(outcome.attempts),
            successes=sum(1 for a in outcome.attempts if a.diagnosis is None),
        )
    ctx.record_images(outcome.images)
    if not faulted:
        from pytest_imagegen.checks.context import priced_params

        ctx.record(
            succeeded_params=[
                priced_params(a.params) for a in outcome.attempts if a.diagnosis is None
            ]
        )
    return outcome


def _within_deadline(ctx: CheckContext, outcome: Outcome) -> None:
    deadline = ctx.endpoint.deadline_s
    if outcome.elapsed_s > deadline + _DEADLINE_SLACK_S:
        raise_failure(
            ctx,
            f"the fallback chain took {outcome.elapsed_s:.2f} s, past deadline_s={deadline:g}",
            outcome,
        )


def raise_failure(ctx: CheckContext, message: str, outcome: Outcome) -> None:
    from pytest_imagegen.errors import ConformanceFailure

    raise ConformanceFailure(f"{message}\n{outcome.trace()}", diagnosis=outcome.diagnosis)


@check("fallback")
def chain_succeeds_within_deadline(ctx: CheckContext) -> None:
    """An image request run through the endpoint's fallback chain (``generate``) returns
    images inside ``deadline_s``.

    Fails with: "the fallback chain failed after 3 attempt(s): <diagnosis>" followed by the
    trace of attempts, or "the fallback chain took 12.30 s, past deadline_s=10".
    """
    outcome = _run(ctx)
    if not outcome.ok:
        raise_failure(
            ctx,
            f"the fallback chain failed after {len(outcome.attempts)} attempt(s): "
            f"{outcome.diagnosis}",
            outcome,
        )
    _within_deadline(ctx, outcome)


@check("fallback", needs_faults=True, records_faults=True)
def stalled_primary_falls_back(ctx: CheckContext) -> None:
    """With the first attempt stalled (the ``stall`` fault), the chain times it out after
    ``timeout_s`` and a later step returns images, all inside ``deadline_s``. Its cassette
    keeps the stalled attempt as a timeout: a replay runs the chain through the same
    timeout at once, instead of waiting ``timeout_s`` again.

    Fails with: "with a stalled primary the chain failed after 3 attempt(s): timeout ..."
    (plus the trace) or "... took 12.30 s, past deadline_s=10".
    """
    if not ctx.endpoint.fallback:
        ctx.skip(f"endpoint {ctx.endpoint.name!r} has no fallback chain")
    ctx.script_fault("stall", times=1)
    outcome = _run(ctx, faulted=True)
    if not outcome.ok:
        raise_failure(
            ctx,
            f"with a stalled primary the chain failed after {len(outcome.attempts)} "
            f"attempt(s): {outcome.diagnosis}",
            outcome,
        )
    first = outcome.attempts[0].diagnosis
    if first is None or first.category != Category.TIMEOUT:
        raise_failure(ctx, "the stalled first attempt was not diagnosed as a timeout", outcome)
    _within_deadline(ctx, outcome)


@check("fallback", needs_faults=True)
def non_retryable_stops_at_once(ctx: CheckContext) -> None:
    """A non-retryable failure (exhausted quota) ends the chain after one attempt, with the
    ``quota`` category.

    Fails with: "a quota failure took 2 attempts; a non-retryable category must stop the chain
    at once" (plus the trace).
    """
    ctx.script_fault("quota", times=1)
    outcome = _run(ctx, faulted=True)
    if len(outcome.attempts) != 1:
        raise_failure(
            ctx,
            f"a quota failure took {len(outcome.attempts)} attempts; a non-retryable category "
            f"must stop the chain at once",
            outcome,
        )
    if outcome.diagnosis is None or outcome.diagnosis.category != Category.QUOTA:
        got = outcome.diagnosis.category if outcome.diagnosis else "success"
        raise_failure(ctx, f"a quota failure ended as {got}, expected quota", outcome)
