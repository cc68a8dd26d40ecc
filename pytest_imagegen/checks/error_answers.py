"""Area ``errors``: the right category for each failure, OpenAI's envelope, and what a
client needs to react (Retry-After on 429, quota told apart from rate limits)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pytest_imagegen.checks import fixes
from pytest_imagegen.checks.context import Call, CheckContext
from pytest_imagegen.checks.registry import check
from pytest_imagegen.errors import Category

if TYPE_CHECKING:
    import openai

    from pytest_imagegen.config import Endpoint

#: A key no endpoint accepts (not a secret: it is meant to be refused).
WRONG_KEY = "sk-imagegen-wrong-key-0000000000000000"
#: A model no endpoint serves.
UNKNOWN_MODEL = "imagegen-no-such-model-1"


# Azure OpenAI's front door (key, deployment and api-version refusals) answers
# {"error": {"code", "message"}} with no type or param: that is Azure, not a broken relay.
_AZURE_GATE_STATUSES = (401, 404)


def envelope_problem(call: Call, *, azure: bool = False) -> str | None:
    """Why an error answer is not OpenAI's ``{"error": {message, type, param, code}}``, or None.

    With ``azure``, Azure's own refusals of a key or deployment (401/404 with a string
    ``code`` and ``message``) are accepted as they are.
    """
    doc = call.document
    # One line, whitespace collapsed: a repr would show the page's "\r" literally.
    preview = " ".join(call.content[:80].decode("utf-8", "replace").split())[:60]
    if doc is None:
        return f"HTTP {call.status} answer is not JSON (body starts {preview!r})"
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        return f"HTTP {call.status} answer has no `error` object (body starts {preview!r})"
    missing = [k for k in ("message", "type", "param", "code") if k not in error]
    if (
        azure
        and call.status in _AZURE_GATE_STATUSES
        and set(missing) <= {"type", "param"}
        and isinstance(error.get("code"), str)
        and isinstance(error.get("message"), str)
    ):
        return None
    if missing:
        return f"HTTP {call.status} `error` object lacks {', '.join(missing)}"
    if not isinstance(error["message"], str) or not isinstance(error["type"], str):
        return f"HTTP {call.status} `error.message` and `error.type` must be strings"
    for key in ("param", "code"):
        if error[key] is not None and not isinstance(error[key], str):
            return f"HTTP {call.status} `error.{key}` must be a string or null"
    return None


def wrong_key_headers(endpoint: Endpoint) -> dict[str, str] | None:
    """The endpoint's headers with every credential replaced by :data:`WRONG_KEY`: the
    well-known credential headers (Azure's ``api-key``, ``x-api-key``, ...) and those the
    endpoint declares in ``credential_headers``. Every other header is kept as configured:
    gateways route by headers whose names merely contain "key" or "token", and a wrong
    routing header gets the gateway's own refusal, not the authentication error under test.
    None when the endpoint has no credential at all."""
    credentials = endpoint.credential_header_names
    if not endpoint.api_key and not credentials:
        return None
    headers = dict(endpoint.headers)
    headers.update(dict.fromkeys(credentials, WRONG_KEY))
    return headers


def _wrong_key_client(ctx: CheckContext) -> openai.OpenAI | None:
    """A client whose credentials are all wrong (see :func:`wrong_key_headers`); None when
    the endpoint has no credentials at all, unless the check replays: a replay answers from
    the recording whatever key is configured (a CI replay has none), so the recorded
    wrong-key answer is judged again rather than skipped."""
    headers = wrong_key_headers(ctx.endpoint)
    if headers is None and ctx.replaying:
        headers = dict(ctx.endpoint.headers)
    if headers is None:
        return None
    return ctx.client(api_key=WRONG_KEY, default_headers=headers or None)


def _expect(ctx: CheckContext, call: Call, category: Category, what: str) -> None:
    if call.diagnosis is None:
        ctx.fail(
            f"{what} was answered with {call.describe()}; expected {category}",
            call=call,
            category=category,
            fix=fixes.refusal(category, call),
        )
    if call.diagnosis.category != category:
        ctx.fail(
            f"{what} was classified {call.diagnosis.category}, expected {category}: "
            f"{call.describe()}",
            call=call,
            category=category,
            fix=fixes.refusal(category, call),
        )


@check("errors")
def wrong_key_is_authentication(ctx: CheckContext) -> None:
    """A wrong API key gets an ``authentication`` error (HTTP 401 invalid_api_key); another
    status whose message says authentication (LiteLLM's 400 "No connected db.") passes with
    a ``DeviationWarning``.

    Fails with: "a wrong API key was classified server, expected authentication: server
    (HTTP 500 ...)" or "a wrong API key was answered with HTTP 200; expected authentication".
    """
    client = _wrong_key_client(ctx)
    if client is None:
        ctx.skip(f"endpoint {ctx.endpoint.name!r} has no API key, so a wrong one proves nothing")
    call = ctx.generate(client=client, expect_images=False, **ctx.cheap_params())
    _expect(ctx, call, Category.AUTHENTICATION, "a wrong API key")
    if call.status != 401:
        # Only the message says "wrong key" (LiteLLM without a database answers 400): the
        # SDK raises BadRequestError, so handlers of AuthenticationError miss it.
        ctx.warn(
            f"{ctx.endpoint.name}: a wrong API key was answered HTTP {call.status}, not 401; "
            f"only its message says authentication, so the SDK raises another error than "
            f"openai.AuthenticationError: {call.describe()}"
        )


@check("errors")
def unknown_model_is_model_not_found(ctx: CheckContext) -> None:
    """A model the endpoint does not serve gets ``model_not_found`` (OpenAI: 404; relays: 503
    "no channel").

    Fails with: "an unknown model was answered with HTTP 200, 1 image(s) ...; expected
    model_not_found".
    """
    call = ctx.generate(model=UNKNOWN_MODEL, expect_images=False, **ctx.cheap_params())
    _expect(ctx, call, Category.MODEL_NOT_FOUND, f"an unknown model ({UNKNOWN_MODEL!r})")


@check("errors")
def error_envelopes_are_openai_shaped(ctx: CheckContext) -> None:
    """The refusals of an unknown model, an invalid ``n`` and (with a key) a wrong key are
    JSON ``{"error": {"message", "type", "param", "code"}}`` as OpenAI sends them.

    Fails with: "HTTP 404 answer is not JSON (body starts '<html>...')" or "HTTP 401 answer
    has no `error` object".
    """
    calls = [
        ctx.generate(model=UNKNOWN_MODEL, expect_images=False, **ctx.cheap_params()),
        ctx.generate(expect_images=False, **{**ctx.cheap_params(), "n": ctx.profile.n_max + 1}),
    ]
    client = _wrong_key_client(ctx)
    if client is not None:
        calls.append(ctx.generate(client=client, expect_images=False, **ctx.cheap_params()))
    refused = [c for c in calls if c.status is not None and c.status >= 400]
    if not refused:
        ctx.skip("the endpoint refused none of the requests meant to fail; see errors.* checks")
    for call in refused:
        problem = envelope_problem(call, azure=ctx.endpoint.is_azure)
        if problem:
            ctx.fail(problem, call=call, fix=fixes.error_body(call))


@check("errors", needs_faults=True)
def rate_limit_carries_retry_after(ctx: CheckContext) -> None:
    """A 429 rate limit is classified ``rate_limit``, retryable, and carries Retry-After.

    Fails with: "the 429 rate-limit answer has no Retry-After header; clients cannot tell how
    long to wait" (or "... was classified quota, expected rate_limit").
    """
    ctx.script_fault("rate_limit", times=1)
    call = ctx.generate(expect_images=False, **ctx.cheap_params())
    _expect(ctx, call, Category.RATE_LIMIT, "a 429 rate limit")
    if call.diagnosis is not None and not call.diagnosis.retryable:
        ctx.fail("a 429 rate limit was classified not retryable", call=call)
    if call.diagnosis is None or call.diagnosis.retry_after_s is None:
        ctx.fail(
            "the 429 rate-limit answer has no Retry-After header; clients cannot tell how long "
            "to wait",
            call=call,
        )


@check("errors", needs_faults=True)
def quota_is_not_retryable(ctx: CheckContext) -> None:
    """Exhausted quota (429 insufficient_quota) is classified ``quota``, not retryable, so a
    client stops instead of retrying a request that can only fail again.

    Fails with: "exhausted quota was classified rate_limit, expected quota" (a client would
    retry it).
    """
    ctx.script_fault("quota", times=1)
    call = ctx.generate(expect_images=False, **ctx.cheap_params())
    _expect(ctx, call, Category.QUOTA, "exhausted quota")
    if call.diagnosis is not None and call.diagnosis.retryable:
        ctx.fail("exhausted quota was classified retryable; a client would retry it", call=call)


@check("errors", needs_faults=True)
def server_error_is_retryable(ctx: CheckContext) -> None:
    """A 500 server error is classified ``server``, retryable, in OpenAI's JSON envelope.

    Fails with: "HTTP 500 answer is not JSON (body starts '<html>...')" or "a 500 server error
    was classified unknown, expected server".
    """
    ctx.script_fault("server_error", times=1)
    call = ctx.generate(expect_images=False, **ctx.cheap_params())
    _expect(ctx, call, Category.SERVER, "a 500 server error")
    if call.diagnosis is not None and not call.diagnosis.retryable:
        ctx.fail("a 500 server error was classified not retryable", call=call)
    problem = envelope_problem(call)
    if problem:
        ctx.fail(problem, call=call, fix=fixes.error_body(call))
