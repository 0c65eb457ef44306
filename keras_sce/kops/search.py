"""Per-bucket top-k by inner product (the item search of SCE) in `keras.ops`.

For every bucket centre `c_b` it returns the `k` rows `v_j` with the largest
`<c_b, v_j>`. With `chunk_size` the rows are visited in chunks and each chunk's
candidates are merged into a running top-k, so no `n_b x M` score matrix exists:
the largest intermediate is `n_b x (k + chunk_size)`. Under JAX the chunks are a
`jax.lax.scan` (one compiled loop); on other backends `keras.ops.fori_loop`.
No gradient flows through the search (callers pass detached inputs).
"""

from __future__ import annotations

import keras
from keras import ops

from keras_sce import _options

NEG_INF = float("-inf")


def _mask_excluded(scores, index, exclude_id):
    if exclude_id is None:
        return scores
    return ops.where(ops.expand_dims(index == exclude_id, 0), NEG_INF, scores)


def _dense(centers, vectors, k, exclude_id):
    scores = ops.matmul(centers, ops.transpose(ops.cast(vectors, centers.dtype)))
    index = ops.arange(vectors.shape[0], dtype="int32")
    return ops.top_k(_mask_excluded(scores, index, exclude_id), k, sorted=True)


def _merge_chunk(centers, vectors, k, chunk_size, exclude_id, i, best_scores, best_index):
    """One step of the streamed search: chunk `i` merged into the running top-k."""
    num_vectors = vectors.shape[0]
    start = i * chunk_size
    # The last chunk is shifted back to stay inside the table (no padded copy of
    # the table); the rows it revisits are masked out.
    begin = ops.minimum(start, num_vectors - chunk_size)
    index = begin + ops.arange(chunk_size, dtype="int32")
    chunk = ops.slice(vectors, [begin, 0], [chunk_size, vectors.shape[1]])
    scores = ops.matmul(centers, ops.transpose(ops.cast(chunk, centers.dtype)))
    scores = _mask_excluded(scores, index, exclude_id)
    scores = ops.where(ops.expand_dims(index >= start, 0), scores, NEG_INF)
    merged_scores = ops.concatenate([best_scores, scores], axis=1)
    merged_index = ops.concatenate(
        [best_index, ops.broadcast_to(ops.expand_dims(index, 0), ops.shape(scores))], axis=1
    )
    top_scores, pos = ops.top_k(merged_scores, k, sorted=True)
    return top_scores, ops.take_along_axis(merged_index, pos, axis=1)


def _streamed(centers, vectors, k, chunk_size, exclude_id):
    num_chunks = -(-vectors.shape[0] // chunk_size)
    n_b = centers.shape[0]
    init = (
        ops.full((n_b, k), NEG_INF, dtype=centers.dtype),
        # -1: "nothing found yet"; survives only with a -inf score (fewer than k rows).
        ops.full((n_b, k), -1, dtype="int32"),
    )

    def step(i, carry):
        return _merge_chunk(centers, vectors, k, chunk_size, exclude_id, i, *carry)

    if keras.backend.backend() == "jax":
        import jax

        def scan_step(carry, i):
            return step(i, carry), None

        # The first chunk outside the loop: the carry then varies across devices from
        # the start, as shard_map's scan requires when the rows are sharded.
        first = step(0, init)
        carry, _ = jax.lax.scan(scan_step, first, ops.arange(1, num_chunks, dtype="int32"))
        return carry
    return ops.fori_loop(0, num_chunks, step, init)


def bucket_top_k(centers, vectors, k, *, chunk_size=None, exclude_id=None):
    """Top-`k` rows of `vectors` by inner product with each centre, in `keras.ops`.

    The backend-neutral counterpart of `keras_sce.ops.bucket_top_k` (same
    result up to ties: lower row indices win). Static shapes are required.

    Args:
        centers: float tensor `[n_buckets, d]`.
        vectors: float tensor `[M, d]` (an item table, or hidden states).
        k: Python int, `1 <= k <= M`.
        chunk_size: optional Python int; visit `vectors` in chunks of this many
            rows (need not divide `M`). None computes the projection at once.
        exclude_id: optional Python int, a row never selected (the padding item).

    Returns:
        `(scores, indices)`: float `[n_buckets, k]` in decreasing order and int32
        `[n_buckets, k]` row indices (slots beyond the eligible rows score `-inf`).

    Example:

    >>> import numpy as np
    >>> from keras_sce.kops import bucket_top_k
    >>> rng = np.random.default_rng(0)
    >>> centers = rng.normal(size=(4, 8)).astype("float32")
    >>> items = rng.normal(size=(100, 8)).astype("float32")
    >>> scores, idx = bucket_top_k(centers, items, 5, chunk_size=30)
    >>> tuple(idx.shape)
    (4, 5)
    """
    centers = ops.convert_to_tensor(centers)
    vectors = ops.convert_to_tensor(vectors)
    if len(centers.shape) != 2 or len(vectors.shape) != 2 or centers.shape[1] != vectors.shape[1]:
        raise ValueError(
            f"`centers` and `vectors` must be matrices of the same width, got shapes "
            f"{tuple(centers.shape)} and {tuple(vectors.shape)}."
        )
    k = _options.check_positive_int(k, "k")
    chunk_size = _options.check_positive_int(chunk_size, "chunk_size", allow_none=True)
    if k > vectors.shape[0]:
        raise ValueError(f"`k`={k} must lie in [1, {vectors.shape[0]}] (the number of vectors).")
    if chunk_size is None or chunk_size >= vectors.shape[0]:
        return _dense(centers, vectors, k, exclude_id)
    return _streamed(centers, vectors, k, chunk_size, exclude_id)
