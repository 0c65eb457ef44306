"""Every docstring example of the package (the ``>>>`` lines) runs as a test.

One case per module that holds examples, so a failure names the module. The
examples must run everywhere the suite runs: they build their own small inputs
(temporary files included) and never read ``../shared/data``. The TFRS adapter
(``keras_sce.tfrs``) needs ``TF_USE_LEGACY_KERAS=1`` and is left to its own
process (``tests/tfrs/test_tfrs_doctests.py``, with the helpers of this file);
``keras_sce/__main__.py`` is the CLI and is never imported.

An example is written in the runnable form only: a fenced Python block in a
docstring would never run, so none is allowed.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import io
import pathlib
import re

import pytest

import keras_sce  # cheap: the sub-packages load on first use

# Found from the package itself, so this file may live anywhere under tests/.
PACKAGE = pathlib.Path(keras_sce.__file__).resolve().parent
EXCLUDED = ("keras_sce.tfrs", "keras_sce.__main__")
# A fence line opens or closes a block; an opening one may name the block's language.
FENCE = re.compile(r"^\s*```\s*([\w+-]*)\s*$")
PYTHON = ("", "python", "python3", "py", "pycon")  # no language: read as Python too
DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_sources(include=("keras_sce",), exclude=()) -> dict[str, pathlib.Path]:
    """`{module name: path}` of the package's modules under `include`, less `exclude`."""
    sources = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        if name.startswith(tuple(include)) and not name.startswith(tuple(exclude)):
            sources[name] = path
    return sources


def modules_with_examples(sources: dict[str, pathlib.Path]) -> list[str]:
    """The names of the modules whose text holds a `>>> ` line."""
    return [name for name, path in sources.items() if ">>> " in path.read_text()]


def run_examples(module_name: str) -> None:
    """Runs every docstring example of `module_name`; fails with doctest's report."""
    module = importlib.import_module(module_name)
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    # The module's text holds ">>> ": if no example was collected, they sit where
    # doctest cannot see them (a comment, a string that is not a docstring).
    assert tests, f"{module_name}: '>>>' lines found, but no docstring example collected"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    report = io.StringIO()
    for test in tests:
        runner.run(test, out=report.write)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{module_name}:\n{report.getvalue()}"


def fenced_python_blocks(path: pathlib.Path) -> list[int]:
    """The line numbers of the fenced Python blocks that open in a docstring of `path`."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, DOCUMENTED):
            continue
        docstring = ast.get_docstring(node, clean=False)
        if docstring is None:
            continue
        first_line, inside = node.body[0].lineno, False
        for offset, line in enumerate(docstring.splitlines()):
            fence = FENCE.match(line)
            if fence and not inside and fence.group(1).lower() in PYTHON:
                lines.append(first_line + offset)
            inside = inside != bool(fence)
    return sorted(lines)


SOURCES = package_sources(exclude=EXCLUDED)
WITH_EXAMPLES = modules_with_examples(SOURCES)
ALL_SOURCES = package_sources()


@pytest.mark.parametrize("module_name", WITH_EXAMPLES)
def test_docstring_examples(module_name):
    run_examples(module_name)


def test_no_example_is_skipped():
    skipped = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in ALL_SOURCES.values()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "doctest: +SKIP" in line
    ]
    assert not skipped, f"docstring examples that never run: {skipped}"


def test_no_docstring_holds_a_fenced_python_block():
    # Such a block is never run, so it goes stale unseen: write `>>>` lines instead.
    fenced = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in ALL_SOURCES.values()
        for number in fenced_python_blocks(path)
    ]
    assert not fenced, f"fenced Python blocks in docstrings (write '>>>' examples): {fenced}"


def test_a_fenced_python_block_is_found(tmp_path):
    lines = [
        '"""Module.',
        "```python",  # line 2
        "x = 1",
        "```",
        '"""',
        "def f():",
        '    """Shell, not Python:',
        "    ```bash",
        "    ls",
        "    ```",
        '    """',
        "class C:",
        '    """Class, in no language:',
        "    ```",  # line 14
        "    C()",
        "    ```",
        '    """',
        "    def g(self):",
        '        """Method.',
        "        ```py",  # line 20
        "        1",
        "        ```",
        '        """',
        'CODE = """',
        "```python",  # not a docstring
        '"""',
    ]
    path = tmp_path / "module.py"
    path.write_text("\n".join(lines) + "\n")
    assert fenced_python_blocks(path) == [2, 14, 20]
