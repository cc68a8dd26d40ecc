"""Tests of the fallback runner: the pure decision, response parsing, the chain, and
``generate`` driving the real SDK over an ``httpx2.MockTransport`` that scripts each attempt."""

from __future__ import annotations

import base64
import functools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx2
import openai
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pytest_imagegen.classify import hint_for
from pytest_imagegen.config import Endpoint
from pytest_imagegen.errors import CassetteError, ConfigError, Diagnosis
from pytest_imagegen.fallback import (
    MAX_STEP_REPEATS,
    MIN_ATTEMPT_S,
    Action,
    MalformedResponse,
    Outcome,
    build_steps,
    decide,
    explain,
    generate,
    parse_images_response,
)
from pytest_imagegen.images import make_image
from pytest_imagegen.profiles import get_profile
from pytest_imagegen.request_builder import validate_request

BASE_URL = "http://127.0.0.1:9/v1"  # never contacted: the mock transport answers
# What ``generate`` may take beyond ``deadline_s``: thread wake-up and scheduling on a
# loaded 2-core machine. The runner itself never plans past the deadline.
ALLOWANCE_S = 0.5


# --------------------------------------------------------------------------- helpers


@functools.cache
def image_bytes(width: int = 1024, height: int = 1024, fmt: str = "png", seed: str = "") -> bytes:
    return make_image(width, height, fmt, seed=seed)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def images_body(*images: bytes, **extra: Any) -> bytes:
    return json.dumps(
        {"created": 1, "data": [{"b64_json": b64(i)} for i in images], **extra}
    ).encode()


def make_endpoint(
    *,
    model: str = "gpt-image-1.5",
    timeout_s: float = 1.0,
    deadline_s: float = 2.0,
    fallback: tuple[dict[str, Any], ...] = (),
    max_retries: int = 0,
) -> Endpoint:
    return Endpoint(
        name="mock",
        base_url=BASE_URL,
        image_model=model,
        profile=get_profile(model),
        api_key="sk-test",
        timeout_s=timeout_s,
        deadline_s=deadline_s,
        max_retries=max_retries,
        fallback=fallback,
    )


def error_json(message: str | None, type_: str | None, code: str | None, param=None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    ).encode()


QUOTA_BODY = error_json(
    "You exceeded your current quota, please check your plan and billing details.",
    "insufficient_quota",
    "insufficient_quota",
)
RATE_BODY = error_json(
    "Rate limit reached for images per minute. Please try again in 20s.",
    "requests",
    "rate_limit_exceeded",
)


# A scripted behaviour answers one request. ``valid`` says whether it serves a valid image
# answer for the request it gets (the property tests check success against it).
@dataclass
class Behaviour:
    name: str
    respond: Callable[[httpx2.Request, dict[str, Any]], httpx2.Response]
    valid: bool = False
    served: list[bytes] = field(default_factory=list)

    def __repr__(self) -> str:
        return self.name


def requested_images(body: dict[str, Any], seed: str) -> list[bytes]:
    size = body.get("size") or "auto"
    width, height = (1024, 1024) if size == "auto" else map(int, size.split("x"))
    fmt = body.get("output_format") or "png"
    return [image_bytes(width, height, fmt, seed=f"{seed}{i}") for i in range(body.get("n") or 1)]


def ok(latency: float = 0.0, *, usage: dict | None = None) -> Behaviour:
    def respond(request: httpx2.Request, body: dict[str, Any]) -> httpx2.Response:
        time.sleep(latency)
        images = requested_images(body, seed=str(id(request)))
        behaviour.served = images
        extra = {"usage": usage} if usage else {}
        return httpx2.Response(200, content=images_body(*images, **extra))

    behaviour = Behaviour(f"ok({latency})", respond, valid=True)
    return behaviour


def fail(
    status: int, body: bytes, headers: dict[str, str] | None = None, name: str = ""
) -> Behaviour:
    def respond(request: httpx2.Request, _: dict[str, Any]) -> httpx2.Response:
        return httpx2.Response(
            status, content=body, headers={"content-type": "application/json", **(headers or {})}
        )

    return Behaviour(name or f"fail({status})", respond)


def raw(status: int, body: bytes, name: str) -> Behaviour:
    return Behaviour(name, lambda request, _: httpx2.Response(status, content=body))


def stall() -> Behaviour:
    """What a real client sees from a server that never answers: nothing until the read
    timeout the request was sent with, then a read timeout."""

    def respond(request: httpx2.Request, _: dict[str, Any]) -> httpx2.Response:
        time.sleep(request.extensions["timeout"]["read"])
        raise httpx2.ReadTimeout("timed out", request=request)

    return Behaviour("stall", respond)


def connect_error() -> Behaviour:
    def respond(request: httpx2.Request, _: dict[str, Any]) -> httpx2.Response:
        raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)

    return Behaviour("connect_error", respond)


def tiny_image() -> Behaviour:
    """A 256x256 PNG whatever was asked: wrong when a size was asked for, and acceptable
    when the size was left to the server ("auto"), which ``generate`` does not second-guess."""

    def respond(request: httpx2.Request, body: dict[str, Any]) -> httpx2.Response:
        image = image_bytes(256, 256, "png")
        size = body.get("size", "auto" if body["model"].startswith("gpt-image") else "1024x1024")
        behaviour.valid = size == "auto" and body.get("output_format", "png") == "png"
        behaviour.valid = behaviour.valid and body.get("n", 1) == 1
        behaviour.served = [image]
        return httpx2.Response(200, content=images_body(image))

    behaviour = Behaviour("tiny_image", respond)
    return behaviour


def dribble(interval: float = 0.02, chunk: int = 1) -> Behaviour:
    """A valid answer whose body arrives ``chunk`` bytes per ``interval``: every single read
    is quick, the whole body takes far longer than any deadline in these tests."""

    def respond(request: httpx2.Request, body: dict[str, Any]) -> httpx2.Response:
        payload = images_body(*requested_images(body, seed="dribble"))

        def chunks() -> Iterator[bytes]:
            for i in range(0, min(len(payload), 400 * chunk), chunk):
                time.sleep(interval)
                yield payload[i : i + chunk]

        return httpx2.Response(200, content=chunks())

    return Behaviour(f"dribble({interval})", respond)


class ScriptedServer:
    """The handler of an ``httpx2.MockTransport``: each POST gets the next behaviour of the
    script (a 500 once the script is used up), GETs serve ``files``; every request is logged."""

    def __init__(self, *script: Behaviour, files: dict[str, bytes] | None = None) -> None:
        self.script = list(script)
        self.files = files or {}
        self.posts: list[tuple[dict[str, Any], Behaviour, dict[str, Any]]] = []
        self.gets: list[httpx2.Request] = []
        self._lock = threading.Lock()

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET":
            self.gets.append(request)
            data = self.files.get(request.url.path)
            return httpx2.Response(200, content=data) if data else httpx2.Response(404)
        body = json.loads(request.content)
        with self._lock:
            behaviour = self.script.pop(0) if self.script else fail(500, b"{}", name="unscripted")
            self.posts.append((body, behaviour, dict(request.extensions["timeout"])))
        return behaviour.respond(request, body)

    def client(self) -> openai.OpenAI:
        http = httpx2.Client(transport=httpx2.MockTransport(self))
        return openai.OpenAI(base_url=BASE_URL, api_key="sk-test", http_client=http)


def join_attempt_threads(timeout: float = 3.0) -> list[threading.Thread]:
    """Wait for attempts the runner abandoned (their handler may still be sleeping), so that
    the server's log is complete before it is compared with the trace; returns the threads
    still running after ``timeout``."""
    end = time.monotonic() + timeout
    threads = [t for t in threading.enumerate() if t.name.startswith("imagegen-")]
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    return [t for t in threads if t.is_alive()]


def run(server: ScriptedServer, endpoint: Endpoint, **params: Any) -> tuple[Outcome, float]:
    client = server.client()
    began = time.monotonic()
    outcome = generate(client, endpoint, "a red fox in the snow", **params)
    wall = time.monotonic() - began
    join_attempt_threads()
    return outcome, wall


def diagnosis(category: str, *, retryable: bool, retry_after_s: float | None = None) -> Diagnosis:
    return Diagnosis(
        category=category,
        problem_class="technical",
        retryable=retryable,
        hint=hint_for(category),
        retry_after_s=retry_after_s,
        status=429 if category in ("quota", "rate_limit") else None,
    )


# --------------------------------------------------------------------------- decide


def test_decide_non_retryable_stops_even_with_time_and_steps_left() -> None:
    d = decide(
        diagnosis("quota", retryable=False),
        time_left_s=100,
        has_next_step=True,
        retried_same_step=False,
    )
    assert d.action is Action.STOP
    assert d.reason == "is not retryable"


def test_decide_retryable_falls_back_to_the_next_step() -> None:
    d = decide(
        diagnosis("timeout", retryable=True),
        time_left_s=5,
        has_next_step=True,
        retried_same_step=False,
    )
    assert (d.action, d.wait_s) == (Action.FALL_BACK, 0.0)


def test_decide_retryable_without_a_next_step_stops() -> None:
    d = decide(
        diagnosis("server", retryable=True),
        time_left_s=5,
        has_next_step=False,
        retried_same_step=False,
    )
    assert d.action is Action.STOP
    assert "no fallback step is left" in d.reason


def test_decide_stops_when_no_time_is_left() -> None:
    d = decide(
        diagnosis("timeout", retryable=True),
        time_left_s=MIN_ATTEMPT_S / 2,
        has_next_step=True,
        retried_same_step=False,
    )
    assert d.action is Action.STOP
    assert "left before the deadline" in d.reason


def test_decide_repeats_when_retry_after_fits() -> None:
    d = decide(
        diagnosis("rate_limit", retryable=True, retry_after_s=1.5),
        time_left_s=4,
        has_next_step=True,
        retried_same_step=False,
    )
    assert (d.action, d.wait_s) == (Action.REPEAT, 1.5)
    assert "Retry-After of 1.50 s fits in the 4.00 s left" in d.reason


def test_decide_does_not_wait_for_a_retry_after_that_does_not_fit() -> None:
    d = decide(
        diagnosis("rate_limit", retryable=True, retry_after_s=20),
        time_left_s=4,
        has_next_step=True,
        retried_same_step=False,
    )
    assert (d.action, d.wait_s) == (Action.FALL_BACK, 0.0)
    assert "more than the 4.00 s left" in d.reason
    stop = decide(
        diagnosis("rate_limit", retryable=True, retry_after_s=20),
        time_left_s=4,
        has_next_step=False,
        retried_same_step=False,
    )
    assert stop.action is Action.STOP


def test_decide_repeats_a_step_at_most_once() -> None:
    d = decide(
        diagnosis("rate_limit", retryable=True, retry_after_s=0.1),
        time_left_s=4,
        has_next_step=True,
        retried_same_step=True,
    )
    assert d.action is Action.FALL_BACK
    assert "already repeated" in d.reason


@settings(max_examples=300)
@given(
    retryable=st.booleans(),
    retry_after=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    time_left=st.floats(min_value=-10, max_value=1000, allow_nan=False),
    has_next=st.booleans(),
    retried=st.booleans(),
)
def test_decide_table_holds_for_any_input(
    retryable: bool, retry_after: float | None, time_left: float, has_next: bool, retried: bool
) -> None:
    diag = replace(diagnosis("server", retryable=retryable), retry_after_s=retry_after)
    d = decide(diag, time_left_s=time_left, has_next_step=has_next, retried_same_step=retried)
    if not retryable or time_left < MIN_ATTEMPT_S:
        assert d.action is Action.STOP
    if d.action is Action.REPEAT:
        # Never sleeps past the deadline, leaves time for the attempt, bounded repeats.
        assert not retried and retry_after is not None
        assert d.wait_s >= 0 and d.wait_s + MIN_ATTEMPT_S <= time_left
    else:
        assert d.wait_s == 0
    if d.action is Action.FALL_BACK:
        assert has_next and retryable
    if retryable and time_left >= MIN_ATTEMPT_S and has_next:
        assert d.action is not Action.STOP
    assert d.reason


def test_explain_reads_like_a_sentence() -> None:
    endpoint = make_endpoint(fallback=({"quality": "low"},))
    steps = build_steps(endpoint, "a fox")
    diag = diagnosis("timeout", retryable=True)
    d = decide(diag, time_left_s=3, has_next_step=True, retried_same_step=False)
    text = explain(diag, d, latency_s=2.0, step=1, next_step=steps[1])
    assert text == "timeout after 2.00 s is retryable: falling back to step 2 {quality: low}"
    quota = diagnosis("quota", retryable=False)
    text = explain(
        quota,
        decide(quota, time_left_s=3, has_next_step=True, retried_same_step=False),
        latency_s=0.1,
        step=1,
    )
    assert text.startswith("quota (HTTP 429) is not retryable: stopping (")
    assert hint_for("quota") in text


# --------------------------------------------------------------------------- parsing


def test_parse_valid_response_decodes_images() -> None:
    a, b = image_bytes(seed="a"), image_bytes(seed="b")
    images = parse_images_response(images_body(a, b), n=2, size="1024x1024", output_format="png")
    assert [(i.data, i.format, i.size) for i in images] == [
        (a, "png", "1024x1024"),
        (b, "png", "1024x1024"),
    ]


def test_parse_auto_size_and_unset_format_are_not_checked() -> None:
    data = image_bytes(1536, 1024, "jpeg")
    (image,) = parse_images_response(images_body(data), n=1, size="auto", output_format=None)
    assert (image.format, image.width, image.height) == ("jpeg", 1536, 1024)


def test_parse_jpg_is_an_alias_of_jpeg() -> None:
    body = images_body(image_bytes(fmt="jpeg"))
    assert parse_images_response(body, n=1, size=None, output_format="jpg")[0].format == "jpeg"


def test_parse_keeps_revised_prompt_and_fetches_urls() -> None:
    data = image_bytes(seed="url")
    body = json.dumps(
        {"created": 1, "data": [{"url": "https://cdn.example/x.png", "revised_prompt": "a fox"}]}
    ).encode()
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return data

    (image,) = parse_images_response(body, n=1, size="1024x1024", output_format=None, fetch=fetch)
    assert fetched == ["https://cdn.example/x.png"]
    assert (image.data, image.url, image.revised_prompt) == (
        data,
        "https://cdn.example/x.png",
        "a fox",
    )


PNG = image_bytes()
MALFORMED = {
    "not json": (b"<html>OK</html>", "not JSON"),
    "empty body": (b"", "not JSON"),
    "json array": (b"[]", "not an object"),
    "error envelope": (
        json.dumps({"error": {"message": "upstream failed", "type": "upstream_error"}}).encode(),
        "error envelope instead of images: upstream failed",
    ),
    "no data": (b'{"created": 1}', "no `data` list"),
    "data empty": (b'{"created": 1, "data": []}', "`data` is empty"),
    "item not object": (b'{"created": 1, "data": ["x"]}', "not an object"),
    "item empty": (b'{"created": 1, "data": [{}]}', "neither `b64_json` nor `url`"),
    "bad base64": (b'{"created": 1, "data": [{"b64_json": "@@not base64@@"}]}', "not valid base64"),
    "not an image": (
        json.dumps({"created": 1, "data": [{"b64_json": b64(b"hello world")}]}).encode(),
        "not a decodable image (11 bytes)",
    ),
    "truncated image": (images_body(PNG[: len(PNG) // 2]), "not a decodable image"),
    "wrong size": (images_body(image_bytes(512, 512)), "is 512x512, but 1024x1024 was asked for"),
    "wrong format": (images_body(image_bytes(fmt="jpeg")), "is jpeg, but png was asked for"),
    "fewer than n": (images_body(PNG), "asked for 2 images, got 1"),
    "url without fetch": (
        b'{"created": 1, "data": [{"url": "https://cdn.example/x.png"}, {"url": "https://cdn.example/y.png"}]}',
        "no way to fetch it",
    ),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_parse_rejects_what_is_not_a_valid_image_answer(case: str) -> None:
    body, expected = MALFORMED[case]
    n = 2 if case in ("fewer than n", "url without fetch") else 1
    with pytest.raises(MalformedResponse) as info:
        parse_images_response(body, n=n, size="1024x1024", output_format="png")
    assert expected in str(info.value)


# --------------------------------------------------------------------------- the chain


def test_steps_merge_each_override_into_the_callers_params_in_order() -> None:
    endpoint = make_endpoint(
        fallback=({"quality": "medium"}, {"quality": "low", "size": "1024x1024"})
    )
    steps = build_steps(endpoint, "a fox", quality="high", size="1536x1024", output_format="jpeg")
    assert [s.number for s in steps] == [1, 2, 3]
    assert [(s.body["quality"], s.body["size"], s.body["output_format"]) for s in steps] == [
        ("high", "1536x1024", "jpeg"),
        ("medium", "1536x1024", "jpeg"),
        ("low", "1024x1024", "jpeg"),
    ]
    assert all(s.body["model"] == "gpt-image-1.5" and s.body["prompt"] == "a fox" for s in steps)
    assert all(validate_request(s.body, s.profile) == [] for s in steps)


def test_an_override_to_none_goes_back_to_the_profile_default() -> None:
    endpoint = make_endpoint(fallback=({"size": None},))
    steps = build_steps(endpoint, "a fox", size="1536x1024")
    assert "size" not in steps[1].body


def test_a_model_override_is_checked_against_that_models_profile() -> None:
    endpoint = make_endpoint(fallback=({"model": "dall-e-3", "quality": "standard"},))
    steps = build_steps(endpoint, "a fox", output_format="png")
    assert steps[1].profile.name == "dall-e-3"
    # output_format is a GPT-image parameter: left out of the dall-e-3 step, not sent.
    assert steps[1].body == {"model": "dall-e-3", "prompt": "a fox", "quality": "standard"}
    assert validate_request(steps[1].body, steps[1].profile) == []


@pytest.mark.parametrize(
    ("fallback", "params", "expected"),
    [
        (({"quality": "standard"},), {}, "fallback step 2 {quality: standard}"),
        (({"model": "dall-e-3"},), {"quality": "high"}, "fallback step 2 {model: dall-e-3}"),
        ((), {"quality": "hd"}, "the request parameters"),
        (({"model": "no-such-model-xyz"},), {}, "matches no known capability profile"),
    ],
)
def test_an_invalid_step_is_a_config_error_before_any_request(
    fallback: tuple[dict[str, Any], ...], params: dict[str, Any], expected: str
) -> None:
    server = ScriptedServer(ok())
    with pytest.raises(ConfigError) as info:
        generate(server.client(), make_endpoint(fallback=fallback), "a fox", **params)
    assert expected in str(info.value)
    assert "endpoint 'mock'" in str(info.value)
    assert server.posts == []


# --------------------------------------------------------------------------- generate


def test_success_outcome_carries_images_params_usage_and_cost() -> None:
    usage = {"input_tokens": 10, "output_tokens": 272, "total_tokens": 282}
    server = ScriptedServer(ok(usage=usage))
    endpoint = make_endpoint(model="gpt-image-1")
    outcome, _ = run(server, endpoint, quality="low", size="1024x1024", n=2)
    assert outcome.ok and outcome.diagnosis is None
    assert [i.data for i in outcome.images] == server.posts[0][1].served
    assert [(i.format, i.size) for i in outcome.images] == [("png", "1024x1024")] * 2
    assert (
        outcome.params
        == server.posts[0][0]
        == {
            "model": "gpt-image-1",
            "prompt": "a red fox in the snow",
            "quality": "low",
            "size": "1024x1024",
            "n": 2,
        }
    )
    assert outcome.usage == usage
    assert outcome.cost_usd == pytest.approx(
        get_profile("gpt-image-1").price(quality="low", size="1024x1024", n=2)
    )
    assert outcome.cost_usd > 0
    assert outcome.response_bytes == len(images_body(*server.posts[0][1].served, usage=usage))
    (attempt,) = outcome.attempts
    assert attempt.action == "success: 2 image(s), png 1024x1024"
    assert "=> 2 image(s)" in outcome.trace()


def test_stall_times_out_and_the_next_step_succeeds() -> None:
    server = ScriptedServer(stall(), ok())
    endpoint = make_endpoint(timeout_s=0.3, deadline_s=2.0, fallback=({"quality": "low"},))
    outcome, wall = run(server, endpoint, quality="high")
    assert outcome.ok
    first, second = outcome.attempts
    assert first.diagnosis is not None and first.diagnosis.category == "timeout"
    assert first.action.startswith("timeout after 0.")
    assert first.action.endswith("is retryable: falling back to step 2 {quality: low}")
    assert (second.step, second.params["quality"], second.diagnosis) == (2, "low", None)
    assert 0.28 <= first.latency_s <= 0.3 + ALLOWANCE_S
    assert wall < 2.0


def test_quota_stops_at_once_with_one_attempt() -> None:
    server = ScriptedServer(fail(429, QUOTA_BODY), ok())
    endpoint = make_endpoint(fallback=({"quality": "low"}, {"quality": "medium"}))
    outcome, _ = run(server, endpoint)
    assert not outcome.ok and outcome.images == ()
    assert outcome.diagnosis is not None
    assert (outcome.diagnosis.category, outcome.diagnosis.retryable) == ("quota", False)
    assert len(outcome.attempts) == 1 and len(server.posts) == 1
    assert "is not retryable: stopping" in outcome.attempts[0].action
    assert outcome.cost_usd == 0 and outcome.params is None


def test_retry_after_that_fits_repeats_the_same_step_after_waiting() -> None:
    server = ScriptedServer(fail(429, RATE_BODY, {"retry-after-ms": "150"}), ok())
    endpoint = make_endpoint(deadline_s=2.0, fallback=({"quality": "low"},))
    outcome, wall = run(server, endpoint, quality="high")
    assert outcome.ok
    assert [a.step for a in outcome.attempts] == [1, 1]
    assert [body["quality"] for body, _, _ in server.posts] == ["high", "high"]
    assert "waiting 0.15 s, then repeating step 1" in outcome.attempts[0].action
    assert outcome.attempts[1].started_s >= 0.15
    assert wall < 2.0


def test_retry_after_that_does_not_fit_falls_back_without_waiting() -> None:
    server = ScriptedServer(fail(429, RATE_BODY, {"retry-after": "30"}), ok())
    endpoint = make_endpoint(deadline_s=2.0, fallback=({"quality": "low"},))
    outcome, wall = run(server, endpoint, quality="high")
    assert outcome.ok
    assert [a.step for a in outcome.attempts] == [1, 2]
    assert "more than the" in outcome.attempts[0].action
    assert outcome.attempts[1].started_s < 0.5 and wall < 1.0


def test_retry_after_that_does_not_fit_and_no_step_left_stops_at_once() -> None:
    server = ScriptedServer(fail(429, RATE_BODY, {"retry-after": "30"}))
    outcome, wall = run(server, make_endpoint(deadline_s=2.0))
    assert outcome.diagnosis is not None and outcome.diagnosis.category == "rate_limit"
    assert len(outcome.attempts) == 1 and wall < 1.0


def test_a_step_is_repeated_at_most_once_then_the_chain_moves_on() -> None:
    limited = [fail(429, RATE_BODY, {"retry-after": "0"}) for _ in range(3)]
    server = ScriptedServer(*limited, ok())
    outcome, _ = run(server, make_endpoint(fallback=({"quality": "low"},)))
    assert outcome.ok
    assert MAX_STEP_REPEATS == 1
    assert [a.step for a in outcome.attempts] == [1, 1, 2, 2]
    assert "already repeated" in outcome.attempts[1].action


def test_a_slowly_dribbled_body_is_cut_off_at_the_deadline() -> None:
    server = ScriptedServer(dribble(interval=0.02))
    endpoint = make_endpoint(timeout_s=5.0, deadline_s=0.3)
    client = server.client()
    began = time.monotonic()
    outcome = generate(client, endpoint, "a red fox in the snow")
    wall = time.monotonic() - began
    # The abandoned attempt stops reading at its next chunk (the whole body would take 8 s).
    assert join_attempt_threads(timeout=1.0) == []
    assert outcome.diagnosis is not None and outcome.diagnosis.category == "timeout"
    assert outcome.diagnosis.retryable
    assert wall <= 0.3 + ALLOWANCE_S
    assert outcome.attempts[0].timeout_s == pytest.approx(0.3, abs=0.05)


def test_a_server_slower_than_the_attempt_is_cut_off_by_the_watchdog() -> None:
    # The mock transport ignores timeouts, like a server that keeps a connection alive:
    # only the runner's own clock can end this attempt.
    server = ScriptedServer(ok(latency=1.5), ok())
    endpoint = make_endpoint(timeout_s=0.3, deadline_s=2.0, fallback=({"quality": "low"},))
    outcome, _ = run(server, endpoint)
    assert outcome.ok
    assert outcome.attempts[0].diagnosis is not None
    assert outcome.attempts[0].diagnosis.category == "timeout"
    assert outcome.attempts[0].latency_s <= 0.3 + ALLOWANCE_S
    assert outcome.attempts[1].started_s < 0.3 + ALLOWANCE_S


def test_each_attempt_gets_the_smaller_of_timeout_and_time_left() -> None:
    server = ScriptedServer(stall(), stall(), stall())
    endpoint = make_endpoint(
        timeout_s=0.15, deadline_s=0.25, fallback=({"quality": "low"}, {"quality": "medium"})
    )
    outcome, wall = run(server, endpoint)
    assert wall <= 0.25 + ALLOWANCE_S
    first, second = outcome.attempts[:2]
    assert first.timeout_s == pytest.approx(0.15)
    assert second.timeout_s == pytest.approx(0.25 - second.started_s, abs=0.02)
    assert server.posts[0][2]["read"] == pytest.approx(0.15)
    assert server.posts[1][2]["read"] == pytest.approx(second.timeout_s)
    assert all(a.started_s + a.timeout_s <= 0.25 + 1e-6 for a in outcome.attempts)
    assert outcome.diagnosis is not None and outcome.diagnosis.category == "timeout"


@pytest.mark.parametrize(
    "behaviour",
    [
        raw(200, b"", "empty 200"),
        raw(200, b'{"created": 1, "data": []}', "data []"),
        raw(
            200,
            json.dumps({"error": {"message": "no channel", "type": "new_api_error"}}).encode(),
            "error in 200",
        ),
        raw(200, images_body(image_bytes(512, 512)), "wrong size"),
        raw(200, b'{"created": 1, "data": [{"b64_json": "bm90IGFuIGltYWdl"}]}', "not an image"),
    ],
    ids=repr,
)
def test_a_2xx_without_valid_images_is_malformed_and_falls_back(behaviour: Behaviour) -> None:
    server = ScriptedServer(behaviour, ok())
    outcome, _ = run(server, make_endpoint(fallback=({"quality": "low"},)), size="1024x1024")
    assert outcome.ok and len(outcome.attempts) == 2
    diag = outcome.attempts[0].diagnosis
    assert diag is not None
    assert (diag.category, diag.retryable, diag.status) == ("malformed_response", True, 200)
    assert outcome.attempts[0].action.startswith("malformed_response (HTTP 200, ")


def test_only_malformed_answers_never_give_success() -> None:
    server = ScriptedServer(raw(200, b'{"created": 1, "data": []}', "empty"))
    outcome, _ = run(server, make_endpoint())
    assert not outcome.ok and outcome.images == ()
    assert outcome.diagnosis is not None and outcome.diagnosis.category == "malformed_response"


def test_our_own_errors_are_raised_not_diagnosed() -> None:
    """A cassette that cannot answer is the user's to fix: it must not turn into an endpoint
    'unknown' error and quietly fall back."""

    def no_recording(request: httpx2.Request, _: dict[str, Any]) -> httpx2.Response:
        raise CassetteError("no recording for POST /v1/images/generations in x.yaml")

    server = ScriptedServer(Behaviour("cassette miss", no_recording), ok())
    with pytest.raises(CassetteError, match="no recording"):
        run(server, make_endpoint(fallback=({"quality": "low"},)))
    assert len(server.posts) == 1


def test_a_connection_error_falls_back() -> None:
    server = ScriptedServer(connect_error(), ok())
    outcome, _ = run(server, make_endpoint(fallback=({"quality": "low"},)))
    assert outcome.ok
    assert outcome.attempts[0].diagnosis is not None
    assert outcome.attempts[0].diagnosis.category == "network"


@pytest.mark.parametrize(("max_retries", "attempts"), [(0, 2), (1, 1)])
def test_the_sdk_retries_only_as_configured(max_retries: int, attempts: int) -> None:
    server = ScriptedServer(
        fail(500, error_json("The server had an error", "server_error", None)), ok()
    )
    endpoint = make_endpoint(max_retries=max_retries, fallback=({"quality": "low"},))
    outcome, _ = run(server, endpoint)
    assert outcome.ok
    assert len(outcome.attempts) == attempts
    assert len(server.posts) == 2


def test_dall_e_urls_are_fetched_without_sending_the_key() -> None:
    data = image_bytes(1024, 1024, "png", seed="dalle")
    url_body = json.dumps(
        {
            "created": 1,
            "data": [{"url": "http://127.0.0.1:9/files/fox.png", "revised_prompt": "A fox."}],
        }
    ).encode()
    server = ScriptedServer(raw(200, url_body, "url answer"), files={"/files/fox.png": data})
    outcome, _ = run(server, make_endpoint(model="dall-e-3"))
    assert outcome.ok
    (image,) = outcome.images
    assert (image.data, image.url, image.revised_prompt) == (
        data,
        "http://127.0.0.1:9/files/fox.png",
        "A fox.",
    )
    assert outcome.response_bytes == len(url_body) + len(data)
    assert "response_format" not in server.posts[0][0]
    (get,) = server.gets
    assert "authorization" not in get.headers
    assert "sk-test" not in str(dict(get.headers))


def test_a_dead_image_url_is_malformed() -> None:
    url_body = b'{"created": 1, "data": [{"url": "http://127.0.0.1:9/files/gone.png"}]}'
    server = ScriptedServer(raw(200, url_body, "dead url"))
    outcome, _ = run(server, make_endpoint(model="dall-e-3"))
    assert outcome.diagnosis is not None and outcome.diagnosis.category == "malformed_response"
    assert "answered HTTP 404" in (outcome.diagnosis.message or "")


def test_a_model_switch_sends_a_body_valid_for_that_model() -> None:
    data = image_bytes(1024, 1024, "png", seed="dalle")
    server = ScriptedServer(stall(), raw(200, images_body(data), "dalle b64"))
    endpoint = make_endpoint(
        timeout_s=0.3,
        fallback=({"model": "dall-e-3", "quality": "standard", "response_format": "b64_json"},),
    )
    outcome, _ = run(server, endpoint, quality="high", output_format="png")
    assert outcome.ok
    second = server.posts[1][0]
    assert second == {
        "model": "dall-e-3",
        "prompt": "a red fox in the snow",
        "quality": "standard",
        "response_format": "b64_json",
    }
    assert validate_request(second, get_profile("dall-e-3")) == []


# --------------------------------------------------------------------------- properties

PROFILE = get_profile("gpt-image-1.5")
ROUTINE = st.fixed_dictionaries(
    {},
    optional={
        "quality": st.sampled_from(PROFILE.qualities),
        "size": st.sampled_from(("1024x1024", "1024x1536", "auto")),
        "output_format": st.sampled_from(("png", "jpeg")),
        "n": st.integers(1, 2),
    },
)
OVERRIDES = ROUTINE | st.just({"model": "dall-e-3", "quality": "hd", "response_format": "b64_json"})


def error_behaviours() -> st.SearchStrategy[Behaviour]:
    bodies = [
        (
            401,
            error_json(
                "Incorrect API key provided: sk-test.", "invalid_request_error", "invalid_api_key"
            ),
            {},
        ),
        (
            403,
            error_json(
                "Your organization must be verified to use the model.",
                "invalid_request_error",
                None,
            ),
            {},
        ),
        (429, QUOTA_BODY, {}),
        (
            400,
            error_json("Invalid value: 'x'.", "invalid_request_error", "invalid_value", "size"),
            {},
        ),
        (
            400,
            error_json(
                "Your request was rejected by the safety system.",
                "image_generation_user_error",
                "moderation_blocked",
            ),
            {},
        ),
        (
            404,
            error_json("The model `x` does not exist", "invalid_request_error", "model_not_found"),
            {},
        ),
        (
            500,
            error_json("The server had an error processing your request.", "server_error", None),
            {},
        ),
        (503, error_json("Engine is currently overloaded", "server_error", None), {}),
        (504, b"<html><body>504 Gateway Time-out</body></html>", {"content-type": "text/html"}),
        (429, RATE_BODY, {"retry-after-ms": "40"}),
        (429, RATE_BODY, {"retry-after": "0"}),
        (429, RATE_BODY, {"retry-after": "30"}),
    ]
    return st.sampled_from(bodies).map(
        lambda b: fail(b[0], b[1], b[2], name=f"fail({b[0]},{b[2]})")
    )


BEHAVIOURS = st.one_of(
    st.floats(0, 0.05).map(ok),
    st.just(0.4).map(ok),  # slower than any attempt here: cut off by the watchdog
    st.builds(stall),
    st.builds(connect_error),
    st.just(0.03).map(dribble),
    error_behaviours(),
    st.sampled_from(
        [
            raw(200, b"<html>ok</html>", "no json"),
            raw(200, b'{"created": 1, "data": []}', "data []"),
            raw(200, b'{"created": 1, "data": [{"b64_json": "!!"}]}', "bad base64"),
        ]
    ),
    st.builds(tiny_image),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    params=ROUTINE,
    fallback=st.lists(OVERRIDES, max_size=3).map(tuple),
    script=st.lists(BEHAVIOURS, min_size=1, max_size=6),
    timeout_s=st.sampled_from((0.05, 0.1, 0.2)),
    deadline_s=st.sampled_from((0.1, 0.2, 0.3)),
)
def test_generate_keeps_every_promise_whatever_the_server_does(
    params: dict[str, Any],
    fallback: tuple[dict[str, Any], ...],
    script: list[Behaviour],
    timeout_s: float,
    deadline_s: float,
) -> None:
    endpoint = make_endpoint(timeout_s=timeout_s, deadline_s=deadline_s, fallback=fallback)
    try:
        steps = build_steps(endpoint, "a red fox in the snow", **params)
    except ConfigError:
        assume(False)  # an invalid chain never sends anything (tested above)
    server = ScriptedServer(*script)
    outcome, wall = run(server, endpoint, **params)

    # The deadline holds, and so does every attempt's share of it.
    assert wall <= deadline_s + ALLOWANCE_S
    for a in outcome.attempts:
        assert a.timeout_s <= timeout_s + 1e-9
        assert a.started_s + a.timeout_s <= deadline_s + 1e-6

    # The server saw exactly the attempts of the trace, in order, each valid for its profile.
    assert [body for body, _, _ in server.posts] == [a.params for a in outcome.attempts]
    for a in outcome.attempts:
        step = steps[a.step - 1]
        assert a.params == step.body
        assert validate_request(a.params, step.profile) == []
        assert a.params.get("quality") != "standard" or step.profile.family == "dall-e"

    # The chain is followed in order: a step repeats only for a Retry-After, and only once.
    numbers = [a.step for a in outcome.attempts]
    assert numbers[:1] == [1]
    for i, (prev, cur) in enumerate(zip(outcome.attempts, numbers[1:], strict=False), 1):
        assert cur in (prev.step, prev.step + 1)
        if cur == prev.step:
            assert prev.diagnosis is not None and prev.diagnosis.retry_after_s is not None
            assert i < 2 or numbers[i - 2] != cur  # at most one repeat

    # Nothing is sent after a failure that is not retryable; only the last attempt may stop.
    for a in outcome.attempts[:-1]:
        assert a.diagnosis is not None and a.diagnosis.retryable
    if outcome.attempts:
        last = outcome.attempts[-1]
        assert (last.diagnosis is None) == outcome.ok
        if last.diagnosis is not None:
            assert last.action.endswith("stopping") or "stopping (" in last.action

    # Success only with valid images: the very ones a valid answer served.
    if outcome.ok:
        _, behaviour, _ = server.posts[len(outcome.attempts) - 1]
        assert behaviour.valid
        assert [i.data for i in outcome.images] == behaviour.served
        assert outcome.diagnosis is None and outcome.params == outcome.attempts[-1].params
        profile = steps[outcome.attempts[-1].step - 1].profile
        size = outcome.params.get("size", profile.default_size)
        for image in outcome.images:
            assert size == "auto" or image.size == size
            assert image.format == outcome.params.get("output_format", "png")
    else:
        assert outcome.images == () and outcome.diagnosis is not None
        assert outcome.cost_usd == 0
        if outcome.attempts:
            assert outcome.diagnosis == outcome.attempts[-1].diagnosis


def test_importing_the_runner_loads_no_heavy_library() -> None:
    code = (
        "import sys, pytest_imagegen.fallback; "
        "print(sorted(m for m in ('openai', 'httpx2', 'vcr', 'hypothesis', 'PIL') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
