"""Ways to name an endpoint beyond a plain config table: the IMAGEGEN_* variables for its
limits, a one-off ``--imagegen-base-url`` run, and Azure OpenAI (api_version, deployments)
end to end on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Imported here so that pytester's in-process runs, which restore sys.modules after each
# run, do not import them again every time (openai alone takes about a second).
import openai
import PIL.Image  # noqa: F401
import pytest
import vcr  # noqa: F401
import werkzeug.serving  # noqa: F401
from _support import DATA

import pytest_imagegen.cassettes
import pytest_imagegen.reference.app  # noqa: F401
from pytest_imagegen import classify, generate, names
from pytest_imagegen.config import (
    CLI_ENDPOINT_OPTIONS,
    SOURCE_CLI,
    SOURCE_ENV,
    SOURCE_FILE,
    ConfigError,
    ModelSeparationError,
    Settings,
    load_settings,
)
from pytest_imagegen.reference import ReferenceServer

pytest_plugins = ["pytester"]

API_VERSION = "2025-04-01-preview"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OPENAI_*/IMAGEGEN_*/AZURE_* variable of the machine leaks into the runs under test."""
    import os

    for name in list(os.environ):
        if name.startswith(("OPENAI_", "IMAGEGEN_", "AZURE_")):
            monkeypatch.delenv(name)


def load(
    root: Path, toml: str | None = None, *, env: dict[str, str] | None = None, **cli: Any
) -> Settings:
    if toml is not None:
        (root / "pyproject.toml").write_text("[tool.imagegen]\n" + toml)
    return load_settings(cli=cli, env=env or {}, rootdir=root)


def source(settings: Settings, endpoint: str, key: str) -> str:
    return settings.sources[f"endpoints.{endpoint}.{key}"]


RELAY = """
[[tool.imagegen.endpoints]]
name = "relay"
base_url = "https://relay.example.com/v1"
api_key_env = "RELAY_KEY"
image_model = "gpt-image-1"
timeout_s = 30
deadline_s = 120
fallback = [{ quality = "medium" }]
"""

# ----------------------------------------------------------------------------- environment


def test_env_endpoint_takes_its_limits_from_the_environment(tmp_path: Path) -> None:
    env = {
        "OPENAI_API_KEY": "sk-test-0123456789",
        "IMAGEGEN_TIMEOUT_S": "55",
        "IMAGEGEN_DEADLINE_S": "60",
        "IMAGEGEN_MAX_RETRIES": "1",
        "IMAGEGEN_FALLBACK": '[{"quality": "low"}, {"quality": "low", "size": "1024x1024"}]',
    }
    settings = load(tmp_path, env=env)
    endpoint = settings.endpoint("env")
    assert (endpoint.timeout_s, endpoint.deadline_s, endpoint.max_retries) == (55, 60, 1)
    assert endpoint.fallback == ({"quality": "low"}, {"quality": "low", "size": "1024x1024"})
    for key, var in (
        ("timeout_s", "IMAGEGEN_TIMEOUT_S"),
        ("deadline_s", "IMAGEGEN_DEADLINE_S"),
        ("max_retries", "IMAGEGEN_MAX_RETRIES"),
        ("fallback", "IMAGEGEN_FALLBACK"),
    ):
        assert source(settings, "env", key) == f"{SOURCE_ENV} {var}"
    rows = {key: (value, src) for key, value, src in settings.describe()}
    assert rows["endpoints.env.deadline_s"] == ("60", f"{SOURCE_ENV} IMAGEGEN_DEADLINE_S")


def test_environment_wins_over_the_config_file(tmp_path: Path) -> None:
    settings = load(tmp_path, RELAY, env={"IMAGEGEN_DEADLINE_S": "60", "IMAGEGEN_FALLBACK": "[]"})
    relay = settings.endpoint("relay")
    assert relay.deadline_s == 60 and source(settings, "relay", "deadline_s").startswith(SOURCE_ENV)
    assert relay.fallback == ()  # an empty list switches the file's chain off
    assert relay.timeout_s == 30 and source(settings, "relay", "timeout_s") == SOURCE_FILE


def test_the_builtin_reference_endpoint_keeps_its_own_limits(tmp_path: Path) -> None:
    settings = load(tmp_path, env={"IMAGEGEN_TIMEOUT_S": "55", "IMAGEGEN_DEADLINE_S": "60"})
    reference = settings.endpoint("reference")
    assert (reference.timeout_s, reference.deadline_s) == (2.0, 10.0)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"IMAGEGEN_TIMEOUT_S": "soon"},
            "environment variable IMAGEGEN_TIMEOUT_S='soon': Input should be a valid number",
        ),
        ({"IMAGEGEN_DEADLINE_S": "0"}, "IMAGEGEN_DEADLINE_S='0': Input should be greater than 0"),
        ({"IMAGEGEN_MAX_RETRIES": "11"}, "a whole number 0..10"),
        ({"IMAGEGEN_FALLBACK": "{quality: low}"}, "IMAGEGEN_FALLBACK is not valid JSON"),
        ({"IMAGEGEN_FALLBACK": '"low"'}, "must be a JSON list of objects, got a JSON str"),
        (
            {"IMAGEGEN_FALLBACK": '[{"qualty": "low"}]'},
            "IMAGEGEN_FALLBACK[0]: unknown key 'qualty'. Did you mean 'quality'?",
        ),
        ({"IMAGEGEN_FALLBACK": '[{"n": 0}]'}, "IMAGEGEN_FALLBACK[0].n = 0: Input should be"),
        (
            {"IMAGEGEN_FALLBACK": '[{"quality": "standard"}]'},
            "IMAGEGEN_FALLBACK[0] (endpoint 'relay', step 1 of 1): quality = 'standard' is not "
            "valid for profile gpt-image-1",
        ),
        (
            {"IMAGEGEN_TIMEOUT_S": "90", "IMAGEGEN_DEADLINE_S": "60"},
            "IMAGEGEN_TIMEOUT_S (endpoint 'relay'): timeout_s = 90 is longer than deadline_s",
        ),
        (
            {"IMAGEGEN_TIMEOUT_S": "300"},
            "IMAGEGEN_TIMEOUT_S (endpoint 'relay'): timeout_s = 300 is longer than deadline_s "
            "= 120",
        ),
    ],
)
def test_bad_environment_values_are_named(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, RELAY, env=env)
    assert expected in str(info.value)


# ----------------------------------------------------------------------------- one-off URL


def test_base_url_option_makes_a_one_off_endpoint(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        env={"OPENAI_API_KEY": "sk-test-0123456789", "IMAGEGEN_TIMEOUT_S": "20"},
        base_url="https://relay.example.com/v1",
        image_model="gpt-image-1-vip",
        chat_model="gpt-4o-all",
    )
    assert settings.selected == ("cli",)
    cli = settings.endpoint("cli")
    assert (cli.base_url, cli.image_model, cli.chat_model) == (
        "https://relay.example.com/v1",
        "gpt-image-1-vip",
        "gpt-4o-all",
    )
    assert cli.profile.name == "gpt-image-1"
    assert cli.api_key == "sk-test-0123456789" and cli.timeout_s == 20
    for key, option in CLI_ENDPOINT_OPTIONS.items():
        assert source(settings, "cli", key) == f"{SOURCE_CLI} {option}"
    assert source(settings, "cli", "api_key") == f"{SOURCE_ENV} OPENAI_API_KEY"


def test_command_line_wins_over_openai_variables(tmp_path: Path) -> None:
    env = {"OPENAI_BASE_URL": "https://other.example.com/v1", "OPENAI_IMAGE_MODEL": "dall-e-3"}
    settings = load(tmp_path, env=env, base_url="http://127.0.0.1:9/v1")
    cli = settings.endpoint("cli")
    assert cli.base_url == "http://127.0.0.1:9/v1"
    assert cli.image_model == "dall-e-3"  # not given on the command line: the variable's
    assert [e.name for e in settings.endpoints] == ["cli"]


def test_one_off_endpoint_next_to_configured_ones(tmp_path: Path) -> None:
    settings = load(tmp_path, RELAY, base_url="http://127.0.0.1:9/v1")
    assert [e.name for e in settings.endpoints] == ["relay", "cli"]
    assert [e.name for e in settings.selected_endpoints()] == ["cli"]
    both = load(tmp_path, base_url="http://127.0.0.1:9/v1", endpoints=["relay", "cli"])
    assert [e.name for e in both.selected_endpoints()] == ["relay", "cli"]


@pytest.mark.parametrize(
    ("cli", "error", "expected"),
    [
        (
            {"base_url": "http://127.0.0.1:9/v1", "image_model": "gpt-4o"},
            ModelSeparationError,
            "--imagegen-image-model: 'gpt-4o' is a chat model, not an image model; image "
            "requests would be sent to a chat model. Set --imagegen-image-model=gpt-image-1 "
            "(or another image model) and --imagegen-chat-model=gpt-4o.",
        ),
        (
            {"base_url": "relay.example.com"},
            ConfigError,
            "--imagegen-base-url: 'relay.example.com' is not an http(s) URL",
        ),
        (
            {"base_url": "https://relay.example.com/v1?key=sk-abcdef123456"},
            ConfigError,
            "put the key in OPENAI_API_KEY",
        ),
        ({"image_model": " "}, ConfigError, "--imagegen-image-model: give a value"),
        (
            {"base_url": "http://127.0.0.1:9/v1", "image_model": "acme-painter"},
            ConfigError,
            "--imagegen-image-model: 'acme-painter' is not a model pytest-imagegen knows",
        ),
    ],
)
def test_bad_command_line_endpoints(
    tmp_path: Path, cli: dict[str, str], error: type[Exception], expected: str
) -> None:
    with pytest.raises(error) as info:
        load(tmp_path, **cli)
    assert expected in str(info.value)
    assert "sk-abcdef123456" not in str(info.value)


def test_a_configured_endpoint_named_cli_clashes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="named 'cli', the name of the endpoint the command"):
        load(tmp_path, RELAY.replace('"relay"', '"cli"'), base_url="http://127.0.0.1:9/v1")


def test_plugin_options_match_the_settings(pytester: pytest.Pytester) -> None:
    assert tuple(CLI_ENDPOINT_OPTIONS.values()) == (
        names.OPTION_BASE_URL,
        names.OPTION_IMAGE_MODEL,
        names.OPTION_CHAT_MODEL,
    )
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        ["*--imagegen-base-url=URL*", "*--imagegen-image-model=MODEL*", "*--imagegen-chat-model*"]
    )


def test_endpoint_option_given_a_url_points_to_base_url(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--imagegen", "--imagegen-endpoint", "https://relay.example.com")
    assert result.ret == 4
    result.stderr.fnmatch_lines(
        [
            "*'https://relay.example.com' is a URL; --imagegen-endpoint takes endpoint names. "
            "For a one-off run against a URL, use "
            "--imagegen-base-url=https://relay.example.com*"
        ]
    )


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    with ReferenceServer(
        deployments={"images-prod": "gpt-image-1", "chat-prod": "gpt-4o-mini"}
    ) as srv:
        yield srv


@pytest.fixture
def ref(server: ReferenceServer) -> ReferenceServer:
    server.reset()
    return server


def test_one_off_run_of_the_suite_against_a_url(
    pytester: pytest.Pytester, ref: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ref.api_key)
    result = pytester.runpytest(
        "--imagegen",
        f"--imagegen-base-url={ref.base_url}",
        "--imagegen-image-model=gpt-image-1",
        "--imagegen-chat-model=gpt-4o-mini",
        "-k",
        "separation",
        "-p",
        "no:cacheprovider",
    )
    # The fifth separation check needs chat_images = "responses", which a one-off run has no
    # way to declare: it skips and says so.
    result.assert_outcomes(passed=4, skipped=1)
    result.stdout.fnmatch_lines(["imagegen: endpoints cli;*"])
    sent = ref.log.generations
    assert sent and {r.model for r in sent} <= {"gpt-image-1", "gpt-4o-mini"}
    assert any(r.model == "gpt-image-1" and r.auth == "ok" for r in sent)  # OPENAI_API_KEY


# ----------------------------------------------------------------------------- Azure


def azure_toml(server: ReferenceServer, **extra: str) -> str:
    lines = [
        "[[tool.imagegen.endpoints]]",
        'name = "azure"',
        f'base_url = "{server.url}"',
        'api_key_env = "AZ_KEY"',
        'image_model = "gpt-image-1"',
        'chat_model = "gpt-4o-mini"',
        f'api_version = "{API_VERSION}"',
        'deployments = { "gpt-image-1" = "images-prod", "gpt-4o-mini" = "chat-prod" }',
    ]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def test_azure_endpoint_settings(tmp_path: Path, ref: ReferenceServer) -> None:
    settings = load(tmp_path, azure_toml(ref), env={"AZ_KEY": ref.api_key})
    azure = settings.endpoint("azure")
    assert azure.is_azure and azure.api_version == API_VERSION
    assert azure.deployment("gpt-image-1") == "images-prod"
    assert azure.deployment("gpt-image-1-mini") == "gpt-image-1-mini"  # unlisted: own name
    assert azure.url("/images/generations", "gpt-image-1") == (
        f"{ref.url}/openai/deployments/images-prod/images/generations"
    )
    rows = {key: (value, src) for key, value, src in settings.describe()}
    assert rows["endpoints.azure.api_version"] == (API_VERSION, SOURCE_FILE)
    assert rows["endpoints.azure.deployments"] == (
        "gpt-image-1 -> images-prod, gpt-4o-mini -> chat-prod",
        SOURCE_FILE,
    )


def test_azure_hosts_read_the_key_the_sdk_reads(tmp_path: Path) -> None:
    toml = (
        '[[tool.imagegen.endpoints]]\nname = "azure"\nbase_url = "https://acme.openai.azure.com"\n'
        f'image_model = "gpt-image-1"\napi_version = "{API_VERSION}"\n'
    )
    settings = load(tmp_path, toml, env={"AZURE_OPENAI_API_KEY": "0123456789abcdef"})
    assert settings.endpoint("azure").api_key == "0123456789abcdef"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"api_version": '"2025"'},
            "'2025' is not an Azure OpenAI API version; use the dated version your resource "
            'supports, such as api_version = "2025-04-01-preview"',
        ),
        (
            {"api_version": None},
            "deployments are for Azure endpoints, which also need api_version",
        ),
        (
            {"deployments": '{ "gpt-image-1" = "my deployment" }'},
            "'my deployment' (for 'gpt-image-1') is not an Azure deployment name",
        ),
        (
            {"deployments": '{ "gpt-imag-1" = "images-prod" }'},
            "'gpt-imag-1' is not a model this endpoint calls (it calls 'gpt-image-1', "
            "'gpt-4o-mini'). Did you mean 'gpt-image-1'?",
        ),
        (
            {"base_url": '"https://acme.openai.azure.com/openai/deployments/images-prod"'},
            "an Azure endpoint's base_url is the resource URL",
        ),
    ],
)
def test_bad_azure_settings(
    tmp_path: Path, ref: ReferenceServer, change: dict[str, str | None], expected: str
) -> None:
    lines = []
    for line in azure_toml(ref).splitlines():
        key = line.split(" = ", 1)[0]
        if key in change:
            if change[key] is None:
                continue
            line = f"{key} = {change[key]}"
        lines.append(line)
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "\n".join(lines) + "\n")
    assert expected in str(info.value)


def test_azure_clients_reach_the_deployment(tmp_path: Path, ref: ReferenceServer) -> None:
    azure = load(tmp_path, azure_toml(ref), env={"AZ_KEY": ref.api_key}).endpoint("azure")
    client = azure.client()
    assert isinstance(client, openai.AzureOpenAI)
    answer = client.images.generate(model="gpt-image-1", prompt="a fox", quality="low")
    assert answer.data and answer.data[0].b64_json
    sent = ref.log.last
    assert sent is not None
    assert sent.path == "/openai/deployments/images-prod/images/generations"
    assert sent.query == f"api-version={API_VERSION}"
    assert sent.body["model"] == "images-prod" and sent.model == "gpt-image-1"
    assert "authorization" not in sent.headers and sent.headers["api-key"] != ref.api_key
    assert sent.auth == "ok" and sent.status == 200
    assert ref.log.generations == [sent]  # filtered by the OpenAI route it stands for

    # with_options (what generate() uses for each attempt) keeps the deployments.
    client.with_options(timeout=5).images.generate(model="gpt-image-1", prompt="a fox")
    assert ref.log.last.deployment == "images-prod"

    async def async_call() -> int:
        async_client = azure.async_client()
        assert isinstance(async_client, openai.AsyncAzureOpenAI)
        async with async_client:
            result = await async_client.images.generate(model="gpt-image-1", prompt="a cat")
            return len(result.data or [])

    assert asyncio.run(async_call()) == 1
    assert ref.log.last.deployment == "images-prod"
    assert ref.log.last.headers.get("x-stainless-async", "").startswith("async")


def test_azure_fallback_to_another_deployment(tmp_path: Path, ref: ReferenceServer) -> None:
    toml = azure_toml(ref, fallback='[{ model = "gpt-image-1-mini", quality = "low" }]')
    azure = load(tmp_path, toml, env={"AZ_KEY": ref.api_key}).endpoint("azure")
    ref.faults.add("server_error", times=1)
    outcome = generate(azure.client(), azure, "a fox", quality="high")
    assert outcome.ok, outcome.trace()
    assert [r.deployment for r in ref.log.generations] == ["images-prod", "gpt-image-1-mini"]
    assert [r.status for r in ref.log.generations] == [500, 200]


AZURE_ERRORS = {c["id"]: c for c in json.loads((DATA / "azure-errors.json").read_text())["cases"]}


def _raw(ref: ReferenceServer, path: str, key: str | None) -> tuple[int, dict[str, Any]]:
    from _support import HTTP

    headers = {"api-key": key} if key else {}
    response = HTTP.post(f"{ref.url}{path}", json={"prompt": "a fox"}, headers=headers)
    return response.status_code, response.json()


@pytest.mark.parametrize(
    ("case", "path", "key"),
    [
        (
            "azure-deployment-not-found",
            f"/openai/deployments/nope/images/generations?api-version={API_VERSION}",
            "good",
        ),
        (
            "azure-access-denied",
            f"/openai/deployments/images-prod/images/generations?api-version={API_VERSION}",
            "sk-wrong-key-0123456789",
        ),
        (
            "azure-access-denied",
            f"/openai/deployments/images-prod/images/generations?api-version={API_VERSION}",
            None,
        ),
        ("azure-missing-api-version", "/openai/deployments/images-prod/images/generations", "good"),
    ],
)
def test_reference_answers_azure_refusals_as_azure_does(
    ref: ReferenceServer, case: str, path: str, key: str | None
) -> None:
    status, body = _raw(ref, path, ref.api_key if key == "good" else key)
    expected = AZURE_ERRORS[case]
    assert status == expected["status"]
    assert body == json.loads(expected["body"])


def test_azure_refusals_are_classified(ref: ReferenceServer) -> None:
    for case, category in (
        ("azure-deployment-not-found", "model_not_found"),
        ("azure-access-denied", "authentication"),
    ):
        data = AZURE_ERRORS[case]
        diagnosis = classify((data["status"], {}, data["body"].encode()))
        assert diagnosis.category == category
        if case == "azure-deployment-not-found":
            assert "deployments table" in diagnosis.hint


def test_reference_refuses_an_unknown_model_in_its_deployments() -> None:
    with pytest.raises(ValueError, match="'dall-e-4' is not a model this server serves"):
        ReferenceServer(deployments={"x": "dall-e-4"})


def test_the_suite_passes_against_an_azure_endpoint(
    pytester: pytest.Pytester, ref: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole shipped suite, through AzureOpenAI, against the reference server's Azure
    paths: recorded once, then replayed offline."""
    monkeypatch.setenv("AZ_KEY", ref.api_key)
    pytester.makepyprojecttoml("[tool.imagegen]\n" + azure_toml(ref, timeout_s="5"))
    recorded = pytester.runpytest(
        "--imagegen", "--imagegen-record-mode=once", "-p", "no:cacheprovider"
    )
    recorded.assert_outcomes(passed=38, skipped=7)
    assert {r.path.split("/")[3] for r in ref.log} >= {"images-prod", "chat-prod"}
    uris = "".join(p.read_text() for p in (pytester.path / "cassettes").rglob("*.yaml"))
    assert f"/openai/deployments/images-prod/images/generations?api-version={API_VERSION}" in uris
    assert ref.api_key not in uris
    ref.reset()
    replayed = pytester.runpytest("--imagegen", "-p", "no:cacheprovider")
    replayed.assert_outcomes(passed=38, skipped=7)
    # Only the live-only streaming timing checks reach a loopback endpoint on replay (time to
    # a first partial image cannot be recorded); everything else replays.
    assert all(r.body.get("stream") is True for r in ref.log.generations), [
        r.body for r in ref.log.generations
    ]
