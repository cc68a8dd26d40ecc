"""pytest glue for pytest-imagegen: options, markers, fixtures and hooks, nothing else.

Each hook or fixture hands its work to the module named for it: the run state in
:mod:`~pytest_imagegen.state`, the shipped suite and the marker in
:mod:`~pytest_imagegen.suite`, settings in :mod:`~pytest_imagegen.config`, cassettes in
:mod:`~pytest_imagegen.cassettes`, the spend guard in :mod:`~pytest_imagegen.budget`, the
per-test data in :mod:`~pytest_imagegen.testdata` and the report in
:mod:`~pytest_imagegen.report`. Nothing in the package imports this module.

This module is imported by every pytest run of an environment that has the package
installed, so it imports nothing but pytest, the standard library and those light modules
at module level; everything else is imported inside hooks and fixtures, when
``--imagegen`` is given or an imagegen fixture is used.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_imagegen.names import MARKER, MARKER_HELP
from pytest_imagegen.options import add_options
from pytest_imagegen.state import RunState, run_state
from pytest_imagegen.suite import (
    SUITE_ATTRIBUTE,
    SUITE_CASSETTE_MODULE,
    add_suite,
    existing_data,
    item_data,
    item_endpoint_name,
    live_skip_reason,
    marker_options,
    parametrize_endpoints,
    record_mode,
    suite_module,
    uses_imagegen,
)

if TYPE_CHECKING:
    import openai

    from pytest_imagegen.budget import Budget
    from pytest_imagegen.cassettes import CassetteUse
    from pytest_imagegen.checks import Check
    from pytest_imagegen.checks.context import CheckContext
    from pytest_imagegen.config import Endpoint, Settings
    from pytest_imagegen.pool import ConnectionPools
    from pytest_imagegen.reference import ReferenceServer
    from pytest_imagegen.traffic import Traffic
    from pytest_imagegen.upstream import Upstreams

# The exception a test's call phase ended with: a cassette error it already reported is not
# raised a second time when the cassette closes at teardown.
_CALL_ERROR = pytest.StashKey[BaseException]()


# --------------------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


# --------------------------------------------------------------------------- start-up


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKER_HELP:
        config.addinivalue_line("markers", line)
    state = run_state(config)
    if not state.is_worker:
        config.pluginmanager.register(_Reporting(state), "imagegen-reporting")
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
    if call.excinfo is not None and call.when in ("setup", "call"):
        if call.when == "call":
            item.stash[_CALL_ERROR] = call.excinfo.value
        _shorten_own_error(item, call.excinfo.value, report)
    data = existing_data(item)
    if data is None:
        return report
    if report.when == "call" or (report.when == "setup" and not report.passed):
        data["outcome"] = report.outcome
        if report.passed and data.get("deviations"):
            data["outcome"] = "warned"  # passed with DeviationWarnings
        if report.failed and call.excinfo is not None:
            from pytest_imagegen.classify import diagnosis_of
            from pytest_imagegen.errors import ConformanceFailure
            from pytest_imagegen.report import note_failure

            check = getattr(item, "imagegen_check", None)
            error = call.excinfo.value
            note_failure(
                data,
                diagnosis_of(error),
                expected=check.summary if check is not None else None,
                seen=str(error) if isinstance(error, ConformanceFailure) else None,
            )
    from pytest_imagegen.report import prepare_report, redact_failure

    state = run_state(item.config)
    if state.enabled:
        redact_failure(report, state.settings_or_none())
    prepare_report(report)
    return report


def _shorten_own_error(item: pytest.Item, exc: BaseException, report: pytest.TestReport) -> None:
    """Show a cassette or budget refusal as its message: the frames inside the SDK and the
    HTTP layer between the test and the refusal say nothing the message does not."""
    from pytest_imagegen.errors import BudgetExceededError, CassetteError

    style = item.config.getoption("tbstyle", "auto")
    if isinstance(exc, (CassetteError, BudgetExceededError)) and style in ("auto", "short"):
        report.longrepr = f"{type(exc).__name__}: {exc}"


def _already_reported(item: pytest.Item, error: BaseException) -> bool:
    """Did the test's call phase already fail with ``error`` (or with something caused by it)?"""
    seen = item.stash.get(_CALL_ERROR, None)
    while seen is not None:
        if seen is error:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# --------------------------------------------------------------------------- reporting


class _Reporting:
    """Feeds the report collector; registered on the controller only (xdist workers send
    their reports there), since ``pytest_runtest_logreport`` is not given the config."""

    def __init__(self, state: RunState) -> None:
        self.state = state
        self.total = 0
        self.progress: Any = None

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.total = len(session.items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: Sequence[str]) -> None:
        self.total = max(self.total, len(ids))  # every worker collects the whole run

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from pytest_imagegen.testdata import PROPERTY

        state = self.state
        if state.collector is None:
            if getattr(report, PROPERTY, None) is None:
                return
            from pytest_imagegen.report import collector_for

            workers = getattr(state.config.option, "numprocesses", None)
            state.collector = collector_for(
                state.settings_or_none(),
                workers=workers,
                reference_options=state.reference_options_or_none(),
            )
        state.collector.add(report)
        self._progress(report)

    def pytest_warning_recorded(self, warning_message: Any, nodeid: str) -> None:
        # A DeviationWarning makes its (passing) test "warned" in the reports.
        from pytest_imagegen.verdict import DeviationWarning

        collector = self.state.collector
        if (
            nodeid
            and collector is not None
            and issubclass(warning_message.category, DeviationWarning)
        ):
            collector.warn(nodeid, str(warning_message.message))

    def _progress(self, report: pytest.TestReport) -> None:
        """A progress line now and then while live requests go out (see progress.py)."""
        import os

        from pytest_imagegen.progress import Progress, every_s
        from pytest_imagegen.report import imagegen_data

        if self.progress is None:
            self.progress = Progress(total=self.total, every=every_s(os.environ))
        self.progress.total = self.total
        self.progress.add(report.nodeid, imagegen_data(report), finished=report.when == "teardown")
        line = self.progress.line()
        reporter = self.state.config.pluginmanager.get_plugin("terminalreporter")
        if line is not None and reporter is not None and self.state.config.get_verbosity() > -2:
            reporter.write_line(line)


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
        from pytest_imagegen.cassettes import unused_in_folders

        tests = state.collector.summary()["tests"]
        used = [t["cassette"] for t in tests if t.get("cassette")]
        # A cassette its test did not play (the test skipped before sending) is as unused as
        # one no test names: both are listed.
        unplayed = [t["cassette"] for t in tests if t.get("cassette_status") == "unused"]
        state.collector.unused_cassettes = [
            str(p) for p in unused_in_folders(used, unplayed=unplayed)
        ]
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


@contextmanager
def _cassette(
    item: pytest.Item, endpoint: Endpoint, settings: Settings, module: str, test: str
) -> Iterator[CassetteUse]:
    """The test's cassette around a block, its path and status noted in the test's data."""
    from pytest_imagegen import cassettes

    with cassettes.use_cassette(
        cassettes.cassette_path(settings.cassette_dir, endpoint.name, module, test),
        mode=record_mode(item, settings),
        secrets=endpoint.secrets,
        secret_headers=tuple(endpoint.headers),
        loopback=endpoint.is_loopback,
        data=item_data(item),
        reported=lambda error: _already_reported(item, error),
    ) as cassette:
        yield cassette


def _module_name(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


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
    with _cassette(
        item, imagegen_endpoint, imagegen_settings, _module_name(item), item.name
    ) as cassette:
        yield cassette


@pytest.fixture
def imagegen_requests(imagegen_settings: Settings) -> Traffic:
    """What this test's imagegen clients sent and got back (any endpoint, live or replayed)."""
    from pytest_imagegen.traffic import for_endpoints

    return for_endpoints(imagegen_settings.endpoints)


def _client_hooks(
    request: pytest.FixtureRequest,
    endpoint: Endpoint,
    budget: Budget,
    cassette: CassetteUse,
    traffic: Traffic,
) -> dict[str, list[Any]]:
    """The hooks of a test's clients: budget guard, report measurements, imagegen_requests."""
    from pytest_imagegen.budget import event_hooks
    from pytest_imagegen.testdata import cost_adder, measuring_hooks

    data = item_data(request.node)
    hooks = event_hooks(
        budget,
        endpoint,
        is_live=cassette.is_live,
        on_cost=cost_adder(data),
        replayed=cassette.replayed_counter(),
    )
    for added in (measuring_hooks(data, cassette.session.plays), traffic.event_hooks()):
        for event, functions in added.items():
            hooks[event].extend(functions)
    return hooks


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
    from pytest_imagegen.clients import fixture_client

    hooks = _client_hooks(
        request, imagegen_endpoint, imagegen_budget, _imagegen_test_cassette, imagegen_requests
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
    from pytest_imagegen.clients import close_async_client, fixture_client

    hooks = _client_hooks(
        request, imagegen_endpoint, imagegen_budget, _imagegen_test_cassette, imagegen_requests
    )
    client = fixture_client(imagegen_endpoint, hooks, asynchronous=True)
    try:
        yield client
    finally:
        close_async_client(client)


@pytest.fixture(autouse=True)
def _imagegen_marked_cassette(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test marked ``imagegen`` that makes its own clients gets its cassette too."""
    item = request.node
    if (
        item.get_closest_marker(MARKER) is None
        or getattr(item, "imagegen_check", None) is not None
        or "_imagegen_test_cassette" in getattr(item, "fixturenames", ())
    ):
        yield
        return
    settings: Settings = request.getfixturevalue("imagegen_settings")
    name = item_endpoint_name(item)
    named = marker_options(item).endpoints or ()
    if name is None:
        name = named[0] if len(named) == 1 else settings.selected_endpoints()[0].name
    with _cassette(item, settings.endpoint(name), settings, _module_name(item), item.name):
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
    from pytest_imagegen.cassettes import recorded_requests
    from pytest_imagegen.checks.context import CheckContext
    from pytest_imagegen.config import bind_reference

    item = request.node
    check: Check = item.imagegen_check
    endpoint = imagegen_settings.endpoint(item.imagegen_endpoint_name)
    reference = request.getfixturevalue("imagegen_reference") if endpoint.is_reference else None
    gateway = endpoint.upstream is not None
    with ExitStack() as stack:
        is_live = replayed = recorded = cassette = tap = plays = None
        replaying = False
        # Checks with scripted faults talk to the reference server directly: a stall cannot
        # be recorded, and what they test is the live behaviour. Through a gateway they are
        # recorded like the others, with what the upstream received next to the cassette.
        # Timing checks never: vcrpy reads a whole answer before the client sees any of it.
        if check.sends_requests and (gateway or not check.needs_faults) and not check.live_timing:
            cassette = stack.enter_context(
                _cassette(item, endpoint, imagegen_settings, SUITE_CASSETTE_MODULE, check.id)
            )
            is_live, replayed = cassette.is_live, cassette.replayed_counter()
            # Checks that draw their requests replay the recorded ones: new draws depend on
            # the hypothesis release and on the local modules imported.
            recorded = recorded_requests(cassette)
            plays = cassette.session.plays
            # What an existing cassette holds replays, whatever key is configured.
            replaying = cassette.policy != "live" and cassette.session.path.exists()
        elif check.live_timing:
            # No cassette, but the run replays: timing checks skip, saying so.
            replaying = record_mode(item, imagegen_settings) == "none" and not endpoint.is_loopback
        if gateway:
            from pytest_imagegen.errors import ConfigError
            from pytest_imagegen.upstream import upstream_side

            try:
                reference, tap = upstream_side(
                    endpoint,
                    stack,
                    cassette=cassette,
                    upstreams=lambda: request.getfixturevalue("_imagegen_upstreams"),
                )
            except ConfigError as exc:
                pytest.fail(f"pytest-imagegen upstream: {exc}", pytrace=False)
        ctx = CheckContext(
            endpoint,
            reference=reference,
            budget=imagegen_budget,
            is_live=is_live,
            replayed=replayed,
            data=item_data(item),
            recorded_requests=recorded,
            upstream_tap=tap,
            plays=plays,
            replaying=replaying,
            transport=_imagegen_pools.transport(bind_reference(endpoint, reference)),
        )
        stack.callback(ctx.close)
        yield ctx
        if item.stash.get(_CALL_ERROR, None) is not None:
            # The evidence behind a failure: what was sent and what came back.
            ctx.data["exchanges"] = ctx.exchanges()


@pytest.fixture(scope="session")
def _imagegen_upstreams() -> Iterator[Upstreams]:
    """The upstreams of gateway endpoints (upstream mode), started on first use."""
    from pytest_imagegen.upstream import Upstreams

    upstreams = Upstreams()
    try:
        yield upstreams
    finally:
        upstreams.stop()
