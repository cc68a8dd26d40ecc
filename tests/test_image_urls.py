"""Image URLs are fetched only from where an image may come from (issue 10, finding 3).

Every test here stays on loopback: refusals of metadata and private addresses are checked
with address literals (and a stubbed resolver), and asserted to happen before any
connection is attempted.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from _raw_server import answer, raw_server, routes, stall

from pytest_imagegen import image_urls
from pytest_imagegen.checks.context import CheckContext
from pytest_imagegen.config import Endpoint
from pytest_imagegen.images import make_image
from pytest_imagegen.profiles import get_profile


def _endpoint(url: str, **changes: Any) -> Endpoint:
    values: dict[str, Any] = {
        "name": "raw",
        "base_url": url + "/v1",
        "image_model": "dall-e-2",
        "profile": get_profile("dall-e-2"),
        "api_key": "sk-raw-test-key-0123456789",
        "timeout_s": 2.0,
        "deadline_s": 4.0,
    }
    values.update(changes)
    return Endpoint(**values)


def _url_answer(url: str) -> bytes:
    return json.dumps({"created": 1, "data": [{"url": url}]}).encode()


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Every address a socket connects to during the test."""
    seen: list[Any] = []
    original = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> None:
        seen.append(address)
        original(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield seen


def _generate(server_url: str) -> Any:
    ctx = CheckContext(_endpoint(server_url))
    with ctx.closing():
        return ctx.generate(size="256x256", response_format="url")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (
            "http://169.254.169.254/latest/meta-data/iam?sig=sig-secret-0123456789",
            "169.254.169.254 is a cloud metadata address, never fetched",
        ),
        (
            "http://[fd00:ec2::254]/latest/meta-data/",
            "fd00:ec2::254 is a cloud metadata address, never fetched",
        ),
        (
            "http://10.1.2.3/images/a.png",
            "10.1.2.3 is a private address and the endpoint is not on a private network",
        ),
        (
            "http://169.254.10.20/a.png",
            "169.254.10.20 is a link-local address and the endpoint is not on a link-local",
        ),
        ("ftp://127.0.0.1/a.png", "is not an http(s) URL; nothing was fetched"),
    ],
)
def test_forbidden_image_urls_are_refused_before_any_connection(
    connects: list[Any], url: str, why: str
) -> None:
    with raw_server(answer(200, _url_answer(url))) as server:
        call = _generate(server.url)
    assert call.diagnosis is not None and call.diagnosis.category == "malformed_response"
    assert why in str(call.diagnosis)
    assert "sig-secret-0123456789" not in str(call.diagnosis)  # the URL is shown scrubbed
    targets = {address[0] for address in connects if isinstance(address, tuple)}
    assert targets == {"127.0.0.1"}  # only the endpoint itself was connected to


def test_a_name_resolving_to_metadata_is_refused_without_connecting(
    monkeypatch: pytest.MonkeyPatch, connects: list[Any]
) -> None:
    addresses = {"images.example.test": "169.254.169.254", "relay.example.test": "192.0.2.80"}

    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (addresses[host], port or 80))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    guard = image_urls.connect_guard(
        "http://images.example.test/a.png", base_url="https://relay.example.test/v1"
    )
    with pytest.raises(image_urls.ImageURLRefused, match="cloud metadata address"):
        guard("images.example.test", 80)
    assert connects == []


def test_a_loopback_endpoint_may_serve_loopback_urls() -> None:
    png = make_image(256, 256, "png")
    table: dict[str, Any] = {"/img.png": answer(200, png, "image/png")}
    with raw_server(routes(table)) as server:
        table["/v1/images/generations"] = answer(200, _url_answer(server.url + "/img.png"))
        call = _generate(server.url)
    assert call.diagnosis is None, call.diagnosis
    assert [im.size for im in call.images] == ["256x256"]


def test_a_stalling_image_host_ends_within_the_limit_naming_the_url() -> None:
    table: dict[str, Any] = {"/slow.png": stall()}
    with raw_server(routes(table)) as server:
        table["/v1/images/generations"] = answer(
            200, _url_answer(server.url + "/slow.png?token=t-0123456789")
        )
        call = _generate(server.url)
    text = str(call.diagnosis)
    assert call.diagnosis is not None and call.diagnosis.category == "malformed_response"
    assert "downloading the image URL" in text and "/slow.png" in text
    assert "no complete response within" in text
    assert "t-0123456789" not in text


def test_an_image_url_body_above_the_largest_image_is_cut() -> None:
    table: dict[str, Any] = {"/huge.png": answer(200, b"\x89PNG" + b"0" * 6_000_000, "image/png")}
    with raw_server(routes(table)) as server:
        table["/v1/images/generations"] = answer(200, _url_answer(server.url + "/huge.png"))
        call = _generate(server.url)
    text = str(call.diagnosis)
    assert "6,000,004 bytes, above the cap of" in text and "/huge.png" in text


def test_network_kinds() -> None:
    kinds = {
        "8.8.8.8": "public",
        "127.0.0.2": "loopback",
        "::1": "loopback",
        "192.168.1.9": "private",
        "100.64.0.1": "private",
        "169.254.1.1": "link-local",
        "169.254.169.254": "metadata",
        "::ffff:169.254.169.254": "metadata",
        "0.0.0.0": "special",
        "224.0.0.1": "special",
    }
    for text, kind in kinds.items():
        assert image_urls.network_of(ipaddress.ip_address(text)) == kind, text
