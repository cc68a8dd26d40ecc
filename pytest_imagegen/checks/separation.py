"""Model separation: image calls carry the image model, chat and image models are kept apart."""

from __future__ import annotations

from pytest_imagegen.checks import fixes
from pytest_imagegen.checks.context import Call, CheckContext
from pytest_imagegen.checks.registry import check

# What a correct endpoint answers when a model of the wrong kind is asked for.
_REFUSALS = ("model_not_found", "invalid_request")


@check("separation", sends_requests=False)
def image_model_is_image(ctx: CheckContext) -> None:
    """The configured image model resolves to an image profile, and is not the chat model.

    Fails with: "image model 'gpt-4o-all' of endpoint 'relay' is a chat model; set
    image_model to an image model such as gpt-image-1" (or "... is also its chat_model ...").
    """
    from pytest_imagegen.profiles import model_kind

    endpoint = ctx.endpoint
    model = endpoint.image_model
    if model_kind(model) == "chat":
        ctx.fail(
            f"image model {model!r} of endpoint {endpoint.name!r} is a chat model; set "
            f"image_model to an image model such as gpt-image-1"
        )
    if endpoint.chat_model and endpoint.chat_model == model:
        ctx.fail(
            f"image model {model!r} of endpoint {endpoint.name!r} is also its chat_model; "
            f"image calls and chat calls need different models"
        )
    if ctx.profile is None or ctx.profile.family not in ("gpt-image", "dall-e", "custom"):
        ctx.fail(
            f"image model {model!r} of endpoint {endpoint.name!r} resolves to no image "
            f"profile; set `profile` for the endpoint"
        )


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
                category="model_not_found",
                fix=fixes.refusal("model_not_found", seen),
            )
        ctx.fail(
            f"the images endpoint answered chat model {chat_model!r} with HTTP {call.status} "
            f"and no usable image ({seen.diagnosis.message}) instead of refusing it (OpenAI "
            f"answers 400 invalid_request_error)",
            call=seen,
            category="model_not_found",
            fix=fixes.refusal("model_not_found", call),
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
_NO_VERDICT = ("timeout", "network", "rate_limit", "quota", "server", "authentication")


def _unjudged(ctx: CheckContext, call: Call, what: str) -> None:
    """Fail naming the request's own failure when it gives no verdict on ``what``."""
    diagnosis = call.diagnosis
    if diagnosis is not None and diagnosis.category in _NO_VERDICT:
        ctx.fail(
            f"could not tell how the endpoint treats {what}: the request failed as "
            f"{diagnosis.category} before any verdict: {call.describe()}",
            call=call,
        )
