"""``POST /v1/images/edits`` (multipart, and the JSON variant with image references) and
``POST /v1/images/variations`` (multipart; only for models that have variations, dall-e-2).

Validation is :func:`pytest_imagegen.request_builder.validate_edit` / ``validate_variation``
(OpenAI's wording); the answer is an ``ImagesResponse``, or ``image_edit.*`` stream events
with ``stream: true``. Scripted faults apply as they do to generations; the edit defects
make the server behave like a gateway that breaks edits.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pytest_imagegen.reference.wire import MSG_BAD_JSON, Abort, Reply

if TYPE_CHECKING:
    from pytest_imagegen.profiles import Profile
    from pytest_imagegen.reference.app import Received as Call
    from pytest_imagegen.reference.app import ReferenceApp
    from pytest_imagegen.request_builder import Upload, Violation

_IMAGE_FIELDS = ("image", "image[]")
_MSG_MULTIPART = (
    "Could not parse multipart form: the body of a request to /v1/images/edits must be "
    "multipart/form-data with a boundary, or a JSON object."
)
_MSG_JSON_REFUSED = (
    "Invalid Content-Type header (application/json), expected multipart/form-data. "
    "(HINT: If you're using curl, you can pass -F 'key=value' to send multipart form data)"
)
# Violation codes about the input files themselves (what the accepts_any_file defect skips).
_FILE_CODES = frozenset({"invalid_image_format", "invalid_image_file"})


def edits(app: ReferenceApp, call: Call) -> Reply:
    """The edits route: scripted faults first (as for generations), then the edit."""
    fields = _fields(call)
    model, prompt = fields.get("model"), fields.get("prompt")
    quality = fields.get("quality")
    fault = app.server.faults.take(
        model=model if isinstance(model, str) else None,
        qualities=[quality] if isinstance(quality, str) else [],
        prompt=prompt if isinstance(prompt, str) else None,
    )
    if fault is not None:
        call.logged.fault = fault.name
        return app._fault(call, fault, lambda again: _edit(app, again))
    return _edit(app, call)


def _fields(call: Call) -> dict[str, Any]:
    """The non-file keys of an edit (form values parsed), from either variant."""
    from pytest_imagegen.request_builder import coerce_form

    if call.form is not None:
        return coerce_form(call.form)
    if isinstance(call.body, dict):
        return {k: v for k, v in call.body.items() if k not in ("images", "mask")}
    return {}


def _edit(app: ReferenceApp, call: Call) -> Reply:
    from pytest_imagegen.request_builder import validate_edit

    server = app.server
    defects = server.defects
    if (denied := app._auth_error(call)) is not None:
        return denied
    content_type = call.headers.get("content-type", "").lower()
    multipart = "multipart/form-data" in content_type
    if multipart and (call.form is None or "edits_multipart_broken" in defects):
        # A gateway that forwards the form as if it were JSON gets OpenAI's JSON complaint.
        message = MSG_BAD_JSON if "edits_multipart_broken" in defects else _MSG_MULTIPART
        return app._error(400, message)
    if not multipart:
        if not call.json_ok:
            return app._error(400, MSG_BAD_JSON)
        if not isinstance(call.body, dict):
            return app._error(
                400, "Invalid type for request body: expected an object.", code="invalid_type"
            )
        if "edits_json_refused" in defects:
            return app._error(400, _MSG_JSON_REFUSED)
    fields = _fields(call)
    model = fields.get("model")
    if model is not None and not isinstance(model, str):
        return app._error(
            400, "Invalid type for 'model': expected a string.", param="model", code="invalid_type"
        )
    name, profile, refusal = _profile(app, model, fields)
    if refusal is not None:
        return refusal
    assert profile is not None
    if "edits_single_image" in defects:
        profile = replace(profile, edit_max_images=min(1, profile.edit_max_images))
    if multipart:
        images = [_upload(f) for f in call.files if f[0] in _IMAGE_FIELDS]
        masks = [_upload(f) for f in call.files if f[0] == "mask"]
        mask = masks[0] if masks else None
        problems: list[Violation] = []
    else:
        images, mask, problems = _references(call.body)
    if "no_validation" not in defects:
        if "no_input_fidelity" in defects and "input_fidelity" in fields:
            from pytest_imagegen.request_builder import Violation

            problems.append(
                Violation(
                    "input_fidelity", "unknown_parameter", "Unknown parameter: 'input_fidelity'."
                )
            )
        if not problems:
            problems = validate_edit(
                fields, profile, images=images, mask=mask, json_body=not multipart
            )
        if "accepts_any_file" in defects:
            problems = [v for v in problems if v.code not in _FILE_CODES]
        if "ignores_mask_size" in defects:
            problems = [v for v in problems if v.param != "mask"]
        if problems:
            return _violation(app, problems[0])
    gen = app._resolve(fields, profile, name)
    gen.kind = "image_edit"
    # Different inputs give different edits of the same prompt.
    digest = hashlib.sha256(b"".join(u.data for u in images)).hexdigest()[:16]
    gen.prompt = f"{gen.prompt}\nedit of {digest}"
    if not gen.stream and not app._wait(call, server.latency_for(gen.quality)):
        raise Abort("released while editing")
    return app._images(call, gen)


def variations(app: ReferenceApp, call: Call) -> Reply:
    """The variations route: dall-e-2 only, refused in OpenAI's words for any other model."""
    from pytest_imagegen.request_builder import coerce_form, validate_variation

    server = app.server
    if (denied := app._auth_error(call)) is not None:
        return denied
    if call.form is None:
        return app._error(400, _MSG_JSON_REFUSED if call.json_ok else _MSG_MULTIPART)
    fields = coerce_form(call.form)
    model = fields.get("model") or "dall-e-2"  # the spec's default for variations
    name, profile, refusal = _profile(app, model, fields)
    if refusal is not None:
        return refusal
    assert profile is not None
    if "variations_for_all" in server.defects:
        profile = replace(profile, variations=True)
    uploads = [_upload(f) for f in call.files if f[0] == "image"]
    image = uploads[0] if uploads else None
    if "no_validation" not in server.defects:
        problems = validate_variation(fields, profile, image=image)
        if problems:
            return _violation(app, problems[0])
    body = {k: v for k, v in fields.items() if k in ("n", "size", "response_format")}
    gen = app._resolve(body, profile, name)
    digest = hashlib.sha256(image.data if image else b"").hexdigest()[:16]
    gen.prompt = f"variation of {digest}"
    if not app._wait(call, server.latency_for(gen.quality)):
        raise Abort("released while making variations")
    return app._images(call, gen)


def _profile(
    app: ReferenceApp, model: Any, fields: dict[str, Any]
) -> tuple[str, Profile | None, Reply | None]:
    """(name, profile, None), or a refusal for a chat or unknown model, as for generations."""
    from pytest_imagegen.reference.wire import msg_model_not_found

    server = app.server
    if model is None:
        # Like generations, no default: the validation below names the missing model.
        return str(server.default_model), server.models[server.default_model], None
    name, profile = server.resolve_model(model, fields)
    if profile is not None:
        return name, profile, None
    if server.model_kind(name) == "chat" and "accepts_chat_model" not in server.defects:
        return (
            name,
            None,
            app._error(
                400,
                f"Invalid model {name}. The model argument should be left blank.",
                param="model",
            ),
        )
    if server.model_kind(name) != "chat" and "unknown_model_ok" not in server.defects:
        return name, None, app._error(404, msg_model_not_found(name), code="model_not_found")
    return name, server.models[server.default_model], None


def _upload(part: tuple[str, str | None, str, bytes]) -> Upload:
    from pytest_imagegen.request_builder import Upload

    name, filename, content_type, data = part
    return Upload(name, data, content_type, filename)


def _references(body: Any) -> tuple[list[Upload], Upload | None, list[Violation]]:
    """The JSON variant's ``images`` (and ``mask``) references, decoded from data URLs."""
    from pytest_imagegen.request_builder import Violation

    problems: list[Violation] = []
    refs = body.get("images") if isinstance(body, dict) else None
    if refs is None:
        return [], None, problems
    if not isinstance(refs, list):
        problems.append(
            Violation(
                "images",
                "invalid_type",
                "Invalid type for 'images': expected an array of image references.",
            )
        )
        return [], None, problems
    images: list[Upload] = []
    for index, ref in enumerate(refs):
        upload, problem = _reference(ref, f"images[{index}]")
        if problem is not None:
            problems.append(problem)
            return images, None, problems
        assert upload is not None
        images.append(upload)
    mask = None
    if body.get("mask") is not None:
        mask, problem = _reference(body["mask"], "mask")
        if problem is not None:
            problems.append(problem)
    return images, mask, problems


def _reference(ref: Any, param: str) -> tuple[Upload | None, Violation | None]:
    from pytest_imagegen.request_builder import Upload, Violation

    if not isinstance(ref, dict) or set(ref) not in ({"image_url"}, {"file_id"}):
        return None, Violation(
            param,
            "invalid_value",
            f"Invalid '{param}': an image reference is an object with exactly one of "
            "'image_url' or 'file_id'.",
        )
    if "file_id" in ref:
        return None, Violation(
            f"{param}.file_id",
            "invalid_value",
            f"Invalid '{param}.file_id': the reference server stores no files; send the image "
            "as a data URL in 'image_url'.",
        )
    url = ref["image_url"]
    if not isinstance(url, str) or not url.startswith("data:") or "," not in url:
        return None, Violation(
            f"{param}.image_url",
            "invalid_value",
            f"Invalid '{param}.image_url': the reference server reads data URLs only "
            "(data:image/png;base64,...); it fetches nothing from the network.",
        )
    head, _, payload = url.partition(",")
    content_type = head[5:].split(";")[0] or "application/octet-stream"
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None, Violation(
            f"{param}.image_url",
            "invalid_value",
            f"Invalid '{param}.image_url': the data URL is not valid base64.",
        )
    field = "mask" if param == "mask" else "images"
    return Upload(field, data, content_type), None


def _violation(app: ReferenceApp, violation: Violation) -> Reply:
    error = violation.error_body()["error"]
    param = None if "wrong_error_param" in app.server.defects else error.get("param")
    return app._error(400, error["message"], param=param, code=error.get("code"))
