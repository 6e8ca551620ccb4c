"""The layout rules, checked on the source: data flows search_spaces -> orchestrator ->
trainers -> MLflow -> results, and no module imports itself back through another."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainers", "orchestrator", "results", "search_spaces", "benchmarks")


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (annotations, never imported)."""
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and getattr(node.test, "id", None) == "TYPE_CHECKING"
               for n in ast.walk(node)}
    return [n for n in ast.walk(tree) if id(n) not in skipped]


def project_imports() -> dict[str, set[str]]:
    """module -> project modules it imports at run time (at module level or in functions)."""
    graph: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            module = f"{package}.{path.stem}" if path.stem != "__init__" else package
            found: set[str] = set()
            for node in runtime_nodes(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found |= {alias.name for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module)
                    found |= {f"{node.module}.{alias.name}" for alias in node.names}
            graph[module] = {name for name in found if name.split(".")[0] in PACKAGES}
    modules = set(graph)
    return {m: {d for d in deps if d in modules and d != m} for m, deps in graph.items()}


def third_party(package: str) -> set[str]:
    names: set[str] = set()
    for path in (ROOT / package).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_no_import_cycle_anywhere():
    graph = project_imports()
    assert "trainers.loop" in graph and graph["trainers.loop"]
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


@pytest.mark.parametrize(("package", "forbidden"), [
    ("trainers", {"orchestrator", "results", "benchmarks", "search_spaces", "ray", "mlflow"}),
    ("results", {"trainers", "orchestrator", "benchmarks", "ray"}),
    ("orchestrator", {"benchmarks"}),  # it calls results.report once the sweep ends
])
def test_data_flows_one_way(package, forbidden):
    assert not third_party(package) & forbidden, third_party(package) & forbidden
