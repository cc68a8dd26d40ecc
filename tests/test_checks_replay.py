"""The checks that draw their requests with hypothesis replay what their cassette recorded.

Hypothesis mixes constants of the local modules imported into its draws, and any release
may change how it draws: a replay that drew again would find no recording as soon as a
user touched a conftest or upgraded hypothesis. ``request_shape.valid_requests_succeed``
and ``request_shape.invalid_requests_refused`` therefore send the recorded request bodies
when their cassette is replayed, and draw only when recording or live.

The end-to-end test runs as users run it, in fresh pytest processes (an in-process run
would draw with the constants of this test session's modules): record against a reference
server configured as an ordinary endpoint, make hypothesis draw other requests, and replay
with the endpoint's ``base_url`` on a remote host, where a missing recording is an error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_imagegen._scrub import canonical_json_text
from pytest_imagegen.cassettes import (
    CassetteSession,
    CassetteUse,
    read_cassette,
    recorded_requests,
    recording,
)
from pytest_imagegen.checks import REGISTRY
from pytest_imagegen.checks.context import CheckContext
from pytest_imagegen.checks.request_shape import (
    _DOCUMENTED_REFUSALS,
    VALID_EXAMPLES,
    _cheapen,
)
from pytest_imagegen.config import Endpoint
from pytest_imagegen.errors import CassetteError, ConformanceFailure
from pytest_imagegen.names import OPTION
from pytest_imagegen.profiles import PROFILES, get_profile
from pytest_imagegen.reference import ReferenceServer
from pytest_imagegen.request_builder import validate_request
from pytest_imagegen.strategies import applicable_defects, invalid_image_requests

pytest_plugins = ["pytester"]

DRAWING = ("request_shape.valid_requests_succeed", "request_shape.invalid_requests_refused")
SELECT = " or ".join(c.split(".", 1)[1] for c in DRAWING)
RUN_TIMEOUT_S = 120
MODEL = "gpt-image-1.5"

# What makes hypothesis draw other requests, tried in turn until it does for both checks:
# a local module of the user's imported by their conftest (hypothesis mixes constants of
# local modules into its draws; which constants change the few requests drawn here depends
# on the hypothesis release and on the other local modules), and, as a last resort, what a
# hypothesis release drawing differently does (another seed for the derandomized draws).
PERTURBATIONS: tuple[dict[str, str], ...] = (
    {
        "vocabulary": "WORDS = ['a', 'b', 'cat', 'dog', 'x1', 'user-a', 'ffff0000ffff0000']\n",
        "conftest": "import vocabulary  # noqa: F401\n",
    },
    {"vocabulary": "WORDS = ['a', 'b']\n", "conftest": "import vocabulary  # noqa: F401\n"},
    {
        "conftest": (
            "import hypothesis.core\n\n"
            "_digest = hypothesis.core.function_digest\n"
            "hypothesis.core.function_digest = lambda f: _digest(f) + b'another release'\n"
        )
    },
)


@pytest.fixture(scope="module")
def endpoint_server() -> Iterator[ReferenceServer]:
    """A reference server, used as an ordinary (not the built-in) endpoint."""
    with ReferenceServer() as server:
        yield server


@pytest.fixture
def reference(endpoint_server: ReferenceServer) -> Iterator[ReferenceServer]:
    endpoint_server.reset()
    yield endpoint_server
    endpoint_server.reset()


def _endpoint(server: ReferenceServer) -> Endpoint:
    """The reference server as an ordinary endpoint (``checks.run`` would get the same)."""
    return Endpoint(
        name="local",
        base_url=server.base_url,
        image_model=MODEL,
        profile=get_profile(MODEL),
        api_key=server.api_key,
    )


# -- end to end: record, draw otherwise, replay against a remote base_url ----------------------


def _project(pytester: pytest.Pytester, base_url: str) -> None:
    pytester.makepyprojecttoml(
        f"""
        [tool.imagegen]
        cassette_dir = "cassettes"

        [[tool.imagegen.endpoints]]
        name = "faraway"
        base_url = "{base_url}"
        image_model = "{MODEL}"
        api_key_env = "FARAWAY_API_KEY"
        """
    )


def _run(pytester: pytest.Pytester, report: str, *args: str) -> dict[str, dict[str, Any]]:
    result = pytester.runpytest_subprocess(
        OPTION,
        "-k",
        SELECT,
        "-p",
        "no:cacheprovider",
        f"--imagegen-report={report}",
        *args,
        timeout=RUN_TIMEOUT_S,
    )
    outcomes = result.parseoutcomes()
    assert (outcomes.get("passed"), outcomes.get("failed")) == (2, None), result.stdout.str()
    tests = json.loads((pytester.path / report).read_text())["tests"]
    return {t["check"]: t for t in tests}


def _bodies(folder: Path) -> dict[str, list[str]]:
    """The recorded request bodies of each drawing check, as canonical JSON, in order."""
    return {
        check: [
            i["request"]["body"].decode()
            for i in read_cassette(folder / "faraway" / "conformance" / f"{check}.yaml")
        ]
        for check in DRAWING
    }


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.mark.slow
def test_remote_replay_sends_the_recorded_requests_after_hypothesis_draws_others(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, reference: ReferenceServer
) -> None:
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "IMAGEGEN_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FARAWAY_API_KEY", reference.api_key)
    _project(pytester, reference.base_url)

    # Recorded against the endpoint, live.
    report = _run(pytester, "record.json", "--imagegen-record-mode=once")
    assert {report[c]["cassette_status"] for c in DRAWING} == {"recorded"}
    assert report[DRAWING[0]]["cost_usd"] > 0  # live requests are priced
    cassettes = pytester.path / "cassettes"
    recorded = _bodies(cassettes)
    assert len(recorded[DRAWING[0]]) == VALID_EXAMPLES

    # The user adds a module of their own (or upgrades hypothesis): hypothesis now draws
    # requests the recording lacks (shown by recording again, into another folder).
    for attempt, files in enumerate(PERTURBATIONS):
        pytester.makepyfile(**files)
        monkeypatch.setenv("IMAGEGEN_CASSETTE_DIR", f"redrawn-{attempt}")
        _run(pytester, "redrawn.json", "--imagegen-record-mode=once")
        redrawn = _bodies(pytester.path / f"redrawn-{attempt}")
        if all(set(redrawn[c]) - set(recorded[c]) for c in DRAWING):
            break
    else:
        pytest.fail(
            "no PERTURBATIONS made hypothesis draw other requests: this test proves nothing"
        )
    monkeypatch.delenv("IMAGEGEN_CASSETTE_DIR")

    # CI replays on a host it cannot reach (matching ignores host and port; record mode
    # none refuses every connection beyond loopback and every request with no recording).
    _project(pytester, "https://images.invalid/v1")
    before, requests_before = _snapshot(cassettes), len(reference.log)
    for mode in ("none", "once"):  # once replays too, the cassette being there
        report = _run(pytester, f"replay-{mode}.json", f"--imagegen-record-mode={mode}")
        assert {report[c]["cassette_status"] for c in DRAWING} == {"replayed"}, mode
        assert report[DRAWING[0]]["attempts"] == VALID_EXAMPLES
        assert {report[c]["cost_usd"] for c in DRAWING} == {0.0}, "a request went out"
    assert len(reference.log) == requests_before, "a replay reached the server"
    assert _snapshot(cassettes) == before, "a replay wrote to the cassettes"


# -- the plugin: which cassettes give their recorded requests -----------------------------------


def test_recorded_requests_are_given_only_when_the_cassette_is_replayed(
    reference: ReferenceServer, tmp_path: Path
) -> None:
    import openai

    path = tmp_path / "c.yaml"
    client = openai.OpenAI(base_url=reference.base_url, api_key=reference.api_key, max_retries=0)
    with client, recording(path, mode="once", secrets=[reference.api_key]):
        client.images.generate(model=MODEL, prompt="a cat", size="1024x1024", background=None)
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        client.images.generate(model=MODEL, prompt="a dog", n=2)

    def given_to_checks(mode: str, policy: str, at: Path = path) -> Any:
        return recorded_requests(CassetteUse(CassetteSession(path=at, mode=mode), policy))

    # The image requests only, in recorded order, nulls kept.
    expected = [
        {"background": None, "model": MODEL, "prompt": "a cat", "size": "1024x1024"},
        {"model": MODEL, "n": 2, "prompt": "a dog"},
    ]
    assert given_to_checks("none", "replay") == expected
    assert given_to_checks("none", "mixed") == expected  # loopback: replays what it has
    assert given_to_checks("once", "replay") == expected
    assert given_to_checks("once", "live") is None  # the cassette is being recorded
    assert given_to_checks("new_episodes", "mixed") is None
    assert given_to_checks("all", "live") is None
    assert given_to_checks("none", "replay", tmp_path / "missing.yaml") is None


# -- the checks: recorded requests in replay, hypothesis otherwise -----------------------------


def _image_bodies(server: ReferenceServer, since: int) -> list[dict[str, Any]]:
    return [r.body for r in server.log.snapshot()[since:] if r.path.endswith("/generations")]


@pytest.mark.parametrize("recorded", [None, []], ids=["live", "nothing-recorded"])
def test_live_draws_come_from_hypothesis(
    reference: ReferenceServer, monkeypatch: pytest.MonkeyPatch, recorded: list[Any] | None
) -> None:
    import pytest_imagegen.strategies

    prompts = ["a drawn owl", "a drawn fox", "a drawn cat"]
    valid = st.sampled_from([{"model": MODEL, "prompt": p, "size": "1024x1024"} for p in prompts])
    seeds = [11, 12, 13, 14]
    invalid = st.sampled_from(
        [({"model": MODEL, "prompt": "a cat", "seed": i}, "seed") for i in seeds]
    )
    monkeypatch.setattr(pytest_imagegen.strategies, "image_requests", lambda **_: valid)
    monkeypatch.setattr(pytest_imagegen.strategies, "invalid_image_requests", lambda **_: invalid)
    since = len(reference.log)
    for check in DRAWING:
        ctx = CheckContext(_endpoint(reference), recorded_requests=recorded)
        with ctx.closing():
            REGISTRY[check](ctx)
    sent = _image_bodies(reference, since)
    assert sorted(b["prompt"] for b in sent[: len(prompts)]) == sorted(prompts)
    # The invalid check first sends the simplest request of each documented refusal that
    # applies (here every strategy is the one above: its simplest draw, seed 11), then draws.
    documented = set(_DOCUMENTED_REFUSALS)
    explicit = [d for d in applicable_defects(profile=MODEL) if d in documented]
    invalid_seeds = [b["seed"] for b in sent[len(prompts) :]]
    assert invalid_seeds[: len(explicit)] == [seeds[0]] * len(explicit)
    assert sorted(invalid_seeds[len(explicit) :]) == seeds


def test_replay_sends_the_recorded_bodies_in_order_without_drawing(
    reference: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pytest_imagegen.strategies

    def no_draw(**_: Any) -> Any:
        raise AssertionError("a replay drew new requests")

    monkeypatch.setattr(pytest_imagegen.strategies, "image_requests", no_draw)
    monkeypatch.setattr(pytest_imagegen.strategies, "invalid_image_requests", no_draw)
    valid = [
        {"model": MODEL, "prompt": "a recorded cat", "quality": "low", "background": None},
        {"model": MODEL, "prompt": "a recorded dog", "n": 2, "size": "1536x1024"},
    ]
    invalid = [
        {"model": MODEL, "prompt": "a cat", "seed": 7},
        {"model": MODEL, "prompt": "a cat", "quality": "standard", "size": "1024x1024"},
        {"model": MODEL, "prompt": "", "n": 1},
    ]
    for check, bodies in zip(DRAWING, (valid, invalid), strict=True):
        since = len(reference.log)
        ctx = CheckContext(_endpoint(reference), recorded_requests=bodies)
        with ctx.closing():
            REGISTRY[check](ctx)
        assert _image_bodies(reference, since) == bodies, check


def test_replayed_invalid_request_expects_the_param_its_body_is_invalid_in(
    reference: ReferenceServer,
) -> None:
    reference.defects.add("wrong_error_param")  # validation errors name param null
    body = {"model": MODEL, "prompt": "a cat", "quality": "standard"}
    ctx = CheckContext(_endpoint(reference), recorded_requests=[body])
    with ctx.closing(), pytest.raises(ConformanceFailure) as excinfo:
        REGISTRY[DRAWING[1]](ctx)
    assert "not refused as invalid_request naming 'quality'" in str(excinfo.value)


@pytest.mark.parametrize(
    ("check", "body", "problem"),
    [
        (DRAWING[0], {"model": MODEL, "prompt": "a cat", "quality": "hd"}, "is not valid"),
        (DRAWING[1], {"model": MODEL, "prompt": "a cat"}, "violations: none"),
        (
            DRAWING[1],
            {"model": MODEL, "prompt": "", "quality": "hd"},
            "does not have exactly one invalid param",
        ),
        (  # a gateway strips null keys: older releases planted them, and false alarms followed
            DRAWING[1],
            {"model": MODEL, "prompt": "a cat", "seed": None},
            "plants the unknown param 'seed' with a null value",
        ),
    ],
    ids=["valid-not-valid", "invalid-valid", "invalid-twice", "invalid-null-unknown"],
)
def test_a_recording_the_check_cannot_have_made_says_to_record_again(
    reference: ReferenceServer, check: str, body: dict[str, Any], problem: str
) -> None:
    since = len(reference.log)
    ctx = CheckContext(_endpoint(reference), recorded_requests=[body])
    with ctx.closing(), pytest.raises(CassetteError) as excinfo:
        REGISTRY[check](ctx)
    message = str(excinfo.value)
    assert problem in message and f"for profile '{MODEL}'" in message
    name = check.split(".", 1)[1]
    assert f"pytest --imagegen --imagegen-record-mode=once -k {name}" in message
    assert f"local/conformance/{check}.yaml" in message
    assert len(reference.log) == since, "sent a request it could not judge"


# -- the invariant the replay of invalid requests rests on ---------------------------------------

STRICT = sorted(name for name, p in PROFILES.items() if p.family != "custom")


@pytest.mark.parametrize("name", STRICT)
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_sent_invalid_request_has_one_violation_naming_the_planted_param(
    name: str, data: st.DataObject
) -> None:
    profile = get_profile(name)
    body, param = data.draw(
        invalid_image_requests(profile=profile, model=name, defects=_DOCUMENTED_REFUSALS)
    )
    cheap = data.draw(st.sampled_from([None, *profile.qualities]))
    sent = _cheapen(body, cheap, keep=param)
    # What the cassette keeps: canonical JSON of the body the check sent.
    stored = json.loads(canonical_json_text(sent))
    assert [v.param for v in validate_request(stored, profile)] == [param]
