"""The layout a newcomer relies on: layers import downwards, no import cycles, small
modules and classes. Read from the source with ast (nothing is imported)."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

QFLOW = Path(__file__).resolve().parent.parent / "qflow"
STDLIB = sys.stdlib_module_names
PURE_LIBRARIES = {"cronsim"}           # computation only: no I/O, no global state


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in QFLOW.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(QFLOW.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def _top_level_imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """Modules imported when ``name`` is imported (module level, not inside functions)."""
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names
                      if f"{node.module}.{a.name}" in known}
    # Importing qflow.a.b runs the __init__ of qflow.a first. The root package only
    # re-exports the public API (and is always initialised first), so it is left out.
    return found | {".".join(m.split(".")[:i]) for m in found if m.startswith("qflow.")
                    for i in range(2, m.count(".") + 1)}


def test_the_core_imports_only_the_standard_library_and_itself():
    for name, tree in _modules().items():
        if not name.startswith("qflow.core"):
            continue
        for imported in _top_level_imports(name, tree, set()) - {"qflow"}:
            root = imported.split(".")[0]
            assert root in STDLIB | PURE_LIBRARIES or imported.startswith(
                ("qflow.core", "qflow.errors")), \
                f"{name} imports {imported}"


def test_only_the_broker_and_the_cli_import_celery():
    allowed = ("qflow.broker", "qflow.cli")
    for name, tree in _modules().items():
        imports = {i.split(".")[0] for i in _top_level_imports(name, tree, set())}
        if imports & {"celery", "kombu", "billiard"}:
            assert name.startswith(allowed), f"{name} imports Celery"


def test_no_module_level_import_cycle_inside_qflow():
    modules = _modules()
    known = set(modules)
    graph = {n: {i for i in _top_level_imports(n, t, known) if i in known and i != n}
             for n, t in modules.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_modules_and_classes_stay_small():
    for path in QFLOW.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        text = path.read_text()
        assert text.count("\n") <= 400, f"{path} has {text.count(chr(10))} lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef):
                size = node.end_lineno - node.lineno + 1
                assert size <= 200, f"{path}: class {node.name} is {size} lines"
