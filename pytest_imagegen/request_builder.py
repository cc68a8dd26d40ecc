"""Build ``images.generate`` request bodies for a profile, and validate any body against one.

Pure: (profile, intent) -> wire payload. Violations carry OpenAI's own error codes and
wording ("Invalid value: 'standard'. Supported values are: 'low', 'medium', 'high', and
'auto'.") so that a test failure reads like the 400 the endpoint would have sent.

``openai`` and ``pydantic`` are imported only inside :func:`validate_sdk_types`.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_imagegen.errors import ConfigError
from pytest_imagegen.images import MIME_TYPES
from pytest_imagegen.profiles import (
    KNOWN_PARAMS,
    PROFILES,
    Profile,
    ensure_profile,
    is_chat_model,
    parse_size,
)

__all__ = [
    "EDIT_FIELDS",
    "VARIATION_FIELDS",
    "RequestShapeError",
    "Upload",
    "Violation",
    "build_request",
    "check_request",
    "coerce_form",
    "format_supported",
    "validate_edit",
    "validate_request",
    "validate_sdk_types",
    "validate_variation",
]

# Parameters whose value must be one of the profile's listed values.
_ENUM_PARAMS = (
    "quality",
    "size",
    "style",
    "background",
    "moderation",
    "output_format",
    "response_format",
)
# Output formats that take `output_compression` below 100, and that can be transparent.
_COMPRESSIBLE = ("jpeg", "webp")
_TRANSPARENT_OK = ("png", "webp")


@dataclass(frozen=True)
class Violation:
    """One thing wrong with a request body, as OpenAI would report it."""

    param: str | None
    code: str
    message: str
    supported: tuple[str, ...] = ()

    def error_body(self) -> dict[str, Any]:
        """The 400 body OpenAI sends for this violation."""
        return {
            "error": {
                "message": self.message,
                "type": "invalid_request_error",
                "param": self.param,
                "code": self.code,
            }
        }

    def __str__(self) -> str:
        return f"{self.param}: {self.message}" if self.param else self.message


class RequestShapeError(ConfigError):
    """A request the profile rejects; ``violations`` lists every problem."""

    def __init__(self, violations: Iterable[Violation], *, profile: str | None = None) -> None:
        self.violations: tuple[Violation, ...] = tuple(violations)
        self.profile = profile
        where = f" for profile {profile!r}" if profile else ""
        self.summary = " ".join(str(v) for v in self.violations)
        super().__init__(
            f"Request not valid{where}: {self.summary} Change the parameter(s) named, or use a "
            f"profile that supports them."
        )


def format_supported(values: Sequence[str]) -> str:
    """``('low', 'medium', 'high', 'auto')`` -> ``"'low', 'medium', 'high', and 'auto'"``."""
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 1:
        return "".join(quoted)
    if len(quoted) == 2:
        return f"{quoted[0]} and {quoted[1]}"
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return f"a {type(value).__name__}"


def _invalid_type(param: str, expected: str, value: object) -> Violation:
    return Violation(
        param,
        "invalid_type",
        f"Invalid type for '{param}': expected {expected}, but got {_json_type(value)} instead.",
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_range(param: str, value: object, lo: int, hi: int | None) -> Violation | None:
    """OpenAI's integer checks: type, then minimum, then maximum."""
    if not _is_int(value):
        return _invalid_type(param, "an integer", value)
    assert isinstance(value, int)
    if value < lo:
        return Violation(
            param,
            "integer_below_min_value",
            f"Invalid '{param}': integer below minimum value. Expected a value >= {lo}, "
            f"but got {value} instead.",
        )
    if hi is not None and value > hi:
        return Violation(
            param,
            "integer_above_max_value",
            f"Invalid '{param}': integer above maximum value. Expected a value <= {hi}, "
            f"but got {value} instead.",
        )
    return None


def _enum(
    param: str, value: object, allowed: Sequence[str], *, extra: str = ""
) -> Violation | None:
    if not isinstance(value, str):
        return _invalid_type(param, "a string", value)
    if value in allowed:
        return None
    return Violation(
        param,
        "invalid_value",
        f"Invalid value: '{value}'. Supported values are: {format_supported(allowed)}{extra}.",
        tuple(allowed),
    )


def _check_size(value: object, profile: Profile) -> Violation | None:
    if not isinstance(value, str):
        return _invalid_type("size", "a string", value)
    if profile.supports_size(value):
        return None
    rule = profile.size_rule
    if rule is None:
        return _enum("size", value, profile.sizes)
    dims = parse_size(value)
    reason = rule.check(*dims) if dims else "not WIDTHxHEIGHT"
    return Violation(
        "size",
        "invalid_value",
        f"Invalid value: '{value}'. Supported values are: {format_supported(profile.sizes)}, "
        f"or {rule.describe()} ({reason}).",
        profile.sizes,
    )


def _check_prompt(body: Mapping[str, Any], profile: Profile) -> Violation | None:
    if "prompt" not in body:
        return Violation(
            "prompt", "missing_required_parameter", "Missing required parameter: 'prompt'."
        )
    prompt = body["prompt"]
    if not isinstance(prompt, str):
        return _invalid_type("prompt", "a string", prompt)
    if not prompt:
        return Violation(
            "prompt",
            "empty_string",
            "Invalid 'prompt': empty string. Expected a string with minimum length 1, but got "
            "an empty string instead.",
        )
    limit = profile.prompt_max_chars
    if len(prompt) > limit:
        return Violation(
            "prompt",
            "string_above_max_length",
            f"Invalid 'prompt': string too long. Expected a string with maximum length {limit}, "
            f"but got a string with length {len(prompt)} instead.",
        )
    return None


def _check_model(body: Mapping[str, Any], profile: Profile) -> Violation | None:
    # The spec lets `model` default to dall-e-2, a model OpenAI retired on 2026-05-12, and
    # OpenAI's current reference says "Specify a model explicitly": a body without one
    # means something different on every server, so it is a violation here.
    model = body.get("model")
    if model is None:
        return Violation(
            "model", "missing_required_parameter", "Missing required parameter: 'model'."
        )
    if not isinstance(model, str):
        return _invalid_type("model", "a string", model)
    if not model.strip():
        return Violation(
            "model",
            "empty_string",
            "Invalid 'model': empty string. Expected a string with minimum length 1, but got "
            "an empty string instead.",
        )
    if is_chat_model(model):
        suggestion = profile.name if profile.family != "custom" else "gpt-image-1.5"
        return Violation(
            "model",
            "invalid_value",
            f"Invalid value: '{model}'. '{model}' is a chat model; /images/generations needs "
            f"an image model such as '{suggestion}'.",
        )
    return None


def validate_request(body: Mapping[str, Any], profile: Profile) -> list[Violation]:
    """Every violation of ``body`` against ``profile``, with OpenAI's codes and wording.

    Covers unknown and unaccepted keys, the prompt (missing, empty, too long), the model
    (missing, empty, a chat model), every enumerated value, ``n`` and the other integers,
    ``output_compression`` with PNG, a transparent background with JPEG, and JSON types.
    ``None`` is accepted wherever the spec marks a field nullable. ``profile`` must be a
    :class:`Profile` (a ``TypeError`` says what to pass otherwise); ``body`` may be anything,
    since reporting a body that is not an object is part of the job.
    """
    profile = ensure_profile(profile, function="validate_request")
    if not isinstance(body, Mapping):
        return [
            Violation(
                None,
                "invalid_type",
                f"Invalid type for request body: expected an object, but got "
                f"{_json_type(body)} instead.",
            )
        ]
    out: list[Violation] = []
    for key in body:
        if not isinstance(key, str) or not profile.accepts(key):
            out.append(Violation(str(key), "unknown_parameter", f"Unknown parameter: '{key}'."))

    def accepted(param: str) -> bool:
        return param in body and profile.accepts(param)

    def add(v: Violation | None) -> None:
        if v is not None:
            out.append(v)

    add(_check_prompt(body, profile))
    add(_check_model(body, profile))
    if accepted("n") and body["n"] is not None:
        add(_int_range("n", body["n"], 1, profile.n_max))
    for param in _ENUM_PARAMS:
        if not accepted(param) or body[param] is None:
            continue
        value = body[param]
        add(
            _check_size(value, profile)
            if param == "size"
            else _enum(param, value, profile.allowed_values(param))
        )

    # Cross-field rules apply only when both values are themselves valid, so that one
    # defect yields one violation.
    fmt = body.get("output_format") if accepted("output_format") else None
    fmt_ok = fmt is None or (isinstance(fmt, str) and fmt in profile.output_formats)
    effective_fmt = fmt if isinstance(fmt, str) else "png"
    if accepted("output_compression") and body["output_compression"] is not None:
        value = body["output_compression"]
        problem = _int_range("output_compression", value, 0, 100)
        add(problem)
        if problem is None and value < 100 and fmt_ok and effective_fmt not in _COMPRESSIBLE:
            out.append(
                Violation(
                    "output_compression",
                    "invalid_value",
                    f"Compression less than 100 is not supported for "
                    f"{effective_fmt.upper()} output format.",
                    _COMPRESSIBLE,
                )
            )
    background = body.get("background") if accepted("background") else None
    if (
        background == "transparent"
        and "transparent" in profile.backgrounds
        and fmt_ok
        and effective_fmt not in _TRANSPARENT_OK
    ):
        out.append(
            Violation(
                "background",
                "invalid_value",
                f"Invalid value: 'transparent'. A transparent background needs output_format "
                f"'png' or 'webp', but output_format is '{effective_fmt}'.",
                _TRANSPARENT_OK,
            )
        )

    if accepted("stream") and body["stream"] is not None and not isinstance(body["stream"], bool):
        out.append(_invalid_type("stream", "a boolean", body["stream"]))
    if accepted("partial_images") and body["partial_images"] is not None:
        add(_int_range("partial_images", body["partial_images"], 0, 3))
    if accepted("user") and not isinstance(body["user"], str):
        # `user` is the one optional field the spec does not mark nullable.
        out.append(_invalid_type("user", "a string", body["user"]))
    sid = body.get("safety_identifier") if accepted("safety_identifier") else None
    if sid is not None and not isinstance(sid, str):
        out.append(_invalid_type("safety_identifier", "a string", body["safety_identifier"]))
    if accepted("complexity") and body["complexity"] is not None:
        add(_enum("complexity", body["complexity"], ("low", "medium", "high")))
    if accepted("frame_count") and body["frame_count"] is not None:
        add(_int_range("frame_count", body["frame_count"], 2, 16))
    if accepted("frame_duration_ms") and body["frame_duration_ms"] is not None:
        add(_int_range("frame_duration_ms", body["frame_duration_ms"], 1, None))
    if accepted("svg") and body["svg"] is not None and not isinstance(body["svg"], Mapping):
        out.append(_invalid_type("svg", "an object", body["svg"]))
    return out


def build_request(profile: Profile, *, model: str, prompt: str, **intent: Any) -> dict[str, Any]:
    """The ``images.generate`` body for ``profile`` and the caller's intent.

    ``None`` values and parameters the profile does not take are left out (no
    ``response_format`` for GPT-image models, no ``style`` but for dall-e-3); a key that is
    no Images API parameter at all, or a value the profile rejects, raises
    :class:`RequestShapeError` listing every violation.
    """
    profile = ensure_profile(profile, function="build_request")
    if model is not None and not isinstance(model, str):
        raise TypeError(
            f"build_request(model=...) takes a model name such as 'gpt-image-1' (or None to "
            f"leave it out), not {type(model).__name__} {model!r:.60}."
        )
    unknown = [k for k in intent if k not in KNOWN_PARAMS and k not in profile.extra_params]
    if unknown:
        violations = []
        for key in unknown:
            close = difflib.get_close_matches(key, KNOWN_PARAMS, n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            violations.append(
                Violation(key, "unknown_parameter", f"Unknown parameter: '{key}'.{hint}")
            )
        raise RequestShapeError(violations, profile=profile.name)
    body: dict[str, Any] = {"model": model, "prompt": prompt}
    if model is None:
        del body["model"]
    for key, value in intent.items():
        if value is not None and profile.accepts(key):
            body[key] = value
    violations = validate_request(body, profile)
    if violations:
        raise RequestShapeError(violations, profile=profile.name)
    return body


# --------------------------------------------------------------------------- SDK types

_TYPE_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "dict_type": "an object",
    "typed_dict_type": "an object",
    "model_type": "an object",
}


@functools.lru_cache(maxsize=1)
def _sdk_validators() -> tuple[Any, Any, dict[str, tuple[str, ...]]]:
    import typing

    import typing_extensions
    from openai.types import image_generate_params as igp
    from pydantic import ConfigDict, TypeAdapter

    # The SDK's TypedDicts ignore unknown keys; subclasses with extra="forbid" reject them.
    class StrictNonStreaming(igp.ImageGenerateParamsNonStreaming, total=False):
        __pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[misc]

    class StrictStreaming(igp.ImageGenerateParamsStreaming, total=False):
        __pydantic_config__ = ConfigDict(extra="forbid", strict=True)  # type: ignore[misc]

    literal_types = (typing.Literal, typing_extensions.Literal)

    def literals(tp: Any) -> tuple[str, ...]:
        if typing.get_origin(tp) in literal_types:
            return tuple(str(a) for a in typing.get_args(tp))
        return tuple(v for arg in typing.get_args(tp) for v in literals(arg))

    hints = typing_extensions.get_type_hints(igp.ImageGenerateParamsNonStreaming)
    supported = {name: literals(tp) for name, tp in hints.items()}
    return TypeAdapter(StrictNonStreaming), TypeAdapter(StrictStreaming), supported


def validate_sdk_types(body: Mapping[str, Any]) -> list[Violation]:
    """Violations of ``body`` against ``openai.types.ImageGenerateParams``, strictly.

    Strict pydantic validation with unknown keys forbidden: catches misspelt keys, values
    outside the SDK's literals and wrong JSON types. It knows nothing of per-model rules
    or ranges; :func:`validate_request` does.
    """
    if not isinstance(body, Mapping):
        return validate_request(body, PROFILES["custom"])
    from pydantic import ValidationError

    non_streaming, streaming, supported = _sdk_validators()
    adapter = streaming if body.get("stream") is True else non_streaming
    try:
        adapter.validate_python(dict(body), strict=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    else:
        return []
    # Union members each report their own error; fold them into one violation per param.
    by_param: dict[str, list[Any]] = {}
    for err in errors:
        loc = err.get("loc") or ("",)
        param = str(loc[0])
        if param == "svg" and len(loc) > 1 and loc[1] in ("model", "reasoning"):
            param = f"svg.{loc[1]}"
        by_param.setdefault(param, []).append(err)
    out = []
    for param, errs in by_param.items():
        types = {e["type"] for e in errs}
        value = errs[0].get("input")
        if "extra_forbidden" in types:
            out.append(Violation(param, "unknown_parameter", f"Unknown parameter: '{param}'."))
        elif "missing" in types:
            out.append(
                Violation(
                    param, "missing_required_parameter", f"Missing required parameter: '{param}'."
                )
            )
        elif types & set(_TYPE_EXPECTED):
            expected = next(_TYPE_EXPECTED[t] for t in _TYPE_EXPECTED if t in types)
            out.append(_invalid_type(param, expected, value))
        elif "literal_error" in types:
            allowed = supported.get(param, ())
            out.append(
                Violation(
                    param,
                    "invalid_value",
                    f"Invalid value: '{value}'. Supported values are: {format_supported(allowed)}.",
                    allowed,
                )
            )
        else:
            out.append(Violation(param, "invalid_value", f"Invalid '{param}': {errs[0]['msg']}."))
    return out


def check_request(body: Mapping[str, Any], profile: Profile) -> list[Violation]:
    """:func:`validate_request` plus :func:`validate_sdk_types`, one report per param."""
    profile = ensure_profile(profile, function="check_request")
    out = validate_request(body, profile)
    if not isinstance(body, Mapping):
        return out
    seen = {v.param for v in out}
    out += [v for v in validate_sdk_types(body) if v.param not in seen]
    return out


# --------------------------------------------------------------------------- edits, variations

#: Keys of a multipart ``POST /images/edits`` besides the files (spec CreateImageEditRequest,
#: plus the SDK's newer ``safety_identifier``).
EDIT_FIELDS: tuple[str, ...] = (
    "prompt",
    "model",
    "n",
    "size",
    "response_format",
    "output_format",
    "output_compression",
    "background",
    "user",
    "input_fidelity",
    "stream",
    "partial_images",
    "quality",
    "moderation",  # in the JSON variant only, accepted in both as OpenAI's SDK sends it
    "safety_identifier",
)
#: Keys of a multipart ``POST /images/variations`` besides the file.
VARIATION_FIELDS: tuple[str, ...] = ("model", "n", "response_format", "size", "user")
# Form fields arrive as text; these are numbers or booleans once parsed.
_INT_FIELDS = ("n", "output_compression", "partial_images")
_BOOL_FIELDS = ("stream",)
# What each family takes as input images (the spec's edit descriptions).
_DALLE2_MAX_BYTES = 4 * 1024 * 1024
_GPT_IMAGE_MAX_BYTES = 50 * 1024 * 1024
_ALPHA_MODES = ("RGBA", "LA", "L")


@dataclass(frozen=True)
class Upload:
    """One input file of an edit or variation: a multipart part, or a decoded data URL."""

    field: str  # "image", "image[]", "mask" (or "images[0]" for the JSON variant)
    data: bytes
    content_type: str = "image/png"
    filename: str | None = None


def coerce_form(fields: Mapping[str, str]) -> dict[str, Any]:
    """Multipart form values as the API reads them: ``n="2"`` -> 2, ``stream="true"`` -> True.

    A value that does not parse is kept as text, so validation names it as the wrong type.
    """
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if key in _INT_FIELDS and isinstance(value, str):
            try:
                out[key] = int(value.strip())
                continue
            except ValueError:
                pass
        if key in _BOOL_FIELDS and isinstance(value, str) and value.lower() in ("true", "false"):
            out[key] = value.lower() == "true"
            continue
        out[key] = value
    return out


def _edit_models(what: str) -> tuple[str, ...]:
    if what == "variations":
        return tuple(n for n, p in PROFILES.items() if p.variations and p.family != "custom")
    if what == "json":
        return tuple(n for n, p in PROFILES.items() if p.edits and p.edit_json and n != "custom")
    return tuple(n for n, p in PROFILES.items() if p.edits and n != "custom")


def _unsupported_model(model: object, what: str) -> Violation:
    allowed = sorted(_edit_models(what))
    return Violation(
        "model",
        "invalid_value",
        f"Invalid value: '{model}'. Supported values are: {format_supported(allowed)}.",
        tuple(allowed),
    )


def _mimetypes(profile: Profile, *, mask: bool = False) -> tuple[str, ...]:
    if mask or profile.family == "dall-e":
        return ("image/png",)
    return ("image/jpeg", "image/png", "image/webp")


def _check_upload(
    upload: Upload, index: int, profile: Profile, param: str, *, mask: bool = False
) -> tuple[Violation | None, tuple[int, int] | None]:
    """One input file: its declared type, its bytes, the family's limits. Returns the
    violation (or None) and the decoded dimensions (None when it did not decode)."""
    from pytest_imagegen.images import image_mode, inspect_image

    allowed = _mimetypes(profile, mask=mask)
    declared = (upload.content_type or "application/octet-stream").split(";")[0].strip().lower()
    if declared not in allowed:
        return (
            Violation(
                param,
                "invalid_image_format",
                f"Invalid file '{param}': unsupported mimetype ('{declared}'). Supported file "
                f"formats are {format_supported(allowed)}.",
                allowed,
            ),
            None,
        )
    try:
        info = inspect_image(upload.data)
    except ValueError:
        info = None
    if info is None or MIME_TYPES.get(info.format) not in allowed:
        what = "mask" if mask else f"image {index + 1}"
        return (
            Violation(
                param,
                "invalid_image_file",
                f"Invalid image file: {what} could not be read as "
                f"{' or '.join(a.split('/')[1].upper() for a in allowed)}; check the file.",
            ),
            None,
        )
    dims = (info.width, info.height)
    limit = _DALLE2_MAX_BYTES if profile.family == "dall-e" or mask else _GPT_IMAGE_MAX_BYTES
    if len(upload.data) >= limit:
        return (
            Violation(
                param,
                "invalid_value",
                f"Invalid file '{param}': the file is {len(upload.data)} bytes; it must be "
                f"smaller than {limit // (1024 * 1024)} MB.",
            ),
            dims,
        )
    if mask or profile.family == "dall-e":
        label = "mask" if mask else "input"
        if not mask and info.width != info.height:
            return (
                Violation(
                    param,
                    "invalid_value",
                    f"Invalid input image - image must be square, got {info.width}x{info.height}.",
                ),
                dims,
            )
        mode = image_mode(upload.data)
        if mode not in _ALPHA_MODES and (mask or profile.family == "dall-e"):
            modes = "['RGBA', 'LA', 'L']"
            return (
                Violation(
                    param,
                    "invalid_value",
                    f"Invalid {label} image - format must be in {modes}, got {mode}.",
                ),
                dims,
            )
    return None, dims


def validate_edit(
    fields: Mapping[str, Any],
    profile: Profile,
    *,
    images: Sequence[Upload],
    mask: Upload | None = None,
    json_body: bool = False,
) -> list[Violation]:
    """Every violation of an ``images.edit`` request against ``profile``, OpenAI-worded.

    ``fields`` are the non-file keys (form values already :func:`coerce_form`-ed); ``images``
    the input files in order; ``mask`` the optional mask; ``json_body`` for the JSON variant
    (``images`` as image references, GPT-image models only). Checks what
    :func:`validate_request` checks, then: the model has edits (dall-e-3 has none), 1 to
    ``edit_max_images`` images of an accepted type and size, dall-e-2's square PNG with
    transparency, a PNG mask with alpha of the first image's size, ``input_fidelity``.
    """
    param = "images" if json_body else "image"
    model = fields.get("model")
    if not profile.edits or (json_body and not profile.edit_json):
        return [_unsupported_model(model, "json" if json_body else "edits")]
    base = {k: v for k, v in fields.items() if k not in ("input_fidelity", "moderation")}
    out = []
    for v in validate_request(base, profile):
        if v.code == "invalid_value" and v.param == "model":
            v = Violation(
                v.param, v.code, v.message.replace("/images/generations", "/images/edits")
            )
        out.append(v)
    fidelity = fields.get("input_fidelity")
    if "input_fidelity" in fields and fidelity is not None:
        if not profile.input_fidelity:
            out.append(
                Violation(
                    "input_fidelity",
                    "unsupported_parameter",
                    "Unsupported parameter: 'input_fidelity' is not supported with this model.",
                )
            )
        else:
            bad = _enum("input_fidelity", fidelity, ("high", "low"))
            if bad is not None:
                out.append(bad)
    if not images:
        out.append(
            Violation(
                param, "missing_required_parameter", f"Missing required parameter: '{param}'."
            )
        )
        return out
    limit = profile.edit_max_images
    if len(images) > limit:
        if limit == 1 and not json_body:
            out.append(
                Violation(
                    param,
                    "invalid_type",
                    f"Invalid type for '{param}': expected a file, but got an array instead.",
                )
            )
        else:
            out.append(
                Violation(
                    param,
                    "array_above_max_length",
                    f"Invalid '{param}': array too long. Expected an array with maximum length "
                    f"{limit}, but got an array with length {len(images)} instead.",
                )
            )
        return out
    first: tuple[int, int] | None = None
    for index, upload in enumerate(images):
        problem, dims = _check_upload(upload, index, profile, param)
        if problem is not None:
            out.append(problem)
            return out
        if index == 0:
            first = dims
    if mask is not None:
        problem, dims = _check_upload(mask, 0, profile, "mask", mask=True)
        if problem is not None:
            out.append(problem)
        elif first is not None and dims is not None and dims != first:
            out.append(
                Violation(
                    "mask",
                    "invalid_value",
                    f"Invalid mask image - the mask is {dims[0]}x{dims[1]}, but it must be the "
                    f"same size as the first image ({first[0]}x{first[1]}).",
                )
            )
    return out


def validate_variation(
    fields: Mapping[str, Any], profile: Profile, *, image: Upload | None
) -> list[Violation]:
    """Every violation of an ``images.create_variation`` request (dall-e-2 only)."""
    if not profile.variations:
        return [_unsupported_model(fields.get("model"), "variations")]
    out = [
        Violation(str(k), "unknown_parameter", f"Unknown parameter: '{k}'.")
        for k in fields
        if k not in VARIATION_FIELDS
    ]
    n = fields.get("n")
    if n is not None:
        bad = _int_range("n", n, 1, profile.n_max)
        if bad is not None:
            out.append(bad)
    for key in ("size", "response_format"):
        value = fields.get(key)
        if value is not None and profile.allowed_values(key):
            bad = (
                _check_size(value, profile)
                if key == "size"
                else _enum(key, value, profile.allowed_values(key))
            )
            if bad is not None:
                out.append(bad)
    if image is None:
        out.append(
            Violation("image", "missing_required_parameter", "Missing required parameter: 'image'.")
        )
    else:
        problem, _ = _check_upload(image, 0, profile, "image")
        if problem is not None:
            out.append(problem)
    return out
