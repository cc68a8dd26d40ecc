"""``ReferenceServer``: an OpenAI-compatible image endpoint on loopback, for tests.

It runs werkzeug's threaded WSGI server in a background thread, so every request gets its
own thread and a slow (or stalled) request never holds up the others. werkzeug is imported
only when a server starts; Pillow only when an image is made.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeAlias

from pytest_imagegen.images import MIME_TYPES
from pytest_imagegen.reference.faults import MAX_WAIT_S, DefectSet, FaultScript
from pytest_imagegen.reference.log import LoggedRequest, RequestLog

if TYPE_CHECKING:
    from pytest_imagegen.profiles import Profile

logger = logging.getLogger("pytest_imagegen.reference")

#: werkzeug's threaded server with stop-time draining; the class is made on first start
#: (:func:`_server_class`), which keeps werkzeug out of plain imports.
_Server: TypeAlias = Any

DEFAULT_API_KEY = "sk-imagegen-reference-0000"
DEFAULT_MODEL = "gpt-image-1.5"
DEFAULT_CHAT_MODELS: tuple[str, ...] = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4o-all",
    "gpt-4.1",
    "gpt-4.1-mini",
)
# Relay-style aliases served next to the official names (one-api / new-api habits).
RELAY_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "gpt-image-1-vip": "gpt-image-1",
        "gpt-image-1-all": "gpt-image-1",
        "gpt-image-1.5-vip": "gpt-image-1.5",
        "gpt-image-2-all": "gpt-image-2",
        "dall-e-3-vip": "dall-e-3",
    }
)
# When a latency mapping has no entry for a quality, the nearest tier's entry is used.
_QUALITY_TIER = {"standard": "medium", "hd": "high", "auto": "high"}
_STOP_GRACE_S = 1.0  # how long stop() lets in-flight handlers finish before closing their sockets
_POLL_INTERVAL_S = 0.05  # accept-loop poll: stop() returns within about this


class ReferenceServerError(RuntimeError):
    """The reference server itself failed while handling a request (a bug, not a fault)."""


def default_models() -> dict[str, str]:
    """Every built-in image profile under its own name, plus the relay aliases."""
    from pytest_imagegen.profiles import PROFILES

    models = {name: name for name in PROFILES if name != "custom"}
    models.update(RELAY_ALIASES)
    return models


def parse_latency(value: float | str | Mapping[str, float]) -> dict[str, float]:
    """Normalize a latency spec to ``{quality: seconds}`` (key ``default`` for the rest).

    Accepts a number, a mapping, or text: ``"2"`` or ``"low=0.5,medium=1,high=3"``.
    """
    if isinstance(value, str):
        text = value.strip()
        if "=" not in text:
            return parse_latency(_seconds(text, "latency"))
        result: dict[str, float] = {}
        for part in text.split(","):
            key, sep, number = part.partition("=")
            if not sep or not key.strip():
                raise ValueError(
                    f"latency entry {part!r} is not QUALITY=SECONDS (e.g. low=0.5,high=3)"
                )
            result[key.strip()] = _seconds(number.strip(), f"latency for {key.strip()!r}")
        return result
    if isinstance(value, Mapping):
        return {str(k): _seconds(v, f"latency for {k!r}") for k, v in value.items()}
    return {"default": _seconds(value, "latency")}


def _seconds(value: Any, what: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of seconds, not {value!r}") from None
    if isinstance(value, bool) or not 0 <= seconds <= MAX_WAIT_S:
        raise ValueError(f"{what} must be between 0 and {MAX_WAIT_S:g} seconds, not {value!r}")
    return seconds


class ReferenceServer:
    """An OpenAI-compatible image endpoint on loopback with scriptable faults.

    Use it as a context manager (``with ReferenceServer() as server:``) or call
    :meth:`start` / :meth:`stop`. Point the SDK at ``server.base_url`` with ``server.api_key``.
    ``faults`` queues misbehaviours, ``defects`` switches on persistent ones, ``log`` records
    what arrived, ``check()`` re-raises any error the server hit while handling a request.

    Azure OpenAI's paths are served too: ``{server.url}/openai/deployments/{deployment}/...``
    with an ``api-version`` query and the key in an ``api-key`` header (point
    ``openai.AzureOpenAI(azure_endpoint=server.url, ...)`` at it). Every served model is a
    deployment of its own name; ``deployments`` adds others (deployment name -> model).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_keys: Sequence[str] | None = None,
        models: Mapping[str, str | Profile] | None = None,
        chat_models: Sequence[str] = DEFAULT_CHAT_MODELS,
        latency: float | str | Mapping[str, float] = 0.0,
        defects: Iterable[str] = (),
        default_model: str = DEFAULT_MODEL,
        secret_headers: Sequence[str] = (),
        max_stall_s: float = 60.0,
        max_files: int = 256,
        accept_any_key: bool = False,
        admin_key: str | None = None,
        deployments: Mapping[str, str] | None = None,
        stream_interval_s: float = 0.1,
    ) -> None:
        from pytest_imagegen.profiles import get_profile

        keys = tuple(api_keys) if api_keys is not None else (DEFAULT_API_KEY,)
        if not keys or not all(isinstance(k, str) and k.strip() == k and k for k in keys):
            raise ValueError("api_keys must be non-empty strings without surrounding spaces")
        self.host = host
        self.port = port
        self.api_keys: tuple[str, ...] = keys
        resolved: dict[str, Profile] = {}
        for name, profile in (default_models() if models is None else models).items():
            resolved[name] = get_profile(profile) if isinstance(profile, str) else profile
        if not resolved:
            raise ValueError("models must name at least one image model")
        self.models: Mapping[str, Profile] = MappingProxyType(resolved)
        if default_model not in resolved:
            default_model = next(iter(resolved))
        self.default_model = default_model
        self.chat_models: tuple[str, ...] = tuple(chat_models)
        # Azure deployments: name -> served model (each model is also its own deployment).
        self.deployments: dict[str, str] = {m: m for m in (*resolved, *self.chat_models)}
        for deployment, model in (deployments or {}).items():
            if model not in self.deployments:
                raise ValueError(
                    f"deployments[{deployment!r}] = {model!r} is not a model this server "
                    f"serves; serve it (models=/chat_models=) or use one of: "
                    f"{', '.join(self.served_model_names)}"
                )
            self.deployments[deployment] = model
        self.secret_headers: tuple[str, ...] = tuple(secret_headers)
        self.max_stall_s = _seconds(max_stall_s, "max_stall_s")
        # The least time between two stream events: enough for a client to see them arrive
        # one by one, so that a stream held back and sent at once can be told apart.
        self.stream_interval_s = _seconds(stream_interval_s, "stream_interval_s")
        self.max_files = max_files
        # Upstream mode without a configured key: whatever key a gateway sends is accepted
        # (and logged masked, with its fingerprint).
        self.accept_any_key = bool(accept_any_key)
        if admin_key is not None and (not isinstance(admin_key, str) or len(admin_key) < 8):
            raise ValueError("admin_key must be a string of at least 8 characters")
        # With an admin key the server also serves its control API under /_admin/.
        self.admin_key: str | None = admin_key
        self._initial_latency = parse_latency(latency)
        self._latency = dict(self._initial_latency)
        self._initial_defects = frozenset(DefectSet(defects))
        self.defects: DefectSet = DefectSet(self._initial_defects)
        self.faults = FaultScript()
        self.log = RequestLog()
        self.errors: list[BaseException] = []
        self._errors_lock = threading.Lock()
        self._release = threading.Event()
        self._files: collections.OrderedDict[str, tuple[bytes, str]] = collections.OrderedDict()
        self._files_lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lifecycle = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> ReferenceServer:
        """Bind, start serving in a background thread, and return self (ready at once)."""
        with self._lifecycle:
            if self._httpd is not None:
                return self
            from pytest_imagegen.reference.app import ReferenceApp

            self._release = threading.Event()
            httpd = _make_server(self.host, self.port, ReferenceApp(self), self)
            self.port = httpd.server_address[1]
            thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL_S},
                name=f"imagegen-reference:{self.port}",
                daemon=True,
            )
            thread.start()
            self._httpd, self._thread = httpd, thread
        return self

    def stop(self) -> None:
        """Stop serving; stalled and in-flight requests are dropped. Safe to call twice."""
        with self._lifecycle:
            httpd, thread = self._httpd, self._thread
            if httpd is None or thread is None:
                return
            self._httpd = self._thread = None
            self._release.set()  # wake every stall, slow answer and latency wait
            httpd.shutdown()
            thread.join(5)
            httpd.drain(_STOP_GRACE_S)
            httpd.server_close()

    def __enter__(self) -> ReferenceServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def reset(self) -> None:
        """Back to the constructor's state: no faults, empty log, initial defects and latency.

        Requests still stalled from an earlier test are released (dropped). Errors recorded
        by the server are cleared too: call :meth:`check` first if they matter.
        """
        self.faults.clear()
        self.log.clear()
        self.defects.clear()
        self.defects.update(self._initial_defects)
        self._latency = dict(self._initial_latency)
        with self._errors_lock:
            self.errors.clear()
        old, self._release = self._release, threading.Event()
        old.set()

    @contextlib.contextmanager
    def isolated(self) -> Iterator[ReferenceServer]:
        """Reset before the block and after it; :meth:`check` at its end.

        The block sees only its own requests in :attr:`log`, and faults or defects it
        scripts end with it. Made for hypothesis tests, which run many examples in one test
        (and refuse function-scoped fixtures, so they take ``imagegen_reference_server``)::

            @given(prompt=strategies.prompts())
            def test_app(imagegen_reference_server, prompt):
                with imagegen_reference_server.isolated() as server:
                    my_app.make_poster(client_for(server), prompt)
                    assert len(server.log.generations) == 1
        """
        self.reset()
        try:
            yield self
            self.check()
        finally:
            self.reset()

    def check(self) -> None:
        """Raise :class:`ReferenceServerError` for the first error the server hit, if any."""
        with self._errors_lock:
            first = self.errors[0] if self.errors else None
            count = len(self.errors)
        if first is not None:
            more = f" (and {count - 1} more)" if count > 1 else ""
            raise ReferenceServerError(
                f"the reference server failed while handling a request{more}: {first!r}. "
                "This is a bug in pytest-imagegen's reference server; the traceback is chained "
                "below."
            ) from first

    def wait_idle(self, since: int = 0, timeout_s: float = 5.0) -> list[LoggedRequest]:
        """The log from index ``since`` on, once each of those requests is finished (or after
        ``timeout_s``, with the unfinished ones as they are)."""
        deadline = time.monotonic() + timeout_s
        items = self.log.snapshot()[since:]
        for item in items:
            item.wait(max(0.0, deadline - time.monotonic()))
        return items

    # -- addresses -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` (no path)."""
        if self._httpd is None:
            raise RuntimeError(
                "the reference server is not running: call start() or use `with ReferenceServer()`"
            )
        host = self.host
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL to give clients: ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    @property
    def api_key(self) -> str:
        """The first accepted key (give it to the client)."""
        return self.api_keys[0]

    def __repr__(self) -> str:
        where = self.base_url if self.running else "stopped"
        return f"<ReferenceServer {where} models={len(self.models)} defects={sorted(self.defects)}>"

    # -- configuration used by the app ---------------------------------------------------

    @property
    def latency(self) -> Mapping[str, float]:
        """Seconds each generation takes, by quality (``default`` for the rest)."""
        return MappingProxyType(self._latency)

    @latency.setter
    def latency(self, value: float | str | Mapping[str, float]) -> None:
        self._latency = parse_latency(value)

    def latency_for(self, quality: str) -> float:
        """The delay of a generation at ``quality`` (exact entry, nearest tier, default, 0)."""
        latency = self._latency
        if quality in latency:
            return latency[quality]
        tier = _QUALITY_TIER.get(quality)
        if tier is not None and tier in latency:
            return latency[tier]
        return latency.get("default", 0.0)

    @property
    def served_model_names(self) -> list[str]:
        """The image models then the chat models, as ``GET /v1/models`` lists them."""
        return [*self.models, *(m for m in self.chat_models if m not in self.models)]

    def model_kind(self, model: str) -> str:
        """``image``, ``chat`` or ``unknown`` as this server sees ``model``.

        Served names first (image models, then chat models); any other name is judged by
        :func:`pytest_imagegen.profiles.model_kind`, so a chat model the server does not
        serve (``openai/gpt-4o-vip``) is still refused as a chat model, and an image model
        it does not serve is still "not a chat model" on chat completions.
        """
        if model in self.models:
            return "image"
        if model in self.chat_models:
            return "chat"
        from pytest_imagegen.profiles import model_kind

        return model_kind(model)

    def resolve_model(self, model: Any, body: Mapping[str, Any]) -> tuple[str, Profile | None]:
        """(model name, its profile or None when not served) for a request.

        Without ``model`` OpenAI picks dall-e-2, or a GPT-image model when a GPT-image-only
        parameter is present; a server that serves neither uses its default model.
        """
        if model is None:
            gpt_only = {
                "background",
                "moderation",
                "output_compression",
                "output_format",
                "stream",
                "partial_images",
            }
            model = "gpt-image-1" if gpt_only & set(body) else "dall-e-2"
            if model not in self.models:
                model = self.default_model
        name = str(model)
        return name, self.models.get(name)

    # -- what the app calls (see ``app.Host``) -------------------------------------------

    @property
    def release(self) -> threading.Event:
        """Set when the server stops or resets: every stall and slow answer ends early."""
        return self._release

    def record_error(self, exc: BaseException) -> None:
        """Keep an error the server hit while handling a request (``check()`` re-raises it)."""
        logger.error("reference server error", exc_info=exc)
        with self._errors_lock:
            self.errors.append(exc)

    def store_image(self, data: bytes, fmt: str, *, host: str) -> str:
        """Keep an image for ``GET /v1/files/images/<name>`` and return its URL."""
        name = f"img-{uuid.uuid4().hex}.{fmt}"
        content_type = MIME_TYPES.get(fmt, "image/png")
        with self._files_lock:
            self._files[name] = (data, content_type)
            while len(self._files) > self.max_files:
                self._files.popitem(last=False)
        return f"http://{host}/v1/files/images/{name}"

    def stored_image(self, name: str) -> tuple[bytes, str] | None:
        """A kept image and its content type, or None (unknown or evicted)."""
        with self._files_lock:
            return self._files.get(name)


def _make_server(host: str, port: int, app: Any, owner: ReferenceServer) -> _Server:
    """Bind first (a clear OSError if the port is taken), then hand the socket to werkzeug."""
    server_class = _server_class()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno,
            f"cannot listen on {host}:{port} ({exc.strerror}); choose another port, "
            "or port 0 for a free one",
        ) from None
    try:
        # werkzeug duplicates the descriptor, so ours is closed right after.
        return server_class(host, port, app, owner, fd=sock.fileno())
    finally:
        sock.close()


@functools.cache
def _server_class() -> type[_Server]:
    """Define the werkzeug subclasses on first use, keeping werkzeug out of plain imports."""
    from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

    from pytest_imagegen.reference.wire import Abort

    class Handler(WSGIRequestHandler):
        # A client that connects and never sends its request cannot hold a thread forever.
        timeout = 120

        def connection_dropped(self, error: BaseException, environ: Any = None) -> None:
            self.close_connection = True
            if isinstance(error, Abort) and error.reset:
                try:
                    # Linger 0: closing sends RST instead of FIN. The descriptor really closes
                    # when finish() releases the buffered reader, before any FIN can go out.
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                except OSError:
                    pass

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            logger.debug("%s %s -> %s", self.command, self.path, code)

        def log(self, type: str, message: str, *args: Any) -> None:
            logger.debug(message, *args)

    class Server(ThreadedWSGIServer):
        # Handler threads are tracked here instead, so stop() can bound its wait.
        block_on_close = False

        def __init__(
            self, host: str, port: int, app: Any, owner: ReferenceServer, *, fd: int
        ) -> None:
            self.owner = owner
            self.connections: dict[threading.Thread, socket.socket] = {}
            self.connections_lock = threading.Lock()
            super().__init__(host, port, app, Handler, fd=fd)

        def process_request(self, request: Any, client_address: Any) -> None:
            thread = threading.Thread(
                target=self._process,
                args=(request, client_address),
                name=f"imagegen-reference-request:{self.port}",
                daemon=True,
            )
            with self.connections_lock:
                self.connections[thread] = request
            thread.start()

        def _process(self, request: Any, client_address: Any) -> None:
            try:
                self.process_request_thread(request, client_address)
            finally:
                with self.connections_lock:
                    self.connections.pop(threading.current_thread(), None)

        def handle_error(self, request: Any, client_address: Any) -> None:
            exc = sys.exc_info()[1]
            if exc is not None and not isinstance(exc, (ConnectionError, TimeoutError)):
                self.owner.record_error(exc)

        def log(self, type: str, message: str, *args: Any) -> None:
            logger.debug(message, *args)

        def drain(self, grace: float) -> None:
            """Wait up to ``grace`` s for handlers, then cut the connections of the rest."""
            deadline = time.monotonic() + grace
            with self.connections_lock:
                pending = list(self.connections.items())
            for thread, _ in pending:
                thread.join(max(0.0, deadline - time.monotonic()))
            for thread, sock in pending:
                if thread.is_alive():
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
            for thread, _ in pending:
                thread.join(1.0)

    return Server
