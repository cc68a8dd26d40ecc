"""Verdict levels: what fails a check, and what only warns.

A deviation that breaks clients fails the check (``ConformanceFailure``). One that loses
information but not correctness (an error code rewritten to a status string, extra
upstream attempts that still fit the deadline, a newer optional parameter not accepted) is
a :class:`DeviationWarning`: shown in pytest's warnings summary and as ``warned`` in the
matrix and the reports, and turned into a failure the way pytest users expect::

    pytest --imagegen -W error::pytest_imagegen.DeviationWarning

or ``filterwarnings = ["error::pytest_imagegen.DeviationWarning"]`` in the pytest settings.
"""

from __future__ import annotations

import warnings

__all__ = ["DeviationWarning", "deviation"]


class DeviationWarning(UserWarning):
    """An endpoint or gateway deviates from OpenAI in a way that loses information but does
    not break a client."""


def deviation(message: str, *, stacklevel: int = 2) -> None:
    """Warn with a :class:`DeviationWarning` (an error if the warning filters say so)."""
    warnings.warn(DeviationWarning(message), stacklevel=stacklevel + 1)
