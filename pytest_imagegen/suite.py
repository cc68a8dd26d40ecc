"""The shipped suite and the tests that use imagegen fixtures: finding and adding the suite
file, its node ids, the ``imagegen`` marker, parametrising by endpoint, each test's data,
its cassette, and the context a suite check runs with.

Standard library and pytest only at import: the plugin imports this module in every run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_imagegen.names import (
    MARKER,
    MARKER_KEYS,
    MARKER_LIVE,
    OPTION_RECORD_MODE,
    RECORD_MODES,
)
from pytest_imagegen.state import run_state
from pytest_imagegen.testdata import PROPERTY, find_data, new_data

if TYPE_CHECKING:
    from pytest_imagegen.budget import Budget
    from pytest_imagegen.cassettes import CassetteUse
    from pytest_imagegen.checks import Check
    from pytest_imagegen.checks.context import CheckContext
    from pytest_imagegen.config import Endpoint, Settings
    from pytest_imagegen.pool import ConnectionPools

#: The shipped suite: a package installed as ``pytest_imagegen.suites``, its test file, the
#: module attribute that makes its items, and the module name its cassettes are filed under.
SUITE_PACKAGE = "pytest_imagegen.suites"
SUITE_FILE = "test_conformance.py"
SUITE_ATTRIBUTE = "imagegen_suite"
SUITE_CASSETTE_MODULE = "conformance"

#: The exception a test's call phase ended with: a cassette error it already reported is
#: not raised a second time when the cassette closes at teardown.
CALL_ERROR = pytest.StashKey[BaseException]()


# --------------------------------------------------------------------------- the suite file


def suite_path() -> Path:
    """The shipped suite's test file (source checkout or installed wheel alike)."""
    spec = importlib.util.find_spec(SUITE_PACKAGE)
    locations = list(spec.submodule_search_locations or ()) if spec is not None else []
    for location in locations:
        candidate = Path(location, SUITE_FILE)
        if candidate.is_file():
            return candidate.resolve()
    raise pytest.UsageError(
        f"the shipped conformance suite ({SUITE_PACKAGE}/{SUITE_FILE}) is not installed; "
        f"reinstall pytest-imagegen (pip install --force-reinstall pytest-imagegen)."
    )


def add_suite(config: pytest.Config) -> None:
    """Add the suite file to what pytest collects: alone when the user named no path, next to
    the user's paths otherwise. The file itself is passed, so ``python_files`` cannot hide it."""
    suite = suite_path()
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args[:] = [str(suite)]
        return
    base = Path(config.invocation_params.dir)
    for arg in config.args:
        target = Path(base, arg.split("::", 1)[0]).resolve()
        if target == suite or target in suite.parents:
            return  # the user already names the suite (or a folder holding it)
    config.args.append(str(suite))


def suite_module(module_path: Path, parent: Any) -> pytest.Module | None:
    """The suite's module node when it is installed outside the rootdir (None otherwise).

    Installed in site-packages, the suite lies outside the rootdir, where pytest would give
    it an empty node id ("::check[endpoint]"); it is named by its package path instead.
    """
    if module_path.name != SUITE_FILE or not run_state(parent.config).enabled:
        return None
    try:
        module_path.relative_to(parent.config.rootpath)
        return None
    except ValueError:
        pass
    if module_path.resolve() != suite_path():
        return None
    nodeid = SUITE_PACKAGE.replace(".", "/") + "/" + SUITE_FILE
    return pytest.Module.from_parent(parent, path=module_path, nodeid=nodeid)


def suite_endpoints(config: pytest.Config) -> tuple[Endpoint, ...]:
    """The endpoints the suite runs against (a configuration error fails collection)."""
    return run_state(config).settings_or_fail().selected_endpoints()


# --------------------------------------------------------------------------- the marker


@dataclass(frozen=True)
class MarkerOptions:
    """The arguments of a test's ``@pytest.mark.imagegen`` (None: not given)."""

    endpoints: tuple[str, ...] | None = None
    profile: str | None = None
    record_mode: str | None = None


def marker_options(node: pytest.Item | Any) -> MarkerOptions:
    """The closest ``imagegen`` marker's arguments; a misuse fails the test with its fix."""
    marker = node.get_closest_marker(MARKER) if node is not None else None
    if marker is None:
        return MarkerOptions()
    where = f"@pytest.mark.{MARKER} on {getattr(node, 'nodeid', node)}"
    if marker.args:
        pytest.fail(
            f"{where}: takes keyword arguments only ({', '.join(MARKER_KEYS)})", pytrace=False
        )
    unknown = sorted(set(marker.kwargs) - set(MARKER_KEYS))
    if unknown:
        pytest.fail(
            f"{where}: unknown argument(s) {', '.join(unknown)}; use {', '.join(MARKER_KEYS)}",
            pytrace=False,
        )
    endpoints = marker.kwargs.get("endpoints")
    if isinstance(endpoints, str):
        endpoints = (endpoints,)
    elif endpoints is not None:
        endpoints = tuple(endpoints)
        if not all(isinstance(e, str) for e in endpoints):
            pytest.fail(f"{where}: endpoints must be a list of endpoint names", pytrace=False)
    mode = marker.kwargs.get("record_mode")
    if mode is not None and mode not in RECORD_MODES:
        pytest.fail(
            f"{where}: record_mode={mode!r} is not one of {', '.join(RECORD_MODES)}", pytrace=False
        )
    profile = marker.kwargs.get("profile")
    if profile is not None and not isinstance(profile, str):
        pytest.fail(f"{where}: profile must be a profile name such as 'gpt-image-1'", pytrace=False)
    return MarkerOptions(endpoints, profile, mode)


def record_mode(item: pytest.Item, settings: Settings) -> str:
    """The test's record mode: its marker's, else the run's."""
    return marker_options(item).record_mode or settings.record_mode


def live_skip_reason(item: pytest.Item) -> str | None:
    """Why a test marked ``imagegen_live`` cannot run in this run (None: it can)."""
    if item.get_closest_marker(MARKER_LIVE) is None:
        return None
    settings = run_state(item.config).settings_or_fail()
    mode = record_mode(item, settings)
    name = item_endpoint_name(item)
    endpoint = next((e for e in settings.endpoints if e.name == name), None)
    if mode == "none" and (endpoint is None or not endpoint.is_loopback):
        which = f"endpoint {name!r}" if name else "the endpoint"
        return (
            f"needs a live endpoint: {which} is replayed from cassettes (record mode none); "
            f"run with {OPTION_RECORD_MODE}=once (or new_episodes/all) to run it live"
        )
    return None


def _profile_matches(endpoint: Endpoint, profile: str) -> bool:
    p = endpoint.profile
    return profile in (p.name, p.family, p.parent)


def parametrize_endpoints(metafunc: pytest.Metafunc) -> None:
    """Run a test using ``imagegen_endpoint`` once per selected endpoint its marker allows
    (one skipped case naming why when none is left)."""
    if "imagegen_endpoint" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", "")
        if "imagegen_endpoint" in (
            names.replace(" ", "").split(",") if isinstance(names, str) else names
        ):
            return  # the user parametrizes it explicitly
    settings = run_state(metafunc.config).settings_or_fail()
    options = marker_options(metafunc.definition)
    endpoints = list(settings.selected_endpoints())
    reason = ""
    if options.endpoints is not None:
        known = {e.name for e in settings.endpoints}
        unknown = [n for n in options.endpoints if n not in known]
        if unknown:
            pytest.fail(
                f"@pytest.mark.{MARKER}(endpoints=...) on {metafunc.definition.nodeid} names "
                f"unknown endpoint(s) {', '.join(unknown)}; configured: {', '.join(sorted(known))}",
                pytrace=False,
            )
        endpoints = [e for e in endpoints if e.name in options.endpoints]
        reason = f"none of the endpoints {', '.join(options.endpoints)} is selected"
    if options.profile is not None:
        endpoints = [e for e in endpoints if _profile_matches(e, options.profile)]
        reason = f"no selected endpoint has profile {options.profile!r}"
    if not endpoints:
        metafunc.parametrize(
            "imagegen_endpoint",
            [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-endpoint")],
            indirect=True,
        )
        return
    names = [e.name for e in endpoints]
    metafunc.parametrize("imagegen_endpoint", names, ids=names, indirect=True)


# --------------------------------------------------------------------------- items


def uses_imagegen(item: pytest.Item) -> bool:
    """Is ``item`` a suite check, or a test using an imagegen fixture or marker?"""
    if getattr(item, "imagegen_check", None) is not None:
        return True
    fixtures = getattr(item, "fixturenames", ())
    return (
        "imagegen_endpoint" in fixtures
        or "imagegen_client" in fixtures
        or item.get_closest_marker(MARKER) is not None
    )


def item_endpoint_name(item: pytest.Item) -> str | None:
    """The endpoint ``item`` runs against, when it names one."""
    name = getattr(item, "imagegen_endpoint_name", None)
    if isinstance(name, str):
        return name
    callspec = getattr(item, "callspec", None)
    value = callspec.params.get("imagegen_endpoint") if callspec is not None else None
    return value if isinstance(value, str) else None


def item_data(item: pytest.Item) -> dict[str, Any]:
    """The per-test report data of ``item`` (created on first use)."""
    data = find_data(item.user_properties)
    if data is not None:
        return data
    check = getattr(item, "imagegen_check", None)
    data = new_data(
        endpoint=item_endpoint_name(item),
        check=check.id if check is not None else None,
        area=check.area if check is not None else None,
    )
    item.user_properties.append((PROPERTY, data))
    return data


def existing_data(item: pytest.Item) -> dict[str, Any] | None:
    """The per-test report data of ``item`` if it has any (never creates it)."""
    return find_data(item.user_properties)


# --------------------------------------------------------------------------- cassettes


def already_reported(item: pytest.Item, error: BaseException) -> bool:
    """Did the test's call phase already fail with ``error`` (or with something caused by it)?"""
    seen = item.stash.get(CALL_ERROR, None)
    while seen is not None:
        if seen is error:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def module_name(item: pytest.Item) -> str:
    """The test module's part of ``item``'s node id: the folder its cassettes go in."""
    return item.nodeid.split("::", 1)[0]


@contextmanager
def item_cassette(
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
        reported=lambda error: already_reported(item, error),
    ) as cassette:
        yield cassette


@contextmanager
def marked_cassette(request: pytest.FixtureRequest) -> Iterator[None]:
    """The cassette of a test marked ``imagegen`` that makes its own clients (none for a
    suite check or a test using the imagegen clients: they have theirs)."""
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
    with item_cassette(item, settings.endpoint(name), settings, module_name(item), item.name):
        yield


# --------------------------------------------------------------------------- suite checks


@contextmanager
def check_context(
    request: pytest.FixtureRequest,
    settings: Settings,
    budget: Budget,
    pools: ConnectionPools,
) -> Iterator[CheckContext]:
    """The context a suite check runs with: its endpoint (bound to the reference server when
    it is the embedded one), clients, budget, data, its cassette, and the request bodies
    the cassette recorded when it is replayed."""
    from pytest_imagegen.cassettes import recorded_requests
    from pytest_imagegen.checks.context import CheckContext
    from pytest_imagegen.config import bind_reference

    item = request.node
    check: Check = item.imagegen_check
    endpoint = settings.endpoint(item.imagegen_endpoint_name)
    reference = request.getfixturevalue("imagegen_reference") if endpoint.is_reference else None
    gateway = endpoint.upstream is not None
    with ExitStack() as stack:
        is_live = replayed = recorded = cassette = tap = plays = None
        replaying = False
        # Checks with scripted faults talk to the reference server directly: what they test
        # is the live behaviour; one whose stall a cassette keeps as a timeout is recorded
        # (its replay does not wait the timeout out). Through a gateway they are recorded
        # like the others, with what the upstream received next to the cassette.
        # Timing checks never: vcrpy reads a whole answer before the client sees any of it.
        recorded_faults = gateway or not check.needs_faults or check.records_faults
        if check.sends_requests and recorded_faults and not check.live_timing:
            cassette = stack.enter_context(
                item_cassette(item, endpoint, settings, SUITE_CASSETTE_MODULE, check.id)
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
            replaying = record_mode(item, settings) == "none" and not endpoint.is_loopback
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
        endpoint = bind_reference(endpoint, reference)
        ctx = CheckContext(
            endpoint,
            reference=reference,
            budget=budget,
            is_live=is_live,
            replayed=replayed,
            data=item_data(item),
            recorded_requests=recorded,
            upstream_tap=tap,
            plays=plays,
            replaying=replaying,
            transport=pools.transport(endpoint),
        )
        stack.callback(ctx.close)
        yield ctx
        if item.stash.get(CALL_ERROR, None) is not None:
            # The evidence behind a failure: what was sent and what came back.
            ctx.data["exchanges"] = ctx.exchanges()
