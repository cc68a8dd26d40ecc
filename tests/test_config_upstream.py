"""Upstream mode in the configuration: ``upstream = { listen | url, ... }`` of an endpoint."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from pytest_imagegen.config import Settings, Upstream, load_settings, parse_listen
from pytest_imagegen.errors import ConfigError

GATEWAY = """
[[tool.imagegen.endpoints]]
name = "gateway"
base_url = "http://127.0.0.1:4000/v1"
api_key_env = "GATEWAY_KEY"
image_model = "gpt-image-1"
upstream = {upstream}
"""
UPSTREAM_KEY = "sk-upstream-key-never-printed-0123"
ADMIN_KEY = "admin-key-never-printed-0123"


def load(root: Path, upstream: str, env: dict[str, str] | None = None, **cli: Any) -> Settings:
    (root / "pyproject.toml").write_text(
        textwrap.dedent(GATEWAY.format(upstream=upstream)), encoding="utf-8"
    )
    return load_settings(cli=cli, env=env or {}, rootdir=root)


def refused(root: Path, upstream: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(root, upstream, env)
    return str(info.value)


def test_listen_mode_with_a_key(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        '{ listen = "127.0.0.1:18099", api_key_env = "UPSTREAM_KEY", '
        'model_map = { "gpt-image-1" = "gpt-image-1.5" } }',
        env={"UPSTREAM_KEY": UPSTREAM_KEY, "GATEWAY_KEY": "sk-gateway-client-0123456"},
    )
    (endpoint,) = settings.endpoints
    upstream = endpoint.upstream
    assert upstream is not None
    assert upstream.listen == ("127.0.0.1", 18099) and upstream.url is None
    assert upstream.base_url == "http://127.0.0.1:18099/v1"
    assert upstream.api_key == UPSTREAM_KEY
    assert upstream.upstream_model("gpt-image-1") == "gpt-image-1.5"
    assert upstream.upstream_model("dall-e-3") == "dall-e-3"
    # The upstream key is scrubbed like the endpoint's own, and never shown.
    assert UPSTREAM_KEY in endpoint.secrets
    rows = {key: value for key, value, _ in settings.describe()}
    assert rows["endpoints.gateway.upstream"].startswith("listen 127.0.0.1:18099")
    assert UPSTREAM_KEY not in repr(settings) and UPSTREAM_KEY not in str(rows)


def test_listen_mode_without_a_key_accepts_any(tmp_path: Path) -> None:
    (endpoint,) = load(tmp_path, '{ listen = "localhost:18099" }').endpoints
    assert endpoint.upstream == Upstream(listen=("127.0.0.1", 18099))
    assert "any key accepted" in endpoint.upstream.describe()


def test_url_mode_reads_the_admin_key(tmp_path: Path) -> None:
    (endpoint,) = load(
        tmp_path,
        '{ url = "http://127.0.0.1:8000", admin_key_env = "REF_ADMIN" }',
        env={"REF_ADMIN": ADMIN_KEY},
    ).endpoints
    assert endpoint.upstream is not None
    assert endpoint.upstream.base_url == "http://127.0.0.1:8000/v1"
    assert endpoint.upstream.admin_key == ADMIN_KEY and ADMIN_KEY in endpoint.secrets


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        ('{ listen = "127.0.0.1:18099", url = "http://x:1/v1" }', "both listen and url"),
        ('{ api_key_env = "UPSTREAM_KEY" }', "neither listen nor url"),
        ('{ listen = "18099" }', "is not HOST:PORT"),
        ('{ listen = "127.0.0.1:0" }', "must be a fixed port 1-65535"),
        ('{ listen = "127.0.0.1:99999" }', "must be a fixed port"),
        ('{ listen = "0.0.0.0:18099" }', "is not a loopback address"),
        ('{ listen = "10.0.0.5:18099" }', "is not a loopback address"),
        ('{ listen = "ref.example.com:18099" }', "give a loopback IP address"),
        ('{ listen = "127.0.0.1:18099", admin_key_env = "X" }', "admin_key_env belongs with url"),
        ('{ url = "http://ref:8000/v1" }', "url needs admin_key_env"),
        ('{ url = "ftp://ref/v1", admin_key_env = "X" }', "is not an http(s) URL"),
        ('{ listen = "127.0.0.1:18099", api_key_env = "no spaces" }', "NAME of an environment"),
        ('{ listen = "127.0.0.1:18099", port = 1 }', "unknown key 'port'"),
        ('{ listen = "127.0.0.1:18099", model_map = { "gpt-image-1" = "" } }', "must not be empty"),
    ],
)
def test_bad_upstreams_are_clear_errors(tmp_path: Path, upstream: str, expected: str) -> None:
    message = refused(tmp_path, upstream)
    assert expected in message
    assert '[[tool.imagegen.endpoints]] name = "gateway"' in message or "upstream" in message


def test_missing_env_vars_are_named(tmp_path: Path) -> None:
    # A loopback gateway runs live even in record mode none: the variables are needed.
    message = refused(
        tmp_path,
        '{ url = "http://127.0.0.1:8000/v1", admin_key_env = "REF_ADMIN", '
        'api_key_env = "UPSTREAM_KEY" }',
    )
    assert "upstream.admin_key_env names REF_ADMIN, which is not set" in message
    assert "upstream.api_key_env names UPSTREAM_KEY, which is not set" in message


def test_missing_env_vars_are_fine_when_replaying_a_remote_gateway(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        textwrap.dedent(
            GATEWAY.replace("http://127.0.0.1:4000/v1", "https://gw.example.com/v1").format(
                upstream='{ url = "https://ref.example.com/v1", admin_key_env = "REF_ADMIN" }'
            )
        ),
        encoding="utf-8",
    )
    settings = load_settings(cli={}, env={}, rootdir=tmp_path)
    assert settings.endpoints[0].upstream is not None
    assert settings.endpoints[0].upstream.admin_key == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:18099", ("127.0.0.1", 18099)), ("[::1]:8000", ("::1", 8000))],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected
    assert Upstream(listen=expected).base_url.startswith("http://")
