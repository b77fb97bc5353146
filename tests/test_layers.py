"""The layering rule, checked on the source: a lower layer never imports a higher one.

Layers, bottom to top (a package imports only from its own layer's package
and the layers below; the two packages of layer 2 know nothing of each other)::

    6 top          actorq (its __init__), actorq.testing, actorq.pytest_plugin
    5 node         actorq.node
    4 jobs         actorq.jobs
    3 supervisors  actorq.supervisors
    2 transports   actorq.transports | actorq.journal
    1 kernel       actorq._kernel
    0 base         actorq.errors, actorq.ids, actorq._version, actorq._exports

Every .py file the package installs is found through pyproject.toml's
package-dir map and parsed, never imported. Every import of an ``actorq``
module counts, wherever it is written: at module level, inside a function,
under ``if TYPE_CHECKING:``, relative (resolved against the file's package),
or through ``importlib.import_module("actorq...")``. Import cycles between
files are checked too: none inside ``actorq.node``, and none anywhere outside
``actorq._kernel``, whose actor, ref and system modules name each other by
design (system imports actor and ref; they import system, and actor imports
ref, only under ``TYPE_CHECKING``, for their type hints).
"""

from __future__ import annotations

import ast
import tomllib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from test_api import dotted_name

ROOT = Path(__file__).resolve().parent.parent

# unit -> layer; a unit is a package, or a top-level module of its own
LAYERS: dict[str, int] = {
    "actorq.errors": 0, "actorq.ids": 0, "actorq._version": 0, "actorq._exports": 0,
    "actorq._kernel": 1,
    "actorq.transports": 2, "actorq.journal": 2,
    "actorq.supervisors": 3,
    "actorq.jobs": 4,
    "actorq.node": 5,
    "actorq": 6, "actorq.testing": 6, "actorq.pytest_plugin": 6,
}
LAYER_NAMES = ["base", "kernel", "transports/journal", "supervisors", "jobs", "node", "top"]
INDEPENDENT = {"actorq.transports", "actorq.journal"}  # one layer, two packages that never meet
CYCLES_BY_DESIGN = "actorq._kernel"  # actor <-> system, ref <-> system: type hints only


@dataclass(frozen=True)
class Import:
    """One import of an actorq module: where it is written and what it names."""

    file: str  # relative to the repository root
    line: int
    module: str  # the importing file's module
    target: str  # the imported module, as precisely as the source names it


@dataclass(frozen=True)
class Source:
    """One installed .py file."""

    module: str
    path: Path
    file: str  # relative to the repository root

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


def installed_sources(root: Path = ROOT) -> list[Source]:
    """Every .py file under pyproject's package-dir map, named as it installs.

    ``supervisors/child.py`` is ``actorq.supervisors.child``; a package is named by its ``__init__.py``.
    """
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = {package: (root / directory).resolve() for package, directory in setuptools["package-dir"].items()}
    sources: dict[Path, Source] = {}
    # deepest directory first, so a file belongs to its nearest mapped package
    for package, directory in sorted(mapped.items(), key=lambda item: len(item[1].parts), reverse=True):
        for path in sorted(directory.rglob("*.py")):
            if path in sources or "__pycache__" in path.parts:
                continue
            parts = [package, *path.relative_to(directory).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            sources[path] = Source(".".join(parts), path, path.relative_to(root.resolve()).as_posix())
    return sorted(sources.values(), key=lambda source: source.module)


def _is_actorq(name: str) -> bool:
    return name == "actorq" or name.startswith("actorq.")


def imports_of(source: Source, text: str, known: set[str]) -> list[Import]:
    """Every import of an actorq module in `text`, the source of `source`.

    `known` holds every module name of the package: ``from actorq.x import y``
    names module ``actorq.x.y`` when that is a module, else ``actorq.x``.
    """
    found: list[Import] = []

    def add(node: ast.AST, target: str) -> None:
        if _is_actorq(target):
            found.append(Import(source.file, getattr(node, "lineno", 0), source.module, target))

    for node in ast.walk(ast.parse(text, filename=source.file)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = source.module if source.is_package else source.module.rpartition(".")[0]
                parts = package.split(".")
                base_parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = {f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names}
            for target in sorted(targets):
                add(node, target)
        elif isinstance(node, ast.Call) and dotted_name(node.func) in {"importlib.import_module", "import_module",
                                                                       "__import__"}:
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                add(node, node.args[0].value)
    return found


def unit_of(module: str) -> str | None:
    """The unit of the layer table that `module` belongs to, or None when the table has none."""
    if module == "actorq":
        return module
    unit = ".".join(module.split(".")[:2])
    return unit if unit in LAYERS else None


def scan(root: Path = ROOT) -> tuple[list[Source], list[Import]]:
    sources = installed_sources(root)
    known = {source.module for source in sources}
    imports = [imp for source in sources for imp in imports_of(source, source.path.read_text(), known)]
    return sources, imports


def why_not_allowed(src: str, dst: str) -> str | None:
    """Why unit `src` may not import unit `dst`; None when it may."""
    if src == dst or LAYERS[dst] < LAYERS[src]:
        return None
    if LAYERS[dst] > LAYERS[src]:
        return f"a higher layer ({src}: {LAYER_NAMES[LAYERS[src]]} < {dst}: {LAYER_NAMES[LAYERS[dst]]})"
    if {src, dst} <= INDEPENDENT:
        return f"the other package of layer {LAYER_NAMES[LAYERS[src]]} ({src} and {dst} are independent)"
    return None  # actorq.errors and actorq.ids, both base


def layer_violations(imports: list[Import]) -> list[str]:
    """One line per import that goes up a layer or sideways to the other package of its layer."""
    problems = []
    for imp in imports:
        src, dst = unit_of(imp.module), unit_of(imp.target)
        if src is None or dst is None:
            problems.append(f"{imp.file}:{imp.line}: imports {imp.target}: "
                            f"no layer for {imp.module if src is None else imp.target} in tests/test_layers.py")
        elif (why := why_not_allowed(src, dst)) is not None:
            problems.append(f"{imp.file}:{imp.line}: imports {imp.target}, {why}")
    return problems


def layer_graph(imports: list[Import]) -> str:
    """The imports between units: one line per (from -> to) with their number, top layer first."""
    edges = Counter((unit_of(imp.module) or imp.module, unit_of(imp.target) or imp.target) for imp in imports)
    lines = []
    for (src, dst), count in sorted(edges.items(), key=lambda e: (-LAYERS.get(e[0][0], 99), e[0][0],
                                                                 -LAYERS.get(e[0][1], 99), e[0][1])):
        if src == dst:
            continue
        allowed = src in LAYERS and dst in LAYERS and why_not_allowed(src, dst) is None
        lines.append(f"  {src:<20} -> {dst:<20} {count:>4}{'' if allowed else '   <-- not allowed'}")
    return "import graph between layers (from -> to, imports):\n" + "\n".join(lines)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of `graph` with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return sorted(components)


@dataclass(frozen=True)
class Cycle:
    """Files that import each other, directly or around a loop, and the imports between them."""

    modules: tuple[str, ...]
    imports: tuple[str, ...]

    def __str__(self) -> str:
        return f"cycle between {', '.join(self.modules)}:\n" + "\n".join(f"  {line}" for line in self.imports)


def import_cycles(sources: list[Source], imports: list[Import], within: str = "actorq") -> list[Cycle]:
    """The import cycles between files of `within` (a package), each with the imports that close it."""
    known = {source.module for source in sources}

    def inside(module: str) -> bool:
        return module == within or module.startswith(within + ".")

    graph: dict[str, set[str]] = {source.module: set() for source in sources if inside(source.module)}
    for imp in imports:
        if imp.target in known and inside(imp.module) and inside(imp.target) and imp.target != imp.module:
            graph[imp.module].add(imp.target)
    cycles = []
    for component in strongly_connected(graph):
        members = set(component)
        lines = {f"{imp.file}:{imp.line} imports {imp.target}" for imp in imports
                 if imp.module in members and imp.target in members and imp.target != imp.module}
        cycles.append(Cycle(tuple(component), tuple(sorted(lines))))
    return cycles


# -- the checks -----------------------------------------------------------------------------


def test_no_import_goes_up_a_layer_or_across_to_its_neighbour() -> None:
    sources, imports = scan()
    roots = {source.file.split("/")[0] for source in sources}
    assert {"actorq", "supervisors", "transports"} <= roots and len(sources) > 40, roots
    graph = layer_graph(imports)
    print(f"\n{len(sources)} files, {len(imports)} imports of actorq modules\n{graph}")
    problems = layer_violations(imports)
    assert problems == [], "imports against the layering:\n" + "\n".join(problems) + "\n\n" + graph


def test_no_import_cycle_between_files_of_the_node() -> None:
    sources, imports = scan()
    cycles = import_cycles(sources, imports, within="actorq.node")
    assert cycles == [], "\n".join(map(str, cycles))


def test_no_import_cycle_between_files_outside_the_kernel() -> None:
    sources, imports = scan()
    cycles = import_cycles(sources, imports)
    by_design = [c for c in cycles if all(m.startswith(CYCLES_BY_DESIGN + ".") for m in c.modules)]
    print(f"\nimport cycles inside {CYCLES_BY_DESIGN} (by design):\n" + ("\n".join(map(str, by_design)) or "  none"))
    others = [c for c in cycles if c not in by_design]
    assert others == [], "\n".join(map(str, others))


# -- the scanner finds what it looks for ----------------------------------------------------

SAMPLE = {
    "actorq/__init__.py": "",
    "actorq/errors.py": "",
    "actorq/_kernel/__init__.py": "",
    "actorq/_kernel/ref.py": "from . import system\n",
    "actorq/_kernel/system.py": "from actorq._kernel import ref\n",
    "actorq/node/__init__.py": "from .node import Node\n",
    "actorq/node/node.py": (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "from ..errors import ActorQError\n"
        "if TYPE_CHECKING:\n"
        "    from actorq.node.tree import Tree\n"
    ),
    "actorq/node/tree.py": "def build():\n    from .node import Node\n    import actorq.testing\n",
    "actorq/testing.py": "",
    "actorq/journal/__init__.py": "",
    "actorq/journal/sqlite.py": "import importlib\nimportlib.import_module('actorq.transports.codec')\n",
    "transports/__init__.py": "",
    "transports/codec.py": "from actorq.supervisors import spec\nimport json\n",
    "supervisors/__init__.py": "",
    "supervisors/spec.py": "from ..node import node\n",
}
SAMPLE_PYPROJECT = '''
[tool.setuptools]
package-dir = { "actorq" = "actorq", "actorq.supervisors" = "supervisors", "actorq.transports" = "transports" }
packages = ["actorq"]
'''


def test_the_scanner_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Relative, in-function, TYPE_CHECKING and importlib imports all count; cycles are named."""
    (tmp_path / "pyproject.toml").write_text(SAMPLE_PYPROJECT)
    for name, text in SAMPLE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    sources, imports = scan(tmp_path)
    modules = {source.module for source in sources}
    assert {"actorq.supervisors.spec", "actorq.transports.codec", "actorq.node"} <= modules
    seen = {(imp.file, imp.line, imp.target) for imp in imports}
    assert seen == {
        ("actorq/_kernel/ref.py", 1, "actorq._kernel.system"),
        ("actorq/_kernel/system.py", 1, "actorq._kernel.ref"),
        ("actorq/node/__init__.py", 1, "actorq.node.node"),
        ("actorq/node/node.py", 3, "actorq.errors"),
        ("actorq/node/node.py", 5, "actorq.node.tree"),
        ("actorq/node/tree.py", 2, "actorq.node.node"),
        ("actorq/node/tree.py", 3, "actorq.testing"),
        ("actorq/journal/sqlite.py", 2, "actorq.transports.codec"),
        ("transports/codec.py", 1, "actorq.supervisors.spec"),
        ("supervisors/spec.py", 1, "actorq.node.node"),
    }, seen
    problems = layer_violations(imports)
    assert [p.split(": ")[0] for p in problems] == [
        "actorq/journal/sqlite.py:2", "actorq/node/tree.py:3", "supervisors/spec.py:1", "transports/codec.py:1",
    ], problems
    assert "the other package of layer" in problems[0] and "a higher layer" in problems[1]
    assert [str(c) for c in import_cycles(sources, imports, within="actorq.node")] == [
        "cycle between actorq.node.node, actorq.node.tree:\n"
        "  actorq/node/node.py:5 imports actorq.node.tree\n"
        "  actorq/node/tree.py:2 imports actorq.node.node"]
    assert [c.modules for c in import_cycles(sources, imports)] == [
        ("actorq._kernel.ref", "actorq._kernel.system"), ("actorq.node.node", "actorq.node.tree")]
    assert "<-- not allowed" in layer_graph(imports)
