"""Edits: ``POST /images/edits`` as multipart (what relays and gateways most often break) and
as JSON with image references, accepted and refused as the model requires; variations only
where the model has them."""

from __future__ import annotations

import base64
import json
from typing import Any

from pytest_imagegen.checks import check
from pytest_imagegen.checks.context import Call, CheckContext, FileTuple
from pytest_imagegen.errors import Category

# The size the suite's input images have for each family (dall-e-2 wants a small square).
_INPUT_SIDE = {"dall-e": 256}


def _edits_served(ctx: CheckContext) -> None:
    if not ctx.profile.edits:
        ctx.skip(f"profile {ctx.profile.name!r} has no edits (POST /images/edits)")


def _strict(ctx: CheckContext) -> None:
    if ctx.profile.family == "custom":
        ctx.skip(
            f"profile {ctx.profile.name!r} of endpoint {ctx.endpoint.name!r} is lenient: it does "
            f"not say which edits the endpoint refuses"
        )


def input_image(ctx: CheckContext, *, seed: str = "input") -> FileTuple:
    """A PNG input image the profile takes (with alpha: dall-e-2 needs it without a mask)."""
    from pytest_imagegen.images import make_input_image

    side = _INPUT_SIDE.get(ctx.profile.family, 1024)
    return (f"{seed}.png", make_input_image(side, side, seed=seed), "image/png")


def mask_for(ctx: CheckContext, *, side: int | None = None) -> FileTuple:
    from pytest_imagegen.images import make_mask

    side = side or _INPUT_SIDE.get(ctx.profile.family, 1024)
    return ("mask.png", make_mask(side, side), "image/png")


def edit_params(ctx: CheckContext) -> dict[str, Any]:
    """The cheapest valid parameters for an edit (dall-e-2 answers base64 when asked)."""
    params = ctx.cheap_params()
    if "b64_json" in ctx.profile.response_formats:
        params["response_format"] = "b64_json"
    return params


def _succeeded(ctx: CheckContext, call: Call, what: str) -> None:
    if not call.ok:
        ctx.fail(f"{what} failed: {call.request_line()}: {call.describe()}", call=call)


def _refused(ctx: CheckContext, call: Call, what: str, param: str) -> None:
    """Require invalid_request naming ``param`` (``model`` also accepts model_not_found)."""
    diagnosis = call.diagnosis
    if diagnosis is None:
        ctx.fail(
            f"{what} was accepted ({call.describe()}); {ctx.profile.name} must refuse it with "
            f"invalid_request naming param {param!r}",
            call=call,
        )
    # A model refused for the wrong kind of request is model_not_found to the classifier.
    categories = (
        (Category.INVALID_REQUEST, Category.MODEL_NOT_FOUND)
        if param == "model"
        else (Category.INVALID_REQUEST,)
    )
    if diagnosis.category not in categories or diagnosis.param != param:
        ctx.fail(
            f"{what} was refused as {diagnosis.category} naming param {diagnosis.param!r}; "
            f"expected invalid_request naming {param!r}: {call.describe()}",
            call=call,
        )


@check("edits")
def multipart_accepted(ctx: CheckContext) -> None:
    """A multipart edit (one PNG input image and a prompt, sent by the SDK's
    ``images.edit``) succeeds with images of the size asked for.

    Fails with: "a multipart edit failed: POST /images/edits {...}: invalid_request (HTTP 400
    ... 'We could not parse the JSON body ...')" (a gateway that breaks multipart).
    """
    _edits_served(ctx)
    call = ctx.edit([input_image(ctx)], **edit_params(ctx))
    _succeeded(ctx, call, "a multipart edit")


@check("edits")
def several_images_as_the_model_allows(ctx: CheckContext) -> None:
    """Two input images (``image[]``) are accepted where the model takes several (the
    GPT-image models: up to 16), and refused with invalid_request naming ``image`` where it
    takes one (dall-e-2).

    Fails with: "an edit with 2 input images failed: ... invalid_request ... 'array too long'"
    or "an edit with 2 input images was accepted (...); dall-e-2 must refuse it ...".
    """
    _edits_served(ctx)
    images = [input_image(ctx, seed="first"), input_image(ctx, seed="second")]
    call = ctx.edit(images, expect_images=ctx.profile.edit_max_images >= 2, **edit_params(ctx))
    if ctx.profile.edit_max_images >= 2:
        _succeeded(ctx, call, "an edit with 2 input images")
    else:
        _strict(ctx)
        _refused(ctx, call, "an edit with 2 input images", "image")


@check("edits")
def size_format_and_n_honoured(ctx: CheckContext) -> None:
    """An edit asking for ``n`` images (2, or 1 where the profile allows only one), a listed
    size other than the cheapest one, and ``output_format`` jpeg (where the profile takes
    it) returns exactly that: n images, each of that size and format.

    Fails with: "the edit ... failed: malformed_response ... asked for 2 images, got 1" (or
    "... image 1 of 2 is 1024x1024, but 1024x1536 was asked for", "... is png, but jpeg was
    asked for").
    """
    _edits_served(ctx)
    params = edit_params(ctx)
    sizes = [s for s in ctx.profile.sizes if s != "auto" and s != params.get("size")]
    if sizes:
        params["size"] = sizes[0]
    params["n"] = min(2, ctx.profile.n_max)
    if "jpeg" in ctx.profile.output_formats:
        params["output_format"] = "jpeg"
    call = ctx.edit([input_image(ctx)], **params)
    _succeeded(ctx, call, f"the edit {json.dumps({k: params[k] for k in sorted(params)})}")


@check("edits")
def mask_accepted(ctx: CheckContext) -> None:
    """An edit with a mask (a PNG with alpha, the size of the input image) succeeds.

    Fails with: "an edit with a mask failed: POST /images/edits {...}: <diagnosis>".
    """
    _edits_served(ctx)
    call = ctx.edit([input_image(ctx)], mask=mask_for(ctx), **edit_params(ctx))
    _succeeded(ctx, call, "an edit with a mask")


@check("edits")
def mask_of_another_size_refused(ctx: CheckContext) -> None:
    """A mask that is not the size of the first input image is refused with invalid_request
    naming ``mask`` (the spec: the mask "must have the same dimensions as `image`").

    Fails with: "a mask of another size than the image was accepted (HTTP 200, 1 image(s)
    ...); gpt-image-1 must refuse it with invalid_request naming param 'mask'".
    """
    _edits_served(ctx)
    _strict(ctx)
    side = _INPUT_SIDE.get(ctx.profile.family, 1024) // 2
    call = ctx.edit(
        [input_image(ctx)], mask=mask_for(ctx, side=side), expect_images=False, **edit_params(ctx)
    )
    _refused(ctx, call, "a mask of another size than the image", "mask")


@check("edits")
def non_image_file_refused(ctx: CheckContext) -> None:
    """A text file uploaded as the input image is refused with invalid_request naming
    ``image`` (OpenAI: "Invalid file 'image': unsupported mimetype ('text/plain') ...").

    Fails with: "a text file as the input image was accepted (HTTP 200 ...); gpt-image-1 must
    refuse it with invalid_request naming param 'image'".
    """
    _edits_served(ctx)
    _strict(ctx)
    text = ("notes.txt", b"this is not an image", "text/plain")
    call = ctx.edit([text], expect_images=False, **edit_params(ctx))
    _refused(ctx, call, "a text file as the input image", "image")


@check("edits")
def input_fidelity_as_the_model_allows(ctx: CheckContext) -> None:
    """``input_fidelity="high"`` is accepted where the model takes it (gpt-image-1,
    gpt-image-1.5, gpt-image-2) and refused naming ``input_fidelity`` where it does not
    (gpt-image-1-mini, dall-e-2).

    Fails with: "an edit with input_fidelity=high failed: ... Unknown parameter:
    'input_fidelity'" (a gateway that drops newer parameters) or "... was accepted ...".
    """
    _edits_served(ctx)
    supported = ctx.profile.input_fidelity
    call = ctx.edit(
        [input_image(ctx)], input_fidelity="high", expect_images=supported, **edit_params(ctx)
    )
    if supported:
        _succeeded(ctx, call, "an edit with input_fidelity=high")
    else:
        _strict(ctx)
        _refused(ctx, call, "an edit with input_fidelity=high", "input_fidelity")


@check("edits")
def json_image_references(ctx: CheckContext) -> None:
    """The JSON variant (``images`` as ``image_url`` data URLs) succeeds with an image of the
    size asked for, for the GPT-image models; other models refuse it naming ``model``.

    Fails with: "a JSON edit with an image reference failed: ... 'expected
    multipart/form-data'" (an endpoint that serves multipart only).
    """
    _edits_served(ctx)
    png = input_image(ctx)[1]
    url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    body: dict[str, Any] = {"images": [{"image_url": url}], **ctx.cheap_params()}
    if ctx.profile.edit_json:
        call = ctx.edit_json(body)
        _succeeded(ctx, call, "a JSON edit with an image reference")
    else:
        _strict(ctx)
        call = ctx.edit_json(body, expect_images=False)
        _refused(ctx, call, "a JSON edit with an image reference", "model")


@check("edits")
def variations_only_where_served(ctx: CheckContext) -> None:
    """``POST /images/variations`` with the image model makes images where the model has
    variations (dall-e-2), and is refused with invalid_request naming ``model`` otherwise
    (OpenAI: "Invalid value: 'gpt-image-1'. Supported values are: 'dall-e-2'.").

    Fails with: "a variation with gpt-image-1 was accepted (HTTP 200 ...); gpt-image-1 must
    refuse it with invalid_request naming param 'model'".
    """
    if ctx.endpoint.is_azure:
        # Azure OpenAI has no variations route (not a deployment path in the SDK either).
        ctx.skip(f"endpoint {ctx.endpoint.name!r} is Azure OpenAI, which serves no variations")
    served = ctx.profile.variations
    if not served:
        _strict(ctx)
    params: dict[str, Any] = {}
    if "b64_json" in ctx.profile.response_formats:
        params["response_format"] = "b64_json"
    size = _INPUT_SIDE.get(ctx.profile.family, 1024)
    if served and f"{size}x{size}" in ctx.profile.sizes:
        params["size"] = f"{size}x{size}"
    call = ctx.variation(input_image(ctx), expect_images=served, **params)
    what = f"a variation with {ctx.endpoint.image_model}"
    if served:
        _succeeded(ctx, call, what)
    else:
        _refused(ctx, call, what, "model")
