"""The reference server's request log, with secrets masked before anything is stored."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, overload

from pytest_imagegen import redact as _redact

# One policy for what is secret (pytest_imagegen.redact): a header outside the allowlist is
# masked in the log whatever its name; keys are masked as OpenAI masks them.
mask_key = _redact.mask_key


def key_digest(secret: str) -> str:
    """A short one-way fingerprint of a credential: tells two keys apart without holding one.

    The upstream-mode checks compare the fingerprints of what a gateway sent upstream with
    those of the client's key and the gateway's upstream key.
    """
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def credential_of(value: str) -> str:
    """The secret part of a credential header value (``Bearer X`` -> ``X``)."""
    scheme, sep, credentials = value.partition(" ")
    if sep and scheme.lower() in ("bearer", "basic", "token"):
        return credentials.strip()
    return value.strip()


def mask_header(name: str, value: str) -> str:
    """The value to log for header ``name``: authorization schemes are kept, secrets masked."""
    return _redact.mask_header_value(value)


def is_secret_header(name: str, extra: Iterable[str] = ()) -> bool:
    """Whether header ``name`` carries a secret: outside the redaction allowlist, or named in
    ``extra`` (the server's ``secret_headers``)."""
    return not _redact.keeps_header(name) or name.lower() in {e.lower() for e in extra}


@dataclass
class LoggedRequest:
    """One request the reference server received.

    ``headers`` has lower-case names and secret values masked; ``body`` is the parsed JSON
    (None when absent or not JSON); ``auth`` is ``ok``, ``invalid`` or ``missing``;
    ``status`` is the status answered (None while in flight or when no response was sent);
    ``fault`` names the scripted fault or defect-driven behaviour applied, if any.
    ``key_digests`` are :func:`key_digest` fingerprints of every credential the request
    carried (never the credentials); ``finished`` is when the server was done with it;
    ``retry_after`` and ``error`` (``type``, ``code``, ``param``) are what an error answer
    carried.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: Any
    time: float
    model: str | None = None
    auth: str = "missing"
    body_bytes: int = 0
    status: int | None = None
    fault: str | None = None
    query: str = ""
    key_digests: tuple[str, ...] = ()
    finished: float | None = None
    retry_after: str | None = None
    error: Mapping[str, Any] | None = None
    # The OpenAI path this request stands for ("/v1/images/generations" for Azure's
    # "/openai/deployments/d/images/generations"), and the Azure deployment it named.
    route: str = ""
    deployment: str | None = None
    _done: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    @property
    def done(self) -> bool:
        """Whether the server has finished with this request (answered or dropped it)."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has finished with this request; False on timeout."""
        return self._done.wait(timeout)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-friendly when the body is), for reports and assertions."""
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": dict(self.headers),
            "body": self.body,
            "body_bytes": self.body_bytes,
            "time": self.time,
            "model": self.model,
            "auth": self.auth,
            "status": self.status,
            "fault": self.fault,
            "key_digests": list(self.key_digests),
            "finished": self.finished,
            "retry_after": self.retry_after,
            "error": dict(self.error) if self.error is not None else None,
            "route": self.route,
            "deployment": self.deployment,
            "done": self.done,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoggedRequest:
        """The request back from :meth:`to_dict` (the control API's log answers)."""
        error = data.get("error")
        item = cls(
            method=str(data.get("method", "")),
            path=str(data.get("path", "")),
            query=str(data.get("query") or ""),
            headers=dict(data.get("headers") or {}),
            body=data.get("body"),
            body_bytes=int(data.get("body_bytes") or 0),
            time=float(data.get("time") or 0.0),
            model=data.get("model"),
            auth=str(data.get("auth") or "missing"),
            status=data.get("status"),
            fault=data.get("fault"),
            key_digests=tuple(data.get("key_digests") or ()),
            finished=data.get("finished"),
            retry_after=data.get("retry_after"),
            error=dict(error) if isinstance(error, Mapping) else None,
            route=str(data.get("route") or ""),
            deployment=data.get("deployment"),
        )
        if data.get("done"):
            item._done.set()
        return item


class RequestLog:
    """Every request the server received, oldest first; list-like and thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[LoggedRequest] = []

    def append(self, item: LoggedRequest) -> None:
        with self._lock:
            self._items.append(item)

    def clear(self) -> None:
        """Forget every logged request."""
        with self._lock:
            self._items.clear()

    def snapshot(self) -> list[LoggedRequest]:
        """A copy of the log as a plain list."""
        with self._lock:
            return list(self._items)

    def filter(self, *, method: str | None = None, path: str | None = None) -> list[LoggedRequest]:
        """The logged requests with this method and/or path (``path`` may omit ``/v1``)."""
        wanted = (
            None if path is None else {path, f"/v1{path}" if not path.startswith("/v1") else path}
        )
        return [
            r
            for r in self.snapshot()
            if (method is None or r.method == method.upper())
            and (wanted is None or r.path in wanted or r.route in wanted)
        ]

    @property
    def generations(self) -> list[LoggedRequest]:
        """The ``POST /v1/images/generations`` requests."""
        return self.filter(method="POST", path="/v1/images/generations")

    @property
    def edits(self) -> list[LoggedRequest]:
        """The ``POST /v1/images/edits`` requests (multipart bodies show fields and files)."""
        return self.filter(method="POST", path="/v1/images/edits")

    @property
    def variations(self) -> list[LoggedRequest]:
        """The ``POST /v1/images/variations`` requests."""
        return self.filter(method="POST", path="/v1/images/variations")

    @property
    def responses(self) -> list[LoggedRequest]:
        """The ``POST /v1/responses`` requests."""
        return self.filter(method="POST", path="/v1/responses")

    @property
    def last(self) -> LoggedRequest | None:
        """The most recent request, or None."""
        with self._lock:
            return self._items[-1] if self._items else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __iter__(self) -> Iterator[LoggedRequest]:
        return iter(self.snapshot())

    @overload
    def __getitem__(self, index: int) -> LoggedRequest: ...
    @overload
    def __getitem__(self, index: slice) -> list[LoggedRequest]: ...
    def __getitem__(self, index: int | slice) -> LoggedRequest | list[LoggedRequest]:
        with self._lock:
            return self._items[index]

    def __bool__(self) -> bool:
        return len(self) > 0

    def __repr__(self) -> str:
        return f"RequestLog({len(self)} requests)"
