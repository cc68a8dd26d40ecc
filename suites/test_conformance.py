"""The shipped conformance suite: one test per (selected endpoint, registered check).

``pytest --imagegen`` adds this file to the collection. Each test is named after its check
id and endpoint, e.g. ``separation.image_call_carries_image_model[relay]``, so ``-k
separation`` or ``-k "errors and relay"`` select by name. The checks themselves live in
:mod:`pytest_imagegen.checks`; a check that cannot run against an endpoint is skipped with
the reason, never passed.

This module is found through ``pytest_imagegen.suites`` (installed from this folder), so it
imports only from ``pytest_imagegen``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_imagegen.checks import REGISTRY, Check, CheckSkipped, applicable
from pytest_imagegen.errors import ConformanceFailure

# Traceback styles for which a failed check shows its message instead of a traceback into
# the check's code (``--tb=long`` or ``--tb=native`` still show everything).
_SHORT_STYLES = ("auto", "short", "line", "no")


class CheckItem(pytest.Function):
    """A test item running one registered check against one endpoint."""

    def __init__(self, *, check: Check, endpoint: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.imagegen_check = check
        self.imagegen_endpoint_name = endpoint

    def reportinfo(self) -> tuple[Any, int | None, str]:
        # The check's own source; a domain that is not the tail of the node id keeps pytest
        # from printing "separation::name" for the dotted check id.
        func = self.imagegen_check.func
        try:
            path = Path(inspect.getsourcefile(func) or self.path)
            lineno: int | None = inspect.getsourcelines(func)[1] - 1
        except (OSError, TypeError):
            path, lineno = self.path, None
        return path, lineno, f"{self.imagegen_check.id} [{self.imagegen_endpoint_name}]"

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> Any:
        style = self.config.getoption("tbstyle", "auto")
        if isinstance(excinfo.value, ConformanceFailure) and style in _SHORT_STYLES:
            # The section header already names the check and the endpoint: the message says
            # what was seen, then what was expected and the fix, each once.
            check = self.imagegen_check
            failure = _failure_data(self)
            diagnosis = excinfo.value.diagnosis
            hint = failure.get("fix") or (diagnosis.hint if diagnosis is not None else None)
            expected = failure.get("expected") or check.summary.replace("``", "`")
            lines = [str(excinfo.value), f"expected: {expected}"]
            if hint:
                lines.append(f"fix: {hint}")
            return "\n".join(lines)
        return super().repr_failure(excinfo)


def _failure_data(item: pytest.Item) -> dict[str, Any]:
    """What the check said about its failure (expected, fix) in the test's report data."""
    for key, value in item.user_properties:
        if key == "imagegen" and isinstance(value, dict):
            failure = value.get("failure")
            return failure if isinstance(failure, dict) else {}
    return {}


def _runner(check: Check) -> Callable[..., None]:
    def run_check(_imagegen_check_context: Any) -> None:
        try:
            check(_imagegen_check_context)
        except CheckSkipped as exc:
            pytest.skip(exc.reason)

    run_check.__doc__ = check.summary
    return run_check


def imagegen_suite(module: pytest.Module) -> list[pytest.Item]:
    """Make the suite's items (called by the plugin's ``pytest_pycollect_makeitem``)."""
    from pytest_imagegen.suite import suite_endpoints

    endpoints = suite_endpoints(module.config)
    return [
        CheckItem.from_parent(
            module,
            name=f"{check.id}[{endpoint.name}]",
            callobj=_runner(check),
            check=check,
            endpoint=endpoint.name,
        )
        for check in REGISTRY.values()
        for endpoint in endpoints
        # The gateway checks exist only for gateways with an upstream: for any other
        # endpoint they are not applicable, rather than ten skips on every run.
        if applicable(check, endpoint)
    ]
