"""The fallback runner: one image request through an endpoint's fallback chain, under its deadline.

``generate`` (``images.generate``) and ``edit`` (``images.edit``) turn the caller's parameters
and the endpoint's ``fallback`` overrides into an ordered list of steps, each a request valid
for its model's profile, and run them:

* every attempt gets ``min(timeout_s, time left to the deadline)``; the SDK sees that as its
  client timeout, and a watchdog holds the attempt to it as a whole (connect, headers, a body
  dribbled one byte at a time, the SDK's own retries, fetching image URLs), so ``generate``
  returns by ``deadline_s`` whatever the server does;
* after a failure, one pure function (:func:`decide`) says what happens next;
* a 2xx counts as success only when it carries valid images (:func:`parse_images_response`);
* a step with ``stream=True`` reads Server-Sent Events: its first image event (a partial
  image, or the completed one) must arrive within the attempt's time, and each later one
  within that much of the previous, up to the deadline; a stream that stalls, ends without
  its completed event or is held back past that time is a failure like any other.

Nothing from ``openai``/``httpx2`` is imported at module level: the pure parts (``decide``,
``build_steps``, ``parse_images_response``) work without them, and the client passed to
``generate`` brings its own.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import TYPE_CHECKING, Any

from pytest_imagegen.classify import classify, hint_for
from pytest_imagegen.classify import malformed as malformed_diagnosis
from pytest_imagegen.errors import (
    CallerError,
    Category,
    ConfigError,
    Diagnosis,
    MalformedResponse,
)
from pytest_imagegen.images import (
    MIME_TYPES,
    GeneratedImage,
    decode_b64,
    inspect_image,
    sniff_format,
)
from pytest_imagegen.profiles import resolve_profile
from pytest_imagegen.request_builder import build_request
from pytest_imagegen.sse import parse_block

if TYPE_CHECKING:
    import httpx2
    import openai

    from pytest_imagegen.config import Endpoint
    from pytest_imagegen.profiles import Profile

__all__ = [
    "MAX_IMAGE_URL_BYTES",
    "MAX_RESPONSE_BYTES",
    "MAX_STEP_REPEATS",
    "MIN_ATTEMPT_S",
    "WATCHDOG_GRACE_S",
    "Action",
    "Attempt",
    "Decision",
    "MalformedResponse",
    "Outcome",
    "Step",
    "build_steps",
    "decide",
    "edit",
    "explain",
    "format_params",
    "generate",
    "parse_images_response",
]

# An attempt with less time than this cannot get an image back, but would still be billed if
# the server started on it: below it the runner stops instead of starting one.
MIN_ATTEMPT_S = 0.01
# How often one step may be repeated for a Retry-After before the chain moves on; keeps a
# server that always answers "retry after 0 s" from holding the runner in a loop.
MAX_STEP_REPEATS = 1
# The attempt's client timeout normally ends a silent attempt itself (and the classifier
# names what the SDK raised); the watchdog steps in this much later, or at the deadline,
# whichever is first, for what per-read timeouts cannot see (a dribbled body, SDK retries).
WATCHDOG_GRACE_S = 0.05
# Upper bounds on what one attempt reads, so a runaway body cannot exhaust memory. A 4K PNG
# is about 25 MB, so ten of them base64-encoded stay well below the first figure.
MAX_RESPONSE_BYTES = 512 * 1024 * 1024
MAX_IMAGE_URL_BYTES = 64 * 1024 * 1024

_CONCRETE_SIZE = re.compile(r"^\s*(\d+)\s*x\s*(\d+)\s*$")
_FORMAT_ALIASES = {"jpg": "jpeg"}


# --------------------------------------------------------------------------- data model


@dataclass(frozen=True)
class Attempt:
    """One request of a ``generate`` run, and why the run went on (or stopped) after it."""

    step: int  # 1-based position in the chain; a repeated step keeps its number
    params: dict[str, Any]  # the request body sent (model, prompt, quality, ...)
    started_s: float  # seconds after ``generate`` began
    latency_s: float
    timeout_s: float  # the time this attempt was given
    diagnosis: Diagnosis | None  # None for the successful attempt
    action: str  # what happened next and why, in words

    def describe(self) -> str:
        """One trace line, e.g. ``step 2 {model: gpt-image-1.5, quality: low} at +2.02 s,
        took 0.35 s of 2.00 s: success: 1 image(s), png 1024x1024``."""
        return (
            f"step {self.step} {format_params(self.params)} at +{self.started_s:.2f} s, "
            f"took {self.latency_s:.2f} s of {self.timeout_s:.2f} s: {self.action}"
        )


@dataclass(frozen=True)
class Outcome:
    """What ``generate`` got: the images or the final diagnosis, plus the trace of attempts."""

    images: tuple[GeneratedImage, ...]
    diagnosis: Diagnosis | None  # why it failed; None on success
    attempts: tuple[Attempt, ...]
    elapsed_s: float
    params: dict[str, Any] | None  # the request body of the successful attempt
    response_bytes: int  # size of the successful response (and of images fetched from URLs)
    usage: dict[str, Any] | None  # the response's ``usage`` object when it had one
    cost_usd: float = 0.0  # estimated from the profile's prices; 0 when nothing succeeded
    # The partial images the successful attempt streamed before its final image(s), in the
    # order they arrived; empty when it did not stream (or asked for partial_images=0).
    partials: tuple[GeneratedImage, ...] = ()

    @property
    def ok(self) -> bool:
        return self.diagnosis is None and bool(self.images)

    def trace(self) -> str:
        """The attempts as numbered lines, then the result (for logs and failure messages)."""
        lines = [f"{i}. {a.describe()}" for i, a in enumerate(self.attempts, 1)]
        if self.ok:
            lines.append(
                f"=> {len(self.images)} image(s) in {self.elapsed_s:.2f} s, "
                f"estimated ${self.cost_usd:.3f}"
            )
        else:
            lines.append(f"=> failed after {self.elapsed_s:.2f} s: {self.diagnosis}")
        return "\n".join(lines)


# One input file of an edit as the SDK takes it: (filename, bytes, content type).
FileTuple = tuple[str, bytes, str]


@dataclass(frozen=True)
class Step:
    """One link of the chain: the overrides it applies and the request body they give.

    An edit's steps carry its input ``images`` (and ``mask``); the body holds the other
    fields, which go as multipart form fields."""

    number: int  # 1-based
    overrides: Mapping[str, Any]  # {} for step 1 (the caller's own parameters)
    profile: Profile
    body: dict[str, Any]
    images: tuple[FileTuple, ...] = ()
    mask: FileTuple | None = None

    @property
    def n(self) -> int:
        n = self.body.get("n")
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1

    @property
    def is_edit(self) -> bool:
        return bool(self.images)

    @property
    def streams(self) -> bool:
        return self.body.get("stream") is True


class Action(str, Enum):
    """What the runner does after a failed attempt."""

    REPEAT = "repeat"  # wait for Retry-After, then send the same step again
    FALL_BACK = "fall_back"  # go on to the next step of the chain
    STOP = "stop"  # give up; the failed attempt's diagnosis is the outcome's

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Decision:
    """The verdict of :func:`decide`: the action, why (a clause that follows the
    diagnosis, e.g. "is not retryable"), and how long to wait before repeating."""

    action: Action
    reason: str
    wait_s: float = 0.0


# --------------------------------------------------------------------------- the decision


def decide(
    diagnosis: Diagnosis,
    *,
    time_left_s: float,
    has_next_step: bool,
    retried_same_step: bool,
    min_attempt_s: float = MIN_ATTEMPT_S,
) -> Decision:
    """What to do after a failed attempt. Pure: the whole fallback policy is this table.

    ====================================  =============================================
    diagnosis and situation               action
    ====================================  =============================================
    not retryable                         stop at once
    retryable, less than ``min_attempt_s``  stop (no time for another attempt)
    left before the deadline
    retryable, Retry-After ``r`` with     wait ``r``, then repeat the same step
    ``r + min_attempt_s <= time left``,   (at most ``MAX_STEP_REPEATS`` times per step)
    step not repeated yet
    retryable, otherwise, a next step     fall back to the next step
    retryable, no next step               stop
    ====================================  =============================================
    """
    if not diagnosis.retryable:
        return Decision(Action.STOP, "is not retryable")
    left = max(0.0, time_left_s)
    if left < min_attempt_s:
        return Decision(
            Action.STOP, f"is retryable, but only {_s(left)} is left before the deadline"
        )
    retry_after = diagnosis.retry_after_s
    wait_note = ""
    if retry_after is not None and math.isfinite(retry_after):
        wait = max(0.0, retry_after)
        if retried_same_step:
            wait_note = f" (it asked to retry after {_s(wait)}, but this step was already repeated)"
        elif wait + min_attempt_s <= left:
            return Decision(
                Action.REPEAT,
                f"is retryable and its Retry-After of {_s(wait)} fits in the {_s(left)} left",
                wait_s=wait,
            )
        else:
            wait_note = f" (it asked to retry after {_s(wait)}, more than the {_s(left)} left)"
    if has_next_step:
        return Decision(Action.FALL_BACK, f"is retryable{wait_note}")
    return Decision(Action.STOP, f"is retryable{wait_note}, but no fallback step is left")


def explain(
    diagnosis: Diagnosis,
    decision: Decision,
    *,
    latency_s: float,
    step: int,
    next_step: Step | None = None,
) -> str:
    """The trace sentence for a failed attempt, e.g. "timeout after 2.00 s is retryable:
    falling back to step 2 {quality: low}"."""
    subject = _failure_label(diagnosis, latency_s)
    if decision.action is Action.REPEAT:
        then = f"waiting {_s(decision.wait_s)}, then repeating step {step}"
    elif decision.action is Action.FALL_BACK and next_step is not None:
        then = f"falling back to step {next_step.number} {format_params(next_step.overrides)}"
    else:
        then = "stopping"
        if not diagnosis.retryable and diagnosis.hint:
            then += f" ({diagnosis.hint})"
    return f"{subject} {decision.reason}: {then}"


def format_params(params: Mapping[str, Any]) -> str:
    """``{quality: low, size: 1024x1024}``; the prompt is left out (it can be long)."""
    shown = ", ".join(f"{k}: {v}" for k, v in params.items() if k != "prompt")
    return "{" + shown + "}"


def _failure_label(diagnosis: Diagnosis, latency_s: float) -> str:
    if diagnosis.category == Category.TIMEOUT and diagnosis.status is None:
        message = diagnosis.message or ""
        # A stream's timeout says how far the stream got (stalled, or held back).
        shown = f" ({_shorten(message, 160)})" if message.startswith("the stream") else ""
        return f"timeout after {_s(latency_s)}{shown}"
    detail = [f"HTTP {diagnosis.status}"] if diagnosis.status is not None else []
    if diagnosis.code:
        detail.append(str(diagnosis.code))
    if diagnosis.category in (Category.MALFORMED_RESPONSE, Category.UNKNOWN) and diagnosis.message:
        detail.append(_shorten(diagnosis.message, 120))
    return f"{diagnosis.category} ({', '.join(detail)})" if detail else str(diagnosis.category)


def _s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 10 else f"{seconds:.2f} s"


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- the chain


def build_steps(
    endpoint: Endpoint,
    prompt: str,
    *,
    image: Any = None,
    mask: Any = None,
    **params: Any,
) -> tuple[Step, ...]:
    """The chain as request bodies: ``[params] + [params | override for each fallback]``.

    With ``image`` (one input file or a list of them) and an optional ``mask``, the steps
    are edits of those files. A step whose ``model`` differs from the endpoint's is checked
    against that model's own profile (an edit step also against its edit rules: the model
    has edits, the number, type and size of the files, the mask). Raises
    :class:`ConfigError` naming the step when a request would be invalid, so a wrong chain
    is reported before any request is sent. ``stream=True`` makes a step stream where its
    model can (GPT-image); a model that cannot stream is sent the request without it.
    """
    _check_endpoint_and_prompt(endpoint, prompt)
    images = _input_files(image) if image is not None else ()
    mask_file = _input_file(mask, "mask") if mask is not None else None
    if mask_file is not None and not images:
        raise TypeError("a mask was given without an image to edit; pass image=... as well.")
    params = {k: v for k, v in params.items() if k != "prompt"}
    chain: list[Mapping[str, Any]] = [{}, *endpoint.fallback]
    steps = []
    for number, overrides in enumerate(chain, 1):
        merged = {**params, **dict(overrides)}
        merged.pop("prompt", None)
        model = merged.pop("model", None) or endpoint.image_model
        where = (
            "the request parameters"
            if number == 1
            else f"fallback step {number} {format_params(overrides)}"
        )
        profile = _profile_for(endpoint, model, where)
        try:
            if images:
                body = _edit_body(profile, model, prompt, merged, images, mask_file)
            else:
                body = build_request(profile, model=model, prompt=prompt, **merged)
        except ConfigError as exc:
            problems = getattr(exc, "summary", None) or str(exc)
            what = "an edit request" if images else "a request"
            raise ConfigError(
                f"{where} of endpoint {endpoint.name!r} would send {what} that profile "
                f"{profile.name} rejects: {problems} Fix the parameters or the endpoint's "
                f"`fallback` list so that every step is valid for its model."
            ) from exc
        steps.append(Step(number, dict(overrides), profile, body, images, mask_file))
    return tuple(steps)


def _edit_body(
    profile: Profile,
    model: str,
    prompt: str,
    merged: Mapping[str, Any],
    images: tuple[FileTuple, ...],
    mask: FileTuple | None,
) -> dict[str, Any]:
    """The form fields of an ``images.edit`` step, checked with its files against the
    profile's edit rules (OpenAI's wording); raises ``RequestShapeError``."""
    from pytest_imagegen.request_builder import RequestShapeError, Upload, validate_edit

    intent = dict(merged)
    fidelity = intent.pop("input_fidelity", None)  # an edit-only field build_request lacks
    body = build_request(profile, model=model, prompt=prompt, **intent)
    if fidelity is not None:
        body["input_fidelity"] = fidelity
    problems = validate_edit(
        body,
        profile,
        images=[Upload("image", data, ctype, name) for name, data, ctype in images],
        mask=Upload("mask", mask[1], mask[2], mask[0]) if mask is not None else None,
    )
    if problems:
        raise RequestShapeError(problems, profile=profile.name)
    return body


def _input_files(image: Any) -> tuple[FileTuple, ...]:
    """``image`` as the SDK's file tuples: one file, or a list of them (a tuple is one
    file, as in the SDK: ``(filename, content[, content_type])``)."""
    if isinstance(image, list):
        if not image:
            raise TypeError("image=[] has no file to edit; pass one image or a list of them.")
        return tuple(_input_file(f, f"image {i}") for i, f in enumerate(image, 1))
    return (_input_file(image, "image"),)


def _input_file(value: Any, what: str) -> FileTuple:
    """One input file read into memory once, so every step (and repeat) sends the same
    bytes: bytes, a path (``pathlib.Path``), a binary file object, or a tuple
    ``(filename, content[, content_type])``; the content type is sniffed when not given."""
    import os

    filename: str | None = None
    content_type: str | None = None
    content: Any = value
    if isinstance(value, tuple):
        if len(value) not in (2, 3) or not (value[0] is None or isinstance(value[0], str)):
            raise TypeError(
                f"{what} as a tuple must be (filename, content) or (filename, content, "
                f"content_type), got a tuple of {len(value)} item(s)."
            )
        filename, content = value[0], value[1]
        content_type = value[2] if len(value) == 3 else None
    if isinstance(content, (bytes, bytearray, memoryview)):
        data = bytes(content)
    elif isinstance(content, os.PathLike):
        path = os.fspath(content)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise ConfigError(f"cannot read {what} from {path!r}: {exc.strerror or exc}") from None
        filename = filename or os.path.basename(str(path))
    elif callable(getattr(content, "read", None)):
        data = content.read()
        if not isinstance(data, bytes):
            raise TypeError(f"{what} is a text file object; open the file in binary mode ('rb').")
        name = getattr(content, "name", None)
        filename = filename or (os.path.basename(name) if isinstance(name, str) else None)
    else:
        hint = " (a path? pass pathlib.Path(...))" if isinstance(content, str) else ""
        raise TypeError(
            f"{what} must be the file's bytes, a pathlib.Path, a binary file object or a "
            f"(filename, content[, content_type]) tuple, got {type(content).__name__}{hint}."
        )
    fmt = sniff_format(data)
    if content_type is None:
        content_type = MIME_TYPES.get(fmt or "", "application/octet-stream")
    if not filename:
        filename = f"{what.replace(' ', '')}.{fmt or 'bin'}"
    return (filename, data, content_type)


def _check_endpoint_and_prompt(
    endpoint: object, prompt: object, *, function: str = "generate"
) -> None:
    from pytest_imagegen.config import Endpoint

    # By name as well: an Endpoint of a reloaded module (pytester, importlib.reload) is one.
    if not isinstance(endpoint, Endpoint) and type(endpoint).__name__ != "Endpoint":
        named = " (an endpoint name?)" if isinstance(endpoint, str) else ""
        raise TypeError(
            f"{function}() needs an Endpoint as 'endpoint', got {type(endpoint).__name__} "
            f"{endpoint!r:.60}{named}. In a test, use the imagegen_endpoint fixture or "
            "imagegen_settings.endpoint('NAME'); outside pytest, build one with "
            "pytest_imagegen.config.load_settings(...).endpoint('NAME')."
        )
    if not isinstance(prompt, str):
        raise TypeError(
            f"{function}() takes the prompt as a string, got {type(prompt).__name__} "
            f"{prompt!r:.60}."
        )


def _check_client(client: object, *, function: str = "generate") -> None:
    """``client`` must be a synchronous SDK client (``openai.OpenAI`` / ``AzureOpenAI``)."""
    import openai

    images = getattr(client, "images", None)
    generate = getattr(images, "generate", None)
    if isinstance(client, openai.AsyncOpenAI) or inspect.iscoroutinefunction(generate):
        raise TypeError(
            f"{function}() runs synchronously and needs an openai.OpenAI client, got an "
            "openai.AsyncOpenAI. Pass a synchronous client (imagegen_client, or "
            f"endpoint.client()); from async code, run it in a thread: await "
            f"asyncio.to_thread({function}, client, endpoint, prompt, ...)."
        )
    if isinstance(client, openai.OpenAI) or (
        callable(generate) and callable(getattr(client, "with_options", None))
    ):
        return
    raise TypeError(
        f"{function}() needs an openai.OpenAI client as 'client', got {type(client).__name__} "
        f"{client!r:.60}. Use the imagegen_client fixture, or endpoint.client()."
    )


def _profile_for(endpoint: Endpoint, model: str, where: str) -> Profile:
    if model == endpoint.image_model:
        return endpoint.profile
    profile = resolve_profile(model)
    if profile is None:
        raise ConfigError(
            f"{where} of endpoint {endpoint.name!r} switches to model {model!r}, which "
            f"matches no known capability profile, so its parameters cannot be checked. Use "
            f"a known image model there, or give the model a custom profile."
        )
    return profile


# --------------------------------------------------------------------------- the runner


def generate(client: openai.OpenAI, endpoint: Endpoint, prompt: str, **params: Any) -> Outcome:
    """Run one image request through ``endpoint``'s fallback chain within ``deadline_s``.

    ``params`` are Images API parameters (``quality``, ``size``, ``n``, ``model``,
    ``stream``, ``partial_images``, ...). Returns an :class:`Outcome`; endpoint failures
    never raise (they end up in ``Outcome.diagnosis``). An invalid chain raises
    :class:`ConfigError` before any request; a failure of pytest-imagegen's own machinery
    during an attempt (e.g. a :class:`~pytest_imagegen.errors.CassetteError` in replay
    mode) is raised as it is.
    """
    _check_endpoint_and_prompt(endpoint, prompt)
    _check_client(client)
    for name in ("image", "mask"):
        if name in params:
            raise TypeError(
                f"generate() makes new images and takes no {name!r}; to edit an image, call "
                "pytest_imagegen.edit(client, endpoint, prompt, image, mask=...)."
            )
    return _run(client, endpoint, build_steps(endpoint, prompt, **params))


def edit(
    client: openai.OpenAI,
    endpoint: Endpoint,
    prompt: str,
    image: Any,
    *,
    mask: Any = None,
    **params: Any,
) -> Outcome:
    """Run one ``images.edit`` request through ``endpoint``'s fallback chain, as
    :func:`generate` does for generations.

    ``image`` is one input file or a list of them (GPT-image models take up to 16): bytes,
    a ``pathlib.Path``, a binary file object or a ``(filename, content[, content_type])``
    tuple; ``mask`` an optional PNG mask of the first image's size. The files are read once
    and every step sends them again; each step is checked against its model's edit rules
    before anything is sent. ``stream=True`` streams ``image_edit.*`` events.
    """
    _check_endpoint_and_prompt(endpoint, prompt, function="edit")
    _check_client(client, function="edit")
    if image is None:
        raise TypeError("edit() needs the image to edit as 'image' (bytes, a path or a file).")
    return _run(client, endpoint, build_steps(endpoint, prompt, image=image, mask=mask, **params))


def _run(client: openai.OpenAI, endpoint: Endpoint, steps: tuple[Step, ...]) -> Outcome:
    start = time.monotonic()
    _warm_up(client)
    deadline = start + max(0.0, float(endpoint.deadline_s))
    attempts: list[Attempt] = []
    index, repeats = 0, 0
    diagnosis: Diagnosis | None = None
    while True:
        step = steps[index]
        began = time.monotonic()
        time_limit_s = min(float(endpoint.timeout_s), deadline - began)
        if time_limit_s < MIN_ATTEMPT_S:
            # Reached before the first attempt when the limits leave no time at all; later,
            # ``decide`` has already stopped unless the clock jumped.
            diagnosis = diagnosis or _timeout_diagnosis(
                f"timeout_s={endpoint.timeout_s} and deadline_s={endpoint.deadline_s} "
                f"leave no time for an attempt"
            )
            break
        result = _run_attempt(client, endpoint, step, time_limit_s, deadline)
        if result.error is not None:
            raise result.error
        ended = time.monotonic()
        latency = ended - began
        if result.diagnosis is None:
            attempts.append(
                Attempt(
                    step.number,
                    dict(step.body),
                    began - start,
                    latency,
                    time_limit_s,
                    None,
                    f"success: {_describe_images(result.images)}{result.note}",
                )
            )
            return Outcome(
                images=result.images,
                diagnosis=None,
                attempts=tuple(attempts),
                elapsed_s=time.monotonic() - start,
                params=dict(step.body),
                response_bytes=result.response_bytes,
                usage=result.usage,
                cost_usd=_estimate_cost(step),
                partials=result.partials,
            )
        diagnosis = result.diagnosis
        has_next = index + 1 < len(steps)
        decision = decide(
            diagnosis,
            time_left_s=deadline - ended,
            has_next_step=has_next,
            retried_same_step=repeats >= MAX_STEP_REPEATS,
        )
        action = explain(
            diagnosis,
            decision,
            latency_s=latency,
            step=step.number,
            next_step=steps[index + 1] if has_next else None,
        )
        attempts.append(
            Attempt(
                step.number,
                dict(step.body),
                began - start,
                latency,
                time_limit_s,
                diagnosis,
                action,
            )
        )
        if decision.action is Action.STOP:
            break
        if decision.action is Action.REPEAT:
            # ``decide`` only repeats when the wait fits; the min() guards against clock drift.
            time.sleep(max(0.0, min(decision.wait_s, deadline - time.monotonic())))
            repeats += 1
        else:
            index, repeats = index + 1, 0
    return Outcome(
        images=(),
        diagnosis=diagnosis,
        attempts=tuple(attempts),
        elapsed_s=time.monotonic() - start,
        params=None,
        response_bytes=0,
        usage=None,
        cost_usd=0.0,
    )


def _describe_images(images: tuple[GeneratedImage, ...]) -> str:
    kinds = sorted({f"{im.format} {im.size}" for im in images})
    return f"{len(images)} image(s), {', '.join(kinds)}"


def _estimate_cost(step: Step) -> float:
    quality, size = step.body.get("quality"), step.body.get("size")
    try:
        return float(step.profile.price(quality=quality, size=size, n=step.n))
    except (KeyError, ValueError, TypeError):
        # A size or quality with no listed price (custom profiles, "auto"): no estimate.
        return 0.0


def _timeout_diagnosis(message: str) -> Diagnosis:
    return Diagnosis(
        category=Category.TIMEOUT,
        problem_class="efficiency",
        retryable=True,
        hint=hint_for(Category.TIMEOUT),
        message=message,
    )


@dataclass(frozen=True)
class _Result:
    diagnosis: Diagnosis | None
    images: tuple[GeneratedImage, ...] = ()
    response_bytes: int = 0
    usage: dict[str, Any] | None = None
    error: CallerError | None = None  # raised in the caller's thread (e.g. CassetteError)
    partials: tuple[GeneratedImage, ...] = ()
    note: str = ""  # appended to the success line of the trace (how a stream went)


class _OutOfTime(Exception):
    """Raised inside an attempt when its time is up while a body is still arriving."""


@dataclass
class _StreamState:
    """How far a streamed attempt got, for the reason given when its time runs out."""

    begun: float
    partials: int = 0
    completed: int = 0
    first_s: float | None = None  # seconds from sending to the first image event
    last_s: float | None = None  # ... to the latest one

    def seen(self, now: float) -> None:
        at = now - self.begun
        if self.first_s is None:
            self.first_s = at
        self.last_s = at

    def why_out_of_time(self, idle_s: float, *, deadline: bool = False) -> str:
        if self.first_s is None:
            return (
                f"the stream sent no image event within the attempt's {_s(idle_s)} (it "
                f"stalled, or a proxy held the events back)"
            )
        got = f"{self.partials} partial image(s)" + (
            f" and {self.completed} completed image(s)" if self.completed else ""
        )
        if deadline:
            return f"the deadline came while the stream was still arriving, after {got}"
        return (
            f"the stream stalled: no event for {_s(idle_s)} after {got}, the last at "
            f"+{_s(self.last_s or 0.0)}"
        )


class _Watch:
    """Shared between the runner and the thread doing one attempt.

    The runner waits until the attempt's end; if no result came by then it cancels, which
    also shuts down the socket of whatever response is being read, so the reading thread
    wakes up at once instead of at its next read timeout. A stream moves the end on as its
    image events arrive (:meth:`extend`), never past ``limit`` (the deadline).
    """

    def __init__(self, end: float, limit: float | None = None) -> None:
        self._end = end
        self.limit = end if limit is None else max(end, limit)
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._cancelled = False
        self._result: _Result | None = None
        self._tracked: httpx2.Response | None = None
        self.stream: _StreamState | None = None

    @property
    def end(self) -> float:
        with self._lock:
            return self._end

    def extend(self, until: float) -> None:
        with self._lock:
            self._end = max(self._end, min(until, self.limit))

    def time_left(self) -> float:
        return self.end - time.monotonic()

    def check(self) -> None:
        if self._cancelled or time.monotonic() >= self.end:
            raise _OutOfTime

    def finish(self, result: _Result) -> None:
        with self._lock:
            if not self._cancelled:
                self._result = result
        self.done.set()

    def cancel(self) -> _Result | None:
        """Stop the attempt; returns its result if it finished in the meantime."""
        with self._lock:
            if self._result is not None:
                return self._result
            self._cancelled = True
            tracked, self._tracked = self._tracked, None
        if tracked is not None:
            _shutdown(tracked)
        return None

    def track(self, response: httpx2.Response | None) -> None:
        """Register the response whose body is being read (None when done with it)."""
        with self._lock:
            if not self._cancelled:
                self._tracked = response
                return
        if response is not None:
            _shutdown(response)

    def out_of_time(self, time_limit_s: float, default: str) -> str:
        """Why the attempt ran out of time, in words (``default`` when it did not stream)."""
        if self.stream is None:
            return default
        if self.end >= self.limit and self.stream.first_s is not None:
            return self.stream.why_out_of_time(time_limit_s, deadline=True)
        return self.stream.why_out_of_time(time_limit_s)


def _shutdown(response: httpx2.Response) -> None:
    # The socket is only reachable through httpcore's ``network_stream`` extension (absent
    # for mock transports and cassette replays, which do not block on a socket anyway).
    stream = response.extensions.get("network_stream")
    try:
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, AttributeError):
        pass  # already closed: nothing left to wake up


def _warm_up(client: openai.OpenAI) -> None:
    # The SDK imports its resource modules on first access, and building their pydantic
    # models holds the GIL for long stretches; done in an attempt's thread, that would keep
    # the runner from waking up on time. Done here, it happens once, before any request.
    try:
        _split_body(client, {})
        _split_body(client, {}, "edit")
        _ = client.images.with_streaming_response.generate
        _ = client.images.with_streaming_response.edit
    except Exception:
        pass  # not an SDK client after all: the attempt will say what is wrong


def _run_attempt(
    client: openai.OpenAI, endpoint: Endpoint, step: Step, time_limit_s: float, deadline: float
) -> _Result:
    watch = _Watch(time.monotonic() + time_limit_s, deadline if step.streams else None)
    worker = threading.Thread(
        target=_attempt_thread,
        args=(client, endpoint, step, time_limit_s, watch),
        name=f"imagegen-{endpoint.name}-step{step.number}",
        daemon=True,  # an abandoned attempt must never keep the interpreter alive
    )
    worker.start()
    while True:
        # A stream's end moves on while its events arrive: wait again until it stops moving.
        give_up = min(watch.end + WATCHDOG_GRACE_S, deadline)
        if watch.done.wait(max(0.0, give_up - time.monotonic())):
            break
        if time.monotonic() >= min(watch.end + WATCHDOG_GRACE_S, deadline):
            break
    # Cancelling a finished attempt just hands back its result; an unfinished one is
    # abandoned (its thread ends at its own socket timeout at the latest).
    result = watch.cancel()
    if result is not None:
        return result
    return _Result(
        _timeout_diagnosis(
            watch.out_of_time(
                time_limit_s, f"no complete response within the attempt's {_s(time_limit_s)}"
            )
        )
    )


def _attempt_thread(
    client: openai.OpenAI, endpoint: Endpoint, step: Step, time_limit_s: float, watch: _Watch
) -> None:
    try:
        result = _attempt(client, endpoint, step, time_limit_s, watch)
    except _OutOfTime:
        result = _Result(
            _timeout_diagnosis(
                watch.out_of_time(
                    time_limit_s,
                    f"the response was still arriving when the attempt's {_s(time_limit_s)} "
                    f"ran out",
                )
            )
        )
    except MalformedResponse as exc:
        result = _Result(malformed_diagnosis(str(exc), status=exc.status))
    except CallerError as exc:
        # The caller's setup refused the request (a cassette that cannot answer, a refused
        # connection in replay mode): that is the user's to fix, not an endpoint error to
        # fall back from.
        result = _Result(None, error=exc)
    except BaseException as exc:  # a thread must not die with an exception: it is a diagnosis
        diagnosis = classify(exc)
        if diagnosis.category == Category.TIMEOUT and watch.stream is not None:
            # The SDK's read timeout inside a stream: say how far the stream got.
            diagnosis = _timeout_diagnosis(watch.stream.why_out_of_time(time_limit_s))
        result = _Result(diagnosis)
    watch.finish(result)


def _attempt(
    client: openai.OpenAI, endpoint: Endpoint, step: Step, time_limit_s: float, watch: _Watch
) -> _Result:
    api = client.with_options(timeout=time_limit_s, max_retries=endpoint.max_retries)
    method = "edit" if step.is_edit else "generate"
    kwargs, extra = _split_body(api, step.body, method)
    if step.is_edit:
        kwargs["image"] = step.images[0] if len(step.images) == 1 else list(step.images)
        if step.mask is not None:
            kwargs["mask"] = step.mask
    send = getattr(api.images.with_streaming_response, method)
    begun = time.monotonic()
    # A streamed response lets us read the body chunk by chunk against our own clock: the
    # HTTP read timeout only bounds the gap between two chunks, not the whole body.
    with send(**kwargs, extra_body=extra or None) as resp:
        http_response = resp.http_response
        status = resp.status_code
        content_type = http_response.headers.get("content-type", "").lower()
        watch.track(http_response)
        try:
            if step.streams and "text/event-stream" in content_type:
                watch.stream = _StreamState(begun)
                try:
                    return _read_stream(http_response.iter_bytes(), watch, step, time_limit_s)
                except MalformedResponse as exc:
                    exc.status = status
                    raise
            # Not a stream (or a server that answered a stream request with JSON): the
            # whole body within the attempt's time.
            body = _read_limited(
                http_response.iter_bytes(), watch, MAX_RESPONSE_BYTES, "the response"
            )
        finally:
            watch.track(None)
    fetched = 0

    def fetch(url: str) -> bytes:
        nonlocal fetched
        data = _fetch_url(client, url, watch, endpoint)
        fetched += len(data)
        return data

    try:
        images, document = _parse(
            body,
            n=step.n,
            size=_requested_size(step),
            output_format=step.body.get("output_format"),
            fetch=fetch,
        )
    except MalformedResponse as exc:
        exc.status = status
        raise
    usage = document.get("usage")
    return _Result(
        None,
        images,
        response_bytes=len(body) + fetched,
        usage=usage if isinstance(usage, dict) else None,
        note=" (asked to stream, answered with JSON)" if step.streams else "",
    )


def _read_stream(chunks: Any, watch: _Watch, step: Step, idle_s: float) -> _Result:
    """The images of a Server-Sent Events answer, read against the attempt's clock.

    Each image event (``*.partial_image``, ``*.completed``) gives the stream ``idle_s``
    more, up to the deadline; the read ends once ``n`` completed images came. An ``error``
    event is classified like an error body; the end of the stream before ``n`` completed
    events is a malformed response.
    """
    state = watch.stream
    assert state is not None
    reader = _SSEReader()
    size, fmt = _requested_size(step), step.body.get("output_format")
    partials: list[GeneratedImage] = []
    completed: list[GeneratedImage] = []
    usage: dict[str, Any] | None = None
    total = 0
    for chunk in _limited(chunks, watch, MAX_RESPONSE_BYTES, "the stream"):
        total += len(chunk)
        for name, payload in reader.feed(chunk):
            kind = str(payload.get("type") or name) if isinstance(payload, dict) else name
            if kind == "error" or (
                isinstance(payload, dict) and isinstance(payload.get("error"), dict)
            ):
                return _Result(classify(payload if payload is not None else "error event"))
            if not isinstance(payload, dict):
                continue  # a comment, a keep-alive, an event that carries no JSON
            if kind.endswith(".partial_image"):
                label = f"partial image {len(partials) + 1}"
                partials.append(_event_image(payload, label, None, None))
                state.partials += 1
            elif kind.endswith(".completed"):
                label = f"completed image {len(completed) + 1}"
                completed.append(_event_image(payload, label, size, fmt))
                state.completed += 1
                if isinstance(payload.get("usage"), dict):
                    usage = payload["usage"]
            else:
                continue  # an event type this runner does not know: no sign of progress
            now = time.monotonic()
            state.seen(now)
            watch.extend(now + idle_s)
        if len(completed) >= step.n:
            break
    watch.check()
    if len(completed) < step.n:
        kind = "image_edit" if step.is_edit else "image_generation"
        raise MalformedResponse(
            f"the stream ended without its {kind}.completed event ({len(completed)} of "
            f"{step.n} completed image(s), after {len(partials)} partial image(s))"
        )
    first = f", the first image event after {_s(state.first_s or 0.0)}"
    note = f" (streamed {len(partials)} partial image(s){first})"
    return _Result(
        None,
        tuple(completed),
        response_bytes=total,
        usage=usage,
        partials=tuple(partials),
        note=note,
    )


def _event_image(
    payload: Mapping[str, Any], label: str, size: str | None, output_format: str | None
) -> GeneratedImage:
    b64 = payload.get("b64_json")
    if not isinstance(b64, str) or not b64:
        raise MalformedResponse(f"the stream's {label} has no `b64_json`")
    try:
        raw = decode_b64(b64)
    except ValueError:
        raise MalformedResponse(f"the stream's {label}: `b64_json` is not valid base64") from None
    return _checked_image(raw, f"the stream's {label}", size, output_format)


class _SSEReader:
    """Server-Sent Events from a byte stream: ``feed`` returns the events a chunk
    completes as (event name, JSON data or None). Linear in the bytes fed (an event that
    carries a multi-MB image arrives in many chunks)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0
        self._carry = b""

    def feed(self, chunk: bytes) -> list[tuple[str, Any]]:
        data = self._carry + chunk
        # A CRLF split between two chunks would otherwise hide a blank line.
        self._carry = b"\r" if data.endswith(b"\r") else b""
        if self._carry:
            data = data[:-1]
        self._buffer += data.replace(b"\r\n", b"\n")
        events: list[tuple[str, Any]] = []
        while True:
            at = self._buffer.find(b"\n\n", max(0, self._scanned - 1))
            if at < 0:
                self._scanned = len(self._buffer)
                return events
            block = bytes(self._buffer[:at])
            del self._buffer[: at + 2]
            self._scanned = 0
            event = parse_block(block)
            if event is not None:
                events.append(event)


_SDK_KEYWORDS: dict[tuple[type, str], frozenset[str]] = {}


def _split_body(
    api: openai.OpenAI, body: Mapping[str, Any], method: str = "generate"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Body keys the installed SDK's ``images.generate`` (or ``images.edit``) names go as
    keywords; any other key (a newer API parameter, a relay extension) goes through
    ``extra_body`` unchanged."""
    images = api.images
    known = _SDK_KEYWORDS.get((type(images), method))
    if known is None:
        sig = inspect.signature(getattr(images, method))
        known = frozenset(
            name
            for name, p in sig.parameters.items()
            if p.kind is p.KEYWORD_ONLY
            and name not in ("extra_headers", "extra_query", "extra_body", "timeout")
        )
        _SDK_KEYWORDS[(type(images), method)] = known
    kwargs = {k: v for k, v in body.items() if k in known}
    extra = {k: v for k, v in body.items() if k not in known}
    return kwargs, extra


def _limited(chunks: Any, watch: _Watch, limit: int, what: str) -> Iterator[bytes]:
    """``chunks`` passed on within the attempt's time, until more than ``limit`` bytes came."""
    total = 0
    for chunk in chunks:
        watch.check()
        total += len(chunk)
        if total > limit:
            raise MalformedResponse(
                f"{what} is larger than {limit // (1024 * 1024)} MB; stopped reading"
            )
        yield chunk


def _read_limited(chunks: Any, watch: _Watch, limit: int, what: str) -> bytes:
    body = b"".join(_limited(chunks, watch, limit, what))
    watch.check()
    return body


def _fetch_url(client: openai.OpenAI, url: str, watch: _Watch, endpoint: Endpoint) -> bytes:
    """Download an image URL (dall-e ``response_format=url``) within the attempt's time.

    Uses the client's own HTTP layer so that cassettes and proxies apply; it sends none of
    the API's headers, so the key never goes to the image host.
    """
    if url.startswith("data:"):
        try:
            return decode_b64(url)
        except ValueError as exc:
            raise MalformedResponse(f"the image data URL is not valid base64: {exc}") from None
    from pytest_imagegen import image_urls
    from pytest_imagegen.bounds import Limits, largest_image_bytes

    # Scheme and address literals are refused before anything is sent; a name is checked
    # where it is connected to, when the client is a bounded one.
    image_urls.check_url(url, base_url=endpoint.base_url)
    http = getattr(client, "_client", None)
    if http is None or not hasattr(http, "stream"):
        raise MalformedResponse("the response gave an image URL, but the client cannot fetch it")
    left = watch.time_left()
    if left <= 0:
        raise _OutOfTime
    cap = min(MAX_IMAGE_URL_BYTES, largest_image_bytes(endpoint.profile))
    extensions = {
        "imagegen_connect_guard": image_urls.connect_guard(url, base_url=endpoint.base_url),
        "imagegen_limits": Limits(timeout_s=left, max_body_bytes=cap),
    }
    import httpx2

    try:
        with http.stream("GET", url, timeout=left, extensions=extensions) as response:
            watch.track(response)
            try:
                if response.status_code != 200:
                    raise MalformedResponse(
                        f"the image URL {image_urls.shown(url)!r} answered HTTP "
                        f"{response.status_code} instead of an image"
                    )
                return _read_limited(response.iter_bytes(), watch, cap, "an image URL's body")
            finally:
                watch.track(None)
    except httpx2.HTTPError as exc:
        if watch.time_left() <= 0:
            raise _OutOfTime from None
        raise MalformedResponse(
            f"downloading the image URL {image_urls.shown(url)!r} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def _requested_size(step: Step) -> str | None:
    size = step.body.get("size")
    if size is None and not step.is_edit:
        # An edit without a size follows its input image; only an asked size is checked.
        size = step.profile.default_size
    return size if isinstance(size, str) else None


# --------------------------------------------------------------------------- parsing


def parse_images_response(
    body: bytes,
    *,
    n: int,
    size: str | None,
    output_format: str | None,
    fetch: Callable[[str], bytes] | None = None,
) -> tuple[GeneratedImage, ...]:
    """The images of a 2xx Images API body, decoded and checked.

    Raises :class:`MalformedResponse` for: a body that is not a JSON object, an error
    envelope, no or empty ``data``, fewer than ``n`` images, an item with neither
    ``b64_json`` nor ``url``, bad base64, bytes that are no image, dimensions other than a
    concrete ``size`` ("auto" and None are not checked), a format other than
    ``output_format``. ``fetch`` downloads ``url`` items; without it they are malformed.
    """
    images, _ = _parse(body, n=n, size=size, output_format=output_format, fetch=fetch)
    return images


def _parse(
    body: bytes,
    *,
    n: int,
    size: str | None,
    output_format: str | None,
    fetch: Callable[[str], bytes] | None,
) -> tuple[tuple[GeneratedImage, ...], dict[str, Any]]:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        preview = _shorten(body[:200].decode("utf-8", "replace"), 60)
        raise MalformedResponse(
            f"the body is not JSON ({len(body)} bytes, starting {preview!r})"
        ) from None
    if not isinstance(document, dict):
        raise MalformedResponse(f"the body is JSON {type(document).__name__}, not an object")
    error = document.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else error
        detail = f": {_shorten(str(message), 160)}" if message else ""
        raise MalformedResponse(
            f"a success status carried an error envelope instead of images{detail}"
        )
    data = document.get("data")
    if not isinstance(data, list):
        raise MalformedResponse("the body has no `data` list of images")
    if not data:
        raise MalformedResponse("`data` is empty: no image came back")
    if len(data) < n:
        raise MalformedResponse(f"asked for {n} images, got {len(data)}")
    images = []
    for i, item in enumerate(data, 1):
        label = f"image {i} of {len(data)}"
        if not isinstance(item, dict):
            raise MalformedResponse(f"{label} is JSON {type(item).__name__}, not an object")
        b64, url = item.get("b64_json"), item.get("url")
        if isinstance(b64, str) and b64:
            try:
                raw = decode_b64(b64)
            except ValueError:
                raise MalformedResponse(f"{label}: `b64_json` is not valid base64") from None
            url = None
        elif isinstance(url, str) and url:
            if fetch is None:
                raise MalformedResponse(f"{label} is a URL, and no way to fetch it was given")
            raw = fetch(url)
        else:
            raise MalformedResponse(f"{label} has neither `b64_json` nor `url`")
        image = _checked_image(raw, label, size, output_format)
        revised = item.get("revised_prompt")
        images.append(
            replace(
                image,
                url=url,
                revised_prompt=revised if isinstance(revised, str) else None,
            )
        )
    return tuple(images), document


def _checked_image(
    raw: bytes, label: str, size: str | None, output_format: str | None
) -> GeneratedImage:
    """``raw`` decoded, and checked against a concrete ``size`` and ``output_format``."""
    try:
        info = inspect_image(raw)
    except ValueError:
        raise MalformedResponse(f"{label} is not a decodable image ({len(raw)} bytes)") from None
    expected_size = _concrete_size(size)
    if expected_size is not None and (info.width, info.height) != expected_size:
        raise MalformedResponse(f"{label} is {info.size}, but {size} was asked for")
    expected_format = _FORMAT_ALIASES.get(output_format, output_format) if output_format else None
    if expected_format is not None and info.format != expected_format:
        raise MalformedResponse(f"{label} is {info.format}, but {output_format} was asked for")
    return GeneratedImage(raw, info.format, info.width, info.height)


def _concrete_size(size: str | None) -> tuple[int, int] | None:
    match = _CONCRETE_SIZE.match(size) if isinstance(size, str) else None
    return (int(match.group(1)), int(match.group(2))) if match else None
