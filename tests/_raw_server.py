"""A loopback HTTP server that answers with whatever bytes a test scripts, at any pace.

The reference server speaks correct HTTP; hardening tests need the opposite: a body
dribbled one byte at a time, a stall after the headers, 50 MB of junk, a redirect to
itself. Every wait is bounded by the server's stop event, so ``stop()`` ends it at once.
"""

from __future__ import annotations

import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

Behaviour = Callable[[socket.socket, bytes, threading.Event], None]


def read_request(conn: socket.socket) -> bytes:
    """The request head and as much body as Content-Length announces."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip() or 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def response_head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer(
    status: int, body: bytes, content_type: str = "application/json", **headers: str
) -> Behaviour:
    """A complete answer at once."""

    def run(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
        head = {
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            "Connection": "close",
        }
        head.update({k.replace("_", "-"): v for k, v in headers.items()})
        conn.sendall(response_head(status, head) + body)

    return run


def dribble(body: bytes, interval_s: float, content_type: str = "application/json") -> Behaviour:
    """Headers at once, then the body one byte per ``interval_s`` until done or stopped."""

    def run(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
        head = {
            "Content-Type": content_type,
            "Content-Length": str(len(body)),
            "Connection": "close",
        }
        conn.sendall(response_head(200, head))
        for byte in body:
            if stop.wait(interval_s):
                return
            conn.sendall(bytes([byte]))

    return run


def stall() -> Behaviour:
    """Read the request, then send nothing until the server stops."""

    def run(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
        stop.wait()

    return run


class RawServer:
    """Serves ``behaviour`` to every connection on 127.0.0.1 (any port)."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.requests: list[bytes] = []
        # How each connection's behaviour ended other than by the client leaving: a test
        # whose client sees the connection close early can say why.
        self.errors: list[str] = []
        self.stop_event = threading.Event()
        self.got_request = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._threads: list[threading.Thread] = []
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while not self.stop_event.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                request = read_request(conn)
                self.requests.append(request)
                self.got_request.set()
                self.behaviour(conn, request, self.stop_event)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up: that is what most of these tests provoke
            except BaseException:
                self.errors.append(traceback.format_exc())

    def stop(self) -> None:
        self.stop_event.set()
        with suppress(OSError):
            # Wakes the acceptor out of accept(), which a close alone does not do on Linux.
            # The socket is closed only once the acceptor has returned: otherwise it could
            # accept on the descriptor number a later server's socket has been given, and
            # answer that server's client with this server's behaviour (seen: a dribbling
            # test's connection ended at once by the previous test's stopped server).
            self._sock.shutdown(socket.SHUT_RDWR)
        self._acceptor.join(timeout=10)
        with suppress(OSError):
            self._sock.close()
        for thread in self._threads:
            thread.join(timeout=10)


@contextmanager
def raw_server(behaviour: Behaviour) -> Iterator[RawServer]:
    server = RawServer(behaviour)
    try:
        yield server
    finally:
        server.stop()


def routes(table: dict[str, Behaviour], default: Behaviour | None = None) -> Behaviour:
    """A behaviour per request path (the first line's target, query left out)."""

    def run(conn: socket.socket, request: bytes, stop: threading.Event) -> None:
        target = request.split(b"\r\n", 1)[0].split(b" ")[1].decode()
        behaviour = table.get(target.split("?", 1)[0], default)
        if behaviour is None:
            answer(404, b"{}")(conn, request, stop)
        else:
            behaviour(conn, request, stop)

    return run
