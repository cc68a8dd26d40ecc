"""What a test's SDK clients sent and got back, scrubbed: the ``imagegen_requests`` fixture.

A :class:`Traffic` hands out httpx2 ``event_hooks`` (sync and async). The request hook
notes the method, path, query, headers and JSON body; the response hook notes the status
and headers and tees the body as the client reads it, so a streamed answer still streams
(and a replayed one, already read by the cassette, is taken as it is). Every value goes
through the cassettes' redaction policy (:class:`pytest_imagegen._scrub.Scrubber`): secret
headers and configured secrets never reach the record. Images are described, not kept:
each ``b64_json`` becomes ``{"image": {"format", "size", "bytes", "sha256"}}`` (the bytes
received: a replay gets the cassette's small stand-in of the same format and size).

It sees the hooks' clients only, whatever the endpoint and whether the cassette replays or
the request goes live: ``imagegen_client`` and ``imagegen_async_client`` carry them; attach
:meth:`Traffic.event_hooks` / :meth:`Traffic.async_event_hooks` to a client of your own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, overload
from urllib.parse import urlsplit

import httpx2

if TYPE_CHECKING:
    from pytest_imagegen._scrub import Scrubber

#: Bytes of a response body kept for parsing; the rest is counted, not kept.
MAX_KEPT_BYTES = 64 * 1024 * 1024
#: Characters of a body that is neither JSON nor an event stream, kept as text.
MAX_TEXT_CHARS = 2000
_EXTENSION = "imagegen_traffic"


class Exchange:
    """One request a client sent, and what came back.

    ``headers`` / ``response_headers``: lower-case names, secret values replaced by the
    scrubbing placeholder. ``body``: the JSON request body (a multipart form as a summary of
    its fields; None when there was none). ``status`` is None until the response arrives
    (and stays None when none did: a timeout, a refused connection). ``response``: the
    parsed JSON body, a server-sent event stream as ``{"events": [{"event", "data"}]}``, or
    text; images as metadata. ``complete`` is False while the body is still being read, or
    when the client stopped reading it early.

    The hooks note what they see as it is; the scrubbed views (headers, bodies, image
    metadata) are made on first reading. Most tests never read them, and making them for
    every request was a noticeable part of a replayed test's cost.
    """

    def __init__(
        self,
        method: str,
        url: str,
        path: str,
        query: str,
        headers: dict[str, str] | Callable[[], dict[str, str]],
        body: Any = None,
        status: int | None = None,
        response_headers: dict[str, str] | Callable[[], dict[str, str]] | None = None,
        response: Any = None,
        response_bytes: int = 0,
        complete: bool = False,
    ) -> None:
        self.method = method
        self.url = url
        self.path = path
        self.query = query
        self._headers: Any = headers
        self._body: Any = body
        self.status = status
        self._response_headers: Any = {} if response_headers is None else response_headers
        self._response: Any = response
        self.response_bytes = response_bytes
        self.complete = complete

    # Views made on first reading: a callable stands for a value not made yet.

    @property
    def headers(self) -> dict[str, str]:
        if callable(self._headers):
            self._headers = self._headers()
        return self._headers  # type: ignore[no-any-return]

    @headers.setter
    def headers(self, value: dict[str, str]) -> None:
        self._headers = value

    @property
    def body(self) -> Any:
        if isinstance(self._body, _Pending):
            self._body = self._body.make()
        return self._body

    @body.setter
    def body(self, value: Any) -> None:
        self._body = value

    @property
    def response_headers(self) -> dict[str, str]:
        if callable(self._response_headers):
            self._response_headers = self._response_headers()
        return self._response_headers  # type: ignore[no-any-return]

    @response_headers.setter
    def response_headers(self, value: dict[str, str]) -> None:
        self._response_headers = value

    @property
    def response(self) -> Any:
        if isinstance(self._response, _Pending):
            self._response = self._response.make()
        return self._response

    @response.setter
    def response(self, value: Any) -> None:
        self._response = value

    @property
    def model(self) -> str | None:
        """The ``model`` the request carried (an Azure deployment name on Azure)."""
        model = self.body.get("model") if isinstance(self.body, dict) else None
        return model if isinstance(model, str) else None

    @property
    def images(self) -> list[dict[str, Any]]:
        """The metadata of every image in the response (events included), in order."""
        found: list[dict[str, Any]] = []
        _collect_images(self.response, found)
        return found

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-friendly data."""
        return {
            "method": self.method,
            "url": self.url,
            "path": self.path,
            "query": self.query,
            "headers": dict(self.headers),
            "body": self.body,
            "status": self.status,
            "response_headers": dict(self.response_headers),
            "response": self.response,
            "response_bytes": self.response_bytes,
            "complete": self.complete,
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Exchange):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        return (
            f"Exchange(method={self.method!r}, url={self.url!r}, status={self.status!r}, "
            f"response_bytes={self.response_bytes!r}, complete={self.complete!r})"
        )


class _Pending:
    """A view not made yet: ``make()`` makes it from what the hook noted."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


class Traffic:
    """The exchanges of the clients carrying this object's hooks, oldest first.

    List-like and thread-safe (``len``, iteration, indexing); ``filter(method=, path=)``,
    ``generations`` and ``last`` as on the reference server's log.
    """

    def __init__(self, scrubber: Scrubber | None = None) -> None:
        if scrubber is None:
            from pytest_imagegen._scrub import Scrubber

            scrubber = Scrubber.create()
        self._scrubber = scrubber
        self._lock = threading.Lock()
        self._items: list[Exchange] = []

    # -- hooks ----------------------------------------------------------------------------

    def event_hooks(self) -> dict[str, list[Callable[..., None]]]:
        """``event_hooks`` for an ``httpx2.Client`` (``openai.DefaultHttpxClient``)."""
        return {"request": [self._on_request], "response": [self._on_response]}

    def async_event_hooks(self) -> dict[str, list[Callable[..., Any]]]:
        """``event_hooks`` for an ``httpx2.AsyncClient`` (``openai.DefaultAsyncHttpxClient``)."""

        async def on_request(request: httpx2.Request) -> None:
            self._on_request(request)

        async def on_response(response: httpx2.Response) -> None:
            self._on_response(response)

        return {"request": [on_request], "response": [on_response]}

    def _on_request(self, request: httpx2.Request) -> None:
        scrub = self._scrubber
        url = scrub.url(str(request.url))
        parts = urlsplit(url)
        raw_headers = list(request.headers.items())
        exchange = Exchange(
            method=request.method,
            url=url,
            path=parts.path,
            query=parts.query,
            headers=lambda: self._headers(raw_headers),
            body=self._request_body(request),
        )
        request.extensions[_EXTENSION] = exchange
        with self._lock:
            self._items.append(exchange)

    def _headers(self, items: Iterable[tuple[str, str]]) -> dict[str, str]:
        scrub = self._scrubber
        return {
            name.lower(): ("<imagegen:scrubbed>" if scrub.is_secret_header(name) else scrub.text(v))
            for name, v in items
        }

    def _request_body(self, request: httpx2.Request) -> Any:
        try:
            raw = request.read()
        except (httpx2.StreamError, RuntimeError, TypeError):
            return None  # an async or already-consumed stream: its body is not ours to read
        if not raw:
            return None
        content_type = request.headers.get("content-type", "")

        def make() -> Any:
            stored, _canonical = self._scrubber.request_body(raw, content_type)
            try:
                return json.loads(stored or b"")
            except ValueError:
                return (stored or b"").decode("utf-8", "replace")[:MAX_TEXT_CHARS]

        return _Pending(make)

    def _on_response(self, response: httpx2.Response) -> None:
        exchange = response.request.extensions.get(_EXTENSION)
        if not isinstance(exchange, Exchange):
            return
        exchange.status = response.status_code
        raw_headers = list(response.headers.items())
        exchange._response_headers = lambda: self._headers(raw_headers)
        content_type = response.headers.get("content-type", "")

        def finish(body: bytes, total: int, complete: bool) -> None:
            exchange.response_bytes = total
            exchange._response = _Pending(lambda: self._response_view(body, content_type))
            exchange.complete = complete

        if response.is_stream_consumed or response.is_closed:
            # A replayed answer: the cassette built the response with its body read.
            body = response.content
            finish(body, len(body), True)
        elif isinstance(response.stream, httpx2.AsyncByteStream):
            response.stream = _AsyncTee(response.stream, finish)
        else:
            response.stream = _SyncTee(response.stream, finish)

    # -- views ----------------------------------------------------------------------------

    def _response_view(self, body: bytes, content_type: str) -> Any:
        scrub = self._scrubber
        lowered = content_type.lower()
        if lowered.startswith("image/") or _sniff(body):
            return {"image": _image_info(body)}
        if "text/event-stream" in lowered:
            return {"events": [self._event(e) for e in _events(body)]}
        if "json" in lowered or body.lstrip()[:1] in (b"{", b"["):
            try:
                decoded = json.loads(body)
            except ValueError:
                pass
            else:
                return scrub.json_value(_describe_images(decoded))
        text = scrub.data(body).decode("utf-8", "replace")
        return text[:MAX_TEXT_CHARS]

    def _event(self, event: tuple[str | None, str]) -> dict[str, Any]:
        name, data = event
        try:
            value: Any = self._scrubber.json_value(_describe_images(json.loads(data)))
        except ValueError:
            value = self._scrubber.text(data)
        return {"event": name, "data": value}

    # -- list-like --------------------------------------------------------------------------

    def snapshot(self) -> list[Exchange]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        """Forget every exchange."""
        with self._lock:
            self._items.clear()

    def filter(self, *, method: str | None = None, path: str | None = None) -> list[Exchange]:
        """The exchanges with this method and/or whose path ends with ``path``
        (``"/images/generations"`` matches OpenAI, relay and Azure deployment paths)."""
        return [
            e
            for e in self.snapshot()
            if (method is None or e.method == method.upper())
            and (path is None or e.path.rstrip("/").endswith(path.rstrip("/")))
        ]

    @property
    def generations(self) -> list[Exchange]:
        """The ``POST .../images/generations`` exchanges."""
        return self.filter(method="POST", path="/images/generations")

    @property
    def last(self) -> Exchange | None:
        with self._lock:
            return self._items[-1] if self._items else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __iter__(self) -> Iterator[Exchange]:
        return iter(self.snapshot())

    @overload
    def __getitem__(self, index: int) -> Exchange: ...
    @overload
    def __getitem__(self, index: slice) -> list[Exchange]: ...
    def __getitem__(self, index: int | slice) -> Exchange | list[Exchange]:
        with self._lock:
            return self._items[index]

    def __bool__(self) -> bool:
        return len(self) > 0

    def __repr__(self) -> str:
        return f"Traffic({len(self)} exchanges)"


# -- body tees -------------------------------------------------------------------------------

_Finish = Callable[[bytes, int, bool], None]


class _Kept:
    """What a tee has seen: the first MAX_KEPT_BYTES, the total, whether it got to the end."""

    def __init__(self, finish: _Finish) -> None:
        self._finish = finish
        self._chunks: list[bytes] = []
        self._kept = 0
        self.total = 0
        self.ended = False
        self._done = False

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self._kept < MAX_KEPT_BYTES:
            piece = chunk[: MAX_KEPT_BYTES - self._kept]
            self._chunks.append(piece)
            self._kept += len(piece)

    def done(self) -> None:
        if not self._done:
            self._done = True
            self._finish(b"".join(self._chunks), self.total, self.ended)


class _SyncTee(httpx2.SyncByteStream):
    def __init__(self, inner: Any, finish: _Finish) -> None:
        self._inner = inner
        self._kept = _Kept(finish)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._kept.add(chunk)
            yield chunk
        self._kept.ended = True
        self._kept.done()

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._kept.done()


class _AsyncTee(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, finish: _Finish) -> None:
        self._inner = inner
        self._kept = _Kept(finish)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._kept.add(chunk)
            yield chunk
        self._kept.ended = True
        self._kept.done()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._kept.done()


# -- images and events -------------------------------------------------------------------


def _sniff(data: bytes) -> str | None:
    from pytest_imagegen.images import sniff_format

    return sniff_format(data)


def _image_info(data: bytes) -> dict[str, Any]:
    """Format, size, length and digest of image bytes (the size read from the header)."""
    info: dict[str, Any] = {
        "format": _sniff(data),
        "size": None,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    try:
        import io

        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            info["size"] = f"{im.width}x{im.height}"
    except Exception:  # not an image (or a truncated one): no size to tell
        pass
    return info


def _describe_images(value: Any) -> Any:
    """``value`` with every ``b64_json`` string replaced by ``{"image": metadata}``."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key == "b64_json" and isinstance(item, str):
                try:
                    data = base64.b64decode(item, validate=True)
                except (binascii.Error, ValueError):
                    out[key] = {"invalid_base64": len(item)}
                else:
                    out[key] = {"image": _image_info(data)}
            else:
                out[key] = _describe_images(item)
        return out
    if isinstance(value, list):
        return [_describe_images(item) for item in value]
    return value


def _collect_images(value: Any, found: list[dict[str, Any]]) -> None:
    if isinstance(value, dict):
        if set(value) == {"image"} and isinstance(value["image"], dict):
            found.append(value["image"])
            return
        for item in value.values():
            _collect_images(item, found)
    elif isinstance(value, list):
        for item in value:
            _collect_images(item, found)


def _events(body: bytes) -> Iterable[tuple[str | None, str]]:
    """Server-sent events as ``(event name, data)``, in order."""
    text = body.decode("utf-8", "replace").replace("\r\n", "\n")
    for block in text.split("\n\n"):
        name: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            yield name, "\n".join(data)


def for_endpoints(endpoints: Iterable[Any]) -> Traffic:
    """A :class:`Traffic` scrubbing every secret of ``endpoints`` (keys, header values)."""
    from pytest_imagegen._scrub import Scrubber

    endpoints = list(endpoints)
    secrets = [secret for e in endpoints for secret in e.secrets]
    headers = [name for e in endpoints for name in e.headers]
    return Traffic(Scrubber.create(secrets=secrets, secret_headers=headers))
