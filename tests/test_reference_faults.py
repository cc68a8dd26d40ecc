"""Fault scripting and defects: each produces exactly its behaviour and its error category."""

from __future__ import annotations

import base64
import binascii
import json
import socket
import time
from typing import Any

import httpx2
import openai
import pytest
from _support import HTTP, REFERENCE_KEY, spec_validator

from pytest_imagegen.classify import classify, malformed
from pytest_imagegen.fallback import MalformedResponse, parse_images_response
from pytest_imagegen.images import inspect_image, make_input_image, make_mask, sniff_format
from pytest_imagegen.reference import DEFECTS, FAULTS, ReferenceServer

KEY = REFERENCE_KEY


BODY = {"model": "gpt-image-1", "prompt": "a paper boat", "size": "1024x1024", "quality": "low"}
IMAGES_RESPONSE = spec_validator("ImagesResponse")
ERROR_RESPONSE = spec_validator("ErrorResponse")


def assert_schema(response: httpx2.Response) -> dict[str, Any]:
    """The JSON body, after checking it against ImagesResponse or ErrorResponse."""
    body = response.json()
    validator = ERROR_RESPONSE if "error" in body else IMAGES_RESPONSE
    problems = [e.message for e in validator.iter_errors(body)]
    assert not problems, problems
    return body


def post(server, body=BODY, *, timeout: float = 10.0, key: str = KEY) -> httpx2.Response:
    return HTTP.post(
        f"{server.base_url}/images/generations",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=timeout,
    )


def raw_exchange(server, body=BODY, *, wait: float = 5.0) -> tuple[bytes, BaseException | None]:
    """Send one request on a plain socket; every byte received until EOF, reset or ``wait``."""
    payload = json.dumps(body).encode()
    request = (
        f"POST /v1/images/generations HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    received = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as sock:
        sock.sendall(request)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except OSError as exc:  # reset, or the timeout
            return received, exc
    return received, None


# -- each fault's behaviour ----------------------------------------------------------------


def test_stall_sends_nothing_then_closes(server):
    server.faults.add("stall", seconds=0.4)
    started = time.monotonic()
    received, error = raw_exchange(server, wait=5)
    assert received == b"" and error is None  # no byte, then a plain close
    assert 0.35 <= time.monotonic() - started < 3
    assert server.log[0].status is None and server.log[0].fault == "stall"


def test_stall_ends_when_the_client_gives_up(server):
    server.faults.add("stall", seconds=60)
    client = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
    with pytest.raises(openai.APITimeoutError):
        client.images.generate(**BODY, timeout=0.3)
    # The server notices the hang-up instead of holding a thread for 60 s.
    assert server.log[0].wait(2)


def test_slow_headers_delays_the_status_line(server):
    server.faults.add("slow_headers", seconds=0.5)
    started = time.monotonic()
    response = post(server)
    assert time.monotonic() - started >= 0.5
    assert response.status_code == 200 and len(assert_schema(response)["data"]) == 1


def test_slow_body_sends_headers_at_once_and_dribbles_the_body(server):
    server.faults.add("slow_body", seconds=1.2)
    started = time.monotonic()
    with HTTP.stream(
        "POST",
        f"{server.base_url}/images/generations",
        json=BODY,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=5,
    ) as response:
        headers_at = time.monotonic() - started
        chunks = list(response.iter_raw())
    total = time.monotonic() - started
    assert headers_at < 0.6 and total >= 1.1
    body = json.loads(b"".join(chunks))
    assert inspect_image(base64.b64decode(body["data"][0]["b64_json"])).size == "1024x1024"


INVALID = "invalid_request_error"


@pytest.mark.parametrize(
    ("fault", "status", "type_", "code", "text"),
    [
        ("auth_error", 401, INVALID, "invalid_api_key", "Incorrect API key provided: sk-te"),
        ("permission_error", 403, INVALID, None, "verified to use the model `gpt-image-1`"),
        ("model_not_found", 404, INVALID, "model_not_found", "The model `gpt-image-1` does"),
        ("rate_limit", 429, "requests", "rate_limit_exceeded", "Rate limit exceeded for images"),
        ("quota", 429, "insufficient_quota", "insufficient_quota", "You exceeded your current"),
        ("server_error", 500, "server_error", None, "The server had an error while processing"),
        ("overloaded", 503, "server_error", None, "The engine is currently overloaded, please"),
        (
            "no_channel",
            503,
            "new_api_error",
            "model_not_found",
            "当前分组 default 下对于模型 gpt-image-1",
        ),
        ("content_policy", 400, "image_generation_user_error", "moderation_blocked", "safety"),
    ],
)
def test_json_error_faults(server, fault, status, type_, code, text):
    server.faults.add(fault)
    response = post(server)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = assert_schema(response)["error"]
    assert (error["type"], error["code"]) == (type_, code)
    assert text in error["message"]
    assert KEY not in response.text
    has_retry_after = "retry-after" in response.headers
    assert has_retry_after == (fault == "rate_limit")


def test_rate_limit_retry_after_option(server):
    server.faults.add("rate_limit", retry_after=7)
    assert post(server).headers["retry-after"] == "7"
    server.faults.add("rate_limit", retry_after=0.5)
    assert post(server).headers["retry-after"] == "0.5"


def test_content_policy_on_dall_e_is_content_policy_violation(server):
    server.faults.add("content_policy")
    response = post(server, {"model": "dall-e-3", "prompt": "x"})
    error = assert_schema(response)["error"]
    assert (response.status_code, error["code"]) == (400, "content_policy_violation")


@pytest.mark.parametrize(
    ("fault", "status", "title"),
    [
        ("bad_gateway_html", 502, "502 Bad Gateway"),
        ("gateway_timeout_html", 504, "504 Gateway Time-out"),
    ],
)
def test_html_gateway_faults(server, fault, status, title):
    server.faults.add(fault)
    response = post(server)
    assert response.status_code == status
    assert response.headers["content-type"] == "text/html"
    assert f"<title>{title}</title>" in response.text and "nginx" in response.text


def test_error_in_200(server):
    server.faults.add("error_in_200")
    response = post(server)
    body = assert_schema(response)
    assert response.status_code == 200 and "data" not in body
    assert body["error"]["type"] == "server_error"


def test_empty_data(server):
    server.faults.add("empty_data")
    response = post(server)
    assert response.status_code == 200 and assert_schema(response)["data"] == []


def test_invalid_json(server):
    server.faults.add("invalid_json")
    response = post(server)
    assert response.status_code == 200
    assert int(response.headers["content-length"]) == len(response.content)
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_truncated_body_promises_more_than_it_sends(server):
    server.faults.add("truncated_body")
    received, error = raw_exchange(server)
    assert error is None
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    assert 0 < len(body) < length


def test_connection_reset_before_any_byte(server):
    server.faults.add("connection_reset")
    received, error = raw_exchange(server)
    assert received == b""
    assert isinstance(error, ConnectionResetError)


def test_invalid_base64(server):
    server.faults.add("invalid_base64")
    body = assert_schema(post(server, {**BODY, "n": 2}))
    assert len(body["data"]) == 2
    for item in body["data"]:
        with pytest.raises(binascii.Error):
            base64.b64decode(item["b64_json"], validate=True)


def test_not_an_image(server):
    server.faults.add("not_an_image")
    item = assert_schema(post(server))["data"][0]
    data = base64.b64decode(item["b64_json"], validate=True)
    assert data and sniff_format(data) is None
    with pytest.raises(ValueError):
        inspect_image(data)


DALL_E_2_512 = {
    "model": "dall-e-2",
    "prompt": "x",
    "size": "512x512",
    "response_format": "b64_json",
}


@pytest.mark.parametrize(("body", "served"), [(BODY, "512x512"), (DALL_E_2_512, "1024x1024")])
def test_wrong_size(server, body, served):
    server.faults.add("wrong_size")
    data = assert_schema(post(server, body))["data"]
    assert inspect_image(base64.b64decode(data[0]["b64_json"])).size == served


def test_fewer_images(server):
    server.faults.add("fewer_images")
    assert len(assert_schema(post(server, {**BODY, "n": 3}))["data"]) == 2


# -- classification ------------------------------------------------------------------------

# fault -> (category, how the client meets it): "sdk" = the openai exception, "raw" = the
# (status, headers, body) a client sees, "parse" = the check of a 2xx images body.
CATEGORIES = {
    "stall": ("timeout", "sdk"),
    "slow_headers": ("timeout", "sdk"),
    "slow_body": ("timeout", "sdk"),
    "auth_error": ("authentication", "sdk"),
    "permission_error": ("permission", "sdk"),
    "model_not_found": ("model_not_found", "sdk"),
    "rate_limit": ("rate_limit", "sdk"),
    "quota": ("quota", "sdk"),
    "server_error": ("server", "sdk"),
    "bad_gateway_html": ("server", "sdk"),
    "overloaded": ("server", "sdk"),
    "no_channel": ("model_not_found", "sdk"),
    "gateway_timeout_html": ("timeout", "sdk"),
    "error_in_200": ("server", "raw"),
    "empty_data": ("malformed_response", "raw"),
    "invalid_json": ("malformed_response", "raw"),
    "truncated_body": ("network", "sdk"),
    "invalid_base64": ("malformed_response", "parse"),
    "not_an_image": ("malformed_response", "parse"),
    "wrong_size": ("malformed_response", "parse"),
    "fewer_images": ("malformed_response", "parse"),
    "connection_reset": ("network", "sdk"),
    "content_policy": ("content_policy", "sdk"),
}


# Faults that reshape a streamed answer only (tests/test_reference_surface.py covers them).
STREAM_FAULTS = {"stream_stall", "stream_no_completed", "stream_buffered"}


def test_every_fault_has_a_category():
    assert set(CATEGORIES) | STREAM_FAULTS == set(FAULTS)
    assert not set(CATEGORIES) & STREAM_FAULTS


@pytest.mark.parametrize("fault", sorted(set(FAULTS) - STREAM_FAULTS))
def test_fault_is_classified(server, fault):
    category, how = CATEGORIES[fault]
    # Waits: a fault long enough to outlast the client's short timeout.
    options = {"seconds": 3} if fault in ("stall", "slow_headers", "slow_body") else {}
    server.faults.add(fault, **options)
    body = {**BODY, "n": 2}
    if how == "sdk":
        # slow_body sends a piece every 0.15 s; a tighter read timeout catches the gaps.
        timeout = 0.05 if fault == "slow_body" else 1.0
        client = openai.OpenAI(
            base_url=server.base_url, api_key=KEY, max_retries=0, timeout=timeout
        )
        with pytest.raises(openai.APIError) as info:
            client.images.generate(**body)
        diagnosis = classify(info.value)
    else:
        response = post(server, body)
        assert response.status_code == 200
        if how == "raw":
            diagnosis = classify((response.status_code, dict(response.headers), response.content))
        else:
            with pytest.raises(MalformedResponse) as info:
                parse_images_response(response.content, n=2, size="1024x1024", output_format="png")
            diagnosis = malformed(str(info.value), status=200)
    assert diagnosis.category == category, diagnosis
    if fault == "rate_limit":
        assert diagnosis.retry_after_s == 1


# -- fault scripting -------------------------------------------------------------------------


def test_times_and_order(server):
    server.faults.add("quota", times=2)
    server.faults.add("server_error")
    statuses = [post(server).status_code for _ in range(4)]
    assert statuses == [429, 429, 500, 200]
    assert [r.fault for r in server.log] == ["quota", "quota", "server_error", None]
    assert server.faults.pending == []


def test_times_none_lasts_until_cleared(server):
    fault = server.faults.add("overloaded", times=None)
    assert [post(server).status_code for _ in range(3)] == [503] * 3
    assert fault.hits == 3 and server.faults.pending == [fault]
    server.faults.clear()
    assert post(server).status_code == 200


def test_filters_by_model_quality_and_prompt(server):
    server.faults.add("server_error", model="gpt-image-1.5", times=None)
    server.faults.add("quota", quality="high", times=None)
    server.faults.add("rate_limit", prompt="boat", times=None)
    assert post(server, {**BODY, "model": "gpt-image-1.5"}).status_code == 500
    assert post(server, {**BODY, "quality": "high"}).status_code == 429
    # "auto" resolves to high for GPT-image models, so the high filter catches it too.
    assert post(server, {**BODY, "quality": "auto"}).json()["error"]["code"] == "insufficient_quota"
    assert post(server, {**BODY, "prompt": "a paper boat at sea"}).headers["retry-after"] == "1"
    assert post(server, {**BODY, "prompt": "a kite"}).status_code == 200


def test_faults_leave_other_endpoints_alone(server):
    server.faults.add("server_error", times=None)
    client = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
    assert client.models.list().data
    assert client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "x"}]
    )


def test_bad_fault_scripts_are_refused(server):
    with pytest.raises(ValueError, match="Did you mean 'stall'"):
        server.faults.add("stal")
    with pytest.raises(TypeError, match="takes no option 'seconds'"):
        server.faults.add("quota", seconds=1)
    with pytest.raises(ValueError, match="between 0 and"):
        server.faults.add("stall", seconds=-1)
    with pytest.raises(ValueError, match="positive integer or None"):
        server.faults.add("stall", times=0)
    assert len(server.faults) == 0


def test_reset_clears_faults(server):
    server.faults.add("quota", times=None)
    server.reset()
    assert post(server).status_code == 200


# -- defects ----------------------------------------------------------------------------------


def sdk(server, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, **options)


def check_accepts_chat_model(server):
    result = sdk(server).images.generate(model="gpt-4o", prompt="x", quality="low")
    assert len(result.data) == 1


def check_image_model_on_chat(server):
    reply = sdk(server).chat.completions.create(
        model="gpt-image-1", messages=[{"role": "user", "content": "x"}]
    )
    assert reply.choices[0].message.content


def check_drops_n(server):
    assert len(post(server, {**BODY, "n": 3}).json()["data"]) == 1


def check_ignores_size(server):
    item = post(server, {**BODY, "size": "1536x1024"}).json()["data"][0]
    assert inspect_image(base64.b64decode(item["b64_json"])).size == "1024x1024"


def check_ignores_format(server):
    item = post(server, {**BODY, "output_format": "jpeg"}).json()["data"][0]
    assert sniff_format(base64.b64decode(item["b64_json"])) == "png"


def check_auth_wrong_status(server):
    with pytest.raises(openai.InternalServerError) as info:
        sdk(server).with_options(api_key="sk-wrong-key-000000000000").images.generate(**BODY)
    assert info.value.code is None and "API key" not in info.value.message


def check_unknown_model_ok(server):
    assert post(server, {**BODY, "model": "no-such-model"}).status_code == 200


def check_image_model_as_chat(server):
    answer = post(server).json()
    assert answer["object"] == "chat.completion" and "data" not in answer
    link = answer["choices"][0]["message"]["content"]
    assert link.startswith("![image](" + server.base_url + "/files/images/img-")
    url = link[len("![image](") : -1]
    assert inspect_image(HTTP.get(url).content).size == "1024x1024"


def check_extra_images(server):
    answer = post(server, {**BODY, "n": 2}).json()
    assert len(answer["data"]) == 3
    assert answer["usage"]["output_tokens"] == 3 * 272


def check_uncompressed_png(server):
    response = post(server)
    image = base64.b64decode(response.json()["data"][0]["b64_json"])
    assert inspect_image(image).size == "1024x1024"
    # RGBA stored without compression: 4 bytes a pixel, base64 a third more again.
    assert len(image) > 1024 * 1024 * 4 and len(response.content) > 5_000_000


def check_refuses_gpt_image_quality(server):
    for quality in ("low", "medium", "high"):
        error = post(server, {**BODY, "quality": quality}).json()["error"]
        assert (error["param"], error["code"]) == ("quality", "invalid_value")
    # dall-e-3 keeps its own qualities.
    dalle = {**BODY, "model": "dall-e-3", "quality": "hd", "response_format": "b64_json"}
    assert post(server, {k: v for k, v in dalle.items() if k != "size"}).status_code == 200


def check_quota_as_rate_limit(server):
    server.faults.add("quota")
    response = post(server)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


def check_no_retry_after(server):
    server.faults.add("rate_limit")
    response = post(server)
    assert response.status_code == 429 and "retry-after" not in response.headers


def check_html_errors(server):
    response = post(server, {**BODY, "quality": "standard"})
    assert response.status_code == 400 and response.headers["content-type"] == "text/html"
    assert "Invalid value: &#x27;standard&#x27;" in response.text


def check_non_openai_envelope(server):
    response = post(server, {**BODY, "model": "no-such-model"})
    assert response.status_code == 404
    assert response.json() == {
        "detail": "The model `no-such-model` does not exist or you do not have access to it."
    }


def check_empty_data(server):
    response = post(server)
    assert response.status_code == 200 and response.json()["data"] == []


def check_no_validation(server):
    body = {**BODY, "quality": "standard", "response_format": "url", "seed": 3}
    assert len(post(server, body).json()["data"]) == 1


def check_wrong_error_param(server):
    error = post(server, {**BODY, "quality": "standard"}).json()["error"]
    assert error["code"] == "invalid_value" and error["param"] is None


def check_no_usage(server):
    assert "usage" not in post(server).json()


def check_stalls(server):
    with pytest.raises(openai.APITimeoutError):
        sdk(server, timeout=0.3).images.generate(**BODY)


STREAM = {**BODY, "stream": True, "partial_images": 1}


def stream_names(server) -> list[str]:
    response = post(server, STREAM)
    assert response.status_code == 200
    return [line[7:] for line in response.text.split("\n") if line.startswith("event: ")]


def chunks(server) -> list[bytes]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with (
        httpx2.Client(timeout=20) as http,
        http.stream(
            "POST", server.base_url + "/images/generations", json=STREAM, headers=headers
        ) as response,
    ):
        return [chunk for chunk in response.iter_raw() if chunk]


def check_stream_buffered(server):
    assert len(chunks(server)) == 1


def check_stream_no_completed(server):
    assert stream_names(server) == ["image_generation.partial_image"]


def check_stream_stalls(server):
    with pytest.raises(httpx2.ReadTimeout):
        httpx2.post(
            server.base_url + "/images/generations",
            json=STREAM,
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=0.5,
        )


def check_stream_extra_partials(server):
    assert stream_names(server).count("image_generation.partial_image") == 2


def check_stream_out_of_order(server):
    assert stream_names(server)[0] == "image_generation.completed"


EDIT_IMAGE = ("in.png", make_input_image(1024, 1024), "image/png")


def check_edits_multipart_broken(server):
    with pytest.raises(openai.BadRequestError) as info:
        sdk(server).images.edit(model="gpt-image-1", prompt="x", image=EDIT_IMAGE)
    assert "could not parse the JSON body" in info.value.message


def check_edits_json_refused(server):
    url = "data:image/png;base64," + base64.b64encode(EDIT_IMAGE[1]).decode()
    with pytest.raises(openai.BadRequestError) as info:
        sdk(server).post(
            "/images/edits",
            body={"model": "gpt-image-1", "prompt": "x", "images": [{"image_url": url}]},
            cast_to=openai.types.ImagesResponse,
        )
    assert "multipart/form-data" in info.value.message


def check_edits_single_image(server):
    with pytest.raises(openai.BadRequestError) as info:
        sdk(server).images.edit(model="gpt-image-1", prompt="x", image=[EDIT_IMAGE] * 2)
    assert info.value.param == "image"


def check_ignores_mask_size(server):
    mask = ("m.png", make_mask(256, 256), "image/png")
    sdk(server).images.edit(model="gpt-image-1", prompt="x", image=EDIT_IMAGE, mask=mask)


def check_accepts_any_file(server):
    text = ("a.txt", b"plain text", "text/plain")
    sdk(server).images.edit(model="gpt-image-1", prompt="x", image=text)


def check_no_input_fidelity(server):
    with pytest.raises(openai.BadRequestError) as info:
        sdk(server).images.edit(
            model="gpt-image-1", prompt="x", image=EDIT_IMAGE, input_fidelity="high"
        )
    assert info.value.code == "unknown_parameter"


def check_variations_for_all(server):
    square = ("v.png", make_input_image(256, 256), "image/png")
    assert sdk(server).images.create_variation(model="gpt-image-1", image=square).data


TOOL = [{"type": "image_generation", "size": "1024x1536", "quality": "low"}]


def check_responses_no_image(server):
    output = sdk(server).responses.create(model="gpt-4o", input="x", tools=TOOL).output
    assert "image_generation_call" not in [item.type for item in output]


def check_responses_ignores_size(server):
    item = sdk(server).responses.create(model="gpt-4o", input="x", tools=TOOL).output[0]
    assert inspect_image(base64.b64decode(item.result)).size != "1024x1536"


DEFECT_CHECKS = {
    name[len("check_") :]: func for name, func in globals().items() if name.startswith("check_")
}


def test_every_defect_has_a_check():
    assert set(DEFECT_CHECKS) == set(DEFECTS)


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_defect_does_what_it_says(server, defect):
    server.defects.add(defect)
    DEFECT_CHECKS[defect](server)


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_defect_check_fails_on_a_clean_server(server, defect):
    # Otherwise the check above would prove nothing.
    with pytest.raises((AssertionError, pytest.fail.Exception, openai.APIError, KeyError)):
        DEFECT_CHECKS[defect](server)


def test_defects_switch_on_by_constructor_and_add_and_reset_clears_them():
    with ReferenceServer(api_keys=[KEY], defects=["drops_n"]) as server:
        server.defects.add("no_usage")
        body = post(server, {**BODY, "n": 2}).json()
        assert len(body["data"]) == 1 and "usage" not in body
        server.reset()
        body = post(server, {**BODY, "n": 2}).json()
        assert len(body["data"]) == 1 and "usage" in body
        with pytest.raises(ValueError, match="unknown defect"):
            server.defects.add("drop_n")


def test_every_fault_kind_has_exactly_one_implementation() -> None:
    from pytest_imagegen.reference.app import FAULT_REPLIES, SHAPED_FAULTS
    from pytest_imagegen.reference.faults import FAULT_KINDS

    shaped = {name for name, kind in FAULT_KINDS.items() if kind.shaped}
    assert set(SHAPED_FAULTS) == shaped
    assert set(FAULT_REPLIES) == set(FAULT_KINDS) - shaped
