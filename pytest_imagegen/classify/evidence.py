"""Evidence gathering: what an input says (status, headers, codes, types, messages, the
shape of a body, the exception chain), before any decision is taken."""

from __future__ import annotations

import errno
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_imagegen.classify._text import (
    _CHAIN_MAX,
    _FIELD_MAX_CHARS,
    _HEADERS_MAX,
    _JSON_MAX_BYTES,
    _NEST_MAX,
    _SCAN_MAX_CHARS,
    MESSAGE_MAX_CHARS,
    _clean_message,
    _collapse,
    _safe_call,
    _safe_getattr,
    _safe_str,
    _short_repr,
)
from pytest_imagegen.classify.categories import MALFORMED_RESPONSE, NETWORK, TIMEOUT, UNKNOWN
from pytest_imagegen.classify.tables import (
    _AZURE_CODES,
    _DNS_TEXTS,
    _LITELLM_TYPES,
    _ONE_API_TYPES,
    _TLS_TEXTS,
    _match_any,
    _token,
)
from pytest_imagegen.errors import Category

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
    transport: tuple[Category, str] | None = None  # (category, kind) of a failure with no answer
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
