"""Keras 3 losses over the TensorFlow core of keras_sce."""

from keras_sce.losses.baselines import (
    FullCrossEntropyLoss,
    GBCELoss,
    ItemTableLoss,
    SampledBCELoss,
    SampledSoftmaxLoss,
)
from keras_sce.losses.sce_loss import SCELoss

__all__ = [
    "FullCrossEntropyLoss",
    "GBCELoss",
    "ItemTableLoss",
    "SCELoss",
    "SampledBCELoss",
    "SampledSoftmaxLoss",
]
