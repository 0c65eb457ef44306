"""`SparseGradDense`, importable from the module path that older `.keras` files record.

The layer lives in `keras_sce.sparsegrad.layer`. A model saved before it moved names
this module in its config, and Keras imports that module to find the class when the
class is not registered yet; this module keeps such files loading.
"""

from keras_sce.sparsegrad.layer import SparseGradDense

__all__ = ["SparseGradDense"]
