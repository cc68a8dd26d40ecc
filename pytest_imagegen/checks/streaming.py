"""Streaming: ``stream: true`` answers Server-Sent Events in the Images API's shapes and order
(partial images, then one completed event with usage), no more partials than asked, the
first partial image inside ``timeout_s``, and events passed on as they come (a gateway that
buffers the stream defeats the point of streaming: staying inside a serverless limit)."""

from __future__ import annotations

import base64
import functools
from typing import Any

from pydantic import ValidationError

from pytest_imagegen.checks import check
from pytest_imagegen.checks.context import CheckContext, StreamCall

_USAGE_FIELDS = ("input_tokens", "output_tokens", "total_tokens")


def _streams(ctx: CheckContext) -> None:
    if not ctx.profile.streaming:
        ctx.skip(f"profile {ctx.profile.name!r} does not stream (stream is GPT-image only)")


def _stream(ctx: CheckContext, partial_images: int, **params: Any) -> StreamCall:
    call = ctx.stream(partial_images=partial_images, **{**ctx.cheap_params(), **params})
    if call.diagnosis is not None:
        ctx.fail(f"the streamed request {call.request_line()} failed: {call.describe()}", call=call)
    content_type = call.headers.get("content-type", "")
    if not content_type.startswith("text/event-stream"):
        ctx.fail(
            f"a streamed request was answered {content_type or 'without a content type'}, "
            f"not text/event-stream: {call.describe()}"
        )
    return call


@functools.lru_cache(maxsize=2)
def _adapter(kind: str) -> Any:
    from openai.types import ImageEditStreamEvent, ImageGenStreamEvent
    from pydantic import TypeAdapter

    return TypeAdapter(ImageGenStreamEvent if kind == "image_generation" else ImageEditStreamEvent)


def _order_problem(call: StreamCall, kind: str, asked: int) -> str | None:
    """Why the events are not ``asked`` partials (at most) in index order, then one completed
    event, every one named and shaped as the SDK's types say; None when they are."""
    if not call.events:
        return "the stream carried no event"
    for number, event in enumerate(call.events, 1):
        payload = event.payload
        if not isinstance(payload, dict):
            return f"event {number} ({event.name or 'unnamed'}) has no JSON data"
        if event.name and payload.get("type") != event.name:
            return f"event {number} is named {event.name!r} but its type is {payload.get('type')!r}"
        if not str(payload.get("type", "")).startswith(f"{kind}."):
            return f"event {number} has type {payload.get('type')!r}; expected {kind}.*"
        try:
            _adapter(kind).validate_python(payload)
        except ValidationError as exc:
            first = " ".join(str(exc).splitlines()[:3])
            return f"event {number} ({payload.get('type')}) does not fit the SDK's types: {first}"
    types = [e.payload["type"] for e in call.events]
    if types.count(f"{kind}.completed") != 1:
        return (
            f"expected exactly one {kind}.completed event, got {types.count(f'{kind}.completed')}"
        )
    if types[-1] != f"{kind}.completed":
        return f"the {kind}.completed event is not the last one (events: {', '.join(types)})"
    indexes = [e.payload.get("partial_image_index") for e in call.partials]
    if indexes != list(range(len(indexes))):
        return f"partial_image_index runs {indexes}; expected 0, 1, ... in order"
    return None


@check("streaming")
def events_in_order(ctx: CheckContext) -> None:
    """A streamed generation with ``partial_images=2`` answers ``text/event-stream`` whose
    events are ``image_generation.partial_image`` (``partial_image_index`` 0, 1, ...) then
    exactly one ``image_generation.completed``, last; each event's name equals its ``type``
    and its data fits the SDK's ``ImageGenStreamEvent``.

    Fails with: "the stream's events are out of order: the image_generation.completed event
    is not the last one (events: ...)".
    """
    _streams(ctx)
    call = _stream(ctx, 2)
    problem = _order_problem(call, "image_generation", 2)
    if problem:
        ctx.fail(f"the stream's events are out of order: {problem}")
    ctx.record(stream_events=[e.name for e in call.events])


@check("streaming")
def no_more_partials_than_asked(ctx: CheckContext) -> None:
    """A stream with ``partial_images=1`` carries at most one partial image (the final image
    may come before all partials, never more of them).

    Fails with: "partial_images=1 was asked, the stream carried 2 partial images".
    """
    _streams(ctx)
    call = _stream(ctx, 1)
    if len(call.partials) > 1:
        ctx.fail(
            f"partial_images=1 was asked, the stream carried {len(call.partials)} partial images"
        )


@check("streaming")
def completed_with_usage(ctx: CheckContext) -> None:
    """A stream ends with a ``completed`` event whose image decodes to the size and format
    asked for and which carries ``usage`` with integer token counts.

    Fails with: "the stream ended without an image_generation.completed event (events:
    image_generation.partial_image)" or "the completed event has no `usage`".
    """
    from pytest_imagegen.images import inspect_image

    _streams(ctx)
    call = _stream(ctx, 1)
    if not call.completed:
        names = ", ".join(e.name for e in call.events) or "none"
        ended = f"; the stream broke off: {call.error}" if call.error else ""
        ctx.fail(
            f"the stream ended without an image_generation.completed event (events: {names}){ended}"
        )
    payload = call.completed[-1].payload or {}
    try:
        info = inspect_image(base64.b64decode(payload.get("b64_json") or "", validate=True))
    except ValueError as exc:
        ctx.fail(f"the completed event's b64_json is not an image: {exc}")
    size = call.body.get("size")
    if isinstance(size, str) and size != "auto" and info.size != size:
        ctx.fail(f"the completed image is {info.size}, but {size} was asked for")
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        ctx.fail("the completed event has no `usage`; the spec requires it")
    bad = [
        k
        for k in _USAGE_FIELDS
        if isinstance(usage.get(k), bool) or not isinstance(usage.get(k), int)
    ]
    if bad:
        ctx.fail(f"the completed event's `usage` lacks integer {', '.join(bad)}: {usage!r}")


@check("streaming")
def edit_events_in_order(ctx: CheckContext) -> None:
    """A streamed multipart edit with ``partial_images=1`` answers ``image_edit.partial_image``
    events then one ``image_edit.completed`` event, in the SDK's ``ImageEditStreamEvent``
    shapes.

    Fails with: "the edit stream's events are out of order: event 1 has type
    'image_generation.completed'; expected image_edit.*".
    """
    from pytest_imagegen.checks.edits import input_image

    _streams(ctx)
    if not ctx.profile.edits:
        ctx.skip(f"profile {ctx.profile.name!r} has no edits")
    call = _stream(ctx, 1, images=[input_image(ctx)])
    problem = _order_problem(call, "image_edit", 1)
    if problem:
        ctx.fail(f"the edit stream's events are out of order: {problem}")


@check("streaming", live_timing=True)
def first_partial_within_timeout(ctx: CheckContext) -> None:
    """The first partial image of a stream (``partial_images=1``) arrives within the
    endpoint's ``timeout_s``, counted from sending the request: what lets an app answer
    inside a serverless limit. Measured live (a cassette cannot keep the timing).

    Fails with: "no partial image arrived within timeout_s=60: timeout ..." or "the first
    partial image arrived after 75.20 s, past timeout_s=60".
    """
    _streams(ctx)
    timeout = float(ctx.endpoint.timeout_s)
    call = ctx.stream(partial_images=1, client=ctx.client(timeout=timeout), **ctx.cheap_params())
    if call.diagnosis is not None:
        ctx.fail(f"the streamed request failed: {call.describe()}", call=call)
    first = call.partials[0] if call.partials else None
    if first is None:
        why = f": {call.error}" if call.error else f" (events: {call.describe()})"
        ctx.fail(f"no partial image arrived within timeout_s={timeout:g}{why}")
    ctx.record(first_partial_s=round(first.at_s, 4))
    if first.at_s > timeout:
        ctx.fail(
            f"the first partial image arrived after {first.at_s:.2f} s, past timeout_s={timeout:g}"
        )


@check("streaming", live_timing=True)
def not_buffered(ctx: CheckContext) -> None:
    """The events of a stream with ``partial_images=2`` arrive as they are sent: the first
    partial image arrives before the completed event, not in the same network read (a
    gateway that buffers the stream and sends it at the end is flagged). Measured live.

    Fails with: "the stream was buffered: all 3 events arrived together after 4.10 s; the
    first partial image must arrive before the rest (check the gateway's proxy buffering)".
    """
    _streams(ctx)
    call = _stream(ctx, 2)
    if not call.partials or not call.completed:
        ctx.skip(
            f"the stream carried no partial image and completed event to compare: {call.describe()}"
        )
    first, last = call.partials[0], call.completed[-1]
    ctx.record(first_partial_s=round(first.at_s, 4), completed_s=round(last.at_s, 4))
    if first.read == last.read:
        ctx.fail(
            f"the stream was buffered: all {len(call.events)} events arrived together after "
            f"{last.at_s:.2f} s; the first partial image must arrive before the rest (check the "
            f"gateway's proxy buffering)"
        )
