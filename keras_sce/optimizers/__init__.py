"""Optimizers whose cost follows the rows a step touches, not the table size.

- `LazyAdam`: Adam with lazy (row-sparse) moments for `tf.IndexedSlices`
  gradients; dense gradients get exactly Keras Adam.
- `RowAdagrad`: row-wise Adagrad, one accumulator per table row.
- `SparseLossScaleOptimizer`: Keras' dynamic loss scaling without densifying
  sparse gradients (for `"mixed_float16"`).

See docs/optimizers.md.
"""

from keras_sce.optimizers._sparse import SparseLossScaleOptimizer
from keras_sce.optimizers.lazy_adam import LazyAdam
from keras_sce.optimizers.row_adagrad import RowAdagrad

__all__ = ["LazyAdam", "RowAdagrad", "SparseLossScaleOptimizer"]
