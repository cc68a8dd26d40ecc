"""Replay cost per test, as a user pays it: pytest-imagegen against pytest-recording.

Two generated projects hold K tests each; every test sends one ``images.generate`` for a
1024x1024 PNG (about 1.7 MB, like a real answer) through an ``openai.OpenAI``:

* ``imagegen``: the test uses the ``imagegen_client`` fixture (an endpoint named ``bench``
  in ``[tool.imagegen]``);
* ``pytest-recording``: the test is marked ``@pytest.mark.vcr`` and gets its client from
  a function-scoped fixture (``openai.OpenAI(...)``, closed after the test), which is how
  the pytest-recording README sets a test up.

Both record their cassettes once from the same loopback server, which is then stopped: a
replay that tried to go live would fail. The replays then run as ``pytest`` subprocesses,
interleaved (imagegen, recording, recording, imagegen, ...). Per test we report what
pytest itself measures (the durations of setup + call + teardown, the figures of
``--durations``), averaged over every test of every round, and the whole run's wall time
divided by K (start-up and collection included). Nothing is subtracted.

K = 100 and K = 1000 show whether the cost per test grows with the number of tests (and
so of cassettes and interactions in the folder). Every run keeps its compiled bytecode in
one temporary ``PYTHONPYCACHEPREFIX`` (warmed by the recording runs), as an installed
package has it; ``--no-bytecode-cache`` compiles every module at every start instead
(``PYTHONDONTWRITEBYTECODE=1``). Also printed: cassette bytes per
interaction, and the record mode ``none`` run of ``pytest --imagegen`` (the shipped suite
replayed from this repository's ``cassettes/``) against its ``--collect-only``.

Run:  python bench/bench_cassettes.py [--k 100 1000] [--rounds 3] [--baseline-max-k 1000]
      [--main-job-rounds 3] [--no-bytecode-cache]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
API_KEY = "sk-bench-0123456789abcdefghijklmnop"
IMAGES = 4  # distinct PNGs the server rotates through (making 1000 would take minutes)
TARGET_MS = 5.0
TARGET_RATIO = 0.1
MAIN_JOB_RATIO = 1.5

OURS = "imagegen"
THEIRS = "pytest-recording"


def photo_like_png(seed: str, side: int = 1024) -> bytes:
    """A PNG that compresses like a photo: smooth colour plus grain (~1.7 MB)."""
    rng = random.Random(seed)
    base = Image.new("RGB", (8, 8))
    base.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(64)])
    smooth = base.resize((side, side), Image.Resampling.BICUBIC)
    grain = Image.merge(
        "RGB", [Image.effect_noise((side, side), 14 + 10 * band) for band in range(3)]
    )
    buf = io.BytesIO()
    Image.blend(smooth, grain, 0.15).save(buf, format="PNG")
    return buf.getvalue()


def start_server(images: list[bytes]) -> ThreadingHTTPServer:
    """A fake upstream answering every image request with one of ``images``."""
    encoded = [base64.b64encode(image).decode() for image in images]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            answer = {
                "created": 1_700_000_000,
                "data": [{"b64_json": encoded[hash(body["prompt"]) % len(encoded)]}],
                "usage": {"input_tokens": 9, "output_tokens": 4160, "total_tokens": 4169},
            }
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# -- the generated projects -------------------------------------------------------------------

# Loaded with ``-p bench_timings``: writes pytest's own per-phase durations of every test.
TIMINGS_PLUGIN = """
import json
import os
import time

import pytest

_phases = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    # CPU time of the process over the test's three phases: what the test costs whatever
    # else the machine is doing (wall time is what a user waits, and depends on that).
    start = time.process_time()
    try:
        return (yield)
    finally:
        _phases.setdefault(item.nodeid, {})["cpu"] = time.process_time() - start


def pytest_runtest_logreport(report):
    _phases.setdefault(report.nodeid, {})[report.when] = report.duration
    if report.failed:
        _phases[report.nodeid]["failed"] = True


def pytest_sessionfinish(session):
    with open(os.environ["BENCH_TIMINGS"], "w", encoding="utf-8") as handle:
        json.dump(_phases, handle)
"""

PROMPT = "test image {n}: a lighthouse at dusk, variant {n}"

OURS_TEST = """
import pytest


@pytest.mark.parametrize("n", range({k}))
def test_generate(imagegen_client, n):
    result = imagegen_client.images.generate(
        model="gpt-image-1", prompt=f"{prompt}", size="1024x1024"
    )
    assert result.data[0].b64_json
"""

THEIRS_TEST = """
import os

import openai
import pytest


@pytest.fixture(scope="module")
def vcr_config():
    return {{"filter_headers": ["authorization"]}}


@pytest.fixture
def client():
    client = openai.OpenAI(
        base_url=os.environ["BENCH_BASE_URL"], api_key=os.environ["BENCH_KEY"], max_retries=0
    )
    yield client
    client.close()


@pytest.mark.vcr
@pytest.mark.parametrize("n", range({k}))
def test_generate(client, n):
    result = client.images.generate(model="gpt-image-1", prompt=f"{prompt}", size="1024x1024")
    assert result.data[0].b64_json
"""


def make_project(root: Path, kind: str, k: int, base_url: str) -> Path:
    project = root / f"{kind}-{k}"
    (project / "tests").mkdir(parents=True)
    (project / "bench_timings.py").write_text(TIMINGS_PLUGIN)
    if kind == OURS:
        (project / "pyproject.toml").write_text(
            textwrap.dedent(
                f"""
                [tool.pytest.ini_options]
                testpaths = ["tests"]

                [tool.imagegen]
                cassette_dir = "cassettes"

                [[tool.imagegen.endpoints]]
                name = "bench"
                base_url = "{base_url}"
                api_key_env = "BENCH_KEY"
                image_model = "gpt-image-1"
                max_retries = 0
                """
            )
        )
        test = OURS_TEST
    else:
        (project / "pyproject.toml").write_text(
            '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n'
        )
        test = THEIRS_TEST
    (project / "tests" / "test_bench.py").write_text(
        textwrap.dedent(test.format(k=k, prompt=PROMPT))
    )
    return project


def pytest_args(kind: str, record: bool) -> list[str]:
    args = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "bench_timings"]
    if kind == OURS:
        args += ["-p", "no:recording"]
        # Recording sends K "billable" requests to the fake server: lift the spend cap.
        args += ["--imagegen-record-mode=once", "--imagegen-budget=100000"] if record else []
    else:
        args += ["-p", "no:imagegen", "-p", "no:xdist"]
        args += ["--record-mode=once"] if record else ["--record-mode=none"]
    return args


#: Where the runs keep compiled bytecode (None: they compile every module at every start).
PYCACHE: list[str | None] = [None]


def clean_environment() -> dict[str, str]:
    """The environment of every measured run: no OPENAI_*/IMAGEGEN_* variable, bytecode
    cached outside the projects and the repository (or not at all)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "IMAGEGEN_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTHONPYCACHEPREFIX", None)
    if PYCACHE[0] is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env["PYTHONPYCACHEPREFIX"] = PYCACHE[0]
    return env


def environment(base_url: str, timings: Path) -> dict[str, str]:
    env = clean_environment()
    env.update(
        BENCH_KEY=API_KEY,
        BENCH_BASE_URL=base_url,
        BENCH_TIMINGS=str(timings),
        PYTHONPATH=".",
    )
    return env


def run(project: Path, kind: str, k: int, base_url: str, *, record: bool) -> dict[str, Any]:
    """One pytest run of ``project``: wall time and pytest's per-test durations."""
    timings = project / "timings.json"
    start = time.perf_counter()
    done = subprocess.run(
        pytest_args(kind, record),
        cwd=project,
        env=environment(base_url, timings),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    phases = json.loads(timings.read_text())
    failed = [nodeid for nodeid, p in phases.items() if p.get("failed")]
    if done.returncode != 0 or failed or len(phases) != k:
        tail = (done.stdout + done.stderr)[-3000:]
        raise SystemExit(f"{kind} K={k} ({'record' if record else 'replay'}) failed:\n{tail}")
    per_test = [
        p.get("setup", 0) + p.get("call", 0) + p.get("teardown", 0) for p in phases.values()
    ]
    return {
        "wall_s": wall,
        "per_test_s": per_test,
        "setup_s": [p.get("setup", 0) for p in phases.values()],
        "call_s": [p.get("call", 0) for p in phases.values()],
        "teardown_s": [p.get("teardown", 0) for p in phases.values()],
        "cpu_s": [p.get("cpu", 0) for p in phases.values()],
    }


def cassette_bytes(project: Path) -> int:
    return sum(p.stat().st_size for p in project.rglob("*.yaml") if p.is_file())


# -- the main job ---------------------------------------------------------------------------


def main_job(rounds: int) -> tuple[list[float], list[float]]:
    """Wall times of ``pytest --imagegen`` and ``pytest --imagegen --collect-only`` in this
    repository (cassettes replayed from ``cassettes/``), interleaved, after one run of each
    that is not counted (it fills the bytecode cache)."""
    env = clean_environment()
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--imagegen"]
    full: list[float] = []
    collect: list[float] = []
    for extra in ([], ["--collect-only"]):
        subprocess.run([*base, *extra], cwd=REPO, env=env, capture_output=True, check=False)
    for n in range(rounds):
        order = [(full, []), (collect, ["--collect-only"])]
        for times, extra in order if n % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            done = subprocess.run(
                [*base, *extra], cwd=REPO, env=env, capture_output=True, text=True, check=False
            )
            times.append(time.perf_counter() - start)
            if done.returncode != 0:
                raise SystemExit(f"pytest --imagegen {' '.join(extra)} failed:\n{done.stdout}")
    return full, collect


# -- output ---------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{1000 * seconds:8.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[100, 1000], help="tests per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved replays per K")
    parser.add_argument(
        "--baseline-max-k",
        type=int,
        default=1000,
        help="largest K also run with pytest-recording (its cassettes take 2.3 MB a test)",
    )
    parser.add_argument("--main-job-rounds", type=int, default=3, help="0 to skip")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="compile every module at every start (PYTHONDONTWRITEBYTECODE=1)",
    )
    args = parser.parse_args()
    load_before = os.getloadavg()

    print(f"making {IMAGES} photo-like 1024x1024 PNGs ...", flush=True)
    images = [photo_like_png(f"image {n}") for n in range(IMAGES)]
    mean_png = statistics.mean(len(image) for image in images)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="imagegen-bench-") as tmp:
        PYCACHE[0] = None if args.no_bytecode_cache else str(Path(tmp) / "pycache")
        for k in args.k:
            kinds = [OURS] + ([THEIRS] if k <= args.baseline_max_k else [])
            server = start_server(images)
            base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
            projects = {kind: make_project(Path(tmp), kind, k, base_url) for kind in kinds}
            recorded = {}
            for kind in kinds:
                print(f"K={k}: recording {kind} ...", flush=True)
                recorded[kind] = run(projects[kind], kind, k, base_url, record=True)
            # Nothing may go live from here on: a request that was not replayed fails.
            server.shutdown()
            server.server_close()
            results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
            for n in range(args.rounds):
                for kind in kinds if n % 2 == 0 else kinds[::-1]:
                    print(f"K={k}: replay round {n + 1} {kind} ...", flush=True)
                    results[kind].append(run(projects[kind], kind, k, base_url, record=False))
            for kind in kinds:
                runs = results[kind]
                per_test = [t for r in runs for t in r["per_test_s"]]
                rows.append(
                    {
                        "kind": kind,
                        "k": k,
                        "bytes": cassette_bytes(projects[kind]) / k,
                        "record_s": recorded[kind]["wall_s"],
                        "wall_s": statistics.median(r["wall_s"] for r in runs),
                        "mean": statistics.mean(per_test),
                        "median": statistics.median(per_test),
                        "p95": statistics.quantiles(per_test, n=20)[-1],
                        "setup": statistics.mean(t for r in runs for t in r["setup_s"]),
                        "call": statistics.mean(t for r in runs for t in r["call_s"]),
                        "teardown": statistics.mean(t for r in runs for t in r["teardown_s"]),
                        "cpu": statistics.mean(t for r in runs for t in r["cpu_s"]),
                        "round_means": [statistics.mean(r["per_test_s"]) for r in runs],
                    }
                )
            for project in projects.values():
                shutil.rmtree(project, ignore_errors=True)
        main = main_job(args.main_job_rounds) if args.main_job_rounds else None

    load_after = os.getloadavg()
    print()
    print(
        "load average (1, 5, 15 min): "
        f"{', '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{', '.join(f'{x:.2f}' for x in load_after)} after; bytecode "
        f"{'compiled at every start' if args.no_bytecode_cache else 'cached'}"
    )
    print(
        f"Replayed images.generate tests, one 1024x1024 PNG answer each (mean PNG "
        f"{mean_png / 1e6:.2f} MB); {args.rounds} interleaved replay rounds per K. Per test: "
        "pytest's setup + call + teardown durations, mean over all tests of all rounds (ms); "
        "cpu: the process's CPU time over those phases; wall/K: the whole run's wall time "
        "(start-up and collection included) per test."
    )
    header = (
        f"{'recorder':<18} {'K':>5} {'bytes/test':>11} {'mean':>8} {'median':>8} {'p95':>8} "
        f"{'setup':>8} {'call':>8} {'teardown':>8} {'cpu':>8} {'wall/K':>8} {'wall (s)':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['kind']:<18} {row['k']:>5} {row['bytes']:>11,.0f} {ms(row['mean'])} "
            f"{ms(row['median'])} {ms(row['p95'])} {ms(row['setup'])} {ms(row['call'])} "
            f"{ms(row['teardown'])} {ms(row['cpu'])} {ms(row['wall_s'] / row['k'])} "
            f"{row['wall_s']:>9.2f}"
        )
    print()
    by = {(row["kind"], row["k"]): row for row in rows}
    for k in args.k:
        ours, theirs = by.get((OURS, k)), by.get((THEIRS, k))
        if ours is None:
            continue
        verdict = "ok" if ours["mean"] * 1000 <= TARGET_MS else "OVER"
        line = (
            f"K={k}: imagegen {ours['mean'] * 1000:.2f} ms per test (target <= {TARGET_MS:g} ms: "
            f"{verdict}); round means " + ", ".join(f"{m * 1000:.2f}" for m in ours["round_means"])
        )
        if theirs is not None:
            ratio = ours["mean"] / theirs["mean"]
            line += (
                f"; pytest-recording {theirs['mean'] * 1000:.2f} ms, ratio {ratio:.3f} "
                f"(target <= {TARGET_RATIO:g}: {'ok' if ratio <= TARGET_RATIO else 'OVER'})"
            )
        print(line)
    ks = sorted(k for k in args.k if (OURS, k) in by)
    if len(ks) > 1:
        small, large = by[(OURS, ks[0])], by[(OURS, ks[-1])]
        print(
            f"growth: imagegen per test at K={ks[-1]} / at K={ks[0]} = "
            f"{large['mean'] / small['mean']:.2f}"
        )
    if main is not None:
        full, collect = main
        ratio = statistics.median(full) / statistics.median(collect)
        print(
            f"main job: pytest --imagegen median {statistics.median(full):.2f} s, --collect-only "
            f"{statistics.median(collect):.2f} s ({len(full)} interleaved runs each): ratio "
            f"{ratio:.2f} (target <= {MAIN_JOB_RATIO:g}: "
            f"{'ok' if ratio <= MAIN_JOB_RATIO else 'OVER'})"
        )


if __name__ == "__main__":
    main()
