"""Exact softmax cross-entropy over the whole catalogue (the reference SCE approximates)."""

from __future__ import annotations

import tensorflow as tf

from keras_sce.ops import checks


def prepare_rows(hidden, labels, item_table, padding_id, sample_weight, check_ids):
    """Shared front end of the exact losses: validation, flattening, row weights.

    Returns ``(x [N, d], y [N] int32, weight [N], all_valid or None)``, where
    ``weight`` is 0 on padding rows and holds ``sample_weight`` otherwise.
    """
    hidden = checks.as_float_tensor(hidden, "hidden")
    labels = checks.as_id_tensor(labels, "labels")
    checks.check_labels_match(hidden, labels)
    checks.check_table(hidden, item_table)
    checks.check_padding_id(padding_id, item_table.shape[0])
    compute_dtype = tf.float32 if hidden.dtype in (tf.float16, tf.bfloat16) else hidden.dtype
    x = tf.reshape(tf.cast(hidden, compute_dtype), [-1, hidden.shape[-1]])
    y = tf.reshape(labels, [-1])
    weight = tf.ones_like(y, dtype=compute_dtype)
    if padding_id is not None:
        weight = tf.where(tf.equal(y, padding_id), tf.zeros_like(weight), weight)
    if sample_weight is not None:
        sw = tf.broadcast_to(tf.cast(sample_weight, compute_dtype), tf.shape(labels))
        weight = weight * tf.reshape(sw, [-1])
    all_valid = None
    if check_ids:
        num_items = item_table.shape[0] if item_table.shape[0] is not None else tf.shape(
            item_table
        )[0]
        assert_op, all_valid = checks.id_range_checks(y, num_items)
        with tf.control_dependencies([assert_op]):
            y = tf.identity(y)
    return x, y, weight, all_valid


def full_cross_entropy(
    hidden, labels, item_table, *, padding_id=0, sample_weight=None, check_ids=True
):
    """Full softmax cross-entropy of hidden states against every item.

    ``logits = hidden @ item_table^T`` over the whole catalogue (the padding row
    excluded from the softmax), sparse softmax cross-entropy against ``labels``,
    mean over rows whose label is not ``padding_id`` (weighted mean with
    ``sample_weight``). Materialises ``N x C`` logits: this is the exact reference
    that :func:`scalable_cross_entropy` approximates, not a loss for huge catalogues.

    Args:
        hidden: float ``[..., d]``.
        labels: integer ``[...]`` item ids.
        item_table: float ``[C, d]`` tensor or variable.
        padding_id: ignored label and excluded item; None for no padding row.
        sample_weight: optional weights broadcastable to ``labels``.
        check_ids: verify ids lie in ``[0, C)`` (see :func:`scalable_cross_entropy`).

    Returns:
        Float scalar; 0 when no row is valid.
    """
    x, y, weight, all_valid = prepare_rows(
        hidden, labels, item_table, padding_id, sample_weight, check_ids
    )
    logits = tf.matmul(x, tf.cast(item_table, x.dtype), transpose_b=True)
    if padding_id is not None:
        num_items = tf.shape(logits)[1]
        pad_col = tf.one_hot(padding_id, num_items, on_value=True, off_value=False)
        logits = tf.where(pad_col[tf.newaxis, :], tf.constant(float("-inf"), x.dtype), logits)
    # Padding rows point at a real column so the per-row loss stays finite; they
    # carry zero weight.
    safe_y = y if padding_id is None else tf.where(weight > 0, y, tf.zeros_like(y) + _first_real(
        padding_id
    ))
    per_row = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_y, logits=logits)
    per_row = tf.where(weight > 0, per_row, tf.zeros_like(per_row))
    loss = tf.math.divide_no_nan(tf.reduce_sum(weight * per_row), tf.reduce_sum(weight))
    if all_valid is not None:
        loss = checks.poison_if_invalid(loss, all_valid)
    return loss


def _first_real(padding_id: int) -> int:
    """Some item id other than the padding id."""
    return 1 if padding_id == 0 else 0
