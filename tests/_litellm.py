"""A real LiteLLM proxy for the tests: its own virtualenv, its config, its process.

The virtualenv holds ``litellm[proxy]`` at :data:`VERSION` and nothing of this project. It is
built once and reused: at ``$IMAGEGEN_LITELLM_VENV`` when set, else under the user's cache
folder. A build happens in a temporary sibling folder that is renamed into place only when
complete, so an interrupted or concurrent build never leaves a half-installed virtualenv
where the next run would take it for a good one. Scripts in a renamed virtualenv keep their
old path in their first line, so the proxy is started with the virtualenv's ``python -m``.

The proxy runs without a database, bound to 127.0.0.1 on a free port, in a process group of
its own that is killed as a whole; readiness is polled on ``/health/liveliness`` (plain
``/health`` would call every model upstream and fill the upstream's request log).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import yaml

#: The LiteLLM release the tests run (1.109.x does not install: it needs a certifi newer than
#: any published).
VERSION = "1.106.2"
REQUIREMENT = f"litellm[proxy]=={VERSION}"
#: Environment variable naming the virtualenv folder to use (built there when missing).
VENV_ENV = "IMAGEGEN_LITELLM_VENV"
#: Marks a finished build; its text is the requirement installed.
_READY = "imagegen-ready"

#: Upper bounds, not expectations: a cold 2-core machine imports LiteLLM in about a minute.
PIP_TIMEOUT_S = 1800.0
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0


class LiteLLMUnavailable(Exception):
    """``pip`` could not install :data:`REQUIREMENT` (the message holds pip's last lines)."""


def venv_dir() -> Path:
    """Where the LiteLLM virtualenv lives (``$IMAGEGEN_LITELLM_VENV`` or the cache folder)."""
    configured = os.environ.get(VENV_ENV)
    if configured:
        return Path(configured).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "pytest-imagegen" / f"litellm-{VERSION}"


def _python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _is_ready(venv: Path) -> bool:
    marker = venv / _READY
    return marker.is_file() and marker.read_text().strip() == REQUIREMENT


def ensure_venv(venv: Path | None = None) -> Path:
    """The python of a virtualenv with :data:`REQUIREMENT` installed, building it if needed.

    Raises :class:`LiteLLMUnavailable` when pip fails to install it.
    """
    venv = venv or venv_dir()
    if _is_ready(venv):
        return _python(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    building = venv.parent / f".{venv.name}.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(building)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        pip = subprocess.run(
            [str(_python(building)), "-m", "pip", "install", "--quiet", REQUIREMENT],
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_S,
        )
        if pip.returncode != 0:
            said = "\n".join((pip.stderr or pip.stdout).strip().splitlines()[-15:])
            raise LiteLLMUnavailable(
                f"pip install {REQUIREMENT!r} failed (exit {pip.returncode}):\n{said}"
            )
        (building / _READY).write_text(REQUIREMENT + "\n")
        if venv.exists() and not _is_ready(venv):
            shutil.rmtree(venv)  # a build from before the ready marker, or of another release
        try:
            os.rename(building, venv)
        except OSError:
            if not _is_ready(venv):  # not another process's finished build: a real error
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return _python(venv)


def free_port() -> int:
    """A TCP port nobody listens on at 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proxy_config(
    *,
    upstream_url: str,
    upstream_key: str,
    master_key: str,
    drop_params: bool,
    image_model: str = "gpt-image-1",
    chat_model: str = "gpt-4o-mini",
) -> dict[str, Any]:
    """A LiteLLM proxy config: both models mapped to the upstream, no database.

    Cooldowns are off: by default a single 404 (the suite's chat call with an image model)
    puts the only deployment of a model into a 5 s cooldown, and the suite's next image
    request then gets a 429 "No deployments available": a result that would depend on how
    fast the suite runs.
    """
    models = [
        {
            "model_name": name,
            "litellm_params": {
                "model": f"openai/{name}",
                "api_base": upstream_url,
                "api_key": upstream_key,
            },
        }
        for name in (image_model, chat_model)
    ]
    return {
        "model_list": models,
        "litellm_settings": {"drop_params": drop_params},
        "router_settings": {"disable_cooldowns": True},
        "general_settings": {"master_key": master_key},
    }


@dataclass
class Proxy:
    """A running LiteLLM proxy."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text("utf-8", "replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LITELLM_"))}
    env.pop("PYTHONPATH", None)
    env.update(
        # The model price map ships with the package: no download at start-up.
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        # Anything LiteLLM would send beyond loopback goes to a closed local port instead.
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        ALL_PROXY="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    return env


@contextlib.contextmanager
def running_proxy(python: Path, config: Mapping[str, Any], folder: Path) -> Iterator[Proxy]:
    """Start LiteLLM with ``config`` on 127.0.0.1, wait until it answers, stop it after.

    ``folder`` receives the config file and the proxy's log.
    """
    config_path = folder / "litellm-config.yaml"
    config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    log = folder / "litellm.log"
    port = free_port()
    command = [
        str(python),
        "-m",
        "litellm.proxy.proxy_cli",
        "--config",
        str(config_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_environment(),
            cwd=folder,
            start_new_session=True,  # its own process group, killed as a whole
        )
    proxy = Proxy(process, port, log)
    try:
        _wait_ready(proxy)
        yield proxy
    finally:
        _stop(process)


def _wait_ready(proxy: Proxy) -> None:
    url = f"http://127.0.0.1:{proxy.port}/health/liveliness"
    give_up = time.monotonic() + START_TIMEOUT_S
    with httpx2.Client(timeout=5.0) as client:
        while True:
            code = proxy.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"LiteLLM exited with code {code} before answering {url}; its log "
                    f"ends:\n{proxy.log_tail()}"
                )
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            if time.monotonic() > give_up:
                raise RuntimeError(
                    f"LiteLLM did not answer {url} within {START_TIMEOUT_S:g} s; its log "
                    f"ends:\n{proxy.log_tail()}"
                )
            time.sleep(0.5)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the proxy's process group, SIGKILL if it has not exited in time."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_TIMEOUT_S)
    # Whatever is left of the group (workers the leader did not take down, or the leader
    # itself when SIGTERM was not enough) goes with SIGKILL.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=STOP_TIMEOUT_S)
