"""The reference endpoint: an OpenAI-compatible image server on loopback with fault scripting.

``ReferenceServer`` serves ``POST /v1/images/generations``, ``POST /v1/chat/completions`` and
``GET /v1/models`` as OpenAI does, with scripted ``faults``, switchable ``defects`` and a
request ``log``. Importing this package is cheap: werkzeug loads when a server starts, Pillow
when an image is made, and openai never.
"""

from __future__ import annotations

from pytest_imagegen.reference.faults import DEFECTS, FAULTS, DefectSet, Fault, FaultScript
from pytest_imagegen.reference.log import LoggedRequest, RequestLog, mask_key
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
    "RequestLog",
    "default_models",
    "mask_key",
    "parse_latency",
]
