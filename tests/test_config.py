"""Configuration: file discovery, the file model, environment, precedence, keys, separation."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pytest_imagegen import config as cfg
from pytest_imagegen.config import (
    REFERENCE_ENDPOINT_NAME,
    SOURCE_CLI,
    SOURCE_DEFAULT,
    SOURCE_ENV,
    SOURCE_FILE,
    SOURCE_PROFILE,
    Settings,
    load_settings,
)
from pytest_imagegen.errors import ConfigError, ModelSeparationError
from pytest_imagegen.profiles import make_custom_profile

RELAY = """
[[tool.imagegen.endpoints]]
name = "relay"
base_url = "https://relay.example.com/v1"
api_key_env = "RELAY_API_KEY"
image_model = "gpt-image-1-vip"
"""
KEY = "relay-key-do-not-print-0123456789"


def write(root: Path, body: str, name: str = "pyproject.toml") -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def load(
    root: Path,
    *,
    env: dict[str, str] | None = None,
    config_path: Path | None = None,
    **cli: Any,
) -> Settings:
    return load_settings(cli=cli, env=env or {}, rootdir=root, config_path=config_path)


def refused(root: Path, exc: type[Exception] = ConfigError, **kwargs: Any) -> str:
    with pytest.raises(exc) as info:
        load(root, **kwargs)
    return str(info.value)


def endpoint_toml(**keys: Any) -> str:
    """One ``[[tool.imagegen.endpoints]]`` table; values are written as TOML literals."""
    base: dict[str, Any] = {
        "name": '"relay"',
        "base_url": '"https://relay.example.com/v1"',
        "api_key_env": '"RELAY_API_KEY"',
        "image_model": '"gpt-image-1"',
    }
    base.update(keys)
    lines = [f"{k} = {v}" for k, v in base.items() if v is not None]
    return "[[tool.imagegen.endpoints]]\n" + "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- discovery


def test_no_pyproject_and_no_env_gives_the_reference_endpoint(tmp_path: Path) -> None:
    settings = load(tmp_path)
    assert settings.config_file is None
    (ep,) = settings.endpoints
    assert ep.name == REFERENCE_ENDPOINT_NAME == "reference"
    assert ep.is_reference
    assert ep.base_url == ""
    assert ep.image_model == "gpt-image-1.5"
    assert ep.profile.name == "gpt-image-1.5"
    assert ep.chat_model == "gpt-4o-mini"
    assert (ep.timeout_s, ep.deadline_s, ep.max_retries) == (2, 10, 0)
    assert ep.fallback == ({"quality": "medium"}, {"quality": "low", "size": "1024x1024"})
    assert settings.record_mode == "none"
    assert settings.budget_usd == 1.0
    assert settings.cassette_dir == tmp_path / "cassettes"
    assert settings.report is None


def test_pyproject_without_imagegen_table_is_ignored(tmp_path: Path) -> None:
    write(tmp_path, '[project]\nname = "x"\n[tool.ruff]\nline-length = 100\n')
    settings = load(tmp_path)
    assert settings.config_file is None
    assert settings.endpoints[0].is_reference


def test_rootdir_pyproject_is_discovered(tmp_path: Path) -> None:
    path = write(tmp_path, '[project]\nname = "x"\n[tool.imagegen]\nbudget_usd = 2.5\n' + RELAY)
    settings = load(tmp_path, env={"RELAY_API_KEY": KEY})
    assert settings.config_file == path
    assert settings.sources["config_file"] == SOURCE_DEFAULT
    assert settings.budget_usd == 2.5
    assert [e.name for e in settings.endpoints] == ["relay"]
    assert settings.endpoints[0].profile.name == "gpt-image-1"


def test_explicit_config_with_tool_table(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\nbudget_usd = 9\n")  # not read: the explicit file wins
    other = write(tmp_path, "[tool.imagegen]\nbudget_usd = 3\n", "conf/imagegen.toml")
    settings = load(tmp_path, config=str(other))
    assert settings.config_file == other
    assert settings.budget_usd == 3
    assert settings.sources["config_file"] == SOURCE_CLI


def test_explicit_config_with_top_level_keys_relative_to_rootdir(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        record_mode = "once"
        [[endpoints]]
        name = "local"
        base_url = "http://127.0.0.1:8000/v1"
        image_model = "dall-e-3"
        """,
        "imagegen.toml",
    )
    settings = load(tmp_path, config_path=Path("imagegen.toml"))
    assert settings.config_file == tmp_path / "imagegen.toml"
    assert settings.record_mode == "once"
    (ep,) = settings.endpoints
    assert (ep.name, ep.profile.name, ep.api_key) == ("local", "dall-e-3", "")


def test_explicit_config_missing_file(tmp_path: Path) -> None:
    message = refused(tmp_path, config="nowhere/imagegen.toml")
    assert "--imagegen-config" in message
    assert str(tmp_path / "nowhere" / "imagegen.toml") in message
    assert "does not exist" in message


def test_explicit_pyproject_without_table(tmp_path: Path) -> None:
    path = write(tmp_path, '[project]\nname = "x"\n', "other.toml")
    message = refused(tmp_path, config_path=path)
    assert str(path) in message
    assert "no [tool.imagegen] table" in message


@pytest.mark.parametrize("explicit", [False, True])
def test_toml_syntax_error_names_file_and_line(tmp_path: Path, explicit: bool) -> None:
    path = write(tmp_path, '[tool.imagegen]\nbudget_usd = 1\nrecord_mode = "none\n')
    message = refused(tmp_path, config_path=path if explicit else None)
    assert str(path) in message
    assert "invalid TOML" in message
    assert "line 3" in message


def test_syntax_error_does_not_quote_the_line(tmp_path: Path) -> None:
    write(tmp_path, '[tool.imagegen]\napi_key = "sk-proj-abcdefghijkl\n')
    message = refused(tmp_path)
    assert "line 2" in message
    assert "abcdefghijkl" not in message


# ----------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    ("body", "key", "suggestion", "where"),
    [
        ("[tool.imagegen]\nbudget = 1\n", "budget", "budget_usd", "budget"),
        ("[tool.imagegen]\nrecordmode = 'once'\n", "recordmode", "record_mode", "recordmode"),
        (
            "[tool.imagegen]\n" + endpoint_toml(timeout="5"),
            "timeout",
            "timeout_s",
            'endpoints[0].timeout ([[tool.imagegen.endpoints]] name = "relay")',
        ),
        (
            "[tool.imagegen]\n" + endpoint_toml(fallback='[{ qualty = "low" }]'),
            "qualty",
            "quality",
            "endpoints[0].fallback[0].qualty",
        ),
        (
            "[tool.imagegen.profiles.mine]\nparent = 'gpt-image-1'\nn_maximum = 2\n",
            "n_maximum",
            "n_max",
            "profiles.mine.n_maximum",
        ),
    ],
)
def test_misspelt_key_names_key_file_and_nearest(
    tmp_path: Path, body: str, key: str, suggestion: str, where: str
) -> None:
    path = write(tmp_path, body)
    message = refused(tmp_path)
    assert str(path) in message
    assert f"unknown key {key!r}" in message
    assert f"Did you mean {suggestion!r}?" in message
    assert where in message


def test_endpoint_key_at_top_level_says_where_it_belongs(tmp_path: Path) -> None:
    write(tmp_path, '[tool.imagegen]\nimage_model = "gpt-image-1"\n')
    message = refused(tmp_path)
    assert "belongs in a [[tool.imagegen.endpoints]] table" in message


def test_several_problems_are_listed_together(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\nbudget = 1\nreport_path = 'x'\n")
    message = refused(tmp_path)
    assert "'budget'" in message
    assert "'report_path'" in message
    assert "Did you mean 'report'?" in message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("[tool.imagegen]\nrecord_mode = 'sometimes'\n", "'none', 'once', 'new_episodes' or 'all'"),
        ("[tool.imagegen]\nbudget_usd = -1\n", "greater than or equal to 0"),
        ("[tool.imagegen]\nbudget_usd = '1'\n", "valid number"),
        ("[tool.imagegen]\n" + endpoint_toml(timeout_s="0"), "greater than 0"),
        ("[tool.imagegen]\n" + endpoint_toml(deadline_s="-5"), "greater than 0"),
        ("[tool.imagegen]\n" + endpoint_toml(timeout_s="inf"), "finite"),
        ("[tool.imagegen]\n" + endpoint_toml(max_retries="11"), "less than or equal to 10"),
        ("[tool.imagegen]\n" + endpoint_toml(max_retries="-1"), "greater than or equal to 0"),
        ("[tool.imagegen]\n" + endpoint_toml(max_retries="true"), "valid integer"),
        ("[tool.imagegen]\n" + endpoint_toml(max_retries="1.5"), "valid integer"),
        ("[tool.imagegen]\n" + endpoint_toml(image_model=None), "required key missing"),
        ("[tool.imagegen]\n" + endpoint_toml(fallback="[{ n = 0 }]"), "greater than or equal to 1"),
        ("[tool.imagegen]\n" + endpoint_toml(headers='{ "bad header" = "x" }'), "header name"),
    ],
)
def test_bad_values_are_config_errors(tmp_path: Path, body: str, expected: str) -> None:
    path = write(tmp_path, body)
    message = refused(tmp_path)
    assert str(path) in message
    assert expected in message


def test_max_retries_message_says_what_it_is(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(max_retries="11"))
    message = refused(tmp_path)
    assert 'endpoints[0].max_retries ([[tool.imagegen.endpoints]] name = "relay") = 11' in message
    assert "0..10" in message


# ----------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    ("table", "where"),
    [
        (endpoint_toml(api_key=f'"{KEY}"'), "endpoints[0].api_key"),
        (endpoint_toml(token=f'"{KEY}"'), "endpoints[0].token"),
        (endpoint_toml(secret=f'"{KEY}"'), "endpoints[0].secret"),
        (endpoint_toml(key=f'"{KEY}"'), "endpoints[0].key"),
        (endpoint_toml(headers=f'{{ "X-Api-Key" = "{KEY}" }}'), "headers.X-Api-Key"),
        (endpoint_toml(headers=f'{{ "Authorization" = "Bearer {KEY}" }}'), "Authorization"),
        (endpoint_toml(headers=f'{{ "X-Team" = "sk-{KEY}" }}'), "headers.X-Team"),
        (endpoint_toml(api_key_env=f'"sk-{KEY}"'), "endpoints[0].api_key_env"),
        (endpoint_toml(base_url=f'"https://relay.example.com/v1?k=sk-{KEY}"'), "base_url"),
        (f'openai_api_key = "{KEY}"\n', "openai_api_key"),
    ],
)
def test_a_key_in_the_file_is_refused_without_echoing_it(
    tmp_path: Path, table: str, where: str
) -> None:
    path = write(tmp_path, "[tool.imagegen]\n" + table)
    message = refused(tmp_path, env={"RELAY_API_KEY": KEY})
    assert KEY not in message
    assert str(path) in message
    assert where in message
    assert "put the NAME of an environment variable in api_key_env" in message


def test_key_shaped_value_in_a_list(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen.profiles.p]\nsizes = ['sk-abcdefghijklmnop']\n")
    message = refused(tmp_path)
    assert "profiles.p.sizes[0]" in message
    assert "abcdefghijklmnop" not in message


def test_secret_refused_even_when_endpoint_name_is_key_shaped(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(name=f'"sk-{KEY}"', token='"x"'))
    message = refused(tmp_path)
    assert KEY not in message


@pytest.mark.parametrize(
    "url",
    ["https://user:pa55word@relay.example.com/v1", "https://relay.example.com/v1?api-key=abc"],
)
def test_base_url_with_credentials_is_refused(tmp_path: Path, url: str) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(base_url=f'"{url}"'))
    message = refused(tmp_path)
    assert "pa55word" not in message and "=abc" not in message
    assert "credential" in message
    assert "api_key_env" in message
    assert 'endpoints[0].base_url ([[tool.imagegen.endpoints]] name = "relay")' in message


@pytest.mark.parametrize("url", ["ftp://relay.example.com/v1", "relay.example.com/v1", "https://"])
def test_base_url_must_be_http(tmp_path: Path, url: str) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(base_url=f'"{url}"'))
    assert "http(s)" in refused(tmp_path)


@pytest.mark.parametrize(
    "url",
    [
        f"https://relay.example.com/v1?k=sk-{KEY}",
        f"https://relay.example.com/sk-{KEY}/v1",
        f"https://relay.example.com/v1?token={KEY}",
    ],
)
def test_openai_base_url_holding_a_key_is_refused_and_masked(tmp_path: Path, url: str) -> None:
    message = refused(tmp_path, env={"OPENAI_BASE_URL": url})
    assert message.startswith("OPENAI_BASE_URL:")
    assert KEY not in message
    assert "put the key in OPENAI_API_KEY" in message


def test_openai_base_url_with_credentials_names_the_variable(tmp_path: Path) -> None:
    env = {"OPENAI_BASE_URL": "https://u:hunter2@relay.example.com/v1", "OPENAI_API_KEY": KEY}
    message = refused(tmp_path, env=env)
    assert "OPENAI_BASE_URL" in message
    assert "hunter2" not in message and KEY not in message


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize(("name", "hint"), [("My Relay", '"my-relay"'), ("relay.v2", '"relay-v2"')])
def test_endpoint_name_pattern(tmp_path: Path, name: str, hint: str) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(name=f'"{name}"'))
    message = refused(tmp_path)
    assert "[a-z0-9_-]+" in message
    assert hint in message


def test_endpoint_names_are_unique(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml() + endpoint_toml())
    message = refused(tmp_path)
    assert "endpoints[0] and endpoints[1] are both named 'relay'" in message


def test_reference_is_a_reserved_name(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(name='"reference"'))
    assert "reserved" in refused(tmp_path)


# ----------------------------------------------------------------------------- timeouts


def test_timeout_longer_than_deadline(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(timeout_s="120", deadline_s="60"))
    message = refused(tmp_path)
    assert "timeout_s = 120 is longer than deadline_s = 60" in message
    assert 'name = "relay"' in message
    assert "Set timeout_s <= deadline_s" in message


def test_timeout_longer_than_default_deadline(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(timeout_s="301"))
    assert "deadline_s = 300" in refused(tmp_path)


def test_timeout_equal_to_deadline_is_fine(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(timeout_s="30", deadline_s="30"))
    (ep,) = load(tmp_path).endpoints
    assert (ep.timeout_s, ep.deadline_s) == (30, 30)


# ----------------------------------------------------------------------------- fallback


def test_fallback_chain_is_stored_as_overrides(tmp_path: Path) -> None:
    chain = '[{ quality = "high" }, { quality = "low", size = "1024x1024" }]'
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(fallback=chain))
    (ep,) = load(tmp_path).endpoints
    assert ep.fallback == ({"quality": "high"}, {"quality": "low", "size": "1024x1024"})
    assert ep.sources["fallback"] == SOURCE_FILE


@pytest.mark.parametrize(
    ("model", "chain", "param", "supported"),
    [
        ("gpt-image-1", '[{ quality = "low" }, { quality = "standard" }]', "quality", "'low'"),
        ("gpt-image-1", '[{ response_format = "url" }]', "response_format", None),
        ("gpt-image-1", '[{ size = "1792x1024" }]', "size", "'1024x1024'"),
        ("gpt-image-1", '[{ style = "vivid" }]', "style", None),
        ("dall-e-3", "[{ n = 2 }]", "n", None),
        ("dall-e-3", '[{ quality = "low" }]', "quality", "'standard'"),
        ("dall-e-2", '[{ output_format = "webp" }]', "output_format", None),
    ],
)
def test_invalid_fallback_step(
    tmp_path: Path, model: str, chain: str, param: str, supported: str | None
) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(image_model=f'"{model}"', fallback=chain))
    message = refused(tmp_path)
    index = chain.count("{") - 1
    assert f"fallback[{index}]" in message
    assert "endpoint 'relay'" in message
    assert f"step {index + 1} of {index + 1}" in message
    assert f"{param} = " in message
    assert f"profile {model}" in message
    if supported:
        assert "Supported values" in message and supported in message


def test_standard_quality_message_uses_openai_wording(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(fallback='[{ quality = "standard" }]'))
    message = refused(tmp_path)
    assert "Invalid value: 'standard'." in message
    assert "'low', 'medium', 'high'" in message


def test_fallback_step_with_its_own_model_uses_that_profile(tmp_path: Path) -> None:
    ok = '[{ quality = "low" }, { model = "dall-e-3", quality = "standard", style = "vivid" }]'
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(fallback=ok))
    (ep,) = load(tmp_path).endpoints
    assert ep.fallback[1]["model"] == "dall-e-3"

    bad = '[{ model = "dall-e-3", quality = "low" }]'
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(fallback=bad))
    message = refused(tmp_path)
    assert "profile dall-e-3" in message and "quality = 'low'" in message


def test_fallback_step_with_a_chat_model_is_a_separation_error(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(fallback='[{ model = "gpt-4o-mini" }]'))
    message = refused(tmp_path, ModelSeparationError)
    assert "endpoints[0].fallback[0]" in message
    assert "'gpt-4o-mini' is a chat model" in message


def test_fallback_step_with_unknown_model(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(fallback='[{ model = "mystery-9" }]'))
    message = refused(tmp_path)
    assert "model = 'mystery-9'" in message
    assert "fallback[0]" in message


# ----------------------------------------------------------------------------- profiles


def test_custom_profile_inherits_and_overrides(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        [tool.imagegen.profiles.myrelay]
        parent = "gpt-image-1"
        sizes = ["1024x1024", "512x512"]
        default_size = "1024x1024"
        n_max = 4

        [[tool.imagegen.endpoints]]
        name = "relay"
        base_url = "http://127.0.0.1:9/v1"
        image_model = "painter-3000"
        profile = "myrelay"
        fallback = [{ size = "512x512", n = 4 }]
        """,
    )
    settings = load(tmp_path)
    custom = settings.custom_profiles["myrelay"]
    assert custom.sizes == ("1024x1024", "512x512")
    assert custom.n_max == 4
    assert custom.qualities == ("low", "medium", "high", "auto")  # from the parent
    (ep,) = settings.endpoints
    assert ep.profile is custom
    assert ep.sources["profile"] == SOURCE_FILE
    src = settings.sources
    assert src["profiles.myrelay.sizes"] == SOURCE_FILE
    assert src["profiles.myrelay.n_max"] == SOURCE_FILE
    assert src["profiles.myrelay.qualities"] == SOURCE_PROFILE
    rows = {key: (value, source) for key, value, source in settings.describe()}
    assert rows["profiles.myrelay.parent"] == ("gpt-image-1", SOURCE_FILE)
    assert rows["profiles.myrelay.n_max"] == ("4", SOURCE_FILE)


def test_fallback_is_checked_against_the_custom_profile(tmp_path: Path) -> None:
    write(
        tmp_path,
        """
        [tool.imagegen.profiles.small]
        parent = "gpt-image-1"
        sizes = ["1024x1024"]
        default_size = "1024x1024"

        [[tool.imagegen.endpoints]]
        name = "relay"
        base_url = "http://127.0.0.1:9/v1"
        image_model = "gpt-image-1"
        profile = "small"
        fallback = [{ size = "1536x1024" }]
        """,
    )
    message = refused(tmp_path)
    assert "size = '1536x1024'" in message and "profile small" in message


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ('[tool.imagegen.profiles.x]\nparent = "gpt-image-9"\n', "Did you mean 'gpt-image-2'?"),
        ('[tool.imagegen.profiles.dall-e-3]\nparent = "dall-e-3"\n', "is a built-in profile"),
        ('[tool.imagegen.profiles.x]\nparent = "dall-e-2"\ndefault_size = "9x9"\n', "default_size"),
        ('[tool.imagegen.profiles."X Y"]\nparent = "custom"\n', "[a-z0-9_.-]+"),
    ],
)
def test_bad_custom_profiles(tmp_path: Path, table: str, expected: str) -> None:
    path = write(tmp_path, table)
    message = refused(tmp_path)
    assert expected in message
    assert str(path) in message


def test_a_file_profile_takes_every_setting_the_library_takes(tmp_path: Path) -> None:
    # One validation path: the file's tables are built by make_custom_profile, so a field
    # the library accepts (the edits settings here) is never refused as an unknown key.
    write(
        tmp_path,
        """
        [tool.imagegen.profiles.editor]
        parent = "dall-e-2"
        edit_max_images = 3
        variations = false
        edit_json = false
        """,
    )
    settings = load(tmp_path)
    made = make_custom_profile(
        "editor", parent="dall-e-2", edit_max_images=3, variations=False, edit_json=False
    )
    assert settings.custom_profiles["editor"] == made
    rows = {key: (value, source) for key, value, source in settings.describe()}
    assert rows["profiles.editor.edit_max_images"] == ("3", SOURCE_FILE)


@pytest.mark.parametrize(
    ("setting", "toml", "value"),
    [
        ("n_max", "0", 0),
        ("sizes", '"1024x1024"', "1024x1024"),
        ("size_rule", "{ multiple_of = 16, step = 2 }", {"multiple_of": 16, "step": 2}),
    ],
)
def test_a_bad_file_profile_value_gets_the_library_message(
    tmp_path: Path, setting: str, toml: str, value: Any
) -> None:
    path = write(
        tmp_path, f'[tool.imagegen.profiles.mine]\nparent = "custom"\n{setting} = {toml}\n'
    )
    message = refused(tmp_path)
    with pytest.raises(ConfigError) as library:
        make_custom_profile("mine", parent="custom", **{setting: value})
    assert str(path) in message and "[tool.imagegen.profiles.mine]" in message
    assert str(library.value).rstrip(".") in message


def test_unknown_profile_name_suggests(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(profile='"gpt-image-1.6"'))
    message = refused(tmp_path)
    assert "profile = 'gpt-image-1.6' is not a known profile" in message
    assert "Did you mean" in message
    assert "endpoints[0].profile" in message


def test_explicit_profile_wins_over_the_model_name(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(profile='"dall-e-2"'))
    (ep,) = load(tmp_path).endpoints
    assert (ep.image_model, ep.profile.name) == ("gpt-image-1", "dall-e-2")


# ----------------------------------------------------------------------------- separation (file)


def test_file_image_model_that_is_a_chat_model(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(image_model='"gpt-4o-all"'))
    message = refused(tmp_path, ModelSeparationError)
    assert 'endpoints[0].image_model ([[tool.imagegen.endpoints]] name = "relay")' in message
    assert "'gpt-4o-all' is a chat model" in message
    assert 'image_model = "gpt-image-1"' in message
    assert "chat_model" in message


def test_explicit_profile_does_not_excuse_a_chat_image_model(tmp_path: Path) -> None:
    body = endpoint_toml(image_model='"claude-3-5-sonnet"', profile='"gpt-image-1"')
    write(tmp_path, "[tool.imagegen]\n" + body)
    assert "is a chat model" in refused(tmp_path, ModelSeparationError)


def test_chat_model_equal_to_image_model_after_canonicalisation(tmp_path: Path) -> None:
    body = endpoint_toml(image_model='"painter"', profile='"gpt-image-1"', chat_model='"Painter"')
    write(tmp_path, "[tool.imagegen]\n" + body)
    message = refused(tmp_path, ModelSeparationError)
    assert "endpoints[0].chat_model" in message
    assert "is the image model" in message


def test_chat_model_that_is_an_image_model(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(chat_model='"openai/dall-e-3-vip"'))
    message = refused(tmp_path, ModelSeparationError)
    assert "endpoints[0].chat_model" in message
    assert "chat requests would be sent to an image model" in message


@pytest.mark.parametrize(
    ("model", "what"), [("painter-3000", "not a model"), ("flux-pro", "image")]
)
def test_unknown_image_model_needs_a_profile(tmp_path: Path, model: str, what: str) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(image_model=f'"{model}"'))
    with pytest.raises(ConfigError) as info:
        load(tmp_path)
    assert not isinstance(info.value, ModelSeparationError)
    message = str(info.value)
    assert f"'{model}'" in message and what in message
    assert 'Set profile = "gpt-image-1"' in message
    assert "endpoints[0].image_model" in message


def test_unknown_image_model_with_profile_is_accepted(tmp_path: Path) -> None:
    body = endpoint_toml(image_model='"painter-3000"', profile='"gpt-image-2"')
    write(tmp_path, "[tool.imagegen]\n" + body)
    (ep,) = load(tmp_path).endpoints
    assert ep.profile.name == "gpt-image-2"
    assert ep.sources["profile"] == SOURCE_FILE


def test_alias_resolves_and_records_inferred_profile(tmp_path: Path) -> None:
    body = endpoint_toml(image_model='"gpt-image-1-vip"', chat_model='"gpt-4o-all"')
    write(tmp_path, "[tool.imagegen]\n" + body)
    (ep,) = load(tmp_path).endpoints
    assert (ep.image_model, ep.profile.name, ep.chat_model) == (
        "gpt-image-1-vip",
        "gpt-image-1",
        "gpt-4o-all",
    )
    assert ep.sources["profile"].startswith(SOURCE_PROFILE)


def test_all_problems_of_all_endpoints_are_reported(tmp_path: Path) -> None:
    body = endpoint_toml(image_model='"gpt-4o"') + endpoint_toml(
        name='"b"', timeout_s="9", deadline_s="1"
    )
    write(tmp_path, "[tool.imagegen]\n" + body)
    message = refused(tmp_path, ModelSeparationError)
    assert "'gpt-4o' is a chat model" in message
    assert "timeout_s = 9 is longer than deadline_s = 1" in message


# ----------------------------------------------------------------------------- environment


def test_env_endpoint_from_openai_variables(tmp_path: Path) -> None:
    env = {
        "OPENAI_BASE_URL": "https://relay.example.com/v1",
        "OPENAI_API_KEY": KEY,
        "OPENAI_IMAGE_MODEL": "gpt-image-1-vip",
        "OPENAI_CHAT_MODEL": "gpt-4o-all",
    }
    settings = load(tmp_path, env=env, record_mode="once")
    (ep,) = settings.endpoints
    assert ep.name == "env"
    assert (ep.base_url, ep.image_model, ep.chat_model) == (
        "https://relay.example.com/v1",
        "gpt-image-1-vip",
        "gpt-4o-all",
    )
    assert ep.api_key == KEY and ep.api_key_env == "OPENAI_API_KEY"
    assert ep.profile.name == "gpt-image-1"
    assert ep.sources["base_url"] == f"{SOURCE_ENV} OPENAI_BASE_URL"
    assert ep.sources["image_model"] == f"{SOURCE_ENV} OPENAI_IMAGE_MODEL"
    assert ep.sources["chat_model"] == f"{SOURCE_ENV} OPENAI_CHAT_MODEL"
    assert settings.sources["endpoints.env.image_model"] == f"{SOURCE_ENV} OPENAI_IMAGE_MODEL"


@pytest.mark.parametrize("var", ["OPENAI_BASE_URL", "OPENAI_API_KEY"])
def test_env_endpoint_defaults(tmp_path: Path, var: str) -> None:
    value = "https://relay.example.com/v1" if var == "OPENAI_BASE_URL" else KEY
    (ep,) = load(tmp_path, env={var: value}).endpoints
    assert ep.name == "env" and not ep.is_reference
    assert ep.image_model == cfg.DEFAULT_ENV_IMAGE_MODEL
    assert ep.sources["image_model"] == SOURCE_DEFAULT
    assert ep.chat_model is None
    if var == "OPENAI_API_KEY":
        assert ep.base_url == "https://api.openai.com/v1"


def test_openai_model_naming_a_chat_model_is_refused(tmp_path: Path) -> None:
    env = {"OPENAI_MODEL": "gpt-4o-all", "OPENAI_API_KEY": KEY}
    message = refused(tmp_path, ModelSeparationError, env=env)
    assert (
        "OPENAI_MODEL=gpt-4o-all is a chat model; set OPENAI_IMAGE_MODEL=gpt-image-1 (or another "
        "image model) for image calls, and keep OPENAI_MODEL for chat" in message
    )
    assert KEY not in message


def test_openai_model_chat_refused_even_with_a_chat_model_variable(tmp_path: Path) -> None:
    env = {"OPENAI_MODEL": "gpt-4o", "OPENAI_CHAT_MODEL": "gpt-4o"}
    assert "OPENAI_MODEL=gpt-4o is a chat model" in refused(tmp_path, ModelSeparationError, env=env)


def test_openai_model_naming_an_image_model_is_used(tmp_path: Path) -> None:
    (ep,) = load(tmp_path, env={"OPENAI_MODEL": "gpt-image-1-mini"}).endpoints
    assert ep.image_model == "gpt-image-1-mini"
    assert ep.sources["image_model"] == f"{SOURCE_ENV} OPENAI_MODEL"
    assert ep.chat_model is None


def test_openai_model_chat_with_image_model_becomes_chat_model(tmp_path: Path) -> None:
    env = {"OPENAI_MODEL": "gpt-4o-all", "OPENAI_IMAGE_MODEL": "gpt-image-1"}
    (ep,) = load(tmp_path, env=env).endpoints
    assert (ep.image_model, ep.chat_model) == ("gpt-image-1", "gpt-4o-all")
    assert ep.sources["chat_model"] == f"{SOURCE_ENV} OPENAI_MODEL"
    env["OPENAI_CHAT_MODEL"] = "gpt-4.1-mini"
    (ep,) = load(tmp_path, env=env).endpoints
    assert ep.chat_model == "gpt-4.1-mini"


def test_openai_image_model_naming_a_chat_model(tmp_path: Path) -> None:
    message = refused(tmp_path, ModelSeparationError, env={"OPENAI_IMAGE_MODEL": "gpt-4o"})
    assert message.startswith("OPENAI_IMAGE_MODEL:")
    assert "Set OPENAI_IMAGE_MODEL=gpt-image-1" in message


def test_openai_chat_model_naming_an_image_model(tmp_path: Path) -> None:
    env = {"OPENAI_IMAGE_MODEL": "gpt-image-1", "OPENAI_CHAT_MODEL": "dall-e-3"}
    message = refused(tmp_path, ModelSeparationError, env=env)
    assert message.startswith("OPENAI_CHAT_MODEL:")


@pytest.mark.parametrize("var", ["OPENAI_IMAGE_MODEL", "OPENAI_MODEL"])
def test_unknown_env_model(tmp_path: Path, var: str) -> None:
    message = refused(tmp_path, env={var: "painter-3000"})
    assert var in message
    assert "painter-3000" in message
    assert "profile" in message


def test_env_is_ignored_when_the_file_has_endpoints(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml())
    settings = load(tmp_path, env={"OPENAI_MODEL": "gpt-4o-all", "OPENAI_BASE_URL": "ftp://x"})
    assert [e.name for e in settings.endpoints] == ["relay"]


def test_chat_model_variable_alone_keeps_the_reference(tmp_path: Path) -> None:
    (ep,) = load(tmp_path, env={"OPENAI_CHAT_MODEL": "gpt-4o"}).endpoints
    assert ep.is_reference


def test_blank_variables_count_as_unset(tmp_path: Path) -> None:
    (ep,) = load(tmp_path, env={"OPENAI_MODEL": "", "OPENAI_API_KEY": "  "}).endpoints
    assert ep.is_reference


def test_os_environ_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_MODEL", "gpt-4o-all")
    monkeypatch.setenv("IMAGEGEN_RECORD_MODE", "all")
    settings = load(tmp_path, env={})
    assert settings.endpoints[0].is_reference
    assert settings.record_mode == "none"


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("IMAGEGEN_RECORD_MODE", "sometimes", "one of: none, once, new_episodes, all"),
        ("IMAGEGEN_BUDGET_USD", "lots", "spend cap in USD"),
        ("IMAGEGEN_BUDGET_USD", "-2", "spend cap in USD"),
        ("IMAGEGEN_BUDGET_USD", "nan", "spend cap in USD"),
    ],
)
def test_bad_environment_values_name_the_variable(
    tmp_path: Path, var: str, value: str, expected: str
) -> None:
    message = refused(tmp_path, env={var: value})
    assert f"environment variable {var}={value!r}" in message
    assert expected in message


@pytest.mark.parametrize(
    ("cli", "expected"),
    [
        ({"record_mode": "sometimes"}, "--imagegen-record-mode=sometimes"),
        ({"budget_usd": "-1"}, "--imagegen-budget=-1"),
        ({"budget_usd": "inf"}, "--imagegen-budget=inf"),
    ],
)
def test_bad_command_line_values(tmp_path: Path, cli: dict[str, Any], expected: str) -> None:
    assert expected in refused(tmp_path, **cli)


# ----------------------------------------------------------------------------- precedence

TOP_LEVEL_VALUES = {
    # key: (cli value, env variable, env value, file literal, expected per level)
    "record_mode": ("all", "IMAGEGEN_RECORD_MODE", "new_episodes", '"once"', "none"),
    "budget_usd": (4.0, "IMAGEGEN_BUDGET_USD", "3", "2", 1.0),
    "report": ("cli.json", "IMAGEGEN_REPORT", "env.html", '"file.json"', None),
    "cassette_dir": ("cli-cas", "IMAGEGEN_CASSETTE_DIR", "env-cas", '"file-cas"', "cassettes"),
}


def _top(settings: Settings, key: str, root: Path) -> Any:
    value = getattr(settings, key)
    if isinstance(value, Path):
        return str(value.relative_to(root))
    return value


@pytest.mark.parametrize("key", list(TOP_LEVEL_VALUES))
@pytest.mark.parametrize("levels", [("cli", "env", "file"), ("env", "file"), ("file",), ()])
def test_precedence_of_top_level_keys(tmp_path: Path, key: str, levels: tuple[str, ...]) -> None:
    cli_value, var, env_value, file_value, default = TOP_LEVEL_VALUES[key]
    if "file" in levels:
        write(tmp_path, f"[tool.imagegen]\n{key} = {file_value}\n")
    env = {var: env_value} if "env" in levels else {}
    cli = {key: cli_value} if "cli" in levels else {}
    settings = load(tmp_path, env=env, **cli)
    got = _top(settings, key, tmp_path)
    if levels and levels[0] == "cli":
        assert got == cli_value
        assert settings.sources[key] == SOURCE_CLI
    elif levels and levels[0] == "env":
        assert str(got) in (env_value, str(float(env_value)) if key == "budget_usd" else "")
        assert settings.sources[key] == f"{SOURCE_ENV} {var}"
    elif levels:
        assert str(got) == file_value.strip('"') or got == float(file_value.strip('"'))
        assert settings.sources[key] == SOURCE_FILE
    else:
        assert got == default
        assert settings.sources.get(key, SOURCE_DEFAULT) == SOURCE_DEFAULT


def test_precedence_table_covers_every_level_once(tmp_path: Path) -> None:
    """A value at every level in one run: each key is taken from its own highest source."""
    write(
        tmp_path,
        """
        [tool.imagegen]
        record_mode = "all"
        budget_usd = 5
        report = "from-file.json"

        [tool.imagegen.profiles.relayish]
        parent = "gpt-image-1"
        n_max = 2

        [[tool.imagegen.endpoints]]
        name = "relay"
        base_url = "https://relay.example.com/v1"
        api_key_env = "RELAY_API_KEY"
        image_model = "gpt-image-1-vip"
        timeout_s = 30
        """,
    )
    env = {"IMAGEGEN_BUDGET_USD": "2", "IMAGEGEN_RECORD_MODE": "once", "RELAY_API_KEY": KEY}
    settings = load(tmp_path, env=env, record_mode="none")
    src = settings.sources
    assert (settings.record_mode, src["record_mode"]) == ("none", SOURCE_CLI)
    assert (settings.budget_usd, src["budget_usd"]) == (2.0, "environment IMAGEGEN_BUDGET_USD")
    assert (settings.report, src["report"]) == (tmp_path / "from-file.json", SOURCE_FILE)
    assert src.get("cassette_dir") == SOURCE_DEFAULT
    assert src["endpoints.relay.timeout_s"] == SOURCE_FILE
    assert src["endpoints.relay.deadline_s"] == SOURCE_DEFAULT
    assert src["endpoints.relay.profile"].startswith(SOURCE_PROFILE)
    assert src["endpoints.relay.api_key"] == "environment RELAY_API_KEY"
    assert src["profiles.relayish.n_max"] == SOURCE_FILE
    assert src["profiles.relayish.sizes"] == SOURCE_PROFILE
    (ep,) = settings.endpoints
    assert ep.sources["timeout_s"] == SOURCE_FILE
    assert ep.sources["max_retries"] == SOURCE_DEFAULT


def test_resolve_takes_the_first_layer_in_table_order() -> None:
    layers = {
        cfg.ENV: {"record_mode": ("once", "environment X")},
        cfg.FILE: {"record_mode": ("all", SOURCE_FILE), "budget_usd": (3.0, SOURCE_FILE)},
        cfg.DEFAULT: {"budget_usd": (1.0, SOURCE_DEFAULT), "report": ("r", SOURCE_DEFAULT)},
    }
    values, sources = cfg.resolve("", layers)
    assert values == {"record_mode": "once", "budget_usd": 3.0, "report": "r"}
    assert sources == {
        "record_mode": "environment X",
        "budget_usd": SOURCE_FILE,
        "report": "default",
    }
    # CLI beats everything; a callable layer sees the values resolved before it.
    values, _ = cfg.resolve("", {**layers, cfg.CLI: {"record_mode": lambda seen: ("none", "cli")}})
    assert values["record_mode"] == "none"


def test_precedence_table_order_is_cli_env_file_profile_default() -> None:
    rank = {cfg.CLI: 0, cfg.ENV: 1, cfg.FILE: 2, cfg.PROFILE: 3, cfg.DEFAULT: 4}
    for key, order in cfg.PRECEDENCE:
        assert [rank[layer] for layer in order] == sorted(rank[layer] for layer in order), key


# ----------------------------------------------------------------------------- keys


def test_missing_key_is_fine_for_replay(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml())
    (ep,) = load(tmp_path).endpoints
    assert ep.api_key == ""
    rows = {key: (value, source) for key, value, source in load(tmp_path).describe()}
    assert rows["endpoints.relay.api_key"][0].startswith("missing")


@pytest.mark.parametrize("mode", ["once", "new_episodes", "all"])
def test_missing_key_is_an_error_for_live_modes(tmp_path: Path, mode: str) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml())
    message = refused(tmp_path, record_mode=mode)
    assert "set the environment variable RELAY_API_KEY" in message
    assert f"record mode {mode!r}" in message
    assert "--imagegen-record-mode=none" in message


def test_missing_openai_key_for_the_env_endpoint(tmp_path: Path) -> None:
    env = {"OPENAI_IMAGE_MODEL": "gpt-image-1", "IMAGEGEN_RECORD_MODE": "once"}
    assert "OPENAI_API_KEY" in refused(tmp_path, env=env)


def test_key_needed_only_for_selected_endpoints(tmp_path: Path) -> None:
    other = endpoint_toml(name='"other"', api_key_env='"OTHER_KEY"')
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml() + other)
    settings = load(tmp_path, env={"RELAY_API_KEY": KEY}, record_mode="once", endpoints=["relay"])
    assert [e.name for e in settings.selected_endpoints()] == ["relay"]
    assert settings.selected == ("relay",)
    with pytest.raises(ConfigError, match="OTHER_KEY"):
        load(tmp_path, env={"RELAY_API_KEY": KEY}, record_mode="once")


def test_loopback_endpoint_needs_no_key(tmp_path: Path) -> None:
    body = endpoint_toml(base_url='"http://localhost:8000/v1"', api_key_env=None)
    write(tmp_path, "[tool.imagegen]\n" + body)
    (ep,) = load(tmp_path, record_mode="all").endpoints
    assert ep.api_key == "" and ep.api_key_env is None


def test_third_party_host_without_api_key_env_in_live_mode(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(api_key_env=None))
    message = refused(tmp_path, record_mode="once", env={"OPENAI_API_KEY": KEY})
    assert "has no api_key_env" in message
    assert KEY not in message


def test_openai_host_defaults_to_openai_api_key(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml(base_url=None, api_key_env=None))
    (ep,) = load(tmp_path, env={"OPENAI_API_KEY": KEY}).endpoints
    assert ep.base_url == "https://api.openai.com/v1"
    assert (ep.api_key_env, ep.api_key) == ("OPENAI_API_KEY", KEY)
    assert ep.sources["api_key_env"] == SOURCE_DEFAULT


# ----------------------------------------------------------------------------- selection


def test_unknown_endpoint_name_lists_known_ones(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml() + endpoint_toml(name='"openai"'))
    message = refused(tmp_path, endpoints=["rely"])
    assert "--imagegen-endpoint rely" in message
    assert "Did you mean 'relay'?" in message
    assert "Known endpoints: relay, openai" in message


def test_selecting_the_reference_endpoint(tmp_path: Path) -> None:
    settings = load(tmp_path, endpoints=["reference"])
    assert settings.selected_endpoints()[0].is_reference
    with pytest.raises(ConfigError, match="Known endpoints: reference"):
        load(tmp_path, endpoints=["relay"])


def test_selected_endpoints_default_to_all(tmp_path: Path) -> None:
    write(tmp_path, "[tool.imagegen]\n" + endpoint_toml() + endpoint_toml(name='"b"'))
    settings = load(tmp_path)
    assert [e.name for e in settings.selected_endpoints()] == ["relay", "b"]
    assert settings.endpoint("b").name == "b"
    with pytest.raises(ConfigError, match="Did you mean 'b'"):
        settings.endpoint("B")


# ----------------------------------------------------------------------------- describe


def test_describe_never_shows_a_secret(tmp_path: Path) -> None:
    body = endpoint_toml(headers='{ "X-Team" = "imaging-team-7" }')
    write(tmp_path, "[tool.imagegen]\n" + body)
    settings = load(tmp_path, env={"RELAY_API_KEY": KEY}, record_mode="once")
    (ep,) = settings.endpoints
    assert ep.api_key == KEY
    assert set(ep.secrets) == {KEY, "imaging-team-7"}
    rows = settings.describe()
    text = repr(rows)
    assert KEY not in text and "imaging-team-7" not in text
    table = {key: (value, source) for key, value, source in rows}
    assert table["endpoints.relay.api_key"] == (
        "set via RELAY_API_KEY",
        "environment RELAY_API_KEY",
    )
    assert table["endpoints.relay.headers"][0] == "X-Team: ***"
    assert table["endpoints.relay.image_model"] == ("gpt-image-1", SOURCE_FILE)
    assert table["record_mode"] == ("once", SOURCE_CLI)
    assert KEY not in repr(settings)
    assert all(len(row) == 3 and all(isinstance(x, str) for x in row) for row in rows)


def test_describe_reference_endpoint(tmp_path: Path) -> None:
    table = {key: (value, source) for key, value, source in load(tmp_path).describe()}
    assert table["endpoints.reference.api_key"][0] == "built-in (reference server)"
    assert table["endpoints.reference.fallback"][0] == (
        "{quality=medium} -> {quality=low size=1024x1024}"
    )
    assert table["config_file"][0] == "(none)"


# ----------------------------------------------------------------------------- import cost


def test_importing_config_stays_light() -> None:
    code = (
        "import sys, pathlib, tempfile\n"
        "import pytest_imagegen.config as c\n"
        "root = pathlib.Path(tempfile.mkdtemp())\n"
        "c.load_settings(cli={}, env={'OPENAI_IMAGE_MODEL': 'gpt-image-1'}, rootdir=root)\n"
        "c.load_settings(cli={}, env={}, rootdir=root)  # reference: fallback checked\n"
        "heavy = ('openai', 'httpx2', 'vcr', 'PIL', 'hypothesis')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- misc


def test_config_file_source_for_the_ini_path(tmp_path: Path) -> None:
    path = write(tmp_path, "[tool.imagegen]\nbudget_usd = 3\n", "conf.toml")
    assert load(tmp_path, config_path=path).sources["config_file"] == "ini imagegen_config"
    assert load(tmp_path, config="conf.toml").sources["config_file"] == SOURCE_CLI


def test_reference_table_is_passed_through(tmp_path: Path) -> None:
    write(tmp_path, '[tool.imagegen.reference]\nlatency = { low = 0.5 }\ndefects = ["slow"]\n')
    settings = load(tmp_path)
    assert settings.reference == {"latency": {"low": 0.5}, "defects": ["slow"]}
    assert load(tmp_path / "elsewhere").reference is None
    write(tmp_path, "[tool.imagegen.reference]\nlatncy = 1\n")
    assert "Did you mean 'latency'?" in refused(tmp_path)


@pytest.mark.parametrize(
    ("table", "hint"),
    [
        ('[tool.imagegen.endpoints]\nname = "a"\nimage_model = "gpt-image-1"\n', "double brackets"),
        ("[tool.imagegen]\n" + endpoint_toml(fallback='{ quality = "low" }'), "list of override"),
    ],
)
def test_shape_mistakes_get_a_hint(tmp_path: Path, table: str, hint: str) -> None:
    write(tmp_path, table)
    assert hint in refused(tmp_path)


def test_paths_are_taken_from_rootdir(tmp_path: Path) -> None:
    write(tmp_path, '[tool.imagegen]\ncassette_dir = "rec/x"\nreport = "out/r.html"\n')
    settings = load(tmp_path)
    assert settings.cassette_dir == tmp_path / "rec" / "x"
    assert settings.report == tmp_path / "out" / "r.html"
    absolute = tmp_path / "abs"
    assert load(tmp_path, cassette_dir=str(absolute)).cassette_dir == absolute
