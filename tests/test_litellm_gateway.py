"""The conformance suite through a real LiteLLM proxy in front of the reference server.

Slow (a LiteLLM virtualenv is built on first use, and the proxy takes up to a minute to
start), so it is marked ``litellm`` and left out of the default ``pytest`` run; run it with::

    pytest -m litellm tests/test_litellm_gateway.py

It skips only when pip cannot install ``litellm[proxy]`` (the reason says what pip said).
Everything stays on 127.0.0.1: the reference server (the upstream), the proxy in front of it
(``drop_params`` on, then off; no database), and the suite run as users run it, in a pytest
subprocess whose JSON report and output give each check's verdict.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _litellm
import pytest

from pytest_imagegen.checks import REGISTRY
from pytest_imagegen.reference import ReferenceServer

pytestmark = pytest.mark.litellm

IMAGE_MODEL = "gpt-image-1"
CHAT_MODEL = "gpt-4o-mini"
SUITE_TIMEOUT_S = 900

#: Checks that need a fault injected into the endpoint: skipped for an endpoint that is not
#: the reference server itself.
FAULT_CHECKS = {check_id for check_id, entry in REGISTRY.items() if entry.needs_faults}


@pytest.fixture(scope="module")
def litellm_python() -> Path:
    """The python of the LiteLLM virtualenv (built on first use, then reused)."""
    try:
        return _litellm.ensure_venv()
    except _litellm.LiteLLMUnavailable as exc:
        pytest.skip(f"LiteLLM cannot be installed here, so this test cannot run: {exc}")


@pytest.fixture
def upstream() -> Iterator[ReferenceServer]:
    """The reference server the proxy forwards to, with a key of its own."""
    key = f"sk-upstream-{secrets.token_hex(12)}"
    with ReferenceServer(api_keys=[key]) as server:
        yield server


@pytest.fixture(params=[True, False], ids=["drop_params", "strict"])
def gateway(
    request: pytest.FixtureRequest,
    litellm_python: Path,
    upstream: ReferenceServer,
    tmp_path: Path,
) -> Iterator[tuple[_litellm.Proxy, str, bool]]:
    """A LiteLLM proxy in front of ``upstream``: (proxy, its master key, drop_params)."""
    drop_params = bool(request.param)
    master_key = f"sk-master-{secrets.token_hex(12)}"
    config = _litellm.proxy_config(
        upstream_url=upstream.base_url,
        upstream_key=upstream.api_key,
        master_key=master_key,
        drop_params=drop_params,
        image_model=IMAGE_MODEL,
        chat_model=CHAT_MODEL,
    )
    folder = tmp_path / "litellm"
    folder.mkdir()
    with _litellm.running_proxy(litellm_python, config, folder) as proxy:
        yield proxy, master_key, drop_params


def _run_suite(project: Path, base_url: str, key: str) -> tuple[dict[str, dict[str, Any]], str]:
    """Run ``pytest --imagegen`` against the gateway: (the report's tests by check, output)."""
    project.mkdir()
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [tool.imagegen]
            cassette_dir = "cassettes"

            [[tool.imagegen.endpoints]]
            name = "litellm"
            base_url = "{base_url}"
            api_key_env = "GATEWAY_KEY"
            image_model = "{IMAGE_MODEL}"
            chat_model = "{CHAT_MODEL}"
            timeout_s = 60
            """
        )
    )
    env = {
        k: v
        for k, v in __import__("os").environ.items()
        if not k.startswith(("OPENAI_", "IMAGEGEN_"))
    }
    env["GATEWAY_KEY"] = key
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--imagegen",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "-rA",
            "--imagegen-report=report.json",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUITE_TIMEOUT_S,
    )
    output = result.stdout + result.stderr
    report = project / "report.json"
    assert report.exists(), output
    tests = json.loads(report.read_text())["tests"]
    return {t["check"]: t for t in tests}, output


#: What LiteLLM 1.106.2 does to each check that does not pass, as observed: check id ->
#: {drop_params: (outcome, text the failure message or warning must contain)}. Every other
#: check passes (fault-injection checks are skipped: the endpoint is not the reference
#: server), with no DeviationWarning.
EXPECTED: dict[str, dict[bool, tuple[str, str]]] = {
    # drop_params: true removes response_format before the upstream sees it and answers 200.
    # Without it LiteLLM refuses it itself: 400 "Setting `response_format` is not
    # supported", whose param the classifier reads from the message.
    "request_shape.rejects_response_format": {
        True: ("failed", 'accepted {"response_format": "b64_json"} (HTTP 200)'),
    },
    "request_shape.invalid_requests_refused": {
        True: ("failed", "not refused as invalid_request naming 'response_format'"),
    },
    # With no database, a key that is not the master key gets 400 "No connected db.":
    # authentication by its message (the check passes), but not a 401 (a warning).
    "errors.wrong_key_is_authentication": {
        True: ("warned", "answered HTTP 400, not 401"),
        False: ("warned", "answered HTTP 400, not 401"),
    },
}


def _deviation_warnings(output: str) -> dict[str, str]:
    """Check id -> the DeviationWarning text pytest's warnings summary shows for it."""
    found: dict[str, str] = {}
    if "warnings summary" not in output:
        return found
    section = output.split("warnings summary", 1)[1].split("-- Docs:", 1)[0]
    current = None
    for line in section.splitlines():
        if line and not line[0].isspace() and "::" in line:
            current = line.split("::", 1)[1].split("[", 1)[0]
        elif current and "DeviationWarning:" in line:
            found[current] = line.split("DeviationWarning:", 1)[1].strip()
    return found


def _expected(check_id: str, drop_params: bool) -> tuple[str, str]:
    special = EXPECTED.get(check_id, {}).get(drop_params)
    if special is not None:
        return special
    if check_id in FAULT_CHECKS:
        return "skipped", "needs fault injection"
    return "passed", ""


def test_suite_verdicts_through_litellm(
    gateway: tuple[_litellm.Proxy, str, bool], tmp_path: Path
) -> None:
    """Each check's verdict through LiteLLM, and why: the failure's or warning's text."""
    proxy, master_key, drop_params = gateway
    results, output = _run_suite(tmp_path / "project", proxy.base_url, master_key)
    warned = _deviation_warnings(output)
    assert set(results) == set(REGISTRY), output
    seen: dict[str, tuple[str, str]] = {}
    for check_id, test in results.items():
        outcome = test["outcome"]
        text = test.get("message") or ""
        if outcome == "skipped":
            text = json.dumps(test)
        if outcome == "passed" and check_id in warned:
            outcome, text = "warned", warned[check_id]
        seen[check_id] = (outcome, text)
    mismatches = {
        check_id: {"expected": _expected(check_id, drop_params), "seen": seen[check_id]}
        for check_id in REGISTRY
        if seen[check_id][0] != _expected(check_id, drop_params)[0]
        or _expected(check_id, drop_params)[1] not in seen[check_id][1]
    }
    assert not mismatches, json.dumps(mismatches, indent=1) + "\n" + output[-4000:]
