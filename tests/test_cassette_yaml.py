"""The cassette YAML reader gives exactly what PyYAML's safe loader gives, faster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_imagegen import _yaml

REPO = Path(__file__).resolve().parent.parent

# Plain scalars that the YAML 1.1 resolver reads as something other than a string.
TRICKY = [
    "yes",
    "No",
    "on",
    "OFF",
    "y",
    "~",
    "null",
    "Null",
    "",
    "true",
    "False",
    "0",
    "-0",
    "+1",
    "007",
    "0o17",
    "0x1F",
    "1_000",
    "1:30",
    "1e3",
    "1.5",
    ".inf",
    "-.Inf",
    ".nan",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "<<",
    "=",
    "- a",
    "a: b",
    "#x",
    "'q'",
    "@at",
    "%p",
    "!tag",
    "&anchor",
    "*alias",
    "multi\nline",
    "  padded  ",
    "tab\there",
    "ünïcödé",
    "中文",
    "\x85next",
    "\ufeffbom",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.sampled_from(TRICKY),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(
            st.one_of(st.text(), st.sampled_from(TRICKY), st.integers()), children, max_size=4
        ),
    ),
    max_leaves=20,
)


def _safe(text: str) -> Any:
    """What the safe loader reads (libyaml's when available, as the reader's fallback)."""
    return yaml.load(text, Loader=_yaml.SafeLoader)


def _outcome(load: Any, text: str) -> tuple[str, Any]:
    try:
        return "value", load(text)
    except yaml.YAMLError as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=300, deadline=None)
@given(document=documents, flow=st.sampled_from([None, False, True]))
def test_reads_what_the_safe_dumper_writes_as_the_safe_loader_does(
    document: Any, flow: Any
) -> None:
    text = yaml.dump(document, Dumper=_yaml.SafeDumper, default_flow_style=flow, allow_unicode=True)
    assert _yaml.load(text) == _safe(text)


@pytest.mark.parametrize(
    "text",
    [
        "a: &x [1, 2]\nb: *x\n",  # anchors and aliases
        "base: &b {k: 1}\nderived:\n  <<: *b\n  j: 2\n",  # merge keys
        "body: !!binary aGVsbG8=\n",  # explicit tags
        "when: 2001-12-14\nok: yes\nrate: 1.5\nmask: 0o17\nhex: 0x1F\nbig: 1_000\n",
        "? [complex, key]\n: value\n",  # the safe loader refuses it: so must the reader
        "just a scalar\n",
        "'quoted top'\n",
        "",
        "- !!str 12\n- !!int '12'\n",
        "k: |\n  literal\n  block\nf: >\n  folded\n  text\n",
    ],
)
def test_documents_beyond_the_fast_path_read_as_the_safe_loader_reads_them(text: str) -> None:
    assert _outcome(_yaml.load, text) == _outcome(_safe, text)


@pytest.mark.parametrize(
    "text", ["a: [1, 2\n", "a: b: c\n", "--- 1\n--- 2\n", "a: *missing\n", "\t- tab\n"]
)
def test_invalid_yaml_fails_as_the_safe_loader_fails(text: str) -> None:
    with pytest.raises(yaml.YAMLError) as safe:
        _safe(text)
    with pytest.raises(type(safe.value)) as fast:
        _yaml.load(text)
    assert str(fast.value) == str(safe.value)


def test_this_repos_cassettes_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The committed cassettes are read without the safe loader (the fast path is on)."""
    if not _yaml.WITH_LIBYAML:
        pytest.skip("PyYAML was built without libyaml")  # the fast path needs its parser
    files = sorted((REPO / "cassettes").rglob("*.yaml"))
    assert files
    expected = {path: _safe(path.read_text(encoding="utf-8")) for path in files}

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("fell back to yaml.load")

    monkeypatch.setattr(yaml, "load", refuse)
    for path in files:
        assert _yaml.load(path.read_text(encoding="utf-8")) == expected[path], path


def test_without_libyaml_the_pure_python_safe_loader_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_yaml, "CParser", None)
    monkeypatch.setattr(_yaml, "SafeLoader", yaml.SafeLoader)
    assert _yaml.load("a: [1, yes, '2']\n") == {"a": [1, True, "2"]}


def test_libyaml_is_used_when_available() -> None:
    if yaml.__with_libyaml__:
        assert _yaml.SafeLoader is yaml.CSafeLoader and _yaml.SafeDumper is yaml.CSafeDumper
        assert _yaml.WITH_LIBYAML


def test_plain_floats_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cassettes carry latencies as plain floats; reading them must not fall back."""
    if not _yaml.WITH_LIBYAML:
        pytest.skip("PyYAML was built without libyaml")  # the fast path needs its parser
    odd = "e: 1_000.5\n"  # YAML 1.1 float forms beyond plain decimals: the safe loader's
    assert _yaml.load(odd) == _safe(odd) == {"e": 1000.5}
    plain = "a: 0.29\nb: -1.5e+3\nc: .5\nd: 1.\nf: 1.0e5\n"
    expected = _safe(plain)
    assert expected == {"a": 0.29, "b": -1500.0, "c": 0.5, "d": 1.0, "f": "1.0e5"}

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("fell back to yaml.load")

    monkeypatch.setattr(yaml, "load", refuse)
    assert _yaml.load(plain) == expected
