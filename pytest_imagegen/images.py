"""Image bytes: sniffing, decoding, synthesis and shrinking (Pillow, imported lazily)."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import io
import zlib
from dataclasses import dataclass, field
from typing import Any

# Pillow's format names -> the names the Images API uses in ``output_format``.
_API_FORMAT = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp", "GIF": "gif"}
_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
#: The media type of each image format the API names.
MIME_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif"}

# Made images are kept by their arguments: the same input image goes into many edits checks,
# and encoding a 1024x1024 PNG takes tens of milliseconds (the bytes are the same each
# time; replays match them by digest).
_MADE = 64

# The side of the thumbnail an image is reduced to by ``shrink_image``: small enough to
# compress to a few KB, big enough to still look like the original in a report.
SHRINK_SIDE = 16


@dataclass(frozen=True)
class ImageInfo:
    """Format and dimensions of decoded image bytes."""

    format: str  # png | jpeg | webp | gif
    width: int
    height: int

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class GeneratedImage:
    """One image an endpoint produced, decoded."""

    data: bytes = field(repr=False)
    format: str
    width: int
    height: int
    url: str | None = None
    revised_prompt: str | None = None

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def sniff_format(data: bytes) -> str | None:
    """The image format from magic bytes alone, or None; cheap, needs no Pillow."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def inspect_image(data: bytes) -> ImageInfo:
    """Decode ``data`` fully and return its format and size; ValueError if it is no image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            fmt = _API_FORMAT.get(im.format or "", (im.format or "unknown").lower())
            return ImageInfo(fmt, im.width, im.height)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"not a decodable image ({len(data)} bytes): {exc}") from exc


def image_mode(data: bytes) -> str:
    """Pillow's mode of an image (``RGBA``, ``RGB``, ``LA``, ``L``, ``P``...); a palette
    image with transparency counts as ``RGBA``. ValueError if ``data`` is no image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.mode == "P" and "transparency" in im.info:
                return "RGBA"
            return str(im.mode)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"not a decodable image ({len(data)} bytes): {exc}") from exc


@functools.lru_cache(maxsize=_MADE)
def make_mask(width: int, height: int) -> bytes:
    """A PNG edit mask: opaque, with a fully transparent centre (the area to edit)."""
    from PIL import Image, ImageDraw

    im = Image.new("RGBA", (width, height), (0, 0, 0, 255))
    ImageDraw.Draw(im).rectangle(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(0, 0, 0, 0)
    )
    return _encode(im, "png")


@functools.lru_cache(maxsize=_MADE)
def make_input_image(width: int, height: int, fmt: str = "png", *, seed: str = "") -> bytes:
    """An edit input image: :func:`make_image` with an alpha channel for PNG (dall-e-2 needs
    one when no mask is sent)."""
    if fmt != "png":
        return make_image(width, height, fmt, seed=seed)
    # The pixels of make_image's PNG, read back, are the pattern's (PNG is lossless): made
    # with alpha directly, the bytes are those of decoding and converting it, at half the cost.
    return _encode(_pattern(width, height, seed).convert("RGBA"), "png")


def decode_b64(text: str) -> bytes:
    """Strict base64 decoding (accepts a ``data:`` URL prefix); ValueError when invalid."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"invalid base64 ({len(text)} characters): {exc}") from exc


def _encode(im: Any, fmt: str, *, fast: bool = False) -> bytes:
    """``im`` as ``fmt`` bytes: as small as Pillow makes them (what cassettes keep), or with
    ``fast``, quick settings of about the same size for synthesized images: their long runs
    of equal pixels suit zlib's run-length strategy (Z_RLE), 2-4 times quicker than
    ``optimize``, which took a third of a second for a 4K PNG)."""
    pil_format = _PIL_FORMAT.get(fmt.lower())
    if pil_format is None:
        raise ValueError(f"unsupported image format {fmt!r}; use png, jpeg or webp")
    buf = io.BytesIO()
    if pil_format == "JPEG" and im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    save_args: dict[str, object]
    if fast:
        fast_args: dict[str, dict[str, object]] = {
            "PNG": {"compress_type": zlib.Z_RLE},
            "WEBP": {"quality": 80, "method": 0},
        }
        save_args = fast_args.get(pil_format, {"quality": 80})
    else:
        save_args = {"optimize": True}
        if pil_format != "PNG":
            save_args["quality"] = 80
    im.save(buf, format=pil_format, **save_args)
    return buf.getvalue()


@functools.lru_cache(maxsize=_MADE)
def make_image(width: int, height: int, fmt: str = "png", *, seed: str = "") -> bytes:
    """A deterministic image of the given size and format whose content depends on ``seed``.

    Built as a 16x16 pattern scaled up with nearest-neighbour, so it is fast to make at any
    size and compresses well, while different seeds give visibly different images.
    """
    return _encode(_pattern(width, height, seed), fmt, fast=True)


def _pattern(width: int, height: int, seed: str) -> Any:
    """The RGB image :func:`make_image` encodes."""
    from PIL import Image

    digest = hashlib.sha256(seed.encode("utf-8", "surrogatepass")).digest()
    # 768 bytes of RGB derived from the seed: 24 SHA-256 blocks of 32 bytes each.
    pixels = b"".join(
        hashlib.sha256(digest + i.to_bytes(2, "big")).digest()
        for i in range(SHRINK_SIDE * SHRINK_SIDE * 3 // 32)
    )
    small = Image.frombytes("RGB", (SHRINK_SIDE, SHRINK_SIDE), pixels)
    return small.resize((width, height), Image.Resampling.NEAREST)


def shrink_image(data: bytes) -> bytes:
    """Replace an image by a tiny-content copy of the same format and dimensions.

    The original is reduced to 16x16 and scaled back up with nearest-neighbour: the result
    still looks like the original in a thumbnail but compresses to a few KB.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        fmt = _API_FORMAT.get(im.format or "", "png")
        mode = "RGBA" if im.mode in ("RGBA", "LA", "P") and fmt != "jpeg" else "RGB"
        small = im.convert(mode).resize((SHRINK_SIDE, SHRINK_SIDE), Image.Resampling.BOX)
        return _encode(small.resize(im.size, Image.Resampling.NEAREST), fmt)


def thumbnail_png(data: bytes, side: int = 96) -> bytes:
    """A small PNG thumbnail (for the HTML report); ValueError if ``data`` is no image."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (2 * side, 2 * side))  # a JPEG decodes at a fraction of its size
            if im.mode not in ("RGB", "RGBA", "L", "LA"):
                im = im.convert("RGBA")
            # A box average down to about twice the thumbnail first: resampling the whole
            # image (1024x1024 and more) took most of the time, in every check that keeps
            # thumbnails for the report.
            factor = max(im.size) // (2 * side)
            if factor > 1:
                im = im.reduce(factor)
            im = im.convert("RGBA")
            im.thumbnail((side, side))
            return _encode(im, "png")
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"not a decodable image: {exc}") from exc
