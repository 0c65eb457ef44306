"""Small models and data shared by the JAX suite's loss and op tests."""

from __future__ import annotations

import keras
import numpy as np

# Loss tests: a catalogue of C items, sequences of L, hidden size D.
C, L, D = 97, 6, 8
# Op tests: odd sizes on purpose, so that no chunk divides the catalogue.
OP_C, OP_D = 29, 7


def embedding_model():
    """`(model, items)`: item ids `[B, L]` -> hidden states `[B, L, D]`, and its table layer."""
    keras.utils.set_random_seed(0)  # the same initial weights whatever ran before
    items = keras.layers.Embedding(C, D, name="items")
    inputs = keras.Input((L,), dtype="int32")
    hidden = keras.layers.Dense(D, name="proj")(items(inputs))
    return keras.Model(inputs, hidden), items


def next_item_batches(n=192, seed=0):
    """`(x, y)`: `n` histories and a learnable next item per position (2 padded)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, C, size=(n, L))
    y = (x * 5 + 1) % (C - 1) + 1  # a learnable map from each item to its next
    y[:, :2] = 0  # padding positions
    return x, y


def op_data(seed=0, shape=(3, 5), padding=True):
    """`(hidden, labels, table)` of the op sizes, with a few padding labels."""
    rng = np.random.default_rng(seed)
    table = rng.normal(size=(OP_C, OP_D)).astype("float32")
    hidden = rng.normal(size=(*shape, OP_D)).astype("float32")
    labels = rng.integers(1, OP_C, size=shape)
    if padding:
        labels[0, -2:] = 0
        labels[-1, 0] = 0
    return hidden, labels, table
