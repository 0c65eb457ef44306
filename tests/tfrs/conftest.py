"""Fixtures for the TFRS adapter tests (run in their own process with TF_USE_LEGACY_KERAS=1).

`.ci/test` runs ``TF_USE_LEGACY_KERAS=1 python -m pytest tests/tfrs``. In a process
without the variable, the test modules that need tf_keras skip themselves (the
import-order tests, which start their own subprocesses, run either way).
"""

from __future__ import annotations

import os

import pytest

LEGACY_KERAS = os.environ.get("TF_USE_LEGACY_KERAS") in ("1", "true", "True")


@pytest.fixture(autouse=True)
def _reset_tf_keras_state():
    """Fresh tf_keras names and the float32 policy for every TFRS test."""
    if LEGACY_KERAS:
        import tf_keras

        tf_keras.backend.clear_session()
        tf_keras.mixed_precision.set_global_policy("float32")
    yield
