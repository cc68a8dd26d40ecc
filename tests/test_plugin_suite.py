"""Acceptance runs of the main job: the suite under pytest-xdist with one merged report, the
suite against an endpoint named in another project's pyproject.toml, and the budget guard
shared by four xdist workers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

# Imported here so that pytester's in-process runs, which restore sys.modules after each
# run, do not import them again every time.
import openai  # noqa: F401
import PIL.Image  # noqa: F401
import pytest
import vcr  # noqa: F401
import werkzeug.serving  # noqa: F401

import pytest_imagegen.cassettes
import pytest_imagegen.reference.app
import pytest_imagegen.report
import pytest_imagegen.strategies  # noqa: F401
from pytest_imagegen.checks import REGISTRY
from pytest_imagegen.names import OPTION, OPTION_BUDGET
from pytest_imagegen.reference import ReferenceServer

# The checks of a run against an endpoint without an upstream (no gateway checks).
PLAIN = {k: v for k, v in REGISTRY.items() if not v.needs_upstream}

pytest_plugins = ["pytester"]

# Whole runs of the suite in fresh processes and under xdist (see docs/development.md).
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "IMAGEGEN_")):
            monkeypatch.delenv(name)


@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch) -> Iterator[ReferenceServer]:
    """A reference server the test starts, given to the project as an ordinary endpoint."""
    with ReferenceServer() as server:
        monkeypatch.setenv("LOCAL_KEY", server.api_key)
        yield server


def _pyproject(server: ReferenceServer) -> str:
    return f"""
        [tool.imagegen]
        report = "imagegen-report.json"

        [[tool.imagegen.endpoints]]
        name = "local"
        base_url = "{server.base_url}"
        api_key_env = "LOCAL_KEY"
        image_model = "gpt-image-1"
        chat_model = "gpt-4o-mini"
        """


def test_xdist_run_has_the_same_outcomes_and_one_merged_report(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        OPTION, "-n", "2", "--imagegen-report=report.json", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=len(PLAIN))
    report = json.loads((pytester.path / "report.json").read_text())
    assert report["run"]["workers"] == 2
    assert report["totals"]["tests"] == report["totals"]["passed"] == len(PLAIN)
    assert {t["check"] for t in report["tests"]} == set(PLAIN)
    assert report["endpoints"]["reference"]["attempts"] > 0
    # One summary, printed by the controller, with the matrix.
    assert result.stdout.str().count("= imagegen =") == 1
    result.stdout.fnmatch_lines(
        ["verdict: PASSED*", "reference  5  *8  *", "*imagegen report written to*"]
    )


def test_suite_runs_against_the_endpoint_another_project_names(
    pytester: pytest.Pytester, local: ReferenceServer
) -> None:
    pytester.makepyprojecttoml(_pyproject(local))
    result = pytester.runpytest(OPTION, "-rs")
    outcomes = result.parseoutcomes()
    # Skipped: the fault checks, and the Responses check (no chat_images declared).
    skipped = sum(1 for c in PLAIN.values() if c.needs_faults) + 1
    assert outcomes == {"passed": len(PLAIN) - skipped, "skipped": skipped}, result.stdout.str()
    report = json.loads((pytester.path / "imagegen-report.json").read_text())
    assert set(report["endpoints"]) == {"local"}
    assert {t["nodeid"].split("[")[-1] for t in report["tests"]} == {"local]"}
    # gpt-image-1 is billed: the estimated spend of the live run is reported, under budget.
    assert 0 < report["totals"]["estimated_spend_usd"] < 1.0
    assert local.log.generations, "the suite never reached the configured endpoint"


def test_budget_is_shared_by_four_workers(
    pytester: pytest.Pytester, local: ReferenceServer
) -> None:
    pytester.makepyprojecttoml(_pyproject(local))
    pytester.makepyfile(
        test_app="""
        import pytest

        @pytest.mark.parametrize("i", range(8))
        def test_generate(imagegen_client, imagegen_endpoint, i):
            imagegen_client.images.generate(
                model=imagegen_endpoint.image_model, prompt=f"cat {i}", quality="low",
                size="1024x1024",
            )
        """
    )
    # $0.011 per image against $0.05: four requests fit, whichever workers send them.
    result = pytester.runpytest_subprocess(
        "-n", "4", f"{OPTION_BUDGET}=0.05", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=4, failed=4)
    result.stdout.fnmatch_lines(["*would spend $0.0110, $0.0060 of $0.0500 left*"])
    assert len(local.log.generations) == 4
    report = json.loads((pytester.path / "imagegen-report.json").read_text())
    assert report["totals"]["estimated_spend_usd"] == pytest.approx(0.044)


def test_suite_recorded_once_replays_offline_and_lists_unused_cassettes(
    pytester: pytest.Pytester,
) -> None:
    record = pytester.runpytest(OPTION, "--imagegen-record-mode=once", "-p", "no:cacheprovider")
    record.assert_outcomes(passed=len(PLAIN))
    folder = pytester.path / "cassettes" / "reference" / "conformance"
    recorded = {p.stem for p in folder.glob("*.yaml")}
    with_requests = {
        c.id
        for c in PLAIN.values()
        if c.sends_requests and (not c.needs_faults or c.records_faults) and not c.live_timing
    }
    assert recorded == with_requests
    stale = folder / "separation.retired_check.yaml"
    stale.write_text((folder / "separation.image_call_carries_image_model.yaml").read_text())

    replay = pytester.runpytest(OPTION, "--imagegen-report=report.json", "-p", "no:cacheprovider")
    replay.assert_outcomes(passed=len(PLAIN))
    report = json.loads((pytester.path / "report.json").read_text())
    statuses = {t["check"]: t["cassette_status"] for t in report["tests"]}
    assert {statuses[c] for c in with_requests} == {"replayed"}
    assert report["unused_cassettes"] == [str(stale)]
    replay.stdout.fnmatch_lines(["unused cassettes (1):*", f"  {stale}"])
