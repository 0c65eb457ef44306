"""Row-sparse gradient helpers shared by the lazy optimizers (TensorFlow ops).

A `tf.IndexedSlices` gradient may name a row several times (a table read by two
gathers, or an id repeated in a batch); its meaning is the sum. The helpers here
sum duplicates with static shapes (a sort and a segment sum over the `n` slices,
never the table's `C` rows), so they also compile under XLA.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_sce.utils import require_tensorflow_backend


def is_sparse(gradient) -> bool:
    """Whether `gradient` is a row-sparse `tf.IndexedSlices`."""
    return isinstance(gradient, tf.IndexedSlices)


def coalesce(gradient: tf.IndexedSlices, dtype=None):
    """Sums duplicate rows of an `IndexedSlices` gradient.

    Args:
        gradient: `tf.IndexedSlices` with `n` slices of a `[C, ...]` variable.
        dtype: optional dtype of the summed values.

    Returns:
        `(indices [n], summed [n, ...], first [n])`: the indices sorted, each
        slice's row total (equal for every copy of a row) and True at the first
        copy of each row. `scatter_update(indices, f(summed))` therefore writes
        each row once (copies write identical values).
    """
    values = gradient.values if dtype is None else tf.cast(gradient.values, dtype)
    indices = gradient.indices
    order = tf.argsort(indices, stable=True)
    indices = tf.gather(indices, order)
    values = tf.gather(values, order)
    first = tf.concat([tf.ones([1], tf.bool), tf.not_equal(indices[1:], indices[:-1])], 0)
    first = tf.logical_and(first, tf.ones_like(indices, tf.bool))  # n == 0: empty
    segment = tf.cumsum(tf.cast(first, tf.int32)) - 1
    totals = tf.math.unsorted_segment_sum(values, segment, tf.shape(indices)[0])
    return indices, tf.gather(totals, segment), first


def rows_to_update(gradient: tf.IndexedSlices, num_rows: int, dtype=None):
    """The rows a row-sparse update writes, their summed gradient, and which are present.

    With at most `num_rows` slices this is `coalesce` (every returned row is
    present). With more slices than the variable has rows (per-row negatives give
    `N x k` slices of a `C`-row table) the slices would cost more memory than the
    table itself, so they are summed into the table's shape instead: the rows are
    `0..C-1` and `present` marks the ones that occur. The update is the same; only
    its temporaries change, `O(min(slices, C) x d)` either way.

    Returns:
        `(rows [r], summed [r, ...], present [r] bool)`.
    """
    count = gradient.values.shape[0]

    def from_slices():
        rows, summed, _ = coalesce(gradient, dtype)
        return rows, summed, tf.ones_like(rows, tf.bool)

    def table_shaped():
        values = gradient.values if dtype is None else tf.cast(gradient.values, dtype)
        indices = gradient.indices
        summed = tf.math.unsorted_segment_sum(values, indices, num_rows)
        hits = tf.math.unsorted_segment_max(tf.ones_like(indices, tf.int32), indices, num_rows)
        return tf.range(num_rows, dtype=indices.dtype), summed, hits > 0

    if count is not None:  # static (always under XLA): choose while tracing
        return table_shaped() if count > num_rows else from_slices()
    return tf.cond(tf.shape(gradient.values)[0] > num_rows, table_shaped, from_slices)


def first_only(summed, first):
    """`summed` with the rows of repeated copies zeroed (a valid IndexedSlices value)."""
    ones = tf.ones([tf.rank(summed) - 1], tf.int32)
    mask = tf.reshape(first, tf.concat([tf.shape(first), ones], 0))
    return tf.where(mask, summed, tf.zeros_like(summed))


def clip_sparse_gradients(optimizer, grads, dense_clip):
    """Keras' gradient clipping with `IndexedSlices` kept sparse.

    Norms and values are those of the summed (dense-equivalent) gradient, so the
    result matches clipping the densified gradient. Dense gradients go to
    `dense_clip` (Keras' own clipping) unchanged.
    """
    sparse = [is_sparse(g) for g in grads]
    if not any(sparse):
        return dense_clip(grads)
    coalesced = {}
    for i, g in enumerate(grads):
        if sparse[i]:
            indices, summed, first = coalesce(g)
            coalesced[i] = (indices, first_only(summed, first), g.dense_shape)

    def rebuild(i, values):
        indices, _, shape = coalesced[i]
        return tf.IndexedSlices(values, indices, shape)

    if optimizer.clipnorm and optimizer.clipnorm > 0:
        out = []
        for i, g in enumerate(grads):
            if g is None or not sparse[i]:
                out.append(g if g is None else dense_clip([g])[0])
            else:
                values = coalesced[i][1]
                out.append(rebuild(i, tf.clip_by_norm(values, optimizer.clipnorm)))
        return out
    if optimizer.global_clipnorm and optimizer.global_clipnorm > 0:
        parts = [
            coalesced[i][1] if sparse[i] else g for i, g in enumerate(grads) if g is not None
        ]
        norm = tf.linalg.global_norm([tf.cast(p, tf.float32) for p in parts])
        clip = tf.cast(optimizer.global_clipnorm, tf.float32)
        # As Keras: a non-finite norm makes every gradient NaN (never a silent skip).
        scale = clip * tf.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)
        out = []
        for i, g in enumerate(grads):
            if g is None:
                out.append(None)
            elif sparse[i]:
                values = coalesced[i][1]
                out.append(rebuild(i, values * tf.cast(scale, values.dtype)))
            else:
                out.append(g * tf.cast(scale, g.dtype))
        return out
    if optimizer.clipvalue and optimizer.clipvalue > 0:
        v = optimizer.clipvalue
        return [
            g if g is None else (
                rebuild(i, tf.clip_by_value(coalesced[i][1], -v, v)) if sparse[i]
                else dense_clip([g])[0]
            )
            for i, g in enumerate(grads)
        ]
    return grads


def divide(gradient, scale):
    """`gradient / scale` that keeps an `IndexedSlices` sparse."""
    if is_sparse(gradient):
        values = gradient.values
        return tf.IndexedSlices(
            values / tf.cast(scale, values.dtype), gradient.indices, gradient.dense_shape
        )
    return keras.ops.divide(gradient, scale)


@keras.saving.register_keras_serializable(package="keras_sce")
class SparseLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras' dynamic loss scaling that keeps `IndexedSlices` gradients sparse.

    Keras' `LossScaleOptimizer` checks that the gradients are finite on dense
    tensors: a sparse gradient is converted to a dense `[C, d]` one at every step,
    which costs the whole table. This subclass checks only the slices' values and
    is otherwise identical (the inner optimizer still receives `IndexedSlices`).
    Pass it to `compile` under a `"mixed_float16"` policy (Keras then does not
    wrap the optimizer again).

    Args:
        inner_optimizer: the optimizer to wrap (e.g. `LazyAdam`).
        initial_scale: float, initial loss scale. Defaults to 2**15.
        dynamic_growth_steps: int, steps between scale doublings. Defaults to 2000.
        **kwargs: forwarded to `keras.optimizers.LossScaleOptimizer`.

    Example:

    >>> import keras_sce
    >>> opt = keras_sce.optimizers.SparseLossScaleOptimizer(keras_sce.optimizers.LazyAdam())
    """

    def __init__(self, inner_optimizer, initial_scale=2.0**15, dynamic_growth_steps=2000,
                 **kwargs):
        require_tensorflow_backend("SparseLossScaleOptimizer")
        super().__init__(inner_optimizer, initial_scale, dynamic_growth_steps, **kwargs)

    def check_finite(self, grads):
        finite = [
            tf.reduce_all(tf.math.is_finite(g.values if is_sparse(g) else tf.convert_to_tensor(g)))
            for g in grads
            if g is not None
        ]
        return tf.reduce_all(tf.stack(finite)) if finite else tf.constant(True)
