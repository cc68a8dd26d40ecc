"""The decision: from the evidence to a Diagnosis, in a fixed order (quota signals, then
code/type, then message patterns, then status, then weak generic types)."""

from __future__ import annotations

import email.utils
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from pytest_imagegen.classify._text import _SCAN_MAX_CHARS, _clean_field, _clean_message
from pytest_imagegen.classify.categories import (
    INVALID_REQUEST,
    MALFORMED_RESPONSE,
    MODEL_NOT_FOUND,
    PROBLEM_CLASS,
    QUOTA,
    RATE_LIMIT,
    RETRYABLE,
    SERVER,
    UNKNOWN,
)
from pytest_imagegen.classify.evidence import _Evidence, _gather, _normalise_param
from pytest_imagegen.classify.hints import _hint
from pytest_imagegen.classify.tables import (
    _MESSAGE_RULES,
    _QUOTA_TEXTS,
    _RATE_WORDS_RE,
    _WEAK_QUOTA_RE,
    _WEAK_TOKENS,
    _match_any,
    _status_category,
    _token,
    _token_category,
)
from pytest_imagegen.errors import Category, Diagnosis, MalformedResponse


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


def _specific_tag(ev: _Evidence, category: Category, text: str) -> str:
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


def _decide_content(ev: _Evidence, tokens: list[str], text: str) -> tuple[Category, str] | None:
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


def _decide_body(ev: _Evidence) -> tuple[Category, str]:
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


def _diagnosis(ev: _Evidence, category: Category, tag: str, now: float) -> Diagnosis:
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


def _retry_after(ev: _Evidence, category: Category, now: float) -> tuple[float | None, str]:
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
