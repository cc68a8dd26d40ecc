"""One connection pool per endpoint for a whole test session, shared by the per-test clients.

Every test gets its own ``openai.OpenAI`` (its own timeout, retries, event hooks, limits
and cassette), but building one also built an ``httpx2.HTTPTransport``, and with it an SSL
context that loads the system's CA certificates: tens of milliseconds per test, most of
the cost of a replayed test. Here each endpoint gets one session-wide transport (one SSL
context, one pool of keep-alive connections), and each test's client sends through a
:class:`SharedTransport` over it, under its own :class:`pytest_imagegen.bounds.BoundedTransport`.

What stays per test, because it travels with each request or lives in the per-test client:
the timeout (``request.extensions["timeout"]``), the total-time and body-size bounds (the
request's clock, see :mod:`pytest_imagegen.bounds`; the shared transport gets the bounded
network backend once), the SDK's retries, the event hooks (budget, latency, captured
requests), headers and cookies. Cassettes are not a property of a transport at all: vcrpy
replaces ``httpx2.HTTPTransport.handle_request`` on the class while a cassette is open, so
a request through the pool is answered by the cassette of the test that sends it, and by
none once that test's cassette has closed.

The pool itself (with its SSL context) is made when a request first reaches it
(:class:`DeferredTransport`): a replayed request is answered by vcrpy before it does, so a
run that only replays never builds one.

Closing a per-test client leaves the pool open; :meth:`ConnectionPools.close` closes all
of them (the plugin does at the end of the session).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx2

if TYPE_CHECKING:
    from pytest_imagegen.config import Endpoint

__all__ = ["ConnectionPools", "DeferredTransport", "SharedTransport", "preload"]


def preload() -> Callable[[], None]:
    """Import what the first client of a run needs (the SDK, the cassette layer) now, then
    leave what is loaded out of the garbage collector's full passes; returns the function
    that undoes the latter (call it at the end of the session).

    The plugin calls it before the first test of a run that has imagegen tests: importing
    the SDK takes most of a second, and inside the first test's setup it was counted (and
    shown by ``--durations``) as that test's cost. The SDK's types are tens of thousands of
    long-lived objects; each full collection walked all of them again (60 to 100 ms, a
    millisecond per test over a hundred replayed tests) to find nothing. ``gc.freeze``
    moves everything alive now out of the collector's reach (a collection right after the
    import finds a few dozen unreachable objects, so what it keeps is negligible); objects
    made afterwards, by the tests, are collected as before.
    """
    import gc

    import openai  # noqa: F401

    import pytest_imagegen.bounds
    import pytest_imagegen.cassettes  # noqa: F401

    gc.freeze()
    return gc.unfreeze


class DeferredTransport(httpx2.HTTPTransport):
    """An ``httpx2.HTTPTransport`` whose connection pool is made on first use.

    Making one loads the system's CA certificates into an SSL context (tens of
    milliseconds). vcrpy answers a replayed request in ``HTTPTransport.handle_request``
    before the pool is touched, so a replay never pays for it; a request that goes out
    makes it, once, with the bounded network backend
    (:func:`pytest_imagegen.bounds.install`).
    """

    def __init__(self, **options: Any) -> None:
        # HTTPTransport.__init__ is what builds the pool: it runs in _make() instead.
        self._options = options
        self._made: Any = None
        self._making = threading.Lock()

    def _make(self) -> Any:
        with self._making:
            if self._made is None:
                from pytest_imagegen.bounds import install

                self._made = install(httpx2.HTTPTransport(**self._options))._pool
            return self._made

    @property
    def _pool(self) -> Any:
        made = self._made
        return made if made is not None else self._make()

    @_pool.setter
    def _pool(self, value: Any) -> None:
        self._made = value

    @property
    def made(self) -> bool:
        """Whether the pool exists (a request reached it)."""
        return self._made is not None

    def close(self) -> None:
        if self._made is not None:
            self._made.close()


class SharedTransport(httpx2.BaseTransport):
    """A per-test client's transport: sends through a session's pool, never closes it."""

    def __init__(self, pool: httpx2.HTTPTransport) -> None:
        self.pool = pool  # vcrpy patches HTTPTransport.handle_request: keep it one

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        started = time.perf_counter()
        try:
            return self.pool.handle_request(request)
        except httpx2.TimeoutException as exc:
            # No answer to record: the cassette open now (if it records) keeps the timeout,
            # and a replay raises it at once instead of waiting it out again.
            from pytest_imagegen.cassettes import note_timeout

            note_timeout(request, exc, time.perf_counter() - started)
            raise

    def close(self) -> None:
        """Nothing to do: the pool belongs to the session."""


class ConnectionPools:
    """The session's pools, one per endpoint (by name and base URL), made on first use."""

    def __init__(self) -> None:
        self._pools: dict[tuple[str, str], DeferredTransport] = {}
        self._lock = threading.Lock()
        self.closed = False

    def __len__(self) -> int:
        return len(self._pools)

    def pool(self, endpoint: Endpoint) -> DeferredTransport:
        """The pool of ``endpoint``: an ``httpx2.HTTPTransport`` with the SDK's connection
        limits and the bounded network backend (:func:`pytest_imagegen.bounds.install`),
        made on its first request."""
        key = (endpoint.name, endpoint.base_url)
        with self._lock:
            if self.closed:
                raise RuntimeError("the connection pools of this session are closed")
            pool = self._pools.get(key)
            if pool is None:
                from openai import DEFAULT_CONNECTION_LIMITS

                pool = self._pools[key] = DeferredTransport(limits=DEFAULT_CONNECTION_LIMITS)
            return pool

    def transport(self, endpoint: Endpoint) -> SharedTransport:
        """A transport for one test's client that sends through ``endpoint``'s pool (give
        it to :func:`pytest_imagegen.bounds.bounded_client` as ``transport``)."""
        return SharedTransport(self.pool(endpoint))

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
            self.closed = True
        for pool in pools:
            pool.close()
