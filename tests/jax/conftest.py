"""The JAX suite: collected only when Keras runs on JAX (``.ci/test-jax`` runs it).

Run it in its own process: ``KERAS_BACKEND=jax python -m pytest tests/jax -q``. In the
TensorFlow suite these files are not collected (nothing here imports JAX there).
"""

from __future__ import annotations

import os

if os.environ.get("KERAS_BACKEND") != "jax":
    collect_ignore_glob = ["test_*.py"]
