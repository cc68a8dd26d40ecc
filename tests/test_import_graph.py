"""The package's modules import each other without cycles, and none imports the plugin.

The imports are read from the source (``ast``), not by importing, so a cycle that only
bites in some import order, or only inside a function, is found too. Imports at module
level and inside functions count; imports under ``TYPE_CHECKING`` do not (they never run:
a helper may name its caller's type for annotations). Importing ``a.b.c`` runs ``a.b``
first, so an import also reaches the packages above its target, except those that hold
the importer.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pytest_imagegen

PACKAGE = "pytest_imagegen"
ROOT = Path(pytest_imagegen.__file__).resolve().parent


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package) for every ``.py`` file under ``root``."""
    found = {}
    for path in root.rglob("*.py"):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        found[".".join(parts)] = (path, is_package)
    return found


def _known(name: str, modules: dict[str, tuple[Path, bool]]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imported(module: str, path: Path, is_package: bool, modules: dict) -> set[str]:
    """The package's modules that ``module`` imports (targets and the packages above them)."""
    targets: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            # ``from a import b`` imports the submodule a.b when there is one.
            names = [f"{source}.{alias.name}" for alias in node.names] + [source]
        for name in names:
            if name.split(".")[0] != module.split(".")[0]:  # outside the package
                continue
            target = _known(name, modules)
            while target:
                if not module.startswith(target + ".") and target != module:
                    targets.add(target)
                target = target.rpartition(".")[0]
    return targets


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = _modules(root)
    return {name: _imported(name, path, pkg, modules) for name, (path, pkg) in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (``[a, b, ..., a]``), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 20 and any(graph.values()), "the walk found no modules or imports"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_no_module_of_the_package_imports_the_plugin() -> None:
    graph = import_graph()
    importers = sorted(m for m, targets in graph.items() if f"{PACKAGE}.plugin" in targets)
    assert not importers


def test_the_shipped_suite_does_not_import_the_plugin() -> None:
    suite = ROOT.parent / "suites" / "test_conformance.py"
    if not suite.is_file():  # installed from a wheel: the suite sits inside the package
        suite = ROOT / "suites" / "test_conformance.py"
    assert f"{PACKAGE}.suite" in _imported(
        f"{PACKAGE}.suites.test_conformance", suite, False, _modules(ROOT)
    )
    assert f"{PACKAGE}.plugin" not in _imported(
        f"{PACKAGE}.suites.test_conformance", suite, False, _modules(ROOT)
    )


@pytest.mark.parametrize(
    ("files", "cycle"),
    [
        (
            {"a.py": "from pkg import b", "b.py": "import pkg.c", "c.py": "from . import a"},
            ["pkg.a", "pkg.b", "pkg.c", "pkg.a"],
        ),
        # A submodule imported by its package's __init__, importing a sibling through it.
        (
            {
                "__init__.py": "from pkg.sub import x",
                "sub/__init__.py": "from pkg.sub import x",
                "sub/x.py": "def f():\n    from pkg import y",
                "y.py": "from pkg.sub import x",
            },
            ["pkg.sub", "pkg.sub.x", "pkg.y", "pkg.sub"],
        ),
        # A type-only back-reference is no cycle.
        (
            {
                "a.py": (
                    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import b"
                ),
                "b.py": "from pkg.a import f",
            },
            None,
        ),
        ({"a.py": "from pkg import b", "b.py": "import os"}, None),
    ],
)
def test_the_walk_finds_cycles(
    tmp_path: Path, files: dict[str, str], cycle: list[str] | None
) -> None:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for folder in [p for p in root.rglob("*") if p.is_dir()]:
        (folder / "__init__.py").touch()
    found = find_cycle(import_graph(root))
    if cycle is None:
        assert found is None
    else:
        assert found is not None and set(found) == set(cycle) and found[0] == found[-1]


def test_the_plugin_holds_hooks_and_fixtures_only() -> None:
    """Issue 14: the plugin is a thin layer; each responsibility lives in the module named
    for it. Every top-level function is a pytest hook or a fixture, and the file stays
    short enough to read in one sitting."""
    path = ROOT / "plugin.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    others = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            others.append(f"class {node.name}")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            fixture = any("pytest.fixture" in ast.unparse(d) for d in node.decorator_list)
            if not (node.name.startswith("pytest_") or fixture):
                others.append(f"def {node.name}")
    assert others == [], "logic to move to the module named for it: " + ", ".join(others)
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= 400, f"plugin.py has {lines} lines"
