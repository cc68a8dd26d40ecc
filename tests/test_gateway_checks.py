"""The ``gateway`` checks against the project's own gateway (tests/_gateway.py): each check
passes on the faithful pass-through and fails (or warns) on the misbehaviour it is about;
the fault-injection checks run through a gateway, on a local and on a remote upstream."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from _gateway import Gateway, Misbehaviour

from pytest_imagegen.checks import REGISTRY, run
from pytest_imagegen.config import Endpoint, Upstream
from pytest_imagegen.profiles import get_profile
from pytest_imagegen.reference import ReferenceServer, RemoteReference
from pytest_imagegen.verdict import DeviationWarning

UPSTREAM_KEY = "sk-upstream-of-the-gateway-0123456789"
CLIENT_KEY = "sk-client-of-the-gateway-9876543210"
ADMIN_KEY = "admin-key-of-the-upstream-0123"
FAULT_CHECKS = [c.id for c in REGISTRY.values() if c.needs_faults]
GATEWAY_CHECKS = [c.id for c in REGISTRY.values() if c.area == "gateway"]


@pytest.fixture(scope="module")
def upstream() -> Iterator[ReferenceServer]:
    with ReferenceServer(api_keys=[UPSTREAM_KEY], admin_key=ADMIN_KEY) as server:
        yield server


def endpoint_for(gateway: Gateway, upstream: ReferenceServer, **changes) -> Endpoint:
    endpoint = Endpoint(
        name="gateway",
        base_url=gateway.base_url,
        image_model="gpt-image-1",
        profile=get_profile("gpt-image-1"),
        api_key=CLIENT_KEY,
        chat_model="gpt-4o-mini",
        timeout_s=3.0,
        deadline_s=20.0,
        fallback=({"quality": "low", "size": "1024x1024"},),
        upstream=Upstream(url=upstream.base_url, api_key=UPSTREAM_KEY),
    )
    return replace(endpoint, **changes)


def results_for(upstream, select, misbehaviour=None, *, reference=None, **changes):
    upstream.reset()
    with Gateway(upstream.base_url, UPSTREAM_KEY, misbehaviour or Misbehaviour()) as gateway:
        endpoint = endpoint_for(gateway, upstream, **changes)
        results = run(endpoint, select=select, reference=reference or upstream)
    upstream.check()
    return {r.id: r for r in results}


@pytest.mark.filterwarnings("error::pytest_imagegen.DeviationWarning")
def test_a_faithful_gateway_passes_every_gateway_and_fault_check(upstream):
    results = results_for(upstream, [*GATEWAY_CHECKS, *FAULT_CHECKS])
    assert set(results) == {*GATEWAY_CHECKS, *FAULT_CHECKS}
    outcomes = {r.id: (r.status, r.message) for r in results.values()}
    assert all(status == "passed" for status, _ in outcomes.values()), outcomes


def test_fault_checks_and_gateway_checks_work_on_a_remote_upstream(upstream):
    with RemoteReference(upstream.base_url, ADMIN_KEY) as remote:
        results = results_for(upstream, [*GATEWAY_CHECKS, *FAULT_CHECKS], reference=remote)
    outcomes = {r.id: (r.status, r.message) for r in results.values()}
    assert all(status == "passed" for status, _ in outcomes.values()), outcomes


@pytest.mark.parametrize(
    ("misbehaviour", "check_id", "status", "message"),
    [
        (
            Misbehaviour(rewrite_model="dall-e-3"),
            "gateway.model_forwarded",
            "failed",
            "the gateway rewrote the model: the client sent 'gpt-image-1', the upstream "
            "received 'dall-e-3'",
        ),
        (
            Misbehaviour(image_to_chat=True),
            "gateway.route_kept",
            "failed",
            "an image request (model 'gpt-image-1') reached the upstream's chat completions",
        ),
        (
            Misbehaviour(chat_to_images=True),
            "gateway.route_kept",
            "failed",
            "a chat request (model 'gpt-4o-mini') reached the upstream's images route",
        ),
        (
            Misbehaviour(drop_params=("output_format",)),
            "gateway.params_forwarded",
            "failed",
            "the gateway dropped `output_format`: the upstream received",
        ),
        (
            Misbehaviour(drop_params=("safety_identifier",)),
            "gateway.params_forwarded",
            "warned",
            "the gateway dropped the newer optional parameter `safety_identifier`",
        ),
        (
            Misbehaviour(retries=2),
            "gateway.attempts_within_limits",
            "warned",
            "the gateway made 3 upstream attempts for one client request",
        ),
        (
            Misbehaviour(retries=2),
            "gateway.upstream_errors_reported",
            "warned",
            "upstream errors hidden by the gateway's retries: the upstream answered "
            "500 server_error, 200 and the client saw HTTP 200",
        ),
        (
            Misbehaviour(retries=2, retry_everything=True),
            "gateway.non_retryable_not_retried",
            "failed",
            "the gateway retried non-retryable upstream errors: insufficient_quota (429) 3 times",
        ),
        (
            Misbehaviour(drop_retry_after=True),
            "gateway.retry_after_preserved",
            "failed",
            "the upstream answered 429 with Retry-After: 2; the gateway's 429 has no Retry-After",
        ),
        (
            Misbehaviour(code_to_status=True),
            "gateway.error_fields_preserved",
            "warned",
            "quota: `code` 'insufficient_quota' became '429' (rewritten to the status string)",
        ),
        (
            Misbehaviour(quota_as_rate_limit=True),
            "gateway.error_fields_preserved",
            "failed",
            "the upstream answered 429 insufficient_quota (quota) and the client's answer is "
            "classified rate_limit",
        ),
        (
            Misbehaviour(leak_upstream_key=True),
            "gateway.upstream_key_not_returned",
            "failed",
            "the gateway's answer carried the key it uses upstream",
        ),
        (
            Misbehaviour(forward_client_key=True),
            "gateway.client_key_not_forwarded",
            "failed",
            "the upstream received the client's key",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("gateway.") else None,
)
def test_each_gateway_check_catches_its_misbehaviour(
    upstream, misbehaviour, check_id, status, message
):
    if status == "warned":
        with pytest.warns(DeviationWarning) as caught:
            result = results_for(upstream, [check_id], misbehaviour)[check_id]
        assert result.data["deviations"] and result.passed
        assert [str(w.message) for w in caught] == result.data["deviations"]
    else:
        result = results_for(upstream, [check_id], misbehaviour)[check_id]
    assert (result.status, message in result.message) == (status, True), result.message
    # No key ever appears in what a check reports.
    assert UPSTREAM_KEY not in result.message and CLIENT_KEY not in result.message


def test_retries_past_the_deadline_fail(upstream):
    # 4 attempts 0.35 s apart take over 1 s; the client's own 10 retries make that over
    # 11 s, past the 8 s deadline (a slower machine only makes it longer).
    misbehaviour = Misbehaviour(retries=3, retry_delay_s=0.35)
    result = results_for(
        upstream,
        ["gateway.attempts_within_limits"],
        misbehaviour,
        timeout_s=8.0,
        deadline_s=8.0,
        max_retries=10,
        fallback=(),
    )["gateway.attempts_within_limits"]
    assert result.status == "failed", result.message
    assert "the gateway made 4 upstream attempts for one client request" in result.message
    assert "with max_retries=10 a client waits up to" in result.message
    assert "past deadline_s=8" in result.message


def test_a_warning_made_an_error_fails_the_check(upstream):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeviationWarning)
        result = results_for(
            upstream, ["gateway.error_fields_preserved"], Misbehaviour(code_to_status=True)
        )["gateway.error_fields_preserved"]
    assert result.status == "failed"
    assert "rewritten to the status string" in result.message


def test_fault_checks_through_a_gateway_see_its_misbehaviour(upstream):
    results = results_for(
        upstream,
        ["errors.rate_limit_carries_retry_after", "fallback.non_retryable_stops_at_once"],
        Misbehaviour(drop_retry_after=True, quota_as_rate_limit=True),
    )
    assert results["errors.rate_limit_carries_retry_after"].status == "failed"
    assert "has no Retry-After header" in results["errors.rate_limit_carries_retry_after"].message
    assert results["fallback.non_retryable_stops_at_once"].status == "failed"


def test_gateway_checks_skip_without_an_upstream(upstream):
    endpoint = Endpoint(
        name="plain",
        base_url="http://127.0.0.1:9/v1",
        image_model="gpt-image-1",
        profile=get_profile("gpt-image-1"),
    )
    results = run(endpoint, select="gateway")
    assert {r.status for r in results} == {"skipped"}
    assert "needs an upstream: endpoint 'plain' declares none" in results[0].message


def test_request_shape_says_the_gateway_dropped_a_param_the_upstream_never_received(upstream):
    """A gateway that drops response_format (LiteLLM with drop_params) answers 200: the check
    fails saying the gateway dropped it, not that "the endpoint accepted" it."""
    checks = ["request_shape.rejects_response_format", "request_shape.invalid_requests_refused"]
    dropping = Misbehaviour(drop_params=("response_format", "seed", "input_fidelity"))
    results = results_for(upstream, checks, dropping)
    shape = results["request_shape.rejects_response_format"]
    assert shape.status == "failed"
    assert shape.message.startswith('the gateway dropped {"response_format": "b64_json"}')
    assert "the upstream never received 'response_format'" in shape.message
    drawn = results["request_shape.invalid_requests_refused"]
    assert drawn.status == "failed"
    assert "the gateway dropped it" in drawn.message
    # The faithful pass-through forwards it, and the upstream's refusal reaches the client.
    faithful = results_for(upstream, checks)
    assert all(r.status == "passed" for r in faithful.values()), faithful
    # Without an upstream the suite cannot know where the parameter went: the old wording.
    with Gateway(upstream.base_url, UPSTREAM_KEY, dropping) as gateway:
        plain = replace(endpoint_for(gateway, upstream), upstream=None)
        (result,) = run(plain, select=checks[0])
    assert result.status == "failed" and result.message.startswith("the endpoint accepted")
