"""What the reference server's routes share: the reply being built, the way to drop a
connection, the bodies they all send. A leaf module, so that the routes kept in their own
modules (edits, streams, responses) and the app that dispatches to them import no cycle."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

MSG_BAD_JSON = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
    "your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was "
    "not valid JSON. If you have trouble figuring out how to fix this, please contact us through "
    "our help center at help.openai.com.)"
)


def msg_model_not_found(model: str) -> str:
    return f"The model `{model}` does not exist or you do not have access to it."


class Abort(ConnectionAbortedError):
    """Raised by the app to end a connection without (the rest of) a response.

    A ``ConnectionError`` subclass so werkzeug treats it as a dropped connection and stays
    quiet; ``reset`` asks the request handler for a TCP reset instead of a normal close.
    """

    def __init__(self, reason: str = "aborted", *, reset: bool = False) -> None:
        super().__init__(reason)
        self.reset = reset


@dataclass
class Reply:
    """A response decided but not sent yet; ``delivery`` says how its body goes out."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    delivery: str = "normal"  # normal | slow_body | truncated | events
    seconds: float = 0.0
    # delivery "events": (seconds to wait first, bytes) pieces sent one by one (chunked),
    # then, with ``stall_after``, a wait until the client gives up instead of the end.
    events: list[tuple[float, bytes]] = field(default_factory=list)
    stall_after: bool = False


@functools.lru_cache(maxsize=64)
def _image(width: int, height: int, fmt: str, seed: str) -> bytes:
    # Cached: the same prompt and size give the same bytes, and encoding a large PNG costs
    # tens of milliseconds, which would otherwise dominate a loopback benchmark.
    from pytest_imagegen.images import make_image

    return make_image(width, height, fmt, seed=seed)


@functools.lru_cache(maxsize=8)
def _uncompressed_png(data: bytes) -> bytes:
    # The uncompressed_png defect: the same image as RGBA stored without zlib compression,
    # as an endpoint answers that re-encodes images with compression level 0.
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        out = io.BytesIO()
        im.convert("RGBA").save(out, "PNG", compress_level=0)
    return out.getvalue()


def _json(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")
