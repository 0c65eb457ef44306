"""Exact softmax cross-entropy over the whole catalogue, in `keras.ops`.

The reference that SCE approximates: it materialises the `N x C` logits, so it is
meant for tests and small catalogues (the oracle of the backend-neutral SCE).
"""

from __future__ import annotations

from keras import ops

from keras_sce.kops._tensors import prepare_rows, safe_ratio


def full_cross_entropy(
    hidden, labels, item_table, *, padding_id=0, sample_weight=None, check_ids=True
):
    """Full softmax cross-entropy of hidden states against every item (`keras.ops`).

    The counterpart of `keras_sce.ops.full_cross_entropy`: `hidden @ table^T`
    over the catalogue (the padding row excluded from the softmax), mean over rows
    whose label is not `padding_id` (weighted with `sample_weight`).

    Args:
        hidden: float `[..., d]` hidden states.
        labels: integer `[...]` target ids.
        item_table: float `[C, d]` table.
        padding_id: ignored label and excluded item (None: none).
        sample_weight: optional non-negative weights broadcastable to `labels`.
        check_ids: labels must lie in `[0, C)` (raises when concrete, NaN when traced).

    Returns:
        A float scalar: 0 when no row counts; NaN for out-of-range ids or non-finite
        inputs in a counted row.

    Example:

    >>> import numpy as np
    >>> from keras_sce.kops import full_cross_entropy
    >>> table = np.eye(4, dtype="float32")
    >>> loss = full_cross_entropy(np.eye(4, dtype="float32")[1:], np.array([1, 2, 3]), table)
    """
    rows = prepare_rows(hidden, labels, item_table, padding_id, sample_weight, check_ids)
    logits = ops.matmul(rows.x, ops.transpose(rows.table))
    if rows.padding_id is not None:
        is_pad = ops.arange(rows.table.shape[0]) == rows.padding_id
        logits = ops.where(ops.expand_dims(is_pad, 0), float("-inf"), logits)
    positives = ops.take_along_axis(logits, ops.expand_dims(rows.y, 1), axis=1)[:, 0]
    row_loss = ops.logsumexp(logits, axis=1) - positives
    row_loss = ops.where(rows.valid, row_loss, ops.zeros_like(row_loss))
    weight = ops.cast(rows.valid, rows.dtype)
    if rows.weight is not None:
        weight = weight * rows.weight
    loss = safe_ratio(ops.sum(weight * row_loss), ops.sum(weight))
    finite = ops.logical_and(ops.all(ops.isfinite(rows.x)), ops.all(ops.isfinite(row_loss)))
    return ops.where(ops.logical_and(finite, rows.healthy), loss, float("nan"))
