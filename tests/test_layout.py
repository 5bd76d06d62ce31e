"""The package's shape: no import circles, parts never reach up into stages, small modules.

The import graph is read from the source (every ``import`` statement, at module level or
inside functions, ``TYPE_CHECKING`` blocks included), so a lazy import that hides a circle
from Python at run time still fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "pipeline"
PARTS = ("pipeline.data", "pipeline.models", "pipeline.engine", "pipeline.ensemble",
         "pipeline.pretrain")
# what a part may not import: the stages, the run contract, the jobs, the composed config
ABOVE_PARTS = ("pipeline.config", "pipeline.runs", "pipeline.jobs", "pipeline.folds",
               "pipeline.train", "pipeline.predict", "pipeline.pseudo", "pipeline.blend",
               "pipeline.submit", "pipeline.pairs", "pipeline.cli", "pipeline.demo",
               "pipeline.pretraining", "pipeline.sweep", "pipeline.executor")
MAX_LINES = 420


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The package module an imported dotted name lives in (None: outside the package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """Every package module ``module`` imports, anywhere in its source."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb from the importing package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pipeline import folds`` imports the module pipeline.folds
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                found.add(target)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path that starts and ends at the same module, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_function_level_and_from_package_imports() -> None:
    # pipeline.train imports its pseudo stage as ``from pipeline import pseudo``; the CLI
    # imports every stage inside its command functions.
    assert "pipeline.pseudo" in GRAPH["pipeline.train"]
    assert {"pipeline.train", "pipeline.blend", "pipeline.submit"} <= GRAPH["pipeline.cli"]


def test_no_import_cycles() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("part", PARTS)
def test_parts_never_import_stages(part: str) -> None:
    offenders = {
        module: sorted(t for t in targets if t.startswith(ABOVE_PARTS))
        for module, targets in GRAPH.items()
        if module == part or module.startswith(part + ".")
    }
    offenders = {m: t for m, t in offenders.items() if t}
    assert not offenders, f"parts import stages or the composed config: {offenders}"


def test_modules_stay_small() -> None:
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"
