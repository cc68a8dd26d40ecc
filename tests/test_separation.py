"""Property tests: model separation and fallback chains, over every mix of env and config."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_imagegen import strategies
from pytest_imagegen.config import RECORD_MODES, load_settings
from pytest_imagegen.errors import ConfigError, ModelSeparationError
from pytest_imagegen.profiles import (
    PROFILES,
    canonical_model,
    is_chat_model,
    make_custom_profile,
    model_kind,
)
from pytest_imagegen.request_builder import validate_request

# Model names of each kind as users write them (the kinds are what profiles.model_kind
# says; the properties below never rely on these labels, only on model_kind itself).
CHAT = (
    "gpt-4o-all",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1-mini",
    "gpt-5",
    "o3",
    "o4-mini",
    "openai/gpt-4o",
    "gpt-4o-image",
    "claude-3-5-sonnet",
    "deepseek-chat",
    "qwen-max",
    "gemini-2.5-pro",
)
IMAGE = ("gpt-image-1", "gpt-image-1.5", "gpt-image-2", "gpt-image-1-mini", "dall-e-3", "dall-e-2")
ALIAS = (
    "gpt-image-1-vip",
    "gpt-image-2-all",
    "openai/gpt-image-1",
    "gpt-image-2-2026-04-21",
    "azure/dall-e-3",
    "GPT-Image-1",
)
UNKNOWN = ("painter-3000", "my-deployment", "text-embedding-3-small", "flux-pro", "gpt-image-2.5")

# One branch per kind, so that each kind turns up often in every position.
model_names = st.one_of(
    st.sampled_from(CHAT),
    st.sampled_from(IMAGE),
    st.sampled_from(ALIAS),
    st.sampled_from(UNKNOWN),
    st.sampled_from(CHAT + IMAGE).map(lambda m: f"openai/{m}-vip"),
    st.from_regex(r"[a-z][a-z0-9.-]{2,15}", fullmatch=True),
    # the shared strategies' names (relay suffixes, provider prefixes, odd casing)
    strategies.model_names(kind="chat"),
    strategies.model_names(kind="image"),
    strategies.model_names(kind="unknown"),
)
profile_names = st.sampled_from((*PROFILES, "gpt-image-3", "mine"))
MODEL_VARS = ("OPENAI_IMAGE_MODEL", "OPENAI_CHAT_MODEL", "OPENAI_MODEL")

environments = st.fixed_dictionaries(
    {},
    optional={
        "OPENAI_BASE_URL": st.sampled_from(
            ["https://relay.example.com/v1", "http://127.0.0.1:9/v1", "ftp://relay.example.com"]
        ),
        "OPENAI_API_KEY": st.sampled_from(["test-key-not-real", ""]),
        "OPENAI_IMAGE_MODEL": model_names,
        "OPENAI_CHAT_MODEL": model_names,
        "OPENAI_MODEL": model_names,
        "IMAGEGEN_RECORD_MODE": st.sampled_from(RECORD_MODES),
        "RELAY_API_KEY": st.just("relay-key-not-real"),
    },
)
file_endpoints = st.lists(
    st.fixed_dictionaries(
        {"image_model": model_names},
        optional={"chat_model": model_names, "profile": profile_names},
    ),
    max_size=2,
)


def _toml(value: Any) -> str:
    # JSON strings, lists and inline tables of strings are valid TOML.
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def write_config(root: Path, endpoints: list[dict[str, Any]], extra: str = "") -> None:
    lines = ["[tool.imagegen]", extra]
    for i, ep in enumerate(endpoints):
        lines.append("[[tool.imagegen.endpoints]]")
        table = {
            "name": f"ep{i}",
            "base_url": "https://relay.example.com/v1",
            "api_key_env": "RELAY_API_KEY",
            **ep,
        }
        lines += [f"{k} = {_toml(v)}" for k, v in table.items()]
    (root / "pyproject.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _names(message: str, label: str, value: str) -> bool:
    """Does ``message`` name ``label`` (a variable or key) together with its ``value``?"""
    return bool(re.search(rf"(?<![A-Z_]){re.escape(label)}(?![A-Z_])", message)) and (
        value in message
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("separation")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(env=environments, endpoints=file_endpoints)
def test_image_model_is_never_a_chat_model(
    root: Path, env: dict[str, str], endpoints: list[dict[str, Any]]
) -> None:
    """Every mix of variables and keys is refused with the culprit named, or is safe."""
    if endpoints:
        write_config(root, endpoints)
    else:
        (root / "pyproject.toml").unlink(missing_ok=True)
    try:
        result = load_settings(cli={}, env=env, rootdir=root)
    except ConfigError as exc:
        message = str(exc)
        assert "Traceback" not in message and "test-key-not-real" not in message
        if endpoints:
            culprits = [
                (f"endpoints[{i}].{key}", value)
                for i, ep in enumerate(endpoints)
                for key, value in ep.items()
            ]
            culprits.append(("RELAY_API_KEY", ""))  # a live mode without the key
        else:
            culprits = [(var, value) for var, value in env.items() if var.startswith("OPENAI_")]
            culprits.append(("OPENAI_API_KEY", ""))
            culprits.append(("OPENAI_IMAGE_MODEL", ""))  # the fix for an unusable OPENAI_MODEL
        assert any(_names(message, label, value) for label, value in culprits), message
        if isinstance(exc, ModelSeparationError):
            assert "chat model" in message or "image model" in message
        return

    for endpoint in result.endpoints:
        assert not is_chat_model(endpoint.image_model), endpoint
        assert model_kind(endpoint.image_model) != "chat"
        if endpoint.chat_model is not None:
            assert model_kind(endpoint.chat_model) != "image"
            assert (canonical_model(endpoint.chat_model) or endpoint.chat_model.lower()) != (
                canonical_model(endpoint.image_model) or endpoint.image_model.lower()
            )
        if not endpoints and endpoint.name == "env":
            # The legacy variable is only ever the image model when it names an image model.
            legacy = env.get("OPENAI_MODEL")
            if legacy and not env.get("OPENAI_IMAGE_MODEL"):
                assert model_kind(legacy) == "image"
                assert endpoint.image_model == legacy
                assert endpoint.sources["image_model"] == "environment OPENAI_MODEL"


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    image=model_names,
    variant=st.sampled_from([str.upper, str.title, lambda m: f"openai/{m}", lambda m: m]),
    where=st.sampled_from(["env", "file"]),
)
def test_chat_model_naming_the_image_model_is_refused(
    root: Path, image: str, variant: Any, where: str
) -> None:
    chat = variant(image)
    if where == "file":
        write_config(root, [{"image_model": image, "chat_model": chat, "profile": "gpt-image-1"}])
        env: dict[str, str] = {}
    else:
        (root / "pyproject.toml").unlink(missing_ok=True)
        env = {"OPENAI_IMAGE_MODEL": image, "OPENAI_CHAT_MODEL": chat}
    with pytest.raises(ConfigError) as info:
        load_settings(cli={}, env=env, rootdir=root)
    label = "endpoints[0]." if where == "file" else "OPENAI_"
    assert label in str(info.value)
    if model_kind(image) != "unknown" or where == "file":
        assert isinstance(info.value, ModelSeparationError), str(info.value)


@settings(max_examples=100, deadline=None)
@given(legacy=st.sampled_from(CHAT), chat=st.none() | model_names)
def test_openai_model_naming_a_chat_model_gets_the_documented_message(
    legacy: str, chat: str | None
) -> None:
    env = {"OPENAI_MODEL": legacy, "OPENAI_API_KEY": "test-key-not-real"}
    if chat is not None:
        env["OPENAI_CHAT_MODEL"] = chat
    with pytest.raises(ModelSeparationError) as info:
        load_settings(cli={}, env=env, rootdir=Path("/nonexistent-imagegen-root"))
    assert f"OPENAI_MODEL={legacy} is a chat model; set OPENAI_IMAGE_MODEL=gpt-image-1" in str(
        info.value
    )


# ----------------------------------------------------------------------------- fallback chains

ALL_QUALITIES = ("low", "medium", "high", "auto", "standard", "hd", "ultra")
ALL_SIZES = (
    "auto",
    "1024x1024",
    "1536x1024",
    "1024x1536",
    "256x256",
    "512x512",
    "1792x1024",
    "1024x1792",
    "2048x1152",
    "1000x1000",
    "4096x4096",
)
steps = st.fixed_dictionaries(
    {},
    optional={
        "quality": st.sampled_from(ALL_QUALITIES),
        "size": st.sampled_from(ALL_SIZES),
        "n": st.integers(1, 12),
        "response_format": st.sampled_from(("url", "b64_json", "base64")),
        "output_format": st.sampled_from(("png", "jpeg", "webp", "gif")),
        "background": st.sampled_from(("transparent", "opaque", "auto", "white")),
        "moderation": st.sampled_from(("low", "auto", "strict")),
        "style": st.sampled_from(("vivid", "natural", "anime")),
        "model": st.sampled_from(IMAGE),
    },
)


@st.composite
def custom_profiles(draw: st.DrawFn) -> dict[str, Any]:
    """A ``[tool.imagegen.profiles.mine]`` table narrowing a built-in parent."""
    parent = PROFILES[draw(st.sampled_from(sorted(set(PROFILES) - {"custom"})))]
    table: dict[str, Any] = {"parent": parent.name}
    sizes = draw(st.lists(st.sampled_from(parent.sizes), min_size=1, unique=True))
    table.update(sizes=sizes, default_size=sizes[0])
    qualities = draw(st.lists(st.sampled_from(parent.qualities), min_size=1, unique=True))
    table.update(qualities=qualities, default_quality=qualities[0])
    table["n_max"] = draw(st.integers(1, parent.n_max))
    return table


def _step_problems(step: dict[str, Any], profile: Any) -> list[str]:
    body = {"model": step.get("model", "painter"), "prompt": "a red apple", **step}
    target = PROFILES[step["model"]] if "model" in step else profile
    return [v.param for v in validate_request(body, target) if v.param in step]


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    profile=st.sampled_from(sorted(PROFILES)) | custom_profiles(),
    chain=st.lists(steps, max_size=4),
)
def test_accepted_fallback_chains_hold_only_valid_steps(
    root: Path, profile: str | dict[str, Any], chain: list[dict[str, Any]]
) -> None:
    extra = ""
    if isinstance(profile, dict):
        extra = "[tool.imagegen.profiles.mine]\n" + "\n".join(
            f"{k} = {_toml(v)}" for k, v in profile.items()
        )
        resolved = make_custom_profile(
            "mine", parent=profile["parent"], **{k: v for k, v in profile.items() if k != "parent"}
        )
        name = "mine"
    else:
        resolved, name = PROFILES[profile], profile
    endpoint = {"image_model": "painter", "profile": name, "fallback": chain}
    write_config(root, [endpoint], extra + "\n")
    problems = [(i, _step_problems(step, resolved)) for i, step in enumerate(chain)]
    try:
        result = load_settings(cli={}, env={}, rootdir=root)
    except ConfigError as exc:
        message = str(exc)
        bad = [(i, params) for i, params in problems if params]
        assert bad, f"a valid chain was refused: {message}"
        assert any(
            f"endpoints[0].fallback[{i}]" in message and f"{p} = " in message
            for i, params in bad
            for p in params
        ), message
        assert 'name = "ep0"' in message
        return
    (ep,) = result.endpoints
    assert ep.fallback == tuple(chain)
    for i, params in problems:
        assert not params, f"step {i} {chain[i]} accepted although invalid for {params}"
