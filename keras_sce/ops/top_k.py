"""Top-k by inner product, streamed over the rows it searches: the one search of the core.

For every query `q_r` it returns the `k` rows `v_j` with the largest
`<q_r, v_j>` (a maximum inner product search). With `chunk_size` the rows are
visited in chunks and each chunk's candidates are merged into a running top-k, so
the largest intermediate is `[n, k + chunk_size]` rather than `[n, M]`.

Two callers share it: SCE's item search (queries = bucket centres, rows = the item
table, arXiv 2409.18721 materialises that projection; we stream it) and the
full-ranking evaluation (queries = users, with each user's history excluded and
the rank of a target counted in the same pass).
"""

from __future__ import annotations

import tensorflow as tf

from keras_sce.ops import checks

_NEG_INF = float("-inf")


def _masked_scores(scores, index, mask, exclude_id):
    """Sets the scores of ineligible rows to -inf. `index`: [chunk] int32."""
    neg_inf = tf.constant(_NEG_INF, scores.dtype)
    if mask is not None:
        scores = tf.where(tf.gather(mask, index)[tf.newaxis, :], scores, neg_inf)
    if exclude_id is not None:
        scores = tf.where((index == exclude_id)[tf.newaxis, :], neg_inf, scores)
    return scores


def exclude_per_row(scores, begin, exclude):
    """Sets `scores[r, e - begin]` to -inf for every id `e >= 0` of `exclude[r]`.

    `scores` covers the ids `begin .. begin + width - 1`; `exclude` is
    `[n, H]` (`-1`: nothing). A scatter-min (+inf where an id falls outside the
    chunk), so shapes stay static and the cost is `O(n H)`, not `O(n H width)`.
    """
    width = tf.shape(scores)[1]
    local = exclude - begin
    hit = (exclude >= 0) & (local >= 0) & (local < width)
    local = tf.clip_by_value(local, 0, tf.maximum(width - 1, 0))
    rows = tf.broadcast_to(tf.range(tf.shape(scores)[0])[:, tf.newaxis], tf.shape(local))
    inf = tf.constant(float("inf"), scores.dtype)
    updates = tf.where(hit, -inf, inf)
    return tf.tensor_scatter_nd_min(scores, tf.stack([rows, local], axis=-1), updates)


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


def _target_scores(queries, vectors, targets, handle_spec):
    rows = tf.cast(_gather_rows(vectors, targets, handle_spec), queries.dtype)
    return tf.reduce_sum(queries * rows, axis=-1)


def _scan_chunk(scores, index, begin, exclude, ranking):
    """Per-row exclusion of one chunk, and the target ranks' running counts.

    `ranking` is None or `(targets, target_scores, above, finite)`: `above`
    counts per query the eligible rows scoring at least as high as its target (ties
    against it), `finite` is False once a score is NaN (finite inputs can still
    overflow). Returns `(scores, ranking)`.
    """
    if ranking is not None:
        targets, target_scores, above, finite = ranking
        finite = tf.logical_and(finite, tf.logical_not(tf.reduce_any(tf.math.is_nan(scores), 1)))
    if exclude is not None:
        scores = exclude_per_row(scores, begin, exclude)
    if ranking is None:
        return scores, None
    beats = (scores >= target_scores[:, tf.newaxis]) & (
        index[tf.newaxis, :] != targets[:, tf.newaxis]
    )
    above = above + tf.reduce_sum(tf.cast(beats, tf.int32), axis=1)
    return scores, (targets, target_scores, above, finite)


def _chunk_scores(queries, chunk, index, mask, exclude_id):
    scores = tf.matmul(queries, tf.cast(chunk, queries.dtype), transpose_b=True)
    return _masked_scores(scores, index, mask, exclude_id)


def _top_k_dense(queries, vectors, k, mask, exclude_id, handle_spec, exclude, ranking):
    vectors = _read_all(vectors, handle_spec)
    index = tf.range(tf.shape(vectors)[0], dtype=tf.int32)
    scores = _chunk_scores(queries, vectors, index, mask, exclude_id)  # [n, M]
    scores, ranking = _scan_chunk(scores, index, 0, exclude, ranking)
    top = tf.math.top_k(scores, k=k, sorted=True)
    return (top.values, top.indices) + (() if ranking is None else ranking[2:])


def _top_k_streamed(queries, vectors, k, chunk_size, mask, exclude_id, handle_spec, exclude,
                    ranking):
    num_vectors = tf.shape(vectors)[0] if handle_spec is None else handle_spec[0]
    n = tf.shape(queries)[0]
    num_chunks = (num_vectors + chunk_size - 1) // chunk_size
    offsets = tf.range(chunk_size, dtype=tf.int32)

    def body(i, best_scores, best_index, *counts):
        start = i * chunk_size
        # The last chunk is shifted back so that it stays inside the table (no
        # padded copy of the table is ever made); rows it revisits are masked.
        begin = tf.minimum(start, num_vectors - chunk_size)
        index = begin + offsets
        # A gather, not tf.slice(vectors, [begin, 0], [chunk_size, -1]): under XLA a
        # dynamic Slice with a -1 size is lowered through a copy of `vectors`
        # padded to twice its size in each dimension (4x the table, kept by the
        # compiled program). Cast chunk by chunk: a bf16/fp16 table is never
        # copied whole.
        chunk = _gather_rows(vectors, index, handle_spec)
        scores = _chunk_scores(queries, chunk, index, mask, exclude_id)  # [n, chunk]
        scores = tf.where(
            (index >= start)[tf.newaxis, :], scores, tf.constant(_NEG_INF, scores.dtype)
        )
        state = None if ranking is None else (*ranking[:2], *counts)
        scores, state = _scan_chunk(scores, index, begin, exclude, state)
        merged_scores = tf.concat([best_scores, scores], axis=1)
        merged_index = tf.concat(
            [best_index, tf.broadcast_to(index[tf.newaxis, :], tf.shape(scores))], axis=1
        )
        top_scores, pos = tf.math.top_k(merged_scores, k=k, sorted=True)
        top_index = tf.gather(merged_index, pos, batch_dims=1)
        return (i + 1, top_scores, top_index) + (() if state is None else state[2:])

    init_scores = tf.fill([n, k], tf.constant(_NEG_INF, queries.dtype))
    # -1 marks "nothing found yet"; it can only survive when fewer than k rows are
    # eligible, and then its score is -inf (callers mask on the score).
    init_index = tf.fill([n, k], -1)
    counts = () if ranking is None else ranking[2:]
    _, scores, index, *counts = tf.while_loop(
        lambda i, *_: i < num_chunks,
        body,
        (tf.constant(0), init_scores, init_index, *counts),
        parallel_iterations=1,
    )
    return (scores, index, *counts)


def top_k_impl(queries, vectors, k, chunk_size, mask, exclude_id, handle_spec=None,
               exclude=None, targets=None):
    """The search itself (no validation; see `bucket_top_k` for the arguments).

    `vectors` is a tensor, or (with `handle_spec=(rows, dim, dtype)`) the
    resource handle of a variable, read inside the compiled program only.
    `exclude`: optional int32 `[n, H]` ids never returned for that query (-1:
    none). `targets`: optional int32 `[n]`; then the result also holds each
    target's 0-based rank among the eligible, non-excluded rows (ties counted
    against it; the caller keeps a target out of its own `exclude`) and a
    per-query flag that its scores were free of NaN.

    Returns:
        `(scores [n, k], indices [n, k])`, plus `(ranks [n], finite [n])` with
        `targets`.
    """
    num_vectors = vectors.shape[0] if handle_spec is None else handle_spec[0]
    ranking = None
    if targets is not None:
        target_scores = _target_scores(queries, vectors, targets, handle_spec)
        ranking = (targets, target_scores, tf.zeros_like(targets),
                   tf.math.is_finite(target_scores))
    if chunk_size is None or num_vectors is None or chunk_size >= num_vectors:
        return _top_k_dense(queries, vectors, k, mask, exclude_id, handle_spec, exclude,
                            ranking)
    return _top_k_streamed(queries, vectors, k, chunk_size, mask, exclude_id, handle_spec,
                           exclude, ranking)


# One XLA program per (shapes, k, chunk_size, exclude_id); Python ints are static.
top_k_xla = tf.function(top_k_impl, jit_compile=True, autograph=False)


def bucket_top_k(centers, vectors, k, *, chunk_size=None, mask=None, exclude_id=None,
                 exclude=None):
    """Top-`k` vectors by inner product with each bucket centre, XLA-compiled.

    For each row `c_b` of `centers` this returns the `k` rows of `vectors`
    with the largest inner product `<c_b, v_j>`, as `tf.math.top_k` over the full
    projection `centers @ vectors^T` would (ties aside). With `chunk_size` the
    projection is never materialised: vectors are visited `chunk_size` rows at a
    time and merged into a running top-`k`, so peak memory is
    `n_buckets * (k + chunk_size)` scores whatever the number of vectors. The step
    runs as one XLA program (`tf.function(jit_compile=True)`); it carries no
    gradient (wrap inputs in `tf.stop_gradient` when called under a tape). The
    full-ranking evaluation (`keras_sce.evaluation.streamed_top_k`) runs
    the same search.

    Args:
        centers: float tensor `[n_buckets, d]`.
        vectors: float tensor `[M, d]` (e.g. an item table, or hidden states).
        k: Python int, `1 <= k <= M`.
        chunk_size: optional Python int; stream over `vectors` in chunks of this
            many rows (need not divide `M`). `None` computes the projection at once.
        mask: optional bool tensor `[M]`; `False` rows are never selected
            (their score is `-inf`; if fewer than `k` rows are eligible the
            remaining slots hold `-inf` scores and index `-1`).
        exclude_id: optional Python int, a single row never selected (e.g. the
            padding item); cheaper than a mask over a huge table.
        exclude: optional int `[n_buckets, H]` rows never selected for that
            centre (e.g. a user's history); `-1` entries mean nothing.

    Returns:
        `(scores, indices)`: float `[n_buckets, k]` sorted in decreasing order,
        and int32 `[n_buckets, k]` row indices into `vectors`.

    Raises:
        TypeError: non-float centres or vectors, a non-bool mask, non-integer ids.
        ValueError: shapes that do not fit, `k` larger than `M`.

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
    if exclude is not None:
        exclude = checks.as_id_tensor(exclude, "exclude")
        if exclude.shape.rank != 2 or not exclude.shape[:1].is_compatible_with(centers.shape[:1]):
            raise ValueError(
                f"`exclude` must be [{centers.shape[0]}, H] (ids per centre, -1 for none), "
                f"got shape {exclude.shape}."
            )
    return top_k_xla(centers, vectors, k, chunk_size, mask, exclude_id, None, exclude)
