"""Benchmark of the main job and of the plugin's start-up cost.

1. Wall time of ``pytest --imagegen`` against the embedded reference endpoint with 2 s of
   latency per image (``IMAGEGEN_REFERENCE_LATENCY=2``), serial and with ``-n 4``.
2. ``pytest --version`` with the plugin and with it disabled (``-p no:imagegen``), and the
   same for a run of one trivial test: what installing pytest-imagegen costs every pytest
   run. (pytest 9 answers ``--version`` before loading entry-point plugins, so that figure
   cannot show a plugin's import cost; the one-test run does.)

Each figure is the median of several runs, in an empty temporary project with no
OPENAI_*/IMAGEGEN_* variable set. Not a test; run it by hand::

    python bench/bench_suite.py [--suite-runs 3] [--version-runs 9] [--latency 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _environment(latency: float | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "IMAGEGEN_"))}
    if latency is not None:
        env["IMAGEGEN_REFERENCE_LATENCY"] = str(latency)
    return env


def _timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-2000:]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite-runs", type=int, default=3, help="runs per suite figure")
    parser.add_argument("--version-runs", type=int, default=9, help="runs per --version figure")
    parser.add_argument("--latency", type=float, default=2.0, help="seconds per image")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="imagegen-bench-") as tmp:
        project = Path(tmp)
        (project / "pyproject.toml").write_text("[tool.pytest.ini_options]\n")
        quiet = ["-m", "pytest", "-q", "-p", "no:cacheprovider"]

        env = _environment(options.latency)
        rows = []
        for label, extra in (("serial", []), ("-n 4", ["-n", "4"])):
            median, last = _median([*quiet, "--imagegen", *extra], options.suite_runs, project, env)
            rows.append((f"pytest --imagegen {label}".strip(), median, last))

        env = _environment(None)
        (project / "test_noop.py").write_text("def test_noop():\n    pass\n")
        startup = []
        for label, args in (
            ("pytest --version", ["-m", "pytest", "--version"]),
            ("pytest (one trivial test)", [*quiet, "test_noop.py"]),
        ):
            with_plugin, _ = _median(args, options.version_runs, project, env)
            without, _ = _median([*args, "-p", "no:imagegen"], options.version_runs, project, env)
            startup.append((label, with_plugin, without))

    print(f"reference endpoint latency: {options.latency:g} s per image")
    for label, median, last in rows:
        print(f"{label:<32} median {median:6.2f} s over {options.suite_runs} run(s)  [{last}]")
    for label, with_plugin, without in startup:
        print(
            f"{label:<32} median {with_plugin:6.3f} s with the plugin, {without:6.3f} s with "
            f"-p no:imagegen (difference {with_plugin - without:+.3f} s, "
            f"{options.version_runs} runs each)"
        )


if __name__ == "__main__":
    main()
