"""What to do next: the generic hint of each category, and the specific hints by category
and detail tag."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pytest_imagegen.classify._text import _clean_field, _clean_message
from pytest_imagegen.classify.categories import (
    AUTHENTICATION,
    CONTENT_POLICY,
    INVALID_REQUEST,
    MALFORMED_RESPONSE,
    MODEL_NOT_FOUND,
    NETWORK,
    PERMISSION,
    QUOTA,
    RATE_LIMIT,
    SERVER,
    TIMEOUT,
    UNKNOWN,
)
from pytest_imagegen.classify.evidence import _Evidence
from pytest_imagegen.errors import Category, category_of

_GENERIC_HINTS: Mapping[Category, str] = {
    AUTHENTICATION: (
        "Check the API key: the variable named by api_key_env (or OPENAI_API_KEY) must hold a "
        "valid, unrevoked key issued for this base_url; retrying will not help."
    ),
    PERMISSION: (
        "The key is valid but not allowed to do this (organization verification, region, or "
        "model not granted to this key/project): fix the access or use another model; "
        "retrying will not help."
    ),
    QUOTA: "Top up credit or raise the spend limit; retrying will not help.",
    RATE_LIMIT: (
        "Rate limited: wait (honour Retry-After when given) and retry, or lower the request rate."
    ),
    TIMEOUT: (
        "The request timed out: image generation can take minutes, so keep timeout_s long "
        "enough but under deadline_s, and let the fallback chain try a cheaper quality or a "
        "smaller size."
    ),
    NETWORK: (
        "The connection failed (refused, reset, DNS or TLS): check base_url and that the "
        "server or relay is reachable; retrying may help."
    ),
    SERVER: "The server failed: retry with backoff or fall back to another step or endpoint.",
    MODEL_NOT_FOUND: (
        "The model is unknown here or the wrong kind for this endpoint: check image_model "
        "(an image model such as gpt-image-1 for /images/generations; chat models go to "
        "/chat/completions) and, on a relay, its model mapping."
    ),
    INVALID_REQUEST: (
        "The request's shape or a parameter is wrong: fix the parameter named in `param` "
        "(build requests from the endpoint's profile); retrying will not help."
    ),
    CONTENT_POLICY: (
        "The prompt or the generated image was blocked by moderation: change the prompt "
        "(GPT-image models accept moderation='low'); retrying the same prompt will not help."
    ),
    MALFORMED_RESPONSE: (
        "The endpoint answered 2xx but not with a usable image response: retry; if it "
        "persists, check the relay's model mapping and response_format."
    ),
    UNKNOWN: (
        "Not recognised as any known error: look at the status and body; if it deserves a "
        "category, report it with the body."
    ),
}


def hint_for(category: Category | str) -> str:
    """The generic next step for a category (``Category`` or its name; an unknown name gets
    the hint of ``unknown``)."""
    return _GENERIC_HINTS[category_of(category) or UNKNOWN]


# --- hints --------------------------------------------------------------------


@dataclass(frozen=True)
class _Case:
    """What a hint rule may look at."""

    ev: _Evidence
    category: Category
    tag: str
    retry_after: tuple[float | None, str]
    param: str | None

    @property
    def status(self) -> str:
        return f"HTTP {self.ev.status}" if self.ev.status is not None else "The endpoint"

    @property
    def relay(self) -> str | None:
        return self.ev.relay

    @property
    def wait(self) -> str:
        seconds, source = self.retry_after
        if seconds is not None:
            return f"wait {seconds:g} s ({source}) before retrying"
        return "wait and retry with backoff (no Retry-After was given)"


def _always(case: _Case) -> bool:
    return True


def _tag(*tags: str) -> Callable[[_Case], bool]:
    return lambda case: case.tag in tags


def _timeout_hint(case: _Case) -> str:
    ev, tag = case.ev, case.tag
    hint = _TIMEOUT_HINTS.get(tag, _TIMEOUT_HINTS["read"])
    if ev.timeout_s is not None and ev.transport is not None and tag != "total":
        phase = "read" if tag in ("read", "") else tag
        hint = f"No progress within the client's {phase} timeout ({ev.timeout_s:g} s). {hint}"
    return hint


def _param_hint(case: _Case) -> str:
    said = _clean_message(case.ev.message)[:160] if case.ev.message else ""
    detail = f" ({said})" if said else ""
    return (
        f"Fix the request parameter '{_clean_field(case.param)}'{detail}: build requests "
        "from the endpoint's profile; retrying will not help."
    )


def _server_hint(case: _Case) -> str:
    ev = case.ev
    where = f"{case.status}: the server or a gateway failed" if ev.status else "The server failed"
    return f"{where}: retry with backoff or fall back to another step or endpoint."


def _malformed_hint(case: _Case) -> str:
    what = "the body could not be decoded" if case.tag == "decoding" else None
    what = what or case.ev.body or "not a valid image response"
    return (
        f"{case.status} answered without a usable image ({what}): retry; if it persists, "
        "check the relay's model mapping (images may be routed to a chat model) and "
        "response_format."
    )


Hint = str | Callable[[_Case], str]

#: The specific hints, in order: the first rule of the diagnosis's category whose condition
#: holds gives the hint; a category with no matching rule gets its generic hint.
_HINT_RULES: tuple[tuple[Category, Callable[[_Case], bool], Hint], ...] = (
    (
        QUOTA,
        _tag("billing"),
        "The billing hard limit was reached or billing is inactive: raise the limit or fix "
        "billing in the organization's settings; retrying will not help.",
    ),
    (
        QUOTA,
        lambda c: c.tag == "budget" or (c.relay == "litellm" and "budget" in c.ev.scan_text()),
        "The gateway's budget for this key/team is spent: raise max_budget on the proxy or "
        "use another key; retrying will not help.",
    ),
    (
        QUOTA,
        lambda c: c.tag == "relay" or c.relay == "one-api",
        "The relay token's or user's balance is used up: top up on the relay or use another "
        "token; retrying will not help.",
    ),
    (
        RATE_LIMIT,
        _tag("cf1015"),
        lambda c: f"Cloudflare rate-limited this client (error 1015): {c.wait}, or lower the rate.",
    ),
    (
        RATE_LIMIT,
        _tag("saturated"),
        lambda c: (
            f"The relay's upstream is saturated: {c.wait}, or use another group/channel on the "
            "relay."
        ),
    ),
    (RATE_LIMIT, _always, lambda c: f"Rate limited: {c.wait}, or lower the request rate."),
    (TIMEOUT, _always, _timeout_hint),
    (NETWORK, _always, lambda c: _NETWORK_HINTS.get(c.tag, _GENERIC_HINTS[NETWORK])),
    (
        AUTHENTICATION,
        _tag("gateway_no_db"),
        lambda c: (
            f"{c.status}: the gateway has no database to look this key up in (LiteLLM without "
            "one accepts only its master_key): send the gateway's master key via api_key_env, "
            "or connect its database for virtual keys; this is the key, not a request "
            "parameter, and retrying will not help."
        ),
    ),
    (
        AUTHENTICATION,
        lambda c: c.tag == "relay_token" or c.relay in ("one-api", "litellm"),
        "The relay rejected the token: use a token issued by this relay (not an OpenAI key) "
        "that is enabled and not expired, via api_key_env; retrying will not help.",
    ),
    (PERMISSION, _always, lambda c: _PERMISSION_HINTS.get(c.tag, _GENERIC_HINTS[PERMISSION])),
    (
        MODEL_NOT_FOUND,
        lambda c: (
            c.tag == "relay_channel" or (c.relay == "one-api" and c.tag in ("", "status_404"))
        ),
        "No channel serves this model: check the relay's model mapping (and that the token's "
        "group has a channel for it); retrying will not help.",
    ),
    (
        MODEL_NOT_FOUND,
        lambda c: c.tag == "litellm" or c.relay == "litellm",
        "The gateway cannot route this model name: check its model list (model_name in the "
        "proxy config) and the key's allowed models.",
    ),
    (
        MODEL_NOT_FOUND,
        lambda c: c.tag == "status_404" and not c.ev.error_object,
        lambda c: (
            f"{c.status}: the model or the route does not exist: check image_model and that "
            "base_url ends with /v1."
        ),
    ),
    (
        MODEL_NOT_FOUND,
        _always,
        lambda c: _MODEL_HINTS.get(c.tag, _GENERIC_HINTS[MODEL_NOT_FOUND]),
    ),
    (
        INVALID_REQUEST,
        _tag("too_large"),
        "The request (or answer) is larger than a proxy on the way accepts (limits of 1 MB or "
        "4.5 MB are common): send a smaller image, ask for a smaller or compressed output, or "
        "raise the proxy's limit.",
    ),
    (
        INVALID_REQUEST,
        _tag("route"),
        lambda c: (
            f"{c.status}: the endpoint has no such route: check base_url (it usually ends with "
            "/v1) and that images go to /images/generations."
        ),
    ),
    (INVALID_REQUEST, lambda c: bool(c.param), _param_hint),
    (
        CONTENT_POLICY,
        _tag("azure_blocked"),
        "The Azure resource is temporarily blocked for content-policy violations: contact "
        "Azure support or use another resource; retrying will not help.",
    ),
    (
        SERVER,
        lambda c: c.tag == "wrapped" or (c.ev.status is not None and 200 <= c.ev.status <= 299),
        lambda c: (
            f"{c.status} carried an error body (an upstream error wrapped by a relay): retry; "
            "if it persists, check the relay's upstream channel."
        ),
    ),
    (
        SERVER,
        _tag("conflict"),
        lambda c: f"{c.status} (conflict, e.g. a lock timeout): retry with backoff.",
    ),
    (SERVER, _always, _server_hint),
    (MALFORMED_RESPONSE, _always, _malformed_hint),
)


def _hint(
    ev: _Evidence,
    category: Category,
    tag: str,
    retry_after: tuple[float | None, str],
    param: str | None,
) -> str:
    case = _Case(ev, category, tag, retry_after, param)
    for rule_category, applies, hint in _HINT_RULES:
        if rule_category == category and applies(case):
            return hint(case) if callable(hint) else hint
    if category != UNKNOWN and category in _GENERIC_HINTS:
        return _GENERIC_HINTS[category]
    return _unknown_hint(ev, tag)


_TIMEOUT_HINTS: Mapping[str, str] = {
    "read": _GENERIC_HINTS[TIMEOUT],
    "total": (
        "The answer did not finish within its time limit (the message says which, and how "
        "much had arrived): a slow or dribbled answer. Raise timeout_s (and deadline_s) if "
        "the model needs longer, or add a faster fallback step."
    ),
    "connect": (
        "Could not connect within the connect timeout: the host is unreachable or "
        "firewalled; check base_url, then retry."
    ),
    "write": (
        "Sending the request timed out (a large image upload?): raise the write timeout or "
        "send a smaller image."
    ),
    "pool": (
        "No free connection in the client's pool in time: lower concurrency or raise the "
        "pool limits."
    ),
    "gateway": (
        "A gateway or CDN gave up waiting for the image (Cloudflare cuts at 100 s, many "
        "proxies at 60 s): fall back to a lower quality or smaller size, or use a route "
        "without that proxy limit."
    ),
    "request": "The server timed out waiting for the request: retry.",
    "client_closed": (
        "The proxy saw the client close the connection (HTTP 499), usually a client "
        "timeout: keep timeout_s long enough for this quality and size."
    ),
}

_NETWORK_HINTS: Mapping[str, str] = {
    "dns": "The host name in base_url does not resolve: check base_url and DNS.",
    "refused": (
        "Nothing listens at base_url's host and port: check base_url and that the server "
        "or relay is running."
    ),
    "tls": (
        "TLS failed: check http vs https in base_url and the server's certificate chain "
        "(httpx2 uses the OS trust store)."
    ),
    "reset": (
        "The connection was dropped mid-request (a proxy's idle timeout or an upstream "
        "crash): retry; if it repeats, check the proxy's timeouts."
    ),
    "proxy": "The HTTP proxy failed the request: check HTTPS_PROXY/HTTP_PROXY and the proxy.",
    "origin": (
        "The CDN could not reach the origin server (Cloudflare 521/523): the relay behind "
        "it is down; retry later or use another endpoint."
    ),
    "connect": "Could not connect to base_url's host: check base_url and the network.",
}

_PERMISSION_HINTS: Mapping[str, str] = {
    "verify": (
        "Verify the organization at https://platform.openai.com/settings/organization/general "
        "(access can take 15 minutes to propagate), or use a model that needs no "
        "verification; retrying will not help."
    ),
    "region": (
        "The API is not available from this country or region: call it from a supported "
        "region; retrying will not help."
    ),
    "model_grant": (
        "This key may not use this model: grant it (gateway key models, relay group or "
        "project permissions) or pick an allowed model; retrying will not help."
    ),
}

_MODEL_HINTS: Mapping[str, str] = {
    "wrong_kind": (
        "This model is the wrong kind for this endpoint: send image models (gpt-image-*, "
        "dall-e-*) to /images/generations and chat models to /chat/completions (check "
        "image_model vs chat_model)."
    ),
    "param_model": (
        "The endpoint rejects this model name: check image_model is an image model this "
        "endpoint serves (chat models go to /chat/completions) and, on a relay, its alias."
    ),
    "deployment": (
        "No Azure deployment has this name: the model is sent as the deployment name; "
        "map each model to its deployment in the endpoint's deployments table (a model "
        "without an entry goes under its own name) and check the name in the Azure portal "
        "(new deployments take a few minutes)."
    ),
}


def _unknown_hint(ev: _Evidence, tag: str) -> str:
    if tag == "success":
        return (
            f"HTTP {ev.status if ev.status is not None else '2xx'} with {ev.images} image "
            "item(s): this is a success, not an error."
        )
    if tag == "url":
        return "base_url is not a valid http(s) URL: fix the endpoint's base_url."
    if tag == "redirects":
        return "Too many redirects: check base_url (http vs https, the /v1 suffix)."
    if tag == "bad_status":
        return f"Status {ev.status} is not an HTTP status: the answer came from a broken proxy."
    if tag == "status" and ev.status is not None:
        if ev.message:
            seen = f" ({_clean_message(ev.message)[:160]!r})"
        else:
            seen = f" ({ev.body})" if ev.body else ""
        if 300 <= ev.status <= 399:
            return (
                f"HTTP {ev.status} redirect was not followed{seen}: check base_url (http vs "
                "https, the /v1 suffix)."
            )
        return f"HTTP {ev.status} with no recognisable error{seen}: look at the body."
    if tag == "error_object":
        parts = [
            f"{name} {_clean_field(value)!r}"
            for name, value in (("code", ev.code), ("type", ev.type))
            if value is not None
        ]
        if ev.message:
            parts.append(f"message {_clean_message(ev.message)[:160]!r}")
        what = ", ".join(parts) or "no code, type or message"
        return (
            f"An error object ({what}) matched no known error, and there was no HTTP status "
            "to go by: look at the raw response."
        )
    return f"Not a recognised error: saw {ev.seen or 'nothing usable'}."
