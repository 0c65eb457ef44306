"""keras_sce.layers: the package's Keras layers (defined in their sub-packages)."""

from keras_sce.sparsegrad.layer import SparseGradDense

__all__ = ["SparseGradDense"]
