"""Hypothesis strategies for image requests, model names and error responses.

In hypothesis's own API style: plural nouns, keyword-only arguments, ``min_*``/``max_*``.

>>> from hypothesis import given
>>> from pytest_imagegen.strategies import image_requests
>>> @given(image_requests(profile="gpt-image-1"))
... def test_my_client_accepts(body): ...

This module imports hypothesis at top level; import it only where strategies are used.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from pytest_imagegen.errors import Category, category_of
from pytest_imagegen.images import MIME_TYPES
from pytest_imagegen.profiles import (
    KNOWN_PARAMS,
    PROFILES,
    Profile,
    SizeRule,
    get_profile,
    model_kind,
)

__all__ = [
    "CATEGORIES",
    "DEFECTS",
    "EDIT_DEFECTS",
    "STREAM_DEFECTS",
    "applicable_defects",
    "edit_requests",
    "error_responses",
    "image_requests",
    "invalid_edit_requests",
    "invalid_image_requests",
    "invalid_stream_requests",
    "model_names",
    "prompts",
    "sizes",
    "stream_requests",
]

_ABSENT = object()  # "leave this key out" in optional draws

# --------------------------------------------------------------------------- prompts

_SUBJECTS = (
    "a red fox in an autumn forest",
    "a cute baby sea otter floating on its back",
    "an isometric city block at night with neon signs",
    "a bowl of ramen on a wooden table, steam rising",
    "a lighthouse on a cliff during a storm",
    "a product photo of a glass perfume bottle",
    "a vintage travel poster for Lisbon",
    "a robot watering plants on a balcony",
    "a hand-drawn map of a fantasy island",
    "a logo for a coffee shop called Bean There",
    "一只在雨中撑伞的橘猫",
    "水墨风格的山水画，远处有一座古塔",  # noqa: RUF001 - Chinese punctuation on purpose
    "春节夜晚的灯笼街道，人群熙熙攘攘",  # noqa: RUF001
    "一杯冒着热气的奶茶放在木桌上",
    "富士山の前を走る新幹線",
    "桜の木の下で本を読む少女",
    "une tasse de café sur une table en bois",
    "Ein Leuchtturm bei Sturm, dramatisches Licht",
    "красная лиса в зимнем лесу",
    "منظر طبيعي للصحراء عند الغروب",
    "서울의 밤거리, 비 오는 날",
    "Café con leche y churros, estilo acuarela",
    "🐱 astronaut cat floating past 🪐 Saturn",
)
_STYLES = (
    "watercolor",
    "photorealistic",
    "isometric 3D render",
    "pixel art",
    "oil painting",
    "flat vector illustration",
    "studio lighting",
    "水彩画风格",
    "赛博朋克风格",
    "アニメ調",
    "style Art déco",
)
_DETAILS = (
    "soft morning light",
    "shallow depth of field",
    "wide 16:9 composition",
    'with the text "OPEN" on a sign',
    "centered and symmetrical",
    "no text",
    "white background",
    "高清细节",
    "白色背景",
    "high contrast, muted colours",
    "8k, ultra detailed",
    "naïve façade, crème brûlée tones",
)
# Characters for free-form fragments: any printable code point except surrogates and
# controls, so prompts exercise unicode handling without producing invalid JSON text.
_FREE_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp"))


@st.composite
def _realistic_prompt(draw: st.DrawFn) -> str:
    subject = draw(st.sampled_from(_SUBJECTS))
    parts = [subject]
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from(_STYLES)))
    parts += draw(st.lists(st.sampled_from(_DETAILS), max_size=3, unique=True))
    if draw(st.integers(0, 3)) == 0:
        parts.append(draw(st.text(_FREE_CHARS, min_size=1, max_size=30)))
    chinese = any("\u4e00" <= ch <= "\u9fff" for ch in subject)
    sep = "\uff0c" if chinese else ", "  # a Chinese prompt uses the full-width comma
    return sep.join(parts)


def _fit(text: str, min_size: int, max_size: int) -> str:
    """Pad with more description or cut, to a length within bounds, never ending in space."""
    if len(text) < min_size:
        filler = ", " + ", ".join(_DETAILS)
        text += filler * (1 + (min_size - len(text)) // len(filler))
    text = text[:max_size]
    stripped = text.rstrip()
    # Keep the length: replace trailing whitespace rather than dropping it.
    return stripped + "." * (len(text) - len(stripped))


def prompts(
    *, min_size: int = 1, max_size: int = 400, allow_blank: bool = False
) -> st.SearchStrategy[str]:
    """Realistic image prompts (English, Chinese, Japanese, other scripts, emoji).

    Lengths are in characters, ``min_size <= len(p) <= max_size``. A prompt always has a
    non-space character; ``min_size=0`` adds the empty string, ``allow_blank=True`` adds
    whitespace-only prompts (both invalid requests, drawn only when asked for).
    """
    if not isinstance(min_size, int) or min_size < 0:
        raise InvalidArgument(f"min_size={min_size!r} must be a non-negative integer")
    if not isinstance(max_size, int) or max_size < min_size:
        raise InvalidArgument(f"max_size={max_size!r} must be an integer >= min_size={min_size}")
    options = []
    if max_size >= 1:
        lo = max(min_size, 1)
        options.append(_realistic_prompt().map(lambda p: _fit(p, lo, max_size)))
        if lo <= 200:
            # Free-form unicode; only for short bounds (hypothesis draws are size-limited).
            options.append(
                st.text(_FREE_CHARS, min_size=lo, max_size=min(max_size, lo + 200)).filter(
                    lambda p: p.strip() and not p[-1].isspace()
                )
            )
    if min_size == 0:
        options.append(st.just(""))
    if allow_blank and max_size >= 1:
        options.append(
            st.text(" \t\n\u3000", min_size=max(min_size, 1), max_size=min(max_size, 50))
        )
    return st.one_of(options)


# --------------------------------------------------------------------------- sizes


def _as_profile(profile: Profile | str) -> Profile:
    if isinstance(profile, Profile):
        return profile
    if isinstance(profile, str):
        try:
            return get_profile(profile)
        except KeyError as exc:
            raise InvalidArgument(str(exc)) from None
    raise InvalidArgument(f"profile={profile!r} must be a Profile or a profile name")


@lru_cache(maxsize=16)
def _rule_short_sides(rule: SizeRule) -> tuple[tuple[int, int, int], ...]:
    """(short side, lowest long side, highest long side) for every feasible short side."""
    m = rule.multiple_of
    out = []
    for short in range(m, rule.max_short_edge + 1, m):
        lo = max(short, -(-rule.min_pixels // short))
        lo = -(-lo // m) * m
        hi_aspect = (
            rule.max_long_edge if math.isinf(rule.max_aspect) else int(short * rule.max_aspect)
        )
        hi = min(rule.max_long_edge, hi_aspect) // m * m
        if lo <= hi:
            out.append((short, lo, hi))
    return tuple(out)


@st.composite
def _rule_sizes(draw: st.DrawFn, rule: SizeRule) -> str:
    short, lo, hi = draw(st.sampled_from(_rule_short_sides(rule)))
    m = rule.multiple_of
    long = draw(st.integers(lo // m, hi // m)) * m
    w, h = (long, short) if draw(st.booleans()) else (short, long)
    return f"{w}x{h}"


def sizes(*, profile: Profile | str) -> st.SearchStrategy[str]:
    """Sizes ``profile`` accepts: its listed sizes, and WxH drawn from its size rule."""
    p = _as_profile(profile)
    options = []
    if p.sizes:
        options.append(st.sampled_from(p.sizes))
    if p.size_rule is not None and _rule_short_sides(p.size_rule):
        options.append(_rule_sizes(p.size_rule))
    if not options:
        raise InvalidArgument(f"profile {p.name!r} accepts no size")
    return st.one_of(options)


# --------------------------------------------------------------------------- model names

_IMAGE_NAMES = (
    "gpt-image-2",
    "gpt-image-2-2026-04-21",
    "gpt-image-1.5",
    "gpt-image-1",
    "gpt-image-1-mini",
    "dall-e-3",
    "dall-e-2",
    "gpt-image-2.5-flare",
    "gpt-image-2.6-sunburst",
    "chatgpt-image-latest",
    "imagen-4.0-generate-001",
    "flux-1.1-pro",
    "black-forest-labs/FLUX.1-schnell",
    "stable-diffusion-3.5-large",
    "stabilityai/sdxl-turbo",
    "midjourney",
    "cogview-4",
    "Qwen/Qwen-Image",
    "doubao-seedream-4-0-250828",
    "gemini-2.5-flash-image",
    "wanx2.1-t2i-turbo",
    "kolors",
    "ideogram-v3",
    "recraft-v3",
    "grok-2-image-1212",
)
_CHAT_NAMES = (
    "gpt-4o",
    "gpt-4o-all",
    "gpt-4o-mini",
    "gpt-4o-image",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4-turbo",
    "gpt-3.5-turbo",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5.5",
    "gpt-6-astra",
    "o1",
    "o3-mini",
    "o4-mini",
    "chatgpt-4o-latest",
    "codex-mini-latest",
    "claude-sonnet-4-5",
    "claude-3-5-sonnet-20241022",
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "deepseek-chat",
    "deepseek-reasoner",
    "qwen-max",
    "qwen-plus",
    "qwen-turbo",
    "qwen2.5-72b-instruct",
    "qwen3-235b-a22b",
    "meta-llama/Llama-3.3-70B-Instruct",
    "mistral-large-latest",
    "moonshot-v1-8k",
    "kimi-k2",
    "glm-4-plus",
    "glm-4.5",
    "grok-3",
    "doubao-1.5-pro-32k",
)
_UNKNOWN_NAMES = (
    "text-embedding-3-small",
    "whisper-1",
    "tts-1-hd",
    "omni-moderation-latest",
    "gpt-4o-mini-transcribe",
    "sora-2",
    "davinci-002",
    "my-deployment",
    "prod-images-eastus",
    "bge-m3",
)
_PREFIXES = ("", "", "openai/", "azure/", "litellm/", "openrouter/")
_SUFFIXES = ("", "", "-vip", "-all")


@st.composite
def _decorated(draw: st.DrawFn, names: tuple[str, ...], kind: str) -> str:
    name = draw(st.sampled_from(names))
    name = draw(st.sampled_from(_PREFIXES)) + name + draw(st.sampled_from(_SUFFIXES))
    if draw(st.integers(0, 4)) == 0:
        name = name.upper()
    # Decorations never change the kind; the assumption guards the curated lists.
    if model_kind(name) != kind:  # pragma: no cover - would be a bug in the lists
        raise AssertionError(f"{name!r} should be {kind}, is {model_kind(name)}")
    return name


def model_names(*, kind: str = "image") -> st.SearchStrategy[str]:
    """Model names of one kind (``"image"``, ``"chat"`` or ``"unknown"``, as
    :func:`pytest_imagegen.profiles.model_kind` answers), with relay suffixes
    (``-vip``, ``-all``), provider prefixes (``openai/``, ``azure/``...) and odd casing."""
    if kind == "image":
        return _decorated(_IMAGE_NAMES, "image")
    if kind == "chat":
        return _decorated(_CHAT_NAMES, "chat")
    if kind == "unknown":
        slugs = st.from_regex(r"[a-z][a-z0-9]{2,9}-[a-z0-9]{2,8}", fullmatch=True).filter(
            lambda s: model_kind(s) == "unknown"
        )
        return st.one_of(_decorated(_UNKNOWN_NAMES, "unknown"), slugs)
    raise InvalidArgument(f"kind={kind!r} must be 'image', 'chat' or 'unknown'")


def _models_for(p: Profile) -> st.SearchStrategy[str]:
    """Names that resolve to ``p`` (built-in), or plausible deployment names (custom)."""
    if p.name in PROFILES and p.family != "custom":
        base = p.name
        return st.sampled_from(
            (
                base,
                base,
                f"openai/{base}",
                f"azure/{base}",
                f"{base}-vip",
                f"{base}-all",
                f"{base}-2026-04-21",
                base.upper(),
            )
        )
    return st.sampled_from(
        (p.name, "my-image-model", "flux-1-dev", "azure/images-prod", "sdxl-turbo")
    )


# --------------------------------------------------------------------------- requests


def _maybe(draw: st.DrawFn, values: st.SearchStrategy[Any], *, nullable: bool = True) -> Any:
    """Absent, null (where the spec allows it) or a value; mostly a value, so that the
    values get exercised (a plain one_of leans heavily towards its simplest branches)."""
    modes = ("value", "absent", "value", "null", "value") if nullable else ("value", "absent")
    mode = draw(st.sampled_from(modes))
    if mode == "absent":
        return _ABSENT
    return None if mode == "null" else draw(values)


@st.composite
def _image_request(draw: st.DrawFn, p: Profile, model: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    body["model"] = model if model is not None else draw(_models_for(p))
    short = prompts(max_size=min(p.prompt_max_chars, 300))
    longest = st.just(_fit("a very detailed scene", p.prompt_max_chars, p.prompt_max_chars))
    body["prompt"] = draw(st.one_of(short, short, short, longest))

    def put(key: str, value: Any) -> None:
        if value is not _ABSENT:
            body[key] = value

    put("n", _maybe(draw, st.integers(1, p.n_max)))
    put("size", _maybe(draw, sizes(profile=p)))
    if p.accepts("quality"):
        put("quality", _maybe(draw, st.sampled_from(p.qualities)))
    if p.accepts("response_format"):
        put("response_format", _maybe(draw, st.sampled_from(p.response_formats)))
    if p.accepts("style"):
        put("style", _maybe(draw, st.sampled_from(p.styles)))
    if p.accepts("moderation"):
        put("moderation", _maybe(draw, st.sampled_from(p.moderations)))
    fmt = _ABSENT
    if p.accepts("output_format"):
        fmt = _maybe(draw, st.sampled_from(p.output_formats))
        put("output_format", fmt)
    effective = fmt if isinstance(fmt, str) else "png"
    if p.accepts("output_compression"):
        levels = st.integers(0, 100) if effective in ("jpeg", "webp") else st.just(100)
        put("output_compression", _maybe(draw, levels))
    if p.accepts("background"):
        choices = [b for b in p.backgrounds if b != "transparent" or effective in ("png", "webp")]
        if choices:
            put("background", _maybe(draw, st.sampled_from(choices)))
    if p.accepts("stream"):
        stream = _maybe(draw, st.booleans())
        put("stream", stream)
        if stream is True and p.accepts("partial_images"):
            put("partial_images", _maybe(draw, st.integers(0, 3)))
    if p.accepts("user"):
        put(
            "user",
            _maybe(draw, st.from_regex(r"user-[a-z0-9]{1,12}", fullmatch=True), nullable=False),
        )
    if p.accepts("safety_identifier"):
        put("safety_identifier", _maybe(draw, st.from_regex(r"[0-9a-f]{16,64}", fullmatch=True)))
    return body


def image_requests(
    *, profile: Profile | str, model: str | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Valid ``images.generate`` bodies for ``profile``.

    Every draw passes :func:`pytest_imagegen.request_builder.check_request` for the profile
    and the spec's ``CreateImageRequest`` schema. ``model`` fixes the model name; by default
    names that resolve to the profile are drawn (``gpt-image-1``, ``openai/gpt-image-1``,
    ``gpt-image-1-vip``...). Optional keys are absent, null or a valid value.
    """
    p = _as_profile(profile)
    if model is not None and not isinstance(model, str):
        raise InvalidArgument(f"model={model!r} must be a string or None")
    return _image_request(p, model)


_ALL_QUALITIES = ("standard", "hd", "low", "medium", "high", "auto", "xhigh", "max")
_BAD_QUALITIES = ("ultra", "best", "HIGH", "Standard", "")
_ALL_SIZES = (
    "auto",
    "1024x1024",
    "1536x1024",
    "1024x1536",
    "256x256",
    "512x512",
    "1792x1024",
    "1024x1792",
    "2048x2048",
    "1000x1000",
    "1025x1024",
    "3840x1024",
    "4096x4096",
    "3856x2160",
    "640x640",
)
_BAD_SIZES = (
    "1024",
    "1024*1024",
    "1024X1024",
    "big",
    "0x0",
    "-1x5",
    " 1024x1024",
    "20000x20000",
    "",
)
_NOT_ACCEPTED_VALUES: Mapping[str, Any] = {
    "quality": "standard",
    "response_format": "b64_json",
    "output_format": "png",
    "output_compression": 80,
    "stream": True,
    "partial_images": 2,
    "moderation": "low",
    "background": "transparent",
    "style": "vivid",
    "safety_identifier": "5f2b6c0e9d1a4b7c",
    "complexity": "low",
    "frame_count": 9,
    "frame_duration_ms": 200,
    "svg": {"model": "gpt-5"},
}
_UNKNOWN_KEYS = (
    "seed",
    "negative_prompt",
    "aspect_ratio",
    "steps",
    "guidance_scale",
    "width",
    "height",
    "qualty",
    "responseFormat",
    "image_size",
    "num_images",
    "input_fidelity",
    "modalities",
)


# --------------------------------------------------------------------------- request defects
#
# One table: each defect invalid_image_requests can plant, when it applies to a profile,
# and how it is planted (returning the param a correct rejection names). DEFECTS lists
# them in registration order.

Plant = Callable[[st.DrawFn, dict[str, Any], Profile], str]


@dataclass(frozen=True)
class _Defect:
    name: str
    applies: Callable[[Profile], bool]
    plant: Plant


_DEFECTS: dict[str, _Defect] = {}


def _defect(
    name: str,
    applies: Callable[[Profile], bool] = lambda p: True,
    *,
    table: dict[str, _Defect] = _DEFECTS,
) -> Callable[[Plant], Plant]:
    def register(plant: Plant) -> Plant:
        table[name] = _Defect(name, applies, plant)
        return plant

    return register


def _bad_enum(
    draw: st.DrawFn, body: dict[str, Any], p: Profile, param: str, extra: tuple[str, ...]
) -> str:
    allowed = set(p.allowed_values(param))
    body[param] = draw(st.sampled_from([v for v in extra if v not in allowed]))
    return param


@_defect("unknown_parameter")
def _unknown_parameter(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    taken = set(KNOWN_PARAMS) | set(p.extra_params)
    key = draw(
        st.one_of(
            st.sampled_from(_UNKNOWN_KEYS),
            st.from_regex(r"[a-z][a-z_]{2,15}", fullmatch=True),
        ).filter(lambda k: k not in taken)
    )
    # Never null: gateways (LiteLLM) strip null-valued keys, and a null unknown key is
    # the same as leaving it out, so refusing it is not a requirement.
    body[key] = draw(st.one_of(st.integers(), st.text(max_size=8), st.booleans()))
    return key


@_defect("param_not_accepted", lambda p: any(not p.accepts(k) for k in _NOT_ACCEPTED_VALUES))
def _param_not_accepted(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    key = draw(st.sampled_from([k for k in _NOT_ACCEPTED_VALUES if not p.accepts(k)]))
    body[key] = _NOT_ACCEPTED_VALUES[key]
    return key


@_defect("response_format")
def _response_format(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    if not p.accepts("response_format"):
        body["response_format"] = draw(st.sampled_from(("b64_json", "url")))
        return "response_format"
    return _bad_enum(draw, body, p, "response_format", ("png", "base64", "json", "URL", "b64"))


@_defect("quality", lambda p: p.accepts("quality"))
def _quality(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    return _bad_enum(draw, body, p, "quality", _ALL_QUALITIES + _BAD_QUALITIES)


@_defect("quality_type", lambda p: p.accepts("quality"))
def _quality_type(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    body["quality"] = draw(st.sampled_from((3, 0.5, True, ["high"])))
    return "quality"


@_defect("size")
def _size(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    candidates = [s for s in _ALL_SIZES + _BAD_SIZES if not p.supports_size(s)]
    body["size"] = draw(st.sampled_from(candidates))
    return "size"


@_defect("size_type")
def _size_type(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    body["size"] = draw(st.sampled_from((1024, [1024, 1024], {"width": 1024})))
    return "size"


@_defect("style", lambda p: p.accepts("style"))
def _style(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    return _bad_enum(draw, body, p, "style", ("cinematic", "Vivid", "anime", "natural", "vivid"))


@_defect("background", lambda p: p.accepts("background"))
def _background(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    return _bad_enum(draw, body, p, "background", ("white", "none", "Transparent", "clear"))


@_defect("moderation", lambda p: p.accepts("moderation"))
def _moderation(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    return _bad_enum(draw, body, p, "moderation", ("high", "off", "none", "strict"))


@_defect("output_format", lambda p: p.accepts("output_format"))
def _output_format(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    body.pop("output_compression", None)
    body.pop("background", None)
    return _bad_enum(draw, body, p, "output_format", ("bmp", "tiff", "jpg", "gif", "svg", "PNG"))


@_defect("n_below_min")
def _n_below_min(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    body["n"] = draw(st.integers(-1000, 0))
    return "n"


@_defect("n_above_max")
def _n_above_max(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    body["n"] = draw(st.integers(p.n_max + 1, p.n_max + 100))
    return "n"


@_defect("n_type")
def _n_type(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    body["n"] = draw(st.sampled_from(("2", 1.5, True, [1])))
    return "n"


@_defect("prompt_missing")
def _prompt_missing(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    del body["prompt"]
    return "prompt"


@_defect("prompt_empty")
def _prompt_empty(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    body["prompt"] = ""
    return "prompt"


@_defect("prompt_too_long")
def _prompt_too_long(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    extra = draw(st.integers(1, 100))
    body["prompt"] = _fit(
        "a very detailed scene", p.prompt_max_chars + extra, p.prompt_max_chars + extra
    )
    return "prompt"


@_defect("prompt_type")
def _prompt_type(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    body["prompt"] = draw(st.sampled_from((42, None, ["a cat"], {"text": "a cat"})))
    return "prompt"


@_defect("model_missing")
def _model_missing(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    body.pop("model", None)
    return "model"


@_defect("model_chat")
def _model_chat(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    body["model"] = draw(model_names(kind="chat"))
    return "model"


@_defect("model_type")
def _model_type(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    body["model"] = draw(st.sampled_from((1, ["gpt-image-1"], {"name": "gpt-image-1"})))
    return "model"


@_defect(
    "output_compression_range",
    lambda p: p.output_compression and ("webp" in p.output_formats or "jpeg" in p.output_formats),
)
def _output_compression_range(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    body["output_format"] = "webp" if "webp" in p.output_formats else "jpeg"
    if body["output_format"] == "jpeg":
        body.pop("background", None)
    body["output_compression"] = draw(st.one_of(st.integers(-1000, -1), st.integers(101, 10_000)))
    return "output_compression"


@_defect("output_compression_png", lambda p: p.output_compression and "png" in p.output_formats)
def _output_compression_png(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    if draw(st.booleans()):
        body["output_format"] = "png"
    else:
        body.pop("output_format", None)
    body["output_compression"] = draw(st.integers(0, 99))
    return "output_compression"


@_defect(
    "transparent_jpeg", lambda p: "transparent" in p.backgrounds and "jpeg" in p.output_formats
)
def _transparent_jpeg(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    body["background"] = "transparent"
    body["output_format"] = "jpeg"
    return "background"


@_defect("stream_type", lambda p: p.streaming)
def _stream_type(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    body["stream"] = draw(st.sampled_from(("yes", "true", 1)))
    body.pop("partial_images", None)
    return "stream"


@_defect("partial_images_range", lambda p: p.streaming)
def _partial_images_range(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    body["stream"] = True
    body["partial_images"] = draw(st.one_of(st.integers(-10, -1), st.integers(4, 50)))
    return "partial_images"


#: Defects invalid_image_requests can plant; each names the param the rejection must name.
DEFECTS: tuple[str, ...] = tuple(_DEFECTS)


def applicable_defects(*, profile: Profile | str, kind: str = "generation") -> tuple[str, ...]:
    """The defects that the invalid strategy of ``kind`` can plant for ``profile``:
    ``generation`` (:data:`DEFECTS`, :func:`invalid_image_requests`), ``edit``
    (:data:`EDIT_DEFECTS`, :func:`invalid_edit_requests`) or ``stream``
    (:data:`STREAM_DEFECTS`, :func:`invalid_stream_requests`)."""
    tables = {"generation": _DEFECTS, "edit": _EDIT_DEFECTS, "stream": _STREAM_DEFECTS}
    if kind not in tables:
        raise InvalidArgument(f"kind={kind!r} must be one of {', '.join(map(repr, tables))}")
    return tuple(_applicable(_as_profile(profile), tables[kind]))


def _applicable(p: Profile, table: Mapping[str, _Defect] = _DEFECTS) -> list[str]:
    return [d.name for d in table.values() if d.applies(p)]


def _usable(
    p: Profile, table: Mapping[str, _Defect], defects: Collection[str] | None, what: str
) -> tuple[str, ...]:
    usable = _applicable(p, table)
    if defects is not None:
        if isinstance(defects, str):
            raise InvalidArgument(f"defects={defects!r} must be a collection of names, not a str")
        unknown = [d for d in defects if d not in table]
        if unknown:
            raise InvalidArgument(f"unknown {what} {unknown}; choose from {', '.join(table)}")
        usable = [d for d in usable if d in set(defects)]
        if not usable:
            raise InvalidArgument(
                f"none of defects={sorted(defects)} applies to profile {p.name!r}"
            )
    if not usable:
        raise InvalidArgument(f"no {what} applies to profile {p.name!r}")
    return tuple(usable)


@st.composite
def _invalid_request(
    draw: st.DrawFn, p: Profile, model: str | None, defects: tuple[str, ...]
) -> tuple[dict[str, Any], str]:
    body = draw(_image_request(p, model))
    defect = draw(st.sampled_from(defects))
    return body, _DEFECTS[defect].plant(draw, body, p)


def invalid_image_requests(
    *,
    profile: Profile | str,
    model: str | None = None,
    defects: Collection[str] | None = None,
) -> st.SearchStrategy[tuple[dict[str, Any], str]]:
    """``(body, param)`` pairs: a valid body for ``profile`` with exactly one defect planted,
    and the request parameter a correct rejection names.

    Defects (see :data:`DEFECTS`): an unknown key (never null-valued: a null key is the
    same as an absent one, and gateways strip it), a key the profile does not take
    (``response_format`` on GPT-image), an unsupported quality/size/style/background/
    moderation/output format, ``n`` out of range or of the wrong type, a missing, empty,
    over-long or non-string prompt, a missing or chat model, ``output_compression`` out of
    range or with PNG, a transparent JPEG, bad ``stream``/``partial_images``.
    ``defects`` limits the draw to some of them (those that apply to the profile).
    """
    p = _as_profile(profile)
    usable = _applicable(p)
    if defects is not None:
        unknown = [d for d in defects if d not in DEFECTS]
        if unknown:
            raise InvalidArgument(f"unknown defects {unknown}; choose from {', '.join(DEFECTS)}")
        usable = [d for d in usable if d in set(defects)]
        if not usable:
            raise InvalidArgument(
                f"none of defects={sorted(defects)} applies to profile {p.name!r}"
            )
    return _invalid_request(p, model, tuple(usable))


# --------------------------------------------------------------------------- stream requests

_STREAM_DEFECTS: dict[str, _Defect] = {}


@st.composite
def _stream_request(draw: st.DrawFn, p: Profile, model: str | None) -> dict[str, Any]:
    body = draw(_image_request(p, model))
    body["stream"] = True
    partial = _maybe(draw, st.integers(0, 3))
    body.pop("partial_images", None)
    if partial is not _ABSENT:
        body["partial_images"] = partial
    return body


def stream_requests(
    *, profile: Profile | str, model: str | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Valid streamed ``images.generate`` bodies for ``profile``: an :func:`image_requests`
    body with ``stream: true`` and ``partial_images`` absent, null or 0 to 3.

    Only for profiles that stream (GPT-image); for others every stream request is invalid
    (see :func:`invalid_stream_requests`).
    """
    p = _as_profile(profile)
    if not p.streaming:
        raise InvalidArgument(
            f"profile {p.name!r} does not stream; draw its refusals with "
            f"invalid_stream_requests(profile={p.name!r})"
        )
    if model is not None and not isinstance(model, str):
        raise InvalidArgument(f"model={model!r} must be a string or None")
    return _stream_request(p, model)


for _name in ("stream_type", "partial_images_range"):
    _STREAM_DEFECTS[_name] = _DEFECTS[_name]


@_defect("partial_images_type", lambda p: p.streaming, table=_STREAM_DEFECTS)
def _partial_images_type(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    body["stream"] = True
    body["partial_images"] = draw(st.sampled_from(("2", 1.5, True, [1])))
    return "partial_images"


@_defect("stream_not_supported", lambda p: not p.streaming, table=_STREAM_DEFECTS)
def _stream_not_supported(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    # dall-e models take no `stream` at all: OpenAI calls it an unknown parameter.
    body["stream"] = True
    body.pop("partial_images", None)
    return "stream"


#: Defects invalid_stream_requests can plant; each names the param the rejection must name.
STREAM_DEFECTS: tuple[str, ...] = tuple(_STREAM_DEFECTS)


@st.composite
def _invalid_stream_request(
    draw: st.DrawFn, p: Profile, model: str | None, defects: tuple[str, ...]
) -> tuple[dict[str, Any], str]:
    body = draw(_image_request(p, model))
    if p.streaming:
        body["stream"] = True
    defect = draw(st.sampled_from(defects))
    return body, _STREAM_DEFECTS[defect].plant(draw, body, p)


def invalid_stream_requests(
    *,
    profile: Profile | str,
    model: str | None = None,
    defects: Collection[str] | None = None,
) -> st.SearchStrategy[tuple[dict[str, Any], str]]:
    """``(body, param)`` pairs: a streamed generation body for ``profile`` with one defect
    planted, and the parameter a correct rejection names.

    Defects (see :data:`STREAM_DEFECTS`): ``stream`` that is not a boolean, ``partial_images``
    outside 0 to 3 or not an integer, and, for a profile that does not stream (dall-e),
    ``stream`` itself (OpenAI answers "Unknown parameter: 'stream'.").
    """
    p = _as_profile(profile)
    return _invalid_stream_request(p, model, _usable(p, _STREAM_DEFECTS, defects, "defects"))


# --------------------------------------------------------------------------- edit requests
#
# An edit is multipart: the body is what ``client.images.edit(**body)`` takes, with the
# input files as ``(filename, bytes, content_type)`` tuples (``image`` one tuple, or a list
# of them, sent as ``image[]``; ``mask`` one tuple) and the other fields as Python values
# (a form sends them as text: 2 -> "2", True -> "true"). No field is null: a form has none.

_EDIT_DEFECTS: dict[str, _Defect] = {}
_EDIT_DIMS = ((64, 64), (96, 64), (64, 96))
_EDIT_FORMATS = ("png", "jpeg", "webp")
# Generation fields an edit does not take (the SDK's images.edit has no such keyword).
_NOT_EDIT_FIELDS = ("moderation", "style")


class FileTuple(NamedTuple):
    """One input file as the SDK takes it, ``(filename, bytes, content_type)``; its repr
    shows the size, not the bytes (hypothesis prints failing examples)."""

    filename: str
    content: bytes
    content_type: str

    def __repr__(self) -> str:
        return f"({self.filename!r}, <{len(self.content)} bytes>, {self.content_type!r})"


@lru_cache(maxsize=64)
def _picture(width: int, height: int, fmt: str, alpha: bool, seed: str) -> bytes:
    from pytest_imagegen.images import make_image, make_input_image

    if alpha:
        return make_input_image(width, height, fmt, seed=seed)
    return make_image(width, height, fmt, seed=seed)


@lru_cache(maxsize=8)
def _mask_png(width: int, height: int) -> bytes:
    from pytest_imagegen.images import make_mask

    return make_mask(width, height)


def _edit_file(width: int, height: int, fmt: str, index: int, *, alpha: bool = True) -> FileTuple:
    data = _picture(width, height, fmt, alpha and fmt == "png", f"edit input {index}")
    ext = "jpg" if fmt == "jpeg" else fmt
    return FileTuple(f"image{index}.{ext}", data, MIME_TYPES[fmt])


def _images_of(body: Mapping[str, Any]) -> list[FileTuple]:
    image = body.get("image")
    if image is None:
        return []
    return list(image) if isinstance(image, list) else [image]


def _set_images(body: dict[str, Any], images: list[FileTuple]) -> None:
    body["image"] = images[0] if len(images) == 1 else images


@st.composite
def _edit_request(draw: st.DrawFn, p: Profile, model: str | None) -> dict[str, Any]:
    fields = draw(_image_request(p, model))
    body = {k: v for k, v in fields.items() if v is not None and k not in _NOT_EDIT_FIELDS}
    if body.get("stream") is not True:
        body.pop("partial_images", None)
    if p.input_fidelity and draw(st.booleans()):
        body["input_fidelity"] = draw(st.sampled_from(("high", "low")))
    dall_e = p.family == "dall-e"
    width, height = (64, 64) if dall_e else draw(st.sampled_from(_EDIT_DIMS))
    count = draw(st.integers(1, min(p.edit_max_images, 4)))
    images = []
    for index in range(count):
        fmt = "png" if dall_e else draw(st.sampled_from(_EDIT_FORMATS))
        # Only the first image sets the mask's size; the others may differ.
        w, h = (width, height) if index == 0 else draw(st.sampled_from(_EDIT_DIMS))
        images.append(_edit_file(w if not dall_e else 64, h if not dall_e else 64, fmt, index))
    _set_images(body, images)
    if draw(st.booleans()):
        body["mask"] = FileTuple("mask.png", _mask_png(width, height), "image/png")
    return body


def edit_requests(
    *, profile: Profile | str, model: str | None = None
) -> st.SearchStrategy[dict[str, Any]]:
    """Valid multipart ``images.edit`` requests for ``profile``, as the keyword arguments of
    ``client.images.edit(**body)``: the fields of :func:`image_requests` an edit takes
    (never null), ``input_fidelity`` where the model has it, 1 to 4 input images (at most
    the model's limit: one square PNG with transparency for dall-e-2; PNG, JPEG or WebP
    for GPT-image) and sometimes a PNG mask with transparency of the first image's size.

    Every draw passes :func:`pytest_imagegen.request_builder.validate_edit`. Profiles
    without edits (dall-e-3) have no valid edit: use :func:`invalid_edit_requests`.
    """
    p = _as_profile(profile)
    if not p.edits:
        raise InvalidArgument(
            f"profile {p.name!r} has no edits; draw its refusals with "
            f"invalid_edit_requests(profile={p.name!r})"
        )
    if model is not None and not isinstance(model, str):
        raise InvalidArgument(f"model={model!r} must be a string or None")
    return _edit_request(p, model)


def _edits(p: Profile) -> bool:
    return p.edits and p.family != "custom"


def _for_edits(applies: Callable[[Profile], bool]) -> Callable[[Profile], bool]:
    return lambda p: _edits(p) and applies(p)


# The generation defects that carry over to an edit's form fields as they are.
for _name in (
    "quality",
    "size",
    "background",
    "output_format",
    "n_below_min",
    "n_above_max",
    "prompt_missing",
    "prompt_empty",
    "prompt_too_long",
):
    _EDIT_DEFECTS[_name] = _Defect(
        _name, _for_edits(_DEFECTS[_name].applies), _DEFECTS[_name].plant
    )


@_defect("model_without_edits", table=_EDIT_DEFECTS)
def _model_without_edits(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    if p.edits:
        body["model"] = "dall-e-3"  # a known image model that has no edits
        for key in [k for k in body if k not in ("model", "prompt", "image", "mask", "n")]:
            del body[key]
    return "model"


@_defect("image_missing", _edits, table=_EDIT_DEFECTS)
def _image_missing(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    del body["image"]
    body.pop("mask", None)
    return "image"


@_defect("too_many_images", _edits, table=_EDIT_DEFECTS)
def _too_many_images(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    count = p.edit_max_images + draw(st.integers(1, 2))
    fmt = "png"
    body["image"] = [_edit_file(64, 64, fmt, i) for i in range(count)]
    body.pop("mask", None)
    return "image"


@_defect("image_not_an_image", _edits, table=_EDIT_DEFECTS)
def _image_not_an_image(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    junk = draw(st.sampled_from((b"", b"not an image", b"%PDF-1.7\n", b"\x89PNG\r\n\x1a\n")))
    images = _images_of(body)
    images[0] = FileTuple("image0.png", junk, "image/png")
    _set_images(body, images)
    body.pop("mask", None)
    return "image"


@_defect("image_type", _edits, table=_EDIT_DEFECTS)
def _image_type(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    mime = draw(st.sampled_from(("text/plain", "application/pdf", "image/gif", "image/bmp")))
    images = _images_of(body)
    name, data, _ = images[0]
    images[0] = FileTuple(name, data, mime)
    _set_images(body, images)
    return "image"


@_defect("image_not_square", lambda p: _edits(p) and p.family == "dall-e", table=_EDIT_DEFECTS)
def _image_not_square(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    body["image"] = _edit_file(96, 64, "png", 0)
    body.pop("mask", None)
    return "image"


@_defect("image_without_alpha", lambda p: _edits(p) and p.family == "dall-e", table=_EDIT_DEFECTS)
def _image_without_alpha(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    body["image"] = _edit_file(64, 64, "png", 0, alpha=False)
    body.pop("mask", None)
    return "image"


def _first_dims(body: Mapping[str, Any]) -> tuple[int, int]:
    from pytest_imagegen.images import inspect_image

    info = inspect_image(_images_of(body)[0][1])
    return info.width, info.height


@_defect("mask_size", _edits, table=_EDIT_DEFECTS)
def _mask_size(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    width, height = _first_dims(body)
    other = draw(
        st.sampled_from([d for d in ((32, 32), (96, 96), (64, 32)) if d != (width, height)])
    )
    body["mask"] = FileTuple("mask.png", _mask_png(*other), "image/png")
    return "mask"


@_defect("mask_without_alpha", _edits, table=_EDIT_DEFECTS)
def _mask_without_alpha(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    width, height = _first_dims(body)
    body["mask"] = FileTuple("mask.png", _picture(width, height, "png", False, "mask"), "image/png")
    return "mask"


@_defect("mask_not_png", _edits, table=_EDIT_DEFECTS)
def _mask_not_png(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    width, height = _first_dims(body)
    fmt = draw(st.sampled_from(("jpeg", "webp")))
    body["mask"] = FileTuple(
        f"mask.{fmt}", _picture(width, height, fmt, False, "mask"), MIME_TYPES[fmt]
    )
    return "mask"


@_defect(
    "input_fidelity_unsupported",
    lambda p: _edits(p) and not p.input_fidelity,
    table=_EDIT_DEFECTS,
)
def _input_fidelity_unsupported(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    body["input_fidelity"] = draw(st.sampled_from(("high", "low")))
    return "input_fidelity"


@_defect("input_fidelity_value", lambda p: _edits(p) and p.input_fidelity, table=_EDIT_DEFECTS)
def _input_fidelity_value(draw: st.DrawFn, body: dict[str, Any], p: Profile) -> str:
    body["input_fidelity"] = draw(st.sampled_from(("medium", "max", "HIGH", "auto")))
    return "input_fidelity"


#: Defects invalid_edit_requests can plant; each names the param the rejection must name.
EDIT_DEFECTS: tuple[str, ...] = tuple(_EDIT_DEFECTS)


@st.composite
def _invalid_edit_request(
    draw: st.DrawFn, p: Profile, model: str | None, defects: tuple[str, ...]
) -> tuple[dict[str, Any], str]:
    if p.edits:
        body = draw(_edit_request(p, model))
    else:
        # Any edit for a model without edits is refused for its model: draw its fields
        # and give it a plain input image.
        fields = draw(_image_request(p, model))
        body = {k: v for k, v in fields.items() if v is not None and k not in _NOT_EDIT_FIELDS}
        body["image"] = _edit_file(64, 64, "png", 0)
    defect = draw(st.sampled_from(defects))
    return body, _EDIT_DEFECTS[defect].plant(draw, body, p)


def invalid_edit_requests(
    *,
    profile: Profile | str,
    model: str | None = None,
    defects: Collection[str] | None = None,
) -> st.SearchStrategy[tuple[dict[str, Any], str]]:
    """``(body, param)`` pairs: an :func:`edit_requests` body with one defect planted, and
    the parameter a correct rejection names.

    Defects (see :data:`EDIT_DEFECTS`): a model without edits (dall-e-3; the only one for a
    profile without edits), no image, more images than the model takes, a file that is no
    image or of another type, dall-e-2's non-square or opaque input, a mask of another
    size than the first image, without transparency or not a PNG, ``input_fidelity`` on a
    model without it or with a wrong value, and the generation defects of the shared
    fields (quality, size, background, output format, ``n``, prompt).
    """
    p = _as_profile(profile)
    return _invalid_edit_request(p, model, _usable(p, _EDIT_DEFECTS, defects, "edit defects"))


# --------------------------------------------------------------------------- error responses

#: The error categories, as their names (the members of ``pytest_imagegen.errors.Category``).
CATEGORIES: tuple[str, ...] = tuple(c.value for c in Category)

Triple = tuple[int, dict[str, str], bytes]


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


_hex = st.text("0123456789abcdef", min_size=32, max_size=32)
_timestamps = st.integers(1_700_000_000, 1_800_000_000)
_image_models = st.sampled_from(
    ("gpt-image-1", "gpt-image-1.5", "gpt-image-2", "dall-e-3", "gpt-image-1-vip")
)
_groups = st.sampled_from(("default", "svip", "vip", "image"))


@st.composite
def _relay_request_id(draw: st.DrawFn) -> str:
    # one-api/new-api: "<yyyymmddhhmmss><digits><letters>".
    digits = draw(st.text("0123456789", min_size=16, max_size=16))
    tail = draw(
        st.text(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=8, max_size=8
        )
    )
    return f"2026{digits}{tail}"


@st.composite
def _json_headers(draw: st.DrawFn, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    ctype = draw(st.sampled_from(("application/json", "application/json; charset=utf-8")))
    headers = {"content-type": ctype, "x-request-id": "req_" + draw(_hex)}
    headers.update(extra or {})
    if draw(st.booleans()):
        headers = {k.title(): v for k, v in headers.items()}
    return headers


def _openai(
    status: int,
    message: st.SearchStrategy[str] | str | None,
    type_: str | None,
    code: str | None,
    param: str | None = None,
    *,
    headers: Mapping[str, st.SearchStrategy[str] | str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> st.SearchStrategy[Triple]:
    """An OpenAI-style envelope ``{"error": {message, type, param, code}}``."""

    @st.composite
    def build(draw: st.DrawFn) -> Triple:
        msg = draw(message) if isinstance(message, st.SearchStrategy) else message
        hdrs = {
            k: draw(v) if isinstance(v, st.SearchStrategy) else v
            for k, v in (headers or {}).items()
        }
        error = {"message": msg, "type": type_, "param": param, "code": code, **(extra or {})}
        return status, draw(_json_headers(hdrs)), _dumps({"error": error})

    return build()


@st.composite
def _relay(
    draw: st.DrawFn, status: int, message: str | st.SearchStrategy[str], code: str | None = None
) -> Triple:
    """one-api / new-api: ``{"error": {"message": "... (request id: ...)", "type": ...}}``."""
    text = draw(message) if isinstance(message, st.SearchStrategy) else message
    text = f"{text} (request id: {draw(_relay_request_id())})"
    error: dict[str, Any] = {
        "message": text,
        "type": draw(st.sampled_from(("one_api_error", "new_api_error"))),
    }
    if draw(st.booleans()):
        error.update({"param": "", "code": code})
    return status, draw(_json_headers()), _dumps({"error": error})


@st.composite
def _azure(
    draw: st.DrawFn, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Triple:
    """Azure OpenAI: ``{"error": {"code", "message"}}`` (no type, no param)."""
    hdrs = {"apim-request-id": draw(st.uuids()).hex, **(headers or {})}
    return status, draw(_json_headers(hdrs)), _dumps({"error": {"code": code, "message": message}})


@st.composite
def _litellm(
    draw: st.DrawFn,
    status: int,
    message: str | st.SearchStrategy[str],
    type_: str | None,
    *,
    param: str | None = None,
) -> Triple:
    """LiteLLM proxy: code is the HTTP status as a string; type/param often the string 'None'."""
    text = draw(message) if isinstance(message, st.SearchStrategy) else message
    if draw(st.booleans()):
        text += (
            f"\nReceived Model Group={draw(_image_models)}\nAvailable Model Group Fallbacks=None"
        )
    error = {"message": text, "type": type_, "param": param, "code": str(status)}
    return status, draw(_json_headers({"x-litellm-version": "1.81.9"})), _dumps({"error": error})


def _raw(
    status: int, body: str | bytes, content_type: str, **headers: str
) -> st.SearchStrategy[Triple]:
    data = body.encode("utf-8") if isinstance(body, str) else body
    return st.just((status, {"content-type": content_type, **headers}, data))


def _cloudflare(status: int, title: str) -> st.SearchStrategy[Triple]:
    page = (
        '<!DOCTYPE html>\n<html lang="en-US">\n<head><title>api.example.com | '
        f'{status}: {title}</title></head>\n<body><div id="cf-error-details">'
        f"<h1>{title}</h1><span>Error code {status}</span>"
        "<p>Cloudflare Ray ID: <strong>8f1c2a3b4d5e6f70</strong></p></div></body></html>\n"
    )
    return _raw(
        status,
        page,
        "text/html; charset=UTF-8",
        server="cloudflare",
        **{"cf-ray": "8f1c2a3b4d5e6f70-SJC"},
    )


def _nginx(status: int, reason: str) -> st.SearchStrategy[Triple]:
    page = (
        f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    return _raw(status, page, "text/html", server="nginx")


def _masked_key() -> st.SearchStrategy[str]:
    alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return st.tuples(
        st.text(alnum, min_size=5, max_size=5), st.text(alnum, min_size=4, max_size=4)
    ).map(lambda t: f"sk-{t[0]}{'*' * 39}{t[1]}")


def _category_strategies(category: Category) -> list[st.SearchStrategy[Triple]]:
    if category == Category.AUTHENTICATION:
        return [
            _openai(
                401,
                _masked_key().map(
                    lambda k: (
                        f"Incorrect API key provided: {k}. You can find your API key at "
                        "https://platform.openai.com/account/api-keys."
                    )
                ),
                "invalid_request_error",
                "invalid_api_key",
            ),
            _openai(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or "
                "as the password field (with blank username) if you're accessing the API from your "
                "browser and are prompted for a username. You can obtain an API key from "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                None,
            ),
            _azure(
                401,
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
                "provide a valid key for an active subscription and use a correct regional API "
                "endpoint for your resource.",
            ),
            _litellm(
                401,
                "Authentication Error, Invalid proxy server token passed. Received API Key = "
                "sk-...9x2f, Key Hash (Token) =5c0ffee. Unable to find token in cache or "
                "`LiteLLM_VerificationTokenTable`",
                "auth_error",
                param="None",
            ),
            _relay(401, st.sampled_from(("无效的令牌", "未提供令牌"))),
        ]
    if category == Category.PERMISSION:
        return [
            _openai(
                403,
                _image_models.map(
                    lambda m: (
                        f"Your organization must be verified to use the model `{m}`. Please "
                        "go to: https://platform.openai.com/settings/organization/general and "
                        "click on Verify Organization. If you just verified, it can take up to "
                        "15 minutes for access to propagate."
                    )
                ),
                "invalid_request_error",
                None,
            ),
            _openai(
                403,
                "Country, region, or territory not supported",
                "request_forbidden",
                "unsupported_country_region_territory",
            ),
            _relay(403, _image_models.map(lambda m: f"该令牌无权使用模型：{m}")),  # noqa: RUF001
        ]
    if category == Category.QUOTA:
        base = "You exceeded your current quota, please check your plan and billing details."
        docs = " For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
        return [
            _openai(429, base, "insufficient_quota", "insufficient_quota"),
            _openai(429, base + docs, "insufficient_quota", None),
            _openai(
                400,
                "Billing hard limit has been reached",
                "invalid_request_error",
                "billing_hard_limit_reached",
            ),
            _relay(403, "user quota is not enough", code="insufficient_user_quota"),
            _relay(401, "该令牌额度已用尽"),
            _relay(403, "用户额度不足, 剩余额度: ＄0.000000", code="insufficient_user_quota"),  # noqa: RUF001
            _litellm(
                400,
                st.integers(1001, 5000).map(
                    lambda c: f"Budget has been exceeded! Current cost: {c / 100}, Max budget: 10.0"
                ),
                "budget_exceeded",
            ),
        ]
    if category == Category.RATE_LIMIT:
        retry = st.integers(1, 120).map(str)
        return [
            _openai(
                429,
                st.integers(1, 50).map(
                    lambda n: (
                        f"Rate limit exceeded for images per minute in organization org-abc. "
                        f"Limit: {n}/1min. Current: {n + 1}/1min. Please visit "
                        "https://platform.openai.com/docs/guides/rate-limits to learn how to "
                        "increase your rate limit."
                    )
                ),
                "requests",
                "rate_limit_exceeded",
                headers={
                    "retry-after": retry,
                    "x-ratelimit-limit-requests": "5",
                    "x-ratelimit-remaining-requests": "0",
                    "x-ratelimit-reset-requests": "12s",
                },
            ),
            st.integers(1, 86_400).flatmap(
                lambda s: _azure(
                    429,
                    "429",
                    "Requests to the Images_Generations_Create Operation under Azure OpenAI API "
                    "version 2025-04-01-preview have exceeded call rate limit of your current "
                    f"OpenAI S0 pricing tier. Please retry after {s} seconds. Please go here: "
                    "https://aka.ms/oai/quotaincrease if you would like to further increase the "
                    "default rate limit.",
                    {"retry-after": str(s)},
                )
            ),
            _litellm(
                429,
                "litellm.RateLimitError: AzureException RateLimitError - Error code: 429 - "
                "{'error': {'code': '429', 'message': 'Requests to the Images_Generations_Create "
                "Operation under Azure OpenAI API version 2025-04-01-preview have exceeded call "
                "rate limit of your current OpenAI S0 pricing tier. Please retry after 20 "
                "seconds.'}}",
                "throttling_error",
            ),
            st.integers(60, 86_400).flatmap(
                lambda s: _raw(
                    429,
                    "error code: 1015",
                    "text/plain; charset=UTF-8",
                    **{"retry-after": str(s), "server": "cloudflare"},
                )
            ),
            _relay(429, "当前分组上游负载已饱和，请稍后再试"),  # noqa: RUF001
        ]
    if category == Category.TIMEOUT:
        return [
            _nginx(504, "Gateway Time-out"),
            _cloudflare(524, "A timeout occurred"),
            _litellm(
                408,
                "litellm.Timeout: APITimeoutError - Request timed out. \n"
                "error_str: Request timed out.",
                None,
            ),
            _raw(
                504,
                "An error occurred with your deployment\n\nFUNCTION_INVOCATION_TIMEOUT\n\n"
                "iad1::x8k2p-1760000000000-4f1e2d3c4b5a\n",
                "text/plain; charset=utf-8",
                **{"x-vercel-error": "FUNCTION_INVOCATION_TIMEOUT"},
            ),
            _raw(408, "", "text/plain"),
        ]
    if category == Category.NETWORK:
        failures = st.sampled_from(
            (
                "dial tcp 104.18.6.192:443: connect: connection refused",
                "read tcp 172.17.0.2:53312->104.18.6.192:443: read: connection reset by peer",
                "dial tcp: lookup api.openai.com on 127.0.0.11:53: no such host",
                "remote error: tls: handshake failure",
            )
        )
        return [
            _relay(
                500,
                failures.map(lambda f: f'Post "https://api.openai.com/v1/images/generations": {f}'),
                code="do_request_failed",
            ),
            _litellm(500, "litellm.APIConnectionError: OpenAIException - Connection error.", None),
            _cloudflare(521, "Web server is down"),
            _cloudflare(523, "Origin is unreachable"),
            _cloudflare(525, "SSL handshake failed"),
        ]
    if category == Category.SERVER:
        return [
            _openai(
                500,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
            ),
            _openai(
                503,
                "The engine is currently overloaded, please try again later",
                "server_error",
                None,
            ),
            # Relays sometimes wrap an upstream failure in a 200.
            _openai(
                200,
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                None,
            ),
            _nginx(502, "Bad Gateway"),
            _azure(
                500,
                "InternalServerError",
                "The service is temporarily unable to process your request. Please try again "
                "later.",
            ),
            _litellm(
                500,
                "litellm.InternalServerError: OpenAIException - The server had an error while "
                "processing your request. Sorry about that!",
                None,
            ),
        ]
    if category == Category.MODEL_NOT_FOUND:
        return [
            _openai(
                404,
                st.sampled_from(("gpt-image-3", "gpt-5.5", "dall-e-4", "gpt-image-1-vip")).map(
                    lambda m: f"The model `{m}` does not exist or you do not have access to it."
                ),
                "invalid_request_error",
                "model_not_found",
            ),
            _openai(
                400,
                st.sampled_from(("gpt-4o", "gpt-4o-all", "gpt-4.1")).map(
                    lambda m: f"Invalid model {m}. The model argument should be left blank."
                ),
                "invalid_request_error",
                None,
                "model",
            ),
            _openai(
                404,
                "This is not a chat model and thus not supported in the v1/chat/completions "
                "endpoint. Did you mean to use v1/completions?",
                "invalid_request_error",
                "model_not_found",
                "model",
            ),
            _relay(
                503,
                st.tuples(_groups, _image_models).map(
                    lambda t: f"当前分组 {t[0]} 下对于模型 {t[1]} 无可用渠道"
                ),
            ),
            _azure(
                404,
                "DeploymentNotFound",
                "The API deployment for this resource does not exist. If you created the "
                "deployment within the last 5 minutes, please wait a moment and try again.",
            ),
            _litellm(
                400,
                _image_models.map(
                    lambda m: (
                        f"/images/generations: Invalid model name passed in model={m}-x. "
                        "Call `/v1/models` to view available models for your key."
                    )
                ),
                "None",
                param="None",
            ),
        ]
    if category == Category.INVALID_REQUEST:
        return [
            _openai(
                400,
                "Invalid value: 'standard'. Supported values are: 'low', 'medium', 'high', and "
                "'auto'.",
                "invalid_request_error",
                "invalid_value",
                "quality",
            ),
            _openai(
                400,
                "Unknown parameter: 'response_format'.",
                "invalid_request_error",
                "unknown_parameter",
                "response_format",
            ),
            _openai(
                400,
                "The size is not supported by this model.",
                "invalid_request_error",
                "invalid_size",
            ),
            _openai(
                400,
                "Invalid value: '1254x836'. Supported values are: '1024x1024', '1024x1536', "
                "'1536x1024', and 'auto'.",
                "invalid_request_error",
                "invalid_value",
                "size",
            ),
            _violation_bodies(),
            _litellm(
                400,
                "litellm.UnsupportedParamsError: openai does not support parameters: "
                "['response_format'], for model=gpt-image-1. To drop these, set "
                "`litellm.drop_params=True` or for proxy:\n\n"
                "`litellm_settings:\n drop_params: true`\n",
                "None",
                param="None",
            ),
        ]
    if category == Category.CONTENT_POLICY:
        return [
            _openai(
                400,
                "Your request was rejected as a result of our safety system. Your prompt may "
                "contain text that is not allowed by our safety system.",
                "invalid_request_error",
                "content_policy_violation",
            ),
            _openai(
                400,
                st.tuples(st.uuids(), st.sampled_from(("sexual", "violence", "self-harm"))).map(
                    lambda t: (
                        "Your request was rejected by the safety system. If you believe this "
                        "is an error, contact us at help.openai.com and include the request ID "
                        f"{t[0]}. safety_violations=[{t[1]}]."
                    )
                ),
                "image_generation_user_error",
                "moderation_blocked",
                extra={
                    "moderation_details": {"moderation_stage": "output", "categories": ["sexual"]}
                },
            ),
            _openai(400, None, "image_generation_user_error", None),
            _openai(
                400,
                "Your request was rejected as a result of our safety system. Image descriptions "
                "generated from your prompt may contain text that is not allowed by our safety "
                "system. If you believe this was done in error, your request may succeed if "
                "retried, or by adjusting your prompt.",
                "invalid_request_error",
                "content_policy_violation",
            ),
            _azure_content_filter(),
        ]
    if category == Category.MALFORMED_RESPONSE:
        return [_malformed()]
    if category == Category.UNKNOWN:
        return [
            _raw(418, "I'm a teapot", "text/plain"),
            _raw(
                302,
                "",
                "text/html",
                location="https://login.example.com/?next=/v1/images/generations",
            ),
            _raw(
                301,
                "<html><head><title>301 Moved Permanently</title></head><body>Moved</body></html>",
                "text/html",
                location="https://relay.example.com/v1/images/generations",
            ),
        ]
    raise InvalidArgument(f"category={category!r} must be one of {', '.join(CATEGORIES)}")


@st.composite
def _violation_bodies(draw: st.DrawFn) -> Triple:
    """The 400 OpenAI would send for a drawn invalid request (our own wording)."""
    from pytest_imagegen.request_builder import validate_request

    profile = draw(st.sampled_from([p for p in PROFILES.values() if p.family != "custom"]))
    non_model = [d for d in _applicable(profile) if not d.startswith("model_")]
    body, _param = draw(_invalid_request(profile, None, tuple(non_model)))
    violation = validate_request(body, profile)[0]
    return 400, draw(_json_headers()), _dumps(violation.error_body())


@st.composite
def _azure_content_filter(draw: st.DrawFn) -> Triple:
    flagged = draw(st.sampled_from(("sexual", "violence", "hate", "self_harm")))
    results = {
        c: {"filtered": c == flagged, "severity": "high" if c == flagged else "safe"}
        for c in ("hate", "self_harm", "sexual", "violence")
    }
    error = {
        "code": "content_policy_violation",
        "inner_error": {"code": "ResponsibleAIPolicyViolation", "content_filter_results": results},
        "message": "Your request was rejected as a result of our safety system. Your prompt may "
        "contain text that is not allowed by our safety system.",
        "type": "invalid_request_error",
    }
    return 400, draw(_json_headers()), _dumps({"error": error})


@st.composite
def _malformed(draw: st.DrawFn) -> Triple:
    created = draw(_timestamps)
    not_image = base64.b64encode(
        draw(st.sampled_from((b"hello, not an image", b"{}", b"GIF87")))
    ).decode()
    bodies = (
        _dumps({"created": created, "data": []}),
        _dumps({"created": created}),
        _dumps({"created": created, "data": [{"b64_json": "not base64!!"}]}),
        _dumps({"created": created, "data": [{"b64_json": not_image}]}),
        _dumps({"created": created, "data": [{"url": None, "b64_json": None}]}),
        b"",
        f'{{"created": {created}, "data": [{{"b64_json": "iVBORw0KGgoAAAANSUhEUgAA'.encode(),
        b"<!doctype html><html><head><title>Sign in</title></head>"
        b"<body>Please sign in</body></html>",
    )
    body = draw(st.sampled_from(bodies))
    ctype = "text/html" if body.startswith(b"<!doctype") else "application/json"
    return 200, {"content-type": ctype}, body


def error_responses(*, category: Category | str | None = None) -> st.SearchStrategy[Triple]:
    """``(status, headers, body_bytes)`` triples of realistic error answers for ``category``
    (one of :data:`CATEGORIES`; any category when None).

    Envelopes as OpenAI, Azure OpenAI, LiteLLM proxy, one-api/new-api (Chinese messages
    with request ids) and CDNs/gateways (Cloudflare, nginx, Vercel) send them; see
    ``tests/data/real-errors.json`` for real bodies and their sources.
    """
    if category is None:
        return st.one_of([error_responses(category=c) for c in CATEGORIES])
    known = category_of(category)  # a Category member, or its name
    if known is None:
        raise InvalidArgument(f"category={category!r} must be one of {', '.join(CATEGORIES)}")
    return st.one_of(_category_strategies(known))
