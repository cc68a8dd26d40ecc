"""The error classifier: what an image endpoint's error (or bad answer) means.

``classify`` turns whatever an image call produced (an SDK exception, an httpx2
exception or response, a raw status/headers/body triple, a parsed body) into a
:class:`~pytest_imagegen.errors.Diagnosis`. It gathers evidence first
(:mod:`.evidence`: status, headers, code-like tokens, human text), then decides
(:mod:`.decide`) in a fixed order with the tables of :mod:`.tables`: quota signals
anywhere, then ``code``/``type``, then message patterns (English and Chinese relay texts),
then the status, then weak generic types; :mod:`.hints` says what to do next. It is
total: a bug inside it yields an ``unknown`` diagnosis, never an exception that would
hide the endpoint's own error.

The package itself is callable, so ``pytest_imagegen.classify(x)`` works whether the name
resolves to this package or to the function.
"""

from __future__ import annotations

import sys
import time
import types

from pytest_imagegen.classify._text import MESSAGE_MAX_CHARS, mask_secrets
from pytest_imagegen.classify.categories import PROBLEM_CLASS, RETRYABLE
from pytest_imagegen.classify.decide import _classify, _internal_error_diagnosis, malformed
from pytest_imagegen.classify.hints import hint_for
from pytest_imagegen.errors import BudgetExceededError, Category, Diagnosis, ImagegenError

__all__ = [
    "MESSAGE_MAX_CHARS",
    "PROBLEM_CLASS",
    "RETRYABLE",
    "Category",
    "Diagnosis",
    "classify",
    "diagnosis_of",
    "hint_for",
    "malformed",
    "mask_secrets",
]


def classify(x: object, /) -> Diagnosis:
    """Say what an error (or a bad answer) from an image endpoint means.

    ``x`` may be an openai SDK exception, an httpx2 exception or ``httpx2.Response``, a
    ``(status, headers, body)`` tuple (headers a mapping or a list of pairs), a parsed body
    (dict), a ``str``/``bytes`` body, a bare status code, or anything else. Never raises.
    """
    try:
        return _classify(x, now=time.time())
    except Exception as exc:  # a classifier bug must never replace the endpoint's error
        return _internal_error_diagnosis(x, exc)


def diagnosis_of(exc: BaseException) -> Diagnosis | None:
    """The diagnosis a failed test's exception carries, or the classifier's for an error
    raised by the SDK or the HTTP layer; None for anything else (a bug, an assertion, the
    plugin's own refusals), which says nothing about the endpoint."""
    diagnosis = getattr(exc, "diagnosis", None)
    if isinstance(diagnosis, Diagnosis):
        return diagnosis
    if isinstance(exc, (BudgetExceededError, ImagegenError)):
        return None
    if type(exc).__module__.split(".")[0] in ("openai", "httpx2"):
        return classify(exc)
    return None


class _CallableModule(types.ModuleType):
    """This package, callable as :func:`classify`."""

    def __call__(self, x: object, /) -> Diagnosis:
        return classify(x)


sys.modules[__name__].__class__ = _CallableModule
