"""The fallback runner: one image request through an endpoint's fallback chain, under its deadline.

``generate`` turns the caller's parameters and the endpoint's ``fallback`` overrides into an
ordered list of steps, each a request body valid for its model's profile, and runs them:

* every attempt gets ``min(timeout_s, time left to the deadline)``; the SDK sees that as its
  client timeout, and a watchdog holds the attempt to it as a whole (connect, headers, a body
  dribbled one byte at a time, the SDK's own retries, fetching image URLs), so ``generate``
  returns by ``deadline_s`` whatever the server does;
* after a failure, one pure function (:func:`decide`) says what happens next;
* a 2xx counts as success only when it carries valid images (:func:`parse_images_response`).

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from pytest_imagegen.classify import classify, hint_for
from pytest_imagegen.classify import malformed as malformed_diagnosis
from pytest_imagegen.errors import (
    CallerError,
    ConfigError,
    Diagnosis,
    MalformedResponse,
)
from pytest_imagegen.images import GeneratedImage, decode_b64, inspect_image
from pytest_imagegen.profiles import resolve_profile
from pytest_imagegen.request_builder import build_request

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


@dataclass(frozen=True)
class Step:
    """One link of the chain: the overrides it applies and the request body they give."""

    number: int  # 1-based
    overrides: Mapping[str, Any]  # {} for step 1 (the caller's own parameters)
    profile: Profile
    body: dict[str, Any]

    @property
    def n(self) -> int:
        n = self.body.get("n")
        return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1


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
    if diagnosis.category == "timeout" and diagnosis.status is None:
        return f"timeout after {_s(latency_s)}"
    detail = [f"HTTP {diagnosis.status}"] if diagnosis.status is not None else []
    if diagnosis.code:
        detail.append(str(diagnosis.code))
    if diagnosis.category in ("malformed_response", "unknown") and diagnosis.message:
        detail.append(_shorten(diagnosis.message, 120))
    return f"{diagnosis.category} ({', '.join(detail)})" if detail else str(diagnosis.category)


def _s(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds >= 10 else f"{seconds:.2f} s"


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- the chain


def build_steps(endpoint: Endpoint, prompt: str, **params: Any) -> tuple[Step, ...]:
    """The chain as request bodies: ``[params] + [params | override for each fallback]``.

    A step whose ``model`` differs from the endpoint's is checked against that model's own
    profile. Raises :class:`ConfigError` naming the step when a body would be invalid, so a
    wrong chain is reported before any request is sent.
    """
    _check_endpoint_and_prompt(endpoint, prompt)
    if params.get("stream"):
        raise ConfigError(
            "generate() reads whole responses and does not stream; leave out stream=True "
            "(and partial_images) when calling it."
        )
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
            body = build_request(profile, model=model, prompt=prompt, **merged)
        except ConfigError as exc:
            problems = getattr(exc, "summary", None) or str(exc)
            raise ConfigError(
                f"{where} of endpoint {endpoint.name!r} would send a request that profile "
                f"{profile.name} rejects: {problems} Fix the parameters or the endpoint's "
                f"`fallback` list so that every step is valid for its model."
            ) from exc
        steps.append(Step(number, dict(overrides), profile, body))
    return tuple(steps)


def _check_endpoint_and_prompt(endpoint: object, prompt: object) -> None:
    from pytest_imagegen.config import Endpoint

    # By name as well: an Endpoint of a reloaded module (pytester, importlib.reload) is one.
    if not isinstance(endpoint, Endpoint) and type(endpoint).__name__ != "Endpoint":
        named = " (an endpoint name?)" if isinstance(endpoint, str) else ""
        raise TypeError(
            f"generate() needs an Endpoint as 'endpoint', got {type(endpoint).__name__} "
            f"{endpoint!r:.60}{named}. In a test, use the imagegen_endpoint fixture or "
            "imagegen_settings.endpoint('NAME'); outside pytest, build one with "
            "pytest_imagegen.config.load_settings(...).endpoint('NAME')."
        )
    if not isinstance(prompt, str):
        raise TypeError(
            f"generate() takes the prompt as a string, got {type(prompt).__name__} {prompt!r:.60}."
        )


def _check_client(client: object) -> None:
    """``client`` must be a synchronous SDK client (``openai.OpenAI`` / ``AzureOpenAI``)."""
    import openai

    images = getattr(client, "images", None)
    generate = getattr(images, "generate", None)
    if isinstance(client, openai.AsyncOpenAI) or inspect.iscoroutinefunction(generate):
        raise TypeError(
            "generate() runs synchronously and needs an openai.OpenAI client, got an "
            "openai.AsyncOpenAI. Pass a synchronous client (imagegen_client, or "
            "endpoint.client()); from async code, run it in a thread: await "
            "asyncio.to_thread(generate, client, endpoint, prompt)."
        )
    if isinstance(client, openai.OpenAI) or (
        callable(generate) and callable(getattr(client, "with_options", None))
    ):
        return
    raise TypeError(
        f"generate() needs an openai.OpenAI client as 'client', got {type(client).__name__} "
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

    ``params`` are Images API parameters (``quality``, ``size``, ``n``, ``model``, ...).
    Returns an :class:`Outcome`; endpoint failures never raise (they end up in
    ``Outcome.diagnosis``). An invalid chain raises :class:`ConfigError` before any request;
    a failure of pytest-imagegen's own machinery during an attempt (e.g. a
    :class:`~pytest_imagegen.errors.CassetteError` in replay mode) is raised as it is.
    """
    _check_endpoint_and_prompt(endpoint, prompt)
    _check_client(client)
    steps = build_steps(endpoint, prompt, **params)
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
                    f"success: {_describe_images(result.images)}",
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
        category="timeout",
        problem_class="efficiency",
        retryable=True,
        hint=hint_for("timeout"),
        message=message,
    )


@dataclass(frozen=True)
class _Result:
    diagnosis: Diagnosis | None
    images: tuple[GeneratedImage, ...] = ()
    response_bytes: int = 0
    usage: dict[str, Any] | None = None
    error: CallerError | None = None  # raised in the caller's thread (e.g. CassetteError)


class _OutOfTime(Exception):
    """Raised inside an attempt when its time is up while a body is still arriving."""


class _Watch:
    """Shared between the runner and the thread doing one attempt.

    The runner waits until the attempt's end; if no result came by then it cancels, which
    also shuts down the socket of whatever response is being read, so the reading thread
    wakes up at once instead of at its next read timeout.
    """

    def __init__(self, end: float) -> None:
        self.end = end
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._cancelled = False
        self._result: _Result | None = None
        self._tracked: httpx2.Response | None = None

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
        _ = client.images.with_streaming_response.generate
    except Exception:
        pass  # not an SDK client after all: the attempt will say what is wrong


def _run_attempt(
    client: openai.OpenAI, endpoint: Endpoint, step: Step, time_limit_s: float, deadline: float
) -> _Result:
    watch = _Watch(time.monotonic() + time_limit_s)
    give_up = min(watch.end + WATCHDOG_GRACE_S, deadline)
    worker = threading.Thread(
        target=_attempt_thread,
        args=(client, endpoint, step, time_limit_s, watch),
        name=f"imagegen-{endpoint.name}-step{step.number}",
        daemon=True,  # an abandoned attempt must never keep the interpreter alive
    )
    worker.start()
    watch.done.wait(max(0.0, give_up - time.monotonic()))
    # Cancelling a finished attempt just hands back its result; an unfinished one is
    # abandoned (its thread ends at its own socket timeout at the latest).
    result = watch.cancel()
    if result is not None:
        return result
    return _Result(
        _timeout_diagnosis(f"no complete response within the attempt's {_s(time_limit_s)}")
    )


def _attempt_thread(
    client: openai.OpenAI, endpoint: Endpoint, step: Step, time_limit_s: float, watch: _Watch
) -> None:
    try:
        result = _attempt(client, endpoint, step, time_limit_s, watch)
    except _OutOfTime:
        result = _Result(
            _timeout_diagnosis(
                f"the response was still arriving when the attempt's {_s(time_limit_s)} ran out"
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
        result = _Result(classify(exc))
    watch.finish(result)


def _attempt(
    client: openai.OpenAI, endpoint: Endpoint, step: Step, time_limit_s: float, watch: _Watch
) -> _Result:
    api = client.with_options(timeout=time_limit_s, max_retries=endpoint.max_retries)
    kwargs, extra = _split_body(api, step.body)
    # A streamed response lets us read the body chunk by chunk against our own clock: the
    # HTTP read timeout only bounds the gap between two chunks, not the whole body.
    with api.images.with_streaming_response.generate(**kwargs, extra_body=extra or None) as resp:
        http_response = resp.http_response
        watch.track(http_response)
        try:
            body = _read_limited(
                http_response.iter_bytes(), watch, MAX_RESPONSE_BYTES, "the response"
            )
        finally:
            watch.track(None)
        status = resp.status_code
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
    )


_SDK_KEYWORDS: dict[type, frozenset[str]] = {}


def _split_body(
    api: openai.OpenAI, body: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Body keys the installed SDK's ``images.generate`` names go as keywords; any other key
    (a newer API parameter, a relay extension) goes through ``extra_body`` unchanged."""
    images = api.images
    known = _SDK_KEYWORDS.get(type(images))
    if known is None:
        sig = inspect.signature(images.generate)
        known = frozenset(
            name
            for name, p in sig.parameters.items()
            if p.kind is p.KEYWORD_ONLY
            and name not in ("extra_headers", "extra_query", "extra_body", "timeout")
        )
        _SDK_KEYWORDS[type(images)] = known
    kwargs = {k: v for k, v in body.items() if k in known}
    extra = {k: v for k, v in body.items() if k not in known}
    return kwargs, extra


def _read_limited(chunks: Any, watch: _Watch, limit: int, what: str) -> bytes:
    parts: list[bytes] = []
    total = 0
    for chunk in chunks:
        watch.check()
        total += len(chunk)
        if total > limit:
            raise MalformedResponse(
                f"{what} is larger than {limit // (1024 * 1024)} MB; stopped reading"
            )
        parts.append(chunk)
    watch.check()
    return b"".join(parts)


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
    if size is None:
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
    expected_size = _concrete_size(size)
    expected_format = _FORMAT_ALIASES.get(output_format, output_format) if output_format else None
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
        try:
            info = inspect_image(raw)
        except ValueError:
            raise MalformedResponse(
                f"{label} is not a decodable image ({len(raw)} bytes)"
            ) from None
        if expected_size is not None and (info.width, info.height) != expected_size:
            raise MalformedResponse(f"{label} is {info.size}, but {size} was asked for")
        if expected_format is not None and info.format != expected_format:
            raise MalformedResponse(f"{label} is {info.format}, but {output_format} was asked for")
        revised = item.get("revised_prompt")
        images.append(
            GeneratedImage(
                raw,
                info.format,
                info.width,
                info.height,
                url=url,
                revised_prompt=revised if isinstance(revised, str) else None,
            )
        )
    return tuple(images), document


def _concrete_size(size: str | None) -> tuple[int, int] | None:
    match = _CONCRETE_SIZE.match(size) if isinstance(size, str) else None
    return (int(match.group(1)), int(match.group(2))) if match else None
