"""Settings: the ``[tool.imagegen]`` file model, the environment, the command line, and the
one function that merges them, remembering where each value came from."""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pytest_imagegen.errors import ConfigError, ModelSeparationError
from pytest_imagegen.names import (
    ENV_REFERENCE_DEFECTS,
    ENV_REFERENCE_LATENCY,
    LIVE_RECORD_MODES,
    RECORD_MODES,
)
from pytest_imagegen.profiles import (
    PROFILES,
    SETTABLE,
    canonical_model,
    get_profile,
    make_custom_profile,
    model_kind,
    resolve_profile,
)
from pytest_imagegen.ratings import DEFAULT_THRESHOLDS, describe_thresholds, threshold_problem
from pytest_imagegen.redact import Redactor, is_secret_name, looks_like_key

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

if TYPE_CHECKING:
    import openai

    from pytest_imagegen.profiles import Profile
    from pytest_imagegen.reference import ReferenceServer, RemoteReference

# Where a value came from, highest precedence first (shown in the report header).
SOURCE_CLI = "command line"
SOURCE_ENV = "environment"
SOURCE_FILE = "config file"
SOURCE_PROFILE = "profile default"
SOURCE_DEFAULT = "default"
SOURCE_LEVELS = (SOURCE_CLI, SOURCE_ENV, SOURCE_FILE, SOURCE_PROFILE, SOURCE_DEFAULT)


_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def is_loopback_host(host: object) -> bool:
    """Is ``host`` (a name or address, str or bytes) this machine's loopback?"""
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    name = host.strip("[]").split("%", 1)[0].rstrip(".").lower()
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


def is_loopback_url(url: str) -> bool:
    """Does ``url`` point at this machine's loopback?"""
    return is_loopback_host(urlsplit(url).hostname)


@dataclass(frozen=True)
class Upstream:
    """The reference server an endpoint (a gateway) forwards to, in upstream mode.

    Either ``listen`` (the plugin starts a reference server on that fixed loopback address for
    the session) or ``url`` (a server started elsewhere with ``serve --admin-key-env VAR``,
    driven through its control API with ``admin_key``). ``api_key`` is the key the gateway
    must send upstream (any key is accepted when empty, in listen mode). ``model_map`` says
    which upstream model the gateway sends for a client's model (unchanged when absent).
    """

    listen: tuple[str, int] | None = None
    url: str | None = None
    api_key_env: str | None = None
    api_key: str = field(default="", repr=False)
    admin_key_env: str | None = None
    admin_key: str = field(default="", repr=False)
    model_map: Mapping[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """The upstream's OpenAI base URL (what the gateway is configured to call)."""
        if self.listen is not None:
            host, port = self.listen
            shown = f"[{host}]" if ":" in host else host
            return f"http://{shown}:{port}/v1"
        assert self.url is not None
        url = self.url.rstrip("/")
        return url if url.endswith("/v1") else f"{url}/v1"

    def upstream_model(self, model: str) -> str:
        """The model the upstream should receive for a client's ``model``."""
        return self.model_map.get(model, model)

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(v for v in (self.api_key, self.admin_key) if v)

    def describe(self) -> str:
        where = (
            f"listen {self.listen[0]}:{self.listen[1]} (started for the session)"
            if self.listen is not None
            else f"url {_mask_url(self.url or '')} (control API)"
        )
        key = f"key via {self.api_key_env}" if self.api_key_env else "any key accepted"
        mapped = ", ".join(f"{k} -> {v}" for k, v in self.model_map.items())
        return f"{where}; {key}" + (f"; model map {mapped}" if mapped else "")


#: Header names that carry a credential wherever they appear (compared lower-cased): the
#: wrong-key checks replace these (or the endpoint's ``credential_headers``) and no other
#: header, since gateways route by headers whose names merely contain "key".
CREDENTIAL_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "x-goog-api-key",
        "ocp-apim-subscription-key",
    }
)


@dataclass(frozen=True)
class Endpoint:
    """One resolved image endpoint: everything needed to call it and judge its answers."""

    name: str
    base_url: str
    image_model: str
    profile: Profile
    api_key: str = field(default="", repr=False)
    api_key_env: str | None = None
    chat_model: str | None = None
    # How the chat model may make images: "responses" (only through the Responses API's
    # image_generation tool, checked by separation.chat_images_through_responses) or None.
    chat_images: str | None = None
    timeout_s: float = 60.0
    deadline_s: float = 300.0
    max_retries: int = 0
    fallback: tuple[Mapping[str, Any], ...] = ()
    # Cap on one response body; None: derived from the profile (see ``response_cap``).
    max_response_bytes: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    is_reference: bool = False
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    upstream: Upstream | None = None
    # Azure style: the `api-version` query every request carries (None: not Azure), and the
    # deployment serving each model (a model without an entry is its own deployment name).
    api_version: str | None = None
    deployments: Mapping[str, str] = field(default_factory=dict)
    # Names in ``headers`` that carry credentials; None: those in CREDENTIAL_HEADERS. Only
    # for endpoints built in code: the config file refuses credential-like header names.
    credential_headers: tuple[str, ...] | None = None

    @property
    def credential_header_names(self) -> tuple[str, ...]:
        """The names in :attr:`headers` that carry a credential (a wrong key replaces them)."""
        if self.credential_headers is not None:
            wanted = {name.lower() for name in self.credential_headers}
        else:
            wanted = set(CREDENTIAL_HEADERS)
        return tuple(name for name in self.headers if name.lower() in wanted)

    @property
    def is_loopback(self) -> bool:
        """Requests stay on this machine (the embedded reference endpoint, or a loopback URL)."""
        return self.is_reference or is_loopback_url(self.base_url)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every value that must never be written anywhere: the key and extra header values."""
        values = [self.api_key, *self.headers.values()]
        if self.upstream is not None:
            values.extend(self.upstream.secrets)
        return tuple(v for v in values if v)

    @property
    def is_azure(self) -> bool:
        """Called the Azure way: deployment paths, ``api-version`` query, ``api-key`` header."""
        return self.api_version is not None

    def deployment(self, model: str) -> str:
        """The Azure deployment that serves ``model`` (the model's own name when unlisted)."""
        from pytest_imagegen.clients import deployment_for

        return str(deployment_for(model, self.deployments))

    def wire_model(self, model: str) -> str:
        """The ``model`` a request for ``model`` carries: the deployment name on Azure."""
        return self.deployment(model) if self.is_azure else model

    def url(self, route: str, model: str | None = None) -> str:
        """Where the SDK sends a request for ``route`` (``"/images/generations"``) and
        ``model``, without the query: ``{base_url}{route}``, or on Azure
        ``{resource}/openai/deployments/{deployment}{route}``."""
        if not self.is_azure:
            return self.base_url.rstrip("/") + route
        from pytest_imagegen.clients import azure_endpoint

        root = azure_endpoint(self.base_url) + "/openai"
        if model is None:
            return root + route
        return f"{root}/deployments/{self.deployment(model)}{route}"

    def client(self, **overrides: Any) -> openai.OpenAI:
        """An ``openai.OpenAI`` bound to this endpoint (base URL, key, timeout, retries);
        an ``openai.AzureOpenAI`` that maps models to deployments for an Azure endpoint."""
        from pytest_imagegen.clients import sync_client

        return sync_client(self, **overrides)

    def async_client(self, **overrides: Any) -> openai.AsyncOpenAI:
        """Like :meth:`client`, as an ``openai.AsyncOpenAI`` (``AsyncAzureOpenAI``)."""
        from pytest_imagegen.clients import async_client

        return async_client(self, **overrides)

    def response_cap(self, n: int = 1) -> int:
        """Bytes one response body may have: ``max_response_mb`` when configured, else a few
        MB above the largest legal answer with ``n`` images of the profile."""
        if self.max_response_bytes is not None:
            return self.max_response_bytes
        from pytest_imagegen.bounds import response_cap

        return response_cap(self.profile, n)


# --------------------------------------------------------------------------------------
# Constants users see in messages and the documentation

REFERENCE_ENDPOINT_NAME = "reference"
ENV_ENDPOINT_NAME = "env"
# The endpoint --imagegen-base-url / --imagegen-image-model / --imagegen-chat-model define.
CLI_ENDPOINT_NAME = "cli"
#: The command-line options of the `cli` endpoint, by the setting each one sets (the plugin
#: registers them under the same names).
CLI_ENDPOINT_OPTIONS = {
    "base_url": "--imagegen-base-url",
    "image_model": "--imagegen-image-model",
    "chat_model": "--imagegen-chat-model",
}
#: Variables that set an endpoint value for every endpoint but the built-in reference one
#: (which keeps its own short limits); they win over the config file.
ENV_ENDPOINT_SETTINGS = {
    "timeout_s": "IMAGEGEN_TIMEOUT_S",
    "deadline_s": "IMAGEGEN_DEADLINE_S",
    "max_retries": "IMAGEGEN_MAX_RETRIES",
    "fallback": "IMAGEGEN_FALLBACK",
}
# Azure hosts, whose key the SDK reads from AZURE_OPENAI_API_KEY.
_AZURE_HOST_SUFFIXES = (
    ".openai.azure.com",
    ".cognitiveservices.azure.com",
    ".services.ai.azure.com",
)
DEFAULT_AZURE_KEY_ENV = "AZURE_OPENAI_API_KEY"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
# The image model of the `env` endpoint when only OPENAI_BASE_URL / OPENAI_API_KEY are set.
DEFAULT_ENV_IMAGE_MODEL = "gpt-image-1.5"
DEFAULT_OPENAI_KEY_ENV = "OPENAI_API_KEY"

# The keys a fallback step may override (each one is an `images.generate` parameter).
FALLBACK_KEYS = (
    "quality",
    "size",
    "model",
    "n",
    "output_format",
    "background",
    "moderation",
    "style",
    "response_format",
)

# The variables that make the environment define the `env` endpoint.
ENV_ENDPOINT_VARS = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENAI_IMAGE_MODEL", "OPENAI_MODEL")

_NAME_RE = re.compile(r"[a-z0-9_-]+")
_PROFILE_NAME_RE = re.compile(r"[a-z0-9_.-]+")
_ENV_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Azure OpenAI API versions: dated, with an optional channel ("2025-04-01-preview").
_API_VERSION_RE = re.compile(r"\d{4}-\d{2}-\d{2}(?:-[a-z]+)?|preview|latest")
_DEPLOYMENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,63}")
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# What is a credential (a key name, a pasted key) is the one redaction policy's call.
_REDACT = Redactor.of()


# --------------------------------------------------------------------------------------
# The precedence table: the one place that says which source wins for each setting.
# Layers are named; the resolver takes the first layer, in the order given, that has a value.

CLI, ENV, FILE, PROFILE, DEFAULT = "cli", "env", "file", "profile", "default"

PRECEDENCE: tuple[tuple[str, tuple[str, ...]], ...] = (
    # top level: command line > environment > config file > built-in default
    ("record_mode", (CLI, ENV, FILE, DEFAULT)),
    ("budget_usd", (CLI, ENV, FILE, DEFAULT)),
    ("report", (CLI, ENV, FILE, DEFAULT)),
    ("cassette_dir", (CLI, ENV, FILE, DEFAULT)),
    # one endpoint: the `env` endpoint reads the environment, configured ones the file;
    # `profile` falls back to what the image model implies, then the built-in defaults.
    # The `cli` endpoint takes base_url and the models from the command line, then from the
    # OPENAI_* variables; IMAGEGEN_TIMEOUT_S & co. override every endpoint's file values.
    ("endpoint.base_url", (CLI, ENV, FILE, DEFAULT)),
    ("endpoint.api_key_env", (ENV, FILE, DEFAULT)),
    ("endpoint.image_model", (CLI, ENV, FILE, DEFAULT)),
    ("endpoint.chat_model", (CLI, ENV, FILE, DEFAULT)),
    ("endpoint.chat_images", (FILE, DEFAULT)),
    ("endpoint.profile", (FILE, PROFILE)),
    ("endpoint.timeout_s", (ENV, FILE, DEFAULT)),
    ("endpoint.deadline_s", (ENV, FILE, DEFAULT)),
    ("endpoint.max_retries", (ENV, FILE, DEFAULT)),
    ("endpoint.max_response_mb", (FILE, DEFAULT)),
    ("endpoint.fallback", (ENV, FILE, DEFAULT)),
    ("endpoint.headers", (FILE, DEFAULT)),
    ("endpoint.upstream", (FILE,)),
    ("endpoint.api_version", (FILE,)),
    ("endpoint.deployments", (FILE, DEFAULT)),
    # a custom profile: what the file overrides, else the parent profile's value
    *((f"profile.{key}", (FILE, PROFILE)) for key in SETTABLE),
)

# A layer maps a key to (value, source label); a callable entry is asked with the values
# resolved so far (so `profile` can follow the resolved `image_model`) and may return None.
_MISSING = object()


def resolve(
    scope: str, layers: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Apply :data:`PRECEDENCE` for one scope (``""``, ``"endpoint"`` or ``"profile"``).

    Returns ``(values, sources)`` keyed by the bare setting name. Keys no layer sets are left
    out, so callers can tell "not configured" from a configured value.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    prefix = f"{scope}." if scope else ""
    for key, order in PRECEDENCE:
        if scope and not key.startswith(prefix):
            continue
        if not scope and "." in key:
            continue
        name = key[len(prefix) :]
        for layer in order:
            hit = layers.get(layer, {}).get(name, _MISSING)
            if callable(hit):
                hit = hit(values)
            if hit is _MISSING or hit is None:
                continue
            values[name], sources[name] = hit
            break
    return values, sources


# --------------------------------------------------------------------------------------
# The file model (`extra="forbid"` everywhere; strict, since TOML values are typed)


class _FileModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FallbackStep(_FileModel):
    """One fallback step: `images.generate` parameters that override the request's."""

    quality: str | None = None
    size: str | None = None
    model: str | None = None
    n: int | None = Field(default=None, ge=1)
    output_format: str | None = None
    background: str | None = None
    moderation: str | None = None
    style: str | None = None
    response_format: str | None = None


class UpstreamConfig(_FileModel):
    """``upstream = {...}`` of an endpoint: the reference server behind a gateway.

    ``listen = "127.0.0.1:18099"`` (started by the plugin) or ``url = "http://ref:8000/v1"``
    with ``admin_key_env`` (started elsewhere); ``api_key_env`` names the variable holding
    the key the gateway sends upstream; ``model_map`` maps a client model to the upstream one.
    """

    listen: str | None = None
    url: str | None = None
    api_key_env: str | None = None
    admin_key_env: str | None = None
    model_map: dict[str, str] | None = None

    @field_validator("api_key_env", "admin_key_env")
    @classmethod
    def _check_env_name(cls, value: str) -> str:
        if not _ENV_VAR_RE.fullmatch(value):
            raise ValueError(
                f'must be the NAME of an environment variable (such as "UPSTREAM_KEY"), got '
                f"{value!r}"
            )
        return value

    @field_validator("model_map")
    @classmethod
    def _check_model_map(cls, value: dict[str, str]) -> dict[str, str]:
        for client, upstream in value.items():
            if not client.strip() or not upstream.strip():
                raise ValueError(
                    'model names must not be empty, e.g. model_map = { "gpt-image-1" = '
                    '"gpt-image-1.5" }'
                )
        return value


class EndpointConfig(_FileModel):
    """One ``[[tool.imagegen.endpoints]]`` table."""

    name: str
    base_url: str | None = None
    api_key_env: str | None = None
    image_model: str
    chat_model: str | None = None
    chat_images: Literal["responses"] | None = None
    profile: str | None = None
    timeout_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    deadline_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    max_retries: int | None = Field(default=None, ge=0, le=10)
    max_response_mb: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    fallback: list[FallbackStep] | None = None
    headers: dict[str, str] | None = None
    upstream: UpstreamConfig | None = None
    api_version: str | None = None
    deployments: dict[str, str] | None = None

    @field_validator("api_version")
    @classmethod
    def _check_api_version(cls, value: str) -> str:
        if not _API_VERSION_RE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an Azure OpenAI API version; use the dated version your "
                'resource supports, such as api_version = "2025-04-01-preview"'
            )
        return value

    @field_validator("deployments")
    @classmethod
    def _check_deployments(cls, value: dict[str, str]) -> dict[str, str]:
        for model, deployment in value.items():
            if not model.strip():
                raise ValueError("model names must not be empty")
            if not _DEPLOYMENT_RE.fullmatch(deployment):
                raise ValueError(
                    f"{deployment!r} (for {model!r}) is not an Azure deployment name: 2 to 64 "
                    "letters, digits, '-', '_' or '.', as shown in the Azure portal"
                )
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME_RE.fullmatch(value):
            suggestion = re.sub(r"[^a-z0-9_-]+", "-", value.lower()).strip("-") or "relay"
            raise ValueError(
                f"name {value!r} must match [a-z0-9_-]+ (lower-case letters, digits, '_' "
                f"and '-'; it appears in test ids and cassette paths); try name = "
                f'"{suggestion}"'
            )
        if value == REFERENCE_ENDPOINT_NAME:
            raise ValueError(
                f"name {value!r} is reserved for the built-in reference endpoint; "
                'pick another name, e.g. name = "local"'
            )
        return value

    @field_validator("api_key_env")
    @classmethod
    def _check_env_name(cls, value: str) -> str:
        if not _ENV_VAR_RE.fullmatch(value):
            raise ValueError(
                f"api_key_env must be the NAME of an environment variable (such as "
                f'"RELAY_API_KEY"), got {value!r}'
            )
        return value

    @field_validator("image_model", "chat_model", "profile")
    @classmethod
    def _check_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _HEADER_NAME_RE.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
        return value


class ReferenceConfig(_FileModel):
    """``[tool.imagegen.reference]``: how the embedded reference server behaves.

    The values are checked by the plugin when it starts the server.
    """

    latency: float | str | dict[str, float] | None = None  # seconds, or per quality
    defects: list[str] | None = None  # deliberate misbehaviours (suite-strength tests)


class RatingsConfig(_FileModel):
    """``[tool.imagegen.ratings]``: the thresholds of the report's three ratings
    (:mod:`pytest_imagegen.ratings`), four each: excellent, good, acceptable, poor."""

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)

    response_time_s: list[float] | None = None
    success_rate: list[float] | None = None
    cost_per_image_usd: list[float] | None = None


class FileConfig(_FileModel):
    """The ``[tool.imagegen]`` table (or the top level of a file given by --imagegen-config)."""

    cassette_dir: str | None = None
    record_mode: Literal["none", "once", "new_episodes", "all"] | None = None
    budget_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    report: str | None = None
    endpoints: list[EndpointConfig] | None = None
    # Each table is checked by the profiles module, which also builds it: one validation.
    profiles: dict[str, dict[str, Any]] | None = None
    reference: ReferenceConfig | None = None
    ratings: RatingsConfig | None = None


# --------------------------------------------------------------------------------------
# The environment model (a pydantic model validated from the mapping the caller passes in)


class EnvironmentSettings(BaseModel):
    """The variables pytest-imagegen reads (names are case-sensitive, blank = unset)."""

    # Validated from the mapping given to load_settings (never os.environ): the variable
    # names are the aliases; fields without one are set by name.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    openai_base_url: str | None = Field(default=None, alias="OPENAI_BASE_URL")
    openai_api_key_set: bool = False  # the key itself is read later by name, never stored here
    openai_image_model: str | None = Field(default=None, alias="OPENAI_IMAGE_MODEL")
    openai_chat_model: str | None = Field(default=None, alias="OPENAI_CHAT_MODEL")
    openai_model: str | None = Field(default=None, alias="OPENAI_MODEL")
    imagegen_record_mode: Literal["none", "once", "new_episodes", "all"] | None = Field(
        default=None, alias="IMAGEGEN_RECORD_MODE"
    )
    imagegen_budget_usd: float | None = Field(
        default=None, ge=0, allow_inf_nan=False, alias="IMAGEGEN_BUDGET_USD"
    )
    imagegen_report: str | None = Field(default=None, alias="IMAGEGEN_REPORT")
    imagegen_cassette_dir: str | None = Field(default=None, alias="IMAGEGEN_CASSETTE_DIR")
    imagegen_timeout_s: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, alias="IMAGEGEN_TIMEOUT_S"
    )
    imagegen_deadline_s: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, alias="IMAGEGEN_DEADLINE_S"
    )
    imagegen_max_retries: int | None = Field(
        default=None, ge=0, le=10, alias="IMAGEGEN_MAX_RETRIES"
    )
    # JSON text, parsed by `_env_fallback` (pydantic's own JSON errors are unclear).
    imagegen_fallback: str | None = Field(default=None, alias="IMAGEGEN_FALLBACK")

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> EnvironmentSettings:
        """Read the settings from ``env`` (raises ConfigError naming the variable)."""
        names = {field.alias for field in cls.model_fields.values() if field.alias}
        # Blank values count as unset: `export OPENAI_MODEL=` is how people clear a variable.
        values: dict[str, Any] = {
            name: value.strip()
            for name, value in env.items()
            if name in names and value and value.strip()
        }
        key = env.get(DEFAULT_OPENAI_KEY_ENV, "")
        values["openai_api_key_set"] = bool(key and key.strip())
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(_env_errors(exc, env)) from None


_ENV_HINTS = {
    "IMAGEGEN_RECORD_MODE": "set it to one of: " + ", ".join(RECORD_MODES),
    "IMAGEGEN_BUDGET_USD": "set it to the spend cap in USD, a number >= 0 such as 1.00",
    "IMAGEGEN_TIMEOUT_S": "set it to the seconds one attempt may take, a number > 0 such as 55",
    "IMAGEGEN_DEADLINE_S": "set it to the seconds a whole request (every fallback step) may "
    "take, a number > 0 such as 60 (your platform's function limit)",
    "IMAGEGEN_MAX_RETRIES": "set it to the SDK retries per attempt, a whole number 0..10 (0 is "
    "usual: the fallback chain does the retrying)",
}


def _env_errors(exc: ValidationError, env: Mapping[str, str]) -> str:
    lines = []
    for err in exc.errors():
        var = str(err["loc"][0]) if err["loc"] else "?"
        shown = (env.get(var) or "").strip()
        hint = _ENV_HINTS.get(var, "fix or unset it")
        lines.append(f"environment variable {var}={shown!r}: {err['msg']}; {hint}.")
    return _join(lines, "Invalid environment:")


_FALLBACK_EXAMPLE = (
    """IMAGEGEN_FALLBACK='[{"quality": "low"}, {"quality": "low", "size": "1024x1024"}]'"""
)


def _env_fallback(text: str) -> tuple[dict[str, Any], ...]:
    """``IMAGEGEN_FALLBACK``: a JSON list of override objects, checked like the file's."""
    import json

    from pydantic import TypeAdapter

    var = ENV_ENDPOINT_SETTINGS["fallback"]
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(
            f"environment variable {var} is not valid JSON ({exc}). Give a JSON list of "
            f"parameter overrides, e.g. {_FALLBACK_EXAMPLE}, or unset it."
        ) from None
    if isinstance(data, dict):
        data = [data]  # one step written without the list
    if not isinstance(data, list):
        raise ConfigError(
            f"environment variable {var} must be a JSON list of objects, got a JSON "
            f"{type(data).__name__}; e.g. {_FALLBACK_EXAMPLE}."
        )
    try:
        steps = TypeAdapter(list[FallbackStep]).validate_python(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = err["loc"]
            where = f"{var}[{loc[0]}]" if loc else var
            if err["type"] == "extra_forbidden" and len(loc) >= 2:
                key = str(loc[-1])
                lines.append(
                    f"{where}: unknown key {key!r}.{did_you_mean(key, FALLBACK_KEYS)} Valid keys: "
                    f"{', '.join(FALLBACK_KEYS)}."
                )
            else:
                field_name = f".{loc[-1]}" if len(loc) >= 2 else ""
                msg = str(err["msg"]).removeprefix("Value error, ")
                lines.append(f"{where}{field_name} = {err.get('input')!r}: {msg}.")
        raise ConfigError(
            _join(lines, f"Invalid environment variable {var}:") + f" E.g. {_FALLBACK_EXAMPLE}."
        ) from None
    return tuple(step.model_dump(exclude_none=True) for step in steps)


def _env_endpoint_layer(envs: EnvironmentSettings) -> dict[str, tuple[Any, str]]:
    """What the IMAGEGEN_* endpoint variables set, with their sources."""
    layer: dict[str, tuple[Any, str]] = {}
    for key, value in (
        ("timeout_s", envs.imagegen_timeout_s),
        ("deadline_s", envs.imagegen_deadline_s),
        ("max_retries", envs.imagegen_max_retries),
    ):
        if value is not None:
            layer[key] = (value, f"{SOURCE_ENV} {ENV_ENDPOINT_SETTINGS[key]}")
    if envs.imagegen_fallback is not None:
        var = ENV_ENDPOINT_SETTINGS["fallback"]
        layer["fallback"] = (_env_fallback(envs.imagegen_fallback), f"{SOURCE_ENV} {var}")
    return layer


# --------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True)
class Settings:
    """The resolved configuration of one run."""

    cassette_dir: Path
    record_mode: str
    budget_usd: float
    report: Path | None
    endpoints: tuple[Endpoint, ...]
    selected: tuple[str, ...]
    config_file: Path | None
    sources: Mapping[str, str]
    custom_profiles: Mapping[str, Profile] = field(default_factory=dict)
    # ``[tool.imagegen.reference]`` keys that were set (``latency``, ``defects``), or None.
    reference: Mapping[str, Any] | None = None
    # The report's rating thresholds, by ``pytest_imagegen.ratings`` key (defaults filled in).
    ratings: Mapping[str, tuple[float, ...]] = field(
        default_factory=lambda: dict(DEFAULT_THRESHOLDS)
    )

    def selected_endpoints(self) -> tuple[Endpoint, ...]:
        """The endpoints picked with --imagegen-endpoint (all of them when none was)."""
        if not self.selected:
            return self.endpoints
        return tuple(e for e in self.endpoints if e.name in self.selected)

    def endpoint(self, name: str) -> Endpoint:
        """The endpoint called ``name`` (ConfigError listing the known names otherwise)."""
        for endpoint in self.endpoints:
            if endpoint.name == name:
                return endpoint
        raise ConfigError(_unknown_endpoint_message([name], [e.name for e in self.endpoints]))

    def check_outputs(self) -> None:
        """ConfigError, before any request, when the run could not write what it will write:
        the report, and the cassette folder when recording."""
        from pytest_imagegen._files import write_problem

        problems = []
        if self.report is not None:
            why = write_problem(self.report, directory=False)
            if why is not None:
                where = _output_name("report", self.sources.get("report", ""))
                problems.append(
                    f"{where} = {self.report}: {why}. Give a file path in a writable folder "
                    f"(e.g. imagegen-report.json, or .html for the HTML report)."
                )
        if self.record_mode in LIVE_RECORD_MODES:
            why = write_problem(self.cassette_dir, directory=True)
            if why is not None:
                where = _output_name("cassette_dir", self.sources.get("cassette_dir", ""))
                problems.append(
                    f"{where} = {self.cassette_dir}: record mode {self.record_mode!r} writes "
                    f"cassettes there, but {why}. Point cassette_dir at a writable folder, or "
                    f"replay with --imagegen-record-mode=none."
                )
        if problems:
            raise ConfigError(" ".join(problems) + " Nothing was sent.")

    def describe(self) -> list[tuple[str, str, str]]:
        """``(key, value, source)`` rows for the report header; secrets are never shown."""
        src = self.sources
        rows: list[tuple[str, str, str]] = [
            (
                "config_file",
                str(self.config_file) if self.config_file else "(none)",
                src.get("config_file", SOURCE_DEFAULT),
            ),
            ("record_mode", self.record_mode, src.get("record_mode", SOURCE_DEFAULT)),
            ("budget_usd", f"{self.budget_usd:.2f}", src.get("budget_usd", SOURCE_DEFAULT)),
            (
                "report",
                str(self.report) if self.report else "(none)",
                src.get("report", SOURCE_DEFAULT),
            ),
            ("cassette_dir", str(self.cassette_dir), src.get("cassette_dir", SOURCE_DEFAULT)),
            (
                "selected",
                ", ".join(self.selected) if self.selected else "(all)",
                src.get("selected", SOURCE_DEFAULT),
            ),
        ]
        for name, profile in self.custom_profiles.items():
            prefix = f"profiles.{name}"
            rows.append((f"{prefix}.parent", str(profile.parent), SOURCE_FILE))
            for key, source in sorted(src.items()):
                if key.startswith(prefix + ".") and source == SOURCE_FILE:
                    attr = key[len(prefix) + 1 :]
                    if attr != "parent":
                        rows.append((key, _show(getattr(profile, attr, None)), source))
        for key, values in self.ratings.items():
            rows.append(
                (
                    f"ratings.{key}",
                    describe_thresholds(key, values),
                    src.get(f"ratings.{key}", SOURCE_DEFAULT),
                )
            )
        for ep in self.endpoints:
            rows.extend(_describe_endpoint(ep))
        return rows


def _describe_endpoint(ep: Endpoint) -> list[tuple[str, str, str]]:
    p = f"endpoints.{ep.name}"
    s = ep.sources

    def row(key: str, value: str) -> tuple[str, str, str]:
        return (f"{p}.{key}", value, s.get(key, SOURCE_DEFAULT))

    if ep.is_reference:
        key_text = "built-in (reference server)"
    elif ep.api_key_env is None:
        key_text = "not needed"
    elif ep.api_key:
        key_text = f"set via {ep.api_key_env}"
    else:
        key_text = f"missing ({ep.api_key_env} is not set)"
    key_source = f"{SOURCE_ENV} {ep.api_key_env}" if ep.api_key_env else SOURCE_DEFAULT
    rows = [
        row("base_url", _mask_url(ep.base_url) if ep.base_url else "(started for the session)"),
        row("image_model", ep.image_model),
        row("profile", ep.profile.name),
        row("chat_model", ep.chat_model or "(none)"),
        row("chat_images", ep.chat_images or "(none)"),
        (f"{p}.api_key", key_text, key_source),
        row("timeout_s", _show(ep.timeout_s)),
        row("deadline_s", _show(ep.deadline_s)),
        row("max_retries", str(ep.max_retries)),
        row(
            "max_response_mb",
            _show(ep.max_response_bytes / 1e6)
            if ep.max_response_bytes is not None
            else f"(from the profile: {ep.response_cap() / 1e6:.1f})",
        ),
        row("fallback", _show_fallback(ep.fallback)),
    ]
    if ep.headers:
        # Header values are treated like keys: only their names are shown.
        rows.append(row("headers", ", ".join(f"{k}: ***" for k in ep.headers)))
    if ep.upstream is not None:
        rows.append(row("upstream", ep.upstream.describe()))
    if ep.api_version is not None:
        rows.append(row("api_version", ep.api_version))
        used = [ep.image_model, *([ep.chat_model] if ep.chat_model else [])]
        used += [str(step["model"]) for step in ep.fallback if step.get("model")]
        shown = ", ".join(f"{m} -> {ep.deployment(m)}" for m in dict.fromkeys(used))
        rows.append(row("deployments", shown))
    return rows


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (tuple, list)):
        return ", ".join(str(v) for v in value) or "(none)"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_show(v)}" for k, v in value.items()) or "(none)"
    return str(value)


def _show_fallback(steps: Sequence[Mapping[str, Any]]) -> str:
    if not steps:
        return "(none)"
    return " -> ".join("{" + " ".join(f"{k}={v}" for k, v in s.items()) + "}" for s in steps)


# --------------------------------------------------------------------------------------
# Message helpers


def _join(lines: Sequence[str], header: str) -> str:
    if len(lines) == 1:
        return lines[0]
    return header + "\n" + "\n".join(f"  - {line}" for line in lines)


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """`` Did you mean 'x'?`` for the nearest of ``choices``, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not close:
        close = [c for c in choices if c.lower() == word.lower()]
    return f" Did you mean {close[0]!r}?" if close else ""


def _unknown_endpoint_message(unknown: Sequence[str], known: Sequence[str]) -> str:
    parts = []
    for name in unknown:
        parts.append(f"--imagegen-endpoint {name}: no endpoint is called {name!r}.")
        parts[-1] += did_you_mean(name, known)
    known_text = ", ".join(known) if known else "(none)"
    return " ".join(parts) + (
        f" Known endpoints: {known_text}. Pass one of these names, or add the endpoint to "
        "[[tool.imagegen.endpoints]]."
    )


def _mask_url(url: str) -> str:
    """``url`` with any user-info, credential-named query values and key-shaped text
    replaced by ``***``."""
    try:
        urlsplit(url)
    except ValueError:
        return "(unparseable URL)"
    return _REDACT.message(_REDACT.url(url))


def _is_secret_name(name: str) -> bool:
    return is_secret_name(name)


def _url_problem(url: str, key_fix: str) -> str | None:
    """Why ``url`` cannot be a base URL (None when it can); never echoes a credential.

    ``key_fix`` says where the key belongs instead (for a URL that carries one).
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return f"{_mask_url(url)!r} is not a valid URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return (
            f"{_mask_url(url)!r} is not an http(s) URL; use the API root, such as "
            f'"https://relay.example.com/v1"'
        )
    if parts.username is not None or parts.password is not None:
        return f"{_mask_url(url)!r} carries credentials in the URL; remove them and {key_fix}"
    if looks_like_key(url):
        return f"{_mask_url(url)!r} holds what looks like an API key; remove it and {key_fix}"
    for key, _value in parse_qsl(parts.query, keep_blank_values=True):
        if _is_secret_name(key):
            return (
                f"{_mask_url(url)!r} carries a credential in its query string ({key}=...); "
                f"remove it and {key_fix}"
            )
    return None


# --------------------------------------------------------------------------------------
# Reading the file


@dataclass(frozen=True)
class _Source:
    """The file being read and the table prefix its keys live under (for messages)."""

    path: Path
    prefix: str  # "tool.imagegen" or "" (keys at top level)

    def table(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    @property
    def root_table(self) -> str:
        return f"[{self.prefix}]" if self.prefix else "the top level"


def _read_toml(path: Path, *, what: str) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{what}: {path} does not exist. Check the path (relative paths are taken from "
            "pytest's rootdir) or drop the option to use [tool.imagegen] in pyproject.toml."
        ) from None
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror or exc}.") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8."
        ) from None
    try:
        document: dict[str, Any] = tomllib.loads(text)
        return document
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message ends with "(at line N, column M)"; the offending line
        # itself is not quoted, since it may hold a pasted key.
        raise ConfigError(
            f"{path}: invalid TOML: {exc}. Fix the syntax there (see https://toml.io)."
        ) from None


def _locate(*, rootdir: Path, explicit: Path | None) -> tuple[_Source | None, Any]:
    """Find and read the configuration: ``(source, table)`` or ``(None, None)``."""
    if explicit is not None:
        path = explicit if explicit.is_absolute() else rootdir / explicit
        doc = _read_toml(path, what="--imagegen-config")
        tool = doc.get("tool")
        if isinstance(tool, dict) and "imagegen" in tool:
            table = tool["imagegen"]
            src = _Source(path, "tool.imagegen")
        elif isinstance(tool, dict) or "project" in doc or "build-system" in doc:
            raise ConfigError(
                f"--imagegen-config: {path} has no [tool.imagegen] table. Add one, or write "
                "the settings at the top level of a file of their own."
            )
        else:
            table, src = doc, _Source(path, "")
    else:
        path = rootdir / "pyproject.toml"
        if not path.is_file():
            return None, None
        doc = _read_toml(path, what="pyproject.toml")
        tool = doc.get("tool")
        if not isinstance(tool, dict) or "imagegen" not in tool:
            return None, None
        table, src = tool["imagegen"], _Source(path, "tool.imagegen")
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {src.root_table} must be a table of settings.")
    return src, table


def _check_no_secrets(table: Mapping[str, Any], src: _Source) -> None:
    """Refuse any value that looks like a credential, wherever it sits in the file."""
    found: list[str] = []

    def walk(node: Any, loc: tuple[str | int, ...]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                sub = (*loc, key)
                if _is_secret_name(str(key)) and not isinstance(value, (dict, list)):
                    found.append(f"{_loc_text(sub, table, src)} is a credential")
                elif isinstance(value, str) and looks_like_key(value):
                    found.append(f"{_loc_text(sub, table, src)} holds what looks like an API key")
                else:
                    walk(value, sub)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if isinstance(value, str) and looks_like_key(value):
                    found.append(
                        f"{_loc_text((*loc, i), table, src)} holds what looks like an API key"
                    )
                else:
                    walk(value, (*loc, i))

    walk(table, ())
    if found:
        raise ConfigError(
            f"{src.path}: {'; '.join(found)}. A key never sits in a file: put the NAME of an "
            'environment variable in api_key_env (e.g. api_key_env = "RELAY_API_KEY" in '
            f"[[{src.table('endpoints')}]]) and export the key in that variable. If the key "
            "was ever committed, revoke it."
        )


def _loc_text(loc: Sequence[str | int], table: Mapping[str, Any], src: _Source) -> str:
    """``endpoints[0].image_model ([[tool.imagegen.endpoints]] name = "relay")``."""
    dotted = ""
    for part in loc:
        dotted += f"[{part}]" if isinstance(part, int) else (f".{part}" if dotted else str(part))
    if not dotted:
        return src.root_table
    where = ""
    if len(loc) >= 2 and loc[0] == "endpoints" and isinstance(loc[1], int):
        items = table.get("endpoints")
        name = None
        if isinstance(items, list) and loc[1] < len(items) and isinstance(items[loc[1]], dict):
            name = items[loc[1]].get("name")
        shown = isinstance(name, str) and not looks_like_key(name)
        label = f' name = "{name}"' if shown else f" #{loc[1] + 1}"
        where = f" ([[{src.table('endpoints')}]]{label})"
    elif len(loc) >= 2 and loc[0] == "profiles":
        where = f" ([{src.table('profiles')}.{loc[1]}])"
    return dotted + where


def _allowed_keys(loc: Sequence[str | int]) -> tuple[str, ...]:
    """The keys valid in the table that holds the last element of ``loc``."""
    parent = [p for p in loc[:-1] if not isinstance(p, int)]
    if not parent:
        return tuple(FileConfig.model_fields)
    if parent[0] == "endpoints":
        if len(parent) >= 2 and parent[1] == "fallback":
            return FALLBACK_KEYS
        if len(parent) >= 2 and parent[1] == "upstream":
            return tuple(UpstreamConfig.model_fields)
        return tuple(EndpointConfig.model_fields)
    if parent[0] == "reference":
        return tuple(ReferenceConfig.model_fields)
    return ()


_FIELD_HINTS = {
    "max_retries": "SDK retries per attempt, 0..10; the fallback chain does the retrying, so 0 "
    "is usual",
    "timeout_s": "seconds one attempt may take, a number > 0",
    "max_response_mb": "the largest response body read, in MB (1 MB = 10^6 bytes), a number > 0",
    "deadline_s": "seconds the whole request (all fallback steps) may take, a number > 0",
    "budget_usd": "the spend cap of one live run in USD, a number >= 0",
    "record_mode": "one of " + ", ".join(RECORD_MODES),
    "endpoints": "write each endpoint as its own [[tool.imagegen.endpoints]] table, with "
    "double brackets",
    "fallback": 'a list of override tables, e.g. fallback = [{ quality = "low" }]',
    "headers": 'a table of header names to text values, e.g. headers = { "X-Team" = "imaging" }',
    "upstream": 'a table, e.g. upstream = { listen = "127.0.0.1:18099", api_key_env = '
    '"UPSTREAM_KEY" }',
}


def _unknown_key(where: str, key: str, allowed: Sequence[str], note: str = "") -> str:
    """The line for a key its table does not take: the nearest valid key, then all of them."""
    return (
        f"{where}: unknown key {key!r}.{did_you_mean(key, allowed)}{note} "
        f"Valid keys here: {', '.join(allowed)}."
    )


def _validation_errors(exc: ValidationError, table: Mapping[str, Any], src: _Source) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = _loc_text(loc, table, src)
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            note = ""
            if not [p for p in loc[:-1] if not isinstance(p, int)] and key in (
                EndpointConfig.model_fields
            ):
                note = f" ({key!r} belongs in a [[{src.table('endpoints')}]] table.)"
            line = _unknown_key(where, key, _allowed_keys(loc), note)
        elif err["type"] == "missing":
            line = f"{where}: required key missing; add it."
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            shown = ""
            plain = not isinstance(err.get("input"), (dict, list))
            if "headers" not in loc and plain and err["type"] != "value_error":
                shown = f" = {err.get('input')!r}"
            hint = _FIELD_HINTS.get(str(loc[-1]) if loc else "", "")
            line = f"{where}{shown}: {msg}" + (f" ({hint})" if hint else "") + "."
        lines.append(line)
    return _join(
        [f"{src.path}: {line}" for line in lines], "Invalid pytest-imagegen configuration:"
    )


# --------------------------------------------------------------------------------------
# Loading


class _Problems:
    """Collected configuration problems; raised together so one run shows all of them."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.separation = False

    def add(self, message: str, *, separation: bool = False) -> None:
        self.lines.append(message)
        self.separation = self.separation or separation

    def raise_if_any(self) -> None:
        if not self.lines:
            return
        cls = ModelSeparationError if self.separation else ConfigError
        raise cls(_join(self.lines, "Invalid pytest-imagegen configuration:"))


@dataclass
class _EndpointDraft:
    """An endpoint's layers before resolution, plus how to name its keys in messages."""

    name: str
    layers: dict[str, dict[str, Any]]
    label: Callable[[str], str]  # key -> where it is set, e.g. "OPENAI_MODEL"
    explicit_profile: bool = False
    is_reference: bool = False
    in_file: bool = False


def load_settings(
    *,
    cli: Mapping[str, Any],
    env: Mapping[str, str],
    rootdir: Path,
    config_path: Path | None = None,
) -> Settings:
    """Resolve the configuration: command line > environment > config file > defaults.

    ``cli`` keys (None = not given): ``record_mode``, ``budget_usd``, ``report``,
    ``endpoints`` (list of names), ``config``, and ``base_url`` / ``image_model`` /
    ``chat_model`` (which define a one-off endpoint named ``cli``, the one selected unless
    ``endpoints`` names others). ``env`` is the environment to read (pass
    ``os.environ``). ``config_path`` (e.g. the ``imagegen_config`` ini value, or
    ``--imagegen-config`` made absolute) wins over ``cli["config"]``; relative paths, here
    and in the settings, are taken from ``rootdir``. Raises :class:`ConfigError` /
    :class:`ModelSeparationError` with a message that names the file, key or variable and
    says what to do.
    """
    rootdir = Path(rootdir).absolute()
    cli_layer = _cli_layer(cli)
    envs = EnvironmentSettings.from_mapping(env)

    explicit = config_path if config_path is not None else cli.get("config")
    src, table = _locate(rootdir=rootdir, explicit=Path(explicit) if explicit else None)
    file_cfg = FileConfig()
    if src is not None and table is not None:
        _check_no_secrets(table, src)
        try:
            file_cfg = FileConfig.model_validate(table)
        except ValidationError as exc:
            raise ConfigError(_validation_errors(exc, table, src)) from None

    problems = _Problems()
    custom, custom_sources = _custom_profiles(file_cfg, src, problems)
    ratings, ratings_sources = _ratings(file_cfg, src, problems)
    problems.raise_if_any()

    # ---- top-level settings
    env_layer = {
        "record_mode": _env_hit(envs.imagegen_record_mode, "IMAGEGEN_RECORD_MODE"),
        "budget_usd": _env_hit(envs.imagegen_budget_usd, "IMAGEGEN_BUDGET_USD"),
        "report": _env_hit(envs.imagegen_report, "IMAGEGEN_REPORT"),
        "cassette_dir": _env_hit(envs.imagegen_cassette_dir, "IMAGEGEN_CASSETTE_DIR"),
    }
    file_layer = {
        key: (getattr(file_cfg, key), SOURCE_FILE)
        for key in ("record_mode", "budget_usd", "report", "cassette_dir")
        if getattr(file_cfg, key) is not None
    }
    default_layer = {
        "record_mode": ("none", SOURCE_DEFAULT),
        "budget_usd": (1.0, SOURCE_DEFAULT),
        "cassette_dir": ("cassettes", SOURCE_DEFAULT),
    }
    top, sources = resolve(
        "", {CLI: cli_layer, ENV: env_layer, FILE: file_layer, DEFAULT: default_layer}
    )
    record_mode = top["record_mode"]
    if src is not None:
        if cli.get("config"):
            sources["config_file"] = SOURCE_CLI
        elif config_path is not None:
            sources["config_file"] = "ini imagegen_config"
        else:
            sources["config_file"] = SOURCE_DEFAULT

    # ---- endpoints
    env_endpoint_layer = _env_endpoint_layer(envs)
    cli_endpoint_layer = _cli_endpoint_layer(cli)
    drafts: list[_EndpointDraft] = []
    if file_cfg.endpoints:
        assert src is not None and table is not None
        drafts = [
            _file_draft(i, ep, src, table, env_endpoint_layer)
            for i, ep in enumerate(file_cfg.endpoints)
        ]
        seen: dict[str, int] = {}
        for i, ep in enumerate(file_cfg.endpoints):
            if ep.name in seen:
                problems.add(
                    f"{src.path}: endpoints[{seen[ep.name]}] and endpoints[{i}] are both named "
                    f"{ep.name!r}; endpoint names must be unique (they name test ids and "
                    "cassette folders). Rename one."
                )
            seen.setdefault(ep.name, i)
        if cli_endpoint_layer and CLI_ENDPOINT_NAME in seen:
            problems.add(
                f"{src.path}: endpoints[{seen[CLI_ENDPOINT_NAME]}] is named "
                f"{CLI_ENDPOINT_NAME!r}, the name of the endpoint the command-line options "
                f"({', '.join(CLI_ENDPOINT_OPTIONS.values())}) define; rename it in the file."
            )
    if cli_endpoint_layer:
        drafts.append(_env_draft(envs, problems, env_endpoint_layer, cli_endpoint_layer))
    elif drafts:
        pass
    elif any(_env_set(env, var) for var in ENV_ENDPOINT_VARS):
        drafts = [_env_draft(envs, problems, env_endpoint_layer)]
    else:
        drafts = [_reference_draft()]
    problems.raise_if_any()

    endpoints: list[Endpoint] = []
    for draft in drafts:
        endpoint = _resolve_endpoint(draft, custom, problems)
        if endpoint is not None:
            endpoints.append(endpoint)
    problems.raise_if_any()

    # ---- selection and keys
    names = [e.name for e in endpoints]
    selected = tuple(dict.fromkeys(cli.get("endpoints") or ()))
    unknown = [n for n in selected if n not in names]
    if unknown:
        raise ConfigError(_unknown_endpoint_message(unknown, names))
    if not selected and cli_endpoint_layer:
        selected = (CLI_ENDPOINT_NAME,)  # a one-off run: the configured endpoints stay out
    if selected:
        sources["selected"] = SOURCE_CLI
    final: list[Endpoint] = []
    for endpoint in endpoints:
        needed = not selected or endpoint.name in selected
        endpoint = _attach_key(endpoint, env, record_mode, needed, problems)
        live = record_mode in LIVE_RECORD_MODES or endpoint.is_loopback
        endpoint, upstream_problems = attach_upstream_keys(endpoint, env, needed=needed and live)
        for line in upstream_problems:
            problems.add(line)
        final.append(endpoint)
    problems.raise_if_any()

    for endpoint in final:
        for key, source in endpoint.sources.items():
            sources[f"endpoints.{endpoint.name}.{key}"] = source
    sources.update(custom_sources)
    sources.update(ratings_sources)
    report = top.get("report")
    return Settings(
        cassette_dir=_under(rootdir, top["cassette_dir"]),
        record_mode=record_mode,
        budget_usd=float(top["budget_usd"]),
        report=_under(rootdir, report) if report else None,
        endpoints=tuple(final),
        selected=selected,
        config_file=src.path if src else None,
        sources=sources,
        custom_profiles=custom,
        reference=(
            file_cfg.reference.model_dump(exclude_none=True) if file_cfg.reference else None
        ),
        ratings=ratings,
    )


def _ratings(
    file_cfg: FileConfig, src: _Source | None, problems: _Problems
) -> tuple[dict[str, tuple[float, ...]], dict[str, str]]:
    """The rating thresholds: the file's, checked, over the defaults."""
    ratings = dict(DEFAULT_THRESHOLDS)
    sources: dict[str, str] = {}
    given = file_cfg.ratings.model_dump(exclude_none=True) if file_cfg.ratings else {}
    where = f"[{src.table('ratings')}] in {src.path}" if src is not None else "[ratings]"
    for key, values in given.items():
        problem = threshold_problem(key, values)
        if problem:
            problems.add(f"ratings.{key} ({where}): {problem}")
            continue
        ratings[key] = tuple(float(v) for v in values)
        sources[f"ratings.{key}"] = SOURCE_FILE
    return ratings, sources


def _under(rootdir: Path, value: str | Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else rootdir / path


def _env_set(env: Mapping[str, str], var: str) -> bool:
    value = env.get(var)
    return bool(value and value.strip())


def _env_hit(value: Any, var: str) -> tuple[Any, str] | None:
    return None if value is None else (value, f"{SOURCE_ENV} {var}")


def _cli_layer(cli: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
    layer: dict[str, tuple[Any, str]] = {}
    mode = cli.get("record_mode")
    if mode is not None:
        if mode not in RECORD_MODES:
            raise ConfigError(
                f"--imagegen-record-mode={mode}: not a record mode; use one of "
                + ", ".join(RECORD_MODES)
                + "."
            )
        layer["record_mode"] = (mode, SOURCE_CLI)
    budget = cli.get("budget_usd")
    if budget is not None:
        try:
            value = float(budget)
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ConfigError(
                f"--imagegen-budget={budget}: the budget must be a number of USD >= 0, such as "
                "--imagegen-budget=1.50."
            )
        layer["budget_usd"] = (value, SOURCE_CLI)
    for key in ("report", "cassette_dir"):
        if cli.get(key):
            layer[key] = (cli[key], SOURCE_CLI)
    return layer


def _custom_profiles(
    file_cfg: FileConfig, src: _Source | None, problems: _Problems
) -> tuple[dict[str, Profile], dict[str, str]]:
    """Build the ``[tool.imagegen.profiles.NAME]`` profiles (file overrides > parent's values).

    The values are checked where the library checks them (:func:`make_custom_profile`);
    here only what a file adds: the table's name, its ``parent`` and its keys, named by
    their place in the file.
    """
    built: dict[str, Profile] = {}
    sources: dict[str, str] = {}
    if not file_cfg.profiles or src is None:
        return built, sources
    known = tuple(PROFILES)
    allowed = ("parent", *SETTABLE)
    for name, table in file_cfg.profiles.items():
        where = f"{src.path}: [{src.table('profiles')}.{name}]"
        if not _PROFILE_NAME_RE.fullmatch(name):
            problems.add(f"{where}: profile names must match [a-z0-9_.-]+.")
            continue
        if name in known:
            problems.add(
                f"{where}: {name!r} is a built-in profile; give your profile its own name "
                f'(e.g. "{name}-relay") and set parent = "{name}".'
            )
            continue
        unknown = [key for key in table if key not in allowed]
        for key in unknown:
            place = f"profiles.{name}.{key} ([{src.table('profiles')}.{name}])"
            problems.add(f"{src.path}: " + _unknown_key(place, key, allowed))
        if unknown:
            continue
        parent = table.get("parent", "custom")
        if not isinstance(parent, str) or parent not in known:
            problems.add(
                f"{where}: parent = {parent!r} is not a built-in profile."
                f"{did_you_mean(str(parent), known)} Known profiles: {', '.join(known)}."
            )
            continue
        overrides = {k: v for k, v in table.items() if k != "parent"}
        try:
            profile = make_custom_profile(name, parent=parent, **overrides)
        except ConfigError as exc:
            detail = str(exc.args[0] if exc.args else exc).rstrip(".")
            problems.add(f"{where}: {detail}. Fix the overrides in that table.")
            continue
        file_layer = {k: (v, SOURCE_FILE) for k, v in overrides.items()}
        parent_profile = get_profile(parent)
        parent_layer = {
            k[len("profile.") :]: (
                getattr(parent_profile, k[len("profile.") :], None),
                SOURCE_PROFILE,
            )
            for k, _ in PRECEDENCE
            if k.startswith("profile.")
        }
        _values, value_sources = resolve("profile", {FILE: file_layer, PROFILE: parent_layer})
        built[name] = profile
        sources[f"profiles.{name}.parent"] = SOURCE_FILE
        for key, source in value_sources.items():
            sources[f"profiles.{name}.{key}"] = source
    return built, sources


def _file_draft(
    index: int,
    ep: EndpointConfig,
    src: _Source,
    table: Mapping[str, Any],
    env_layer: Mapping[str, tuple[Any, str]],
) -> _EndpointDraft:
    """Layers of one ``[[tool.imagegen.endpoints]]`` table."""
    values = ep.model_dump(exclude_unset=True)
    if "fallback" in values:
        values["fallback"] = tuple(
            step.model_dump(exclude_unset=True) for step in (ep.fallback or ())
        )
    file_layer = {k: (v, SOURCE_FILE) for k, v in values.items() if k != "name"}

    def label(key: str) -> str:
        return f"{src.path}: " + _loc_text(("endpoints", index, *key.split(".")), table, src)

    # No default api_key_env for third-party hosts: sending the OpenAI key to a relay leaks it.
    def default_key_env(resolved: Mapping[str, Any]) -> tuple[Any, str] | None:
        host = urlsplit(resolved.get("base_url", "")).hostname or ""
        if host == "api.openai.com":
            return (DEFAULT_OPENAI_KEY_ENV, SOURCE_DEFAULT)
        if host.endswith(_AZURE_HOST_SUFFIXES):
            return (DEFAULT_AZURE_KEY_ENV, SOURCE_DEFAULT)  # what the SDK reads for Azure
        return None

    return _EndpointDraft(
        name=ep.name,
        layers={
            ENV: dict(env_layer),
            FILE: file_layer,
            DEFAULT: {**_endpoint_defaults(), "api_key_env": default_key_env},
        },
        label=label,
        explicit_profile=ep.profile is not None,
        in_file=True,
    )


def _endpoint_defaults() -> dict[str, Any]:
    defaults = Endpoint.__dataclass_fields__
    return {
        "base_url": (DEFAULT_BASE_URL, SOURCE_DEFAULT),
        "timeout_s": (defaults["timeout_s"].default, SOURCE_DEFAULT),
        "deadline_s": (defaults["deadline_s"].default, SOURCE_DEFAULT),
        "max_retries": (defaults["max_retries"].default, SOURCE_DEFAULT),
        "max_response_mb": (None, SOURCE_DEFAULT),
        "fallback": ((), SOURCE_DEFAULT),
        "headers": ({}, SOURCE_DEFAULT),
    }


# How to name an output setting in a message, by the source it came from.
_OUTPUT_SOURCES: dict[str, dict[str, str]] = {
    "report": {
        SOURCE_CLI: "--imagegen-report",
        SOURCE_ENV: "IMAGEGEN_REPORT",
        SOURCE_FILE: "report in [tool.imagegen]",
    },
    "cassette_dir": {
        SOURCE_CLI: "--imagegen-cassette-dir",
        SOURCE_ENV: "IMAGEGEN_CASSETTE_DIR",
        SOURCE_FILE: "cassette_dir in [tool.imagegen]",
    },
}


def _output_name(key: str, source: str) -> str:
    for prefix, name in _OUTPUT_SOURCES[key].items():
        if source.startswith(prefix):
            return name
    return key


_OPENAI_MODEL_CHAT = (
    "OPENAI_MODEL={model} is a chat model; set OPENAI_IMAGE_MODEL=gpt-image-1 (or another image "
    "model) for image calls, and keep OPENAI_MODEL for chat"
)


def _env_draft(
    envs: EnvironmentSettings,
    problems: _Problems,
    env_layer: Mapping[str, tuple[Any, str]],
    cli_layer: Mapping[str, tuple[Any, str]] | None = None,
) -> _EndpointDraft:
    """The single ``env`` endpoint from the OPENAI_* variables; with ``cli_layer`` (values
    of --imagegen-base-url & co.), the ``cli`` endpoint, whose options win over them."""
    cli_layer = dict(cli_layer or {})
    layer: dict[str, Any] = {
        "api_key_env": (DEFAULT_OPENAI_KEY_ENV, f"{SOURCE_ENV} {DEFAULT_OPENAI_KEY_ENV}"),
        **env_layer,
    }
    if envs.openai_base_url:
        layer["base_url"] = (envs.openai_base_url, f"{SOURCE_ENV} OPENAI_BASE_URL")
    legacy = envs.openai_model
    legacy_kind = model_kind(legacy) if legacy else None
    if envs.openai_image_model:
        layer["image_model"] = (envs.openai_image_model, f"{SOURCE_ENV} OPENAI_IMAGE_MODEL")
    elif legacy and "image_model" not in cli_layer:
        if legacy_kind == "chat":
            problems.add(
                _OPENAI_MODEL_CHAT.format(model=legacy)
                + ". pytest-imagegen refuses to send image requests to a chat model.",
                separation=True,
            )
        elif legacy_kind == "unknown":
            problems.add(
                f"OPENAI_MODEL={legacy} is neither an image model nor a chat model that "
                "pytest-imagegen knows, so it cannot be used for image calls. Set "
                "OPENAI_IMAGE_MODEL=gpt-image-1 (or another image model), or declare the "
                'endpoint in [[tool.imagegen.endpoints]] with profile = "gpt-image-1" (or '
                "the profile the model follows)."
            )
        else:
            layer["image_model"] = (legacy, f"{SOURCE_ENV} OPENAI_MODEL")
    if envs.openai_chat_model:
        layer["chat_model"] = (envs.openai_chat_model, f"{SOURCE_ENV} OPENAI_CHAT_MODEL")
    elif legacy and legacy_kind == "chat":
        layer["chat_model"] = (legacy, f"{SOURCE_ENV} OPENAI_MODEL")

    unset = {"image_model": "OPENAI_IMAGE_MODEL", "chat_model": "OPENAI_CHAT_MODEL"}
    if cli_layer:
        unset = {k: v for k, v in CLI_ENDPOINT_OPTIONS.items() if k != "base_url"}

    def label(key: str) -> str:
        source = str(cli_layer.get(key, layer.get(key, (None, "")))[1])
        for prefix in (SOURCE_CLI, SOURCE_ENV):
            if source.startswith(f"{prefix} "):
                return source.removeprefix(f"{prefix} ")
        return unset.get(key, key)

    return _EndpointDraft(
        name=CLI_ENDPOINT_NAME if cli_layer else ENV_ENDPOINT_NAME,
        layers={
            CLI: cli_layer,
            ENV: layer,
            DEFAULT: {
                **_endpoint_defaults(),
                "image_model": (DEFAULT_ENV_IMAGE_MODEL, SOURCE_DEFAULT),
            },
        },
        label=label,
    )


def _cli_endpoint_layer(cli: Mapping[str, Any]) -> dict[str, tuple[Any, str]]:
    """The values of --imagegen-base-url / --imagegen-image-model / --imagegen-chat-model."""
    layer: dict[str, tuple[Any, str]] = {}
    for key, option in CLI_ENDPOINT_OPTIONS.items():
        value = cli.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(
                f"{option}: give a value, e.g. {option}="
                + ("https://relay.example.com/v1" if key == "base_url" else "gpt-image-1")
                + "."
            )
        layer[key] = (value.strip(), f"{SOURCE_CLI} {option}")
    return layer


def reference_endpoint_values() -> dict[str, Any]:
    """The embedded reference endpoint's settings (base_url is filled in by the plugin)."""
    return {
        "base_url": "",
        "image_model": "gpt-image-1.5",
        "chat_model": "gpt-4o-mini",
        "chat_images": "responses",
        "timeout_s": 2.0,
        "deadline_s": 10.0,
        "max_retries": 0,
        "fallback": ({"quality": "medium"}, {"quality": "low", "size": "1024x1024"}),
        "headers": {},
    }


def _reference_draft() -> _EndpointDraft:
    defaults = {k: (v, SOURCE_DEFAULT) for k, v in reference_endpoint_values().items()}
    return _EndpointDraft(
        name=REFERENCE_ENDPOINT_NAME,
        layers={DEFAULT: defaults},
        label=lambda key: f"the reference endpoint's {key}",
        is_reference=True,
    )


def _resolve_endpoint(
    draft: _EndpointDraft,
    custom: Mapping[str, Profile],
    problems: _Problems,
) -> Endpoint | None:
    """Resolve one endpoint's layers and check it; problems are collected, None returned."""
    before = len(problems.lines)

    def infer_profile(resolved: Mapping[str, Any]) -> tuple[Any, str] | None:
        model = resolved.get("image_model")
        return (model, f"{SOURCE_PROFILE} (from image_model)") if model else None

    layers = {**draft.layers, PROFILE: {"profile": infer_profile}}
    values, sources = resolve("endpoint", layers)
    draft = replace(draft, label=_source_label(draft, sources))
    label = draft.label
    image_model: str = values["image_model"]
    chat_model: str | None = values.get("chat_model")

    # ---- base URL
    base_url: str = values["base_url"]
    if not draft.is_reference:
        key_fix = (
            "put the NAME of the environment variable holding the key in api_key_env"
            if draft.in_file
            else f"put the key in {DEFAULT_OPENAI_KEY_ENV}"
        )
        problem = _url_problem(base_url, key_fix)
        if problem:
            problems.add(f"{label('base_url')}: {problem}.")

    # ---- Azure style
    api_version: str | None = values.get("api_version")
    deployments: dict[str, str] = dict(values.get("deployments") or {})
    if api_version is None and deployments:
        problems.add(
            f"{label('deployments')}: deployments are for Azure endpoints, which also need "
            'api_version = "2025-04-01-preview" (the API version your resource supports). Add '
            "it, or remove deployments."
        )
    elif api_version is not None:
        path = urlsplit(base_url).path.rstrip("/")
        if "/deployments/" in f"{path}/" or not (path == "" or path == "/openai"):
            problems.add(
                f"{label('base_url')}: an Azure endpoint's base_url is the resource URL, such "
                'as "https://NAME.openai.azure.com", not a path under it; put each model\'s '
                'deployment in deployments = { "gpt-image-1" = "my-deployment" }.'
            )
        used = [image_model, *([chat_model] if chat_model else [])]
        used += [str(step["model"]) for step in values["fallback"] if step.get("model")]
        for model in deployments:
            if model not in used:
                problems.add(
                    f"{label('deployments')}: {model!r} is not a model this endpoint calls "
                    f"(it calls {', '.join(repr(m) for m in dict.fromkeys(used))})."
                    f"{did_you_mean(model, used)} Key deployments by model name, e.g. "
                    "deployments = "
                    f'{{ "{image_model}" = "my-deployment" }}.'
                )

    # ---- timeouts
    timeout_s = float(values["timeout_s"])
    deadline_s = float(values["deadline_s"])
    if timeout_s > deadline_s:
        problems.add(
            f"{label('timeout_s')}: timeout_s = {_show(timeout_s)} is longer than deadline_s = "
            f"{_show(deadline_s)}, so one attempt could run past the deadline. Set timeout_s <= "
            f"deadline_s (e.g. timeout_s = {_show(deadline_s)}) or raise deadline_s."
        )

    # ---- model separation and the profile
    profile = _endpoint_profile(draft, values, sources, custom, problems)
    if chat_model is not None:
        _check_chat_model(draft, image_model, chat_model, problems)

    # ---- fallback
    fallback = tuple(dict(step) for step in values["fallback"])
    if profile is not None:
        for i, step in enumerate(fallback):
            _check_step(
                draft,
                i,
                len(fallback),
                step,
                profile,
                image_model,
                chat_model,
                custom,
                problems,
            )

    # ---- upstream mode
    upstream = None
    if values.get("upstream") is not None:
        upstream = _resolve_upstream(values["upstream"], label("upstream"), problems)

    if len(problems.lines) != before or profile is None:
        return None
    return Endpoint(
        name=draft.name,
        base_url=base_url,
        image_model=image_model,
        profile=profile,
        api_key_env=values.get("api_key_env"),
        chat_model=chat_model,
        chat_images=values.get("chat_images"),
        timeout_s=timeout_s,
        deadline_s=deadline_s,
        max_retries=int(values["max_retries"]),
        max_response_bytes=_response_bytes(values.get("max_response_mb")),
        fallback=fallback,
        headers=dict(values["headers"]),
        is_reference=draft.is_reference,
        sources=sources,
        upstream=upstream,
        api_version=api_version,
        deployments=deployments,
    )


def _source_label(draft: _EndpointDraft, sources: Mapping[str, str]) -> Callable[[str], str]:
    """Where a key's value came from, for messages: the variable or option that set it (and
    the endpoint), else the draft's own wording (the file location)."""

    def label(key: str) -> str:
        root = re.split(r"[.\[]", key, maxsplit=1)[0]
        source = sources.get(root, "")
        for prefix in (SOURCE_CLI, SOURCE_ENV):
            if source.startswith(f"{prefix} ") and root in ENV_ENDPOINT_SETTINGS:
                where = source.removeprefix(f"{prefix} ") + key[len(root) :]
                # A fallback step's messages name the endpoint themselves.
                return where if key != root else f"{where} (endpoint {draft.name!r})"
        return draft.label(key)

    return label


_UPSTREAM_EXAMPLE = (
    'upstream = { listen = "127.0.0.1:18099", api_key_env = "UPSTREAM_KEY" } (started by the '
    'plugin) or upstream = { url = "http://ref:8000/v1", admin_key_env = "REF_ADMIN" } '
    "(started elsewhere with `python -m pytest_imagegen serve --admin-key-env REF_ADMIN`)"
)


def parse_listen(text: str) -> tuple[str, int]:
    """``"127.0.0.1:18099"`` -> ``("127.0.0.1", 18099)``; ValueError saying what is wrong.

    The address must be a loopback one (the reference server is for this machine's gateway)
    and the port fixed (the gateway is configured to call it).
    """
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(
            f'listen = {text!r} is not HOST:PORT; write e.g. listen = "127.0.0.1:18099"'
        )
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(
            f"listen = {text!r}: the port must be a fixed port 1-65535 (your gateway is "
            'configured to call it), e.g. listen = "127.0.0.1:18099"'
        )
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None and host.lower() != "localhost":
        raise ValueError(
            f'listen = {text!r}: give a loopback IP address, e.g. listen = "127.0.0.1:{port}"'
        )
    if address is not None and not address.is_loopback:
        raise ValueError(
            f"listen = {text!r} is not a loopback address; the reference server the plugin "
            f'starts only listens on this machine: use listen = "127.0.0.1:{port}", or start '
            "one elsewhere and give its url with admin_key_env"
        )
    return ("127.0.0.1" if host.lower() == "localhost" else host), port


def _resolve_upstream(raw: Mapping[str, Any], where: str, problems: _Problems) -> Upstream | None:
    listen_text, url = raw.get("listen"), raw.get("url")
    if (listen_text is None) == (url is None):
        which = "both listen and url" if listen_text is not None else "neither listen nor url"
        problems.add(f"{where}: the upstream has {which}; give exactly one: {_UPSTREAM_EXAMPLE}.")
        return None
    admin_key_env = raw.get("admin_key_env")
    listen = None
    if listen_text is not None:
        try:
            listen = parse_listen(listen_text)
        except ValueError as exc:
            problems.add(f"{where}: {exc}.")
            return None
        if admin_key_env is not None:
            problems.add(
                f"{where}: admin_key_env belongs with url (a server started elsewhere); the "
                "server the plugin starts on listen needs none. Remove admin_key_env."
            )
            return None
    else:
        problem = _url_problem(str(url), "put the NAME of the variable holding it in admin_key_env")
        if problem:
            problems.add(f"{where}: url: {problem}.")
            return None
        if admin_key_env is None:
            problems.add(
                f"{where}: url needs admin_key_env, the NAME of the variable holding the admin "
                "key the server was started with (`python -m pytest_imagegen serve "
                "--admin-key-env REF_ADMIN`), so faults can be scripted on it."
            )
            return None
    return Upstream(
        listen=listen,
        url=url,
        api_key_env=raw.get("api_key_env"),
        admin_key_env=admin_key_env,
        model_map=dict(raw.get("model_map") or {}),
    )


def attach_upstream_keys(
    endpoint: Endpoint, env: Mapping[str, str], *, needed: bool
) -> tuple[Endpoint, list[str]]:
    """Read the upstream's keys from the variables it names: ``(endpoint, problems)``.

    ``needed``: the endpoint runs live, so an unset variable is a problem.
    """
    from dataclasses import replace

    upstream = endpoint.upstream
    if upstream is None:
        return endpoint, []
    found: dict[str, str] = {}
    problems = []
    for attr, var in (("api_key", upstream.api_key_env), ("admin_key", upstream.admin_key_env)):
        if var is None:
            continue
        value = (env.get(var) or "").strip()
        if value:
            found[attr] = value
        elif needed:
            what = (
                "the key your gateway sends to the upstream"
                if attr == "api_key"
                else "the admin key the upstream reference server was started with"
            )
            problems.append(
                f"endpoint {endpoint.name!r}: upstream.{attr}_env names {var}, which is not "
                f"set; export {what} in {var}, or run with --imagegen-record-mode=none to "
                "replay cassettes."
            )
    if not found:
        return endpoint, problems
    upstream = replace(
        upstream,
        api_key=found.get("api_key", upstream.api_key),
        admin_key=found.get("admin_key", upstream.admin_key),
    )
    return replace(endpoint, upstream=upstream), problems


def _response_bytes(mb: Any) -> int | None:
    return None if mb is None else max(1, round(float(mb) * 1_000_000))


def _known_profiles(custom: Mapping[str, Profile]) -> tuple[str, ...]:
    return (*PROFILES, *custom)


def _endpoint_profile(
    draft: _EndpointDraft,
    values: Mapping[str, Any],
    sources: dict[str, str],
    custom: Mapping[str, Profile],
    problems: _Problems,
) -> Profile | None:
    """The endpoint's profile; refuses chat models and unknown models without a profile."""
    image_model: str = values["image_model"]
    label = draft.label
    kind = model_kind(image_model)
    if kind == "chat":
        if draft.in_file:
            fix = (
                f'Set image_model to an image model (e.g. image_model = "gpt-image-1") and put '
                f'"{image_model}" in chat_model if the app uses it for chat.'
            )
        else:
            var = label("image_model")
            fix = (
                f"Set {var}=gpt-image-1 (or another image model) and "
                f"{label('chat_model')}={image_model}."
            )
            label = lambda key: var  # noqa: E731 - the variable is the whole location
        problems.add(
            f"{label('image_model')}: {image_model!r} is a chat model, not an image model; image "
            f"requests would be sent to a chat model. {fix}",
            separation=True,
        )
        return None
    known = _known_profiles(custom)
    explicit = values.get("profile") if draft.explicit_profile else None
    if explicit is not None and explicit not in known:
        problems.add(
            f"{label('profile')}: profile = {explicit!r} is not a known profile."
            f"{did_you_mean(explicit, known)} Known profiles: {', '.join(known)} (declare your "
            "own under [tool.imagegen.profiles.NAME] with a parent)."
        )
        return None
    profile: Profile | None = resolve_profile(image_model, profile=explicit, custom=dict(custom))
    if profile is None:
        if draft.in_file:
            fix = (
                f'Set profile = "gpt-image-1" (or another of: {", ".join(known)}) in this table '
                "to say what the model accepts, or use a known model name."
            )
        else:
            fix = (
                "Use a known image model name, or declare the endpoint in "
                '[[tool.imagegen.endpoints]] with profile = "gpt-image-1" (or the profile the '
                "model follows)."
            )
        what = (
            "is an image model without a built-in profile"
            if kind == "image"
            else "is not a model pytest-imagegen knows"
        )
        problems.add(
            f"{label('image_model')}: {image_model!r} {what}, so it cannot tell which "
            f"parameters the model accepts. {fix}"
        )
        return None
    return profile


def _same_model(a: str, b: str) -> bool:
    """Do ``a`` and ``b`` name one model (relay aliases, provider prefixes and case aside)?"""

    def canonical(model: str) -> str:
        return canonical_model(model) or model.strip().lower().rsplit("/", 1)[-1]

    return canonical(a) == canonical(b)


def _check_chat_model(
    draft: _EndpointDraft, image_model: str, chat_model: str, problems: _Problems
) -> None:
    label = draft.label
    if _same_model(image_model, chat_model):
        problems.add(
            f"{label('chat_model')}: chat_model {chat_model!r} is the image model "
            f"({label('image_model')} = {image_model!r}); one model cannot serve both image "
            "and chat calls. Set the chat model to the one your app uses for chat (e.g. "
            "gpt-4o-mini), or leave it unset.",
            separation=True,
        )
    elif model_kind(chat_model) == "image":
        problems.add(
            f"{label('chat_model')}: {chat_model!r} is an image model; chat requests would be "
            "sent to an image model. Set it to the chat model your app uses (e.g. gpt-4o-mini), "
            "or leave it unset.",
            separation=True,
        )


def _check_step(
    draft: _EndpointDraft,
    index: int,
    count: int,
    step: Mapping[str, Any],
    profile: Profile,
    image_model: str,
    chat_model: str | None,
    custom: Mapping[str, Profile],
    problems: _Problems,
) -> None:
    """Refuse a fallback step the endpoint's (or the step's model's) profile rejects."""
    from pytest_imagegen.request_builder import validate_request

    step_text = f"endpoint {draft.name!r}, step {index + 1} of {count}"
    where = f"{draft.label(f'fallback[{index}]')} ({step_text})"
    model = step.get("model") or image_model
    step_profile = profile
    if step.get("model"):
        kind = model_kind(model)
        if kind == "chat":
            problems.add(
                f"{where}: model = {model!r} is a chat model; this fallback step would send "
                "image requests to a chat model. Use an image model (e.g. model = "
                '"gpt-image-1-mini") or drop the model key.',
                separation=True,
            )
            return
        if chat_model is not None and _same_model(model, chat_model):
            problems.add(
                f"{where}: model = {model!r} is this endpoint's chat_model; use an image model.",
                separation=True,
            )
            return
        if _same_model(model, image_model):
            step_profile = profile
        else:
            found = resolve_profile(model, custom=dict(custom))
            if found is None:
                problems.add(
                    f"{where}: model = {model!r} is not a model pytest-imagegen knows, so the "
                    "step cannot be checked. Use a known image model name, or configure that "
                    "model as an endpoint of its own with a profile."
                )
                return
            step_profile = found
    body = {"model": model, "prompt": "fallback step check", **step}
    for violation in validate_request(body, step_profile):
        if violation.param is None or violation.param not in step:
            continue  # only what the step sets is the step's fault
        value = step[violation.param]
        detail = violation.message
        if violation.supported and "Supported values" not in detail:
            detail += " Supported values: " + ", ".join(repr(v) for v in violation.supported) + "."
        if violation.code == "unknown_parameter":
            detail += f" Profile {step_profile.name} does not take {violation.param} at all."
        problems.add(
            f"{where}: {violation.param} = {value!r} is not valid for profile "
            f"{step_profile.name}: {detail} Change or remove {violation.param} in that step."
        )


def _attach_key(
    endpoint: Endpoint, env: Mapping[str, str], record_mode: str, needed: bool, problems: _Problems
) -> Endpoint:
    """Read the endpoint's key from the variable it names; required only for live modes."""
    from dataclasses import replace

    if endpoint.is_reference:
        return endpoint
    var = endpoint.api_key_env
    key = (env.get(var) or "").strip() if var else ""
    sources = dict(endpoint.sources)
    if key:
        sources["api_key"] = f"{SOURCE_ENV} {var}"
        return replace(endpoint, api_key=key, sources=sources)
    if not needed or record_mode not in LIVE_RECORD_MODES or is_loopback_url(endpoint.base_url):
        return endpoint
    if var is None:
        problems.add(
            f"endpoint {endpoint.name!r} ({_mask_url(endpoint.base_url)}) has no api_key_env, "
            f'and record mode {record_mode!r} calls it live. Add api_key_env = "RELAY_API_KEY" '
            "(the NAME of the variable that holds its key) to its [[tool.imagegen.endpoints]] "
            "table and set that variable, or run with --imagegen-record-mode=none to replay "
            "cassettes."
        )
    else:
        from_env = sources.get("api_key_env", "").startswith(SOURCE_ENV)
        named_by = "" if from_env else " (named by api_key_env)"
        problems.add(
            f"endpoint {endpoint.name!r} needs an API key for record mode {record_mode!r}: set "
            f"the environment variable {var}{named_by}, or run with "
            "--imagegen-record-mode=none to replay cassettes without a key."
        )
    return endpoint


# --------------------------------------------------------------------------------------
# Where the settings come from, and the embedded reference server's own settings


def config_file_path(
    *, given: str | None, ini: str | None, invocation_dir: Path, ini_dir: Path
) -> Path | None:
    """The TOML file named on the command line (relative to where pytest was started) or
    by the ini key (relative to the ini file's folder); None for the default."""
    if given:
        return Path(invocation_dir, given)
    if ini:
        return Path(ini_dir, str(ini))
    return None


def reference_options(settings: Settings, env: Mapping[str, str]) -> dict[str, Any]:
    """Keyword arguments for the embedded ``ReferenceServer``: the ``reference`` settings,
    overridden by the ``IMAGEGEN_REFERENCE_*`` variables. ConfigError for a bad value."""
    from pytest_imagegen.reference.faults import DEFECTS
    from pytest_imagegen.reference.server import parse_latency

    configured = settings.reference or {}
    options: dict[str, Any] = {}
    latency = configured.get("latency")
    defects = configured.get("defects")
    env_latency = (env.get(ENV_REFERENCE_LATENCY) or "").strip()
    env_defects = (env.get(ENV_REFERENCE_DEFECTS) or "").strip()
    if env_latency:
        latency = env_latency
    if env_defects:
        defects = [d.strip() for d in env_defects.split(",") if d.strip()]
    if latency is not None:
        try:
            options["latency"] = parse_latency(latency)
        except ValueError as exc:
            where = ENV_REFERENCE_LATENCY if env_latency else "reference.latency"
            raise ConfigError(
                f"{where}={latency!r}: {exc}. Give seconds (e.g. 2) or per quality "
                f"(e.g. low=0.5,high=2)."
            ) from None
    if defects:
        unknown = [d for d in defects if d not in DEFECTS]
        if unknown:
            where = ENV_REFERENCE_DEFECTS if env_defects else "reference.defects"
            raise ConfigError(
                f"{where}: unknown defect(s) {', '.join(unknown)}; known defects: "
                f"{', '.join(sorted(DEFECTS))}."
            )
        options["defects"] = tuple(defects)
    return options


def bind_reference(
    endpoint: Endpoint, server: ReferenceServer | RemoteReference | None
) -> Endpoint:
    """The embedded reference endpoint pointed at a running server (others unchanged).

    With a server latency, its attempts and deadline get room for it: the defaults assume
    an instant server.
    """
    from dataclasses import replace

    if server is None or not endpoint.is_reference or endpoint.base_url:
        return endpoint
    changes: dict[str, Any] = {"base_url": server.base_url, "api_key": server.api_key}
    latency = max(server.latency.values(), default=0.0)
    if latency > 0:
        timeout = max(endpoint.timeout_s, 2 * latency + 1)
        steps = 1 + len(endpoint.fallback)
        changes["timeout_s"] = timeout
        changes["deadline_s"] = max(endpoint.deadline_s, timeout * steps + latency + 2)
    return replace(endpoint, **changes)
