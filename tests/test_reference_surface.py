"""The reference server beyond generations: edits (multipart and JSON), variations, streamed
events, stream faults, and the Responses ``image_generation`` tool. Every answer is checked
against the spec's schemas (``tests/data``) or, for ``/responses``, the SDK's types."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from _support import REFERENCE_KEY, spec_validator

from pytest_imagegen.images import inspect_image, make_image, make_input_image, make_mask
from pytest_imagegen.reference import ReferenceServer

KEY = REFERENCE_KEY
IMG = make_input_image(1024, 1024, seed="input")
PNG = ("in.png", IMG, "image/png")
MASK = ("mask.png", make_mask(1024, 1024), "image/png")


def _valid(schema: str, body: Any) -> None:
    errors = sorted(spec_validator(schema).iter_errors(body), key=str)
    assert not errors, f"breaks {schema}: {errors[0].message}"


class Checked:
    """Response hook: every JSON body from the images routes fits the spec's schema."""

    def __init__(self) -> None:
        self.bodies: list[tuple[int, str]] = []

    def __call__(self, response: httpx2.Response) -> None:
        if "json" not in response.headers.get("content-type", ""):
            return
        response.read()
        path = response.request.url.path
        if "/images/" not in path:
            return
        schema = "ErrorResponse" if response.status_code >= 400 else "ImagesResponse"
        _valid(schema, response.json())
        self.bodies.append((response.status_code, path))


@pytest.fixture
def checked() -> Checked:
    return Checked()


@pytest.fixture
def client(server: ReferenceServer, checked: Checked) -> Iterator[openai.OpenAI]:
    http = httpx2.Client(event_hooks={"response": [checked]}, timeout=20)
    with openai.OpenAI(
        base_url=server.base_url, api_key=KEY, max_retries=0, http_client=http
    ) as sdk:
        yield sdk


def _refusal(call: Any) -> dict[str, Any]:
    with pytest.raises(openai.APIStatusError) as info:
        call()
    body = info.value.response.json()
    _valid("ErrorResponse", body)
    return {"status": info.value.status_code, **body["error"]}


# -- edits --------------------------------------------------------------------------------


def test_multipart_edit_with_images_and_mask_honours_size_format_and_n(client, server, checked):
    result = client.images.edit(
        model="gpt-image-1.5",
        prompt="add a hat",
        image=[PNG, ("b.png", make_input_image(1024, 1024, seed="b"), "image/png")],
        mask=MASK,
        size="1024x1536",
        n=2,
        output_format="jpeg",
        input_fidelity="high",
    )
    assert checked.bodies == [(200, "/v1/images/edits")]
    assert len(result.data) == 2 and result.usage is not None
    for item in result.data:
        info = inspect_image(base64.b64decode(item.b64_json))
        assert (info.format, info.size) == ("jpeg", "1024x1536")
    logged = server.log.edits[0]
    second = make_input_image(1024, 1024, seed="b")
    assert [f["bytes"] for f in logged.body["image[]"]] == [len(IMG), len(second)]
    assert logged.body["mask"][0]["content_type"] == "image/png"
    assert logged.body["n"] == "2" and logged.model == "gpt-image-1.5"


def test_edits_of_different_inputs_differ(client):
    one = client.images.edit(model="gpt-image-1.5", prompt="p", image=PNG)
    other = client.images.edit(
        model="gpt-image-1.5",
        prompt="p",
        image=("x.png", make_input_image(1024, 1024, seed="x"), "image/png"),
    )
    assert one.data[0].b64_json != other.data[0].b64_json


def test_json_edit_with_image_references(client, checked):
    url = "data:image/png;base64," + base64.b64encode(IMG).decode()
    result = client.post(
        "/images/edits",
        body={
            "model": "gpt-image-1",
            "prompt": "p",
            "images": [{"image_url": url}],
            "size": "1536x1024",
        },
        cast_to=openai.types.ImagesResponse,
    )
    assert inspect_image(base64.b64decode(result.data[0].b64_json)).size == "1536x1024"
    assert checked.bodies == [(200, "/v1/images/edits")]


def test_json_edit_is_refused_for_dall_e_2_and_file_ids(client):
    url = "data:image/png;base64," + base64.b64encode(IMG).decode()
    refused = _refusal(
        lambda: client.post(
            "/images/edits",
            body={"model": "dall-e-2", "prompt": "p", "images": [{"image_url": url}]},
            cast_to=openai.types.ImagesResponse,
        )
    )
    assert (refused["status"], refused["param"], refused["code"]) == (400, "model", "invalid_value")
    assert "'dall-e-2'" not in refused["message"].split("Supported values are:")[1]
    refused = _refusal(
        lambda: client.post(
            "/images/edits",
            body={"model": "gpt-image-1", "prompt": "p", "images": [{"file_id": "file-1"}]},
            cast_to=openai.types.ImagesResponse,
        )
    )
    assert refused["param"] == "images[0].file_id"


@pytest.mark.parametrize(
    ("kwargs", "param", "code", "words"),
    [
        (
            {"model": "dall-e-3", "image": PNG},
            "model",
            "invalid_value",
            "Invalid value: 'dall-e-3'",
        ),
        (
            {"model": "dall-e-2", "image": [PNG, PNG]},
            "image",
            "invalid_type",
            "Invalid type for 'image': expected a file, but got an array instead.",
        ),
        (
            {"model": "gpt-image-1", "image": [PNG] * 17},
            "image",
            "array_above_max_length",
            "Expected an array with maximum length 16, but got an array with length 17",
        ),
        (
            {"model": "gpt-image-1", "image": ("a.txt", b"text", "text/plain")},
            "image",
            "invalid_image_format",
            "Invalid file 'image': unsupported mimetype ('text/plain'). Supported file formats "
            "are 'image/jpeg', 'image/png', and 'image/webp'.",
        ),
        (
            {"model": "dall-e-2", "image": ("a.jpg", make_image(256, 256, "jpeg"), "image/jpeg")},
            "image",
            "invalid_image_format",
            "Supported file formats are 'image/png'.",
        ),
        (
            {"model": "dall-e-2", "image": ("a.png", make_image(256, 256), "image/png")},
            "image",
            "invalid_value",
            "Invalid input image - format must be in ['RGBA', 'LA', 'L'], got RGB.",
        ),
        (
            {
                "model": "gpt-image-1",
                "image": PNG,
                "mask": ("m.png", make_mask(512, 512), "image/png"),
            },
            "mask",
            "invalid_value",
            "must be the same size as the first image (1024x1024)",
        ),
        (
            {
                "model": "gpt-image-1",
                "image": PNG,
                "mask": ("m.png", make_image(1024, 1024), "image/png"),
            },
            "mask",
            "invalid_value",
            "got RGB",
        ),
        (
            {"model": "gpt-image-1-mini", "image": PNG, "input_fidelity": "high"},
            "input_fidelity",
            "unsupported_parameter",
            "Unsupported parameter: 'input_fidelity' is not supported with this model.",
        ),
        (
            {"model": "gpt-image-1", "image": PNG, "quality": "standard"},
            "quality",
            "invalid_value",
            "Invalid value: 'standard'. Supported values are: 'low', 'medium', 'high', and 'auto'.",
        ),
        ({"model": "gpt-image-1", "image": PNG, "n": 11}, "n", "integer_above_max_value", "<= 10"),
    ],
)
def test_edit_refusals_in_openai_wording(client, kwargs, param, code, words):
    refused = _refusal(lambda: client.images.edit(prompt="p", **kwargs))
    assert (refused["status"], refused["type"], refused["param"], refused["code"]) == (
        400,
        "invalid_request_error",
        param,
        code,
    )
    assert words in refused["message"]


def test_edit_with_a_chat_or_unknown_model_is_refused(client):
    assert (
        _refusal(lambda: client.images.edit(model="gpt-4o", prompt="p", image=PNG))["status"] == 400
    )
    unknown = _refusal(lambda: client.images.edit(model="nope-1", prompt="p", image=PNG))
    assert (unknown["status"], unknown["code"]) == (404, "model_not_found")


def test_scripted_faults_apply_to_edits(client, server):
    server.faults.add("rate_limit", times=1, retry_after=3)
    with pytest.raises(openai.RateLimitError) as info:
        client.images.edit(model="gpt-image-1", prompt="p", image=PNG)
    assert info.value.response.headers["retry-after"] == "3"
    assert client.images.edit(model="gpt-image-1", prompt="p", image=PNG).data


# -- variations -----------------------------------------------------------------------------


def test_variations_for_dall_e_2(client, checked):
    square = ("v.png", make_input_image(512, 512), "image/png")
    result = client.images.create_variation(
        model="dall-e-2", image=square, n=2, size="256x256", response_format="b64_json"
    )
    assert [inspect_image(base64.b64decode(d.b64_json)).size for d in result.data] == [
        "256x256"
    ] * 2
    assert checked.bodies == [(200, "/v1/images/variations")]


@pytest.mark.parametrize("model", ["gpt-image-1", "gpt-image-1.5", "dall-e-3"])
def test_variations_are_refused_for_other_models(client, model):
    square = ("v.png", make_input_image(512, 512), "image/png")
    refused = _refusal(lambda: client.images.create_variation(model=model, image=square))
    assert refused["message"] == f"Invalid value: '{model}'. Supported values are: 'dall-e-2'."
    assert (refused["param"], refused["code"]) == ("model", "invalid_value")


def test_variations_need_a_square_png(client):
    wide = ("v.png", make_input_image(512, 256), "image/png")
    refused = _refusal(lambda: client.images.create_variation(model="dall-e-2", image=wide))
    assert refused["param"] == "image" and "square" in refused["message"]


# -- streaming -----------------------------------------------------------------------------


def _events(server: ReferenceServer, path: str, *, timeout: float = 20, **request: Any):
    """(name, payload, read number) of each SSE event, parsed as it arrived."""
    out: list[tuple[str, dict[str, Any], int]] = []
    buffer = b""
    headers = {"Authorization": f"Bearer {KEY}"}
    with (
        httpx2.Client(timeout=timeout) as http,
        http.stream("POST", server.base_url + path, headers=headers, **request) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "content-length" not in response.headers
        for number, chunk in enumerate(response.iter_raw()):
            buffer += chunk
            while b"\n\n" in buffer:
                raw, buffer = buffer.split(b"\n\n", 1)
                lines = dict(line.split(": ", 1) for line in raw.decode().split("\n"))
                out.append((lines["event"], json.loads(lines["data"]), number))
    return out


STREAM_BODY = {
    "model": "gpt-image-1.5",
    "prompt": "p",
    "stream": True,
    "partial_images": 2,
    "size": "1024x1024",
    "quality": "low",
}


def test_streamed_generation_events_in_order_with_usage_and_shapes(server):
    events = _events(server, "/images/generations", json=STREAM_BODY)
    names = [name for name, _, _ in events]
    assert names == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    for name, payload, _ in events:
        assert payload["type"] == name
        schema = (
            "ImageGenCompletedEvent" if name.endswith("completed") else "ImageGenPartialImageEvent"
        )
        _valid(schema, payload)
        _valid("ImageGenStreamEvent", payload)
        assert inspect_image(base64.b64decode(payload["b64_json"])).size == "1024x1024"
    assert [p["partial_image_index"] for _, p, _ in events[:2]] == [0, 1]
    assert events[-1][1]["usage"]["output_tokens"] > 0
    # Each event came in its own read: the stream was not held back.
    assert len({number for _, _, number in events}) == 3


def test_streamed_edit_events(server):
    files = {"image": PNG}
    data = {"model": "gpt-image-1", "prompt": "p", "stream": "true", "partial_images": "1"}
    events = _events(server, "/images/edits", files=files, data=data)
    assert [n for n, _, _ in events] == ["image_edit.partial_image", "image_edit.completed"]
    _valid("ImageEditPartialImageEvent", events[0][1])
    _valid("ImageEditCompletedEvent", events[1][1])
    _valid("ImageEditStreamEvent", events[1][1])


def test_zero_partial_images_stream_one_completed_event_per_image(server):
    events = _events(
        server, "/images/generations", json={**STREAM_BODY, "partial_images": 0, "n": 2}
    )
    assert [n for n, _, _ in events] == ["image_generation.completed"] * 2


def test_sdk_reads_the_stream(server):
    with openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0) as sdk:
        kinds = [e.type for e in sdk.images.generate(**STREAM_BODY)]
    assert kinds == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]


def test_buffered_stream_arrives_in_one_piece(server):
    server.faults.add("stream_buffered")
    events = _events(server, "/images/generations", json=STREAM_BODY)
    assert len(events) == 3
    assert len({number for _, _, number in events}) == 1


def test_stream_without_completed_event(server):
    server.defects.add("stream_no_completed")
    events = _events(server, "/images/generations", json=STREAM_BODY)
    assert [n for n, _, _ in events] == ["image_generation.partial_image"] * 2


def test_stream_stalls_after_its_partial_images(server):
    server.faults.add("stream_stall")
    with pytest.raises(httpx2.ReadTimeout):
        _events(server, "/images/generations", timeout=1.0, json=STREAM_BODY)
    logged = server.log.generations[0]
    # The server gives up on the stalled stream once the client has hung up.
    assert logged.wait(30) and logged.fault == "stream_stall"


def test_stream_defects_reshape_the_events(server):
    server.defects.update(["stream_extra_partials", "stream_out_of_order"])
    names = [n for n, _, _ in _events(server, "/images/generations", json=STREAM_BODY)]
    assert names == ["image_generation.completed"] + ["image_generation.partial_image"] * 3


def test_dall_e_refuses_stream(client):
    refused = _refusal(lambda: client.images.generate(model="dall-e-3", prompt="p", stream=True))
    assert (refused["param"], refused["code"]) == ("stream", "unknown_parameter")


# -- responses -----------------------------------------------------------------------------


def test_chat_model_makes_images_through_the_responses_tool(client, server):
    from openai.types.responses import Response

    response = client.responses.create(
        model="gpt-4o",
        input="a lighthouse",
        tools=[{"type": "image_generation", "size": "1536x1024", "quality": "low"}],
    )
    raw = server.log.last
    assert raw.path == "/v1/responses" and raw.status == 200
    assert isinstance(response, Response)
    calls = [o for o in response.output if o.type == "image_generation_call"]
    assert len(calls) == 1 and calls[0].status == "completed"
    assert inspect_image(base64.b64decode(calls[0].result)).size == "1536x1024"
    assert response.output[-1].type == "message"


def test_responses_without_the_tool_make_no_image(client):
    response = client.responses.create(model="gpt-4o", input="hello")
    assert [o.type for o in response.output] == ["message"]


def test_responses_refuse_image_models_and_bad_tool_settings(client):
    refused = _refusal(lambda: client.responses.create(model="gpt-image-1", input="p"))
    assert (refused["status"], refused["param"]) == (400, "model")
    refused = _refusal(
        lambda: client.responses.create(
            model="gpt-4o", input="p", tools=[{"type": "image_generation", "size": "256x256"}]
        )
    )
    assert (refused["param"], refused["code"]) == ("tools[0].size", "invalid_value")
    refused = _refusal(
        lambda: client.responses.create(
            model="gpt-4o", input="p", tools=[{"type": "image_generation", "n": 2}]
        )
    )
    assert refused["message"] == "Unknown parameter: 'tools[0].n'."


def test_responses_defects(client, server):
    server.defects.add("responses_no_image")
    tool = [{"type": "image_generation", "size": "1024x1024"}]
    assert [
        o.type for o in client.responses.create(model="gpt-4o", input="p", tools=tool).output
    ] == ["message"]
    server.defects.clear()
    server.defects.add("responses_ignores_size")
    item = client.responses.create(model="gpt-4o", input="p", tools=tool).output[0]
    assert inspect_image(base64.b64decode(item.result)).size != "1024x1024"
