"""pytest glue for pytest-imagegen: options, markers, fixtures and hooks, nothing else.

Each hook or fixture hands its work to the module named for it: the run state in
:mod:`~pytest_imagegen.state`; the shipped suite, the marker, each test's cassette and a
suite check's context in :mod:`~pytest_imagegen.suite`; settings in
:mod:`~pytest_imagegen.config`; cassettes in :mod:`~pytest_imagegen.cassettes`; the
fixtures' clients and their hooks in :mod:`~pytest_imagegen.clients`; the spend guard in
:mod:`~pytest_imagegen.budget`; the per-test data in :mod:`~pytest_imagegen.testdata`; the
hooks feeding the report in :mod:`~pytest_imagegen.reporting` and the report in
:mod:`~pytest_imagegen.report`. Nothing in the package imports this module.

This module is imported by every pytest run of an environment that has the package
installed, so it imports nothing but pytest, the standard library and those light modules
at module level; everything else is imported inside hooks and fixtures, when
``--imagegen`` is given or an imagegen fixture is used.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_imagegen.names import MARKER_HELP
from pytest_imagegen.options import add_options
from pytest_imagegen.reporting import Reporting, shorten_own_error
from pytest_imagegen.state import run_state
from pytest_imagegen.suite import (
    CALL_ERROR,
    SUITE_ATTRIBUTE,
    add_suite,
    check_context,
    existing_data,
    item_cassette,
    item_data,
    item_endpoint_name,
    live_skip_reason,
    marked_cassette,
    module_name,
    parametrize_endpoints,
    suite_module,
    uses_imagegen,
)

if TYPE_CHECKING:
    import openai

    from pytest_imagegen.budget import Budget
    from pytest_imagegen.cassettes import CassetteUse
    from pytest_imagegen.checks.context import CheckContext
    from pytest_imagegen.config import Endpoint, Settings
    from pytest_imagegen.pool import ConnectionPools
    from pytest_imagegen.reference import ReferenceServer
    from pytest_imagegen.traffic import Traffic
    from pytest_imagegen.upstream import Upstreams

# --------------------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


# --------------------------------------------------------------------------- start-up


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKER_HELP:
        config.addinivalue_line("markers", line)
    state = run_state(config)
    if not state.is_worker:
        config.pluginmanager.register(Reporting(state), "imagegen-reporting")
    if not state.enabled:
        return
    from pytest_imagegen.errors import ConfigError

    try:
        settings = state.settings()
        state.reference_options()
        if not state.is_worker:
            settings.check_outputs()
    except ConfigError as exc:
        # Exit code 4 with the message as written, no traceback.
        raise pytest.UsageError(str(exc)) from None
    add_suite(config)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    state = run_state(config)
    if not state.enabled:
        return None
    settings = state.settings()
    names = ", ".join(e.name for e in settings.selected_endpoints())
    return [
        f"imagegen: endpoints {names}; record mode {settings.record_mode}; budget "
        f"${settings.budget_usd:.2f}; cassettes {settings.cassette_dir}"
    ]


# --------------------------------------------------------------------------- collection


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path: Path, parent: Any) -> Any:
    return suite_module(module_path, parent)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Any:
    # The suite module exposes one function that makes its items (check ids as names).
    if name == SUITE_ATTRIBUTE and callable(obj) and isinstance(collector, pytest.Module):
        return obj(collector)
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_endpoints(metafunc)


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    for item in items:
        if uses_imagegen(item):
            item_data(item)


def pytest_deselected(items: Sequence[pytest.Item]) -> None:
    if items:
        run_state(items[0].config).deselected += len(items)


# --------------------------------------------------------------------------- running


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    if not session.config.option.collectonly and any(uses_imagegen(i) for i in session.items):
        from pytest_imagegen.pool import preload

        session.config.add_cleanup(preload())


def pytest_runtest_setup(item: pytest.Item) -> None:
    reason = live_skip_reason(item)
    if reason is not None:
        pytest.skip(reason)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    error = call.excinfo.value if call.excinfo is not None else None
    if error is not None and call.when in ("setup", "call"):
        if call.when == "call":
            item.stash[CALL_ERROR] = error
        shorten_own_error(item, error, report)
    data = existing_data(item)
    if data is None:
        return report
    from pytest_imagegen.report import finish_report

    check = getattr(item, "imagegen_check", None)
    state = run_state(item.config)
    finish_report(
        report,
        data,
        error,
        expected=check.summary if check is not None else None,
        settings=state.settings_or_none() if state.enabled else None,
    )
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = run_state(session.config)
    if state.is_worker or state.collector is None:
        return
    settings = state.settings_or_none()
    if settings is None:
        return
    # Unused cassettes are only judged on a run that selected everything: a ``-k`` run
    # leaves most cassettes unplayed on purpose.
    if not state.narrowed():
        state.collector.find_unused_cassettes()
    if settings.report is not None:
        state.report_path = state.collector.write(settings.report)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = run_state(config)
    if state.is_worker or state.collector is None:
        return
    lines = state.collector.terminal_lines(config.get_verbosity())
    if lines or state.report_path:
        terminalreporter.section("imagegen")
        for line in lines:
            terminalreporter.write_line(line)
        if state.report_path is not None:
            terminalreporter.write_line(f"imagegen report written to {state.report_path}")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def imagegen_settings(request: pytest.FixtureRequest) -> Settings:
    """The resolved pytest-imagegen settings (endpoints, record mode, budget, cassette dir)."""
    settings = run_state(request.config).settings_or_fail()
    if any(e.is_reference and not e.base_url for e in settings.endpoints):
        from pytest_imagegen.config import bind_reference

        server = request.getfixturevalue("imagegen_reference_server")
        endpoints = tuple(bind_reference(e, server) for e in settings.endpoints)
        settings = replace(settings, endpoints=endpoints)
    return settings


@pytest.fixture(scope="session")
def imagegen_reference_listen_address() -> tuple[str, int]:
    """Override point: (host, port) the embedded reference server binds to (127.0.0.1, any)."""
    return ("127.0.0.1", 0)


@pytest.fixture(scope="session")
def imagegen_reference_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Override point: ReferenceServer keyword arguments (latency, defects from the environment)."""
    return run_state(request.config).reference_options_or_fail()


@pytest.fixture(scope="session")
def imagegen_reference_server(
    imagegen_reference_listen_address: tuple[str, int],
    imagegen_reference_options: dict[str, Any],
) -> Iterator[ReferenceServer]:
    """Session factory: the reference server, started on first use, stopped at session end."""
    from pytest_imagegen.reference import ReferenceServer

    host, port = imagegen_reference_listen_address
    server = ReferenceServer(host=host, port=port, **imagegen_reference_options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def imagegen_reference(imagegen_reference_server: ReferenceServer) -> Iterator[ReferenceServer]:
    """The reference server for one test: faults, log and defects reset before and after it."""
    server = imagegen_reference_server
    # Before: requests other fixtures sent to the shared server (imagegen_client against the
    # reference endpoint) must not show up in this test's log. After: stalls are released.
    server.reset()
    try:
        yield server
        server.check()  # an error inside the server's thread fails the test that caused it
    finally:
        server.reset()


@pytest.fixture(scope="session")
def imagegen_budget(request: pytest.FixtureRequest, imagegen_settings: Settings) -> Budget:
    """The spend guard: reserves each live request's estimated price against budget_usd."""
    from pytest_imagegen.budget import Budget, shared_state_dir

    return Budget(imagegen_settings.budget_usd, shared_state_dir(request.config))


@pytest.fixture
def imagegen_endpoint(request: pytest.FixtureRequest, imagegen_settings: Settings) -> Endpoint:
    """The endpoint of this test; tests using it run once per selected endpoint (id = name)."""
    name = getattr(request, "param", None) or item_endpoint_name(request.node)
    if name is None:
        name = imagegen_settings.selected_endpoints()[0].name
    endpoint = imagegen_settings.endpoint(name)
    if endpoint.is_reference and not endpoint.base_url:  # settings bound it already
        from pytest_imagegen.config import bind_reference

        return bind_reference(endpoint, request.getfixturevalue("imagegen_reference_server"))
    return endpoint


@pytest.fixture(scope="session")
def _imagegen_pools() -> Iterator[ConnectionPools]:
    """The session's connection pools, one per endpoint, shared by the per-test clients."""
    from pytest_imagegen.pool import ConnectionPools

    pools = ConnectionPools()
    try:
        yield pools
    finally:
        pools.close()


@pytest.fixture
def _imagegen_test_cassette(
    request: pytest.FixtureRequest, imagegen_endpoint: Endpoint, imagegen_settings: Settings
) -> Iterator[CassetteUse]:
    """The test's cassette, shared by its clients (imagegen_client, imagegen_async_client)."""
    item = request.node
    with item_cassette(
        item, imagegen_endpoint, imagegen_settings, module_name(item), item.name
    ) as cassette:
        yield cassette


@pytest.fixture
def imagegen_requests(imagegen_settings: Settings) -> Traffic:
    """What this test's imagegen clients sent and got back (any endpoint, live or replayed)."""
    from pytest_imagegen.traffic import for_endpoints

    return for_endpoints(imagegen_settings.endpoints)


@pytest.fixture
def imagegen_client(
    request: pytest.FixtureRequest,
    imagegen_endpoint: Endpoint,
    imagegen_budget: Budget,
    imagegen_requests: Traffic,
    _imagegen_test_cassette: CassetteUse,
    _imagegen_pools: ConnectionPools,
) -> Iterator[openai.OpenAI]:
    """An openai.OpenAI bound to the endpoint, with the test's cassette and the budget guard."""
    from pytest_imagegen.clients import fixture_client, fixture_hooks

    hooks = fixture_hooks(
        imagegen_endpoint,
        imagegen_budget,
        _imagegen_test_cassette,
        imagegen_requests,
        item_data(request.node),
    )
    transport = _imagegen_pools.transport(imagegen_endpoint)
    client = fixture_client(imagegen_endpoint, hooks, transport=transport)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def imagegen_async_client(
    request: pytest.FixtureRequest,
    imagegen_endpoint: Endpoint,
    imagegen_budget: Budget,
    imagegen_requests: Traffic,
    _imagegen_test_cassette: CassetteUse,
) -> Iterator[openai.AsyncOpenAI]:
    """An openai.AsyncOpenAI bound like imagegen_client (same cassette, budget and requests)."""
    from pytest_imagegen.clients import close_async_client, fixture_client, fixture_hooks

    hooks = fixture_hooks(
        imagegen_endpoint,
        imagegen_budget,
        _imagegen_test_cassette,
        imagegen_requests,
        item_data(request.node),
    )
    client = fixture_client(imagegen_endpoint, hooks, asynchronous=True)
    try:
        yield client
    finally:
        close_async_client(client)


@pytest.fixture(autouse=True)
def _imagegen_marked_cassette(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test marked ``imagegen`` that makes its own clients gets its cassette too."""
    with marked_cassette(request):
        yield


@pytest.fixture
def _imagegen_check_context(
    request: pytest.FixtureRequest,
    imagegen_settings: Settings,
    imagegen_budget: Budget,
    _imagegen_pools: ConnectionPools,
) -> Iterator[CheckContext]:
    """The context a suite check runs with (endpoint, clients, reference, budget, data;
    the request bodies its cassette recorded, when it is replayed)."""
    with check_context(request, imagegen_settings, imagegen_budget, _imagegen_pools) as ctx:
        yield ctx


@pytest.fixture(scope="session")
def _imagegen_upstreams() -> Iterator[Upstreams]:
    """The upstreams of gateway endpoints (upstream mode), started on first use."""
    from pytest_imagegen.upstream import Upstreams

    upstreams = Upstreams()
    try:
        yield upstreams
    finally:
        upstreams.stop()
