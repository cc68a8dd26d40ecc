"""pytest-imagegen: conformance suite, cassettes and test tools for image endpoints.

Public names are loaded on first use so that the pytest plugin, which imports this
package in every pytest run, costs nothing until ``--imagegen`` asks for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "classify": "pytest_imagegen.classify",
    "Diagnosis": "pytest_imagegen.errors",
    "Category": "pytest_imagegen.errors",
    "BudgetExceededError": "pytest_imagegen.errors",
    "CallerError": "pytest_imagegen.errors",
    "CassetteError": "pytest_imagegen.errors",
    "ConfigError": "pytest_imagegen.errors",
    "ConformanceFailure": "pytest_imagegen.errors",
    "EndpointError": "pytest_imagegen.errors",
    "ImagegenError": "pytest_imagegen.errors",
    "MalformedResponse": "pytest_imagegen.errors",
    "ModelSeparationError": "pytest_imagegen.errors",
    "generate": "pytest_imagegen.fallback",
    "edit": "pytest_imagegen.fallback",
    "Outcome": "pytest_imagegen.fallback",
    "Attempt": "pytest_imagegen.fallback",
    "ReferenceServer": "pytest_imagegen.reference",
    "RemoteReference": "pytest_imagegen.reference",
    "DeviationWarning": "pytest_imagegen.verdict",
}

__all__ = [
    "Attempt",
    "BudgetExceededError",
    "CallerError",
    "CassetteError",
    "Category",
    "ConfigError",
    "ConformanceFailure",
    "DeviationWarning",
    "Diagnosis",
    "EndpointError",
    "ImagegenError",
    "MalformedResponse",
    "ModelSeparationError",
    "Outcome",
    "ReferenceServer",
    "RemoteReference",
    "__version__",
    "classify",
    "edit",
    "generate",
]

if TYPE_CHECKING:
    from pytest_imagegen.classify import classify
    from pytest_imagegen.errors import (
        BudgetExceededError,
        CallerError,
        CassetteError,
        Category,
        ConfigError,
        ConformanceFailure,
        Diagnosis,
        EndpointError,
        ImagegenError,
        MalformedResponse,
        ModelSeparationError,
    )
    from pytest_imagegen.fallback import Attempt, Outcome, edit, generate
    from pytest_imagegen.reference import ReferenceServer, RemoteReference
    from pytest_imagegen.verdict import DeviationWarning


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_imagegen' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
