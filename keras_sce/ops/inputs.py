"""The one input front end of the losses in `keras_sce.ops`.

Every loss takes `(hidden [..., d], labels [...], item_table [C, d])` and needs the
same preparation before its own algorithm starts: conversion and validation (with
the error policy of `keras_sce.ops.checks`), flattening to `[N, d]` rows in
the compute dtype, the rows that count (non-padding, non-zero weight), and the
run-time check that the ids are rows of the table. `prepare_rows` does all of
it once; `counted_rows` and `weighted_mean` are the two steps the
exact and sampled losses share after their logits.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from keras_sce.ops import checks


class Rows(NamedTuple):
    """A flattened, validated batch (see `prepare_rows`).

    Attributes:
        x: `[N, d]` hidden states in the compute dtype; rows that do not count
            are zero (they may hold anything, even NaN from fully masked attention).
        y: `[N]` int32 target ids.
        valid: `[N]` bool, the rows that count: target is not the padding id
            and (with sample weights) the weight is not 0.
        weight: `[N]` sample weights in the compute dtype, or None.
        ids_ok: scalar bool, every id lies in `[0, C)`; None without the check.
        padding_id: the validated padding id (a Python int) or None.
        table: the item table (a variable stays a variable, so it trains).
        num_items: `C` as a Python int when static, else a scalar tensor.
        labels: the int32 labels in their original shape (to reshape per-row output).
    """

    x: tf.Tensor
    y: tf.Tensor
    valid: tf.Tensor
    weight: tf.Tensor | None
    ids_ok: tf.Tensor | None
    padding_id: int | None
    table: object
    num_items: object
    labels: tf.Tensor

    @property
    def num_items_static(self):
        """`C` as a Python int, or None when the table's row count is dynamic."""
        return self.num_items if isinstance(self.num_items, int) else None

    def num_real_items(self):
        """Items other than the padding row (an int, or a tensor for a dynamic table)."""
        return self.num_items - (0 if self.padding_id is None else 1)

    def safe_y(self) -> tf.Tensor:
        """`y` with the rows that do not count pointed at a real item.

        Their loss is ignored, but it must stay finite and its gather in range.
        """
        if self.padding_id is None and self.weight is None:
            return self.y
        other = 1 if self.padding_id == 0 else 0
        return tf.where(self.valid, self.y, tf.fill(tf.shape(self.y), other))


def compute_dtype(dtype):
    """float32 for half-precision inputs; float32/float64 stay as they are."""
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


def prepare_rows(hidden, labels, item_table, *, padding_id=0, sample_weight=None,
                 check_ids=True) -> Rows:
    """Validates and flattens one batch for a loss of the SCE calling convention.

    Args:
        hidden: float `[..., d]` hidden states.
        labels: integer `[...]` target ids (int32, int64 or unsigned).
        item_table: float `[C, d]` tensor, variable, NumPy array or list.
        padding_id: ignored label and never-scored table row; None for none.
        sample_weight: optional non-negative weights broadcastable to `labels`.
        check_ids: add the run-time check that ids lie in `[0, C)`: outside XLA
            an assertion (`InvalidArgumentError`), under XLA the `ids_ok` flag
            that the caller turns into a NaN loss (`checks.poison_if_invalid`).

    Returns:
        A `Rows`.

    Raises:
        TypeError: non-float hidden states or table, non-integer labels.
        ValueError: shapes that do not fit, a padding id outside the table.
    """
    hidden = checks.as_float_tensor(hidden, "hidden")
    labels = checks.as_id_tensor(labels, "labels")
    table = checks.as_table(item_table)
    checks.check_labels_match(hidden, labels)
    checks.check_table(hidden, table)
    if not table.dtype.is_floating:
        raise TypeError(f"`item_table` must be floating point, got {table.dtype.name}.")
    num_items = table.shape[0]
    padding_id = checks.check_padding_id(padding_id, num_items)
    if num_items is None:
        num_items = tf.shape(table)[0]
    else:
        num_items = int(num_items)

    dtype = compute_dtype(hidden.dtype)
    dim = hidden.shape[-1]
    x = tf.reshape(tf.cast(hidden, dtype), [-1, dim if dim is not None else -1])
    y = tf.reshape(labels, [-1])
    valid = tf.ones_like(y, dtype=tf.bool) if padding_id is None else tf.not_equal(y, padding_id)
    weight = None
    if sample_weight is not None:
        weight = checks.row_weights(sample_weight, labels, dtype)
        valid = tf.logical_and(valid, tf.not_equal(weight, 0))
    # Rows that do not count reach neither a centre nor any gradient.
    x = tf.where(valid[:, tf.newaxis], x, tf.zeros_like(x))

    ids_ok = None
    if check_ids:  # before any gather that could silently read zeros
        assert_op, ids_ok = checks.id_range_checks(y, num_items)
        with tf.control_dependencies([assert_op]):
            y = tf.identity(y)
    return Rows(x, y, valid, weight, ids_ok, padding_id, table, num_items, labels)


def counted_rows(rows: Rows, *per_row):
    """The rows that count, for losses that score every row against its own items.

    Returns `(x, y, weight, *per_row)`. Outside XLA the rows that do not count are
    dropped (`tf.boolean_mask`: no product with the table is spent on padding)
    and `weight` holds the remaining sample weights (None without them). Under
    XLA, which needs static shapes, every row stays, its label points at a real
    item (`Rows.safe_y`) and `weight` is 0 on the rows that do not count.
    """
    if rows.padding_id is None and rows.weight is None:
        return (rows.x, rows.y, None, *per_row)
    if not checks.in_xla_context():
        keep = rows.valid
        weight = None if rows.weight is None else tf.boolean_mask(rows.weight, keep)
        return (
            tf.boolean_mask(rows.x, keep),
            tf.boolean_mask(rows.y, keep),
            weight,
            *(tf.boolean_mask(t, keep) for t in per_row),
        )
    weight = tf.cast(rows.valid, rows.x.dtype)
    if rows.weight is not None:
        weight = weight * rows.weight
    return (rows.x, rows.safe_y(), weight, *per_row)


def weighted_mean(per_row, weight=None, ids_ok=None):
    """`sum(w * loss) / sum(w)` over the rows with `w > 0` (all rows when None).

    0 (with zero gradient) when no row counts; NaN when a row that counts has a
    non-finite loss, or when `ids_ok` is False (ids outside the table under XLA).
    """
    if weight is None:
        n = tf.cast(tf.size(per_row), per_row.dtype)
        loss = tf.math.divide_no_nan(tf.reduce_sum(per_row), n)
        finite = checks.all_finite(per_row)
    else:
        counts = weight > 0
        finite = checks.all_finite(per_row, where=counts)
        per_row = tf.where(counts, per_row, tf.zeros_like(per_row))
        loss = tf.math.divide_no_nan(tf.reduce_sum(weight * per_row), tf.reduce_sum(weight))
    loss = checks.poison_if_invalid(loss, finite)
    if ids_ok is not None:
        loss = checks.poison_if_invalid(loss, ids_ok)
    return loss


def mask_item(logits, item_id):
    """`logits [N, C]` with column `item_id` (e.g. the padding row) set to -inf."""
    if item_id is None:
        return logits
    column = tf.one_hot(item_id, tf.shape(logits)[1], on_value=True, off_value=False)
    return tf.where(column[tf.newaxis, :], tf.constant(float("-inf"), logits.dtype), logits)
