"""The reference endpoint: an OpenAI-compatible image server on loopback with fault scripting.

``ReferenceServer`` serves ``POST /v1/images/generations``, ``POST /v1/chat/completions`` and
``GET /v1/models`` as OpenAI does, with scripted ``faults``, switchable ``defects`` and a
request ``log``. Importing this package is cheap: werkzeug loads when a server starts, Pillow
when an image is made, and openai never.

A server started with an admin key (``serve --admin-key-env VAR``) also serves a control API
under ``/_admin/``; :class:`RemoteReference` drives it with the same names as a local server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_imagegen.reference.faults import DEFECTS, FAULTS, DefectSet, Fault, FaultScript
from pytest_imagegen.reference.log import LoggedRequest, RequestLog, key_digest, mask_key
from pytest_imagegen.reference.server import (
    DEFAULT_API_KEY,
    DEFAULT_CHAT_MODELS,
    DEFAULT_MODEL,
    RELAY_ALIASES,
    ReferenceServer,
    ReferenceServerError,
    default_models,
    parse_latency,
)

__all__ = [
    "DEFAULT_API_KEY",
    "DEFAULT_CHAT_MODELS",
    "DEFAULT_MODEL",
    "DEFECTS",
    "FAULTS",
    "RELAY_ALIASES",
    "DefectSet",
    "Fault",
    "FaultScript",
    "LoggedRequest",
    "ReferenceServer",
    "ReferenceServerError",
    "RemoteReference",
    "RemoteReferenceError",
    "RequestLog",
    "default_models",
    "key_digest",
    "mask_key",
    "parse_latency",
]

if TYPE_CHECKING:
    from pytest_imagegen.reference.remote import RemoteReference, RemoteReferenceError


def __getattr__(name: str) -> Any:
    # The remote client loads urllib's HTTP stack: only when asked for.
    if name in ("RemoteReference", "RemoteReferenceError"):
        from pytest_imagegen.reference import remote

        return getattr(remote, name)
    raise AttributeError(f"module 'pytest_imagegen.reference' has no attribute {name!r}")
