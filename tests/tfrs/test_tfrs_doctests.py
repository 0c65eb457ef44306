"""The docstring examples of the TFRS adapter (`keras_sce.tfrs`) run as tests.

They need ``TF_USE_LEGACY_KERAS=1`` in their own process, so
``tests/test_doctests.py`` leaves them out and this file runs them, one case per
module, with that file's helpers.
"""

from __future__ import annotations

import os

import pytest

from tests.test_doctests import modules_with_examples, package_sources, run_examples

if os.environ.get("TF_USE_LEGACY_KERAS") not in ("1", "true", "True"):
    pytest.skip(
        "needs TF_USE_LEGACY_KERAS=1 in its own process: "
        "`TF_USE_LEGACY_KERAS=1 python -m pytest tests/tfrs` (as .ci/test does)",
        allow_module_level=True,
    )

WITH_EXAMPLES = modules_with_examples(package_sources(include=("keras_sce.tfrs",)))


def test_the_adapter_has_examples():
    assert "keras_sce.tfrs.sce_retrieval" in WITH_EXAMPLES


@pytest.mark.parametrize("module_name", WITH_EXAMPLES)
def test_docstring_examples(module_name):
    run_examples(module_name)
