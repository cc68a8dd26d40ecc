"""The conformance suite through a real LiteLLM proxy in front of the reference server.

Slow (a LiteLLM virtualenv is built on first use, and the proxy takes up to a minute to
start), so it is marked ``litellm`` and left out of the default ``pytest`` run; run it with::

    pytest -m litellm tests/test_litellm_gateway.py

It skips only when pip cannot install ``litellm[proxy]`` (the reason says what pip said).
Everything stays on 127.0.0.1: the reference server (the upstream, with a key of its own),
the proxy in front of it (``drop_params`` on, then off; no database), and the checks.

Every registered check runs through the proxy with ``checks.run`` and the upstream declared
(so the fault-injection checks script their faults upstream and the ``gateway`` checks see
what the upstream received); the verdict of each, and why, is asserted against what LiteLLM
1.106.2 was observed to do (:data:`EXPECTED`). A few checks also run as users run them,
``pytest --imagegen`` in a subprocess with the upstream declared in ``pyproject.toml`` (a
reference server reached through its control API), to show the same verdicts reach the
report and pytest's warnings summary.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import _litellm
import pytest

from pytest_imagegen.budget import Budget
from pytest_imagegen.checks import REGISTRY, CheckResult, run
from pytest_imagegen.config import Endpoint, Upstream
from pytest_imagegen.profiles import get_profile
from pytest_imagegen.reference import ReferenceServer
from pytest_imagegen.verdict import DeviationWarning

pytestmark = pytest.mark.litellm

IMAGE_MODEL = "gpt-image-1"
CHAT_MODEL = "gpt-4o-mini"
SUITE_TIMEOUT_S = 900

#: What LiteLLM 1.106.2 does to each check that does not simply pass, as observed: check id
#: -> {drop_params: (status, text its message must contain)}, where one entry stands for both
#: settings when it has the key ``None``. Every other check passes.
EXPECTED: dict[str, dict[bool | None, tuple[str, str]]] = {
    # drop_params: true removes response_format before the upstream sees it and answers
    # 200. Without it LiteLLM refuses it itself: 400 "Setting `response_format` is not
    # supported", whose param the classifier reads from the message (so the checks pass).
    "request_shape.rejects_response_format": {
        True: ("failed", 'the gateway dropped {"response_format": "b64_json"}'),
    },
    "request_shape.invalid_requests_refused": {
        True: ("failed", "the gateway dropped it"),
    },
    # No database: a key that is not the master key gets 400 "No connected db.", which is
    # authentication by its message (not a request parameter), but not a 401.
    "errors.wrong_key_is_authentication": {None: ("warned", "answered HTTP 400, not 401")},
    # A one-off upstream 429, quota or 500 is retried by LiteLLM until it succeeds: the client
    # gets 200 and never sees the error the check scripted.
    "errors.rate_limit_carries_retry_after": {
        None: ("failed", "a 429 rate limit was answered with HTTP 200")
    },
    "errors.quota_is_not_retryable": {
        None: ("failed", "exhausted quota was answered with HTTP 200")
    },
    "errors.server_error_is_retryable": {
        None: ("failed", "a 500 server error was answered with HTTP 200")
    },
    "fallback.non_retryable_stops_at_once": {None: ("failed", "a quota failure ended as success")},
    # The endpoint has no fallback chain (a stall would cost timeout_s per run).
    "fallback.stalled_primary_falls_back": {None: ("skipped", "has no fallback chain")},
    # An upstream 500 on every attempt: LiteLLM's retries times the OpenAI client's.
    "gateway.attempts_within_limits": {None: ("warned", "upstream attempts for one client")},
    "gateway.upstream_errors_reported": {
        None: ("warned", "upstream errors hidden by the gateway's retries")
    },
    "gateway.non_retryable_not_retried": {
        None: ("failed", "retried non-retryable upstream errors: insufficient_quota (429)")
    },
    "gateway.error_fields_preserved": {
        None: ("warned", "`code` 'insufficient_quota' became '429' (rewritten to the status")
    },
    "gateway.retry_after_preserved": {None: ("failed", "the gateway's 429 has no Retry-After")},
    # The test's endpoint declares no Responses tool path.
    "separation.chat_images_through_responses": {
        None: ("skipped", 'does not declare chat_images = "responses"')
    },
    # Edits: LiteLLM's own 400s carry the status as `code` and no `param`, so refusals cannot
    # name what was wrong; the JSON variant (image references) is refused outright; there is
    # no variations route (404 Not Found).
    "edits.mask_of_another_size_refused": {
        None: ("failed", "naming param None; expected invalid_request naming 'mask'")
    },
    "edits.non_image_file_refused": {
        None: ("failed", "naming param None; expected invalid_request naming 'image'")
    },
    "edits.json_image_references": {None: ("failed", "a JSON edit with an image reference failed")},
    "edits.variations_only_where_served": {
        None: ("failed", "refused as model_not_found naming param None")
    },
    # Streaming: LiteLLM answers every streamed image request with a 500 ("'str' object has
    # no attribute 'model_dump'"): it cannot relay image SSE.
    "streaming.events_in_order": {None: ("failed", "HTTP 500 code='500'")},
    "streaming.no_more_partials_than_asked": {None: ("failed", "HTTP 500 code='500'")},
    "streaming.completed_with_usage": {None: ("failed", "HTTP 500 code='500'")},
    "streaming.edit_events_in_order": {None: ("failed", "HTTP 500 code='500'")},
    "streaming.first_partial_within_timeout": {None: ("failed", "HTTP 500 code='500'")},
    "streaming.not_buffered": {None: ("failed", "HTTP 500 code='500'")},
}


def expected(check_id: str, drop_params: bool) -> tuple[str, str]:
    """The status and message text :data:`EXPECTED` gives one check ("passed" otherwise)."""
    table = EXPECTED.get(check_id, {})
    return table.get(drop_params) or table.get(None) or ("passed", "")


def test_expected_verdicts_name_registered_checks() -> None:
    """A renamed check must not leave a stale expectation behind that nothing reads."""
    assert set(EXPECTED) <= set(REGISTRY)


@dataclass(frozen=True)
class UpstreamServer:
    """The reference server the proxy forwards to, and the key the proxy must send it."""

    server: ReferenceServer
    key: str
    admin_key: str


@pytest.fixture(scope="module")
def litellm_python() -> Path:
    """The python of the LiteLLM virtualenv (built on first use, then reused)."""
    try:
        return _litellm.ensure_venv()
    except _litellm.LiteLLMUnavailable as exc:
        pytest.skip(f"LiteLLM cannot be installed here, so this test cannot run: {exc}")


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    """The upstream: a reference server accepting only the proxy's upstream key."""
    key = f"sk-upstream-{secrets.token_hex(12)}"
    admin_key = f"admin-{secrets.token_hex(12)}"
    with ReferenceServer(api_keys=[key], admin_key=admin_key) as server:
        yield UpstreamServer(server, key, admin_key)


@pytest.fixture(scope="module", params=[True, False], ids=["drop_params", "strict"])
def gateway(
    request: pytest.FixtureRequest,
    litellm_python: Path,
    upstream: UpstreamServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[_litellm.Proxy, str, bool]]:
    """A LiteLLM proxy in front of ``upstream``: (proxy, its master key, drop_params); one
    per setting, shared by the tests of this module."""
    drop_params = bool(request.param)
    master_key = f"sk-master-{secrets.token_hex(12)}"
    config = _litellm.proxy_config(
        upstream_url=upstream.server.base_url,
        upstream_key=upstream.key,
        master_key=master_key,
        drop_params=drop_params,
        image_model=IMAGE_MODEL,
        chat_model=CHAT_MODEL,
    )
    folder = tmp_path_factory.mktemp("litellm")
    with _litellm.running_proxy(litellm_python, config, folder) as proxy:
        yield proxy, master_key, drop_params


def _endpoint(proxy: _litellm.Proxy, master_key: str, upstream: UpstreamServer) -> Endpoint:
    return Endpoint(
        name="litellm",
        base_url=proxy.base_url,
        image_model=IMAGE_MODEL,
        profile=get_profile(IMAGE_MODEL),
        api_key=master_key,
        chat_model=CHAT_MODEL,
        timeout_s=60.0,
        upstream=Upstream(url=upstream.server.base_url, api_key=upstream.key),
    )


def _run_checks(
    endpoint: Endpoint, upstream: UpstreamServer
) -> tuple[list[CheckResult], list[str]]:
    """Every check through the proxy: (results, the DeviationWarning texts issued)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeviationWarning)
        results = run(endpoint, reference=upstream.server, budget=Budget(1.0))
    upstream.server.check()
    issued = [str(w.message) for w in caught if issubclass(w.category, DeviationWarning)]
    return results, issued


def test_every_check_through_litellm_has_its_observed_verdict(
    gateway: tuple[_litellm.Proxy, str, bool], upstream: UpstreamServer
) -> None:
    """Each check's verdict through LiteLLM, and why (its failure or warning text)."""
    proxy, master_key, drop_params = gateway
    upstream.server.reset()
    results, issued = _run_checks(_endpoint(proxy, master_key, upstream), upstream)
    assert {r.id for r in results} == set(REGISTRY)
    mismatches = {
        r.id: {"expected": expected(r.id, drop_params), "seen": (r.status, r.message)}
        for r in results
        if r.status != expected(r.id, drop_params)[0]
        or expected(r.id, drop_params)[1] not in r.message
    }
    assert not mismatches, json.dumps(mismatches, indent=1) + "\n" + proxy.log_tail()
    # A warned check issued its DeviationWarning (pytest users see it, -W error fails it).
    for result in results:
        if result.status == "warned":
            assert any(text in result.message for text in issued), result.id


#: Checks ``pytest --imagegen`` runs against the proxy in a subprocess (a few, for speed).
PLUGIN_CHECKS = (
    "request_shape.rejects_response_format",
    "errors.wrong_key_is_authentication",
    "gateway.retry_after_preserved",
    "gateway.error_fields_preserved",
)


def test_pytest_imagegen_against_litellm_shows_the_verdicts(
    gateway: tuple[_litellm.Proxy, str, bool], upstream: UpstreamServer, tmp_path: Path
) -> None:
    """``pytest --imagegen`` as users run it against the proxy, its upstream declared as a
    reference server started elsewhere (``url`` and its control API): the same verdicts
    reach the JSON report, and the warnings pytest's warnings summary."""
    proxy, master_key, drop_params = gateway
    upstream.server.reset()
    project = tmp_path / "project"
    project.mkdir()
    upstream_table = (
        f'url = "{upstream.server.base_url}", api_key_env = "UPSTREAM_KEY", '
        'admin_key_env = "UPSTREAM_ADMIN_KEY"'
    )
    (project / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [[tool.imagegen.endpoints]]
            name = "litellm"
            base_url = "{proxy.base_url}"
            api_key_env = "GATEWAY_KEY"
            image_model = "{IMAGE_MODEL}"
            chat_model = "{CHAT_MODEL}"
            timeout_s = 60
            upstream = {{ {upstream_table} }}
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "IMAGEGEN_"))}
    env.update(
        GATEWAY_KEY=master_key, UPSTREAM_KEY=upstream.key, UPSTREAM_ADMIN_KEY=upstream.admin_key
    )
    selected = " or ".join(check.split(".", 1)[1] for check in PLUGIN_CHECKS)
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "--imagegen", "-k", selected),
            *("-p", "no:cacheprovider", "--imagegen-report=report.json"),
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
    tests = {t["check"]: t for t in json.loads(report.read_text())["tests"]}
    assert set(tests) == set(PLUGIN_CHECKS), output
    for check_id, test in tests.items():
        status, text = expected(check_id, drop_params)
        if status == "warned":
            assert test["outcome"] == "warned" and test["warned"], (check_id, output)
            assert any(text in d for d in test["deviations"]), (check_id, test)
            assert "DeviationWarning" in output and text in output, check_id
        else:
            assert test["outcome"] == status and not test["warned"], (check_id, output)
            assert text in (test["message"] or ""), (check_id, test)
    assert result.returncode == 1, output  # retry_after_preserved fails with either setting
