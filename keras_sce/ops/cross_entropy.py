"""Exact softmax cross-entropy over the whole catalogue (the reference SCE approximates).

Two implementations of the same loss:

- `full_cross_entropy` materialises the `N x C` logits (simple, the oracle);
- `chunked_cross_entropy` streams over the catalogue in chunks with a running
  logsumexp and recomputes each chunk's logits in the backward pass, so no `N x C`
  tensor ever exists (the portable TensorFlow/XLA form of the "Cut Cross-Entropy"
  idea, arXiv 2411.09009): the fair *exact* baseline for SCE's memory claims.
"""

from __future__ import annotations

import tensorflow as tf

from keras_sce._options import auto_chunk_size  # shared with kops
from keras_sce.ops import checks, inputs


def full_cross_entropy(
    hidden, labels, item_table, *, padding_id=0, sample_weight=None, check_ids=True
):
    """Full softmax cross-entropy of hidden states against every item.

    `logits = hidden @ item_table^T` over the whole catalogue (the padding row
    excluded from the softmax), sparse softmax cross-entropy against `labels`,
    mean over rows whose label is not `padding_id` (weighted mean with
    `sample_weight`). Outside XLA the rows that count are gathered first, so the
    `M x C` logits cover only the `M` real positions (padding costs nothing);
    under XLA, which needs static shapes, every row is scored and the others get
    zero weight. Materialises those logits: this is the exact reference that
    `scalable_cross_entropy` approximates, not a loss for huge catalogues.

    Args:
        hidden: float `[..., d]`.
        labels: integer `[...]` item ids.
        item_table: float `[C, d]` tensor or variable.
        padding_id: ignored label and excluded item; None for no padding row.
        sample_weight: optional weights broadcastable to `labels`.
        check_ids: verify ids lie in `[0, C)` (see `scalable_cross_entropy`).

    Returns:
        Float scalar; 0 when no row is valid.
    """
    rows = inputs.prepare_rows(
        hidden, labels, item_table, padding_id=padding_id, sample_weight=sample_weight,
        check_ids=check_ids,
    )
    x, y, weight = inputs.counted_rows(rows)
    logits = tf.matmul(x, tf.cast(rows.table, x.dtype), transpose_b=True)
    logits = inputs.mask_item(logits, rows.padding_id)
    per_row = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    return inputs.weighted_mean(per_row, weight, rows.ids_ok)


def _chunk_logits(x, table, start, chunk_size, num_items, padding_id):
    """Logits of `x` against items `[start, start + chunk)`, ineligible ones -inf.

    Item indices past the end of the table are clamped for the gather (so every
    chunk has the same static shape, for XLA) and their logits masked; returns
    `(logits [N, chunk], item_ids [chunk], eligible [chunk])`.
    """
    item_ids = start + tf.range(chunk_size, dtype=tf.int32)
    eligible = item_ids < num_items
    if padding_id is not None:
        eligible = tf.logical_and(eligible, tf.not_equal(item_ids, padding_id))
    rows = tf.gather(table, tf.minimum(item_ids, num_items - 1))  # [chunk, d]
    logits = tf.matmul(x, rows, transpose_b=True)  # [N, chunk]
    logits = tf.where(eligible[tf.newaxis, :], logits, tf.constant(float("-inf"), x.dtype))
    return logits, rows, item_ids, eligible


def _streamed_row_loss(x, table, y, chunk_size, padding_id):
    """Per-row exact softmax CE `lse(x W^T) - <x, w_y>` without an `N x C` tensor.

    `y` must hold eligible item ids (never the padding id). Custom gradient: the
    backward pass recomputes each chunk's logits, so only `[N, chunk]` buffers and
    the (dense) `[C, d]` table gradient are ever allocated.
    """
    num_items = tf.shape(table)[0]
    num_chunks = (num_items + chunk_size - 1) // chunk_size
    num_rows = tf.shape(x)[0]
    dtype = x.dtype

    @tf.custom_gradient
    def row_loss(x, table):
        def body(i, running_max, running_sum):
            logits, _, _, _ = _chunk_logits(x, table, i * chunk_size, chunk_size, num_items,
                                            padding_id)
            new_max = tf.maximum(running_max, tf.reduce_max(logits, axis=1))
            # A row whose every logit so far is -inf keeps a finite shift (0).
            shift = tf.where(tf.math.is_finite(new_max), new_max, tf.zeros_like(new_max))
            running_sum = running_sum * tf.exp(running_max - shift) + tf.reduce_sum(
                tf.exp(logits - shift[:, tf.newaxis]), axis=1
            )
            return i + 1, new_max, running_sum

        init_max = tf.fill([num_rows], tf.constant(float("-inf"), dtype))
        _, run_max, run_sum = tf.while_loop(
            lambda i, *_: i < num_chunks,
            body,
            (tf.constant(0), init_max, tf.zeros([num_rows], dtype)),
            parallel_iterations=1,
        )
        lse = run_max + tf.math.log(run_sum)
        target = tf.reduce_sum(x * tf.gather(table, y), axis=-1)
        loss = lse - target

        def grad(upstream):
            upstream = tf.convert_to_tensor(upstream, dtype)

            def back_body(i, grad_x, grad_chunks):
                start = i * chunk_size
                logits, rows, item_ids, eligible = _chunk_logits(
                    x, table, start, chunk_size, num_items, padding_id
                )
                # d loss_r / d logit_rj = softmax_rj - [j == y_r]; -inf logits give 0.
                probs = tf.exp(logits - lse[:, tf.newaxis])
                is_target = tf.equal(item_ids[tf.newaxis, :], y[:, tf.newaxis])
                g = (probs - tf.cast(is_target, dtype)) * upstream[:, tf.newaxis]
                grad_x = grad_x + tf.matmul(g, rows)  # [N, d]
                grad_rows = tf.matmul(g, x, transpose_a=True)  # [chunk, d]
                grad_rows = tf.where(eligible[:, tf.newaxis], grad_rows, tf.zeros_like(grad_rows))
                return i + 1, grad_x, grad_chunks.write(i, grad_rows)

            chunks = tf.TensorArray(
                dtype, size=num_chunks, element_shape=tf.TensorShape([chunk_size, x.shape[1]])
            )
            _, grad_x, chunks = tf.while_loop(
                lambda i, *_: i < num_chunks,
                back_body,
                (tf.constant(0), tf.zeros_like(x), chunks),
                parallel_iterations=1,
            )
            # [num_chunks * chunk, d] -> the first C rows (a leading-axis slice).
            grad_table = tf.reshape(chunks.stack(), [-1, tf.shape(table)[1]])[:num_items]
            return grad_x, tf.reshape(grad_table, tf.shape(table))

        return loss, grad

    return row_loss(x, table)


def chunked_cross_entropy(
    hidden,
    labels,
    item_table,
    *,
    padding_id=0,
    chunk_size=None,
    sample_weight=None,
    check_ids=True,
):
    """Exact full-catalogue softmax cross-entropy, computed in catalogue chunks.

    The same loss as `full_cross_entropy` (softmax over every item except the
    padding row, mean over valid rows), but the `N x C` logits never exist. The
    forward pass visits the catalogue `chunk_size` items at a time and keeps a
    running maximum and running sum per row (a streamed logsumexp); only the
    per-row logsumexp `[N]` is kept for the backward pass, which recomputes each
    chunk's logits, forms `softmax - onehot(label)` for that chunk and
    accumulates the gradients of the hidden states and of the chunk's table rows
    (a custom gradient). Peak memory is a few `[N, chunk]` buffers plus the
    table gradient; the time is about 4/3 of the full version's matrix products.

    The table gradient is **dense** (`[C, d]`, not `tf.IndexedSlices`): in the
    exact softmax every item receives gradient, so there is nothing sparse to keep.
    Prefer `scalable_cross_entropy` when the catalogue is large; this function
    is the exact, memory-light reference (and benchmark baseline).

    Args:
        hidden: float `[..., d]` hidden states.
        labels: integer `[...]` item ids (int32 or int64).
        item_table: float `[C, d]` tensor or variable.
        padding_id: ignored label and excluded item; None for no padding row.
        chunk_size: items per chunk (a Python int; need not divide `C`). None ->
            `clip(2**24 // N, 128, 65536)` so each `[N, chunk]` buffer is about
            64 MB (`auto_chunk_size`).
        sample_weight: optional weights broadcastable to `labels`; the result is
            `sum(w * loss) / sum(w)` over non-padding rows.
        check_ids: verify ids lie in `[0, C)`: outside XLA a violation raises
            `InvalidArgumentError`; inside XLA the loss becomes NaN.

    Returns:
        Float scalar; 0 (with zero gradient) when no row is valid.

    Example:

    >>> import tensorflow as tf
    >>> from keras_sce.ops import chunked_cross_entropy
    >>> table = tf.Variable(tf.random.normal([10_000, 32]))
    >>> hidden = tf.random.normal([8, 20, 32])
    >>> labels = tf.random.uniform([8, 20], 1, 10_000, dtype=tf.int32)
    >>> loss = chunked_cross_entropy(hidden, labels, table, chunk_size=3000)

    References:
        Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models",
        arXiv 2411.09009 (the chunked, recomputing formulation);
        Mezentsev et al., arXiv 2409.18721 (SCE, which this is the exact baseline for).
    """
    chunk_size = checks.check_positive_int(chunk_size, "chunk_size", allow_none=True)
    rows = inputs.prepare_rows(
        hidden, labels, item_table, padding_id=padding_id, sample_weight=sample_weight,
        check_ids=check_ids,
    )
    x, padding_id, num_items = rows.x, rows.padding_id, rows.num_items_static
    if padding_id is not None and num_items == 1:
        raise ValueError("The item table holds only the padding row: no item to score.")
    if chunk_size is None:
        chunk_size = auto_chunk_size(x.shape[0], num_items)
    elif num_items is not None:
        chunk_size = min(chunk_size, num_items)
    table = tf.cast(rows.table, x.dtype)
    weight = tf.cast(rows.valid, x.dtype)
    if rows.weight is not None:
        weight = weight * rows.weight
    per_row = _streamed_row_loss(x, table, rows.safe_y(), chunk_size, padding_id)
    return inputs.weighted_mean(per_row, weight, rows.ids_ok)
