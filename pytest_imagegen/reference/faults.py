"""Fault scripting and deliberate defects for the reference server.

A *fault* is a one-off (or N-times) misbehaviour queued by a test: "the next request for
gpt-image-1 stalls". A *defect* is a persistent misbehaviour switched on for a whole run:
"this server always drops ``n``". Faults test a client's error handling; defects test that
the conformance suite notices a broken endpoint.

Pure bookkeeping: nothing here touches sockets, so it is cheap to import.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# Upper bound of every wait a fault can cause, so a forgotten stall cannot hang a run.
MAX_WAIT_S = 600.0


@dataclass(frozen=True)
class FaultKind:
    """What a fault does (as documented), the options it takes with their defaults, and
    whether it is a 200 with a broken payload sent after the usual generation latency."""

    description: str
    options: Mapping[str, float] = field(default_factory=dict)
    shaped: bool = False


#: Every fault, in one table; the app implements each under the same name.
FAULT_KINDS: Mapping[str, FaultKind] = MappingProxyType(
    {
        "stall": FaultKind(
            "accept the request, then send nothing until the client gives up or the "
            "server stops (bounded by option seconds, default 60)",
            options={"seconds": 60.0},
        ),
        "slow_headers": FaultKind(
            "wait option seconds (default 3) before the status line, then answer normally",
            options={"seconds": 3.0},
        ),
        "slow_body": FaultKind(
            "send the status line and headers at once, then dribble the normal body "
            "over option seconds (default 3)",
            options={"seconds": 3.0},
        ),
        "auth_error": FaultKind(
            "401 invalid_api_key with OpenAI's 'Incorrect API key provided' text",
        ),
        "permission_error": FaultKind(
            "403 with OpenAI's 'Your organization must be verified' text",
        ),
        "model_not_found": FaultKind(
            "404 model_not_found: 'The model `X` does not exist or you do not have access to it.'",
        ),
        "rate_limit": FaultKind(
            "429 rate_limit_exceeded (images per minute) with Retry-After (option "
            "retry_after, default 1)",
            options={"retry_after": 1},
        ),
        "quota": FaultKind(
            "429 insufficient_quota ('You exceeded your current quota') without Retry-After",
        ),
        "server_error": FaultKind(
            "500 server_error JSON ('The server had an error while processing your request')",
        ),
        "bad_gateway_html": FaultKind(
            "502 with an nginx HTML 'Bad Gateway' page",
        ),
        "overloaded": FaultKind(
            "503 server_error JSON 'The engine is currently overloaded, please try again later'",
        ),
        "no_channel": FaultKind(
            "relay-style 503 new_api_error '当前分组 default 下对于模型 X 无可用渠道'",
        ),
        "gateway_timeout_html": FaultKind(
            "504 with an nginx HTML 'Gateway Time-out' page",
        ),
        "error_in_200": FaultKind(
            "200 whose body is an OpenAI error envelope instead of images",
        ),
        "empty_data": FaultKind(
            "200 with 'data': []",
            shaped=True,
        ),
        "invalid_json": FaultKind(
            "200 application/json whose body is not valid JSON",
            shaped=True,
        ),
        "truncated_body": FaultKind(
            "the normal answer with its full Content-Length, but only half the body "
            "is sent before the connection closes",
        ),
        "invalid_base64": FaultKind(
            "200 whose b64_json values are not valid base64",
            shaped=True,
        ),
        "not_an_image": FaultKind(
            "200 whose b64_json values decode to bytes that are no image",
            shaped=True,
        ),
        "wrong_size": FaultKind(
            "200 with images of another size than requested (512x512, or 1024x1024 "
            "when 512x512 was asked)",
            shaped=True,
        ),
        "fewer_images": FaultKind(
            "200 with one image fewer than n",
            shaped=True,
        ),
        "connection_reset": FaultKind(
            "TCP reset (RST) before any byte of a response",
        ),
        "content_policy": FaultKind(
            "400 moderation_blocked (GPT-image models) or content_policy_violation (DALL-E models)",
        ),
        "stream_stall": FaultKind(
            "a streamed answer sends its partial images, then nothing until the client gives "
            "up (no completed event)",
        ),
        "stream_no_completed": FaultKind(
            "a streamed answer ends after its partial images, without the completed event",
        ),
        "stream_buffered": FaultKind(
            "a streamed answer is held back and sent all at once at the end, as a buffering "
            "gateway does",
        ),
    }
)

#: Fault name -> what it does.
FAULTS: Mapping[str, str] = MappingProxyType(
    {name: kind.description for name, kind in FAULT_KINDS.items()}
)

DEFECTS: Mapping[str, str] = MappingProxyType(
    {
        "accepts_chat_model": "generates images for chat models instead of refusing them",
        "image_model_as_chat": "image answers (not streamed) are a chat completion whose "
        "message links the images in Markdown, as by a relay that serves the image model "
        "through a chat model",
        "image_model_on_chat": "chat completions answer image models with a completion",
        "drops_n": "always returns one image, whatever n asks for",
        "extra_images": "returns (and reports usage for) one image more than n asks for",
        "ignores_size": "always returns 1024x1024 images",
        "ignores_format": "always returns PNG, whatever output_format asks for",
        "uncompressed_png": "PNG images are stored without compression (a 1024x1024 answer "
        "is over 5 MB)",
        "refuses_gpt_image_quality": "GPT-image requests with quality low, medium or high are "
        "refused (quality checked against dall-e-3's standard and hd)",
        "auth_wrong_status": "a wrong or missing key gets a 500 with a generic body",
        "unknown_model_ok": "unknown models are served as the default model",
        "quota_as_rate_limit": "the quota fault answers a plain 429 rate_limit_exceeded body",
        "no_retry_after": "429 answers carry no Retry-After header",
        "html_errors": "every error is an HTML page (same status)",
        "non_openai_envelope": 'every error body is {"detail": "..."}',
        "empty_data": "every successful generation answers 'data': []",
        "no_validation": "accepts every request shape (no 400 for bad parameters)",
        "wrong_error_param": "validation errors carry 'param': null",
        "no_usage": "GPT-image answers carry no 'usage'",
        "stalls": "every image generation stalls (like the stall fault)",
        "stream_buffered": "every stream is held back and sent all at once at the end",
        "stream_no_completed": "streams end without their completed event",
        "stream_stalls": "streams send their headers, then no event at all",
        "stream_extra_partials": "streams send one partial image more than partial_images asks",
        "stream_out_of_order": "streams send the completed event before the partial images",
        "edits_multipart_broken": "multipart edits are read as JSON and refused (400 'We could "
        "not parse the JSON body'), as by a gateway that breaks multipart",
        "edits_json_refused": "the JSON variant of edits is refused (multipart only)",
        "edits_single_image": "edits take one input image only",
        "ignores_mask_size": "edit masks are not checked (any size or mode is accepted)",
        "accepts_any_file": "edit and variation inputs are not checked (any file is accepted)",
        "no_input_fidelity": "input_fidelity is refused as an unknown parameter",
        "variations_for_all": "every image model makes variations (not just dall-e-2)",
        "responses_no_image": "the Responses image_generation tool answers text only, no image",
        "responses_ignores_size": "the Responses image_generation tool ignores the size asked",
    }
)


def _options_of(name: str) -> Mapping[str, float]:
    kind = FAULT_KINDS.get(name)
    return kind.options if kind is not None else {}


def _unknown_name(kind: str, name: object, known: Iterable[str]) -> ValueError:
    known = sorted(known)
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(known)}.")


def check_defect(name: str) -> str:
    """Return ``name`` if it is a known defect, else raise ValueError listing them."""
    if name not in DEFECTS:
        raise _unknown_name("defect", name, DEFECTS)
    return name


@dataclass
class Fault:
    """One scripted fault: what to do, to which requests, how many more times."""

    name: str
    times: int | None = 1  # None: every matching request until cleared
    model: str | None = None
    quality: str | None = None
    prompt: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    hits: int = 0

    def option(self, key: str) -> Any:
        """The option's value, or the fault's default for it."""
        return self.options.get(key, _options_of(self.name).get(key))

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def matches(self, *, model: str | None, qualities: Iterable[str], prompt: str | None) -> bool:
        """Whether a request with these values is one this fault applies to.

        ``model`` must equal the requested model; ``quality`` may equal either the requested
        value or the one it resolves to (``auto`` -> ``high``); ``prompt`` is a substring.
        """
        if self.model is not None and model != self.model:
            return False
        if self.quality is not None and self.quality not in set(qualities):
            return False
        return self.prompt is None or (isinstance(prompt, str) and self.prompt in prompt)


class FaultScript:
    """The ordered, thread-safe list of faults queued on a reference server.

    ``add`` appends; each image generation request takes the first fault (in the order
    added) whose filters match and that has uses left.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(
        self,
        name: str,
        *,
        times: int | None = 1,
        model: str | None = None,
        quality: str | None = None,
        prompt: str | None = None,
        **options: Any,
    ) -> Fault:
        """Queue fault ``name`` for the next ``times`` matching requests (None: all of them).

        Options: ``seconds`` for stall/slow_headers/slow_body, ``retry_after`` for rate_limit.
        """
        if name not in FAULTS:
            raise _unknown_name("fault", name, FAULTS)
        if times is not None and (not isinstance(times, int) or times < 1):
            raise ValueError(
                f"times must be a positive integer or None (every request), not {times!r}"
            )
        allowed = _options_of(name)
        for key, value in options.items():
            if key not in allowed:
                accepted = ", ".join(sorted(allowed)) or "none"
                raise TypeError(f"fault {name!r} takes no option {key!r} (its options: {accepted})")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"fault option {key!r} must be a number of seconds, not {value!r}")
            if not 0 <= value <= MAX_WAIT_S:
                raise ValueError(
                    f"fault option {key!r} must be between 0 and {MAX_WAIT_S:g} s, not {value!r}"
                )
        fault = Fault(name, times, model, quality, prompt, dict(options))
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(
        self, *, model: str | None, qualities: Iterable[str], prompt: str | None
    ) -> Fault | None:
        """Consume one use of the first matching fault and return it (None if none matches)."""
        qualities = tuple(qualities)
        with self._lock:
            for fault in self._faults:
                if not fault.exhausted and fault.matches(
                    model=model, qualities=qualities, prompt=prompt
                ):
                    fault.hits += 1
                    return fault
        return None

    def clear(self) -> None:
        """Remove every queued fault."""
        with self._lock:
            self._faults.clear()

    @property
    def pending(self) -> list[Fault]:
        """The faults that still have uses left, in order."""
        with self._lock:
            return [f for f in self._faults if not f.exhausted]

    def __iter__(self) -> Iterator[Fault]:
        with self._lock:
            return iter(list(self._faults))

    def __len__(self) -> int:
        with self._lock:
            return len(self._faults)

    def __repr__(self) -> str:
        return f"FaultScript({list(self)!r})"


class DefectSet(set[str]):
    """A ``set`` of defect names that refuses unknown names."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        super().__init__(check_defect(n) for n in names)

    def add(self, name: str) -> None:
        super().add(check_defect(name))

    def update(self, *others: Iterable[str]) -> None:
        for names in others:
            for name in names:
                self.add(name)

    def __ior__(self, other: Iterable[str]) -> DefectSet:  # type: ignore[override,misc]
        self.update(other)
        return self
