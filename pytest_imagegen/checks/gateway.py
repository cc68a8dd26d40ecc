"""Gateways: what the upstream received compared with what the client sent and saw.

These checks run only for an endpoint that declares an ``upstream`` (a reference server
behind the user's gateway, see docs/gateways.md). Faults are scripted on the upstream, the
requests go to the gateway, and each client request is judged against the upstream
requests made for it (``Call.exchange``). A deviation that breaks clients fails the check;
one that only loses information is a :class:`~pytest_imagegen.verdict.DeviationWarning`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pytest_imagegen.checks import check
from pytest_imagegen.checks.context import Call, CheckContext
from pytest_imagegen.errors import Category

if TYPE_CHECKING:
    from pytest_imagegen.upstream import Exchange, UpstreamRequest

#: Newer optional parameters a gateway may not know yet: not passing them is a warning.
NEWER_OPTIONAL_PARAMS: Mapping[str, str] = {"safety_identifier": "imagegen-suite-0001"}

#: The error each scripted fault stands for, with the category a client must see.
_ERROR_FAULTS: tuple[tuple[str, dict[str, Any], Category], ...] = (
    ("rate_limit", {"retry_after": 1}, Category.RATE_LIMIT),
    ("quota", {}, Category.QUOTA),
    ("content_policy", {}, Category.CONTENT_POLICY),
    ("model_not_found", {}, Category.MODEL_NOT_FOUND),
)

#: Non-retryable upstream errors (fault, what it is): retrying them cannot succeed.
_NON_RETRYABLE: tuple[tuple[str, str], ...] = (
    ("quota", "insufficient_quota (429)"),
    ("auth_error", "invalid_api_key (401)"),
    ("content_policy", "a content-policy refusal (400)"),
)

#: A size no built-in profile offers: the upstream refuses it as an invalid request.
_INVALID_SIZE = "123x457"


def _exchange(call: Call) -> Exchange:
    from pytest_imagegen.upstream import Exchange

    return call.exchange if call.exchange is not None else Exchange()


def _statuses(exchange: Exchange) -> str:
    parts = []
    for req in exchange.upstream:
        code = (req.error or {}).get("code") or (req.error or {}).get("type") or ""
        parts.append(f"{req.status}{' ' + code if code else ''}" if req.status else "no answer")
    return ", ".join(parts) or "nothing"


def _reached_nothing(ctx: CheckContext, call: Call, what: str) -> None:
    """Fail when the upstream received nothing for ``call`` (the gateway answered itself)."""
    if _exchange(call).upstream:
        return
    if call.status is not None and call.status < 400:
        ctx.fail(
            f"{what}: the client got HTTP {call.status} but the upstream received no request; "
            "the gateway answered by itself (a cache, a mock or another route)"
        )
    ctx.fail(
        f"{what}: the gateway refused it itself ({call.describe()}); the upstream received "
        "nothing. Check the gateway routes this model to the upstream.",
        call=call,
    )


def _upstream_model(ctx: CheckContext, model: str) -> str:
    upstream = ctx.endpoint.upstream
    return upstream.upstream_model(model) if upstream is not None else model


# ---------------------------------------------------------------------- models and routes


@check("gateway", needs_upstream=True)
def model_forwarded(ctx: CheckContext) -> None:
    """The upstream receives the client's model unchanged, or the upstream model the endpoint
    declares in ``upstream.model_map``, for image requests and (with a ``chat_model``) chat
    requests.

    Fails with: "the gateway rewrote the model: the client sent 'gpt-image-1', the upstream
    received 'dall-e-3' (declare it in upstream.model_map if that is intended)".
    """
    pairs = [(ctx.generate(**ctx.cheap_params()), ctx.endpoint.image_model)]
    if ctx.endpoint.chat_model:
        pairs.append((ctx.chat(ctx.endpoint.chat_model), ctx.endpoint.chat_model))
    for call, model in pairs:
        _reached_nothing(ctx, call, f"a request for model {model!r}")
        expected = _upstream_model(ctx, model)
        for req in _exchange(call).upstream:
            if req.model != expected:
                mapped = (
                    f" (mapped to {expected!r} by upstream.model_map)" if expected != model else ""
                )
                ctx.fail(
                    f"the gateway rewrote the model: the client sent {model!r}{mapped}, the "
                    f"upstream received {req.model!r} (declare it in upstream.model_map if that "
                    "is intended)"
                )


@check("gateway", needs_upstream=True)
def route_kept(ctx: CheckContext) -> None:
    """An image request reaches the upstream's images route, never chat completions; a chat
    request (with a ``chat_model``) reaches chat completions, never the images route.

    Fails with: "an image request (model 'gpt-image-1') reached the upstream's chat
    completions" or "a chat request (model 'gpt-4o-mini') reached the upstream's images route".
    """
    image = ctx.generate(expect_images=False, **ctx.cheap_params())
    _reached_nothing(ctx, image, "an image request")
    for req in _exchange(image).upstream:
        if req.route != "images":
            where = "chat completions" if req.route == "chat" else f"route {req.route}"
            ctx.fail(
                f"an image request (model {ctx.endpoint.image_model!r}) reached the upstream's "
                f"{where} as {req.method} {req.path}"
            )
    if ctx.endpoint.chat_model:
        chat = ctx.chat(ctx.endpoint.chat_model)
        _reached_nothing(ctx, chat, "a chat request")
        for req in _exchange(chat).upstream:
            if req.route != "chat":
                where = "images route" if req.route == "images" else f"route {req.route}"
                ctx.fail(
                    f"a chat request (model {ctx.endpoint.chat_model!r}) reached the upstream's "
                    f"{where} as {req.method} {req.path}"
                )


# ---------------------------------------------------------------------- parameters


def full_request(ctx: CheckContext) -> dict[str, Any]:
    """A valid request setting every optional parameter the profile takes (not its default)."""
    from pytest_imagegen.request_builder import validate_request

    p = ctx.profile
    body: dict[str, Any] = dict(ctx.cheap_params())
    if p.n_max >= 2:
        body["n"] = 2
    if "jpeg" in p.output_formats:
        body["output_format"] = "jpeg"
        if p.output_compression:
            body["output_compression"] = 80
    if "opaque" in p.backgrounds:
        body["background"] = "opaque"
    if "low" in p.moderations:
        body["moderation"] = "low"
    if p.styles:
        body["style"] = "natural" if "natural" in p.styles else p.styles[0]
    if "b64_json" in p.response_formats:
        body["response_format"] = "b64_json"
    if p.accepts("user"):
        body["user"] = "imagegen-suite"
    full = {"model": ctx.endpoint.image_model, "prompt": "x", **body}
    refused = {v.param for v in validate_request(full, p)}
    return {k: v for k, v in body.items() if k not in refused}


def _lost(sent: Mapping[str, Any], req: UpstreamRequest) -> tuple[list[str], list[str]]:
    received = req.body if isinstance(req.body, dict) else {}
    dropped = [k for k in sent if k != "model" and k not in received]
    changed = [
        f"`{k}` from {sent[k]!r} to {received[k]!r}"
        for k in sent
        if k not in ("model", "prompt") and k in received and received[k] != sent[k]
    ]
    return dropped, changed


@check("gateway", needs_upstream=True)
def params_forwarded(ctx: CheckContext) -> None:
    """Every parameter of a valid request with all the profile's optional parameters set
    reaches the upstream with its value; a newer optional parameter (``safety_identifier``)
    the gateway refuses or drops is a warning.

    Fails with: "the gateway dropped `output_format`, `moderation`: the upstream received
    model, prompt, quality, size" or "the gateway changed `n` from 2 to 1".
    """
    body = full_request(ctx)
    call = ctx.generate(**body)
    _reached_nothing(ctx, call, "a valid request with every optional parameter")
    first = _exchange(call).upstream[0]
    sent = {"prompt": call.body.get("prompt"), **body}
    dropped, changed = _lost(sent, first)
    if dropped:
        received = ", ".join(sorted(first.body)) if isinstance(first.body, dict) else "no body"
        names = ", ".join(f"`{k}`" for k in dropped)
        ctx.fail(f"the gateway dropped {names}: the upstream received {received}", call=call)
    if changed:
        ctx.fail(f"the gateway changed {'; '.join(changed)}", call=call)
    for param, value in NEWER_OPTIONAL_PARAMS.items():
        if not ctx.profile.accepts(param):
            continue
        params: dict[str, Any] = {**ctx.cheap_params(), param: value}
        newer = ctx.generate(expect_images=False, **params)
        reached = _exchange(newer).upstream
        if not reached:
            ctx.warn(
                f"the gateway does not accept the newer optional parameter `{param}`: "
                f"{newer.describe()} (the upstream received nothing)"
            )
        elif param not in (reached[0].body or {}):
            ctx.warn(f"the gateway dropped the newer optional parameter `{param}`")


# ---------------------------------------------------------------------- attempts and time


@check("gateway", needs_upstream=True)
def attempts_within_limits(ctx: CheckContext) -> None:
    """With the upstream failing (500 on every attempt), the gateway's upstream attempts for
    one client request, times the client's own ``max_retries``, fit in ``deadline_s``; extra
    attempts that fit are a warning.

    Fails with: "the gateway made 4 upstream attempts for one client request in 12.30 s; with
    max_retries=2 a client waits up to 36.90 s, past deadline_s=30".
    """
    ctx.script_fault("server_error", times=None)
    call = ctx.generate(expect_images=False, **ctx.cheap_params())
    exchange = _exchange(call)
    n = exchange.attempts
    retries = ctx.endpoint.max_retries
    deadline = ctx.endpoint.deadline_s
    if call.diagnosis is not None and call.diagnosis.category == Category.TIMEOUT:
        ctx.fail(
            f"the client's request timed out (timeout_s={ctx.endpoint.timeout_s:g}, "
            f"deadline_s={deadline:g}) while the gateway was still retrying ({n} upstream "
            f"attempt(s) so far: {_statuses(exchange)})",
            call=call,
        )
    if n <= 1:
        return
    worst = call.latency_s * (1 + retries)
    figures = (
        f"the gateway made {n} upstream attempts for one client request in "
        f"{call.latency_s:.2f} s ({_statuses(exchange)})"
    )
    if worst > deadline:
        ctx.fail(
            f"{figures}; with max_retries={retries} a client waits up to {worst:.2f} s, past "
            f"deadline_s={deadline:g}",
            call=call,
        )
    ctx.warn(
        f"{figures}; with max_retries={retries} a client waits up to {worst:.2f} s, within "
        f"deadline_s={deadline:g}"
    )


@check("gateway", needs_upstream=True)
def upstream_errors_reported(ctx: CheckContext) -> None:
    """A one-off upstream error (500, 429) reaches the client; one the gateway hides by
    retrying (the client sees 200 with images) is a warning naming it, and a success
    without images in its place (the error answered with status 200) fails.

    Fails with: "the upstream answered 500 server_error and the client saw HTTP 200 without
    images (malformed_response ...): the gateway turned an upstream error into a success";
    a hidden retry as a DeviationWarning: "upstream errors hidden by the gateway's retries:
    the upstream answered 500 server_error, 200 and the client saw HTTP 200".
    """
    hidden = []
    for fault in ("server_error", "rate_limit"):
        ctx.clear_faults()
        ctx.script_fault(fault, times=1)
        call = ctx.generate(expect_images=False, **ctx.cheap_params())
        exchange = _exchange(call)
        errors = [r for r in exchange.upstream if r.status is not None and r.status >= 400]
        if not (errors and call.status is not None and call.status < 400):
            continue
        seen = ctx.images_in(call)
        if seen.diagnosis is not None:
            ctx.fail(
                f"the upstream answered {_statuses(exchange)} and the client saw HTTP "
                f"{call.status} without images ({seen.describe()}): the gateway turned an "
                f"upstream error into a success",
                call=seen,
            )
        hidden.append(
            f"the upstream answered {_statuses(exchange)} and the client saw HTTP {call.status}"
        )
    if hidden:
        ctx.warn("upstream errors hidden by the gateway's retries: " + "; ".join(hidden))


@check("gateway", needs_upstream=True)
def non_retryable_not_retried(ctx: CheckContext) -> None:
    """Non-retryable upstream errors (exhausted quota, authentication, content policy, an
    invalid request) are sent upstream once: retrying them cannot succeed.

    Fails with: "the gateway retried non-retryable upstream errors: insufficient_quota (429)
    3 times; they cannot succeed, a retry only delays the answer".
    """
    from pytest_imagegen.request_builder import validate_request

    retried = []
    for fault, what in _NON_RETRYABLE:
        ctx.clear_faults()
        ctx.script_fault(fault, times=None)
        call = ctx.generate(expect_images=False, **ctx.cheap_params())
        if _exchange(call).attempts > 1:
            retried.append(f"{what} {_exchange(call).attempts} times")
    ctx.clear_faults()
    invalid = {**ctx.cheap_params(), "size": _INVALID_SIZE}
    body = {"model": ctx.endpoint.image_model, "prompt": "x", **invalid}
    if validate_request(body, ctx.profile):
        call = ctx.generate(expect_images=False, **invalid)
        if _exchange(call).attempts > 1:
            retried.append(f"an invalid request (400) {_exchange(call).attempts} times")
    if retried:
        ctx.fail(
            "the gateway retried non-retryable upstream errors: "
            + "; ".join(retried)
            + "; they cannot succeed, a retry only delays the answer"
        )


# ---------------------------------------------------------------------- error answers


def _client_error(call: Call) -> Mapping[str, Any]:
    doc = call.document
    error = doc.get("error") if isinstance(doc, dict) else None
    return error if isinstance(error, dict) else {}


@check("gateway", needs_upstream=True)
def error_fields_preserved(ctx: CheckContext) -> None:
    """An upstream error (rate limit, quota, content policy, unknown model) reaches the client
    with the category it had upstream; a changed ``type``, ``code`` (e.g. rewritten to the
    status string) or ``param`` is a warning.

    Fails with: "the upstream answered 429 insufficient_quota (quota) and the client's answer
    is classified rate_limit: HTTP 429 ..." (a client would retry it).
    """
    broken, lost = [], []
    for fault, options, category in _ERROR_FAULTS:
        ctx.clear_faults()
        ctx.script_fault(fault, times=None, **options)
        call = ctx.generate(expect_images=False, **ctx.cheap_params())
        answered = [r for r in _exchange(call).upstream if r.error is not None]
        if not answered:
            continue  # the gateway answered itself: see route and model checks
        upstream = answered[-1]
        code = upstream.error.get("code") if upstream.error else None
        what = f"the upstream answered {upstream.status} {code or fault} ({category})"
        if call.diagnosis is None:
            broken.append(f"{what} and the client got HTTP {call.status} without an error")
            continue
        if call.diagnosis.category != category:
            broken.append(f"{what} and the client's answer is classified {call.diagnosis}")
            continue
        client = _client_error(call)
        for key in ("type", "code", "param"):
            before = (upstream.error or {}).get(key)
            after = client.get(key)
            if before == after:
                continue
            note = ""
            if key == "code" and str(after) == str(call.status):
                note = " (rewritten to the status string)"
            lost.append(f"{fault}: `{key}` {before!r} became {after!r}{note}")
    if broken:
        ctx.fail("; ".join(broken))
    if lost:
        ctx.warn("the gateway changed upstream error fields: " + "; ".join(lost))


@check("gateway", needs_upstream=True)
def retry_after_preserved(ctx: CheckContext) -> None:
    """When the upstream answers 429 with Retry-After, the gateway's 429 carries Retry-After
    too.

    Fails with: "the upstream answered 429 with Retry-After: 2; the gateway's 429 has no
    Retry-After, so clients cannot tell how long to wait".
    """
    ctx.script_fault("rate_limit", times=None, retry_after=2)
    call = ctx.generate(expect_images=False, **ctx.cheap_params())
    _reached_nothing(ctx, call, "a rate-limited request")
    limited = [r for r in _exchange(call).upstream if r.status == 429 and r.retry_after]
    if not limited or call.status != 429:
        return  # another answer: error_fields_preserved judges it
    if not (call.headers.get("retry-after") or call.headers.get("retry-after-ms")):
        ctx.fail(
            f"the upstream answered 429 with Retry-After: {limited[-1].retry_after}; the "
            "gateway's 429 has no Retry-After, so clients cannot tell how long to wait",
            call=call,
        )


# ---------------------------------------------------------------------- keys


@check("gateway", needs_upstream=True)
def upstream_key_not_returned(ctx: CheckContext) -> None:
    """No answer of the gateway (a success, an upstream 401, an upstream 500) carries the key
    the gateway uses upstream, in a header or the body.

    Fails with: "the gateway's answer carried the key it uses upstream (HTTP 401 ...): anyone
    calling the gateway can read it".
    """
    calls = [ctx.generate(expect_images=False, **ctx.cheap_params())]
    for fault in ("auth_error", "server_error"):
        ctx.clear_faults()
        ctx.script_fault(fault, times=None)
        calls.append(ctx.generate(expect_images=False, **ctx.cheap_params()))
    for call in calls:
        if _exchange(call).upstream_key_returned:
            ctx.fail(
                f"the gateway's answer carried the key it uses upstream ({call.describe()}): "
                "anyone calling the gateway can read it",
                call=call,
            )


@check("gateway", needs_upstream=True)
def client_key_not_forwarded(ctx: CheckContext) -> None:
    """The upstream never receives the client's own key: the gateway authenticates upstream
    with its own credentials.

    Fails with: "the upstream received the client's key: the gateway forwards the credentials
    its clients send instead of its own".
    """
    tap = ctx.upstream_tap
    replaying = tap is not None and tap.replaying
    upstream = ctx.endpoint.upstream
    if not replaying:
        if not ctx.endpoint.api_key and not ctx.endpoint.headers:
            ctx.skip(f"endpoint {ctx.endpoint.name!r} sends no key, so none can be forwarded")
        if upstream is not None and upstream.api_key and upstream.api_key == ctx.endpoint.api_key:
            ctx.skip("the gateway's upstream key is the client's key: nothing tells them apart")
    calls = [ctx.generate(expect_images=False, **ctx.cheap_params())]
    if ctx.endpoint.chat_model:
        calls.append(ctx.chat(ctx.endpoint.chat_model))
    for call in calls:
        if any(req.key == "client" for req in _exchange(call).upstream):
            ctx.fail(
                "the upstream received the client's key: the gateway forwards the credentials "
                "its clients send instead of its own"
            )
