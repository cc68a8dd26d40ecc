"""Server-Sent Events: one event block parsed (shared by the streaming checks and the
fallback runner, which read image streams)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["parse_block"]


def parse_block(block: bytes) -> tuple[str, Any] | None:
    """``(event name, JSON payload or None)`` of one SSE block (the text between blank
    lines); None for a block of comments only."""
    name, data = "", []
    for line in block.decode("utf-8", "replace").split("\n"):
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    if not name and not data:
        return None
    try:
        payload = json.loads("\n".join(data)) if data else None
    except ValueError:
        payload = None
    return name, payload
