"""Exception types and the error classifier.

Three kinds of error are kept apart: usage/config errors (raised at start-up and shown as
``pytest.UsageError``), endpoint errors (what an image endpoint answered, carried as a
:class:`Diagnosis`), and conformance failures (``AssertionError`` subclasses, so pytest
reports them as test failures).

This module must stay cheap to import: nothing from ``openai``/``httpx2`` at module level.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any


class ImagegenError(Exception):
    """Base class of every error pytest-imagegen raises on purpose."""


class ConfigError(ImagegenError):
    """The configuration (file, environment or command line) is wrong; says how to fix it."""


class ModelSeparationError(ConfigError):
    """A chat model would be used for image calls, or the two models are the same."""


class BudgetExceededError(ImagegenError):
    """A live request would take the run's estimated spend past ``budget_usd``."""


class CassetteError(ImagegenError):
    """A cassette is missing, corrupt, or has no recording for a request."""


class ConformanceFailure(AssertionError):
    """A conformance check found the endpoint misbehaving.

    ``diagnosis`` (when the failure came from an endpoint error) feeds the report's
    category and hint columns.
    """

    def __init__(self, message: str, *, diagnosis: Diagnosis | None = None) -> None:
        super().__init__(message)
        self.diagnosis = diagnosis


class Category(str, Enum):
    """The twelve error categories of DESIGN.md."""

    AUTHENTICATION = "authentication"
    PERMISSION = "permission"
    QUOTA = "quota"
    RATE_LIMIT = "rate_limit"
    TIMEOUT = "timeout"
    NETWORK = "network"
    SERVER = "server"
    MODEL_NOT_FOUND = "model_not_found"
    INVALID_REQUEST = "invalid_request"
    CONTENT_POLICY = "content_policy"
    MALFORMED_RESPONSE = "malformed_response"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Diagnosis:
    """What an endpoint error (or a bad 2xx) means, and what to do about it."""

    category: str
    problem_class: str  # technical | quality | efficiency | cost
    retryable: bool
    hint: str
    retry_after_s: float | None = None
    status: int | None = None
    code: str | None = None
    type: str | None = None
    param: str | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        where = f"HTTP {self.status} " if self.status is not None else ""
        detail = f": {self.message}" if self.message else ""
        return f"{self.category} ({where}code={self.code!r}, param={self.param!r}){detail}. {self.hint}"
