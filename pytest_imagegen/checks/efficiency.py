"""Efficiency: latency p50/p95 against the deadline and DESIGN.md's ratings, success rate,
estimated cost per image, over a few bounded requests."""

from __future__ import annotations

from pytest_imagegen.checks.context import CheckContext
from pytest_imagegen.checks.registry import check

#: Requests made by ``latency_and_success_rate`` (sequential, each bounded by timeout_s).
SAMPLES = 3


@check("efficiency")
def latency_and_success_rate(ctx: CheckContext) -> None:
    """A few sequential requests (3) all succeed, and their p95 latency is within
    ``deadline_s``; p50, p95, the rating (excellent <= 3 s, good <= 8 s, acceptable <= 15 s,
    poor beyond; judged on p50) and the estimated cost per image are recorded.

    Fails with: "p95 latency 42.10 s exceeds deadline_s=30 (p50 20.00 s, rating poor)" or
    "2 of 3 requests succeeded (67%); first failure: <diagnosis>".
    """
    from pytest_imagegen.budget import Budget
    from pytest_imagegen.latency import percentile, rating

    params = ctx.cheap_params()
    client = ctx.client()
    calls = [ctx.generate(client=client, **params) for _ in range(SAMPLES)]
    latencies = [c.latency_s for c in calls]
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    ok = [c for c in calls if c.ok]
    per_image = 0.0 if ctx.endpoint.is_reference else Budget.estimate(ctx.profile, **params)
    ctx.record(
        p50_s=p50,
        p95_s=p95,
        rating=rating(p50),
        success_rate=len(ok) / len(calls),
        cost_per_image_usd=per_image,
    )
    assert p50 is not None and p95 is not None
    if p95 > ctx.endpoint.deadline_s:
        ctx.fail(
            f"p95 latency {p95:.2f} s exceeds deadline_s={ctx.endpoint.deadline_s:g} "
            f"(p50 {p50:.2f} s, rating {rating(p50)})"
        )
    if len(ok) < len(calls):
        first = next(c for c in calls if not c.ok)
        ctx.fail(
            f"{len(ok)} of {len(calls)} requests succeeded ({len(ok) / len(calls):.0%}); first "
            f"failure: {first.describe()}",
            call=first,
        )
