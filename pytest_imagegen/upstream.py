"""Upstream mode: what a gateway's upstream (a reference server) received for each client request.

:class:`UpstreamTap` pairs every request a check sends to the gateway with the requests the
upstream received while it was in flight (the gateway checks run one request at a time, so
the upstream's log between "sent" and "answered" belongs to it). Each upstream request
becomes an :class:`UpstreamRequest`: plain, scrubbed data (no key, only whose key it was),
so the exchanges of a test are stored next to its cassette
(:func:`upstream_log_path`) and read back on replay, when neither the gateway nor the
upstream need to run.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pytest_imagegen.config import Endpoint
    from pytest_imagegen.reference.log import LoggedRequest

__all__ = [
    "UPSTREAM_LOG_SUFFIX",
    "Exchange",
    "UpstreamRequest",
    "UpstreamTap",
    "Upstreams",
    "open_upstream",
    "read_upstream_log",
    "replays_upstream",
    "upstream_log_path",
    "upstream_side",
    "write_upstream_log",
]

#: The file next to a cassette that holds what the upstream received (``<cassette>`` minus
#: its suffix, plus this).
UPSTREAM_LOG_SUFFIX = ".upstream.json"
_FORMAT = 1
# How long the tap waits for the upstream to finish the requests of one exchange once the
# gateway has answered (a gateway answers just before the upstream's handler returns).
_SETTLE_S = 5.0
# Text that may be a credential: runs of key characters, split two ways (keys sit inside
# messages followed by punctuation, or whole in a header value).
_TOKEN_RES = (re.compile(r"[A-Za-z0-9_-]{8,512}"), re.compile(r"[A-Za-z0-9._~+/=:-]{8,512}"))


class _Upstream(Protocol):
    """What the tap needs of a server: ReferenceServer and RemoteReference both have it."""

    @property
    def log(self) -> Any: ...

    def wait_idle(self, since: int = 0, timeout_s: float = 5.0) -> list[LoggedRequest]: ...


@dataclass(frozen=True)
class UpstreamRequest:
    """One request the upstream received on behalf of a client request.

    Times are seconds after the client sent its request. ``key`` says whose credential it
    carried: ``upstream`` (the gateway's upstream key), ``client`` (the client's own key:
    forwarded), ``other`` or ``none``. ``error`` holds the ``type``, ``code`` and ``param``
    the upstream answered with, ``retry_after`` its Retry-After header.
    """

    method: str
    path: str
    model: str | None
    body: Any
    started_s: float
    finished_s: float | None
    status: int | None
    fault: str | None = None
    retry_after: str | None = None
    error: Mapping[str, Any] | None = None
    key: str = "none"

    @property
    def route(self) -> str:
        """``images``, ``chat`` or the path, for messages."""
        if self.path.rstrip("/").endswith("/images/generations"):
            return "images"
        if self.path.rstrip("/").endswith("/chat/completions"):
            return "chat"
        return self.path

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> UpstreamRequest:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Exchange:
    """One client request and what its upstream received."""

    upstream: tuple[UpstreamRequest, ...] = ()
    upstream_key_returned: bool = False  # the client's answer carried the upstream's key

    @property
    def attempts(self) -> int:
        return len(self.upstream)

    @property
    def upstream_time_s(self) -> float:
        """From the first upstream request's start to the last one's end."""
        if not self.upstream:
            return 0.0
        ends = [u.finished_s if u.finished_s is not None else u.started_s for u in self.upstream]
        return max(ends) - min(u.started_s for u in self.upstream)

    def to_dict(self) -> dict[str, Any]:
        return {
            "upstream": [u.to_dict() for u in self.upstream],
            "upstream_key_returned": self.upstream_key_returned,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Exchange:
        return cls(
            tuple(UpstreamRequest.from_dict(u) for u in data.get("upstream") or ()),
            bool(data.get("upstream_key_returned")),
        )


@dataclass
class _Mark:
    index: int
    sent: float


def _digest(secret: str) -> str:
    from pytest_imagegen.reference.log import key_digest

    return key_digest(secret)


def _tokens(text: str) -> set[str]:
    found: set[str] = set()
    for pattern in _TOKEN_RES:
        found.update(pattern.findall(text))
    return found


def _scrub_body(body: Any, secrets: Sequence[str]) -> Any:
    """The body as stored: secrets replaced, base64 images cut to a marker."""
    if isinstance(body, dict):
        return {k: _scrub_body(v, secrets) for k, v in body.items()}
    if isinstance(body, list):
        return [_scrub_body(v, secrets) for v in body]
    if isinstance(body, str):
        for secret in secrets:
            if secret:
                body = body.replace(secret, "<secret>")
        return body
    return body


@dataclass
class UpstreamTap:
    """Pairs each client request with the upstream requests made for it.

    Live: ``server`` is the upstream (a ``ReferenceServer`` or ``RemoteReference``).
    Replay: ``recorded`` holds the exchanges of the test's recording, handed out in order.
    ``exchanges`` collects every exchange of this test (what :func:`write_upstream_log` stores).
    """

    endpoint: Endpoint
    server: _Upstream | None = None
    recorded: list[Exchange] | None = None
    exchanges: list[Exchange] = field(default_factory=list)

    @property
    def replaying(self) -> bool:
        return self.recorded is not None

    def begin(self) -> _Mark:
        index = 0 if self.server is None or self.replaying else len(self.server.log)
        return _Mark(index, time.time())

    def end(self, mark: _Mark, *, headers: Mapping[str, str], content: bytes) -> Exchange:
        """The exchange of the client request begun at ``mark``, given what came back."""
        if self.recorded is not None:
            position = len(self.exchanges)
            exchange = self.recorded[position] if position < len(self.recorded) else Exchange()
        else:
            assert self.server is not None
            logged = self.server.wait_idle(mark.index, _SETTLE_S)
            exchange = self._exchange(mark, logged, headers, content)
        self.exchanges.append(exchange)
        return exchange

    # ------------------------------------------------------------------ live

    def _client_digests(self) -> set[str]:
        values = [self.endpoint.api_key, *self.endpoint.headers.values()]
        return {_digest(v) for v in values if v}

    def _exchange(
        self,
        mark: _Mark,
        logged: Iterable[LoggedRequest],
        headers: Mapping[str, str],
        content: bytes,
    ) -> Exchange:
        upstream = self.endpoint.upstream
        upstream_key = upstream.api_key if upstream is not None else ""
        client = self._client_digests()
        known_upstream = {_digest(upstream_key)} if upstream_key else set()
        seen: set[str] = set()
        requests = []
        for item in logged:
            digests = set(item.key_digests)
            if digests & client:
                key = "client"
            elif not digests:
                key = "none"
            elif known_upstream and digests & known_upstream:
                key = "upstream"
            else:
                key = "other" if known_upstream else "upstream"
            seen |= digests - client
            requests.append(
                UpstreamRequest(
                    method=item.method,
                    path=item.path,
                    model=item.model,
                    body=_scrub_body(item.body, self.endpoint.secrets),
                    started_s=round(item.time - mark.sent, 4),
                    finished_s=(
                        round(item.finished - mark.sent, 4) if item.finished is not None else None
                    ),
                    status=item.status,
                    fault=item.fault,
                    retry_after=item.retry_after,
                    error=dict(item.error) if item.error is not None else None,
                    key=key,
                )
            )
        # Did the answer carry a credential the upstream was given (not the client's own)?
        keys = (seen | known_upstream) - client
        text = " ".join(f"{k}: {v}" for k, v in headers.items())
        text += " " + content[:1_000_000].decode("utf-8", "replace")
        returned = bool(upstream_key and upstream_key in text) or any(
            _digest(token) in keys for token in _tokens(text)
        )
        return Exchange(tuple(requests), returned)


# ---------------------------------------------------------------------- storage


def upstream_log_path(cassette: Path) -> Path:
    """Where the upstream log of the test recorded in ``cassette`` lives."""
    return cassette.with_name(cassette.stem + UPSTREAM_LOG_SUFFIX)


def write_upstream_log(path: Path, exchanges: Sequence[Exchange]) -> None:
    """Store the exchanges of a test (already scrubbed: no key is ever in them)."""
    from pytest_imagegen._files import atomic_write

    doc = {"format": _FORMAT, "exchanges": [e.to_dict() for e in exchanges]}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(doc, indent=1, sort_keys=True).encode("utf-8") + b"\n")


def read_upstream_log(path: Path) -> list[Exchange] | None:
    """The stored exchanges, or None when there is no file; CassetteError when unreadable."""
    from pytest_imagegen.errors import CassetteError

    try:
        doc = json.loads(path.read_bytes())
        if doc.get("format") != _FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {_FORMAT}")
        return [Exchange.from_dict(e) for e in doc["exchanges"]]
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CassetteError(
            f"{path}: the upstream log next to the cassette is unreadable ({exc}); delete it "
            "and the cassette, and record again with --imagegen-record-mode=once"
        ) from None


# ---------------------------------------------------------------------- the run's upstreams


class Upstreams:
    """The upstream servers of a run's gateway endpoints, each started (or, for a ``url``
    upstream, reached) on first use and stopped by :meth:`stop`.

    A ``listen`` upstream is a :class:`~pytest_imagegen.reference.ReferenceServer` on that
    fixed address, accepting the upstream key (any key without one); a ``url`` upstream is a
    :class:`~pytest_imagegen.reference.RemoteReference` driven with the admin key.
    """

    def __init__(self) -> None:
        self._handles: dict[str, Any] = {}

    def get(self, endpoint: Endpoint) -> Any:
        """The upstream of ``endpoint`` (ConfigError saying what to do when it cannot be had)."""
        handle = self._handles.get(endpoint.name)
        if handle is None:
            handle = self._handles[endpoint.name] = open_upstream(endpoint)
        return handle

    def stop(self) -> None:
        handles, self._handles = self._handles, {}
        for handle in handles.values():
            handle.stop()


def open_upstream(endpoint: Endpoint) -> Any:
    """Start (listen) or reach (url) the upstream of ``endpoint``."""
    from pytest_imagegen.errors import ConfigError
    from pytest_imagegen.reference import ReferenceServer
    from pytest_imagegen.reference.remote import RemoteReference, RemoteReferenceError

    upstream = endpoint.upstream
    if upstream is None:
        raise ValueError(f"endpoint {endpoint.name!r} has no upstream")
    if upstream.listen is not None:
        host, port = upstream.listen
        server = ReferenceServer(
            host=host,
            port=port,
            api_keys=[upstream.api_key] if upstream.api_key else None,
            accept_any_key=not upstream.api_key,
        )
        try:
            return server.start()
        except OSError as exc:
            raise ConfigError(
                f"endpoint {endpoint.name!r}: cannot start the upstream reference server on "
                f"{host}:{port} ({exc.strerror or exc}). Another process holds the port: stop "
                "it or change upstream.listen (and your gateway's upstream URL). Under "
                "pytest-xdist every worker would need the port: run gateway endpoints with "
                "-n 0."
            ) from None
    remote = RemoteReference(upstream.url or "", upstream.admin_key, api_key=upstream.api_key)
    try:
        return remote.start()
    except (RemoteReferenceError, ValueError) as exc:
        raise ConfigError(f"endpoint {endpoint.name!r}: upstream: {exc}") from None


def replays_upstream(cassette_path: Path, *, policy: str) -> bool:
    """Whether a test's upstream side is read from its recording rather than observed: the
    cassette is replayed (or, for a loopback gateway, replayable) and the log is there."""
    if policy == "live":
        return False
    return cassette_path.exists() and upstream_log_path(cassette_path).exists()


def upstream_side(
    endpoint: Endpoint,
    stack: ExitStack,
    *,
    cassette: Any,
    upstreams: Callable[[], Upstreams],
) -> tuple[Any, UpstreamTap]:
    """The upstream handle (None on replay) and the tap for one test of a gateway endpoint.

    ``cassette`` is the test's :class:`~pytest_imagegen.cassettes.CassetteUse` (None for a
    test without one). On replay the tap hands out the exchanges stored next to the
    cassette; live, the upstream is reset before and after the test, and when the cassette
    is being recorded the exchanges are stored next to it when the test ends.
    """
    path: Path | None = cassette.session.path if cassette is not None else None
    if path is not None and replays_upstream(path, policy=cassette.policy):
        recorded = read_upstream_log(upstream_log_path(path)) or []
        return None, UpstreamTap(endpoint, recorded=recorded)
    handle = upstreams().get(endpoint)
    handle.reset()
    tap = UpstreamTap(endpoint, server=handle)
    recording = cassette is not None and cassette.session.mode != "none"

    def finish() -> None:
        handle.reset()  # stalled requests released, faults cleared
        if recording and path is not None and tap.exchanges:
            write_upstream_log(upstream_log_path(path), tap.exchanges)

    stack.callback(finish)
    return handle, tap
