"""A small gateway of the project's own: a pass-through on 127.0.0.1 that can misbehave.

It forwards every request to an upstream (a reference server), replacing the client's key
with its own upstream key, and returns the upstream's answer. Each keyword argument of
:class:`Gateway` switches on one way real gateways misbehave, so the ``gateway.*`` checks
can be shown failing (or warning) on it and passing on the faithful pass-through.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2

# Headers that belong to one connection, never forwarded.
_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "content-encoding",
    "host",
    "te",
    "upgrade",
}
_RETRYABLE = {429, 500, 502, 503, 504}


@dataclass
class Misbehaviour:
    """How the gateway deviates from a faithful pass-through (all off: faithful)."""

    drop_params: tuple[str, ...] = ()  # removed from request bodies
    rewrite_model: str | None = None  # every request is sent with this model
    image_to_chat: bool = False  # image requests go to the upstream's chat completions
    chat_to_images: bool = False  # chat requests go to the upstream's images route
    retries: int = 0  # extra upstream attempts after a retryable error (hides one-off errors)
    retry_delay_s: float = 0.0  # pause before each retry
    retry_everything: bool = False  # retries non-retryable errors (4xx) too
    drop_retry_after: bool = False  # Retry-After removed from answers
    code_to_status: bool = False  # error.code rewritten to the status string ("429")
    quota_as_rate_limit: bool = False  # insufficient_quota answered as rate_limit_exceeded
    leak_upstream_key: bool = False  # answers carry the upstream key in a header
    forward_client_key: bool = False  # the client's Authorization goes upstream
    errors_as_200: bool = False  # upstream errors answered with status 200 (the body kept)


@dataclass
class Gateway:
    """The gateway: ``with Gateway(upstream_url, upstream_key, ...) as gw: gw.base_url``."""

    upstream_url: str  # the upstream's base URL, ending in /v1
    upstream_key: str
    misbehaviour: Misbehaviour = field(default_factory=Misbehaviour)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _http: httpx2.Client | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> Gateway:
        self._http = httpx2.Client(timeout=30, trust_env=False)
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                gateway._handle(self, "GET")

            def do_POST(self) -> None:
                gateway._handle(self, "POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None and self._http is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
        self._http.close()

    # ------------------------------------------------------------------ forwarding

    def _target(self, path: str) -> str:
        m = self.misbehaviour
        if m.image_to_chat and path.endswith("/images/generations"):
            path = path.replace("/images/generations", "/chat/completions")
        elif m.chat_to_images and path.endswith("/chat/completions"):
            path = path.replace("/chat/completions", "/images/generations")
        return self.upstream_url.rstrip("/") + path.removeprefix("/v1")

    def _body(self, raw: bytes) -> bytes:
        m = self.misbehaviour
        if not raw or not (m.drop_params or m.rewrite_model):
            return raw
        body = json.loads(raw)
        for name in m.drop_params:
            body.pop(name, None)
        if m.rewrite_model:
            body["model"] = m.rewrite_model
        return json.dumps(body).encode()

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        m = self.misbehaviour
        assert self._http is not None
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        headers = {"Content-Type": handler.headers.get("Content-Type", "application/json")}
        client_auth = handler.headers.get("Authorization", "")
        headers["Authorization"] = (
            client_auth if m.forward_client_key else f"Bearer {self.upstream_key}"
        )
        url, body = self._target(handler.path), self._body(raw)
        attempts = 1 + m.retries
        for attempt in range(attempts):
            try:
                answer = self._http.request(method, url, content=body or None, headers=headers)
            except httpx2.HTTPError as exc:
                self._send(
                    handler,
                    502,
                    {"content-type": "application/json"},
                    json.dumps(
                        {
                            "error": {
                                "message": f"upstream: {exc}",
                                "type": "api_error",
                                "param": None,
                                "code": None,
                            }
                        }
                    ).encode(),
                )
                return
            retry = answer.status_code in _RETRYABLE or (
                m.retry_everything and answer.status_code >= 400
            )
            if not retry or attempt == attempts - 1:
                break
            time.sleep(m.retry_delay_s)
        out = {k.lower(): v for k, v in answer.headers.items() if k.lower() not in _HOP}
        content = answer.content
        if answer.status_code >= 400:
            content = self._reshape_error(answer.status_code, content)
            if m.drop_retry_after:
                out.pop("retry-after", None)
                out.pop("retry-after-ms", None)
        if m.leak_upstream_key:
            out["x-upstream-authorization"] = f"Bearer {self.upstream_key}"
        status = 200 if m.errors_as_200 and answer.status_code >= 400 else answer.status_code
        self._send(handler, status, out, content)

    def _reshape_error(self, status: int, content: bytes) -> bytes:
        m = self.misbehaviour
        if not (m.code_to_status or m.quota_as_rate_limit):
            return content
        try:
            doc = json.loads(content)
            error = doc["error"]
        except (ValueError, KeyError, TypeError):
            return content
        if m.quota_as_rate_limit and error.get("code") == "insufficient_quota":
            error.update(
                type="requests",
                code="rate_limit_exceeded",
                message="Rate limit reached, please retry",
            )
        if m.code_to_status:
            error["code"] = str(status)
        return json.dumps(doc).encode()

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str], content: bytes
    ) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(content)))
        handler.end_headers()
        handler.wfile.write(content)


class GatewayProcess:
    """The gateway in a process of its own (so a cassette recording the client's traffic in
    this process never sees the gateway's own calls upstream); ``base_url`` once started."""

    def __init__(
        self, upstream_url: str, upstream_key: str, misbehaviour: Misbehaviour | None = None
    ) -> None:
        self.upstream_url = upstream_url
        self.upstream_key = upstream_key
        self.misbehaviour = misbehaviour or Misbehaviour()
        self.base_url = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> GatewayProcess:
        env = {**os.environ, "GATEWAY_UPSTREAM_KEY": self.upstream_key}
        self._proc = subprocess.Popen(
            [sys.executable, __file__, self.upstream_url, json.dumps(asdict(self.misbehaviour))],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()  # the child prints its URL when ready
        if not line.startswith("http://"):
            self.__exit__()
            raise RuntimeError(f"the gateway process did not start: {line!r}")
        self.base_url = line
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.communicate(timeout=30)


def _main() -> None:
    upstream_url, options = sys.argv[1], json.loads(sys.argv[2])
    misbehaviour = Misbehaviour(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *args: stop.set())
    with Gateway(upstream_url, os.environ["GATEWAY_UPSTREAM_KEY"], misbehaviour) as gateway:
        print(gateway.base_url, flush=True)
        stop.wait(600)  # bounded: a forgotten gateway ends by itself


if __name__ == "__main__":
    _main()
