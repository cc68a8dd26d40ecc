"""Server-sent events for streamed generations and edits, as the Images API sends them.

``stream: true`` answers ``text/event-stream`` at once and then, per image, ``partial_images``
events ``<kind>.partial_image`` (``partial_image_index`` 0, 1, ...) and one ``<kind>.completed``
event carrying ``usage``, where ``<kind>`` is ``image_generation`` or ``image_edit``. The
generation latency is spread over the events, with at least ``stream_interval_s`` between
two of them, so a client (or a gateway) that holds events back can be told from one that
passes them on. Stream faults and defects reshape the schedule: the whole stream buffered
and sent at the end, a stall, no completed event, extra partials, the completed event first.
"""

from __future__ import annotations

import base64
import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_imagegen.reference.app import Generation, ReferenceApp
    from pytest_imagegen.reference.app import Received as Call
    from pytest_imagegen.reference.wire import Reply

# Sizes and qualities the stream events' closed enums allow; others are sent as "auto".
_EVENT_SIZES = frozenset({"1024x1024", "1024x1536", "1536x1024"})
_EVENT_QUALITIES = frozenset({"low", "medium", "high"})


def sse(name: str, payload: dict[str, Any]) -> bytes:
    """One SSE event: ``event:`` line, one ``data:`` line of JSON, blank line."""
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode()


def stream_events(
    app: ReferenceApp, call: Call, gen: Generation, data: list[dict[str, Any]]
) -> list[tuple[str, dict[str, Any]]]:
    """The (event name, payload) pairs of a stream, in the order they are sent."""
    from pytest_imagegen.reference.wire import _image

    defects = app.server.defects
    fault = call.stream_fault.name if call.stream_fault is not None else None
    kind = gen.kind
    common = {
        "created_at": int(time.time()),
        "size": gen.size if gen.size in _EVENT_SIZES else "auto",
        "quality": gen.quality if gen.quality in _EVENT_QUALITIES else "auto",
        "background": gen.background,
        "output_format": gen.fmt,
    }
    partials = gen.partial_images + (1 if "stream_extra_partials" in defects else 0)
    no_completed = "stream_no_completed" in defects or fault == "stream_no_completed"
    events: list[tuple[str, dict[str, Any]]] = []
    for number, item in enumerate(data):
        image_events: list[tuple[str, dict[str, Any]]] = []
        for index in range(partials):
            # A partial is an earlier, different picture of the same size and format.
            seed = f"{gen.prompt}\n#{number}\npartial {index}"
            partial = _image(gen.width, gen.height, gen.fmt, seed)
            image_events.append(
                (
                    f"{kind}.partial_image",
                    {
                        "type": f"{kind}.partial_image",
                        "b64_json": base64.b64encode(partial).decode("ascii"),
                        **common,
                        "partial_image_index": index,
                    },
                )
            )
        if not no_completed:
            completed: dict[str, Any] = {
                "type": f"{kind}.completed",
                "b64_json": item.get("b64_json", ""),
                **common,
            }
            if "no_usage" not in defects:
                completed["usage"] = app._usage(gen, 1)
            if "stream_out_of_order" in defects:
                image_events.insert(0, (f"{kind}.completed", completed))
            else:
                image_events.append((f"{kind}.completed", completed))
        events += image_events
    return events


def stream_reply(
    app: ReferenceApp, call: Call, gen: Generation, data: list[dict[str, Any]]
) -> Reply:
    """The streamed answer: headers at once, then the events over the generation latency."""
    from pytest_imagegen.reference.wire import Reply

    server = app.server
    defects = server.defects
    fault = call.stream_fault.name if call.stream_fault is not None else None
    pairs = stream_events(app, call, gen, data)
    events = [sse(name, payload) for name, payload in pairs]
    latency = server.latency_for(gen.quality)
    step = max(latency / max(1, len(events)), server.stream_interval_s)
    reply = Reply(200, b"".join(events), content_type="text/event-stream", delivery="events")
    if "stream_stalls" in defects:
        # Headers, then nothing: the first event never comes.
        reply.events, reply.stall_after = [], True
        call.logged.fault = "stream_stalls"
    elif "stream_buffered" in defects or fault == "stream_buffered":
        # What a buffering gateway does: every event held back, then all sent at once.
        reply.events = [(step * len(events), b"".join(events))]
    elif fault == "stream_stall":
        # The partial images, then silence before the completed event.
        partial = [e for (name, _), e in zip(pairs, events, strict=True) if "partial" in name]
        reply.events = [(step, e) for e in partial]
        reply.stall_after = True
    else:
        reply.events = [(step, e) for e in events]
    return reply
