"""The run report: terminal summary, JSON and HTML files, JUnit properties.

Collection is keyed on test reports, not on items, so it is correct under pytest-xdist:
workers serialize every ``TestReport`` to the controller, and the controller's
``pytest_runtest_logreport`` feeds :meth:`ReportCollector.add`. Workers collect nothing.

Per-test data is the dict of the module contract (``endpoint``, ``check``, ``area``,
``category``, ``hint``, ``latencies_s``, ``attempts``, ``successes``, ``cost_usd``,
``response_bytes``, ``images``, ``cassette``, ``cassette_status``). The plugin keeps it in
``item.user_properties`` as ``("imagegen", {...})``; :func:`prepare_report` moves it from
each report's ``user_properties`` onto ``report.imagegen`` (plain JSON types, so xdist can
send it) and leaves the small ``imagegen_*`` JUnit properties in its place, because pytest's
junitxml writes every user property as ``str(value)``, thumbnails included.

Everything here is computed from :meth:`ReportCollector.summary`, the JSON document; the
terminal lines and the HTML page are two renderings of it.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import math
import os
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_imagegen import ratings as _ratings
from pytest_imagegen._files import atomic_write
from pytest_imagegen.latency import percentile, rating
from pytest_imagegen.redact import Redactor
from pytest_imagegen.report_format import (
    AREAS,
    PROBLEM_CLASSES,
    TEST_OUTCOMES,
)
from pytest_imagegen.report_format import (
    cell_text as _cell_text,
)
from pytest_imagegen.report_format import (
    counts_text as _counts_text,
)
from pytest_imagegen.report_format import (
    seconds as _seconds,
)
from pytest_imagegen.report_format import (
    usd as _usd,
)
from pytest_imagegen.testdata import PROPERTY, is_data_entry

if TYPE_CHECKING:
    import pytest

    from pytest_imagegen.config import Settings

SCHEMA = "pytest-imagegen/report"
#: 2: verdicts, problem classes, the three ratings, recorded latencies, cost advice and the
#: evidence of each failure (see docs/reports.md).
SCHEMA_VERSION = 2

#: What pytest reports.
OUTCOMES = ("passed", "failed", "skipped")
#: The problem class of a failure no error category explains, by the area of its check.
_AREA_PROBLEM_CLASS = {"efficiency": "efficiency", "cost": "cost"}


#: The endpoint key for tests that name none (a user test marked ``imagegen`` alone).
NO_ENDPOINT = "(none)"

WIDTH = 80  # the terminal summary fits an 80-column terminal
_MESSAGE_MAX = 2000  # characters of a failure message kept in the JSON report

_B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


def is_xdist_worker(config: pytest.Config) -> bool:
    """True in a pytest-xdist worker process (the controller does the reporting)."""
    return hasattr(config, "workerinput")


def mask_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the given secret values (also percent- or JSON-encoded) and anything
    that looks like an API key or a bearer token masked (:mod:`pytest_imagegen.redact`)."""
    return Redactor.of(secrets).message(text)


def note_failure(
    data: dict[str, Any],
    diagnosis: Any,
    *,
    expected: str | None = None,
    seen: str | None = None,
) -> None:
    """Fill a failed test's ``category``, ``problem_class``, ``hint`` and ``expected``.

    What the check said (``data["failure"]``: ``category``, ``fix``, ``expected``) comes
    first; then the diagnosis of the endpoint's error. The hint is the fix on the endpoint
    when the check named one, else the diagnosis's advice.
    """
    from pytest_imagegen.classify.categories import PROBLEM_CLASS
    from pytest_imagegen.errors import category_of

    given = data.get("failure")
    failure: Mapping[str, Any] = given if isinstance(given, dict) else {}
    category = _text(
        failure.get("category") or (diagnosis.category if diagnosis is not None else None)
    )
    data["category"] = category
    area = _text(data.get("area")) or ""
    known = category_of(category)
    data["problem_class"] = (
        PROBLEM_CLASS[known] if known is not None else _AREA_PROBLEM_CLASS.get(area, "technical")
    )
    if category is None and area in _AREA_PROBLEM_CLASS:
        data["problem_class"] = _AREA_PROBLEM_CLASS[area]
    hint = failure.get("fix") or (diagnosis.hint if diagnosis is not None else None)
    data["hint"] = hint
    data["expected"] = failure.get("expected") or (expected or "").replace("``", "`") or None
    if seen:
        # What the check saw, without the expectation and fix the terminal adds to it.
        data["seen"] = seen


def junit_properties(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The flat JUnit properties of one test's data; empty strings for unknown values.

    ``imagegen_latency_s`` is the slowest request the test made; ``imagegen_cost_usd`` the
    estimated spend of its requests.
    """
    latencies = _floats(data.get("latencies_s"))
    cost = _number(data.get("cost_usd"))
    return [
        ("imagegen_endpoint", _text(data.get("endpoint")) or ""),
        ("imagegen_check", _text(data.get("check")) or ""),
        ("imagegen_category", _text(data.get("category")) or ""),
        ("imagegen_problem_class", _text(data.get("problem_class")) or ""),
        ("imagegen_hint", _clip(_text(data.get("hint")) or "", 500)),
        ("imagegen_latency_s", f"{max(latencies):.3f}" if latencies else ""),
        ("imagegen_cost_usd", f"{cost:.6f}" if cost is not None else ""),
    ]


def prepare_report(report: pytest.TestReport) -> None:
    """Make a fresh report carry the test's data safely; call it from the plugin's
    ``pytest_runtest_makereport`` wrapper for every phase.

    Moves the ``("imagegen", {...})`` entry out of ``report.user_properties`` into
    ``report.imagegen`` as plain JSON types (a ``Path`` or an enum would break xdist's
    serialization) and puts the :func:`junit_properties` in its place, so ``--junitxml``
    writes five short properties instead of the whole dict. ``item.user_properties`` is not
    touched: the report holds its own copy of the list.
    """
    data = None
    kept: list[tuple[str, object]] = []
    for entry in report.user_properties:
        if is_data_entry(entry):
            data = entry[1]
        else:
            kept.append(entry)
    if data is None:
        return
    plain = _plain(data)
    report.imagegen = plain  # type: ignore[attr-defined]
    report.user_properties = [*kept, *junit_properties(plain)]


def imagegen_data(report: object) -> dict[str, Any] | None:
    """The test data a report carries (after :func:`prepare_report` or not), or None."""
    data = getattr(report, PROPERTY, None)
    if isinstance(data, dict):
        return data
    found = None
    for entry in getattr(report, "user_properties", None) or ():
        if is_data_entry(entry):
            found = entry[1]
    if isinstance(found, str):  # tolerate a plugin that stored the dict as JSON text
        try:
            found = json.loads(found)
        except ValueError:
            return None
    return found if isinstance(found, dict) else None


def finish_report(
    report: pytest.TestReport,
    data: dict[str, Any],
    error: BaseException | None,
    *,
    expected: str | None,
    settings: Settings | None,
) -> None:
    """A test phase's report made ready for the collector, from the plugin's
    ``pytest_runtest_makereport`` wrapper: the outcome (and, for a failure, its category,
    problem class and hint, with ``expected`` the check's summary) noted in the test's
    ``data``, secrets masked in the failure text (with ``settings``), then
    :func:`prepare_report`. ``error`` is the exception the phase ended with, if any."""
    if report.when == "call" or (report.when == "setup" and not report.passed):
        data["outcome"] = report.outcome
        if report.passed and data.get("deviations"):
            data["outcome"] = "warned"  # passed with DeviationWarnings
        if report.failed and error is not None:
            from pytest_imagegen.classify import diagnosis_of
            from pytest_imagegen.errors import ConformanceFailure

            note_failure(
                data,
                diagnosis_of(error),
                expected=expected,
                seen=str(error) if isinstance(error, ConformanceFailure) else None,
            )
    redact_failure(report, settings)
    prepare_report(report)


def redact_failure(report: pytest.TestReport, settings: Settings | None) -> None:
    """A failure text that quotes an endpoint's key or a configured header value shows it
    masked in the terminal, as in the reports."""
    if settings is None or not report.failed or report.longrepr is None:
        return
    from pytest_imagegen.redact import MIN_SECRET_LEN

    secrets = [v for e in settings.endpoints for v in e.secrets]
    text = str(report.longrepr)
    if any(len(s) >= MIN_SECRET_LEN and s in text for s in secrets):
        report.longrepr = Redactor.of(secrets).message(text)


def collector_for(
    settings: Settings | None,
    *,
    workers: int | None,
    reference_options: Mapping[str, Any] | None = None,
) -> ReportCollector:
    """The collector of a run with these settings (None: the settings are invalid);
    ``reference_options`` are the embedded reference server's (its latency and defects are
    settings too)."""
    import pytest

    from pytest_imagegen import __version__

    run_info: dict[str, Any] = {
        "pytest": pytest.__version__,
        "pytest_imagegen": __version__,
        "workers": workers or 0,
    }
    if settings is None:
        return ReportCollector(run_info=run_info)
    run_info["record_mode"] = settings.record_mode
    rows = settings.describe()
    reproduce_env: dict[str, str] = {}
    if reference_options is not None and any(e.is_reference for e in settings.endpoints):
        reference_rows, reproduce_env = _reference_rows(settings, reference_options)
        rows.extend(reference_rows)
    return ReportCollector(
        settings_rows=rows,
        run_info=run_info,
        deadlines={e.name: e.deadline_s for e in settings.endpoints},
        # The endpoints' keys and configured header values are masked wherever they appear.
        secrets=[v for e in settings.endpoints for v in e.secrets],
        endpoints={e.name: e for e in settings.endpoints},
        thresholds=settings.ratings,
        custom_profiles=settings.custom_profiles,
        reproduce_env=reproduce_env,
    )


def _reference_rows(
    settings: Settings, options: Mapping[str, Any]
) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """Settings rows for the embedded reference server's latency and defects, with where
    each came from, and the variables that make a reproducing command use the same ones."""
    import os

    from pytest_imagegen.config import SOURCE_DEFAULT, SOURCE_FILE
    from pytest_imagegen.names import ENV_REFERENCE_DEFECTS, ENV_REFERENCE_LATENCY

    configured = dict(settings.reference or {})
    rows = []
    env: dict[str, str] = {}
    for key, var in (("latency", ENV_REFERENCE_LATENCY), ("defects", ENV_REFERENCE_DEFECTS)):
        if (os.environ.get(var) or "").strip():
            source = f"environment {var}"
        elif configured.get(key) is not None:
            source = SOURCE_FILE
        else:
            source = SOURCE_DEFAULT
        value = options.get(key)
        if key == "latency":
            shown = ", ".join(f"{q}={s:g} s" for q, s in dict(value).items()) if value else "0 s"
            if value and any(dict(value).values()):
                env[var] = ",".join(f"{q}={s:g}" for q, s in dict(value).items())
        else:
            shown = ", ".join(value) if value else "(none)"
            if value:
                env[var] = ",".join(value)
        rows.append((f"reference.{key}", shown, source))
    if env and settings.sources.get("cassette_dir", "").startswith("environment"):
        # The same server misbehaviour only shows with the same cassettes (or none).
        env["IMAGEGEN_CASSETTE_DIR"] = str(settings.cassette_dir)
    return rows, env


@dataclass
class _Record:
    """What is known about one test (one nodeid) so far."""

    nodeid: str
    data: dict[str, Any] = field(default_factory=dict)
    outcome: str | None = None  # None until the setup failed/skipped or the call reported
    duration_s: float = 0.0
    message: str | None = None


class ReportCollector:
    """Collects test reports on the controller and renders the run report.

    ``settings_rows`` are ``Settings.describe()`` rows ``(key, value, source)``;
    ``run_info`` free-form facts about the run (pytest version, workers, ...);
    ``deadlines`` endpoint name -> ``deadline_s``, to judge each endpoint's p95 against;
    ``secrets`` literal values (``Endpoint.secrets``) masked wherever they would appear;
    ``endpoints`` the resolved ``Endpoint`` objects by name (for the commands that reproduce
    a failure and the cost advice); ``thresholds`` the rating thresholds by
    :mod:`pytest_imagegen.ratings` key; ``custom_profiles`` the user's profiles (to price a
    fallback model); ``reproduce_env`` variables a reproducing command must set (the
    reference server's defects). :meth:`find_unused_cassettes` fills
    :attr:`unused_cassettes` before the summary is rendered.
    """

    def __init__(
        self,
        *,
        settings_rows: Iterable[Sequence[Any]] = (),
        run_info: Mapping[str, Any] | None = None,
        deadlines: Mapping[str, float] | None = None,
        secrets: Iterable[str] = (),
        endpoints: Mapping[str, Any] | None = None,
        thresholds: Mapping[str, Sequence[float]] | None = None,
        custom_profiles: Mapping[str, Any] | None = None,
        reproduce_env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings_rows = [tuple(row) for row in settings_rows]
        self.run_info = dict(run_info or {})
        self.deadlines = dict(deadlines or {})
        self.endpoints = dict(endpoints or {})
        self.thresholds = {**_ratings.DEFAULT_THRESHOLDS, **dict(thresholds or {})}
        self.custom_profiles = dict(custom_profiles or {})
        self.reproduce_env = dict(reproduce_env or {})
        self.unused_cassettes: list[str] = []
        self._secrets = tuple(s for s in secrets if s)
        self._records: dict[str, _Record] = {}
        self._warnings: dict[str, list[str]] = {}

    def warn(self, nodeid: str, message: str) -> None:
        """Note a ``DeviationWarning`` a test raised: a test that passed becomes ``warned``
        (call it from ``pytest_warning_recorded`` on the controller)."""
        self._warnings.setdefault(nodeid, []).append(message)

    def add(self, report: pytest.TestReport) -> None:
        """Take one ``TestReport``; call it from ``pytest_runtest_logreport`` on the
        controller (never on an xdist worker) for every phase.

        A test counts once, by nodeid: its call outcome, or its setup outcome when the setup
        failed or skipped (no call follows), turned into a failure by a teardown error or by
        xdist's report of a crashed worker. Reports of tests that carry no imagegen data are
        ignored.
        """
        when = getattr(report, "when", None)
        outcome = getattr(report, "outcome", None)
        if when is None or outcome not in OUTCOMES:
            return  # collect reports, or "rerun" from pytest-rerunfailures
        nodeid = str(report.nodeid)
        data = imagegen_data(report)
        record = self._records.get(nodeid)
        if record is None:
            if data is None:
                return
            record = self._records[nodeid] = _Record(nodeid)
        if when == "setup":
            # A new setup starts the test afresh (a rerun replaces the earlier attempt).
            record.outcome, record.message, record.duration_s = None, None, 0.0
        if data is not None:
            record.data = dict(data)  # the latest phase knows the most (cost, cassette)
        record.duration_s += float(getattr(report, "duration", 0.0) or 0.0)
        if when == "call" or (when == "setup" and outcome != "passed"):
            record.outcome = outcome
            record.message = _message(report) if outcome != "passed" else None
        elif when != "setup" and outcome == "failed" and record.outcome != "failed":
            # A teardown error, or xdist's report (when "???") for a crashed worker's item.
            record.outcome = "failed"
            record.message = _message(report)

    def find_unused_cassettes(self) -> None:
        """List the cassettes no test replayed, in the folders of those the tests named: a
        cassette its test did not play (the test skipped before sending) is as unused as one
        no test names. Only meaningful on a run that selected every test."""
        from pytest_imagegen.cassettes import unused_in_folders

        tests = [r.data for r in self._records.values() if r.outcome is not None]
        used = [str(t["cassette"]) for t in tests if t.get("cassette")]
        unplayed = [
            str(t["cassette"])
            for t in tests
            if t.get("cassette") and t.get("cassette_status") == "unused"
        ]
        self.unused_cassettes = [str(p) for p in unused_in_folders(used, unplayed=unplayed)]

    def summary(self) -> dict[str, Any]:
        """The JSON report document (schema ``pytest-imagegen/report``, version 2)."""
        records = sorted(
            (r for r in self._records.values() if r.outcome is not None),
            key=lambda r: r.nodeid,
        )
        pairs = [(self._test_entry(r), r) for r in records]
        tests = [test for test, _ in pairs]
        endpoints: dict[str, dict[str, Any]] = {}
        by_endpoint: dict[str, list[tuple[dict[str, Any], _Record]]] = {}
        for test, record in pairs:
            by_endpoint.setdefault(test["endpoint"] or NO_ENDPOINT, []).append((test, record))
        for name in sorted(by_endpoint):
            endpoints[name] = self._endpoint_entry(name, by_endpoint[name])
        counts = {o: sum(t["outcome"] == o for t in tests) for o in TEST_OUTCOMES}
        attempts = sum(e["attempts"] for e in endpoints.values())
        successes = sum(e["successes"] for e in endpoints.values())
        doc = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "verdict": _verdict(counts),
            "settings": [
                {"key": _text(k), "value": _text(v), "source": _text(s)}
                for k, v, s in map(_row3, self.settings_rows)
            ],
            "run": _plain(self.run_info),
            "thresholds": {k: list(v) for k, v in self.thresholds.items()},
            "endpoints": endpoints,
            "tests": tests,
            "unused_cassettes": sorted(str(p) for p in self.unused_cassettes),
            "totals": {
                "tests": len(tests),
                **counts,
                "attempts": attempts,
                "successes": successes,
                "success_rate": _ratio(successes, attempts),
                "estimated_spend_usd": round(
                    sum(e["estimated_spend_usd"] for e in endpoints.values()), 6
                ),
            },
        }
        # Secrets never reach a report, even quoted in a message: the endpoints' configured
        # values and key-shaped text are masked wherever text is written.
        scrubbed: dict[str, Any] = _scrub(doc, Redactor.of(self._secrets))
        return scrubbed

    def _endpoint_entry(
        self, name: str, rows: list[tuple[dict[str, Any], _Record]]
    ) -> dict[str, Any]:
        areas = {area: dict.fromkeys(TEST_OUTCOMES, 0) for area in AREAS}
        classes = {c: {"failed": 0, "warned": 0} for c in PROBLEM_CLASSES}
        latencies: list[float] = []
        replays: list[float] = []
        sources: set[str] = set()
        recorded_at: list[str] = []
        attempts = successes = 0
        spend = 0.0
        images: list[dict[str, Any]] = []
        succeeded: list[tuple[str, Mapping[str, Any]]] = []
        for test, record in rows:
            areas[test["area"]][test["outcome"]] += 1
            if test["outcome"] in ("failed", "warned"):
                cls = test["problem_class"] if test["problem_class"] in classes else "technical"
                classes[cls][test["outcome"]] += 1
            latencies.extend(test["latencies_s"])
            replays.extend(test["replay_latencies_s"])
            if test["latencies_s"]:
                sources.add(test["latency_source"])
            if test["recorded_at"]:
                recorded_at.append(test["recorded_at"])
            attempts += test["attempts"]
            successes += test["successes"]
            spend += test["cost_usd"]
            for image in record.data.get("images") or ():
                if isinstance(image, Mapping):
                    images.append(
                        {
                            "nodeid": test["nodeid"],
                            "outcome": test["outcome"],
                            "format": _text(image.get("format")),
                            "size": _text(image.get("size")),
                            "thumb_png_b64": _thumb(image.get("thumb_png_b64")),
                        }
                    )
            if test["outcome"] in ("passed", "warned"):
                for params in record.data.get("succeeded_params") or ():
                    if isinstance(params, Mapping):
                        succeeded.append((test["nodeid"], params))
        counts = {o: sum(a[o] for a in areas.values()) for o in TEST_OUTCOMES}
        p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
        deadline = _number(self.deadlines.get(name))
        rate = _ratio(successes, attempts)
        advice = self._advice(name, succeeded)
        per_image = advice["configured"]["cost_per_image_usd"] if advice else None
        source = sources.pop() if len(sources) == 1 else ("mixed" if sources else None)
        figures = {
            _ratings.RESPONSE_TIME.key: p50,
            _ratings.SUCCESS_RATE.key: rate,
            _ratings.COST_PER_IMAGE.key: per_image,
        }
        return {
            "verdict": _verdict(counts),
            "counts": counts,
            "problem_classes": {
                c: {
                    **n,
                    "verdict": "failed" if n["failed"] else "warned" if n["warned"] else "passed",
                }
                for c, n in classes.items()
            },
            "areas": areas,
            "latency_s": {
                "p50": p50,
                "p95": p95,
                "count": len(latencies),
                "source": source,
                "recorded_at": max(recorded_at) if recorded_at else None,
            },
            "replay_s": (
                {
                    "p50": percentile(replays, 50),
                    "p95": percentile(replays, 95),
                    "count": len(replays),
                }
                if replays
                else None
            ),
            "deadline_s": deadline,
            "p95_within_deadline": None if p95 is None or deadline is None else p95 <= deadline,
            "rating": rating(p50, self.thresholds[_ratings.RESPONSE_TIME.key]),
            "ratings": {
                key: {
                    "value": value,
                    "level": _ratings.rate(key, value, self.thresholds[key]),
                    "thresholds": list(self.thresholds[key]),
                }
                for key, value in figures.items()
            },
            "attempts": attempts,
            "successes": successes,
            "success_rate": rate,
            "estimated_spend_usd": round(spend, 6),
            "cost_advice": advice,
            "images": images,
        }

    def _advice(
        self, name: str, succeeded: list[tuple[str, Mapping[str, Any]]]
    ) -> dict[str, Any] | None:
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            return None
        from pytest_imagegen.advice import cost_advice

        try:
            return cost_advice(endpoint, succeeded, custom_profiles=self.custom_profiles)
        except Exception:  # advice is a courtesy: a profile oddity never loses the report
            return None

    def _test_entry(self, record: _Record) -> dict[str, Any]:
        test = _test_entry(record, self._warnings.get(record.nodeid, ()))
        endpoint = self.endpoints.get(test["endpoint"] or "")
        if test["outcome"] == "failed":
            test["reproduce"] = reproduce_commands(
                test, endpoint, self.run_info, self.reproduce_env
            )
        return test

    def terminal_lines(self, verbosity: int = 0) -> list[str]:
        """The terminal summary as lines of at most :data:`WIDTH` columns (see
        :func:`render_terminal`); [] when no test carried imagegen data and no cassette
        went unused."""
        return render_terminal(self.summary(), verbosity)

    def write(self, path: Path | str) -> Path:
        """Write the report atomically: HTML for a ``.html``/``.htm`` path, JSON otherwise.

        Parent directories are created; the file appears complete or not at all (written
        to a temporary file next to it, then ``os.replace``).
        """
        path = Path(path)
        doc = self.summary()
        if path.suffix.lower() in (".html", ".htm"):
            text = render_html(doc)
        else:
            text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        atomic_write(path, text.encode("utf-8"))
        return path


# --------------------------------------------------------------------------- rendering


def render_terminal(doc: Mapping[str, Any], verbosity: int = 0) -> list[str]:
    """Plain-text summary of a report document (see :meth:`ReportCollector.summary`),
    within :data:`WIDTH` columns.

    ``verbosity`` is pytest's: ``-qq`` (-2) prints one line per endpoint; ``-q`` (-1) the
    matrix and the failures; the default adds the verdict, the figures with their ratings,
    the cost advice and unused cassettes; ``-v`` the settings and the run facts too.
    """
    tests = doc["tests"]
    if not tests and not doc["unused_cassettes"]:
        return []
    endpoints = doc["endpoints"]
    if verbosity <= -2:
        return [_endpoint_line(name, entry) for name, entry in endpoints.items()]
    failures = [t for t in tests if t["outcome"] == "failed"]
    lines: list[str] = []
    if verbosity >= 0:
        lines += _terminal_verdict(doc)
    if endpoints:
        lines += ["", *_terminal_matrix(endpoints)] if lines else _terminal_matrix(endpoints)
    if verbosity >= 0 and endpoints:
        lines += ["", *_terminal_stats(endpoints)]
        lines += _terminal_advice(endpoints)
    if failures:
        lines += ["", f"failures ({len(failures)}):"]
        for test in failures:
            lines += _terminal_failure(test, brief=verbosity < 0)
    if verbosity >= 0:
        lines += _terminal_went_live(tests)
    if verbosity >= 0 and doc["unused_cassettes"]:
        lines += [
            "",
            f"unused cassettes ({len(doc['unused_cassettes'])}): no test replayed them; "
            "delete them or re-record:",
        ]
        lines += [f"  {p}" for p in doc["unused_cassettes"]]
    if verbosity >= 1:
        if doc["settings"]:
            lines += ["", "settings (value, source):"]
            for row in doc["settings"]:
                lines += _wrap(f"{row['key']} = {row['value']}  ({row['source']})", "  ", "      ")
        if doc["run"]:
            run = ", ".join(f"{k}={_clip(_text(v) or '', 40)}" for k, v in doc["run"].items())
            lines += _wrap(f"run: {run}", "", "  ")
    return lines


def _terminal_went_live(tests: Sequence[Mapping[str, Any]]) -> list[str]:
    """Replays in which a loopback endpoint with no cassette was reached live: said out loud."""
    went_live = [t for t in tests if t.get("cassette_status") == "live"]
    if not went_live:
        return []
    lines = [
        "",
        *_wrap(
            f"went live during replay ({len(went_live)}): these tests have no cassette, so "
            "their requests were sent to the loopback endpoint, and nothing was recorded:",
            "",
            "  ",
        ),
    ]
    for test in went_live:
        lines += _wrap(f"{test['nodeid']}: no cassette at {test.get('cassette')}", "  ", "      ")
    lines += _wrap(
        "record them with --imagegen-record-mode=once (records what has no cassette)",
        "  ",
        "  ",
    )
    return lines


def _wrap(text: str, first: str, rest: str) -> list[str]:
    out: list[str] = []
    for i, paragraph in enumerate(text.splitlines() or [""]):
        out += textwrap.wrap(
            paragraph,
            WIDTH,
            initial_indent=first if i == 0 else rest,
            subsequent_indent=rest,
            break_on_hyphens=False,
            break_long_words=True,
        ) or [rest.rstrip()]
    return out


def _class_counts(entry: Mapping[str, Any]) -> str:
    parts = []
    for cls, n in entry["problem_classes"].items():
        bits = [f"{n[o]} {o}" for o in ("failed", "warned") if n[o]]
        if bits:
            parts.append(f"{cls} {', '.join(bits)}")
    return "; ".join(parts)


def _endpoint_line(name: str, entry: Mapping[str, Any]) -> str:
    """One line for ``-qq``: verdict, counts, problem classes and the three ratings."""
    levels = entry["ratings"]
    short = {"response_time_s": "time", "success_rate": "success", "cost_per_image_usd": "cost"}
    rated = [f"{short.get(k, k)} {levels[k]['level']}" for k in levels if levels[k]["level"]]
    classes = _class_counts(entry)
    text = f"imagegen {name}: {entry['verdict'].upper()} ({_counts_text(entry['counts'])})"
    if classes:
        text += f" [{classes}]"
    if rated:
        text += "; " + ", ".join(rated)
    return text


def _terminal_verdict(doc: Mapping[str, Any]) -> list[str]:
    totals = doc["totals"]
    lines = [
        f"verdict: {doc['verdict'].upper()}: {totals['tests']} test(s), "
        f"{_counts_text(totals)}; estimated spend {_usd(totals['estimated_spend_usd'])}"
    ]
    for name, entry in doc["endpoints"].items():
        classes = _class_counts(entry)
        text = f"  {name}: {entry['verdict'].upper()} ({_counts_text(entry['counts'])})"
        lines += _wrap(text + (f"; by problem class: {classes}" if classes else ""), "", "      ")
    return lines


#: Short matrix headings, so that a matrix of every area fits 80 columns.
_SHORT = {
    "separation": "separ",
    "request_shape": "request",
    "response_shape": "response",
    "edits": "edits",
    "streaming": "stream",
    "errors": "errors",
    "fallback": "fallbk",
    "efficiency": "effic",
    "cost": "cost",
    "other": "other",
}


def _terminal_matrix(endpoints: Mapping[str, Any]) -> list[str]:
    used = [a for a in AREAS if any(sum(e["areas"][a].values()) for e in endpoints.values())]
    heads = [_SHORT.get(a, a[:8]) for a in used]
    rows = [("endpoint", *heads)]
    for name, entry in endpoints.items():
        rows.append((name, *(_cell_text(entry["areas"][area]) for area in used)))
    table = _table(rows)
    if max(map(len, table)) > WIDTH:
        # Many areas: one row per area instead.
        rows = [("area", *endpoints)]
        for area in used:
            rows.append((area, *(_cell_text(e["areas"][area]) for e in endpoints.values())))
        table = _table(rows)
    legend = ", ".join(f"{h}={a}" for a, h in zip(used, heads, strict=True) if h != a)
    return [
        *table,
        'cells: passed, then F failed, W warned, S skipped ("!" marks a failure)',
        *(_wrap(f"areas: {legend}", "", "  ") if legend else []),
    ]


def _terminal_stats(endpoints: Mapping[str, Any]) -> list[str]:
    rows = [("endpoint", "p50", "p95", "deadline", "success", "$/image", "spend")]
    rated: list[tuple[str, ...]] = [("rating", "response time", "success rate", "cost per image")]
    notes = []
    for name, entry in endpoints.items():
        lat = entry["latency_s"]
        rate = entry["success_rate"]
        levels = entry["ratings"]
        per_image = levels[_ratings.COST_PER_IMAGE.key]["value"]
        success = (
            f"{rate:.0%} ({entry['successes']}/{entry['attempts']})" if rate is not None else "-"
        )
        rows.append(
            (
                name,
                _seconds(lat["p50"]),
                _seconds(lat["p95"]),
                _seconds(entry["deadline_s"]),
                success,
                f"${per_image:.3f}" if per_image is not None else "-",
                _usd(entry["estimated_spend_usd"]),
            )
        )
        rated.append((name, *(levels[r.key]["level"] or "-" for r in _ratings.RATINGS.values())))
        notes += _latency_note(name, entry)
        if entry["p95_within_deadline"] is False:
            notes.append(
                f"{name}: p95 {_seconds(lat['p95'])} exceeds the "
                f"{_seconds(entry['deadline_s'])} deadline"
            )
    return [
        *_table(rows),
        *(line for note in notes for line in _wrap(note, "", "  ")),
        "",
        *_table(rated),
    ]


def _latency_note(name: str, entry: Mapping[str, Any]) -> list[str]:
    """Where the latency figures come from, when it is not this run's live requests."""
    lat, replay = entry["latency_s"], entry["replay_s"]
    took = f"; this replay took p50 {_seconds(replay['p50'])}" if replay else ""
    if lat["source"] == "recorded":
        return [f"{name}: latency as recorded live on {_day(lat['recorded_at'])}{took}"]
    if lat["source"] == "mixed":
        return [
            f"{name}: latency partly recorded live (latest {_day(lat['recorded_at'])}), "
            f"partly measured in this run{took}"
        ]
    if replay and not lat["count"]:
        return [
            f"{name}: replayed from cassettes that kept no live latency (re-record to get "
            f"one){took}"
        ]
    return []


def _terminal_advice(endpoints: Mapping[str, Any]) -> list[str]:
    from pytest_imagegen.advice import describe

    lines = []
    for name, entry in endpoints.items():
        if entry.get("cost_advice"):
            lines += _wrap(f"cost advice {name}: {describe(entry['cost_advice'])}", "", "  ")
    return ["", *lines] if lines else []


def _terminal_failure(test: Mapping[str, Any], *, brief: bool) -> list[str]:
    where = f"{test['check']} [{test['endpoint']}]" if test["check"] else test["nodeid"]
    kind = " / ".join(x for x in (test["problem_class"], test["category"]) if x)
    lines = _wrap(f"FAILED {where}" + (f" ({kind})" if kind else ""), "  ", "      ")
    if test["message"]:
        lines += _wrap(f"seen: {test['message'].strip()}", "    ", "      ")
    if test["expected"] and not brief:
        lines += _wrap(f"expected: {test['expected']}", "    ", "      ")
    if test["hint"]:
        lines += _wrap(f"fix: {test['hint']}", "    ", "      ")
    reproduce = test.get("reproduce") or {}
    if reproduce.get("pytest") and not brief:
        lines += _wrap(f"reproduce: {reproduce['pytest']}", "    ", "      ")
    return lines


def _table(rows: Sequence[Sequence[str]], *, indent: str = "") -> list[str]:
    """Left-aligned columns within :data:`WIDTH`; a first cell too long for its column
    (a long endpoint name) goes on a line of its own above the rest of its row."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    rest = len(indent) + sum(widths[1:])
    # Two spaces between columns read best; one keeps more room for the first column.
    gap = "  " if rest + widths[0] + 2 * (len(widths) - 1) <= WIDTH else " "
    widths[0] = min(widths[0], max(8, WIDTH - rest - len(gap) * (len(widths) - 1)))
    lines = []
    for first, *cells in rows:
        if len(first) > widths[0]:
            lines.append(indent + first)
            first = ""
        padded = (cell.ljust(w) for cell, w in zip((first, *cells), widths, strict=True))
        lines.append((indent + gap.join(padded)).rstrip())
    return lines


def _day(iso: str | None) -> str:
    return iso[:10] if iso else "an unknown date"


def render_html(doc: Mapping[str, Any]) -> str:
    """One self-contained HTML page (see :mod:`pytest_imagegen.html_report`)."""
    from pytest_imagegen.html_report import render

    return render(doc)


# --------------------------------------------------------------------------- helpers


def _test_entry(record: _Record, deviations: Iterable[str] = ()) -> dict[str, Any]:
    data = record.data
    check = _text(data.get("check"))
    area = _text(data.get("area")) or (check.split(".", 1)[0] if check and "." in check else None)
    outcome = record.outcome
    # DeviationWarnings: from the check (``ctx.warn``) and any raised with warnings.warn;
    # a passed test with any is "warned" (see docs/gateways.md).
    given = [*(data.get("deviations") or ()), *deviations]
    warnings = list(dict.fromkeys(w for w in (_text(w) for w in given) if w))
    if outcome == "passed" and (data.get("outcome") == "warned" or warnings):
        outcome = "warned"
    failed = outcome == "failed"
    latencies = _floats(data.get("latencies_s"))
    replays = _floats(data.get("replay_latencies_s"))
    recorded_at = _text(data.get("recorded_at"))
    if not replays:
        source = "live"
    elif recorded_at:
        source = "recorded"
    else:
        # Replayed from a cassette that kept no latency: only this run's replay timings.
        source = "replay"
    entry: dict[str, Any] = {
        "nodeid": record.nodeid,
        "endpoint": _text(data.get("endpoint")),
        "check": check,
        "area": area if area in AREAS else "other",
        "outcome": outcome,
        "duration_s": round(record.duration_s, 3),
        "category": _text(data.get("category")) if failed else None,
        "problem_class": (_text(data.get("problem_class")) or _problem_class(data))
        if failed
        else None,
        "hint": _text(data.get("hint")) if failed else None,
        "expected": _text(data.get("expected")) if failed else None,
        "message": (_text(data.get("seen")) if failed else None)
        or _strip_nodeid(record.message, check, _text(data.get("endpoint"))),
        "latencies_s": [] if source == "replay" else latencies,
        "latency_source": source,
        "recorded_at": recorded_at,
        "replay_latencies_s": replays,
        "attempts": _count(data.get("attempts")),
        "successes": _count(data.get("successes")),
        "cost_usd": _number(data.get("cost_usd")) or 0.0,
        "response_bytes": _count(data.get("response_bytes")),
        "cassette": _text(data.get("cassette")),
        "cassette_status": _text(data.get("cassette_status")),
        "cassette_unplayed": [str(x) for x in data.get("cassette_unplayed") or ()],
        "deviations": warnings,
        "warned": outcome == "warned",
    }
    if failed:
        exchanges = data.get("exchanges") or ()
        entry["exchanges"] = [_exchange(x) for x in exchanges if isinstance(x, Mapping)]
    return entry


def _problem_class(data: Mapping[str, Any]) -> str:
    """The problem class of a failure whose data names none: by its category, else by the
    area of its check (efficiency and cost checks fail on efficiency and cost)."""
    from pytest_imagegen.classify.categories import PROBLEM_CLASS
    from pytest_imagegen.errors import category_of

    category = category_of(_text(data.get("category")))
    if category is not None:
        return PROBLEM_CLASS[category]
    return _AREA_PROBLEM_CLASS.get(_text(data.get("area")) or "", "technical")


def _exchange(value: Mapping[str, Any]) -> dict[str, Any]:
    """An exchange of the test data, JSON types only and thumbnails checked."""
    plain: dict[str, Any] = _plain(dict(value))
    given = plain.get("response")
    response: dict[str, Any] = given if isinstance(given, dict) else {}
    response["images"] = [
        {**img, "thumb_png_b64": _thumb(img.get("thumb_png_b64"))}
        for img in response.get("images") or ()
        if isinstance(img, dict)
    ]
    plain["response"] = response
    return plain


def _strip_nodeid(message: str | None, check: str | None, endpoint: str | None) -> str | None:
    """The message without a leading ``check [endpoint]:`` (the report names the test)."""
    if not message or not check:
        return message
    prefix = f"{check} [{endpoint}]: " if endpoint else f"{check}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _verdict(counts: Mapping[str, int]) -> str:
    """``failed`` if anything failed, else ``warned``, else ``passed`` if anything passed,
    else ``skipped`` (nothing ran, or everything was skipped)."""
    for outcome in ("failed", "warned", "passed"):
        if counts.get(outcome):
            return outcome
    return "skipped"


def reproduce_commands(
    test: Mapping[str, Any],
    endpoint: Any,
    run_info: Mapping[str, Any],
    env: Mapping[str, str],
) -> dict[str, str | None]:
    """Copy-paste commands that reproduce a failure: ``pytest`` (the same test, the same
    record mode, the same reference-server defects) and ``curl`` (the last request the test
    sent, the key taken from its variable, never written out)."""
    import shlex

    prefix = "".join(f"{k}={shlex.quote(v)} " for k, v in sorted(env.items()) if v)
    args = ["pytest"]
    check, name = test.get("check"), test.get("endpoint")
    if check and name:
        args += ["--imagegen", "--imagegen-endpoint", name, "-k", f"{check}"]
        mode = run_info.get("record_mode")
        if mode and mode != "none":
            args.append(f"--imagegen-record-mode={mode}")
    else:
        args.append(str(test.get("nodeid")))
    pytest_cmd = prefix + " ".join(shlex.quote(a) for a in args)
    curl = None
    exchanges = list(test.get("exchanges") or ())
    if exchanges:
        focus = next((x for x in exchanges if x.get("failed")), exchanges[-1])
        curl = _curl(focus["request"], endpoint, env)
    return {"pytest": pytest_cmd, "curl": curl}


def _curl(request: Mapping[str, Any], endpoint: Any, env: Mapping[str, str]) -> str | None:
    import shlex

    url = _text(request.get("url"))
    if not url:
        return None
    lines = []
    key_var = getattr(endpoint, "api_key_env", None)
    if getattr(endpoint, "is_reference", False):
        # The embedded server's port is gone with the run: start one by hand.
        url = "http://127.0.0.1:8000/v1/" + url.split("/v1/", 1)[-1]
        defects = [d for d in env.get("IMAGEGEN_REFERENCE_DEFECTS", "").split(",") if d]
        serve = "python -m pytest_imagegen serve --port 8000"
        if defects:
            serve += " --defect " + " ".join(defects)
        lines.append(f"# in another terminal: {serve}")
        key_var = "REFERENCE_KEY"
        lines.append(
            'REFERENCE_KEY="$(python -c "from pytest_imagegen.reference.server import '
            'DEFAULT_API_KEY; print(DEFAULT_API_KEY)")"'
        )
    parts = [f"curl -sS -X {request.get('method') or 'POST'} {shlex.quote(url)}"]
    if key_var:
        parts.append(f'-H "Authorization: Bearer ${key_var}"')
    body = request.get("body")
    if body is not None:
        parts.append("-H 'Content-Type: application/json'")
        parts.append("-d " + shlex.quote(json.dumps(body, ensure_ascii=False)))
    lines.append(" \\\n  ".join(parts))
    return "\n".join(lines)


def _message(report: object) -> str | None:
    """The short reason of a failed or skipped report (crash line or skip reason)."""
    longrepr = getattr(report, "longrepr", None)
    if longrepr is None:
        return None
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # skip: (path, lineno, reason)
        text = str(longrepr[2])
        text = text.removeprefix("Skipped: ")
    else:
        crash = getattr(longrepr, "reprcrash", None)
        text = str(crash.message) if crash is not None else str(longrepr)
    wasxfail = getattr(report, "wasxfail", None)
    if wasxfail is not None:
        text = f"xfail: {wasxfail}" if wasxfail else "xfail"
    return _clip(text, _MESSAGE_MAX)


def _plain(value: Any) -> Any:
    """``value`` as JSON types only (what execnet and ``json`` can carry)."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, Enum):
        return _plain(value.value)
    for kind in (bool, int, float, str):  # subclasses of the builtins
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _scrub(value: Any, redactor: Redactor, key: str | None = None) -> Any:
    if isinstance(value, str):
        return value if key == "thumb_png_b64" else redactor.message(value)
    if isinstance(value, dict):
        return {k: _scrub(v, redactor, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, redactor) for v in value]
    return value


def _row3(row: Sequence[Any]) -> tuple[Any, Any, Any]:
    padded = [*row, None, None, None]
    return padded[0], padded[1], padded[2]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, Enum):
        value = value.value
    return value if isinstance(value, str) else str(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: Any) -> int:
    number = _number(value)
    return int(number) if number is not None and number > 0 else 0


def _floats(values: Any) -> list[float]:
    if not isinstance(values, (list, tuple)):
        return []
    return [n for n in (_number(v) for v in values) if n is not None and n >= 0]


def _thumb(value: Any) -> str | None:
    """A thumbnail's base64 text when it is valid base64 (it goes into an attribute)."""
    if not isinstance(value, str) or not value or not _B64.match(value):
        return None
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return value


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)
