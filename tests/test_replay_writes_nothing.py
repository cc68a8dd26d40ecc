"""A replay in record mode ``none`` writes nothing: no cassette, lock, temp file, rename or
budget file, in the project or in the temp folder.

Each replay runs in a fresh pytest process with a probe plugin that wraps every call that
writes to the file system (``open`` for writing, ``os.open`` with a write flag, rename,
replace, mkdir, unlink, ...) and notes those made while a test runs (setup, call and
teardown). The project folder and the process's temp folder are also listed, with inode,
size and modification time of every entry, before and after.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_imagegen.cassettes import cassette_path
from pytest_imagegen.reference import ReferenceServer

REPO = Path(__file__).resolve().parent.parent
RUN_TIMEOUT_S = 180

PROBE = """
import builtins
import io
import json
import os

import pytest

_saved = []
_writes = []
_running = [False]

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _wrap(module, name, writes):
    original = getattr(module, name)
    _saved.append((module, name, original))

    def probe(*args, **kwargs):
        # /dev/null is opened for writing by the standard library (platform, subprocess).
        if _running[0] and writes(*args, **kwargs) and args and args[0] != os.devnull:
            _writes.append(f"{name}({args[0] if args else ''!s})")
        return original(*args, **kwargs)

    setattr(module, name, probe)


def _always(*args, **kwargs):
    return True


def _open_flags(path, flags, *args, **kwargs):
    return bool(flags & _WRITE_FLAGS)


def _open_mode(file, mode="r", *args, **kwargs):
    return any(c in mode for c in "wax+")


def pytest_configure(config):
    for name in ("replace", "rename", "renames", "mkdir", "makedirs", "unlink", "remove",
                 "rmdir", "link", "symlink", "truncate", "utime", "chmod"):
        _wrap(os, name, _always)
    _wrap(os, "open", _open_flags)
    _wrap(builtins, "open", _open_mode)
    _wrap(io, "open", _open_mode)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _running[0] = True
    try:
        return (yield)
    finally:
        _running[0] = False


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    # Before xdist's own hook tells the controller this worker is done (it may be ended
    # right after). One file per process: with xdist, the workers run the tests.
    for module, name, original in reversed(_saved):
        setattr(module, name, original)
    name = os.path.join(os.environ["PROBE_OUT"], f"writes-{os.getpid()}.json")
    with open(name, "w", encoding="utf-8") as handle:
        json.dump(_writes, handle)
"""


def _listing(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``folder``: (inode, size, mtime in ns)."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        entries[str(path.relative_to(folder))] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return entries


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder, with the probe in a folder of its own (on PYTHONPATH)."""
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "write_probe.py").write_text(PROBE)
    (tmp_path / "tmp").mkdir()
    project = tmp_path / "project"
    project.mkdir()
    return project


def _run(project: Path, *args: str, probe: bool = True) -> tuple[subprocess.CompletedProcess, list]:
    root = project.parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "IMAGEGEN_"))}
    env.update(
        PYTHONPATH=str(root / "probe"),
        PROBE_OUT=str(root / "writes"),
        TMPDIR=str(root / "tmp"),
        # Python's own bytecode cache is not the plugin's doing; keep it out of the picture.
        PYTHONDONTWRITEBYTECODE="1",
        LOCAL_KEY=os.environ.get("LOCAL_KEY", ""),
    )
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    if probe:
        command += ["-p", "write_probe"]
    shutil.rmtree(root / "writes", ignore_errors=True)
    (root / "writes").mkdir()
    done = subprocess.run(
        command,
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    writes = [w for f in (root / "writes").glob("*.json") for w in json.loads(f.read_text())]
    if probe:
        processes = 3 if "-n" in args else 1  # the controller and two workers
        assert len(list((root / "writes").glob("*.json"))) == processes, "a probe did not run"
    return done, writes


def _assert_replay_writes_nothing(project: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the replay; nothing written while tests ran, the project and (in a single
    process: xdist makes the workers' temp folders itself) the temp folder unchanged."""
    tmp = project.parent / "tmp"
    serial = "-n" not in args
    before = (_listing(project), _listing(tmp) if serial else None)
    done, writes = _run(project, *args)
    assert writes == [], writes
    assert (_listing(project), _listing(tmp) if serial else None) == before
    return done


def test_the_shipped_suite_replayed_writes_nothing(project: Path) -> None:
    """``pytest --imagegen`` from this repository's cassettes (the reference endpoint, a
    loopback one: fault checks go live to it, recorded checks replay)."""
    shutil.copytree(
        REPO / "cassettes",
        project / "cassettes",
        ignore=shutil.ignore_patterns("*.lock", ".*.tmp"),
    )
    (project / "pyproject.toml").write_text('[tool.imagegen]\ncassette_dir = "cassettes"\n')
    done = _assert_replay_writes_nothing(project, "--imagegen", "-q")
    assert re.fullmatch(r"\d+ passed in .*", done.stdout.strip().splitlines()[-1]), done.stdout


@pytest.fixture
def local(monkeypatch: pytest.MonkeyPatch) -> Iterator[ReferenceServer]:
    with ReferenceServer() as server:
        monkeypatch.setenv("LOCAL_KEY", server.api_key)
        yield server


APP_TEST = """
def test_generate(imagegen_client, imagegen_endpoint):
    image = imagegen_client.images.generate(
        model=imagegen_endpoint.image_model, prompt="a cat", quality="low", size="1024x1024"
    )
    assert image.data[0].b64_json
"""


@pytest.mark.parametrize(
    "workers", [[], pytest.param(["-n", "2"], marks=pytest.mark.slow)], ids=["serial", "xdist"]
)
def test_billed_endpoints_replayed_write_nothing(
    project: Path, local: ReferenceServer, workers: list[str]
) -> None:
    """A billed loopback endpoint (a local gateway: its requests could go live, so each one
    is checked against the budget, which xdist workers share in a file) and a remote one,
    replayed through ``imagegen_client``."""
    (project / "pyproject.toml").write_text(
        f"""
[tool.imagegen]
cassette_dir = "cassettes"

[[tool.imagegen.endpoints]]
name = "local"
base_url = "{local.base_url}"
api_key_env = "LOCAL_KEY"
image_model = "gpt-image-1"

[[tool.imagegen.endpoints]]
name = "faraway"
base_url = "https://images.invalid/v1"
image_model = "gpt-image-1"
"""
    )
    (project / "test_app.py").write_text(APP_TEST)
    _run(project, "--imagegen-record-mode=once", "--imagegen-endpoint=local", probe=False)
    recorded = cassette_path(project / "cassettes", "local", "test_app.py", "test_generate[local]")
    copy = cassette_path(project / "cassettes", "faraway", "test_app.py", "test_generate[faraway]")
    copy.parent.mkdir(parents=True)
    copy.write_bytes(recorded.read_bytes())
    for lock in (project / "cassettes").rglob("*.lock"):
        lock.unlink()  # left by the recording run; not what is looked at here
    served = len(local.log)

    done = _assert_replay_writes_nothing(project, "-q", *workers)
    assert "2 passed" in done.stdout, done.stdout[-2000:]
    assert len(local.log) == served  # both replayed: nothing went live
