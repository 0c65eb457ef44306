"""Floor 2 of keras_sce: Keras 3 losses over the TensorFlow core."""

from keras_sce.losses.sce_loss import SCELoss

__all__ = ["SCELoss"]
