"""Input validation shared by the TensorFlow core.

Static problems (wrong dtype, mismatched widths, impossible hyper-parameters) raise
Python exceptions while the graph is traced, before any heavy work. Value problems
(ids outside the catalogue) are checked at run time: outside XLA with an assertion
that raises `tf.errors.InvalidArgumentError`; inside XLA, where assertions are
dropped by the compiler, the loss is turned into NaN on purpose (see
`poison_if_invalid`), so the misuse stays loud instead of silently reading
zeros from `tf.gather` on a GPU.
"""

from __future__ import annotations

import warnings

import tensorflow as tf

from keras_sce import compat

# The plain-Python option checks, shared with the keras.ops implementation (kops).
from keras_sce._options import (  # noqa: F401 - part of this module's interface
    as_int,
    check_padding_id,
    check_positive_int,
    clamp_bucket_size,
)


def in_xla_context() -> bool:
    """True while tracing a function that XLA compiles (`jit_compile=True`)."""
    return compat.in_xla_context()


def take_renamed(kwargs: dict, old: str, new: str, value, default, where: str):
    """The value of argument `new`, or of its deprecated name `old` in `kwargs`.

    A renamed argument keeps working for one release under its old name, with a
    `DeprecationWarning` that names the new one; `old` is removed from
    `kwargs`. Passing both names (with different values) raises `TypeError`.
    """
    if old not in kwargs:
        return value
    old_value = kwargs.pop(old)
    warnings.warn(
        f"{where}: `{old}` is deprecated and will be removed in the next release; "
        f"use `{new}` (same meaning).",
        DeprecationWarning,
        stacklevel=3,
    )
    if value is not default and value != old_value:
        raise TypeError(f"{where}: pass `{new}` only (`{old}` is its deprecated name), not both.")
    return old_value


def refuse_unknown(kwargs: dict, where: str) -> None:
    """Raises `TypeError` naming the keyword arguments `where` does not take."""
    if kwargs:
        raise TypeError(f"{where} got unexpected keyword arguments {sorted(kwargs)}.")


def as_float_tensor(x, name: str) -> tf.Tensor:
    """Converts `x` to a floating tensor (variables are read, not copied)."""
    x = tf.convert_to_tensor(x, name=name)
    if not x.dtype.is_floating:
        raise TypeError(f"`{name}` must be a floating-point tensor, got dtype {x.dtype.name}.")
    return x


def as_id_tensor(ids, name: str = "labels") -> tf.Tensor:
    """Converts integer ids to an int32 tensor; refuses floats and strings."""
    ids = tf.convert_to_tensor(ids, name=name)
    if not ids.dtype.is_integer:
        raise TypeError(
            f"`{name}` must hold integer item ids, got dtype {ids.dtype.name}. "
            "Cast float ids with tf.cast(..., 'int32') only if they are exact integers."
        )
    if ids.dtype != tf.int32:
        if ids.dtype.is_unsigned:
            ids = tf.cast(ids, tf.int64)
        if ids.dtype == tf.int64:
            # Ids beyond int32 would wrap around to valid-looking rows; map them to
            # -1 so that the range check reports them instead.
            fits = tf.logical_and(ids >= tf.int32.min, ids <= tf.int32.max)
            ids = tf.where(fits, ids, tf.constant(-1, tf.int64))
        ids = tf.cast(ids, tf.int32)
    return ids


def as_table(item_table):
    """Variables pass through (so they get gradients); anything else becomes a tensor.

    Lets NumPy arrays and lists be used as tables (the checks read
    `item_table.shape.rank`, which a NumPy shape tuple lacks).
    """
    if isinstance(item_table, tf.Variable):
        return item_table
    backing = getattr(item_table, "value", None)  # a Keras 3 variable wraps a tf.Variable
    if isinstance(backing, tf.Variable):
        return backing
    return tf.convert_to_tensor(item_table, name="item_table")


def row_weights(sample_weight, labels: tf.Tensor, dtype) -> tf.Tensor:
    """Flat per-row weights `[N]` for `labels` of shape `[...]`.

    Weights of lower rank get trailing axes (`[B]` weights for `[B, L]` targets
    weigh every position of a sequence), then are broadcast. Incompatible shapes
    raise; negative weights raise at run time (outside XLA).
    """
    weight = tf.cast(tf.convert_to_tensor(sample_weight), dtype)
    if weight.shape.rank is not None and labels.shape.rank is not None:
        while weight.shape.rank < labels.shape.rank:
            weight = weight[..., tf.newaxis]
        if weight.shape.rank > labels.shape.rank:
            weight = tf.reshape(weight, tf.shape(labels))
        for w_dim, l_dim in zip(weight.shape, labels.shape, strict=True):
            if w_dim is not None and l_dim is not None and w_dim not in (1, l_dim):
                raise ValueError(
                    f"`sample_weight` of shape {weight.shape} does not fit targets of shape "
                    f"{labels.shape}: pass one weight per sequence or one per position."
                )
    weight = tf.broadcast_to(weight, tf.shape(labels))
    # NaN passes a ">= 0" test, so finiteness is asserted too.
    assert_op = tf.debugging.Assert(
        tf.reduce_all(tf.logical_and(weight >= 0, tf.math.is_finite(weight))),
        ["keras_sce: `sample_weight` must be finite and non-negative."],
        name="sample_weight_finite_non_negative",
    )
    with tf.control_dependencies([assert_op]):
        return tf.reshape(weight, [-1])


def static_dim(x: tf.Tensor, axis: int):
    """The static size of `axis` or None."""
    return x.shape[axis] if x.shape.rank is not None else None


def check_table(hidden: tf.Tensor, item_table: tf.Tensor) -> None:
    """The table is rank 2 and as wide as the hidden states."""
    if item_table.shape.rank is not None and item_table.shape.rank != 2:
        raise ValueError(
            f"`item_table` must be a [num_items, dim] matrix, got shape {item_table.shape}."
        )
    d_hidden = hidden.shape[-1] if hidden.shape.rank else None
    d_table = static_dim(item_table, 1)
    if d_hidden is not None and d_table is not None and d_hidden != d_table:
        raise ValueError(
            f"Hidden size {d_hidden} does not match the item table width {d_table}: "
            "the model's output must live in the same space as the item embeddings "
            f"(hidden shape {hidden.shape}, table shape {item_table.shape})."
        )


def check_labels_match(hidden: tf.Tensor, labels: tf.Tensor) -> None:
    """`labels` has the shape of `hidden` without its last axis."""
    if hidden.shape.rank is None or labels.shape.rank is None:
        return
    if hidden.shape.rank < 2:
        raise ValueError(f"`hidden` must be [..., dim] with rank >= 2, got shape {hidden.shape}.")
    if not labels.shape.is_compatible_with(hidden.shape[:-1]):
        raise ValueError(
            f"`labels` shape {labels.shape} must match the hidden states without their last "
            f"axis, {hidden.shape[:-1]}."
        )


def id_range_checks(labels: tf.Tensor, num_items: tf.Tensor, name: str = "labels"):
    """Returns (assert_op, all_valid) for ids that must lie in `[0, num_items)`."""
    num_items = tf.cast(num_items, labels.dtype)
    in_range = tf.logical_and(labels >= 0, labels < num_items)
    all_valid = tf.reduce_all(in_range)
    assert_op = tf.debugging.Assert(
        all_valid,
        [
            f"keras_sce: `{name}` holds ids outside [0, num_items). num_items =",
            num_items,
            "min id =",
            tf.reduce_min(labels),
            "max id =",
            tf.reduce_max(labels),
        ],
        name="ids_in_range",
    )
    return assert_op, all_valid


def all_finite(values: tf.Tensor, where=None) -> tf.Tensor:
    """Scalar bool: every entry of `values` is finite (only rows where `where`).

    `where` is an optional bool tensor over the leading axes of `values`
    (e.g. `[N]` for `[N, d]` values); entries outside it are ignored. One
    reduction, so it costs `O(size)` and works under XLA.
    """
    finite = tf.math.is_finite(values)
    if where is not None:
        where = tf.convert_to_tensor(where)
        while where.shape.rank < finite.shape.rank:
            where = where[..., tf.newaxis]
        finite = tf.logical_or(finite, tf.logical_not(where))
    return tf.reduce_all(finite)


def poison_if_invalid(loss: tf.Tensor, all_valid: tf.Tensor) -> tf.Tensor:
    """NaN loss when `all_valid` is False: bad ids, or non-finite inputs.

    For ids outside XLA the assertion already raised. Inside XLA assertions are
    no-ops, so this is what keeps bad ids loud: the loss reads NaN and its
    gradient through this op is zero (optimizers with momentum may still move
    weights along their history). For non-finite inputs (see `all_finite`)
    it is the policy everywhere: the loss of the step that saw a NaN or an
    infinity in a row that counts is NaN, even when the approximate loss would
    have left that row out; the gradient may hold NaN as well.
    """
    nan = tf.constant(float("nan"), loss.dtype)
    return tf.where(all_valid, loss, nan)
