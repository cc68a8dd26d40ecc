"""Exception types and the error classifier.

Three kinds of error are kept apart: usage/config errors (raised at start-up and shown as
``pytest.UsageError``), endpoint errors (what an image endpoint answered, carried as a
:class:`Diagnosis`), and conformance failures (``AssertionError`` subclasses, so pytest
reports them as test failures).

This module must stay cheap to import: nothing from ``openai``/``httpx2`` at module level.
"""

from __future__ import annotations

import email.utils
import errno
import json
import math
import re
import reprlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class ImagegenError(Exception):
    """Base class of every error pytest-imagegen raises on purpose."""


class ConfigError(ImagegenError):
    """The configuration (file, environment or command line) is wrong; says how to fix it."""


class ModelSeparationError(ConfigError):
    """A chat model would be used for image calls, or the two models are the same."""


class BudgetExceededError(ImagegenError):
    """A live request would take the run's estimated spend past ``budget_usd``."""


class CassetteError(ImagegenError):
    """A cassette is missing, corrupt, or has no recording for a request."""


class MalformedResponse(ImagegenError, ValueError):
    """A 2xx answer that is not a valid image response (the message says what is wrong)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ConformanceFailure(AssertionError):
    """A conformance check found the endpoint misbehaving.

    ``diagnosis`` (when the failure came from an endpoint error) feeds the report's
    category and hint columns.
    """

    def __init__(self, message: str, *, diagnosis: Diagnosis | None = None) -> None:
        super().__init__(message)
        self.diagnosis = diagnosis


class Category(str, Enum):
    """The twelve error categories of DESIGN.md."""

    AUTHENTICATION = "authentication"
    PERMISSION = "permission"
    QUOTA = "quota"
    RATE_LIMIT = "rate_limit"
    TIMEOUT = "timeout"
    NETWORK = "network"
    SERVER = "server"
    MODEL_NOT_FOUND = "model_not_found"
    INVALID_REQUEST = "invalid_request"
    CONTENT_POLICY = "content_policy"
    MALFORMED_RESPONSE = "malformed_response"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Diagnosis:
    """What an endpoint error (or a bad 2xx) means, and what to do about it."""

    category: str
    problem_class: str  # technical | quality | efficiency | cost
    retryable: bool
    hint: str
    retry_after_s: float | None = None
    status: int | None = None
    code: str | None = None
    type: str | None = None
    param: str | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = f"HTTP {self.status} " if self.status is not None else ""
        detail = f": {self.message}" if self.message else ""
        head = f"{self.category} ({where}code={self.code!r}, param={self.param!r})"
        return f"{head}{detail}. {self.hint}"


# ---------------------------------------------------------------------------
# The classifier
#
# ``classify`` turns whatever an image call produced (an SDK exception, an httpx2
# exception or response, a raw status/headers/body triple, a parsed body) into a
# ``Diagnosis``. It gathers evidence first (status, headers, code-like tokens, human
# text), then decides in a fixed order: quota signals anywhere, then ``code``/``type``,
# then message patterns (English and Chinese relay texts), then the status, then weak
# generic types. It is total: a bug inside it yields an ``unknown`` diagnosis, never an
# exception that would hide the endpoint's own error.
# ---------------------------------------------------------------------------

MESSAGE_MAX_CHARS = 500
_FIELD_MAX_CHARS = 100
_SCAN_MAX_CHARS = 16_384  # error texts are short; pages and huge bodies are cut, not scanned whole
_JSON_MAX_BYTES = 8 * 1024 * 1024  # bigger bodies are never error envelopes
_NEST_MAX = 4  # error objects inside error objects (Azure inner errors, relay-wrapped upstreams)
_CHAIN_MAX = 10  # __cause__/__context__ links followed
_HEADERS_MAX = 256

AUTHENTICATION = Category.AUTHENTICATION.value
PERMISSION = Category.PERMISSION.value
QUOTA = Category.QUOTA.value
RATE_LIMIT = Category.RATE_LIMIT.value
TIMEOUT = Category.TIMEOUT.value
NETWORK = Category.NETWORK.value
SERVER = Category.SERVER.value
MODEL_NOT_FOUND = Category.MODEL_NOT_FOUND.value
INVALID_REQUEST = Category.INVALID_REQUEST.value
CONTENT_POLICY = Category.CONTENT_POLICY.value
MALFORMED_RESPONSE = Category.MALFORMED_RESPONSE.value
UNKNOWN = Category.UNKNOWN.value

# DESIGN.md's table, verbatim.
PROBLEM_CLASS: Mapping[str, str] = {
    AUTHENTICATION: "technical",
    PERMISSION: "technical",
    QUOTA: "cost",
    RATE_LIMIT: "efficiency",
    TIMEOUT: "efficiency",
    NETWORK: "technical",
    SERVER: "technical",
    MODEL_NOT_FOUND: "technical",
    INVALID_REQUEST: "technical",
    CONTENT_POLICY: "quality",
    MALFORMED_RESPONSE: "technical",
    UNKNOWN: "technical",
}
RETRYABLE: frozenset[str] = frozenset({RATE_LIMIT, TIMEOUT, NETWORK, SERVER, MALFORMED_RESPONSE})

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


def malformed(message: str, *, status: int | None = None) -> Diagnosis:
    """A diagnosis for a 2xx that is not a valid image answer (no data, bad base64, ...)."""
    text = _clean_message(str(message)) if message is not None else None
    where = f"HTTP {status}" if status is not None else "The endpoint"
    what = f" ({text})" if text else ""
    hint = (
        f"{where} answered without a usable image{what}: retry; if it persists, check the "
        "relay's model mapping (images may be routed to a chat model) and response_format."
    )
    return Diagnosis(
        category=MALFORMED_RESPONSE,
        problem_class=PROBLEM_CLASS[MALFORMED_RESPONSE],
        retryable=True,
        hint=hint,
        status=status,
        message=text,
    )


def classify(x: object, /) -> Diagnosis:
    """Say what an error (or a bad answer) from an image endpoint means.

    ``x`` may be an openai SDK exception, an httpx2 exception or ``httpx2.Response``, a
    ``(status, headers, body)`` tuple (headers a mapping or a list of pairs), a parsed body
    (dict), a ``str``/``bytes`` body, a bare status code, or anything else. Never raises.
    """
    try:
        return _classify(x, now=time.time())
    except Exception as exc:  # a classifier bug must never replace the endpoint's error
        return _internal_error_diagnosis(x, exc)


def diagnosis_of(exc: BaseException) -> Diagnosis | None:
    """The diagnosis a failed test's exception carries, or the classifier's for an error
    raised by the SDK or the HTTP layer; None for anything else (a bug, an assertion, the
    plugin's own refusals), which says nothing about the endpoint."""
    diagnosis = getattr(exc, "diagnosis", None)
    if isinstance(diagnosis, Diagnosis):
        return diagnosis
    if isinstance(exc, (BudgetExceededError, ImagegenError)):
        return None
    if type(exc).__module__.split(".")[0] in ("openai", "httpx2"):
        return classify(exc)
    return None


# ---------------------------------------------------------------------------
# Evidence gathering
# ---------------------------------------------------------------------------


@dataclass
class _Evidence:
    """What an input says, before any decision is taken."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    code: str | None = None
    type: str | None = None
    param: str | None = None
    message: str | None = None
    tokens: list[str] = field(default_factory=list)  # code/type-like strings, outermost first
    texts: list[str] = field(default_factory=list)  # human text to match patterns against
    upstream_status: int | None = None  # a status a relay reports for its upstream
    error_object: bool = False  # a JSON error object (any envelope) was found
    error_key: bool = False  # ... under an "error" key (an error even inside a 2xx)
    body: str | None = None  # why a body is not a usable image answer ("data is empty", ...)
    success_shaped: bool = False  # a JSON object with a "data" key and no error
    images: int = 0  # usable-looking items in a 2xx "data" list
    transport: tuple[str, str] | None = None  # (category, kind) of a failure with no answer
    seen: str | None = None  # what the input was, for the unknown hint
    relay: str | None = None  # "one-api", "litellm", "azure", "cloudflare" (for hints)
    timeout_s: float | None = None  # the client timeout that expired, when known
    _scan: str | None = None

    def scan_text(self) -> str:
        if self._scan is None:
            joined = "\n".join(self.texts)[:_SCAN_MAX_CHARS]
            self._scan = joined.lower()
        return self._scan

    def add_text(self, text: str) -> None:
        if text:
            self.texts.append(text[:_SCAN_MAX_CHARS])
            self._scan = None


def _classify(x: object, *, now: float) -> Diagnosis:
    """The unguarded classifier (tests call it directly so that bugs surface)."""
    if isinstance(x, Diagnosis):
        return x
    if isinstance(x, MalformedResponse):
        return malformed(str(x), status=x.status)
    if isinstance(x, json.JSONDecodeError):
        # What the SDK raises when a 2xx body is not JSON.
        return malformed(f"the response body is not JSON: {x}")
    ev = _Evidence()
    _gather(ev, x)
    return _decide(ev, now)


def _gather(ev: _Evidence, x: object) -> None:
    if x is None:
        ev.seen = "None (nothing to classify)"
    elif isinstance(x, BaseException):
        _from_exception(ev, x)
    elif isinstance(x, (str, bytes, bytearray, memoryview, Mapping)):
        _from_body(ev, x)
    elif isinstance(x, (tuple, list)) and _is_status_triple(x):
        status = _as_status(x[0])
        if len(x) == 3:
            _from_http(ev, status, x[1], x[2])
        else:
            _from_http(ev, status, None, x[1] if len(x) == 2 else None)
    elif isinstance(x, list):
        _from_body(ev, x)
    elif isinstance(x, int) and not isinstance(x, bool):
        ev.status = int(x)
        ev.seen = f"a bare status code {int(x)}"
    elif _is_response_like(x):
        _from_response(ev, x)
    elif callable(_safe_getattr(x, "model_dump")):
        dumped = _safe_call(_safe_getattr(x, "model_dump"))
        if isinstance(dumped, Mapping):
            _from_body(ev, dumped)
        else:
            ev.seen = f"a value of type {type(x).__name__}: {_short_repr(x)}"
    else:
        ev.seen = f"a value of type {type(x).__name__}: {_short_repr(x)}"


def _is_status_triple(x: tuple[Any, ...] | list[Any]) -> bool:
    if isinstance(x, list):  # a list is a JSON array body unless it is clearly a triple
        status = _as_status(x[0]) if len(x) == 3 else None
        return status is not None and 100 <= status <= 599
    if len(x) == 3 and x[0] is None:  # status unknown: judge the headers and body
        return True
    return 1 <= len(x) <= 3 and _as_status(x[0]) is not None


def _as_status(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, (str, bytes)):
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        text = text.strip()
        if 1 <= len(text) <= 4 and text.isascii() and text.isdigit():
            return int(text)
    return None


def _is_response_like(x: object) -> bool:
    """httpx2/httpx/requests responses and the SDK's raw-response wrappers."""
    status = _safe_getattr(x, "status_code")
    return isinstance(status, int) and not isinstance(status, bool) and hasattr(x, "headers")


def _from_response(ev: _Evidence, response: object) -> None:
    status = _safe_getattr(response, "status_code")
    headers = _safe_getattr(response, "headers")
    # A streamed response that was never read raises here; the classifier does no I/O.
    content = _safe_getattr(response, "content")
    _from_http(ev, status if isinstance(status, int) else None, headers, content)


def _from_http(ev: _Evidence, status: int | None, headers: object, body: object) -> None:
    ev.status = status
    ev.headers = _normalise_headers(headers)
    server = ev.headers.get("server", "").lower()
    if "cloudflare" in server or "cf-ray" in ev.headers:
        ev.relay = ev.relay or "cloudflare"
    _from_body(ev, body)


def _normalise_headers(headers: object) -> dict[str, str]:
    """Lower-cased names; repeated fields joined with ", " as HTTP (and httpx2) do.

    Accepts mappings, ``httpx2.Headers`` and lists of pairs (str or bytes).
    """
    out: dict[str, str] = {}
    if headers is None:
        return out
    items: Iterable[Any]
    if isinstance(headers, Mapping) or callable(_safe_getattr(headers, "items")):
        items = _safe_call(_safe_getattr(headers, "items")) or ()
    elif isinstance(headers, (list, tuple)):
        items = headers
    else:
        return out
    try:
        for count, pair in enumerate(items):
            if count >= _HEADERS_MAX:
                break
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                continue
            name, value = (_header_text(part) for part in pair)
            if name is None or value is None:
                continue
            key, value = name.strip().lower(), value.strip()
            out[key] = f"{out[key]}, {value}" if key in out else value
    except Exception:  # an exotic header container: keep what was read
        pass
    return out


def _header_text(value: object) -> str | None:
    if isinstance(value, str):
        return value[:1024]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value[:1024]).decode("latin-1")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


# --- bodies -----------------------------------------------------------------


def _from_body(ev: _Evidence, body: object) -> None:
    if body is None:
        ev.body = "no body"
        return
    if isinstance(body, (Mapping, list, tuple)):
        _from_json(ev, body)
        return
    if isinstance(body, (bytes, bytearray, memoryview)):
        raw = bytes(body)
        _from_bytes(ev, raw)
        return
    if isinstance(body, str):
        _from_text_body(ev, body, size=len(body))
        return
    ev.body = f"a body of type {type(body).__name__}"
    ev.seen = f"a body of type {type(body).__name__}: {_short_repr(body)}"


def _from_bytes(ev: _Evidence, raw: bytes) -> None:
    if not raw.strip():
        ev.body = "an empty body"
        return
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if len(raw) <= _JSON_MAX_BYTES and raw.lstrip()[:1] in (b"{", b"[", b'"'):
        try:
            parsed = json.loads(raw)
        except Exception:  # not JSON (or too deep, or not UTF-8): treat as text below
            pass
        else:
            _from_json(ev, parsed)
            return
    # Only the head is decoded and scanned: a multi-MB page says what it is early on.
    head = raw[: _SCAN_MAX_CHARS * 4].decode("utf-8", "replace")
    if not _looks_textual(head):
        ev.body = f"{len(raw)} bytes of binary data, not JSON"
        ev.seen = f"{len(raw)} bytes of binary data"
        if ev.status is None or not 200 <= ev.status <= 299:
            # An error body with junk around words still says what it is; a 2xx binary body
            # is an image or a file, whose bytes must not be read as words.
            ev.add_text(_collapse("".join(ch if ch.isprintable() else " " for ch in head)))
            _upstream_status_from_text(ev)
        return
    _from_text(ev, head, size=len(raw))


def _from_text_body(ev: _Evidence, text: str, *, size: int) -> None:
    stripped = text.strip()
    if not stripped:
        ev.body = "an empty body"
        return
    if len(stripped) <= _JSON_MAX_BYTES and stripped[:1] in ("{", "[", '"'):
        try:
            parsed = json.loads(stripped)
        except Exception:
            pass
        else:
            _from_json(ev, parsed)
            return
    _from_text(ev, stripped[: _SCAN_MAX_CHARS * 4], size=size)


def _looks_textual(head: str) -> bool:
    sample = head[:2048]
    if not sample:
        return False
    bad = sum(1 for ch in sample if ch == "\ufffd" or (ch < " " and ch not in "\t\r\n"))
    return bad * 10 <= len(sample)


def _from_text(ev: _Evidence, text: str, *, size: int) -> None:
    """A body that is not JSON: an HTML page from a CDN/proxy, or plain text."""
    lowered_head = text[:512].lower()
    if any(
        tag in lowered_head for tag in ("<html", "<!doctype", "<head", "<body", "<h1", "<title")
    ):
        title = _html_title(text)
        plain = _collapse(_strip_tags(text))
        ev.message = title or plain[:MESSAGE_MAX_CHARS] or None
        ev.add_text(f"{title}\n{plain}" if title else plain)
        ev.body = "an HTML page, not JSON"
        kind = "HTML page"
    else:
        plain = _collapse(text)
        ev.message = plain[:MESSAGE_MAX_CHARS] or None
        ev.add_text(plain)
        ev.body = "a plain-text body, not JSON"
        kind = "plain-text body"
    if "cloudflare" in ev.scan_text() or re.search(r"error code: 1\d{3}\b", ev.scan_text()):
        ev.relay = "cloudflare"
    ev.seen = f"a {kind} ({size} chars): {_clean_message(ev.message or '')[:160]!r}"
    _upstream_status_from_text(ev)


def _html_title(text: str) -> str:
    lowered = text.lower()
    start = lowered.find("<title")
    if start < 0:
        return ""
    start = lowered.find(">", start)
    end = lowered.find("</title", start)
    if start < 0 or end < 0:
        return ""
    return _collapse(text[start + 1 : end])[:MESSAGE_MAX_CHARS]


def _strip_tags(text: str) -> str:
    """Linear-time tag stripper (regexes here go quadratic on hostile pages)."""
    lowered = text.lower()
    for block in ("script", "style"):
        pieces: list[str] = []
        pos = 0
        while True:
            start = lowered.find(f"<{block}", pos)
            if start < 0:
                pieces.append(text[pos:])
                break
            pieces.append(text[pos:start])
            end = lowered.find(f"</{block}", start)
            if end < 0:  # a cut page: the rest is script or style, not words
                break
            pos = end + len(block) + 2
        text = " ".join(pieces)
        lowered = text.lower()
    out: list[str] = []
    pos = 0
    while True:
        start = text.find("<", pos)
        if start < 0:
            out.append(text[pos:])
            break
        out.append(text[pos:start])
        end = text.find(">", start)
        if end < 0:  # an unterminated "<": keep the words after it (a cut page, or prose)
            out.append(" " + text[start + 1 :])
            break
        out.append(" ")
        pos = end + 1
    return "".join(out).replace("&nbsp;", " ").replace("&amp;", "&")


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _from_json(ev: _Evidence, value: object) -> None:
    if isinstance(value, (list, tuple)):
        # Some gateways answer [{"error": {...}}].
        first = next((v for v in list(value[:8]) if isinstance(v, Mapping)), None)
        if first is not None and "error" in first:
            value = first
        else:
            ev.body = "a JSON array, not an object"
            ev.seen = f"a JSON array: {_short_repr(value)}"
            return
    if isinstance(value, str):
        _from_text(ev, value[: _SCAN_MAX_CHARS * 4], size=len(value))
        return
    if not isinstance(value, Mapping):
        ev.body = "JSON, but not an object"
        ev.seen = f"a JSON {type(value).__name__}: {_short_repr(value)}"
        ev.message = _short_repr(value)
        return
    error = _find_error(value)
    if error is not None:
        ev.error_object = True
        ev.error_key = error is not value
        if not ev.error_key:
            ev.body = f"a JSON object without 'data' (keys: {_keys(value)})"
        _read_error_object(ev, error, depth=0)
        if ev.message is None and ev.type is None and ev.code is None:
            ev.seen = f"an error object with keys {_keys(error)}"
        return
    data = value.get("data")
    if "data" not in value:
        ev.body = f"a JSON object without 'data' (keys: {_keys(value)})"
        ev.seen = f"a JSON object with keys {_keys(value)}"
        return
    ev.success_shaped = True
    if not isinstance(data, list):
        ev.body = f"'data' is a {type(data).__name__}, not a list"
    elif not data:
        ev.body = "'data' is an empty list (data: [])"
    else:
        usable = sum(1 for item in data[:1024] if _looks_like_image_item(item))
        ev.images = usable
        if not usable:
            ev.body = "no item in 'data' has b64_json or url"
    ev.seen = f"a JSON object with 'data' ({ev.body or f'{ev.images} image item(s)'})"


def _looks_like_image_item(item: object) -> bool:
    if not isinstance(item, Mapping):
        return False
    return any(isinstance(item.get(k), str) and item.get(k) for k in ("b64_json", "url"))


def _keys(mapping: Mapping[Any, Any]) -> str:
    names = [str(k)[:40] for k in list(mapping.keys())[:8]]
    more = ", ..." if len(mapping) > 8 else ""
    return ", ".join(names) + more if names else "none"


_ERROR_OBJECT_KEYS = ("message", "msg", "code", "type", "detail", "error_description", "statusCode")


def _find_error(body: Mapping[Any, Any]) -> Mapping[Any, Any] | None:
    """The error object of any envelope, or None when the body is not an error."""
    error = body.get("error")
    if isinstance(error, Mapping) and error:
        return error
    if isinstance(error, str) and error.strip():
        # {"error": "Unauthorized", "code": 401}: the string is the message, unless the body
        # has its own (NestJS: {"statusCode": 400, "message": [...], "error": "Bad Request"}).
        keys = ("code", "type", "param", "statusCode", "status")
        merged: dict[str, Any] = {k: body[k] for k in keys if k in body}
        message = body.get("message")
        merged["message"] = message if isinstance(message, (str, list)) and message else error
        merged["error"] = error
        return merged
    errors = body.get("errors")  # GraphQL-style gateways
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping) and errors[0]:
        return errors[0]
    if isinstance(body.get("data"), list):
        return None
    if any(body.get(k) not in (None, "", [], {}) for k in _ERROR_OBJECT_KEYS):
        return body  # the SDK's unwrapped e.body, vLLM/FastAPI/APIM-style bodies
    return None


_MESSAGE_KEYS = ("message", "msg", "error_description", "detail", "error_message", "errorMessage")
_INNER_KEYS = ("inner_error", "innererror", "innerError", "error")


def _read_error_object(ev: _Evidence, error: Mapping[Any, Any], *, depth: int) -> None:
    """Collect code/type tokens, the message and the param from one error object."""
    code = _field_text(error.get("code"))
    etype = _field_text(error.get("type"))
    if depth == 0:
        ev.code, ev.type = code, etype
    own_message = next(
        (v for v in (error.get(k) for k in _MESSAGE_KEYS) if isinstance(v, str) and v.strip()),
        None,
    )
    if ev.message is None and own_message is not None:
        ev.message = own_message[: MESSAGE_MAX_CHARS * 4]  # the outer one, before inner ones
    param_raw = error.get("param")
    param = _normalise_param(param_raw)
    status_hint = _as_status(param_raw) if isinstance(param_raw, str) else None
    if param is not None and ev.param is None:
        ev.param = param
    for value in (code, error.get("error_code"), error.get("statusCode"), error.get("status")):
        text = _field_text(value)
        if text is None:
            continue
        status = _as_status(text)
        if status is not None:
            status_hint = status_hint or status
        else:
            ev.tokens.append(text)
    if status_hint is not None and 100 <= status_hint <= 599 and ev.upstream_status is None:
        ev.upstream_status = status_hint
    if depth < _NEST_MAX:
        for key in _INNER_KEYS:
            inner = error.get(key)
            if isinstance(inner, Mapping) and inner:
                if key != "error":
                    ev.relay = ev.relay or "azure"
                _read_error_object(ev, inner, depth=depth + 1)
        details = error.get("details")
        if isinstance(details, list):
            for item in details[:4]:
                if isinstance(item, Mapping):
                    _read_error_object(ev, item, depth=depth + 1)
    if etype is not None:
        ev.tokens.append(etype)
    summary = error.get("error")
    if isinstance(summary, str) and summary != error.get("message"):
        ev.add_text(summary[:MESSAGE_MAX_CHARS])  # a short "error": "Bad Request" label
    for key in _MESSAGE_KEYS:
        value = error.get(key)
        if isinstance(value, str) and value.strip():
            _read_message(ev, value, depth=depth)
            break
        if isinstance(value, Mapping) and value and depth < _NEST_MAX:
            _read_error_object(ev, value, depth=depth + 1)
            break
        if isinstance(value, list) and value:  # FastAPI/NestJS-style lists of messages
            parts = [
                item if isinstance(item, str) else str(item.get("msg"))
                for item in value[:4]
                if isinstance(item, str)
                or (isinstance(item, Mapping) and isinstance(item.get("msg"), str))
            ]
            if parts:
                _read_message(ev, "; ".join(parts), depth=depth)
                first = value[0]
                loc = first.get("loc") if isinstance(first, Mapping) else None
                if isinstance(loc, list) and loc and ev.param is None:
                    ev.param = _normalise_param(loc[-1])
                break
    _detect_relay(ev, etype, code)


def _read_message(ev: _Evidence, message: str, *, depth: int) -> None:
    head = message[: _SCAN_MAX_CHARS * 2]
    if ev.message is None:
        ev.message = head[: MESSAGE_MAX_CHARS * 4]
    ev.add_text(head)
    # Relays pass the upstream's whole JSON error as the message string.
    stripped = head.strip()
    if depth < _NEST_MAX and stripped.startswith("{") and len(message) <= _SCAN_MAX_CHARS * 2:
        try:
            nested = json.loads(stripped)
        except Exception:
            nested = None
        if isinstance(nested, Mapping):
            inner = _find_error(nested)
            if inner is not None:
                _read_error_object(ev, inner, depth=depth + 1)
    _upstream_status_from_text(ev)


_UPSTREAM_STATUS_RE = re.compile(
    r"(?:status code|error code|status_code|http)[:= ]{1,3}([1-5]\d\d)\b"
)


def _upstream_status_from_text(ev: _Evidence) -> None:
    if ev.upstream_status is not None:
        return
    match = _UPSTREAM_STATUS_RE.search(ev.scan_text())
    if match:
        ev.upstream_status = int(match.group(1))


def _field_text(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        return value[: _FIELD_MAX_CHARS * 2] or None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return None


def _normalise_param(value: object) -> str | None:
    """``""``, ``"None"``, ``"null"`` and relay status codes are not parameter names."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or text.lower() in ("none", "null", "undefined") or text.isdigit():
        return None
    return text[:_FIELD_MAX_CHARS]


_ONE_API_TYPES = frozenset({"one_api_error", "new_api_error", "shell_api_error", "upstream_error"})
_LITELLM_TYPES = frozenset({"throttling_error", "auth_error", "budget_exceeded"})


def _detect_relay(ev: _Evidence, etype: str | None, code: str | None) -> None:
    if ev.relay is not None and ev.relay != "cloudflare":
        return
    lowered_type = (etype or "").lower()
    text = ev.scan_text()
    if lowered_type in _ONE_API_TYPES or _has_cjk(text[:2048]):
        ev.relay = "one-api"
    elif lowered_type in _LITELLM_TYPES or "litellm" in text:
        ev.relay = "litellm"
    elif code and _token(code) in _AZURE_CODES:
        ev.relay = "azure"


def _has_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


# --- exceptions ---------------------------------------------------------------


def _mro(exc: BaseException) -> list[tuple[str, str]]:
    """(top-level module, class name) for every class of ``exc``: no import needed."""
    out = []
    for cls in type(exc).__mro__:
        module = str(getattr(cls, "__module__", "") or "")
        out.append((module.split(".", 1)[0], cls.__name__))
    return out


def _names(mro: list[tuple[str, str]], *roots: str) -> set[str]:
    return {name for module, name in mro if not roots or module in roots}


_HTTPX_ROOTS = ("httpx2", "httpx", "httpcore", "httpcore2")


def _from_exception(ev: _Evidence, exc: BaseException) -> None:
    if _from_known_exception(ev, exc):
        return
    # A wrapper we do not know: the cause chain may hold the real transport error.
    for link in _chain(exc)[1:]:
        probe = _Evidence()
        if _from_known_exception(probe, link):
            _copy_evidence(ev, probe)
            ev.message = ev.message or _exc_text(exc)
            return
    group = _safe_getattr(exc, "exceptions")
    if isinstance(group, (list, tuple)):
        for sub in list(group)[:8]:
            if isinstance(sub, BaseException):
                probe = _Evidence()
                if _from_known_exception(probe, sub):
                    _copy_evidence(ev, probe)
                    return
    ev.message = _exc_text(exc)
    ev.seen = f"an exception {type(exc).__name__}: {_clean_message(_exc_text(exc))[:160]!r}"


def _copy_evidence(target: _Evidence, source: _Evidence) -> None:
    for name in _Evidence.__dataclass_fields__:
        setattr(target, name, getattr(source, name))


def _from_known_exception(ev: _Evidence, exc: BaseException) -> bool:
    """Fill ``ev`` from an exception type we recognise; False when it is not one."""
    mro = _mro(exc)
    openai_names = _names(mro, "openai")
    if openai_names:
        return _from_openai_exception(ev, exc, openai_names)
    httpx_names = _names(mro, *_HTTPX_ROOTS)
    if httpx_names:
        return _from_httpx_exception(ev, exc, httpx_names)
    response = _safe_getattr(exc, "response")
    if response is not None and _is_response_like(response):
        # requests.HTTPError, other Stainless SDKs' APIStatusError, ...
        _from_response(ev, response)
        body = _safe_getattr(exc, "body")
        if ev.body in ("an empty body", "no body") and body is not None:
            _from_body(ev, body)
        return True
    return _from_transport_exception(ev, exc, mro)


def _from_openai_exception(ev: _Evidence, exc: BaseException, names: set[str]) -> bool:
    if names & {"APIStatusError", "APIResponseValidationError"}:
        response = _safe_getattr(exc, "response")
        status = _safe_getattr(exc, "status_code")
        headers = _safe_getattr(response, "headers") if response is not None else None
        raw = _safe_getattr(response, "content") if response is not None else None
        body: object = raw
        if not isinstance(raw, (bytes, bytearray)) or not raw.strip():
            body = _safe_getattr(exc, "body")  # already unwrapped from {"error": ...}
        _from_http(ev, status if isinstance(status, int) else None, headers, body)
        if "APIResponseValidationError" in names and not ev.error_object:
            ev.body = ev.body or "the body did not match the SDK's response schema"
            ev.success_shaped = True
            ev.images = 0
        return True
    if "APITimeoutError" in names:
        ev.transport = (TIMEOUT, _timeout_kind(exc))
        ev.message = _exc_text(exc, with_cause=True)
        ev.timeout_s = _configured_timeout(exc, ev.transport[1])
        return True
    if "APIConnectionError" in names:
        for link in _chain(exc)[1:]:
            probe = _Evidence()
            if _from_known_exception(probe, link) and probe.transport is not None:
                ev.transport = probe.transport
                break
        else:
            ev.transport = (NETWORK, _network_kind(exc))
        ev.message = _exc_text(exc, with_cause=True)
        return True
    if "ContentFilterFinishReasonError" in names:
        ev.tokens.append("content_filter")
        ev.message = _exc_text(exc)
        ev.add_text(ev.message)
        return True
    if "APIError" in names:  # an error event inside a stream: body is the error object
        body = _safe_getattr(exc, "body")
        if body is not None:
            _from_body(ev, body)
        if ev.message is None:
            ev.message = _exc_text(exc)
            ev.add_text(ev.message)
        return True
    return False


def _from_httpx_exception(ev: _Evidence, exc: BaseException, names: set[str]) -> bool:
    if "HTTPStatusError" in names:
        response = _safe_getattr(exc, "response")
        if response is not None:
            _from_response(ev, response)
            return True
    if "TimeoutException" in names or any(n.endswith("Timeout") for n in names):
        ev.transport = (TIMEOUT, _timeout_kind(exc))
        ev.timeout_s = _configured_timeout(exc, ev.transport[1])
    elif "DecodingError" in names:
        ev.transport = (MALFORMED_RESPONSE, "decoding")
    elif names & {"UnsupportedProtocol", "InvalidURL"}:
        ev.transport = (UNKNOWN, "url")
    elif "TooManyRedirects" in names:
        ev.transport = (UNKNOWN, "redirects")
    elif "ProxyError" in names:
        ev.transport = (NETWORK, "proxy")
    elif names & {"NetworkError", "ProtocolError", "TransportError", "RequestError"}:
        ev.transport = (NETWORK, _network_kind(exc))
    else:
        return False
    ev.message = _exc_text(exc, with_cause=True)
    return True


_NETWORK_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "EHOSTUNREACH", "ENETUNREACH",
        "ENETDOWN", "EHOSTDOWN", "EPIPE", "ENOTCONN", "ESHUTDOWN",
    )
    if hasattr(errno, name)
)  # fmt: skip


def _from_transport_exception(
    ev: _Evidence, exc: BaseException, mro: list[tuple[str, str]]
) -> bool:
    names = _names(mro)
    if isinstance(exc, TimeoutError) or any("Timeout" in n for n in names):
        ev.transport = (TIMEOUT, _timeout_kind(exc))
    elif "SSLError" in names or "CertificateError" in names:
        ev.transport = (NETWORK, "tls")
    elif "gaierror" in names or "herror" in names:
        ev.transport = (NETWORK, "dns")
    elif isinstance(exc, ConnectionError) or names & {"ConnectionError", "ConnectError"}:
        ev.transport = (NETWORK, _network_kind(exc))
    elif isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT:
        ev.transport = (TIMEOUT, "connect")
    elif isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
        ev.transport = (NETWORK, _network_kind(exc))
    else:
        reason = _safe_getattr(exc, "reason")  # urllib.error.URLError wraps the OSError
        if isinstance(reason, BaseException) and reason is not exc:
            return _from_known_exception(ev, reason)
        return False
    ev.message = _exc_text(exc, with_cause=True)
    return True


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(out) < _CHAIN_MAX:
        out.append(current)
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return out


def _chain_text(exc: BaseException) -> str:
    return " | ".join(f"{type(e).__name__}: {_safe_str(e)[:300]}" for e in _chain(exc)).lower()


def _timeout_kind(exc: BaseException) -> str:
    # pytest_imagegen.bounds words a request that ran out of its total time this way.
    if "no complete response within" in _chain_text(exc):
        return "total"
    names = {name for link in _chain(exc) for _, name in _mro(link)}
    if "ConnectTimeout" in names:
        return "connect"
    if "WriteTimeout" in names:
        return "write"
    if "PoolTimeout" in names:
        return "pool"
    return "read"


def _network_kind(exc: BaseException) -> str:
    links = _chain(exc)
    names = {name for link in links for _, name in _mro(link)}
    text = _chain_text(exc)
    errnos = {getattr(link, "errno", None) for link in links}
    if "gaierror" in names or _match_any(text, _DNS_TEXTS):
        return "dns"
    if (
        "ConnectionRefusedError" in names
        or errno.ECONNREFUSED in errnos
        or "connection refused" in text
    ):
        return "refused"
    if "SSLError" in names or "CertificateError" in names or _match_any(text, _TLS_TEXTS):
        return "tls"
    if "ProxyError" in names:
        return "proxy"
    if (
        names & {"ConnectionResetError", "RemoteProtocolError", "ReadError", "BrokenPipeError"}
        or "reset" in text
        or "disconnected" in text
    ):
        return "reset"
    if "ConnectError" in names:
        return "connect"
    return "other"


def _exc_text(exc: BaseException, *, with_cause: bool = False) -> str:
    text = f"{type(exc).__name__}: {_safe_str(exc)}".rstrip(": ")
    if with_cause:
        for link in _chain(exc)[1:]:
            cause = f"{type(link).__name__}: {_safe_str(link)}".rstrip(": ")
            if _safe_str(link) and cause != text:
                text += f" (caused by {cause})"
                break
    return text


def _configured_timeout(exc: BaseException, kind: str) -> float | None:
    """The client's timeout for this phase, from the httpx2 request the error carries."""
    for link in _chain(exc):
        request = _safe_getattr(link, "request")
        extensions = _safe_getattr(request, "extensions") if request is not None else None
        timeouts = extensions.get("timeout") if isinstance(extensions, Mapping) else None
        if isinstance(timeouts, Mapping):
            value = timeouts.get(kind)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
    return None


# ---------------------------------------------------------------------------
# Decision tables
# ---------------------------------------------------------------------------


def _token(value: str) -> str:
    """``DeploymentNotFound`` / ``contentFilter`` / ``rate-limit`` -> snake_case."""
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", value.strip())
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


_AZURE_CODES = frozenset(
    {"deployment_not_found", "content_filter", "responsible_ai_policy_violation",
     "operation_not_supported", "invalid_payload", "too_many_requests"}
)  # fmt: skip

# Exact code/type tokens (after ``_token``) -> (category, detail tag).
_CODE_TABLE: Mapping[str, tuple[str, str]] = {
    # authentication
    **dict.fromkeys(
        ("invalid_api_key", "invalid_authentication", "incorrect_api_key", "unauthorized",
         "unauthenticated", "authentication_error", "auth_error", "authentication_type_disabled",
         "invalid_token", "token_expired", "expired_token", "missing_api_key", "no_api_key",
         "invalid_subscription_key", "account_deactivated", "invalid_organization",
         "no_such_organization", "invalid_auth", "invalid_x_api_key", "api_key_invalid",
         "api_key_expired", "invalid_access_token"),
        (AUTHENTICATION, ""),
    ),
    # permission
    **dict.fromkeys(
        ("permission_denied", "permission_error", "insufficient_permissions", "forbidden",
         "access_denied", "ip_not_authorized", "model_not_allowed", "user_banned"),
        (PERMISSION, ""),
    ),
    **dict.fromkeys(
        ("unsupported_country_region_territory", "unsupported_country", "unsupported_region",
         "country_not_supported", "region_not_supported"),
        (PERMISSION, "region"),
    ),
    "organization_not_verified": (PERMISSION, "verify"),
    "no_db_connection": (AUTHENTICATION, "gateway_no_db"),
    # quota (substrings below catch the relay variants)
    "insufficient_quota": (QUOTA, ""),
    "billing_hard_limit_reached": (QUOTA, "billing"),
    "billing_not_active": (QUOTA, "billing"),
    "budget_exceeded": (QUOTA, "budget"),
    "payment_required": (QUOTA, ""),
    "insufficient_balance": (QUOTA, ""),
    "insufficient_credits": (QUOTA, ""),
    "insufficient_funds": (QUOTA, ""),
    # rate limit (OpenAI's 429 types are "requests" and "tokens")
    **dict.fromkeys(
        ("rate_limit_exceeded", "rate_limit_error", "rate_limited", "rate_limit",
         "throttling_error", "throttled", "too_many_requests", "requests", "tokens",
         "resource_exhausted"),
        (RATE_LIMIT, ""),
    ),
    # timeout
    **dict.fromkeys(
        ("timeout", "request_timeout", "gateway_timeout", "timeout_error", "upstream_timeout",
         "deadline_exceeded", "read_timeout", "connect_timeout"),
        (TIMEOUT, ""),
    ),
    # network
    **dict.fromkeys(
        ("connection_error", "api_connection_error", "upstream_connection_error",
         "do_request_failed", "connection_refused", "connection_reset", "dns_error", "ssl_error"),
        (NETWORK, ""),
    ),
    # model
    **dict.fromkeys(
        ("model_not_found", "model_not_available", "unsupported_model", "model_not_supported",
         "invalid_model", "model_deprecated", "model_retired", "not_found_model"),
        (MODEL_NOT_FOUND, ""),
    ),
    "deployment_not_found": (MODEL_NOT_FOUND, "deployment"),
    "operation_not_supported": (MODEL_NOT_FOUND, "wrong_kind"),
    **dict.fromkeys(
        ("no_available_channel", "get_channel_failed", "channel_not_found",
         "model_price_error"),
        (MODEL_NOT_FOUND, "relay_channel"),
    ),
    # invalid request
    **dict.fromkeys(
        ("invalid_value", "invalid_size", "unknown_parameter", "unsupported_value",
         "unsupported_parameter", "missing_required_parameter", "integer_above_max_value",
         "integer_below_min_value", "invalid_type", "string_above_max_length",
         "string_below_min_length", "invalid_request", "bad_request", "invalid_parameter",
         "invalid_argument", "invalid_image", "invalid_image_file", "invalid_image_format",
         "image_too_large", "context_length_exceeded", "unsupported_params", "invalid_json",
         "validation_error", "invalid_payload", "array_above_max_length", "empty_array",
         "invalid_url", "unsupported_country_code"),
        (INVALID_REQUEST, ""),
    ),
    **dict.fromkeys(
        ("payload_too_large", "request_too_large", "function_payload_too_large",
         "request_entity_too_large"),
        (INVALID_REQUEST, "too_large"),
    ),
    # content policy
    **dict.fromkeys(
        ("content_policy_violation", "moderation_blocked", "content_filter",
         "responsible_ai_policy_violation", "image_generation_user_error",
         "content_policy_violation_error", "safety_violation", "sensitive_words_detected",
         "invalid_prompt", "content_policy", "user_error_moderation"),
        (CONTENT_POLICY, ""),
    ),
}  # fmt: skip

# Tokens that only say "an error happened" at a given layer: consulted after the status.
_WEAK_TOKENS: Mapping[str, str] = {
    "invalid_request_error": INVALID_REQUEST,
    "server_error": SERVER,
    "internal_server_error": SERVER,
    "internal_error": SERVER,
    "internal": SERVER,
    "api_error": SERVER,
    "service_unavailable": SERVER,
    "unavailable": SERVER,
    "overloaded": SERVER,
    "overloaded_error": SERVER,
    "engine_overloaded": SERVER,
    "bad_gateway": SERVER,
    "upstream_error": SERVER,
    "bad_response_status_code": SERVER,
    "bad_response": SERVER,
}

# Substring rules for codes not in the table, in order.
_CODE_SUBSTRINGS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (CONTENT_POLICY, ("content_polic", "moderation", "content_filter", "safety", "sensitive")),
    (QUOTA, ("quota", "billing", "budget", "balance", "credit")),
    (RATE_LIMIT, ("rate_limit", "ratelimit", "throttl", "too_many")),
    (TIMEOUT, ("timeout", "timed_out")),
    (MODEL_NOT_FOUND, ("model_not", "deployment_not", "no_channel", "no_available_channel")),
    (AUTHENTICATION, ("api_key", "unauthori", "authentica")),
    (PERMISSION, ("permission", "forbidden", "not_verified")),
    (INVALID_REQUEST, ("invalid_", "unsupported_", "unknown_param", "missing_", "too_large")),
)


def _token_category(token: str) -> tuple[str, str] | None:
    if token in _WEAK_TOKENS or token in _ONE_API_TYPES:
        return None
    hit = _CODE_TABLE.get(token)
    if hit is not None:
        return hit
    for category, parts in _CODE_SUBSTRINGS:
        if any(part in token for part in parts):
            return category, ""
    return None


_Pattern = "str | re.Pattern[str]"

_QUOTA_TEXTS: tuple[tuple[str, tuple[str | re.Pattern[str], ...]], ...] = (
    ("billing", ("billing hard limit", "billing_hard_limit", "account is not active")),
    ("budget", ("budget has been exceeded", "budget exceeded", "budgetexceedederror",
                "exceeded budget", "over budget")),
    ("relay", ("额度已用尽", "额度不足", "余额不足", "预扣费额度失败", "欠费",
               "quota is not enough",
               re.compile(r"(?:user|token) quota (?:is )?(?:exhausted|used up|not enough|"
                          r"insufficient|exceeded)"))),
    ("", ("insufficient_quota", "insufficient quota", "exceeded your current quota",
          "check your plan and billing", "credit balance is too low", "insufficient credit",
          "insufficient balance", "insufficient funds", "out of credits", "out of credit")),
)  # fmt: skip

_WEAK_QUOTA_RE = re.compile(
    r"quota[ _]exceeded|exceeded (?:your|the) quota|out of quota|quota (?:has been )?(?:used up|"
    r"exhausted|reached)"
)
_RATE_WORDS_RE = re.compile(
    r"per (?:minute|second|hour|day)|\brate\b|/min\b|\b[rti]pm\b|\bretry\b|\brequests per"
)

_DNS_TEXTS = (
    "name or service not known", "nodename nor servname", "getaddrinfo", "no such host",
    "name resolution", "could not resolve", "dns",
)  # fmt: skip
_TLS_TEXTS = (
    re.compile(r"\bssl\b|\btls\b"), "certificate", "handshake", "error code: 525",
    "error code: 526",
)  # fmt: skip

# Message patterns, in order: the first hit decides. Literals are matched with ``in`` on
# the lower-cased, capped text; the few regexes have bounded repetition.
_MESSAGE_RULES: tuple[tuple[str, str, tuple[str | re.Pattern[str], ...]], ...] = (
    (CONTENT_POLICY, "azure_blocked", ("resource has been temporarily blocked",)),
    (CONTENT_POLICY, "", (
        "safety system", "content policy", "content_policy", "content management policy",
        "moderation_blocked", "safety_violations", "responsibleaipolicyviolation",
        "content_filter", "content filter", "contentpolicyviolationerror", "usage policy",
        "usage policies", "敏感词", "内容违规", "违规内容", "内容安全", "审核未通过")),
    # LiteLLM with no database answers a key that is not its master key with HTTP 400
    # "No connected db.": a key problem, not a request parameter.
    (AUTHENTICATION, "gateway_no_db", ("no connected db",)),
    (AUTHENTICATION, "relay_token", (
        "无效的令牌", "令牌已过期", "未提供令牌", "令牌已被禁用", "令牌状态不可用", "令牌验证失败",
        "invalid proxy server token")),
    (AUTHENTICATION, "", (
        "incorrect api key", "invalid api key", "invalid_api_key", "invalid x-api-key",
        "api key not valid", "no api key provided", "didn't provide an api key",
        "did not provide an api key", "invalid authentication", "invalid_authentication",
        "authentication error", "authenticationerror", "authentication failed",
        "unauthenticated", "unauthorized", "invalid subscription key",
        "must be a member of an organization", "api key expired", "api key has expired",
        "api key has been revoked", "token has expired", "token expired", "invalid token",
        "invalid bearer")),
    (PERMISSION, "verify", ("must be verified", "verify organization",
                            "organization verification")),
    (PERMISSION, "region", (
        "country, region, or territory", "unsupported_country", "not supported in your region",
        "not available in your region", "region is not supported", "region not supported",
        "unsupported region", "not available in your country")),
    (PERMISSION, "model_grant", (
        "not allowed to access model", "key not allowed", "not allowed to use model",
        "not allowed to use this model", "无权使用", "无权访问", "无权限使用")),
    (MODEL_NOT_FOUND, "relay_channel", ("无可用渠道", "no available channel",
                                        "no channel available")),
    (MODEL_NOT_FOUND, "wrong_kind", (
        "not a chat model", "model argument should be left blank",
        "operation does not work with the specified model",
        "not supported in the v1/chat/completions", "not supported in the v1/images")),
    (MODEL_NOT_FOUND, "deployment", (
        "deploymentnotfound", "deployment for this resource does not exist",
        re.compile(r"deployment[^.\n]{0,80}?(?:does not exist|not found)"))),
    (MODEL_NOT_FOUND, "litellm", ("llm provider not provided", "invalid model name passed")),
    (MODEL_NOT_FOUND, "", (
        "model_not_found", "model not found", "does not exist or you do not have access",
        re.compile(r"\bmodel\b[^.\n]{0,80}?(?:does not exist|not found|is not available|"
                   r"is not supported|not supported|unavailable)"),
        "invalid model", "unknown model", "unsupported model", "模型不存在", "不存在该模型",
        "倍率或价格未配置", "litellm.notfounderror")),
    (PERMISSION, "", (
        "permission denied", "permissiondeniederror", "insufficient permissions",
        "do not have permission", "don't have permission", "not have access", "forbidden",
        "access denied", "not authorized", "error code: 1020", "error code: 1010",
        "用户已被封禁", "已被封禁", "用户已被禁用", "没有权限")),
    (RATE_LIMIT, "cf1015", ("error code: 1015", "being rate limited")),
    (RATE_LIMIT, "saturated", ("负载已饱和", "请求过于频繁", "请求频率", "频率限制", "限流")),
    (RATE_LIMIT, "", (
        "rate limit", "rate_limit", "ratelimit", "too many requests", "throttl",
        "resource has been exhausted", "resource_exhausted")),
    (TIMEOUT, "", (
        re.compile(r"time[d]?[ _-]?out"), "deadline exceeded", "deadline_exceeded",
        "error code: 524", "error code: 522", "超时")),
    (NETWORK, "dns", _DNS_TEXTS[:5]),
    (NETWORK, "refused", ("connection refused", "econnrefused", "连接被拒绝")),
    (NETWORK, "tls", _TLS_TEXTS),
    (NETWORK, "reset", (
        "connection reset", "econnreset", "server disconnected", "remote end closed",
        "broken pipe", "unexpected eof", "upstream connect error",
        "disconnect/reset before headers")),
    (NETWORK, "", (
        "connection error", "connection failed", "connect failed", "could not connect",
        "couldn't connect", "failed to connect", "unable to connect", "dial tcp",
        "network is unreachable", "ehostunreach", "origin is unreachable", "web server is down",
        "error code: 521", "error code: 523", "apiconnectionerror", "连接失败", "无法连接")),
    (SERVER, "", (
        "overloaded", "server had an error", "internal server error", "internal error",
        "internal_error", "server_error", "server error", "service unavailable",
        "service_unavailable", "temporarily unavailable", "bad gateway", "no healthy upstream",
        "upstream error", "上游错误", "服务器错误", "服务不可用", "系统繁忙", "服务繁忙")),
    (INVALID_REQUEST, "too_large", (
        "request entity too large", "payload too large", "payload_too_large", "body exceeded",
        "content too large")),
    (INVALID_REQUEST, "route", (
        "invalid url", "cannot post", "page not found", "no route", "unknown url",
        "404 not found")),
    (INVALID_REQUEST, "", (
        "invalid value", "unknown parameter", "unrecognized request argument",
        "missing required parameter", re.compile(r"invalid '[^'\n]{1,60}'"),
        "supported values are", "must be one of", "not supported by this model",
        "does not support parameter", "unsupportedparamserror", "unsupported parameter",
        "unsupported value", "invalid image", "invalid_request", "badrequesterror",
        "bad request", "validation error", "参数错误", "参数无效", "不支持的参数")),
)  # fmt: skip


def _match_any(text: str, patterns: Iterable[str | re.Pattern[str]]) -> bool:
    for pattern in patterns:
        if isinstance(pattern, str):
            if pattern in text:
                return True
        elif pattern.search(text):
            return True
    return False


def _status_category(status: int) -> tuple[str, str] | None:
    """Status-only meaning; None for 2xx (decided from the body)."""
    if 200 <= status <= 299:
        return None
    special = {
        400: (INVALID_REQUEST, ""),
        401: (AUTHENTICATION, ""),
        402: (QUOTA, ""),
        403: (PERMISSION, ""),
        404: (MODEL_NOT_FOUND, "status_404"),
        405: (INVALID_REQUEST, "route"),
        408: (TIMEOUT, "request"),
        409: (SERVER, "conflict"),
        410: (MODEL_NOT_FOUND, ""),
        411: (INVALID_REQUEST, ""),
        413: (INVALID_REQUEST, "too_large"),
        414: (INVALID_REQUEST, "too_large"),
        415: (INVALID_REQUEST, ""),
        422: (INVALID_REQUEST, ""),
        429: (RATE_LIMIT, ""),
        451: (PERMISSION, "region"),
        499: (TIMEOUT, "client_closed"),
        504: (TIMEOUT, "gateway"),
        522: (TIMEOUT, "gateway"),
        524: (TIMEOUT, "gateway"),
        598: (TIMEOUT, "gateway"),
        599: (TIMEOUT, "gateway"),
        521: (NETWORK, "origin"),
        523: (NETWORK, "origin"),
        525: (NETWORK, "tls"),
        526: (NETWORK, "tls"),
    }
    if status in special:
        return special[status]
    if 500 <= status <= 599:
        return SERVER, ""
    return None


# ---------------------------------------------------------------------------
# Decision
# ---------------------------------------------------------------------------


def _decide(ev: _Evidence, now: float) -> Diagnosis:
    if ev.transport is not None:
        category, tag = ev.transport
        return _diagnosis(ev, category, tag, now)
    text = ev.scan_text()
    tokens = [t for t in (_token(raw) for raw in ev.tokens) if t]
    found = _decide_content(ev, tokens, text)
    if found is None:
        status = _effective_status(ev)
        if status is not None and 100 <= status <= 599:
            found = _status_category(status)
            if found is None and not 200 <= status <= 299:
                found = (UNKNOWN, "status")
        elif status is not None:
            found = (UNKNOWN, "bad_status")
    if found is None:
        weak = next((_WEAK_TOKENS[t] for t in tokens if t in _WEAK_TOKENS), None)
        if weak is not None:
            found = (weak, "weak")
    if found is None:
        found = _decide_body(ev)
    category, tag = found
    if not tag:
        tag = _specific_tag(ev, category, text)
    return _diagnosis(ev, category, tag, now)


def _specific_tag(ev: _Evidence, category: str, text: str) -> str:
    """A code said the category; a message or the status may say more, for the hint."""
    for rule_category, tag, patterns in _MESSAGE_RULES:
        if rule_category == category and tag and _match_any(text, patterns):
            return tag
    status = _effective_status(ev)
    if status is not None and 100 <= status <= 599:
        by_status = _status_category(status)
        if by_status is not None and by_status[0] == category:
            return by_status[1]
    return ""


def _decide_content(ev: _Evidence, tokens: list[str], text: str) -> tuple[str, str] | None:
    """code/type first, then messages; quota signals anywhere win over both."""
    token_hits = [hit for hit in (_token_category(t) for t in tokens) if hit is not None]
    # A quota signal anywhere beats everything: gateways collapse "out of credit" into
    # rate-limit types (LiteLLM's throttling_error) and relays into 401/403.
    quota = next((hit for hit in token_hits if hit[0] == QUOTA), None)
    if quota is None:
        for tag, patterns in _QUOTA_TEXTS:
            if _match_any(text, patterns):
                quota = (QUOTA, tag)
                break
    if quota is not None:
        return quota
    found = token_hits[0] if token_hits else None
    if found is None and text:
        # "quota exceeded" is a quota unless it talks about rates (Google's per-minute quotas)
        quota_words = bool(_WEAK_QUOTA_RE.search(text))
        for category, tag, patterns in _MESSAGE_RULES:
            if category == RATE_LIMIT and quota_words:
                found = (RATE_LIMIT if _RATE_WORDS_RE.search(text) else QUOTA, "")
                break
            if _match_any(text, patterns):
                found = (category, tag)
                break
    if (
        (found is None or found[0] == INVALID_REQUEST)
        and ev.param is not None
        and ev.param.lower() == "model"
        and "missing_required_parameter" not in tokens
        and "missing required" not in text
        and (_effective_status(ev) or 0) < 500
        and (ev.error_object or found is not None)
    ):
        found = (MODEL_NOT_FOUND, "param_model")
    return found


def _effective_status(ev: _Evidence) -> int | None:
    """A relay's report of its upstream's status is more specific than its own status."""
    upstream = ev.upstream_status
    if upstream is not None and 400 <= upstream <= 599:
        return upstream
    return ev.status


def _decide_body(ev: _Evidence) -> tuple[str, str]:
    status = ev.status
    two_xx = status is not None and 200 <= status <= 299
    if ev.error_object and (ev.error_key or not two_xx):
        if two_xx:
            return SERVER, "wrapped"
        return UNKNOWN, "error_object"
    if two_xx:
        if ev.images and not ev.body:
            return UNKNOWN, "success"
        return MALFORMED_RESPONSE, ""
    if status is None and ev.success_shaped:
        if ev.images and not ev.body:
            return UNKNOWN, "success"
        return MALFORMED_RESPONSE, ""
    return UNKNOWN, ""


def _diagnosis(ev: _Evidence, category: str, tag: str, now: float) -> Diagnosis:
    retryable = category in RETRYABLE
    retry_after, source = _retry_after(ev, category, now) if retryable else (None, "")
    param = ev.param
    if param is None and category == INVALID_REQUEST:
        param = _param_from_text(ev.scan_text(), ev.texts)
    message = _clean_message(ev.message) if ev.message else None
    return Diagnosis(
        category=category,
        problem_class=PROBLEM_CLASS[category],
        retryable=retryable,
        hint=_hint(ev, category, tag, (retry_after, source), param),
        retry_after_s=retry_after,
        status=ev.status,
        code=_clean_field(ev.code),
        type=_clean_field(ev.type),
        param=_clean_field(param),
        message=message or None,
    )


_PARAM_RES = (
    re.compile(
        r"(?:unknown|unrecognized|unsupported|missing required) parameter:? '([^'\n]{1,60})'"
    ),
    re.compile(r"invalid '([^'\n]{1,60})'"),
    re.compile(r"does not support parameters?:? \[?'([^'\n]{1,60})'"),
    re.compile(r"unrecognized request argument supplied: ([a-z_][a-z0-9_.\[\]]{0,60})"),
    # LiteLLM's UnsupportedParamsError: "Setting `response_format` is not supported by ..."
    re.compile(r"setting `([a-z_][a-z0-9_]{0,60})` is not supported"),
)


def _param_from_text(lowered: str, texts: list[str]) -> str | None:
    original = "\n".join(texts)[:_SCAN_MAX_CHARS]
    for pattern in _PARAM_RES:
        match = pattern.search(lowered)
        if match:
            start, end = match.span(1)
            # Take the parameter's original spelling from the same offsets.
            name = original[start:end] if original.lower()[start:end] == match.group(1) else None
            return _normalise_param(name or match.group(1))
    return None


# --- Retry-After -----------------------------------------------------------------

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_MESSAGE_WAIT_RE = re.compile(
    r"(?:try again|retry) (?:in|after) (\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|secs?|seconds?|"
    r"m|mins?|minutes?)?\b"
)


def _retry_after(ev: _Evidence, category: str, now: float) -> tuple[float | None, str]:
    """Seconds to wait and where that came from (the SDK's order: -ms first)."""
    headers = ev.headers
    value = _parse_seconds(headers.get("retry-after-ms"), scale=0.001)
    if value is not None:
        return value, "retry-after-ms"
    value = _parse_retry_after(headers.get("retry-after"), now)
    if value is not None:
        return value, "Retry-After"
    if category != RATE_LIMIT:
        return None, ""
    # Fallbacks for a 429 only: other responses carry these headers too, with other meanings.
    reset = _ratelimit_reset(headers)
    if reset is not None:
        return reset[0], reset[1]
    value = _wait_from_message(ev.scan_text())
    if value is not None:
        return value, "the error message"
    return None, ""


def _parse_seconds(raw: str | None, *, scale: float = 1.0) -> float | None:
    if raw is None:
        return None
    text = raw.strip()
    if not re.fullmatch(r"-?\d{1,15}(?:\.\d{1,9})?", text):
        return None
    value = float(text) * scale
    if not math.isfinite(value):
        return None
    return max(value, 0.0)


def _parse_retry_after(raw: str | None, now: float) -> float | None:
    if raw is None:
        return None
    seconds = _parse_seconds(raw)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    try:
        stamp = when.timestamp() if when.tzinfo else when.replace(tzinfo=_utc()).timestamp()
    except (OverflowError, OSError, ValueError):
        return None
    return max(round(stamp - now, 3), 0.0)


def _utc() -> Any:
    from datetime import timezone

    return timezone.utc


def _parse_duration(raw: str | None) -> float | None:
    """OpenAI's x-ratelimit-reset-* values: "12ms", "1s", "6m0s", "1h2m3.5s", or seconds."""
    if raw is None:
        return None
    text = raw.strip().lower()
    plain = _parse_seconds(text)
    if plain is not None:
        return plain
    if not text or len(text) > 40:
        return None
    parts = _DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    factor = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return round(sum(float(n) * factor[u] for n, u in parts), 3)


def _ratelimit_reset(headers: Mapping[str, str]) -> tuple[float, str] | None:
    """Fallback for a 429 without Retry-After: when the exhausted bucket refills.

    The reset time is when the whole bucket is full again, so it is an upper bound on the
    wait; a bucket reported as exhausted (remaining 0) is preferred over the others.
    """
    resets: list[tuple[float, str, bool]] = []
    for kind in ("requests", "tokens", "images"):
        name = f"x-ratelimit-reset-{kind}"
        value = _parse_duration(headers.get(name))
        if value is not None:
            empty = headers.get(f"x-ratelimit-remaining-{kind}", "").strip() == "0"
            resets.append((value, name, empty))
    chosen = [r for r in resets if r[2]] or resets
    if not chosen:
        return None
    value, name, _ = max(chosen)
    return value, name


def _wait_from_message(text: str) -> float | None:
    match = _MESSAGE_WAIT_RE.search(text)
    if not match:
        return None
    number = float(match.group(1))
    unit = (match.group(2) or "s").rstrip("s") or "s"
    if unit.startswith("m") and unit not in ("m", "min", "minute"):
        return round(number / 1000, 3)  # ms, millisecond
    if unit in ("m", "min", "minute"):
        return number * 60
    return number


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


# --- output hygiene -------------------------------------------------------------


def mask_secrets(text: str) -> str:
    """Replace things that look like API keys or tokens with a masked form (the shapes are
    :mod:`pytest_imagegen.redact`'s, the one redaction policy)."""
    from pytest_imagegen.redact import mask_key_shapes

    return mask_key_shapes(text)


def _clean_message(text: str | None) -> str:
    if not text:
        return ""
    cleaned = _collapse(mask_secrets(str(text)[: MESSAGE_MAX_CHARS * 8]))
    if len(cleaned) > MESSAGE_MAX_CHARS:
        cleaned = cleaned[: MESSAGE_MAX_CHARS - 1] + "\u2026"
    return cleaned


def _clean_field(text: str | None) -> str | None:
    if text is None:
        return None
    cleaned = _collapse(mask_secrets(text[: _FIELD_MAX_CHARS * 4]))[:_FIELD_MAX_CHARS]
    return cleaned or None


# --- defensive helpers -------------------------------------------------------------

_REPR = reprlib.Repr()
_REPR.maxstring = 120
_REPR.maxother = 120
_REPR.maxlevel = 3


def _short_repr(value: object) -> str:
    try:
        text = _REPR.repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return mask_secrets(text)[:200]


def _safe_getattr(obj: object, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # properties that need I/O or a set-up request raise
        return None


def _safe_call(func: Any) -> Any:
    try:
        return func() if callable(func) else None
    except Exception:
        return None


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return ""


def _internal_error_diagnosis(x: object, exc: Exception) -> Diagnosis:
    try:
        seen = type(x).__name__
        why = type(exc).__name__
    except Exception:
        seen, why = "object", "error"
    return Diagnosis(
        category=UNKNOWN,
        problem_class=PROBLEM_CLASS[UNKNOWN],
        retryable=False,
        hint=(
            f"Could not interpret a {seen} (the classifier failed with {why}): look at the raw "
            "error, and report it so it gets a category."
        ),
    )
