"""The fixtures a user's own tests use, run as users run them (pytester)."""

from __future__ import annotations

# Imported here so that pytester's in-process runs, which restore sys.modules after each
# run, do not import them again every time (openai alone takes about a second).
import openai  # noqa: F401
import PIL.Image  # noqa: F401
import pytest
import vcr  # noqa: F401
import werkzeug.serving  # noqa: F401

import pytest_imagegen.cassettes
import pytest_imagegen.reference.app  # noqa: F401

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OPENAI_*/IMAGEGEN_* variable of the machine leaks into the runs under test."""
    import os

    for name in list(os.environ):
        if name.startswith(("OPENAI_", "IMAGEGEN_")):
            monkeypatch.delenv(name)


# The README's example of a user's test, after a test that calls the reference endpoint
# through imagegen_client (which does not reset the shared server's log).
POSTER_APP = """
import openai


def make_poster(client, prompt):
    for quality in ("high", "low"):
        try:
            return client.images.generate(model="gpt-image-1", prompt=prompt, quality=quality)
        except openai.APITimeoutError:
            continue
    raise RuntimeError("no poster")


def test_my_app_generates(imagegen_client, imagegen_endpoint):
    image = imagegen_client.images.generate(model=imagegen_endpoint.image_model, prompt="a cat")
    assert image.data[0].b64_json


def test_app_falls_back_on_a_stall(imagegen_reference):
    imagegen_reference.faults.add("stall", quality="high")
    client = openai.OpenAI(base_url=imagegen_reference.base_url,
                           api_key=imagegen_reference.api_key, max_retries=0, timeout=1)
    make_poster(client, "a lighthouse at dusk")
    sent = [r.body["quality"] for r in imagegen_reference.log.generations]
    assert sent == ["high", "low"]
"""


def test_reference_log_holds_only_this_tests_requests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_poster=POSTER_APP)
    result = pytester.runpytest("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


HYPOTHESIS_APP = """
import openai
from hypothesis import given, settings, strategies as st

SEEN = []


@settings(max_examples=8, deadline=None, database=None)
@given(fail=st.booleans(), n=st.integers(min_value=1, max_value=2))
def test_each_example_sees_only_its_own_requests(imagegen_reference_server, fail, n):
    with imagegen_reference_server.isolated() as server:
        assert len(server.log) == 0 and len(server.faults) == 0
        if fail:
            server.faults.add("server_error")
        client = openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0)
        try:
            client.images.generate(model="gpt-image-1", prompt="a fox", n=n, quality="low")
        except openai.InternalServerError:
            assert fail
        else:
            assert not fail  # a fault scripted by an earlier example would fail this one
        assert [r.body["n"] for r in server.log.generations] == [n]
        SEEN.append(fail)


def test_examples_ran():
    assert len(SEEN) >= 4 and True in SEEN and False in SEEN
"""


def test_reference_server_in_hypothesis_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_props=HYPOTHESIS_APP)
    result = pytester.runpytest("-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_isolated_re_raises_a_server_error_and_still_resets() -> None:
    from pytest_imagegen.reference import ReferenceServer, ReferenceServerError

    with ReferenceServer() as server:
        with pytest.raises(ReferenceServerError), server.isolated():
            server.faults.add("quota", times=3)
            server.record_error(RuntimeError("boom"))
        assert len(server.faults) == 0 and not server.errors


# ----------------------------------------------------------------------------- clients


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    from pytest_imagegen.reference import ReferenceServer

    with ReferenceServer() as srv:
        yield srv


@pytest.fixture
def local(pytester: pytest.Pytester, server, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A project whose one endpoint, 'local', is the test's reference server."""
    server.reset()
    monkeypatch.setenv("LOCAL_KEY", server.api_key)
    pytester.makepyprojecttoml(
        "[tool.imagegen]\n[[tool.imagegen.endpoints]]\n"
        f'name = "local"\nbase_url = "{server.base_url}"\napi_key_env = "LOCAL_KEY"\n'
        'image_model = "gpt-image-1"\ntimeout_s = 20\n'
    )
    return server


CLIENTS_APP = """
import asyncio, json, os

import pytest


def test_sync(imagegen_client, imagegen_requests):
    imagegen_client.images.generate(model="gpt-image-1", prompt="a fox", quality="low")
    [sent] = imagegen_requests.generations
    assert sent.body == {"model": "gpt-image-1", "prompt": "a fox", "quality": "low"}
    assert sent.status == 200 and sent.complete
    assert [(i["format"], i["size"]) for i in sent.images] == [("png", "1024x1024")]
    assert sent.headers["authorization"] == "<imagegen:scrubbed>"
    assert os.environ["LOCAL_KEY"] not in json.dumps(sent.to_dict())


def test_async(imagegen_async_client, imagegen_requests):
    async def run():
        answer = await imagegen_async_client.images.generate(
            model="gpt-image-1", prompt="a cat", size="1024x1536", quality="low"
        )
        return answer.data[0].b64_json

    assert asyncio.run(run())
    [sent] = imagegen_requests.generations
    assert sent.headers["x-stainless-async"].startswith("async")
    assert sent.images[0]["size"] == "1024x1536"


def test_both_share_one_cassette(imagegen_client, imagegen_async_client, imagegen_requests):
    imagegen_client.images.generate(model="gpt-image-1", prompt="sync", quality="low")

    async def run():
        await imagegen_async_client.images.generate(
            model="gpt-image-1", prompt="async", quality="low"
        )

    asyncio.run(run())
    assert [e.body["prompt"] for e in imagegen_requests] == ["sync", "async"]
    assert all(e.status == 200 for e in imagegen_requests)


@pytest.mark.anyio
async def test_under_anyio(imagegen_async_client, imagegen_requests):
    await imagegen_async_client.images.generate(model="gpt-image-1", prompt="anyio", quality="low")
    assert imagegen_requests.last.status == 200


@pytest.fixture
def anyio_backend():
    return "asyncio"
"""


def test_clients_record_then_replay(pytester: pytest.Pytester, local) -> None:  # type: ignore[no-untyped-def]
    pytester.makepyfile(test_clients=CLIENTS_APP)
    recorded = pytester.runpytest("--imagegen-record-mode=once", "-p", "no:cacheprovider")
    recorded.assert_outcomes(passed=4)
    live = len(local.log.generations)
    assert live == 5
    folder = pytester.path / "cassettes" / "local"
    texts = {p.stem.rsplit("_local-", 1)[0]: p.read_text() for p in folder.rglob("*.yaml")}
    assert sorted(texts) == [
        "test_async",
        "test_both_share_one_cassette",
        "test_sync",
        "test_under_anyio",
    ]
    # One cassette holds the test's sync and async requests alike.
    both = texts["test_both_share_one_cassette"]
    assert both.count("uri: ") == 2 and "async" in both and "sync" in both
    assert all(local.api_key not in text for text in texts.values())
    # Replayed: the same assertions hold, and nothing reaches the server.
    replayed = pytester.runpytest("-p", "no:cacheprovider")
    replayed.assert_outcomes(passed=4)
    assert len(local.log.generations) == live


def test_new_fixtures_have_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures")
    for name in ("imagegen_async_client", "imagegen_requests"):
        result.stdout.fnmatch_lines([f"{name}*", "    ?*"])
