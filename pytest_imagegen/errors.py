"""The error types of pytest-imagegen: exceptions, the error categories and a diagnosis.

Kept apart by who must act: a caller's mistake (:class:`CallerError`: configuration,
budget, cassettes; shown at start-up as ``pytest.UsageError`` or as the test's error), an
endpoint's fault (:class:`EndpointError`, and the :class:`Diagnosis` the classifier in
:mod:`pytest_imagegen.classify` makes of an endpoint's error answer), and conformance
failures (``AssertionError`` subclasses, so pytest reports them as test failures).

Standard library only: imported by the plugin's start-up path and by every other module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

__all__ = [
    "BudgetExceededError",
    "CallerError",
    "CassetteError",
    "Category",
    "ConfigError",
    "ConformanceFailure",
    "Diagnosis",
    "EndpointError",
    "ImagegenError",
    "MalformedResponse",
    "ModelSeparationError",
    "category_of",
]


class ImagegenError(Exception):
    """Base class of every error pytest-imagegen raises on purpose."""


class CallerError(ImagegenError):
    """A mistake on the caller's side (configuration, budget, cassettes): the message says
    what to change; the endpoint is not at fault and retrying will not help."""


class EndpointError(ImagegenError):
    """The endpoint answered something a client cannot use (see :class:`Diagnosis` for what
    an endpoint's own error answer means)."""


class ConfigError(CallerError):
    """The configuration (file, environment or command line) is wrong; says how to fix it."""


class ModelSeparationError(ConfigError):
    """A chat model would be used for image calls, or the two models are the same."""


class BudgetExceededError(CallerError):
    """A live request would take the run's estimated spend past ``budget_usd``."""


class CassetteError(CallerError):
    """A cassette is missing, corrupt, or has no recording for a request."""


class MalformedResponse(EndpointError, ValueError):
    """A 2xx answer that is not a valid image response (the message says what is wrong)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ConformanceFailure(AssertionError):
    """A conformance check found the endpoint misbehaving.

    ``diagnosis`` (when the failure came from an endpoint error) feeds the report's
    category and hint columns.
    """

    def __init__(self, message: str, *, diagnosis: Diagnosis | None = None) -> None:
        super().__init__(message)
        self.diagnosis = diagnosis


class Category(str, Enum):
    """The twelve error categories of DESIGN.md.

    A ``str`` enum: a member equals, and hashes like, its value (``str`` comes before
    ``Enum`` in the method order), so the plain strings that cassettes, JSON reports and
    configuration hold compare, look up and serialise (``json``) the same as the members.
    """

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


def category_of(value: object) -> Category | None:
    """``value`` as a :class:`Category` (a member, or a category's name as cassettes and
    reports hold it); None for anything else."""
    try:
        return Category(value)
    except ValueError:
        return None


@dataclass(frozen=True)
class Diagnosis:
    """What an endpoint error (or a bad 2xx) means, and what to do about it.

    ``category`` is always a :class:`Category` (a category's name is taken and converted).
    """

    category: Category
    problem_class: str  # technical | quality | efficiency | cost
    retryable: bool
    hint: str
    retry_after_s: float | None = None
    status: int | None = None
    code: str | None = None
    type: str | None = None
    param: str | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.category, Category):
            object.__setattr__(self, "category", Category(self.category))

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON types (the category as its name)."""
        return {**asdict(self), "category": self.category.value}

    def __str__(self) -> str:
        where = f"HTTP {self.status} " if self.status is not None else ""
        detail = f": {self.message}" if self.message else ""
        head = f"{self.category} ({where}code={self.code!r}, param={self.param!r})"
        return f"{head}{detail}. {self.hint}"
