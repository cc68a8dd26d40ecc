"""The reference server's WSGI application: routing, auth, validation, images and faults.

Everything a client can observe is decided here; ``server.py`` only runs it on a socket.
Wording, status codes and envelopes follow OpenAI's (the spec and real bodies are in
``tests/data``); relay- and gateway-style answers exist only as scripted faults.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from pytest_imagegen.reference.faults import FAULT_KINDS, Fault
from pytest_imagegen.reference.log import (
    LoggedRequest,
    credential_of,
    is_secret_header,
    key_digest,
    mask_header,
    mask_key,
)
from pytest_imagegen.reference.wire import (
    MSG_BAD_JSON,
    Abort,
    Reply,
    _image,
    _json,
    _uncompressed_png,
    msg_model_not_found,
)

if TYPE_CHECKING:
    from pytest_imagegen.profiles import Profile
    from pytest_imagegen.reference.host import Host

# One line per finished request, for `python -m pytest_imagegen serve` (off unless configured).
access_log = logging.getLogger("pytest_imagegen.reference.access")

API_KEYS_URL = "https://platform.openai.com/account/api-keys"
MSG_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with "
    "blank username) if you're accessing the API from your browser and are prompted for a "
    f"username. You can obtain an API key from {API_KEYS_URL}."
)
MSG_SERVER_ERROR = "The server had an error while processing your request. Sorry about that!"
MSG_OVERLOADED = "The engine is currently overloaded, please try again later"
MSG_QUOTA = (
    "You exceeded your current quota, please check your plan and billing details. For more "
    "information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors."
)
MSG_RATE_LIMIT = (
    "Rate limit exceeded for images per minute in organization org-imagegen-reference. "
    "Limit: 5/1min. Current: 6/1min. Please visit "
    "https://platform.openai.com/docs/guides/rate-limits to learn how to increase your rate limit."
)
MSG_NOT_CHAT = (
    "This is not a chat model and thus not supported in the v1/chat/completions endpoint. "
    "Did you mean to use v1/completions?"
)
MSG_DALLE_POLICY = (
    "Your request was rejected as a result of our safety system. Your prompt may contain text "
    "that is not allowed by our safety system."
)


def msg_bad_key(key: str) -> str:
    return (
        f"Incorrect API key provided: {mask_key(key)}. You can find your API key at {API_KEYS_URL}."
    )


def msg_org_verification(model: str) -> str:
    return (
        f"Your organization must be verified to use the model `{model}`. Please go to: "
        "https://platform.openai.com/settings/organization/general and click on Verify "
        "Organization. If you just verified, it can take up to 15 minutes for access to propagate."
    )


# Azure OpenAI's answers where its gateway, not the model, refuses (bodies as Azure sends
# them; see tests/data/azure-errors.json).
MSG_AZURE_ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
    "a valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)
MSG_AZURE_NO_DEPLOYMENT = (
    "The API deployment for this resource does not exist. If you created the deployment within "
    "the last 5 minutes, please wait a moment and try again."
)
MSG_AZURE_NOT_FOUND = "Resource not found"
# /openai/deployments/{deployment}/{rest} and /openai/{rest} (no deployment: /models).
_AZURE_PATH_RE = re.compile(r"^/openai(?:/deployments/(?P<deployment>[^/]+))?(?P<rest>/.*)$")


def msg_no_channel(model: str) -> str:
    return f"当前分组 default 下对于模型 {model} 无可用渠道"


_HTML_PAGE = (
    "<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {phrase}</h1></center>\r\n{detail}<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)

# Sizes the ImagesResponse schema allows in its closed `size` enum; other sizes (gpt-image-2
# custom sizes) are left out of the response rather than breaking the published schema.
RESPONSE_SIZES = frozenset({"1024x1024", "1024x1536", "1536x1024"})
RESPONSE_QUALITIES = frozenset({"low", "medium", "high"})
OUTPUT_FORMATS = ("png", "jpeg", "webp")
# What `auto` resolves to: the size and quality a GPT-image model reports back.
AUTO_SIZE = "1024x1024"
AUTO_QUALITY = "high"
# Request keys that make OpenAI pick a GPT-image model when `model` is left out.
_GPT_IMAGE_ONLY_KEYS = frozenset(
    {"background", "moderation", "output_compression", "output_format", "stream", "partial_images"}
)
# Image output tokens per 1024x1024 image (OpenAI's published figures for gpt-image-1).
_OUTPUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160}
_OUTPUT_TOKENS_BY_SIZE = {
    "1024x1536": {"low": 408, "medium": 1584, "high": 6240},
    "1536x1024": {"low": 400, "medium": 1568, "high": 6208},
}
_SIZE_RE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
# Largest image the server makes (4096x4096): gpt-image-2's 3840x2160 fits, a custom
# profile's 16384x16384 would not fit in memory.
MAX_PIXELS = 4096 * 4096
# How often a wait checks whether the client hung up.
_POLL_S = 0.05
# Largest request body read; the Images API's JSON bodies are tiny.
_MAX_BODY = 64 * 1024 * 1024
_FILES_PREFIX = "/v1/files/images/"
#: Where the control API lives (only when the server has an admin key).
ADMIN_PREFIX = "/_admin/"


@dataclass
class Received:
    """One request being handled."""

    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any
    json_ok: bool
    sock: socket.socket | None
    release: threading.Event
    logged: LoggedRequest
    host: str
    azure: bool = False  # an Azure-style path (/openai/...)
    # multipart/form-data: the text fields and the files (field name, filename, type, bytes)
    form: dict[str, str] | None = None
    files: list[tuple[str, str | None, str, bytes]] = field(default_factory=list)
    # a stream fault taken for this request (stream_stall, stream_no_completed, ...)
    stream_fault: Fault | None = None
    # the normal answer to this request, for faults that answer normally in the end
    # (generation by default; the edits route sets its own)
    produce: Callable[[Received], Reply] | None = None


@dataclass
class Generation:
    """The resolved parameters of one image generation."""

    profile: Profile
    model: str
    prompt: str
    n: int
    width: int
    height: int
    quality: str  # concrete quality (auto resolved)
    fmt: str
    response_format: str  # b64_json | url
    background: str
    stream: bool = False
    partial_images: int = 0
    kind: str = "image_generation"  # the stream events' prefix: image_generation | image_edit

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"


def _parse_size(value: Any) -> tuple[int, int] | None:
    if not isinstance(value, str):
        return None
    match = _SIZE_RE.match(value)
    if not match:
        return None
    width, height = int(match.group(1)), int(match.group(2))
    return (width, height) if width >= 1 and height >= 1 else None


def _parse_multipart(
    raw: bytes, content_type: str
) -> tuple[dict[str, str], list[tuple[str, str | None, str, bytes]]] | None:
    """The text fields and files of a multipart body (werkzeug's parser); None if broken."""
    import io

    from werkzeug.formparser import parse_form_data

    environ = {
        "REQUEST_METHOD": "POST",
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(raw)),
        "wsgi.input": io.BytesIO(raw),
    }
    try:
        _, form, files = parse_form_data(environ, silent=False)
    except Exception:  # werkzeug raises its own errors for broken bodies
        return None
    fields = {key: form[key] for key in form}
    uploads = [
        (name, storage.filename, storage.mimetype or "application/octet-stream", storage.read())
        for name, storage in files.items(multi=True)
    ]
    return fields, uploads


def _read_body(environ: Mapping[str, Any]) -> bytes:
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        try:
            size = int(length)
        except ValueError:
            return b""
        return bytes(stream.read(min(max(size, 0), _MAX_BODY)))
    if environ.get("wsgi.input_terminated"):
        return bytes(stream.read(_MAX_BODY))
    return b""


def _headers(environ: Mapping[str, Any]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").lower()] = value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            headers[key.replace("_", "-").lower()] = value
    return headers


def _error_fields(body: bytes) -> dict[str, Any] | None:
    """``type``, ``code`` and ``param`` of an OpenAI error envelope (None for other bodies)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        return None
    return {k: error.get(k) for k in ("type", "code", "param")}


def client_gone(sock: socket.socket | None) -> bool:
    """Whether the peer closed its end (readable with nothing to read, or an error)."""
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


FaultReply = Callable[["ReferenceApp", Received, Fault, dict[str, Any], str], Reply]
ShapedFault = Callable[["ReferenceApp", Received, "Generation"], Reply]

#: How each fault of ``faults.FAULT_KINDS`` is answered: one entry per fault, under the
#: same name (``SHAPED_FAULTS`` for the kinds marked ``shaped``).
FAULT_REPLIES: dict[str, FaultReply] = {}
SHAPED_FAULTS: dict[str, ShapedFault] = {}


def _fault_reply(*names: str) -> Callable[[FaultReply], FaultReply]:
    def register(method: FaultReply) -> FaultReply:
        FAULT_REPLIES.update(dict.fromkeys(names, method))
        return method

    return register


def _shaped_fault(name: str) -> Callable[[ShapedFault], ShapedFault]:
    def register(method: ShapedFault) -> ShapedFault:
        SHAPED_FAULTS[name] = method
        return method

    return register


class ReferenceApp:
    """The WSGI callable; all state lives on the server that runs it (see
    :class:`~pytest_imagegen.reference.host.Host`)."""

    def __init__(self, server: Host) -> None:
        self.server = server
        self._routes: dict[tuple[str, str], Callable[[Received], Reply]] = {
            ("POST", "/v1/images/generations"): self._generations,
            ("POST", "/v1/images/edits"): self._edits,
            ("POST", "/v1/images/variations"): self._variations,
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/responses"): self._responses,
            ("GET", "/v1/models"): self._models,
        }

    # -- WSGI entry --------------------------------------------------------------------

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        call: Received | None = None
        path = environ.get("PATH_INFO", "") or "/"
        if path.startswith(ADMIN_PREFIX) and self.server.admin_key is not None:
            # The control API: never logged, so the log shows only what clients sent.
            from pytest_imagegen.reference.admin import handle_admin

            return handle_admin(self.server, environ, start_response)
        try:
            call = self._receive(environ)
            reply = self._route(call)
            return self._deliver(call, reply, start_response)
        except Abort:
            if call is not None:
                self._finished(call)
            raise
        except Exception as exc:  # a bug in the server: answer 500, re-raise in check()
            self.server.record_error(exc)
            reply = self._error(500, MSG_SERVER_ERROR, type="server_error")
            if call is None:
                start_response("500 Internal Server Error", [("Content-Type", "application/json")])
                return [reply.body]
            return self._deliver(call, reply, start_response)

    def _receive(self, environ: dict[str, Any]) -> Received:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "") or "/"
        # Azure paths are answered by the OpenAI routes they stand for.
        azure = _AZURE_PATH_RE.match(path)
        route = f"/v1{azure.group('rest')}" if azure else path
        deployment = azure.group("deployment") if azure else None
        headers = _headers(environ)
        raw = _read_body(environ)
        body: Any = None
        json_ok = False
        form: dict[str, str] | None = None
        files: list[tuple[str, str | None, str, bytes]] = []
        if raw and "multipart/form-data" in headers.get("content-type", "").lower():
            parsed = _parse_multipart(raw, headers["content-type"])
            if parsed is not None:
                form, files = parsed
                # What the log shows: the fields, and each file by name, type and size.
                body = {**form}
                for name, filename, content_type, data in files:
                    body.setdefault(name, []).append(
                        {"filename": filename, "content_type": content_type, "bytes": len(data)}
                    )
        elif raw:
            try:
                body = json.loads(raw)
                json_ok = True
            except (ValueError, UnicodeDecodeError):
                body = None
        model = body.get("model") if isinstance(body, dict) else None
        if deployment is not None:
            model = self.server.deployments.get(deployment, deployment)
        secret = [name for name in headers if is_secret_header(name, self.server.secret_headers)]
        logged = LoggedRequest(
            method=method,
            path=path,
            query=environ.get("QUERY_STRING", ""),
            headers={
                name: mask_header(name, value)
                if is_secret_header(name, self.server.secret_headers)
                else value
                for name, value in headers.items()
            },
            body=body,
            body_bytes=len(raw),
            time=time.time(),
            model=model if isinstance(model, str) else None,
            auth=self._auth_state(headers, azure=azure is not None),
            route=route,
            deployment=deployment,
            key_digests=tuple(
                key_digest(credential_of(headers[name]))
                for name in secret
                if name != "cookie" and credential_of(headers[name])
            ),
        )
        self.server.log.append(logged)
        host = (
            headers.get("host")
            or f"{environ.get('SERVER_NAME', '127.0.0.1')}:{environ.get('SERVER_PORT', '')}"
        )
        return Received(
            method=method,
            path=route,
            azure=azure is not None,
            headers=headers,
            raw=raw,
            body=body,
            json_ok=json_ok,
            sock=environ.get("werkzeug.socket"),
            release=self.server.release,
            logged=logged,
            host=host,
            form=form,
            files=files,
        )

    def _route(self, call: Received) -> Reply:
        if call.azure and (refused := self._azure_gate(call)) is not None:
            return refused
        handler = self._routes.get((call.method, call.path))
        if handler is not None:
            return handler(call)
        if call.method == "GET" and call.path.startswith("/v1/models/"):
            return self._model(call, call.path[len("/v1/models/") :])
        if call.method == "GET" and call.path.startswith(_FILES_PREFIX):
            return self._file(call, call.path[len(_FILES_PREFIX) :])
        return self._error(404, f"Invalid URL ({call.method} {call.path})")

    # -- sending -------------------------------------------------------------------------

    def _deliver(
        self, call: Received, reply: Reply, start_response: Callable[..., Any]
    ) -> Iterator[bytes]:
        call.logged.status = reply.status
        if reply.status >= 400:
            call.logged.retry_after = next(
                (v for k, v in reply.headers if k.lower() == "retry-after"), None
            )
            call.logged.error = _error_fields(reply.body)
        try:
            phrase = HTTPStatus(reply.status).phrase
        except ValueError:
            phrase = ""
        headers = [("Content-Type", reply.content_type)]
        if reply.delivery != "events":  # a stream's length is not known up front (chunked)
            headers.append(("Content-Length", str(len(reply.body))))
        headers += [("x-request-id", f"req_{uuid.uuid4().hex}"), *reply.headers]
        start_response(f"{reply.status} {phrase}".strip(), headers)
        return self._body(call, reply)

    def _body(self, call: Received, reply: Reply) -> Iterator[bytes]:
        try:
            if reply.delivery == "events":
                yield b""  # status line and headers go out now, as OpenAI's do
                for wait_s, piece in reply.events:
                    if wait_s > 0 and not self._wait(call, wait_s):
                        raise Abort("stream interrupted")
                    yield piece
                if reply.stall_after:
                    self._wait(call, self.server.max_stall_s)
                    raise Abort("stream stalled")
                return
            if reply.delivery == "truncated":
                # The full Content-Length was promised; send half, then hang up.
                yield reply.body[: len(reply.body) // 2]
                raise Abort("truncated body")
            if reply.delivery == "slow_body":
                yield b""  # status line and headers go out now
                pieces = max(1, min(len(reply.body), 20))
                step = -(-len(reply.body) // pieces)
                for start in range(0, len(reply.body), step):
                    if not self._wait(call, reply.seconds / pieces):
                        raise Abort("slow body interrupted")
                    yield reply.body[start : start + step]
                return
            yield reply.body
        except Abort:
            raise
        except Exception as exc:  # werkzeug would only log it: keep it for check()
            self.server.record_error(exc)
            raise
        finally:
            self._finished(call)

    def _finished(self, call: Received) -> None:
        logged = call.logged
        if logged.done:
            return
        logged.finished = time.time()
        logged._done.set()
        if access_log.isEnabledFor(logging.INFO):
            status = logged.status if logged.status is not None else "dropped"
            extra = f" model={logged.model}" if logged.model else ""
            extra += f" fault={logged.fault}" if logged.fault else ""
            elapsed = time.time() - logged.time
            access_log.info(
                "%s %s -> %s%s (%.2f s)", call.method, call.path, status, extra, elapsed
            )

    def _wait(self, call: Received, seconds: float) -> bool:
        """Sleep ``seconds``; False early if the server releases waiters or the client hangs up."""
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            if call.release.wait(min(left, _POLL_S)):
                return False
            if client_gone(call.sock):
                return False

    # -- errors --------------------------------------------------------------------------

    def _error(
        self,
        status: int,
        message: str | None,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> Reply:
        """An error answer in OpenAI's envelope, reshaped by the error defects if switched on."""
        defects = self.server.defects
        headers = [
            (k, v)
            for k, v in headers
            if not (k.lower() == "retry-after" and "no_retry_after" in defects)
        ]
        if "html_errors" in defects:
            return self._html(status, message or "", headers)
        if "non_openai_envelope" in defects:
            return Reply(status, _json({"detail": message}), headers=headers)
        error: dict[str, Any] = {"message": message, "type": type, "param": param, "code": code}
        error.update(extra or {})
        return Reply(status, _json({"error": error}), headers=headers)

    def _html(
        self, status: int, message: str = "", headers: Iterable[tuple[str, str]] = ()
    ) -> Reply:
        phrase = HTTPStatus(status).phrase
        if status == 504:
            phrase = "Gateway Time-out"  # nginx's spelling
        detail = f"<p>{html.escape(message)}</p>\r\n" if message else ""
        page = _HTML_PAGE.format(status=status, phrase=phrase, detail=detail)
        return Reply(status, page.encode(), content_type="text/html", headers=list(headers))

    def _azure_gate(self, call: Received) -> Reply | None:
        """What Azure's front door answers before the model sees a request (None: pass on).

        No ``api-version``: 404 Resource not found; a missing or wrong key: 401 access
        denied; an unknown deployment: 404 DeploymentNotFound. A known deployment's model
        replaces the body's ``model``, as Azure serves whatever is deployed there.
        """
        from urllib.parse import parse_qs

        if not parse_qs(call.logged.query).get("api-version"):
            return self._azure_error(404, "404", MSG_AZURE_NOT_FOUND)
        if call.logged.auth != "ok":
            return self._azure_error(401, "401", MSG_AZURE_ACCESS_DENIED)
        deployment = call.logged.deployment
        if deployment is None:
            return None
        model = self.server.deployments.get(deployment)
        if model is None:
            return self._azure_error(404, "DeploymentNotFound", MSG_AZURE_NO_DEPLOYMENT)
        if isinstance(call.body, dict):
            call.body = {**call.body, "model": model}  # the log keeps what was sent
        if call.form is not None:  # multipart (edits, variations): the model is a form field
            call.form = {**call.form, "model": model}
        return None

    def _azure_error(self, status: int, code: str, message: str) -> Reply:
        return Reply(status, _json({"error": {"code": code, "message": message}}))

    def _auth_state(self, headers: Mapping[str, str], *, azure: bool = False) -> str:
        if azure and headers.get("api-key", "").strip():
            if self.server.accept_any_key:
                return "ok"
            return "ok" if headers["api-key"].strip() in self.server.api_keys else "invalid"
        scheme, _, token = headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return "missing"
        if self.server.accept_any_key:
            return "ok"
        return "ok" if token in self.server.api_keys else "invalid"

    def _auth_error(self, call: Received) -> Reply | None:
        """The 401 for a missing or wrong key, or None when the key is accepted."""
        state = call.logged.auth
        if state == "ok":
            return None
        if "auth_wrong_status" in self.server.defects:
            return self._error(500, "Internal server error", type="server_error")
        if state == "missing":
            return self._error(401, MSG_NO_KEY)
        token = call.headers.get("authorization", "").partition(" ")[2].strip()
        return self._error(401, msg_bad_key(token), code="invalid_api_key")

    def _json_error(self, call: Received) -> Reply | None:
        if call.json_ok:
            return None
        return self._error(400, MSG_BAD_JSON)

    # -- models ----------------------------------------------------------------------------

    def _models(self, call: Received) -> Reply:
        if (denied := self._auth_error(call)) is not None:
            return denied
        data = [self._model_object(name) for name in self.server.served_model_names]
        return Reply(200, _json({"object": "list", "data": data}))

    def _model(self, call: Received, name: str) -> Reply:
        if (denied := self._auth_error(call)) is not None:
            return denied
        if name not in self.server.served_model_names:
            return self._error(404, msg_model_not_found(name), code="model_not_found")
        return Reply(200, _json(self._model_object(name)))

    def _model_object(self, name: str) -> dict[str, Any]:
        owner = "system" if name in self.server.models else "openai"
        return {"id": name, "object": "model", "created": 1700000000, "owned_by": owner}

    def _file(self, call: Received, name: str) -> Reply:
        stored = self.server.stored_image(name)
        if stored is None:
            return self._error(
                404,
                f"No image {name!r} here: image URLs are kept for the newest "
                f"{self.server.max_files} images only.",
            )
        data, content_type = stored
        return Reply(200, data, content_type=content_type)

    # -- chat completions ------------------------------------------------------------------

    def _chat(self, call: Received) -> Reply:
        if (denied := self._auth_error(call)) is not None:
            return denied
        if (bad := self._json_error(call)) is not None:
            return bad
        body = call.body
        if not isinstance(body, dict):
            return self._error(
                400, "Invalid type for 'body': expected an object.", code="invalid_type"
            )
        model = body.get("model")
        if model is None:
            return self._error(
                400,
                "Missing required parameter: 'model'.",
                param="model",
                code="missing_required_parameter",
            )
        if not isinstance(model, str):
            return self._error(
                400,
                "Invalid type for 'model': expected a string.",
                param="model",
                code="invalid_type",
            )
        server = self.server
        if model not in server.chat_models:
            if server.model_kind(model) == "image" and "image_model_on_chat" not in server.defects:
                return self._error(404, MSG_NOT_CHAT, param="model", code="model_not_found")
            if server.model_kind(model) != "image":
                return self._error(404, msg_model_not_found(model), code="model_not_found")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._error(
                400,
                "Missing required parameter: 'messages'.",
                param="messages",
                code="missing_required_parameter",
            )
        content = "Hello from the pytest-imagegen reference server."
        created = int(time.time())
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        prompt_tokens = sum(
            len(str(m.get("content", ""))) // 4 + 4 for m in messages if isinstance(m, dict)
        )
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 10,
            "total_tokens": prompt_tokens + 10,
        }
        if body.get("stream") is True:
            base = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
            }
            chunks = [
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": content},
                            "finish_reason": None,
                        }
                    ],
                },
                {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            ]
            text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            return Reply(200, text.encode(), content_type="text/event-stream")
        completion = {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
        return Reply(200, _json(completion))

    # -- image generations -----------------------------------------------------------------

    def _generations(self, call: Received) -> Reply:
        server = self.server
        body = call.body if isinstance(call.body, dict) else {}
        model = body.get("model")
        prompt = body.get("prompt")
        requested_quality = body.get("quality")
        qualities = [
            q for q in (requested_quality, self._quality_guess(body)) if isinstance(q, str)
        ]
        fault = server.faults.take(
            model=model if isinstance(model, str) else None,
            qualities=qualities,
            prompt=prompt if isinstance(prompt, str) else None,
        )
        if fault is not None:
            call.logged.fault = fault.name
            return self._fault(call, fault)
        if "stalls" in server.defects:
            call.logged.fault = "stalls"  # the defect, told apart from a scripted stall
            return self._fault(call, Fault("stall", times=None))
        return self._generate(call)

    def _quality_guess(self, body: Mapping[str, Any]) -> str | None:
        """The concrete quality a request resolves to, for fault matching (None if unknown)."""
        try:
            _, profile = self.server.resolve_model(body.get("model"), body)
        except Exception:
            return None
        if profile is None:
            return None
        quality = body.get("quality") or profile.default_quality
        return AUTO_QUALITY if quality == "auto" else quality

    def _generate(self, call: Received, *, validate: bool = True) -> Reply:
        """The normal answer: auth, JSON, model, validation, latency, images."""
        server = self.server
        if (denied := self._auth_error(call)) is not None:
            return denied
        if (bad := self._json_error(call)) is not None:
            return bad
        body = call.body
        if not isinstance(body, dict):
            kind = type(body).__name__
            return self._error(
                400,
                f"Invalid type for request body: expected an object, but got {kind} instead.",
                code="invalid_type",
            )
        model = body.get("model")
        if model is None and "no_validation" not in server.defects:
            # No default model: the spec's default, dall-e-2, is retired (as request_builder says).
            return self._error(
                400,
                "Missing required parameter: 'model'.",
                param="model",
                code="missing_required_parameter",
            )
        if model is not None and not isinstance(model, str):
            return self._error(
                400,
                "Invalid type for 'model': expected a string.",
                param="model",
                code="invalid_type",
            )
        name, profile = server.resolve_model(model, body)
        if profile is None:
            if server.model_kind(name) == "chat":
                if "accepts_chat_model" not in server.defects:
                    # OpenAI's answer to a chat model on the images endpoint (real-errors.json).
                    return self._error(
                        400,
                        f"Invalid model {name}. The model argument should be left blank.",
                        param="model",
                    )
            elif "unknown_model_ok" not in server.defects:
                return self._error(404, msg_model_not_found(name), code="model_not_found")
            # Served as the default model, and judged as a request for it.
            profile = server.models[server.default_model]
            checked = {**body, "model": server.default_model}
        else:
            checked = body
        quality = checked.get("quality")
        if (
            "refuses_gpt_image_quality" in server.defects
            and profile.family == "gpt-image"
            and quality in ("low", "medium", "high")
        ):
            return self._error(
                400,
                f"Invalid value: '{quality}'. Supported values are: 'standard' and 'hd'.",
                param="quality",
                code="invalid_value",
            )
        if validate and "no_validation" not in server.defects:
            from pytest_imagegen.request_builder import validate_request

            violations = validate_request(checked, profile)
            if violations:
                error = violations[0].error_body()["error"]
                param = None if "wrong_error_param" in server.defects else error.get("param")
                return self._error(
                    400,
                    error.get("message"),
                    type=error.get("type", "invalid_request_error"),
                    param=param,
                    code=error.get("code"),
                )
        gen = self._resolve(body, profile, name)
        if gen.width * gen.height > MAX_PIXELS:
            # Only custom profiles allow sizes this large; making them would exhaust memory.
            return self._error(
                400,
                f"Invalid value: '{body.get('size')}'. The reference server makes images of at "
                f"most {MAX_PIXELS} pixels (e.g. 4096x4096); ask for a smaller size.",
                param="size",
                code="invalid_value",
            )
        # A stream answers at once and spreads the latency over its events.
        if not gen.stream and not self._wait(call, server.latency_for(gen.quality)):
            raise Abort("released while generating")
        return self._images(call, gen)

    def _resolve(self, body: Mapping[str, Any], profile: Profile, model: str) -> Generation:
        """Concrete generation parameters; tolerant, so shaping faults work on any body."""
        defects = self.server.defects
        prompt = body.get("prompt")
        prompt = prompt if isinstance(prompt, str) else ""
        n = body.get("n")
        n_max = max(profile.n_max, 10)  # a bound even when validation is off
        n = n if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= n_max else 1
        size = body.get("size") or profile.default_size
        parsed = _parse_size(AUTO_SIZE if size == "auto" else size) or (1024, 1024)
        stream = body.get("stream") is True and profile.streaming
        quality = body.get("quality") or profile.default_quality
        quality = AUTO_QUALITY if quality == "auto" else str(quality)
        if profile.output_formats:
            fmt = body.get("output_format") or "png"
            fmt = fmt if fmt in OUTPUT_FORMATS else "png"
        else:
            fmt = "png"
        if profile.response_formats:
            response_format = body.get("response_format") or profile.default_response_format
            if response_format not in ("url", "b64_json"):
                response_format = profile.default_response_format
        else:
            response_format = "b64_json"
        if stream:
            response_format = "b64_json"  # stream events carry base64 only
        background = "transparent" if body.get("background") == "transparent" else "opaque"
        if "drops_n" in defects:
            n = 1
        if "ignores_size" in defects:
            parsed = (1024, 1024)
        if "ignores_format" in defects:
            fmt = "png"
        partial = body.get("partial_images")
        return Generation(
            profile=profile,
            model=model,
            prompt=prompt,
            n=n,
            width=parsed[0],
            height=parsed[1],
            quality=quality,
            fmt=fmt,
            response_format=response_format,
            background=background,
            stream=stream,
            partial_images=partial if isinstance(partial, int) and 0 <= partial <= 3 else 0,
        )

    def _usage(self, gen: Generation, images: int) -> dict[str, Any]:
        per_image = _OUTPUT_TOKENS_BY_SIZE.get(gen.size, {}).get(gen.quality)
        if per_image is None:
            base = _OUTPUT_TOKENS.get(gen.quality, _OUTPUT_TOKENS["medium"])
            per_image = max(1, round(base * gen.width * gen.height / (1024 * 1024)))
        text_tokens = max(1, len(gen.prompt) // 4)
        output = per_image * images
        return {
            "input_tokens": text_tokens,
            "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"image_tokens": output, "text_tokens": 0},
            "total_tokens": text_tokens + output,
        }

    def _image_items(
        self, call: Received, gen: Generation, count: int, *, size: tuple[int, int] | None = None
    ) -> list[dict[str, Any]]:
        width, height = size or (gen.width, gen.height)
        items: list[dict[str, Any]] = []
        for i in range(count):
            # Different prompts give different images; so do the n images of one request.
            seed = gen.prompt if i == 0 else f"{gen.prompt}\n#{i}"
            data = _image(width, height, gen.fmt, seed)
            if gen.fmt == "png" and "uncompressed_png" in self.server.defects:
                data = _uncompressed_png(data)
            item: dict[str, Any] = {}
            if gen.response_format == "url":
                item["url"] = self.server.store_image(data, gen.fmt, host=call.host)
            else:
                item["b64_json"] = base64.b64encode(data).decode("ascii")
            if gen.profile.returns_revised_prompt:
                item["revised_prompt"] = f"A detailed, high-quality image of: {gen.prompt}"
            items.append(item)
        return items

    def _envelope(
        self, gen: Generation, data: list[dict[str, Any]], *, count: int
    ) -> dict[str, Any]:
        """``ImagesResponse``: GPT-image models add background, format, size, quality, usage."""
        response: dict[str, Any] = {"created": int(time.time()), "data": data}
        if gen.profile.family == "gpt-image":
            response["background"] = gen.background
            response["output_format"] = gen.fmt
            if gen.size in RESPONSE_SIZES:
                response["size"] = gen.size
            if gen.quality in RESPONSE_QUALITIES:
                response["quality"] = gen.quality
        if gen.profile.returns_usage and "no_usage" not in self.server.defects:
            response["usage"] = self._usage(gen, count)
        return response

    def _images(self, call: Received, gen: Generation) -> Reply:
        defects = self.server.defects
        count = gen.n + 1 if "extra_images" in defects else gen.n
        data = [] if "empty_data" in defects else self._image_items(call, gen, count)
        if "image_model_as_chat" in defects and not gen.stream:
            return self._chat_answer(call, gen, data)
        if gen.stream:
            from pytest_imagegen.reference.streams import stream_reply

            return stream_reply(self, call, gen, data)
        return Reply(200, _json(self._envelope(gen, data, count=count)))

    def _chat_answer(self, call: Received, gen: Generation, data: list[dict[str, Any]]) -> Reply:
        """The image_model_as_chat defect: a chat completion whose message links the images
        in Markdown, as relays answer that serve an image model through a chat model."""
        links = []
        for item in data:
            url = item.get("url")
            if not url:
                raw = base64.b64decode(item.get("b64_json") or "")
                url = self.server.store_image(raw, gen.fmt, host=call.host)
            links.append(f"![image]({url})")
        completion = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": gen.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "\n\n".join(links)},
                    "finish_reason": "stop",
                }
            ],
        }
        return Reply(200, _json(completion))

    # -- edits, variations, responses (in their own modules) --------------------------------

    def _edits(self, call: Received) -> Reply:
        from pytest_imagegen.reference.edits import edits

        return edits(self, call)

    def _variations(self, call: Received) -> Reply:
        from pytest_imagegen.reference.edits import variations

        return variations(self, call)

    def _responses(self, call: Received) -> Reply:
        from pytest_imagegen.reference.responses import responses

        return responses(self, call)

    # -- faults ----------------------------------------------------------------------------

    def _fault(
        self, call: Received, fault: Fault, produce: Callable[[Received], Reply] | None = None
    ) -> Reply:
        if produce is not None:
            call.produce = produce
        server = self.server
        body = call.body if isinstance(call.body, dict) else {}
        if FAULT_KINDS[fault.name].shaped:
            name_, profile = server.resolve_model(body.get("model"), body)
            gen = self._resolve(body, profile or server.models[server.default_model], name_)
            if gen.width * gen.height > MAX_PIXELS:
                gen.width, gen.height = 1024, 1024
            if not self._wait(call, server.latency_for(gen.quality)):
                raise Abort("released while generating")
            return SHAPED_FAULTS[fault.name](self, call, gen)
        named = body.get("model")
        model = named if isinstance(named, str) else server.default_model
        return FAULT_REPLIES[fault.name](self, call, fault, body, model)

    @_fault_reply("stall")
    def _stall(self, call: Received, fault: Fault, body: dict[str, Any], model: str) -> Reply:
        self._wait(call, min(float(fault.option("seconds")), self.server.max_stall_s))
        raise Abort("stall")

    @_fault_reply("connection_reset")
    def _connection_reset(
        self, call: Received, fault: Fault, body: dict[str, Any], model: str
    ) -> Reply:
        raise Abort("connection reset", reset=True)

    @_fault_reply("slow_headers")
    def _slow_headers(
        self, call: Received, fault: Fault, body: dict[str, Any], model: str
    ) -> Reply:
        if not self._wait(call, float(fault.option("seconds"))):
            raise Abort("slow headers interrupted")
        return self._normal(call)

    @_fault_reply("slow_body", "truncated_body")
    def _slow_delivery(
        self, call: Received, fault: Fault, body: dict[str, Any], model: str
    ) -> Reply:
        reply = self._normal(call)
        reply.delivery = "slow_body" if fault.name == "slow_body" else "truncated"
        reply.seconds = float(fault.option("seconds") or 0.0)
        return reply

    @_fault_reply("stream_stall", "stream_no_completed", "stream_buffered")
    def _stream_fault(
        self, call: Received, fault: Fault, body: dict[str, Any], model: str
    ) -> Reply:
        call.stream_fault = fault  # applied to the events when they are sent
        return self._normal(call)

    def _normal(self, call: Received) -> Reply:
        """The request's normal answer (after a delay, or to be sent in a broken way)."""
        return (call.produce or self._generate)(call)

    @_fault_reply("auth_error")
    def _auth_fault(self, call: Received, fault: Fault, body: dict[str, Any], model: str) -> Reply:
        token = call.headers.get("authorization", "").partition(" ")[2].strip()
        return self._error(401, msg_bad_key(token or "sk-none"), code="invalid_api_key")

    @_fault_reply("permission_error")
    def _permission_fault(
        self, call: Received, fault: Fault, body: dict[str, Any], model: str
    ) -> Reply:
        return self._error(403, msg_org_verification(model))

    @_fault_reply("model_not_found")
    def _model_fault(self, call: Received, fault: Fault, body: dict[str, Any], model: str) -> Reply:
        return self._error(404, msg_model_not_found(model), code="model_not_found")

    @_fault_reply("rate_limit")
    def _rate_limit(self, call: Received, fault: Fault, body: dict[str, Any], model: str) -> Reply:
        retry_after = fault.option("retry_after")
        if retry_after is None:  # the quota fault reshaped by quota_as_rate_limit
            retry_after = 1
        value = str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
        return self._error(
            429,
            MSG_RATE_LIMIT,
            type="requests",
            code="rate_limit_exceeded",
            headers=[("Retry-After", value)],
        )

    @_fault_reply("quota")
    def _quota(self, call: Received, fault: Fault, body: dict[str, Any], model: str) -> Reply:
        if "quota_as_rate_limit" in self.server.defects:
            return self._rate_limit(call, fault, body, model)
        return self._error(429, MSG_QUOTA, type="insufficient_quota", code="insufficient_quota")

    @_fault_reply("server_error")
    def _server_fault(
        self, call: Received, fault: Fault, body: dict[str, Any], model: str
    ) -> Reply:
        return self._error(500, MSG_SERVER_ERROR, type="server_error")

    @_fault_reply("bad_gateway_html")
    def _bad_gateway(self, call: Received, fault: Fault, body: dict[str, Any], model: str) -> Reply:
        return self._html(502)

    @_fault_reply("overloaded")
    def _overloaded(self, call: Received, fault: Fault, body: dict[str, Any], model: str) -> Reply:
        return self._error(503, MSG_OVERLOADED, type="server_error")

    @_fault_reply("no_channel")
    def _no_channel(self, call: Received, fault: Fault, body: dict[str, Any], model: str) -> Reply:
        request_id = time.strftime("%Y%m%d%H%M%S") + uuid.uuid4().hex[:12]
        return self._error(
            503,
            f"{msg_no_channel(model)} (request id: {request_id})",
            type="new_api_error",
            param="",
            code="model_not_found",
        )

    @_fault_reply("gateway_timeout_html")
    def _gateway_timeout(
        self, call: Received, fault: Fault, body: dict[str, Any], model: str
    ) -> Reply:
        return self._html(504)

    @_fault_reply("error_in_200")
    def _error_in_200(
        self, call: Received, fault: Fault, body: dict[str, Any], model: str
    ) -> Reply:
        error = {"message": MSG_SERVER_ERROR, "type": "server_error", "param": None, "code": None}
        return Reply(200, _json({"error": error}))

    @_fault_reply("content_policy")
    def _content_policy(
        self, call: Received, fault: Fault, body: dict[str, Any], model: str
    ) -> Reply:
        _, profile = self.server.resolve_model(body.get("model"), body)
        if profile is not None and profile.family == "dall-e":
            return self._error(400, MSG_DALLE_POLICY, code="content_policy_violation")
        request_id = str(uuid.uuid4())
        return self._error(
            400,
            "Your request was rejected by the safety system. If you believe this is an error, "
            f"contact us at help.openai.com and include the request ID {request_id}. "
            "safety_violations=[sexual].",
            type="image_generation_user_error",
            code="moderation_blocked",
            extra={"moderation_details": {"moderation_stage": "input", "categories": ["sexual"]}},
        )

    # The 200 faults with a broken payload, sent after the usual generation latency.

    @_shaped_fault("empty_data")
    def _empty_data(self, call: Received, gen: Generation) -> Reply:
        return Reply(200, _json(self._envelope(gen, [], count=0)))

    @_shaped_fault("fewer_images")
    def _fewer_images(self, call: Received, gen: Generation) -> Reply:
        count = gen.n - 1
        items = self._image_items(call, gen, count)
        return Reply(200, _json(self._envelope(gen, items, count=count)))

    @_shaped_fault("wrong_size")
    def _wrong_size(self, call: Received, gen: Generation) -> Reply:
        other = (1024, 1024) if (gen.width, gen.height) == (512, 512) else (512, 512)
        items = self._image_items(call, gen, gen.n, size=other)
        return Reply(200, _json(self._envelope(gen, items, count=gen.n)))

    @_shaped_fault("invalid_base64")
    def _invalid_base64(self, call: Received, gen: Generation) -> Reply:
        items = [{"b64_json": "iVBORw0KGgo!!not*base64~~" + "%" * 8} for _ in range(gen.n)]
        return Reply(200, _json(self._envelope(gen, items, count=gen.n)))

    @_shaped_fault("not_an_image")
    def _not_an_image(self, call: Received, gen: Generation) -> Reply:
        value = base64.b64encode(b"this is not an image, just some text bytes").decode()
        items = [{"b64_json": value} for _ in range(gen.n)]
        return Reply(200, _json(self._envelope(gen, items, count=gen.n)))

    @_shaped_fault("invalid_json")
    def _invalid_json(self, call: Received, gen: Generation) -> Reply:
        complete = _json(self._envelope(gen, self._image_items(call, gen, 1), count=1))
        return Reply(200, complete[: max(1, len(complete) // 2)])
