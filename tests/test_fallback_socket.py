"""The fallback runner against a real loopback socket: real stalls, real read timeouts, a
body dribbled byte by byte, with the SDK's default HTTP stack (no mock transport)."""

from __future__ import annotations

import base64
import json
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import openai
import pytest

from pytest_imagegen.config import Endpoint
from pytest_imagegen.fallback import _Watch, generate
from pytest_imagegen.images import make_image
from pytest_imagegen.profiles import get_profile

ALLOWANCE_S = 0.5  # scheduling slack on a loaded 2-core machine
STALL_MAX_S = 5.0  # a stalled handler gives up by itself after this (bounds the test)
MAX_REQUESTS = 20

PNG = make_image(1024, 1024, "png", seed="loopback")
IMAGE_BODY = json.dumps(
    {"created": 1, "data": [{"b64_json": base64.b64encode(PNG).decode()}]}
).encode()


class LoopbackImageServer(socketserver.ThreadingTCPServer):
    """A minimal HTTP/1.1 images endpoint on 127.0.0.1 whose behaviour per request is
    chosen by ``plan(body)``: ``"stall"`` (read the request, then say nothing),
    ``"dribble"`` / ``"trickle"`` (a valid answer, one byte every 20 ms / 2 s) or ``"ok"``
    (a valid answer at once)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, plan: Callable[[dict[str, Any]], str]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.plan = plan
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.requests: list[dict[str, Any]] = []
        self.disconnected_at: list[float] = []  # when a client hung up mid-answer
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def start(self) -> LoopbackImageServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.shutdown()
        self.server_close()
        self._thread.join(5)


class _Handler(socketserver.StreamRequestHandler):
    server: LoopbackImageServer

    def handle(self) -> None:
        try:
            self._handle()
        except (BrokenPipeError, ConnectionResetError):
            self.server.disconnected_at.append(time.monotonic())
        except Exception as exc:  # surfaced by the fixture: a test must not pass over it
            self.server.errors.append(exc)

    def _handle(self) -> None:
        headers: dict[str, str] = {}
        self.rfile.readline()  # request line
        while (line := self.rfile.readline().strip()) != b"":
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = json.loads(self.rfile.read(int(headers.get("content-length", "0"))) or b"{}")
        if len(self.server.requests) >= MAX_REQUESTS:
            raise AssertionError(f"more than {MAX_REQUESTS} requests: the runner is looping")
        self.server.requests.append(body)
        behaviour = self.server.plan(body)
        if behaviour == "stall":
            self.server.stop.wait(STALL_MAX_S)
            return
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(IMAGE_BODY)}\r\nConnection: close\r\n\r\n"
        ).encode()
        self.wfile.write(head)
        if behaviour == "ok":
            self.wfile.write(IMAGE_BODY)
            return
        # "dribble": a byte every 20 ms; "trickle": a byte every 2 s (each wait far shorter
        # than the read timeout, so only the runner can end the attempt).
        interval = {"dribble": 0.02, "trickle": 2.0}[behaviour]
        for i in range(len(IMAGE_BODY)):
            self.wfile.write(IMAGE_BODY[i : i + 1])
            self.wfile.flush()
            if self.server.stop.wait(interval):
                return


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[dict[str, Any]], str]], LoopbackImageServer]]:
    servers: list[LoopbackImageServer] = []

    def start(plan: Callable[[dict[str, Any]], str]) -> LoopbackImageServer:
        server = LoopbackImageServer(plan).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
    for server in servers:
        if server.errors:
            raise server.errors[0]


def endpoint_for(server: LoopbackImageServer, **limits: Any) -> Endpoint:
    return Endpoint(
        name="loopback",
        base_url=server.base_url,
        image_model="gpt-image-1.5",
        profile=get_profile("gpt-image-1.5"),
        api_key="sk-test",
        **limits,
    )


def client_for(endpoint: Endpoint) -> openai.OpenAI:
    # The SDK's own HTTP stack on a real socket: timeouts are the kernel's and httpcore's.
    return endpoint.client()


def test_a_real_stall_is_a_timeout_and_the_fallback_step_succeeds(serve) -> None:
    server = serve(lambda body: "stall" if body.get("quality") == "high" else "ok")
    endpoint = endpoint_for(
        server, timeout_s=0.3, deadline_s=2.0, fallback=({"quality": "low", "size": "1024x1024"},)
    )
    began = time.monotonic()
    outcome = generate(client_for(endpoint), endpoint, "a lighthouse at dusk", quality="high")
    wall = time.monotonic() - began

    assert outcome.ok, outcome.trace()
    first, second = outcome.attempts
    assert first.diagnosis is not None
    assert (first.diagnosis.category, first.diagnosis.retryable) == ("timeout", True)
    assert first.diagnosis.status is None
    # A real read timeout: not before the client timeout, not much after it.
    assert 0.28 <= first.latency_s <= 0.3 + ALLOWANCE_S
    assert "is retryable: falling back to step 2 {quality: low, size: 1024x1024}" in first.action
    assert (second.step, second.diagnosis) == (2, None)
    assert [image.data for image in outcome.images] == [PNG]
    assert [r["quality"] for r in server.requests] == ["high", "low"]
    assert wall < endpoint.deadline_s
    assert wall <= 0.3 + ALLOWANCE_S + second.latency_s


def test_a_silent_server_cannot_hold_generate_past_the_deadline(serve) -> None:
    server = serve(lambda body: "stall")
    endpoint = endpoint_for(server, timeout_s=5.0, deadline_s=0.3, fallback=({"quality": "low"},))
    began = time.monotonic()
    outcome = generate(client_for(endpoint), endpoint, "a lighthouse at dusk")
    wall = time.monotonic() - began

    assert outcome.diagnosis is not None and outcome.diagnosis.category == "timeout"
    assert wall <= 0.3 + ALLOWANCE_S
    (attempt,) = outcome.attempts  # the deadline left no time for step 2
    assert attempt.timeout_s == pytest.approx(0.3, abs=0.02)
    assert "left before the deadline: stopping" in attempt.action
    assert len(server.requests) == 1


def test_a_body_dribbled_byte_by_byte_is_cut_off_at_the_deadline(serve) -> None:
    # Each byte arrives well within any read timeout; only the runner's clock stops it.
    server = serve(lambda body: "dribble")
    endpoint = endpoint_for(server, timeout_s=5.0, deadline_s=0.4)
    began = time.monotonic()
    outcome = generate(client_for(endpoint), endpoint, "a lighthouse at dusk")
    returned = time.monotonic()

    assert returned - began <= 0.4 + ALLOWANCE_S
    assert outcome.diagnosis is not None
    assert (outcome.diagnosis.category, outcome.diagnosis.retryable) == ("timeout", True)
    assert "still arriving" in (outcome.diagnosis.message or "") or "within" in (
        outcome.diagnosis.message or ""
    )
    # The connection is dropped, not left dribbling (that would take len(body) x 20 ms).
    deadline = time.monotonic() + 2.0
    while not server.disconnected_at and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.disconnected_at, "the server kept sending after generate() gave up"
    assert server.disconnected_at[0] - returned < 1.0


def test_giving_up_on_an_attempt_wakes_its_blocked_read(serve) -> None:
    """Per-read timeouts let an abandoned attempt linger until its next byte or read
    timeout; cancelling it shuts the socket down, so its thread (and the server, which sees
    the hang-up) is released at once."""
    server = serve(lambda body: "trickle")  # headers and one byte, then a byte every 2 s
    http = httpx2.Client(timeout=10.0)
    watch = _Watch(time.monotonic() + 60)
    ended = threading.Event()
    failures: list[Exception] = []

    def read() -> None:
        url = server.base_url + "/images/generations"
        try:
            with http.stream("POST", url, json={"prompt": "x"}) as response:
                watch.track(response)
                for _ in response.iter_bytes():
                    pass
        except httpx2.HTTPError as exc:
            failures.append(exc)
        finally:
            ended.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    give_up = time.monotonic() + 2.0
    while watch._tracked is None and time.monotonic() < give_up:
        time.sleep(0.01)
    time.sleep(0.1)  # let the reader block in its next read
    assert watch._tracked is not None and not ended.is_set()

    watch.cancel()
    assert ended.wait(1.0), "the read stayed blocked after the attempt was cancelled"
    assert failures and "peer closed connection" in str(failures[0])
    http.close()


def test_the_real_socket_sees_the_attempt_timeout(serve) -> None:
    """The client timeout each attempt is given is the one its socket uses: a step whose
    share of the deadline is 0.15 s times out after 0.15 s on the wire."""
    server = serve(lambda body: "stall")
    endpoint = endpoint_for(server, timeout_s=0.15, deadline_s=1.0, fallback=({"quality": "low"},))
    outcome = generate(client_for(endpoint), endpoint, "a lighthouse at dusk")
    assert [a.step for a in outcome.attempts] == [1, 2]
    for attempt in outcome.attempts:
        assert attempt.diagnosis is not None and attempt.diagnosis.category == "timeout"
        assert 0.13 <= attempt.latency_s <= 0.15 + ALLOWANCE_S
    # Both stalled; the chain is exhausted long before the deadline.
    assert outcome.elapsed_s < 1.0
    assert outcome.attempts[-1].action.endswith("but no fallback step is left: stopping")
