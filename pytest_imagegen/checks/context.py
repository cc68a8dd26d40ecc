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

from pytest_imagegen.errors import BudgetExceededError, ConformanceFailure, Diagnosis
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
]

#: The prompt of every suite request: fixed, so a replay sends byte-identical bodies.
PROMPT = "A red bicycle leaning against a white wall, flat illustration"

#: Vercel's cap on a (non-streaming) serverless function's response body: 4.5 MB.
SERVERLESS_RESPONSE_CAP = 4_500_000

#: Thumbnails kept per test for the HTML report.
MAX_THUMBNAILS = 4

_IMAGES_PATH = "/images/generations"
_CHAT_PATH = "/chat/completions"


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

    @property
    def body_bytes(self) -> int:
        """The size of the body as the endpoint sent it (also when it was cut at the cap)."""
        return self.cut.bytes if self.cut is not None else len(self.content)

    @property
    def ok(self) -> bool:
        """A 2xx with valid images (or, for chat, any 2xx)."""
        return self.diagnosis is None and self.status is not None and self.status < 300

    def describe(self) -> str:
        """What came back, in a few words (for failure messages)."""
        if self.diagnosis is not None:
            return str(self.diagnosis)
        kinds = sorted({f"{im.format} {im.size}" for im in self.images})
        images = f", {len(self.images)} image(s) {', '.join(kinds)}" if self.images else ""
        return f"HTTP {self.status}{images}"

    def request_line(self) -> str:
        shown = {k: v for k, v in self.body.items() if k not in ("prompt", "messages")}
        return f"{self.method} {self.path} {json.dumps(shown, sort_keys=True)}"


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
        from pytest_imagegen.images import thumbnail_png

        kept = self.data["images"]
        for image in images:
            if len(kept) >= MAX_THUMBNAILS:
                return
            try:
                thumb = base64.b64encode(thumbnail_png(image.data)).decode("ascii")
            except ValueError:
                thumb = None
            kept.append({"format": image.format, "size": image.size, "thumb_png_b64": thumb})

    # ------------------------------------------------------------------ outcomes

    def fail(self, message: str, *, call: Call | None = None) -> NoReturn:
        """Fail the check; the diagnosis of ``call`` (if any) goes to the report."""
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
        from pytest_imagegen.bounds import bounded_client
        from pytest_imagegen.budget import event_hooks

        def capture(request: Any) -> None:
            try:
                raw = request.content
                body = json.loads(raw) if raw else None
            except Exception:  # streaming or non-JSON body: keep the request line only
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
        return self._send(
            "POST",
            _CHAT_PATH,
            body,
            lambda: client.chat.completions.with_raw_response.create(**body),
        )

    def _send(self, method: str, path: str, body: dict[str, Any], send: Callable[[], Any]) -> Call:
        import openai

        from pytest_imagegen.bounds import find_cut
        from pytest_imagegen.classify import classify, malformed

        call = Call(method, path, body)
        self.window_end = time.monotonic() + float(self.endpoint.deadline_s)
        tap = self.upstream_tap
        mark = tap.begin() if tap is not None else None
        start = time.perf_counter()
        try:
            raw = send()
            response = raw.http_response
            call.status = response.status_code
            call.headers = {k.lower(): v for k, v in response.headers.items()}
            call.content = response.content
        except openai.APIStatusError as exc:
            response = exc.response
            call.status = exc.status_code
            call.headers = {k.lower(): v for k, v in response.headers.items()}
            call.content = response.content
            call.diagnosis = classify(exc)
        except openai.APIConnectionError as exc:
            cause = _budget_cause(exc)
            if cause is not None:
                raise ConformanceFailure(str(cause)) from cause
            call.diagnosis = classify(exc)
        except BudgetExceededError as exc:
            raise ConformanceFailure(str(exc)) from exc
        call.latency_s = time.perf_counter() - start
        if tap is not None and mark is not None:
            call.exchange = tap.end(mark, headers=call.headers, content=call.content)
        found = find_cut(call.content)
        if found is not None:
            call.content, call.cut = found
            call.diagnosis = malformed(call.cut.describe(), status=call.status)
        elif call.content:
            try:
                call.document = json.loads(call.content)
            except (ValueError, UnicodeDecodeError):
                call.document = None
        return call

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
