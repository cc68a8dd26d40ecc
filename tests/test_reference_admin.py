"""The reference server's control API (``/_admin/``) and ``RemoteReference``, its client."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from _support import HTTP, REFERENCE_KEY

from pytest_imagegen.reference import (
    ReferenceServer,
    ReferenceServerError,
    RemoteReference,
    RemoteReferenceError,
    key_digest,
)

ADMIN = "admin-key-for-tests-0123456789"
BODY = {"model": "gpt-image-1", "prompt": "a red fox", "size": "1024x1024", "quality": "low"}


@pytest.fixture(scope="module")
def admin_server() -> Iterator[ReferenceServer]:
    with ReferenceServer(api_keys=[REFERENCE_KEY], admin_key=ADMIN) as server:
        yield server


@pytest.fixture
def remote(admin_server: ReferenceServer) -> Iterator[RemoteReference]:
    admin_server.reset()
    with RemoteReference(admin_server.base_url, ADMIN, api_key=REFERENCE_KEY) as remote:
        yield remote
    admin_server.reset()


def generate(server, body=BODY, key=REFERENCE_KEY):
    return HTTP.post(
        f"{server.base_url}/images/generations",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def test_without_an_admin_key_the_control_api_does_not_exist(server):
    response = HTTP.get(f"{server.url}/_admin/state", headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 404
    with pytest.raises(RemoteReferenceError, match="has no control API: start the reference"):
        RemoteReference(server.base_url, ADMIN).start()


def test_a_wrong_admin_key_is_refused(admin_server):
    response = HTTP.get(f"{admin_server.url}/_admin/state", headers={"Authorization": "Bearer no"})
    assert response.status_code == 401
    assert HTTP.get(f"{admin_server.url}/_admin/state").status_code == 401
    with pytest.raises(RemoteReferenceError, match="refused the admin key"):
        RemoteReference(admin_server.base_url, "wrong-admin-key").start()


def test_an_unreachable_server_is_a_clear_error():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    remote = RemoteReference(f"http://127.0.0.1:{port}/v1", ADMIN, timeout_s=2)
    with pytest.raises(RemoteReferenceError, match="cannot reach the reference server"):
        remote.start()


def test_faults_scripted_remotely_apply_to_the_next_requests(admin_server, remote):
    fault = remote.faults.add("rate_limit", times=1, retry_after=3)
    assert (fault.name, fault.times, fault.options) == ("rate_limit", 1, {"retry_after": 3})
    assert [f.name for f in remote.faults.pending] == ["rate_limit"]
    first, second = generate(admin_server), generate(admin_server)
    assert (first.status_code, first.headers["retry-after"]) == (429, "3")
    assert second.status_code == 200
    assert remote.faults.pending == []
    remote.faults.add("quota", times=None)
    remote.faults.clear()
    assert generate(admin_server).status_code == 200


def test_bad_fault_requests_are_refused_with_the_servers_message(remote):
    with pytest.raises(ValueError, match="unknown fault 'rate_limited'"):
        remote.faults.add("rate_limited")
    with pytest.raises(ValueError, match="takes no option 'seconds'"):
        remote.faults.add("quota", seconds=2)


def test_defects_and_latency_are_set_remotely(admin_server, remote):
    remote.defects.add("no_retry_after")
    assert "no_retry_after" in remote.defects and "no_retry_after" in admin_server.defects
    remote.faults.add("rate_limit")
    assert "retry-after" not in generate(admin_server).headers
    remote.defects.discard("no_retry_after")
    assert not remote.defects
    with pytest.raises(ValueError, match="unknown defect"):
        remote.defects.add("drops_everything")
    remote.latency = {"low": 0.2}
    assert admin_server.latency_for("low") == 0.2
    assert remote.latency == {"low": 0.2}


def test_the_log_is_read_and_cleared_remotely_without_admin_calls(admin_server, remote):
    generate(admin_server)
    generate(admin_server, key="sk-someone-else-0000000000")
    log = remote.wait_idle()
    assert [r.status for r in log] == [200, 401]
    assert log[0].body == BODY and log[0].done and log[0].finished >= log[0].time
    # Keys are masked in the headers; only their fingerprints are kept.
    assert REFERENCE_KEY not in repr(log[0].to_dict())
    assert log[0].key_digests == (key_digest(REFERENCE_KEY),)
    assert log[1].error == {
        "type": "invalid_request_error",
        "code": "invalid_api_key",
        "param": None,
    }
    assert len(remote.log) == 2 and remote.log.last.status == 401
    assert [r.status for r in remote.log.snapshot(1)] == [401]
    assert len(remote.log.generations) == 2
    remote.log.clear()
    assert len(admin_server.log) == 0 and not remote.log


def test_reset_and_check_behave_as_on_a_local_server(admin_server, remote, monkeypatch):
    remote.faults.add("quota", times=None)
    remote.defects.add("drops_n")
    remote.reset()
    assert not admin_server.faults.pending and not admin_server.defects
    remote.check()
    admin_server.record_error(RuntimeError("boom"))
    with pytest.raises(ReferenceServerError, match="boom"):
        remote.check()
    remote.reset()
    remote.check()


def test_any_key_mode_accepts_and_fingerprints_every_key():
    with ReferenceServer(accept_any_key=True) as server:
        response = generate(server, key="sk-gateway-upstream-key-123456")
        assert response.status_code == 200
        (logged,) = server.wait_idle()
        assert logged.auth == "ok"
        assert logged.key_digests == (key_digest("sk-gateway-upstream-key-123456"),)
        assert "sk-gateway-upstream-key-123456" not in str(logged.to_dict())


def test_serve_with_admin_key_env_serves_the_control_api(tmp_path):
    env = {**os.environ, "REF_ADMIN": ADMIN}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest_imagegen",
            "serve",
            "--admin-key-env",
            "REF_ADMIN",
            "--any-key",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(4)]
        url = lines[0].rsplit(" ", 1)[1].strip()
        assert "(any key is accepted)" in lines[2]
        assert "control API on" in lines[3] and ADMIN not in "".join(lines)
        with RemoteReference(url, ADMIN) as remote:
            remote.faults.add("server_error")
            answer = HTTP.post(
                f"{url}/images/generations",
                json=BODY,
                headers={"Authorization": "Bearer anything-goes"},
                timeout=10,
            )
            assert answer.status_code == 500
            assert [r.fault for r in remote.wait_idle()] == ["server_error"]
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_serve_refuses_an_unset_admin_key_variable():
    env = {k: v for k, v in os.environ.items() if k != "NO_SUCH_ADMIN_VAR"}
    out = subprocess.run(
        [sys.executable, "-m", "pytest_imagegen", "serve", "--admin-key-env", "NO_SUCH_ADMIN_VAR"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert out.returncode == 2
    assert "the environment variable NO_SUCH_ADMIN_VAR is not set" in out.stderr
    assert "Traceback" not in out.stderr


def test_deviation_warning_is_exported_and_filterable():
    import warnings

    import pytest_imagegen
    from pytest_imagegen.verdict import deviation

    assert issubclass(pytest_imagegen.DeviationWarning, UserWarning)
    with pytest.warns(pytest_imagegen.DeviationWarning, match="code rewritten"):
        deviation("code rewritten")
    with warnings.catch_warnings():
        warnings.simplefilter("error", pytest_imagegen.DeviationWarning)
        with pytest.raises(pytest_imagegen.DeviationWarning):
            deviation("code rewritten")
