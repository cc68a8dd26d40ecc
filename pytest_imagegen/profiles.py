"""Model capability profiles as data, model-name resolution, and chat-model recognition.

A :class:`Profile` says what one image model accepts on ``POST /images/generations``: sizes
(a list, or gpt-image-2's size rule), qualities, the ``n`` range, whether
``response_format`` / ``output_format`` / ``style`` / ``background`` / ``moderation`` are
accepted, the prompt length limit, and per-image prices.

Facts come from the official OpenAPI spec (``openai/openai-openapi`` @ ``f85dbe22``,
2026-08-21) and the openai SDK 3.54 types; prices from OpenAI's model pages (gpt-image-1,
gpt-image-1-mini, DALL·E) and public price tables (gpt-image-1.5, gpt-image-2). See the
``_PRICES_*`` constants for each figure's origin.

Pure data and string handling: this module imports nothing heavy.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from pytest_imagegen.errors import ConfigError

__all__ = [
    "CHAT_FAMILIES",
    "CUSTOM_SIZE_RULE",
    "GPT_IMAGE_2_SIZE_RULE",
    "IMAGE_FAMILIES",
    "KNOWN_PARAMS",
    "PROFILES",
    "RELAY_SUFFIXES",
    "SDK_ONLY_PARAMS",
    "SPEC_PARAMS",
    "ModelKind",
    "Profile",
    "SizeRule",
    "UnknownProfileError",
    "canonical_model",
    "ensure_profile",
    "get_profile",
    "is_chat_model",
    "make_custom_profile",
    "model_kind",
    "parse_size",
    "resolve_profile",
]

ModelKind = Literal["image", "chat", "unknown"]

# Every key of the spec's CreateImageRequest (openai-openapi f85dbe22).
SPEC_PARAMS: tuple[str, ...] = (
    "prompt",
    "model",
    "n",
    "quality",
    "response_format",
    "output_format",
    "output_compression",
    "stream",
    "partial_images",
    "size",
    "moderation",
    "background",
    "style",
    "user",
)
# Keys that openai 3.54's ImageGenerateParams knows but the spec does not (newer models).
SDK_ONLY_PARAMS: tuple[str, ...] = (
    "safety_identifier",
    "complexity",
    "frame_count",
    "frame_duration_ms",
    "svg",
)
KNOWN_PARAMS: tuple[str, ...] = SPEC_PARAMS + SDK_ONLY_PARAMS

# Keys every image model takes. Which of the others a model takes is in its profile.
_ALWAYS_ACCEPTED = frozenset({"prompt", "model", "n", "size", "user"})

_SIZE_RE = re.compile(r"^([1-9][0-9]{0,5})x([1-9][0-9]{0,5})$")


def parse_size(size: object) -> tuple[int, int] | None:
    """``"1536x1024"`` -> ``(1536, 1024)``; anything else (``"auto"``, ``"1024X1024"``) -> None."""
    if not isinstance(size, str):
        return None
    match = _SIZE_RE.match(size)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class SizeRule:
    """Arbitrary ``WIDTHxHEIGHT`` sizes allowed by rule (gpt-image-2, custom profiles)."""

    multiple_of: int
    max_aspect: float  # long side / short side; math.inf for no limit
    max_long_edge: int
    max_short_edge: int
    min_pixels: int

    def check(self, width: int, height: int) -> str | None:
        """None if ``width x height`` is allowed, else the reason it is not."""
        if not (isinstance(width, int) and isinstance(height, int)) or width < 1 or height < 1:
            return "width and height must be positive integers"
        m = self.multiple_of
        if width % m or height % m:
            return f"width and height must both be multiples of {m}, got {width}x{height}"
        long, short = max(width, height), min(width, height)
        if long / short > self.max_aspect:
            return (
                f"the aspect ratio of {width}x{height} is outside "
                f"1:{_num(self.max_aspect)}..{_num(self.max_aspect)}:1"
            )
        if long > self.max_long_edge or short > self.max_short_edge:
            return (
                f"{width}x{height} is larger than the maximum "
                f"{self.max_long_edge}x{self.max_short_edge} (either orientation)"
            )
        if width * height < self.min_pixels:
            return (
                f"{width}x{height} has {width * height} pixels, fewer than the minimum "
                f"{self.min_pixels}"
            )
        return None

    def describe(self) -> str:
        """The rule in one phrase, for error messages and the documentation."""
        parts = []
        if self.multiple_of > 1:
            parts.append(f"both sides multiples of {self.multiple_of}")
        if math.isfinite(self.max_aspect):
            a = _num(self.max_aspect)
            parts.append(f"aspect ratio between 1:{a} and {a}:1")
        if self.min_pixels > 1:
            parts.append(f"at least {self.min_pixels} pixels")
        parts.append(f"at most {self.max_long_edge}x{self.max_short_edge}")
        return "any WIDTHxHEIGHT with " + ", ".join(parts)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


Prices = Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class Profile:
    """What one image model accepts on ``/images/generations``, and what it costs."""

    name: str
    family: str  # "gpt-image" | "dall-e" | "custom"
    sizes: tuple[str, ...]  # listed sizes, "auto" included when accepted
    size_rule: SizeRule | None  # arbitrary WxH allowed by rule
    default_size: str
    qualities: tuple[str, ...]
    default_quality: str
    n_max: int  # n ranges 1..n_max
    response_formats: tuple[str, ...]  # () -> `response_format` is not accepted
    default_response_format: str  # what comes back when not asked: "b64_json" | "url"
    output_formats: tuple[str, ...]  # () -> `output_format` not accepted (png returned)
    styles: tuple[str, ...]
    backgrounds: tuple[str, ...]
    moderations: tuple[str, ...]
    output_compression: bool
    streaming: bool
    prompt_max_chars: int
    returns_usage: bool
    returns_revised_prompt: bool
    prices: Prices = field(hash=False)  # quality -> size -> USD per image
    parent: str | None = None
    # Request keys accepted beyond the ones the fields above govern (newer SDK keys such as
    # `safety_identifier`, or vendor extensions declared in a custom profile).
    extra_params: tuple[str, ...] = ()
    # POST /images/edits: how many input images (0: the model has no edits), whether
    # `input_fidelity` is taken, and whether the JSON variant (image references) is served.
    edit_max_images: int = 16
    input_fidelity: bool = True
    edit_json: bool = True
    # POST /images/variations (dall-e-2 only at OpenAI).
    variations: bool = False

    @property
    def edits(self) -> bool:
        """Does the model serve ``POST /images/edits``?"""
        return self.edit_max_images > 0

    def accepts(self, param: str) -> bool:
        """Is ``param`` accepted at all as a request key (whatever its value)?"""
        if param in _ALWAYS_ACCEPTED or param in self.extra_params:
            return True
        governed = {
            "quality": bool(self.qualities),
            "response_format": bool(self.response_formats),
            "output_format": bool(self.output_formats),
            "output_compression": self.output_compression,
            "style": bool(self.styles),
            "background": bool(self.backgrounds),
            "moderation": bool(self.moderations),
            "stream": self.streaming,
            "partial_images": self.streaming,
        }
        return governed.get(param, False)

    def supports_size(self, size: str) -> bool:
        """Is ``size`` listed, or allowed by the profile's size rule?"""
        if size in self.sizes:
            return True
        if self.size_rule is None:
            return False
        dims = parse_size(size)
        return dims is not None and self.size_rule.check(*dims) is None

    def allowed_values(self, param: str) -> tuple[str, ...]:
        """The accepted values of an enumerated parameter, in OpenAI's message order."""
        return {
            "quality": self.qualities,
            "size": self.sizes,
            "style": self.styles,
            "background": self.backgrounds,
            "moderation": self.moderations,
            "output_format": self.output_formats,
            "response_format": self.response_formats,
        }.get(param, ())

    def price(self, *, quality: str | None = None, size: str | None = None, n: int = 1) -> float:
        """Estimated USD for ``n`` images.

        ``None`` means the profile's default. ``auto`` quality or size is priced at the most
        expensive option, so budgets stay conservative; a size allowed only by the size rule
        is priced by pixel area at the highest per-pixel rate of the listed sizes. Raises
        ``ValueError`` for a quality or size the profile does not support.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        quality = self.default_quality if quality is None else quality
        size = self.default_size if size is None else size
        if quality not in self.qualities and not (quality == "auto" and not self.qualities):
            raise ValueError(
                f"{self.name} has no quality {quality!r}; supported: {', '.join(self.qualities)}"
            )
        if not self.supports_size(size):
            raise ValueError(f"{self.name} does not support size {size!r}")
        return round(self._unit_price(quality, size) * n, 6)

    def _unit_price(self, quality: str, size: str) -> float:
        table = self.prices
        if not table:
            return 0.0
        row = table.get(quality)
        if row is None:
            # A quality added to a custom profile without prices: assume the dearest row.
            row = _max_row(table)
        if size in row:
            return row[size]
        if size == "auto":
            return max(row.values())
        dims = parse_size(size)
        if dims is None:
            return max(row.values())
        return _per_pixel_rate(row) * dims[0] * dims[1]


def _max_row(table: Prices) -> dict[str, float]:
    sizes = {s for row in table.values() for s in row}
    return {s: max(row.get(s, 0.0) for row in table.values()) for s in sizes}


def _per_pixel_rate(row: Mapping[str, float]) -> float:
    rates = [p / (d[0] * d[1]) for s, p in row.items() if (d := parse_size(s))]
    return max(rates) if rates else 0.0


class UnknownProfileError(ConfigError, KeyError):
    """A profile name that is neither built in nor defined as a custom profile."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


# --------------------------------------------------------------------------- price data

_STD = ("1024x1024", "1024x1536", "1536x1024")  # OpenAI's order in its size messages


#: Price per image by quality, then by size.
_Prices = dict[str, dict[str, float]]


def _table(rows: Mapping[str, tuple[float, ...]], sizes: tuple[str, ...]) -> _Prices:
    return {q: dict(zip(sizes, values, strict=True)) for q, values in rows.items()}


def _with_auto(table: _Prices, *, sizes: bool, quality: bool) -> _Prices:
    """Add "auto" entries priced at the dearest option (budgets must not under-estimate)."""
    out = {q: dict(row) for q, row in table.items()}
    if sizes:
        for row in out.values():
            row["auto"] = max(row.values())
    if quality:
        out["auto"] = _max_row(out)
    return out


# gpt-image-1: official model page (developers.openai.com/.../models/gpt-image-1).
_PRICES_GPT_IMAGE_1 = _table(
    {"low": (0.011, 0.016, 0.016), "medium": (0.042, 0.063, 0.063), "high": (0.167, 0.25, 0.25)},
    _STD,
)
# gpt-image-1-mini: official model page (developers.openai.com/.../models/gpt-image-1-mini).
_PRICES_GPT_IMAGE_1_MINI = _table(
    {"low": (0.005, 0.006, 0.006), "medium": (0.011, 0.015, 0.015), "high": (0.036, 0.052, 0.052)},
    _STD,
)
# gpt-image-1.5: OpenAI's published per-image figures as quoted by public price pages
# (llmreference.com, aifreeapi.com, 2026-03); not in the team's research notes.
_PRICES_GPT_IMAGE_1_5 = _table(
    {"low": (0.009, 0.013, 0.013), "medium": (0.034, 0.05, 0.05), "high": (0.133, 0.2, 0.2)},
    _STD,
)
# gpt-image-2: token-priced ($30 per 1M image output tokens). The 1024x1024 figures are the
# launch-day calculator estimates (low 0.006, medium 0.053, high 0.211); the portrait and
# landscape figures are an estimate scaled by pixel area (x1.5), as for gpt-image-1.
_PRICES_GPT_IMAGE_2 = {
    q: {"1024x1024": p, "1024x1536": round(p * 1.5, 4), "1536x1024": round(p * 1.5, 4)}
    for q, p in {"low": 0.006, "medium": 0.053, "high": 0.211}.items()
}
# DALL·E: openai.com/pricing as archived in public model tables (2023-12); retired 2026-05-12.
_DALLE3_SIZES = ("1024x1024", "1792x1024", "1024x1792")
_PRICES_DALL_E_3 = _table({"standard": (0.04, 0.08, 0.08), "hd": (0.08, 0.12, 0.12)}, _DALLE3_SIZES)
_DALLE2_SIZES = ("256x256", "512x512", "1024x1024")
_PRICES_DALL_E_2 = _table({"standard": (0.016, 0.018, 0.02)}, _DALLE2_SIZES)

# --------------------------------------------------------------------------- profiles

_GPT_QUALITIES = ("low", "medium", "high", "auto")
_GPT_SIZES = (*_STD, "auto")
_OUTPUT_FORMATS = ("png", "jpeg", "webp")
_BACKGROUNDS = ("transparent", "opaque", "auto")
_MODERATIONS = ("low", "auto")

# gpt-image-2's rule (spec): sides multiples of 16, aspect 1:3..3:1, at most 3840x2160.
# The minimum of 655,360 pixels (1024x640) is the floor OpenAI's image guide gives for the
# model's pixel budget ("must also satisfy the model's current pixel and edge limits").
GPT_IMAGE_2_SIZE_RULE = SizeRule(
    multiple_of=16, max_aspect=3.0, max_long_edge=3840, max_short_edge=2160, min_pixels=655_360
)
# The custom profile takes any WxH up to a sanity cap (16384 is the largest edge any
# mainstream image API accepts); the server is the judge.
CUSTOM_SIZE_RULE = SizeRule(
    multiple_of=1, max_aspect=math.inf, max_long_edge=16_384, max_short_edge=16_384, min_pixels=1
)


def _gpt_image(
    name: str, prices: _Prices, *, size_rule: SizeRule | None = None, input_fidelity: bool = True
) -> Profile:
    return Profile(
        name=name,
        family="gpt-image",
        sizes=_GPT_SIZES,
        size_rule=size_rule,
        default_size="auto",
        qualities=_GPT_QUALITIES,
        default_quality="auto",
        n_max=10,
        response_formats=(),
        default_response_format="b64_json",
        output_formats=_OUTPUT_FORMATS,
        styles=(),
        backgrounds=_BACKGROUNDS,
        moderations=_MODERATIONS,
        output_compression=True,
        streaming=True,
        prompt_max_chars=32_000,
        returns_usage=True,
        returns_revised_prompt=False,
        prices=_with_auto(prices, sizes=True, quality=True),
        extra_params=("safety_identifier",),
        input_fidelity=input_fidelity,
    )


def _custom_prices() -> dict[str, dict[str, float]]:
    # Unknown server, unknown tariff: every quality costs, per size, the most any built-in
    # model charges for that size, or the highest per-pixel rate of the large-image models
    # times the area if that is more, so a budget never under-estimates a custom endpoint.
    builtin = (_PRICES_GPT_IMAGE_2, _PRICES_GPT_IMAGE_1, _PRICES_DALL_E_3, _PRICES_DALL_E_2)
    rate = max(_per_pixel_rate(row) for table in builtin[:3] for row in table.values())
    sizes = (*_STD, "256x256", "512x512", "1792x1024", "1024x1792")
    row = {}
    for size in sizes:
        w, h = parse_size(size) or (0, 0)
        listed = [r[size] for table in builtin for r in table.values() if size in r]
        row[size] = round(max([rate * w * h, *listed]), 4)
    row["auto"] = max(row.values())
    qualities = ("low", "medium", "high", "auto", "standard", "hd")
    return {q: dict(row) for q in qualities}


_BUILTIN: tuple[Profile, ...] = (
    _gpt_image("gpt-image-2", _PRICES_GPT_IMAGE_2, size_rule=GPT_IMAGE_2_SIZE_RULE),
    _gpt_image("gpt-image-1.5", _PRICES_GPT_IMAGE_1_5),
    _gpt_image("gpt-image-1", _PRICES_GPT_IMAGE_1),
    # The spec: input_fidelity "is not supported for gpt-image-1-mini".
    _gpt_image("gpt-image-1-mini", _PRICES_GPT_IMAGE_1_MINI, input_fidelity=False),
    Profile(
        name="dall-e-3",
        family="dall-e",
        sizes=_DALLE3_SIZES,
        size_rule=None,
        default_size="1024x1024",
        qualities=("standard", "hd"),
        default_quality="standard",
        n_max=1,
        response_formats=("url", "b64_json"),
        default_response_format="url",
        output_formats=(),
        styles=("vivid", "natural"),
        backgrounds=(),
        moderations=(),
        output_compression=False,
        streaming=False,
        prompt_max_chars=4_000,
        returns_usage=False,
        returns_revised_prompt=True,
        prices=_PRICES_DALL_E_3,
        edit_max_images=0,  # dall-e-3 has no edits (the spec's edit model enum lacks it)
        input_fidelity=False,
        edit_json=False,
    ),
    Profile(
        name="dall-e-2",
        family="dall-e",
        sizes=_DALLE2_SIZES,
        size_rule=None,
        default_size="1024x1024",
        # The spec: "`standard` is the only option for `dall-e-2`".
        qualities=("standard",),
        default_quality="standard",
        n_max=10,
        response_formats=("url", "b64_json"),
        default_response_format="url",
        output_formats=(),
        styles=(),
        backgrounds=(),
        moderations=(),
        output_compression=False,
        streaming=False,
        prompt_max_chars=1_000,
        returns_usage=False,
        returns_revised_prompt=False,
        prices=_PRICES_DALL_E_2,
        # One square PNG per edit, multipart only; the only model with variations.
        edit_max_images=1,
        input_fidelity=False,
        edit_json=False,
        variations=True,
    ),
    Profile(
        name="custom",
        family="custom",
        sizes=("auto", *_STD, "256x256", "512x512", "1792x1024", "1024x1792"),
        size_rule=CUSTOM_SIZE_RULE,
        default_size="auto",
        # The spec's value sets; newer SDK values (quality "xhigh", output_format "gif")
        # can be added in a custom profile of one's own.
        qualities=("low", "medium", "high", "auto", "standard", "hd"),
        default_quality="auto",
        n_max=10,
        response_formats=("url", "b64_json"),
        default_response_format="url",  # the spec's default; parsers should accept either
        output_formats=_OUTPUT_FORMATS,
        styles=("vivid", "natural"),
        backgrounds=_BACKGROUNDS,
        moderations=_MODERATIONS,
        output_compression=True,
        streaming=True,
        prompt_max_chars=32_000,
        returns_usage=False,
        returns_revised_prompt=False,
        prices=_custom_prices(),
        extra_params=SDK_ONLY_PARAMS,
        variations=True,
    ),
)

PROFILES: Mapping[str, Profile] = {p.name: p for p in _BUILTIN}


def _known_names(custom: Mapping[str, Profile] | None = None) -> str:
    names = list(PROFILES)
    names += [n for n in (custom or {}) if n not in PROFILES]
    return ", ".join(names)


def _lookup(name: str, table: Mapping[str, Profile]) -> Profile | None:
    if name in table:
        return table[name]
    folded = name.strip().lower()
    for key, profile in table.items():
        if key.lower() == folded:
            return profile
    return None


def get_profile(name: str) -> Profile:
    """The built-in profile ``name`` (case-insensitive); ``UnknownProfileError`` (a KeyError)."""
    if not isinstance(name, str):
        raise TypeError(
            f"get_profile() takes a profile name such as 'gpt-image-1', not "
            f"{_type_name(name)}. Known profiles: {_known_names()}."
        )
    profile = _lookup(name, PROFILES)
    if profile is None:
        hint = _did_you_mean(name, PROFILES)
        raise UnknownProfileError(
            f"Unknown profile {name!r}.{hint} Known profiles: {_known_names()}. Set `profile` "
            f"to one of them, or define a custom profile with that name."
        )
    return profile


def _type_name(value: object) -> str:
    return "None" if value is None else f"{type(value).__name__} {value!r:.60}"


def ensure_profile(value: object, *, function: str, argument: str = "profile") -> Profile:
    """``value`` when it is a :class:`Profile`; a ``TypeError`` saying what to pass otherwise.

    ``None`` gets its own explanation: it is what :func:`resolve_profile` returns for a chat
    model or a model it does not know, and passing that on is the usual way to get here.
    """
    # Duck-typed too: a Profile of a reloaded module (pytester, importlib.reload) is one.
    if isinstance(value, Profile) or (
        type(value).__name__ == "Profile" and callable(getattr(value, "accepts", None))
    ):
        return value  # type: ignore[return-value]
    call = f"{function}() needs a Profile as {argument!r}"
    if value is None:
        raise TypeError(
            f"{call}, got None. resolve_profile(model) returns None for a chat model or a "
            "model it does not know: check the model first (model_kind(model) == 'image'), "
            "or name the profile the model follows: resolve_profile(model, "
            "profile='gpt-image-1') or get_profile('gpt-image-1')."
        )
    if isinstance(value, str):
        raise TypeError(
            f"{call}, got the string {value!r}. Pass get_profile({value!r}) for a built-in "
            f"profile, or resolve_profile({value!r}) for a model name."
        )
    raise TypeError(
        f"{call}, got {_type_name(value)}. Pass get_profile('gpt-image-1') or "
        "resolve_profile(model)."
    )


def _did_you_mean(word: object, choices: Any) -> str:
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word.lower(), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


# --------------------------------------------------------------------------- resolution

# Decorations relays (one-api, new-api and their forks) append to a model name to sell it
# under another price group. Only words that are never part of a real OpenAI image model
# name: "-mini" is a real model, so it is not here; nor is "-pro", a plausible future name.
RELAY_SUFFIXES: tuple[str, ...] = ("vip", "svip", "ssvip", "all", "hd", "free", "official")
_SUFFIX_RE = re.compile(r"-(?:" + "|".join(RELAY_SUFFIXES) + r")$")
# Dated snapshots: gpt-image-2-2026-04-21, dall-e-3-20231106.
_SNAPSHOT_RE = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|20\d{6})$")
_DALLE_RE = re.compile(r"^dall-?e-?([23])(?=$|-)")


def _normalize(model: str) -> str:
    """Lower-case, provider prefix dropped (``openai/``, ``azure/``, ``litellm/openai/``...),
    OpenRouter-style ``:tag`` dropped, ``_``/spaces as ``-``."""
    name = model.strip().lower()
    name = name.rsplit("/", 1)[-1]
    name = name.split(":", 1)[0]
    name = re.sub(r"[\s_]+", "-", name.strip())
    return _DALLE_RE.sub(r"dall-e-\1", name)


def _candidates(model: str) -> Iterator[str]:
    """The name as given, then with relay suffixes and snapshot dates peeled off one by one."""
    name = _normalize(model)
    seen = set()
    while name and name not in seen:
        seen.add(name)
        yield name
        stripped = _SNAPSHOT_RE.sub("", name)
        if stripped == name:
            stripped = _SUFFIX_RE.sub("", name)
        name = stripped


def canonical_model(model: str) -> str | None:
    """The built-in profile name a model name stands for, or None.

    ``"openai/gpt-image-1-vip"`` -> ``"gpt-image-1"``; ``"gpt-image-2-2026-04-21"`` ->
    ``"gpt-image-2"``; ``"gpt-image-2.5-flare"`` -> None (an image model with no profile).
    """
    if not isinstance(model, str):
        return None
    for name in _candidates(model):
        if name in PROFILES and name != "custom":
            return name
    return None


def resolve_profile(
    model: str,
    *,
    profile: str | None = None,
    custom: Mapping[str, Profile] | None = None,
) -> Profile | None:
    """The profile for ``model``; an explicit ``profile`` name always wins.

    ``custom`` maps user-defined profile names to profiles; they are matched before the
    built-in ones, both as an explicit ``profile`` and by model name (with the same prefix,
    suffix and snapshot handling). Returns None when nothing matches; raises
    ``UnknownProfileError`` when an explicit ``profile`` names no profile.
    """
    if profile is not None and not isinstance(profile, str):
        raise TypeError(
            f"resolve_profile(profile=...) takes a profile name such as 'gpt-image-1', not "
            f"{_type_name(profile)}."
        )
    if custom is not None and not isinstance(custom, Mapping):
        raise TypeError(
            "resolve_profile(custom=...) takes a mapping of profile names to Profile objects "
            f"(e.g. {{'relay': make_custom_profile('relay', parent='gpt-image-1')}}), not "
            f"{_type_name(custom)}."
        )
    custom = custom or {}
    if profile is not None:
        found = _lookup(profile, custom) or _lookup(profile, PROFILES)
        if found is None:
            hint = _did_you_mean(profile, [*PROFILES, *custom])
            raise UnknownProfileError(
                f"Unknown profile {profile!r}.{hint} Known profiles: {_known_names(custom)}. "
                f"Set `profile` to one of them, or define a custom profile with that name."
            )
        return found
    if not isinstance(model, str):
        return None
    for name in _candidates(model):
        found = _lookup(name, custom)
        if found is not None:
            return found
        if name in PROFILES and name != "custom":
            return PROFILES[name]
    return None


# --------------------------------------------------------------------------- model kinds

# Image model families beyond the profiles. Matched anywhere in the normalized name.
IMAGE_FAMILIES: tuple[str, ...] = (
    r"^gpt-image",  # incl. newer ones without a profile (gpt-image-2.5-flare)
    r"^chatgpt-image",
    r"^dall-e",
    r"imagen",
    r"flux",
    r"stable-diffusion",
    r"sdxl",
    r"^sd-?[123]",
    r"midjourney",
    r"^mj-",
    r"cogview",
    r"seedream",
    r"^wanx",
    r"-t2i",
    r"kolors",
    r"ideogram",
    r"recraft",
    r"^playground-v",
    r"kandinsky",
    r"hidream",
    r"nano-banana",
    r"jimeng",
)
_IMAGE_RE = re.compile("|".join(f"(?:{p})" for p in IMAGE_FAMILIES))

# OpenAI's chat families (as in the SDK's ChatModel), checked before the generic "image"
# word: `gpt-4o-image` and `gpt-5-image` are chat-completions models that return images
# inside chat messages (relay and OpenRouter names), not /images/generations models.
_OPENAI_CHAT_RE = re.compile(
    r"^(?:gpt-3\.5|gpt-4|gpt-5|gpt-6|gpt-oss|gpt-audio|chatgpt-|o[1-9](?:-|$)|codex-)"
)
# Names that are neither chat nor image models although they share a family prefix.
_NOT_CHAT_RE = re.compile(r"embed|whisper|tts|transcribe|realtime|moderation|rerank")
# A separate word "image" marks other vendors' image models (gemini-2.5-flash-image,
# grok-2-image, qwen-image, hunyuan-image).
_IMAGE_WORD_RE = re.compile(r"(?:^|[-.])image(?:$|[-.])")

# Other vendors' chat families, matched at the start of the normalized name.
CHAT_FAMILIES: tuple[str, ...] = (
    "claude",
    "gemini",
    "gemma",
    "deepseek",
    "qwen",
    "qwq",
    "llama",
    "meta-llama",
    "codellama",
    "mistral",
    "mixtral",
    "codestral",
    "ministral",
    "magistral",
    "pixtral",
    "devstral",
    "open-mistral",
    "moonshot",
    "kimi",
    "glm-",
    "chatglm",
    "yi-",
    "ernie",
    "hunyuan",
    "doubao",
    "baichuan",
    "abab",
    "minimax",
    "grok",
    "command-",
    "phi-",
    "sonar",
    "internlm",
    "step-",
)
_CHAT_RE = re.compile("^(?:" + "|".join(re.escape(f) for f in CHAT_FAMILIES) + ")")


def model_kind(model: str) -> ModelKind:
    """``"image"``, ``"chat"`` or ``"unknown"`` for a model name as users write it.

    Relay decorations and provider prefixes are seen through (``gpt-4o-all`` and
    ``openai/gpt-4o`` are chat, ``gpt-image-1-vip`` is image). "unknown" is an honest
    answer for names that are neither (deployments, embeddings, audio).
    """
    if not isinstance(model, str):
        return "unknown"
    name = _normalize(model)
    if not name:
        return "unknown"
    if canonical_model(name) is not None or _IMAGE_RE.search(name):
        return "image"
    if _NOT_CHAT_RE.search(name):
        return "unknown"
    if _OPENAI_CHAT_RE.match(name):
        return "chat"
    if _IMAGE_WORD_RE.search(name):
        return "image"
    if _CHAT_RE.match(name):
        return "chat"
    return "unknown"


def is_chat_model(model: str) -> bool:
    """True when ``model`` is recognised as a chat model (never for image or unknown)."""
    return model_kind(model) == "chat"


# --------------------------------------------------------------------------- custom profiles

_TUPLE_FIELDS = {
    "sizes",
    "qualities",
    "response_formats",
    "output_formats",
    "styles",
    "backgrounds",
    "moderations",
    "extra_params",
}
_BOOL_FIELDS = {
    "output_compression",
    "streaming",
    "returns_usage",
    "returns_revised_prompt",
    "input_fidelity",
    "edit_json",
    "variations",
}
_INT_FIELDS = {"n_max", "prompt_max_chars"}
_STR_FIELDS = {"family", "default_size", "default_quality", "default_response_format"}
#: The fields a custom profile may set (library and ``[tool.imagegen.profiles.NAME]`` alike).
SETTABLE = tuple(f.name for f in fields(Profile) if f.name not in ("name", "parent"))


def make_custom_profile(
    name: str, *, parent: str | Profile = "custom", **overrides: Any
) -> Profile:
    """A user-defined profile: ``parent`` (a built-in name or a Profile) with ``overrides``.

    Override keys are :class:`Profile` field names; lists are accepted for tuples and a
    mapping for ``size_rule``. Raises :class:`ConfigError` naming the setting and the fix.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("A custom profile needs a non-empty name.")
    base = parent if isinstance(parent, Profile) else get_profile(parent)
    where = f"custom profile {name!r}"
    values: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in SETTABLE:
            hint = _did_you_mean(key, SETTABLE)
            raise ConfigError(
                f"Unknown setting {key!r} in {where}.{hint} Valid settings: {', '.join(SETTABLE)}."
            )
        values[key] = _coerce(key, value, where)
    profile = replace(base, name=name, parent=base.name, **values)
    # An inherited default that the overridden lists no longer hold follows the lists; a
    # default the user wrote is checked as written.
    if (
        "default_size" not in values
        and profile.sizes
        and not profile.supports_size(profile.default_size)
    ):
        profile = replace(profile, default_size=profile.sizes[0])
    quality_lost = profile.qualities and profile.default_quality not in profile.qualities
    if "default_quality" not in values and quality_lost:
        profile = replace(profile, default_quality=profile.qualities[0])
    _check_profile(profile, where)
    return profile


def _coerce(key: str, value: Any, where: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: {key} must be {expected}, got {value!r}.")

    if key in _TUPLE_FIELDS:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise bad("a list of strings")
        if not all(isinstance(v, str) and v for v in value):
            raise bad("a list of non-empty strings")
        return tuple(value)
    if key in _BOOL_FIELDS:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if key in _INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad("a positive integer")
        return value
    if key == "edit_max_images":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 16:
            raise bad("an integer from 0 (no edits) to 16")
        return value
    if key in _STR_FIELDS:
        if not isinstance(value, str) or not value:
            raise bad("a non-empty string")
        return value
    if key == "size_rule":
        if value is None or isinstance(value, SizeRule):
            return value
        if not isinstance(value, Mapping):
            raise bad(
                "a table with multiple_of, max_aspect, max_long_edge, max_short_edge, min_pixels"
            )
        allowed = [f.name for f in fields(SizeRule)]
        unknown = [k for k in value if k not in allowed]
        if unknown:
            raise ConfigError(
                f"{where}: unknown size_rule key {unknown[0]!r}."
                f"{_did_you_mean(unknown[0], allowed)} Valid keys: {', '.join(allowed)}."
            )
        defaults = CUSTOM_SIZE_RULE.__dict__
        merged = {k: value.get(k, defaults[k]) for k in allowed}
        for k, v in merged.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                raise ConfigError(f"{where}: size_rule.{k} must be a positive number, got {v!r}.")
        return SizeRule(
            multiple_of=int(merged["multiple_of"]),
            max_aspect=float(merged["max_aspect"]),
            max_long_edge=int(merged["max_long_edge"]),
            max_short_edge=int(merged["max_short_edge"]),
            min_pixels=int(merged["min_pixels"]),
        )
    if key == "prices":
        if not isinstance(value, Mapping):
            raise bad("a table of quality -> size -> USD")
        table: dict[str, dict[str, float]] = {}
        for quality, row in value.items():
            if not isinstance(row, Mapping):
                raise bad("a table of quality -> size -> USD")
            for size, usd in row.items():
                if isinstance(usd, bool) or not isinstance(usd, (int, float)) or usd < 0:
                    raise ConfigError(
                        f"{where}: prices.{quality}.{size} must be a non-negative number of "
                        f"USD, got {usd!r}."
                    )
            table[str(quality)] = {str(s): float(p) for s, p in row.items()}
        return table
    raise bad("a valid value")  # pragma: no cover - every settable field is handled above


def _check_profile(p: Profile, where: str) -> None:
    for size in p.sizes:
        if size != "auto" and parse_size(size) is None:
            raise ConfigError(
                f"{where}: size {size!r} is not WIDTHxHEIGHT (e.g. '1024x1024') or 'auto'."
            )
    if not p.supports_size(p.default_size):
        raise ConfigError(
            f"{where}: default_size {p.default_size!r} is not one of its sizes "
            f"({', '.join(p.sizes)}); add it to sizes or pick another default."
        )
    if p.qualities and p.default_quality not in p.qualities:
        raise ConfigError(
            f"{where}: default_quality {p.default_quality!r} is not one of its qualities "
            f"({', '.join(p.qualities)})."
        )
    bad_rf = [r for r in p.response_formats if r not in ("url", "b64_json")]
    if bad_rf:
        raise ConfigError(f"{where}: response_formats may only hold 'url' and 'b64_json'.")
    if p.default_response_format not in ("url", "b64_json"):
        raise ConfigError(f"{where}: default_response_format must be 'url' or 'b64_json'.")
    if p.response_formats and p.default_response_format not in p.response_formats:
        raise ConfigError(
            f"{where}: default_response_format {p.default_response_format!r} is not one of "
            f"its response_formats ({', '.join(p.response_formats)})."
        )
