"""The fallback runner's streaming steps and edits, against the reference server: normal
streams and edits, and the stream faults (a stall after the partial images, no completed
event, a stream held back, headers and then nothing) falling back to the next step.

Timing: a step's time (``timeout_s``) is 2 s where a stall has to be waited out, and the
server's own events come every 0.1 s or more apart, so the answers the tests expect to
succeed have many times the time they need; a stall costs one ``timeout_s``."""

from __future__ import annotations

import io
import itertools
import time
from pathlib import Path
from typing import Any

import openai
import pytest
from _support import REFERENCE_KEY
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_imagegen.config import Endpoint
from pytest_imagegen.errors import ConfigError
from pytest_imagegen.fallback import _SSEReader, build_steps, edit, generate
from pytest_imagegen.images import make_image, make_input_image, make_mask
from pytest_imagegen.profiles import get_profile
from pytest_imagegen.reference import ReferenceServer

STALL_S = 2.0  # the step time of tests that wait a stall out
ALLOWANCE_S = 0.5  # thread wake-up and scheduling on a loaded machine, past a bound
IMAGE = make_input_image(1024, 1024, seed="photo")
MASK = make_mask(1024, 1024)


def endpoint_for(
    server: ReferenceServer,
    *,
    timeout_s: float = 30.0,
    deadline_s: float = 60.0,
    fallback: tuple[dict[str, Any], ...] = (),
    model: str = "gpt-image-1.5",
) -> Endpoint:
    return Endpoint(
        name="reference",
        base_url=server.base_url,
        image_model=model,
        profile=get_profile(model),
        api_key=REFERENCE_KEY,
        timeout_s=timeout_s,
        deadline_s=deadline_s,
        fallback=fallback,
    )


def client_for(endpoint: Endpoint) -> openai.OpenAI:
    return endpoint.client()


def sent(server: ReferenceServer, path: str = "/v1/images/generations") -> list[dict[str, Any]]:
    return [r.body for r in server.log.filter(method="POST", path=path)]


# --------------------------------------------------------------------------- streaming


def test_a_streamed_step_gives_the_final_image_and_the_partials_seen(server) -> None:
    endpoint = endpoint_for(server)
    outcome = generate(
        client_for(endpoint), endpoint, "a lighthouse", stream=True, partial_images=2,
        size="1024x1536", output_format="webp",
    )  # fmt: skip

    assert outcome.ok, outcome.trace()
    (image,) = outcome.images
    assert (image.size, image.format) == ("1024x1536", "webp")
    assert len(outcome.partials) == 2
    assert all(p.size == "1024x1536" for p in outcome.partials)
    assert len({p.sha256 for p in outcome.partials} | {image.sha256}) == 3
    assert outcome.usage is not None and outcome.usage["total_tokens"] > 0
    assert outcome.params is not None and outcome.params["stream"] is True
    (body,) = sent(server)
    assert (body["stream"], body["partial_images"]) == (True, 2)
    assert "streamed 2 partial image(s), the first image event after" in outcome.trace()


def test_zero_partial_images_succeed_on_the_completed_event(server) -> None:
    endpoint = endpoint_for(server)
    outcome = generate(client_for(endpoint), endpoint, "a fox", stream=True, partial_images=0)
    assert outcome.ok, outcome.trace()
    assert (len(outcome.images), outcome.partials) == (1, ())


def test_a_stream_may_outlast_the_step_time_while_its_events_keep_coming(server) -> None:
    # 2 images x (3 partials + 1 completed) = 8 events spread over 3.2 s: one every 0.4 s,
    # well inside the 2 s each event is given, while the whole stream takes longer than 2 s.
    server.latency = {"high": 3.2}
    endpoint = endpoint_for(server, timeout_s=STALL_S)
    outcome = generate(
        client_for(endpoint), endpoint, "two boats", stream=True, partial_images=3, n=2,
        quality="high",
    )  # fmt: skip

    assert outcome.ok, outcome.trace()
    (attempt,) = outcome.attempts
    assert attempt.latency_s > attempt.timeout_s == STALL_S
    assert (len(outcome.images), len(outcome.partials)) == (2, 6)


def test_a_stream_that_stalls_after_its_partials_falls_back(server) -> None:
    server.faults.add("stream_stall", quality="high")
    endpoint = endpoint_for(server, timeout_s=STALL_S, fallback=({"quality": "low"},))
    outcome = generate(
        client_for(endpoint), endpoint, "a lighthouse", stream=True, partial_images=1,
        quality="high",
    )  # fmt: skip

    assert outcome.ok, outcome.trace()
    first, second = outcome.attempts
    assert first.diagnosis is not None
    assert (first.diagnosis.category, first.diagnosis.retryable) == ("timeout", True)
    assert "the stream stalled: no event for 2.00 s after 1 partial image(s)" in first.action
    assert "falling back to step 2 {quality: low}" in first.action
    # The stall is noticed one step time after the last event, not at the deadline.
    assert first.latency_s <= 2 * STALL_S + ALLOWANCE_S
    assert second.diagnosis is None and len(outcome.partials) == 1
    assert [b["quality"] for b in sent(server)] == ["high", "low"]


def test_a_stream_without_its_completed_event_falls_back(server) -> None:
    server.faults.add("stream_no_completed")
    endpoint = endpoint_for(server, fallback=({"quality": "low"},))
    outcome = generate(client_for(endpoint), endpoint, "a fox", stream=True, partial_images=2)

    assert outcome.ok, outcome.trace()
    first = outcome.attempts[0]
    assert first.diagnosis is not None and first.diagnosis.category == "malformed_response"
    assert first.diagnosis.status == 200
    assert (
        "the stream ended without its image_generation.completed event (0 of 1 completed "
        "image(s), after 2 partial image(s))"
    ) in first.action
    assert "is retryable: falling back to step 2" in first.action
    assert outcome.attempts[1].diagnosis is None


@pytest.mark.parametrize("how", ["held back", "headers only"])
def test_a_stream_with_no_event_in_the_step_time_falls_back(server, how: str) -> None:
    if how == "held back":
        # A buffering proxy: the 60 s stream would come all at once at its end.
        server.latency = {"high": 60.0, "low": 0.0}
        server.faults.add("stream_buffered", quality="high")
        fallback: dict[str, Any] = {"quality": "low"}
    else:
        # Every stream stalls before its first event: fall back to not streaming.
        server.defects.add("stream_stalls")
        fallback = {"stream": False, "partial_images": None}
    endpoint = endpoint_for(server, timeout_s=STALL_S, fallback=(fallback,))
    outcome = generate(
        client_for(endpoint), endpoint, "a fox", stream=True, partial_images=1, quality="high"
    )

    assert outcome.ok, outcome.trace()
    first, second = outcome.attempts
    assert first.diagnosis is not None and first.diagnosis.category == "timeout"
    assert "the stream sent no image event within the attempt's 2.00 s" in first.action
    assert first.latency_s <= STALL_S + ALLOWANCE_S
    assert second.diagnosis is None
    if how == "headers only":
        assert second.params["stream"] is False
        assert outcome.partials == ()


def test_a_stream_held_back_but_inside_the_step_time_succeeds(server) -> None:
    server.faults.add("stream_buffered")
    endpoint = endpoint_for(server)
    outcome = generate(client_for(endpoint), endpoint, "a fox", stream=True, partial_images=2)
    assert outcome.ok, outcome.trace()
    assert (len(outcome.attempts), len(outcome.partials)) == (1, 2)


def test_a_stream_still_arriving_at_the_deadline_is_cut_off(server) -> None:
    # 8 events over 4 s, one every 0.5 s (each well inside the step time), but the
    # deadline comes after 2 s: the runner stops there, whatever the stream still sends.
    server.latency = {"high": 4.0}
    endpoint = endpoint_for(server, timeout_s=30.0, deadline_s=2.0)
    began = time.monotonic()
    outcome = generate(
        client_for(endpoint), endpoint, "two boats", stream=True, partial_images=3, n=2,
        quality="high",
    )  # fmt: skip
    wall = time.monotonic() - began

    assert wall <= 2.0 + ALLOWANCE_S
    assert outcome.diagnosis is not None and outcome.diagnosis.category == "timeout"
    assert "the deadline came while the stream was still arriving" in outcome.trace()


def test_an_error_answer_to_a_stream_step_is_classified_as_usual(server) -> None:
    server.faults.add("server_error")
    server.faults.add("content_policy")
    endpoint = endpoint_for(server, fallback=({"quality": "low"},))
    outcome = generate(client_for(endpoint), endpoint, "a fox", stream=True, partial_images=1)

    assert [a.diagnosis.category for a in outcome.attempts if a.diagnosis] == [
        "server",
        "content_policy",
    ]
    assert not outcome.ok
    assert outcome.attempts[-1].action.startswith("content_policy (HTTP 400")


def test_an_error_event_inside_a_stream_is_classified() -> None:
    import httpx2

    def answer(request: httpx2.Request) -> httpx2.Response:
        event = (
            b'event: error\ndata: {"type": "error", "error": {"type": "invalid_request_error",'
            b' "code": "moderation_blocked", "message": "Your request was rejected by the '
            b'safety system."}}\n\n'
        )
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=event)

    endpoint = Endpoint(
        name="mock",
        base_url="http://127.0.0.1:9/v1",
        image_model="gpt-image-1",
        profile=get_profile("gpt-image-1"),
        api_key="sk-test",
        fallback=({"quality": "low"},),
    )
    client = openai.OpenAI(
        base_url=endpoint.base_url,
        api_key="sk-test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
    )
    outcome = generate(client, endpoint, "a fox", stream=True)
    (attempt,) = outcome.attempts  # content_policy is not retryable: no fallback
    assert attempt.diagnosis is not None and attempt.diagnosis.category == "content_policy"


_EVENTS = [
    b'event: image_generation.partial_image\ndata: {"type": "image_generation.partial_image",'
    b' "b64_json": "AAAA", "partial_image_index": 0}\n\n',
    b": a comment, ignored\n\n",
    b'event: image_generation.completed\r\ndata: {"type": "image_generation.completed",\r\n'
    b'data: "b64_json": "BBBB"}\r\n\r\n',
]


@settings(max_examples=30)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(b"".join(_EVENTS))), max_size=12))
def test_sse_events_are_the_same_however_the_bytes_are_cut(cuts: list[int]) -> None:
    raw = b"".join(_EVENTS)
    bounds = [0, *sorted(cuts), len(raw)]
    reader = _SSEReader()
    events = []
    for start, end in itertools.pairwise(bounds):
        events += reader.feed(raw[start:end])
    assert events == [
        (
            "image_generation.partial_image",
            {
                "type": "image_generation.partial_image",
                "b64_json": "AAAA",
                "partial_image_index": 0,
            },
        ),
        ("image_generation.completed", {"type": "image_generation.completed", "b64_json": "BBBB"}),
    ]


# --------------------------------------------------------------------------- edits


def test_an_edit_with_a_mask_runs_through_the_chain(server) -> None:
    endpoint = endpoint_for(server)
    outcome = edit(
        client_for(endpoint), endpoint, "add a hat", IMAGE, mask=MASK, size="1024x1536",
        quality="low", input_fidelity="high",
    )  # fmt: skip

    assert outcome.ok, outcome.trace()
    assert [i.size for i in outcome.images] == ["1024x1536"]
    (body,) = sent(server, "/v1/images/edits")
    assert (body["quality"], body["size"], body["input_fidelity"]) == ("low", "1024x1536", "high")
    assert [f["bytes"] for f in body["image"]] == [len(IMAGE)]
    assert [f["bytes"] for f in body["mask"]] == [len(MASK)]
    assert sent(server) == []  # nothing went to /images/generations


def test_an_edit_falls_back_and_sends_the_same_files_again(server) -> None:
    server.faults.add("overloaded")
    endpoint = endpoint_for(server, fallback=({"quality": "low"},))
    second = make_input_image(1024, 1024, fmt="webp", seed="second")
    outcome = edit(client_for(endpoint), endpoint, "add a hat", [IMAGE, ("b.webp", second)])

    assert outcome.ok, outcome.trace()
    assert outcome.attempts[0].diagnosis is not None
    assert "falling back to step 2 {quality: low}" in outcome.attempts[0].action
    first_body, second_body = sent(server, "/v1/images/edits")
    for body in (first_body, second_body):
        files = body.get("image") or body.get("image[]")
        assert [(f["bytes"], f["content_type"]) for f in files] == [
            (len(IMAGE), "image/png"),
            (len(second), "image/webp"),
        ]
    assert second_body["quality"] == "low"


def test_a_streamed_edit_falls_back_from_a_broken_stream(server) -> None:
    server.faults.add("stream_no_completed")
    endpoint = endpoint_for(server, fallback=({"quality": "low"},))
    outcome = edit(
        client_for(endpoint), endpoint, "add a hat", IMAGE, stream=True, partial_images=1
    )

    assert outcome.ok, outcome.trace()
    first, second = outcome.attempts
    assert first.diagnosis is not None
    assert "without its image_edit.completed event" in first.action
    assert second.diagnosis is None and len(outcome.partials) == 1
    assert [b["stream"] for b in sent(server, "/v1/images/edits")] == ["true", "true"]


def test_edit_inputs_may_be_a_path_a_file_object_or_a_tuple(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(IMAGE)
    endpoint = Endpoint(
        name="e", base_url="http://127.0.0.1:9/v1", image_model="gpt-image-1",
        profile=get_profile("gpt-image-1"), api_key="sk-test",
    )  # fmt: skip
    jpeg = make_image(512, 512, "jpeg", seed="j")
    for image in (path, io.BytesIO(IMAGE), ("photo.png", IMAGE), IMAGE):
        (step,) = build_steps(endpoint, "add a hat", image=image)
        (name, data, content_type) = step.images[0]
        assert (data, content_type) == (IMAGE, "image/png")
        assert name.endswith(".png")
    (step,) = build_steps(endpoint, "x", image=[IMAGE, ("j", jpeg, "image/jpeg")], mask=MASK)
    assert [f[2] for f in step.images] == ["image/png", "image/jpeg"]
    assert step.mask is not None and step.mask[1] == MASK
    assert step.is_edit and not step.streams


@pytest.mark.parametrize(
    ("model", "kwargs", "expected"),
    [
        ("dall-e-3", {}, "Invalid value: 'dall-e-3'. Supported values are"),
        ("gpt-image-1", {"mask": make_mask(512, 512)}, "must be the same size as the first"),
        ("dall-e-2", {"image": [IMAGE, IMAGE]}, "expected a file, but got an array"),
        ("gpt-image-1", {"image": b"not an image"}, "unsupported mimetype"),
        ("gpt-image-1-mini", {"input_fidelity": "high"}, "'input_fidelity' is not supported"),
    ],
)
def test_an_invalid_edit_is_a_config_error_before_any_request(
    server, model: str, kwargs: dict[str, Any], expected: str
) -> None:
    endpoint = endpoint_for(server, model=model)
    kwargs = {"image": IMAGE, **kwargs}
    with pytest.raises(ConfigError) as info:
        edit(client_for(endpoint), endpoint, "add a hat", **kwargs)
    assert expected in str(info.value)
    assert "would send an edit request" in str(info.value)
    assert len(server.log) == 0


def test_a_fallback_step_is_checked_against_its_own_edit_rules(server) -> None:
    endpoint = endpoint_for(server, fallback=({"model": "dall-e-3"},))
    with pytest.raises(ConfigError, match=r"fallback step 2 \{model: dall-e-3\}"):
        edit(client_for(endpoint), endpoint, "add a hat", IMAGE)
    assert len(server.log) == 0


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda c, e: generate(c, e, "x", image=IMAGE), "to edit an image, call"),
        (lambda c, e: edit(c, e, "x", "photo.png"), r"a path\? pass pathlib\.Path"),
        (lambda c, e: edit(c, e, "x", io.StringIO("text")), "binary mode"),
        (lambda c, e: edit(c, e, "x", ("a", "b", "c", "d")), "as a tuple must be"),
        (lambda c, e: edit(c, e, "x", []), "has no file to edit"),
        (lambda c, e: edit(c, e, "x", None), "needs the image to edit"),
    ],
)
def test_wrong_edit_arguments_are_a_type_error_that_says_what_to_pass(
    server, call: Any, expected: str
) -> None:
    endpoint = endpoint_for(server)
    with pytest.raises(TypeError, match=expected):
        call(client_for(endpoint), endpoint)
    assert len(server.log) == 0
