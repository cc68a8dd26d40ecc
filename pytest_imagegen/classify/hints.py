"""What to do next: the generic hint of each category, and the specific hints by category
and detail tag."""

from __future__ import annotations

from collections.abc import Mapping

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
from pytest_imagegen.errors import Category

_GENERIC_HINTS: Mapping[str, str] = {
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


def hint_for(category: str) -> str:
    """The generic next step for a category (``Category`` or its string value)."""
    value = category.value if isinstance(category, Category) else str(category)
    return _GENERIC_HINTS.get(value, _GENERIC_HINTS[UNKNOWN])


# --- hints --------------------------------------------------------------------


def _hint(
    ev: _Evidence,
    category: str,
    tag: str,
    retry_after: tuple[float | None, str],
    param: str | None,
) -> str:
    status = f"HTTP {ev.status}" if ev.status is not None else "The endpoint"
    relay = ev.relay
    if category == QUOTA:
        if tag == "billing":
            return (
                "The billing hard limit was reached or billing is inactive: raise the limit "
                "or fix billing in the organization's settings; retrying will not help."
            )
        if tag == "budget" or (relay == "litellm" and "budget" in ev.scan_text()):
            return (
                "The gateway's budget for this key/team is spent: raise max_budget on the "
                "proxy or use another key; retrying will not help."
            )
        if tag == "relay" or relay == "one-api":
            return (
                "The relay token's or user's balance is used up: top up on the relay or use "
                "another token; retrying will not help."
            )
        return _GENERIC_HINTS[QUOTA]
    if category == RATE_LIMIT:
        seconds, source = retry_after
        if seconds is not None:
            wait = f"wait {seconds:g} s ({source}) before retrying"
        else:
            wait = "wait and retry with backoff (no Retry-After was given)"
        if tag == "cf1015":
            return f"Cloudflare rate-limited this client (error 1015): {wait}, or lower the rate."
        if tag == "saturated":
            return (
                f"The relay's upstream is saturated: {wait}, or use another group/channel "
                "on the relay."
            )
        return f"Rate limited: {wait}, or lower the request rate."
    if category == TIMEOUT:
        hint = _TIMEOUT_HINTS.get(tag, _TIMEOUT_HINTS["read"])
        if ev.timeout_s is not None and ev.transport is not None and tag != "total":
            phase = "read" if tag in ("read", "") else tag
            hint = f"No progress within the client's {phase} timeout ({ev.timeout_s:g} s). {hint}"
        return hint
    if category == NETWORK:
        return _NETWORK_HINTS.get(tag, _GENERIC_HINTS[NETWORK])
    if category == AUTHENTICATION:
        if tag == "gateway_no_db":
            return (
                f"{status}: the gateway has no database to look this key up in (LiteLLM "
                "without one accepts only its master_key): send the gateway's master key via "
                "api_key_env, or connect its database for virtual keys; this is the key, not "
                "a request parameter, and retrying will not help."
            )
        if tag == "relay_token" or relay in ("one-api", "litellm"):
            return (
                "The relay rejected the token: use a token issued by this relay (not an "
                "OpenAI key) that is enabled and not expired, via api_key_env; retrying will "
                "not help."
            )
        return _GENERIC_HINTS[AUTHENTICATION]
    if category == PERMISSION:
        return _PERMISSION_HINTS.get(tag, _GENERIC_HINTS[PERMISSION])
    if category == MODEL_NOT_FOUND:
        if tag == "relay_channel" or (relay == "one-api" and tag in ("", "status_404")):
            return (
                "No channel serves this model: check the relay's model mapping (and that the "
                "token's group has a channel for it); retrying will not help."
            )
        if tag == "litellm" or relay == "litellm":
            return (
                "The gateway cannot route this model name: check its model list (model_name "
                "in the proxy config) and the key's allowed models."
            )
        if tag == "status_404" and not ev.error_object:
            return (
                f"{status}: the model or the route does not exist: check image_model and that "
                "base_url ends with /v1."
            )
        return _MODEL_HINTS.get(tag, _GENERIC_HINTS[MODEL_NOT_FOUND])
    if category == INVALID_REQUEST:
        if tag == "too_large":
            return (
                "The request (or answer) is larger than a proxy on the way accepts (limits "
                "of 1 MB or 4.5 MB are common): send a smaller image, ask for a smaller or "
                "compressed output, or raise the proxy's limit."
            )
        if tag == "route":
            return (
                f"{status}: the endpoint has no such route: check base_url (it usually ends "
                "with /v1) and that images go to /images/generations."
            )
        if param:
            said = _clean_message(ev.message)[:160] if ev.message else ""
            detail = f" ({said})" if said else ""
            return (
                f"Fix the request parameter '{_clean_field(param)}'{detail}: build requests "
                "from the endpoint's profile; retrying will not help."
            )
        return _GENERIC_HINTS[INVALID_REQUEST]
    if category == CONTENT_POLICY:
        if tag == "azure_blocked":
            return (
                "The Azure resource is temporarily blocked for content-policy violations: "
                "contact Azure support or use another resource; retrying will not help."
            )
        return _GENERIC_HINTS[CONTENT_POLICY]
    if category == SERVER:
        if tag == "wrapped" or (ev.status is not None and 200 <= ev.status <= 299):
            return (
                f"{status} carried an error body (an upstream error wrapped by a relay): "
                "retry; if it persists, check the relay's upstream channel."
            )
        if tag == "conflict":
            return f"{status} (conflict, e.g. a lock timeout): retry with backoff."
        where = f"{status}: the server or a gateway failed" if ev.status else "The server failed"
        return f"{where}: retry with backoff or fall back to another step or endpoint."
    if category == MALFORMED_RESPONSE:
        what = ev.body or "not a valid image response"
        if tag == "decoding":
            what = "the body could not be decoded"
        return (
            f"{status} answered without a usable image ({what}): retry; if it persists, "
            "check the relay's model mapping (images may be routed to a chat model) and "
            "response_format."
        )
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
        "No Azure deployment has this name: the model must be the deployment name; check "
        "it in the Azure portal (new deployments take a few minutes)."
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
