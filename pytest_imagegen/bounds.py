"""Every request bounded: in total wall time (body included) and in body size.

The SDK's ``timeout`` bounds each socket operation, not a request: a server that sends its
body one byte every half second keeps a 2 s timeout happy for ever. Here each request gets
a clock when it starts, ``min(timeout_s, time left to the check's deadline_s)``, and every
socket operation made for it (connect, TLS, write, read) is given at most the time left on
that clock, so the request ends by then whatever the server does, and the error names the
limit and what had come back so far.

Three layers, all per request (a transport or connection pool may be shared by many
clients and threads; the clock travels with the request, never with the client):

* :class:`BoundedTransport` wraps any httpx2 transport (vcrpy patches the inner one, so
  replays and recordings pass through it too). It starts the request's clock, clamps the
  request's timeouts to it, and holds the clock in a context variable while the request or
  its body is being read in the calling thread.
* :class:`BoundedBackend` is the connection pool's network backend: it gives every socket
  operation at most the time left on the clock of the request the calling thread serves.
* :class:`_CappedPool` wraps the connection pool: a body above the request's size cap is
  not held whole. What was read up to the cap is passed on, the rest is drained into a
  sha256 and a length, and a trailer (:func:`cut_marker`) ends the body, so the consumer and
  the cassette (which keeps a short prefix plus the trailer) both see what happened.

``bounded_client(...)`` builds an ``openai.DefaultHttpxClient`` with all three. The image
URL guard (:mod:`pytest_imagegen.image_urls`) hooks into the same backend, so its check runs
on the address actually connected to.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpcore2
import httpx2

__all__ = [
    "CUT_PREFIX_BYTES",
    "BodyCut",
    "BoundedBackend",
    "BoundedTransport",
    "Limits",
    "bounded_client",
    "cut_marker",
    "find_cut",
]

#: The request extension that carries a request's limits override (e.g. for image URLs).
EXTENSION = "imagegen_limits"
#: How much of an oversized body a cassette keeps (the rest is its sha256 and length).
CUT_PREFIX_BYTES = 4096
# Draining an oversized body to learn its length and digest stops after this many bytes:
# a body that never ends is reported as "at least" what was seen.
_DRAIN_MAX_BYTES = 1 << 30
# A socket operation given no time at all would switch the socket to non-blocking mode.
_MIN_OP_S = 0.001

# Every message of a request whose clock ran out starts so (and is not reworded twice).
_PREFIX = "no complete response within"

_CLOCK: ContextVar[_Clock | None] = ContextVar("imagegen_request_clock", default=None)

_CUT_RE = re.compile(rb"\n<imagegen:body-cut bytes=(\d+)(\+?) sha256=([0-9a-f]{64}) cap=(\d+)>\Z")


@dataclass(frozen=True)
class BodyCut:
    """An oversized body: its length (at least, when ``complete`` is False), digest and cap."""

    bytes: int
    sha256: str
    cap: int
    complete: bool = True

    def describe(self) -> str:
        size = f"{self.bytes:,} bytes" if self.complete else f"more than {self.bytes:,} bytes"
        return (
            f"the response body is {size}, above the cap of {self.cap:,} bytes "
            f"(reading stopped at the cap; sha256 {self.sha256[:12]}...)"
        )


def cut_marker(cut: BodyCut) -> bytes:
    """The trailer that ends a body cut at its cap (parsed back by :func:`find_cut`)."""
    more = "" if cut.complete else "+"
    return (
        f"\n<imagegen:body-cut bytes={cut.bytes}{more} sha256={cut.sha256} cap={cut.cap}>".encode()
    )


def find_cut(body: bytes | None) -> tuple[bytes, BodyCut] | None:
    """``(prefix, cut)`` when ``body`` ends with a cut trailer, else None."""
    if not body or not body.endswith(b">"):
        return None
    match = _CUT_RE.search(body[-200:])
    if match is None:
        return None
    start = len(body) - 200 + match.start() if len(body) > 200 else match.start()
    cut = BodyCut(
        bytes=int(match.group(1)),
        sha256=match.group(3).decode(),
        cap=int(match.group(4)),
        complete=not match.group(2),
    )
    return body[:start], cut


# --------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class Limits:
    """What each request of a client may take.

    ``timeout_s``: wall time of one request, from its start to the last byte of its body.
    ``deadline``: a ``time.monotonic()`` instant no request may run past (``deadline_s``
    after the operation began, given as ``deadline_s`` for messages), or a function giving
    it when a request starts (an operation's window moves on with each operation).
    ``max_body_bytes``: the body size cap, a number or a function of the request (None: no
    cap).
    """

    timeout_s: float
    deadline: float | Callable[[], float | None] | None = None
    deadline_s: float | None = None
    max_body_bytes: int | Callable[[Any], int | None] | None = None

    def start(self, request: Any = None) -> _Clock:
        now = time.monotonic()
        end = now + max(0.0, self.timeout_s)
        limit = f"the {self.timeout_s:g} s allowed per request (timeout_s={self.timeout_s:g})"
        deadline = self.deadline() if callable(self.deadline) else self.deadline
        if deadline is not None and deadline < end:
            end = deadline
            left = max(0.0, deadline - now)
            limit = (
                f"the time left before the deadline (deadline_s={self.deadline_s:g}; "
                f"{left:.2f} s were left when the request started)"
            )
        cap = self.max_body_bytes
        if callable(cap):
            cap = cap(request)
        return _Clock(started=now, end=end, limit=limit, cap=cap)


class _Clock:
    """One request's time and what came back so far."""

    def __init__(self, *, started: float, end: float, limit: str, cap: int | None) -> None:
        self.started = started
        self.end = end
        self.limit = limit
        self.cap = cap
        self.wire_bytes = 0  # bytes read from sockets for this request
        self.status: int | None = None
        self.body_bytes = 0
        # The async capped pool reads the body under this clock itself (see
        # _AsyncCappedStream): the layers above leave the timing to it.
        self.self_timed = False

    def left(self) -> float:
        return self.end - time.monotonic()

    @property
    def expired(self) -> bool:
        return self.left() <= 0

    def clamp(self, timeout: float | None, error: type[Exception]) -> float:
        """``timeout`` cut to the time left; raises ``error`` when none is left."""
        left = self.left()
        if left <= 0:
            raise error(self.describe())
        return max(_MIN_OP_S, left if timeout is None else min(timeout, left))

    def seen(self) -> str:
        if self.status is not None:
            return (
                f"HTTP {self.status} and its headers came back, then {self.body_bytes:,} "
                f"bytes of the body"
            )
        if self.wire_bytes:
            return (
                f"{self.wire_bytes:,} bytes came back, not yet a complete status line and headers"
            )
        return "nothing came back"

    def describe(self) -> str:
        took = time.monotonic() - self.started
        return f"{_PREFIX} {self.limit}: after {took:.2f} s, {self.seen()}"


def current_clock() -> _Clock | None:
    """The clock of the request the calling thread is serving (None outside one)."""
    return _CLOCK.get()


@contextlib.contextmanager
def _running(clock: _Clock) -> Iterator[None]:
    token = _CLOCK.set(clock)
    try:
        yield
    finally:
        _CLOCK.reset(token)


# --------------------------------------------------------------------------- network backend


class _BoundedStream:
    """A network stream whose every operation ends by the current request's clock."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        clock = _CLOCK.get()
        if clock is not None:
            timeout = clock.clamp(timeout, httpcore2.ReadTimeout)
        data: bytes = self._inner.read(max_bytes, timeout)
        if clock is not None:
            clock.wire_bytes += len(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        clock = _CLOCK.get()
        if clock is not None:
            timeout = clock.clamp(timeout, httpcore2.WriteTimeout)
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> Any:
        clock = _CLOCK.get()
        if clock is not None:
            timeout = clock.clamp(timeout, httpcore2.ConnectTimeout)
        return _BoundedStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class BoundedBackend:
    """httpcore2 network backend: connections and their streams obey the request's clock.

    ``before_connect(host, port)`` (optional) may refuse a connection before any packet is
    sent, or name the address to connect to instead (the image URL guard resolves the name
    and checks the address itself, so the check and the connection see the same address).
    """

    def __init__(self, inner: Any = None) -> None:
        self._inner = inner if inner is not None else httpcore2.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> _BoundedStream:
        clock = _CLOCK.get()
        guard = _GUARD.get()
        if guard is not None:
            host = guard(host, port)
        if clock is not None:
            timeout = clock.clamp(timeout, httpcore2.ConnectTimeout)
        stream = self._inner.connect_tcp(
            host, port, timeout=timeout, local_address=local_address, socket_options=socket_options
        )
        return _BoundedStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> _BoundedStream:
        clock = _CLOCK.get()
        if clock is not None:
            timeout = clock.clamp(timeout, httpcore2.ConnectTimeout)
        return _BoundedStream(
            self._inner.connect_unix_socket(path, timeout=timeout, socket_options=socket_options)
        )

    def sleep(self, seconds: float) -> None:
        clock = _CLOCK.get()
        if clock is not None:
            seconds = min(seconds, max(0.0, clock.left()))
        self._inner.sleep(seconds)


#: A per-request hook run before a TCP connection: ``(host, port) -> host to connect to``.
_GUARD: ContextVar[Callable[[str, int], str] | None] = ContextVar(
    "imagegen_connect_guard", default=None
)


# --------------------------------------------------------------------------- size cap


class _Meter:
    """One body's bytes counted and hashed against its clock's cap (the sync and the async
    capped streams differ only in how they pull chunks)."""

    def __init__(self, clock: _Clock) -> None:
        self.clock = clock
        self.digest = hashlib.sha256()

    def take(self, chunk: bytes) -> tuple[bytes, bool]:
        """What of ``chunk`` to pass on, and whether the cap is now passed."""
        clock = self.clock
        clock.body_bytes += len(chunk)
        if clock.cap is None:
            return chunk, False
        self.digest.update(chunk)
        if clock.body_bytes <= clock.cap:
            return chunk, False
        return chunk[: max(0, len(chunk) - (clock.body_bytes - clock.cap))], True

    def count(self, chunk: bytes) -> bool:
        """Count and hash a chunk past the cap; False once draining should stop."""
        self.clock.body_bytes += len(chunk)
        self.digest.update(chunk)
        return self.clock.body_bytes < _DRAIN_MAX_BYTES

    def marker(self, complete: bool) -> bytes:
        clock = self.clock
        assert clock.cap is not None
        return cut_marker(BodyCut(clock.body_bytes, self.digest.hexdigest(), clock.cap, complete))

    def ended_by_time(self, exc: Exception) -> bool:
        return "Timeout" in type(exc).__name__ or self.clock.expired


class _CappedStream:
    """A pool response stream that passes at most ``cap`` bytes on, then a cut trailer."""

    def __init__(self, inner: Any, clock: _Clock) -> None:
        self._inner = inner
        self._clock = clock

    def __iter__(self) -> Iterator[bytes]:
        meter = _Meter(self._clock)
        iterator = iter(self._inner)
        for chunk in iterator:
            passed, over = meter.take(chunk)
            if passed:
                yield passed
            if over:  # pass on nothing more: only count and hash the rest
                yield meter.marker(self._drain(iterator, meter))
                return

    @staticmethod
    def _drain(iterator: Iterator[bytes], meter: _Meter) -> bool:
        try:
            for chunk in iterator:
                if not meter.count(chunk):
                    return False
        except Exception as exc:  # the clock ran out or the connection broke while draining
            if meter.ended_by_time(exc):
                return False
            raise
        return True

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()


class _CappedPool:
    """Wraps an httpcore2 connection pool: each response stream is capped and clocked."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def handle_request(self, request: Any) -> Any:
        clock = _CLOCK.get()
        response = self._inner.handle_request(request)
        if clock is not None:
            clock.status = response.status
            response.stream = _CappedStream(response.stream, clock)
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __enter__(self) -> _CappedPool:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._inner.__exit__(*exc_info)


class _AsyncCappedStream:
    """The async counterpart of :class:`_CappedStream`: at most ``cap`` bytes passed on,
    then the cut trailer; every read is awaited within the request's clock (a timeout while
    draining the oversized rest ends the drain, as for the sync pool)."""

    def __init__(self, inner: Any, clock: _Clock) -> None:
        self._inner = inner
        self._clock = clock

    async def _next(self, iterator: Any) -> bytes:
        import asyncio

        try:
            chunk: bytes = await asyncio.wait_for(iterator.__anext__(), max(self._clock.left(), 0))
        except asyncio.TimeoutError:
            raise httpcore2.ReadTimeout(self._clock.describe()) from None
        return chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        meter = _Meter(self._clock)
        iterator = self._inner.__aiter__()
        while True:
            try:
                chunk = await self._next(iterator)
            except StopAsyncIteration:
                return
            passed, over = meter.take(chunk)
            if passed:
                yield passed
            if over:
                yield meter.marker(await self._drain(iterator, meter))
                return

    async def _drain(self, iterator: Any, meter: _Meter) -> bool:
        while True:
            try:
                chunk = await self._next(iterator)
            except StopAsyncIteration:
                return True
            except Exception as exc:  # the clock ran out or the connection broke
                if meter.ended_by_time(exc):
                    return False
                raise
            if not meter.count(chunk):
                return False

    async def aclose(self) -> None:
        close = getattr(self._inner, "aclose", None)
        if close is not None:
            await close()


class _AsyncCappedPool:
    """Wraps an httpcore2 async connection pool: each response stream is capped and clocked
    (the clock is the one the async bounded transport set for the request's task)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def handle_async_request(self, request: Any) -> Any:
        clock = _CLOCK.get()
        response = await self._inner.handle_async_request(request)
        if clock is not None:
            clock.status = response.status
            clock.self_timed = True
            response.stream = _AsyncCappedStream(response.stream, clock)
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def __aenter__(self) -> _AsyncCappedPool:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._inner.__aexit__(*exc_info)


def install_async(transport: Any) -> Any:
    """Give an httpx2 ``AsyncHTTPTransport`` the capped pool (idempotent); returns it. Other
    transports (mock, ASGI) are left as they are. Below vcrpy's patch point, like the sync
    pool, so a cassette records the cut body, not the whole of it."""
    pool = getattr(transport, "_pool", None)
    if pool is not None and not isinstance(pool, _AsyncCappedPool):
        transport._pool = _AsyncCappedPool(pool)
    return transport


def install(transport: Any) -> Any:
    """Give an httpx2 ``HTTPTransport`` the bounded backend and the capped pool (idempotent);
    returns it. Other transports (mock, WSGI) are left as they are."""
    pool = getattr(transport, "_pool", None)
    if pool is None or isinstance(pool, _CappedPool):
        return transport
    backend = getattr(pool, "_network_backend", None)
    if backend is not None and not isinstance(backend, BoundedBackend):
        pool._network_backend = BoundedBackend(backend)
    transport._pool = _CappedPool(pool)
    return transport


# --------------------------------------------------------------------------- transport


class _ClockedBody(httpx2.SyncByteStream):
    """The response body as the client reads it: each chunk pulled under the request's clock."""

    def __init__(self, inner: Any, clock: _Clock, request: Any) -> None:
        self._inner = inner
        self._clock = clock
        self._request = request

    def __iter__(self) -> Iterator[bytes]:
        iterator = iter(self._inner)
        while True:
            with _running(self._clock):
                try:
                    chunk = next(iterator)
                except StopIteration:
                    return
                except Exception as exc:
                    raise _explained(exc, self._clock, self._request) from exc
            yield chunk

    def close(self) -> None:
        self._inner.close()


def _explained(exc: Exception, clock: _Clock, request: Any) -> Exception:
    """A timeout of a request whose clock ran out, reworded to name the limit; others as is."""
    if not isinstance(exc, httpx2.TimeoutException) or str(exc).startswith(_PREFIX):
        return exc
    if not clock.expired:
        return exc  # the SDK's own per-read timeout, within the clock: its message is right
    return type(exc)(clock.describe(), request=request)


class BoundedTransport(httpx2.BaseTransport):
    """An httpx2 transport that bounds each request by ``limits`` (see the module docstring).

    ``limits`` may be replaced per request through the request extension ``imagegen_limits``
    (a :class:`Limits`), and a connect guard given through ``imagegen_connect_guard``.
    """

    def __init__(self, inner: Any, limits: Limits) -> None:
        install(inner)
        self._inner = inner
        self.limits = limits

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        limits = request.extensions.get(EXTENSION) or self.limits
        clock = limits.start(request)
        # Socket operations are clamped by the backend; waiting for a free pooled connection
        # happens above it, so its timeout is clamped here.
        timeouts = dict(request.extensions.get("timeout") or {})
        given = timeouts.get("pool")
        left = max(_MIN_OP_S, clock.left())
        timeouts["pool"] = left if given is None else min(given, left)
        request.extensions["timeout"] = timeouts
        guard = request.extensions.get("imagegen_connect_guard")
        token = _GUARD.set(guard)
        try:
            with _running(clock):
                try:
                    if clock.expired:
                        raise httpx2.ConnectTimeout(clock.describe(), request=request)
                    response: httpx2.Response = self._inner.handle_request(request)
                except Exception as exc:
                    raise _explained(exc, clock, request) from exc
        finally:
            _GUARD.reset(token)
        response.stream = _ClockedBody(response.stream, clock, request)
        return response

    def close(self) -> None:
        self._inner.close()

    def __enter__(self) -> BoundedTransport:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._inner.__exit__(*exc_info)


def bounded_transport(limits: Limits, inner: Any = None) -> BoundedTransport:
    """A :class:`BoundedTransport` over ``inner`` (default: a new ``httpx2.HTTPTransport``,
    or the one a caller shares between clients)."""
    return BoundedTransport(inner if inner is not None else httpx2.HTTPTransport(), limits)


def bounded_client(limits: Limits, *, transport: Any = None, **kwargs: Any) -> httpx2.Client:
    """An ``openai.DefaultHttpxClient`` whose requests are bounded by ``limits``.

    ``transport`` is the inner transport (e.g. one shared per endpoint); keyword arguments
    go to the client (``event_hooks``, ...).
    """
    import openai

    client: httpx2.Client = openai.DefaultHttpxClient(
        transport=bounded_transport(limits, transport), **kwargs
    )
    return client


# --------------------------------------------------------------------------- legal sizes

#: Room above the largest legal answer before a body counts as oversized (JSON envelope,
#: revised prompts, usage, a relay's extra fields).
RESPONSE_SLACK_BYTES = 4 * 1024 * 1024


def largest_image_bytes(profile: Any) -> int:
    """An upper bound of one image file of ``profile``: its largest size as uncompressed
    RGBA plus PNG overhead (a real PNG, JPEG or WebP of that size is smaller)."""
    from pytest_imagegen.profiles import parse_size

    pixels = 0
    for size in getattr(profile, "sizes", ()):
        parsed = parse_size(size)
        if parsed is not None:
            pixels = max(pixels, parsed[0] * parsed[1])
    rule = getattr(profile, "size_rule", None)
    if rule is not None:
        pixels = max(pixels, int(rule.max_long_edge) * int(rule.max_short_edge))
    if not pixels:
        pixels = 4096 * 4096  # a profile that lists no concrete size: assume up to 4K
    raw = pixels * 4
    return raw + raw // 100 + 64 * 1024


def response_cap(profile: Any, n: int = 1) -> int:
    """The default body cap of an Images API answer with ``n`` images of ``profile``: the
    images base64-encoded at their largest, plus :data:`RESPONSE_SLACK_BYTES`."""
    n = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    n = min(n, max(1, int(getattr(profile, "n_max", 1) or 1)))
    return n * (largest_image_bytes(profile) * 4 // 3 + 4) + RESPONSE_SLACK_BYTES


def requested_n(request: Any) -> int:
    """The ``n`` of a JSON request body (1 when absent or unreadable)."""
    try:
        body = json.loads(request.content) if request is not None else None
    except Exception:  # a streamed, multipart or non-JSON body
        return 1
    n = body.get("n") if isinstance(body, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
