"""Upstream mode under pytest: ``pytest --imagegen`` against a gateway endpoint whose upstream
the plugin starts (``upstream = { listen = ... }``), recorded with what the upstream received
next to each cassette, replayed offline with the gateway gone, and deviation warnings as
pytest users expect them."""

from __future__ import annotations

import json
import socket

import pytest
from _gateway import GatewayProcess, Misbehaviour

from pytest_imagegen.checks import REGISTRY

pytest_plugins = ["pytester"]

UPSTREAM_KEY = "sk-upstream-of-plugin-gateway-0123456789"
CLIENT_KEY = "sk-client-of-plugin-gateway-9876543210"
SELECTED = [
    c.id
    for c in REGISTRY.values()
    if c.area == "gateway" or c.name in ("quota_is_not_retryable", "rate_limit_carries_retry_after")
]
# By check name: -k also matches the folders the suite is installed under.
SELECT = " or ".join(c.split(".", 1)[1] for c in SELECTED)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def project(pytester: pytest.Pytester, gateway_url: str, port: int) -> None:
    pytester.makepyprojecttoml(
        f"""
        [tool.imagegen]
        report = "report.json"

        [[tool.imagegen.endpoints]]
        name = "gw"
        base_url = "{gateway_url}"
        api_key_env = "GW_KEY"
        image_model = "gpt-image-1"
        chat_model = "gpt-4o-mini"
        timeout_s = 5
        deadline_s = 30
        upstream = {{ listen = "127.0.0.1:{port}", api_key_env = "UPSTREAM_KEY" }}
        """
    )


@pytest.fixture
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_KEY", CLIENT_KEY)
    monkeypatch.setenv("UPSTREAM_KEY", UPSTREAM_KEY)


def test_record_through_the_proxy_then_replay_offline(pytester: pytest.Pytester, keys) -> None:
    port = free_port()
    with GatewayProcess(f"http://127.0.0.1:{port}/v1", UPSTREAM_KEY) as gateway:
        project(pytester, gateway.base_url, port)
        record = pytester.runpytest(
            "--imagegen", "--imagegen-record-mode=once", "-k", SELECT, "-p", "no:cacheprovider"
        )
        record.assert_outcomes(passed=len(SELECTED))
    folder = pytester.path / "cassettes" / "gw" / "conformance"
    logs = sorted(p.name for p in folder.glob("*.upstream.json"))
    # Every check that sends through the gateway keeps what the upstream received.
    assert "gateway.params_forwarded.upstream.json" in logs
    assert "gateway.client_key_not_forwarded.upstream.json" in logs
    stored = json.loads((folder / "gateway.model_forwarded.upstream.json").read_text())
    first = stored["exchanges"][0]["upstream"][0]
    assert (first["path"], first["model"], first["key"]) == (
        "/v1/images/generations",
        "gpt-image-1",
        "upstream",
    )
    for path in folder.iterdir():
        text = path.read_text()
        assert UPSTREAM_KEY not in text and CLIENT_KEY not in text, path.name

    # The gateway is gone: the replay reads the cassettes and the upstream logs only.
    replay = pytester.runpytest("--imagegen", "-k", SELECT, "-p", "no:cacheprovider")
    replay.assert_outcomes(passed=len(SELECTED))
    report = json.loads((pytester.path / "report.json").read_text())
    statuses = {t["check"]: t["cassette_status"] for t in report["tests"]}
    assert statuses["gateway.params_forwarded"] == "replayed"


def test_deviations_warn_and_fail_under_w_error(pytester: pytest.Pytester, keys) -> None:
    port = free_port()
    with GatewayProcess(
        f"http://127.0.0.1:{port}/v1", UPSTREAM_KEY, Misbehaviour(code_to_status=True)
    ) as gateway:
        project(pytester, gateway.base_url, port)
        warned = pytester.runpytest(
            "--imagegen", "-k", "error_fields_preserved", "-p", "no:cacheprovider"
        )
        warned.assert_outcomes(passed=1, warnings=1)
        warned.stdout.fnmatch_lines(["*DeviationWarning: the gateway changed upstream error*"])
        report = json.loads((pytester.path / "report.json").read_text())
        (test,) = report["tests"]
        assert test["warned"] and "rewritten to the status string" in test["deviations"][0]

        failed = pytester.runpytest(
            "--imagegen",
            "-k",
            "error_fields_preserved",
            "-W",
            "error::pytest_imagegen.DeviationWarning",
            "-p",
            "no:cacheprovider",
        )
        failed.assert_outcomes(failed=1)
        failed.stdout.fnmatch_lines(["*rewritten to the status string*"])


def test_a_taken_listen_port_is_a_clear_failure(pytester: pytest.Pytester, keys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        project(pytester, "http://127.0.0.1:9/v1", port)
        result = pytester.runpytest("--imagegen", "-k", "model_forwarded", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)  # at setup, as its message
    result.stdout.fnmatch_lines(
        [f"*cannot start the upstream reference server on 127.0.0.1:{port}*"]
    )
    assert "Traceback" not in result.stdout.str()
