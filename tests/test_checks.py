"""The check registry and ``checks.run`` outside pytest, against the reference server."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_imagegen import checks
from pytest_imagegen.budget import Budget
from pytest_imagegen.checks import AREAS, REGISTRY, CheckSkipped, run, select_checks
from pytest_imagegen.checks.context import CheckContext
from pytest_imagegen.config import Endpoint, bind_reference, load_settings
from pytest_imagegen.errors import ConformanceFailure
from pytest_imagegen.profiles import get_profile
from pytest_imagegen.reference import ReferenceServer, key_digest


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    with ReferenceServer() as srv:
        yield srv


@pytest.fixture
def reference(server: ReferenceServer) -> Iterator[ReferenceServer]:
    server.reset()  # other tests use the server without resetting it
    yield server
    server.reset()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Endpoint:
    """The built-in reference endpoint, as settings resolve it with nothing configured."""
    settings = load_settings(cli={}, env={}, rootdir=tmp_path_factory.mktemp("empty"))
    (endpoint,) = settings.endpoints
    assert endpoint.is_reference and endpoint.base_url == ""
    return endpoint


def test_ids_are_area_dot_name_and_unique() -> None:
    assert len(REGISTRY) >= 20
    for check_id, entry in REGISTRY.items():
        assert check_id == f"{entry.area}.{entry.name}"
        assert re.fullmatch(r"[a-z_]+\.[a-z0-9_]+", check_id)
        assert entry.summary and entry.failure, check_id
    assert {entry.area for entry in REGISTRY.values()} == set(AREAS)


def test_registry_runs_areas_in_order_with_cost_last() -> None:
    order = [AREAS.index(entry.area) for entry in REGISTRY.values()]
    assert order == sorted(order)
    assert list(REGISTRY)[-1].startswith("cost.")


def test_select_by_id_area_and_pattern() -> None:
    assert [c.id for c in select_checks("errors.wrong_key_is_authentication")] == [
        "errors.wrong_key_is_authentication"
    ]
    assert {c.area for c in select_checks("fallback")} == {"fallback"}
    assert all(c.id.startswith("request_shape.rejects_") for c in select_checks("*.rejects_*"))
    with pytest.raises(ValueError, match="Did you mean"):
        select_checks("seperation")


def test_catalogue_lists_every_check_with_its_failure_text() -> None:
    text = checks.catalogue()
    for check_id, entry in REGISTRY.items():
        assert f"`{check_id}`" in text
        assert entry.failure in text


def test_run_against_the_reference_server_passes_everything(
    embedded: Endpoint, reference: ReferenceServer
) -> None:
    results = run(embedded, reference=reference, budget=Budget(1.0))
    # Every check but the gateway ones, which need an endpoint with an upstream.
    assert [r.id for r in results] == [c.id for c in REGISTRY.values() if not c.needs_upstream]
    failed = {r.id: r.message for r in results if r.status != "passed"}
    assert failed == {}
    latency = next(r for r in results if r.id == "efficiency.latency_and_success_rate")
    assert len(latency.data["latencies_s"]) == 3 and latency.data["rating"] == "excellent"


def test_fault_checks_are_skipped_without_the_server_handle(
    embedded: Endpoint, server: ReferenceServer
) -> None:
    endpoint = bind_reference(embedded, server)
    results = run(endpoint, select=["errors.quota_is_not_retryable", "fallback"])
    by_id = {r.id: r for r in results}
    skipped = by_id["errors.quota_is_not_retryable"]
    assert skipped.status == "skipped"
    assert skipped.message == (
        "needs fault injection: endpoint 'reference' is not the reference server and declares "
        "no upstream (see docs/gateways.md)"
    )
    assert by_id["fallback.chain_succeeds_within_deadline"].status == "passed"
    assert by_id["fallback.stalled_primary_falls_back"].status == "skipped"


@pytest.mark.parametrize(
    ("defect", "failing"),
    [
        ("drops_n", "response_shape.n_images"),
        ("quota_as_rate_limit", "errors.quota_is_not_retryable"),
        ("accepts_chat_model", "separation.chat_model_refused_by_images"),
    ],
)
def test_a_defect_fails_its_check_with_a_diagnosis(
    embedded: Endpoint, reference: ReferenceServer, defect: str, failing: str
) -> None:
    reference.defects.add(defect)
    (result,) = run(embedded, select=failing, reference=reference)
    assert result.status == "failed", result
    assert result.message


def test_failure_carries_the_endpoint_diagnosis(
    embedded: Endpoint, reference: ReferenceServer
) -> None:
    reference.defects.add("auth_wrong_status")
    (result,) = run(embedded, select="errors.wrong_key_is_authentication", reference=reference)
    assert result.status == "failed"
    assert result.diagnosis is not None and result.diagnosis.status == 500
    assert "expected authentication" in result.message


def test_budget_refusal_fails_the_check_with_the_figures(server: ReferenceServer) -> None:
    # The server configured as an ordinary (billable) endpoint.
    endpoint = Endpoint(
        name="local",
        base_url=server.base_url,
        api_key=server.api_key,
        image_model="gpt-image-1",
        profile=get_profile("gpt-image-1"),
    )
    (result,) = run(endpoint, select="response_shape.schema", budget=Budget(0.005))
    assert result.status == "failed"
    assert "would spend $0.0110, $0.0050 of $0.0050 left" in result.message
    assert "raise --imagegen-budget" in result.message
    assert len(server.log.generations) == 0  # refused before sending


def test_context_records_cost_of_live_billable_requests(server: ReferenceServer) -> None:
    endpoint = Endpoint(
        name="local",
        base_url=server.base_url,
        api_key=server.api_key,
        image_model="gpt-image-1",
        profile=get_profile("gpt-image-1"),
    )
    budget = Budget(1.0)
    ctx = CheckContext(endpoint, budget=budget)
    with ctx.closing():
        call = ctx.generate(quality="low", size="1024x1024", n=2)
    assert call.ok and len(call.images) == 2
    assert ctx.data["cost_usd"] == pytest.approx(0.022) == pytest.approx(budget.spent())
    assert ctx.data["attempts"] == 1 and ctx.data["successes"] == 1
    assert ctx.data["images"][0]["size"] == "1024x1024"
    assert ctx.sent[0].model == "gpt-image-1"


def test_check_skipped_is_not_a_failure() -> None:
    assert not issubclass(CheckSkipped, AssertionError)
    assert issubclass(ConformanceFailure, AssertionError)


def test_custom_profile_skips_the_refusal_checks(server: ReferenceServer) -> None:
    endpoint = Endpoint(
        name="lenient",
        base_url=server.base_url,
        api_key=server.api_key,
        image_model="gpt-image-1",
        profile=replace(get_profile("custom"), name="custom"),
    )
    results = run(endpoint, select="request_shape.rejects_*")
    assert {r.status for r in results} == {"skipped"}
    assert "lenient" in results[0].message


def test_check_modules_import_nothing_heavy_at_module_level() -> None:
    # Areas import openai/hypothesis/Pillow inside the check functions only.
    heavy = {"openai", "hypothesis", "vcr", "PIL", "httpx2"}
    for module in Path(checks.__file__).parent.glob("*.py"):
        tree = ast.parse(module.read_text())
        for node in tree.body:  # top level only; `if TYPE_CHECKING:` blocks are not run
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not {n.split(".")[0] for n in names} & heavy, (module.name, names)


def test_wrong_key_check_also_replaces_credential_headers(reference: ReferenceServer) -> None:
    endpoint = Endpoint(
        name="azure-like",
        base_url=reference.base_url,
        api_key=reference.api_key,
        image_model="gpt-image-1",
        profile=get_profile("gpt-image-1"),
        headers={"api-key": "sk-real-secret-key-123456789", "X-Team": "imaging"},
    )
    (result,) = run(endpoint, select="errors.wrong_key_is_authentication")
    assert result.status == "passed", result.message
    (logged,) = reference.log.generations
    assert logged.headers["api-key"].startswith("sk-im")  # the wrong key, masked by the log
    # Kept as configured (the log masks every header outside its allowlist, by length).
    assert logged.headers["x-team"] == "*" * len("imaging")
    assert key_digest("imaging") in logged.key_digests  # sent unchanged


def test_wrong_key_check_keeps_routing_headers_whose_names_contain_key(
    reference: ReferenceServer,
) -> None:
    """Gateways route by headers such as a provider or custom-host key: replacing those with
    the wrong key got the gateway's own refusal, a false alarm that hid real auth defects."""
    endpoint = Endpoint(
        name="gateway",
        base_url=reference.base_url,
        api_key=reference.api_key,
        image_model="gpt-image-1",
        profile=get_profile("gpt-image-1"),
        headers={"X-Provider-Key": "route-openai-images-eu", "X-Custom-Host-Token": "eu-west-01"},
    )
    for check in ("errors.wrong_key_is_authentication", "errors.error_envelopes_are_openai_shaped"):
        reference.reset()
        (result,) = run(endpoint, select=check)
        assert result.status == "passed", result.message
        wrong = [r for r in reference.log.generations if r.auth == "invalid"]
        assert wrong, check
        for logged in wrong:
            assert logged.headers["authorization"].startswith("Bearer sk-im")  # the wrong key
            assert logged.headers["x-provider-key"].startswith("route")  # left as configured
            assert logged.headers["x-provider-key"].endswith("s-eu")
            assert logged.headers["x-custom-host-token"] == "*" * len("eu-west-01")


def test_wrong_key_check_replaces_the_headers_an_endpoint_declares_as_credentials(
    reference: ReferenceServer,
) -> None:
    from pytest_imagegen.checks.error_answers import WRONG_KEY, wrong_key_headers

    endpoint = Endpoint(
        name="relay",
        base_url=reference.base_url,
        image_model="gpt-image-1",
        profile=get_profile("gpt-image-1"),
        headers={"X-Relay-Token": "tok-real-0123456789", "X-Route-Key": "eu"},
        credential_headers=("x-relay-token",),
    )
    assert wrong_key_headers(endpoint) == {"X-Relay-Token": WRONG_KEY, "X-Route-Key": "eu"}
    # Without the declaration, neither header is a credential and there is no key: nothing
    # to make wrong, so the check skips instead of proving nothing.
    plain = replace(endpoint, credential_headers=None)
    assert wrong_key_headers(plain) is None
    (result,) = run(plain, select="errors.wrong_key_is_authentication")
    assert result.status == "skipped"


def test_wrong_key_answered_400_with_an_authentication_message_passes_with_a_warning() -> None:
    """LiteLLM without a database answers a wrong key 400 "No connected db.": authentication by
    its message, so the check passes; the status loses that for SDK users, so it warns."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from pytest_imagegen.verdict import DeviationWarning

    class NoDatabase(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            error = {"message": "No connected db.", "type": "no_db_connection", "code": "400"}
            data = json.dumps({"error": {**error, "param": None}}).encode()
            self.send_response(400)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), NoDatabase)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = Endpoint(
            name="litellm-no-db",
            base_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1",
            api_key="sk-the-master-key-0000",
            image_model="gpt-image-1",
            profile=get_profile("gpt-image-1"),
            timeout_s=30,
        )
        with pytest.warns(DeviationWarning, match="answered HTTP 400, not 401"):
            (result,) = run(endpoint, select="errors.wrong_key_is_authentication")
        assert result.status == "warned" and result.passed, result.message
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_bug_while_reading_a_stream_is_not_blamed_on_the_endpoint(
    embedded: Endpoint, reference: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_imagegen.checks import context

    def broken(buffer: bytes) -> None:
        raise RuntimeError("a bug in the SSE parser")

    monkeypatch.setattr(context, "_sse_blocks", broken)
    ctx = CheckContext(bind_reference(embedded, reference), reference=reference)
    with ctx.closing(), pytest.raises(RuntimeError, match="a bug in the SSE parser"):
        ctx.stream(partial_images=1)
