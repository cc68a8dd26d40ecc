"""The library as an app uses it in production: importable without the test-only
dependencies, and wrong arguments answered with a ``TypeError`` that says what to pass."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import openai
import pytest

from pytest_imagegen import classify, generate
from pytest_imagegen.config import load_settings
from pytest_imagegen.fallback import build_steps
from pytest_imagegen.profiles import get_profile, model_kind, resolve_profile
from pytest_imagegen.request_builder import build_request, check_request, validate_request

# What a production image (a serverless function, a web app) does not install.
TEST_ONLY = ("hypothesis", "vcr", "werkzeug", "pytest", "_pytest")

CHILD = textwrap.dedent(
    """
    import base64, importlib.abc, json, sys, tempfile

    BLOCKED = {blocked!r}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, Blocker())

    import httpx2
    from pytest_imagegen import classify, generate
    from pytest_imagegen.config import load_settings
    from pytest_imagegen.images import make_image
    from pytest_imagegen.profiles import model_kind, resolve_profile
    from pytest_imagegen.request_builder import build_request, validate_request

    report = {{}}
    body = b'{{"error": {{"code": "insufficient_quota", "type": "insufficient_quota"}}}}'
    report["category"] = classify((429, {{}}, body)).category
    profile = resolve_profile("gpt-image-1-vip")
    report["profile"] = profile.name
    report["kind"] = model_kind("gpt-4o-all")
    request = build_request(profile, model="gpt-image-1", prompt="a fox", quality="low")
    wrong = {{**request, "quality": "hd"}}
    report["violations"] = [v.code for v in validate_request(wrong, profile)]

    png = base64.b64encode(make_image(1024, 1024, "png", seed="x")).decode()

    def answer(request):
        request.read()
        if request.url.path.endswith("/images/generations") and b'"stream":true' in request.content:
            event = {{"type": "image_generation.completed", "b64_json": png}}
            sse = f"event: image_generation.completed\\ndata: {{json.dumps(event)}}\\n\\n"
            return httpx2.Response(
                200, headers={{"content-type": "text/event-stream"}}, content=sse.encode()
            )
        return httpx2.Response(200, json={{"created": 1, "data": [{{"b64_json": png}}]}})

    settings = load_settings(
        cli={{}},
        env={{"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_IMAGE_MODEL": "gpt-image-1",
             "OPENAI_API_KEY": "sk-production-test-key"}},
        rootdir=tempfile.mkdtemp(),
    )
    endpoint = settings.endpoint("env")
    client = endpoint.client(http_client=httpx2.Client(transport=httpx2.MockTransport(answer)))
    outcome = generate(client, endpoint, "a fox", quality="low")
    report["generated"] = [image.size for image in outcome.images]
    from pytest_imagegen import edit
    edited = edit(client, endpoint, "add a hat", make_image(1024, 1024, "png", seed="in"))
    report["edited"] = [image.size for image in edited.images]
    streamed = generate(client, endpoint, "a fox", stream=True)
    report["streamed"] = [image.size for image in streamed.images]
    report["stream_trace"] = streamed.trace()
    report["loaded"] = sorted(m for m in BLOCKED if m in sys.modules)
    try:
        import pytest_imagegen.strategies  # needs hypothesis: the blocker must refuse it
    except ModuleNotFoundError as exc:
        report["strategies"] = str(exc)
    print(json.dumps(report))
    """
)


def _run_child(blocked: tuple[str, ...]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD.format(blocked=blocked)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_library_works_with_the_test_only_dependencies_missing() -> None:
    report = _run_child(TEST_ONLY)
    assert report["category"] == "quota"
    assert report["profile"] == "gpt-image-1"
    assert report["kind"] == "chat"
    assert report["violations"] == ["invalid_value"]
    assert report["generated"] == ["1024x1024"]
    assert report["edited"] == ["1024x1024"]
    assert report["streamed"] == ["1024x1024"]
    assert "(streamed 0 partial image(s)" in report["stream_trace"]
    assert report["loaded"] == []
    # The blocker works: a module that does need hypothesis cannot be imported.
    assert "hypothesis" in report["strategies"] and "blocked" in report["strategies"]


# ----------------------------------------------------------------------------- TypeErrors


def test_validate_request_with_what_resolve_profile_gives_a_chat_model() -> None:
    profile = resolve_profile("gpt-4o")
    assert profile is None
    with pytest.raises(TypeError) as info:
        validate_request({"model": "gpt-4o", "prompt": "a fox"}, profile)
    message = str(info.value)
    assert message.startswith("validate_request() needs a Profile as 'profile', got None.")
    assert "chat model" in message and "get_profile('gpt-image-1')" in message


@pytest.mark.parametrize("function", [validate_request, check_request])
def test_a_profile_name_instead_of_a_profile(function) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match=r"got the string 'gpt-image-1'\. Pass get_profile"):
        function({"prompt": "a fox"}, "gpt-image-1")


def test_build_request_arguments() -> None:
    with pytest.raises(TypeError, match=r"build_request\(\) needs a Profile as 'profile', got No"):
        build_request(None, model="gpt-image-1", prompt="a fox")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"build_request\(model=\.\.\.\) takes a model name"):
        build_request(get_profile("gpt-image-1"), model=1, prompt="a fox")  # type: ignore[arg-type]


def test_profile_lookups_with_wrong_types() -> None:
    with pytest.raises(TypeError, match=r"get_profile\(\) takes a profile name"):
        get_profile(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"resolve_profile\(profile=\.\.\.\) takes a profile name"):
        resolve_profile("gpt-image-1", profile=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"resolve_profile\(custom=\.\.\.\) takes a mapping"):
        resolve_profile("gpt-image-1", custom=["relay"])  # type: ignore[arg-type]
    # Classifying questions stay total: any value is "unknown", never an exception.
    assert model_kind(None) == "unknown"  # type: ignore[arg-type]
    assert classify(None).category == "unknown"


@pytest.fixture
def endpoint(tmp_path: Path):  # type: ignore[no-untyped-def]
    env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "OPENAI_IMAGE_MODEL": "gpt-image-1"}
    return load_settings(cli={}, env=env, rootdir=tmp_path).endpoint("env")


def test_generate_with_an_endpoint_name(endpoint) -> None:  # type: ignore[no-untyped-def]
    client = endpoint.client()
    with pytest.raises(TypeError) as info:
        generate(client, "env", "a fox")  # type: ignore[arg-type]
    assert "needs an Endpoint as 'endpoint', got str 'env' (an endpoint name?)" in str(info.value)
    assert "imagegen_settings.endpoint('NAME')" in str(info.value)
    with pytest.raises(TypeError, match="needs an Endpoint"):
        build_steps("env", "a fox")  # type: ignore[arg-type]


def test_generate_with_a_wrong_client_or_prompt(endpoint) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match=r"needs an openai.OpenAI client as 'client', got NoneType"):
        generate(None, endpoint, "a fox")  # type: ignore[arg-type]
    async_client = openai.AsyncOpenAI(api_key="sk-test", base_url=endpoint.base_url)
    with pytest.raises(TypeError, match=r"asyncio.to_thread\(generate"):
        generate(async_client, endpoint, "a fox")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes the prompt as a string, got NoneType"):
        generate(endpoint.client(), endpoint, None)  # type: ignore[arg-type]
