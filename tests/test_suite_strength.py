"""Suite strength: the shipped suite notices each deliberate defect of the reference server.

Each run is ``pytest --imagegen`` (in-process, pytester) against the embedded reference
endpoint with one defect switched on through ``IMAGEGEN_REFERENCE_DEFECTS``, selecting with
``-k`` the areas that matter; the right check must fail. The clean server passes the whole
suite. Record mode ``none`` with an empty cassette folder lets the loopback server go live.
"""

from __future__ import annotations

import json
import os

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
from pytest_imagegen.names import ENV_REFERENCE_DEFECTS, OPTION, OPTION_RECORD_MODE
from pytest_imagegen.reference import DEFECTS

# The checks of a run against an endpoint without an upstream (no gateway checks).
PLAIN = {k: v for k, v in REGISTRY.items() if not v.needs_upstream}

pytest_plugins = ["pytester"]

#: defect -> (-k selection, the checks that must fail).
EXPECTED: dict[str, tuple[str, set[str]]] = {
    "accepts_chat_model": ("separation", {"separation.chat_model_refused_by_images"}),
    "image_model_on_chat": ("separation", {"separation.image_model_refused_by_chat"}),
    "drops_n": (
        "response_shape or size_format",
        {"response_shape.n_images", "edits.size_format_and_n_honoured"},
    ),
    "ignores_size": (
        "response_shape or size_format",
        {"response_shape.requested_size", "edits.size_format_and_n_honoured"},
    ),
    "ignores_format": (
        "response_shape or size_format",
        {"response_shape.requested_format", "edits.size_format_and_n_honoured"},
    ),
    "no_usage": (
        "response_shape or completed_with_usage",
        {"response_shape.usage", "streaming.completed_with_usage"},
    ),
    "empty_data": (
        "response_shape or fallback.chain",
        {
            "response_shape.schema",
            "response_shape.n_images",
            "fallback.chain_succeeds_within_deadline",
        },
    ),
    "auth_wrong_status": ("errors", {"errors.wrong_key_is_authentication"}),
    "unknown_model_ok": ("errors", {"errors.unknown_model_is_model_not_found"}),
    "quota_as_rate_limit": (
        "errors or fallback",
        {"errors.quota_is_not_retryable", "fallback.non_retryable_stops_at_once"},
    ),
    "no_retry_after": ("errors", {"errors.rate_limit_carries_retry_after"}),
    "html_errors": (
        "errors",
        {"errors.error_envelopes_are_openai_shaped", "errors.server_error_is_retryable"},
    ),
    "non_openai_envelope": ("errors", {"errors.error_envelopes_are_openai_shaped"}),
    "no_validation": (
        "request_shape",
        {
            "request_shape.invalid_requests_refused",
            "request_shape.rejects_unsupported_quality",
            "request_shape.rejects_unsupported_size",
            "request_shape.rejects_response_format",
            "request_shape.rejects_n_out_of_range",
            "request_shape.rejects_empty_prompt",
        },
    ),
    "wrong_error_param": (
        "request_shape",
        {"request_shape.rejects_unsupported_quality", "request_shape.rejects_unsupported_size"},
    ),
    # Every generation stalls: only the stalled-primary check is run (each attempt waits
    # out its timeout, so a wider selection would only be slower).
    "stalls": ("stalled_primary", {"fallback.stalled_primary_falls_back"}),
    "stream_buffered": ("streaming", {"streaming.not_buffered"}),
    "stream_no_completed": ("streaming", {"streaming.completed_with_usage"}),
    "stream_stalls": ("first_partial", {"streaming.first_partial_within_timeout"}),
    "stream_extra_partials": ("streaming", {"streaming.no_more_partials_than_asked"}),
    "stream_out_of_order": (
        "streaming",
        {"streaming.events_in_order", "streaming.edit_events_in_order"},
    ),
    "edits_multipart_broken": ("edits", {"edits.multipart_accepted", "edits.mask_accepted"}),
    "edits_json_refused": ("edits", {"edits.json_image_references"}),
    "edits_single_image": ("edits", {"edits.several_images_as_the_model_allows"}),
    "ignores_mask_size": ("edits", {"edits.mask_of_another_size_refused"}),
    "accepts_any_file": ("edits", {"edits.non_image_file_refused"}),
    "no_input_fidelity": ("edits", {"edits.input_fidelity_as_the_model_allows"}),
    "variations_for_all": ("edits", {"edits.variations_only_where_served"}),
    "responses_no_image": ("chat_images", {"separation.chat_images_through_responses"}),
    "responses_ignores_size": ("chat_images", {"separation.chat_images_through_responses"}),
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "IMAGEGEN_")):
            monkeypatch.delenv(name)


def _run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, str]]:
    result = pytester.runpytest(
        OPTION, f"{OPTION_RECORD_MODE}=none", "--imagegen-report=report.json", "-q", *args
    )
    report = json.loads((pytester.path / "report.json").read_text())
    return result, {t["check"]: t["outcome"] for t in report["tests"]}


def test_every_defect_has_an_expectation() -> None:
    assert set(EXPECTED) == set(DEFECTS)
    for _selection, checks in EXPECTED.values():
        assert checks <= set(PLAIN), checks - set(PLAIN)


def test_clean_server_passes_the_whole_suite(pytester: pytest.Pytester) -> None:
    result, outcomes = _run(pytester)
    assert set(outcomes) == set(PLAIN)
    assert {c: o for c, o in outcomes.items() if o != "passed"} == {}
    assert result.ret == pytest.ExitCode.OK
    # Nothing was recorded: the loopback server went live, no cassette was written.
    assert not (pytester.path / "cassettes").exists() or not any(
        (pytester.path / "cassettes").rglob("*.yaml")
    )


@pytest.mark.parametrize("defect", sorted(EXPECTED))
def test_defect_fails_the_right_check(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, defect: str
) -> None:
    selection, must_fail = EXPECTED[defect]
    monkeypatch.setenv(ENV_REFERENCE_DEFECTS, defect)
    result, outcomes = _run(pytester, "-k", selection)
    failed = {check for check, outcome in outcomes.items() if outcome == "failed"}
    missing = must_fail - failed
    assert not missing, f"{defect}: expected failures of {sorted(missing)}; got {sorted(failed)}"
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # Failures are reported, never turned into skips or errors.
    assert all(outcome in ("passed", "failed", "skipped") for outcome in outcomes.values())
