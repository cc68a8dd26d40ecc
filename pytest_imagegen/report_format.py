"""Names and small formatters shared by the terminal summary (:mod:`pytest_imagegen.report`)
and the HTML page (:mod:`pytest_imagegen.html_report`), so neither imports the other."""

from __future__ import annotations

from collections.abc import Mapping

from pytest_imagegen.checks.registry import AREAS as CHECK_AREAS

#: Matrix columns: the suite's areas, then "other" for user tests marked ``imagegen``.
AREAS = (*CHECK_AREAS, "other")
#: A test's outcome in the report: ``warned`` is a pass that raised a deviation warning
#: (a test whose data says ``outcome: "warned"`` or carries ``warnings``).
TEST_OUTCOMES = ("passed", "warned", "failed", "skipped")
#: The four problem classes of DESIGN.md, in report order.
PROBLEM_CLASSES = ("technical", "quality", "efficiency", "cost")


def counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{counts[o]} {o}" for o in TEST_OUTCOMES if counts[o]) or "no tests"


def cell_text(counts: Mapping[str, int]) -> str:
    if not any(counts.values()):
        return "."
    text = str(counts.get("passed", 0))
    for outcome, mark in (("failed", "F"), ("warned", "W"), ("skipped", "S")):
        if counts.get(outcome):
            text += f" {counts[outcome]}{mark}"
    return text + "!" if counts.get("failed") else text


def cell_class(counts: Mapping[str, int]) -> str:
    """Green only when every test of the cell passed: a skip or a warning is not a pass."""
    if counts.get("failed"):
        return "fail"
    if counts.get("warned"):
        return "warn"
    if counts.get("skipped"):
        return "mixed" if counts.get("passed") else "skip"
    return "pass" if counts.get("passed") else "none"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def usd(value: float) -> str:
    return f"${value:.4f}"
