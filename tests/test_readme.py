"""The README documents what the code offers: every check, option, fixture, fault and defect."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_imagegen import names, plugin
from pytest_imagegen.checks import REGISTRY
from pytest_imagegen.reference import DEFECTS, FAULTS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("check_id", sorted(REGISTRY))
def test_every_check_is_in_the_catalogue(check_id: str) -> None:
    assert f"`{check_id}`" in README


@pytest.mark.parametrize(
    "option",
    [
        names.OPTION,
        names.OPTION_ENDPOINT,
        names.OPTION_RECORD_MODE,
        names.OPTION_BUDGET,
        names.OPTION_REPORT,
        names.OPTION_CONFIG,
        names.INI_CONFIG,
        names.ENV_REFERENCE_LATENCY,
        names.ENV_REFERENCE_DEFECTS,
    ],
)
def test_every_option_is_documented(option: str) -> None:
    assert option in README


def test_every_fixture_is_documented() -> None:
    fixtures = set(re.findall(r"^def (imagegen_\w+)\(", Path(plugin.__file__).read_text(), re.M))
    assert fixtures, "no fixtures found in plugin.py"
    missing = sorted(f for f in fixtures if f"`{f}`" not in README)
    assert not missing


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_every_fault_is_documented(name: str) -> None:
    assert f"`{name}`" in README


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_every_defect_is_documented(name: str) -> None:
    assert f"`{name}`" in README


def test_readme_has_the_two_newcomer_commands() -> None:
    assert "pip install -e . && pytest --imagegen" in README
    assert 'pip install -e ".[test]" && pytest' in README
