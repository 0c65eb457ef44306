"""Keras 3 losses over the TensorFlow core of keras_sce."""

from keras_sce.losses.baselines import (
    FullCrossEntropyLoss,
    GBCELoss,
    ItemTableLoss,
    SampledBCELoss,
    SampledSoftmaxLoss,
)
from keras_sce.losses.sce_loss import SCELoss
from keras_sce.losses.sce_options import SCEOptions

__all__ = [
    "FullCrossEntropyLoss",
    "GBCELoss",
    "ItemTableLoss",
    "SCELoss",
    "SCEOptions",
    "SampledBCELoss",
    "SampledSoftmaxLoss",
]
