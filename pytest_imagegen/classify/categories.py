"""The categories by their short names, their problem class (DESIGN.md) and which are
retryable. Each is a :class:`~pytest_imagegen.errors.Category` member, equal to its name."""

from __future__ import annotations

from collections.abc import Mapping

from pytest_imagegen.errors import Category

AUTHENTICATION = Category.AUTHENTICATION
PERMISSION = Category.PERMISSION
QUOTA = Category.QUOTA
RATE_LIMIT = Category.RATE_LIMIT
TIMEOUT = Category.TIMEOUT
NETWORK = Category.NETWORK
SERVER = Category.SERVER
MODEL_NOT_FOUND = Category.MODEL_NOT_FOUND
INVALID_REQUEST = Category.INVALID_REQUEST
CONTENT_POLICY = Category.CONTENT_POLICY
MALFORMED_RESPONSE = Category.MALFORMED_RESPONSE
UNKNOWN = Category.UNKNOWN

# DESIGN.md's table, verbatim.
PROBLEM_CLASS: Mapping[Category, str] = {
    AUTHENTICATION: "technical",
    PERMISSION: "technical",
    QUOTA: "cost",
    RATE_LIMIT: "efficiency",
    TIMEOUT: "efficiency",
    NETWORK: "technical",
    SERVER: "technical",
    MODEL_NOT_FOUND: "technical",
    INVALID_REQUEST: "technical",
    CONTENT_POLICY: "quality",
    MALFORMED_RESPONSE: "technical",
    UNKNOWN: "technical",
}
RETRYABLE: frozenset[Category] = frozenset(
    {RATE_LIMIT, TIMEOUT, NETWORK, SERVER, MALFORMED_RESPONSE}
)
