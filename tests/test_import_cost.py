"""The plugin costs nothing when ``--imagegen`` is not given.

A plain ``pytest`` run in a project with the plugin installed must not import openai, vcr,
Pillow or hypothesis *because of us*, nor the heavier parts of this package. Found while
writing this test: hypothesis's own pytest plugin (``_hypothesis_pytestplugin``, loaded by
entry point as ``hypothesispytest``) imports nothing of hypothesis at load time, but its
``pytest_terminal_summary`` hook runs ``from hypothesis.internal.observability import
_WROTE_TO`` unconditionally, so ``hypothesis`` is in ``sys.modules`` at the end of every
run where that plugin is active, with or without ours. Hence two measurements: with
hypothesis's plugin disabled, nothing heavy may be imported at all; with it enabled, the
set of heavy modules must equal the set of a run with our plugin disabled.
"""

from __future__ import annotations

import json
import os

import pytest

pytest_plugins = ["pytester"]

HEAVY = ("openai", "httpx2", "vcr", "PIL", "hypothesis", "werkzeug", "yaml", "pydantic")
OURS_HEAVY = (
    "pytest_imagegen.config",
    "pytest_imagegen.cassettes",
    "pytest_imagegen.checks",
    "pytest_imagegen.reference",
    "pytest_imagegen.report",
    "pytest_imagegen.budget",
)

# Recorded as late as possible: after every other plugin's terminal summary.
RECORDER = f"""
import json, sys
import pytest

@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    names = {list(HEAVY + OURS_HEAVY)!r}
    loaded = sorted(n for n in names if n in sys.modules)
    plugin = "pytest_imagegen.plugin" in sys.modules
    with open("modules.json", "w") as fh:
        json.dump({{"heavy": loaded, "plugin_loaded": plugin}}, fh)
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for name in list(os.environ):
        if name.startswith(("OPENAI_", "IMAGEGEN_")):
            monkeypatch.delenv(name)
    pytester.makeconftest(RECORDER)
    pytester.makepyfile(test_app="def test_app():\n    assert True\n")
    return pytester


def _modules(pytester: pytest.Pytester, *args: str) -> dict:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    return json.loads((pytester.path / "modules.json").read_text())


def test_plain_run_imports_nothing_heavy(project: pytest.Pytester) -> None:
    seen = _modules(project, "-p", "no:hypothesispytest")
    assert seen["plugin_loaded"], "the plugin was not loaded, so this test proves nothing"
    assert seen["heavy"] == []


def test_plain_run_imports_what_a_run_without_the_plugin_imports(
    project: pytest.Pytester,
) -> None:
    with_plugin = _modules(project)
    without_plugin = _modules(project, "-p", "no:imagegen")
    assert with_plugin["plugin_loaded"] and not without_plugin["plugin_loaded"]
    # hypothesis's own plugin imports hypothesis in its terminal summary; we add nothing.
    assert with_plugin["heavy"] == without_plugin["heavy"]
    assert not set(with_plugin["heavy"]) - {"hypothesis"}


def test_the_recorder_notices_heavy_imports(project: pytest.Pytester) -> None:
    # The measurement itself can fail: a run that uses an imagegen fixture imports them.
    project.makepyfile(test_uses="def test_uses(imagegen_settings):\n    pass\n")
    seen = _modules(project, "-p", "no:hypothesispytest")
    assert "pytest_imagegen.config" in seen["heavy"] and "pydantic" in seen["heavy"]
