"""Suite strength: every registered check fails on a matching defect.

:data:`CASES` names, for each way an endpoint can be broken (a defect of the reference
server, or a misbehaviour of the test gateway in front of it, ``tests/_gateway.py``), the
checks that must fail on it, and the configuration those checks need. Every check of the
registry must appear in some case, so a new check without a defect that shows it failing
fails :func:`test_every_check_fails_on_some_defect`. The cases run in-process through
:func:`pytest_imagegen.checks.run` (the plugin runs the same check functions); a case with
a configuration of its own also passes without its defect, so the failure is the defect's.
One ``pytest --imagegen`` run (pytester) shows the clean server passing the whole suite
under the plugin, and one a defect failing its check there.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

# Imported here so that pytester's in-process runs, which restore sys.modules after each
# run, do not import them again every time.
import openai  # noqa: F401
import PIL.Image  # noqa: F401
import pytest
import vcr  # noqa: F401
import werkzeug.serving  # noqa: F401
from _gateway import Gateway, Misbehaviour

import pytest_imagegen.cassettes
import pytest_imagegen.reference.app
import pytest_imagegen.report
import pytest_imagegen.strategies  # noqa: F401
from pytest_imagegen.budget import Budget
from pytest_imagegen.checks import REGISTRY, CheckResult, run
from pytest_imagegen.config import Endpoint, Upstream, load_settings
from pytest_imagegen.names import ENV_REFERENCE_DEFECTS, OPTION, OPTION_RECORD_MODE
from pytest_imagegen.profiles import get_profile
from pytest_imagegen.reference import DEFECTS, ReferenceServer
from pytest_imagegen.verdict import DeviationWarning

pytest_plugins = ["pytester"]

# The cheapest gpt-image-1 request (the one response_shape.schema sends): a budget of
# exactly this lets that request through and nothing more.
ONE_CHEAP_IMAGE_USD = Budget.estimate(get_profile("gpt-image-1"), quality="low", size="1024x1024")


@dataclass(frozen=True)
class Case:
    """A broken endpoint and the checks that must fail on it.

    ``defects`` are switched on on the reference server; ``gateway`` puts the test gateway
    with that misbehaviour in front of it (the endpoint declares it as its upstream);
    ``billed`` makes the endpoint a billed one (not the free reference) under a budget of
    ``budget_usd``; ``also_run`` are checks run before ``must_fail`` for what they send;
    ``endpoint`` changes the endpoint's settings.
    """

    must_fail: frozenset[str]
    defects: tuple[str, ...] = ()
    gateway: Misbehaviour | None = None
    billed: bool = False
    budget_usd: float | None = None
    also_run: tuple[str, ...] = ()
    endpoint: Mapping[str, Any] = field(default_factory=dict)

    @property
    def configured(self) -> bool:
        """Whether the checks run on another endpoint than the embedded reference one."""
        return bool(self.gateway or self.billed or self.endpoint or self.budget_usd)


def _defect(name: str, *must_fail: str, **options: Any) -> tuple[str, Case]:
    return name, Case(frozenset(must_fail), defects=(name,), **options)


def _gateway(label: str, misbehaviour: Misbehaviour, *must_fail: str) -> tuple[str, Case]:
    return f"gateway {label}", Case(frozenset(must_fail), gateway=misbehaviour)


#: case name -> the broken endpoint and the checks that must fail on it.
CASES: dict[str, Case] = dict(
    [
        _defect("accepts_chat_model", "separation.chat_model_refused_by_images"),
        _defect("image_model_on_chat", "separation.image_model_refused_by_chat"),
        _defect("image_model_as_chat", "separation.image_model_is_image"),
        _defect(
            "drops_n",
            "response_shape.n_images",
            "edits.size_format_and_n_honoured",
        ),
        _defect("extra_images", "response_shape.n_images"),
        # Billed, an answer with an image more than asked costs more than was reserved.
        (
            "extra_images, billed under a budget",
            Case(
                frozenset({"cost.within_budget"}),
                defects=("extra_images",),
                billed=True,
                budget_usd=ONE_CHEAP_IMAGE_USD,
                also_run=("response_shape.schema",),
            ),
        ),
        _defect(
            "ignores_size",
            "response_shape.requested_size",
            "edits.size_format_and_n_honoured",
        ),
        _defect(
            "ignores_format",
            "response_shape.requested_format",
            "edits.size_format_and_n_honoured",
        ),
        _defect("uncompressed_png", "response_shape.body_size"),
        _defect(
            "refuses_gpt_image_quality",
            "request_shape.request_is_valid",
            "request_shape.valid_requests_succeed",
        ),
        _defect("no_usage", "response_shape.usage", "streaming.completed_with_usage"),
        _defect(
            "empty_data",
            "response_shape.schema",
            "response_shape.n_images",
            "fallback.chain_succeeds_within_deadline",
        ),
        _defect("auth_wrong_status", "errors.wrong_key_is_authentication"),
        _defect("unknown_model_ok", "errors.unknown_model_is_model_not_found"),
        _defect(
            "quota_as_rate_limit",
            "errors.quota_is_not_retryable",
            "fallback.non_retryable_stops_at_once",
        ),
        _defect("no_retry_after", "errors.rate_limit_carries_retry_after"),
        _defect(
            "html_errors",
            "errors.error_envelopes_are_openai_shaped",
            "errors.server_error_is_retryable",
        ),
        _defect("non_openai_envelope", "errors.error_envelopes_are_openai_shaped"),
        _defect(
            "no_validation",
            "request_shape.invalid_requests_refused",
            "request_shape.rejects_unsupported_quality",
            "request_shape.rejects_unsupported_size",
            "request_shape.rejects_response_format",
            "request_shape.rejects_n_out_of_range",
            "request_shape.rejects_empty_prompt",
        ),
        _defect(
            "wrong_error_param",
            "request_shape.rejects_unsupported_quality",
            "request_shape.rejects_unsupported_size",
        ),
        # Every generation stalls until the client's timeout_s (2 s by default).
        _defect(
            "stalls",
            "fallback.stalled_primary_falls_back",
            "efficiency.latency_and_success_rate",
        ),
        _defect("stream_buffered", "streaming.not_buffered"),
        _defect("stream_no_completed", "streaming.completed_with_usage"),
        _defect("stream_stalls", "streaming.first_partial_within_timeout"),
        _defect("stream_extra_partials", "streaming.no_more_partials_than_asked"),
        _defect(
            "stream_out_of_order",
            "streaming.events_in_order",
            "streaming.edit_events_in_order",
        ),
        _defect("edits_multipart_broken", "edits.multipart_accepted", "edits.mask_accepted"),
        _defect("edits_json_refused", "edits.json_image_references"),
        _defect("edits_single_image", "edits.several_images_as_the_model_allows"),
        _defect("ignores_mask_size", "edits.mask_of_another_size_refused"),
        _defect("accepts_any_file", "edits.non_image_file_refused"),
        _defect("no_input_fidelity", "edits.input_fidelity_as_the_model_allows"),
        _defect("variations_for_all", "edits.variations_only_where_served"),
        # The embedded reference endpoint declares chat_images = "responses".
        _defect("responses_no_image", "separation.chat_images_through_responses"),
        _defect("responses_ignores_size", "separation.chat_images_through_responses"),
        _gateway(
            "rewrites the model",
            Misbehaviour(rewrite_model="dall-e-3"),
            "gateway.model_forwarded",
            "separation.image_call_carries_image_model",
        ),
        _gateway("sends images to chat", Misbehaviour(image_to_chat=True), "gateway.route_kept"),
        _gateway(
            "drops output_format",
            Misbehaviour(drop_params=("output_format",)),
            "gateway.params_forwarded",
        ),
        # 4 attempts 0.35 s apart take over 1 s; with the client's 10 retries that is past
        # the 8 s deadline (a slower machine only makes it longer).
        (
            "gateway retries past the deadline",
            Case(
                frozenset({"gateway.attempts_within_limits"}),
                gateway=Misbehaviour(retries=3, retry_delay_s=0.35),
                endpoint={"timeout_s": 8.0, "deadline_s": 8.0, "max_retries": 10},
            ),
        ),
        _gateway(
            "answers upstream errors with 200",
            Misbehaviour(errors_as_200=True),
            "gateway.upstream_errors_reported",
        ),
        _gateway(
            "retries non-retryable errors",
            Misbehaviour(retries=2, retry_everything=True),
            "gateway.non_retryable_not_retried",
        ),
        _gateway(
            "answers quota as a rate limit",
            Misbehaviour(quota_as_rate_limit=True),
            "gateway.error_fields_preserved",
            "errors.quota_is_not_retryable",
        ),
        _gateway(
            "drops Retry-After",
            Misbehaviour(drop_retry_after=True),
            "gateway.retry_after_preserved",
            "errors.rate_limit_carries_retry_after",
        ),
        _gateway(
            "leaks its upstream key",
            Misbehaviour(leak_upstream_key=True),
            "gateway.upstream_key_not_returned",
        ),
        _gateway(
            "forwards the client's key",
            Misbehaviour(forward_client_key=True),
            "gateway.client_key_not_forwarded",
        ),
    ]
)

CLIENT_KEY = "sk-client-of-the-gateway-9876543210"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "IMAGEGEN_")):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    with ReferenceServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Endpoint:
    """The built-in reference endpoint, as settings resolve it with nothing configured."""
    settings = load_settings(cli={}, env={}, rootdir=tmp_path_factory.mktemp("empty"))
    (endpoint,) = settings.endpoints
    return endpoint


def _results(
    case: Case, server: ReferenceServer, embedded: Endpoint, *, broken: bool
) -> dict[str, CheckResult]:
    """Run the case's checks (with its defect when ``broken``) and return them by id."""
    budget = Budget(case.budget_usd) if case.budget_usd is not None else None
    endpoint = embedded
    if case.billed:
        endpoint = Endpoint(
            name="billed",
            base_url=server.base_url,
            api_key=server.api_key,
            image_model="gpt-image-1",
            profile=get_profile("gpt-image-1"),
            chat_model="gpt-4o-mini",
        )
    if case.gateway is None:
        return _run_checks(case, server, replace(endpoint, **case.endpoint), budget, broken)
    misbehaviour = case.gateway if broken else Misbehaviour()
    with Gateway(server.base_url, server.api_key, misbehaviour) as gateway:
        endpoint = Endpoint(
            name="gateway",
            base_url=gateway.base_url,
            image_model="gpt-image-1",
            profile=get_profile("gpt-image-1"),
            api_key=CLIENT_KEY,
            chat_model="gpt-4o-mini",
            timeout_s=3.0,
            deadline_s=20.0,
            upstream=Upstream(url=server.base_url, api_key=server.api_key),
        )
        return _run_checks(case, server, replace(endpoint, **case.endpoint), budget, broken)


def _run_checks(
    case: Case, server: ReferenceServer, endpoint: Endpoint, budget: Budget | None, broken: bool
) -> dict[str, CheckResult]:
    results = {}
    # One check at a time: run() resets the server after each check, defects included.
    for check_id in [*case.also_run, *sorted(case.must_fail)]:
        server.reset()
        if broken:
            server.defects.update(case.defects)
        (result,) = run(endpoint, select=check_id, reference=server, budget=budget)
        results[check_id] = result
    server.reset()
    return results


def test_every_check_fails_on_some_defect() -> None:
    shown = set().union(*(case.must_fail for case in CASES.values()))
    missing = [check_id for check_id in REGISTRY if check_id not in shown]
    assert not missing, (
        f"no case in tests/test_suite_strength.py shows {', '.join(missing)} failing: add a "
        f"defect that breaks what it checks to the reference server (DEFECTS in "
        f"pytest_imagegen/reference/faults.py, documented in docs/) or a misbehaviour to "
        f"tests/_gateway.py, and a case to CASES"
    )
    unknown = shown - set(REGISTRY)
    assert not unknown, f"CASES names checks that are not registered: {sorted(unknown)}"


def test_every_defect_has_a_case() -> None:
    used = {defect for case in CASES.values() for defect in case.defects}
    assert used == set(DEFECTS), f"defects without a case: {sorted(set(DEFECTS) - used)}"


@pytest.mark.parametrize("name", list(CASES))
def test_the_defect_fails_its_checks(
    server: ReferenceServer, embedded: Endpoint, name: str
) -> None:
    case = CASES[name]
    # A deviation is a warning, not the failure a case must show.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeviationWarning)
        results = _results(case, server, embedded, broken=True)
    outcomes = {check_id: (r.status, r.message) for check_id, r in results.items()}
    not_failed = {c: outcomes[c] for c in case.must_fail if outcomes[c][0] != "failed"}
    assert not not_failed, f"{name}: these checks did not fail: {not_failed}"
    for check_id in case.must_fail:
        assert results[check_id].message, check_id


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case.configured])
def test_the_configuration_passes_without_the_defect(
    server: ReferenceServer, embedded: Endpoint, name: str
) -> None:
    case = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeviationWarning)
        results = _results(case, server, embedded, broken=False)
    outcomes = {check_id: (r.status, r.message) for check_id, r in results.items()}
    assert all(status == "passed" for status, _ in outcomes.values()), outcomes


def test_an_answer_beyond_its_reservation_is_charged_past_the_cap(
    server: ReferenceServer, embedded: Endpoint
) -> None:
    results = _results(CASES["extra_images, billed under a budget"], server, embedded, broken=True)
    message = results["cost.within_budget"].message
    assert "is over budget_usd=$0.0110: 1 answer(s) held more images than were asked for" in (
        message
    )
    assert results["cost.within_budget"].data["run_spend_usd"] == pytest.approx(
        2 * ONE_CHEAP_IMAGE_USD
    )


# ---------------------------------------------------------------------- under the plugin


def _run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, str]]:
    result = pytester.runpytest(
        OPTION, f"{OPTION_RECORD_MODE}=none", "--imagegen-report=report.json", "-q", *args
    )
    report = json.loads((pytester.path / "report.json").read_text())
    return result, {t["check"]: t["outcome"] for t in report["tests"]}


def test_clean_server_passes_the_whole_suite(pytester: pytest.Pytester) -> None:
    # Record mode none with an empty cassette folder lets the loopback server go live.
    result, outcomes = _run(pytester)
    assert set(outcomes) == {k for k, v in REGISTRY.items() if not v.needs_upstream}
    assert {c: o for c, o in outcomes.items() if o != "passed"} == {}
    assert result.ret == pytest.ExitCode.OK
    # Nothing was recorded: the loopback server went live, no cassette was written.
    assert not (pytester.path / "cassettes").exists() or not any(
        (pytester.path / "cassettes").rglob("*.yaml")
    )


def test_a_defect_fails_its_check_under_the_plugin(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_REFERENCE_DEFECTS, "image_model_as_chat")
    result, outcomes = _run(pytester, "-k", "separation")
    assert outcomes["separation.image_model_is_image"] == "failed"
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    # Failures are reported, never turned into skips or errors.
    assert set(outcomes.values()) <= {"passed", "failed", "skipped"}
