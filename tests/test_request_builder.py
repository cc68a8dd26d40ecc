"""Request building and validation: OpenAI's codes and wording, every violation at once."""

from __future__ import annotations

import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_imagegen.errors import ConfigError
from pytest_imagegen.profiles import PROFILES, make_custom_profile
from pytest_imagegen.request_builder import (
    RequestShapeError,
    Violation,
    build_request,
    check_request,
    format_supported,
    validate_request,
    validate_sdk_types,
)
from pytest_imagegen.strategies import image_requests

G1, G2, D3, D2, CUSTOM = (
    PROFILES["gpt-image-1"],
    PROFILES["gpt-image-2"],
    PROFILES["dall-e-3"],
    PROFILES["dall-e-2"],
    PROFILES["custom"],
)


def one(violations: list[Violation]) -> Violation:
    assert len(violations) == 1, violations
    return violations[0]


# --------------------------------------------------------------------------- OpenAI wording


def test_quality_standard_on_gpt_image_matches_openai():
    v = one(
        validate_request({"model": "gpt-image-1", "prompt": "a cat", "quality": "standard"}, G1)
    )
    assert (v.param, v.code) == ("quality", "invalid_value")
    assert v.message == (
        "Invalid value: 'standard'. Supported values are: 'low', 'medium', 'high', and 'auto'."
    )
    assert v.supported == ("low", "medium", "high", "auto")
    assert v.error_body() == {
        "error": {
            "message": v.message,
            "type": "invalid_request_error",
            "param": "quality",
            "code": "invalid_value",
        }
    }


def test_response_format_on_gpt_image_is_an_unknown_parameter():
    v = one(
        validate_request({"model": "gpt-image-1.5", "prompt": "x", "response_format": "url"}, G1)
    )
    assert (v.param, v.code, v.message) == (
        "response_format",
        "unknown_parameter",
        "Unknown parameter: 'response_format'.",
    )


def test_missing_prompt():
    v = one(validate_request({"model": "gpt-image-1"}, G1))
    assert (v.param, v.code, v.message) == (
        "prompt",
        "missing_required_parameter",
        "Missing required parameter: 'prompt'.",
    )


def test_n_above_max_for_dall_e_3():
    v = one(validate_request({"model": "dall-e-3", "prompt": "x", "n": 2}, D3))
    assert (v.param, v.code) == ("n", "integer_above_max_value")
    assert v.message == (
        "Invalid 'n': integer above maximum value. Expected a value <= 1, but got 2 instead."
    )


def test_n_below_min_and_wrong_type():
    v = one(validate_request({"model": "gpt-image-1", "prompt": "x", "n": 0}, G1))
    assert v.code == "integer_below_min_value"
    assert v.message == (
        "Invalid 'n': integer below minimum value. Expected a value >= 1, but got 0 instead."
    )
    for bad, got in (("2", "a string"), (True, "a boolean"), (1.5, "a number"), ([1], "an array")):
        v = one(validate_request({"model": "gpt-image-1", "prompt": "x", "n": bad}, G1))
        assert (v.code, v.message) == (
            "invalid_type",
            f"Invalid type for 'n': expected an integer, but got {got} instead.",
        )


def test_size_messages_list_supported_values():
    v = one(validate_request({"model": "gpt-image-1", "prompt": "x", "size": "1254x836"}, G1))
    assert v.message == (
        "Invalid value: '1254x836'. Supported values are: '1024x1024', '1024x1536', "
        "'1536x1024', and 'auto'."
    )
    v = one(validate_request({"model": "dall-e-2", "prompt": "x", "size": "1536x1024"}, D2))
    assert v.message == (
        "Invalid value: '1536x1024'. Supported values are: '256x256', '512x512', and '1024x1024'."
    )


def test_rule_size_message_says_which_constraint_failed():
    v = one(validate_request({"model": "gpt-image-2", "prompt": "x", "size": "1000x1000"}, G2))
    assert (v.param, v.code) == ("size", "invalid_value")
    assert "multiples of 16" in v.message and "3840x2160" in v.message and "'auto'" in v.message
    assert validate_request({"model": "gpt-image-2", "prompt": "x", "size": "3840x2160"}, G2) == []


def test_prompt_empty_and_too_long():
    v = one(validate_request({"model": "dall-e-2", "prompt": ""}, D2))
    assert (v.code, v.message) == (
        "empty_string",
        "Invalid 'prompt': empty string. Expected a string with minimum length 1, but got an "
        "empty string instead.",
    )
    assert validate_request({"model": "dall-e-2", "prompt": "x" * 1000}, D2) == []
    v = one(validate_request({"model": "dall-e-2", "prompt": "x" * 1001}, D2))
    assert (v.code, v.message) == (
        "string_above_max_length",
        "Invalid 'prompt': string too long. Expected a string with maximum length 1000, but got "
        "a string with length 1001 instead.",
    )
    # Characters, not bytes: 4000 Chinese characters fit dall-e-3's limit.
    assert validate_request({"model": "dall-e-3", "prompt": "猫" * 4000}, D3) == []
    v = one(validate_request({"model": "dall-e-3", "prompt": 7}, D3))
    assert v.message == "Invalid type for 'prompt': expected a string, but got an integer instead."


def test_format_supported():
    assert format_supported(["standard"]) == "'standard'"
    assert format_supported(["standard", "hd"]) == "'standard' and 'hd'"
    assert format_supported(["a", "b", "c"]) == "'a', 'b', and 'c'"
    assert format_supported([]) == ""


# --------------------------------------------------------------------------- model


def test_model_is_required_and_never_a_chat_model():
    v = one(validate_request({"prompt": "x"}, G1))
    assert (v.param, v.code, v.message) == (
        "model",
        "missing_required_parameter",
        "Missing required parameter: 'model'.",
    )
    assert one(validate_request({"model": None, "prompt": "x"}, G1)).param == "model"
    assert one(validate_request({"model": " ", "prompt": "x"}, G1)).code == "empty_string"
    v = one(validate_request({"model": "gpt-4o-all", "prompt": "x"}, G1))
    assert (v.param, v.code) == ("model", "invalid_value")
    assert "'gpt-4o-all' is a chat model" in v.message and "'gpt-image-1'" in v.message
    # Relay aliases and unknown deployment names are fine: the profile decides the rules.
    for model in ("gpt-image-1-vip", "azure/my-images", "dall-e-3"):
        assert validate_request({"model": model, "prompt": "x"}, G1) == []


# --------------------------------------------------------------------------- everything at once


def test_every_violation_is_reported():
    body = {
        "model": "gpt-4o",
        "prompt": "",
        "n": 11,
        "quality": "hd",
        "size": "999x999",
        "response_format": "url",
        "style": "vivid",
        "output_format": "bmp",
        "background": "none",
        "moderation": "high",
        "output_compression": 101,
        "stream": "yes",
        "partial_images": 4,
        "user": None,
        "seed": 1,
    }
    violations = validate_request(body, G1)
    params = [v.param for v in violations]
    assert sorted(params) == sorted(
        [
            "response_format",
            "style",
            "seed",
            "prompt",
            "model",
            "n",
            "quality",
            "size",
            "output_format",
            "background",
            "moderation",
            "output_compression",
            "stream",
            "partial_images",
            "user",
        ]
    )
    assert len(set(params)) == len(params)
    codes = {v.param: v.code for v in violations}
    assert codes["seed"] == codes["style"] == "unknown_parameter"
    assert codes["output_compression"] == "integer_above_max_value"
    assert codes["partial_images"] == "integer_above_max_value"
    assert codes["stream"] == codes["user"] == "invalid_type"


def test_dalle_rejects_gpt_image_parameters_as_unknown():
    body = {
        "model": "dall-e-3",
        "prompt": "x",
        "output_format": "png",
        "background": "auto",
        "moderation": "low",
        "stream": False,
        "output_compression": 100,
    }
    violations = validate_request(body, D3)
    assert {v.param for v in violations} == {
        "output_format",
        "background",
        "moderation",
        "stream",
        "output_compression",
    }
    assert {v.code for v in violations} == {"unknown_parameter"}
    assert (
        one(validate_request({"model": "dall-e-2", "prompt": "x", "style": "vivid"}, D2)).param
        == "style"
    )


def test_nullable_fields_accept_null_but_user_does_not():
    body = {
        "model": "gpt-image-1",
        "prompt": "x",
        **dict.fromkeys(
            (
                "n",
                "quality",
                "size",
                "output_format",
                "output_compression",
                "background",
                "moderation",
                "stream",
                "partial_images",
            )
        ),
    }
    assert validate_request(body, G1) == []
    v = one(validate_request({"model": "gpt-image-1", "prompt": "x", "user": None}, G1))
    assert (v.param, v.code) == ("user", "invalid_type")


def test_output_compression_rules():
    def check(**params):
        return validate_request({"model": "gpt-image-1", "prompt": "x", **params}, G1)

    assert check(output_format="jpeg", output_compression=0) == []
    assert check(output_format="webp", output_compression=100) == []
    assert check(output_compression=100) == []  # the default, harmless with PNG
    v = one(check(output_compression=50))
    assert (v.param, v.message) == (
        "output_compression",
        "Compression less than 100 is not supported for PNG output format.",
    )
    assert one(check(output_format="png", output_compression=99)).param == "output_compression"
    v = one(check(output_format="jpeg", output_compression=-1))
    assert v.code == "integer_below_min_value"
    # A bad output_format is one defect, not two.
    assert one(check(output_format="gif", output_compression=50)).param == "output_format"


def test_transparent_background_needs_png_or_webp():
    def check(**params):
        return validate_request({"model": "gpt-image-1", "prompt": "x", **params}, G1)

    assert check(background="transparent") == []
    assert check(background="transparent", output_format="webp") == []
    v = one(check(background="transparent", output_format="jpeg"))
    assert v.param == "background" and "'png' or 'webp'" in v.message and "'jpeg'" in v.message


def test_streaming_parameters():
    assert (
        validate_request(
            {"model": "gpt-image-1", "prompt": "x", "stream": True, "partial_images": 3}, G1
        )
        == []
    )
    v = one(validate_request({"model": "gpt-image-1", "prompt": "x", "partial_images": -1}, G1))
    assert v.code == "integer_below_min_value"


def test_non_mapping_body():
    v = one(validate_request(["prompt"], G1))  # type: ignore[arg-type]
    assert (v.param, v.code) == (None, "invalid_type")
    assert "expected an object, but got an array" in v.message
    assert str(v) == v.message


def test_custom_profile_extras_and_sdk_only_keys():
    assert (
        validate_request(
            {
                "model": "m",
                "prompt": "x",
                "complexity": "high",
                "frame_count": 9,
                "svg": {"model": "gpt-5"},
            },
            CUSTOM,
        )
        == []
    )
    assert (
        one(validate_request({"model": "m", "prompt": "x", "frame_count": 17}, CUSTOM)).param
        == "frame_count"
    )
    assert (
        one(validate_request({"model": "m", "prompt": "x", "complexity": "max"}, CUSTOM)).param
        == "complexity"
    )
    vendor = make_custom_profile("sd-relay", parent="custom", extra_params=["seed", "steps"])
    assert validate_request({"model": "sdxl", "prompt": "x", "seed": 1, "steps": 30}, vendor) == []
    assert (
        one(validate_request({"model": "sdxl", "prompt": "x", "seed": 1}, CUSTOM)).param == "seed"
    )
    # safety_identifier is taken by GPT-image models, not by the retired DALL-E ones.
    assert (
        validate_request({"model": "gpt-image-1", "prompt": "x", "safety_identifier": "h"}, G1)
        == []
    )
    assert one(
        validate_request({"model": "dall-e-3", "prompt": "x", "safety_identifier": "h"}, D3)
    ).param == ("safety_identifier")


# --------------------------------------------------------------------------- build_request


def test_build_request_leaves_out_none_and_unaccepted_keys():
    body = build_request(
        G1,
        model="gpt-image-1",
        prompt="a cat",
        quality="high",
        size=None,
        response_format="b64_json",
        style="vivid",
        n=2,
    )
    assert body == {"model": "gpt-image-1", "prompt": "a cat", "quality": "high", "n": 2}
    body = build_request(D3, model="dall-e-3", prompt="a cat", style="natural", background="auto")
    assert body == {"model": "dall-e-3", "prompt": "a cat", "style": "natural"}


def test_build_request_raises_listing_every_violation():
    with pytest.raises(RequestShapeError) as info:
        build_request(D3, model="dall-e-3", prompt="a cat", n=2, quality="high", size="auto")
    err = info.value
    assert isinstance(err, ConfigError)
    assert [v.param for v in err.violations] == ["n", "quality", "size"]
    text = str(err)
    assert "profile 'dall-e-3'" in text
    assert "quality: Invalid value: 'high'. Supported values are: 'standard' and 'hd'." in text
    assert "Change the parameter(s) named" in text
    assert err.summary.startswith("n: Invalid 'n'")


def test_build_request_rejects_unknown_keys_with_a_suggestion():
    with pytest.raises(RequestShapeError) as info:
        build_request(G1, model="gpt-image-1", prompt="a cat", qualty="high")
    v = one(list(info.value.violations))
    assert (v.param, v.code) == ("qualty", "unknown_parameter")
    assert "Did you mean 'quality'?" in str(info.value)


def test_build_request_rejects_quality_standard_on_gpt_image():
    with pytest.raises(RequestShapeError, match="Invalid value: 'standard'"):
        build_request(G2, model="gpt-image-2", prompt="a cat", quality="standard")


@given(data=st.data(), name=st.sampled_from(sorted(PROFILES)))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_build_request_round_trips_valid_bodies(data, name):
    profile = PROFILES[name]
    body = data.draw(image_requests(profile=profile))
    intent = {k: v for k, v in body.items() if k not in ("model", "prompt")}
    built = build_request(profile, model=body["model"], prompt=body["prompt"], **intent)
    assert built == {k: v for k, v in body.items() if v is not None}


# --------------------------------------------------------------------------- SDK types


def test_sdk_types_accept_valid_bodies():
    assert (
        validate_sdk_types({"model": "gpt-image-1", "prompt": "a cat", "n": 2, "quality": "high"})
        == []
    )
    streaming = {"model": "gpt-image-1", "prompt": "a cat", "stream": True, "partial_images": 2}
    assert validate_sdk_types(streaming) == []
    assert validate_sdk_types({"prompt": "a cat", "size": "999x1", "model": "gpt-4o"}) == []


def test_sdk_types_are_strict_and_forbid_extra_keys():
    violations = validate_sdk_types(
        {"prompt": "a cat", "foo": "bar", "quality": "ultra", "n": "2", "size": 1024}
    )
    by_param = {v.param: v for v in violations}
    assert set(by_param) == {"foo", "quality", "n", "size"}
    assert by_param["foo"].code == "unknown_parameter"
    assert by_param["n"].code == "invalid_type"  # strict: no "2" -> 2 coercion
    assert by_param["size"].code == "invalid_type"
    quality = by_param["quality"]
    assert quality.code == "invalid_value"
    from openai.types import image_generate_params as igp

    hint = typing.get_type_hints(igp.ImageGenerateParamsNonStreaming)["quality"]
    literal = next(a for a in typing.get_args(hint) if typing.get_args(a))
    assert set(typing.get_args(literal)) == set(quality.supported)
    assert {"xhigh", "standard", "auto"} <= set(quality.supported)


def test_sdk_types_missing_prompt_and_wrong_stream():
    v = one(validate_sdk_types({"model": "gpt-image-1"}))
    assert (v.param, v.code) == ("prompt", "missing_required_parameter")
    assert one(validate_sdk_types({"prompt": "x", "stream": "yes"})).param == "stream"
    assert one(validate_sdk_types(["x"])).code == "invalid_type"  # type: ignore[arg-type]


def test_check_request_merges_without_duplicates():
    body = {"model": "gpt-image-1", "prompt": "x", "quality": "ultra", "foo": 1, "n": 20}
    violations = check_request(body, G1)
    assert sorted(v.param for v in violations) == ["foo", "n", "quality"]
    # Values the SDK knows but the profile does not are the profile's call.
    assert (
        one(check_request({"model": "gpt-image-1", "prompt": "x", "quality": "xhigh"}, G1)).param
        == "quality"
    )
    # Keys the profile takes without checks are still unknown to the SDK.
    vendor = make_custom_profile("sd-relay", parent="custom", extra_params=["seed"])
    assert one(check_request({"model": "sdxl", "prompt": "x", "seed": 3}, vendor)).param == "seed"
