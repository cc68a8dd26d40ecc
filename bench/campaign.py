"""The hardening campaign of issue 10, reproducible: bad inputs and endpoint faults, each run
as a user runs the plugin (``pytest --imagegen`` in a fresh folder), judged on three things:
did a traceback reach the output, did the run hang, and did it end silently (exit 0 with no
word about the fault).

Everything stays on loopback: the endpoints are the embedded reference server or a scripted
server on 127.0.0.1 (``tests/_raw_server.py``); the one metadata URL is refused before any
connection. Run it from the repository root::

    python bench/campaign.py            # all families; a Markdown table on stdout
    python bench/campaign.py garbage    # one family (config, env, cli, cassettes, garbage, budget)

Each run is bounded (``RUN_TIMEOUT_S``): a run that reaches it counts as a hang.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from _raw_server import (  # noqa: E402
    RawServer,
    answer,
    dribble,
    response_head,
    routes,
    stall,
)

RUN_TIMEOUT_S = 240
RATE_LIMITED = json.dumps(
    {"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"}}
).encode()
KEY_ENV = "CAMPAIGN_KEY"
KEY = "sk-campaign-key-0123456789abcdefghij"
GARBAGE_CHECKS = "schema or body_size or image_model_refused_by_chat or request_is_valid"
CASSETTE_CHECK = "response_shape.schema"
SUITE_FOLDER = Path("cassettes/reference/conformance")
REPORT = "campaign-report.json"


@dataclass
class Case:
    family: str
    name: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[Path], None] | None = None
    server: Any = None  # a behaviour for a RawServer, or None
    expect_fail: bool = True  # a clean exit 0 would be a silent result
    # Phrases of which one must appear when the run exits 0 (a fault reported in words).
    said: tuple[str, ...] = ()


@dataclass
class Result:
    case: Case
    code: int | None
    seconds: float
    traceback: bool
    hang: bool
    silent: bool
    outcome: str
    requests: int = 0


def _endpoint_toml(url: str, **extra: Any) -> str:
    lines = [
        "[tool.imagegen]",
        'cassette_dir = "cassettes"',
        "[[tool.imagegen.endpoints]]",
        'name = "garbage"',
        f'base_url = "{url}/v1"',
        f'api_key_env = "{KEY_ENV}"',
        'image_model = "gpt-image-1"',
        'chat_model = "gpt-4o-mini"',
        "timeout_s = 2",
        "deadline_s = 5",
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def _summary(output: str, code: int | None) -> str:
    """The line that best says what happened: a usage error, the first failure, or the tally."""
    for line in output.splitlines():
        if line.startswith("ERROR: ") and not line.startswith("ERROR: usage:"):
            return line[:220]
        if ": error: " in line:  # argparse names the option on its own line
            return line.split(": error: ", 1)[1][:220]
    for marker in ("message: ", "E   ", "CassetteError: ", "FAILED "):
        for line in output.splitlines():
            if marker in line:
                return line.strip()[:220]
    tail = [line for line in output.splitlines() if line.strip()]
    return (tail[-1] if tail else f"exit {code}")[:220]


def _from_report(path: Path) -> str | None:
    """What the JSON report says: the tally, then each failed check's category and message."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    totals = doc["totals"]
    parts = [f"{totals['passed']} passed, {totals['failed']} failed"]
    for test in doc["tests"]:
        status = test.get("cassette_status")
        if test["outcome"] == "failed":
            message = " ".join((test.get("message") or "").split())
            message = message.split("]: ", 1)[-1][:150]
            parts.append(f"{test['check']}: [{test.get('category')}] {message}")
        elif status == "live":
            parts.append(f"{test['check']}: passed, cassette {status}")
    return "; ".join(parts)


def _traceback(output: str) -> bool:
    frames = [
        line
        for line in output.splitlines()
        if line.lstrip().startswith('File "') and "site-packages" in line
    ]
    return (
        "Traceback (most recent call last)" in output or "INTERNALERROR" in output or bool(frames)
    )


def run_case(case: Case, reference_cassettes: Path | None) -> Result:
    folder = Path(tempfile.mkdtemp(prefix="imagegen-campaign-"))
    server: RawServer | None = None
    try:
        if case.server is not None:
            server = RawServer(case.server(lambda: server))
        for name, text in case.files.items():
            if server is not None:
                text = text.replace("{URL}", server.url)
            (folder / name).write_text(text)
        if case.family == "cassettes" and reference_cassettes is not None:
            shutil.copytree(reference_cassettes, folder / "cassettes")
        if case.prepare is not None:
            case.prepare(folder)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "IMAGEGEN_"))}
        env[KEY_ENV] = KEY
        env.update(case.env)
        # Start-up refusals write no report; the others say in it what each check saw.
        report_option = (
            [] if case.family in ("config", "env", "cli") else [f"--imagegen-report={REPORT}"]
        )
        started = time.monotonic()
        try:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "--imagegen",
                    "-p",
                    "no:cacheprovider",
                    *report_option,
                    *case.args,
                ],
                cwd=folder,
                env=env,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT_S,
            )
            code: int | None = done.returncode
            output = done.stdout + done.stderr
            hang = False
        except subprocess.TimeoutExpired as exc:
            code, hang = None, True
            output = (
                (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
            )
        seconds = time.monotonic() - started
        said = any(phrase in output for phrase in case.said)
        silent = code == 0 and case.expect_fail and not said
        requests = len(server.requests) if server is not None else 0
        if KEY in output:
            raise AssertionError(f"{case.name}: the key reached the output")
        outcome = _from_report(folder / REPORT) or _summary(output, code)
        return Result(case, code, seconds, _traceback(output), hang, silent, outcome, requests)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- families


def config_cases() -> list[Case]:
    def toml(text: str) -> dict[str, str]:
        return {"pyproject.toml": text}

    base = '[tool.imagegen]\n[[tool.imagegen.endpoints]]\nname = "relay"\nbase_url = "http://127.0.0.1:9/v1"\n'
    return [
        Case("config", "invalid TOML", files=toml("[tool.imagegen\nx = 1\n")),
        Case("config", "unknown key", files=toml("[tool.imagegen]\nbudget = 1\n")),
        Case(
            "config",
            "key in file",
            files=toml(base + 'image_model = "gpt-image-1"\napi_key = "sk-abcdefghijkl"\n'),
        ),
        Case(
            "config",
            "negative timeout",
            files=toml(base + 'image_model = "gpt-image-1"\ntimeout_s = -1\n'),
        ),
        Case(
            "config", "chat model as image model", files=toml(base + 'image_model = "gpt-4o-all"\n')
        ),
        Case(
            "config",
            "unknown profile",
            files=toml(base + 'image_model = "gpt-image-1"\nprofile = "nope"\n'),
        ),
        Case(
            "config",
            "bad max_response_mb",
            files=toml(base + 'image_model = "gpt-image-1"\nmax_response_mb = 0\n'),
        ),
        Case("config", "report is a directory", files=toml('[tool.imagegen]\nreport = "."\n')),
    ]


def env_cases() -> list[Case]:
    return [
        Case(
            "env",
            "OPENAI_MODEL chat model",
            env={"OPENAI_MODEL": "gpt-4o-all", "OPENAI_API_KEY": KEY},
        ),
        Case("env", "IMAGEGEN_REPORT a directory", env={"IMAGEGEN_REPORT": "/tmp"}),
        Case("env", "IMAGEGEN_RECORD_MODE bogus", env={"IMAGEGEN_RECORD_MODE": "sometimes"}),
        Case("env", "IMAGEGEN_REFERENCE_LATENCY bogus", env={"IMAGEGEN_REFERENCE_LATENCY": "fast"}),
        Case(
            "env",
            "IMAGEGEN_CASSETTE_DIR a file, mode all",
            env={"IMAGEGEN_CASSETTE_DIR": "blocker/sub", "IMAGEGEN_RECORD_MODE": "all"},
            files={"blocker": "a file"},
        ),
    ]


def cli_cases() -> list[Case]:
    return [
        Case("cli", "--imagegen-budget=-1", args=["--imagegen-budget=-1"]),
        Case("cli", "--imagegen-endpoint unknown", args=["--imagegen-endpoint=nope"]),
        Case("cli", "--imagegen-report=/proc/x.json", args=["--imagegen-report=/proc/x.json"]),
        Case("cli", "--imagegen-record-mode bogus", args=["--imagegen-record-mode=sometimes"]),
        Case("cli", "--imagegen-config missing", args=["--imagegen-config=missing.toml"]),
        Case(
            "cli",
            "read-only cassette dir, mode all",
            args=["--imagegen-record-mode=all"],
            env={"IMAGEGEN_CASSETTE_DIR": "/proc/cassettes"},
        ),
    ]


def _corrupt(how: Callable[[Path], None]) -> Callable[[Path], None]:
    def prepare(folder: Path) -> None:
        (folder / "pyproject.toml").write_text('[tool.imagegen]\ncassette_dir = "cassettes"\n')
        how(folder / SUITE_FOLDER / f"{CASSETTE_CHECK}.yaml")

    return prepare


def _yaml_edit(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    import yaml

    def how(path: Path) -> None:
        document = yaml.safe_load(path.read_text())
        change(document)
        path.write_text(yaml.safe_dump(document, sort_keys=False))

    return how


def _edit_request(document: dict[str, Any]) -> None:
    request = document["interactions"][0]["request"]
    body = json.loads(request["body"])
    body["prompt"] = "an edited prompt"
    request["body"] = json.dumps(body)


def cassette_cases() -> list[Case]:
    def first(document: dict[str, Any]) -> dict[str, Any]:
        return document["interactions"][0]

    corruptions: list[tuple[str, Callable[[Path], None], bool, tuple[str, ...]]] = [
        ("empty file", lambda p: p.write_text(""), True, ()),
        ("binary garbage", lambda p: p.write_bytes(os.urandom(512)), True, ()),
        ("not UTF-8", lambda p: p.write_bytes(b"interactions: [\xff\xfe]"), True, ()),
        (
            "truncated in half",
            lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),
            True,
            (),
        ),
        ("invalid YAML", lambda p: p.write_text("interactions: [\n  - {"), True, ()),
        ("top level is a list", lambda p: p.write_text("- 1\n- 2\n"), True, ()),
        (
            "header count mismatch",
            _yaml_edit(lambda d: d["imagegen"].update(interactions=9)),
            True,
            (),
        ),
        ("unknown format version", _yaml_edit(lambda d: d["imagegen"].update(format=99)), True, ()),
        ("response missing", _yaml_edit(lambda d: first(d).pop("response")), True, ()),
        (
            "status code a string",
            _yaml_edit(lambda d: first(d)["response"]["status"].update(code="OK")),
            True,
            (),
        ),
        ("body missing", _yaml_edit(lambda d: first(d)["response"].pop("body")), True, ()),
        (
            "interactions not a list",
            _yaml_edit(lambda d: d.update(interactions={"a": 1})),
            True,
            (),
        ),
        ("a directory instead", lambda p: (p.unlink(), p.mkdir()), True, ()),
        # A cassette error naming the record modes that add the request, even on loopback.
        ("recorded request edited", _yaml_edit(_edit_request), True, ()),
        ("cassette deleted", lambda p: p.unlink(), False, ()),
    ]
    return [
        Case(
            "cassettes",
            name,
            args=["-k", CASSETTE_CHECK.split(".")[1]],
            prepare=_corrupt(how),
            expect_fail=fails,
            said=said,
        )
        for name, how, fails, said in corruptions
    ]


def _images_answer(url: str | None = None) -> bytes:
    item = {"url": url} if url else {"b64_json": "aGVsbG8="}
    return json.dumps({"created": 1, "data": [item]}).encode()


def garbage_cases() -> list[Case]:
    toml = {"pyproject.toml": _endpoint_toml("{URL}")}

    def fixed(behaviour: Any) -> Callable[[Callable[[], Any]], Any]:
        return lambda server: behaviour

    def closed(conn: Any, request: bytes, stop: Any) -> None:
        conn.close()

    def redirect_loop(conn: Any, request: bytes, stop: Any) -> None:
        target = request.split(b"\r\n", 1)[0].split(b" ")[1].decode()
        head = {"Location": target, "Content-Length": "0", "Connection": "close"}
        conn.sendall(response_head(302, head))

    def url_to(path: str) -> Callable[[Callable[[], Any]], Any]:
        def make(server: Callable[[], Any]) -> Any:
            def generations(conn: Any, request: bytes, stop: Any) -> None:
                target = path if path.startswith("http") else server().url + path
                answer(200, _images_answer(target))(conn, request, stop)

            return routes(
                {"/v1/images/generations": generations, "/stall.png": stall()}, answer(404, b"{}")
            )

        return make

    html = b"<html><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>"
    cases = [
        ("HTML 502", fixed(answer(502, html, "text/html"))),
        ("invalid JSON 200", fixed(answer(200, b'{"created": 1, "data": ['))),
        ("data: []", fixed(answer(200, b'{"created": 1, "data": []}'))),
        ("not an image", fixed(answer(200, _images_answer()))),
        ("connection closed", fixed(closed)),
        (
            "429 Retry-After 100000",
            fixed(
                answer(
                    429,
                    RATE_LIMITED,
                    retry_after="100000",
                )
            ),
        ),
        ("redirect loop", fixed(redirect_loop)),
        ("stall", fixed(stall())),
        ("dribbled body", fixed(dribble(_images_answer() * 50, 0.5))),
        ("50 MB body", fixed(answer(200, b'{"data": "' + b"x" * 50_000_000 + b'"}'))),
        ("URL to a stalling host", url_to("/stall.png")),
        ("URL to the metadata address", url_to("http://169.254.169.254/latest/meta-data/")),
    ]
    return [
        Case("garbage", name, args=["-k", GARBAGE_CHECKS], files=toml, server=make)
        for name, make in cases
    ]


def budget_cases() -> list[Case]:
    def refuse_all(server: Callable[[], Any]) -> Any:
        return answer(500, b"{}")

    return [
        Case(
            "budget",
            "budget_usd = 0, live endpoint",
            args=[
                "--imagegen-budget=0",
                "--imagegen-record-mode=once",
                "-k",
                "separation or schema",
            ],
            files={"pyproject.toml": _endpoint_toml("{URL}")},
            server=refuse_all,
        )
    ]


FAMILIES = {
    "config": config_cases,
    "env": env_cases,
    "cli": cli_cases,
    "cassettes": cassette_cases,
    "garbage": garbage_cases,
    "budget": budget_cases,
}


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def main(argv: list[str]) -> int:
    wanted = argv or list(FAMILIES)
    cases = [case for family in wanted for case in FAMILIES[family]()]
    results: list[Result] = []
    with ThreadPoolExecutor(2) as pool:  # the machine has 2 cores
        results = list(pool.map(lambda case: run_case(case, ROOT / "cassettes"), cases))
    print("| family | input | outcome | traceback | hang | silent | exit | s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        outcome = r.outcome.replace("|", "/")
        if r.case.family == "budget":
            outcome += f" (requests received: {r.requests})"
        print(
            f"| {r.case.family} | {r.case.name} | {outcome} | {_yes(r.traceback)} | "
            f"{_yes(r.hang)} | {_yes(r.silent)} | {r.code} | {r.seconds:.0f} |"
        )
    bad = [r for r in results if r.traceback or r.hang or r.silent]
    print(
        f"\n{len(results)} runs: {sum(r.traceback for r in results)} tracebacks, "
        f"{sum(r.hang for r in results)} hangs, {sum(r.silent for r in results)} silent"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
