"""Examples for the error classifier: real bodies, every envelope, the SDK, real sockets."""

from __future__ import annotations

import builtins
import contextlib
import json
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any

import httpx2
import openai
import pytest
from _raw_server import read_request
from _support import CATEGORY_TABLE, litellm_error_cases, real_error_cases

from pytest_imagegen.classify import (
    MESSAGE_MAX_CHARS,
    PROBLEM_CLASS,
    RETRYABLE,
    _classify,
    classify,
    decide,
    hint_for,
    malformed,
    mask_secrets,
)
from pytest_imagegen.errors import Category, Diagnosis, category_of

REAL_ERRORS = real_error_cases()
LITELLM_ERRORS = litellm_error_cases()
NOW = 1_800_000_000.0  # a fixed clock for Retry-After dates
QUOTA_HINT = "Top up credit or raise the spend limit; retrying will not help."


def diagnose(x: object) -> Diagnosis:
    """The unguarded classifier with a fixed clock, so a bug fails the test loudly."""
    return _classify(x, now=NOW)


def raw(status: int, body: object, headers: Any = None) -> tuple[int, Any, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    return status, headers or {"content-type": "application/json"}, data


def sdk_client(handler: Callable[[httpx2.Request], httpx2.Response]) -> openai.OpenAI:
    return openai.OpenAI(
        base_url="http://relay.test/v1",
        api_key="sk-test-key",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        max_retries=0,
    )


def raised_by_sdk(status: int, headers: Any, body: bytes) -> BaseException:
    client = sdk_client(lambda request: httpx2.Response(status, headers=headers, content=body))
    with pytest.raises(openai.OpenAIError) as caught:
        client.images.generate(model="gpt-image-1", prompt="a red square")
    return caught.value


def expected_param(case: dict[str, Any]) -> str | None:
    if "param" in case["expect"]:
        return case["expect"]["param"]
    error = json.loads(case["body"]).get("error", {})
    return error.get("param") or None


# --- the table itself ---------------------------------------------------------------


def design_table() -> dict[str, tuple[str, bool]]:
    text = CATEGORY_TABLE.read_text("utf-8")
    section = text.split("## Error categories", 1)[1]
    rows = re.findall(r"^\| (\w+) \| [^|]+ \| (\w+) \| (yes|no) \|$", section, re.MULTILINE)
    return {name: (problem, flag == "yes") for name, problem, flag in rows}


def test_categories_problem_classes_and_retryability_are_designs_table() -> None:
    table = design_table()
    assert set(table) == {c.value for c in Category}
    assert {name: PROBLEM_CLASS[name] for name in table} == {n: p for n, (p, _) in table.items()}
    retryable = {name for name, (_, retry) in table.items() if retry}
    assert retryable == RETRYABLE


def test_a_diagnosis_category_is_a_category_member_that_is_still_its_name() -> None:
    """Categories are the Category type wherever they are declared or compared, and plain
    strings (cassettes, JSON reports) still compare, hash and serialise the same."""
    d = diagnose(raw(429, {"error": {"code": "insufficient_quota", "message": "no credit"}}))
    assert type(d.category) is Category and d.category is Category.QUOTA
    assert d.category == "quota" and d.category != "rate_limit"
    assert {"quota": 1}[d.category] == 1 and {Category.QUOTA: 1}["quota"] == 1
    # Tables keyed by Category answer plain-string lookups.
    assert "rate_limit" in RETRYABLE and "quota" not in RETRYABLE
    assert PROBLEM_CLASS["quota"] == "cost"
    assert f"{d.category}" == str(d.category) == "quota"
    plain = d.to_dict()["category"]
    assert type(plain) is str and plain == "quota"
    assert json.loads(json.dumps(d.to_dict()))["category"] == "quota"
    # Built from a name (a caller, a recording): converted; a name that is no category: refused.
    made = Diagnosis(category="timeout", problem_class="efficiency", retryable=True, hint="h")
    assert made.category is Category.TIMEOUT
    with pytest.raises(ValueError):
        Diagnosis(category="slow", problem_class="efficiency", retryable=True, hint="h")
    assert category_of("rate_limit") is Category.RATE_LIMIT
    assert category_of(Category.SERVER) is Category.SERVER
    assert category_of("slow") is None and category_of(None) is None


def test_every_classified_category_is_a_category_member() -> None:
    for case in REAL_ERRORS:
        d = diagnose((case["status"], case["headers"], case["body"].encode()))
        assert type(d.category) is Category, case["id"]


# --- real-errors.json -----------------------------------------------------------------


@pytest.mark.parametrize("case", REAL_ERRORS, ids=[c["id"] for c in REAL_ERRORS])
def test_real_error_gets_its_category(case: dict[str, Any]) -> None:
    d = diagnose((case["status"], case["headers"], case["body"].encode()))
    expect = case["expect"]
    assert d.category == expect["category"]
    assert d.retryable is expect["retryable"]
    assert d.problem_class == PROBLEM_CLASS[expect["category"]]
    assert d.param == expected_param(case)
    assert d.retry_after_s == expect.get("retry_after_s")
    assert d.status == case["status"]
    assert d.hint


@pytest.mark.parametrize("case", REAL_ERRORS, ids=[c["id"] for c in REAL_ERRORS])
def test_real_error_through_the_openai_sdk_classifies_the_same(case: dict[str, Any]) -> None:
    exc = raised_by_sdk(case["status"], case["headers"], case["body"].encode())
    assert isinstance(exc, openai.APIStatusError)
    from_sdk = diagnose(exc)
    assert from_sdk == diagnose((case["status"], case["headers"], case["body"].encode()))
    assert from_sdk.category == case["expect"]["category"]
    assert from_sdk.retry_after_s == case["expect"].get("retry_after_s")
    # The SDK's unwrapped ``e.body`` alone (no status) still says what happened.
    assert diagnose(exc.body).category == case["expect"]["category"]


@pytest.mark.parametrize("case", LITELLM_ERRORS, ids=[c["id"] for c in LITELLM_ERRORS])
def test_litellm_error_gets_its_category_param_and_hint(case: dict[str, Any]) -> None:
    """What a real LiteLLM proxy answered: its "400" codes say nothing, the texts do."""
    exc = raised_by_sdk(case["status"], case["headers"], case["body"].encode())
    d = diagnose(exc)
    expect = case["expect"]
    assert (d.category, d.retryable, d.param) == (
        expect["category"],
        expect["retryable"],
        expect["param"],
    )
    if "hint_mentions" in expect:
        assert expect["hint_mentions"] in d.hint


def test_a_400_that_means_a_wrong_key_says_so_not_fix_a_parameter() -> None:
    """LiteLLM without a database answers a non-master key with 400 "No connected db.": the
    hint must point at the key, never at a request parameter."""
    body = {"error": {"message": "No connected db.", "type": "x", "param": None, "code": "400"}}
    d = diagnose(raw(400, body))
    assert d.category == "authentication" and not d.retryable
    assert "master_key" in d.hint and "parameter named in `param`" not in d.hint
    by_type = diagnose(raw(400, {"error": {"message": "?", "type": "no_db_connection"}}))
    assert by_type.category == "authentication" and "master_key" in by_type.hint
    for text in (
        "Authentication Error, Invalid proxy server token passed. Received API Key = sk-...0000",
        "Authentication Error - Expired Key. Key Expiry time 2026-01-01",
        "Invalid API key provided",
    ):
        error = {"error": {"message": text, "type": "None", "param": "None", "code": "400"}}
        assert diagnose(raw(400, error)).category == "authentication", text


@pytest.mark.parametrize("case", REAL_ERRORS, ids=[c["id"] for c in REAL_ERRORS])
def test_real_error_in_other_input_shapes(case: dict[str, Any]) -> None:
    status, body = case["status"], case["body"].encode()
    want = diagnose((status, case["headers"], body))
    shouting = [(k.upper(), v) for k, v in case["headers"].items()]
    assert diagnose((status, shouting, body)) == want
    assert diagnose(httpx2.Response(status, headers=case["headers"], content=body)) == want
    assert diagnose((str(status), case["headers"], body.decode())) == want
    # The same envelope inside a 200 (relays do this) is classified by its content.
    assert diagnose((200, {}, body)).category == case["expect"]["category"]


# --- envelopes ------------------------------------------------------------------------


def envelope(status: int, message: str | None = None, headers: Any = None, /, **fields: Any) -> Any:
    """An OpenAI-shaped ``{"error": {...}}`` answer; relays reuse the shape."""
    return raw(status, {"error": {"message": message, **fields}}, headers)


def case(name: str, given: object, category: str, **expect: Any) -> Any:
    return pytest.param(given, category, expect, id=name)


AZURE_DEPLOYMENT = (
    "The API deployment for this resource does not exist. If you created the deployment "
    "within the last 5 minutes, please wait a moment and try again."
)
AZURE_FILTERED = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content "
    "management policy."
)
AZURE_BLOCKED = (
    "Your resource has been temporarily blocked because we detected behavior that may "
    "violate our content policy."
)
AZURE_429 = (
    "Requests to the Images_Generations Operation under Azure OpenAI API version 2024-02-01 "
    "have exceeded call rate limit of your current OpenAI S0 pricing tier. Please retry after "
    "2 seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further "
    "increase the default rate limit."
)
AZURE_CHAT_OP = (
    "The chatCompletion operation does not work with the specified model, gpt-image-1. "
    "Please choose different model and try again."
)
LITELLM_QUOTA = (
    "litellm.RateLimitError: RateLimitError: OpenAIException - You exceeded your current "
    "quota, please check your plan and billing details."
)
LITELLM_RATE = (
    "litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached for images "
    "per minute."
)
LITELLM_UPSTREAM_DICT = (
    "litellm.RateLimitError: OpenAIException - Error code: 429 - {'error': {'message': "
    "'Quota!', 'type': 'insufficient_quota', 'param': None, 'code': 'insufficient_quota'}}"
)
LITELLM_MODEL = (
    "litellm.BadRequestError: Invalid model name passed in model=gpt-image-2. Call "
    "`/v1/models` to view available models for your key."
)
LITELLM_KEY_MODEL = (
    "key not allowed to access model. This key can only access models=['gpt-4o']. Tried to "
    "access gpt-image-1"
)
LITELLM_POLICY = (
    "litellm.ContentPolicyViolationError: ContentPolicyViolationError: OpenAIException - "
    "Your request was rejected as a result of our safety system."
)
UPSTREAM_UNKNOWN_PARAM = json.dumps(
    {
        "error": {
            "message": "Unknown parameter: 'response_format'.",
            "type": "invalid_request_error",
            "param": "response_format",
            "code": "unknown_parameter",
        }
    }
)
CF_524 = (
    b"<!DOCTYPE html><html><head><title>relay.example | 524: A timeout occurred</title>"
    b"<style>body{}</style></head><body>Cloudflare</body></html>"
)
NGINX_502 = (
    b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1><hr>"
    b"nginx/1.25.3</body></html>"
)
SATURATED = "当前分组上游负载已饱和,请稍后再试"  # the relay's text, with an ASCII comma here
CF = {"server": "cloudflare"}

ENVELOPES = [
    # Azure
    case("azure-deployment", envelope(404, AZURE_DEPLOYMENT, code="DeploymentNotFound"),
         "model_not_found", hint="deployment name"),
    case("azure-content-filter-innererror",
         envelope(400, AZURE_FILTERED, type=None, param="prompt", code="content_filter",
                  status=400, innererror={"code": "ResponsibleAIPolicyViolation"}),
         "content_policy", param="prompt"),
    case("azure-inner-error-only",
         envelope(400, "Your task failed.", code="400",
                  inner_error={"code": "ResponsibleAIPolicyViolation"}),
         "content_policy"),
    case("azure-resource-blocked", envelope(403, AZURE_BLOCKED, code="403"), "content_policy",
         hint="Azure resource is temporarily blocked"),
    case("azure-bad-key",
         envelope(401, "Access denied due to invalid subscription key or wrong API endpoint.",
                  code="401"),
         "authentication"),
    case("azure-429-retry-after-ms",
         envelope(429, AZURE_429, {"retry-after-ms": "1500", "retry-after": "2"}, code="429"),
         "rate_limit", retry_after_s=1.5),
    case("azure-insufficient-quota-code",
         envelope(429, "The specified capacity exceeds the available quota.",
                  code="InsufficientQuota"),
         "quota", retry_after_s=None),
    case("azure-image-model-on-chat", envelope(400, AZURE_CHAT_OP, code="OperationNotSupported"),
         "model_not_found", hint="/chat/completions"),
    # LiteLLM proxy: code is the status as a string, meaning only in type and message
    case("litellm-quota-as-throttling",
         envelope(429, LITELLM_QUOTA, {"retry-after": "7"}, type="throttling_error", code="429"),
         "quota", retry_after_s=None, hint=QUOTA_HINT),
    case("litellm-rate-limit",
         envelope(429, LITELLM_RATE, {"retry-after": "7"}, type="throttling_error", code="429"),
         "rate_limit", retry_after_s=7.0, hint="7 s"),
    case("litellm-upstream-dict-in-message",
         envelope(429, LITELLM_UPSTREAM_DICT, type="throttling_error", code="429"), "quota"),
    case("litellm-budget",
         envelope(400, "Budget has been exceeded! Current cost: 10.2, Max budget: 10.0",
                  type="budget_exceeded", code="400"),
         "quota", hint="max_budget"),
    case("litellm-auth-param-None-string",
         envelope(401, "Authentication Error, Invalid proxy server token passed.",
                  type="auth_error", param="None", code="401"),
         "authentication", param=None, hint="relay"),
    case("litellm-invalid-model-name",
         envelope(400, LITELLM_MODEL, type="None", param="None", code="400"),
         "model_not_found", hint="model list"),
    case("litellm-key-not-allowed-model",
         envelope(401, LITELLM_KEY_MODEL, type="key_model_access_denied", param="model",
                  code="401"),
         "permission", hint="may not use this model"),
    case("litellm-content-policy", envelope(400, LITELLM_POLICY, code="400"), "content_policy"),
    # one-api / new-api
    case("new-api-no-channel-503",
         envelope(503, "当前分组 svip 下对于模型 gpt-image-1 无可用渠道 (request id: 2025)",
                  type="new_api_error", param="", code=None),
         "model_not_found", param=None,
         hint="no channel serves this model: check the relay's model mapping"),
    case("one-api-no-channel-english",
         envelope(503, "当前Group default 下对于Model test No available channels",
                  type="one_api_error"),
         "model_not_found"),
    case("one-api-user-quota-403",
         envelope(403, "用户额度不足", type="one_api_error", code="insufficient_user_quota"),
         "quota", hint="relay"),
    case("one-api-token-quota-401", envelope(401, "该令牌额度已用尽", type="one_api_error"),
         "quota", hint="relay"),
    case("new-api-balance-402", envelope(402, "余额不足", type="new_api_error"), "quota"),
    case("new-api-quota-429", envelope(429, "额度已用尽", type="new_api_error"), "quota"),
    case("one-api-invalid-token", envelope(401, "无效的令牌", type="one_api_error"),
         "authentication", hint="relay"),
    case("one-api-token-expired", envelope(401, "该令牌已过期", type="one_api_error"),
         "authentication"),
    case("one-api-no-token", envelope(401, "未提供令牌", type="one_api_error"),
         "authentication"),
    case("new-api-saturated", envelope(503, SATURATED, type="new_api_error", param=""),
         "rate_limit", hint="saturated"),
    case("one-api-too-frequent", envelope(429, "请求过于频繁", type="one_api_error"),
         "rate_limit"),
    case("one-api-upstream-timeout", envelope(500, "请求上游超时", type="shell_api_error"),
         "timeout"),
    case("new-api-upstream-status-in-param",
         envelope(500, "bad response status code 429", type="upstream_error", param="429",
                  code="bad_response_status_code"),
         "rate_limit", param=None),
    case("new-api-upstream-json-in-message",
         envelope(500, UPSTREAM_UNKNOWN_PARAM, type="upstream_error", param="400",
                  code="bad_response_status_code"),
         "invalid_request", param="response_format"),
    # CDN / proxy pages
    case("cloudflare-1015",
         raw(429, b"error code: 1015", [("Retry-After", "54749"), ("Content-Type", "text/plain")]),
         "rate_limit", retry_after_s=54749.0, hint="Cloudflare"),
    case("cloudflare-524", raw(524, CF_524, CF), "timeout",
         message="relay.example | 524: A timeout occurred", hint="gateway"),
    case("cloudflare-502", raw(502, b"<html><head><title>502 Bad Gateway</title></head></html>",
                               CF),
         "server", message="502 Bad Gateway"),
    case("cloudflare-522-text", raw(522, b"error code: 522", {}), "timeout"),
    case("cloudflare-521-text", raw(521, b"error code: 521", {}), "network"),
    case("nginx-502", raw(502, NGINX_502, {}), "server"),
    case("nginx-504", raw(504, b"<html><head><title>504 Gateway Time-out</title></head></html>",
                          {}),
         "timeout"),
    case("nginx-413", raw(413, b"<html><title>413 Request Entity Too Large</title></html>", {}),
         "invalid_request", hint="larger than a proxy"),
    case("vercel-413", raw(413, b"Request Entity Too Large\n\nFUNCTION_PAYLOAD_TOO_LARGE\n", {}),
         "invalid_request"),
    case("vercel-504", raw(504, b"An error occurred\n\nFUNCTION_INVOCATION_TIMEOUT\n", {}),
         "timeout"),
    case("envoy-503",
         raw(503, b"upstream connect error or disconnect/reset before headers. reset reason: "
                  b"connection failure", {}),
         "network"),
    case("502-no-body", raw(502, b"", {}), "server"),
    case("404-route", raw(404, b"404 page not found", {}), "invalid_request", hint="base_url"),
    # OpenAI shapes beyond real-errors.json
    case("openai-region",
         envelope(403, "Country, region, or territory not supported",
                  code="unsupported_country_region_territory", type="request_forbidden"),
         "permission", hint="region"),
    case("openai-chat-model-invalid-value",
         envelope(400, "Invalid value: 'gpt-4o'. Value must be 'dall-e-2'.",
                  type="invalid_request_error", param="model", code="invalid_value"),
         "model_not_found", param="model"),
    case("openai-missing-model",
         envelope(400, "Missing required parameter: 'model'.", type="invalid_request_error",
                  param="model", code="missing_required_parameter"),
         "invalid_request", param="model"),
    case("openai-invalid-url",
         envelope(404, "Invalid URL (POST /v1/images/generationz)",
                  type="invalid_request_error"),
         "invalid_request", hint="/images/generations"),
    case("openai-param-from-message",
         envelope(400, "Invalid 'n': integer above maximum value. Expected a value <= 1, but "
                  "got 2 instead.", type="invalid_request_error", param=""),
         "invalid_request", param="n", hint="'n'"),
    case("openai-tpm-wait-in-message",
         envelope(429, "Rate limit reached for gpt-image-1 on tokens per min (TPM): Limit "
                  "10000, Used 9924, Requested 1000. Please try again in 5.544s.",
                  type="tokens", code="rate_limit_exceeded"),
         "rate_limit", retry_after_s=5.544, hint="the error message"),
    case("openai-invalid-prompt",
         envelope(400, "Invalid prompt: your prompt was flagged as potentially violating our "
                  "usage policy.", type="invalid_request_error", code="invalid_prompt"),
         "content_policy"),
    case("azure-moderation-param-empty",
         envelope(400, "Your request was rejected by the safety system.",
                  type="image_generation_user_error", param="", code="moderation_blocked"),
         "content_policy", param=None),
    case("google-list-envelope",
         raw(429, [{"error": {"code": 429, "message": "Resource has been exhausted.",
                              "status": "RESOURCE_EXHAUSTED"}}]),
         "rate_limit"),
    case("nestjs-message-list",
         raw(400, {"statusCode": 400, "message": ["prompt should not be empty"],
                   "error": "Bad Request"}),
         "invalid_request", message="prompt should not be empty"),
    case("graphql-errors-list",
         raw(200, {"errors": [{"message": "Rate limit exceeded", "code": "RATE_LIMITED"}]}),
         "rate_limit"),
    case("html-fragment-without-html-tag", raw(502, b"<h1>Bad Gateway</h1><p>nginx</p>", {}),
         "server", message="Bad Gateway nginx"),
    case("quota-exceeded-words", raw(400, b"Quota exceeded for image generation today", {}),
         "quota"),
    case("quota-per-minute-is-a-rate", raw(400, b"Quota exceeded: 5 requests per minute", {}),
         "rate_limit"),
    case("unterminated-tag-keeps-words", raw(429, b"<H1 you exceeded your current quota.", {}),
         "quota"),
    case("fastapi-422",
         raw(422, {"detail": [{"loc": ["body", "prompt"], "msg": "field required"}]}),
         "invalid_request", param="prompt"),
    # 2xx answers
    case("200-error-envelope", envelope(200, "upstream went away", type="server_error"),
         "server", hint="wrapped"),
    case("200-error-envelope-quota", envelope(200, "余额不足"), "quota"),
    case("200-data-empty", raw(200, {"created": 1, "data": []}), "malformed_response",
         hint="data: []"),
    case("200-empty-body", raw(200, b"", {}), "malformed_response", hint="empty"),
    case("200-html", raw(200, b"<html><body>Welcome</body></html>", {}), "malformed_response",
         hint="HTML"),
    case("200-binary", raw(200, b"\x89PNG\r\n\x1a\n" + bytes(64), {}), "malformed_response",
         hint="binary"),
    case("200-no-data-key", raw(200, {"created": 1}), "malformed_response", hint="'data'"),
    case("200-items-without-image", raw(200, {"data": [{"revised_prompt": "x"}]}),
         "malformed_response", hint="b64_json or url"),
    case("200-truncated-json", raw(200, b'{"created": 1, "data": [{"b64_json": "iVBO', {}),
         "malformed_response"),
    case("201-data-empty", raw(201, {"data": []}), "malformed_response"),
    case("200-code-and-message-without-data", raw(200, {"code": 0, "message": "success"}),
         "malformed_response", hint="without 'data'"),
]  # fmt: skip


@pytest.mark.parametrize(("given", "category", "expect"), ENVELOPES)
def test_envelope(given: tuple[int, Any, bytes], category: str, expect: dict[str, Any]) -> None:
    d = diagnose(given)
    assert d.category == category, d
    assert d.retryable is (category in RETRYABLE)
    assert d.problem_class == PROBLEM_CLASS[category]
    for key, value in expect.items():
        if key == "hint":
            assert value.lower() in d.hint.lower(), d.hint
        else:
            assert getattr(d, key) == value, (key, d)


def test_code_first_then_message_then_status() -> None:
    # code beats a message that would say otherwise
    body = {"error": {"message": "rate limit", "code": "content_policy_violation"}}
    assert diagnose(raw(429, body)).category == "content_policy"
    # a message beats the status (relays answer 503 for "no channel", 401 for their quota)
    assert diagnose(raw(503, {"error": {"message": "无可用渠道"}})).category == "model_not_found"
    assert diagnose(raw(401, {"error": {"message": "额度已用尽"}})).category == "quota"
    # the status decides only when nothing else says anything
    for status, category in [(400, "invalid_request"), (401, "authentication"), (402, "quota"),
                             (403, "permission"), (404, "model_not_found"), (408, "timeout"),
                             (413, "invalid_request"), (422, "invalid_request"),
                             (429, "rate_limit"), (451, "permission"), (500, "server"),
                             (503, "server"), (504, "timeout"), (524, "timeout")]:  # fmt: skip
        assert diagnose(raw(status, {"error": {"message": "?"}})).category == category, status
        assert diagnose((status, {}, b"")).category == category, status
        assert diagnose(status).category == category, status


def test_message_null_and_param_empty_are_normalised() -> None:
    d = diagnose(raw(400, {"error": {"message": None, "type": "invalid_request_error",
                                     "param": "", "code": None}}))  # fmt: skip
    assert (d.category, d.message, d.param) == ("invalid_request", None, None)


def test_statuses_outside_http_and_redirects_are_unknown_with_a_hint() -> None:
    assert "not an HTTP status" in diagnose((999, {}, b"")).hint
    redirect = diagnose((301, {"location": "https://x"}, b""))
    assert redirect.category == "unknown"
    assert "base_url" in redirect.hint


def test_success_is_not_mistaken_for_an_error() -> None:
    d = diagnose(raw(200, {"created": 1, "data": [{"b64_json": "aGVsbG8="}]}))
    assert d.category == "unknown"
    assert "success" in d.hint


# --- Retry-After ----------------------------------------------------------------------


def rate_limited(headers: Any) -> Diagnosis:
    return diagnose((429, headers, b""))


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert rate_limited({"retry-after-ms": "250", "retry-after": "9"}).retry_after_s == 0.25


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("20", 20.0), ("1.5", 1.5), (" 3 ", 3.0), ("-5", 0.0), ("0", 0.0), ("soon", None),
     ("nan", None), ("inf", None), ("1e999", None), ("", None)],
)  # fmt: skip
def test_retry_after_seconds(value: str, seconds: float | None) -> None:
    d = rate_limited({"Retry-After": value})
    assert d.retry_after_s == seconds
    if seconds is not None:
        assert f"{seconds:g} s" in d.hint


def test_retry_after_http_date_is_relative_to_now_and_clamped() -> None:
    future = format_datetime(datetime.fromtimestamp(NOW + 90, tz=timezone.utc), usegmt=True)
    past = format_datetime(datetime.fromtimestamp(NOW - 90, tz=timezone.utc), usegmt=True)
    assert rate_limited({"retry-after": future}).retry_after_s == 90.0
    assert rate_limited({"retry-after": past}).retry_after_s == 0.0
    # the public function uses the real clock
    real_future = format_datetime(
        datetime.fromtimestamp(time.time() + 120, tz=timezone.utc), usegmt=True
    )
    seconds = classify((429, {"retry-after": real_future}, b"")).retry_after_s
    assert seconds is not None
    assert 100 <= seconds <= 120


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("12ms", 0.012), ("1s", 1.0), ("6m0s", 360.0), ("1h2m3.5s", 3723.5), ("20", 20.0),
     ("1x", None), ("m", None)],
)  # fmt: skip
def test_ratelimit_reset_headers_are_a_fallback_for_429(value: str, seconds: float | None) -> None:
    d = rate_limited({"x-ratelimit-reset-requests": value})
    assert d.retry_after_s == seconds
    assert (
        rate_limited({"x-ratelimit-reset-requests": value, "retry-after": "4"}).retry_after_s == 4
    )


def test_ratelimit_reset_prefers_the_exhausted_bucket() -> None:
    headers = {
        "x-ratelimit-reset-requests": "6m0s",
        "x-ratelimit-remaining-requests": "3",
        "x-ratelimit-reset-tokens": "2s",
        "x-ratelimit-remaining-tokens": "0",
    }
    assert rate_limited(headers).retry_after_s == 2.0
    del headers["x-ratelimit-remaining-tokens"]
    assert rate_limited(headers).retry_after_s == 360.0  # no bucket said empty: the longest


def test_retry_after_only_for_retryable_categories_and_reset_only_for_429() -> None:
    quota = raw(429, {"error": {"code": "insufficient_quota"}}, {"retry-after": "30"})
    assert diagnose(quota).retry_after_s is None
    server = (503, {"retry-after": "30", "x-ratelimit-reset-requests": "1s"}, b"")
    assert diagnose(server).retry_after_s == 30.0
    assert diagnose((503, {"x-ratelimit-reset-requests": "1s"}, b"")).retry_after_s is None


# --- hints ----------------------------------------------------------------------------


def test_hint_for_every_category() -> None:
    for category in Category:
        assert hint_for(category) == hint_for(category.value)
        assert len(hint_for(category)) > 20
    assert hint_for("quota") == QUOTA_HINT
    assert hint_for("no-such-category") == hint_for("unknown")


def test_specific_hints() -> None:
    assert diagnose(raw(429, {"error": {"code": "insufficient_quota"}})).hint == QUOTA_HINT
    limited = diagnose(raw(429, {"error": {"code": "rate_limit_exceeded"}}, {"retry-after": "3"}))
    assert "3 s" in limited.hint
    assert "Retry-After" in limited.hint
    assert "no Retry-After" in diagnose(raw(429, {"error": {"code": "rate_limit_exceeded"}})).hint
    quality = diagnose(
        envelope(400, "Invalid value: 'standard'.", param="quality", code="invalid_value")
    )
    assert "'quality'" in quality.hint
    assert "Invalid value: 'standard'." in quality.hint
    verify = diagnose(
        envelope(403, "Your organization must be verified to use the model `gpt-image-1`.")
    )
    assert "Verify the organization" in verify.hint
    wrong_kind = diagnose(
        envelope(
            404,
            "This is not a chat model and thus not supported in the v1/chat/completions endpoint.",
            code="model_not_found",
        )
    )
    assert "/images/generations" in wrong_kind.hint


def test_unknown_hint_says_what_was_seen() -> None:
    class Gadget:
        def __repr__(self) -> str:
            return "<Gadget 42>"

    assert "Gadget 42" in diagnose(Gadget()).hint
    assert "None" in diagnose(None).hint
    assert "ValueError" in diagnose(ValueError("odd")).hint
    assert "'weird'" in diagnose({"message": "weird", "type": "foo"}).hint
    assert "binary data" in diagnose((418, {}, bytes(range(256)) * 4)).hint
    teapot = diagnose((418, {}, b"I'm a teapot"))
    assert teapot.category == "unknown"
    assert "418" in teapot.hint
    assert "teapot" in teapot.hint


# --- exceptions -----------------------------------------------------------------------

REQUEST = httpx2.Request("POST", "http://relay.test/v1/images/generations")


def httpx_error(cls: type[Exception], message: str = "boom") -> Exception:
    return cls(message, request=REQUEST)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("exc", "category", "hint_part"),
    [
        (httpx_error(httpx2.ReadTimeout), "timeout", "timed out"),
        (httpx_error(httpx2.ConnectTimeout), "timeout", "connect"),
        (httpx_error(httpx2.WriteTimeout), "timeout", "Sending"),
        (httpx_error(httpx2.PoolTimeout), "timeout", "pool"),
        (
            httpx_error(httpx2.ConnectError, "[Errno 111] Connection refused"),
            "network",
            "Nothing listens",
        ),
        (
            httpx_error(httpx2.ReadError, "[Errno 104] Connection reset by peer"),
            "network",
            "dropped",
        ),
        (
            httpx_error(
                httpx2.RemoteProtocolError, "Server disconnected without sending a response."
            ),
            "network",
            "dropped",
        ),
        (httpx_error(httpx2.ProxyError), "network", "proxy"),
        (
            httpx_error(httpx2.ConnectError, "[Errno -2] Name or service not known"),
            "network",
            "resolve",
        ),
        (
            httpx_error(
                httpx2.ConnectError, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
            ),
            "network",
            "TLS",
        ),
        (httpx_error(httpx2.UnsupportedProtocol), "unknown", "base_url"),
        (httpx_error(httpx2.TooManyRedirects), "unknown", "redirects"),
        (httpx_error(httpx2.DecodingError), "malformed_response", "decoded"),
        (TimeoutError("timed out"), "timeout", "timed out"),
        (socket.timeout("timed out"), "timeout", "timed out"),  # noqa: UP041 - users catch this name
        (ConnectionResetError(104, "Connection reset by peer"), "network", "dropped"),
        (ConnectionRefusedError(111, "Connection refused"), "network", "Nothing listens"),
        (BrokenPipeError(32, "Broken pipe"), "network", "dropped"),
        (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), "network", "TLS"),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), "network", "TLS"),
        (socket.gaierror(-2, "Name or service not known"), "network", "resolve"),
        (urllib.error.URLError(ConnectionRefusedError(111, "refused")), "network", "listens"),
        (ValueError("odd"), "unknown", "ValueError"),
        (KeyError("x"), "unknown", "KeyError"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else None,
)
def test_exceptions(exc: BaseException, category: str, hint_part: str) -> None:
    d = diagnose(exc)
    assert d.category == category, d
    assert hint_part.lower() in d.hint.lower(), d.hint
    assert d.retryable is (category in RETRYABLE)


def test_an_unknown_wrapper_is_classified_by_its_cause() -> None:
    class JobFailed(RuntimeError):
        pass

    try:
        try:
            raise httpx_error(httpx2.ReadTimeout, "timed out")
        except httpx2.ReadTimeout as inner:
            raise JobFailed("image job failed") from inner
    except JobFailed as outer:
        assert diagnose(outer).category == "timeout"
    group_type = getattr(builtins, "ExceptionGroup", None)  # Python 3.11+
    if group_type is None:  # pragma: no cover - Python 3.10: any object with .exceptions

        class group_type(Exception):  # type: ignore[no-redef]
            def __init__(self, message: str, exceptions: list[Exception]) -> None:
                super().__init__(message)
                self.exceptions = exceptions

    group = group_type("tasks", [ValueError("x"), ConnectionResetError(104, "reset")])
    assert diagnose(group).category == "network"


def test_openai_exceptions_without_a_real_response() -> None:
    quota = openai.RateLimitError(
        "Error code: 429",
        response=httpx2.Response(429, request=REQUEST),
        body={"message": "You exceeded your current quota", "type": "insufficient_quota",
              "param": None, "code": "insufficient_quota"},
    )  # fmt: skip
    assert diagnose(quota).category == "quota"
    html = openai.InternalServerError(
        "Error code: 502", response=httpx2.Response(502, request=REQUEST), body="<html>bad</html>"
    )
    assert diagnose(html).category == "server"
    streamed = openai.APIError(
        "An error occurred during streaming",
        REQUEST,
        body={"message": "Your request was rejected by the safety system.",
              "type": "image_generation_user_error", "code": "moderation_blocked"},
    )  # fmt: skip
    assert diagnose(streamed).category == "content_policy"
    invalid = openai.APIResponseValidationError(
        response=httpx2.Response(200, request=REQUEST, content=b'{"created": 1}'),
        body={"created": 1},
    )
    assert diagnose(invalid).category == "malformed_response"
    assert diagnose(openai.APITimeoutError(request=REQUEST)).category == "timeout"
    assert diagnose(openai.APIConnectionError(request=REQUEST)).category == "network"


def test_sdk_raw_and_parsed_2xx_answers() -> None:
    envelope = {"error": {"message": "当前分组 default 下对于模型 gpt-image-1 无可用渠道",
                          "type": "new_api_error"}}  # fmt: skip
    client = sdk_client(lambda request: httpx2.Response(200, json=envelope))
    raw_response = client.images.with_raw_response.generate(model="gpt-image-1", prompt="x")
    assert diagnose(raw_response).category == "model_not_found"
    empty = sdk_client(lambda request: httpx2.Response(200, json={"created": 1, "data": []}))
    parsed = empty.images.generate(model="gpt-image-1", prompt="x")
    assert diagnose(parsed).category == "malformed_response"


def test_sdk_timeout_and_connection_errors_through_mock_transport() -> None:
    def stall(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ReadTimeout("timed out", request=request)

    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)

    for handler, exc_type, category in [
        (stall, openai.APITimeoutError, "timeout"),
        (refuse, openai.APIConnectionError, "network"),
    ]:
        with pytest.raises(exc_type) as caught:
            sdk_client(handler).images.generate(model="gpt-image-1", prompt="x")
        assert diagnose(caught.value).category == category


# --- real sockets on loopback -----------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A listening socket that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


@pytest.fixture
def closed_port() -> str:
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def hangup_server() -> Iterator[str]:
    """Accepts, reads the request, closes without answering (a crashed upstream)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)
    failures: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = server.accept()  # one request, one connection
            with conn:
                conn.settimeout(5)
                # The whole request: closing with part of it unread would reset the
                # connection (a ReadError) instead of hanging up (EOF).
                read_request(conn)
        except OSError:
            pass  # closed by the fixture
        except BaseException as exc:  # pragma: no cover - surfaced below
            failures.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        # Wake the thread out of accept() before the descriptor is freed for reuse.
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        thread.join(5)
        server.close()
    if failures:
        raise failures[0]


def test_real_read_timeout_on_a_silent_socket(silent_server: str) -> None:
    with pytest.raises(httpx2.ReadTimeout) as caught:
        httpx2.post(f"{silent_server}/v1/images/generations", json={}, timeout=0.3)
    d = classify(caught.value)
    assert (d.category, d.retryable, d.problem_class) == ("timeout", True, "efficiency")
    assert "0.3 s" in d.hint

    client = openai.OpenAI(
        base_url=f"{silent_server}/v1", api_key="sk-test", max_retries=0, timeout=0.3
    )
    with pytest.raises(openai.APITimeoutError) as sdk_caught:
        client.images.generate(model="gpt-image-1", prompt="x")
    assert classify(sdk_caught.value).category == "timeout"


def test_real_connection_refused_on_a_closed_port(closed_port: str) -> None:
    with pytest.raises(httpx2.ConnectError) as caught:
        httpx2.post(f"{closed_port}/v1/images/generations", json={}, timeout=2)
    d = classify(caught.value)
    assert (d.category, d.retryable) == ("network", True)
    assert "Nothing listens" in d.hint

    client = openai.OpenAI(base_url=f"{closed_port}/v1", api_key="sk-t", max_retries=0, timeout=2)
    with pytest.raises(openai.APIConnectionError) as sdk_caught:
        client.images.generate(model="gpt-image-1", prompt="x")
    assert classify(sdk_caught.value).category == "network"

    host, port = closed_port.removeprefix("http://").split(":")
    with pytest.raises(ConnectionRefusedError) as stdlib_caught:
        socket.create_connection((host, int(port)), timeout=2).close()
    assert classify(stdlib_caught.value).category == "network"


def test_real_hangup_is_network(hangup_server: str) -> None:
    with pytest.raises(httpx2.RemoteProtocolError) as caught:
        httpx2.post(f"{hangup_server}/v1/images/generations", json={}, timeout=2)
    assert classify(caught.value).category == "network"


# --- input shapes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "category"),
    [
        ("Rate limit exceeded, slow down", "rate_limit"),
        (b"error code: 1015", "rate_limit"),
        (bytearray(b'{"error": {"code": "invalid_api_key"}}'), "authentication"),
        (memoryview(b'{"error": {"code": "model_not_found"}}'), "model_not_found"),
        ([{"error": {"code": "moderation_blocked"}}], "content_policy"),
        ((429,), "rate_limit"),
        ((503, b""), "server"),
        (["429", None, None], "rate_limit"),
        ([1, 2, 3], "unknown"),  # a JSON array body, not a triple
        ((None, {}, b'{"error": {"code": "invalid_api_key"}}'), "authentication"),
        ((b"401", [(b"X-Thing", b"1")], b""), "authentication"),
        ({"data": []}, "malformed_response"),
        ({"type": "image_generation_user_error"}, "content_policy"),
        (None, "unknown"),
        (object(), "unknown"),
        (3.5, "unknown"),
        ("", "unknown"),
        (True, "unknown"),
        ((), "unknown"),
    ],
)
def test_input_shapes(given: object, category: str) -> None:
    assert diagnose(given).category == category


def test_a_diagnosis_is_returned_as_is() -> None:
    d = malformed("no data")
    assert diagnose(d) is d


# --- hygiene: secrets, sizes, totality, imports ---------------------------------------

FULL_KEY = "sk-proj-Abc123Def456Ghi789Jkl012Mno345Pqr678Stu901Vwx"


@pytest.mark.parametrize(
    "given",
    [
        envelope(401, f"Invalid token {FULL_KEY} for this relay", type="new_api_error"),
        raw(401, f"Unauthorized: Bearer {FULL_KEY[3:]}".encode(), {}),
        raw(400, {"error": {"message": "bad", "param": FULL_KEY, "code": FULL_KEY}}),
        (500, {}, f"<html><title>proxy error for ?api_key={FULL_KEY[3:]}&x=1</title>".encode()),
        ConnectionResetError(104, f"reset while sending Authorization: {FULL_KEY[3:]}"),
        ValueError(f"api_key={FULL_KEY}"),
    ],
)
def test_no_secret_reaches_the_diagnosis(given: object) -> None:
    d = diagnose(given)
    text = f"{d} {d.to_dict()}"
    assert FULL_KEY[3:20] not in text
    assert FULL_KEY[8:] not in text


def test_mask_keeps_server_masked_keys_and_masks_full_ones() -> None:
    already = "Incorrect API key provided: sk-VKMIs*****wjh3."
    assert mask_secrets(already) == already
    assert mask_secrets(f"key {FULL_KEY} end") == "key sk-*** end"
    assert mask_secrets("AIzaSyA1234567890abcdefghijklmnopqrstu") == "AIz***"


def test_message_is_truncated_and_flattened() -> None:
    d = diagnose(raw(500, {"error": {"message": "word\n" * 5000}}))
    assert d.message is not None
    assert len(d.message) <= MESSAGE_MAX_CHARS
    assert "\n" not in d.message


def test_huge_bodies_are_fast() -> None:
    big = b"<html><title>502</title>" + b"<" * (4 * 1024 * 1024)
    started = time.perf_counter()
    for given in [(502, {}, big), (200, {}, bytes(4 * 1024 * 1024)),
                  (400, {}, b"invalid '" * 400_000), (400, {}, b"[" * 200_000)]:  # fmt: skip
        diagnose(given)
    assert time.perf_counter() - started < 5  # each is a few ms; generous for a busy machine


def test_classify_never_raises_even_when_the_classifier_breaks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(ev: object, now: float) -> Diagnosis:
        raise RuntimeError("bug")

    monkeypatch.setattr(decide, "_decide", broken)
    d = classify((429, {}, b""))
    assert d.category == "unknown"
    assert "RuntimeError" in d.hint


def test_hostile_objects_are_handled_inside_the_classifier() -> None:
    class Exploding:
        @property
        def status_code(self) -> int:
            raise RuntimeError("no")

        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    class BadResponse:
        status_code = 500
        headers = {"retry-after": "1"}

        @property
        def content(self) -> bytes:
            raise RuntimeError("stream not read")

    class BadStr(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    assert diagnose(Exploding()).category == "unknown"
    assert diagnose(BadResponse()) == diagnose((500, {"retry-after": "1"}, None))
    assert diagnose(BadStr()).category == "unknown"


def test_malformed() -> None:
    d = malformed(f"data: [] (key {FULL_KEY})", status=200)
    assert (d.category, d.retryable, d.problem_class, d.status) == (
        "malformed_response",
        True,
        "technical",
        200,
    )
    assert d.message is not None
    assert FULL_KEY[8:] not in d.message
    assert "data: []" in d.hint
    assert "HTTP 200" in d.hint
    assert malformed("x").status is None


def test_importing_and_classifying_raw_input_does_not_import_openai_or_httpx2() -> None:
    code = (
        "import sys, pytest_imagegen\n"
        "from pytest_imagegen import classify\n"
        'body = b\'{"error": {"code": "rate_limit_exceeded"}}\'\n'
        "d = classify((429, {'retry-after': '2'}, body))\n"
        "assert d.category == 'rate_limit' and d.retry_after_s == 2.0, d\n"
        "heavy = ('openai', 'httpx2', 'httpx', 'PIL', 'vcr')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
