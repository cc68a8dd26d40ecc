"""``RemoteReference``: drive a reference server started elsewhere through its control API.

A server started with ``python -m pytest_imagegen serve --admin-key-env VAR`` (in a
container next to a gateway, say) is scripted with the same names as a local
:class:`~pytest_imagegen.reference.ReferenceServer`: ``faults.add(...)``, ``defects``,
``latency``, ``log``, ``reset()``, ``check()``. So a check written against the local server
runs unchanged against a remote one.

Only the standard library is used (``urllib``, no proxies): importing the reference package
stays cheap, and a control call never leaves for a proxy configured in the environment.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, overload
from urllib.parse import urlsplit

from pytest_imagegen.reference.faults import DefectSet, Fault, check_defect
from pytest_imagegen.reference.log import LoggedRequest
from pytest_imagegen.reference.server import ReferenceServerError

__all__ = ["RemoteReference", "RemoteReferenceError", "root_url"]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class RemoteReferenceError(RuntimeError):
    """The control API could not be reached, refused the admin key, or refused a call."""


def root_url(url: str) -> str:
    """``http://host:port`` of a server given by its base URL (``.../v1``) or its root."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http(s) URL such as http://127.0.0.1:8000/v1")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{parts.scheme}://{parts.netloc}{path}"


class _Client:
    def __init__(self, root: str, admin_key: str, timeout_s: float) -> None:
        self.root = root
        self._admin_key = admin_key
        self.timeout_s = timeout_s

    def call(self, method: str, what: str, payload: Any = None, query: str = "") -> Any:
        url = f"{self.root}/_admin/{what}" + (f"?{query}" if query else "")
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self._admin_key}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with _OPENER.open(request, timeout=self.timeout_s) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            message = _message(exc)
            if exc.code == 401:
                raise RemoteReferenceError(
                    f"the reference server at {self.root} refused the admin key: check that "
                    "the variable named by admin_key_env holds the key the server was started "
                    "with (serve --admin-key-env VAR)"
                ) from None
            if exc.code == 404 and what == "state":
                raise RemoteReferenceError(
                    f"{self.root} has no control API: start the reference server with "
                    "`python -m pytest_imagegen serve --admin-key-env VAR` (VAR holding the "
                    "admin key), or check the URL"
                ) from None
            raise RemoteReferenceError(
                f"the reference server at {self.root} refused {method} /_admin/{what}: "
                f"HTTP {exc.code} {message}"
            ) from None
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RemoteReferenceError(
                f"cannot reach the reference server's control API at {self.root} ({reason}); "
                "is `python -m pytest_imagegen serve --admin-key-env VAR` running there?"
            ) from None


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        doc = json.loads(exc.read() or b"{}")
        return str(doc["error"]["message"])
    except Exception:  # any other body: the status says enough
        return ""


def _fault(data: Mapping[str, Any]) -> Fault:
    fault = Fault(
        str(data["name"]),
        data.get("times"),
        data.get("model"),
        data.get("quality"),
        data.get("prompt"),
        dict(data.get("options") or {}),
    )
    fault.hits = int(data.get("hits") or 0)
    return fault


class RemoteFaults:
    """``server.faults`` of a remote server: ``add`` queues there, ``clear`` clears there."""

    def __init__(self, client: _Client) -> None:
        self._client = client

    def add(
        self,
        name: str,
        *,
        times: int | None = 1,
        model: str | None = None,
        quality: str | None = None,
        prompt: str | None = None,
        **options: Any,
    ) -> Fault:
        """Queue fault ``name`` on the remote server (same arguments as ``FaultScript.add``)."""
        try:
            answer = self._client.call(
                "POST",
                "faults",
                {
                    "name": name,
                    "times": times,
                    "model": model,
                    "quality": quality,
                    "prompt": prompt,
                    "options": options,
                },
            )
        except RemoteReferenceError as exc:
            if "HTTP 400" in str(exc):  # the server's own message: unknown fault, bad option
                raise ValueError(str(exc).split("HTTP 400 ", 1)[-1]) from None
            raise
        return _fault(answer["fault"])

    def clear(self) -> None:
        self._client.call("DELETE", "faults")

    @property
    def pending(self) -> list[Fault]:
        return [_fault(f) for f in self._client.call("GET", "state")["faults"]]

    def __iter__(self) -> Iterator[Fault]:
        return iter([_fault(f) for f in self._client.call("GET", "faults")["faults"]])

    def __len__(self) -> int:
        return len(self._client.call("GET", "faults")["faults"])


class RemoteDefects:
    """``server.defects`` of a remote server: a set whose changes are sent at once."""

    def __init__(self, client: _Client) -> None:
        self._client = client

    def _get(self) -> set[str]:
        return set(self._client.call("GET", "state")["defects"])

    def _put(self, names: Iterable[str]) -> None:
        self._client.call("PUT", "defects", {"defects": sorted(set(names))})

    def add(self, name: str) -> None:
        self._put(self._get() | {check_defect(name)})

    def update(self, *others: Iterable[str]) -> None:
        names = DefectSet(n for names in others for n in names)
        self._put(self._get() | names)

    def discard(self, name: str) -> None:
        self._put(self._get() - {name})

    def clear(self) -> None:
        self._put(())

    def __contains__(self, name: object) -> bool:
        return name in self._get()

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._get()))

    def __len__(self) -> int:
        return len(self._get())

    def __bool__(self) -> bool:
        return len(self) > 0


class RemoteLog:
    """``server.log`` of a remote server: every read fetches the log over the control API."""

    def __init__(self, client: _Client) -> None:
        self._client = client

    def snapshot(self, since: int = 0) -> list[LoggedRequest]:
        """The logged requests from index ``since`` on, oldest first."""
        answer = self._client.call("GET", "log", query=f"since={max(0, int(since))}")
        return [LoggedRequest.from_dict(r) for r in answer["requests"]]

    def clear(self) -> None:
        self._client.call("DELETE", "log")

    def filter(self, *, method: str | None = None, path: str | None = None) -> list[LoggedRequest]:
        wanted = (
            None if path is None else {path, f"/v1{path}" if not path.startswith("/v1") else path}
        )
        return [
            r
            for r in self.snapshot()
            if (method is None or r.method == method.upper())
            and (wanted is None or r.path in wanted)
        ]

    @property
    def generations(self) -> list[LoggedRequest]:
        return self.filter(method="POST", path="/v1/images/generations")

    @property
    def last(self) -> LoggedRequest | None:
        items = self.snapshot()
        return items[-1] if items else None

    def __len__(self) -> int:
        return int(self._client.call("GET", "state")["log_size"])

    def __iter__(self) -> Iterator[LoggedRequest]:
        return iter(self.snapshot())

    @overload
    def __getitem__(self, index: int) -> LoggedRequest: ...
    @overload
    def __getitem__(self, index: slice) -> list[LoggedRequest]: ...
    def __getitem__(self, index: int | slice) -> LoggedRequest | list[LoggedRequest]:
        return self.snapshot()[index]

    def __bool__(self) -> bool:
        return len(self) > 0


class RemoteReference:
    """A reference server reached through its control API, scripted like a local one.

    ``url`` is the server's base URL (``http://ref:8000/v1``) or root; ``admin_key`` the key
    it was started with (``--admin-key-env``); ``api_key`` the key clients give it, when
    known. ``start()`` checks that the control API answers (it starts nothing); ``stop()``
    does nothing: the server belongs to whoever started it.
    """

    def __init__(
        self,
        url: str,
        admin_key: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if not admin_key:
            raise ValueError("admin_key must be the key the server was started with")
        self.url = root_url(url)
        self.api_key = api_key or ""
        self._client = _Client(self.url, admin_key, timeout_s)
        self.faults = RemoteFaults(self._client)
        self.defects = RemoteDefects(self._client)
        self.log = RemoteLog(self._client)
        self._running = False

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def running(self) -> bool:
        """Whether :meth:`start` reached the control API."""
        return self._running

    def start(self) -> RemoteReference:
        """Check the control API answers this admin key (RemoteReferenceError otherwise)."""
        self._client.call("GET", "state")
        self._running = True
        return self

    def stop(self) -> None:
        self._running = False

    def __enter__(self) -> RemoteReference:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def latency(self) -> Mapping[str, float]:
        return dict(self._client.call("GET", "state")["latency"])

    @latency.setter
    def latency(self, value: float | str | Mapping[str, float]) -> None:
        from pytest_imagegen.reference.server import parse_latency

        self._client.call("PUT", "latency", {"latency": parse_latency(value)})

    @property
    def errors(self) -> list[str]:
        """The server's own errors (bugs), as text."""
        return list(self._client.call("GET", "state")["errors"])

    def reset(self) -> None:
        """Back to the server's start-up state: no faults, empty log, initial defects."""
        self._client.call("POST", "reset")

    def check(self) -> None:
        """Raise ReferenceServerError for the first error the remote server hit, if any."""
        errors = self.errors
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise ReferenceServerError(
                f"the reference server at {self.url} failed while handling a request{more}: "
                f"{errors[0]}. This is a bug in pytest-imagegen's reference server."
            )

    def wait_idle(self, since: int = 0, timeout_s: float = 5.0) -> list[LoggedRequest]:
        """The log from ``since`` on, once every one of those requests is finished (or after
        ``timeout_s``, with the unfinished ones as they are)."""
        deadline = time.monotonic() + timeout_s
        while True:
            items = self.log.snapshot(since)
            if all(r.done for r in items) or time.monotonic() >= deadline:
                return items
            time.sleep(0.05)

    def __repr__(self) -> str:
        return f"<RemoteReference {self.base_url}>"
