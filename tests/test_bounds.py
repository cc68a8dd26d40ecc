"""Every request bounded in total wall time and in body size (issue 10, findings 1 and 6).

The servers here misbehave on purpose (a body dribbled one byte at a time, 5 MB of junk);
the assertions are on what the client reports, and on the run ending long before the
misbehaviour would (never on how fast this machine is).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import httpx2
import openai
import pytest
from _raw_server import answer, dribble, raw_server

from pytest_imagegen.bounds import (
    BodyCut,
    Limits,
    bounded_client,
    cut_marker,
    find_cut,
    response_cap,
)
from pytest_imagegen.cassettes import read_cassette, recording
from pytest_imagegen.checks import REGISTRY, run_check
from pytest_imagegen.checks.context import CheckContext
from pytest_imagegen.config import Endpoint
from pytest_imagegen.profiles import get_profile

# A dribbled body this long would take 40 minutes at the pace below: a test that ends at
# all shows the bound works.
_LONG_BODY = json.dumps({"created": 1, "data": [{"b64_json": "A" * 12_000}]}).encode()
_PACE_S = 0.2


def _endpoint(url: str, **changes: object) -> Endpoint:
    values: dict[str, object] = {
        "name": "raw",
        "base_url": url + "/v1",
        "image_model": "gpt-image-1",
        "profile": get_profile("gpt-image-1"),
        "api_key": "sk-raw-test-key-0123456789",
        "timeout_s": 1.0,
        "deadline_s": 3.0,
    }
    values.update(changes)
    return Endpoint(**values)  # type: ignore[arg-type]


def test_a_dribbled_body_ends_at_timeout_s_naming_the_limit_and_what_came() -> None:
    with raw_server(dribble(_LONG_BODY, _PACE_S)) as server:
        client = bounded_client(Limits(timeout_s=1.0))
        began = time.monotonic()
        with pytest.raises(httpx2.ReadTimeout) as info:
            client.post(server.url + "/v1/images/generations", json={"model": "m"})
        elapsed = time.monotonic() - began
    message = str(info.value)
    assert message.startswith("no complete response within the 1 s allowed per request")
    assert "timeout_s=1" in message
    assert "HTTP 200 and its headers came back, then" in message
    assert "bytes of the body" in message
    assert elapsed < len(_LONG_BODY) * _PACE_S / 10  # nowhere near the dribble's length


def test_every_check_request_is_bounded_and_fails_as_timeout() -> None:
    # Finding 1: request_shape.request_is_valid and response_shape.schema ran ~156 s each.
    for check_id in ("response_shape.schema", "separation.image_model_refused_by_chat"):
        with raw_server(dribble(_LONG_BODY, _PACE_S)) as server:
            ctx = CheckContext(_endpoint(server.url))
            with ctx.closing():
                result = run_check(REGISTRY[check_id], ctx)
            assert not server.errors, server.errors  # the server kept its side of the test
            assert result.status == "failed", (check_id, result)
            assert result.diagnosis is not None, result
            assert result.diagnosis.category == "timeout", (result.message, server.errors)
            assert "timeout_s=1" in result.message, result.message
            assert "bytes of the body" in result.message, result.message


def test_deadline_s_bounds_each_operation_of_a_check() -> None:
    with raw_server(dribble(_LONG_BODY, _PACE_S)) as server:
        endpoint = _endpoint(server.url, timeout_s=10.0, deadline_s=1.0)
        ctx = CheckContext(endpoint)
        with ctx.closing():
            first = ctx.generate()
            second = ctx.generate()
    for call in (first, second):
        assert call.diagnosis is not None and call.diagnosis.category == "timeout"
        assert "deadline_s=1" in str(call.diagnosis)


def test_a_body_above_the_cap_is_cut_and_body_size_names_size_and_cap(tmp_path: Path) -> None:
    junk = b"{" + b"x" * 3_000_000
    with raw_server(answer(200, junk)) as server:
        endpoint = _endpoint(server.url, max_response_bytes=200_000, timeout_s=30, deadline_s=60)
        path = tmp_path / "raw" / "conformance" / "body_size.yaml"
        ctx = CheckContext(endpoint)
        with recording(path, mode="once"), ctx.closing():
            result = run_check(REGISTRY["response_shape.body_size"], ctx)
        assert result.status == "failed"
        assert "3,000,001 bytes" in result.message and "200,000 bytes" in result.message
        # The cassette keeps a short prefix and the length and digest, not 3 MB.
        assert path.stat().st_size < 20_000
        (interaction,) = read_cassette(path)
        stored = interaction["response"]["body"]["string"]
        found = find_cut(stored if isinstance(stored, bytes) else stored.encode())
        assert found is not None and found[1].bytes == 3_000_001 and found[1].cap == 200_000
        requests_before = len(server.requests)
        # Replayed, the same failure, without a request.
        ctx = CheckContext(endpoint)
        with recording(path, mode="none"), ctx.closing():
            replayed = run_check(REGISTRY["response_shape.body_size"], ctx)
        assert len(server.requests) == requests_before
    assert replayed.status == "failed"
    assert "3,000,001 bytes" in replayed.message and "200,000 bytes" in replayed.message


def test_default_cap_is_a_few_mb_above_the_largest_legal_answer() -> None:
    profile = get_profile("gpt-image-1")
    one = response_cap(profile, 1)
    # 1536x1024 RGBA, base64-encoded, is 8.4 MB: the cap sits above it, and below 50 MB.
    assert 8_400_000 < one < 16_000_000
    assert response_cap(profile, 2) > one
    endpoint = _endpoint("http://127.0.0.1:1")
    assert endpoint.response_cap(1) == one
    assert replace(endpoint, max_response_bytes=1234).response_cap(3) == 1234


def test_cut_marker_round_trips() -> None:
    cut = BodyCut(bytes=50_000_000, sha256="ab" * 32, cap=10, complete=False)
    found = find_cut(b"prefix" + cut_marker(cut))
    assert found == (b"prefix", cut)
    assert find_cut(b'{"data": []}') is None
    assert "more than 50,000,000 bytes" in cut.describe()


# --------------------------------------------------------------------------- async client


def _async_post(endpoint: Endpoint) -> bytes:
    """What ``imagegen_async_client``'s HTTP layer reads for one request to ``endpoint``."""
    import asyncio

    from pytest_imagegen.clients import fixture_client

    client = fixture_client(endpoint, {"request": [], "response": []}, asynchronous=True)

    async def run() -> bytes:
        try:
            answer = await client.images.with_raw_response.generate(model="gpt-image-1", prompt="x")
            return bytes(answer.http_response.content)
        finally:
            await client.close()

    return asyncio.run(run())


def test_the_async_client_cuts_a_body_above_the_cap_as_the_sync_one_does(tmp_path: Path) -> None:
    from pytest_imagegen.clients import fixture_client

    junk = b"{" + b"x" * 3_000_000
    with raw_server(answer(200, junk)) as server:
        endpoint = _endpoint(server.url, max_response_bytes=200_000, timeout_s=30, deadline_s=60)
        path = tmp_path / "async.yaml"
        with recording(path, mode="once"):
            body = _async_post(endpoint)
        sync = fixture_client(endpoint, {"request": [], "response": []})
        sync_body = sync.images.with_raw_response.generate(model="gpt-image-1", prompt="x")
        assert body == bytes(sync_body.http_response.content)
        found = find_cut(body)
        assert found is not None
        prefix, cut = found
        assert (len(prefix), cut.bytes, cut.cap) == (200_000, 3_000_001, 200_000)
        assert cut.complete
        assert "3,000,001 bytes, above the cap of 200,000 bytes" in cut.describe()
        # The cassette keeps the cut body (a short prefix, the length and digest), and
        # replays it without a request.
        assert path.stat().st_size < 20_000
        requests_before = len(server.requests)
        with recording(path, mode="none"):
            replayed = _async_post(endpoint)
        assert len(server.requests) == requests_before
    replayed_cut = find_cut(replayed)
    assert replayed_cut is not None and replayed_cut[1] == cut


def test_the_async_client_ends_a_dribbled_body_at_timeout_s() -> None:
    with raw_server(dribble(_LONG_BODY, _PACE_S)) as server:
        endpoint = _endpoint(server.url, timeout_s=1.0, deadline_s=60)
        began = time.monotonic()
        with pytest.raises(openai.APITimeoutError) as info:
            _async_post(endpoint)
        elapsed = time.monotonic() - began
    assert isinstance(info.value.__cause__, httpx2.ReadTimeout), repr(info.value.__cause__)
    message = str(info.value.__cause__)
    assert message.startswith("no complete response within the 1 s allowed per request")
    assert "HTTP 200 and its headers came back, then" in message
    assert elapsed < len(_LONG_BODY) * _PACE_S / 10
