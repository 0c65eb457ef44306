"""Row-wise Adagrad: one accumulator per table row, updated only where a row is seen."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_sce.compat import optimizer_slot
from keras_sce.optimizers import _sparse
from keras_sce.optimizers.lazy_adam import _handle, _RowSparseMixin
from keras_sce.utils import require_tensorflow_backend


@keras.saving.register_keras_serializable(package="keras_sce")
class RowAdagrad(_RowSparseMixin, keras.optimizers.Optimizer):
    """Row-wise Adagrad, the optimizer of large embedding systems.

    A variable of rank >= 2 (`[C, d, ...]`) keeps ONE accumulator per row
    (`[C]` floats instead of a second table): for a row `r` with summed
    gradient `g_r` at a step:

        a_r <- a_r + mean(g_r^2)
        w_r <- w_r - lr g_r / sqrt(a_r + epsilon)

    For a `tf.IndexedSlices` gradient only the rows present are read and
    written (duplicates summed first). A dense gradient of a rank >= 2 variable
    updates every row with the same row-wise rule; a variable of rank < 2 (a bias)
    falls back to ordinary element-wise Adagrad (one accumulator per entry, the
    same update as `keras.optimizers.Adagrad`). Clipping, weight decay and loss scaling behave
    as in `LazyAdam`.

    Args:
        learning_rate: float or schedule. Defaults to 0.01.
        initial_accumulator_value: float >= 0, starting accumulator. Defaults to 0.1.
        epsilon: float > 0. Defaults to 1e-7.
        name: optimizer name. Defaults to `"row_adagrad"`.
        **kwargs: Keras optimizer options.

    Raises:
        ValueError: on `gradient_accumulation_steps`, a negative
            `initial_accumulator_value` or a non-positive `epsilon`.

    Example:

    >>> import keras_sce
    >>> opt = keras_sce.optimizers.RowAdagrad(learning_rate=0.05)
    """

    def __init__(self, learning_rate=0.01, initial_accumulator_value=0.1, epsilon=1e-7,
                 name="row_adagrad", **kwargs):
        require_tensorflow_backend("RowAdagrad")
        self._check_sparse_options("RowAdagrad", kwargs)
        if not isinstance(initial_accumulator_value, int | float) or initial_accumulator_value < 0:
            raise ValueError(
                "RowAdagrad: initial_accumulator_value must be a float >= 0, got "
                f"{initial_accumulator_value!r}."
            )
        if not isinstance(epsilon, int | float) or not epsilon > 0:
            raise ValueError(f"RowAdagrad: epsilon must be a float > 0, got {epsilon!r}.")
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.epsilon = float(epsilon)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        init = keras.initializers.Constant(self.initial_accumulator_value)
        self._accumulators = []
        for variable in var_list:
            shape = tuple(variable.shape)[:1] if len(variable.shape) >= 2 else variable.shape
            self._accumulators.append(
                self.add_variable(
                    shape=shape,
                    initializer=init,
                    dtype=variable.dtype,
                    name=variable.name.replace("/", "_") + "_row_accumulator",
                )
            )

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        acc_var = optimizer_slot(self, "_accumulators", variable)
        lr = tf.cast(learning_rate, dtype)
        eps = tf.cast(self.epsilon, dtype)
        rank = len(variable.shape)
        axes = list(range(1, rank))
        if not _sparse.is_sparse(gradient):
            self._decay(variable, learning_rate)
            g = tf.cast(gradient, dtype)
            if not axes:  # Keras Adagrad's update, op for op
                self.assign_add(acc_var, tf.square(g))
                self.assign_sub(variable, lr * g / tf.sqrt(_handle(acc_var) + eps))
                return
            self.assign_add(acc_var, tf.reduce_mean(tf.square(g), axis=axes))
            step = lr / tf.sqrt(_handle(acc_var).read_value() + eps)
            self.assign_sub(variable, g * tf.reshape(step, [-1] + [1] * len(axes)))
            return
        # Rows absent from the gradient (table-shaped sums only) get g = 0: their
        # accumulator and weight are unchanged; only the decay needs the mask.
        rows, g, present = _sparse.rows_to_update(gradient, variable.shape[0], dtype)
        square = tf.reduce_mean(tf.square(g), axis=axes) if axes else tf.square(g)
        acc = tf.gather(_handle(acc_var), rows) + square
        self.assign(acc_var, tf.IndexedSlices(acc, rows))
        step = lr / tf.sqrt(acc + eps)
        if axes:
            step = tf.reshape(step, tf.concat([tf.shape(step), tf.ones([len(axes)], tf.int32)], 0))
        w_old = tf.gather(_handle(variable), rows)
        w = self._decay(variable, learning_rate, rows, w_old)
        if w is not w_old:
            keep = tf.reshape(present, tf.concat([tf.shape(present), tf.ones([tf.rank(w) - 1],
                                                                              tf.int32)], 0))
            w = tf.where(keep, w, w_old)
        self.assign(variable, tf.IndexedSlices(w - g * step, rows))

    def get_config(self):
        config = super().get_config()
        config.update(
            initial_accumulator_value=self.initial_accumulator_value, epsilon=self.epsilon
        )
        return config
