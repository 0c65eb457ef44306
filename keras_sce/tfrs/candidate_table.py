"""The candidate table of `keras_sce.tfrs.SCERetrieval`: what it may be bound to, and reading it.

The task trains the table it reads, so it must hold the table itself: a `tf_keras`
Embedding-like layer (anything with `.embeddings`, built on first read if needed) or
a `[num_candidates, d]` `tf.Variable`. A Keras 3 object cannot join a `tf_keras`
model, and a tensor or an array is a detached copy that would never train: both are
refused when the task is bound, with a message that says what to pass instead.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_sce.tfrs._stack import check_legacy_keras_stack

tf_keras, _ = check_legacy_keras_stack("keras_sce.tfrs.SCERetrieval")


def check_table_shape(table) -> None:
    """Raises `ValueError` unless `table` is `[num_candidates, dim]`."""
    if table.shape.rank != 2:
        raise ValueError(
            f"The candidate table must be [num_candidates, dim], got shape {table.shape}."
        )


def check_candidate_source(candidate_embeddings) -> None:
    """Checks what `SCERetrieval` is bound to (`None`, an unbound task, passes).

    Raises:
        TypeError: for a Keras 3 object, a tensor or an array, a built layer without
            `.embeddings`, or anything else that is neither a layer nor a variable.
        ValueError: for a variable that is not `[num_candidates, dim]`.
    """
    if candidate_embeddings is None:
        return
    if isinstance(candidate_embeddings, (keras.layers.Layer, keras.Variable)):
        raise TypeError(
            "SCERetrieval is a tf_keras (TFRS) task, but `candidate_embeddings` is a Keras 3 "
            f"object ({type(candidate_embeddings).__name__}); Keras 3 and tf_keras objects "
            "cannot be mixed in one model. Build the candidate tower with `tf.keras` "
            "(tf_keras) layers, or, for a Keras 3 model, use `keras_sce.SCELoss`."
        )
    if isinstance(candidate_embeddings, tf.Variable):
        check_table_shape(candidate_embeddings)
    elif hasattr(candidate_embeddings, "embeddings") or (
        isinstance(candidate_embeddings, tf_keras.layers.Layer) and not candidate_embeddings.built
    ):
        pass  # an Embedding-like layer, read (and built if needed) at call time
    elif isinstance(candidate_embeddings, tf_keras.layers.Layer):
        raise TypeError(
            f"Layer {candidate_embeddings.name!r} has no `.embeddings` table. Pass the "
            "candidate tower's Embedding layer itself (e.g. `candidate_model.layers[-1]`) "
            "and give the task the positives' row numbers in that table."
        )
    elif tf.is_tensor(candidate_embeddings) or hasattr(candidate_embeddings, "__array__"):
        raise TypeError(
            "`candidate_embeddings` must be a variable or an Embedding layer, not a tensor "
            "or array: a tensor is a detached copy and the task could not train it."
        )
    else:
        raise TypeError(
            "`candidate_embeddings` must be a tf_keras Embedding-like layer (with "
            f"`.embeddings`) or a tf.Variable, got {type(candidate_embeddings).__name__}."
        )


def read_table(source):
    """The table variable of the bound `source`, building a layer that is not built yet.

    Raises:
        ValueError: for an unbound task (`source` is `None`), or a layer that cannot
            be built as an embedding table or has no `.embeddings` once built.
    """
    if source is None:
        raise ValueError(
            "This SCERetrieval task has no candidate table. Pass the candidate Embedding "
            "layer or variable to SCERetrieval(...) or call `task.bind(...)`."
        )
    if isinstance(source, tf.Variable):
        return source
    if not getattr(source, "built", True):
        try:
            # As tf_keras' own Layer.__call__ does: build outside the traced
            # function, so that its variables are created eagerly (inside a
            # tf.function under a distribution strategy they could not be).
            with tf.init_scope():
                source.build(tf.TensorShape([None]))
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"Could not build layer {source.name!r} as an embedding table ({err}). "
                "Pass the candidate Embedding layer or the table variable."
            ) from err
    table = getattr(source, "embeddings", None)
    if table is None:
        raise ValueError(
            f"Layer {getattr(source, 'name', source)!r} has no `.embeddings` variable after "
            "being built; pass the Embedding layer or the table variable."
        )
    check_table_shape(table)
    return table
