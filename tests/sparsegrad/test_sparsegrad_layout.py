"""The keras_sce.sparsegrad modules form an import tree: no cycle, no hidden import.

Read from the source with `ast`: every import of a sibling module is at module level
(none inside a function, where it would hide a cycle), the imports between the
sub-package's modules have no cycle, and no module imports a private (underscore)
name from another.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "keras_sce" / "sparsegrad"
PREFIX = "keras_sce.sparsegrad."
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def _imports(module: str):
    """`(sibling, imported names, at module level)` for each keras_sce import."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("keras_sce"):
            names = [alias.name for alias in node.names]
            found.append((node.module, names, id(node) in top))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("keras_sce"):
                    found.append((alias.name, [], id(node) in top))
    return found


@pytest.mark.parametrize("module", MODULES)
def test_imports_are_at_module_level_and_public(module):
    for source, names, at_top in _imports(module):
        assert at_top, f"{module} imports {source} inside a function"
        assert source != "keras_sce.sparsegrad", f"{module} imports the package, not a module"
        private = [name for name in names if name.startswith("_")]
        assert not private, f"{module} imports private {private} from {source}"


def test_the_modules_import_each_other_without_a_cycle():
    graph = {
        module: {
            source[len(PREFIX) :] for source, _, _ in _imports(module) if source.startswith(PREFIX)
        }
        for module in MODULES
    }
    assert all(target in graph for targets in graph.values() for target in targets)
    done, active = set(), []

    def visit(module):
        assert module not in active, f"import cycle: {' -> '.join([*active, module])}"
        if module in done:
            return
        active.append(module)
        for target in sorted(graph[module]):
            visit(target)
        active.pop()
        done.add(module)

    for module in MODULES:
        visit(module)
    # The layer does not depend on the keras-hub integration built on it.
    assert not graph["layer"] & {"integration", "slots", "optimizer"}
