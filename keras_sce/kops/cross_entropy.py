"""Exact softmax cross-entropy over the whole catalogue, in `keras.ops`.

The counterparts of `keras_sce.ops.cross_entropy`, the reference SCE approximates:

- `full_cross_entropy` materialises the `N x C` logits (tests, small catalogues;
  the oracle of the backend-neutral SCE);
- `chunked_cross_entropy` streams over the catalogue in chunks with a running
  logsumexp, so no `N x C` tensor exists, forward or backward: under JAX the
  chunks are a `jax.lax.scan` whose step is rematerialised (`jax.checkpoint`), so
  the backward pass recomputes each chunk's logits instead of keeping them.
"""

from __future__ import annotations

import keras
from keras import ops

from keras_sce import _options
from keras_sce.kops._tensors import prepare_rows, safe_labels, weighted_mean

NEG_INF = float("-inf")


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
        logits = ops.where(ops.expand_dims(is_pad, 0), NEG_INF, logits)
    positives = ops.take_along_axis(logits, ops.expand_dims(rows.y, 1), axis=1)[:, 0]
    return weighted_mean(ops.logsumexp(logits, axis=1) - positives, rows)


def _chunk_terms(x, table, padding_id, chunk_size, i, run_max, run_sum):
    """Chunk `i` merged into the running `(max, sum of exp(logit - max))` per row.

    The last chunk is shifted back inside the table (no padded copy of the table);
    the rows it revisits are masked. The maxima carry no gradient: the gradient of
    `max + log(sum)` is then the softmax itself, exact whatever the shift.
    """
    num_items = table.shape[0]
    start = i * chunk_size
    begin = ops.minimum(start, num_items - chunk_size)
    index = begin + ops.arange(chunk_size, dtype="int32")
    rows = ops.slice(table, [begin, 0], [chunk_size, table.shape[1]])
    logits = ops.matmul(x, ops.transpose(rows))  # [N, chunk]
    eligible = index >= start
    if padding_id is not None:
        eligible = ops.logical_and(eligible, index != padding_id)
    logits = ops.where(ops.expand_dims(eligible, 0), logits, NEG_INF)
    new_max = ops.stop_gradient(ops.maximum(run_max, ops.max(logits, axis=1)))
    # A row whose logits so far are all -inf keeps a finite shift (0).
    shift = ops.where(ops.isfinite(new_max), new_max, ops.zeros_like(new_max))
    old_shift = ops.where(ops.isfinite(run_max), run_max, ops.zeros_like(run_max))
    run_sum = run_sum * ops.exp(old_shift - shift) + ops.sum(
        ops.exp(logits - ops.expand_dims(shift, 1)), axis=1
    )
    return new_max, run_sum


def _streamed_logsumexp(x, table, padding_id, chunk_size):
    """`logsumexp(x @ table^T)` per row over the eligible items, chunk by chunk."""
    num_chunks = -(-table.shape[0] // chunk_size)
    init = (ops.full((x.shape[0],), NEG_INF, dtype=x.dtype), ops.zeros((x.shape[0],), x.dtype))

    def step(i, carry):
        return _chunk_terms(x, table, padding_id, chunk_size, i, *carry)

    if keras.backend.backend() == "jax":
        import jax

        # Rematerialised: the backward pass keeps only each step's [N] carry and
        # recomputes the chunk's [N, chunk] logits, instead of stacking them all.
        @jax.checkpoint
        def scan_step(carry, i):
            return step(i, carry), None

        (run_max, run_sum), _ = jax.lax.scan(
            scan_step, init, ops.arange(num_chunks, dtype="int32")
        )
    else:
        run_max, run_sum = ops.fori_loop(0, num_chunks, step, init)
    shift = ops.where(ops.isfinite(run_max), run_max, ops.zeros_like(run_max))
    return shift + ops.log(run_sum)


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
    """Exact full-catalogue softmax cross-entropy in catalogue chunks (`keras.ops`).

    The counterpart of `keras_sce.ops.chunked_cross_entropy`: the loss of
    `full_cross_entropy` (softmax over every item but the padding row, mean over
    the rows that count), but the catalogue is visited `chunk_size` items at a
    time with a running maximum and sum per row, so the `N x C` logits never
    exist. Under JAX the chunks are a `jax.lax.scan` whose step is
    rematerialised: the backward pass recomputes each chunk's logits, so the
    compiled step holds a few `[N, chunk]` buffers and the (dense) `[C, d]` table
    gradient. On other backends the loop is `keras.ops.fori_loop` (its gradient
    may keep every chunk's logits).

    Args:
        hidden: float `[..., d]` hidden states.
        labels: integer `[...]` target ids.
        item_table: float `[C, d]` table.
        padding_id: ignored label and excluded item (None: none).
        chunk_size: items per chunk (need not divide `C`); None ->
            `keras_sce._options.auto_chunk_size` (an `[N, chunk]` float32 buffer
            of about 64 MB), as the TensorFlow version.
        sample_weight: optional non-negative weights broadcastable to `labels`.
        check_ids: labels must lie in `[0, C)` (raises when concrete, NaN when traced).

    Returns:
        A float scalar: 0 (with a zero gradient) when no row counts; NaN for
        out-of-range ids (traced) or non-finite inputs in a counted row.

    Raises:
        TypeError: non-float hidden states or table, non-integer labels.
        ValueError: shapes, options or (concrete) ids and weights that do not fit;
            a table that holds only the padding row.

    Example:

    >>> import numpy as np
    >>> from keras_sce.kops import chunked_cross_entropy, full_cross_entropy
    >>> rng = np.random.default_rng(0)
    >>> table = rng.normal(size=(1000, 8)).astype("float32")
    >>> hidden = rng.normal(size=(4, 5, 8)).astype("float32")
    >>> labels = rng.integers(1, 1000, size=(4, 5))
    >>> loss = chunked_cross_entropy(hidden, labels, table, chunk_size=300)
    >>> bool(abs(float(loss) - float(full_cross_entropy(hidden, labels, table))) < 1e-4)
    True
    """
    chunk_size = _options.check_positive_int(chunk_size, "chunk_size", allow_none=True)
    rows = prepare_rows(hidden, labels, item_table, padding_id, sample_weight, check_ids)
    num_items = rows.table.shape[0]
    if rows.padding_id is not None and num_items == 1:
        raise ValueError("The item table holds only the padding row: no item to score.")
    if chunk_size is None:
        chunk_size = _options.auto_chunk_size(rows.x.shape[0], num_items)
    chunk_size = min(chunk_size, num_items)
    y = safe_labels(rows)
    lse = _streamed_logsumexp(rows.x, rows.table, rows.padding_id, chunk_size)
    target = ops.sum(rows.x * ops.take(rows.table, y, axis=0), axis=-1)
    return weighted_mean(lse - target, rows)
