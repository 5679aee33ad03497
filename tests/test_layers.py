"""The layering rule, checked on the source: the core imports no adapter, and no cycles.

`notifier/` is the core: it never imports Tornado, Celery, `web` or `tasks`, and no chain
of imports among its modules comes back to where it started (function-local imports
count too: a cycle hidden in a function is still a cycle). Nor among packages: in the
graph whose nodes are the packages one level down (`notifier.realtime`, `web.handlers`)
and the modules beside them (`notifier.errors`, `web.app`), no two reach each other.
"""

from __future__ import annotations

import ast
from collections.abc import Collection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "notifier"
FORBIDDEN = ("tornado", "celery", "web", "tasks")
TOPS = ("notifier", "web", "tasks")


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
    # Package __init__ modules re-export nothing here, so a package is not its modules.
    assert find_cycles(core_graph()) == []


def test_the_rule_sees_a_forbidden_import(tmp_path):
    """The checker itself can fail: a file importing tornado is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("import tornado.web\nfrom tasks import celery\n")
    assert {"tornado.web", "tasks", "tasks.celery"} <= imports_of(bad)


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle a depth-first walk meets (each as the path that closes it)."""
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str], on_path: set[str], done: set[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in on_path:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in done:
                visit(nxt, [*path, nxt], on_path | {nxt}, done)
        done.add(node)

    done: set[str] = set()
    for start in sorted(graph):
        if start not in done:
            visit(start, [start], {start}, done)
    return cycles


def modules_of_the_tree() -> dict[str, Path]:
    return {module_name(p): p for top in TOPS for p in (ROOT / top).rglob("*.py")}


def module_imports(path: Path, modules: Collection[str]) -> set[str]:
    """The modules a file imports; `from package import module` is that module alone (a
    package's __init__ runs first, but here it re-exports nothing of its modules)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
    return {m for m in found if m in modules}


def package_of(module: str) -> str:
    """A module's unit in the package graph: its package one level below the top
    (`notifier.realtime`, `web.handlers`), or itself (`notifier.errors`, `web.app`)."""
    head = ".".join(module.split(".")[:2])
    return head if (ROOT.joinpath(*head.split(".")) / "__init__.py").is_file() else module


def package_graph() -> dict[str, set[str]]:
    modules = modules_of_the_tree()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        here = package_of(name)
        for imported in module_imports(path, modules):
            there = package_of(imported)
            if there != here:
                graph.setdefault(here, set()).add(there)
    return graph


def test_no_import_cycles_between_packages():
    """`notifier.notifications` may use `notifier.storage`, or the other way round, never
    both: a package is a layer of its own, whatever its modules import one by one."""
    assert find_cycles(package_graph()) == []


def test_no_import_cycles_between_modules_anywhere():
    modules = modules_of_the_tree()
    graph = {name: module_imports(path, modules) - {name} for name, path in modules.items()}
    assert find_cycles(graph) == []


def test_the_cycle_check_sees_a_cycle():
    """The checker itself can fail: two packages that import each other are a cycle."""
    graph = {"notifier.a": {"notifier.b"}, "notifier.b": {"notifier.c", "notifier.a"}}
    assert find_cycles(graph) == [["notifier.a", "notifier.b", "notifier.a"]]


def test_the_core_reads_no_file_of_the_adapters():
    """Its templates are its own package data: no path into `web/` is spelled in the core."""
    spelled = [
        f"{module_name(path)}: {node.value!r}"
        for path in CORE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and (node.value in ("web", "static") or node.value.startswith(("web/", "static/")))
    ]
    assert spelled == []
