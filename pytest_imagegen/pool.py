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

Closing a per-test client leaves the pool open; :meth:`ConnectionPools.close` closes all
of them (the plugin does at the end of the session).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import httpx2

if TYPE_CHECKING:
    from pytest_imagegen.config import Endpoint

__all__ = ["ConnectionPools", "SharedTransport", "preload"]


def preload() -> None:
    """Import what the first client of a run needs (the SDK, the cassette layer) now.

    The plugin calls it before the first test of a run that has imagegen tests: importing
    the SDK takes most of a second, and inside the first test's setup it was counted (and
    shown by ``--durations``) as that test's cost.
    """
    import openai  # noqa: F401

    import pytest_imagegen.bounds
    import pytest_imagegen.cassettes  # noqa: F401


class SharedTransport(httpx2.BaseTransport):
    """A per-test client's transport: sends through a session's pool, never closes it."""

    def __init__(self, pool: httpx2.HTTPTransport) -> None:
        self.pool = pool

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        return self.pool.handle_request(request)

    def close(self) -> None:
        """Nothing to do: the pool belongs to the session."""


class ConnectionPools:
    """The session's pools, one per endpoint (by name and base URL), made on first use."""

    def __init__(self) -> None:
        self._pools: dict[tuple[str, str], httpx2.HTTPTransport] = {}
        self._lock = threading.Lock()
        self.closed = False

    def __len__(self) -> int:
        return len(self._pools)

    def pool(self, endpoint: Endpoint) -> httpx2.HTTPTransport:
        """The pool of ``endpoint``: an ``httpx2.HTTPTransport`` with the SDK's connection
        limits and the bounded network backend (:func:`pytest_imagegen.bounds.install`)."""
        key = (endpoint.name, endpoint.base_url)
        with self._lock:
            if self.closed:
                raise RuntimeError("the connection pools of this session are closed")
            pool = self._pools.get(key)
            if pool is None:
                from openai import DEFAULT_CONNECTION_LIMITS

                from pytest_imagegen.bounds import install

                pool = self._pools[key] = install(
                    httpx2.HTTPTransport(limits=DEFAULT_CONNECTION_LIMITS)
                )
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
