"""Checks the package's shape (issue 14): the haares import graph has no cycle, and no file or function
is longer than a reader can hold unless it is listed below with the reason.

The import graph counts every import that runs: module-level ones and those inside functions (several
modules defer heavy imports such as torch or sqlalchemy that way); only `if TYPE_CHECKING:` blocks are
left out. A deferred import hides a cycle from the interpreter but not from a reader, who still has to
trace both modules to change either: the db <-> migrations cycle this test was written for was one.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "haares"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60

LONG_FUNCTIONS = {
    "jobs/lease.py:claim": "one statement and its transaction; most of the length is the docstring",
    "grids.py:_grid_list": "a data table (the grid definitions), not logic",
    "train.py:_loop": "the training step loop; split, its state would have to travel between functions",
    "cli/enqueue.py:register": "CLI module, being rebuilt by issue 14 item 3",
    "cli/enqueue.py:enqueue": "CLI module, being rebuilt by issue 14 item 3",
    "cli/run.py:run_foreground": "CLI module, being rebuilt by issue 14 item 3 (a runner module)",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module, module: str, is_package: bool) -> list[tuple[str, list[str]]]:
    """(imported module, names) for each import statement of the module, outside TYPE_CHECKING blocks."""
    found: list[tuple[str, list[str]]] = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            pending += node.orelse
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, [alias.name for alias in node.names]))
        pending += list(ast.iter_child_nodes(node))
    return found


def import_graph() -> dict[str, set[str]]:
    """haares module -> the haares modules it imports (`from pkg import submodule` counts as an edge to the
    submodule; `from pkg import name` as one to the package)."""
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        for target, names in _imports(tree, module, path.name == "__init__.py"):
            if target not in modules:
                continue
            subs = {f"{target}.{n}" for n in names if f"{target}.{n}" in modules}
            plain = [n for n in names if f"{target}.{n}" not in modules]
            graph[module] |= subs | ({target} if plain or not names else set())
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a list of nodes (first repeated last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_module_level_and_deferred_imports():
    graph = import_graph()
    assert "haares.jobs.migrations" in graph["haares.jobs.db"]
    assert "haares.protocol" in graph["haares.worker_child"]
    assert "haares.timelimit" in graph["haares.worker_options"]  # inside WorkerOptions.deadline


def test_haares_modules_import_each_other_without_a_cycle():
    assert find_cycle(import_graph()) is None


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_no_file_is_longer_than_a_reader_can_hold():
    long = {str(p.relative_to(PACKAGE)): _lines(p) for p in PACKAGE.rglob("*.py") if _lines(p) > MAX_FILE_LINES}
    assert long == {}


def test_no_function_is_longer_than_a_screen_unless_listed():
    long = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.name}"] = n
    assert {name: n for name, n in long.items() if name not in LONG_FUNCTIONS} == {}
