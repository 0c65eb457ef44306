"""Tensor helpers of the backend-neutral SCE: concrete checks, seeds, weights."""

from __future__ import annotations

from typing import NamedTuple

import keras
from keras import ops

from keras_sce import _options
from keras_sce.kops import _checks


def dtype_of(x) -> str:
    return keras.backend.standardize_dtype(x.dtype)


def concrete(flag):
    """`flag` as a Python bool, or None while it is traced (jit, tf.function)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        if isinstance(flag, jax.core.Tracer):
            return None
    elif backend == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            return None
    return bool(ops.convert_to_numpy(flag))


def require(flag, message):
    """Raises `ValueError(message)` when `flag` is concretely False."""
    if concrete(flag) is False:
        raise ValueError(message)


def batch_fingerprint(labels):
    """An int32 scalar that depends on every label and its position (wraps around).

    Lets a jitted training step draw fresh, reproducible centres without a stateful
    generator: `seed=[base, batch_fingerprint(labels)]`.
    """
    y = ops.reshape(ops.cast(labels, "int32"), (-1,))
    weights = 2 * ops.arange(y.shape[0], dtype="int32") + 1
    return ops.sum(y * weights + ops.right_shift(y, 7))


def _jax_key(seed, labels, salt=None):
    import jax

    if seed is None:
        seed = (0, batch_fingerprint(labels))
    if isinstance(seed, int):
        key = jax.random.PRNGKey(seed)
    else:
        seed = ops.cast(ops.convert_to_tensor(seed), "int32")
        key = jax.random.fold_in(jax.random.PRNGKey(seed[0]), seed[1])
    return key if salt is None else jax.random.fold_in(key, salt)


def _python_seed(seed):
    if seed is not None and not isinstance(seed, int):
        try:
            first, second = (int(s) for s in seed)
        except TypeError as err:
            raise TypeError(
                "A seed tensor needs the JAX backend here; pass None or a Python int."
            ) from err
        seed = (first * 1_000_003 + second) % (2**31)
    return seed


def draw(kind, shape, seed, labels, dtype="float32", minval=0, maxval=1, salt=None):
    """Random `"normal"`, `"uniform"` (floats in `[minval, maxval)`) or `"randint"` draws.

    Under JAX stateless: `seed` is an int, an int pair or a `[2]` tensor, and None
    means `(0, batch_fingerprint(labels))`. On other backends Keras' generator
    (`seed`: None or a Python int). An int `salt` gives a second stream of the
    same seed, independent of the first (the calibration samples beside the centres).
    """
    if keras.backend.backend() == "jax":
        import jax

        key = _jax_key(seed, labels, salt)
        if kind == "normal":
            return jax.random.normal(key, shape, dtype=dtype)
        if kind == "uniform":
            return jax.random.uniform(key, shape, dtype=dtype, minval=minval, maxval=maxval)
        return jax.random.randint(key, shape, minval, maxval, dtype="int32")
    seed = _python_seed(seed)
    if seed is not None and salt is not None:
        seed = (seed * 1_000_003 + salt) % (2**31)
    if kind == "normal":
        return keras.random.normal(shape, dtype=dtype, seed=seed)
    if kind == "uniform":
        return keras.random.uniform(shape, minval, maxval, dtype=dtype, seed=seed)
    return keras.random.randint(shape, minval, maxval, dtype="int32", seed=seed)


def noise(shape, seed, dtype, labels):
    return draw("normal", shape, seed, labels, dtype)


def draw_centers(x, valid, num_buckets, mix_x, seed, labels):
    """Bucket centres `[n_b, d]`: Gaussian, or random mixtures of the valid rows."""
    if not mix_x:
        return noise((num_buckets, x.shape[1]), seed, x.dtype, labels)
    omega = noise((x.shape[0], num_buckets), seed, x.dtype, labels)
    omega = omega * ops.expand_dims(ops.cast(valid, x.dtype), 1)
    return ops.matmul(ops.transpose(omega), x)


def row_weights(sample_weight, labels_shape, dtype):
    weight = ops.cast(ops.convert_to_tensor(sample_weight), dtype)
    while len(weight.shape) < len(labels_shape):
        weight = ops.expand_dims(weight, -1)
    try:
        weight = ops.broadcast_to(weight, labels_shape)
    except ValueError as err:
        raise ValueError(
            f"`sample_weight` of shape {tuple(weight.shape)} does not fit targets of shape "
            f"{tuple(labels_shape)}: pass one weight per sequence or one per position."
        ) from err
    return ops.reshape(weight, (-1,))


def as_ids(labels):
    if hasattr(labels, "dtype") and "int64" in str(labels.dtype):
        import numpy as np

        if isinstance(labels, np.ndarray):  # ids beyond int32 must not wrap to valid rows
            fits = (labels >= -(2**31)) & (labels < 2**31)
            labels = np.where(fits, labels, -1).astype("int32")
    labels = ops.convert_to_tensor(labels)
    if "int" not in dtype_of(labels):
        raise TypeError(
            f"`labels` must hold integer item ids, got dtype {dtype_of(labels)}. "
            "Cast float ids with keras.ops.cast(..., 'int32') only if they are exact integers."
        )
    return ops.cast(labels, "int32")


def all_finite(values, where=None):
    finite = ops.isfinite(values)
    if where is not None:
        while len(where.shape) < len(finite.shape):
            where = ops.expand_dims(where, -1)
        finite = ops.logical_or(finite, ops.logical_not(where))
    return ops.all(finite)


def safe_ratio(num, den):
    """`num / den`, 0 where `den` is 0 (with a finite gradient everywhere)."""
    ok = den > 0
    return ops.where(ok, num / ops.where(ok, den, ops.ones_like(den)), ops.zeros_like(num))


def counted_weight(rows):
    """`[N]` weights of the rows that count: 1 (or the sample weight), 0 elsewhere."""
    weight = ops.cast(rows.valid, rows.dtype)
    return weight if rows.weight is None else weight * rows.weight


def weighted_mean(per_row, rows):
    """`sum(w * loss) / sum(w)` over the rows that count; 0 when none does.

    NaN when a counted row's loss or hidden state is not finite, or when the
    inputs were not healthy (ids outside the table, bad weights: traced checks).
    """
    per_row = ops.where(rows.valid, per_row, ops.zeros_like(per_row))
    weight = counted_weight(rows)
    loss = safe_ratio(ops.sum(weight * per_row), ops.sum(weight))
    finite = ops.logical_and(ops.all(ops.isfinite(rows.x)), ops.all(ops.isfinite(per_row)))
    return ops.where(ops.logical_and(finite, rows.healthy), loss, float("nan"))


def safe_labels(rows):
    """`rows.y` with the rows that do not count pointed at a real item (finite losses)."""
    if rows.padding_id is None and rows.weight is None:
        return rows.y
    other = 1 if rows.padding_id == 0 else 0
    return ops.where(rows.valid, rows.y, ops.full_like(rows.y, other))


def to_real_ids(ids, padding_id):
    """Maps `[0, C-1)` onto the `C - 1` non-padding ids of `[0, C)`."""
    return ids if padding_id is None else ops.where(ids >= padding_id, ids + 1, ids)


def to_compact_ids(ids, padding_id):
    """Inverse of `to_real_ids` (for non-padding ids)."""
    return ids if padding_id is None else ops.where(ids > padding_id, ids - 1, ids)


class Rows(NamedTuple):
    """The checked, flattened inputs of a loss over an item table."""

    x: object  # [N, d] hidden states in the compute dtype, 0 on ignored rows
    y: object  # [N] int32 ids (clipped into the table when ids are checked)
    valid: object  # [N] bool: counted rows (not padding, non-zero weight)
    weight: object  # [N] weights, or None
    healthy: object  # scalar bool: ids in range and weights finite, non-negative
    table: object  # [C, d] table in the compute dtype
    raw_table: object  # the table as given (for the detached item search)
    dtype: str
    padding_id: object
    shape: tuple  # the labels' shape


def prepare_rows(hidden, labels, item_table, padding_id, sample_weight, check_ids) -> Rows:
    """Validation and flattening shared by the losses (static checks raise here)."""
    hidden = ops.convert_to_tensor(hidden)
    labels = as_ids(labels)
    item_table = ops.convert_to_tensor(item_table)
    for name, value in (("hidden", hidden), ("item_table", item_table)):
        if "float" not in dtype_of(value):
            raise TypeError(
                f"`{name}` must be a floating-point tensor, got dtype {dtype_of(value)}."
            )
    _checks.shapes(hidden.shape, labels.shape, item_table.shape)
    num_items, dim = item_table.shape
    padding_id = _options.check_padding_id(padding_id, num_items)
    compute_dtype = "float64" if dtype_of(hidden) == "float64" else "float32"
    x = ops.reshape(ops.cast(hidden, compute_dtype), (-1, dim))
    y = ops.reshape(labels, (-1,))
    valid = ops.ones_like(y, dtype="bool") if padding_id is None else ops.not_equal(y, padding_id)
    weight, healthy = None, ops.convert_to_tensor(True)
    if sample_weight is not None:
        weight = row_weights(sample_weight, labels.shape, compute_dtype)
        healthy = ops.all(ops.logical_and(weight >= 0, ops.isfinite(weight)))
        require(healthy, "keras_sce: `sample_weight` must be finite and non-negative.")
        valid = ops.logical_and(valid, ops.not_equal(weight, 0))
    # Ignored positions may hold anything (even NaN): they reach no centre, no gradient.
    x = ops.where(ops.expand_dims(valid, 1), x, ops.zeros_like(x))
    if check_ids:
        in_range = ops.all(ops.logical_and(y >= 0, y < num_items))
        require(in_range, f"keras_sce: `labels` holds ids outside [0, num_items={num_items}).")
        healthy = ops.logical_and(healthy, in_range)
        y = ops.clip(y, 0, num_items - 1)
    table = ops.cast(item_table, compute_dtype)
    return Rows(x, y, valid, weight, healthy, table, item_table, compute_dtype, padding_id,
                tuple(labels.shape))
