"""Cost: the run's estimated spend stays under the budget, and the guard refused nothing."""

from __future__ import annotations

from pytest_imagegen.checks.context import CheckContext
from pytest_imagegen.checks.registry import check


@check("cost", sends_requests=False)
def within_budget(ctx: CheckContext) -> None:
    """The run's estimated spend so far (all endpoints, all workers) is within ``budget_usd``
    and the spend guard refused no request. Each live request reserves its estimate before
    it goes out; an answer with more images than were asked for is charged for them as
    well, which can take the spend past the cap.

    Fails with: "the budget guard refused 2 request(s): the run needs more than budget_usd=$1.00;
    raise --imagegen-budget" or "estimated spend $1.20 is over budget_usd=$1.00: 3 answer(s)
    held more images than were asked for, $0.30 beyond their estimates".
    """
    from pytest_imagegen.budget import _money

    budget = ctx.budget
    if budget is None:
        ctx.skip("no budget guard in this run (pass budget=Budget(cap_usd) to checks.run)")
    state = budget.state()
    ctx.record(run_spend_usd=state["spent_usd"], budget_usd=state["cap_usd"])
    if state["refused"]:
        ctx.fail(
            f"the budget guard refused {state['refused']} request(s): the run needs more than "
            f"budget_usd={_money(state['cap_usd'])}; raise --imagegen-budget"
        )
    if state["spent_usd"] > state["cap_usd"]:
        ctx.fail(
            f"estimated spend {_money(state['spent_usd'])} is over "
            f"budget_usd={_money(state['cap_usd'])}: {state['charges']} answer(s) held more "
            f"images than were asked for, {_money(state['extra_usd'])} beyond their estimates"
        )
