"""Loading models compiled with keras_sce losses."""

from __future__ import annotations

import keras

# Keras finds a class in a `.keras` file only once its module has registered it.
import keras_sce.sparsegrad  # noqa: F401  (SparseGradDense, SparseGradOptimizer)


def bind_losses(model):
    """Re-binds every keras_sce loss of a compiled model to the model's tables."""
    from keras_sce.losses.base import ItemTableLoss

    losses = getattr(model, "loss", None)
    if losses is None:
        return model
    flat = losses.values() if isinstance(losses, dict) else (
        losses if isinstance(losses, (list, tuple)) else [losses]
    )
    for loss in flat:
        if isinstance(loss, ItemTableLoss) and loss.item_embeddings is None:
            loss.bind(model)
    return model


def load_model(filepath, **kwargs):
    """`keras.saving.load_model` plus re-binding of keras_sce losses to their tables.

    A `.keras` file stores the compiled loss's hyper-parameters, the position of
    its seed stream and the path of its item-table variable, but Keras
    deserializes a loss without its model; this function finds the table in the
    loaded model (functional, Sequential or subclassed: a path that lost or
    gained its model's scope on reload still matches) so that `fit` goes on,
    with fresh seeds rather than the ones already used.

    Args:
        filepath: a `.keras` file.
        **kwargs: forwarded to `keras.saving.load_model`.

    Returns:
        The loaded model, its keras_sce losses bound.

    Raises:
        ValueError: a loss's table path matches no variable (or several) of the
            model; bind it yourself with `model.loss.bind(layer)`.

    Examples:
        >>> import os, tempfile, keras, numpy as np, keras_sce
        >>> items = keras.layers.Embedding(50, 8)
        >>> history = keras.Input((5,), dtype="int32")
        >>> model = keras.Model(history, items(history))
        >>> model.compile("adam", loss=keras_sce.SCELoss(items, bucket_size_y=8, seed=0))
        >>> ids = np.arange(1, 11, dtype="int32").reshape(2, 5)
        >>> _ = model.fit(ids, ids, verbose=0)
        >>> path = os.path.join(tempfile.mkdtemp(), "model.keras")
        >>> model.save(path)
        >>> restored = keras_sce.load_model(path)
        >>> _ = restored.fit(ids, ids, verbose=0)  # the loss is bound to the loaded table
    """
    model = keras.saving.load_model(filepath, **kwargs)
    return bind_losses(model)
