"""Small helpers shared by the Keras wrappers."""

from __future__ import annotations

import keras
import tensorflow as tf


def require_tensorflow_backend(what: str) -> None:
    """Raises a clear error when Keras runs on another backend."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{what} runs on TensorFlow ops and needs the Keras TensorFlow backend, but "
            f"Keras is using {backend!r}. Set KERAS_BACKEND=tensorflow before importing keras."
        )


def resolve_table(item_embeddings, allow_unbuilt: bool = False):
    """The `[C, d]` variable behind an Embedding-like layer or a variable.

    Returns the Keras variable (or tf.Variable) itself — never a detached copy —
    so that gradients reach it. With `allow_unbuilt` an Embedding-like layer that
    is not built yet is accepted (returns None); it is resolved at call time.
    """
    if isinstance(item_embeddings, (keras.Variable, tf.Variable)):
        table = item_embeddings
    elif hasattr(item_embeddings, "embeddings") or isinstance(item_embeddings, keras.layers.Layer):
        if not getattr(item_embeddings, "built", True) and allow_unbuilt:
            return None
        table = getattr(item_embeddings, "embeddings", None)
        if table is None:
            raise ValueError(
                f"Layer {getattr(item_embeddings, 'name', item_embeddings)!r} has no "
                "`.embeddings` variable; pass an Embedding-like layer or the table variable."
            )
    elif isinstance(item_embeddings, tf.Tensor):
        raise TypeError(
            "The item table must be a variable or an Embedding-like layer, not a tensor: "
            "a tensor is a detached copy and the loss could not train it."
        )
    else:
        raise TypeError(
            "`item_embeddings` must be an Embedding-like layer (with `.embeddings`) or a "
            f"variable, got {type(item_embeddings).__name__}."
        )
    if len(tuple(table.shape)) != 2:
        raise ValueError(f"The item table must be [num_items, dim], got shape {table.shape}.")
    return table


def table_value(table):
    """The backing tf.Variable of a Keras variable (so gathers give IndexedSlices)."""
    return table.value if isinstance(table, keras.Variable) else table
