"""The edit and stream strategies: their draws are what the request builder and the
reference server accept (valid) or refuse naming the planted param in OpenAI's wording
(invalid). Example counts stay small: every example is a real request."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest
from _support import HTTP, REFERENCE_KEY, spec_validator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from pytest_imagegen.profiles import PROFILES, get_profile, resolve_profile
from pytest_imagegen.reference import ReferenceServer
from pytest_imagegen.request_builder import Upload, coerce_form, validate_edit, validate_request
from pytest_imagegen.strategies import (
    EDIT_DEFECTS,
    STREAM_DEFECTS,
    applicable_defects,
    edit_requests,
    invalid_edit_requests,
    invalid_stream_requests,
    stream_requests,
)

BUILTIN = [n for n in PROFILES if n != "custom"]
# Valid draws are sent for one profile of each kind of rules (input_fidelity or not,
# dall-e-2's one square PNG), to keep the run short: each example makes real images.
EDITING = ["gpt-image-1.5", "gpt-image-1-mini", "dall-e-2"]
STREAMING = ["gpt-image-1.5", "gpt-image-1-mini"]
SENT = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# OpenAI's validation messages open with one of these.
OPENAI_WORDING = re.compile(
    r"^(Invalid value: |Invalid type for '|Invalid '|Unknown parameter: '|Missing required "
    r"parameter: '|Unsupported parameter: '|Invalid file '|Invalid image file: |Invalid input "
    r"image - |Invalid mask image - |Compression less than)"
)


@pytest.fixture(scope="module")
def reference() -> Iterator[ReferenceServer]:
    # No gap between stream events: a stream's timing is not what these tests are about.
    with ReferenceServer(api_keys=[REFERENCE_KEY], stream_interval_s=0) as server:
        yield server


def few_images(body: dict[str, Any]) -> dict[str, Any]:
    # Up to 2 outputs: n's full range is covered by the invalid draws (n_above_max).
    return {**body, "n": min(body["n"], 2)} if isinstance(body.get("n"), int) else body


def form(body: dict[str, Any]) -> tuple[dict[str, str], list[tuple[str, Any]]]:
    """A multipart edit as a form sends it: text fields and the files (``image[]`` for a
    list of images, as the SDK sends it)."""
    fields: dict[str, str] = {}
    files: list[tuple[str, Any]] = []
    for key, value in body.items():
        if key == "image":
            name = "image[]" if isinstance(value, list) else "image"
            files += [(name, f) for f in (value if isinstance(value, list) else [value])]
        elif key == "mask":
            files.append(("mask", value))
        elif isinstance(value, bool):
            fields[key] = "true" if value else "false"
        else:
            fields[key] = str(value)
    return fields, files


def multipart(body: dict[str, Any]) -> tuple[bytes, str]:
    """The form encoded by hand: an HTTP client sends a form without files url-encoded,
    and an edit without its image must still arrive as multipart."""
    boundary = "imagegen-strategies-boundary"
    fields, files = form(body)
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'.encode()
        + value.encode()
        + b"\r\n"
        for key, value in fields.items()
    ]
    for name, (filename, data, content_type) in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    content = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return content, f"multipart/form-data; boundary={boundary}"


def post_edit(server: ReferenceServer, body: dict[str, Any]) -> httpx2.Response:
    content, content_type = multipart(body)
    return HTTP.post(
        f"{server.base_url}/images/edits",
        content=content,
        headers={"Authorization": f"Bearer {REFERENCE_KEY}", "Content-Type": content_type},
        timeout=30,
    )


def post_json(server: ReferenceServer, body: dict[str, Any]) -> httpx2.Response:
    return HTTP.post(
        f"{server.base_url}/images/generations",
        json=body,
        headers={"Authorization": f"Bearer {REFERENCE_KEY}"},
        timeout=30,
    )


def completed_events(response: httpx2.Response) -> list[dict[str, Any]]:
    events = [
        json.loads(line[len("data: ") :])
        for line in response.text.splitlines()
        if line.startswith("data: ")
    ]
    return [e for e in events if e["type"].endswith(".completed")]


def assert_refused(response: httpx2.Response, param: str, body: Any) -> None:
    assert response.status_code == 400, (body, response.text[:300])
    document = response.json()
    assert not list(spec_validator("ErrorResponse").iter_errors(document))
    error = document["error"]
    assert (error["param"], error["type"]) == (param, "invalid_request_error"), (body, error)
    assert OPENAI_WORDING.match(error["message"]), error["message"]


def uploads(body: dict[str, Any]) -> tuple[list[Upload], Upload | None]:
    image = body.get("image")
    files = [] if image is None else image if isinstance(image, list) else [image]
    images = [Upload("image", data, ctype, name) for name, data, ctype in files]
    mask = body.get("mask")
    return images, (Upload("mask", mask[1], mask[2], mask[0]) if mask else None)


def edit_fields(body: dict[str, Any]) -> dict[str, Any]:
    fields, _ = form(body)
    return coerce_form(fields)


# --------------------------------------------------------------------------- edits


@pytest.mark.parametrize("name", EDITING)
def test_valid_edits_go_through_the_sdk_and_the_reference_accepts_them(reference, name) -> None:
    client = openai.OpenAI(base_url=reference.base_url, api_key=REFERENCE_KEY, max_retries=0)
    keywords = inspect.signature(client.images.edit).parameters
    reference.reset()

    @SENT
    @given(body=edit_requests(profile=name, model=name).map(few_images))
    def check(body: dict[str, Any]) -> None:
        assert set(body) <= set(keywords)  # client.images.edit(**body) takes every key
        images, mask = uploads(body)
        profile = get_profile(name)
        assert validate_edit(edit_fields(body), profile, images=images, mask=mask) == []
        with client.images.with_streaming_response.edit(**body) as response:
            content = response.read()
            assert response.status_code == 200, content[:300]
            count = body.get("n", 1)
            if body.get("stream"):
                assert response.headers["content-type"].startswith("text/event-stream")
                assert content.count(b"event: image_edit.completed") == count
            else:
                document = json.loads(content)
                assert not list(spec_validator("ImagesResponse").iter_errors(document))
                assert len(document["data"]) == count

    check()
    client.close()
    reference.check()


@pytest.mark.parametrize("name", BUILTIN)
def test_invalid_edits_are_refused_naming_the_param_in_openai_wording(reference, name) -> None:
    reference.reset()

    @SENT
    @given(case=invalid_edit_requests(profile=name, model=name))
    def check(case: tuple[dict[str, Any], str]) -> None:
        body, param = case
        assert_refused(post_edit(reference, body), param, body)

    check()
    reference.check()


@pytest.mark.parametrize(
    ("name", "defect"),
    [(n, d) for n in BUILTIN for d in applicable_defects(profile=n, kind="edit")],
)
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_every_edit_defect_is_refused_by_the_request_builder(name, defect, data) -> None:
    profile = get_profile(name)
    body, param = data.draw(invalid_edit_requests(profile=profile, model=name, defects=[defect]))
    images, mask = uploads(body)
    # The server checks an edit against the profile of the model it names.
    target = resolve_profile(body["model"]) if "model" in body else None
    violations = validate_edit(edit_fields(body), target or profile, images=images, mask=mask)
    assert violations and violations[0].param == param, (body, violations)


# --------------------------------------------------------------------------- streams


@pytest.mark.parametrize("name", STREAMING)
def test_valid_stream_requests_stream_from_the_reference(reference, name) -> None:
    reference.reset()

    @SENT
    @given(body=stream_requests(profile=name, model=name).map(few_images))
    def check(body: dict[str, Any]) -> None:
        assert validate_request(body, get_profile(name)) == []
        assert not list(spec_validator("CreateImageRequest").iter_errors(body))
        response = post_json(reference, body)
        assert response.status_code == 200, response.text[:300]
        assert response.headers["content-type"].startswith("text/event-stream")
        assert len(completed_events(response)) == (body.get("n") or 1)
        partials = response.text.count("event: image_generation.partial_image")
        assert partials == (body.get("partial_images") or 0) * (body.get("n") or 1)

    check()
    reference.check()


@pytest.mark.parametrize("name", BUILTIN)
def test_invalid_stream_requests_are_refused_naming_the_param(reference, name) -> None:
    reference.reset()

    @SENT
    @given(case=invalid_stream_requests(profile=name, model=name))
    def check(case: tuple[dict[str, Any], str]) -> None:
        body, param = case
        assert validate_request(body, get_profile(name))[0].param == param
        assert_refused(post_json(reference, body), param, body)

    check()
    reference.check()


# --------------------------------------------------------------------------- arguments


def test_defect_tables_cover_every_kind_of_refusal() -> None:
    assert {"stream_type", "partial_images_range", "stream_not_supported"} <= set(STREAM_DEFECTS)
    assert {"too_many_images", "mask_size", "model_without_edits"} <= set(EDIT_DEFECTS)
    assert applicable_defects(profile="dall-e-3", kind="edit") == ("model_without_edits",)
    assert applicable_defects(profile="dall-e-3", kind="stream") == ("stream_not_supported",)
    assert "image_not_square" in applicable_defects(profile="dall-e-2", kind="edit")
    assert "image_not_square" not in applicable_defects(profile="gpt-image-1", kind="edit")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: edit_requests(profile="dall-e-3"), "has no edits"),
        (lambda: stream_requests(profile="dall-e-2"), "does not stream"),
        (lambda: invalid_edit_requests(profile="gpt-image-1", defects=["nope"]), "unknown edit"),
        (lambda: invalid_stream_requests(profile="dall-e-3", defects=["stream_type"]), "none of"),
        (lambda: applicable_defects(profile="gpt-image-1", kind="variation"), "kind="),
    ],
)
def test_invalid_arguments(make, message) -> None:
    with pytest.raises(InvalidArgument, match=message):
        make().example()
