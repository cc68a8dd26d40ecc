"""The category names as strings, their problem class (DESIGN.md) and which are retryable."""

from __future__ import annotations

from collections.abc import Mapping

from pytest_imagegen.errors import Category

AUTHENTICATION = Category.AUTHENTICATION.value
PERMISSION = Category.PERMISSION.value
QUOTA = Category.QUOTA.value
RATE_LIMIT = Category.RATE_LIMIT.value
TIMEOUT = Category.TIMEOUT.value
NETWORK = Category.NETWORK.value
SERVER = Category.SERVER.value
MODEL_NOT_FOUND = Category.MODEL_NOT_FOUND.value
INVALID_REQUEST = Category.INVALID_REQUEST.value
CONTENT_POLICY = Category.CONTENT_POLICY.value
MALFORMED_RESPONSE = Category.MALFORMED_RESPONSE.value
UNKNOWN = Category.UNKNOWN.value

# DESIGN.md's table, verbatim.
PROBLEM_CLASS: Mapping[str, str] = {
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
RETRYABLE: frozenset[str] = frozenset({RATE_LIMIT, TIMEOUT, NETWORK, SERVER, MALFORMED_RESPONSE})
