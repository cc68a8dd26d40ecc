"""What a check gets: the endpoint, clients that record what they send, and a place to
record figures for the report.

A check never builds an ``openai.OpenAI`` itself: :meth:`CheckContext.client` adds the
event hooks that capture each request actually sent (for the separation and request-shape
assertions), reserve its estimated price against the budget, and tally its cost.
"""

from __future__ import annotations

import base64
import contextlib
import inspect
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NoReturn

from pytest_imagegen.errors import BudgetExceededError, Category, ConformanceFailure, Diagnosis
from pytest_imagegen.sse import parse_block
from pytest_imagegen.testdata import cost_adder, with_measures

if TYPE_CHECKING:
    import httpx2
    import openai

    from pytest_imagegen.bounds import BodyCut, Limits
    from pytest_imagegen.budget import Budget
    from pytest_imagegen.config import Endpoint
    from pytest_imagegen.images import GeneratedImage
    from pytest_imagegen.reference import ReferenceServer, RemoteReference
    from pytest_imagegen.upstream import Exchange, UpstreamTap

__all__ = [
    "MAX_THUMBNAILS",
    "PROMPT",
    "SERVERLESS_RESPONSE_CAP",
    "Call",
    "CheckContext",
    "CheckSkipped",
    "SentRequest",
    "StreamCall",
    "StreamEvent",
]

#: The prompt of every suite request: fixed, so a replay sends byte-identical bodies.
PROMPT = "A red bicycle leaning against a white wall, flat illustration"

#: Vercel's cap on a (non-streaming) serverless function's response body: 4.5 MB.
SERVERLESS_RESPONSE_CAP = 4_500_000

#: Thumbnails kept per test for the HTML report.
MAX_THUMBNAILS = 4

#: Requests kept per test, the latest ones, as the evidence behind a failure (the report
#: shows them for failed tests only).
MAX_EXCHANGES = 3
#: Characters of a request or response body kept in an exchange.
EXCHANGE_BODY_CHARS = 4000
#: Response headers kept in an exchange: the ones that explain an answer and never carry a
#: credential (every other header is left out rather than masked).
EXCHANGE_HEADERS = (
    "content-type",
    "content-length",
    "retry-after",
    "retry-after-ms",
    "x-request-id",
    "openai-processing-ms",
    "server",
)

_IMAGES_PATH = "/images/generations"
_EDITS_PATH = "/images/edits"
_VARIATIONS_PATH = "/images/variations"
_CHAT_PATH = "/chat/completions"
_RESPONSES_PATH = "/responses"

#: An input file of an edit or variation as the SDK takes it: (filename, bytes, content type).
FileTuple = tuple[str, bytes, str]


class CheckSkipped(Exception):
    """A check cannot run against this endpoint; ``reason`` says why (never a pass)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SentRequest:
    """A request as it left the client (captured by an httpx2 request hook)."""

    method: str
    url: str
    path: str
    content_type: str
    body: Any  # the parsed JSON body, or None

    @property
    def model(self) -> str | None:
        model = self.body.get("model") if isinstance(self.body, dict) else None
        return model if isinstance(model, str) else None


@dataclass
class Call:
    """One request a check made and what came back."""

    method: str
    path: str
    body: dict[str, Any]
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes = b""
    latency_s: float = 0.0
    diagnosis: Diagnosis | None = None
    images: tuple[GeneratedImage, ...] = ()
    document: Any = None  # the parsed JSON body, or None
    cut: BodyCut | None = None  # set when the body was above the cap (content: its prefix)
    exchange: Exchange | None = None  # what the gateway's upstream received (upstream mode)
    url: str = ""
    #: When the answer came from a cassette: this run's own time for it (``latency_s`` is
    #: then the live latency the recording kept, when it kept one) and the recording date.
    replay_s: float | None = None
    recorded_at: str | None = None

    @property
    def body_bytes(self) -> int:
        """The size of the body as the endpoint sent it (also when it was cut at the cap)."""
        return self.cut.bytes if self.cut is not None else len(self.content)

    @property
    def ok(self) -> bool:
        """A 2xx with valid images (or, for chat, any 2xx)."""
        return self.diagnosis is None and self.status is not None and self.status < 300

    def describe(self) -> str:
        """What came back, in a few words (for failure messages): the category, status,
        code and param that were given, and the endpoint's message; the hint goes to the
        report on its own, not into every message."""
        if self.diagnosis is not None:
            return describe_diagnosis(self.diagnosis)
        kinds = sorted({f"{im.format} {im.size}" for im in self.images})
        images = f", {len(self.images)} image(s) {', '.join(kinds)}" if self.images else ""
        return f"HTTP {self.status}{images}"

    def request_line(self) -> str:
        shown = {k: v for k, v in self.body.items() if k not in ("prompt", "messages")}
        return f"{self.method} {self.path} {json.dumps(shown, sort_keys=True)}"


def describe_diagnosis(diagnosis: Diagnosis) -> str:
    """``server (HTTP 500): Internal Server Error`` style: the category, then only the
    status, code and param that are known, then the endpoint's message on one line."""
    facts = [f"HTTP {diagnosis.status}"] if diagnosis.status is not None else []
    facts += [f"{k}={v}" for k, v in (("code", diagnosis.code), ("param", diagnosis.param)) if v]
    head = f"{diagnosis.category} ({', '.join(facts)})" if facts else str(diagnosis.category)
    message = " ".join((diagnosis.message or "").split())
    return f"{head}: {message}" if message else head


@dataclass(frozen=True)
class StreamEvent:
    """One server-sent event as it arrived."""

    name: str  # the ``event:`` line ("" when absent)
    payload: Any  # the ``data:`` JSON (None when it is not JSON)
    at_s: float  # seconds after the request was sent
    read: int  # which network read completed it (0, 1, ...): equal reads arrived together


@dataclass
class StreamCall(Call):
    """A streamed request: the events in arrival order, and how the stream ended."""

    events: list[StreamEvent] = field(default_factory=list)
    error: Diagnosis | None = None  # the stream broke off (timeout, reset) after its headers

    @property
    def partials(self) -> list[StreamEvent]:
        return [e for e in self.events if e.name.endswith(".partial_image")]

    @property
    def completed(self) -> list[StreamEvent]:
        return [e for e in self.events if e.name.endswith(".completed")]

    def describe(self) -> str:
        if self.diagnosis is not None:
            return str(self.diagnosis)
        names = ", ".join(e.name or "(unnamed)" for e in self.events) or "no event"
        ended = f", then {self.error}" if self.error is not None else ""
        return f"HTTP {self.status} {self.headers.get('content-type', '')}: {names}{ended}"


def _sse_blocks(buffer: bytes) -> tuple[list[bytes], bytes]:
    """Complete SSE blocks in ``buffer`` and what is left of it."""
    buffer = buffer.replace(b"\r\n", b"\n")
    *blocks, rest = buffer.split(b"\n\n")
    return [b for b in blocks if b.strip()], rest


def _sse_event(block: bytes, at_s: float, read: int) -> StreamEvent | None:
    parsed = parse_block(block)
    return None if parsed is None else StreamEvent(*parsed, at_s, read)


class CheckContext:
    """Everything a check needs about one endpoint, and what it records for the report.

    ``client_factory(**overrides)`` makes clients (default ``endpoint.client``); it must pass
    ``http_client`` on to ``openai.OpenAI``. ``is_live(request)`` says whether a request
    really goes out (False when a cassette replays it): only live requests are priced and
    reserved against ``budget``; ``replayed()`` counts replayed answers (see
    :func:`pytest_imagegen.budget.event_hooks`). ``data`` is the dict the report reads
    (``latencies_s``, ``attempts``, ``successes``, ``cost_usd``, ``response_bytes``,
    ``images``).

    ``recorded_requests`` holds the JSON bodies of the ``POST .../images/generations``
    requests of the test's cassette, in recorded order, when that cassette is replayed
    (None otherwise, and always outside pytest): checks that draw their requests with
    hypothesis send these instead, because new draws depend on the hypothesis release and
    on the local modules imported, and would find no recording.

    When the endpoint is a gateway with an ``upstream``, ``reference`` is that upstream (a
    ``ReferenceServer`` or ``RemoteReference``): faults are scripted there, requests go to the
    gateway, and ``upstream_tap`` pairs each request with what the upstream received
    (``Call.exchange``); pass a replaying tap to read those from a recording instead.

    ``transport``, when given, is the inner transport of every HTTP client the context
    makes, under each client's bounds (the plugin passes one that sends through the
    session's connection pool of the endpoint, see :mod:`pytest_imagegen.pool`).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        reference: ReferenceServer | RemoteReference | None = None,
        budget: Budget | None = None,
        client_factory: Callable[..., openai.OpenAI] | None = None,
        is_live: Callable[[Any], bool] | None = None,
        replayed: Callable[[], int] | None = None,
        data: dict[str, Any] | None = None,
        recorded_requests: Sequence[Mapping[str, Any]] | None = None,
        upstream_tap: UpstreamTap | None = None,
        transport: httpx2.BaseTransport | None = None,
        plays: list[dict[str, Any]] | None = None,
        replaying: bool = False,
    ) -> None:
        from pytest_imagegen.config import bind_reference

        self.endpoint = bind_reference(endpoint, reference)
        self.profile = self.endpoint.profile
        self.reference = reference
        self.budget = budget
        self._factory = client_factory or self.endpoint.client
        self._is_live = is_live or (lambda request: True)
        self._replayed = replayed
        self._transport = transport
        self.data: dict[str, Any] = with_measures(data if data is not None else {})
        self.sent: list[SentRequest] = []
        self._http_clients: list[Any] = []
        # Each operation (a generation with its image downloads, a chat request) must end
        # within deadline_s of its start; each request gets timeout_s within that window.
        self.window_end = time.monotonic() + float(self.endpoint.deadline_s)
        self.recorded_requests: list[dict[str, Any]] | None = (
            None if recorded_requests is None else [dict(body) for body in recorded_requests]
        )
        if upstream_tap is None and self.endpoint.upstream is not None and reference is not None:
            from pytest_imagegen.upstream import UpstreamTap

            upstream_tap = UpstreamTap(self.endpoint, server=reference)
        self.upstream_tap = upstream_tap
        # The cassette's replayed answers, in play order (``CassetteSession.plays``): a call
        # answered from it reports the latency the recording kept.
        self.plays = plays
        #: True when the check's cassette exists and is replayed: what it sends is answered
        #: from the recording whatever key is configured (a keyless CI replay included).
        self.replaying = replaying
        self.calls: list[Call] = []
        #: The call a failure was about (``fail(call=...)``), shown first as its evidence.
        self.failed_call: Call | None = None

    # ------------------------------------------------------------------ facts

    @property
    def can_inject_faults(self) -> bool:
        """Whether faults scripted on :attr:`reference` reach this endpoint's answers: it is
        that reference server, or a gateway in front of it (upstream mode)."""
        if self.through_gateway:
            return True
        ref = self.reference
        return (
            ref is not None
            and getattr(ref, "running", False)
            and self.endpoint.base_url.rstrip("/") == ref.base_url.rstrip("/")
        )

    @property
    def through_gateway(self) -> bool:
        """Requests go to a gateway whose upstream this context sees (live or recorded)."""
        return self.endpoint.upstream is not None and self.upstream_tap is not None

    @property
    def images_url(self) -> str:
        """Where an image request for the image model goes (an Azure deployment path too)."""
        return self.endpoint.url(_IMAGES_PATH, self.endpoint.image_model)

    def cheap_params(self) -> dict[str, Any]:
        """The cheapest valid quality and concrete size of the profile (keeps live runs cheap)."""
        profile = self.profile
        qualities: list[str | None] = [q for q in profile.qualities if q != "auto"] or [None]
        sizes: list[str | None] = [s for s in profile.sizes if s != "auto"] or [None]
        best: tuple[float, str | None, str | None] | None = None
        for quality in qualities:
            for size in sizes:
                try:
                    price = float(profile.price(quality=quality, size=size))
                except (KeyError, ValueError, TypeError):
                    continue
                if best is None or price < best[0]:
                    best = (price, quality, size)
        params: dict[str, Any] = {}
        if best is not None:
            _, quality, size = best
            if quality is not None and profile.accepts("quality"):
                params["quality"] = quality
            if size is not None:
                params["size"] = size
        return params

    # ------------------------------------------------------------------ recording

    def record(self, **data: Any) -> None:
        """Add figures for the report: lists are extended, numbers added, the rest set."""
        for key, value in data.items():
            current = self.data.get(key)
            if isinstance(current, list):
                current.extend(value if isinstance(value, (list, tuple)) else [value])
            elif isinstance(current, (int, float)) and isinstance(value, (int, float)):
                self.data[key] = current + value
            else:
                self.data[key] = value

    def record_images(self, images: tuple[GeneratedImage, ...]) -> None:
        """Keep small thumbnails of the first few images for the HTML report."""
        kept = self.data["images"]
        for image in images:
            if len(kept) >= MAX_THUMBNAILS:
                return
            kept.append(_thumbnail(image.data, image.format, image.size))

    # ------------------------------------------------------------------ outcomes

    def fail(
        self,
        message: str,
        *,
        call: Call | None = None,
        expected: str | None = None,
        fix: str | None = None,
        category: Category | None = None,
    ) -> NoReturn:
        """Fail the check. The diagnosis of ``call`` (if any) gives the report its category;
        ``expected`` says what a conforming endpoint does, ``fix`` what to change so it
        does (the report's hint, instead of the diagnosis's advice to a client), and
        ``category`` the error category at stake when no diagnosis names it."""
        failure = self.data.setdefault("failure", {})
        # The test data holds plain JSON values: the category by its name.
        named = category.value if category is not None else None
        for key, value in (("expected", expected), ("fix", fix), ("category", named)):
            if value:
                failure[key] = value
        if call is not None:
            self.failed_call = call
        raise ConformanceFailure(message, diagnosis=call.diagnosis if call is not None else None)

    def script_fault(self, name: str, **options: Any) -> None:
        """Queue a fault on the reference server (or the gateway's upstream); nothing when the
        upstream's side is replayed from a recording."""
        if self.upstream_tap is not None and self.upstream_tap.replaying:
            return
        if self.reference is None:
            self.skip(f"needs fault injection: endpoint {self.endpoint.name!r} has no upstream")
        self.reference.faults.add(name, **options)

    def clear_faults(self) -> None:
        """Remove the faults still queued (between the scenarios of one check)."""
        if self.reference is not None and not (
            self.upstream_tap is not None and self.upstream_tap.replaying
        ):
            self.reference.faults.clear()

    def warn(self, message: str) -> None:
        """A deviation that loses information but breaks no client: a
        :class:`~pytest_imagegen.verdict.DeviationWarning` (an error under ``-W error::...``),
        kept in the report data as well."""
        from pytest_imagegen.verdict import deviation

        self.data["deviations"].append(message)
        deviation(message, stacklevel=2)

    def skip(self, reason: str) -> NoReturn:
        raise CheckSkipped(reason)

    # ------------------------------------------------------------------ clients

    def client(self, **overrides: Any) -> openai.OpenAI:
        """An ``openai.OpenAI`` for the endpoint (no SDK retries unless asked) whose requests
        are captured in :attr:`sent` and priced against the budget."""
        import httpx2

        from pytest_imagegen.bounds import bounded_client
        from pytest_imagegen.budget import event_hooks

        def capture(request: Any) -> None:
            try:
                raw = request.content
                body = json.loads(raw) if raw else None
            except (httpx2.RequestNotRead, ValueError):  # multipart or non-JSON body
                body = None
            self.sent.append(
                SentRequest(
                    method=request.method,
                    url=str(request.url),
                    path=request.url.path,
                    content_type=request.headers.get("content-type", ""),
                    body=body,
                )
            )

        hooks = event_hooks(
            self.budget,
            self.endpoint,
            is_live=self._is_live,
            on_cost=cost_adder(self.data),
            replayed=self._replayed,
        )
        hooks["request"].insert(0, capture)
        http_client = bounded_client(self.limits(), transport=self._transport, event_hooks=hooks)
        self._http_clients.append(http_client)
        overrides.setdefault("max_retries", 0)
        return self._factory(http_client=http_client, **overrides)

    def limits(self) -> Limits:
        """What each request of this check may take: ``timeout_s`` of wall time (body
        included), within ``deadline_s`` of the start of the operation it belongs to, and a
        body no larger than the endpoint's response cap for the ``n`` images asked for."""
        from pytest_imagegen.bounds import Limits, requested_n

        endpoint = self.endpoint

        def cap(request: Any) -> int:
            return endpoint.response_cap(requested_n(request))

        return Limits(
            timeout_s=float(endpoint.timeout_s),
            deadline=lambda: self.window_end,
            deadline_s=float(endpoint.deadline_s),
            max_body_bytes=cap,
        )

    def close(self) -> None:
        """Close every HTTP client this context made."""
        while self._http_clients:
            client = self._http_clients.pop()
            with contextlib.suppress(Exception):  # closing is best effort
                client.close()

    @contextmanager
    def closing(self) -> Iterator[CheckContext]:
        try:
            yield self
        finally:
            self.close()

    # ------------------------------------------------------------------ requests

    def generate(
        self,
        body: Mapping[str, Any] | None = None,
        *,
        client: openai.OpenAI | None = None,
        expect_images: bool = True,
        **params: Any,
    ) -> Call:
        """``POST /images/generations`` through the SDK with ``params`` (``model`` defaults to
        the endpoint's image model, ``prompt`` to :data:`PROMPT`; None values are left out), or
        with ``body`` sent exactly as given (nulls included). Never raises for an endpoint
        error (it is in ``Call.diagnosis``).

        With ``expect_images`` the answer is decoded and checked (``n``, size, format; a bad
        one gets a ``malformed_response`` diagnosis) and counted in the report's latency and
        success figures; requests meant to be refused pass ``expect_images=False``.
        """
        if body is None:
            body = {"model": self.endpoint.image_model, "prompt": PROMPT}
            body.update({k: v for k, v in params.items() if v is not None})
        else:
            body = {"model": self.endpoint.image_model, **body}
        client = client or self.client()
        kwargs, extra = _split_sdk_keywords(client.images.generate, body)
        call = self._send(
            "POST",
            _IMAGES_PATH,
            body,
            lambda: client.images.with_raw_response.generate(**kwargs, extra_body=extra or None),
        )
        self.note_replay(call)
        if expect_images:
            if call.diagnosis is None:
                self._parse_images(call, client)
            self.record(
                latencies_s=[round(call.latency_s, 4)],
                attempts=1,
                successes=1 if call.ok else 0,
                response_bytes=call.body_bytes,
            )
            self.record_images(call.images)
        if call.ok and expect_images:
            self.record(succeeded_params=[priced_params(body)])
        return call

    def images_in(self, call: Call) -> Call:
        """A copy of ``call`` with its 2xx body decoded as images; when it holds no valid
        image, the copy's ``diagnosis`` says what was seen instead (for requests sent with
        ``expect_images=False``, whose answers are not decoded)."""
        seen = replace(call)
        if seen.diagnosis is None and seen.status is not None and seen.status < 300:
            self._parse_images(seen, None)
        return seen

    def chat(self, model: str, *, client: openai.OpenAI | None = None) -> Call:
        """``POST /chat/completions`` with ``model`` and a one-line message."""
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": "Reply with the word OK."}],
            "max_completion_tokens": 16,
        }
        client = client or self.client()
        call = self._send(
            "POST",
            _CHAT_PATH,
            body,
            lambda: client.chat.completions.with_raw_response.create(**body),
        )
        self.note_replay(call)
        return call

    def edit(
        self,
        images: Sequence[FileTuple],
        *,
        mask: FileTuple | None = None,
        client: openai.OpenAI | None = None,
        expect_images: bool = True,
        **params: Any,
    ) -> Call:
        """``POST /images/edits`` as multipart through the SDK: ``images`` (one is sent as
        ``image``, several as ``image[]``), an optional ``mask``, and ``params`` (``model``
        defaults to the endpoint's image model, ``prompt`` to :data:`PROMPT`; None values are
        left out). Like :meth:`generate`, never raises for an endpoint error."""
        body = {"model": self.endpoint.image_model, "prompt": PROMPT}
        body.update({k: v for k, v in params.items() if v is not None})
        client = client or self.client()
        kwargs, extra = _split_sdk_keywords(client.images.edit, body)
        files: Any = images[0] if len(images) == 1 else list(images)
        shown = {**body, "image": [f"<{f[2]} {len(f[1])} bytes>" for f in images]}
        if mask is not None:
            shown["mask"] = f"<{mask[2]} {len(mask[1])} bytes>"
            kwargs["mask"] = mask
        call = self._send(
            "POST",
            _EDITS_PATH,
            shown,
            lambda: client.images.with_raw_response.edit(
                image=files, **kwargs, extra_body=extra or None
            ),
        )
        return self._finish(call, client, expect_images)

    def edit_json(
        self,
        body: Mapping[str, Any],
        *,
        client: openai.OpenAI | None = None,
        expect_images: bool = True,
    ) -> Call:
        """``POST /images/edits`` with a JSON body (image references), sent as given
        (``model`` and ``prompt`` filled in when absent)."""
        import httpx2

        full = {"model": self.endpoint.image_model, "prompt": PROMPT, **body}
        client = client or self.client()
        shown = {
            **full,
            "images": [f"<{len(json.dumps(r))} chars>" for r in full.get("images", [])],
        }
        call = self._send(
            "POST",
            _EDITS_PATH,
            shown,
            lambda: _RawResponse(client.post(_EDITS_PATH, body=full, cast_to=httpx2.Response)),
        )
        return self._finish(call, client, expect_images)

    def variation(
        self,
        image: FileTuple,
        *,
        client: openai.OpenAI | None = None,
        expect_images: bool = True,
        **params: Any,
    ) -> Call:
        """``POST /images/variations`` (multipart) with ``image`` and ``params`` (``model``
        defaults to the endpoint's image model)."""
        body = {"model": self.endpoint.image_model}
        body.update({k: v for k, v in params.items() if v is not None})
        client = client or self.client()
        kwargs, extra = _split_sdk_keywords(client.images.create_variation, body)
        shown = {**body, "image": f"<{image[2]} {len(image[1])} bytes>"}

        def send() -> Any:
            import warnings

            # The SDK marks variations deprecated (dall-e-2 is retired at OpenAI); the check
            # calls it on purpose, to see the endpoint serve or refuse it.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return client.images.with_raw_response.create_variation(
                    image=image, **kwargs, extra_body=extra or None
                )

        call = self._send("POST", _VARIATIONS_PATH, shown, send)
        return self._finish(call, client, expect_images)

    def respond(self, body: Mapping[str, Any], *, client: openai.OpenAI | None = None) -> Call:
        """``POST /responses`` through the SDK with ``body`` (model, input, tools, ...)."""
        client = client or self.client()
        kwargs, extra = _split_sdk_keywords(client.responses.create, body)
        return self._send(
            "POST",
            _RESPONSES_PATH,
            dict(body),
            lambda: client.responses.with_raw_response.create(**kwargs, extra_body=extra or None),
        )

    def stream(
        self,
        *,
        images: Sequence[FileTuple] | None = None,
        client: openai.OpenAI | None = None,
        **params: Any,
    ) -> StreamCall:
        """A streamed generation (or, with ``images``, a streamed multipart edit): the events
        as they arrive, each with its arrival time and the network read that completed it.

        ``stream=True`` is added; reading is bounded by the client's timeout per read. An
        error status is in ``diagnosis``; a stream that breaks off after its headers keeps
        the events that came and the reason in ``error``.
        """
        import httpx2

        from pytest_imagegen.classify import classify

        body: dict[str, Any] = {"model": self.endpoint.image_model, "prompt": PROMPT}
        body.update({k: v for k, v in params.items() if v is not None})
        body["stream"] = True
        client = client or self.client()
        path = _EDITS_PATH if images else _IMAGES_PATH
        method = (
            client.images.with_streaming_response.edit
            if images
            else (client.images.with_streaming_response.generate)
        )
        kwargs, extra = _split_sdk_keywords(
            client.images.edit if images else client.images.generate, body
        )
        if images:
            kwargs["image"] = images[0] if len(images) == 1 else list(images)
        call = StreamCall("POST", path, dict(body))
        start = time.perf_counter()
        with _endpoint_errors(call), method(**kwargs, extra_body=extra or None) as response:
            http = response.http_response
            call.status = http.status_code
            call.headers = {k.lower(): v for k, v in http.headers.items()}
            buffer, raw = b"", []
            try:
                for read, chunk in enumerate(http.iter_bytes()):
                    raw.append(chunk)
                    blocks, buffer = _sse_blocks(buffer + chunk)
                    at = time.perf_counter() - start
                    parsed = (_sse_event(b, at, read) for b in blocks)
                    call.events += [e for e in parsed if e is not None]
            except (httpx2.HTTPError, httpx2.StreamError) as exc:
                # a read timeout or a reset mid-stream: the endpoint's, so a verdict
                call.error = classify(exc)
            call.content = b"".join(raw)
        call.latency_s = time.perf_counter() - start
        completed = bool(call.completed) and call.error is None and call.diagnosis is None
        self.record(
            latencies_s=[round(call.latency_s, 4)],
            attempts=1,
            successes=1 if completed else 0,
            response_bytes=len(call.content),
        )
        return call

    def _finish(self, call: Call, client: openai.OpenAI, expect_images: bool) -> Call:
        if expect_images:
            if call.diagnosis is None:
                self._parse_images(call, client)
            self.record(
                latencies_s=[round(call.latency_s, 4)],
                attempts=1,
                successes=1 if call.ok else 0,
                response_bytes=len(call.content),
            )
            self.record_images(call.images)
        return call

    def _send(self, method: str, path: str, body: dict[str, Any], send: Callable[[], Any]) -> Call:
        from pytest_imagegen.bounds import find_cut
        from pytest_imagegen.classify import malformed

        call = Call(method, path, body, url=self.endpoint.base_url.rstrip("/") + path)
        self.window_end = time.monotonic() + float(self.endpoint.deadline_s)
        tap = self.upstream_tap
        mark = tap.begin() if tap is not None else None
        played_before = len(self.plays) if self.plays is not None else 0
        start = time.perf_counter()
        with _endpoint_errors(call):
            raw = send()
            response = raw.http_response
            call.status = response.status_code
            call.headers = {k.lower(): v for k, v in response.headers.items()}
            call.content = response.content
        call.latency_s = time.perf_counter() - start
        if tap is not None and mark is not None:
            call.exchange = tap.end(mark, headers=call.headers, content=call.content)
        # Every request counts for the progress of a live run (refusals included).
        self.data["requests"] = int(self.data.get("requests") or 0) + 1
        if self.plays is not None and len(self.plays) > played_before:
            # Answered from the cassette: the endpoint's latency is the recorded one.
            recorded = self.plays[-1]
            call.replay_s = call.latency_s
            call.recorded_at = recorded.get("recorded_at")
            if recorded.get("latency_s") is not None:
                call.latency_s = float(recorded["latency_s"])
        found = find_cut(call.content)
        if found is not None:
            call.content, call.cut = found
            call.diagnosis = malformed(call.cut.describe(), status=call.status)
        elif call.content:
            try:
                call.document = json.loads(call.content)
            except (ValueError, UnicodeDecodeError):
                call.document = None
        replayed = self.replaying or (self.plays is not None and len(self.plays) > played_before)
        if not replayed:
            self._charge_excess(call)
        self.calls.append(call)
        return call

    def _charge_excess(self, call: Call) -> None:
        """Charge the budget for images a live, billed answer returned beyond those asked
        for: the reservation priced only ``n`` of them."""
        from pytest_imagegen.budget import BILLED_PATHS, excess_price

        endpoint = self.endpoint
        if (
            self.budget is None
            or endpoint.is_reference
            or endpoint.upstream is not None
            or call.status is None
            or call.status >= 300
            or not call.path.endswith(BILLED_PATHS)
            or not isinstance(call.document, dict)
            or not isinstance(call.document.get("data"), list)
        ):
            return
        extra = excess_price(self.profile, call.body, len(call.document["data"]))
        if extra > 0:
            self.budget.charge(extra)
            self.record(overbilled_usd=extra)

    def note_replay(self, call: Call) -> None:
        """Add a replayed call's recording facts to the report data (date, replay time)."""
        if call.replay_s is None:
            return
        self.record(replay_latencies_s=[round(call.replay_s, 4)])
        if call.recorded_at and call.recorded_at > (self.data.get("recorded_at") or ""):
            self.data["recorded_at"] = call.recorded_at

    def exchanges(self) -> list[dict[str, Any]]:
        """The last :data:`MAX_EXCHANGES` calls as JSON-ready evidence: the request sent (its
        body as sent, prompt included) and the response received (allow-listed headers, the
        body clipped, base64 images replaced by a note and shown as thumbnails)."""
        kept = self.calls[-MAX_EXCHANGES:]
        failed = self.failed_call
        if failed is not None and all(c is not failed for c in kept):
            kept = [failed, *kept[1:]]
        return [{**_exchange(c), "failed": c is failed} for c in kept]

    def _parse_images(self, call: Call, client: openai.OpenAI | None) -> None:
        from pytest_imagegen.classify import malformed
        from pytest_imagegen.fallback import MalformedResponse, parse_images_response
        from pytest_imagegen.profiles import parse_size

        size = call.body.get("size")
        if not isinstance(size, str) or parse_size(size) is None:
            default = self.profile.default_size
            size = default if parse_size(default) is not None else None
        n = call.body.get("n", 1)
        http = self._http_clients[-1] if self._http_clients else None

        def fetch(url: str) -> bytes:
            from pytest_imagegen import image_urls
            from pytest_imagegen.bounds import largest_image_bytes

            if http is None:
                raise MalformedResponse("the response gave an image URL and no client can fetch it")
            limits = replace(self.limits(), max_body_bytes=largest_image_bytes(self.profile))
            return image_urls.fetch(http, url, base_url=self.endpoint.base_url, limits=limits)

        try:
            call.images = parse_images_response(
                call.content,
                n=n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1,
                size=size,
                output_format=call.body.get("output_format"),
                fetch=fetch,
            )
        except MalformedResponse as exc:
            call.diagnosis = malformed(str(exc), status=call.status)


#: The request keys that decide an image's price or kind, kept per successful request for
#: the report's cost advice (the cheapest parameters that worked in this run).
PRICED_PARAMS = ("model", "quality", "size", "output_format", "n")


def priced_params(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: body[k] for k in PRICED_PARAMS if isinstance(body.get(k), (str, int))}


def _thumbnail(data: bytes, format: str | None, size: str | None) -> dict[str, Any]:
    from pytest_imagegen.images import thumbnail_png

    try:
        thumb: str | None = base64.b64encode(thumbnail_png(data)).decode("ascii")
    except ValueError:
        thumb = None
    return {"format": format, "size": size, "thumb_png_b64": thumb}


def _evidence_images(call: Call) -> list[dict[str, Any]]:
    """Thumbnails of the images in an answer, also when the answer was refused as malformed
    (a wrong size, one image too few): those images are the evidence."""
    if call.images:
        return [_thumbnail(im.data, im.format, im.size) for im in call.images[:MAX_THUMBNAILS]]
    from pytest_imagegen.images import decode_b64, inspect_image

    items = call.document.get("data") if isinstance(call.document, dict) else None
    found: list[dict[str, Any]] = []
    for item in items if isinstance(items, list) else ():
        b64 = item.get("b64_json") if isinstance(item, dict) else None
        if not isinstance(b64, str) or len(found) >= MAX_THUMBNAILS:
            continue
        try:
            data = decode_b64(b64)
            info = inspect_image(data)
        except ValueError:
            continue
        found.append(_thumbnail(data, info.format, f"{info.width}x{info.height}"))
    return found


def _without_images(value: Any) -> Any:
    """A JSON document with each long base64 string replaced by a short note."""
    if isinstance(value, dict):
        return {k: _without_images(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_images(v) for v in value]
    if isinstance(value, str) and len(value) > 200 and " " not in value:
        return f"<{len(value)} characters of base64: shown as a thumbnail>"
    return value


def _body_text(document: Any, content: bytes) -> str:
    if document is not None:
        text = json.dumps(_without_images(document), indent=1, ensure_ascii=False)
    else:
        text = content.decode("utf-8", "replace")
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if len(text) > EXCHANGE_BODY_CHARS:
        text = (
            text[:EXCHANGE_BODY_CHARS]
            + f"\n... ({len(text) - EXCHANGE_BODY_CHARS} more characters)"
        )
    return text


def _exchange(call: Call) -> dict[str, Any]:
    headers = {k: v for k, v in call.headers.items() if k in EXCHANGE_HEADERS}
    return {
        "request": {"method": call.method, "url": call.url, "body": dict(call.body)},
        "response": {
            "status": call.status,
            "headers": headers,
            "body": _body_text(call.document, call.content) if call.content else "",
            "images": _evidence_images(call),
        },
        "diagnosis": describe_diagnosis(call.diagnosis) if call.diagnosis is not None else None,
        "latency_s": round(call.latency_s, 4),
        "replay_s": None if call.replay_s is None else round(call.replay_s, 4),
        "recorded_at": call.recorded_at,
    }


class _RawResponse:
    """An ``httpx2.Response`` dressed as the SDK's raw response (``.http_response``)."""

    def __init__(self, response: Any) -> None:
        self.http_response = response


@contextmanager
def _endpoint_errors(call: Any) -> Iterator[None]:
    """An SDK error of the endpoint's (an error status, a broken connection) goes into
    ``call``; a budget refusal ends the check instead (it is no verdict on the endpoint)."""
    import openai

    from pytest_imagegen.classify import classify

    try:
        yield
    except openai.APIStatusError as exc:
        call.status = exc.status_code
        call.headers = {k.lower(): v for k, v in exc.response.headers.items()}
        call.content = exc.response.content
        call.diagnosis = classify(exc)
    except openai.APIConnectionError as exc:
        cause = _budget_cause(exc)
        if cause is not None:
            raise ConformanceFailure(str(cause)) from cause
        call.diagnosis = classify(exc)
    except BudgetExceededError as exc:
        raise ConformanceFailure(str(exc)) from exc


def _budget_cause(exc: BaseException) -> BudgetExceededError | None:
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, BudgetExceededError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


_SDK_KEYWORDS: dict[Any, frozenset[str]] = {}


def _split_sdk_keywords(
    method: Callable[..., Any], body: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keys the SDK method names go as keywords; the rest through ``extra_body`` unchanged,
    so an invalid or newer parameter reaches the endpoint as written."""
    key = getattr(method, "__qualname__", method)
    known = _SDK_KEYWORDS.get(key)
    if known is None:
        params = inspect.signature(method).parameters.values()
        known = frozenset(
            p.name
            for p in params
            if p.kind is p.KEYWORD_ONLY
            and p.name not in ("extra_headers", "extra_query", "extra_body", "timeout")
        )
        _SDK_KEYWORDS[key] = known
    return (
        {k: v for k, v in body.items() if k in known},
        {k: v for k, v in body.items() if k not in known},
    )
