"""The rules and defaults of the core: one definition, used by every door."""

from __future__ import annotations

import subprocess
import sys

import pytest

from keras_sce.ops import defaults


@pytest.mark.parametrize(
    "rows, expected", [(0, 1), (1, 2), (50, 14), (6400, 160), (51_200.0, 452)],
    ids=["empty", "one", "fifty", "6400", "float"],
)
def test_default_num_buckets_is_the_authors_rule(rows, expected):
    assert defaults.default_num_buckets(rows) == expected


@pytest.mark.parametrize("rows", [0, 1, 50, 6400, 51_200])
def test_tensor_rule_agrees_with_the_python_rule(rows):
    import tensorflow as tf

    value = int(defaults.default_num_buckets_tensor(tf.constant(rows)))
    assert value == defaults.default_num_buckets(rows)


def test_every_door_uses_the_same_defaults():
    import keras_sce
    from keras_sce import tuning
    from keras_sce.app import memory

    assert keras_sce.SCELoss(None).chunk_size == defaults.DEFAULT_CHUNK_SIZE
    assert keras_sce.SCELoss(None).bucket_size_y == defaults.DEFAULT_BUCKET_SIZE_Y
    assert tuning.authors_rule(6400) == defaults.default_num_buckets(6400)
    chunked = memory.predict_training_bytes(
        "sce", num_items=10**6, hidden_dim=64, rows=6400, batch_size=128, max_length=50
    )
    explicit = memory.predict_training_bytes(
        "sce", num_items=10**6, hidden_dim=64, rows=6400, batch_size=128, max_length=50,
        num_buckets=160, chunk_size=defaults.DEFAULT_CHUNK_SIZE,
    )
    assert chunked.parts == explicit.parts


def test_the_defaults_module_loads_no_tensorflow():
    code = (
        "import sys; from keras_sce.ops.defaults import DEFAULT_CHUNK_SIZE; "
        "import keras_sce.tuning, keras_sce.app.memory; "
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
