"""The package's layering, checked from the source text.

Why the layers exist: imports point one way,

    cli -> train -> track / methods -> metrics / data / embedded -> models

with the core modules (`errors`, `files`, `images`, `config`, `registry`) underneath everything.
So a reader can walk one run from the command line down to a parquet row without going back and
forth, and each layer can be understood (and tested) knowing only the layers below it.

How it is checked: every module under `adaptscope/` is parsed with `ast` (nothing is imported, so
the check is fast and works even when a module would fail to import). Every `import x` /
`from x import y` counts, including imports inside functions (they run too, only later) and
relative imports; `from adaptscope.methods import base` counts as importing
`adaptscope.methods.base` when `base` is a sub-module. Imports under `if TYPE_CHECKING:` are
ignored: they never run. Importing a module does not count as importing its parent packages (Python
runs those anyway; counting them would make every module depend on `adaptscope/__init__.py`).

Each import between two modules of the package becomes an arrow between "units": a sub-package
(`models`, `data`, `embedded`, `metrics`, `methods`, `track`, `train`, `viz`) or a top-level module
(`cli`, `spec`, `config`, ..., and `__init__` for `adaptscope/__init__.py`). To change the rules,
edit the tables just below.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "adaptscope"

# --------------------------------------------------------------------------------------------
# The rules. A unit may always import itself; everything not forbidden below is allowed.
# --------------------------------------------------------------------------------------------

# The core top-level modules: small, dependency-free helpers every layer may use.
CORE = frozenset({"errors", "files", "images", "registry", "config", "version"})

# unit -> units it must not import.
FORBIDDEN: dict[str, frozenset[str]] = {
    "track": frozenset({"train", "viz", "cli"}),
    "viz": frozenset({"train", "methods", "cli", "embedded"}),
    "methods": frozenset({"train", "track", "viz", "cli"}),
    "metrics": frozenset({"train", "track", "methods", "viz", "cli", "embedded"}),
    "embedded": frozenset({"train", "track", "methods", "viz", "cli"}),
}

# unit -> the only units it may import (an allow-list: anything else is a violation).
ONLY_ALLOWED: dict[str, frozenset[str]] = {
    "data": frozenset({"errors", "files", "images", "config"}),
    "models": frozenset({"errors", "files"}),
    **{core: CORE for core in CORE},  # the core modules only import each other
    "spec": CORE | {"embedded", "protocols"},  # it names the embedded default's shipped files
    # and resolves metrics.protocol
    "protocols": CORE,  # the named evaluation protocols: a table of settings
    "__init__": CORE | {"track"},  # the lazy `adaptscope.load_trajectories`
}

# Units nobody may import: the command line is the top.
TOP = frozenset({"cli"})


# --------------------------------------------------------------------------------------------
# Scanning: package directory -> import arrows between its modules.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Import:
    """One import statement's arrow between two modules of the scanned package."""

    source: str  # importing module, e.g. "adaptscope.track.external"
    target: str  # imported module, e.g. "adaptscope.train.loop"
    file: str  # importing file, relative to the package's parent, e.g. "adaptscope/track/x.py"
    line: int

    @property
    def site(self) -> str:
        return f"{self.file}:{self.line}"

    def __repr__(self) -> str:  # short, for pytest's listing of the fixture on failure
        return f"<{self.site} {self.source} -> {self.target}>"


def module_name(path: Path, package_root: Path) -> str:
    """`adaptscope/track/store.py` -> "adaptscope.track.store"; an `__init__.py` names its
    package."""
    parts = list(path.relative_to(package_root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str) -> str:
    """The unit a module of the package belongs to: "adaptscope" -> "__init__",
    "adaptscope.track.store" -> "track", "adaptscope.cli" -> "cli"."""
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(body: Iterable[ast.AST]) -> Iterable[ast.AST]:
    """Every statement in `body`, nested ones included (function and class bodies, branches,
    `try` handlers, `match` cases), except those under `if TYPE_CHECKING:`. Imports are
    statements, so expressions are never entered: that keeps the scan fast."""
    for node in body:
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _statements(node.orelse)  # only the `else:` branch runs
            continue
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            yield from _statements(getattr(node, field, ()))


def _raw_imports(tree: ast.Module, package: str) -> Iterable[tuple[str, list[str] | None, int]]:
    """(absolute dotted name, imported names or None for `import x`, line) for each import;
    relative imports are resolved against `package`."""
    for node in _statements(tree.body):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield base, [a.name for a in node.names], node.lineno


def _resolve(name: str, modules: set[str]) -> str | None:
    """The longest prefix of `name` that is a module of the package (None: not ours)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def scan_package(package_root: Path) -> list[Import]:
    """Every import arrow between modules of the package in `package_root` (a directory whose
    name is the package's name), sorted by file and line."""
    files = sorted(package_root.rglob("*.py"))
    modules = {module_name(f, package_root): f for f in files}
    known = set(modules)
    imports: list[Import] = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        rel = path.relative_to(package_root.parent).as_posix()
        for base, names, line in _raw_imports(tree, package):
            if names is None:  # `import a.b.c`
                targets = [_resolve(base, known)]
            else:  # `from a.b import c, d`: c counts as a.b.c when that is a module
                targets = [
                    f"{base}.{n}" if f"{base}.{n}" in known else _resolve(base, known)
                    for n in names
                ]
            for target in dict.fromkeys(targets):  # de-duplicated, order kept
                if target is not None:
                    imports.append(Import(module, target, rel, line))
    return sorted(imports, key=lambda i: (i.file, i.line, i.target))


# --------------------------------------------------------------------------------------------
# Rules and cycles.
# --------------------------------------------------------------------------------------------


def layer_violations(imports: Iterable[Import]) -> list[str]:
    """One line per import that breaks the tables above."""
    problems = []
    for imp in imports:
        src, dst = unit_of(imp.source), unit_of(imp.target)
        if src == dst:
            continue
        if dst in TOP:
            why = f"nothing imports {dst}"
        elif dst in FORBIDDEN.get(src, ()):
            why = f"{src} must not import {dst}"
        elif src in ONLY_ALLOWED and dst not in ONLY_ALLOWED[src]:
            why = f"{src} may import only {', '.join(sorted(ONLY_ALLOWED[src]))}"
        else:
            continue
        problems.append(f"{imp.site}: {src} -> {dst}  ({imp.source} -> {imp.target}; {why})")
    return problems


def build_graph(
    imports: Iterable[Import], node: Callable[[str], str] = str
) -> dict[str, dict[str, Import]]:
    """node -> {successor: first import making that arrow}; self-loops dropped. `node` maps a
    module name to a graph node (identity: module graph; `unit_of`: unit graph)."""
    graph: dict[str, dict[str, Import]] = {}
    for imp in imports:
        src, dst = node(imp.source), node(imp.target)
        graph.setdefault(dst, {})  # every node present, even one that imports nothing
        if src != dst:
            graph.setdefault(src, {}).setdefault(dst, imp)
    return graph


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the strongly connected components of `graph`."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def _cycle_through(start: str, members: set[str], graph: Mapping[str, Mapping]) -> list[str]:
    """A shortest cycle start -> ... -> start inside one strongly connected component."""
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v]):
            if w not in members:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if w not in parent:
                parent[w] = v
                queue.append(w)
    raise AssertionError(f"{start} is in a component but on no cycle")  # pragma: no cover


def cycles(graph: Mapping[str, Mapping[str, Import]]) -> list[str]:
    """One report per strongly connected component of more than one node: a concrete cycle
    with the import behind each arrow, then every arrow inside the component."""
    reports = []
    for component in strongly_connected(graph):
        if len(component) < 2:
            continue
        members = set(component)
        loop = _cycle_through(component[0], members, graph)
        lines = [f"cycle between {{{', '.join(component)}}}: {' -> '.join(loop)}"]
        lines += [f"    {a} -> {b}  at {graph[a][b].site}" for a, b in pairwise(loop)]
        inside = [(a, b) for a in component for b in sorted(graph[a]) if b in members]
        if len(inside) > len(loop) - 1:
            lines.append("  all arrows inside it (first import of each):")
            lines += [f"    {a} -> {b}  at {graph[a][b].site}" for a, b in inside]
        reports.append("\n".join(lines))
    return reports


# --------------------------------------------------------------------------------------------
# The tests.
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    found = scan_package(PACKAGE_ROOT)
    assert found, f"no imports found under {PACKAGE_ROOT}: is the path right?"
    return found


def test_layers_point_one_way(imports):
    problems = layer_violations(imports)
    if problems:
        pytest.fail(
            "imports against the layering (see the tables at the top):\n" + "\n".join(problems),
            pytrace=False,
        )


def test_no_import_cycle_between_units(imports):
    found = cycles(build_graph(imports, unit_of))
    if found:
        pytest.fail("import cycles between units:\n" + "\n".join(found), pytrace=False)


def test_no_import_cycle_between_modules(imports):
    found = cycles(build_graph(imports))
    if found:
        pytest.fail("import cycles between modules:\n" + "\n".join(found), pytrace=False)


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root / "adaptscope"


def test_checker_flags_a_synthetic_cycle_and_forbidden_arrow(tmp_path):
    """A broken checker must not pass silently: a made-up package with one forbidden arrow
    (track -> viz) and two sub-packages importing each other is flagged by both rules."""
    root = _write(
        tmp_path,
        {
            "adaptscope/__init__.py": "",
            "adaptscope/errors.py": "",
            "adaptscope/track/__init__.py": "",
            "adaptscope/track/a.py": "from adaptscope.viz import b\n",
            "adaptscope/viz/__init__.py": "",
            "adaptscope/viz/b.py": "def f():\n    from ..track import a\n",
            "adaptscope/metrics/__init__.py": "from adaptscope import errors\n",
        },
    )
    imports = scan_package(root)

    problems = layer_violations(imports)
    assert problems == [
        "adaptscope/track/a.py:1: track -> viz  "
        "(adaptscope.track.a -> adaptscope.viz.b; track must not import viz)"
    ]

    unit_cycles = cycles(build_graph(imports, unit_of))
    assert len(unit_cycles) == 1
    assert unit_cycles[0].startswith("cycle between {track, viz}: track -> viz -> track")
    assert "adaptscope/viz/b.py:2" in unit_cycles[0]

    module_cycles = cycles(build_graph(imports))
    assert len(module_cycles) == 1
    assert "adaptscope.track.a -> adaptscope.viz.b -> adaptscope.track.a" in module_cycles[0]


def test_checker_resolves_imports_like_python(tmp_path):
    """Relative imports, `from pkg import submodule`, attribute imports, imports inside
    functions, and `if TYPE_CHECKING:` blocks (skipped, but not their `else:`)."""
    root = _write(
        tmp_path,
        {
            "adaptscope/__init__.py": "X = 1\n",
            "adaptscope/files.py": "",
            "adaptscope/methods/__init__.py": "from . import base\nfrom .base import Method\n",
            "adaptscope/methods/base.py": "Method = object\n",
            "adaptscope/train/__init__.py": "",
            "adaptscope/train/loop.py": (
                "import os\n"
                "import typing\n"
                "from typing import TYPE_CHECKING\n"
                "from adaptscope import X, files\n"
                "from adaptscope.methods import base, Method\n"
                "import adaptscope.methods.base\n"
                "if TYPE_CHECKING:\n"
                "    from adaptscope.viz import nothing\n"
                "else:\n"
                "    from ..errors import E\n"
                "if typing.TYPE_CHECKING:\n"
                "    import adaptscope.cli\n"
                "def run():\n"
                "    from .. import spec\n"
            ),
            "adaptscope/errors.py": "E = 1\n",
            "adaptscope/spec.py": "",
        },
    )
    arrows = {(i.source, i.target, i.line) for i in scan_package(root)}
    assert arrows == {
        ("adaptscope.methods", "adaptscope.methods.base", 1),
        ("adaptscope.methods", "adaptscope.methods.base", 2),
        ("adaptscope.train.loop", "adaptscope", 4),
        ("adaptscope.train.loop", "adaptscope.files", 4),
        ("adaptscope.train.loop", "adaptscope.methods.base", 5),
        ("adaptscope.train.loop", "adaptscope.methods", 5),
        ("adaptscope.train.loop", "adaptscope.methods.base", 6),
        ("adaptscope.train.loop", "adaptscope.errors", 10),
        ("adaptscope.train.loop", "adaptscope.spec", 14),
    }
    assert {unit_of(t) for _, t, _ in arrows} == {"methods", "__init__", "files", "errors", "spec"}
