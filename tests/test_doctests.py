"""Every docstring example of the package (the ``>>>`` lines) runs as a test.

One case per module that holds examples, so a failure names the module. The
examples must run everywhere the suite runs: they build their own small inputs
(temporary files included) and never read ``../shared/data``. The TFRS adapter
(``keras_sce.tfrs``) needs ``TF_USE_LEGACY_KERAS=1`` and is left to its own
process; ``keras_sce/__main__.py`` is the CLI and is never imported.
"""

from __future__ import annotations

import doctest
import importlib
import io
import pathlib

import pytest

import keras_sce  # cheap: the sub-packages load on first use

# Found from the package itself, so this file may live anywhere under tests/.
PACKAGE = pathlib.Path(keras_sce.__file__).resolve().parent
EXCLUDED = ("keras_sce.tfrs", "keras_sce.__main__")


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, pathlib.Path]:
    sources = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        if not name.startswith(EXCLUDED):
            sources[name] = path
    return sources


SOURCES = _sources()
WITH_EXAMPLES = [name for name, path in SOURCES.items() if ">>> " in path.read_text()]


@pytest.mark.parametrize("module_name", WITH_EXAMPLES)
def test_docstring_examples(module_name):
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


def test_no_example_is_skipped():
    skipped = [
        f"{path.relative_to(PACKAGE.parent)}:{number}"
        for path in SOURCES.values()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "doctest: +SKIP" in line
    ]
    assert not skipped, f"docstring examples that never run: {skipped}"
