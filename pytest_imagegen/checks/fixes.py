"""What to change on the endpoint when a check fails: the report's hint for a failure.

The classifier's hints (:mod:`pytest_imagegen.errors`) tell a *client* what to do about an
error it got ("retry with backoff" for a 500). A failed check is about the *endpoint*: a
wrong key answered with 500 is fixed by answering 401, not by retrying. These functions
name that fix from what was expected and what was seen.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pytest_imagegen.errors import Category

if TYPE_CHECKING:
    from pytest_imagegen.checks.context import Call

#: What OpenAI answers for each refusal a check expects, and where that answer must come from.
_REFUSALS: Mapping[Category, str] = {
    Category.AUTHENTICATION: (
        "answer a wrong or missing key with HTTP 401 and error code 'invalid_api_key' "
        "before routing the request (check the key first, in the gateway or relay)"
    ),
    Category.MODEL_NOT_FOUND: (
        "answer a model it does not serve with HTTP 404 and code 'model_not_found' (relays: "
        "no channel for the model) instead of routing it elsewhere"
    ),
    Category.INVALID_REQUEST: (
        "validate the request against the model's parameters and answer HTTP 400 "
        "invalid_request_error naming the parameter in `param`"
    ),
    Category.RATE_LIMIT: (
        "answer too many requests with HTTP 429 'rate_limit_exceeded' and Retry-After"
    ),
    Category.QUOTA: "answer exhausted credit with HTTP 429 'insufficient_quota' (not a rate limit)",
    Category.SERVER: "answer an internal failure with HTTP 500 in OpenAI's JSON error envelope",
}

_WHY: Mapping[Category, str] = {
    Category.SERVER: "a 5xx tells clients to retry a request that can never succeed",
    Category.RATE_LIMIT: "a rate limit tells clients to retry a request that can never succeed",
    Category.TIMEOUT: "a timeout tells clients to retry a request that can never succeed",
    Category.MALFORMED_RESPONSE: "clients cannot tell the failure from a broken answer",
}


def refusal(expected: Category, call: Call | None = None) -> str:
    """The fix when the endpoint should have refused with ``expected`` and did otherwise."""
    what = _REFUSALS.get(expected, f"answer this request with a {expected} error as OpenAI does")
    if call is not None and call.diagnosis is None:
        return f"Make the endpoint {what}; it answered HTTP {call.status} as if nothing was wrong."
    seen = call.diagnosis.category if call is not None and call.diagnosis is not None else None
    why = _WHY.get(seen, "") if seen is not None else ""
    return f"Make the endpoint {what}" + (f": {why}." if why else ".")


def error_body(call: Call) -> str:
    """The fix for an error answer that is not OpenAI's JSON envelope."""
    content_type = call.headers.get("content-type", "")
    head = call.content[:200].lstrip().lower()
    if "html" in content_type or head.startswith((b"<html", b"<!doctype")):
        return (
            f'Return errors as JSON {{"error": {{message, type, param, code}}}}: this HTTP '
            f"{call.status} HTML page comes from a proxy or CDN in front of the API; let the "
            "API's own error bodies through (nginx: proxy_intercept_errors off) or map the "
            "proxy's errors to OpenAI's envelope."
        )
    return (
        f'Return errors in OpenAI\'s envelope {{"error": {{message, type, param, code}}}} '
        f"(string message and type; param and code a string or null); the HTTP {call.status} "
        "body differs, so SDKs lose the code, type and param."
    )


def error_param(param: str) -> str:
    """The fix for a refusal whose error does not name the parameter at fault."""
    return (
        f'Name the parameter at fault in the error (`param: "{param}"`) as OpenAI does: a '
        "relay or gateway that rewrites error bodies must pass the upstream's `param` and "
        "`code` through."
    )


def accepted(param: str, model: str) -> str:
    """The fix when an invalid ``param`` was accepted (answered 2xx)."""
    return (
        f"Refuse what {model} refuses: validate `{param}` (or forward it unchanged so the "
        "upstream refuses it) and answer HTTP 400 naming it; a gateway that drops or "
        "rewrites it hides the caller's bug."
    )


def wrong_images(what: str) -> str:
    """The fix when the images differ from what was asked for (``what``: size, format, n)."""
    return (
        f"Pass `{what}` through to the model unchanged and return what it produced: the "
        f"endpoint answered with another {what} than asked for (a relay or gateway that drops, "
        "maps or caches this parameter)."
    )
