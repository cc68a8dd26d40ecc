"""Cassettes: record image-endpoint traffic once, replay it offline, keep nothing secret.

Built on vcrpy (which intercepts the ``httpx2`` transports the openai SDK uses): a
:class:`vcr.cassette.Cassette` subclass adds scrubbing, image shrinking, indexed matching on
method, path and canonical JSON body, and clear errors; a persister writes atomically and
merges concurrent recordings under a file lock. In record mode ``none`` a socket-level
guard refuses every connection that is not to loopback.

Usage (the pytest plugin does this around each test)::

    path = cassette_path(cassette_dir, "relay", "test_images", "test_generate")
    with recording(path, mode="none", secrets=endpoint.secrets) as session:
        client.images.generate(model="gpt-image-1", prompt="a cat")
    session.status  # "replayed"

Status of a cassette after its block (:attr:`CassetteSession.status`, shown as
``cassette_status`` in the report):

``replayed``
    every request was answered from the cassette.
``recorded``
    at least one live interaction was added to the cassette (modes other than ``none``).
``live``
    mode ``none`` with ``loopback_live`` and no cassette: the requests went live to a
    loopback endpoint and nothing was recorded. A cassette that exists is replayed
    strictly: a request it has no recording for is a :class:`CassetteError` naming the
    record mode that adds it.
``unused``
    the block sent no HTTP request.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import importlib.util
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from vcr.cassette import Cassette
from vcr.errors import UnhandledHTTPRequestError
from vcr.patch import CassettePatcherBuilder
from vcr.persisters.filesystem import CassetteDecodeError, CassetteNotFoundError
from vcr.record_mode import RecordMode
from vcr.request import Request
from vcr.serialize import deserialize as vcr_deserialize
from vcr.serialize import serialize as vcr_serialize

from pytest_imagegen import _yaml
from pytest_imagegen._files import atomic_write, temp_prefix
from pytest_imagegen._scrub import PLACEHOLDER, Scrubber, _header
from pytest_imagegen.config import is_loopback_host
from pytest_imagegen.errors import CassetteError, ConfigError
from pytest_imagegen.names import RECORD_MODES

__all__ = [
    "CASSETTE_SUFFIX",
    "PLACEHOLDER",
    "RECORD_MODES",
    "CassetteSession",
    "CassetteUse",
    "cassette_path",
    "find_unused_cassettes",
    "live_policy",
    "note_timeout",
    "read_cassette",
    "recorded_requests",
    "recording",
    "unused_in_folders",
    "use_cassette",
]

CASSETTE_SUFFIX = ".yaml"
#: Version of the ``imagegen`` header block in a cassette file.
FORMAT_VERSION = 1
#: Longest file or folder name made from a test or module name, before the hash.
MAX_NAME_CHARS = 80
#: How long a recording process waits for another one to finish writing the same cassette.
LOCK_TIMEOUT_S = 120.0

_RECORD_ONCE = "pytest --imagegen --imagegen-record-mode=once"
_RECORD_NEW = "pytest --imagegen --imagegen-record-mode=new_episodes"
_RERECORD = "pytest --imagegen --imagegen-record-mode=all"

# Characters kept as they are in cassette file and folder names.
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_WINDOWS_RESERVED = frozenset(
    {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(10)} | {f"lpt{i}" for i in range(10)}
)

Key = tuple[str, str, str]  # (method, path, canonical body)


# -- paths ----------------------------------------------------------------------------------


def _safe_name(name: str) -> str:
    """A portable file name for ``name``: readable prefix, plus a short hash if altered."""
    cleaned = _SAFE_NAME.sub("_", name).strip("._-") or "_"
    cleaned = cleaned[:MAX_NAME_CHARS].rstrip("._-") or "_"
    if cleaned == name and cleaned.lower().split(".")[0] not in _WINDOWS_RESERVED:
        return cleaned
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned}-{digest}"


def cassette_path(cassette_dir: Path | str, endpoint: str, module: str, test: str) -> Path:
    """``cassette_dir/<endpoint>/<module>/<test>.yaml``, every part made filesystem-safe.

    ``module`` may be a dotted name or a file path (``tests/test_x.py`` -> ``tests.test_x``).
    A part that had to be changed (brackets of parametrize ids, slashes, non-ASCII, more
    than 80 characters) keeps a readable prefix and gets a hash of the original appended,
    so two different tests never share a cassette.
    """
    module = module.replace("\\", "/").removesuffix(".py").strip("/").replace("/", ".")
    return (
        Path(cassette_dir)
        / _safe_name(endpoint)
        / _safe_name(module)
        / (_safe_name(test) + CASSETTE_SUFFIX)
    )


def lock_path_for(path: Path) -> Path:
    """The lock that serialises writers of the cassette at ``path``.

    Locks live in the temp folder, not beside the cassette, so that ``git add cassettes/``
    never picks one up; the name is a hash of the cassette's absolute path, so every
    process on the machine (xdist workers included) agrees on it.
    """
    import tempfile

    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:32]
    folder = Path(tempfile.gettempdir()) / "pytest-imagegen-locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{digest}.lock"


#: Written beside recorded cassettes: a writer killed midway leaves its temp file behind.
GITIGNORE = "# Unfinished cassette writes (removed by the next recording).\n.*.tmp\n"


def _ignore_unfinished_writes(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    gitignore = folder / ".gitignore"
    if not gitignore.exists():
        atomic_write(gitignore, GITIGNORE.encode())


def find_unused_cassettes(cassette_dir: Path | str, used_paths: Iterable[Path | str]) -> list[Path]:
    """Cassette files under ``cassette_dir`` that no test of this run used, sorted.

    Temporary files of interrupted writes (``.<name>.*.tmp``) and lock files are not
    cassettes and are never listed.
    """
    root = Path(cassette_dir)
    if not root.is_dir():
        return []
    used = {Path(p).resolve() for p in used_paths}
    found = [
        path
        for path in root.rglob("*" + CASSETTE_SUFFIX)
        if path.is_file()
        and not path.name.startswith(".")
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
        and path.resolve() not in used
    ]
    return sorted(found)


# -- the session the caller sees --------------------------------------------------------------


@dataclass
class CassetteSession:
    """What happened to one cassette during one ``recording()`` context.

    ``status`` is one of ``"replayed"``, ``"recorded"``, ``"live"`` and ``"unused"`` (see
    the module docstring). ``played`` and ``recorded`` count requests answered from the
    cassette and recorded into it. ``unused``
    lists the recorded interactions this run never played, as
    ``"POST /v1/images/generations"``.
    """

    path: Path
    mode: str
    status: str = "unused"
    played: int = 0
    recorded: int = 0
    unused: tuple[str, ...] = ()
    error: CassetteError | None = field(default=None, repr=False)
    #: One entry per replayed answer, in play order: what the recording says about it,
    #: ``{"latency_s": 1.49, "recorded_at": "2026-11-30T10:00:00+00:00"}`` (None values in
    #: cassettes recorded before latencies were kept). A replay's own timings say nothing
    #: about the endpoint; these do.
    plays: list[dict[str, Any]] = field(default_factory=list, repr=False)
    _cassette: ImagegenCassette | None = field(default=None, repr=False, compare=False)

    def will_replay(self, request: Any) -> bool:
        """Whether an ``httpx2.Request`` about to be sent would be answered from the
        cassette (False when it would go out, or when that cannot be told: a streamed body
        not read yet). The budget guard asks, so that a replayed request reserves nothing."""
        cassette = self._cassette
        if cassette is None:
            return False
        try:
            body = request.content
        except Exception:  # a streamed body (httpx2.RequestNotRead): assume it goes out
            return False
        return cassette.will_replay(
            Request(request.method, str(request.url), body, request.headers)
        )

    def summary(self) -> dict[str, Any]:
        """The fields the report keeps, JSON-ready."""
        return {
            "cassette": str(self.path),
            "cassette_status": self.status,
            "mode": self.mode,
            "played": self.played,
            "recorded": self.recorded,
            "unused": list(self.unused),
        }

    def _fail(self, error: CassetteError) -> CassetteError:
        if self.error is None:
            self.error = error
        elif str(error) == str(self.error):
            # The same refusal again (hypothesis replays a failing example): the same
            # exception object, so a caller that already reported it can recognise it.
            return self.error
        return error


# -- file format ------------------------------------------------------------------------------


class _Dumper(_yaml.SafeDumper):
    """Safe YAML dumper (libyaml when available)."""


class YamlSerializer:
    """vcrpy serializer: vcrpy's cassette layout plus an ``imagegen`` header block.

    The header records the format version and the number of interactions, so that a
    truncated file is recognised even when what is left happens to be valid YAML.
    """

    @staticmethod
    def serialize(cassette: dict[str, Any]) -> str:
        interactions = cassette["interactions"]
        document: dict[str, Any] = {
            "version": cassette.get("version", 1),
            "imagegen": {"format": FORMAT_VERSION, "interactions": len(interactions)},
            "interactions": interactions,
        }
        if cassette.get("metadata"):
            document["metadata"] = cassette["metadata"]
        return yaml.dump(
            document,
            Dumper=_Dumper,
            sort_keys=False,
            allow_unicode=True,
            default_flow_style=None,
            width=100,
        )

    @staticmethod
    def deserialize(text: str) -> dict[str, Any]:
        document = _yaml.load(text)
        if not isinstance(document, dict) or not isinstance(document.get("interactions"), list):
            raise ValueError("no list of interactions at the top level")
        header = document.get("imagegen")
        if header is not None:
            if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
                raise ValueError(f"unknown imagegen cassette format {header!r}")
            expected = header.get("interactions")
            if expected != len(document["interactions"]):
                raise ValueError(
                    f"the header announces {expected} interactions but "
                    f"{len(document['interactions'])} are present"
                )
        for number, interaction in enumerate(document["interactions"], 1):
            _check_interaction(number, interaction)
        return document


def _seconds(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if value >= 0 else None


def _text(value: Any) -> str | None:
    if isinstance(value, datetime):  # YAML may read an unquoted timestamp as one
        return value.isoformat(timespec="seconds")
    return str(value) if value is not None else None


def _check_interaction(number: int, interaction: Any) -> None:
    try:
        request, response = interaction["request"], interaction["response"]
        ok = (
            isinstance(request["method"], str)
            and isinstance(request["uri"], str)
            and isinstance(request["headers"], dict)
            and "body" in request
            and isinstance(response["status"]["code"], int)
            and isinstance(response["headers"], dict)
            and "string" in response["body"]
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"interaction {number} is incomplete (no {exc})") from None
    if not ok:
        raise ValueError(f"interaction {number} has fields of the wrong type")


SERIALIZER = YamlSerializer()


class AtomicPersister:
    """vcrpy persister: atomic writes (temp file in the same folder, fsync, rename).

    A reader never sees a half-written cassette: the file at the cassette's path is always
    a complete old or complete new version. Callers serialise writers with a lock.
    """

    @classmethod
    def load_cassette(
        cls, cassette_path: Path | str, serializer: Any
    ) -> tuple[list[Any], list[Any]]:
        path = Path(cassette_path)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise CassetteNotFoundError() from None
        except IsADirectoryError:
            raise CassetteDecodeError("it is a directory") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CassetteDecodeError(f"it is not UTF-8 text ({exc.reason})") from None
        if not text.strip():
            raise CassetteDecodeError("the file is empty")
        try:
            requests, responses, *_ = vcr_deserialize(text, serializer)
        except yaml.YAMLError as exc:
            reason = str(exc).splitlines()
            raise CassetteDecodeError(
                f"it is not valid YAML ({' '.join(x.strip() for x in reason[:3])})"
            ) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise CassetteDecodeError(str(exc)) from None
        return requests, responses

    @staticmethod
    def save_cassette(
        cassette_path: Path | str, cassette_dict: dict[str, Any], serializer: Any
    ) -> None:
        data = vcr_serialize(cassette_dict, serializer).encode("utf-8")
        atomic_write(Path(cassette_path), data)


def read_cassette(path: Path | str) -> list[dict[str, Any]]:
    """The interactions of a cassette file as plain dicts; CassetteError if it is corrupt."""
    path = Path(path)
    try:
        requests, responses = AtomicPersister.load_cassette(path, SERIALIZER)
    except CassetteNotFoundError:
        raise CassetteError(_missing_message(path, "none")) from None
    except CassetteDecodeError as exc:
        raise CassetteError(_corrupt_message(path, str(exc))) from None
    return [
        {"request": request._to_dict(), "response": response}
        for request, response in zip(requests, responses, strict=True)
    ]


# -- messages ---------------------------------------------------------------------------------


def _missing_message(path: Path, mode: str) -> str:
    return (
        f"No cassette at {path}: record mode {mode!r} only replays, and nothing was recorded "
        f"for this test yet. Record it against the live endpoint with:\n    {_RECORD_ONCE}"
    )


def _corrupt_message(path: Path, reason: str) -> str:
    return (
        f"Cassette {path} is corrupt or truncated: {reason}. It was left as it is. "
        f"Delete it and record it again with:\n    {_RECORD_ONCE}"
    )


def _describe(key: Key) -> str:
    return f"{key[0]} {key[1]}"


def _pretty(canonical: str) -> list[str]:
    try:
        value = json.loads(canonical)
    except ValueError:
        return canonical.splitlines() or [""]
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def _body_diff(recorded: str, requested: str, *, limit: int = 60) -> list[str]:
    lines = list(
        difflib.unified_diff(
            _pretty(recorded), _pretty(requested), "recorded", "requested", lineterm="", n=2
        )
    )
    lines = [line if len(line) <= 200 else line[:197] + "..." for line in lines]
    if len(lines) > limit:
        lines = [*lines[:limit], f"... ({len(lines) - limit} more diff lines)"]
    return lines


# -- the cassette -----------------------------------------------------------------------------


def _body_matcher(r1: Request, r2: Request) -> None:
    """vcrpy matcher: equal canonical bodies (JSON with sorted keys, secrets scrubbed)."""
    assert _key_of(r1)[2] == _key_of(r2)[2], "canonical bodies differ"


def _method_path_matcher(r1: Request, r2: Request) -> None:
    """vcrpy matcher: same method and path (host and port are ignored)."""
    assert _key_of(r1)[:2] == _key_of(r2)[:2], "method or path differ"


_DEFAULT_SCRUBBER = Scrubber.create()


def _key_of(request: Request) -> Key:
    key = getattr(request, "_imagegen_key", None)
    if key is None:
        scrubbed, canonical = _DEFAULT_SCRUBBER.request(request)
        key = (request.method.upper(), urlsplit(scrubbed.uri).path, canonical)
    return key


class ImagegenCassette(Cassette):  # type: ignore[misc]  # vcrpy has no type information
    """A vcrpy cassette with scrubbing, shrinking, indexed matching and merge-on-save.

    Only interactions loaded from the file are replayed; what this run records is never
    replayed in the same run, so a later replay sees the same sequence of answers.
    """

    def __init__(
        self,
        path: Path,
        *,
        mode: str,
        scrubber: Scrubber,
        session: CassetteSession,
    ):
        super().__init__(
            path,
            serializer=SERIALIZER,
            persister=AtomicPersister,
            record_mode=RecordMode(mode),
            match_on=(_method_path_matcher, _body_matcher),
            skip_patchers=_absent_patchers(),
        )
        self._scrubber = scrubber
        self._session = session
        self._keys: list[Key] = []
        self._index: dict[Key, list[int]] = {}
        self._recorded: list[int] = []
        self._key_memo: dict[tuple[Any, ...], Key] = {}
        self._lock = threading.RLock()
        self.existed = False

    # vcrpy calls these with the live request -------------------------------------------------

    def _key(self, request: Request) -> Key:
        """(method, path, canonical body) of a request: what matching compares."""
        cached = getattr(request, "_imagegen_keyed", None)
        if cached is not None and cached[0] is self._scrubber:
            return cached[1]  # type: ignore[no-any-return]
        content_type = _header(request.headers, "content-type")
        # The same request is looked at twice (the budget asks whether it will be
        # replayed, then vcrpy makes its own copy): its body is made canonical once.
        memo = (request.method, request.uri, request.body, content_type)
        key = self._key_memo.get(memo)
        if key is None:
            _, canonical = self._scrubber.request_body(request.body, content_type)
            path = urlsplit(self._scrubber.url(request.uri)).path
            key = self._key_memo[memo] = (request.method.upper(), path, canonical)
        request._imagegen_keyed = (self._scrubber, key)
        return key

    def _prepare(self, request: Request) -> tuple[Request, Key]:
        """The request as the cassette stores it (secrets scrubbed), and its key."""
        cached = getattr(request, "_imagegen_prepared", None)
        if cached is not None and cached[0] is self._scrubber:
            return cached[1], cached[2]
        key = self._key(request)
        scrubbed, _ = self._scrubber.request(request)
        scrubbed._imagegen_key = key
        request._imagegen_prepared = (self._scrubber, scrubbed, key)
        return scrubbed, key

    def will_replay(self, request: Request) -> bool:
        """Whether ``request``, sent now, would be answered from the cassette."""
        if self.record_mode == RecordMode.ALL:
            return False
        key = self._key(request)
        with self._lock:
            return self._next_unplayed(key) is not None

    def filter_request(self, request: Request) -> Request | None:
        return self._prepare(request)[0]

    def _next_unplayed(self, key: Key) -> int | None:
        for index in self._index.get(key, ()):
            if self.play_counts[index] == 0:
                return index
        return None

    def can_play_response_for(self, request: Request) -> bool:
        if self.record_mode == RecordMode.ALL:
            return False
        key = self._key(request)
        with self._lock:
            index = self._next_unplayed(key)
            if index is not None:
                # Reserved now, so that two threads never get the same answer.
                self.play_counts[index] += 1
                request._imagegen_reserved = index
                return True
        if self.write_protected:
            raise self._session._fail(CassetteError(self._no_match_message(key)))
        # The request goes out now: ``append`` measures its live latency from here.
        request._imagegen_sent_at = time.perf_counter()
        return False

    def play_response(self, request: Request) -> dict[str, Any]:
        index = getattr(request, "_imagegen_reserved", None)
        if index is None:
            if not self.can_play_response_for(request):
                raise UnhandledHTTPRequestError(
                    f"The cassette ({self._path}) has no unplayed recording of this request"
                )
            index = request._imagegen_reserved
        del request._imagegen_reserved
        response: dict[str, Any] = self.data[index][1]
        found = response.get("imagegen") if isinstance(response, dict) else None
        facts: dict[str, Any] = found if isinstance(found, dict) else {}
        with self._lock:
            self._session.played += 1
            self._session.plays.append(
                {
                    "latency_s": _seconds(facts.get("latency_s")),
                    "recorded_at": _text(facts.get("recorded_at")),
                }
            )
        timeout = facts.get("timeout")
        if isinstance(timeout, dict):
            raise _replayed_timeout(timeout, self._path)
        return response

    def append_timeout(self, request: Request, error: BaseException, latency_s: float) -> bool:
        """Record that ``request`` got no answer within its time (a stall): replayed, the
        same kind of timeout is raised at once. False when this cassette records nothing."""
        if self.record_mode == RecordMode.NONE or self.write_protected:
            return False
        scrubbed, key = self._prepare(request)
        facts = {
            "timeout": {"error": type(error).__name__, "message": self._scrubber.text(str(error))},
            "latency_s": round(latency_s, 4),
            "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        stored = {
            "status": {"code": 0, "message": "no answer (timed out)"},
            "headers": {},
            "body": {"string": ""},
            "imagegen": facts,
        }
        with self._lock:
            self.data.append((scrubbed, stored))
            self._keys.append(key)
            self._recorded.append(len(self.data) - 1)
            self.dirty = True
            self._session.recorded += 1
        return True

    def _responses(self, request: Request) -> Iterator[tuple[int, dict[str, Any]]]:
        key = self._key(request)
        for index in self._index.get(key, ()):
            yield index, self.data[index][1]

    def __contains__(self, request: Request) -> bool:
        key = self._key(request)
        return self._next_unplayed(key) is not None

    def append(self, request: Request, response: dict[str, Any]) -> None:
        scrubbed, key = self._prepare(request)
        stored = self._scrubber.for_headers(request.headers).response(response)
        sent_at = getattr(request, "_imagegen_sent_at", None)
        # The live latency and the date travel with the answer, so a replay months later
        # can still report how fast the endpoint was, and when.
        facts = dict(stored.get("imagegen") or {})
        if sent_at is not None:
            facts["latency_s"] = round(time.perf_counter() - sent_at, 4)
        facts["recorded_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        stored = {**stored, "imagegen": facts}
        with self._lock:
            self.data.append((scrubbed, stored))
            self._keys.append(key)
            self._recorded.append(len(self.data) - 1)
            self.dirty = True
            self._session.recorded += 1

    # loading and saving ----------------------------------------------------------------------

    def _read_disk(self) -> list[tuple[Request, dict[str, Any], Key]] | None:
        """The interactions in the file now (None if there is none); CassetteError if corrupt."""
        try:
            requests, responses = self._persister.load_cassette(self._path, self._serializer)
        except CassetteNotFoundError:
            return None
        except CassetteDecodeError as exc:
            error = CassetteError(_corrupt_message(self._path, str(exc)))
            raise self._session._fail(error) from None
        return [
            (request, response, self._key(request))
            for request, response in zip(requests, responses, strict=True)
        ]

    def _load(self) -> None:
        disk = self._read_disk()
        if disk is None:
            return
        for request, response, key in disk:
            self.data.append((request, response))
            self._keys.append(key)
            self._index.setdefault(key, []).append(len(self.data) - 1)
        self._loaded_count = len(self.data)
        self.existed = True
        self.rewound = True  # vcrpy's flag for "loaded from a file": `once` may not add to it
        self.dirty = False

    def unused_interactions(self) -> tuple[str, ...]:
        """Loaded interactions this run neither replayed nor (mode ``all``) recorded again."""
        rerecorded = {self._keys[i] for i in self._recorded}
        return tuple(
            _describe(self._keys[i])
            for i in range(self._loaded_count)
            if self.play_counts[i] == 0 and self._keys[i] not in rerecorded
        )

    def _save(self, force: bool = False) -> None:
        """Merge what this run recorded into the file on disk, under a lock, atomically.

        Another worker may have written the same cassette since it was loaded; its
        interactions are kept, and ours are added unless that worker recorded the same
        request as often already.
        """
        if self.record_mode == RecordMode.NONE or not self._recorded:
            return
        from filelock import FileLock, Timeout

        lock_path = str(lock_path_for(Path(self._path)))
        _ignore_unfinished_writes(Path(self._path).parent)
        try:
            with FileLock(lock_path, timeout=LOCK_TIMEOUT_S):
                merged = self._merge(self._read_disk() or [])
                _remove_stale_temp_files(Path(self._path))
                self._persister.save_cassette(
                    self._path,
                    {
                        "requests": [request for request, _ in merged],
                        "responses": [response for _, response in merged],
                    },
                    serializer=self._serializer,
                )
        except Timeout:
            raise self._session._fail(
                CassetteError(
                    f"Could not write cassette {self._path}: another process has held "
                    f"{lock_path} for {LOCK_TIMEOUT_S:.0f} s. If no other test run is "
                    "writing cassettes, delete the lock file and run again."
                )
            ) from None
        self.dirty = False

    def _merge(
        self, disk: list[tuple[Request, dict[str, Any], Key]]
    ) -> list[tuple[Request, dict[str, Any]]]:
        recorded = [(*self.data[i], self._keys[i]) for i in self._recorded]
        if self.record_mode == RecordMode.ALL:
            rerecorded = {key for _, _, key in recorded}
            kept = [(q, r) for q, r, key in disk if key not in rerecorded]
            return kept + [(q, r) for q, r, _ in recorded]
        on_disk = Counter(key for _, _, key in disk)
        # How often this run asked for each request: loaded answers played plus new ones.
        asked = Counter(self._keys[i] for i in range(self._loaded_count) if self.play_counts[i])
        asked.update(key for _, _, key in recorded)
        ours: dict[Key, list[int]] = {}
        for position, (_, _, key) in enumerate(recorded):
            ours.setdefault(key, []).append(position)
        keep: set[int] = set()
        for key, positions in ours.items():
            missing = asked[key] - on_disk[key]
            if missing > 0:
                keep.update(positions[-missing:])
        merged = [(q, r) for q, r, _ in disk]
        merged += [(q, r) for position, (q, r, _) in enumerate(recorded) if position in keep]
        return merged

    # messages ----------------------------------------------------------------------------------

    def _no_match_message(self, key: Key) -> str:
        path, mode = Path(self._path), self.record_mode.value
        if not self.existed:
            return _missing_message(path, mode)
        loaded = range(self._loaded_count)
        same = [i for i in loaded if self._keys[i] == key]
        lines = [
            f"Cassette {path} has no recording left for {_describe(key)} "
            f"(record mode {mode!r} does not add to an existing cassette)."
        ]
        if same:
            lines.append(
                f"This request was recorded {len(same)} time(s) and every recording has "
                "already been replayed in this test: the test now sends it more often "
                "than when it was recorded."
            )
        else:
            best = self._closest(key)
            if best is None:
                lines.append("The cassette holds no interactions at all.")
            else:
                number, other = best
                played = " (already replayed)" if self.play_counts[number] else ""
                lines.append(
                    f"Closest recorded request: {_describe(other)}, interaction "
                    f"{number + 1} of {self._loaded_count}{played}."
                )
                if other[:2] != key[:2]:
                    lines.append(f"Method or path differ: {_describe(other)} != {_describe(key)}.")
                diff = _body_diff(other[2], key[2])
                if diff:
                    lines.append("Canonical bodies (recorded -> requested):")
                    lines.extend("    " + line for line in diff)
        lines.append(
            f"To add it to the cassette, record with:\n    {_RECORD_NEW}\n"
            f"or record the whole cassette again with:\n    {_RERECORD}"
        )
        return "\n".join(lines)

    def _closest(self, key: Key) -> tuple[int, Key] | None:
        best: tuple[tuple[int, float], int] | None = None
        for i in range(self._loaded_count):
            other = self._keys[i]
            same_route = int(other[:2] == key[:2]) + int(other[1] == key[1])
            similarity = difflib.SequenceMatcher(None, other[2], key[2], autojunk=False).ratio()
            score = (same_route, similarity)
            if best is None or score > best[0]:
                best = (score, i)
        return None if best is None else (best[1], self._keys[best[1]])


def _remove_stale_temp_files(path: Path) -> None:
    """Remove temp files of writes that were killed midway (call with the lock held)."""
    for stale in path.parent.glob(temp_prefix(path) + "*.tmp"):
        with contextlib.suppress(OSError):
            stale.unlink()


# -- timeouts ---------------------------------------------------------------------------------

# The cassettes open now, innermost last: vcrpy patches the transports for all threads, so
# the innermost one answers (and records) whatever request is sent.
_OPEN: list[ImagegenCassette] = []
_OPEN_LOCK = threading.Lock()
_TIMEOUTS = ("ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout")


def _replayed_timeout(timeout: dict[str, Any], path: Any) -> Exception:
    import httpx2

    name = str(timeout.get("error"))
    kind: type[httpx2.TimeoutException] = getattr(
        httpx2, name if name in _TIMEOUTS else "ReadTimeout"
    )
    error = kind(f"{timeout.get('message') or 'timed out'} (replayed from {path})")
    error._imagegen_replayed = True  # type: ignore[attr-defined]
    return error


def note_timeout(request: Any, error: BaseException, latency_s: float) -> bool:
    """A live request (``httpx2.Request``) got no answer in time: record it as a timeout in
    the cassette open now, if it records (see :meth:`ImagegenCassette.append_timeout`).

    vcrpy records answers only; a stall has none, so a check that stalls its primary on
    purpose would have to wait the whole timeout again at every replay. The connection
    pool's transport (:mod:`pytest_imagegen.pool`) calls this.
    """
    if getattr(error, "_imagegen_replayed", False):
        return False
    with _OPEN_LOCK:
        cassette = _OPEN[-1] if _OPEN else None
    if cassette is None:
        return False
    try:
        body = request.content
    except Exception:  # a streamed body (multipart): vcrpy read it into a ByteStream
        import httpx2

        stream = getattr(request, "stream", None)
        if not isinstance(stream, httpx2.ByteStream):
            return False  # not sent through a cassette
        body = b"".join(stream)
    recorded = Request(request.method, str(request.url), body, request.headers)
    return cassette.append_timeout(recorded, error, latency_s)


# -- the network guard for record mode "none" -------------------------------------------------


class _NetworkGuard:
    """Refuses, before any packet is sent, connections and lookups that leave loopback.

    Patches ``socket.socket.connect``/``connect_ex``/``sendto`` and ``socket.getaddrinfo``
    for the duration of the context and restores exactly what was there before.
    """

    _METHODS = ("connect", "connect_ex", "sendto")

    def __init__(self, refuse: Callable[[str], CassetteError]) -> None:
        self._refuse = refuse
        self._saved: dict[str, Any] = {}

    def _check(self, sock: socket.socket, address: Any) -> None:
        if getattr(sock, "family", None) == getattr(socket, "AF_UNIX", object()):
            return
        if isinstance(address, tuple) and address:
            host, port = address[0], address[1] if len(address) > 1 else None
            if not is_loopback_host(host):
                target = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
                raise self._refuse(target)

    def __enter__(self) -> _NetworkGuard:
        guard = self
        for name in self._METHODS:
            self._saved[name] = socket.socket.__dict__.get(name)
        original_connect = socket.socket.connect
        original_connect_ex = socket.socket.connect_ex
        original_sendto = socket.socket.sendto
        original_getaddrinfo = socket.getaddrinfo
        self._saved["getaddrinfo"] = original_getaddrinfo
        own_names = {socket.gethostname().lower()}

        def connect(sock: socket.socket, address: Any) -> None:
            guard._check(sock, address)
            return original_connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            guard._check(sock, address)
            return original_connect_ex(sock, address)

        def sendto(sock: socket.socket, data: bytes, *args: Any) -> int:
            if args:
                guard._check(sock, args[-1])
            return original_sendto(sock, data, *args)

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            name = host.decode("idna") if isinstance(host, bytes) else host
            leaves = not is_loopback_host(name) and str(name).lower() not in own_names
            if name is not None and leaves:
                port = args[0] if args else kwargs.get("port")
                raise guard._refuse(f"{name}:{port}")
            return original_getaddrinfo(host, *args, **kwargs)

        socket.socket.connect = connect  # type: ignore[method-assign,assignment]
        socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
        socket.socket.sendto = sendto  # type: ignore[method-assign,assignment]
        socket.getaddrinfo = getaddrinfo
        return self

    def __exit__(self, *exc_info: object) -> None:
        for name in self._METHODS:
            saved = self._saved.get(name)
            if saved is None:
                with contextlib.suppress(AttributeError):
                    delattr(socket.socket, name)
            else:
                setattr(socket.socket, name, saved)
        socket.getaddrinfo = self._saved["getaddrinfo"]


def _refusal(session: CassetteSession, path: Path) -> Callable[[str], CassetteError]:
    def refuse(target: str) -> CassetteError:
        return session._fail(
            CassetteError(
                f"Record mode 'none' allows no connection except to loopback, and this test "
                f"tried to reach {target} (cassette {path}). Nothing was sent. Record the "
                f"cassette against the live endpoint with:\n    "
                f"{_RECORD_NEW if path.exists() else _RECORD_ONCE}"
            )
        )

    return refuse


# vcrpy patcher group -> the module it patches ("httplib" is always there).
_PATCHED_MODULES = {
    "requests": "requests",
    "boto3": "botocore",
    "urllib3": "urllib3",
    "httplib2": "httplib2",
    "tornado": "tornado",
    "aiohttp": "aiohttp",
    "httpx": "httpx",
    "httpx2": "httpx2",
}


@functools.lru_cache(maxsize=1)
def _absent_patchers() -> tuple[str, ...]:
    """vcrpy patcher groups whose library is not installed.

    vcrpy tries to import each of them on every cassette; a failed import searches the whole
    ``sys.path`` and was most of the replay overhead per test.
    """
    return tuple(
        group
        for group, module in _PATCHED_MODULES.items()
        if importlib.util.find_spec(module) is None
    )


def _close(cassette: ImagegenCassette) -> None:
    with _OPEN_LOCK:
        if cassette in _OPEN:
            _OPEN.remove(cassette)


# -- the context manager ------------------------------------------------------------------------


@contextlib.contextmanager
def recording(
    path: Path | str,
    *,
    mode: str,
    secrets: Sequence[str] = (),
    secret_headers: Sequence[str] = (),
    loopback_live: bool = False,
) -> Iterator[CassetteSession]:
    """Record or replay the HTTP traffic of the ``with`` block in the cassette at ``path``.

    ``mode``: ``none`` (replay only; a request with no recording, a missing cassette, or
    any connection beyond loopback is a :class:`CassetteError`), ``once`` (record if the
    cassette does not exist, else replay only), ``new_episodes`` (replay what is recorded,
    record the rest), ``all`` (record everything again, keeping recorded requests that
    were not repeated). With ``loopback_live``, mode ``none`` lets requests to loopback
    hosts go live when there is no cassette at all (status ``"live"``; nothing is
    recorded, requests to other hosts stay refused). A cassette that exists is replayed
    strictly whatever the host: a request it has no recording left for (an edited
    recording, a changed test) is a :class:`CassetteError` naming the mode that adds it.

    A :class:`CassetteError` raised during the block is raised again when the block ends,
    even if the code under test caught it, so a missing recording never passes silently.
    """
    if mode not in RECORD_MODES:
        raise ConfigError(
            f"Unknown record mode {mode!r}: use one of {', '.join(RECORD_MODES)} "
            "(--imagegen-record-mode or record_mode in [tool.imagegen])."
        )
    path = Path(path)
    session = CassetteSession(path=path, mode=mode)
    scrubber = Scrubber.create(secrets=secrets, secret_headers=secret_headers)
    cassette: ImagegenCassette | None = None
    if mode == "none" and loopback_live and not path.exists():
        session.status = "live"
    else:
        cassette = ImagegenCassette(path, mode=mode, scrubber=scrubber, session=session)
        cassette._load()
        session._cassette = cassette
    try:
        with contextlib.ExitStack() as stack:
            if mode == "none":
                stack.enter_context(_NetworkGuard(_refusal(session, path)))
            if cassette is not None:
                for patcher in CassettePatcherBuilder(cassette).build():
                    stack.enter_context(patcher)
                with _OPEN_LOCK:
                    _OPEN.append(cassette)
                stack.callback(_close, cassette)
            yield session
    except CassetteError:
        raise
    except Exception as exc:
        if session.error is not None:
            raise session.error from exc
        raise
    finally:
        if cassette is not None:
            try:
                cassette._save()
            finally:
                session.unused = cassette.unused_interactions()
                if session.recorded:
                    session.status = "recorded"
                elif session.played:
                    session.status = "replayed"
    if session.error is not None:
        raise session.error


# -- a test's cassette ----------------------------------------------------------------------------


def live_policy(exists: bool, mode: str, loopback: bool) -> str:
    """Will a cassette's requests go out: ``live``, ``replay`` or ``mixed`` (per request)?"""
    if mode == "none":
        # A loopback endpoint with no cassette goes live; an existing cassette replays
        # strictly (what it lacks is a CassetteError, never a silent live request).
        return "live" if loopback and not exists else "replay"
    if mode == "once":
        return "replay" if exists else "live"
    if mode == "new_episodes":
        return "mixed" if exists else "live"
    return "live"


@dataclass
class CassetteUse:
    """A test's open cassette and its :func:`live_policy`, as the budget hooks need them."""

    session: CassetteSession
    policy: str

    def is_live(self, request: Any) -> bool:
        if self.policy == "mixed":
            # Asked before the request is sent: one the cassette will answer reserves nothing.
            return not self.session.will_replay(request)
        return self.policy != "replay"

    def replayed(self) -> int:
        return int(self.session.played)

    def replayed_counter(self) -> Callable[[], int] | None:
        """:meth:`replayed` where a request may be replayed or go out (``mixed``), else None."""
        return self.replayed if self.policy == "mixed" else None


@contextlib.contextmanager
def use_cassette(
    path: Path,
    *,
    mode: str,
    secrets: Sequence[str],
    secret_headers: Sequence[str],
    loopback: bool,
    data: dict[str, Any],
    reported: Callable[[BaseException], bool] = lambda error: False,
) -> Iterator[CassetteUse]:
    """:func:`recording` around a test: its path and final status are noted in the test's
    ``data``; a :class:`CassetteError` for which ``reported(error)`` is true (the test
    already failed with it) is not raised a second time."""
    data["cassette"] = str(path)
    policy = live_policy(path.exists(), mode, loopback)
    session: CassetteSession | None = None
    try:
        with recording(
            path,
            mode=mode,
            secrets=secrets,
            secret_headers=secret_headers,
            loopback_live=loopback,
        ) as session:
            try:
                yield CassetteUse(session, policy)
            finally:
                data["cassette_status"] = session.status
    except CassetteError as exc:
        if not reported(exc):
            raise
    if session is not None:
        data["cassette_status"] = session.status
        # The recordings left unplayed (an edited or outdated request), for the report.
        data["cassette_unplayed"] = list(session.unused)


def recorded_requests(cassette: CassetteUse) -> list[dict[str, Any]] | None:
    """The JSON bodies of the ``POST .../images/generations`` requests in the cassette, in
    recorded order, when it is replayed (record mode ``none``, or ``once`` with the file
    there); None when the requests are recorded or go live."""
    session = cassette.session
    if session.mode != "none" and cassette.policy != "replay":
        return None
    if not session.path.exists():
        return None  # mode none: the first request fails naming the file and the command
    bodies = []
    for interaction in read_cassette(session.path):
        recorded = interaction["request"]
        if recorded.get("method", "").upper() != "POST" or not urlsplit(
            recorded.get("uri", "")
        ).path.endswith("/images/generations"):
            continue
        try:
            body = json.loads(recorded.get("body") or b"")
        except ValueError:
            continue
        if isinstance(body, dict):
            bodies.append(body)
    return bodies


def unused_in_folders(
    used: Iterable[Path | str], *, unplayed: Iterable[Path | str] = ()
) -> list[Path]:
    """Cassettes that no test used, in the folders (``<endpoint>/<module>``) of those used,
    and the existing ``unplayed`` ones (named by a test that played nothing from them)."""
    idle = {Path(p) for p in unplayed}
    used_paths = [Path(p) for p in used if Path(p) not in idle]
    unused = {p for p in idle if p.is_file()}
    for folder in sorted({p.parent for p in (*used_paths, *idle)}):
        unused.update(find_unused_cassettes(folder, used_paths))
    return sorted(unused)
