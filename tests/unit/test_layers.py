"""The package layering of src/dockyard, read from the source (every import, including those inside
functions and under TYPE_CHECKING), so a wrong-way import fails here instead of in review.

A module may import its own package and any package on a LOWER layer, never one on its own layer
or above. Lowest first:

| layer | packages                                    | why there                                                        |
|-------|---------------------------------------------|------------------------------------------------------------------|
| 0     | top-level modules (errors, settings, paging, safe_text, runtime, ...) | vocabulary every layer shares; they import no subpackage |
| 1     | metadata, storage, client                   | SQL tables and the blob store; the CLI's HTTP credentials        |
| 2     | auth                                        | who is calling (principals, passwords, token keys)               |
| 3     | policy                                      | the rules (access, tag rules, retention, security policy, gates); gates reach reports and signatures through Protocols |
| 4     | domain                                      | services that change the registry; they consult policy           |
| 5     | jobs                                        | the durable job queue and worker that services enqueue into      |
| 6     | scanning, signing                           | scans (job handlers) and signatures over domain + jobs; no edge between the two |
| 7     | api                                         | HTTP handlers: parse, authorize, call a service, serialize       |
| 8     | app (app.py)                                | the one composition root, create_app(settings)                   |
| 9     | cli                                         | the command line; `serve` and `worker` build the app              |
| 10    | __main__                                    | `python -m dockyard`                                             |

A new subpackage must be added to LAYERS. A separate check finds any import cycle between
subpackages (even one the table would allow, should it ever be edited to put two on one layer).
Modules are also held to MAX_LINES, as the project's standards ask.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "dockyard"
MAX_LINES = 500

LAYERS: dict[str, int] = {
    "": 0,  # the package's own __init__ and its top-level modules
    "metadata": 1, "storage": 1, "client": 1,
    "auth": 2,
    "policy": 3,
    "domain": 4,
    "jobs": 5,
    "scanning": 6, "signing": 6,
    "api": 7,
    "app": 8,
    "cli": 9,
    "__main__": 10,
}
ENTRY_MODULES = {"app", "__main__"}  # top-level modules that are not shared vocabulary


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(SRC.rglob("*.py")) if "migrations" not in p.parts}


def _imports(name: str, path: Path) -> set[str]:
    """Every dockyard module `name` imports, wherever the statement is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            # `from dockyard.x import y` may name a submodule y
            found.update(f"{module}.{alias.name}" for alias in node.names)
    modules = _modules()
    return {m for m in found if m in modules and m != name}


def _area(module: str) -> str:
    """The layer key of a module: its subpackage, an entry module's name, or "" (shared top level)."""
    parts = module.split(".")
    if len(parts) == 1:
        return ""
    if (SRC / parts[1]).is_dir():
        return parts[1]
    return parts[1] if parts[1] in ENTRY_MODULES else ""


def _graph() -> dict[str, set[str]]:
    return {name: _imports(name, path) for name, path in _modules().items()}


def test_every_package_has_a_layer():
    unknown = sorted({_area(m) for m in _modules()} - LAYERS.keys())
    assert not unknown, f"add these packages to LAYERS in {Path(__file__).name} (and its table): {unknown}"


def test_imports_follow_the_layers():
    wrong = []
    for module, imported in _graph().items():
        mine = _area(module)
        for target in sorted(imported):
            theirs = _area(target)
            if theirs != mine and LAYERS.get(theirs, -1) >= LAYERS.get(mine, -1):
                wrong.append(f"{module} (layer {LAYERS.get(mine)}) imports {target} (layer {LAYERS.get(theirs)})")
            elif theirs == mine == "" and target in ("dockyard.app", "dockyard.__main__"):
                wrong.append(f"{module} imports the entry module {target}")
    assert not wrong, "imports against the layering (see the table in this test's docstring):\n" + "\n".join(wrong)


def test_no_import_cycle_between_subpackages():
    edges: dict[str, set[str]] = defaultdict(set)
    for module, imported in _graph().items():
        for target in imported:
            if _area(module) != _area(target):
                edges[_area(module)].add(_area(target))
    cycle = _find_cycle(edges)
    assert cycle is None, "import cycle between subpackages: " + " -> ".join(a or "dockyard" for a in cycle)


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_modules_stay_under_the_size_limit():
    big = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them by what they own): {big}"


def test_the_checks_can_fail():
    """The readers above see what they must: function-level and relative imports, and a cycle."""
    tree = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert _find_cycle(tree) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
    # cli/__init__.py builds the app inside a function: that import must be seen
    assert "dockyard.app" in _imports("dockyard.cli", SRC / "cli" / "__init__.py")
    assert _area("dockyard.errors") == "" and _area("dockyard.app") == "app" and _area("dockyard.api.oci.routes") == "api"
