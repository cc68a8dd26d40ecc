"""What a cassette may keep of an HTTP interaction: secrets scrubbed, images shrunk.

Pure functions over vcrpy's request objects and response dicts, used by
:mod:`pytest_imagegen.cassettes` before anything is written and when requests are matched.
The same scrubbing runs on a request when it is recorded and when it is replayed, so a
placeholder in the cassette matches the secret in a live request.
"""

from __future__ import annotations

import base64
import binascii
import functools
import gzip
import hashlib
import json
import re
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import (
    parse_qsl,
    urlencode,
)

from vcr.request import Request

from pytest_imagegen.bounds import CUT_PREFIX_BYTES, cut_marker, find_cut
from pytest_imagegen.redact import MIN_SECRET_LEN, PLACEHOLDER, Redactor, header_values

# Re-exported: cassettes and their tests name these from here.
__all__ = ["MIN_SECRET_LEN", "PLACEHOLDER", "ImageRecord", "Scrubber", "compact_png", "shrink"]

# A request-body string at least this long that decodes to an image is matched by digest.
_MIN_EMBEDDED_IMAGE_CHARS = 256

_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")


def _sniff(data: bytes) -> str | None:
    from pytest_imagegen.images import sniff_format

    return sniff_format(data)


@dataclass(frozen=True)
class ImageRecord:
    """An image replaced in a response: where it was, and what the original was."""

    at: str  # JSON pointer of the b64_json string, or "body" for a whole image body
    format: str
    width: int
    height: int
    sha256: str  # of the original image bytes
    bytes: int  # length of the original image
    stored_bytes: int  # length of the image kept in the cassette

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "format": self.format,
            "size": f"{self.width}x{self.height}",
            "sha256": self.sha256,
            "bytes": self.bytes,
            "stored_bytes": self.stored_bytes,
        }


@dataclass(frozen=True)
class Scrubber(Redactor):
    """Scrubs secrets from requests and responses and shrinks images in responses.

    What is secret is :mod:`pytest_imagegen.redact`'s policy: headers outside the allowlist,
    secret-named fields and query parameters, and ``secrets`` (literal values such as API
    keys and configured header values) wherever they occur. The values of a request's
    non-allowlisted headers are secrets of that whole interaction (request and response),
    so a token set at run time is not written even when a server echoes it.
    """

    shrink_images: bool = True

    @classmethod
    def create(
        cls,
        *,
        secrets: Iterable[str] = (),
        secret_headers: Iterable[str] = (),
        shrink_images: bool = True,
    ) -> Scrubber:
        return cls(
            secrets=cls._values(secrets),
            secret_headers=cls._names(secret_headers),
            shrink_images=shrink_images,
        )

    def for_headers(self, headers: Any) -> Scrubber:
        """This scrubber with the values of ``headers`` outside the allowlist as secrets."""
        extra = tuple(header_values(headers or {}))
        return _with_extra(self, extra) if extra else self

    # -- JSON -----------------------------------------------------------------------------

    def json_value(
        self, value: Any, *, images: list[ImageRecord] | None = None, at: str = ""
    ) -> Any:
        """A scrubbed copy of a decoded JSON value; shrinks ``b64_json`` images into ``images``."""
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                new_key = self.text(key) if isinstance(key, str) else key
                pointer = f"{at}/{_pointer_escape(str(key))}"
                if isinstance(key, str) and self.is_secret_field(key) and item not in (None, ""):
                    out[new_key] = PLACEHOLDER
                elif (
                    images is not None
                    and key == "b64_json"
                    and isinstance(item, str)
                    and self.shrink_images
                ):
                    out[new_key] = self._shrink_b64(item, pointer, images)
                else:
                    out[new_key] = self.json_value(item, images=images, at=pointer)
            return out
        if isinstance(value, list):
            return [
                self.json_value(item, images=images, at=f"{at}/{i}") for i, item in enumerate(value)
            ]
        return super().json_value(value)

    def _shrink_b64(self, text: str, pointer: str, images: list[ImageRecord]) -> str:
        try:
            original = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return self.text(text)  # not base64: a malformed answer stays as it was
        record, stored = shrink(original, at=pointer)
        if record is None:
            return text
        images.append(record)
        return base64.b64encode(stored).decode("ascii")

    # -- requests -------------------------------------------------------------------------

    def request(self, request: Request) -> tuple[Request, str]:
        """The request as a cassette keeps it, and its canonical body for matching."""
        own = self.for_headers(request.headers)
        headers = {name: own.header(name, value) for name, value in request.headers.items()}
        content_type = _header(request.headers, "content-type")
        body, canonical = own.request_body(request.body, content_type)
        scrubbed = Request(request.method, own.url(request.uri), body, headers)
        return scrubbed, canonical

    def request_body(self, body: Any, content_type: str) -> tuple[bytes | None, str]:
        """``(stored body, canonical text)`` of a request body.

        JSON is stored in its canonical form (sorted keys, no whitespace, secrets
        scrubbed, embedded images replaced by their digest); a multipart form is stored as
        a JSON summary of its parts (file contents by digest), because its boundary
        changes on every request; anything else is stored scrubbed, as sent.
        """
        raw = _body_bytes(body)
        if not raw:
            return (raw if raw is not None else None), ""
        lowered = content_type.lower()
        if "multipart/form-data" in lowered:
            parts = _multipart_parts(raw, content_type)
            if parts is not None:
                summary = [self._form_part(part) for part in parts]
                text = _canonical_json({"multipart/form-data": summary})
                return text.encode("utf-8"), text
        stripped = raw.lstrip()[:1]
        if stripped in (b"{", b"["):
            try:
                decoded = json.loads(raw)
            except ValueError:
                pass
            else:
                text = _canonical_json(_digest_images(self.json_value(decoded)))
                return text.encode("utf-8"), text
        if "application/x-www-form-urlencoded" in lowered:
            try:
                pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
            except UnicodeDecodeError:
                pairs = None
            if pairs is not None:
                cleaned = [
                    (self.text(k), PLACEHOLDER if self.is_secret_field(k) else self.text(v))
                    for k, v in pairs
                ]
                stored = urlencode(cleaned, safe="<>:").encode("utf-8")
                return stored, _canonical_json(sorted(cleaned))
        scrubbed = self.data(raw)
        try:
            return scrubbed, scrubbed.decode("utf-8")
        except UnicodeDecodeError:
            return scrubbed, "sha256:" + hashlib.sha256(scrubbed).hexdigest()

    def _form_part(self, part: _Part) -> dict[str, Any]:
        name = self.text(part.name)
        entry: dict[str, Any] = {"name": name}
        if part.filename is not None or part.content_type.startswith(("image/", "application/oct")):
            entry["filename"] = self.text(part.filename or "")
            entry["content_type"] = part.content_type
            entry["sha256"] = hashlib.sha256(part.data).hexdigest()
            entry["bytes"] = len(part.data)
            return entry
        if self.is_secret_field(part.name):
            entry["value"] = PLACEHOLDER
        else:
            try:
                entry["value"] = self.text(part.data.decode("utf-8"))
            except UnicodeDecodeError:
                entry["sha256"] = hashlib.sha256(part.data).hexdigest()
        return entry

    # -- responses ------------------------------------------------------------------------

    def response(self, response: Mapping[str, Any]) -> dict[str, Any]:
        """A scrubbed copy of a vcrpy response dict, images shrunk.

        Shrunk images are described in an extra ``imagegen`` entry of the response (the
        original's sha256 and length); vcrpy ignores it when it replays.
        """
        status = dict(response.get("status") or {})
        if isinstance(status.get("message"), str):
            status["message"] = self.text(status["message"])
        headers: dict[str, list[Any]] = {}
        for name, values in (response.get("headers") or {}).items():
            values = list(values) if isinstance(values, (list, tuple)) else [values]
            headers[name] = [self.header(name, v) for v in values]
        body = _body_bytes((response.get("body") or {}).get("string"))
        images: list[ImageRecord] = []
        cut = find_cut(body)
        if cut is not None:
            # A body above the cap: a short prefix and the trailer (length, sha256, cap).
            prefix, info = cut
            body = self.data(prefix[:CUT_PREFIX_BYTES]) + cut_marker(info)
            _set_header(headers, "content-length", str(len(body)))
        elif body:
            body = self._decoded(body, headers)
            body = self._response_body(body, headers, images)
            _set_header(headers, "content-length", str(len(body)))
        out: dict[str, Any] = {
            "status": status,
            "headers": headers,
            "body": {"string": body if body is not None else b""},
        }
        if images:
            out["imagegen"] = {"images": [image.to_dict() for image in images]}
        return out

    def _decoded(self, body: bytes, headers: dict[str, list[Any]]) -> bytes:
        """The body without gzip/deflate content-coding, so that it can be scrubbed."""
        encoding = (_header(headers, "content-encoding") or "").strip().lower()
        if encoding not in ("gzip", "x-gzip", "deflate"):
            return body
        try:
            if encoding == "deflate":
                try:
                    decoded = zlib.decompress(body)
                except zlib.error:
                    decoded = zlib.decompress(body, -zlib.MAX_WBITS)
            else:
                decoded = gzip.decompress(body)
        except (OSError, EOFError, zlib.error):
            return body
        _del_header(headers, "content-encoding")
        return decoded

    def _response_body(
        self, body: bytes, headers: dict[str, list[Any]], images: list[ImageRecord]
    ) -> bytes:
        content_type = (_header(headers, "content-type") or "").lower()
        if content_type.startswith("image/") or body.startswith(_IMAGE_MAGIC) or _sniff(body):
            if self.shrink_images:
                record, stored = shrink(body, at="body")
                if record is not None:
                    images.append(record)
                    return stored
            return body
        if "text/event-stream" in content_type:
            return self._event_stream(body, images)
        if "json" in content_type or body.lstrip()[:1] in (b"{", b"["):
            try:
                decoded = json.loads(body)
            except ValueError:
                return self.data(body)
            cleaned = self.json_value(decoded, images=images)
            if cleaned != decoded or images:
                return json.dumps(cleaned, ensure_ascii=False, separators=(",", ":")).encode()
            return self.data(body)
        return self.data(body)

    def _event_stream(self, body: bytes, images: list[ImageRecord]) -> bytes:
        """Server-sent events (streamed generations): each JSON ``data:`` line scrubbed and
        its partial images shrunk, at pointers ``/events/<n>/...``."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return self.data(body)
        lines = text.split("\n")
        event = 0
        for number, line in enumerate(lines):
            ending = "\r" if line.endswith("\r") else ""
            payload = line[5:].strip() if line.startswith("data:") else ""
            try:
                decoded = json.loads(payload) if payload[:1] in ("{", "[") else None
            except ValueError:
                decoded = None
            if decoded is None:
                lines[number] = self.text(line)
                continue
            cleaned = self.json_value(decoded, images=images, at=f"/events/{event}")
            dumped = json.dumps(cleaned, ensure_ascii=False, separators=(",", ":"))
            lines[number] = "data: " + dumped + ending
            event += 1
        return "\n".join(lines).encode("utf-8")


@functools.lru_cache(maxsize=256)
def _with_extra(scrubber: Scrubber, extra: tuple[str, ...]) -> Scrubber:
    # Cached: vcrpy prepares the same request several times, and compiling the secret forms
    # of a scrubber costs more than the lookup.
    values = Scrubber._values([*scrubber.secrets, *extra])
    return Scrubber(
        secrets=values,
        secret_headers=scrubber.secret_headers,
        placeholder=scrubber.placeholder,
        shrink_images=scrubber.shrink_images,
    )


# -- images ---------------------------------------------------------------------------------


def shrink(original: bytes, *, at: str) -> tuple[ImageRecord | None, bytes]:
    """``(record, stored bytes)`` for an image; ``(None, original)`` when it is no image.

    The stored image is :func:`pytest_imagegen.images.shrink_image` of the original; a PNG
    is then re-encoded losslessly with an exact palette (same pixels, a third of the size).
    """
    from pytest_imagegen.images import inspect_image, shrink_image

    if _sniff(original) is None:
        return None, original
    try:
        info = inspect_image(original)
        stored = shrink_image(original)
    except (ValueError, OSError, SyntaxError):
        return None, original
    if info.format == "png":
        stored = compact_png(stored) or stored
    if len(stored) >= len(original):
        stored = original
    record = ImageRecord(
        at=at,
        format=info.format,
        width=info.width,
        height=info.height,
        sha256=hashlib.sha256(original).hexdigest(),
        bytes=len(original),
        stored_bytes=len(stored),
    )
    return record, stored


def compact_png(data: bytes) -> bytes | None:
    """``data`` (a PNG) re-encoded as an 8-bit palette PNG with the very same pixels.

    Shrunk images are blocks of flat colour, so they have at most 256 colours and few
    distinct rows; writing repeated rows with the PNG "Up" filter makes them runs of zeros
    that deflate to almost nothing. None when the image has too many colours or rows.
    """
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        mode = "RGBA" if "A" in im.mode or "transparency" in im.info else "RGB"
        im = im.convert(mode)
        width, height = im.size
        if im.getcolors(256) is None:
            return None
        pixels = im.tobytes()
    bpp = len(mode)
    stride = width * bpp
    rows = [pixels[y * stride : (y + 1) * stride] for y in range(height)]
    distinct: dict[bytes, bytes] = {}
    palette: dict[bytes, int] = {}
    for row in rows:
        if row in distinct:
            continue
        if len(distinct) >= 128:
            return None  # not the blocky kind of image this is meant for
        indices = bytearray(width)
        for x in range(width):
            pixel = row[x * bpp : (x + 1) * bpp]
            index = palette.get(pixel)
            if index is None:
                index = palette[pixel] = len(palette)
            indices[x] = index
        distinct[row] = bytes(indices)
    raw = bytearray()
    up_row = b"\x02" + bytes(width)
    previous = None
    for row in rows:
        if row == previous:
            raw += up_row
        else:
            raw += b"\x00" + distinct[row]
        previous = row
    colours = sorted(palette.items(), key=lambda item: item[1])
    plte = b"".join(pixel[:3] for pixel, _ in colours)
    chunks = [
        _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)),
        _png_chunk(b"PLTE", plte),
    ]
    if bpp == 4:
        chunks.append(_png_chunk(b"tRNS", bytes(pixel[3] for pixel, _ in colours)))
    chunks.append(_png_chunk(b"IDAT", zlib.compress(bytes(raw), 9)))
    chunks.append(_png_chunk(b"IEND", b""))
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _digest_images(value: Any) -> Any:
    """Embedded images in a request body, replaced by their digest for matching."""
    if isinstance(value, dict):
        return {k: _digest_images(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_digest_images(v) for v in value]
    if isinstance(value, str) and len(value) >= _MIN_EMBEDDED_IMAGE_CHARS:
        text = value
        if text.startswith("data:") and "," in text[:100]:
            text = text.split(",", 1)[1]
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            return value
        if _sniff(data):
            digest = hashlib.sha256(data).hexdigest()
            return f"<imagegen:image sha256={digest} bytes={len(data)}>"
    return value


# -- helpers --------------------------------------------------------------------------------


def canonical_json_text(body: Any) -> str:
    """Sorted keys, no whitespace, non-ASCII kept: the form bodies are matched in."""
    return _canonical_json(body)


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _pointer_escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _body_bytes(body: Any) -> bytes | None:
    if body is None:
        return None
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    if hasattr(body, "read"):
        return bytes(body.read())
    if isinstance(body, Iterable):
        return b"".join(part if isinstance(part, bytes) else str(part).encode() for part in body)
    return str(body).encode("utf-8")


def _header(headers: Mapping[str, Any], name: str) -> str:
    for key, value in headers.items():
        if key.lower() == name:
            if isinstance(value, (list, tuple)):
                value = value[0] if value else ""
            return value if isinstance(value, str) else str(value)
    return ""


def _set_header(headers: dict[str, list[Any]], name: str, value: str) -> None:
    for key in list(headers):
        if key.lower() == name:
            headers[key] = [value]
            return


def _del_header(headers: dict[str, list[Any]], name: str) -> None:
    for key in list(headers):
        if key.lower() == name:
            del headers[key]


@dataclass(frozen=True)
class _Part:
    name: str
    filename: str | None
    content_type: str
    data: bytes


_DISPOSITION_PARAM = re.compile(r';\s*([a-zA-Z*]+)="((?:[^"\\]|\\.)*)"')


def _multipart_parts(body: bytes, content_type: str) -> list[_Part] | None:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        return None
    delimiter = b"--" + match.group(1).encode("latin-1")
    if delimiter not in body:
        return None  # e.g. a stored summary: it is JSON already
    parts: list[_Part] = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.removeprefix(b"\r\n")
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            return None
        data = data.removesuffix(b"\r\n")
        name, filename, part_type = "", None, ""
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, _, value = line.partition(":")
            if key.strip().lower() == "content-disposition":
                params = dict(_DISPOSITION_PARAM.findall(value))
                name = params.get("name", "")
                filename = params.get("filename")
            elif key.strip().lower() == "content-type":
                part_type = value.strip().lower()
        parts.append(_Part(name, filename, part_type, data))
    return parts
