"""What the WSGI app and the control API need from the server that runs them.

``ReferenceServer`` satisfies :class:`Host`; the app (``app.py``) and the control API
(``admin.py``) name this protocol instead of the server, so that the server can import
them without either importing it back.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pytest_imagegen.profiles import Profile
    from pytest_imagegen.reference.faults import DefectSet, FaultScript
    from pytest_imagegen.reference.log import RequestLog


class Host(Protocol):
    """The server's configuration, its scripted faults and defects, the request log, the
    image store and the errors it hit."""

    api_keys: tuple[str, ...]
    accept_any_key: bool
    admin_key: str | None
    models: Mapping[str, Profile]
    deployments: dict[str, str]  # Azure-style deployment name -> model
    chat_models: tuple[str, ...]
    default_model: str
    secret_headers: tuple[str, ...]
    max_stall_s: float
    stream_interval_s: float  # the least time between two stream events
    max_files: int
    defects: DefectSet
    faults: FaultScript
    log: RequestLog
    errors: list[BaseException]

    @property
    def latency(self) -> Mapping[str, float]: ...
    @latency.setter
    def latency(self, value: float | str | Mapping[str, float]) -> None: ...
    @property
    def release(self) -> threading.Event: ...
    @property
    def served_model_names(self) -> list[str]: ...
    def latency_for(self, quality: str) -> float: ...
    def model_kind(self, model: str) -> str: ...
    def resolve_model(self, model: Any, body: Mapping[str, Any]) -> tuple[str, Profile | None]: ...
    def record_error(self, exc: BaseException) -> None: ...
    def store_image(self, data: bytes, fmt: str, *, host: str) -> str: ...
    def stored_image(self, name: str) -> tuple[bytes, str] | None: ...
    def reset(self) -> None: ...
