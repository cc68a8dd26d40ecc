"""Size limits, and the output hygiene every text of a diagnosis goes through: masked
secrets, collapsed whitespace, bounded length; defensive getters that never raise."""

from __future__ import annotations

import reprlib
from typing import Any

MESSAGE_MAX_CHARS = 500
_FIELD_MAX_CHARS = 100
_SCAN_MAX_CHARS = 16_384  # error texts are short; pages and huge bodies are cut, not scanned whole
_JSON_MAX_BYTES = 8 * 1024 * 1024  # bigger bodies are never error envelopes
_NEST_MAX = 4  # error objects inside error objects (Azure inner errors, relay-wrapped upstreams)
_CHAIN_MAX = 10  # __cause__/__context__ links followed
_HEADERS_MAX = 256

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


def _collapse(text: str) -> str:
    return " ".join(text.split())
