"""Request shape: valid requests for the profile succeed, invalid ones are refused by name."""

from __future__ import annotations

import json
from typing import Any

from pytest_imagegen.checks import fixes
from pytest_imagegen.checks.context import PROMPT, Call, CheckContext
from pytest_imagegen.checks.registry import check
from pytest_imagegen.errors import CassetteError, Category

#: Examples drawn by ``valid_requests_succeed`` (each one is a live request when recording).
VALID_EXAMPLES = 3
#: Examples drawn by ``invalid_requests_refused``.
INVALID_EXAMPLES = 4
#: ``n`` of drawn requests is capped at this, to keep live runs cheap.
MAX_DRAWN_N = 2

# Planted defects OpenAI documents a 400 for (others, such as output_compression with PNG,
# are refused by some servers and ignored by others).
_DOCUMENTED_REFUSALS = (
    "unknown_parameter",
    "response_format",
    "quality",
    "size",
    "n_below_min",
    "n_above_max",
    "prompt_empty",
)
_QUALITY_CANDIDATES = ("standard", "hd", "low", "medium", "high")
_SIZE_CANDIDATES = ("1792x1024", "256x256", "1000x1000", "999x999", "4000x4000")


def _strict_profile(ctx: CheckContext) -> None:
    if ctx.profile.family == "custom":
        ctx.skip(
            f"profile {ctx.profile.name!r} of endpoint {ctx.endpoint.name!r} is lenient: it does "
            f"not say which values the endpoint refuses"
        )


def dropped_by_gateway(call: Call, param: str) -> bool:
    """Whether a gateway forwarded the request upstream without ``param`` (upstream mode
    only: False when nothing is known of what the upstream received)."""
    exchange = getattr(call, "exchange", None)
    upstream = getattr(exchange, "upstream", None) or ()
    bodies = [u.body for u in upstream if getattr(u, "route", None) == "images"]
    return bool(bodies) and all(not isinstance(b, dict) or param not in b for b in bodies)


def _gateway_note(call: Call, param: str) -> str:
    """Why, when the upstream's side says so: the gateway removed the planted param."""
    if not dropped_by_gateway(call, param):
        return ""
    return f" The upstream never received {param!r}: the gateway dropped it."


def _expect_refusal(ctx: CheckContext, param: str, **params: Any) -> None:
    """Send a request invalid in ``param`` and require invalid_request naming ``param``."""
    body = {**ctx.cheap_params(), **params}
    call = ctx.generate(expect_images=False, **body)
    shown = {param: params.get(param)}
    if call.diagnosis is None:
        if dropped_by_gateway(call, param):
            ctx.fail(
                f"the gateway dropped {json.dumps(shown)}: the upstream never received "
                f"{param!r}, and the client got HTTP {call.status} as if it had been "
                f"accepted; {ctx.profile.name} must refuse it with invalid_request naming "
                f"param {param!r}"
            )
        ctx.fail(
            f"the endpoint accepted {json.dumps(shown)} (HTTP {call.status}); "
            f"{ctx.profile.name} must refuse it with invalid_request naming param {param!r}",
            call=call,
            category=Category.INVALID_REQUEST,
            fix=fixes.accepted(param, ctx.profile.name),
        )
    diagnosis = call.diagnosis
    if diagnosis.category != Category.INVALID_REQUEST:
        ctx.fail(
            f"{json.dumps(shown)} was refused as {diagnosis.category}, expected "
            f"invalid_request naming param {param!r}: {call.describe()}"
            + _gateway_note(call, param),
            call=call,
            fix=fixes.refusal(Category.INVALID_REQUEST, call),
        )
    if diagnosis.param != param:
        ctx.fail(
            f"{json.dumps(shown)} was refused as invalid_request, but the error names param "
            f"{diagnosis.param!r} instead of {param!r}: {call.describe()}"
            + _gateway_note(call, param),
            call=call,
            fix=fixes.error_param(param),
        )


@check("request_shape")
def request_is_valid(ctx: CheckContext) -> None:
    """A request built for the profile validates against the profile and the SDK's types,
    goes out as POST {base_url}/images/generations with that exact JSON body, and succeeds.

    Fails with: "the request built for gpt-image-1 is not valid: quality: Invalid value ..."
    or "the request went out as ...; expected POST .../images/generations with
    application/json" or "a valid request failed: <category> (HTTP 404 ...)".
    """
    from pytest_imagegen.request_builder import build_request, check_request

    body = build_request(
        ctx.profile, model=ctx.endpoint.image_model, prompt=PROMPT, **ctx.cheap_params()
    )
    violations = check_request(body, ctx.profile)
    if violations:
        ctx.fail(
            f"the request built for {ctx.profile.name} is not valid: "
            + "; ".join(str(v) for v in violations)
        )
    call = ctx.generate(**{k: v for k, v in body.items()})
    sent = [r for r in ctx.sent if r.path.endswith("/images/generations")]
    if len(sent) != 1:
        ctx.fail(f"expected one POST {ctx.images_url}, the client sent {len(sent)} such request(s)")
    request = sent[0]
    if (
        request.method != "POST"
        or request.url.split("?")[0].rstrip("/") != ctx.images_url
        or not request.content_type.startswith("application/json")
    ):
        ctx.fail(
            f"the request went out as {request.method} {request.url} ({request.content_type}); "
            f"expected POST {ctx.images_url} with application/json"
        )
    # On Azure the SDK sends the deployment name as the model.
    wire = {**body, "model": ctx.endpoint.wire_model(body["model"])} if "model" in body else body
    if request.body != wire:
        ctx.fail(f"the body sent differs from the one built: {request.body!r} != {wire!r}")
    if not call.ok:
        ctx.fail(f"a valid request failed: {call.describe()}", call=call)


@check("request_shape")
def valid_requests_succeed(ctx: CheckContext) -> None:
    """Requests drawn by ``strategies.image_requests(profile=...)`` (derandomized; a few
    examples; ``n`` capped at 2, and on a billed endpoint at 1 with the cheapest quality; a
    replay sends the requests its cassette recorded) all succeed with the images asked for.

    Fails with: "a valid request failed: POST /images/generations {...}: <diagnosis>".
    """
    if ctx.recorded_requests:
        _replay_valid(ctx, ctx.recorded_requests)
        return
    from hypothesis import HealthCheck, Phase, given, settings

    from pytest_imagegen.strategies import image_requests

    failures: list[str] = []
    client = ctx.client()
    cheap = _cheap_quality(ctx)
    strategy = image_requests(profile=ctx.profile, model=ctx.endpoint.image_model).map(
        lambda body: _cheapen(body, cheap)
    )

    # The derandomized seed comes from the source of ``send``: editing it changes the
    # requests drawn, and so every recording made from now on.
    @settings(
        derandomize=True,
        database=None,
        max_examples=VALID_EXAMPLES,
        deadline=None,
        phases=(Phase.explicit, Phase.generate),  # no shrinking: every request is billed
        suppress_health_check=list(HealthCheck),
    )
    @given(body=strategy)
    def send(body: dict[str, Any]) -> None:
        if failures:
            return  # one failure is enough; do not spend on more requests
        call = ctx.generate(body, client=client)
        if not call.ok:
            failures.append(f"{call.request_line()}: {call.describe()}")

    send()
    if failures:
        # ``send`` stops sending after the first failure (its source, which seeds the draws,
        # stays as recorded): the last call is the one that failed.
        _valid_failed(ctx, ctx.calls[-1])


def _valid_failed(ctx: CheckContext, call: Call) -> None:
    fix = None
    if call.diagnosis is not None and call.diagnosis.category == Category.MALFORMED_RESPONSE:
        fix = fixes.wrong_images("size and format")
    ctx.fail(
        f"a valid request failed: {call.request_line()}: {call.describe()}", call=call, fix=fix
    )


def _cheap_quality(ctx: CheckContext) -> str | None:
    """The quality drawn requests are sent with on a billed endpoint (None: keep the draw)."""
    if ctx.endpoint.is_reference:
        return None
    return ctx.cheap_params().get("quality")


def _cheapen(
    body: dict[str, Any], quality: str | None, *, keep: str | None = None
) -> dict[str, Any]:
    """A drawn body made affordable: no streaming (the suite reads whole responses), ``n``
    capped, and on billed endpoints the cheapest quality; ``keep`` names the planted
    defect's param, which is left alone."""
    body = {k: v for k, v in body.items() if k not in ("stream", "partial_images")}
    n = body.get("n")
    if keep != "n" and isinstance(n, int) and not isinstance(n, bool) and n > MAX_DRAWN_N:
        body["n"] = 1 if quality else MAX_DRAWN_N
    if quality and keep != "quality" and isinstance(body.get("quality"), str):
        body["quality"] = quality
    return body


@check("request_shape")
def invalid_requests_refused(ctx: CheckContext) -> None:
    """Requests drawn by ``strategies.invalid_image_requests(profile=...)`` (derandomized:
    the simplest request of each defect OpenAI documents a refusal for, so every one is sent
    on every run, then a few drawn across them; the defects: unknown parameter, unsupported
    quality or size, ``response_format`` on GPT-image, ``n`` out of range, empty prompt; a
    replay sends the requests its cassette recorded, each planted param being the one the
    profile finds invalid) are all refused with invalid_request naming the planted param.

    Fails with: "an invalid request was not refused as invalid_request naming 'size':
    POST /images/generations {...}: HTTP 200, 1 image(s) png 1024x1024".
    """
    from hypothesis import HealthCheck, Phase, example, find, given, settings

    from pytest_imagegen.strategies import invalid_image_requests

    _strict_profile(ctx)
    if ctx.recorded_requests:
        _replay_invalid(ctx, ctx.recorded_requests)
        return
    from hypothesis.errors import InvalidArgument

    from pytest_imagegen.strategies import DEFECTS as PLANTABLE
    from pytest_imagegen.strategies import applicable_defects

    wanted = [d for d in _DOCUMENTED_REFUSALS if d in PLANTABLE]
    try:
        strategy = invalid_image_requests(
            profile=ctx.profile, model=ctx.endpoint.image_model, defects=wanted
        )
    except InvalidArgument as exc:  # no defect applies (a bug here must not become a skip)
        ctx.skip(f"no invalid request applies to profile {ctx.profile.name!r}: {exc}")
    failures: list[str] = []
    client = ctx.client()
    cheap = _cheap_quality(ctx)
    # The simplest request of each defect, sent first: a few draws across all of them left
    # it to chance whether, say, a gateway dropping unknown parameters was seen at all.
    simplest = settings(database=None, phases=[Phase.generate], deadline=None)
    each = []
    for defect in applicable_defects(profile=ctx.profile):
        if defect in wanted:
            one = invalid_image_requests(
                profile=ctx.profile, model=ctx.endpoint.image_model, defects=[defect]
            )
            each.append(find(one, lambda case: True, settings=simplest))

    # As above: the seed comes from the source of ``send``.
    @settings(
        derandomize=True,
        database=None,
        max_examples=INVALID_EXAMPLES,
        deadline=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def send(case: tuple[dict[str, Any], str]) -> None:
        if failures:
            return
        body, param = case
        call = ctx.generate(_cheapen(body, cheap, keep=param), client=client, expect_images=False)
        diagnosis = call.diagnosis
        if (
            diagnosis is None
            or diagnosis.category != Category.INVALID_REQUEST
            or diagnosis.param != param
        ):
            failures.append(
                f"an invalid request was not refused as invalid_request naming {param!r}: "
                f"{call.request_line()}: {call.describe()}" + _gateway_note(call, param)
            )

    for case in reversed(each):  # decorators apply bottom-up; keep the defects' order
        send = example(case=case)(send)
    send()
    if failures:
        _invalid_failed(ctx, failures[0], ctx.calls[-1])


def _invalid_failed(ctx: CheckContext, message: str, call: Call) -> None:
    param = _planted_param(message)
    if call.diagnosis is None:
        fix = fixes.accepted(param, ctx.profile.name)
    elif call.diagnosis.category != Category.INVALID_REQUEST:
        fix = fixes.refusal(Category.INVALID_REQUEST, call)
    else:
        fix = fixes.error_param(param)
    ctx.fail(message, call=call, category=Category.INVALID_REQUEST, fix=fix)


def _planted_param(message: str) -> str:
    # "... naming 'seed': POST ..." -> seed
    start = message.find("naming '") + len("naming '")
    return message[start : message.find("'", start)] if start > 7 else "the parameter"


def _replay_valid(ctx: CheckContext, recorded: list[dict[str, Any]]) -> None:
    """``valid_requests_succeed`` in a replay: the recorded requests, in recorded order.

    Drawing again would not do: hypothesis mixes constants of the local modules imported
    into its draws, and a release may draw differently, so new draws find no recording.
    """
    bodies = [_recorded_valid(ctx, body) for body in recorded]
    client = ctx.client()
    for body in bodies:
        call = ctx.generate(body, client=client)
        if not call.ok:  # one failure is enough
            _valid_failed(ctx, call)


def _replay_invalid(ctx: CheckContext, recorded: list[dict[str, Any]]) -> None:
    """``invalid_requests_refused`` in a replay: the recorded requests, in recorded order,
    each expected to be refused naming the param of its planted defect."""
    cases = [_recorded_invalid(ctx, body) for body in recorded]
    client = ctx.client()
    for body, param in cases:
        call = ctx.generate(body, client=client, expect_images=False)
        diagnosis = call.diagnosis
        if (
            diagnosis is None
            or diagnosis.category != Category.INVALID_REQUEST
            or diagnosis.param != param
        ):
            _invalid_failed(  # one failure is enough
                ctx,
                f"an invalid request was not refused as invalid_request naming {param!r}: "
                f"{call.request_line()}: {call.describe()}" + _gateway_note(call, param),
                call,
            )


def _recorded_valid(ctx: CheckContext, body: dict[str, Any]) -> dict[str, Any]:
    """A recorded body of ``valid_requests_succeed``, still valid for the profile."""
    from pytest_imagegen.request_builder import validate_request

    violations = validate_request(body, ctx.profile)
    if violations:
        problem = "is not valid (" + "; ".join(str(v) for v in violations) + ")"
        raise _rerecord(ctx, body, problem, "valid_requests_succeed")
    return body


def _recorded_invalid(ctx: CheckContext, body: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A recorded body of ``invalid_requests_refused`` and the param of its planted defect:
    the one violation the profile finds in it (a drawn body has exactly one, and the
    request body carries nothing else)."""
    from pytest_imagegen.request_builder import validate_request

    violations = validate_request(body, ctx.profile)
    if len(violations) != 1 or violations[0].param is None:
        found = "; ".join(str(v) for v in violations) or "none"
        problem = f"does not have exactly one invalid param (violations: {found})"
        raise _rerecord(ctx, body, problem, "invalid_requests_refused")
    param = violations[0].param
    if violations[0].code == "unknown_parameter" and body.get(param) is None:
        # Older releases planted null unknown keys, which gateways strip before the
        # upstream sees them: a refusal cannot be required of them.
        problem = f"plants the unknown param {param!r} with a null value"
        raise _rerecord(ctx, body, problem, "invalid_requests_refused")
    return body, param


def _rerecord(ctx: CheckContext, body: dict[str, Any], problem: str, check: str) -> CassetteError:
    """The error for a recorded request the check cannot have drawn for this profile."""
    line = Call("POST", "/images/generations", body).request_line()
    return CassetteError(
        f"The cassette of request_shape.{check} [{ctx.endpoint.name}] recorded {line}, "
        f"which {problem} for profile {ctx.profile.name!r}: it was recorded for another "
        f"model or profile, or by another version of pytest-imagegen. Delete this check's "
        f"cassette ({ctx.endpoint.name}/conformance/request_shape.{check}.yaml in the "
        f"cassette_dir) and record it again with:\n"
        f"    pytest --imagegen --imagegen-record-mode=once -k {check}\n"
        f"(mode 'all' would keep the recorded requests this check no longer sends)"
    )


@check("request_shape")
def rejects_unsupported_quality(ctx: CheckContext) -> None:
    """A quality the profile does not offer (e.g. "standard" for a GPT-image model) is
    refused with invalid_request naming param "quality".

    Fails with: "the endpoint accepted {"quality": "standard"} (HTTP 200); gpt-image-1 must
    refuse it with invalid_request naming param 'quality'" (or "... refused as <category>" /
    "... names param None instead of 'quality'").
    """
    _strict_profile(ctx)
    value = next((q for q in _QUALITY_CANDIDATES if q not in ctx.profile.qualities), None)
    if value is None:
        ctx.skip(f"profile {ctx.profile.name!r} accepts every known quality")
    _expect_refusal(ctx, "quality", quality=value)


@check("request_shape")
def rejects_unsupported_size(ctx: CheckContext) -> None:
    """A size the profile does not offer (e.g. "1792x1024" for gpt-image-1) is refused with
    invalid_request naming param "size".

    Fails with: "the endpoint accepted {"size": "1792x1024"} (HTTP 200); gpt-image-1 must
    refuse it with invalid_request naming param 'size'".
    """
    _strict_profile(ctx)
    value = next((s for s in _SIZE_CANDIDATES if not ctx.profile.supports_size(s)), None)
    if value is None:
        ctx.skip(f"profile {ctx.profile.name!r} accepts every size tried")
    _expect_refusal(ctx, "size", size=value)


@check("request_shape")
def rejects_response_format(ctx: CheckContext) -> None:
    """``response_format`` sent to a model that does not take it (the GPT-image models) is
    refused with invalid_request naming param "response_format".

    Fails with: "the endpoint accepted {"response_format": "b64_json"} (HTTP 200);
    gpt-image-1 must refuse it with invalid_request naming param 'response_format'" (through
    a gateway whose upstream never received it: "the gateway dropped {"response_format":
    "b64_json"}: ...").
    """
    _strict_profile(ctx)
    if ctx.profile.accepts("response_format"):
        ctx.skip(f"profile {ctx.profile.name!r} accepts response_format")
    _expect_refusal(ctx, "response_format", response_format="b64_json")


@check("request_shape")
def rejects_n_out_of_range(ctx: CheckContext) -> None:
    """``n`` one above the profile's maximum (2 for dall-e-3, 11 for the others) is refused
    with invalid_request naming param "n".

    Fails with: "the endpoint accepted {"n": 11} (HTTP 200); gpt-image-1 must refuse it with
    invalid_request naming param 'n'".
    """
    _strict_profile(ctx)
    _expect_refusal(ctx, "n", n=ctx.profile.n_max + 1)


@check("request_shape")
def rejects_empty_prompt(ctx: CheckContext) -> None:
    """An empty prompt is refused with invalid_request naming param "prompt".

    Fails with: "the endpoint accepted {"prompt": ""} (HTTP 200); gpt-image-1 must refuse it
    with invalid_request naming param 'prompt'".
    """
    _strict_profile(ctx)
    _expect_refusal(ctx, "prompt", prompt="")
