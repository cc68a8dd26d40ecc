"""Model separation: image calls carry the image model, chat and image models are kept apart."""

from __future__ import annotations

from typing import Any

from pytest_imagegen.checks import fixes
from pytest_imagegen.checks.context import Call, CheckContext
from pytest_imagegen.checks.registry import check
from pytest_imagegen.errors import Category

# What a correct endpoint answers when a model of the wrong kind is asked for.
_REFUSALS = (Category.MODEL_NOT_FOUND, Category.INVALID_REQUEST)


@check("separation")
def image_model_is_image(ctx: CheckContext) -> None:
    """The image model is served as an image model: an image generation with it is answered
    with the Images API's answer (``data`` with images), not with a chat model's (a
    ``chat.completion`` with ``choices``, or text linking an image), as by a relay that
    routes the image model to a chat model.

    Fails with: "the images endpoint answered image model 'gpt-image-1' with a chat
    completion (choices[0].message.content: '![image](https://...)'); it serves the image
    model through a chat model".
    """
    model = ctx.endpoint.image_model
    call = ctx.generate(expect_images=False, **ctx.cheap_params())
    if call.diagnosis is not None:
        _unjudged(ctx, call, f"image model {model!r} sent to the images endpoint")
        ctx.fail(f"the images endpoint refused image model {model!r}: {call.describe()}", call=call)
    document = call.document
    if isinstance(document, dict) and (
        "choices" in document or str(document.get("object", "")).startswith("chat.completion")
    ):
        ctx.fail(
            f"the images endpoint answered image model {model!r} with a chat completion "
            f"({_chat_text(document)}); it serves the image model through a chat model",
            call=call,
        )
    if not isinstance(document, dict):
        text = " ".join(call.content[:120].decode("utf-8", "replace").split())
        ctx.fail(
            f"the images endpoint answered image model {model!r} with HTTP {call.status} and "
            f"no JSON ({text!r}); an image model is answered with an ImagesResponse",
            call=call,
        )


def _chat_text(document: dict[str, Any]) -> str:
    """Where a chat completion keeps its answer, and the start of it."""
    choices = document.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return f"choices[0].message.content: {content[:80]!r}"
    return f"object {document.get('object')!r}"


@check("separation")
def image_call_carries_image_model(ctx: CheckContext) -> None:
    """An image generation goes out as POST {base_url}/images/generations carrying the image
    model, never the chat model (asserted on the request actually sent, and on what the
    reference server received when it is the endpoint).

    Fails with: "the image request went out with model 'gpt-4o-all' (the chat model); expected
    'gpt-image-1'" or "the image request went to POST .../chat/completions; expected POST
    .../images/generations".
    """
    endpoint = ctx.endpoint
    ctx.generate(**ctx.cheap_params())
    image_requests = [r for r in ctx.sent if r.path.endswith("/images/generations")]
    if not image_requests:
        where = ", ".join(f"{r.method} {r.url}" for r in ctx.sent) or "nowhere"
        ctx.fail(f"the image request went to {where}; expected POST {ctx.images_url}")
    for sent in image_requests:
        if sent.method != "POST" or sent.url.split("?")[0].rstrip("/") != ctx.images_url:
            where = f"{sent.method} {sent.url}"
            ctx.fail(f"the image request went to {where}; expected POST {ctx.images_url}")
        expected = endpoint.wire_model(endpoint.image_model)
        if sent.model != expected:
            chat = endpoint.chat_model
            which = " (the chat model)" if chat and sent.model == endpoint.wire_model(chat) else ""
            deployment = (
                f" (Azure deployment of {endpoint.image_model!r})" if endpoint.is_azure else ""
            )
            ctx.fail(
                f"the image request went out with model {sent.model!r}{which}; expected "
                f"{expected!r}{deployment}"
            )
    if ctx.can_inject_faults and ctx.reference is not None:
        for logged in ctx.reference.log.generations:
            if logged.model != endpoint.image_model:
                ctx.fail(
                    f"the reference server received an image request for model "
                    f"{logged.model!r}; expected {endpoint.image_model!r}"
                )


@check("separation")
def chat_model_refused_by_images(ctx: CheckContext) -> None:
    """The endpoint's chat model, sent to /images/generations, is refused as OpenAI does
    (model_not_found or invalid_request), not answered with images.

    Fails with: "the images endpoint generated images for chat model 'gpt-4o-mini'; it must
    refuse it (OpenAI answers 400 invalid_request_error)" or "... refused chat model ... as
    server; expected model_not_found or invalid_request".
    """
    chat_model = ctx.endpoint.chat_model
    if not chat_model:
        ctx.skip(f"endpoint {ctx.endpoint.name!r} has no chat_model; set one to run this check")
    call = ctx.generate(model=chat_model, expect_images=False, **ctx.cheap_params())
    if call.diagnosis is None:
        seen = ctx.images_in(call)
        if seen.diagnosis is None:
            ctx.fail(
                f"the images endpoint generated images for chat model {chat_model!r} "
                f"({seen.describe()}); it must refuse it (OpenAI answers 400 "
                f"invalid_request_error)",
                call=seen,
                category=Category.MODEL_NOT_FOUND,
                fix=fixes.refusal(Category.MODEL_NOT_FOUND, seen),
            )
        ctx.fail(
            f"the images endpoint answered chat model {chat_model!r} with HTTP {call.status} "
            f"and no usable image ({seen.diagnosis.message}) instead of refusing it (OpenAI "
            f"answers 400 invalid_request_error)",
            call=seen,
            category=Category.MODEL_NOT_FOUND,
            fix=fixes.refusal(Category.MODEL_NOT_FOUND, call),
        )
    if call.diagnosis.category not in _REFUSALS:
        _unjudged(ctx, call, f"chat model {chat_model!r} sent to the images endpoint")
        ctx.fail(
            f"the images endpoint refused chat model {chat_model!r} as "
            f"{call.diagnosis.category}; expected model_not_found or invalid_request: "
            f"{call.describe()}",
            call=call,
        )


@check("separation")
def image_model_refused_by_chat(ctx: CheckContext) -> None:
    """The image model, sent to /chat/completions, is refused (model_not_found or
    invalid_request) instead of being answered with a completion.

    Fails with: "chat completions answered image model 'gpt-image-1' with HTTP 200; an image
    model must be refused there (OpenAI: 404 'This is not a chat model')".
    """
    model = ctx.endpoint.image_model
    call = ctx.chat(model)
    if call.diagnosis is not None and call.diagnosis.category not in _REFUSALS:
        _unjudged(ctx, call, f"image model {model!r} sent to chat completions")
    if call.diagnosis is None:
        ctx.fail(
            f"chat completions answered image model {model!r} with HTTP {call.status}; an "
            f"image model must be refused there (OpenAI: 404 'This is not a chat model')"
        )
    if call.diagnosis.category not in _REFUSALS:
        ctx.fail(
            f"chat completions refused image model {model!r} as {call.diagnosis.category}; "
            f"expected model_not_found or invalid_request: {call.describe()}",
            call=call,
        )


# Failures that say nothing about how the endpoint treats a model of the wrong kind: the
# request never got an answer to judge.
_NO_VERDICT = (
    Category.TIMEOUT,
    Category.NETWORK,
    Category.RATE_LIMIT,
    Category.QUOTA,
    Category.SERVER,
    Category.AUTHENTICATION,
)


def _unjudged(ctx: CheckContext, call: Call, what: str) -> None:
    """Fail naming the request's own failure when it gives no verdict on ``what``."""
    diagnosis = call.diagnosis
    if diagnosis is not None and diagnosis.category in _NO_VERDICT:
        ctx.fail(
            f"could not tell how the endpoint treats {what}: the request failed as "
            f"{diagnosis.category} before any verdict: {call.describe()}",
            call=call,
        )


@check("separation")
def chat_images_through_responses(ctx: CheckContext) -> None:
    """Where the endpoint declares ``chat_images = "responses"``, the chat model makes images
    only through the Responses API's ``image_generation`` tool: ``responses.create`` with the
    tool answers an ``image_generation_call`` whose ``result`` is a valid image of the size
    asked for, and without the tool no image comes back (the image itself is made by an
    image model; a relay's image-making chat alias on chat completions is not this).

    Fails with: "the Responses API with the image_generation tool answered no
    image_generation_call (output: message)" or "the image_generation_call's image is
    1024x1024, but 1024x1536 was asked for".
    """
    import base64

    from pytest_imagegen.images import inspect_image

    endpoint = ctx.endpoint
    if endpoint.chat_images != "responses":
        ctx.skip(
            f'endpoint {endpoint.name!r} does not declare chat_images = "responses" (how its '
            f"chat model makes images)"
        )
    if not endpoint.chat_model:
        ctx.skip(f"endpoint {endpoint.name!r} declares chat_images but has no chat_model")
    # A size other than the default, so an endpoint that ignores it is caught.
    size = "1024x1536"
    tool = {"type": "image_generation", "size": size, "quality": "low"}
    call = ctx.respond({"model": endpoint.chat_model, "input": PROMPT_TEXT, "tools": [tool]})
    if call.diagnosis is not None:
        ctx.fail(
            f"the Responses API refused chat model {endpoint.chat_model!r} with the "
            f"image_generation tool: {call.describe()}",
            call=call,
        )
    output = call.document.get("output") if isinstance(call.document, dict) else None
    items = output if isinstance(output, list) else []
    kinds = [item.get("type") for item in items if isinstance(item, dict)]
    images = [
        item
        for item in items
        if isinstance(item, dict) and item.get("type") == "image_generation_call"
    ]
    if not images:
        ctx.fail(
            f"the Responses API with the image_generation tool answered no "
            f"image_generation_call (output: {', '.join(map(str, kinds)) or 'empty'})",
            call=call,
        )
    result = images[0].get("result")
    try:
        info = inspect_image(base64.b64decode(result or "", validate=True))
    except ValueError as exc:
        ctx.fail(f"the image_generation_call's result is not a base64 image: {exc}", call=call)
    if info.size != size:
        ctx.fail(f"the image_generation_call's image is {info.size}, but {size} was asked for")
    plain = ctx.respond({"model": endpoint.chat_model, "input": PROMPT_TEXT})
    if plain.diagnosis is not None:
        ctx.fail(f"the Responses API without tools failed: {plain.describe()}", call=plain)
    output = plain.document.get("output") if isinstance(plain.document, dict) else None
    if any(isinstance(i, dict) and i.get("type") == "image_generation_call" for i in output or []):
        ctx.fail("the Responses API made an image without the image_generation tool")


PROMPT_TEXT = "Draw: a red bicycle leaning against a white wall, flat illustration"
