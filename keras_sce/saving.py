"""Loading models compiled with keras_sce losses."""

from __future__ import annotations

import keras


def bind_losses(model):
    """Re-binds every keras_sce loss of a compiled model to the model's tables."""
    from keras_sce.losses.baselines import ItemTableLoss
    from keras_sce.losses.sce_loss import SCELoss

    losses = getattr(model, "loss", None)
    if losses is None:
        return model
    flat = losses.values() if isinstance(losses, dict) else (
        losses if isinstance(losses, (list, tuple)) else [losses]
    )
    for loss in flat:
        if isinstance(loss, (SCELoss, ItemTableLoss)) and loss.item_embeddings is None:
            loss.bind(model)
    return model


def load_model(filepath, **kwargs):
    """``keras.saving.load_model`` plus re-binding of SCE losses to their tables.

    A ``.keras`` file stores the compiled loss's hyper-parameters and the path of
    its item-table variable, but Keras deserializes a loss without its model; this
    function finds the table in the loaded model so that ``fit`` can go on.
    """
    model = keras.saving.load_model(filepath, **kwargs)
    return bind_losses(model)
