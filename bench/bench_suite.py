"""Benchmark of the live main job under pytest-xdist, and of the plugin's start-up cost.

1. ``pytest --imagegen`` against the embedded reference endpoint with 2 s of latency per
   image (``IMAGEGEN_REFERENCE_LATENCY=2``, a fresh empty cassette folder so that every
   check goes live), serial, ``-n 2`` and ``-n 4``, interleaved. For N workers the *ideal*
   parallel time is the start-up (the median wall time of ``pytest --imagegen
   --collect-only``) plus the shortest schedule the serial run's tests allow on N workers:
   ``max(sum of the test durations / N, longest test)``, durations being pytest's setup +
   call + teardown of each test in the serial runs (medians per test). Targets: ``-n 4``
   within 1.3 times its ideal, and ``-n 2`` never slower than serial.
2. ``pytest --version`` with the plugin and with it disabled (``-p no:imagegen``), and the
   same for a run of one trivial test: what installing pytest-imagegen costs every pytest
   run. (pytest 9 answers ``--version`` before loading entry-point plugins, so that figure
   cannot show a plugin's import cost; the one-test run does.)

Each figure is the median of several runs, in an empty temporary project with no
OPENAI_*/IMAGEGEN_* variable set, compiled bytecode kept in a temporary
``PYTHONPYCACHEPREFIX`` (filled by a first, uncounted ``--collect-only`` run). Not a
test; run it by hand::

    python bench/bench_suite.py [--suite-runs 3] [--version-runs 9] [--latency 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Loaded with ``-p bench_durations``: pytest's durations of each test, from the controller
# (xdist sends the workers' reports there).
DURATIONS_PLUGIN = """
import json
import os

_durations = {}


def pytest_runtest_logreport(report):
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration


def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput"):
        return
    with open(os.environ["BENCH_DURATIONS"], "w", encoding="utf-8") as handle:
        json.dump(_durations, handle)
"""

SERIAL = "serial"
TARGET_N4 = 1.3


def _environment(project: Path, latency: float | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "IMAGEGEN_"))}
    # Compiled bytecode kept (outside the project and the repository), as an installed
    # package has it; without it every start compiles every module again.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(project / "pycache")
    if latency is not None:
        env["IMAGEGEN_REFERENCE_LATENCY"] = str(latency)
    env["PYTHONPATH"] = str(project / "plugins")
    env["BENCH_DURATIONS"] = str(project / "durations.json")
    return env


def _timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-3000:]
        raise SystemExit(f"{' '.join(args)} failed with exit code {done.returncode}:\n{tail}")
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    return elapsed, last


def _median(args: list[str], runs: int, cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    times = []
    last = ""
    for _ in range(runs):
        elapsed, last = _timed(args, cwd, env)
        times.append(elapsed)
    return statistics.median(times), last


def _suite(options: argparse.Namespace, project: Path) -> None:
    env = _environment(project, options.latency)
    # No cassette anywhere: every check goes live to the reference server.
    (project / "pyproject.toml").write_text(
        '[tool.pytest.ini_options]\n\n[tool.imagegen]\ncassette_dir = "no-cassettes"\n'
    )
    base = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "bench_durations"]
    base += ["--imagegen"]
    setups = {SERIAL: [], "-n 2": ["-n", "2"], "-n 4": ["-n", "4"]}
    walls: dict[str, list[float]] = {label: [] for label in setups}
    lasts: dict[str, str] = {}
    serial_durations: list[dict[str, float]] = []
    collect: list[float] = []
    labels = list(setups)
    _timed([*base, "--collect-only"], project, env)  # fills the bytecode cache
    load_start = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    for run in range(options.suite_runs):
        order = labels if run % 2 == 0 else labels[::-1]
        for label in order:
            elapsed, lasts[label] = _timed([*base, *setups[label]], project, env)
            walls[label].append(elapsed)
            if label == SERIAL:
                serial_durations.append(json.loads((project / "durations.json").read_text()))
        elapsed, _ = _timed([*base, "--collect-only"], project, env)
        collect.append(elapsed)

    startup = statistics.median(collect)
    print("load average (1, 5, 15 min) at the start: " + load_start)
    per_test = {
        nodeid: statistics.median(d.get(nodeid, 0.0) for d in serial_durations)
        for nodeid in serial_durations[0]
    }
    total, longest = sum(per_test.values()), max(per_test.values())
    serial = statistics.median(walls[SERIAL])
    print(
        f"reference endpoint latency: {options.latency:g} s per image; "
        f"{len(per_test)} tests; {options.suite_runs} interleaved run(s) per figure"
    )
    print(
        f"start-up (pytest --imagegen --collect-only): median {startup:.2f} s; serial test "
        f"durations: sum {total:.2f} s, longest {longest:.2f} s "
        f"({max(per_test, key=per_test.__getitem__)})"
    )
    for label, times in walls.items():
        workers = 1 if label == SERIAL else int(label.split()[-1])
        ideal = startup + max(total / workers, longest)
        median = statistics.median(times)
        print(
            f"pytest --imagegen {label:<7} median {median:6.2f} s (runs: "
            f"{', '.join(f'{t:.2f}' for t in times)}); ideal {ideal:6.2f} s; "
            f"ratio {median / ideal:.2f}; vs serial {median / serial:.2f}  [{lasts[label]}]"
        )
    load_end = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average (1, 5, 15 min) at the end: {load_end}")
    n4 = statistics.median(walls["-n 4"]) / (startup + max(total / 4, longest))
    n2 = statistics.median(walls["-n 2"]) / serial
    verdict_n4 = "ok" if n4 <= TARGET_N4 else "OVER"
    print(
        f"-n 4: {n4:.2f} of ideal (target <= {TARGET_N4:g}: {verdict_n4}); "
        f"-n 2: {n2:.2f} of serial (target <= 1: {'ok' if n2 <= 1 else 'OVER'})"
    )


def _startup(options: argparse.Namespace, project: Path) -> None:
    env = _environment(project, None)
    quiet = ["-m", "pytest", "-q", "-p", "no:cacheprovider"]
    (project / "test_noop.py").write_text("def test_noop():\n    pass\n")
    for label, args in (
        ("pytest --version", ["-m", "pytest", "--version"]),
        ("pytest (one trivial test)", [*quiet, "test_noop.py"]),
    ):
        with_plugin, _ = _median(args, options.version_runs, project, env)
        without, _ = _median([*args, "-p", "no:imagegen"], options.version_runs, project, env)
        print(
            f"{label:<32} median {with_plugin:6.3f} s with the plugin, {without:6.3f} s with "
            f"-p no:imagegen (difference {with_plugin - without:+.3f} s, "
            f"{options.version_runs} runs each)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite-runs", type=int, default=3, help="runs per suite figure")
    parser.add_argument("--version-runs", type=int, default=9, help="runs per start-up figure")
    parser.add_argument("--latency", type=float, default=2.0, help="seconds per image")
    parser.add_argument("--skip-startup", action="store_true", help="only the suite figures")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="imagegen-bench-") as tmp:
        project = Path(tmp)
        (project / "plugins").mkdir()
        (project / "plugins" / "bench_durations.py").write_text(DURATIONS_PLUGIN)
        _suite(options, project)
        if not options.skip_startup:
            _startup(options, project)


if __name__ == "__main__":
    main()
