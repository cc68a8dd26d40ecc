"""The documentation covers what the code offers: every check, option, fixture, fault and
defect; the README stays a short entry point with the two commands and links to docs/.

Run as a script (``python tests/test_docs.py``) to refresh the generated check catalogue
in docs/checks.md after a check's docstring changed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_imagegen import names, plugin
from pytest_imagegen.checks import REGISTRY, catalogue
from pytest_imagegen.config import ENV_ENDPOINT_SETTINGS
from pytest_imagegen.reference import DEFECTS, FAULTS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PAGES = {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md"))}
DOCS = "\n".join(PAGES.values())
CHECKS_PAGE = ROOT / "docs" / "checks.md"
CATALOGUE = re.compile(r"(<!-- catalogue:[^\n]*-->\n)(.*?)(\n<!-- end of catalogue -->)", re.S)


@pytest.mark.parametrize("check_id", sorted(REGISTRY))
def test_every_check_is_in_the_catalogue(check_id: str) -> None:
    assert f"`{check_id}`" in PAGES["checks.md"]


def test_the_catalogue_is_generated_from_the_registry() -> None:
    found = CATALOGUE.search(PAGES["checks.md"])
    assert found, "docs/checks.md has no generated catalogue block"
    assert found.group(2) == catalogue(), (
        "docs/checks.md's catalogue is out of date: run `python tests/test_docs.py`"
    )


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
        names.OPTION_BASE_URL,
        names.OPTION_IMAGE_MODEL,
        names.OPTION_CHAT_MODEL,
        *ENV_ENDPOINT_SETTINGS.values(),
    ],
)
def test_every_option_is_documented(option: str) -> None:
    assert option in DOCS


def test_every_fixture_is_documented() -> None:
    fixtures = set(re.findall(r"^def (imagegen_\w+)\(", Path(plugin.__file__).read_text(), re.M))
    assert fixtures, "no fixtures found in plugin.py"
    missing = sorted(f for f in fixtures if f"`{f}`" not in DOCS)
    assert not missing


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_every_fault_is_documented(name: str) -> None:
    assert f"`{name}`" in DOCS


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_every_defect_is_documented(name: str) -> None:
    assert f"`{name}`" in DOCS


def test_readme_has_the_two_newcomer_commands() -> None:
    assert "pip install -e . && pytest --imagegen" in README
    assert 'pip install -e ".[test]" && pytest' in README


def test_readme_is_short_and_links_every_docs_page() -> None:
    assert len(README.encode("utf-8")) <= 10_240, "put reference material in docs/<topic>.md"
    unlinked = sorted(name for name in PAGES if f"(docs/{name})" not in README)
    assert not unlinked


@pytest.mark.parametrize("page", ["README.md", *(f"docs/{name}" for name in PAGES)])
def test_relative_links_point_at_files(page: str) -> None:
    path = ROOT / page
    targets = re.findall(r"\]\((?!https?://|#|mailto:)([^)#\s]+)", path.read_text("utf-8"))
    missing = [t for t in targets if not (path.parent / t).exists()]
    assert not missing


def refresh_catalogue() -> None:
    text = CHECKS_PAGE.read_text(encoding="utf-8")
    found = CATALOGUE.search(text)
    if found is None:
        raise SystemExit("docs/checks.md has no <!-- catalogue: ... --> block")
    updated = text[: found.start(2)] + catalogue() + text[found.end(2) :]
    CHECKS_PAGE.write_text(updated, encoding="utf-8")
    print(f"{CHECKS_PAGE}: catalogue {'refreshed' if updated != text else 'already current'}")


if __name__ == "__main__":
    refresh_catalogue()
