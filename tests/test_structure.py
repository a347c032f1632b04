"""Checks the package's shape (issue 14): the haares import graph has no cycle, no file is longer than
400 lines, and no function is longer than 60 unless a `# Long because: ...` line directly above its def
(or its first decorator) says why; such a line above a function that is no longer long is stale and fails.

The import graph counts every import that runs: module-level ones and those inside functions (several
modules defer heavy imports such as torch or sqlalchemy that way); only `if TYPE_CHECKING:` blocks are
left out. A deferred import hides a cycle from the interpreter but not from a reader, who still has to
trace both modules to change either: the db <-> migrations cycle this test was written for was one.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "haares"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60

LONG_REASON = re.compile(r"^\s*# Long because: \S")
"""The one-line reason a function may be over MAX_FUNCTION_LINES, written directly above it."""


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


def function_lengths(source: str) -> tuple[list[tuple[str, int, bool]], list[int]]:
    """(name, lines from def to end, has a reason) for each function of `source` (nested ones too), and
    the line numbers of `# Long because:` lines that sit above no function (misplaced)."""
    lines = source.splitlines()
    found, used = [], set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            above = min([node.lineno] + [d.lineno for d in node.decorator_list]) - 1
            has_reason = above >= 1 and bool(LONG_REASON.match(lines[above - 1]))
            if has_reason:
                used.add(above)
            found.append((node.name, node.end_lineno - node.lineno + 1, has_reason))
    misplaced = [n for n, line in enumerate(lines, 1) if LONG_REASON.match(line) and n not in used]
    return found, misplaced


def _long_function_problems(source: str, where: str) -> list[str]:
    found, misplaced = function_lengths(source)
    problems = [f"{where}:{name} has {n} lines and no '# Long because: ...' line above its def"
                for name, n, has_reason in found if n > MAX_FUNCTION_LINES and not has_reason]
    problems += [f"{where}:{name} has {n} lines, yet a stale '# Long because:' line above it"
                 for name, n, has_reason in found if n <= MAX_FUNCTION_LINES and has_reason]
    problems += [f"{where}, line {n}: '# Long because:' above no def" for n in misplaced]
    return problems


def _function(name: str, body_lines: int, above: str = "") -> str:
    return above + f"def {name}():\n" + "    x = 1\n" * body_lines


def test_the_length_rule_sees_a_long_function_without_its_reason_and_a_stale_one():
    source = "\n".join([
        _function("short", 3),
        _function("long_bare", 70),
        _function("long_with_reason", 70, above="# Long because: a table.\n"),
        _function("decorated", 70, above="# Long because: a table.\n@staticmethod\n"),
        _function("stale", 3, above="# Long because: it used to be.\n"),
        "# Long because: nothing below.\nx = 2\n",
    ])
    orphan = source.splitlines().index("# Long because: nothing below.") + 1
    assert _long_function_problems(source, "m.py") == [
        "m.py:long_bare has 71 lines and no '# Long because: ...' line above its def",
        "m.py:stale has 4 lines, yet a stale '# Long because:' line above it",
        f"m.py, line {orphan}: '# Long because:' above no def",
    ]


def test_no_function_is_longer_than_a_screen_without_a_reason_above_it():
    problems, functions, files = [], 0, 0
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        files += 1
        functions += len(function_lengths(source)[0])
        problems += _long_function_problems(source, str(path.relative_to(PACKAGE)))
    # A scan that found (almost) nothing would pass vacuously: the package has ~100 files, ~650 functions.
    assert files > 50 and functions > 400, (files, functions)
    assert problems == []
