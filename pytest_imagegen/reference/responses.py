"""``POST /v1/responses``: a chat model, and images only through the ``image_generation`` tool.

This is how a chat model makes images at OpenAI: ``responses.create(model="gpt-4o",
input=..., tools=[{"type": "image_generation", "size": "1024x1024"}])`` answers a
``Response`` whose ``output`` holds an ``image_generation_call`` item with the image as
base64 in ``result``, then the assistant's message. Without the tool the answer is text
only; an image model as the Responses model is refused (it belongs in the tool).
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import TYPE_CHECKING, Any

from pytest_imagegen.reference.wire import Abort, Reply, _image, _json, msg_model_not_found

if TYPE_CHECKING:
    from pytest_imagegen.reference.app import Received as Call
    from pytest_imagegen.reference.app import ReferenceApp

#: Keys of the ``image_generation`` tool (openai 3.54's ``tool.ImageGeneration``).
TOOL_KEYS = frozenset(
    {
        "type",
        "action",
        "background",
        "complexity",
        "frame_count",
        "frame_duration_ms",
        "input_fidelity",
        "input_image_mask",
        "model",
        "moderation",
        "output_compression",
        "output_format",
        "partial_images",
        "quality",
        "size",
        "svg",
    }
)
# The tool's model when the request names none (OpenAI's default for the tool).
TOOL_MODEL = "gpt-image-1.5"
_CHECKED = ("size", "quality", "output_format", "background", "moderation", "output_compression")
TEXT = "Here is the image you asked for."


def responses(app: ReferenceApp, call: Call) -> Reply:
    server = app.server
    if (denied := app._auth_error(call)) is not None:
        return denied
    if (bad := app._json_error(call)) is not None:
        return bad
    body = call.body
    if not isinstance(body, dict):
        return app._error(
            400, "Invalid type for request body: expected an object.", code="invalid_type"
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return app._error(
            400,
            "Missing required parameter: 'model'.",
            param="model",
            code="missing_required_parameter",
        )
    if model not in server.chat_models:
        if server.model_kind(model) == "image":
            return app._error(
                400,
                f"Invalid value: '{model}'. '{model}' is an image model and cannot be the model "
                'of a response; use a chat model with tools=[{"type": "image_generation"}].',
                param="model",
                code="invalid_value",
            )
        return app._error(404, msg_model_not_found(model), code="model_not_found")
    if body.get("stream") is True:
        return app._error(
            400,
            "Unsupported value: 'stream' is not supported by the reference server's "
            "/v1/responses; leave it out.",
            param="stream",
            code="unsupported_value",
        )
    prompt = _input_text(body.get("input"))
    if prompt is None:
        return app._error(
            400,
            "Missing required parameter: 'input'.",
            param="input",
            code="missing_required_parameter",
        )
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        return app._error(
            400, "Invalid type for 'tools': expected an array.", param="tools", code="invalid_type"
        )
    index, tool = next(
        (
            (i, t)
            for i, t in enumerate(tools)
            if isinstance(t, dict) and t.get("type") == "image_generation"
        ),
        (None, None),
    )
    output: list[dict[str, Any]] = []
    usage_out = 12
    if tool is not None and "responses_no_image" not in server.defects:
        assert index is not None
        call_item, refusal = _image_call(app, call, tool, index, prompt)
        if refusal is not None:
            return refusal
        assert call_item is not None
        output.append(call_item)
        usage_out += 1000
    output.append(
        {
            "type": "message",
            "id": f"msg_{uuid.uuid4().hex}",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": TEXT, "annotations": []}],
        }
    )
    usage_in = max(1, len(prompt) // 4)
    response = {
        "id": f"resp_{uuid.uuid4().hex}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "top_p": 1.0,
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": tools,
        "text": {"format": {"type": "text"}},
        "usage": {
            "input_tokens": usage_in,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": usage_out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage_in + usage_out,
        },
    }
    return Reply(200, _json(response))


def _input_text(value: Any) -> str | None:
    """The prompt of ``input``: a string, or the text parts of input messages."""
    if isinstance(value, str):
        return value or None
    if not isinstance(value, list):
        return None
    texts: list[str] = []
    for item in value:
        content = item.get("content") if isinstance(item, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [
                part["text"]
                for part in content
                if isinstance(part, dict) and isinstance(part.get("text"), str)
            ]
    return "\n".join(texts) or None


def _image_call(
    app: ReferenceApp, call: Call, tool: dict[str, Any], index: int, prompt: str
) -> tuple[dict[str, Any] | None, Reply | None]:
    """The ``image_generation_call`` output item, or a refusal of the tool's settings."""
    from pytest_imagegen.request_builder import validate_request

    server = app.server
    where = f"tools[{index}]"
    for key in tool:
        if key not in TOOL_KEYS:
            return None, app._error(
                400,
                f"Unknown parameter: '{where}.{key}'.",
                param=f"{where}.{key}",
                code="unknown_parameter",
            )
    tool_model = tool.get("model") or TOOL_MODEL
    name, profile = server.resolve_model(tool_model, {})
    if profile is None or profile.family != "gpt-image":
        return None, app._error(
            400,
            f"Invalid value: '{tool_model}'. The image_generation tool takes a GPT image model.",
            param=f"{where}.model",
            code="invalid_value",
        )
    body = {"model": name, "prompt": prompt[: profile.prompt_max_chars]}
    body.update({k: tool[k] for k in _CHECKED if tool.get(k) is not None})
    problems = validate_request(body, profile)
    if problems:
        error = problems[0].error_body()["error"]
        param = error.get("param")
        return None, app._error(
            400,
            error["message"],
            param=f"{where}.{param}" if param else None,
            code=error.get("code"),
        )
    gen = app._resolve(body, profile, name)
    if "responses_ignores_size" in server.defects:
        gen.width, gen.height = 1024, 1024
        if tool.get("size") == "1024x1024":
            gen.width, gen.height = 1536, 1024
    if not app._wait(call, server.latency_for(gen.quality)):
        raise Abort("released while generating")
    data = _image(gen.width, gen.height, gen.fmt, f"responses\n{gen.prompt}")
    return (
        {
            "type": "image_generation_call",
            "id": f"ig_{uuid.uuid4().hex}",
            "status": "completed",
            "result": base64.b64encode(data).decode("ascii"),
            "background": gen.background,
            "output_format": gen.fmt,
            "quality": gen.quality,
            "size": gen.size,
            "revised_prompt": prompt,
        },
        None,
    )
