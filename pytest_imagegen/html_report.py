"""The HTML report: one self-contained page rendered from the JSON report document.

Order is what a reader needs first: the verdict (per endpoint and problem class), then
each failure with its evidence (expected, seen, request, response, commands to reproduce
it, the fix), then the matrix, the figures and their ratings, the cost advice, every test
in a sortable and filterable table, the images, and the settings, collapsed, at the end.

Self-contained: inline CSS, a small inline script (sorting and filtering only; the page
reads fully without it), images as ``data:`` URLs, no request to anything. Laid out for a
360 px phone as well as a desktop: wide tables scroll inside their own box, never the page.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_imagegen.ratings import RATINGS, describe_thresholds

_CSS = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d1d1f;
background:#fff}
main{max-width:1100px;margin:0 auto;padding:12px;overflow-wrap:anywhere}
h1{font-size:1.25em;margin:.2em 0}h2{font-size:1.1em;margin:1.4em 0 .4em;
border-bottom:1px solid #ddd;padding-bottom:.2em}h3{font-size:1em;margin:1em 0 .3em}
h4{font-size:.95em;margin:0 0 .3em;word-break:break-word}
.muted{color:#666;font-size:.85em}
.badge{display:inline-block;padding:1px 7px;border-radius:4px;font-weight:600;
font-size:.85em;color:#fff;background:#777}
.b-passed{background:#1a7f37}.b-failed{background:#cf222e}.b-warned{background:#9a6700}
.b-skipped{background:#6e7781}
.verdict{display:flex;flex-wrap:wrap;gap:8px;margin:.4em 0}
.card{border:1px solid #d0d7de;border-radius:6px;padding:6px 10px;flex:1 1 260px;min-width:0}
.card p{margin:.2em 0}.chips{display:flex;flex-wrap:wrap;gap:4px;margin:.3em 0}
.chip{font-size:.8em;border:1px solid #d0d7de;border-radius:10px;padding:0 7px}
.chip.bad{border-color:#cf222e;color:#cf222e;font-weight:600}
.chip.warn{border-color:#9a6700;color:#9a6700}
.failure{border-left:4px solid #cf222e;padding:4px 0 4px 10px;margin:.6em 0 1em}
.fix{background:#fff8c5;padding:3px 6px;border-radius:4px}
dl{margin:.3em 0}dt{font-weight:600;font-size:.85em;color:#444;margin-top:.3em}dd{margin:0}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f8fa;padding:6px;margin:.2em 0;
font-size:.82em;border-radius:4px;max-height:24em;overflow:auto}
details{margin:.3em 0}summary{cursor:pointer;font-weight:600;font-size:.9em}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.3em 0;font-size:.88em;overflow-wrap:normal}
th,td{border:1px solid #d0d7de;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.id{word-break:break-all;min-width:10em}
td.pass{background:#dafbe1}td.fail{background:#ffd8d3;font-weight:700}
td.warn{background:#fff1c2}td.mixed{background:#eef6d0}td.skip{background:#eaeef2}
td.none{color:#999}td a{color:inherit}
table.sortable th{cursor:pointer;white-space:nowrap}
.filters{display:flex;flex-wrap:wrap;gap:6px;margin:.3em 0}
.filters input,.filters select{font:inherit;padding:2px 4px;max-width:100%}
.gallery{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;border:1px solid #d0d7de;padding:3px;width:108px}
figure.failed{border:2px solid #cf222e}
figure img{display:block;width:96px;height:auto;max-height:96px;object-fit:contain}
figcaption{font-size:11px;color:#555;word-break:break-all}
.thumbs{display:flex;flex-wrap:wrap;gap:6px}
"""

# Sorting and filtering of the tests table; the page reads fully without it.
_JS = """
(function () {
  var table = document.getElementById('tests-table');
  if (!table) { return; }
  var body = table.tBodies[0];
  var text = document.getElementById('filter-text');
  var outcome = document.getElementById('filter-outcome');
  function apply() {
    var needle = (text.value || '').toLowerCase();
    var wanted = outcome.value;
    Array.prototype.forEach.call(body.rows, function (row) {
      var ok = row.textContent.toLowerCase().indexOf(needle) >= 0 &&
        (!wanted || row.getAttribute('data-outcome') === wanted);
      row.style.display = ok ? '' : 'none';
    });
  }
  text.addEventListener('input', apply);
  outcome.addEventListener('change', apply);
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
    th.addEventListener('click', function () {
      var asc = th.getAttribute('data-dir') !== 'asc';
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) {
        c.removeAttribute('data-dir');
      });
      th.setAttribute('data-dir', asc ? 'asc' : 'desc');
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[index].getAttribute('data-sort') || a.cells[index].textContent;
        var y = b.cells[index].getAttribute('data-sort') || b.cells[index].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var cmp = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? cmp : -cmp;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
})();
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _slug(*parts: Any) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9_-]+", "_", str(p)) for p in parts)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def _badge(outcome: str) -> str:
    return f'<span class="badge b-{_e(outcome)}">{_e(outcome)}</span>'


def _cell(counts: Mapping[str, int]) -> tuple[str, str]:
    from pytest_imagegen.report_format import cell_class as _cell_class
    from pytest_imagegen.report_format import cell_text as _cell_text

    return _cell_class(counts), _cell_text(counts).rstrip("!")


def render(doc: Mapping[str, Any]) -> str:
    """The HTML page of a report document (:meth:`ReportCollector.summary`)."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>pytest-imagegen report</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>pytest-imagegen report {_badge(doc['verdict'])}</h1>",
    ]
    out += _verdict(doc)
    out += _failures(doc)
    out += _matrix(doc)
    out += _figures(doc)
    out += _tests_table(doc)
    out += _gallery(doc)
    out += _unused(doc)
    out += _settings(doc)
    out += [f"<script>{_JS}</script>", "</main></body></html>"]
    return "\n".join(out) + "\n"


def _verdict(doc: Mapping[str, Any]) -> list[str]:
    from pytest_imagegen.report_format import counts_text as _counts_text
    from pytest_imagegen.report_format import usd as _usd

    totals = doc["totals"]
    out = [
        '<section id="verdict">',
        f"<p>{_e(_counts_text(totals))} of {_e(totals['tests'])} tests; estimated spend "
        f"{_e(_usd(totals['estimated_spend_usd']))}. "
        f'<span class="muted">Created {_e(doc["created"])}.</span></p>',
        '<div class="verdict">',
    ]
    for name, entry in doc["endpoints"].items():
        chips = []
        for cls, n in entry["problem_classes"].items():
            kind = "bad" if n["failed"] else "warn" if n["warned"] else ""
            label = f"{n['failed']} failed" if n["failed"] else "ok"
            if n["warned"] and not n["failed"]:
                label = f"{n['warned']} warned"
            chips.append(f'<span class="chip {kind}">{_e(cls)}: {_e(label)}</span>')
        rated = []
        for key, value in entry["ratings"].items():
            if value["level"]:
                kind = "bad" if value["level"] in ("poor", "unacceptable") else ""
                label = RATINGS[key].label.split(" (")[0]
                rated.append(f'<span class="chip {kind}">{_e(label)}: {_e(value["level"])}</span>')
        first = ""
        failed = [
            t for t in doc["tests"] if t["outcome"] == "failed" and (t["endpoint"] or "") == name
        ]
        if failed:
            first = (
                f'<p><a href="#{_slug("t", failed[0]["nodeid"])}">first failure: '
                f"{_e(failed[0]['check'] or failed[0]['nodeid'])}</a></p>"
            )
        out += [
            '<div class="card">',
            f"<p><b>{_e(name)}</b> {_badge(entry['verdict'])} "
            f'<span class="muted">{_e(_counts_text(entry["counts"]))}</span></p>',
            f'<div class="chips">{"".join(chips)}</div>',
            f'<div class="chips">{"".join(rated)}</div>' if rated else "",
            first,
            "</div>",
        ]
    out += ["</div>", "</section>"]
    return out


def _failures(doc: Mapping[str, Any]) -> list[str]:
    failures = [t for t in doc["tests"] if t["outcome"] == "failed"]
    if not failures:
        return []
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for test in failures:
        groups.setdefault((test["endpoint"] or "(none)", test["area"]), []).append(test)
    out = [f'<section id="failures"><h2>Failures ({len(failures)})</h2>']
    for (endpoint, area), tests in groups.items():
        out.append(
            f'<h3 id="{_slug("fail", endpoint, area)}">{_e(endpoint)} &middot; {_e(area)} '
            f"({len(tests)})</h3>"
        )
        for test in tests:
            out += _failure(test)
    out.append("</section>")
    return out


def _failure(test: Mapping[str, Any]) -> list[str]:
    title = test["check"] or test["nodeid"]
    kind = " &middot; ".join(
        f"{label}: <b>{_e(value)}</b>"
        for label, value in (
            ("problem class", test["problem_class"]),
            ("category", test["category"]),
        )
        if value
    )
    out = [
        f'<article class="failure" id="{_slug("t", test["nodeid"])}">',
        f"<h4>{_e(title)} {_badge('failed')}</h4>",
        f'<p class="muted">{kind}</p>' if kind else "",
    ]
    if test["hint"]:
        out.append(f'<p class="fix"><b>Fix:</b> {_e(test["hint"])}</p>')
    out.append("<dl>")
    if test["expected"]:
        out += ["<dt>Expected</dt>", f"<dd>{_e(test['expected'])}</dd>"]
    if test["message"]:
        out += ["<dt>Seen</dt>", f"<dd><pre>{_e(test['message'])}</pre></dd>"]
    out.append("</dl>")
    exchanges: list[Mapping[str, Any]] = list(test.get("exchanges") or ())
    # The request the failure is about first and open; the others for context.
    focus = next((x for x in exchanges if x.get("failed")), exchanges[-1] if exchanges else None)
    for exchange in sorted(exchanges, key=lambda x: x is not focus):
        label = "the request that failed" if exchange is focus else "an earlier request"
        if exchange is focus and not exchange.get("failed"):
            label = "last request"
        out += _exchange(exchange, label, open_=exchange is focus)
    reproduce = test.get("reproduce") or {}
    if reproduce.get("pytest") or reproduce.get("curl"):
        out.append("<details open><summary>Reproduce</summary>")
        if reproduce.get("pytest"):
            out.append(f"<pre>{_e(reproduce['pytest'])}</pre>")
        if reproduce.get("curl"):
            out.append(f"<pre>{_e(reproduce['curl'])}</pre>")
        out.append("</details>")
    out.append(f'<p class="muted">{_e(test["nodeid"])}</p></article>')
    return out


def _exchange(exchange: Mapping[str, Any], label: str, *, open_: bool) -> list[str]:
    request = exchange.get("request") or {}
    response = exchange.get("response") or {}
    body = json.dumps(request.get("body"), indent=1, ensure_ascii=False)
    timing = f"latency {_seconds(exchange.get('latency_s'))}"
    if exchange.get("replay_s") is not None:
        timing += (
            f" (recorded {(exchange.get('recorded_at') or '?')[:10]}; "
            f"replayed in {_seconds(exchange.get('replay_s'))})"
        )
    headers = "\n".join(f"{k}: {v}" for k, v in (response.get("headers") or {}).items())
    status = response.get("status")
    out = [
        f"<details{' open' if open_ else ''}><summary>{_e(label)}: "
        f"{_e(request.get('method'))} {_e(request.get('path') or _path(request.get('url')))} "
        f"&rarr; HTTP {_e(status if status is not None else 'no answer')}</summary>",
        f'<p class="muted">{_e(timing)}</p>',
        "<dl><dt>Request sent</dt>",
        f"<dd><pre>{_e(request.get('method'))} {_e(request.get('url'))}\n{_e(body)}</pre></dd>",
        "<dt>Response received</dt>",
        f"<dd><pre>HTTP {_e(status)}\n{_e(headers)}\n\n{_e(response.get('body'))}</pre>",
    ]
    thumbs = [img for img in response.get("images") or () if img.get("thumb_png_b64")]
    if thumbs:
        out.append('<div class="thumbs">')
        for img in thumbs:
            caption = f"{img.get('format') or '?'} {img.get('size') or '?'}"
            out.append(
                f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,'
                f'{img["thumb_png_b64"]}"><figcaption>{_e(caption)}</figcaption></figure>'
            )
        out.append("</div>")
    if exchange.get("diagnosis"):
        out.append(f'<p class="muted">classified: {_e(exchange["diagnosis"])}</p>')
    out += ["</dd></dl>", "</details>"]
    return out


def _path(url: Any) -> str:
    text = str(url or "")
    return "/" + text.split("/", 3)[3] if text.count("/") >= 3 else text


def _matrix(doc: Mapping[str, Any]) -> list[str]:
    from pytest_imagegen.report_format import AREAS

    endpoints = doc["endpoints"]
    if not endpoints:
        return []
    used = [a for a in AREAS if any(sum(e["areas"][a].values()) for e in endpoints.values())]
    out = [
        '<section id="matrix"><h2>Matrix</h2>',
        '<p class="muted">passed, then F failed, W warned, S skipped; a red cell links to its '
        "failures; green means every test passed</p>",
        '<div class="scroll"><table><tr><th>endpoint</th>'
        + "".join(f"<th>{_e(a)}</th>" for a in used)
        + "</tr>",
    ]
    for name, entry in endpoints.items():
        cells = []
        for area in used:
            css, text = _cell(entry["areas"][area])
            if entry["areas"][area].get("failed"):
                text = f'<a href="#{_slug("fail", name, area)}">{_e(text)}</a>'
            else:
                text = _e(text)
            cells.append(f'<td class="{css}">{text}</td>')
        out.append(f"<tr><th>{_e(name)}</th>{''.join(cells)}</tr>")
    out += ["</table></div>", "</section>"]
    return out


def _figures(doc: Mapping[str, Any]) -> list[str]:
    from pytest_imagegen.advice import describe
    from pytest_imagegen.report_format import usd as _usd

    endpoints = doc["endpoints"]
    if not endpoints:
        return []
    out = ['<section id="figures"><h2>Figures and ratings</h2>']
    for name, entry in endpoints.items():
        lat, replay = entry["latency_s"], entry["replay_s"]
        source = {
            "recorded": f"recorded live on {(lat['recorded_at'] or '?')[:10]} (from cassettes)",
            "live": "measured live in this run",
            "mixed": "partly recorded, partly measured in this run",
        }.get(lat["source"] or "", "no samples")
        rows = [
            ("latency p50 / p95", f"{_seconds(lat['p50'])} / {_seconds(lat['p95'])} ({source})"),
        ]
        if replay:
            rows.append(
                (
                    "replay time (this run)",
                    f"{_seconds(replay['p50'])} / {_seconds(replay['p95'])}: not the endpoint's",
                )
            )
        deadline = _seconds(entry["deadline_s"])
        if entry["p95_within_deadline"] is False:
            deadline += " (p95 exceeds it)"
        rate = entry["success_rate"]
        rows += [
            ("deadline", deadline),
            (
                "success rate",
                f"{rate:.0%} ({entry['successes']}/{entry['attempts']})"
                if rate is not None
                else "-",
            ),
            ("estimated spend", _usd(entry["estimated_spend_usd"])),
        ]
        for key, value in entry["ratings"].items():
            figure = value["value"]
            if figure is None:
                shown = "-"
            elif key == "success_rate":
                shown = f"{figure:.0%}"
            elif key == "cost_per_image_usd":
                shown = f"${figure:.3f}"
            else:
                shown = _seconds(figure)
            rows.append(
                (
                    f"rating: {RATINGS[key].label}",
                    f"{value['level'] or '-'} ({shown}; "
                    f"{describe_thresholds(key, value['thresholds'])})",
                )
            )
        if entry.get("cost_advice"):
            rows.append(("cost advice", describe(entry["cost_advice"])))
        out += [f"<h3>{_e(name)}</h3>", '<div class="scroll"><table>']
        out += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows]
        out.append("</table></div>")
    out.append("</section>")
    return out


def _tests_table(doc: Mapping[str, Any]) -> list[str]:
    tests = doc["tests"]
    if not tests:
        return []
    from pytest_imagegen.latency import percentile
    from pytest_imagegen.report_format import TEST_OUTCOMES

    options = "".join(f'<option value="{o}">{o}</option>' for o in TEST_OUTCOMES)
    out = [
        f'<section id="tests"><h2>All tests ({len(tests)})</h2>',
        '<div class="filters"><input id="filter-text" type="search" '
        'placeholder="filter: check, endpoint, status..." aria-label="filter">'
        '<select id="filter-outcome" aria-label="outcome"><option value="">any outcome</option>'
        f"{options}</select></div>",
        '<p class="muted">click a column heading to sort</p>',
        '<div class="scroll"><table id="tests-table" class="sortable"><thead><tr>'
        "<th>test</th><th>endpoint</th><th>outcome</th><th>duration</th><th>cassette</th>"
        "<th>latency p50</th><th>note</th></tr></thead><tbody>",
    ]
    for t in tests:
        p50 = percentile(t["latencies_s"], 50)
        latency = _seconds(p50)
        if p50 is not None and t["latency_source"] == "recorded":
            latency += f" (recorded {(t['recorded_at'] or '?')[:10]})"
        elif t["latency_source"] == "replay" and t["replay_latencies_s"]:
            latency = "not recorded"
        note = t["message"] or "; ".join(t.get("deviations") or ())
        name = t["check"] or t["nodeid"]
        if t["outcome"] == "failed":
            name_html = f'<a href="#{_slug("t", t["nodeid"])}">{_e(name)}</a>'
        else:
            name_html = _e(name)
        out.append(
            f'<tr data-outcome="{_e(t["outcome"])}"><td class="id">{name_html}</td>'
            f"<td>{_e(t['endpoint'] or '')}</td><td>{_badge(t['outcome'])}</td>"
            f'<td data-sort="{t["duration_s"]}">{t["duration_s"]:.2f} s</td>'
            f"<td>{_e(t['cassette_status'] or '-')}</td>"
            f'<td data-sort="{p50 if p50 is not None else -1}">{_e(latency)}</td>'
            f"<td>{_e(_clip(note or '', 160))}</td></tr>"
        )
    out += ["</tbody></table></div>", "</section>"]
    return out


def _gallery(doc: Mapping[str, Any]) -> list[str]:
    endpoints = doc["endpoints"]
    if not any(img["thumb_png_b64"] for e in endpoints.values() for img in e["images"]):
        return []
    out = [
        '<section id="images"><h2>Images</h2>',
        '<p class="muted">red border: the image of a failed test (the evidence)</p>',
    ]
    for name, entry in endpoints.items():
        shown = [img for img in entry["images"] if img["thumb_png_b64"]]
        if not shown:
            continue
        # Evidence first: failed tests' images lead.
        shown.sort(key=lambda img: img.get("outcome") != "failed")
        out += [f"<h3>{_e(name)} ({len(shown)})</h3>", '<div class="gallery">']
        for img in shown:
            caption = f"{img['format'] or '?'} {img['size'] or '?'}"
            failed = img.get("outcome") == "failed"
            out.append(
                f'<figure class="{"failed" if failed else ""}"><img alt="{_e(caption)}" '
                f'title="{_e(img["nodeid"])}" src="data:image/png;base64,{img["thumb_png_b64"]}">'
                f"<figcaption>{_e(caption)}<br>{_e(_short_id(img['nodeid']))}</figcaption></figure>"
            )
        out.append("</div>")
    out.append("</section>")
    return out


def _short_id(nodeid: str) -> str:
    return nodeid.rsplit("::", 1)[-1]


def _unused(doc: Mapping[str, Any]) -> list[str]:
    if not doc["unused_cassettes"]:
        return []
    return [
        '<section id="unused"><h2>Unused cassettes</h2>',
        "<p>No test replayed these; delete or re-record them:</p><ul>",
        *(f'<li class="id">{_e(p)}</li>' for p in doc["unused_cassettes"]),
        "</ul></section>",
    ]


def _settings(doc: Mapping[str, Any]) -> list[str]:
    rows: Sequence[Mapping[str, Any]] = doc["settings"]
    out = [
        f'<section id="settings"><details><summary>Settings ({len(rows)}) and run</summary>',
        '<div class="scroll"><table><tr><th>key</th><th>value</th><th>source</th></tr>',
    ]
    out += [
        f'<tr><td class="id">{_e(s["key"])}</td><td>{_e(s["value"])}</td>'
        f"<td>{_e(s['source'])}</td></tr>"
        for s in rows
    ]
    out += [
        f"<tr><td>run.{_e(k)}</td><td>{_e(v)}</td><td>run</td></tr>" for k, v in doc["run"].items()
    ]
    out += [
        "</table></div>",
        f'<p class="muted">schema {_e(doc["schema"])} v{_e(doc["schema_version"])}</p>',
        "</details></section>",
    ]
    return out


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
