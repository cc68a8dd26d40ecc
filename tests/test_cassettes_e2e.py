"""Cassettes end to end, run as users run them: the suite recorded against the embedded
reference endpoint, replayed offline (also under pytest-xdist), damaged, and replayed from
this repo's own ``cassettes/``; plus record mode ``none`` on loopback (strict replay of a
cassette that exists, live when there is none).

The runs that record or replay hypothesis-drawn requests run in a fresh process
(``runpytest_subprocess``): hypothesis mixes constants of the local modules already
imported into its draws, so an in-process run inside this test session could draw
differently from the run that recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Imported here so that pytester's in-process runs, which restore sys.modules after each
# run, do not import them again every time.
import openai
import PIL.Image  # noqa: F401
import pytest
import vcr  # noqa: F401
import werkzeug.serving  # noqa: F401
import yaml

import pytest_imagegen.reference.app
import pytest_imagegen.report
import pytest_imagegen.strategies  # noqa: F401
from pytest_imagegen.cassettes import cassette_path, read_cassette, recording
from pytest_imagegen.checks import REGISTRY
from pytest_imagegen.errors import CassetteError
from pytest_imagegen.names import OPTION
from pytest_imagegen.reference import ReferenceServer
from pytest_imagegen.reference.server import DEFAULT_API_KEY

pytest_plugins = ["pytester"]

# Whole runs of the suite in fresh processes and under xdist (see docs/development.md).
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
#: The checks that draw their requests with hypothesis.
HYPOTHESIS_CHECKS = frozenset(
    {"request_shape.valid_requests_succeed", "request_shape.invalid_requests_refused"}
)
#: The checks that run under a cassette (the others send nothing or need live faults).
# The checks of a run against an endpoint without an upstream (no gateway checks).
PLAIN = {k: v for k, v in REGISTRY.items() if not v.needs_upstream}
RECORDED = frozenset(
    c.id
    for c in PLAIN.values()
    if c.sends_requests and (not c.needs_faults or c.records_faults) and not c.live_timing
)
#: The checks that talk to the reference server live, with no cassette: scripted faults
#: (but a stall, which the cassette keeps as a timeout), and stream timings (a cassette
#: cannot keep them).
FAULTS = frozenset(
    c.id for c in PLAIN.values() if (c.needs_faults and not c.records_faults) or c.live_timing
)
SUITE_FOLDER = Path("reference") / "conformance"
RUN_TIMEOUT_S = 180

# A plugin loaded into the runs under test (``-p imagegen_e2e_probe``). It counts the
# requests the reference server received during each check, and refuses (and writes down)
# every connection or name lookup beyond loopback, under whatever guard the run installs.
# It lives in a folder named ``tests`` so that hypothesis takes no constants from it.
PROBE = """
import json
import os
import socket

import pytest

_saved = {}


def _write(name, record):
    with open(os.path.join(os.environ["PROBE_OUT"], name), "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\\n")


def _loopback(host):
    host = (host.decode() if isinstance(host, bytes) else str(host)).strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


def pytest_configure(config):
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo
    _saved.update(connect=connect, getaddrinfo=getaddrinfo)

    def probe_connect(sock, address):
        if isinstance(address, tuple) and not _loopback(address[0]):
            _write("outbound.jsonl", {"connect": repr(address)})
            raise OSError("probe: no connection beyond loopback")
        return connect(sock, address)

    def probe_getaddrinfo(host, *args, **kwargs):
        if host is not None and not _loopback(host):
            _write("outbound.jsonl", {"lookup": repr(host)})
            raise socket.gaierror("probe: no lookup beyond loopback")
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = probe_connect
    socket.getaddrinfo = probe_getaddrinfo


def pytest_unconfigure(config):
    socket.socket.connect = _saved["connect"]
    socket.getaddrinfo = _saved["getaddrinfo"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    check = getattr(item, "imagegen_check", None)
    context = item.funcargs.get("_imagegen_check_context") if check is not None else None
    server = getattr(context, "reference", None)
    before = len(server.log) if server is not None else 0
    try:
        return (yield)
    finally:
        if server is not None:
            _write("hits.jsonl", {"check": check.id, "requests": len(server.log) - before})
"""


# -- helpers ------------------------------------------------------------------------------


def _install_probe(project: Path) -> Path:
    """Write the probe plugin into ``project/tests``; return the folder for its output."""
    (project / "tests").mkdir(parents=True, exist_ok=True)
    (project / "tests" / "imagegen_e2e_probe.py").write_text(PROBE)
    out = project / "probe"
    out.mkdir(exist_ok=True)
    return out


def _clear_probe(out: Path) -> None:
    for name in ("hits.jsonl", "outbound.jsonl"):
        (out / name).unlink(missing_ok=True)


def _probe_lines(out: Path, name: str) -> list[dict[str, Any]]:
    path = out / name
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _assert_replayed_offline(report: Path, out: Path) -> None:
    """Every recorded check replayed (the drawn ones send what they recorded), none reached
    the reference server, and nothing tried to leave the machine."""
    statuses = _statuses(_report(report))
    assert {statuses[c] for c in RECORDED} == {"replayed"}, statuses
    hits = _hits(out)
    assert all(hits.get(c, 0) == 0 for c in RECORDED), hits
    assert _probe_lines(out, "outbound.jsonl") == []


def _hits(out: Path) -> dict[str, int]:
    """Requests the reference server received during each check's call."""
    hits: dict[str, int] = {}
    for line in _probe_lines(out, "hits.jsonl"):
        hits[line["check"]] = hits.get(line["check"], 0) + line["requests"]
    return hits


def _environment(project: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "IMAGEGEN_"))}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(project / "tests"), env.get("PYTHONPATH")) if p
    )
    env["PROBE_OUT"] = str(project / "probe")
    return env


def _pytester_env(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Probe installed in the pytester folder, for subprocess and in-process runs alike."""
    out = _install_probe(pytester.path)
    for name, value in _environment(pytester.path).items():
        if os.environ.get(name) != value:
            monkeypatch.setenv(name, value)
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "IMAGEGEN_")):
            monkeypatch.delenv(name)
    pytester.syspathinsert(pytester.path / "tests")
    return out


def _report(path: Path) -> dict[str, dict[str, Any]]:
    """The JSON report's tests, by check id."""
    return {t["check"]: t for t in json.loads(path.read_text())["tests"]}


def _statuses(report: dict[str, dict[str, Any]]) -> dict[str, str | None]:
    return {check: test["cassette_status"] for check, test in report.items()}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.yaml"))}


def _counts(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): len(read_cassette(p)) for p in sorted(folder.rglob("*.yaml"))
    }


def _keys(path: Path) -> list[tuple[str, str, bytes]]:
    return sorted(
        (i["request"]["method"], i["request"]["uri"].split("/v1", 1)[-1], i["request"]["body"])
        for i in read_cassette(path)
    )


def _secret_fragments(secret: str, width: int = 10) -> set[str]:
    """The secret, its base64 form, and every run of ``width`` characters of it."""
    import base64

    fragments = {secret[i : i + width] for i in range(len(secret) - width + 1)}
    return fragments | {secret, base64.b64encode(secret.encode()).decode()}


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The suite recorded once, serially, into ``<project>/recorded`` (a pyproject
    ``cassette_dir``), by a fresh pytest process as a user runs it."""
    project = tmp_path_factory.mktemp("serial")
    (project / "pyproject.toml").write_text('[tool.imagegen]\ncassette_dir = "recorded"\n')
    out = _install_probe(project)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            OPTION,
            "--imagegen-record-mode=once",
            "-p",
            "imagegen_e2e_probe",
            "-p",
            "no:cacheprovider",
            "--imagegen-report=record.json",
            f"--basetemp={project / 'basetemp'}",
        ],
        cwd=project,
        env=_environment(project),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    report = _report(project / "record.json")
    assert set(report) == set(PLAIN)
    assert {c for c, s in _statuses(report).items() if s == "recorded"} == RECORDED
    assert _probe_lines(out, "outbound.jsonl") == []
    yield project / "recorded"


def _copy_recording(serial: Path, project: Path, name: str = "cassettes") -> Path:
    target = project / name
    shutil.copytree(serial, target, ignore=shutil.ignore_patterns("*.lock", ".*.tmp"))
    return target


# -- the suite recorded, then replayed --------------------------------------------------------


def test_recording_is_small_secret_free_and_replays_without_reaching_the_server(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, serial: Path
) -> None:
    files = sorted(serial.rglob("*.yaml"))
    assert {p.stem for p in files} == RECORDED
    assert all(p.parent == serial / SUITE_FOLDER for p in files)
    # Small: shrunk images, and only what each check needs.
    assert sum(p.stat().st_size for p in files) < 400_000
    assert max(p.stat().st_size for p in files) < 64_000
    # No byte of the reference server's API key, in any form, in any file written.
    fragments = _secret_fragments(DEFAULT_API_KEY)
    for path in serial.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("utf-8", "replace")
            assert not [f for f in fragments if f in text], path

    out = _pytester_env(pytester, monkeypatch)
    pytester.makepyprojecttoml('[tool.imagegen]\ncassette_dir = "cassettes"\n')
    cassettes = _copy_recording(serial, pytester.path)
    before = _snapshot(cassettes)
    result = pytester.runpytest_subprocess(
        OPTION,
        "-p",
        "imagegen_e2e_probe",
        "-p",
        "no:cacheprovider",
        "--imagegen-report=replay.json",
        timeout=RUN_TIMEOUT_S,
    )
    result.assert_outcomes(passed=len(PLAIN))
    report = _report(pytester.path / "replay.json")
    statuses = _statuses(report)
    assert {statuses[c] for c in RECORDED} == {"replayed"}, statuses
    for check in RECORDED:
        expected = cassette_path(cassettes, "reference", "conformance", check)
        assert report[check]["cassette"] == str(expected)
    # Fault injection runs live against the reference server, with no cassette.
    assert {statuses[c] for c in FAULTS} == {None}
    assert {report[c]["cassette"] for c in FAULTS} == {None}
    hits = _hits(out)
    assert {c: hits[c] for c in RECORDED} == dict.fromkeys(RECORDED, 0)
    assert all(hits[c] > 0 for c in FAULTS), hits
    assert _probe_lines(out, "outbound.jsonl") == []
    # Mode none never writes.
    assert _snapshot(cassettes) == before
    assert json.loads((pytester.path / "replay.json").read_text())["unused_cassettes"] == []


def test_request_the_cassette_lacks_is_a_cassette_error_even_on_the_reference_endpoint(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, serial: Path
) -> None:
    """What an older (or hand-edited) recording does to a replay: a request has no
    recording. Against the loopback reference endpoint too, the test fails naming the
    cassette, the request, what differs and the record modes that add it; nothing goes
    live. The checks that draw their requests send what their cassette recorded instead of
    drawing again, so an edited drawn request still replays."""
    out = _pytester_env(pytester, monkeypatch)
    pytester.makepyprojecttoml('[tool.imagegen]\ncassette_dir = "cassettes"\n')
    cassettes = _copy_recording(serial, pytester.path)
    edited = ("request_shape.valid_requests_succeed", "efficiency.latency_and_success_rate")
    before = {}
    for check in edited:
        path = cassettes / SUITE_FOLDER / f"{check}.yaml"
        document = yaml.safe_load(path.read_text())
        body = json.loads(document["interactions"][0]["request"]["body"])
        body["prompt"] = "a prompt an older version sent"
        document["interactions"][0]["request"]["body"] = json.dumps(body)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        before[path] = path.read_bytes()

    result = pytester.runpytest_subprocess(
        OPTION,
        "-k",
        "valid_requests_succeed or latency_and_success_rate",
        "-p",
        "imagegen_e2e_probe",
        "-p",
        "no:cacheprovider",
        "--imagegen-report=replay.json",
        timeout=RUN_TIMEOUT_S,
    )
    result.assert_outcomes(passed=1, failed=1, deselected=len(PLAIN) - 2)
    report = _report(pytester.path / "replay.json")
    # The recorded body, edited prompt and all, is what the drawing check sent.
    assert report["request_shape.valid_requests_succeed"]["outcome"] == "passed"
    assert report["request_shape.valid_requests_succeed"]["cassette_status"] == "replayed"
    # Three identical requests; the edited recording matches none of them.
    lacking = cassettes / SUITE_FOLDER / "efficiency.latency_and_success_rate.yaml"
    assert report["efficiency.latency_and_success_rate"]["outcome"] == "failed"
    result.stdout.fnmatch_lines(
        [
            f"*Cassette {lacking} has no recording left for POST /v1/images/generations*",
            "*record with:*",
            "*pytest --imagegen --imagegen-record-mode=new_episodes*",
            "*pytest --imagegen --imagegen-record-mode=all*",
        ]
    )
    result.stdout.no_fnmatch_line("*Traceback*")
    result.stdout.no_fnmatch_line("*went live during replay*")
    assert _hits(out) == dict.fromkeys(edited, 0), "a request went live past its cassette"
    for path, content in before.items():
        assert path.read_bytes() == content, "a replay in mode none wrote to the cassette"
    assert _probe_lines(out, "outbound.jsonl") == []


def test_missing_cassette_on_the_reference_endpoint_goes_live_and_is_named(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, serial: Path
) -> None:
    """The documented exception: a loopback endpoint with no cassette at all goes live in
    mode ``none`` (the reference endpoint is local and free), records nothing, and the
    terminal summary names the test and the mode that records it."""
    out = _pytester_env(pytester, monkeypatch)
    pytester.makepyprojecttoml('[tool.imagegen]\ncassette_dir = "cassettes"\n')
    cassettes = _copy_recording(serial, pytester.path)
    missing = cassettes / SUITE_FOLDER / "separation.image_call_carries_image_model.yaml"
    missing.unlink()
    before = _snapshot(cassettes)
    result = pytester.runpytest(
        OPTION,
        "-k",
        "image_call_carries_image_model",
        "-p",
        "imagegen_e2e_probe",
        "-p",
        "no:cacheprovider",
        "--imagegen-report=replay.json",
    )
    result.assert_outcomes(passed=1, deselected=len(PLAIN) - 1)
    report = _report(pytester.path / "replay.json")
    assert report["separation.image_call_carries_image_model"]["cassette_status"] == "live"
    assert _hits(out)["separation.image_call_carries_image_model"] > 0
    # The summary wraps long lines: read it with the wrapping undone.
    summary = "".join(line.strip() for line in result.outlines)
    assert "went live during replay (1)" in summary
    assert f"image_call_carries_image_model[reference]: no cassette at {missing}" in summary
    assert "record them with --imagegen-record-mode=once" in summary
    assert _snapshot(cassettes) == before
    assert _probe_lines(out, "outbound.jsonl") == []


def test_four_workers_recording_new_episodes_lose_no_interaction(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, serial: Path
) -> None:
    out = _pytester_env(pytester, monkeypatch)
    pytester.makepyprojecttoml("[tool.imagegen]\n")
    monkeypatch.setenv("IMAGEGEN_CASSETTE_DIR", "parallel")
    record = pytester.runpytest_subprocess(
        OPTION,
        "-n",
        "4",
        "--imagegen-record-mode=new_episodes",
        "-p",
        "imagegen_e2e_probe",
        "-p",
        "no:cacheprovider",
        "--imagegen-report=record.json",
        timeout=RUN_TIMEOUT_S,
    )
    record.assert_outcomes(passed=len(PLAIN))
    parallel = pytester.path / "parallel"
    statuses = _statuses(_report(pytester.path / "record.json"))
    assert {c for c, s in statuses.items() if s == "recorded"} == RECORDED
    # Per cassette, as many interactions as the serial recording of the same suite.
    assert _counts(parallel) == _counts(serial)
    assert not list(parallel.rglob(".*.tmp")), "a temp file of a write was left behind"
    for check in RECORDED - HYPOTHESIS_CHECKS:
        name = f"{check}.yaml"
        assert _keys(parallel / SUITE_FOLDER / name) == _keys(serial / SUITE_FOLDER / name)

    _clear_probe(out)
    replay = pytester.runpytest_subprocess(
        OPTION,
        "-n",
        "2",
        "-p",
        "imagegen_e2e_probe",
        "-p",
        "no:cacheprovider",
        "--imagegen-report=replay.json",
        timeout=RUN_TIMEOUT_S,
    )
    replay.assert_outcomes(passed=len(PLAIN))
    _assert_replayed_offline(pytester.path / "replay.json", out)


# -- failures that must be clear ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["none", "all"])
def test_corrupt_cassette_fails_naming_the_file_and_is_left_untouched(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, serial: Path, mode: str
) -> None:
    _pytester_env(pytester, monkeypatch)
    pytester.makepyprojecttoml('[tool.imagegen]\ncassette_dir = "cassettes"\n')
    cassettes = _copy_recording(serial, pytester.path)
    path = cassettes / SUITE_FOLDER / "response_shape.schema.yaml"
    damaged = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(damaged)

    result = pytester.runpytest(
        OPTION, "-k", "schema", f"--imagegen-record-mode={mode}", "-p", "no:cacheprovider"
    )
    # The cassette is opened when the check's context is set up: an error at setup.
    result.assert_outcomes(errors=1, deselected=len(PLAIN) - 1)
    result.stdout.fnmatch_lines(
        [f"*Cassette {path} is corrupt or truncated: *. Delete it and record it again*"]
    )
    result.stdout.no_fnmatch_line("*plugin.py:*")  # the message, not a traceback into the glue
    assert path.read_bytes() == damaged
    assert not list(path.parent.glob(".*.tmp"))


def test_missing_cassette_of_a_remote_endpoint_names_file_and_command_and_sends_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _pytester_env(pytester, monkeypatch)
    pytester.makepyprojecttoml(
        """
        [tool.imagegen]
        report = "report.json"

        [[tool.imagegen.endpoints]]
        name = "faraway"
        base_url = "https://images.invalid/v1"
        image_model = "gpt-image-1.5"
        """
    )
    picked = ("separation.image_call_carries_image_model", "request_shape.valid_requests_succeed")
    result = pytester.runpytest(
        OPTION,
        "-k",
        " or ".join(c.split(".", 1)[1] for c in picked),
        "-p",
        "imagegen_e2e_probe",
        "-p",
        "no:cacheprovider",
    )
    # Each fails once, with the message (no second error when the cassette closes).
    result.assert_outcomes(failed=2, deselected=len(PLAIN) - 2)
    for check in picked:
        path = cassette_path(pytester.path / "cassettes", "faraway", "conformance", check)
        result.stdout.fnmatch_lines([f"*No cassette at {path}*"])
        assert not path.exists()
    result.stdout.fnmatch_lines(["*pytest --imagegen --imagegen-record-mode=once*"])
    assert not (pytester.path / "cassettes").exists(), "mode none wrote something"
    assert _probe_lines(out, "outbound.jsonl") == [], "the guard let a connection through"
    report = _report(pytester.path / "report.json")
    assert {report[c]["outcome"] for c in picked} == {"failed"}


def test_remote_endpoint_replays_offline_and_an_unmatched_request_fails_with_a_diff(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, serial: Path
) -> None:
    """Non-loopback endpoints stay strict in mode none: no live fallback, a diff instead."""
    out = _pytester_env(pytester, monkeypatch)
    pytester.makepyprojecttoml(
        """
        [[tool.imagegen.endpoints]]
        name = "faraway"
        base_url = "https://images.invalid/v1"
        image_model = "gpt-image-1.5"
        """
    )
    check = "separation.image_call_carries_image_model"
    source = serial / SUITE_FOLDER / f"{check}.yaml"
    path = cassette_path(pytester.path / "cassettes", "faraway", "conformance", check)
    path.parent.mkdir(parents=True)
    path.write_bytes(source.read_bytes())
    args = ("-k", "image_call_carries_image_model", "-p", "imagegen_e2e_probe")

    replay = pytester.runpytest(*args, OPTION, "-p", "no:cacheprovider")
    replay.assert_outcomes(passed=1, deselected=len(PLAIN) - 1)

    body = json.loads(read_cassette(path)[0]["request"]["body"])
    altered = path.read_text().replace(body["prompt"], "a prompt of another version")
    path.write_text(altered)
    strict = pytester.runpytest(*args, OPTION, "-p", "no:cacheprovider")
    strict.assert_outcomes(failed=1, deselected=len(PLAIN) - 1)
    strict.stdout.fnmatch_lines(
        [
            f"*Cassette {path} has no recording left for POST /v1/images/generations*",
            "*Closest recorded request: POST /v1/images/generations, interaction 1 of 1*",
            '*-  "prompt": "a prompt of another version",*',
            f'*+  "prompt": "{body["prompt"]}",*',
            "*pytest --imagegen --imagegen-record-mode=new_episodes*",
        ]
    )
    assert path.read_text() == altered
    assert _probe_lines(out, "outbound.jsonl") == []


# -- this repo's cassettes ----------------------------------------------------------------------


def test_the_committed_cassettes_of_this_repo_replay(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    committed = REPO / "cassettes"
    assert {p.stem for p in (committed / SUITE_FOLDER).glob("*.yaml")} == RECORDED, (
        "cassettes/ does not hold one recording per recorded check; record them with: "
        "pytest --imagegen --imagegen-record-mode=once"
    )
    out = _pytester_env(pytester, monkeypatch)
    pytester.makepyprojecttoml('[tool.imagegen]\ncassette_dir = "cassettes"\n')
    cassettes = _copy_recording(committed, pytester.path)
    result = pytester.runpytest_subprocess(
        OPTION,
        "-p",
        "imagegen_e2e_probe",
        "-p",
        "no:cacheprovider",
        "--imagegen-report=replay.json",
        timeout=RUN_TIMEOUT_S,
    )
    result.assert_outcomes(passed=len(PLAIN))
    _assert_replayed_offline(pytester.path / "replay.json", out)
    assert json.loads((pytester.path / "replay.json").read_text())["unused_cassettes"] == []
    for path in committed.rglob("*"):
        if path.is_file():
            text = path.read_bytes().decode("utf-8", "replace")
            assert DEFAULT_API_KEY not in text, path
    assert _snapshot(cassettes) == _snapshot(committed)


# -- record mode none with loopback_live: the unit behaviour ------------------------------------


@pytest.fixture(scope="module")
def reference() -> Iterator[ReferenceServer]:
    with ReferenceServer() as server:
        yield server


def _generate(base_url: str, prompt: str, *, api_key: str = "sk-unused") -> int:
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=10)
    with client:
        result = client.images.generate(
            model="gpt-image-1.5", prompt=prompt, size="1024x1024", quality="low"
        )
    return len(result.data)


def _record(reference: ReferenceServer, path: Path, *prompts: str) -> bytes:
    with recording(path, mode="once", secrets=[reference.api_key]):
        for prompt in prompts:
            _generate(reference.base_url, prompt, api_key=reference.api_key)
    return path.read_bytes()


def _prompts(reference: ReferenceServer, since: int) -> list[str]:
    return [r.body["prompt"] for r in reference.log.snapshot()[since:]]


def test_loopback_request_with_no_recording_is_a_cassette_error_naming_the_modes(
    reference: ReferenceServer, tmp_path: Path
) -> None:
    """Issue 10, item 6: an edited (or new) request in mode ``none`` never goes live past an
    existing cassette, even to loopback: the test fails naming the file, the request, what
    differs and the record modes that add it."""
    path = tmp_path / "c.yaml"
    recorded = _record(reference, path, "a cat")
    listing = sorted(p.name for p in tmp_path.iterdir())
    since = len(reference.log)
    with (
        pytest.raises(CassetteError) as excinfo,
        recording(path, mode="none", secrets=[reference.api_key], loopback_live=True) as session,
    ):
        assert _generate(reference.base_url, "a cat", api_key=reference.api_key) == 1
        _generate(reference.base_url, "a dog", api_key=reference.api_key)
    message = str(excinfo.value)
    assert f"Cassette {path} has no recording left for POST /v1/images/generations" in message
    assert '-  "prompt": "a cat",' in message and '+  "prompt": "a dog",' in message
    assert "pytest --imagegen --imagegen-record-mode=new_episodes" in message
    assert "pytest --imagegen --imagegen-record-mode=all" in message
    assert (session.status, session.played, session.recorded) == ("replayed", 1, 0)
    assert len(reference.log) == since  # nothing went live
    assert path.read_bytes() == recorded
    assert sorted(p.name for p in tmp_path.iterdir()) == listing


def test_loopback_request_asked_more_often_than_recorded_is_a_cassette_error(
    reference: ReferenceServer, tmp_path: Path
) -> None:
    path = tmp_path / "c.yaml"
    recorded = _record(reference, path, "a cat")
    since = len(reference.log)
    with (
        pytest.raises(CassetteError) as excinfo,
        recording(path, mode="none", loopback_live=True) as session,
    ):
        _generate(reference.base_url, "a cat", api_key=reference.api_key)
        _generate(reference.base_url, "a cat", api_key=reference.api_key)
    assert "recorded 1 time(s) and every recording has already been replayed" in str(excinfo.value)
    assert session.played == 1 and len(reference.log) == since
    assert path.read_bytes() == recorded

    with recording(path, mode="none", loopback_live=True) as replayed:
        _generate(reference.base_url, "a cat", api_key=reference.api_key)
    assert (replayed.status, replayed.played) == ("replayed", 1)
    assert len(reference.log) == since


def test_loopback_with_no_cassette_goes_live_and_nothing_is_written(
    reference: ReferenceServer, tmp_path: Path
) -> None:
    """The documented exception: no cassette at all on a loopback endpoint goes live (the
    reference endpoint is local and free); nothing is recorded."""
    path = tmp_path / "c.yaml"
    since = len(reference.log)
    with recording(path, mode="none", loopback_live=True) as session:
        _generate(reference.base_url, "a fox", api_key=reference.api_key)
        _generate(reference.base_url, "an owl", api_key=reference.api_key)
    assert (session.status, session.played, session.recorded) == ("live", 0, 0)
    assert _prompts(reference, since) == ["a fox", "an owl"]
    assert list(tmp_path.iterdir()) == []


def _backstop(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Any connection or lookup beyond loopback fails here (and is noted), guard or not."""
    attempts: list[Any] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and not str(address[0]).startswith(("127.", "::1")):
            attempts.append(address)
            raise AssertionError(f"a connection to {address} got through")
        return real_connect(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (None, "localhost", "127.0.0.1", "::1", b"localhost"):
            attempts.append(host)
            raise AssertionError(f"a lookup of {host!r} got through")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


def test_non_loopback_hosts_stay_strict_with_loopback_live(
    reference: ReferenceServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    recorded = _record(reference, path, "a red cat")
    attempts = _backstop(monkeypatch)
    remote = "https://images.invalid/v1"
    with recording(path, mode="none", loopback_live=True) as session:
        assert _generate(remote, "a red cat") == 1  # replayed, whatever the host
    assert (session.status, session.played) == ("replayed", 1)

    with (
        pytest.raises(CassetteError) as excinfo,
        recording(path, mode="none", loopback_live=True) as refused,
    ):
        _generate(remote, "a red hat")
    message = str(excinfo.value)
    assert f"Cassette {path} has no recording left" in message
    assert '-  "prompt": "a red cat",' in message and '+  "prompt": "a red hat",' in message
    assert "pytest --imagegen --imagegen-record-mode=new_episodes" in message
    assert refused.played == 0 and attempts == []
    assert path.read_bytes() == recorded


@pytest.mark.parametrize(
    ("mode", "loopback_live"), [("none", False), ("once", True)], ids=["strict-none", "once"]
)
def test_loopback_stays_strict_without_loopback_live_and_outside_mode_none(
    reference: ReferenceServer, tmp_path: Path, mode: str, loopback_live: bool
) -> None:
    path = tmp_path / "c.yaml"
    recorded = _record(reference, path, "a cat")
    since = len(reference.log)
    with (
        pytest.raises(CassetteError, match="has no recording left"),
        recording(path, mode=mode, loopback_live=loopback_live),
    ):
        _generate(reference.base_url, "a dog", api_key=reference.api_key)
    assert len(reference.log) == since
    assert path.read_bytes() == recorded
