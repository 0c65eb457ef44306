"""The Keras internals behind keras_sce.compat's SparseGrad section still behave as relied on.

One test per function: each fails when a Keras (or keras-hub) upgrade changes the
private behaviour the function uses, before SparseGrad itself breaks in a subtler way.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_sce import compat


class Block(keras.layers.Layer):
    """A block holding a Dense as an attribute and a Sequential, like a transformer block."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.up = keras.layers.Dense(6, name="up")
        self.ffn = keras.Sequential([keras.layers.Dense(4, name="f0")], name="ffn")

    def build(self, input_shape):
        self.up.build(input_shape)
        self.ffn.build((None, 6))

    def call(self, x):
        return self.ffn(self.up(x))


def _built_block():
    block = Block(name="block")
    block(np.zeros((2, 4), "float32"))
    return block


def test_iter_nested_layers_walks_plain_layers_and_sequentials():
    block = _built_block()
    names = [layer.name for layer in compat.iter_nested_layers(block)]
    assert names[0] == "block"
    assert {"up", "ffn", "f0"} <= set(names)
    assert names.index("ffn") < names.index("f0")
    assert len(names) == len(set(names))


def test_replace_sublayer_untracks_the_old_layer_and_keeps_the_order():
    block = _built_block()
    old = block.up
    new = keras.layers.Dense(6, name="up_new")
    new.build((None, 4))
    order = [id(w) for w in block.weights]
    compat.replace_sublayer(block, "up", new)
    assert block.up is new
    ids = [id(w) for w in block.weights]
    assert id(old.kernel) not in ids and id(new.kernel) in ids
    position = order.index(id(old.kernel))
    assert ids[position] == id(new.kernel) and len(ids) == len(order)
    x = np.ones((2, 4), "float32")
    np.testing.assert_allclose(block(x), block.ffn(new(x)), rtol=1e-6)
    with pytest.raises(ValueError):  # the tracker is locked again after the swap
        block.extra = keras.layers.Dense(2)


class Frozen(keras.layers.Layer):
    """A layer with a trainable kernel and two frozen variables."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(2, 3), initializer="ones")
        self.frozen = self.add_weight(shape=(2,), initializer="zeros", trainable=False)
        self.last = self.add_weight(shape=(1,), initializer="zeros", trainable=False)

    def call(self, x):
        return x @ self.kernel


def test_replace_tracked_variable_keeps_the_weight_position():
    layer = Frozen()
    layer.build((None, 2))
    old = layer.frozen
    order = [id(w) for w in layer.weights]
    new = keras.Variable(np.array([1.0, 2.0], "float32"), trainable=False)
    compat.replace_tracked_variable(layer, "frozen", new)
    assert layer.frozen is new
    ids = [id(w) for w in layer.weights]
    assert ids[order.index(id(old))] == id(new) and id(old) not in ids
    values = layer.get_weights()
    layer.set_weights(values)
    np.testing.assert_array_equal(layer.frozen.numpy(), [1.0, 2.0])
    with pytest.raises(ValueError, match="not a non-trainable variable"):
        compat.replace_tracked_variable(layer, "kernel", new)


@pytest.mark.parametrize("block", ["TransformerEncoder", "TransformerDecoder"])
def test_keras_hub_blocks_keep_their_feedforward_in_the_named_attributes(block):
    keras_hub = pytest.importorskip("keras_hub")
    layer = getattr(keras_hub.layers, block)(intermediate_dim=8, num_heads=2)
    layer(np.zeros((2, 3, 4), "float32"))
    attributes = compat.keras_hub_feedforward_attributes()
    shapes = {}
    for attribute, group in attributes.items():
        dense = getattr(layer, attribute)
        assert isinstance(dense, keras.layers.Dense)
        shapes[group] = tuple(dense.kernel.shape)
    assert shapes == {"intermediate": (4, 8), "output": (8, 4)}
