"""The XLA-compiled bucketing step: per-bucket top-k by inner product.

For every bucket centre ``c_b`` it returns the ``k`` vectors ``v_j`` with the largest
``<c_b, v_j>`` — a maximum inner product search. With ``chunk_size`` the vectors are
visited in chunks and each chunk's candidates are merged into a running top-k, so the
largest intermediate is ``[n_buckets, k + chunk_size]`` rather than
``[n_buckets, len(vectors)]``. This is what lets SCE scale to catalogues of millions
of items (arXiv 2409.18721 materialises the full projection; we stream it).
"""

from __future__ import annotations

import tensorflow as tf

from keras_sce.ops import checks

_NEG_INF = float("-inf")


def _masked_scores(scores, index, mask, exclude_id):
    """Sets the scores of ineligible vectors to -inf. ``index``: [chunk] int32."""
    neg_inf = tf.constant(_NEG_INF, scores.dtype)
    if mask is not None:
        scores = tf.where(tf.gather(mask, index)[tf.newaxis, :], scores, neg_inf)
    if exclude_id is not None:
        scores = tf.where((index == exclude_id)[tf.newaxis, :], neg_inf, scores)
    return scores


def _read_all(vectors, handle_spec):
    if handle_spec is None:
        return vectors
    num_vectors, dim, dtype = handle_spec
    value = tf.raw_ops.ReadVariableOp(resource=vectors, dtype=dtype)
    value.set_shape([num_vectors, dim])
    return value


def _gather_rows(vectors, index, handle_spec):
    if handle_spec is None:
        return tf.gather(vectors, index)
    _, dim, dtype = handle_spec
    rows = tf.raw_ops.ResourceGather(resource=vectors, indices=index, dtype=dtype)
    rows.set_shape([index.shape[0], dim])
    return rows


def _top_k_dense(centers, vectors, k, mask, exclude_id, handle_spec=None):
    vectors = _read_all(vectors, handle_spec)
    scores = tf.matmul(centers, tf.cast(vectors, centers.dtype), transpose_b=True)  # [n_b, M]
    index = tf.range(tf.shape(vectors)[0], dtype=tf.int32)
    scores = _masked_scores(scores, index, mask, exclude_id)
    return tf.math.top_k(scores, k=k, sorted=True)


def _top_k_streamed(centers, vectors, k, chunk_size, mask, exclude_id, handle_spec=None):
    num_vectors = tf.shape(vectors)[0] if handle_spec is None else handle_spec[0]
    n_buckets = tf.shape(centers)[0]
    num_chunks = (num_vectors + chunk_size - 1) // chunk_size
    offsets = tf.range(chunk_size, dtype=tf.int32)

    def body(i, best_scores, best_index):
        start = i * chunk_size
        # The last chunk is shifted back so that it stays inside the table (no
        # padded copy of the table is ever made); rows it revisits are masked.
        begin = tf.minimum(start, num_vectors - chunk_size)
        index = begin + offsets
        # A gather, not tf.slice(vectors, [begin, 0], [chunk_size, -1]): under XLA a
        # dynamic Slice with a -1 size is lowered through a copy of ``vectors``
        # padded to twice its size in each dimension (4x the table, kept by the
        # compiled program).
        # Cast chunk by chunk: a bf16/fp16 table is never copied whole.
        chunk = tf.cast(_gather_rows(vectors, index, handle_spec), centers.dtype)
        scores = tf.matmul(centers, chunk, transpose_b=True)  # [n_b, chunk]
        scores = _masked_scores(scores, index, mask, exclude_id)
        scores = tf.where(
            (index >= start)[tf.newaxis, :], scores, tf.constant(_NEG_INF, scores.dtype)
        )
        merged_scores = tf.concat([best_scores, scores], axis=1)
        merged_index = tf.concat(
            [best_index, tf.broadcast_to(index[tf.newaxis, :], tf.shape(scores))], axis=1
        )
        top_scores, pos = tf.math.top_k(merged_scores, k=k, sorted=True)
        top_index = tf.gather(merged_index, pos, batch_dims=1)
        return i + 1, top_scores, top_index

    init_scores = tf.fill([n_buckets, k], tf.constant(_NEG_INF, centers.dtype))
    # -1 marks "nothing found yet"; it can only survive when fewer than k vectors
    # are eligible, and then its score is -inf (callers mask on the score).
    init_index = tf.fill([n_buckets, k], -1)
    _, scores, index = tf.while_loop(
        lambda i, *_: i < num_chunks,
        body,
        (tf.constant(0), init_scores, init_index),
        parallel_iterations=1,
    )
    return scores, index


def _bucket_top_k_impl(centers, vectors, k, chunk_size, mask, exclude_id, handle_spec=None):
    """``vectors`` is a tensor, or (with ``handle_spec=(rows, dim, dtype)``) the
    resource handle of a variable, read inside the compiled program only."""
    num_vectors = vectors.shape[0] if handle_spec is None else handle_spec[0]
    if chunk_size is None or num_vectors is None or chunk_size >= num_vectors:
        return _top_k_dense(centers, vectors, k, mask, exclude_id, handle_spec)
    return _top_k_streamed(centers, vectors, k, chunk_size, mask, exclude_id, handle_spec)


# One XLA program per (shapes, k, chunk_size, exclude_id); Python ints are static.
_bucket_top_k_xla = tf.function(_bucket_top_k_impl, jit_compile=True, autograph=False)


def bucket_top_k(centers, vectors, k, *, chunk_size=None, mask=None, exclude_id=None):
    """Top-``k`` vectors by inner product with each bucket centre, XLA-compiled.

    For each row ``c_b`` of ``centers`` this returns the ``k`` rows of ``vectors``
    with the largest inner product ``<c_b, v_j>``, as ``tf.math.top_k`` over the full
    projection ``centers @ vectors^T`` would (ties aside). With ``chunk_size`` the
    projection is never materialised: vectors are visited ``chunk_size`` rows at a
    time and merged into a running top-``k``, so peak memory is
    ``n_buckets * (k + chunk_size)`` scores whatever the number of vectors. The step
    runs as one XLA program (``tf.function(jit_compile=True)``); it carries no
    gradient (wrap inputs in ``tf.stop_gradient`` when called under a tape).

    Args:
        centers: float tensor ``[n_buckets, d]``.
        vectors: float tensor ``[M, d]`` (e.g. an item table, or hidden states).
        k: Python int, ``1 <= k <= M``.
        chunk_size: optional Python int; stream over ``vectors`` in chunks of this
            many rows (need not divide ``M``). ``None`` computes the projection at once.
        mask: optional bool tensor ``[M]``; ``False`` rows are never selected
            (their score is ``-inf``; if fewer than ``k`` rows are eligible the
            remaining slots hold ``-inf`` scores).
        exclude_id: optional Python int, a single row never selected (e.g. the
            padding item); cheaper than a mask over a huge table.

    Returns:
        ``(scores, indices)``: float ``[n_buckets, k]`` sorted in decreasing order,
        and int32 ``[n_buckets, k]`` row indices into ``vectors``.

    Example:

    >>> import tensorflow as tf
    >>> from keras_sce.ops import bucket_top_k
    >>> centers = tf.random.normal([8, 16])
    >>> items = tf.random.normal([1000, 16])
    >>> scores, idx = bucket_top_k(centers, items, k=32, chunk_size=300)
    >>> idx.shape
    TensorShape([8, 32])

    References:
        Mezentsev et al., "Scalable Cross-Entropy Loss for Sequential
        Recommendations with Large Item Catalogs", RecSys 2024, arXiv 2409.18721.
    """
    centers = checks.as_float_tensor(centers, "centers")
    vectors = checks.as_float_tensor(vectors, "vectors")
    if centers.shape.rank != 2 or vectors.shape.rank != 2:
        raise ValueError(
            f"`centers` and `vectors` must be matrices, got shapes {centers.shape} and "
            f"{vectors.shape}."
        )
    if centers.shape[1] is not None and vectors.shape[1] is not None:
        if centers.shape[1] != vectors.shape[1]:
            raise ValueError(
                f"`centers` width {centers.shape[1]} != `vectors` width {vectors.shape[1]}."
            )
    k = checks.check_positive_int(k, "k")
    chunk_size = checks.check_positive_int(chunk_size, "chunk_size", allow_none=True)
    num_vectors = vectors.shape[0]
    if num_vectors is not None and k > num_vectors:
        raise ValueError(f"`k`={k} is larger than the number of vectors ({num_vectors}).")
    if mask is not None:
        mask = tf.convert_to_tensor(mask)
        if mask.dtype != tf.bool:
            raise TypeError(f"`mask` must be a bool tensor, got {mask.dtype.name}.")
        if mask.shape.rank != 1 or (
            num_vectors is not None and mask.shape[0] is not None and mask.shape[0] != num_vectors
        ):
            raise ValueError(
                f"`mask` must have shape [{num_vectors}] (one flag per vector), got {mask.shape}."
            )
    if exclude_id is not None:
        exclude_id = checks.as_int(exclude_id, "exclude_id")
        if exclude_id < 0 or (num_vectors is not None and exclude_id >= num_vectors):
            raise ValueError(f"`exclude_id`={exclude_id} is not a row of `vectors`.")
    return _bucket_top_k_xla(centers, vectors, k, chunk_size, mask, exclude_id)
