"""Profiles: capability data, name resolution, chat-model recognition, prices."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_imagegen.errors import ConfigError
from pytest_imagegen.profiles import (
    GPT_IMAGE_2_SIZE_RULE,
    PROFILES,
    Profile,
    SizeRule,
    UnknownProfileError,
    canonical_model,
    get_profile,
    is_chat_model,
    make_custom_profile,
    model_kind,
    parse_size,
    resolve_profile,
)

BUILTIN = (
    "gpt-image-2",
    "gpt-image-1.5",
    "gpt-image-1",
    "gpt-image-1-mini",
    "dall-e-3",
    "dall-e-2",
)


def test_all_profiles_present():
    assert set(PROFILES) == {*BUILTIN, "custom"}
    for name, profile in PROFILES.items():
        assert profile.name == name
        assert profile.supports_size(profile.default_size)
        assert not profile.qualities or profile.default_quality in profile.qualities
        hash(profile)  # usable as a dict key / in sets despite the prices mapping


def test_acceptance_command_prints_profile_and_kind():
    code = (
        "import pytest_imagegen.profiles as p; "
        "print(p.resolve_profile('gpt-image-1-vip').name, p.model_kind('gpt-4o-all'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "gpt-image-1 chat"


def test_importing_profiles_and_request_builder_stays_light():
    code = (
        "import sys, pytest_imagegen.profiles, pytest_imagegen.request_builder; "
        "heavy = {'openai', 'httpx2', 'vcr', 'PIL', 'hypothesis'} & set(sys.modules); "
        "print(sorted(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- capabilities


@pytest.mark.parametrize(
    "name", ["gpt-image-2", "gpt-image-1.5", "gpt-image-1", "gpt-image-1-mini"]
)
def test_gpt_image_capabilities(name):
    p = PROFILES[name]
    assert p.family == "gpt-image"
    assert p.qualities == ("low", "medium", "high", "auto")
    assert p.n_max == 10
    assert p.prompt_max_chars == 32_000
    assert not p.accepts("response_format")  # "Unknown parameter: 'response_format'."
    assert not p.accepts("style")
    assert p.default_response_format == "b64_json"
    for param in ("output_format", "output_compression", "background", "moderation", "stream"):
        assert p.accepts(param), param
    assert p.returns_usage and not p.returns_revised_prompt


def test_dalle_capabilities():
    d3, d2 = PROFILES["dall-e-3"], PROFILES["dall-e-2"]
    assert d3.n_max == 1 and d2.n_max == 10
    assert d3.qualities == ("standard", "hd") and d2.qualities == ("standard",)
    assert d3.sizes == ("1024x1024", "1792x1024", "1024x1792")
    assert d2.sizes == ("256x256", "512x512", "1024x1024")
    assert d3.accepts("style") and not d2.accepts("style")
    for p in (d2, d3):
        assert p.accepts("response_format") and p.default_response_format == "url"
        assert not p.accepts("output_format") and not p.accepts("background")
        assert not p.accepts("stream") and not p.accepts("moderation")
    assert (d3.prompt_max_chars, d2.prompt_max_chars) == (4000, 1000)
    assert d3.returns_revised_prompt and not d2.returns_revised_prompt


def test_custom_profile_is_lenient():
    c = PROFILES["custom"]
    assert c.family == "custom"
    assert {"low", "medium", "high", "auto", "standard", "hd"} <= set(c.qualities)
    assert c.n_max == 10
    for param in ("response_format", "style", "output_format", "background", "complexity"):
        assert c.accepts(param), param
    for size in ("1234x567", "64x64", "16384x16384", "auto", "1792x1024"):
        assert c.supports_size(size), size
    assert not c.supports_size("16385x10")
    assert not c.accepts("seed")


def test_allowed_values_follow_openai_message_order():
    assert PROFILES["gpt-image-1"].allowed_values("size") == (
        "1024x1024",
        "1024x1536",
        "1536x1024",
        "auto",
    )
    assert PROFILES["gpt-image-1"].allowed_values("quality") == ("low", "medium", "high", "auto")
    assert PROFILES["dall-e-3"].allowed_values("style") == ("vivid", "natural")
    assert PROFILES["gpt-image-1"].allowed_values("n") == ()


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("size", "ok"),
    [
        ("auto", True),
        ("1024x1024", True),
        ("1536x864", True),
        ("3840x2160", True),
        ("2160x3840", True),
        ("3840x1280", True),  # exactly 3:1
        ("1024x640", True),  # exactly the minimum pixel count
        ("1000x1000", False),  # not multiples of 16
        ("3856x2160", False),  # too long
        ("2176x2176", False),  # short side above 2160
        ("3840x1264", False),  # aspect just over 3:1
        ("512x512", False),  # too few pixels
        ("1024X1024", False),
        ("1024", False),
        ("", False),
    ],
)
def test_gpt_image_2_size_rule(size, ok):
    assert PROFILES["gpt-image-2"].supports_size(size) is ok


def test_listed_size_profiles_reject_rule_sizes():
    assert not PROFILES["gpt-image-1"].supports_size("1536x864")
    assert not PROFILES["gpt-image-1.5"].supports_size("2048x2048")
    assert not PROFILES["dall-e-3"].supports_size("auto")
    assert not PROFILES["dall-e-2"].supports_size("1536x1024")


def test_size_rule_reasons_name_the_broken_constraint():
    rule = GPT_IMAGE_2_SIZE_RULE
    assert rule.check(1024, 1024) is None
    assert "multiples of 16" in rule.check(1000, 1000)
    assert "aspect ratio" in rule.check(3840, 1264)
    assert "larger than the maximum 3840x2160" in rule.check(4096, 2160)
    assert "fewer than the minimum 655360" in rule.check(512, 512)
    assert "positive" in rule.check(0, 1024)
    assert "multiples of 16" in rule.describe() and "1:3" in rule.describe()


@given(w=st.integers(1, 5000), h=st.integers(1, 5000))
@settings(max_examples=300)
def test_size_rule_matches_its_definition(w, h):
    expected = (
        w % 16 == 0
        and h % 16 == 0
        and max(w, h) / min(w, h) <= 3
        and max(w, h) <= 3840
        and min(w, h) <= 2160
        and w * h >= 655_360
    )
    assert (GPT_IMAGE_2_SIZE_RULE.check(w, h) is None) is expected
    assert PROFILES["gpt-image-2"].supports_size(f"{w}x{h}") is expected


def test_parse_size():
    assert parse_size("1536x1024") == (1536, 1024)
    for bad in ("auto", "0x5", "1024X1024", " 1x1", "1x1 ", "-1x5", None, 1024):
        assert parse_size(bad) is None


# --------------------------------------------------------------------------- resolution


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-image-1", "gpt-image-1"),
        ("gpt-image-1-vip", "gpt-image-1"),
        ("openai/gpt-image-1", "gpt-image-1"),
        ("azure/gpt-image-1.5", "gpt-image-1.5"),
        ("litellm/openai/gpt-image-1-mini", "gpt-image-1-mini"),
        ("gpt-image-1-mini-vip", "gpt-image-1-mini"),  # -mini is a real name, kept
        ("gpt-image-2-2026-04-21", "gpt-image-2"),
        ("gpt-image-2-all", "gpt-image-2"),
        ("GPT-Image-2-ALL", "gpt-image-2"),
        ("gpt-image-1-2025-04-15-vip", "gpt-image-1"),
        ("dall-e-3-20231106", "dall-e-3"),
        ("dall-e-3-2023-11-06", "dall-e-3"),
        ("dall-e-3-hd", "dall-e-3"),
        ("dalle-3", "dall-e-3"),
        ("DALL-E-2", "dall-e-2"),
        ("openrouter/openai/gpt-image-1:free", "gpt-image-1"),
        ("gpt_image_1", "gpt-image-1"),
    ],
)
def test_model_names_resolve_to_profiles(model, expected):
    assert canonical_model(model) == expected
    assert resolve_profile(model).name == expected
    assert model_kind(model) == "image"


@pytest.mark.parametrize(
    "model",
    ["gpt-image-2.5-flare", "chatgpt-image-latest", "gpt-image-3", "flux-1.1-pro", "my-deployment"],
)
def test_names_without_a_profile_resolve_to_none(model):
    assert canonical_model(model) is None
    assert resolve_profile(model) is None


def test_custom_is_never_matched_by_name():
    assert resolve_profile("custom") is None
    assert canonical_model("openai/custom-vip") is None


def test_explicit_profile_always_wins():
    assert resolve_profile("gpt-image-1-vip", profile="dall-e-3").name == "dall-e-3"
    assert resolve_profile("anything", profile="GPT-IMAGE-2").name == "gpt-image-2"
    assert resolve_profile("gpt-4o", profile="custom").name == "custom"


def test_unknown_explicit_profile_is_a_config_error_naming_the_known_ones():
    with pytest.raises(UnknownProfileError) as info:
        resolve_profile("gpt-image-1", profile="gpt-image-1-vip")
    assert isinstance(info.value, ConfigError) and isinstance(info.value, KeyError)
    message = str(info.value)
    assert "'gpt-image-1-vip'" in message and "Did you mean 'gpt-image-1'?" in message
    assert "gpt-image-2, gpt-image-1.5" in message
    with pytest.raises(KeyError, match="Known profiles"):
        get_profile("dalle3")


def test_custom_profiles_resolve_by_name_and_win():
    mine = make_custom_profile("flux-relay", parent="custom", sizes=["1024x1024"])
    override = make_custom_profile("gpt-image-1", parent="gpt-image-1", n_max=4)
    custom = {"flux-relay": mine, "gpt-image-1": override}
    assert resolve_profile("flux-relay", custom=custom) is mine
    assert resolve_profile("openai/FLUX-RELAY-vip", custom=custom) is mine
    assert resolve_profile("gpt-image-1-vip", custom=custom) is override
    assert resolve_profile("x", profile="flux-relay", custom=custom) is mine
    assert resolve_profile("gpt-image-1.5", custom=custom).name == "gpt-image-1.5"
    with pytest.raises(UnknownProfileError, match="flux-relay"):
        resolve_profile("x", profile="nope", custom=custom)


_decorations = st.tuples(
    st.sampled_from(["", "openai/", "azure/", "litellm/openai/", "OpenAI/"]),
    st.sampled_from(["", "-2026-04-21", "-20250415"]),
    st.lists(st.sampled_from(["-vip", "-all", "-svip", "-hd"]), max_size=2),
    st.booleans(),
)


@given(name=st.sampled_from(BUILTIN), deco=_decorations)
@settings(max_examples=200)
def test_any_decoration_resolves_back(name, deco):
    prefix, date, suffixes, upper = deco
    model = prefix + name + date + "".join(suffixes)
    model = model.upper() if upper else model
    assert canonical_model(model) == name
    assert model_kind(model) == "image"
    assert not is_chat_model(model)


# --------------------------------------------------------------------------- model kinds

CHAT = [
    "gpt-4o",
    "gpt-4o-all",
    "openai/gpt-4o-all",
    "gpt-4o-mini",
    "gpt-4o-image",  # relay alias served on chat completions
    "gpt-4o-image-vip",
    "gpt-5-image",
    "gpt-4.1-nano",
    "gpt-4-turbo",
    "gpt-3.5-turbo-0125",
    "gpt-5",
    "gpt-5.5-2026-04-23",
    "gpt-6-astra",
    "o1",
    "o3-mini",
    "o4-mini-2025-04-16",
    "chatgpt-4o-latest",
    "codex-mini-latest",
    "gpt-4o-audio-preview",
    "claude-sonnet-4-5",
    "anthropic/claude-3-5-sonnet-20241022",
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "models/gemini-2.0-flash",
    "deepseek-chat",
    "deepseek-ai/DeepSeek-V3",
    "qwen-max",
    "qwen-plus",
    "qwen-turbo",
    "qwen2.5-72b-instruct",
    "Qwen/Qwen3-235B-A22B",
    "qwq-32b",
    "qwen-vl-max",
    "llama-3.3-70b-instruct",
    "meta-llama/Llama-3.1-8B-Instruct",
    "mistral-large-latest",
    "mixtral-8x7b",
    "moonshot-v1-8k",
    "kimi-k2",
    "glm-4-plus",
    "glm-4.5",
    "chatglm_turbo",
    "doubao-1.5-pro-32k",
    "grok-3",
    "ernie-4.0-8k",
    "hunyuan-turbos-latest",
]
IMAGE = [
    "gpt-image-1",
    "gpt-image-2.5-flare",
    "gpt-image-2.6-sunburst-vip",
    "chatgpt-image-latest",
    "dall-e-2",
    "dall-e-4",
    "imagen-4.0-generate-001",
    "gemini-2.5-flash-image",
    "gemini-2.0-flash-preview-image-generation",
    "black-forest-labs/FLUX.1-schnell",
    "flux-kontext-pro",
    "stable-diffusion-3.5-large",
    "stabilityai/sdxl-turbo",
    "midjourney",
    "cogview-4",
    "cogview-3-plus",
    "qwen-image",
    "Qwen/Qwen-Image",
    "qwen-image-edit",
    "doubao-seedream-4-0-250828",
    "wanx2.1-t2i-turbo",
    "kolors",
    "ideogram-v3",
    "recraft-v3",
    "grok-2-image-1212",
    "hunyuan-image",
]
UNKNOWN = [
    "",
    "   ",
    "text-embedding-3-small",
    "gemini-embedding-001",
    "whisper-1",
    "tts-1-hd",
    "gpt-4o-mini-tts",
    "gpt-4o-transcribe",
    "gpt-4o-realtime-preview",
    "omni-moderation-latest",
    "sora-2",
    "davinci-002",
    "my-deployment",
    "azure/prod-images",
    "bge-m3",
]


@pytest.mark.parametrize("model", CHAT)
def test_chat_models(model):
    assert model_kind(model) == "chat"
    assert is_chat_model(model)
    assert resolve_profile(model) is None


@pytest.mark.parametrize("model", IMAGE)
def test_image_models(model):
    assert model_kind(model) == "image"
    assert not is_chat_model(model)


@pytest.mark.parametrize("model", UNKNOWN)
def test_unknown_is_honest(model):
    assert model_kind(model) == "unknown"
    assert not is_chat_model(model)


@pytest.mark.parametrize("value", [None, 42, b"gpt-4o"])
def test_non_strings_are_unknown(value):
    assert model_kind(value) == "unknown"
    assert canonical_model(value) is None
    assert resolve_profile(value) is None


def test_sdk_model_lists_agree():
    """Every ImageModel of the installed SDK is image, every ChatModel is chat."""
    import typing

    from openai.types import ImageModel
    from openai.types.shared import ChatModel

    for name in typing.get_args(ImageModel):
        assert model_kind(name) == "image", name
    for name in typing.get_args(ChatModel):
        assert model_kind(name) == "chat", name


# --------------------------------------------------------------------------- prices


@pytest.mark.parametrize(
    ("profile", "quality", "size", "usd"),
    [
        ("gpt-image-1", "low", "1024x1024", 0.011),
        ("gpt-image-1", "medium", "1536x1024", 0.063),
        ("gpt-image-1", "high", "1024x1536", 0.25),
        ("gpt-image-1-mini", "low", "1024x1024", 0.005),
        ("gpt-image-1-mini", "high", "1536x1024", 0.052),
        ("gpt-image-1.5", "medium", "1024x1024", 0.034),
        ("gpt-image-1.5", "high", "1024x1536", 0.2),
        ("gpt-image-2", "high", "1024x1024", 0.211),
        ("gpt-image-2", "low", "1024x1024", 0.006),
        ("dall-e-3", "standard", "1024x1024", 0.04),
        ("dall-e-3", "hd", "1792x1024", 0.12),
        ("dall-e-2", "standard", "256x256", 0.016),
        ("dall-e-2", "standard", "1024x1024", 0.02),
    ],
)
def test_listed_prices(profile, quality, size, usd):
    assert PROFILES[profile].price(quality=quality, size=size) == pytest.approx(usd)


def test_price_scales_with_n_and_defaults():
    g1 = PROFILES["gpt-image-1"]
    assert g1.price(quality="high", size="1024x1024", n=3) == pytest.approx(0.501)
    # Defaults are auto/auto: the dearest combination.
    assert g1.price() == pytest.approx(0.25)
    assert PROFILES["dall-e-3"].price() == pytest.approx(0.04)  # standard 1024x1024


def test_auto_is_priced_at_the_most_expensive_option():
    g15 = PROFILES["gpt-image-1.5"]
    assert g15.price(quality="auto", size="1024x1024") == pytest.approx(0.133)
    assert g15.price(quality="low", size="auto") == pytest.approx(0.013)
    assert g15.price(quality="auto", size="auto") == pytest.approx(0.2)
    for name in BUILTIN:
        p = PROFILES[name]
        dearest = max(p.price(quality=q, size=s) for q in p.qualities for s in p.sizes)
        assert p.price() <= dearest
        if "auto" in p.qualities:
            assert p.price(quality="auto") == pytest.approx(
                max(p.price(quality=q) for q in p.qualities)
            )


def test_rule_sizes_are_priced_by_area():
    g2 = PROFILES["gpt-image-2"]
    per_pixel = 0.211 / (1024 * 1024)
    assert g2.price(quality="high", size="3840x2160") == pytest.approx(
        per_pixel * 3840 * 2160, rel=1e-4
    )
    assert g2.price(quality="high", size="2048x2048") == pytest.approx(0.844, rel=1e-3)
    assert (
        g2.price(quality="low", size="1536x864") < g2.price(quality="low", size="1536x1024") * 1.01
    )


def test_unsupported_price_lookups_raise():
    with pytest.raises(ValueError, match="no quality 'standard'"):
        PROFILES["gpt-image-1"].price(quality="standard")
    with pytest.raises(ValueError, match="size"):
        PROFILES["dall-e-3"].price(size="256x256")
    with pytest.raises(ValueError, match="n must be"):
        PROFILES["dall-e-2"].price(n=0)


def test_custom_prices_are_conservative():
    custom = PROFILES["custom"]
    for name in BUILTIN:
        p = PROFILES[name]
        for q in p.qualities:
            for s in p.sizes:
                if s != "auto":
                    assert custom.price(quality="auto", size=s) >= p.price(quality=q, size=s)


# --------------------------------------------------------------------------- custom profiles


def test_make_custom_profile_inherits_and_coerces():
    p = make_custom_profile(
        "relay-images",
        parent="gpt-image-1",
        qualities=["low", "high"],
        default_quality="low",
        size_rule={"multiple_of": 8, "max_long_edge": 2048, "max_short_edge": 2048},
        extra_params=["seed"],
    )
    assert p.name == "relay-images" and p.parent == "gpt-image-1" and p.family == "gpt-image"
    assert p.qualities == ("low", "high")
    assert p.size_rule == SizeRule(8, math.inf, 2048, 2048, 1)
    assert p.supports_size("1000x600") and not p.supports_size("1001x600")
    assert p.accepts("seed") and not p.accepts("response_format")
    assert p.price(quality="high", size="1024x1024") == pytest.approx(0.167)
    child = make_custom_profile("child", parent=p, n_max=2)
    assert child.parent == "relay-images" and child.qualities == ("low", "high")


def test_custom_profile_with_new_quality_keeps_a_conservative_price():
    p = make_custom_profile("sunburst", parent="gpt-image-2", qualities=["low", "high", "xhigh"])
    assert p.price(quality="xhigh", size="1024x1024") == pytest.approx(0.211)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"qualitys": ["low"]}, "Unknown setting 'qualitys'.*Did you mean 'qualities'"),
        ({"sizes": "1024x1024"}, "sizes must be a list of strings"),
        ({"sizes": ["big"]}, "size 'big' is not WIDTHxHEIGHT"),
        ({"default_size": "512x512"}, "default_size '512x512' is not one of its sizes"),
        ({"default_quality": "ultra"}, "default_quality 'ultra'"),
        ({"n_max": 0}, "n_max must be a positive integer"),
        ({"streaming": "yes"}, "streaming must be true or false"),
        ({"response_formats": ["png"]}, "response_formats may only hold"),
        ({"size_rule": {"multiple": 16}}, "unknown size_rule key 'multiple'.*multiple_of"),
        ({"prices": {"low": {"1024x1024": "cheap"}}}, r"prices\.low\.1024x1024"),
    ],
)
def test_custom_profile_errors_say_what_to_fix(overrides, match):
    with pytest.raises(ConfigError, match=match):
        make_custom_profile("mine", parent="gpt-image-1", **overrides)


def test_custom_profile_needs_a_known_parent_and_a_name():
    with pytest.raises(UnknownProfileError, match="Known profiles"):
        make_custom_profile("mine", parent="gpt-image-9")
    with pytest.raises(ConfigError, match="non-empty name"):
        make_custom_profile("  ")


def test_profile_is_a_frozen_value():
    p = PROFILES["gpt-image-1"]
    with pytest.raises(AttributeError):
        p.n_max = 2  # type: ignore[misc]
    assert isinstance(p, Profile)
