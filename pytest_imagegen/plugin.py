"""pytest glue for pytest-imagegen: options, ini keys, markers, fixtures and hooks.

Glue only: configuration is resolved by :mod:`pytest_imagegen.config`, checks live in
:mod:`pytest_imagegen.checks`, cassettes in :mod:`pytest_imagegen.cassettes`, the spend guard
in :mod:`pytest_imagegen.budget`, the report in :mod:`pytest_imagegen.report`.

This module is imported by every pytest run of an environment that has the package
installed, so it imports nothing but pytest and the standard library at module level;
everything else is imported inside hooks and fixtures, when ``--imagegen`` is given or an
imagegen fixture is used.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import openai

    from pytest_imagegen.budget import Budget
    from pytest_imagegen.checks import Check
    from pytest_imagegen.checks.context import CheckContext
    from pytest_imagegen.config import Endpoint, Settings
    from pytest_imagegen.reference import ReferenceServer
    from pytest_imagegen.report import ReportCollector

# --------------------------------------------------------------------------- names

#: Command-line options (one group, one prefix).
OPTION = "--imagegen"
OPTION_ENDPOINT = "--imagegen-endpoint"
OPTION_RECORD_MODE = "--imagegen-record-mode"
OPTION_BUDGET = "--imagegen-budget"
OPTION_REPORT = "--imagegen-report"
OPTION_CONFIG = "--imagegen-config"
#: A one-off endpoint named ``cli`` (key from OPENAI_API_KEY); the same names as
#: ``pytest_imagegen.config.CLI_ENDPOINT_OPTIONS``.
OPTION_BASE_URL = "--imagegen-base-url"
OPTION_IMAGE_MODEL = "--imagegen-image-model"
OPTION_CHAT_MODEL = "--imagegen-chat-model"
#: ini key: the TOML file holding ``[tool.imagegen]`` (default: pyproject.toml in rootdir).
INI_CONFIG = "imagegen_config"

#: Markers.
MARKER = "imagegen"
MARKER_LIVE = "imagegen_live"
MARKER_KEYS = ("endpoints", "profile", "record_mode")

#: Record modes (the same tuple as ``pytest_imagegen.config.RECORD_MODES``; repeated here
#: so that registering the option does not import the settings model).
RECORD_MODES = ("none", "once", "new_episodes", "all")

#: Variables read for the embedded reference server (seconds, or ``low=0.5,high=2``; a
#: comma list of ``pytest_imagegen.reference.DEFECTS``).
ENV_REFERENCE_LATENCY = "IMAGEGEN_REFERENCE_LATENCY"
ENV_REFERENCE_DEFECTS = "IMAGEGEN_REFERENCE_DEFECTS"

#: The shipped suite: a package installed as ``pytest_imagegen.suites``, its test file, the
#: module attribute that makes its items, and the module name its cassettes are filed under.
SUITE_PACKAGE = "pytest_imagegen.suites"
SUITE_FILE = "test_conformance.py"
SUITE_ATTRIBUTE = "imagegen_suite"
SUITE_CASSETTE_MODULE = "conformance"

#: The per-test data property (see ``pytest_imagegen.report``).
PROPERTY = "imagegen"

MARKER_HELP = (
    f"{MARKER}(endpoints=[...], profile=..., record_mode=...): run this test only against the "
    "named endpoints / endpoints of that profile, with that cassette record mode.",
    f"{MARKER_LIVE}: needs a live endpoint; skipped when the endpoint is replayed from "
    "cassettes (record mode none, not loopback).",
)

_STATE = pytest.StashKey["_State"]()
# The exception a test's call phase ended with: a cassette error it already reported is not
# raised a second time when the cassette closes at teardown.
_CALL_ERROR = pytest.StashKey[BaseException]()


# --------------------------------------------------------------------------- options


def _budget_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an amount of USD; give a number >= 0, e.g. {OPTION_BUDGET}=1.50"
        )
    return value


def _endpoint_name(text: str) -> str:
    if "://" in text:
        raise argparse.ArgumentTypeError(
            f"{text!r} is a URL; {OPTION_ENDPOINT} takes endpoint names. For a one-off run "
            f"against a URL, use {OPTION_BASE_URL}={text} (with {OPTION_IMAGE_MODEL}=MODEL; "
            "the key is read from OPENAI_API_KEY)"
        )
    if not text or not all(c.islower() or c.isdigit() or c in "_-" for c in text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an endpoint name (lower-case letters, digits, '_' and '-')"
        )
    return text


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("imagegen", "image-generation endpoints (pytest-imagegen)")
    group.addoption(
        OPTION,
        action="store_true",
        dest="imagegen",
        default=False,
        help="collect and run the shipped conformance suite against the configured endpoints "
        "(the built-in reference endpoint when none is configured)",
    )
    group.addoption(
        OPTION_ENDPOINT,
        action="append",
        dest="imagegen_endpoints",
        default=None,
        metavar="NAME",
        type=_endpoint_name,
        help="run against this endpoint only (repeatable; default: all configured endpoints)",
    )
    group.addoption(
        OPTION_RECORD_MODE,
        dest="imagegen_record_mode",
        default=None,
        choices=RECORD_MODES,
        help="cassette record mode: none (replay only, the default), once, new_episodes, all",
    )
    group.addoption(
        OPTION_BUDGET,
        dest="imagegen_budget",
        default=None,
        metavar="USD",
        type=_budget_value,
        help="cap on the estimated spend of live requests in this run (default 1.00)",
    )
    group.addoption(
        OPTION_REPORT,
        dest="imagegen_report",
        default=None,
        metavar="PATH",
        help="write the run report to PATH (JSON; HTML when PATH ends in .html)",
    )
    group.addoption(
        OPTION_CONFIG,
        dest="imagegen_config",
        default=None,
        metavar="PATH",
        help="TOML file with the [tool.imagegen] settings (default: pyproject.toml in rootdir)",
    )
    group.addoption(
        OPTION_BASE_URL,
        dest="imagegen_base_url",
        default=None,
        metavar="URL",
        help="run against this OpenAI-compatible base URL as a one-off endpoint named 'cli' "
        "(no config needed; key from OPENAI_API_KEY)",
    )
    group.addoption(
        OPTION_IMAGE_MODEL,
        dest="imagegen_image_model",
        default=None,
        metavar="MODEL",
        help="the image model of the 'cli' endpoint (default: OPENAI_IMAGE_MODEL, else "
        "gpt-image-1.5)",
    )
    group.addoption(
        OPTION_CHAT_MODEL,
        dest="imagegen_chat_model",
        default=None,
        metavar="MODEL",
        help="the chat model of the 'cli' endpoint (enables the chat-side separation checks)",
    )
    parser.addini(
        INI_CONFIG,
        "TOML file with the [tool.imagegen] settings, relative to the ini file "
        "(default: pyproject.toml in rootdir)",
        default=None,
    )


# --------------------------------------------------------------------------- run state


class _State:
    """What the plugin knows about this run (kept in ``config.stash``)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.enabled: bool = bool(config.getoption("imagegen", False))
        self._settings: Settings | None = None
        self._error: str | None = None
        self._reference_options: dict[str, Any] | None = None
        self.collector: ReportCollector | None = None
        self.deselected = 0
        self.report_path: Path | None = None

    @property
    def is_worker(self) -> bool:
        return hasattr(self.config, "workerinput")

    def cli(self) -> dict[str, Any]:
        option = self.config.getoption
        return {
            "record_mode": option("imagegen_record_mode", None),
            "budget_usd": option("imagegen_budget", None),
            "report": option("imagegen_report", None),
            "endpoints": option("imagegen_endpoints", None),
            "config": option("imagegen_config", None),
            "base_url": option("imagegen_base_url", None),
            "image_model": option("imagegen_image_model", None),
            "chat_model": option("imagegen_chat_model", None),
        }

    def config_path(self) -> Path | None:
        given = self.config.getoption("imagegen_config", None)
        if given:
            return Path(self.config.invocation_params.dir, given)
        ini = self.config.getini(INI_CONFIG)
        if ini:
            base = self.config.inipath.parent if self.config.inipath else self.config.rootpath
            return Path(base, str(ini))
        return None

    def settings(self) -> Settings:
        """The resolved settings; ConfigError (with the config module's message) if invalid."""
        if self._settings is None:
            from pytest_imagegen.config import ConfigError, load_settings

            if self._error is not None:
                raise ConfigError(self._error)
            try:
                self._settings = load_settings(
                    cli=self.cli(),
                    env=os.environ,
                    rootdir=self.config.rootpath,
                    config_path=self.config_path(),
                )
            except ConfigError as exc:
                self._error = str(exc)
                raise
        return self._settings

    def settings_or_fail(self) -> Settings:
        """:meth:`settings`, turning a configuration error into a test error with its text."""
        from pytest_imagegen.errors import ConfigError

        try:
            return self.settings()
        except ConfigError as exc:
            pytest.fail(f"pytest-imagegen configuration: {exc}", pytrace=False)

    def reference_options(self) -> dict[str, Any]:
        """Keyword arguments for the embedded ReferenceServer: ``reference`` settings (when the
        settings have them), overridden by the ``IMAGEGEN_REFERENCE_*`` variables."""
        if self._reference_options is None:
            self._reference_options = _reference_options(self.settings(), os.environ)
        return dict(self._reference_options)


def _state(config: pytest.Config) -> _State:
    state = config.stash.get(_STATE, None)
    if state is None:
        state = config.stash[_STATE] = _State(config)
    return state


def _option(source: Any, key: str) -> Any:
    if source is None:
        return None
    if isinstance(source, Mapping):
        return source.get(key)
    return getattr(source, key, None)


def _reference_options(settings: Settings, env: Mapping[str, str]) -> dict[str, Any]:
    from pytest_imagegen.errors import ConfigError
    from pytest_imagegen.reference.faults import DEFECTS

    configured = getattr(settings, "reference", None)
    options: dict[str, Any] = {}
    latency = _option(configured, "latency")
    defects = _option(configured, "defects")
    env_latency = (env.get(ENV_REFERENCE_LATENCY) or "").strip()
    env_defects = (env.get(ENV_REFERENCE_DEFECTS) or "").strip()
    if env_latency:
        latency = env_latency
    if env_defects:
        defects = [d.strip() for d in env_defects.split(",") if d.strip()]
    if latency is not None:
        from pytest_imagegen.reference.server import parse_latency

        try:
            options["latency"] = parse_latency(latency)
        except ValueError as exc:
            where = ENV_REFERENCE_LATENCY if env_latency else "reference.latency"
            raise ConfigError(
                f"{where}={latency!r}: {exc}. Give seconds (e.g. 2) or per quality "
                f"(e.g. low=0.5,high=2)."
            ) from None
    if defects:
        unknown = [d for d in defects if d not in DEFECTS]
        if unknown:
            where = ENV_REFERENCE_DEFECTS if env_defects else "reference.defects"
            raise ConfigError(
                f"{where}: unknown defect(s) {', '.join(unknown)}; known defects: "
                f"{', '.join(sorted(DEFECTS))}."
            )
        options["defects"] = tuple(defects)
    return options


# --------------------------------------------------------------------------- start-up


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKER_HELP:
        config.addinivalue_line("markers", line)
    state = _state(config)
    if not state.is_worker:
        config.pluginmanager.register(_Reporting(state), "imagegen-reporting")
    if not state.enabled:
        return
    from pytest_imagegen.errors import ConfigError

    try:
        state.settings()
        state.reference_options()
    except ConfigError as exc:
        # Exit code 4 with the message as written, no traceback.
        raise pytest.UsageError(str(exc)) from None
    _add_suite(config)


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


def _add_suite(config: pytest.Config) -> None:
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


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    state = _state(config)
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
    # Installed in site-packages, the suite lies outside the rootdir, where pytest would give
    # it an empty node id ("::check[endpoint]"); name it by its package path instead.
    if module_path.name != SUITE_FILE or not _state(parent.config).enabled:
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


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Any:
    # The suite module exposes one function that makes its items (check ids as names).
    if name == SUITE_ATTRIBUTE and callable(obj) and isinstance(collector, pytest.Module):
        return obj(collector)
    return None


def suite_endpoints(config: pytest.Config) -> tuple[Endpoint, ...]:
    """The endpoints the suite runs against (a configuration error fails collection)."""
    return _state(config).settings_or_fail().selected_endpoints()


@dataclass(frozen=True)
class _MarkerOptions:
    endpoints: tuple[str, ...] | None = None
    profile: str | None = None
    record_mode: str | None = None


def _marker_options(node: pytest.Item | Any) -> _MarkerOptions:
    marker = node.get_closest_marker(MARKER) if node is not None else None
    if marker is None:
        return _MarkerOptions()
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
    return _MarkerOptions(endpoints, profile, mode)


def _profile_matches(endpoint: Endpoint, profile: str) -> bool:
    p = endpoint.profile
    return profile in (p.name, p.family, p.parent)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "imagegen_endpoint" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", "")
        if "imagegen_endpoint" in (
            names.replace(" ", "").split(",") if isinstance(names, str) else names
        ):
            return  # the user parametrizes it explicitly
    settings = _state(metafunc.config).settings_or_fail()
    options = _marker_options(metafunc.definition)
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


def _uses_imagegen(item: pytest.Item) -> bool:
    if getattr(item, "imagegen_check", None) is not None:
        return True
    fixtures = getattr(item, "fixturenames", ())
    return (
        "imagegen_endpoint" in fixtures
        or "imagegen_client" in fixtures
        or item.get_closest_marker(MARKER) is not None
    )


def _item_endpoint_name(item: pytest.Item) -> str | None:
    name = getattr(item, "imagegen_endpoint_name", None)
    if name is not None:
        return name
    callspec = getattr(item, "callspec", None)
    value = callspec.params.get("imagegen_endpoint") if callspec is not None else None
    return value if isinstance(value, str) else None


def item_data(item: pytest.Item) -> dict[str, Any]:
    """The per-test report data of ``item`` (created on first use)."""
    for key, value in item.user_properties:
        if key == PROPERTY and isinstance(value, dict):
            return value
    check = getattr(item, "imagegen_check", None)
    data: dict[str, Any] = {
        "endpoint": _item_endpoint_name(item),
        "check": check.id if check is not None else None,
        "area": check.area if check is not None else None,
        "outcome": None,
        "category": None,
        "hint": None,
        "latencies_s": [],
        "attempts": 0,
        "successes": 0,
        "cost_usd": 0.0,
        "response_bytes": 0,
        "images": [],
        "cassette": None,
        "cassette_status": None,
    }
    item.user_properties.append((PROPERTY, data))
    return data


def _existing_data(item: pytest.Item) -> dict[str, Any] | None:
    for key, value in item.user_properties:
        if key == PROPERTY and isinstance(value, dict):
            return value
    return None


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    for item in items:
        if _uses_imagegen(item):
            item_data(item)


def pytest_deselected(items: Sequence[pytest.Item]) -> None:
    if items:
        _state(items[0].config).deselected += len(items)


# --------------------------------------------------------------------------- running


def _record_mode(item: pytest.Item, settings: Settings) -> str:
    return _marker_options(item).record_mode or settings.record_mode


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker(MARKER_LIVE) is None:
        return
    settings = _state(item.config).settings_or_fail()
    mode = _record_mode(item, settings)
    name = _item_endpoint_name(item)
    endpoint = next((e for e in settings.endpoints if e.name == name), None)
    if mode == "none" and (endpoint is None or not endpoint.is_loopback):
        which = f"endpoint {name!r}" if name else "the endpoint"
        pytest.skip(
            f"needs a live endpoint: {which} is replayed from cassettes (record mode none); "
            f"run with {OPTION_RECORD_MODE}=once (or new_episodes/all) to run it live"
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if call.excinfo is not None and call.when in ("setup", "call"):
        if call.when == "call":
            item.stash[_CALL_ERROR] = call.excinfo.value
        _shorten_own_error(item, call.excinfo.value, report)
    data = _existing_data(item)
    if data is None:
        return report
    if report.when == "call" or (report.when == "setup" and not report.passed):
        data["outcome"] = report.outcome
        if report.failed and call.excinfo is not None:
            diagnosis = _diagnosis_of(call.excinfo.value)
            if diagnosis is not None:
                data["category"] = diagnosis.category
                data["hint"] = diagnosis.hint
    from pytest_imagegen.report import prepare_report

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


def _diagnosis_of(exc: BaseException) -> Any:
    diagnosis = getattr(exc, "diagnosis", None)
    if diagnosis is not None:
        return diagnosis
    from pytest_imagegen.errors import BudgetExceededError, ImagegenError

    if isinstance(exc, (BudgetExceededError, ImagegenError)):
        return None
    if type(exc).__module__.split(".")[0] in ("openai", "httpx2"):
        from pytest_imagegen.errors import classify

        return classify(exc)
    return None


# --------------------------------------------------------------------------- reporting


class _Reporting:
    """Feeds the report collector; registered on the controller only (xdist workers send
    their reports there), since ``pytest_runtest_logreport`` is not given the config."""

    def __init__(self, state: _State) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        state = self.state
        if state.collector is None:
            if getattr(report, PROPERTY, None) is None:
                return
            state.collector = _new_collector(state)
        state.collector.add(report)


def _new_collector(state: _State) -> ReportCollector:
    from pytest_imagegen import __version__
    from pytest_imagegen.errors import ConfigError
    from pytest_imagegen.report import ReportCollector

    try:
        settings: Settings | None = state.settings()
    except ConfigError:
        settings = None
    workers = getattr(state.config.option, "numprocesses", None)
    run_info = {
        "pytest": pytest.__version__,
        "pytest_imagegen": __version__,
        "workers": workers or 0,
    }
    if settings is not None:
        run_info["record_mode"] = settings.record_mode
    return ReportCollector(
        settings_rows=settings.describe() if settings is not None else (),
        run_info=run_info,
        deadlines={e.name: e.deadline_s for e in settings.endpoints} if settings else None,
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = _state(session.config)
    if state.is_worker or state.collector is None:
        return
    from pytest_imagegen.errors import ConfigError

    try:
        settings = state.settings()
    except ConfigError:
        return
    state.collector.unused_cassettes = [str(p) for p in _unused_cassettes(state, settings)]
    if settings.report is not None:
        state.report_path = state.collector.write(settings.report)


def _narrowed(state: _State) -> bool:
    """Whether this run left tests out on purpose (under xdist the controller collects
    nothing, so it looks at the selection options too)."""
    option = state.config.option
    return bool(
        state.deselected
        or getattr(option, "keyword", "")
        or getattr(option, "markexpr", "")
        or getattr(option, "deselect", None)
        or getattr(option, "lf", False)
        or getattr(option, "stepwise", False)
        or any("::" in arg for arg in state.config.args)
    )


def _unused_cassettes(state: _State, settings: Settings) -> list[Path]:
    """Cassettes in the folders this run covered that no test used.

    Only judged on a run that selected everything: a ``-k`` run leaves most cassettes
    unplayed on purpose. A folder ``<endpoint>/<module>`` counts as covered when a test of
    that endpoint and module ran.
    """
    if state.collector is None or _narrowed(state):
        return []
    from pytest_imagegen.cassettes import find_unused_cassettes

    used = []
    for test in state.collector.summary()["tests"]:
        if test.get("cassette"):
            used.append(Path(test["cassette"]))
    folders = {p.parent for p in used}
    unused = []
    for folder in sorted(folders):
        unused.extend(find_unused_cassettes(folder, used))
    return unused


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = _state(config)
    if state.is_worker or state.collector is None:
        return
    lines = state.collector.terminal_lines()
    if lines or state.report_path:
        terminalreporter.section("imagegen")
        for line in lines:
            terminalreporter.write_line(line)
        if state.report_path is not None:
            terminalreporter.write_line(f"imagegen report written to {state.report_path}")


# --------------------------------------------------------------------------- fixtures


def _bind_reference(
    endpoint: Endpoint, server: ReferenceServer, options: Mapping[str, Any]
) -> Endpoint:
    """Point the embedded reference endpoint at the running server; with a configured latency,
    give its attempts and deadline room for it (the defaults assume an instant server)."""
    if not endpoint.is_reference or endpoint.base_url:
        return endpoint
    changes: dict[str, Any] = {"base_url": server.base_url, "api_key": server.api_key}
    latency = max(dict(options.get("latency") or {}).values(), default=0.0)
    if latency > 0:
        timeout = max(endpoint.timeout_s, 2 * latency + 1)
        steps = 1 + len(endpoint.fallback)
        changes["timeout_s"] = timeout
        changes["deadline_s"] = max(endpoint.deadline_s, timeout * steps + latency + 2)
    return replace(endpoint, **changes)


@pytest.fixture(scope="session")
def imagegen_settings(request: pytest.FixtureRequest) -> Settings:
    """The resolved pytest-imagegen settings (endpoints, record mode, budget, cassette dir)."""
    state = _state(request.config)
    settings = state.settings_or_fail()
    if any(e.is_reference and not e.base_url for e in settings.endpoints):
        server = request.getfixturevalue("imagegen_reference_server")
        options = request.getfixturevalue("imagegen_reference_options")
        endpoints = tuple(_bind_reference(e, server, options) for e in settings.endpoints)
        settings = replace(settings, endpoints=endpoints)
    return settings


@pytest.fixture(scope="session")
def imagegen_reference_listen_address() -> tuple[str, int]:
    """Override point: (host, port) the embedded reference server binds to (127.0.0.1, any)."""
    return ("127.0.0.1", 0)


@pytest.fixture(scope="session")
def imagegen_reference_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Override point: ReferenceServer keyword arguments (latency, defects from the environment)."""
    state = _state(request.config)
    from pytest_imagegen.errors import ConfigError

    try:
        return state.reference_options()
    except ConfigError as exc:
        pytest.fail(f"pytest-imagegen configuration: {exc}", pytrace=False)


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
def imagegen_budget(
    request: pytest.FixtureRequest,
    imagegen_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Budget:
    """The spend guard: reserves each live request's estimated price against budget_usd."""
    from pytest_imagegen.budget import Budget

    base = tmp_path_factory.getbasetemp()
    # xdist workers' basetemps sit inside the controller's: its folder is shared by the run.
    shared = base.parent if hasattr(request.config, "workerinput") else base
    return Budget(imagegen_settings.budget_usd, shared / "imagegen-budget")


@pytest.fixture
def imagegen_endpoint(request: pytest.FixtureRequest, imagegen_settings: Settings) -> Endpoint:
    """The endpoint of this test; tests using it run once per selected endpoint (id = name)."""
    name = getattr(request, "param", None) or _item_endpoint_name(request.node)
    endpoints = {e.name: e for e in imagegen_settings.endpoints}
    if name is None:
        selected = imagegen_settings.selected_endpoints()
        name = selected[0].name
    endpoint = endpoints[name]
    return _bind_if_reference(request, endpoint)


def _bind_if_reference(request: pytest.FixtureRequest, endpoint: Endpoint) -> Endpoint:
    if endpoint.is_reference and not endpoint.base_url:  # settings bound it already
        server = request.getfixturevalue("imagegen_reference_server")
        options = request.getfixturevalue("imagegen_reference_options")
        return _bind_reference(endpoint, server, options)
    return endpoint


def _live_policy(exists: bool, mode: str, loopback: bool) -> str:
    """Will a cassette's requests go out: ``live``, ``replay`` or ``mixed`` (per request)?"""
    if mode == "none":
        # A loopback endpoint sends what its cassette lacks to the live server.
        if loopback:
            return "mixed" if exists else "live"
        return "replay"
    if mode == "once":
        return "replay" if exists else "live"
    if mode == "new_episodes":
        return "mixed" if exists else "live"
    return "live"


@dataclass
class _Cassette:
    session: Any
    policy: str

    def is_live(self, request: Any) -> bool:
        return self.policy != "replay"

    def replayed(self) -> int:
        return int(self.session.played)


@contextmanager
def _cassette(
    item: pytest.Item, endpoint: Endpoint, settings: Settings, module: str, test: str
) -> Iterator[_Cassette]:
    """The test's cassette around a block, its path and status noted in the test's data."""
    from pytest_imagegen import cassettes

    mode = _record_mode(item, settings)
    path = cassettes.cassette_path(settings.cassette_dir, endpoint.name, module, test)
    loopback = endpoint.is_loopback
    data = item_data(item)
    data["cassette"] = str(path)
    policy = _live_policy(path.exists(), mode, loopback)
    from pytest_imagegen.errors import CassetteError

    try:
        with cassettes.recording(
            path,
            mode=mode,
            secrets=endpoint.secrets,
            secret_headers=tuple(endpoint.headers),
            loopback_live=loopback,
        ) as session:
            try:
                yield _Cassette(session, policy)
            finally:
                data["cassette_status"] = session.status
    except CassetteError as exc:
        if not _already_reported(item, exc):
            raise
    data["cassette_status"] = session.status


def _module_name(item: pytest.Item) -> str:
    return item.nodeid.split("::", 1)[0]


@pytest.fixture
def imagegen_client(
    request: pytest.FixtureRequest,
    imagegen_endpoint: Endpoint,
    imagegen_settings: Settings,
    imagegen_budget: Budget,
) -> Iterator[openai.OpenAI]:
    """An openai.OpenAI bound to the endpoint, with the test's cassette and the budget guard."""
    from pytest_imagegen.bounds import Limits, bounded_client
    from pytest_imagegen.budget import event_hooks
    from pytest_imagegen.checks.context import requested_n

    item = request.node
    data = item_data(item)
    endpoint = imagegen_endpoint
    with _cassette(item, endpoint, imagegen_settings, _module_name(item), item.name) as cassette:
        timings: dict[int, float] = {}

        def started(req: Any) -> None:
            import time

            timings[id(req)] = time.perf_counter()

        def answered(response: Any) -> None:
            import time

            began = timings.pop(id(response.request), None)
            if began is not None:
                data["latencies_s"].append(round(time.perf_counter() - began, 4))
            data["attempts"] += 1
            data["successes"] += 1 if response.status_code < 400 else 0

        def add_cost(amount: float) -> None:
            data["cost_usd"] = float(data.get("cost_usd") or 0.0) + amount

        hooks = event_hooks(
            imagegen_budget,
            endpoint,
            is_live=cassette.is_live,
            on_cost=add_cost,
            replayed=cassette.replayed if cassette.policy == "mixed" else None,
        )
        hooks["request"].append(started)
        hooks["response"].append(answered)
        # timeout_s bounds each request as a whole (body included), deadline_s the test.
        limits = Limits.for_endpoint(
            endpoint, max_body_bytes=lambda request: endpoint.response_cap(requested_n(request))
        )
        http_client = bounded_client(limits, event_hooks=hooks)
        client = endpoint.client(http_client=http_client)
        try:
            yield client
        finally:
            client.close()


@pytest.fixture(autouse=True)
def _imagegen_marked_cassette(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test marked ``imagegen`` that makes its own clients gets its cassette too."""
    item = request.node
    if (
        item.get_closest_marker(MARKER) is None
        or getattr(item, "imagegen_check", None) is not None
        or "imagegen_client" in getattr(item, "fixturenames", ())
    ):
        yield
        return
    settings: Settings = request.getfixturevalue("imagegen_settings")
    endpoints = {e.name: e for e in settings.endpoints}
    name = _item_endpoint_name(item)
    named = _marker_options(item).endpoints or ()
    if name is None:
        name = named[0] if len(named) == 1 else settings.selected_endpoints()[0].name
    with _cassette(item, endpoints[name], settings, _module_name(item), item.name):
        yield


def _recorded_requests(cassette: _Cassette) -> list[dict[str, Any]] | None:
    """The JSON bodies of the ``POST .../images/generations`` requests in the cassette, in
    recorded order, when it is replayed (record mode ``none``, or ``once`` with the file
    there); None when the requests are recorded or go live."""
    import json
    from urllib.parse import urlsplit

    from pytest_imagegen.cassettes import read_cassette

    session = cassette.session
    if session.mode != "none" and cassette.policy != "replay":
        return None
    if not session.path.exists():
        return None  # mode none: the first request fails naming the file and the command
    bodies = []
    for interaction in read_cassette(session.path):
        recorded = interaction["request"]
        if recorded.get("method", "").upper() != "POST" or not urlsplit(
            recorded.get("uri", "")
        ).path.endswith("/images/generations"):
            continue
        try:
            body = json.loads(recorded.get("body") or b"")
        except ValueError:
            continue
        if isinstance(body, dict):
            bodies.append(body)
    return bodies


@pytest.fixture
def _imagegen_check_context(
    request: pytest.FixtureRequest,
    imagegen_settings: Settings,
    imagegen_budget: Budget,
) -> Iterator[CheckContext]:
    """The context a suite check runs with (endpoint, clients, reference, budget, data;
    the request bodies its cassette recorded, when it is replayed)."""
    from pytest_imagegen.checks.context import CheckContext

    item = request.node
    check: Check = item.imagegen_check
    endpoint = {e.name: e for e in imagegen_settings.endpoints}[item.imagegen_endpoint_name]
    reference = request.getfixturevalue("imagegen_reference") if endpoint.is_reference else None
    data = item_data(item)
    with ExitStack() as stack:
        is_live = replayed = recorded = None
        # Checks with scripted faults talk to the reference server directly: a stall cannot
        # be recorded, and what they test is the live behaviour.
        if check.sends_requests and not check.needs_faults:
            cassette = stack.enter_context(
                _cassette(item, endpoint, imagegen_settings, SUITE_CASSETTE_MODULE, check.id)
            )
            is_live = cassette.is_live
            replayed = cassette.replayed if cassette.policy == "mixed" else None
            # Checks that draw their requests replay the recorded ones: new draws depend on
            # the hypothesis release and on the local modules imported.
            recorded = _recorded_requests(cassette)
        ctx = CheckContext(
            endpoint,
            reference=reference,
            budget=imagegen_budget,
            is_live=is_live,
            replayed=replayed,
            data=data,
            recorded_requests=recorded,
        )
        stack.callback(ctx.close)
        yield ctx
