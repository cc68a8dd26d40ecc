"""Response shape: the ImagesResponse schema, ``n`` images of the size and format asked
for, ``usage`` where the profile promises it, and the body size against serverless caps."""

from __future__ import annotations

from typing import Any

from pytest_imagegen.checks import fixes
from pytest_imagegen.checks.context import SERVERLESS_RESPONSE_CAP, Call, CheckContext
from pytest_imagegen.checks.registry import check
from pytest_imagegen.errors import Category

_USAGE_FIELDS = ("input_tokens", "output_tokens", "total_tokens")


def _generated(ctx: CheckContext, **params: Any) -> Call:
    call = ctx.generate(**{**ctx.cheap_params(), **params})
    if not call.ok:
        ctx.fail(f"the request {call.request_line()} failed: {call.describe()}", call=call)
    return call


def _malformed(call: Call) -> bool:
    return call.diagnosis is not None and call.diagnosis.category == Category.MALFORMED_RESPONSE


def _schema_problems(document: Any, content: bytes = b"") -> list[str]:
    """What is wrong with an ImagesResponse body (per the spec and the SDK's types)."""
    if document is None:
        if not content:
            return ["the body is empty"]
        preview = content[:60].decode("utf-8", "replace")
        return [f"the body is not JSON ({len(content):,} bytes, starting {preview!r})"]
    if not isinstance(document, dict):
        return [f"the body is JSON {type(document).__name__}, not an object"]
    problems = []
    created = document.get("created")
    if isinstance(created, bool) or not isinstance(created, int):
        problems.append(f"`created` must be an integer unix time, got {created!r}")
    data = document.get("data")
    if not isinstance(data, list) or not data:
        problems.append("`data` must be a non-empty list of images")
    else:
        for i, item in enumerate(data, 1):
            if not isinstance(item, dict):
                problems.append(f"data[{i - 1}] must be an object")
                continue
            if not any(isinstance(item.get(k), str) and item.get(k) for k in ("b64_json", "url")):
                problems.append(f"data[{i - 1}] has neither `b64_json` nor `url`")
            for key in ("b64_json", "url", "revised_prompt"):
                if key in item and item[key] is not None and not isinstance(item[key], str):
                    problems.append(f"data[{i - 1}].{key} must be a string")
    for key in ("background", "output_format", "quality", "size"):
        if key in document and document[key] is not None and not isinstance(document[key], str):
            problems.append(f"`{key}` must be a string")
    if not problems:
        # Only the SDK's verdict on the document is the endpoint's fault; an import or any
        # other error is a bug here and must surface as one.
        from openai.types import ImagesResponse
        from pydantic import ValidationError

        try:
            ImagesResponse.model_validate(document)
        except ValidationError as exc:
            first = str(exc).splitlines()
            problems.append(f"the SDK's ImagesResponse rejects it: {' '.join(first[:3])}")
    return problems


@check("response_shape")
def schema(ctx: CheckContext) -> None:
    """A successful answer is an ImagesResponse: integer ``created``, a non-empty ``data``
    list whose items carry ``b64_json`` or ``url``, and the SDK's ``ImagesResponse`` parses it.

    Fails with: "the answer is not an ImagesResponse: `data` must be a non-empty list of
    images" (or the request's diagnosis, e.g. "malformed_response ... `data` is empty").
    """
    call = ctx.generate(**ctx.cheap_params())
    problems = []
    if call.status and call.status < 300 and call.cut is None:
        problems = _schema_problems(call.document, call.content)
    if problems:
        ctx.fail(f"the answer is not an ImagesResponse: {'; '.join(problems)}", call=call)
    if not call.ok:
        ctx.fail(f"the request {call.request_line()} failed: {call.describe()}", call=call)


@check("response_shape")
def n_images(ctx: CheckContext) -> None:
    """Asking for ``n`` images (2, or 1 where the profile allows only one) returns exactly n.

    Fails with: "asked for 2 images, got 1".
    """
    n = min(2, ctx.profile.n_max)
    call = ctx.generate(**{**ctx.cheap_params(), "n": n})
    data = call.document.get("data") if isinstance(call.document, dict) else None
    answered = call.status is not None and call.status < 300
    if answered and isinstance(data, list) and len(data) != n:
        ctx.fail(f"asked for {n} images, got {len(data)}", call=call)
    if not call.ok:
        ctx.fail(f"the request {call.request_line()} failed: {call.describe()}", call=call)


@check("response_shape")
def requested_size(ctx: CheckContext) -> None:
    """Every image decodes to the size asked for (a listed size other than the cheapest one).

    Fails with: "image 1 of 1 is 1024x1024, but 1024x1536 was asked for".
    """
    cheap = ctx.cheap_params()
    sizes = [s for s in ctx.profile.sizes if s != "auto" and s != cheap.get("size")]
    if not sizes:
        ctx.skip(f"profile {ctx.profile.name!r} lists no second concrete size to ask for")
    call = ctx.generate(**{**cheap, "size": sizes[0]})
    if not call.ok:
        ctx.fail(
            f"the request {call.request_line()} failed: {call.describe()}",
            call=call,
            fix=fixes.wrong_images("size") if _malformed(call) else None,
        )


@check("response_shape")
def requested_format(ctx: CheckContext) -> None:
    """Every image decodes to the ``output_format`` asked for (jpeg, else webp).

    Fails with: "image 1 of 1 is png, but jpeg was asked for".
    """
    formats = [f for f in ("jpeg", "webp") if f in ctx.profile.output_formats]
    if not formats:
        ctx.skip(f"profile {ctx.profile.name!r} takes no output_format")
    call = ctx.generate(**{**ctx.cheap_params(), "output_format": formats[0]})
    if not call.ok:
        ctx.fail(
            f"the request {call.request_line()} failed: {call.describe()}",
            call=call,
            fix=fixes.wrong_images("output_format") if _malformed(call) else None,
        )


@check("response_shape")
def usage(ctx: CheckContext) -> None:
    """Where the profile promises it (the GPT-image models), the answer carries ``usage`` with
    integer ``input_tokens``, ``output_tokens`` and ``total_tokens``.

    Fails with: "the answer has no `usage` object; gpt-image-1 answers carry token usage".
    """
    if not ctx.profile.returns_usage:
        ctx.skip(f"profile {ctx.profile.name!r} does not promise `usage`")
    call = _generated(ctx)
    usage = call.document.get("usage") if isinstance(call.document, dict) else None
    if not isinstance(usage, dict):
        ctx.fail(f"the answer has no `usage` object; {ctx.profile.name} answers carry token usage")
    bad = [
        k
        for k in _USAGE_FIELDS
        if isinstance(usage.get(k), bool) or not isinstance(usage.get(k), int)
    ]
    if bad:
        ctx.fail(f"`usage` lacks integer {', '.join(bad)}: {usage!r}")
    ctx.record(usage=usage)


@check("response_shape")
def body_size(ctx: CheckContext) -> None:
    """The body of a one-image answer stays under the 4.5 MB response cap of serverless
    functions (Vercel), so an app can pass it through; the size is recorded in the report.

    Fails with: "a one-image answer is 5.20 MB, over the 4.5 MB serverless response cap;
    ask for output_format jpeg/webp with output_compression, a smaller size, or stream".
    """
    call = ctx.generate(**ctx.cheap_params())
    if call.cut is not None:
        ctx.record(body_bytes=call.cut.bytes)
        ctx.fail(
            f"a one-image answer: {call.cut.describe()}; the cap is the endpoint's "
            f"max_response_mb, by default a few MB above the largest legal image answer",
            call=call,
        )
    if not call.ok:
        ctx.fail(f"the request {call.request_line()} failed: {call.describe()}", call=call)
    size = len(call.content)
    ctx.record(body_bytes=size)
    if size > SERVERLESS_RESPONSE_CAP:
        ctx.fail(
            f"a one-image answer is {size / 1e6:.2f} MB, over the "
            f"{SERVERLESS_RESPONSE_CAP / 1e6:.1f} MB serverless response cap; ask for "
            f"output_format jpeg/webp with output_compression, a smaller size, or stream"
        )
