"""The reference server's control API: drive a server this process did not start.

Served under ``/_admin/`` only when the server was given an admin key
(``python -m pytest_imagegen serve --admin-key-env VAR``); without one those paths are
ordinary unknown URLs (404). Every call needs ``Authorization: Bearer <admin key>``.
Admin calls are never written to the request log.

======  ====================  =====================================================
GET     /_admin/state         faults pending, defects, latency, log size, errors
POST    /_admin/faults        queue a fault: ``{"name", "times", "model", "quality",
                              "prompt", "options": {...}}``
DELETE  /_admin/faults        remove every queued fault
PUT     /_admin/defects       ``{"defects": [...]}`` replaces the defects
PUT     /_admin/latency       ``{"latency": 2}`` or ``{"latency": {"low": 0.5}}``
GET     /_admin/log           ``?since=N``: the requests from index N on
DELETE  /_admin/log           forget the logged requests
POST    /_admin/reset         back to the start-up state (faults, log, defects, latency)
======  ====================  =====================================================

:class:`pytest_imagegen.reference.remote.RemoteReference` is the client.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from pytest_imagegen.reference.faults import Fault
    from pytest_imagegen.reference.host import Host

_MAX_ADMIN_BODY = 1024 * 1024


class _AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def fault_to_dict(fault: Fault) -> dict[str, Any]:
    """A queued fault as plain data."""
    return {
        "name": fault.name,
        "times": fault.times,
        "model": fault.model,
        "quality": fault.quality,
        "prompt": fault.prompt,
        "options": dict(fault.options),
        "hits": fault.hits,
    }


def _respond(start_response: Callable[..., Any], status: int, payload: Any) -> Iterable[bytes]:
    body = json.dumps(payload).encode("utf-8")
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def _body(environ: Mapping[str, Any]) -> dict[str, Any]:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    raw = environ["wsgi.input"].read(min(max(length, 0), _MAX_ADMIN_BODY)) if length else b""
    if not raw:
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _AdminError(400, "the body is not JSON") from None
    if not isinstance(doc, dict):
        raise _AdminError(400, "the body must be a JSON object")
    return doc


def _authorized(server: Host, environ: Mapping[str, Any]) -> bool:
    scheme, _, token = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
    expected = server.admin_key or ""
    return (
        bool(expected)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(token.strip().encode(), expected.encode())
    )


def state(server: Host) -> dict[str, Any]:
    """What ``GET /_admin/state`` answers."""
    return {
        "faults": [fault_to_dict(f) for f in server.faults.pending],
        "defects": sorted(server.defects),
        "latency": dict(server.latency),
        "log_size": len(server.log),
        "errors": [repr(e) for e in server.errors],
        "accept_any_key": server.accept_any_key,
    }


def handle_admin(
    server: Host, environ: Mapping[str, Any], start_response: Callable[..., Any]
) -> Iterable[bytes]:
    """Answer one control-API request (the caller checked the server has an admin key)."""
    if not _authorized(server, environ):
        return _respond(
            start_response,
            401,
            {"error": {"message": "the control API needs 'Authorization: Bearer <admin key>'"}},
        )
    method = str(environ.get("REQUEST_METHOD", "GET")).upper()
    what = str(environ.get("PATH_INFO", "")).removeprefix("/_admin/").strip("/")
    try:
        status, payload = _dispatch(server, method, what, environ)
    except _AdminError as exc:
        status, payload = exc.status, {"error": {"message": exc.message}}
    except (ValueError, TypeError) as exc:  # refused faults, defects or latency
        status, payload = 400, {"error": {"message": str(exc)}}
    return _respond(start_response, status, payload)


def _dispatch(server: Host, method: str, what: str, environ: Mapping[str, Any]) -> tuple[int, Any]:
    if (method, what) == ("GET", "state"):
        return 200, state(server)
    if (method, what) == ("POST", "faults"):
        body = _body(environ)
        options = body.get("options") or {}
        if not isinstance(options, dict):
            raise _AdminError(400, "options must be an object")
        name = body.get("name")
        if not isinstance(name, str):
            raise _AdminError(400, "name must name a fault (see FAULTS)")
        fault = server.faults.add(
            name,
            times=body.get("times", 1),
            model=body.get("model"),
            quality=body.get("quality"),
            prompt=body.get("prompt"),
            **options,
        )
        return 201, {"fault": fault_to_dict(fault)}
    if (method, what) == ("GET", "faults"):
        return 200, {"faults": [fault_to_dict(f) for f in server.faults]}
    if (method, what) == ("DELETE", "faults"):
        server.faults.clear()
        return 200, {"faults": []}
    if (method, what) == ("PUT", "defects"):
        names = _body(environ).get("defects")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _AdminError(400, "defects must be a list of defect names")
        from pytest_imagegen.reference.faults import DefectSet

        chosen = DefectSet(names)  # refuses unknown names before anything changes
        server.defects.clear()
        server.defects.update(chosen)
        return 200, {"defects": sorted(server.defects)}
    if (method, what) == ("PUT", "latency"):
        body = _body(environ)
        if "latency" not in body:
            raise _AdminError(400, "give the latency as {'latency': SECONDS or {QUALITY: SECONDS}}")
        server.latency = body["latency"]
        return 200, {"latency": dict(server.latency)}
    if (method, what) == ("GET", "log"):
        query = parse_qs(str(environ.get("QUERY_STRING", "")))
        try:
            since = max(0, int(query.get("since", ["0"])[0]))
        except ValueError:
            raise _AdminError(400, "since must be a whole number") from None
        items = server.log.snapshot()
        return 200, {"size": len(items), "requests": [r.to_dict() for r in items[since:]]}
    if (method, what) == ("DELETE", "log"):
        server.log.clear()
        return 200, {"size": 0}
    if (method, what) == ("POST", "reset"):
        server.reset()
        return 200, state(server)
    raise _AdminError(404, f"no control-API call {method} /_admin/{what}")
