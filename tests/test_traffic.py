"""What a test's clients sent and got back (pytest_imagegen.traffic), live, streamed,
async and replayed from a cassette, scrubbed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from pytest_imagegen import cassettes
from pytest_imagegen._scrub import PLACEHOLDER, Scrubber
from pytest_imagegen.reference import ReferenceServer
from pytest_imagegen.traffic import Traffic

KEY = "sk-traffic-test-key-0123456789abcdef"
TEAM_SECRET = "team-secret-value-42"


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    with ReferenceServer(api_keys=[KEY]) as srv:
        yield srv


@pytest.fixture
def traffic() -> Traffic:
    return Traffic(Scrubber.create(secrets=[KEY, TEAM_SECRET], secret_headers=["x-team"]))


def sync_client(server: ReferenceServer, traffic: Traffic) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.base_url,
        api_key=KEY,
        max_retries=0,
        timeout=30,
        default_headers={"x-team": TEAM_SECRET},
        http_client=openai.DefaultHttpxClient(event_hooks=traffic.event_hooks()),
    )


def assert_scrubbed(traffic: Traffic) -> None:
    text = json.dumps([e.to_dict() for e in traffic])
    assert KEY not in text and TEAM_SECRET not in text


def test_a_generation_as_sent_and_received(server: ReferenceServer, traffic: Traffic) -> None:
    client = sync_client(server, traffic)
    client.images.generate(model="gpt-image-1", prompt="a fox", quality="low", size="1024x1536")
    [exchange] = traffic.generations
    assert (exchange.method, exchange.path, exchange.status) == (
        "POST",
        "/v1/images/generations",
        200,
    )
    assert exchange.body == {
        "model": "gpt-image-1",
        "prompt": "a fox",
        "quality": "low",
        "size": "1024x1536",
    }
    assert exchange.model == "gpt-image-1" and exchange.complete
    assert exchange.headers["authorization"] == PLACEHOLDER
    assert exchange.headers["x-team"] == PLACEHOLDER
    assert exchange.response_headers["content-type"].startswith("application/json")
    [image] = exchange.images
    assert image["format"] == "png" and image["size"] == "1024x1536" and image["bytes"] > 100
    assert exchange.response["data"][0]["b64_json"] == {"image": image}
    assert exchange.response["usage"]["output_tokens"] > 0
    assert_scrubbed(traffic)


def test_refusals_and_other_endpoints(server: ReferenceServer, traffic: Traffic) -> None:
    client = sync_client(server, traffic)
    with pytest.raises(openai.BadRequestError):
        client.images.generate(model="gpt-4o", prompt="a fox")
    client.models.list()
    refused, listed = traffic
    assert refused.status == 400 and refused.response["error"]["param"] == "model"
    assert (listed.method, listed.path, listed.body) == ("GET", "/v1/models", None)
    assert traffic.filter(method="GET") == [listed]
    assert traffic.last is listed


def test_a_stream_is_teed_not_buffered(server: ReferenceServer, traffic: Traffic) -> None:
    client = sync_client(server, traffic)
    stream = client.images.generate(
        model="gpt-image-1", prompt="a fox", stream=True, partial_images=2, size="1024x1024"
    )
    first = next(iter(stream))
    exchange = traffic.last
    assert exchange is not None and exchange.status == 200
    assert not exchange.complete and exchange.response is None  # still being read
    events = [first, *stream]
    assert exchange.complete
    names = [e["event"] for e in exchange.response["events"]]
    assert names == [e.type for e in events]
    assert names[-1] == "image_generation.completed"
    assert all(
        e["data"]["b64_json"]["image"]["format"] == "png" for e in exchange.response["events"]
    )


def test_async_clients(server: ReferenceServer, traffic: Traffic) -> None:
    async def run() -> None:
        client = openai.AsyncOpenAI(
            base_url=server.base_url,
            api_key=KEY,
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(event_hooks=traffic.async_event_hooks()),
        )
        async with client:
            await client.images.generate(model="gpt-image-1", prompt="a cat", quality="low")

    asyncio.run(run())
    [exchange] = traffic.generations
    assert exchange.headers["x-stainless-async"].startswith("async")
    assert exchange.status == 200 and exchange.complete and len(exchange.images) == 1
    assert_scrubbed(traffic)


def test_a_replayed_answer_is_seen_like_a_live_one(server: ReferenceServer, tmp_path: Path) -> None:
    path = tmp_path / "cassette.yaml"
    seen = []
    for mode in ("once", "none"):  # record, then replay
        traffic = Traffic(Scrubber.create(secrets=[KEY]))
        before = len(server.log)
        with cassettes.recording(path, mode=mode, secrets=[KEY]):
            client = sync_client(server, traffic)
            client.images.generate(model="gpt-image-1", prompt="a fox", size="1024x1024")
        seen.append((traffic, len(server.log) - before))
    (live, live_sent), (replayed, replay_sent) = seen
    assert (live_sent, replay_sent) == (1, 0)
    for exchange in (live.last, replayed.last):
        assert exchange is not None and exchange.status == 200 and exchange.complete
        assert exchange.body["prompt"] == "a fox"
        assert [(i["format"], i["size"]) for i in exchange.images] == [("png", "1024x1024")]


def test_views_are_made_when_read_not_when_sent(
    server: ReferenceServer, traffic: Traffic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hooks only note what passes: scrubbing bodies and describing images (Pillow)
    waits until a test reads the exchange, and happens once."""
    from pytest_imagegen import traffic as traffic_module

    described: list[int] = []
    original = traffic_module._image_info

    def counting(data: bytes) -> dict[str, object]:
        described.append(len(data))
        return original(data)

    monkeypatch.setattr(traffic_module, "_image_info", counting)
    scrubbed: list[object] = []
    original_body = Scrubber.request_body

    def counting_body(self: Scrubber, body: object, content_type: str) -> tuple[bytes | None, str]:
        scrubbed.append(body)
        return original_body(self, body, content_type)

    monkeypatch.setattr(Scrubber, "request_body", counting_body)
    client = sync_client(server, traffic)
    client.images.generate(model="gpt-image-1", prompt="a fox", quality="low", size="1024x1024")
    [exchange] = traffic.generations
    assert (described, scrubbed) == ([], [])
    assert exchange.status == 200 and exchange.complete and exchange.response_bytes > 0
    assert exchange.body["prompt"] == "a fox" and exchange.body["prompt"] == "a fox"
    assert [(i["format"], i["size"]) for i in exchange.images] == [("png", "1024x1024")]
    assert exchange.images == exchange.images
    assert len(described) == 1 and len(scrubbed) == 1
    assert exchange.headers["authorization"] == PLACEHOLDER
    assert_scrubbed(traffic)
