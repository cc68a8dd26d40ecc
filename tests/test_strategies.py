"""Strategies, and the issue's request-shape properties against the official spec file."""

from __future__ import annotations

import json

import _support
import jsonschema
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from pytest_imagegen.errors import Category
from pytest_imagegen.profiles import PROFILES, canonical_model, model_kind, resolve_profile
from pytest_imagegen.request_builder import check_request, validate_request
from pytest_imagegen.strategies import (
    CATEGORIES,
    DEFECTS,
    applicable_defects,
    error_responses,
    image_requests,
    invalid_image_requests,
    model_names,
    prompts,
    sizes,
)

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def spec_validator() -> jsonschema.Draft202012Validator:
    return _support.spec_validator("CreateImageRequest")


def test_spec_validator_is_live(spec_validator):
    """The schema really constrains bodies, so the properties below can fail."""
    assert spec_validator.is_valid({"prompt": "a cat", "model": "gpt-image-1"})
    assert spec_validator.is_valid({"prompt": "a cat", "n": None, "quality": None})
    assert spec_validator.is_valid({"prompt": "a cat", "partial_images": None})
    for bad in (
        {"model": "gpt-image-1"},
        {"prompt": "a cat", "n": 0},
        {"prompt": "a cat", "n": 11},
        {"prompt": "a cat", "quality": "ultra"},
        {"prompt": "a cat", "output_format": "gif"},
        {"prompt": "a cat", "partial_images": 4},
        {"prompt": "a cat", "user": None},
        {"prompt": 1},
    ):
        assert not spec_validator.is_valid(bad), bad


# --------------------------------------------------------------------------- request shape


@pytest.mark.parametrize("name", sorted(PROFILES))
@given(data=st.data())
@PROPERTY
def test_valid_requests_pass_profile_sdk_and_spec(spec_validator, name, data):
    profile = PROFILES[name]
    body = data.draw(image_requests(profile=profile))
    assert validate_request(body, profile) == []
    assert check_request(body, profile) == []
    errors = [e.message for e in spec_validator.iter_errors(body)]
    assert errors == []
    json.dumps(body)  # a wire payload
    if name != "custom":
        assert resolve_profile(body["model"]) is profile


@pytest.mark.parametrize("name", sorted(PROFILES))
@given(data=st.data())
@PROPERTY
def test_invalid_requests_are_rejected_naming_the_param(name, data):
    profile = PROFILES[name]
    body, param = data.draw(invalid_image_requests(profile=profile))
    assert {v.param for v in validate_request(body, profile)} == {param}
    assert {v.param for v in check_request(body, profile)} == {param}


_PAIRS = [(name, d) for name in sorted(PROFILES) for d in applicable_defects(profile=name)]


@pytest.mark.parametrize(("name", "defect"), _PAIRS)
@given(data=st.data())
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_defect_on_every_profile(name, defect, data):
    profile = PROFILES[name]
    body, param = data.draw(invalid_image_requests(profile=profile, defects=[defect]))
    assert {v.param for v in validate_request(body, profile)} == {param}


def test_defect_coverage_is_meaningful():
    assert set(applicable_defects(profile="custom")) == set(DEFECTS) - {"param_not_accepted"}
    assert "param_not_accepted" in applicable_defects(profile="gpt-image-1")
    assert "transparent_jpeg" not in applicable_defects(profile="dall-e-3")
    assert "style" in applicable_defects(profile=PROFILES["dall-e-3"])
    assert "style" not in applicable_defects(profile="dall-e-2")


@given(data=st.data())
@settings(max_examples=30, deadline=None)
def test_response_format_defect_on_gpt_image_is_the_real_world_bug(data):
    strategy = invalid_image_requests(profile="gpt-image-1", defects=["response_format"])
    body, param = data.draw(strategy)
    assert param == "response_format" and body["response_format"] in ("b64_json", "url")
    body, param = data.draw(invalid_image_requests(profile="gpt-image-1", defects=["quality"]))
    assert param == "quality"
    assert body["quality"] not in PROFILES["gpt-image-1"].qualities


@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_unknown_parameter_is_never_planted_as_null(data):
    """A null unknown key is the same as an absent one (gateways strip it): requiring a
    refusal of it was a false alarm on every LiteLLM run."""
    strategy = invalid_image_requests(profile="gpt-image-1", defects=["unknown_parameter"])
    body, param = data.draw(strategy)
    assert param in body and body[param] is not None


def test_unknown_parameter_takes_other_values_than_null():
    # Hypothesis' simplest draw, the one every derandomized run sends first, was the null.
    strategy = invalid_image_requests(profile="gpt-image-1", defects=["unknown_parameter"])
    # The generate phase starts from the simplest choice sequence; shrinking from it only
    # spends time (half a minute) confirming there is nothing simpler.
    simplest = find(
        strategy, lambda case: True, settings=settings(database=None, phases=[Phase.generate])
    )
    assert simplest[0][simplest[1]] is not None


@given(image_requests(profile="dall-e-3", model="my-dalle"))
@settings(max_examples=20)
def test_model_can_be_fixed(body):
    assert body["model"] == "my-dalle"
    assert "n" not in body or body["n"] in (None, 1)


def test_invalid_arguments():
    with pytest.raises(InvalidArgument, match="Known profiles"):
        image_requests(profile="gpt-image-9")
    with pytest.raises(InvalidArgument):
        image_requests(profile=3)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="unknown defects"):
        invalid_image_requests(profile="gpt-image-1", defects=["nope"])
    with pytest.raises(InvalidArgument, match="applies to profile"):
        invalid_image_requests(profile="dall-e-2", defects=["style"])
    with pytest.raises(InvalidArgument):
        model_names(kind="vision")
    with pytest.raises(InvalidArgument):
        prompts(min_size=5, max_size=4)
    with pytest.raises(InvalidArgument):
        error_responses(category="teapot")


# --------------------------------------------------------------------------- prompts


@given(data=st.data(), bounds=st.tuples(st.integers(1, 300), st.integers(0, 300)))
@PROPERTY
def test_prompts_respect_bounds_and_are_never_blank(data, bounds):
    lo, extra = bounds
    prompt = data.draw(prompts(min_size=lo, max_size=lo + extra))
    assert lo <= len(prompt) <= lo + extra
    assert prompt.strip()
    assert not prompt[-1].isspace()
    prompt.encode("utf-8")  # no lone surrogates


@given(data=st.data())
@settings(max_examples=5, deadline=None)
def test_prompts_reach_the_profile_limit(data):
    long = data.draw(prompts(min_size=32_000, max_size=32_000))
    assert len(long) == 32_000 and long.strip()


def test_prompts_include_chinese_and_emoji():
    def has_cjk(p: str) -> bool:
        return any("\u4e00" <= ch <= "\u9fff" for ch in p)

    find(prompts(), has_cjk, settings=settings(database=None))
    find(prompts(), lambda p: any(ord(ch) > 0xFFFF for ch in p), settings=settings(database=None))


def test_blank_prompts_only_when_asked():
    assert find(prompts(min_size=0), lambda p: p == "", settings=settings(database=None)) == ""
    blank = find(
        prompts(allow_blank=True), lambda p: not p.strip(), settings=settings(database=None)
    )
    assert blank and not blank.strip()


# --------------------------------------------------------------------------- sizes, names


@pytest.mark.parametrize("name", sorted(PROFILES))
@given(data=st.data())
@settings(max_examples=50)
def test_sizes_are_supported(name, data):
    profile = PROFILES[name]
    assert profile.supports_size(data.draw(sizes(profile=profile)))


def test_rule_sizes_go_beyond_the_list():
    g2 = PROFILES["gpt-image-2"]
    size = find(sizes(profile=g2), lambda s: s not in g2.sizes, settings=settings(database=None))
    assert g2.supports_size(size)
    big = find(
        sizes(profile=g2),
        lambda s: s not in g2.sizes and int(s.split("x")[0]) > 2560,
        settings=settings(database=None),
    )
    assert g2.supports_size(big)


@pytest.mark.parametrize("kind", ["image", "chat", "unknown"])
@given(data=st.data())
@settings(max_examples=100)
def test_model_names_have_their_kind(kind, data):
    name = data.draw(model_names(kind=kind))
    assert model_kind(name) == kind


def test_model_names_include_relay_decorations():
    find(
        model_names(kind="chat"),
        lambda m: m.lower().endswith("-all"),
        settings=settings(database=None),
    )
    find(
        model_names(kind="image"),
        lambda m: "/" in m and canonical_model(m) is not None,
        settings=settings(database=None),
    )


# --------------------------------------------------------------------------- error responses

_STATUSES = {
    "authentication": {401},
    "permission": {403},
    "quota": {400, 401, 403, 429},
    "rate_limit": {429},
    "timeout": {408, 504, 524},
    "network": {500, 521, 523, 525},
    "server": {200, 500, 502, 503},
    "model_not_found": {400, 404, 503},
    "invalid_request": {400},
    "content_policy": {400},
    "malformed_response": {200},
    "unknown": {301, 302, 418},
}


def test_categories_match_the_design():
    assert set(CATEGORIES) == {c.value for c in Category} == set(_STATUSES)


@pytest.mark.parametrize("category", CATEGORIES)
@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_error_responses_are_well_formed(category, data):
    status, headers, body = data.draw(error_responses(category=category))
    assert status in _STATUSES[category]
    assert isinstance(body, bytes)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items())
    lower = {k.lower(): v for k, v in headers.items()}
    ctype = lower.get("content-type", "")
    if "retry-after" in lower:
        assert lower["retry-after"].isdigit()
    if ctype.startswith("application/json") and category != "malformed_response":
        envelope = json.loads(body)
        assert set(envelope) == {"error"} and isinstance(envelope["error"], dict)
        assert "message" in envelope["error"]
    if ctype.startswith("text/html") and body:
        assert b"<html" in body.lower()


def test_error_responses_accept_category_members_and_none():
    find(
        error_responses(category=Category.QUOTA),
        lambda t: t[0] == 429,
        settings=settings(database=None),
    )
    # A stateless predicate over a list of draws: hypothesis replays and shrinks it.
    find(
        st.lists(error_responses(), max_size=60),
        lambda draws: len({status for status, _, _ in draws}) >= 6,
        # Finding one such list is the point; shrinking it would only cost time.
        settings=settings(database=None, max_examples=500, phases=[Phase.generate]),
    )


def test_relay_envelopes_are_chinese_with_request_ids():
    status, _, body = find(
        error_responses(category="model_not_found"),
        lambda t: "无可用渠道".encode() in t[2],
        settings=settings(database=None),
    )
    assert status == 503
    error = json.loads(body)["error"]
    assert "(request id: " in error["message"]
    assert error["type"] in ("one_api_error", "new_api_error")


def _shape(status: int, body: bytes) -> tuple:
    try:
        error = json.loads(body).get("error", {})
    except (ValueError, AttributeError):
        return status, None, None
    return status, error.get("type"), error.get("code")


@pytest.mark.parametrize("case", _support.real_error_cases(), ids=lambda c: c["id"])
def test_every_real_error_shape_can_be_drawn_for_its_category(case):
    """Faithful to the sources: each recorded body's (status, type, code) is reproduced."""
    wanted = _shape(case["status"], case["body"].encode())
    find(
        error_responses(category=case["expect"]["category"]),
        lambda t: _shape(t[0], t[2]) == wanted,
        settings=settings(database=None, max_examples=2000),
    )
