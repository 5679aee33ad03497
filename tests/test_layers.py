"""The layering rule, checked on the source: the core imports no adapter, and no cycles.

`notifier/` is the core: it never imports Tornado, Celery, `web` or `tasks`, and no chain
of imports among its modules comes back to where it started (function-local imports
count too: a cycle hidden in a function is still a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "notifier"
FORBIDDEN = ("tornado", "celery", "web", "tasks")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports (`from a import b` counts as a.b when that is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def core_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in CORE.rglob("*.py")}
    return {
        name: {m for m in imports_of(p) if m in modules and m != name}
        for name, p in modules.items()
    }


def test_the_core_imports_no_adapter_or_framework():
    offenders = [
        f"{module_name(path)} imports {name}"
        for path in CORE.rglob("*.py")
        for name in imports_of(path)
        if name.split(".")[0] in FORBIDDEN
    ]
    assert offenders == []


def test_the_core_has_no_import_cycles():
    graph = core_graph()
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str], on_path: set[str], done: set[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in on_path:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt], on_path | {nxt}, done)
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [start], {start}, done)
    # Package __init__ modules re-export nothing here, so a package is not its modules.
    assert cycles == []


def test_the_rule_sees_a_forbidden_import(tmp_path):
    """The checker itself can fail: a file importing tornado is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("import tornado.web\nfrom tasks import celery\n")
    assert {"tornado.web", "tasks", "tasks.celery"} <= imports_of(bad)
