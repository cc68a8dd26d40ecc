"""One connection pool (and SSL context) per endpoint per session, shared by the per-test
clients: what stays per test (timeout, retries, cassette) still does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx2
import openai
import pytest
from _support import REFERENCE_KEY

from pytest_imagegen import bounds, cassettes
from pytest_imagegen.bounds import Limits, bounded_client
from pytest_imagegen.cassettes import recording
from pytest_imagegen.config import Endpoint
from pytest_imagegen.errors import CassetteError
from pytest_imagegen.pool import ConnectionPools
from pytest_imagegen.profiles import get_profile
from pytest_imagegen.reference import ReferenceServer

pytest_plugins = ["pytester"]


@pytest.fixture
def endpoint(server: ReferenceServer) -> Endpoint:
    return Endpoint(
        name="local",
        base_url=server.base_url,
        image_model="gpt-image-1",
        profile=get_profile("gpt-image-1"),
        api_key=REFERENCE_KEY,
        timeout_s=30,
    )


@pytest.fixture
def pools() -> Iterator[ConnectionPools]:
    pools = ConnectionPools()
    yield pools
    pools.close()


def _http(pools: ConnectionPools, endpoint: Endpoint, **options: object) -> httpx2.Client:
    """A per-test HTTP client as the plugin makes one: bounded, over the endpoint's pool."""
    limits = options.pop("limits", None) or Limits(timeout_s=float(endpoint.timeout_s))
    return bounded_client(limits, transport=pools.transport(endpoint), **options)  # type: ignore[arg-type]


def _pool_of(client: httpx2.Client) -> httpx2.HTTPTransport:
    return client._transport._inner.pool  # type: ignore[attr-defined]


def _generate(client: openai.OpenAI, prompt: str = "a cat") -> int:
    result = client.images.generate(
        model="gpt-image-1", prompt=prompt, quality="low", size="1024x1024"
    )
    return len(result.data or [])


def test_clients_share_one_pool_per_endpoint_and_closing_one_keeps_it(
    pools: ConnectionPools, endpoint: Endpoint, server: ReferenceServer
) -> None:
    first = _http(pools, endpoint)
    second = _http(pools, endpoint)
    other = _http(pools, replace(endpoint, name="other"))
    assert _pool_of(first) is _pool_of(second)
    assert _pool_of(other) is not _pool_of(first)
    assert len(pools) == 2
    with endpoint.client(http_client=first) as client:
        assert _generate(client) == 1
    # The first client is closed; the pool it used is not.
    with endpoint.client(http_client=second) as client:
        assert _generate(client) == 1
    assert len(server.log) == 2
    pools.close()
    with pytest.raises(RuntimeError, match="closed"):
        pools.transport(endpoint)


def test_each_client_keeps_its_own_timeout(
    pools: ConnectionPools, endpoint: Endpoint, server: ReferenceServer
) -> None:
    server.faults.add("stall", times=1, seconds=60)
    impatient = endpoint.client(http_client=_http(pools, endpoint), timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        _generate(impatient)
    patient = endpoint.client(http_client=_http(pools, endpoint), timeout=30)
    assert _generate(patient) == 1
    # The per-request timeout travels with each request, not with the shared transport.
    seen: list[dict] = []
    hooks = {"request": [lambda request: seen.append(request.extensions["timeout"])]}
    timed = endpoint.client(http_client=_http(pools, endpoint, event_hooks=hooks), timeout=7)
    assert _generate(timed) == 1
    assert seen[0]["read"] == 7


def test_each_client_keeps_its_own_bound_on_the_whole_request(
    pools: ConnectionPools, endpoint: Endpoint, server: ReferenceServer
) -> None:
    """The total-time bound (pytest_imagegen.bounds) is per request, pool shared or not: a
    body dribbled over 2 s breaks a 0.5 s bound, and not the next client's 30 s one."""
    server.faults.add("slow_body", times=2, seconds=2)
    short = Limits(timeout_s=0.5)
    hurried = endpoint.client(http_client=_http(pools, endpoint, limits=short))
    with pytest.raises(openai.APITimeoutError) as caught:
        _generate(hurried)
    assert "0.5 s allowed per request" in str(caught.value.__cause__)
    relaxed = endpoint.client(http_client=_http(pools, endpoint, limits=Limits(timeout_s=30)))
    assert _generate(relaxed) == 1
    assert _pool_of(hurried._client) is _pool_of(relaxed._client)


def test_each_client_keeps_its_own_retries(
    pools: ConnectionPools, endpoint: Endpoint, server: ReferenceServer
) -> None:
    server.faults.add("server_error", times=2)
    retrying = endpoint.client(http_client=_http(pools, endpoint), max_retries=2)
    retrying = retrying.with_options(timeout=30)
    # The SDK waits between retries; keep the wait short (its backoff is not under test).
    retrying._calculate_retry_timeout = lambda *args: 0.01  # type: ignore[method-assign]
    assert _generate(retrying) == 1
    assert len(server.log) == 3
    server.faults.add("server_error", times=1)
    once = endpoint.client(http_client=_http(pools, endpoint), max_retries=0)
    with pytest.raises(openai.InternalServerError):
        _generate(once)
    assert len(server.log) == 4


def test_a_cassette_answers_only_inside_its_own_block(
    pools: ConnectionPools, endpoint: Endpoint, server: ReferenceServer, tmp_path: Path
) -> None:
    """vcrpy patches the transport class while a cassette is open: a pooled connection
    carries no cassette from one test to the next."""
    client = endpoint.client(http_client=_http(pools, endpoint))
    cat, dog = tmp_path / "cat.yaml", tmp_path / "dog.yaml"
    with recording(cat, mode="once", secrets=[REFERENCE_KEY]):
        assert _generate(client, "a cat") == 1
    with recording(dog, mode="once", secrets=[REFERENCE_KEY]):
        assert _generate(client, "a dog") == 1
    assert len(server.log) == 2

    with recording(cat, mode="none") as session:
        assert _generate(client, "a cat") == 1
    assert (session.status, session.played) == ("replayed", 1)
    assert len(server.log) == 2
    # The cat's cassette is closed: the same pooled client goes live.
    assert _generate(client, "a cat") == 1
    assert len(server.log) == 3
    # The dog's cassette has no cat, whatever the cat's cassette held.
    with pytest.raises(CassetteError, match="no recording left"), recording(dog, mode="none"):
        _generate(client, "a cat")
    assert len(server.log) == 3


def test_a_stall_is_recorded_as_a_timeout_and_replayed_without_waiting(
    pools: ConnectionPools, endpoint: Endpoint, server: ReferenceServer, tmp_path: Path
) -> None:
    """A request that got no answer in time has nothing for vcrpy to record: the cassette
    keeps the timeout instead, and a replay raises it without sending anything (and so
    without waiting it out)."""
    path = tmp_path / "stall.yaml"
    server.faults.add("stall", times=1, seconds=60)
    impatient = endpoint.client(http_client=_http(pools, endpoint), timeout=0.3)
    with recording(path, mode="once", secrets=[REFERENCE_KEY]) as session:
        with pytest.raises(openai.APITimeoutError):
            _generate(impatient)
        assert _generate(impatient, "a dog") == 1
    assert (session.status, session.recorded) == ("recorded", 2)
    [stalled, answered] = cassettes.read_cassette(path)
    facts = stalled["response"]["imagegen"]
    assert facts["timeout"]["error"] == "ReadTimeout" and facts["latency_s"] > 0
    assert "imagegen" in answered["response"] and "timeout" not in answered["response"]["imagegen"]
    assert REFERENCE_KEY not in path.read_text()
    sent = len(server.log)

    server.reset()  # no stall queued any more: a request that went live would be answered
    patient = endpoint.client(http_client=_http(pools, endpoint), timeout=30)
    with recording(path, mode="none") as replay:
        with pytest.raises(openai.APITimeoutError) as caught:
            _generate(patient)
        assert _generate(patient, "a dog") == 1
    assert "replayed from" in str(caught.value.__cause__)
    assert (replay.status, replay.played) == ("replayed", 2)
    assert replay.plays[0]["latency_s"] == facts["latency_s"]
    assert len(server.log) == 0 and sent == 2


def test_a_stalled_multipart_edit_is_kept_as_a_timeout_too(
    pools: ConnectionPools, endpoint: Endpoint, server: ReferenceServer, tmp_path: Path
) -> None:
    """A multipart body is a stream, not content the request holds: the timeout is kept
    from the body vcrpy read, and matched on replay like any recorded edit."""
    from pytest_imagegen.images import make_input_image

    image = ("in.png", make_input_image(256, 256, seed="stall"), "image/png")
    path = tmp_path / "edit.yaml"
    server.faults.add("stall", times=1, seconds=60)
    impatient = endpoint.client(http_client=_http(pools, endpoint), timeout=0.3)
    recorder = recording(path, mode="once", secrets=[REFERENCE_KEY])
    with recorder as session, pytest.raises(openai.APITimeoutError):
        impatient.images.edit(model="gpt-image-1", prompt="a fox", image=image)
    assert (session.status, session.recorded) == ("recorded", 1)
    server.reset()
    patient = endpoint.client(http_client=_http(pools, endpoint), timeout=30)
    with recording(path, mode="none") as replay, pytest.raises(openai.APITimeoutError):
        patient.images.edit(model="gpt-image-1", prompt="a fox", image=image)
    assert (replay.status, replay.played) == ("replayed", 1)
    assert len(server.log) == 0


def test_the_pool_is_made_by_the_first_request_that_reaches_it(
    pools: ConnectionPools, endpoint: Endpoint, server: ReferenceServer, tmp_path: Path
) -> None:
    """No SSL context for a replay: vcrpy answers before the pool is touched; the first
    live request makes it (bounded, see pytest_imagegen.bounds), and only once."""
    pool = pools.pool(endpoint)
    client = endpoint.client(http_client=_http(pools, endpoint))
    path = tmp_path / "cat.yaml"
    with recording(path, mode="once", secrets=[REFERENCE_KEY]):
        assert _generate(client) == 1
    assert pool.made
    made = pool._pool

    replaying = ConnectionPools()
    try:
        unmade = replaying.pool(endpoint)
        replayer = endpoint.client(http_client=_http(replaying, endpoint))
        with recording(path, mode="none") as session:
            assert _generate(replayer) == 1
        assert session.status == "replayed" and not unmade.made
        replaying.close()  # closing a pool never made does not make one
        assert not unmade.made
    finally:
        replaying.close()

    assert _generate(client) == 1  # live, through the pool made by the recording
    assert pool._pool is made
    assert isinstance(made, bounds._CappedPool)
    assert len(server.log) == 2


def test_preload_leaves_what_is_loaded_out_of_full_collections() -> None:
    """The SDK's long-lived objects are frozen before the first test (full collections
    skip them) until the session ends; what tests make is still collected."""
    import gc
    import weakref

    from pytest_imagegen.pool import preload

    gc.unfreeze()
    undo = preload()
    try:
        assert gc.get_freeze_count() > 10_000

        class Cycle:
            pass

        garbage = Cycle()
        garbage.self = garbage  # type: ignore[attr-defined]
        gone = weakref.ref(garbage)
        del garbage
        gc.collect()
        assert gone() is None
    finally:
        undo()
    assert gc.get_freeze_count() == 0


def test_the_plugin_builds_one_transport_per_endpoint_for_the_session(
    pytester: pytest.Pytester,
    server: ReferenceServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three tests through ``imagegen_client``: recording them builds one HTTPTransport (one
    SSL context) for the whole run; replaying them builds none, since no request reaches
    the pool; each test still replays its own cassette, with its own timeout."""
    monkeypatch.setenv("LOCAL_KEY", REFERENCE_KEY)
    pytester.makepyprojecttoml(
        f"""
        [[tool.imagegen.endpoints]]
        name = "local"
        base_url = "{server.base_url}"
        api_key_env = "LOCAL_KEY"
        image_model = "gpt-image-1"
        timeout_s = 45
        """
    )
    pytester.makepyfile(
        test_app="""
        import pytest

        @pytest.mark.parametrize("animal", ["cat", "dog", "owl"])
        def test_generate(imagegen_client, animal):
            assert imagegen_client.timeout == 45
            image = imagegen_client.images.generate(
                model="gpt-image-1", prompt=f"a {animal}", quality="low", size="1024x1024"
            )
            assert image.data[0].b64_json
        """
    )
    built: list[object] = []
    original = httpx2.HTTPTransport.__init__

    def counting(self: httpx2.HTTPTransport, *args: object, **kwargs: object) -> None:
        built.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(httpx2.HTTPTransport, "__init__", counting)
    record = pytester.runpytest("--imagegen-record-mode=once", "-p", "no:cacheprovider")
    record.assert_outcomes(passed=3)
    assert len(built) == 1
    served = len(server.log)
    assert served == 3

    built.clear()
    replay = pytester.runpytest("--imagegen-report=r.json", "-p", "no:cacheprovider")
    replay.assert_outcomes(passed=3)
    assert built == []
    assert len(server.log) == served
    tests = json.loads((pytester.path / "r.json").read_text())["tests"]
    assert [t["cassette_status"] for t in tests] == ["replayed"] * 3
    cassettes = {Path(t["cassette"]) for t in tests}
    assert len(cassettes) == 3 and all(p.is_file() for p in cassettes)
