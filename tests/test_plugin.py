"""The pytest glue, run as users run it (pytester): options, start-up errors, collection of
the shipped suite, fixtures, markers and the report."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

# Imported here so that pytester's in-process runs, which restore sys.modules after each
# run, do not import them again every time (openai alone takes about a second).
import openai  # noqa: F401
import PIL.Image  # noqa: F401
import pytest
import vcr  # noqa: F401
import werkzeug.serving  # noqa: F401

import pytest_imagegen.cassettes
import pytest_imagegen.reference.app
import pytest_imagegen.report
import pytest_imagegen.strategies  # noqa: F401
from pytest_imagegen import names, suite
from pytest_imagegen.cassettes import cassette_path
from pytest_imagegen.checks import REGISTRY
from pytest_imagegen.reference import ReferenceServer

# The checks of a run against an endpoint without an upstream (no gateway checks).
PLAIN = {k: v for k, v in REGISTRY.items() if not v.needs_upstream}

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OPENAI_*/IMAGEGEN_* variable of the machine leaks into the runs under test."""
    import os

    for name in list(os.environ):
        if name.startswith(("OPENAI_", "IMAGEGEN_")):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def server() -> Iterator[ReferenceServer]:
    with ReferenceServer() as srv:
        yield srv


@pytest.fixture
def local(server: ReferenceServer, monkeypatch: pytest.MonkeyPatch) -> ReferenceServer:
    """The test's own reference server, configured as an ordinary endpoint named 'local'."""
    server.reset()
    monkeypatch.setenv("LOCAL_KEY", server.api_key)
    return server


def _endpoint_toml(server: ReferenceServer, name: str = "local", **extra: str) -> str:
    lines = [
        "[[tool.imagegen.endpoints]]",
        f'name = "{name}"',
        f'base_url = "{server.base_url}"',
        'api_key_env = "LOCAL_KEY"',
        'image_model = "gpt-image-1"',
    ]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def test_options_are_in_one_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "image-generation endpoints (pytest-imagegen):",
            f"*{names.OPTION} *collect and run the shipped conformance suite*",
            f"*{names.OPTION_ENDPOINT}=NAME*",
            f"*{names.OPTION_RECORD_MODE}={{none,once,new_episodes,all}}*",
            f"*{names.OPTION_BUDGET}=USD*",
            f"*{names.OPTION_REPORT}=PATH*",
            f"*{names.OPTION_CONFIG}=PATH*",
        ]
    )
    result.stdout.fnmatch_lines([f"*{names.INI_CONFIG} (string):*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([f"{names.OPTION_BUDGET}=-1"], "*--imagegen-budget: '-1' is not an amount of USD*"),
        ([f"{names.OPTION_BUDGET}=lots"], "*'lots' is not an amount of USD*"),
        ([f"{names.OPTION_RECORD_MODE}=sometimes"], "*invalid choice: 'sometimes'*"),
        ([f"{names.OPTION_ENDPOINT}=Relay!"], "*'Relay!' is not an endpoint name*"),
    ],
)
def test_bad_option_values_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()


def test_chat_model_as_image_model_stops_the_run_before_any_request(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk-test-separation-0123456789abcdef"
    monkeypatch.setenv("OPENAI_MODEL", "gpt-4o-all")
    monkeypatch.setenv("OPENAI_API_KEY", key)
    pytester.makepyfile(test_app="def test_app(): pass")
    result = pytester.runpytest_subprocess(names.OPTION)
    assert result.ret == pytest.ExitCode.USAGE_ERROR == 4
    result.stderr.fnmatch_lines(["ERROR: *OPENAI_MODEL=gpt-4o-all is a chat model*"])
    result.stderr.fnmatch_lines(["*set OPENAI_IMAGE_MODEL=gpt-image-1*"])
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output and "INTERNALERROR" not in output
    assert "collected" not in output  # stopped at start-up: nothing collected, nothing sent
    assert key not in output


def test_unknown_endpoint_and_bad_reference_settings_are_usage_errors(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = pytester.runpytest(names.OPTION, f"{names.OPTION_ENDPOINT}=relay")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *relay*"])
    monkeypatch.setenv(names.ENV_REFERENCE_DEFECTS, "drops_n,no_such_defect")
    result = pytester.runpytest(names.OPTION)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: IMAGEGEN_REFERENCE_DEFECTS: unknown defect(s) no_such_defect*"]
    )
    monkeypatch.setenv(names.ENV_REFERENCE_DEFECTS, "")
    monkeypatch.setenv(names.ENV_REFERENCE_LATENCY, "fast")
    result = pytester.runpytest(names.OPTION)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: IMAGEGEN_REFERENCE_LATENCY='fast': *low=0.5,high=2*"])


def test_without_the_option_the_suite_is_not_collected(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app="def test_app(): pass")
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["test_app.py::test_app", "1 test collected*"])


def test_option_collects_only_the_suite_when_no_path_is_given(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app="def test_app(): pass")
    result = pytester.runpytest(names.OPTION, "--collect-only", "-q")
    ids = [line for line in result.stdout.lines if "::" in line]
    assert ids == [
        f"pytest_imagegen/suites/test_conformance.py::{check_id}[reference]" for check_id in PLAIN
    ] or all("test_conformance.py::" in line for line in ids)
    assert len(ids) == len(PLAIN)
    assert not any("test_app" in line for line in ids)


def test_explicit_paths_are_collected_with_the_suite_whatever_python_files_says(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini("[pytest]\npython_files = check_*.py\n")
    pytester.makepyfile(check_app="def test_app(): pass")
    result = pytester.runpytest(names.OPTION, "check_app.py", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["check_app.py::test_app"])
    suite = [line for line in result.stdout.lines if "test_conformance.py::" in line]
    assert len(suite) == len(PLAIN)


def test_naming_the_suite_file_keeps_the_users_selection(pytester: pytest.Pytester) -> None:
    node = f"{suite.suite_path()}::separation.image_model_is_image[reference]"
    result = pytester.runpytest(names.OPTION, node, "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*1 test collected*"])


def test_select_checks_by_name_with_k(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(names.OPTION, "-k", "separation", "-v")
    result.assert_outcomes(passed=sum(1 for c in PLAIN if c.startswith("separation.")))
    result.stdout.fnmatch_lines(
        ["*test_conformance.py::separation.image_call_carries_image_model[[]reference[]] PASSED*"]
    )
    # The terminal summary: the matrix of endpoints x areas.
    result.stdout.fnmatch_lines(
        [
            "*= imagegen =*",
            "verdict: PASSED: 5 test(s), 5 passed*",
            "endpoint   separ",
            "reference  5",
        ]
    )


def test_failure_shows_the_check_message_category_and_hint(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(names.ENV_REFERENCE_DEFECTS, "auth_wrong_status")
    result = pytester.runpytest(names.OPTION, "-k", "wrong_key")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ errors.wrong_key_is_authentication [[]reference[]] _*",
            # What was seen, then what was expected and the fix on the endpoint; the node id
            # is not repeated, the hint appears once, and no "code=None".
            "a wrong API key was classified server, expected authentication: server (HTTP 500):*",
            "expected: A wrong API key gets an `authentication` error*",
            "fix: Make the endpoint answer a wrong or missing key with HTTP 401*",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "failures (1):",
            "  FAILED errors.wrong_key_is_authentication [[]reference[]] (technical /",
            "      authentication)",
        ]
    )
    out = result.stdout.str()
    assert "code=None" not in out and "retry with backoff" not in out
    # pytest's failure section and the imagegen summary, each once (pytest's own short
    # summary quotes the whole message when CI is set, so it is left out of the count).
    sections = out.split("short test summary info")[0]
    assert sections.count("fix: Make the endpoint answer a wrong or missing key") == 2


def test_suite_runs_against_a_configured_endpoint_and_skips_fault_checks(
    pytester: pytest.Pytester, local: ReferenceServer
) -> None:
    pytester.makepyprojecttoml(_endpoint_toml(local))
    result = pytester.runpytest(names.OPTION, "-k", "separation or errors", "-rs")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0, result.stdout.str()
    # Against an ordinary endpoint no fault can be scripted: those checks are skipped, and
    # so is the chat-model check (no chat_model configured).
    result.stdout.fnmatch_lines(
        ["SKIPPED [[]3[]] * needs fault injection: endpoint 'local' is not the reference server*"]
    )
    result.stdout.fnmatch_lines(
        ["SKIPPED [[]1[]] * endpoint 'local' has no chat_model; set one to run this check"]
    )
    # Nor does it declare how its chat model makes images.
    result.stdout.fnmatch_lines(["SKIPPED [[]1[]] * does not declare chat_images = *"])
    assert outcomes["skipped"] == 5
    assert len(local.log.generations) > 0  # the requests really went to this server


def test_endpoint_fixture_parametrizes_user_tests_without_the_option(
    pytester: pytest.Pytester, local: ReferenceServer
) -> None:
    pytester.makepyprojecttoml(_endpoint_toml(local) + _endpoint_toml(local, name="other"))
    pytester.makepyfile(
        test_app="""
        import pytest

        def test_each(imagegen_endpoint):
            assert imagegen_endpoint.base_url.startswith("http://127.0.0.1")

        @pytest.mark.imagegen(endpoints=["other"])
        def test_narrowed(imagegen_endpoint):
            assert imagegen_endpoint.name == "other"

        @pytest.mark.imagegen(profile="dall-e-3")
        def test_no_match(imagegen_endpoint):
            raise AssertionError("must not run")
        """
    )
    result = pytester.runpytest("-v", "-rs")
    result.stdout.fnmatch_lines(
        [
            "*test_each[[]local[]] PASSED*",
            "*test_each[[]other[]] PASSED*",
            "*test_narrowed[[]other[]] PASSED*",
            "*test_no_match[[]no-endpoint[]] SKIPPED*",
        ]
    )
    result.stdout.fnmatch_lines(["*no selected endpoint has profile 'dall-e-3'*"])
    result.assert_outcomes(passed=3, skipped=1)


def test_marker_mistakes_are_reported_at_collection(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_app="""
        import pytest

        @pytest.mark.imagegen(endpoints=["nope"])
        def test_typo(imagegen_endpoint):
            pass
        """,
        test_other="""
        import pytest

        @pytest.mark.imagegen(record="once")
        def test_bad_key(imagegen_endpoint):
            pass
        """,
    )
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(
        ["*names unknown endpoint(s) nope; configured: reference*"], consecutive=False
    )
    result.stdout.fnmatch_lines(
        ["*unknown argument(s) record; use endpoints, profile, record_mode*"]
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED  # collection errors


def test_client_fixture_generates_through_a_cassette(
    pytester: pytest.Pytester, local: ReferenceServer
) -> None:
    pytester.makepyprojecttoml(_endpoint_toml(local))
    pytester.makepyfile(
        test_app="""
        def test_generate(imagegen_client, imagegen_endpoint):
            image = imagegen_client.images.generate(
                model=imagegen_endpoint.image_model, prompt="a cat", quality="low",
                size="1024x1024",
            )
            assert image.data[0].b64_json
        """
    )
    record = pytester.runpytest(f"{names.OPTION_RECORD_MODE}=once", "--imagegen-report=r.json")
    record.assert_outcomes(passed=1)
    cassette = cassette_path(
        pytester.path / "cassettes", "local", "test_app.py", "test_generate[local]"
    )
    assert cassette.is_file(), list(pytester.path.rglob("*.yaml"))
    assert local.api_key not in cassette.read_text()
    test = json.loads((pytester.path / "r.json").read_text())["tests"][0]
    assert test["endpoint"] == "local" and test["cassette_status"] == "recorded"
    assert test["cost_usd"] == pytest.approx(0.011)  # gpt-image-1, low, 1024x1024
    assert test["attempts"] == test["successes"] == 1
    # Replay: the server is not asked again, and nothing is spent.
    before = len(local.log)
    replay = pytester.runpytest("--imagegen-report=r.json")
    replay.assert_outcomes(passed=1)
    assert len(local.log) == before
    test = json.loads((pytester.path / "r.json").read_text())["tests"][0]
    assert test["cassette_status"] == "replayed" and test["cost_usd"] == 0


def test_budget_guard_fails_the_request_that_would_pass_the_cap(
    pytester: pytest.Pytester, local: ReferenceServer
) -> None:
    pytester.makepyprojecttoml(_endpoint_toml(local))
    pytester.makepyfile(
        test_app="""
        import pytest

        @pytest.mark.parametrize("i", range(3))
        def test_generate(imagegen_client, imagegen_endpoint, i):
            imagegen_client.images.generate(
                model=imagegen_endpoint.image_model, prompt=f"cat {i}", quality="low",
                size="1024x1024",
            )
        """
    )
    result = pytester.runpytest(f"{names.OPTION_BUDGET}=0.025", "-p", "no:randomly")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        ["*would spend $0.0110, $0.0030 of $0.0250 left; raise --imagegen-budget*"]
    )
    assert len(local.log.generations) == 2  # the third request was never sent


def test_live_marker_skips_replayed_endpoints_with_the_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_KEY", "sk-relay-test-0000000000")
    pytester.makepyprojecttoml(
        """
        [[tool.imagegen.endpoints]]
        name = "relay"
        base_url = "https://relay.example.invalid/v1"
        api_key_env = "RELAY_KEY"
        image_model = "gpt-image-1-vip"
        """
    )
    pytester.makepyfile(
        test_app="""
        import pytest

        @pytest.mark.imagegen_live
        def test_live(imagegen_endpoint):
            raise AssertionError("must not run")
        """
    )
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*needs a live endpoint: endpoint 'relay' is replayed from cassettes (record mode "
            "none); run with --imagegen-record-mode=once*"
        ]
    )


def test_reference_fixture_resets_faults_between_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_app="""
        def test_first(imagegen_reference):
            imagegen_reference.faults.add("quota", times=5)
            imagegen_reference.defects.add("drops_n")

        def test_second(imagegen_reference, imagegen_reference_server):
            assert imagegen_reference is imagegen_reference_server
            assert len(imagegen_reference.faults) == 0
            assert not imagegen_reference.defects
            assert imagegen_reference.base_url.startswith("http://127.0.0.1:")
        """
    )
    pytester.runpytest("-p", "no:randomly").assert_outcomes(passed=2)


def test_listen_address_is_an_override_point(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def imagegen_reference_listen_address():
            return ("localhost", 0)
        """
    )
    pytester.makepyfile(
        test_app="""
        def test_bound(imagegen_settings, imagegen_endpoint):
            assert imagegen_endpoint.base_url.startswith("http://localhost:")
            assert imagegen_settings.endpoints[0].base_url == imagegen_endpoint.base_url
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_reference_latency_gives_the_embedded_endpoint_room(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(names.ENV_REFERENCE_LATENCY, "low=0.5,high=2")
    pytester.makepyfile(
        test_app="""
        def test_room(imagegen_endpoint, imagegen_reference):
            assert dict(imagegen_reference.latency) == {"low": 0.5, "high": 2.0}
            assert imagegen_endpoint.timeout_s >= 5
            assert imagegen_endpoint.deadline_s >= 3 * imagegen_endpoint.timeout_s
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_fixtures_and_markers_have_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures")
    for name in (
        "imagegen_settings",
        "imagegen_endpoint",
        "imagegen_client",
        "imagegen_reference",
        "imagegen_reference_server",
        "imagegen_reference_listen_address",
        "imagegen_budget",
    ):
        result.stdout.fnmatch_lines([f"{name}*", "    ?*"])
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(
        [
            "@pytest.mark.imagegen(endpoints=[[]...[]], profile=..., record_mode=...): *",
            "@pytest.mark.imagegen_live: needs a live endpoint*",
        ]
    )


def test_ini_key_names_the_config_file(pytester: pytest.Pytester, local: ReferenceServer) -> None:
    pytester.makeini(f"[pytest]\n{names.INI_CONFIG} = ci/imagegen.toml\n")
    config = pytester.path / "ci" / "imagegen.toml"
    config.parent.mkdir()
    config.write_text(_endpoint_toml(local).replace("[[tool.imagegen.endpoints]]", "[[endpoints]]"))
    result = pytester.runpytest(names.OPTION, "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*separation.image_model_is_image[[]local[]]"])


def test_junit_properties_carry_category_latency_and_cost(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(names.ENV_REFERENCE_DEFECTS, "auth_wrong_status")
    pytester.runpytest(names.OPTION, "-k", "wrong_key or schema", "--junitxml=junit.xml")
    xml = (pytester.path / "junit.xml").read_text()
    # The category at stake (a wrong key must be refused as authentication) and the class.
    assert '<property name="imagegen_category" value="authentication"' in xml
    assert '<property name="imagegen_problem_class" value="technical"' in xml
    assert '<property name="imagegen_hint" value="Make the endpoint answer a wrong' in xml
    assert '<property name="imagegen_check" value="response_shape.schema"' in xml
    assert re.search(r'name="imagegen_latency_s" value="\d+\.\d{3}"', xml)
    assert '<property name="imagegen_cost_usd" value="0.000000"' in xml
    assert "thumb_png_b64" not in xml  # the full data stays out of the XML


def test_marked_test_with_its_own_client_gets_a_cassette(
    pytester: pytest.Pytester, local: ReferenceServer
) -> None:
    pytester.makepyprojecttoml(_endpoint_toml(local))
    pytester.makepyfile(
        test_app=f"""
        import os
        import openai
        import pytest

        @pytest.mark.imagegen
        def test_app_code():
            client = openai.OpenAI(
                base_url="{local.base_url}", api_key=os.environ["LOCAL_KEY"], max_retries=0
            )
            client.images.generate(model="gpt-image-1", prompt="a dog", size="1024x1024")

        def test_unmarked():
            pass
        """
    )
    pytester.runpytest(f"{names.OPTION_RECORD_MODE}=once").assert_outcomes(passed=2)
    cassettes = pytester.path / "cassettes"
    cassette = cassette_path(cassettes, "local", "test_app.py", "test_app_code")
    assert cassette.is_file(), list(cassettes.rglob("*"))
    assert len(list(cassettes.rglob("*.yaml"))) == 1
    assert local.api_key not in cassette.read_text()
    before = len(local.log)
    pytester.runpytest().assert_outcomes(passed=2)  # replayed
    assert len(local.log) == before


def test_missing_cassette_of_a_remote_endpoint_is_one_short_failure_per_test(
    pytester: pytest.Pytester,
) -> None:
    """Replaying a remote endpoint with no cassette fails each test once, with the file and
    the record command, and with no traceback through the SDK or a second teardown error."""
    pytester.makepyprojecttoml(
        "\n".join(
            [
                "[tool.imagegen]",
                "[[tool.imagegen.endpoints]]",
                'name = "relay"',
                'base_url = "https://relay.invalid/v1"',
                'api_key_env = "RELAY_KEY"',
                'image_model = "gpt-image-1-vip"',
            ]
        )
    )
    result = pytester.runpytest("--imagegen", "-k", "request_is_valid")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "CassetteError: No cassette at *relay*request_shape.request_is_valid.yaml*",
            "*pytest --imagegen --imagegen-record-mode=once",
        ]
    )
    result.stdout.no_fnmatch_line("*_base_client.py*")
    result.stdout.no_fnmatch_line("*ERROR at teardown*")
    assert not (pytester.path / "cassettes").exists() or not any(
        (pytester.path / "cassettes").rglob("*.yaml")
    )


def test_keyless_replay_runs_the_wrong_key_check_from_its_cassette(
    pytester: pytest.Pytester, local: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI replays without the key: a check whose cassette exists replays, never skips."""
    pytester.makepyprojecttoml(_endpoint_toml(local))
    selection = ("-k", "wrong_key_is_authentication", "-p", "no:cacheprovider", "-rs")
    recorded = pytester.runpytest(names.OPTION, "--imagegen-record-mode=once", *selection)
    recorded.assert_outcomes(passed=1)
    local.reset()
    monkeypatch.delenv("LOCAL_KEY")
    replayed = pytester.runpytest(names.OPTION, *selection)
    replayed.assert_outcomes(passed=1)
    assert "has no API key" not in replayed.stdout.str()
    assert len(local.log) == 0, "the keyless replay reached the endpoint"
