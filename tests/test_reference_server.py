"""The reference server as a server: lifecycle, concurrency, request log, configuration, CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import openai
import pytest
from _support import HTTP, REFERENCE_KEY

from pytest_imagegen.reference import (
    DEFECTS,
    FAULTS,
    ReferenceServer,
    ReferenceServerError,
    mask_key,
    parse_latency,
)
from pytest_imagegen.reference.app import ReferenceApp

KEY = REFERENCE_KEY


BODY = {"model": "gpt-image-1", "prompt": "a red fox", "size": "1024x1024", "quality": "low"}


def post(server, body=BODY, *, key=KEY, timeout=10.0, headers=None, path="/images/generations"):
    head = {"Authorization": f"Bearer {key}"} if key is not None else {}
    head.update(headers or {})
    return HTTP.post(f"{server.base_url}{path}", json=body, headers=head, timeout=timeout)


def reference_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("imagegen-reference")]


# -- lifecycle --------------------------------------------------------------------------


def test_starts_fast_and_answers_at_once():
    server = ReferenceServer(api_keys=[KEY])
    started = time.perf_counter()
    server.start()
    try:
        ready = time.perf_counter() - started
        response = post(server)
        assert response.status_code == 200, response.text
        # "Well under a second": generous for a loaded 2-core machine, far above the
        # few tens of milliseconds measured by bench/bench_reference.py.
        assert ready < 0.5, f"start() took {ready:.3f} s"
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    finally:
        server.stop()


def test_stop_releases_port_threads_and_is_idempotent():
    before = set(reference_threads())
    server = ReferenceServer(api_keys=[KEY]).start()
    port = server.port
    assert post(server).status_code == 200
    server.stop()
    server.stop()
    assert not server.running
    assert set(reference_threads()) <= before
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.base_url


def test_stop_with_a_stalled_request_in_flight_returns_promptly():
    server = ReferenceServer(api_keys=[KEY]).start()
    server.faults.add("stall", seconds=60)
    errors: list[BaseException] = []

    def client() -> None:
        try:
            post(server, timeout=30)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=client)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.log.generations and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.log.generations, "the stalled request never arrived"
    started = time.perf_counter()
    server.stop()
    took = time.perf_counter() - started
    thread.join(5)
    assert took < 2.0, f"stop() took {took:.2f} s with a stalled request"
    assert not thread.is_alive()
    # The stalled client got no response at all: the connection closed under it.
    assert errors and isinstance(errors[0], httpx2.TransportError)
    assert not [t for t in reference_threads() if t.name.endswith(f":{server.port}")]


def test_restart_after_stop_serves_again():
    server = ReferenceServer(api_keys=[KEY])
    with server:
        assert post(server).status_code == 200
    with server:
        assert post(server).status_code == 200


def test_port_in_use_is_a_clear_oserror():
    with ReferenceServer() as first, pytest.raises(OSError, match="choose another port") as info:
        ReferenceServer(port=first.port).start()
    assert f"cannot listen on 127.0.0.1:{first.port}" in str(info.value)


def test_eight_slow_requests_run_concurrently():
    with ReferenceServer(api_keys=[KEY], latency=1.0) as server:
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: post(server, timeout=10).status_code, range(8)))
        took = time.perf_counter() - started
        server.check()
    assert statuses == [200] * 8
    assert took < 2.0, f"8 requests of 1 s each took {took:.2f} s together"


def test_a_slow_request_does_not_hold_up_a_fast_one(server):
    server.latency = {"high": 3.0, "low": 0.0}
    outcome: list[object] = []

    def slow_client() -> None:
        try:
            outcome.append(post(server, {**BODY, "quality": "high"}))
        except httpx2.TransportError as exc:
            outcome.append(exc)

    slow = threading.Thread(target=slow_client)
    slow.start()
    time.sleep(0.1)
    started = time.perf_counter()
    assert post(server).status_code == 200
    assert time.perf_counter() - started < 1.5
    server.reset()  # releases (drops) the slow request
    slow.join(5)
    assert not slow.is_alive()
    assert isinstance(outcome[0], httpx2.RemoteProtocolError)


def test_latency_per_quality_makes_cheaper_quality_faster(server):
    server.latency = "low=0.05,high=0.8"
    timings = {}
    for quality in ("high", "low", "auto"):
        started = time.perf_counter()
        assert post(server, {**BODY, "quality": quality}).status_code == 200
        timings[quality] = time.perf_counter() - started
    assert timings["high"] >= 0.8
    assert timings["auto"] >= 0.8  # auto resolves to high
    assert timings["low"] < timings["high"] - 0.3


def test_latency_lookup_and_parsing():
    server = ReferenceServer(latency={"medium": 1.0, "default": 0.25})
    assert server.latency_for("medium") == 1.0
    assert server.latency_for("standard") == 1.0  # dall-e's standard sits in the medium tier
    assert server.latency_for("low") == 0.25
    assert parse_latency("2") == {"default": 2.0}
    assert parse_latency("low=0.5, high=3") == {"low": 0.5, "high": 3.0}
    for bad in ("fast", "low=", "=1", "low=-1", "low=1e9"):
        with pytest.raises(ValueError):
            parse_latency(bad)


# -- errors inside the server -------------------------------------------------------------


def test_check_reraises_an_error_from_the_server_thread(server, monkeypatch):
    def boom(self, call, gen):
        raise RuntimeError("boom in the handler")

    monkeypatch.setattr(ReferenceApp, "_images", boom)
    response = post(server)
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    with pytest.raises(ReferenceServerError, match="boom in the handler") as info:
        server.check()
    assert isinstance(info.value.__cause__, RuntimeError)
    server.errors.clear()


# -- request log -------------------------------------------------------------------------


def test_log_records_requests_with_secrets_masked(server):
    secret_header = "team-secret-value-0123456789"
    post(server, headers={"X-Api-Key": "sk-other-secret-987654321", "X-Team": "imaging"})
    HTTP.post(
        f"{server.base_url}/images/generations",
        content=b"{not json",
        headers={"Authorization": f"Bearer {KEY}", "X-Relay-Token": secret_header},
        timeout=5,
    )
    first, second = server.log
    assert first.method == "POST" and first.path == "/v1/images/generations"
    assert first.body == BODY and first.model == "gpt-image-1"
    assert first.status == 200 and first.auth == "ok" and first.done
    assert first.headers["authorization"] == f"Bearer {mask_key(KEY)}"
    assert first.headers["x-api-key"] == mask_key("sk-other-secret-987654321")
    # Outside the redaction allowlist, so masked although its name says nothing secret.
    assert first.headers["x-team"] == mask_key("imaging")
    assert first.headers["content-type"] == "application/json"
    assert second.body is None and second.status == 400
    assert second.headers["x-relay-token"] == mask_key(secret_header)
    everything = repr(server.log.snapshot()) + repr(server)
    for secret in (KEY, "sk-other-secret-987654321", secret_header):
        assert secret not in everything
    assert first.time <= second.time
    assert server.log.last is second and len(server.log) == 2 and server.log[0] is first
    assert json.loads(json.dumps(first.to_dict()))["headers"]["x-team"] == mask_key("imaging")


def test_custom_secret_headers_are_masked():
    with ReferenceServer(api_keys=[KEY], secret_headers=["X-Team"]) as server:
        post(server, headers={"X-Team": "imaging-team-credential"})
        assert server.log[0].headers["x-team"] == mask_key("imaging-team-credential")


def test_log_is_thread_safe_and_cleared_by_reset(server):
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda i: post(server, {**BODY, "prompt": f"p{i}"}), range(12)))
    assert len(server.log) == 12
    assert sorted(r.body["prompt"] for r in server.log.generations) == sorted(
        f"p{i}" for i in range(12)
    )
    server.reset()
    assert len(server.log) == 0 and not server.log


def test_log_filter_and_in_flight_requests(server):
    server.faults.add("stall", seconds=0.3)
    client = openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0)
    client.models.list()
    with pytest.raises(openai.APIConnectionError):
        client.images.generate(model="gpt-image-1", prompt="x", timeout=5)
    assert [r.path for r in server.log.filter(method="GET")] == ["/v1/models"]
    stalled = server.log.filter(path="/images/generations")[0]
    assert stalled.wait(2) and stalled.status is None and stalled.fault == "stall"


# -- configuration -------------------------------------------------------------------------


def test_models_and_keys_are_configurable():
    with ReferenceServer(
        api_keys=["sk-first-key-aaaaaaaaaaaa", "sk-second-key-bbbbbbbbbbb"],
        models={"my-image": "gpt-image-1", "old-dalle": "dall-e-2"},
        chat_models=["my-chat"],
    ) as server:
        assert server.api_key == "sk-first-key-aaaaaaaaaaaa"
        listed = HTTP.get(
            f"{server.base_url}/models",
            headers={"Authorization": "Bearer sk-second-key-bbbbbbbbbbb"},
            timeout=5,
        ).json()
        assert [m["id"] for m in listed["data"]] == ["my-image", "old-dalle", "my-chat"]
        ok = post(server, {**BODY, "model": "my-image"}, key="sk-second-key-bbbbbbbbbbb")
        assert ok.status_code == 200
        missing = post(server, BODY, key="sk-second-key-bbbbbbbbbbb")  # gpt-image-1 not served
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "model_not_found"


def test_default_models_include_profiles_and_relay_aliases():
    server = ReferenceServer()
    for name in ("gpt-image-2", "gpt-image-1.5", "gpt-image-1", "gpt-image-1-mini", "dall-e-3"):
        assert server.models[name].name == name
    assert server.models["gpt-image-1-vip"].name == "gpt-image-1"
    assert server.models["gpt-image-2-all"].name == "gpt-image-2"
    assert {"gpt-4o", "gpt-4o-mini", "gpt-4o-all"} <= set(server.chat_models)


def test_bad_configuration_is_refused():
    with pytest.raises(KeyError, match="Unknown profile"):
        ReferenceServer(models={"x": "no-such-profile"})
    with pytest.raises(ValueError, match="api_keys"):
        ReferenceServer(api_keys=[""])
    with pytest.raises(ValueError, match="Did you mean 'drops_n'"):
        ReferenceServer(defects=["drop_n"])


def test_reset_restores_constructor_state():
    with ReferenceServer(api_keys=[KEY], latency=0.0, defects=["drops_n"]) as server:
        server.defects.add("no_usage")
        server.defects.discard("drops_n")
        server.latency = 5
        server.faults.add("quota", times=None)
        post(server)
        server.reset()
        assert server.defects == {"drops_n"}
        assert dict(server.latency) == {"default": 0.0}
        assert len(server.faults) == 0 and len(server.log) == 0
        assert post(server).status_code == 200


def test_faults_and_defects_are_documented():
    assert len(FAULTS) == 26 and len(DEFECTS) == 34
    assert all(
        isinstance(text, str) and len(text) > 15 for text in [*FAULTS.values(), *DEFECTS.values()]
    )


def test_importing_the_package_stays_light():
    code = (
        "import sys, pytest_imagegen.reference as r; r.ReferenceServer; "
        "print(sorted(m for m in ('openai', 'PIL', 'werkzeug', 'httpx2', 'hypothesis') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- the serve command -----------------------------------------------------------------


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest_imagegen", *args],
        capture_output=True,
        text=True,
        timeout=30,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--latency", "fast"], "argument --latency: latency must be a number"),
        (["serve", "--latency", "low=x"], "QUALITY=SECONDS"),
        (["serve", "--port", "70000"], "argument --port: 70000 is not a port number"),
        (
            ["serve", "--defect", "drop_n"],
            "unknown defect 'drop_n'; choose from: accepts_any_file, accepts_chat",
        ),
        (["serve", "--bogus"], "unrecognized arguments: --bogus"),
        ([], "usage: pytest-imagegen"),
    ],
)
def test_serve_bad_arguments_exit_2_without_traceback(args, message):
    result = _cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_port_in_use_exits_1_with_a_message():
    with ReferenceServer() as busy:
        result = _cli("serve", "--port", str(busy.port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{busy.port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_prints_url_and_key_serves_and_stops_on_ctrl_c():
    process = subprocess.Popen(
        [
            sys.executable, "-m", "pytest_imagegen", "serve",
            "--key", KEY, "--latency", "low=0.01,high=0.2", "--defect", "no_usage", "drops_n",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        lines = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if line.startswith("Press Ctrl-C") or not line:
                break
        text = "".join(lines)
        base_url = next(ln.split("=", 1)[1].strip() for ln in lines if "OPENAI_BASE_URL=" in ln)
        assert f"OPENAI_API_KEY={KEY}" in text and "defects: drops_n, no_usage" in text
        client = openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=10)
        result = client.images.generate(model="gpt-image-1", prompt="cli", quality="low", n=2)
        assert len(result.data) == 1 and result.usage is None
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0
    assert "stopped" in out
    assert "POST /v1/images/generations -> 200 model=gpt-image-1" in err
    assert "Traceback" not in err


def test_main_is_the_console_script_entry_point():
    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["pytest-imagegen"] == "pytest_imagegen.__main__:main"
    from pytest_imagegen.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(["serve", "--port", "nope"])
    assert info.value.code == 2
