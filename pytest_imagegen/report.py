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

from pytest_imagegen._files import atomic_write
from pytest_imagegen.checks.registry import AREAS as CHECK_AREAS
from pytest_imagegen.latency import percentile, rating
from pytest_imagegen.redact import Redactor
from pytest_imagegen.testdata import PROPERTY, is_data_entry

if TYPE_CHECKING:
    import pytest

    from pytest_imagegen.config import Settings

SCHEMA = "pytest-imagegen/report"
SCHEMA_VERSION = 1

#: Matrix columns: the suite's areas, then "other" for user tests marked ``imagegen``.
AREAS = (*CHECK_AREAS, "other")
OUTCOMES = ("passed", "failed", "skipped")

#: The endpoint key for tests that name none (a user test marked ``imagegen`` alone).
NO_ENDPOINT = "(none)"

WIDTH = 100  # the terminal summary is laid out for 100 columns
_MESSAGE_MAX = 2000  # characters of a failure message kept in the JSON report

_B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


def is_xdist_worker(config: pytest.Config) -> bool:
    """True in a pytest-xdist worker process (the controller does the reporting)."""
    return hasattr(config, "workerinput")


def mask_secrets(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the given secret values (also percent- or JSON-encoded) and anything
    that looks like an API key or a bearer token masked (:mod:`pytest_imagegen.redact`)."""
    return Redactor.of(secrets).message(text)


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


def collector_for(settings: Settings | None, *, workers: int | None) -> ReportCollector:
    """The collector of a run with these settings (None: the settings are invalid)."""
    import pytest

    from pytest_imagegen import __version__

    run_info: dict[str, Any] = {
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
        # The endpoints' keys and configured header values are masked wherever they appear.
        secrets=[v for e in settings.endpoints for v in e.secrets] if settings else (),
    )


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
    ``secrets`` literal values (``Endpoint.secrets``) masked wherever they would appear.
    The plugin may fill :attr:`unused_cassettes` before the summary is rendered.
    """

    def __init__(
        self,
        *,
        settings_rows: Iterable[Sequence[Any]] = (),
        run_info: Mapping[str, Any] | None = None,
        deadlines: Mapping[str, float] | None = None,
        secrets: Iterable[str] = (),
    ) -> None:
        self.settings_rows = [tuple(row) for row in settings_rows]
        self.run_info = dict(run_info or {})
        self.deadlines = dict(deadlines or {})
        self.unused_cassettes: list[str] = []
        self._secrets = tuple(s for s in secrets if s)
        self._records: dict[str, _Record] = {}

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

    def summary(self) -> dict[str, Any]:
        """The JSON report document (schema ``pytest-imagegen/report``, version 1)."""
        records = sorted(
            (r for r in self._records.values() if r.outcome is not None),
            key=lambda r: r.nodeid,
        )
        pairs = [(_test_entry(r), r) for r in records]
        tests = [test for test, _ in pairs]
        endpoints: dict[str, dict[str, Any]] = {}
        by_endpoint: dict[str, list[tuple[dict[str, Any], _Record]]] = {}
        for test, record in pairs:
            by_endpoint.setdefault(test["endpoint"] or NO_ENDPOINT, []).append((test, record))
        for name in sorted(by_endpoint):
            endpoints[name] = self._endpoint_entry(name, by_endpoint[name])
        counts = {o: sum(t["outcome"] == o for t in tests) for o in OUTCOMES}
        attempts = sum(e["attempts"] for e in endpoints.values())
        successes = sum(e["successes"] for e in endpoints.values())
        doc = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "settings": [
                {"key": _text(k), "value": _text(v), "source": _text(s)}
                for k, v, s in map(_row3, self.settings_rows)
            ],
            "run": _plain(self.run_info),
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
        areas = {area: dict.fromkeys(OUTCOMES, 0) for area in AREAS}
        latencies: list[float] = []
        attempts = successes = 0
        spend = 0.0
        images: list[dict[str, Any]] = []
        for test, record in rows:
            areas[test["area"]][test["outcome"]] += 1
            latencies.extend(test["latencies_s"])
            attempts += test["attempts"]
            successes += test["successes"]
            spend += test["cost_usd"]
            for image in record.data.get("images") or ():
                if isinstance(image, Mapping):
                    images.append(
                        {
                            "nodeid": test["nodeid"],
                            "format": _text(image.get("format")),
                            "size": _text(image.get("size")),
                            "thumb_png_b64": _thumb(image.get("thumb_png_b64")),
                        }
                    )
        p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
        deadline = _number(self.deadlines.get(name))
        return {
            "areas": areas,
            "latency_s": {"p50": p50, "p95": p95, "count": len(latencies)},
            "deadline_s": deadline,
            "p95_within_deadline": None if p95 is None or deadline is None else p95 <= deadline,
            "rating": rating(p50),
            "attempts": attempts,
            "successes": successes,
            "success_rate": _ratio(successes, attempts),
            "estimated_spend_usd": round(spend, 6),
            "images": images,
        }

    def terminal_lines(self) -> list[str]:
        """The terminal summary as lines of at most about 100 columns; [] when no test
        carried imagegen data and no cassette went unused."""
        return render_terminal(self.summary())

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


def render_terminal(doc: Mapping[str, Any]) -> list[str]:
    """Plain-text summary of a report document (see :meth:`ReportCollector.summary`)."""
    tests = doc["tests"]
    if not tests and not doc["unused_cassettes"]:
        return []
    totals = doc["totals"]
    lines = [
        f"{len(doc['endpoints'])} endpoint(s), {totals['tests']} test(s): "
        f"{totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped; "
        f"estimated spend {_usd(totals['estimated_spend_usd'])}"
    ]
    if doc["settings"]:
        lines += ["", "settings (value, source):"]
        rows = [(s["key"], _clip(s["value"], 48), s["source"]) for s in doc["settings"]]
        lines += _table(rows, indent="  ")
    if doc["run"]:
        run = ", ".join(f"{k}={_clip(_text(v) or '', 40)}" for k, v in doc["run"].items())
        lines += textwrap.wrap(f"run: {run}", WIDTH, subsequent_indent="  ")
    if doc["endpoints"]:
        lines += ["", *_terminal_matrix(doc["endpoints"])]
        lines += ["", *_terminal_stats(doc["endpoints"])]
    failures = [t for t in tests if t["outcome"] == "failed"]
    if failures:
        lines += ["", f"failures ({len(failures)}):"]
        for test in failures:
            lines.append(f"  FAILED {test['nodeid']}")
            for label in ("category", "hint", "message"):
                value = test[label]
                if label == "message" and value:
                    value = _clip(value.strip().splitlines()[0] if value.strip() else "", 300)
                if value:
                    lines += textwrap.wrap(
                        f"{label}: {value}",
                        WIDTH,
                        initial_indent="      ",
                        subsequent_indent="        ",
                        break_on_hyphens=False,
                    )
    went_live = [t for t in tests if t.get("cassette_status") in ("live", "partly live")]
    if went_live:
        lines += [
            "",
            f"went live during replay ({len(went_live)}): requests with no recording left in "
            "the cassette were sent to the loopback endpoint, and nothing was recorded:",
        ]
        for test in went_live:
            live = test.get("cassette_live") or 0
            what = f"{test['cassette_status']}" + (f", {live} live request(s)" if live else "")
            lines.append(f"  {test['nodeid']}: {what}")
            unplayed = test.get("cassette_unplayed") or []
            if unplayed:
                lines.append(f"      recorded but not replayed (edited?): {', '.join(unplayed)}")
        lines.append(
            "  re-record them with --imagegen-record-mode=new_episodes (adds what is missing) "
            "or =all (records them again)"
        )
    if doc["unused_cassettes"]:
        lines += [
            "",
            f"unused cassettes ({len(doc['unused_cassettes'])}): no test replayed them; "
            "delete them or re-record:",
        ]
        lines += [f"  {p}" for p in doc["unused_cassettes"]]
    return lines


def _shown_areas(endpoints: Mapping[str, Any]) -> tuple[str, ...]:
    """The matrix columns: every area, but ``gateway`` only when a gateway test ran."""
    return tuple(
        area
        for area in AREAS
        if area != "gateway"
        or any(sum(entry["areas"][area].values()) for entry in endpoints.values())
    )


def _terminal_matrix(endpoints: Mapping[str, Any]) -> list[str]:
    areas = _shown_areas(endpoints)
    rows = [("endpoint", *areas)]
    for name, entry in endpoints.items():
        rows.append((name, *(_cell_text(entry["areas"][area]) for area in areas)))
    return [
        *_table(rows),
        'cells: passed/failed/skipped; "!" marks failures, "." no tests',
    ]


def _terminal_stats(endpoints: Mapping[str, Any]) -> list[str]:
    rows = [("endpoint", "p50", "p95", "deadline", "rating (p50)", "success", "spend")]
    notes = []
    for name, entry in endpoints.items():
        lat = entry["latency_s"]
        rate = entry["success_rate"]
        success = (
            f"{entry['successes']}/{entry['attempts']} ({rate:.0%})" if rate is not None else "-"
        )
        rows.append(
            (
                name,
                _seconds(lat["p50"]),
                _seconds(lat["p95"]),
                _seconds(entry["deadline_s"]),
                entry["rating"] or "-",
                success,
                _usd(entry["estimated_spend_usd"]),
            )
        )
        if entry["p95_within_deadline"] is False:
            notes.append(
                f"{name}: p95 {_seconds(lat['p95'])} exceeds the "
                f"{_seconds(entry['deadline_s'])} deadline"
            )
    return [*_table(rows), *notes]


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


def _cell_text(counts: Mapping[str, int]) -> str:
    if not any(counts.values()):
        return "."
    text = f"{counts['passed']}/{counts['failed']}/{counts['skipped']}"
    return text + "!" if counts["failed"] else text


def _cell_class(counts: Mapping[str, int]) -> str:
    if counts["failed"]:
        return "fail"
    if counts["passed"]:
        return "pass"
    return "skip" if counts["skipped"] else "none"


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2}
td.pass{background:#d8f5d8}td.fail{background:#f9d0d0;font-weight:bold}
td.skip{background:#fbf0c8}td.none{color:#999}
.muted{color:#777}.failure{border-left:4px solid #d33;padding:.3em .8em;margin:.8em 0}
pre{white-space:pre-wrap;background:#f7f7f7;padding:.5em;margin:.3em 0}
.gallery{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;border:1px solid #ddd;padding:4px;max-width:140px}
figure img{display:block;max-width:128px;max-height:128px}
figcaption{font-size:11px;color:#555;word-break:break-all}
"""


def render_html(doc: Mapping[str, Any]) -> str:
    """One self-contained HTML page (inline CSS, no script, no external resource)."""
    e = _esc
    totals = doc["totals"]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>pytest-imagegen report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>pytest-imagegen report</h1>",
        f'<p class="muted">schema {e(doc["schema"])} v{e(doc["schema_version"])}, '
        f"created {e(doc['created'])}</p>",
        f"<p>{e(totals['tests'])} tests: {e(totals['passed'])} passed, "
        f"{e(totals['failed'])} failed, {e(totals['skipped'])} skipped; estimated spend "
        f"{e(_usd(totals['estimated_spend_usd']))}</p>",
    ]
    if doc["settings"]:
        out += ["<h2>Settings</h2>", "<table><tr><th>key</th><th>value</th><th>source</th></tr>"]
        out += [
            f"<tr><td>{e(s['key'])}</td><td>{e(s['value'])}</td><td>{e(s['source'])}</td></tr>"
            for s in doc["settings"]
        ]
        out.append("</table>")
    if doc["run"]:
        out += ["<h2>Run</h2>", "<table>"]
        out += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in doc["run"].items()]
        out.append("</table>")
    endpoints = doc["endpoints"]
    if endpoints:
        out += [
            "<h2>Matrix</h2>",
            '<p class="muted">passed / failed / skipped per endpoint and area</p>',
            "<table><tr><th>endpoint</th>"
            + "".join(f"<th>{e(a)}</th>" for a in _shown_areas(doc["endpoints"]))
            + "</tr>",
        ]
        for name, entry in endpoints.items():
            cells = "".join(
                f'<td class="{_cell_class(c)}">{e(_cell_text(c).rstrip("!"))}</td>'
                for c in (entry["areas"][a] for a in _shown_areas(endpoints))
            )
            out.append(f"<tr><th>{e(name)}</th>{cells}</tr>")
        out += [
            "</table>",
            "<h2>Endpoints</h2>",
            "<table><tr><th>endpoint</th><th>latency p50</th><th>p95</th><th>deadline</th>"
            "<th>rating (p50)</th><th>success rate</th><th>estimated spend</th></tr>",
        ]
        for name, entry in endpoints.items():
            lat = entry["latency_s"]
            rate = entry["success_rate"]
            success = "-"
            if rate is not None:
                success = f"{rate:.0%} ({entry['successes']}/{entry['attempts']})"
            p95_cell = '<td class="fail">' if entry["p95_within_deadline"] is False else "<td>"
            out.append(
                f"<tr><th>{e(name)}</th><td>{e(_seconds(lat['p50']))}</td>"
                f"{p95_cell}{e(_seconds(lat['p95']))}</td>"
                f"<td>{e(_seconds(entry['deadline_s']))}</td><td>{e(entry['rating'] or '-')}</td>"
                f"<td>{e(success)}</td>"
                f"<td>{e(_usd(entry['estimated_spend_usd']))}</td></tr>"
            )
        out.append("</table>")
    failures = [t for t in doc["tests"] if t["outcome"] == "failed"]
    if failures:
        out.append(f"<h2>Failures ({len(failures)})</h2>")
        for t in failures:
            out.append(f'<div class="failure"><b>{e(t["nodeid"])}</b><br>')
            out.append(f"category: <b>{e(t['category'] or '-')}</b>")
            if t["hint"]:
                out.append(f"<br>hint: {e(t['hint'])}")
            if t["message"]:
                out.append(f"<pre>{e(t['message'])}</pre>")
            out.append("</div>")
    skipped = [t for t in doc["tests"] if t["outcome"] == "skipped"]
    if skipped:
        out += [f"<details><summary>Skipped ({len(skipped)})</summary><ul>"]
        out += [f"<li>{e(t['nodeid'])}: {e(t['message'] or '')}</li>" for t in skipped]
        out.append("</ul></details>")
    if any(entry["images"] for entry in endpoints.values()):
        out.append("<h2>Images</h2>")
        for name, entry in endpoints.items():
            shown = [img for img in entry["images"] if img["thumb_png_b64"]]
            if not shown:
                continue
            out += [f"<h3>{e(name)} ({len(shown)})</h3>", '<div class="gallery">']
            for img in shown:
                caption = f"{img['format'] or '?'} {img['size'] or '?'}"
                out.append(
                    f'<figure><img alt="{e(caption)}" title="{e(img["nodeid"])}" '
                    f'src="data:image/png;base64,{img["thumb_png_b64"]}">'
                    f"<figcaption>{e(caption)}</figcaption></figure>"
                )
            out.append("</div>")
    if doc["unused_cassettes"]:
        out += ["<h2>Unused cassettes</h2>", "<p>No test replayed these; delete or re-record:</p>"]
        out += ["<ul>", *(f"<li>{e(p)}</li>" for p in doc["unused_cassettes"]), "</ul>"]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- helpers


def _test_entry(record: _Record) -> dict[str, Any]:
    data = record.data
    check = _text(data.get("check"))
    area = _text(data.get("area")) or (check.split(".", 1)[0] if check and "." in check else None)
    return {
        "nodeid": record.nodeid,
        "endpoint": _text(data.get("endpoint")),
        "check": check,
        "area": area if area in AREAS else "other",
        "outcome": record.outcome,
        "duration_s": round(record.duration_s, 3),
        "category": _text(data.get("category")),
        "hint": _text(data.get("hint")),
        "message": record.message,
        "latencies_s": _floats(data.get("latencies_s")),
        "attempts": _count(data.get("attempts")),
        "successes": _count(data.get("successes")),
        "cost_usd": _number(data.get("cost_usd")) or 0.0,
        "response_bytes": _count(data.get("response_bytes")),
        "cassette": _text(data.get("cassette")),
        "cassette_status": _text(data.get("cassette_status")),
        "cassette_live": _count(data.get("cassette_live")),
        "cassette_unplayed": [str(x) for x in data.get("cassette_unplayed") or ()],
        # DeviationWarnings: a passed test with any is "warned" (see docs/gateways.md).
        "deviations": [str(d) for d in data.get("deviations") or () if isinstance(d, str)],
        "warned": record.outcome == "passed" and bool(data.get("deviations")),
    }


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


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def _usd(value: float) -> str:
    return f"${value:.4f}"


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)
