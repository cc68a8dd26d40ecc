"""Properties of the error classifier: total, deterministic, quota never retried, 5xx retried."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import datetime, timezone
from email.utils import format_datetime
from typing import Any

import httpx2
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_imagegen.classify import (
    MESSAGE_MAX_CHARS,
    PROBLEM_CLASS,
    RETRYABLE,
    _classify,
    classify,
)
from pytest_imagegen.errors import Category, Diagnosis

NOW = 1_800_000_000.0
CATEGORIES = frozenset(c.value for c in Category)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SDK = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def diagnose(x: object) -> Diagnosis:
    return _classify(x, now=NOW)  # unguarded: a classifier bug fails the property


def check_invariants(d: Diagnosis) -> None:
    assert isinstance(d, Diagnosis)
    assert d.category in CATEGORIES
    assert d.problem_class == PROBLEM_CLASS[d.category]
    assert d.retryable is (d.category in RETRYABLE)
    assert isinstance(d.hint, str)
    assert d.hint
    assert d.message is None or 0 < len(d.message) <= MESSAGE_MAX_CHARS
    for value in (d.code, d.type, d.param):
        assert value is None or 0 < len(value) <= 100
    if d.retry_after_s is not None:
        assert d.retryable
        assert math.isfinite(d.retry_after_s)
        assert d.retry_after_s >= 0
    assert d.status is None or type(d.status) is int
    json.dumps(d.to_dict())  # the report serialises it


# --- strategies -----------------------------------------------------------------------

HEADER_NAMES = [
    "retry-after", "Retry-After", "RETRY-AFTER-MS", "retry-after-ms", "content-type", "server",
    "x-ratelimit-reset-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-tokens",
    "x-ratelimit-remaining-tokens", "cf-ray", "x-request-id",
]  # fmt: skip
HEADER_VALUES = [
    "0", "20", "-5", "1.5", "12ms", "6m0s", "1h2m3.5s", "Wed, 21 Oct 2015 07:28:00 GMT", "nan",
    "inf", "1e999", "9" * 40, "", "cloudflare", "application/json",
]  # fmt: skip
INTERESTING = [
    "insufficient_quota", "429", "503", "rate_limit_exceeded", "model", "", "None", "null",
    "无可用渠道", "额度已用尽", "{\"error\": {\"code\": \"timeout\"}}", "<html><title>x</title>",
    "sk-abcdefghijklmnopqrstuvwxyz", "Please try again in 6m0s.", "DeploymentNotFound",
    "upstream_error", "image_generation_user_error", "invalid_request_error", "b64_json",
]  # fmt: skip
JSON_KEYS = [
    "error", "message", "msg", "code", "type", "param", "status", "statusCode", "inner_error",
    "innererror", "details", "detail", "data", "b64_json", "url", "error_description", "loc",
]  # fmt: skip

header_names = st.one_of(st.sampled_from(HEADER_NAMES), st.text(max_size=20))
header_values = st.one_of(
    st.sampled_from(HEADER_VALUES),
    st.text(max_size=30),
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
)
header_sets = st.one_of(
    st.none(),
    st.dictionaries(header_names, header_values, max_size=8),
    st.lists(st.tuples(header_names, header_values), max_size=8),
    st.lists(st.tuples(header_names.map(str.encode), header_values.map(str.encode)), max_size=4),
)
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    st.sampled_from(INTERESTING),
)
json_values = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from(JSON_KEYS), st.text(max_size=8)), children, max_size=5
        ),
    ),
    max_leaves=30,
)


def deep_python_dict(depth: int) -> dict[str, Any]:
    body: dict[str, Any] = {"message": "bottom", "code": "429"}
    for _ in range(depth):
        body = {"error": body}
    return body


bodies = st.one_of(
    st.none(),
    st.binary(max_size=512),  # mostly invalid UTF-8
    st.text(max_size=300),
    st.text(max_size=300).map(str.encode),
    json_values.map(lambda v: json.dumps(v).encode()),
    json_values,  # already parsed: dicts, lists, numbers, strings
    # huge bodies, up to about 3.8 MB
    st.tuples(st.binary(min_size=1, max_size=64), st.integers(1, 60_000)).map(
        lambda t: t[0] * t[1]
    ),
    st.tuples(st.sampled_from(INTERESTING), st.integers(1, 200_000)).map(
        lambda t: (t[0] * t[1]).encode()
    ),
    # deeply nested JSON text, and a deeply nested parsed body
    st.integers(1, 100_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 50_000).map(lambda n: b'{"error":' * n + b"{}" + b"}" * n),
    st.integers(1, 5_000).map(deep_python_dict),
    st.text(max_size=100).map(
        lambda t: f"<html><head><title>{t}</title></head><body><h1>{t}</body>".encode()
    ),
)
statuses = st.one_of(
    st.integers(100, 599), st.integers(-1000, 100_000), st.sampled_from(["429", b"503", None])
)
exceptions = st.sampled_from(
    [
        TimeoutError("timed out"),
        ConnectionResetError(104, "reset"),
        OSError(0, "odd"),
        ValueError("x"),
        RuntimeError(),
        KeyboardInterrupt(),
        httpx2.ReadTimeout("timed out"),
        httpx2.ConnectError("refused"),
        httpx2.HTTPError("generic"),
        httpx2.StreamClosed(),
        openai.OpenAIError("generic"),
        openai.APIConnectionError(request=httpx2.Request("GET", "http://x")),
    ]
)
anything = st.one_of(
    bodies,
    statuses,
    exceptions,
    st.tuples(statuses, header_sets, bodies),
    st.lists(st.one_of(statuses, bodies), max_size=4),
    st.tuples(statuses),
    st.floats(),
    st.builds(object),
    st.complex_numbers(),
    st.sets(st.integers(), max_size=3),
)


# --- totality and determinism ---------------------------------------------------------


@FAST
@given(status=statuses, headers=header_sets, body=bodies)
def test_total_over_status_headers_and_body(status: object, headers: object, body: object) -> None:
    check_invariants(diagnose((status, headers, body)))


@FAST
@given(x=anything)
def test_total_over_anything(x: object) -> None:
    d = diagnose(x)
    check_invariants(d)
    assert diagnose(x) == d  # deterministic for a fixed clock


@settings(max_examples=60, deadline=None)
@given(status=st.integers(100, 599), headers=header_sets, body=bodies)
def test_public_classify_is_deterministic(status: int, headers: object, body: object) -> None:
    first, second = classify((status, headers, body)), classify((status, headers, body))
    # Only a Retry-After given as a date moves with the clock (and the hint that quotes it).
    assert dataclasses.replace(first, retry_after_s=None, hint="") == dataclasses.replace(
        second, retry_after_s=None, hint=""
    )
    if first.retry_after_s is None:
        assert second.retry_after_s is None
    else:
        assert second.retry_after_s is not None
        assert abs(first.retry_after_s - second.retry_after_s) < 5
    assert first.category == diagnose((status, headers, body)).category


ascii_values = st.from_regex(r"[!-~]{0,20}", fullmatch=True)
safe_headers = st.dictionaries(st.sampled_from(HEADER_NAMES), ascii_values, max_size=5)


@SDK
@given(status=st.integers(400, 599), headers=safe_headers, body=json_values)
def test_sdk_exception_classifies_like_the_raw_answer(
    status: int, headers: dict[str, str], body: object
) -> None:
    content = json.dumps(body).encode()
    want = diagnose((status, headers, content))
    assert diagnose(httpx2.Response(status, headers=headers, content=content)) == want
    client = openai.OpenAI(
        base_url="http://relay.test/v1",
        api_key="sk-test",
        http_client=httpx2.Client(
            transport=httpx2.MockTransport(
                lambda request: httpx2.Response(status, headers=headers, content=content)
            )
        ),
        max_retries=0,
    )
    with pytest.raises(openai.APIStatusError) as caught:
        client.images.generate(model="gpt-image-1", prompt="x")
    assert diagnose(caught.value) == want


# --- quota is never a rate limit --------------------------------------------------------

QUOTA_PHRASES = ["You exceeded your current quota", "insufficient_quota", "insufficient quota"]
NOISE = [
    "rate_limit_exceeded", "throttling_error", "429", "requests", "server_error",
    "invalid_request_error", "one_api_error", "new_api_error", "moderation_blocked", "timeout",
    "无可用渠道", "负载已饱和", "Rate limit reached", "",
]  # fmt: skip
noise = st.one_of(st.none(), st.sampled_from(NOISE), st.text(max_size=30))
casings = st.sampled_from([str.lower, str.upper, str.title, str])


@st.composite
def quota_answers(draw: st.DrawFn) -> tuple[str, dict[str, str], bytes, object]:
    """A 429 saying "out of quota" in code, type or message, in some relay's envelope."""
    where = draw(st.sampled_from(["code", "type", "message"]))
    style = draw(st.sampled_from(["openai", "unwrapped", "litellm", "azure", "one-api", "text"]))
    if style == "text":
        where = "message"
    phrase = draw(casings)(draw(st.sampled_from(QUOTA_PHRASES)))
    message: object = draw(noise)
    if where == "message":
        message = f"{draw(st.text(max_size=60))} {phrase}. {draw(st.text(max_size=60))}"
    error: dict[str, object] = {
        "message": message,
        "type": "insufficient_quota" if where == "type" else draw(noise),
        "param": draw(noise),
        "code": "insufficient_quota" if where == "code" else draw(noise),
    }
    if style == "litellm":
        if where != "code":
            error["code"] = "429"
        if where != "type":
            error["type"] = "throttling_error"
        if where == "message":
            error["message"] = f"litellm.RateLimitError: RateLimitError: {message}"
    elif style == "azure" and where == "code":
        error["code"] = "429"
        error["innererror"] = {"code": "insufficient_quota"}
    elif style == "one-api" and where != "type":
        error["type"] = draw(st.sampled_from(["one_api_error", "new_api_error", "upstream_error"]))
    if style == "text":
        body = str(message).encode()
        parsed: object = str(message)
    elif style == "unwrapped":
        body, parsed = json.dumps(error).encode(), error
    else:
        body, parsed = json.dumps({"error": error}).encode(), {"error": error}
    headers = draw(
        st.dictionaries(st.sampled_from(["retry-after", "retry-after-ms"]), ascii_values)
    )
    return style, headers, body, parsed


@FAST
@given(answer=quota_answers(), shape=st.sampled_from(["triple", "response", "parsed"]))
def test_429_with_insufficient_quota_is_always_quota(answer: Any, shape: str) -> None:
    _, headers, body, parsed = answer
    given_input: object = {
        "triple": (429, headers, body),
        "response": httpx2.Response(429, headers=headers, content=body),
        "parsed": parsed,
    }[shape]
    d = diagnose(given_input)
    assert (d.category, d.retryable, d.problem_class) == ("quota", False, "cost"), d
    assert d.retry_after_s is None


@SDK
@given(answer=quota_answers())
def test_429_quota_through_the_sdk_is_quota(answer: Any) -> None:
    _, headers, body, _ = answer
    client = openai.OpenAI(
        base_url="http://relay.test/v1",
        api_key="sk-test",
        http_client=httpx2.Client(
            transport=httpx2.MockTransport(
                lambda request: httpx2.Response(429, headers=headers, content=body)
            )
        ),
        max_retries=0,
    )
    with pytest.raises(openai.RateLimitError) as caught:
        client.images.generate(model="gpt-image-1", prompt="x")
    d = diagnose(caught.value)
    assert (d.category, d.retryable) == ("quota", False)


# --- every 5xx without a more specific signal is a retryable server error -----------------

MORE_SPECIFIC_5XX = {504: "timeout", 522: "timeout", 524: "timeout", 598: "timeout",
                     599: "timeout", 521: "network", 523: "network", 525: "network",
                     526: "network"}  # fmt: skip
# No letters anywhere: every pattern the classifier knows needs letters (Latin or CJK).
neutral_text = st.text(
    alphabet=st.characters(categories=("Nd", "Zs", "Po", "Ps", "Pe", "Sm", "Sc")), max_size=80
)
neutral_bytes = st.binary(max_size=300).map(
    lambda b: bytes(c for c in b if c < 0xC0 and not chr(c).isalpha())
)
neutral_bodies = st.one_of(
    st.just(b""),
    neutral_bytes,
    neutral_text.map(str.encode),
    neutral_text.map(lambda t: json.dumps({"error": {"message": t}}).encode()),
    neutral_text.map(
        lambda t: json.dumps({"error": {"message": t, "type": None, "param": None}}).encode()
    ),
    st.just(json.dumps({"error": {"message": None}}).encode()),
    neutral_text.map(lambda t: json.dumps({"detail": t}).encode()),
    st.lists(st.integers(), max_size=5).map(lambda v: json.dumps(v).encode()),
    neutral_text.map(lambda t: f"<html><head><title>{t}</title></head><body>{t}</body>".encode()),
)


@FAST
@given(status=st.integers(500, 599), headers=header_sets, body=neutral_bodies)
def test_5xx_without_a_specific_signal_is_a_retryable_server_error(
    status: int, headers: object, body: bytes
) -> None:
    d = diagnose((status, headers, body))
    assert d.category == MORE_SPECIFIC_5XX.get(status, "server"), d
    assert d.retryable
    check_invariants(d)


@SDK
@given(status=st.integers(500, 599), body=neutral_bodies)
def test_5xx_through_the_sdk(status: int, body: bytes) -> None:
    client = openai.OpenAI(
        base_url="http://relay.test/v1",
        api_key="sk-test",
        http_client=httpx2.Client(
            transport=httpx2.MockTransport(lambda request: httpx2.Response(status, content=body))
        ),
        max_retries=0,
    )
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(model="gpt-image-1", prompt="x")
    d = diagnose(caught.value)
    assert (d.category, d.retryable) == (MORE_SPECIFIC_5XX.get(status, "server"), True)


# --- Retry-After ------------------------------------------------------------------------


def flip_case(name: str, flips: list[bool]) -> str:
    return "".join(c.upper() if f else c for c, f in zip(name, flips, strict=False))


@FAST
@given(
    seconds=st.integers(0, 10**9),
    flips=st.lists(st.booleans(), min_size=11, max_size=11),
    as_list=st.booleans(),
)
def test_retry_after_seconds_any_case(seconds: int, flips: list[bool], as_list: bool) -> None:
    name = flip_case("retry-after", flips)
    headers: Any = [(name, str(seconds))] if as_list else {name: str(seconds)}
    assert diagnose((429, headers, b"")).retry_after_s == float(seconds)


@FAST
@given(ms=st.integers(0, 10**9))
def test_retry_after_ms(ms: int) -> None:
    d = diagnose((503, {"Retry-After-Ms": str(ms), "retry-after": "99999"}, b""))
    assert d.retry_after_s == pytest.approx(ms / 1000)


@FAST
@given(delta=st.integers(-(10**7), 10**8))
def test_retry_after_http_date(delta: int) -> None:
    when = format_datetime(datetime.fromtimestamp(NOW + delta, tz=timezone.utc), usegmt=True)
    assert diagnose((429, {"retry-after": when}, b"")).retry_after_s == max(delta, 0)


@FAST
@given(status=st.integers(400, 599).filter(lambda s: s != 429), value=st.integers(1, 1000))
def test_retry_after_only_on_retryable_answers(status: int, value: int) -> None:
    d = diagnose((status, {"retry-after": str(value)}, b""))
    assert d.retry_after_s == (float(value) if d.retryable else None)


# --- secrets ------------------------------------------------------------------------------

key_bodies = st.from_regex(r"[A-Za-z0-9]{24,60}", fullmatch=True)


@FAST
@given(
    prefix=st.sampled_from(["sk-", "sk-proj-", "sk-ant-api03-"]),
    key=key_bodies,
    before=st.text(max_size=40),
    after=st.text(max_size=40),
    shape=st.sampled_from(["json", "text", "exception", "param", "html"]),
    status=st.sampled_from([400, 401, 403, 429, 500, 503]),
)
def test_a_full_key_never_reaches_the_diagnosis(
    prefix: str, key: str, before: str, after: str, shape: str, status: int
) -> None:
    secret = f"{prefix}{key}"
    text = f"{before}{secret}{after}"
    given_input: object = {
        "json": (status, {}, json.dumps({"error": {"message": text}}).encode()),
        "text": (status, {}, text.encode()),
        "exception": ConnectionResetError(104, text),
        "param": (status, {}, json.dumps({"error": {"param": secret, "code": secret}}).encode()),
        "html": (status, {}, f"<html><title>{text}</title></html>".encode()),
    }[shape]
    d = diagnose(given_input)
    dumped = f"{d} {d.to_dict()!r}"
    assert key[3:] not in dumped
