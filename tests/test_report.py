"""Tests of the run report: collection from TestReports, JSON/HTML/terminal, JUnit, xdist."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from enum import Enum
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jsonschema
import pytest

from pytest_imagegen.images import make_image, thumbnail_png
from pytest_imagegen.latency import percentile, rating
from pytest_imagegen.report import (
    AREAS,
    WIDTH,
    ReportCollector,
    imagegen_data,
    is_xdist_worker,
    junit_properties,
    mask_secrets,
    prepare_report,
    render_html,
)

THUMB = base64.b64encode(thumbnail_png(make_image(64, 48, "png"))).decode("ascii")
SECRET = "sk-proj-abcdefghijklmnop0123456789"

# The structure of schema version 2, as documented in docs/reports.md.
OUTCOMES4 = ("passed", "warned", "failed", "skipped")
_COUNTS = {
    "type": "object",
    "required": list(OUTCOMES4),
    "additionalProperties": False,
    "properties": {k: {"type": "integer", "minimum": 0} for k in OUTCOMES4},
}
_NUM_OR_NULL = {"type": ["number", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}
_VERDICT = {"enum": list(OUTCOMES4)}
_LEVEL = {"enum": ["excellent", "good", "acceptable", "poor", "unacceptable", None]}
_RATING = {
    "type": "object",
    "additionalProperties": False,
    "required": ["value", "level", "thresholds"],
    "properties": {
        "value": _NUM_OR_NULL,
        "level": _LEVEL,
        "thresholds": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
    },
}
_PERCENTILES = {
    "type": "object",
    "additionalProperties": False,
    "required": ["p50", "p95", "count"],
    "properties": {"p50": _NUM_OR_NULL, "p95": _NUM_OR_NULL, "count": {"type": "integer"}},
}
_EXCHANGE = {
    "type": "object",
    "required": ["request", "response", "diagnosis", "latency_s", "replay_s", "recorded_at"],
    "properties": {
        "request": {
            "type": "object",
            "required": ["method", "url", "body"],
            "properties": {"method": {"type": "string"}, "url": {"type": "string"}},
        },
        "response": {
            "type": "object",
            "required": ["status", "headers", "body", "images"],
            "properties": {
                "status": {"type": ["integer", "null"]},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "body": {"type": "string"},
                "images": {"type": "array"},
            },
        },
        "failed": {"type": "boolean"},
    },
}
REPORT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "schema",
        "schema_version",
        "created",
        "verdict",
        "settings",
        "run",
        "thresholds",
        "endpoints",
        "tests",
        "unused_cassettes",
        "totals",
    ],
    "properties": {
        "schema": {"const": "pytest-imagegen/report"},
        "schema_version": {"const": 2},
        "created": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00$"},
        "verdict": _VERDICT,
        "settings": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "value", "source"],
                "properties": {"key": _STR_OR_NULL, "value": _STR_OR_NULL, "source": _STR_OR_NULL},
            },
        },
        "run": {"type": "object"},
        "thresholds": {
            "type": "object",
            "required": ["response_time_s", "success_rate", "cost_per_image_usd"],
        },
        "endpoints": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "verdict",
                    "counts",
                    "problem_classes",
                    "areas",
                    "latency_s",
                    "replay_s",
                    "deadline_s",
                    "p95_within_deadline",
                    "rating",
                    "ratings",
                    "attempts",
                    "successes",
                    "success_rate",
                    "estimated_spend_usd",
                    "cost_advice",
                    "images",
                ],
                "properties": {
                    "verdict": _VERDICT,
                    "counts": _COUNTS,
                    "problem_classes": {
                        "type": "object",
                        "required": ["technical", "quality", "efficiency", "cost"],
                        "additionalProperties": {
                            "type": "object",
                            "required": ["failed", "warned", "verdict"],
                        },
                    },
                    "areas": {
                        "type": "object",
                        "required": list(AREAS),
                        "additionalProperties": False,
                        "properties": {a: _COUNTS for a in AREAS},
                    },
                    "latency_s": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["p50", "p95", "count", "source", "recorded_at"],
                        "properties": {
                            "p50": _NUM_OR_NULL,
                            "p95": _NUM_OR_NULL,
                            "count": {"type": "integer"},
                            "source": {"enum": ["live", "recorded", "mixed", "replay", None]},
                            "recorded_at": _STR_OR_NULL,
                        },
                    },
                    "replay_s": {"oneOf": [{"type": "null"}, _PERCENTILES]},
                    "deadline_s": _NUM_OR_NULL,
                    "p95_within_deadline": {"type": ["boolean", "null"]},
                    "rating": _LEVEL,
                    "ratings": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["response_time_s", "success_rate", "cost_per_image_usd"],
                        "properties": {
                            k: _RATING
                            for k in ("response_time_s", "success_rate", "cost_per_image_usd")
                        },
                    },
                    "attempts": {"type": "integer"},
                    "successes": {"type": "integer"},
                    "success_rate": _NUM_OR_NULL,
                    "estimated_spend_usd": {"type": "number"},
                    "cost_advice": {
                        "oneOf": [
                            {"type": "null"},
                            {
                                "type": "object",
                                "required": [
                                    "configured",
                                    "cheapest_passing",
                                    "saving_per_1000_images_usd",
                                    "declared_models",
                                ],
                            },
                        ]
                    },
                    "images": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["nodeid", "outcome", "format", "size", "thumb_png_b64"],
                            "properties": {
                                "nodeid": {"type": "string"},
                                "outcome": _VERDICT,
                                "format": _STR_OR_NULL,
                                "size": _STR_OR_NULL,
                                "thumb_png_b64": _STR_OR_NULL,
                            },
                        },
                    },
                },
            },
        },
        "tests": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "nodeid",
                    "endpoint",
                    "check",
                    "area",
                    "outcome",
                    "duration_s",
                    "category",
                    "problem_class",
                    "hint",
                    "expected",
                    "message",
                    "deviations",
                    "warned",
                    "latencies_s",
                    "latency_source",
                    "recorded_at",
                    "replay_latencies_s",
                    "attempts",
                    "successes",
                    "cost_usd",
                    "response_bytes",
                    "cassette",
                    "cassette_status",
                    "cassette_unplayed",
                ],
                "properties": {
                    "nodeid": {"type": "string"},
                    "endpoint": _STR_OR_NULL,
                    "check": _STR_OR_NULL,
                    "area": {"enum": list(AREAS)},
                    "outcome": _VERDICT,
                    "duration_s": {"type": "number"},
                    "category": _STR_OR_NULL,
                    "problem_class": {"enum": ["technical", "quality", "efficiency", "cost", None]},
                    "hint": _STR_OR_NULL,
                    "expected": _STR_OR_NULL,
                    "message": _STR_OR_NULL,
                    "latencies_s": {"type": "array", "items": {"type": "number"}},
                    "latency_source": {"enum": ["live", "recorded", "replay"]},
                    "recorded_at": _STR_OR_NULL,
                    "replay_latencies_s": {"type": "array", "items": {"type": "number"}},
                    "attempts": {"type": "integer"},
                    "successes": {"type": "integer"},
                    "cost_usd": {"type": "number"},
                    "response_bytes": {"type": "integer"},
                    "cassette": _STR_OR_NULL,
                    "cassette_status": _STR_OR_NULL,
                    "cassette_unplayed": {"type": "array", "items": {"type": "string"}},
                    "deviations": {"type": "array", "items": {"type": "string"}},
                    "warned": {"type": "boolean"},
                    "exchanges": {"type": "array", "items": _EXCHANGE},
                    "reproduce": {
                        "type": "object",
                        "required": ["pytest", "curl"],
                        "properties": {"pytest": {"type": "string"}, "curl": _STR_OR_NULL},
                    },
                },
            },
        },
        "unused_cassettes": {"type": "array", "items": {"type": "string"}},
        "totals": {
            "type": "object",
            "additionalProperties": False,
            "required": [
                "tests",
                *OUTCOMES4,
                "attempts",
                "successes",
                "success_rate",
                "estimated_spend_usd",
            ],
            "properties": {
                **{
                    k: {"type": "integer", "minimum": 0}
                    for k in ("tests", *OUTCOMES4, "attempts", "successes")
                },
                "success_rate": _NUM_OR_NULL,
                "estimated_spend_usd": {"type": "number"},
            },
        },
    },
}


def make_report(
    nodeid: str,
    when: str = "call",
    outcome: str = "passed",
    data: dict[str, Any] | None = None,
    *,
    longrepr: Any = None,
    duration: float = 0.0,
    prepare: bool = True,
    extra_properties: tuple[tuple[str, object], ...] = (),
) -> pytest.TestReport:
    """A TestReport as pytest's makereport builds it, optionally run through the plugin's
    ``prepare_report`` step."""
    props: list[tuple[str, object]] = list(extra_properties)
    if data is not None:
        props.append(("imagegen", data))
    report = pytest.TestReport(
        nodeid=nodeid,
        location=(nodeid.split("::")[0], 0, nodeid),
        keywords={},
        outcome=outcome,  # type: ignore[arg-type]
        longrepr=longrepr,
        when=when,  # type: ignore[arg-type]
        user_properties=props,
        duration=duration,
    )
    if prepare:
        prepare_report(report)
    return report


def run_test(collector: ReportCollector, nodeid: str, data: dict[str, Any], **call: Any) -> None:
    """Feed the three phases of one test that passes setup and teardown."""
    collector.add(make_report(nodeid, "setup", "passed", data, duration=0.01))
    collector.add(make_report(nodeid, "call", data=data, **call))
    collector.add(make_report(nodeid, "teardown", "passed", data, duration=0.01))


# --------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("values", "pct", "expected"),
    [
        ([], 50, None),
        ([7.0], 50, 7.0),
        ([7.0], 95, 7.0),
        ([4.0, 1.0, 3.0, 2.0], 50, 2.0),  # rank ceil(0.5*4)=2 of the sorted values
        ([4.0, 1.0, 3.0, 2.0], 95, 4.0),
        ([float(i) for i in range(1, 21)], 50, 10.0),
        ([float(i) for i in range(1, 21)], 95, 19.0),  # rank ceil(0.95*20)=19
        ([float(i) for i in range(1, 101)], 95, 95.0),
        ([5.0, 1.0, 4.0, 2.0, 3.0], 50, 3.0),  # rank ceil(2.5)=3, no rounding down
        ([float(i) for i in range(1, 31)], 95, 29.0),  # rank ceil(28.5)=29
        ([1.0, 2.0, 3.0], 0, 1.0),
        ([1.0, 2.0, 3.0], 100, 3.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], pct: float, expected: float) -> None:
    assert percentile(values, pct) == expected


@pytest.mark.parametrize(
    ("p50", "expected"),
    [
        (None, None),
        (0.0, "excellent"),
        (3.0, "excellent"),
        (3.01, "good"),
        (8.0, "good"),
        (8.5, "acceptable"),
        (15.0, "acceptable"),
        (15.01, "poor"),
        (30.0, "poor"),
        (30.01, "unacceptable"),
        (600.0, "unacceptable"),
    ],
)
def test_rating_thresholds(p50: float | None, expected: str | None) -> None:
    assert rating(p50) == expected


def test_is_xdist_worker() -> None:
    assert is_xdist_worker(SimpleNamespace(workerinput={"workerid": "gw0"}))  # type: ignore[arg-type]
    assert not is_xdist_worker(SimpleNamespace())  # type: ignore[arg-type]


def test_mask_secrets() -> None:
    assert mask_secrets(f"key {SECRET} refused") == "key sk-*** refused"
    assert mask_secrets("Authorization: Bearer abc.def-123456") == "Authorization: Bearer ***"
    assert mask_secrets("task-runner and sk-1 stay") == "task-runner and sk-1 stay"
    # Configured values (a relay key, a header value) are masked literally, longest first.
    assert mask_secrets("k=relaykey42 h=relaykey", ["relaykey", "relaykey42"]) == "k=*** h=***"
    assert mask_secrets("abc stays", ["abc"]) == "abc stays"  # too short to mask safely


class _Cat(str, Enum):
    AUTH = "authentication"


def test_junit_properties_are_flat_strings() -> None:
    data = {
        "endpoint": "relay",
        "check": "errors.wrong_key",
        "category": _Cat.AUTH,
        "problem_class": "technical",
        "hint": "Answer a wrong key with HTTP 401.",
        "latencies_s": [0.5, 2.25, 1.0],
        "cost_usd": 0.042,
    }
    assert junit_properties(data) == [
        ("imagegen_endpoint", "relay"),
        ("imagegen_check", "errors.wrong_key"),
        ("imagegen_category", "authentication"),
        ("imagegen_problem_class", "technical"),
        ("imagegen_hint", "Answer a wrong key with HTTP 401."),
        ("imagegen_latency_s", "2.250"),
        ("imagegen_cost_usd", "0.042000"),
    ]
    assert dict(junit_properties({})) == dict.fromkeys(
        [
            "imagegen_endpoint",
            "imagegen_check",
            "imagegen_category",
            "imagegen_problem_class",
            "imagegen_hint",
            "imagegen_latency_s",
            "imagegen_cost_usd",
        ],
        "",
    )


def test_prepare_report_moves_data_off_user_properties() -> None:
    data = {
        "endpoint": "relay",
        "check": "separation.image_model",
        "category": _Cat.AUTH,
        "cassette": Path("cassettes") / "relay" / "t.yaml",
        "latencies_s": (1.5,),
        "images": [{"format": "png", "size": "8x8", "thumb_png_b64": THUMB}],
    }
    report = make_report("t.py::a", data=data, extra_properties=(("team", "imaging"),))
    props = dict(report.user_properties)
    assert "imagegen" not in props
    assert props["team"] == "imaging"
    assert props["imagegen_category"] == "authentication"
    assert props["imagegen_latency_s"] == "1.500"
    carried = report.imagegen  # type: ignore[attr-defined]
    # Only builtin JSON types: that is what xdist can send to the controller.
    assert json.loads(json.dumps(carried)) == carried
    assert carried["cassette"] == os.path.join("cassettes", "relay", "t.yaml")
    assert carried["category"] == "authentication"
    assert type(carried["category"]) is str
    assert carried["latencies_s"] == [1.5]
    assert imagegen_data(report) == carried


def test_imagegen_data_without_prepare_and_as_json_text() -> None:
    raw = make_report("t.py::a", data={"endpoint": "e"}, prepare=False)
    assert imagegen_data(raw) == {"endpoint": "e"}
    as_text = make_report("t.py::a", prepare=False, extra_properties=(("imagegen", '{"a": 1}'),))
    assert imagegen_data(as_text) == {"a": 1}
    assert imagegen_data(make_report("t.py::b", prepare=False)) is None


# --------------------------------------------------------------------------- collection


def _outcomes(collector: ReportCollector) -> dict[str, str]:
    return {t["nodeid"]: t["outcome"] for t in collector.summary()["tests"]}


def test_each_test_counts_once() -> None:
    collector = ReportCollector()
    data = {"endpoint": "e", "check": "separation.x"}
    run_test(collector, "t.py::a", data)
    collector.add(make_report("t.py::a", data=data))  # the same call report again
    summary = collector.summary()
    assert _outcomes(collector) == {"t.py::a": "passed"}
    assert summary["totals"]["tests"] == 1
    assert summary["endpoints"]["e"]["areas"]["separation"] == {
        "passed": 1,
        "warned": 0,
        "failed": 0,
        "skipped": 0,
    }


def test_setup_skip_and_setup_error_are_counted() -> None:
    collector = ReportCollector()
    data = {"endpoint": "e", "check": "fallback.stall"}
    collector.add(
        make_report(
            "t.py::skip",
            "setup",
            "skipped",
            data,
            longrepr=("t.py", 3, "Skipped: cannot stall a live provider"),
        )
    )
    collector.add(make_report("t.py::skip", "teardown", "passed", data))
    collector.add(make_report("t.py::err", "setup", "failed", data, longrepr="fixture broke"))
    collector.add(make_report("t.py::err", "teardown", "passed", data))
    tests = {t["nodeid"]: t for t in collector.summary()["tests"]}
    assert tests["t.py::skip"]["outcome"] == "skipped"
    assert tests["t.py::skip"]["message"] == "cannot stall a live provider"
    assert tests["t.py::err"]["outcome"] == "failed"
    assert tests["t.py::err"]["message"] == "fixture broke"
    assert collector.summary()["endpoints"]["e"]["areas"]["fallback"] == {
        "passed": 0,
        "warned": 0,
        "failed": 1,
        "skipped": 1,
    }


def test_setup_that_passed_alone_is_not_counted() -> None:
    collector = ReportCollector()
    collector.add(make_report("t.py::a", "setup", "passed", {"endpoint": "e"}))
    assert collector.summary()["tests"] == []
    assert collector.terminal_lines() == []


def test_teardown_error_fails_a_passed_test_and_later_data_wins() -> None:
    collector = ReportCollector()
    collector.add(make_report("t.py::a", "setup", "passed", {"endpoint": "e"}))
    collector.add(make_report("t.py::a", "call", "passed", {"endpoint": "e"}, duration=0.5))
    collector.add(
        make_report(
            "t.py::a",
            "teardown",
            "failed",
            {"endpoint": "e", "cassette_status": "written"},
            longrepr="cassette write failed",
            duration=0.25,
        )
    )
    (test,) = collector.summary()["tests"]
    assert test["outcome"] == "failed"
    assert test["message"] == "cassette write failed"
    assert test["cassette_status"] == "written"
    assert test["duration_s"] == 0.75


def test_a_crashed_xdist_worker_fails_its_test() -> None:
    collector = ReportCollector()
    collector.add(make_report("t.py::a", "setup", "passed", {"endpoint": "e"}))
    # What xdist's controller logs for the item a dying worker was running.
    crash = make_report("t.py::a", "???", "failed", longrepr="worker 'gw0' crashed")
    collector.add(crash)
    (test,) = collector.summary()["tests"]
    assert (test["outcome"], test["message"]) == ("failed", "worker 'gw0' crashed")


def test_rerun_replaces_the_earlier_attempt() -> None:
    collector = ReportCollector()
    data = {"endpoint": "e"}
    collector.add(make_report("t.py::a", "setup", "passed", data))
    collector.add(make_report("t.py::a", "call", "failed", data, longrepr="flaky"))
    collector.add(make_report("t.py::a", "call", "rerun", data))  # pytest-rerunfailures
    run_test(collector, "t.py::a", data)
    (test,) = collector.summary()["tests"]
    assert (test["outcome"], test["message"]) == ("passed", None)


def test_reports_without_data_are_ignored() -> None:
    collector = ReportCollector()
    collector.add(make_report("t.py::plain"))
    collector.add(make_report("t.py::plain", "setup", "skipped", longrepr=("t.py", 1, "x")))
    collector.add(SimpleNamespace(when="collect", outcome="passed", nodeid="t.py"))  # type: ignore[arg-type]
    assert collector.summary()["tests"] == []


def test_area_comes_from_area_then_check_then_other() -> None:
    collector = ReportCollector()
    run_test(collector, "t.py::a", {"endpoint": "e", "area": "cost", "check": "x.y"})
    run_test(collector, "t.py::b", {"endpoint": "e", "check": "response_shape.n_images"})
    run_test(collector, "t.py::c", {"endpoint": "e", "check": None})  # a user test
    run_test(collector, "t.py::d", {"endpoint": "e", "check": "custom.thing"})
    run_test(collector, "t.py::e", {"check": "errors.x"})  # names no endpoint
    summary = collector.summary()
    assert {t["nodeid"]: t["area"] for t in summary["tests"]} == {
        "t.py::a": "cost",
        "t.py::b": "response_shape",
        "t.py::c": "other",
        "t.py::d": "other",
        "t.py::e": "errors",
    }
    assert set(summary["endpoints"]) == {"e", "(none)"}


def _stats_collector(**options: Any) -> ReportCollector:
    collector = ReportCollector(deadlines={"slow": 5.0, "fast": 60.0}, **options)
    latencies = {"fast": [1.0, 2.0, 2.5, 3.5], "slow": [4.0, 9.0, 10.0, 30.0]}
    for endpoint, values in latencies.items():
        for i, value in enumerate(values):
            run_test(
                collector,
                f"t.py::test_lat[{endpoint}-{i}]",
                {
                    "endpoint": endpoint,
                    "check": "efficiency.latency",
                    "latencies_s": [value],
                    "attempts": 2,
                    "successes": 1 if i % 2 else 2,
                    "cost_usd": 0.011,
                },
                outcome="failed" if value > 20 else "passed",
                longrepr="too slow" if value > 20 else None,
            )
    return collector


def test_endpoint_statistics() -> None:
    summary = _stats_collector().summary()
    fast, slow = summary["endpoints"]["fast"], summary["endpoints"]["slow"]
    live = {"source": "live", "recorded_at": None}
    assert fast["latency_s"] == {"p50": 2.0, "p95": 3.5, "count": 4, **live}
    assert (fast["rating"], fast["p95_within_deadline"]) == ("excellent", True)
    # Latencies of failed tests count too: a slow failure is part of what users wait for.
    assert slow["latency_s"] == {"p50": 9.0, "p95": 30.0, "count": 4, **live}
    assert (slow["rating"], slow["p95_within_deadline"]) == ("acceptable", False)
    assert (fast["attempts"], fast["successes"], fast["success_rate"]) == (8, 6, 0.75)
    assert fast["estimated_spend_usd"] == pytest.approx(0.044)
    assert summary["totals"]["estimated_spend_usd"] == pytest.approx(0.088)
    assert summary["totals"]["success_rate"] == 0.75
    assert (summary["totals"]["passed"], summary["totals"]["failed"]) == (7, 1)


def test_endpoint_without_samples_has_no_latency_or_rate() -> None:
    collector = ReportCollector()
    run_test(collector, "t.py::a", {"endpoint": "e", "latencies_s": None, "attempts": "x"})
    entry = collector.summary()["endpoints"]["e"]
    assert entry["latency_s"] == {
        "p50": None,
        "p95": None,
        "count": 0,
        "source": None,
        "recorded_at": None,
    }
    assert (entry["rating"], entry["success_rate"], entry["deadline_s"]) == (None, None, None)
    assert entry["p95_within_deadline"] is None


RELAY_KEY = "rk_live_0123456789"


def _full_collector() -> ReportCollector:
    collector = _stats_collector(secrets=[RELAY_KEY, ""])
    collector.settings_rows = [
        ("record_mode", "none", "default"),
        ("endpoints.relay.base_url", "https://relay.example.com/v1", "config file"),
        ("endpoints.relay.api_key_env", f"RELAY_API_KEY {SECRET}", "environment"),
    ]
    collector.run_info = {"pytest": pytest.__version__, "workers": 2}
    run_test(
        collector,
        "t.py::test_wrong_key[relay]",
        {
            "endpoint": "relay",
            "check": "errors.wrong_key",
            "category": "authentication",
            "hint": f"Check RELAY_API_KEY; the endpoint accepted {SECRET}.",
            "images": [
                {"format": "png", "size": "1024x1024", "thumb_png_b64": THUMB},
                {"format": "png", "size": "8x8", "thumb_png_b64": '"><script>x</script>'},
            ],
        },
        outcome="failed",
        longrepr=f"AssertionError: <script>alert(1)</script> Bearer {SECRET} {RELAY_KEY}",
    )
    collector.unused_cassettes = ["cassettes/relay/test_old.yaml"]
    return collector


def test_summary_validates_against_schema_v2() -> None:
    summary = _full_collector().summary()
    jsonschema.validate(summary, REPORT_SCHEMA)
    assert summary["unused_cassettes"] == ["cassettes/relay/test_old.yaml"]
    images = summary["endpoints"]["relay"]["images"]
    assert [i["thumb_png_b64"] for i in images] == [THUMB, None]  # the bogus one is dropped
    assert [t["nodeid"] for t in summary["tests"]] == sorted(t["nodeid"] for t in summary["tests"])


def test_no_secret_in_any_rendering() -> None:
    collector = _full_collector()
    texts = {
        "json": json.dumps(collector.summary()),
        "html": render_html(collector.summary()),
        "terminal": "\n".join(collector.terminal_lines()),
    }
    for name, text in texts.items():
        assert SECRET not in text, name
        assert RELAY_KEY not in text, name
        assert "sk-***" in text, name


def test_html_is_escaped_and_self_contained() -> None:
    page = render_html(_full_collector().summary())
    # One script, the page's own (sorting and filtering); reported text never becomes one.
    assert page.lower().count("<script") == 1
    assert "<script>alert" not in page and '"><script>x' not in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert f'src="data:image/png;base64,{THUMB}"' in page
    assert page.count("<img ") == 1
    assert "http://" not in page and "<link" not in page
    # Escaped text still shows every section a reader needs.
    for needle in (
        "errors",
        'class="fail"',
        "authentication",
        "Check RELAY_API_KEY",
        "test_old.yaml",
        "record_mode",
        "acceptable",
    ):
        assert needle in page


def test_terminal_lines_fit_80_columns_and_show_every_part() -> None:
    lines = _full_collector().terminal_lines()
    assert WIDTH == 80
    assert max(len(line) for line in lines) <= WIDTH
    text = "\n".join(lines)
    # The verdict comes first, per endpoint.
    assert lines[0].startswith("verdict: FAILED: 9 test(s), 7 passed, 2 failed")
    assert "  relay: FAILED" in text
    assert text.index("verdict:") < text.index("endpoint ") < text.index("failures (")
    assert "FAILED errors.wrong_key [relay] (technical / authentication)" in text
    assert "fix: Check RELAY_API_KEY" in text
    assert "reproduce: pytest --imagegen --imagegen-endpoint relay -k errors.wrong_key" in text
    assert "slow: p95 30.0 s exceeds the 5.00 s deadline" in text
    assert "unused cassettes (1)" in text
    row = next(line for line in lines if line.startswith("relay ") and "!" in line)
    assert "0 1F!" in row
    stats = next(line for line in lines if line.startswith("fast ") and "$" in line)
    assert stats.split() == [
        "fast",
        "2.00",
        "s",
        "3.50",
        "s",
        "60.0",
        "s",
        "75%",
        "(6/8)",
        "-",
        "$0.0440",
    ]
    rated = next(line for line in lines if line.startswith("fast ") and "excellent" in line)
    assert rated.split() == ["fast", "excellent", "unacceptable", "-"]


def test_quiet_terminal_is_matrix_and_failures_and_very_quiet_one_line_each() -> None:
    collector = _full_collector()
    quiet = "\n".join(collector.terminal_lines(-1))
    assert quiet.startswith("endpoint ")
    assert "failures (2):" in quiet
    for left_out in ("verdict:", "settings", "p50", "unused cassettes"):
        assert left_out not in quiet
    very_quiet = collector.terminal_lines(-2)
    assert [line.split(":")[0] for line in very_quiet] == [
        "imagegen fast",
        "imagegen relay",
        "imagegen slow",
    ]
    assert "FAILED" in very_quiet[1] and "technical" in very_quiet[1]
    verbose = "\n".join(collector.terminal_lines(1))
    assert "settings (value, source):" in verbose and "record_mode = none" in verbose


def test_long_endpoint_names_stay_within_width() -> None:
    collector = ReportCollector()
    run_test(collector, "t.py::a", {"endpoint": "azure-eastus-gpt-image-1", "check": "cost.x"})
    assert max(len(line) for line in collector.terminal_lines()) <= WIDTH


# --------------------------------------------------------------------------- writing


def test_write_json_and_html_creates_parents(tmp_path: Path) -> None:
    collector = _full_collector()
    json_path = collector.write(tmp_path / "a" / "b" / "report.json")
    doc = json.loads(json_path.read_text(encoding="utf-8"))
    jsonschema.validate(doc, REPORT_SCHEMA)
    html_path = collector.write(tmp_path / "c" / "report.HTML")
    assert html_path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    other = collector.write(tmp_path / "report.txt")
    assert json.loads(other.read_text(encoding="utf-8"))["schema_version"] == 2
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    # Reports are shared artefacts (CI uploads them): readable by others, unlike a temp file.
    assert json_path.stat().st_mode & 0o044 == 0o044


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "report.json"
    path.write_text("previous report", encoding="utf-8")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        _full_collector().write(path)
    assert path.read_text(encoding="utf-8") == "previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


# --------------------------------------------------------------------------- as pytest runs it

CONFTEST = """
import pytest
from pytest_imagegen.report import ReportCollector, is_xdist_worker, prepare_report


def pytest_addoption(parser):
    parser.addoption("--ig-report", default=None)


class Wire:
    def __init__(self, config):
        self.config = config
        self.collector = ReportCollector(
            settings_rows=[("record_mode", "none", "default")],
            run_info={"suite": "synthetic"},
            deadlines={"alpha": 10.0, "beta": 1.0},
        )

    def pytest_runtest_logreport(self, report):
        self.collector.add(report)

    def pytest_terminal_summary(self, terminalreporter):
        lines = self.collector.terminal_lines()
        if lines:
            terminalreporter.write_sep("=", "imagegen")
            for line in lines:
                terminalreporter.write_line(line)

    def pytest_sessionfinish(self, session):
        path = self.config.getoption("--ig-report")
        if path:
            self.collector.write(path)


def pytest_configure(config):
    config.addinivalue_line("markers", "ig(**data): imagegen report data")
    if not is_xdist_worker(config):
        config.pluginmanager.register(Wire(config), "ig-wire")


def pytest_collection_modifyitems(items):
    # Attached at collection so that a skip or error in setup still carries the data.
    for item in items:
        marker = item.get_closest_marker("ig")
        if marker is not None:
            endpoint = getattr(item, "callspec", None) and item.callspec.params.get("endpoint")
            item.user_properties.append(("imagegen", {"endpoint": endpoint, **marker.kwargs}))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    prepare_report(report)
    return report


@pytest.fixture
def ig(request):
    return next(v for k, v in request.node.user_properties if k == "imagegen")
"""

TEST_FILE = """
from pathlib import Path
import pytest

THUMB = "THUMB_B64"


@pytest.fixture(params=["alpha", "beta"])
def endpoint(request):
    return request.param


@pytest.fixture
def needs_faults(endpoint):
    if endpoint == "beta":
        pytest.skip("beta cannot stall on demand")


@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("cassette could not be written")


@pytest.mark.ig(check="separation.image_model")
def test_separation(endpoint, ig):
    ig.update(
        latencies_s=[0.5], attempts=1, successes=1, cost_usd=0.01,
        images=[{"format": "png", "size": "1024x1024", "thumb_png_b64": THUMB}],
        cassette=Path("cassettes") / endpoint / "test_separation.yaml",
        cassette_status="replayed",
    )


@pytest.mark.ig(check="errors.wrong_key")
def test_errors(endpoint, ig):
    ig.update(latencies_s=[0.2], attempts=1, successes=0)
    if endpoint == "beta":
        ig.update(category="authentication", hint="Check the key of beta")
        raise AssertionError("beta accepted a wrong key <script>")


@pytest.mark.ig(check="response_shape.schema")
def test_shape(endpoint, ig, broken_teardown):
    assert endpoint == "alpha", "beta sent data: []"


@pytest.mark.ig(check="fallback.stalled_primary")
def test_fallback(needs_faults, ig):
    pass


@pytest.mark.ig(check="efficiency.latency")
@pytest.mark.parametrize("i", range(4))
def test_latency(endpoint, ig, i):
    extra = 2.0 if endpoint == "beta" else 0.0
    ig.update(latencies_s=[0.1 * (i + 1) + extra], attempts=1, successes=1, cost_usd=0.005)


@pytest.mark.ig()
def test_user(endpoint, ig):
    pass


@pytest.mark.ig(check="cost.budget")
def test_cost(endpoint):
    pytest.skip("no live spend allowed")


def test_plain():
    pass
""".replace("THUMB_B64", THUMB)


@pytest.fixture
def synthetic(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_synthetic=TEST_FILE)
    return pytester


def _comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """The report without what legitimately differs between two runs (times)."""
    doc = dict(doc)
    doc.pop("created")
    doc["tests"] = [{k: v for k, v in t.items() if k != "duration_s"} for t in doc["tests"]]
    return doc


def test_terminal_summary_and_report_of_a_real_run(synthetic: pytest.Pytester) -> None:
    result = synthetic.runpytest("-p", "no:imagegen", "--ig-report", "out/report.json")
    result.assert_outcomes(passed=16, failed=2, skipped=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*= imagegen =*",
            "verdict: FAILED: 20 test(s), 14 passed, 3 failed, 3 skipped; estimated spend $0.0600",
            "  alpha: FAILED (8 passed, 1 failed, 1 skipped); by problem class: technical 1",
            "endpoint  separ  response  errors  fallbk  effic  cost  other",
            "alpha     1      0 1F!     1       1       4      0 1S  1",
            "beta      1      0 1F!     0 1F!   0 1S    4      0 1S  1",
            "endpoint  p50     p95     deadline  success    $/image  spend",
            "alpha     0.20 s  0.50 s  10.0 s    83% (5/6)  -        $0.0300",
            "beta      2.10 s  2.40 s  1.00 s    83% (5/6)  -        $0.0300",
            "beta: p95 2.40 s exceeds the 1.00 s deadline",
            "rating  response time  success rate  cost per image",
            "alpha   excellent      unacceptable  -",
            "failures (3):",
            "  FAILED errors.wrong_key [[]beta[]] (technical / authentication)",
            "    seen: AssertionError: beta accepted a wrong key <script>",
            "    fix: Check the key of beta",
            "  FAILED response_shape.schema [[]alpha[]] (technical)",
            "    seen: RuntimeError: cassette could not be written",
            "  FAILED response_shape.schema [[]beta[]] (technical)",
            "    seen: AssertionError: beta sent data: []*",
            # The whole cause, not its first line.
            "      assert 'beta' == 'alpha'",
        ]
    )
    doc = json.loads((synthetic.path / "out" / "report.json").read_text(encoding="utf-8"))
    jsonschema.validate(doc, REPORT_SCHEMA)
    tests = {t["nodeid"]: t for t in doc["tests"]}
    assert "test_synthetic.py::test_plain" not in tests
    separation = tests["test_synthetic.py::test_separation[alpha]"]
    assert separation["cassette"] == os.path.join("cassettes", "alpha", "test_separation.yaml")
    assert tests["test_synthetic.py::test_fallback[beta]"]["outcome"] == "skipped"
    assert tests["test_synthetic.py::test_fallback[beta]"]["message"] == (
        "beta cannot stall on demand"
    )
    assert [i["thumb_png_b64"] for i in doc["endpoints"]["alpha"]["images"]] == [THUMB]


@pytest.mark.slow
def test_xdist_merges_to_the_serial_report(synthetic: pytest.Pytester) -> None:
    serial = synthetic.runpytest("-p", "no:imagegen", "--ig-report", "serial.json")
    serial.assert_outcomes(passed=16, failed=2, skipped=3, errors=2)
    parallel = synthetic.runpytest(
        "-p", "no:imagegen", "-p", "xdist", "-n", "2", "--ig-report", "xdist.json"
    )
    parallel.assert_outcomes(passed=16, failed=2, skipped=3, errors=2)
    parallel.stdout.fnmatch_lines(
        ["created: 2/2 workers", "*= imagegen =*", "verdict: FAILED: 20 test(s),*"]
    )
    # Workers wrote nothing of their own: one imagegen summary, two report files.
    assert parallel.stdout.str().count("= imagegen =") == 1
    assert sorted(p.name for p in synthetic.path.glob("*.json")) == ["serial.json", "xdist.json"]
    docs = [
        json.loads((synthetic.path / name).read_text(encoding="utf-8"))
        for name in ("serial.json", "xdist.json")
    ]
    assert docs[0]["totals"]["tests"] == 20
    assert _comparable(docs[1]) == _comparable(docs[0])


def test_junitxml_gets_flat_properties_only(synthetic: pytest.Pytester) -> None:
    result = synthetic.runpytest("-p", "no:imagegen", "--junitxml", "junit.xml")
    result.assert_outcomes(passed=16, failed=2, skipped=3, errors=2)
    root = ET.parse(synthetic.path / "junit.xml").getroot()
    names = {p.get("name") for p in root.iter("property")}
    assert "imagegen" not in names  # the whole dict (thumbnails and all) stays out
    assert names == {
        "imagegen_endpoint",
        "imagegen_check",
        "imagegen_category",
        "imagegen_problem_class",
        "imagegen_hint",
        "imagegen_latency_s",
        "imagegen_cost_usd",
    }
    cases = {
        (c.get("name"), tuple((p.get("name"), p.get("value")) for p in c.iter("property")))
        for c in root.iter("testcase")
        if c.get("name") == "test_errors[beta]"
    }
    assert cases == {
        (
            "test_errors[beta]",
            (
                ("imagegen_endpoint", "beta"),
                ("imagegen_check", "errors.wrong_key"),
                ("imagegen_category", "authentication"),
                ("imagegen_problem_class", ""),
                ("imagegen_hint", "Check the key of beta"),
                ("imagegen_latency_s", "0.200"),
                ("imagegen_cost_usd", ""),
            ),
        )
    }


def test_importing_the_report_module_stays_light() -> None:
    """The plugin may import this module at start-up: nothing heavy may come with it."""
    code = (
        "import sys, pytest_imagegen.report; "
        "print(sorted(m for m in ('openai', 'httpx2', 'vcr', 'PIL', 'hypothesis') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_tests_that_went_live_in_replay_are_named_in_the_terminal() -> None:
    # Issue 10, finding 7: a replay that went live was only in the JSON report.
    collector = ReportCollector(run_info={"record_mode": "none"})
    run_test(
        collector,
        "suite::efficiency.latency[reference]",
        {
            "endpoint": "reference",
            "check": "efficiency.latency",
            "cassette": "c/efficiency.latency.yaml",
            "cassette_status": "live",
        },
    )
    run_test(collector, "suite::separation.x[reference]", {"cassette_status": "replayed"})
    text = "\n".join(collector.terminal_lines())
    assert "went live during replay (1)" in text
    assert "suite::efficiency.latency[reference]: no cassette at c/efficiency.latency.yaml" in text
    assert "--imagegen-record-mode=once" in text
    assert "separation.x" not in text.split("went live during replay")[1]
