"""The registry of conformance checks: small named functions with stable ids ``area.name``.

Every check takes a :class:`~pytest_imagegen.checks.context.CheckContext` and either returns
(passed), raises :class:`~pytest_imagegen.errors.ConformanceFailure` (failed; an
``AssertionError`` carrying the :class:`~pytest_imagegen.errors.Diagnosis` when the endpoint
answered with an error), or raises :class:`CheckSkipped` (cannot run against this endpoint,
with the reason). The shipped suite (``pytest --imagegen``) turns each (endpoint, check) pair
into a test whose name is the check id; :func:`run` runs the same functions without pytest::

    from pytest_imagegen.checks import run
    for result in run(endpoint, select=["separation", "errors.wrong_key_is_authentication"]):
        print(result.id, result.status, result.message)

Each check's docstring says what it asserts and, after ``Fails with:``, its failure text.
"""

from __future__ import annotations

from pytest_imagegen.checks.context import CheckSkipped
from pytest_imagegen.checks.registry import (
    AREAS,
    NEEDS_FAULTS,
    NEEDS_LIVE,
    NEEDS_UPSTREAM,
    REGISTRY,
    Check,
    CheckResult,
    applicable,
    catalogue,
    check,
    get_check,
    run,
    run_check,
    select_checks,
)
from pytest_imagegen.errors import ConformanceFailure

__all__ = [
    "AREAS",
    "NEEDS_FAULTS",
    "NEEDS_LIVE",
    "NEEDS_UPSTREAM",
    "REGISTRY",
    "Check",
    "CheckResult",
    "CheckSkipped",
    "ConformanceFailure",
    "applicable",
    "catalogue",
    "check",
    "get_check",
    "run",
    "run_check",
    "select_checks",
]

# The areas register their checks on import.
from pytest_imagegen.checks import (  # noqa: F401
    cost,
    edits,
    efficiency,
    error_answers,
    fallback_chain,
    gateway,
    request_shape,
    response_shape,
    separation,
    streaming,
)
