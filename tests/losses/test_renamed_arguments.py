"""Renamed arguments keep their old name for one release, with a DeprecationWarning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tensorflow as tf

import keras_sce
from keras_sce.ops import scalable_cross_entropy


def _batch():
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(4, 6, 8)).astype("float32")
    labels = rng.integers(1, 300, size=(4, 6)).astype("int32")
    table = tf.constant(rng.normal(size=(300, 8)).astype("float32"))
    return hidden, labels, table


def test_sce_op_accepts_catalog_chunk_size_with_a_warning_naming_chunk_size():
    hidden, labels, table = _batch()
    new = scalable_cross_entropy(hidden, labels, table, chunk_size=64, bucket_size_y=16, seed=3)
    with pytest.warns(DeprecationWarning, match="use `chunk_size`"):
        old = scalable_cross_entropy(
            hidden, labels, table, catalog_chunk_size=64, bucket_size_y=16, seed=3
        )
    assert float(old) == float(new)


def test_sce_op_refuses_both_names_and_unknown_ones():
    hidden, labels, table = _batch()
    with pytest.raises(TypeError, match="not both"), pytest.warns(DeprecationWarning):
        scalable_cross_entropy(hidden, labels, table, chunk_size=64, catalog_chunk_size=32)
    with pytest.raises(TypeError, match="unexpected keyword arguments"):
        scalable_cross_entropy(hidden, labels, table, chunk=64)


def test_sce_loss_accepts_catalog_chunk_size_with_a_warning():
    with pytest.warns(DeprecationWarning, match="SCELoss: `catalog_chunk_size`"):
        loss = keras_sce.SCELoss(None, catalog_chunk_size=128)
    assert loss.chunk_size == 128
    assert "catalog_chunk_size" not in loss.get_config()


def test_sce_loss_config_saved_with_the_old_name_loads_silently():
    config = keras_sce.SCELoss(None, chunk_size=128).get_config()
    config["catalog_chunk_size"] = config.pop("chunk_size")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        clone = keras_sce.SCELoss.from_config(config)
    assert clone.chunk_size == 128
