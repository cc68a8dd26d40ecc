"""The one redaction policy: what is secret, for cassettes, reports, logs and terminal output.

Three rules, each in one place below:

* **Headers by allowlist.** Only the headers replay and the report need keep their values
  (:func:`keeps_header`); every other header value is a secret, whatever its name. A relay's
  ``X-Relay-Token`` set at run time through ``with_options(default_headers=...)`` is scrubbed
  without anyone having listed it.
* **Names that hold credentials**, in query strings, JSON and form fields
  (:func:`is_secret_name`): ``api_key``, ``token``, ``client_secret``, ``relay_api_key``...
* **Values**: every configured secret (API keys, configured header values, and the values of
  the non-allowlisted headers of the request at hand) wherever it occurs, also percent- or
  JSON-encoded (:class:`Redactor`); and anything shaped like a key (``sk-...``, bearer
  tokens, JWTs, Google keys) in free text (:func:`mask_key_shapes`).

Cassettes write :data:`PLACEHOLDER`; reports and terminal text write ``***`` (readable in a
sentence); the reference server's log keeps a key's first and last characters
(:func:`mask_key`), as OpenAI's own 401 message does. Pure standard library: the config
loader, the classifier and the reference server import it cheaply.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

__all__ = [
    "KEPT_HEADERS",
    "KEPT_HEADER_PREFIXES",
    "MASK",
    "MIN_HEADER_SECRET_LEN",
    "MIN_SECRET_LEN",
    "PLACEHOLDER",
    "Redactor",
    "is_secret_name",
    "keeps_header",
    "looks_like_key",
    "mask_key",
    "mask_key_shapes",
]

#: What a scrubbed value becomes in cassettes (headers, URLs and bodies alike).
PLACEHOLDER = "<imagegen:scrubbed>"
#: What a secret becomes in reports and terminal text.
MASK = "***"

#: Headers whose values are kept: what replay needs to rebuild an answer (content type and
#: length, redirects), what the report shows (request id, processing time, rate limits),
#: and the SDK's own metadata. Any other header's value is replaced.
KEPT_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "cache-control",
        "connection",
        "content-encoding",
        "content-length",
        "content-type",
        "date",
        "host",
        "location",
        "openai-model",
        "openai-processing-ms",
        "openai-version",
        "request-id",
        "retry-after",
        "retry-after-ms",
        "server",
        "transfer-encoding",
        "user-agent",
        "vary",
        "x-request-id",
    }
)
#: Prefixes of kept header names: rate-limit figures and the SDK's ``x-stainless-*``
#: metadata (language, version, retry count).
KEPT_HEADER_PREFIXES = ("x-ratelimit-", "x-stainless-")

# Query parameter, JSON and form field names that always hold a credential (lower case,
# "-" and "_" removed), and suffixes (after "-" -> "_") that make a name one. "_tokens" is
# not a suffix: usage counters are called "input_tokens".
_SECRET_NAMES = frozenset(
    {
        "apikey",
        "key",
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "authorization",
        "auth",
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "authtoken",
        "sessiontoken",
        "bearertoken",
        "clientsecret",
        "privatekey",
        "secretkey",
        "apisecret",
        "credentials",
        "sig",
        "signature",
        "cookie",
        "setcookie",
        "proxyauthorization",
        "xapikey",
        "ocpapimsubscriptionkey",
        "xgoogapikey",
    }
)
_SECRET_SUFFIXES = (
    "_api_key",
    "_apikey",
    "_key",
    "_token",
    "_secret",
    "_password",
    "_access_key",
    "_authorization",
    "_credentials",
)
# A name ending so names where a secret is kept, not the secret: `api_key_env`.
_NOT_SECRET_SUFFIXES = ("_env",)

# Free-text replacement of configured values shorter than this would mangle ordinary text
# (a 3-character value occurs everywhere); such values are still scrubbed where they are
# structurally known (header values, named fields).
MIN_SECRET_LEN = 4

# A non-allowlisted header value is replaced in the headers whatever its length, and also
# removed from the bodies of its exchange from this length on: credentials are long, and a
# short value ("1", "true", "1000") would mangle ordinary figures and words.
MIN_HEADER_SECRET_LEN = 8

# Key-shaped text, masked wherever text is written. A key already masked by the server
# (sk-VKMIs****wjh3) is left alone: it names the key safely.
_KEY_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b((?:sk|pk|rk)-)(?![A-Za-z0-9_\-]{0,12}\*{3})[A-Za-z0-9_\-]{6,}"), r"\1***"),
    # ... and glued to a preceding word ("tokensk-..."): only key-length runs, to spare words.
    (re.compile(r"((?:sk|pk|rk)-)(?![A-Za-z0-9_\-]{0,12}\*{3})[A-Za-z0-9_\-]{20,}"), r"\1***"),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"), "AIz***"),
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*"), "eyJ***"),
    (re.compile(r"(?i)\b(bearer\s+)(?!\*)[A-Za-z0-9._~+/=\-]{6,}"), r"\1***"),
    (
        re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access_token|sig|code)=)[^&\s\"'<>]+"),
        r"\1***",
    ),
    (
        re.compile(
            r"(?i)\b((?:x-)?api[_-]?key|authorization|token)([\"']?\s*[:=]\s*[\"']?)"
            r"(?!\*)(?!bearer\b)[^\s\"',;]{8,}"
        ),
        r"\1\2***",
    ),
)
# What a key pasted into a config value looks like (stricter than the masking above: it
# must not refuse ordinary settings).
_KEY_PASTED = re.compile(r"(?:^|[^A-Za-z0-9])sk-[A-Za-z0-9_-]{6,}|^\s*bearer\s+\S{8,}", re.I)


def keeps_header(name: str) -> bool:
    """Whether header ``name`` keeps its value (the allowlist); all others are secret."""
    lowered = name.strip().lower()
    return lowered in KEPT_HEADERS or lowered.startswith(KEPT_HEADER_PREFIXES)


def is_secret_name(name: str) -> bool:
    """Whether a query parameter, JSON or form field called ``name`` holds a credential."""
    normal = name.strip().lower().replace("-", "_")
    if normal.endswith(_NOT_SECRET_SUFFIXES):
        return False
    if normal.replace("_", "") in _SECRET_NAMES:
        return True
    return normal.endswith(_SECRET_SUFFIXES)


def mask_key_shapes(text: str) -> str:
    """``text`` with everything shaped like an API key or token masked."""
    for pattern, replacement in _KEY_SHAPES:
        text = pattern.sub(replacement, text)
    return text


def looks_like_key(text: str) -> bool:
    """Whether ``text`` (a config value, a URL) holds what looks like a pasted API key."""
    return bool(_KEY_PASTED.search(text))


def mask_key(key: str) -> str:
    """A key masked as OpenAI masks it in its 401 message: ``sk-ab****...wxyz``.

    Keys shorter than 16 characters are masked entirely: showing nine characters of a short
    test key would show most of it.
    """
    if len(key) < 16:
        return "*" * len(key)
    return f"{key[:5]}{'*' * (len(key) - 9)}{key[-4:]}"


def mask_header_value(value: str) -> str:
    """A secret header value for a log: an authorization scheme is kept, the rest masked."""
    scheme, sep, credentials = value.partition(" ")
    if sep and scheme.lower() in ("bearer", "basic", "token"):
        return f"{scheme} {mask_key(credentials.strip())}"
    return mask_key(value)


def header_values(headers: Iterable[tuple[str, str]] | Mapping[str, Any]) -> list[str]:
    """The values of the non-allowlisted headers: secrets of the exchange they travel in.

    ``Bearer <key>`` also gives the key alone, and a cookie each of its values, since those
    are what a server might echo back.
    """
    items = headers.items() if isinstance(headers, Mapping) else headers
    values: list[str] = []
    for name, value in items:
        if keeps_header(str(name)):
            continue
        for one in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(one, bytes):
                one = one.decode("latin-1")
            if not isinstance(one, str) or not one.strip():
                continue
            values.append(one)
            scheme, sep, credentials = one.strip().partition(" ")
            if sep and scheme.lower() in ("bearer", "basic", "token"):
                values.append(credentials.strip())
            if "=" in one:
                for pair in one.split(";"):
                    values.append(pair.partition("=")[2].strip())
    return [v for v in values if len(v) >= MIN_HEADER_SECRET_LEN]


@dataclass(frozen=True)
class Redactor:
    """Removes secrets from text, bytes, URLs, headers and JSON values.

    ``secrets`` are literal values removed wherever they occur, also percent-encoded and
    JSON-escaped; ``secret_headers`` are extra header names always treated as secret (every
    header outside the allowlist is, anyway); ``placeholder`` is what replaces them.
    """

    secrets: tuple[str, ...] = ()
    secret_headers: frozenset[str] = frozenset()
    placeholder: str = PLACEHOLDER
    _forms: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _forms_ci: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _byte_forms: tuple[bytes, ...] = field(init=False, repr=False, compare=False)

    @staticmethod
    def _values(secrets: Iterable[str]) -> tuple[str, ...]:
        return tuple(sorted({s for s in secrets if s and s.strip()}, key=len, reverse=True))

    @staticmethod
    def _names(names: Iterable[str]) -> frozenset[str]:
        return frozenset(h.strip().lower() for h in names if h and h.strip())

    @classmethod
    def of(
        cls, secrets: Iterable[str] = (), *, secret_headers: Iterable[str] = (), mask: str = MASK
    ) -> Redactor:
        """A redactor for reports and terminal text (secrets become ``***``)."""
        return cls(cls._values(secrets), cls._names(secret_headers), mask)

    def with_secrets(self, extra: Iterable[str]) -> Redactor:
        """This redactor with more secret values (e.g. one request's header values)."""
        added = [s for s in extra if s and s not in self.secrets]
        if not added:
            return self
        return replace(self, secrets=self._values([*self.secrets, *added]))

    def __post_init__(self) -> None:
        forms: set[str] = set()
        encoded: set[str] = set()
        usable = [s for s in self.secrets if len(s) >= MIN_SECRET_LEN and s not in self.placeholder]
        for secret in usable:
            forms.add(secret)
            forms.add(json.dumps(secret)[1:-1])
            forms.add(json.dumps(secret, ensure_ascii=False)[1:-1])
            for form in (
                quote(secret, safe=""),
                quote_plus(secret, safe=""),
                quote(secret),
                quote(secret, safe="-._~"),
            ):
                forms.add(form)
                if "%" in form:
                    encoded.add(form)
        ordered = tuple(sorted(forms, key=len, reverse=True))
        object.__setattr__(self, "_forms", ordered)
        # Percent-escapes may come in either case ("%2f" or "%2F").
        pattern = (
            re.compile("|".join(re.escape(f) for f in sorted(encoded, key=len, reverse=True)), re.I)
            if encoded
            else None
        )
        object.__setattr__(self, "_forms_ci", pattern)
        byte_forms = {f.encode("utf-8", "surrogatepass") for f in ordered}
        for secret in usable:
            with contextlib.suppress(UnicodeEncodeError):
                byte_forms.add(secret.encode("latin-1"))
        object.__setattr__(self, "_byte_forms", tuple(sorted(byte_forms, key=len, reverse=True)))

    # -- names ---------------------------------------------------------------------------

    def is_secret_header(self, name: str) -> bool:
        """Whether header ``name`` loses its value: outside the allowlist, or named secret."""
        return not keeps_header(name) or name.strip().lower() in self.secret_headers

    def is_secret_field(self, name: str) -> bool:
        """Whether a JSON/form field or query parameter of this name holds a secret."""
        return is_secret_name(name) or name.strip().lower() in self.secret_headers

    # -- values --------------------------------------------------------------------------

    def text(self, value: str) -> str:
        """``value`` with every configured secret (in any known encoding) replaced."""
        if not self._forms or not value:
            return value
        for form in self._forms:
            if form in value:
                value = value.replace(form, self.placeholder)
        if self._forms_ci is not None and "%" in value:
            value = self._forms_ci.sub(self.placeholder, value)
        return value

    def data(self, value: bytes) -> bytes:
        """Like :meth:`text`, for raw bytes."""
        if not self._forms or not value:
            return value
        placeholder = self.placeholder.encode()
        for form in self._byte_forms:
            if form in value:
                value = value.replace(form, placeholder)
        if self._forms_ci is not None and b"%" in value:
            try:
                decoded = value.decode("utf-8")
            except UnicodeDecodeError:
                return value
            value = self._forms_ci.sub(self.placeholder, decoded).encode("utf-8")
        return value

    def message(self, value: str) -> str:
        """Free text for a report or the terminal: configured secrets and key shapes masked."""
        return mask_key_shapes(self.text(value))

    def url(self, url: str) -> str:
        """A URL without credentials: userinfo and secret query parameters replaced."""
        try:
            parts = urlsplit(url)
        except ValueError:
            return self.text(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = self.placeholder + "@" + netloc.rsplit("@", 1)[1]
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            if any(self.is_secret_field(k) for k, _ in pairs):
                query = urlencode(
                    [(k, self.placeholder if self.is_secret_field(k) else v) for k, v in pairs],
                    safe="<>:*",
                )
        rebuilt = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
        return self.text(rebuilt)

    def header(self, name: str, value: Any) -> Any:
        """One header value as it may be written."""
        if self.is_secret_header(name):
            return self.placeholder
        if not isinstance(value, str):
            return value
        if name.strip().lower() == "location":
            return self.url(value)
        return self.text(value)

    def json_value(self, value: Any) -> Any:
        """A scrubbed copy of a decoded JSON value (secret-named fields, secrets, URLs)."""
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                new_key = self.text(key) if isinstance(key, str) else key
                if isinstance(key, str) and self.is_secret_field(key) and item not in (None, ""):
                    out[new_key] = self.placeholder
                else:
                    out[new_key] = self.json_value(item)
            return out
        if isinstance(value, list):
            return [self.json_value(item) for item in value]
        if isinstance(value, str):
            if value.startswith(("http://", "https://")):
                return self.url(value)
            return self.text(value)
        return value
