"""keras_sce.layers."""

from keras_sce.layers.sparse_grad_dense import SparseGradDense

__all__ = ["SparseGradDense"]
