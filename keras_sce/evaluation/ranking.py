"""Full-catalogue ranking: streamed top-k with history exclusion, and metrics.

Every user's target is ranked against the whole catalogue (no sampled metrics).
Scores are computed chunk by chunk over the item table, so the largest live tensor
is `[query_batch, chunk_size + k]`; no `[users, items]` matrix is ever built.
The search is the core's (`keras_sce.ops.top_k`), the one SCE's loss uses to
find each bucket's items. A JAX item table split by rows over a device mesh is
ranked shard by shard where its rows live (`keras_sce.kops.sharded`), never
gathered to one device or to the host.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_sce.evaluation import sharded
from keras_sce.evaluation.finite import (  # noqa: F401  (NonFiniteScoresError: public here too)
    NonFiniteScoresError,
    check_finite,
    non_finite_rows,
)
from keras_sce.ops import checks
from keras_sce.ops.top_k import top_k_impl

DEFAULT_KS = (1, 5, 10, 20, 50)


# The search of the core (SCE's item search runs it compiled with XLA); here a plain
# graph, traced once per query-batch shape, k and chunk size.
_search = tf.function(top_k_impl, autograph=False, reduce_retracing=True)


def streamed_top_k(
    queries,
    item_table,
    k: int,
    *,
    exclude=None,
    targets=None,
    chunk_size: int = 8192,
    batch_size: int = 1024,
    padding_id: int = 0,
):
    """Top-k items by inner product, streamed over catalogue chunks.

    For each query row, scores `queries @ item_table^T` one catalogue chunk at a
    time, sets the padding id and the row's excluded ids (its history) to -inf,
    and merges the chunk into a running top-k: the search of
    `keras_sce.ops.bucket_top_k` (SCE's item search), run per query batch.
    When `targets` are given it also counts, per row, the non-excluded items
    scoring at least as high as the target (the target's 0-based rank, ties
    counted against it); a row's own target is never excluded even if it is in
    its history.

    Args:
        queries: `float [n, d]` user representations.
        item_table: `float [C, d]` item embeddings (row `padding_id` is skipped).
        k: number of items to return per row (`k <= C - 1`).
        exclude: optional `int [n, H]` ids to exclude per row; `padding_id` or
            negative entries mean "nothing".
        targets: optional `int [n]` target ids whose rank is returned.
        chunk_size: catalogue rows scored at once.
        batch_size: query rows processed at once.
        padding_id: id that is never recommended.

    A JAX table whose rows are split over a device mesh axis (e.g. the item
    embeddings under a `keras.distribution.ModelParallel` layout `("model",
    None)`) is never gathered: each device ranks its own rows and only the small
    per-device top-k candidates and rank counts are merged
    (`keras_sce.kops.sharded.sharded_top_k_with_exclusion`); every query batch is
    padded to `batch_size` rows so that one compiled program serves them all.

    Returns:
        `(scores [n, k], ids [n, k])` as NumPy arrays, plus `ranks [n]` when
        `targets` is given.

    Raises:
        NonFiniteScoresError: a query row or a (non-padding) table row holds NaN
            or infinity, or a score overflows to a non-finite value. Comparisons
            with NaN are false, so such a query would otherwise rank its target
            first.
        ValueError: shapes, `k`, targets or ids that do not fit.
        TypeError: a non-integer `k`, `chunk_size`, `batch_size` or
            `padding_id`.

    Example:

    >>> import numpy as np
    >>> table = np.eye(4, dtype="float32")
    >>> scores, ids = streamed_top_k(np.array([[0, 3, 2, 1]], "float32"), table, 2)
    >>> ids.tolist()
    [[1, 2]]
    """
    k = checks.as_int(k, "k")
    chunk_size = checks.check_positive_int(chunk_size, "chunk_size")
    batch_size = checks.check_positive_int(batch_size, "batch_size")
    padding_id = checks.as_int(padding_id, "padding_id")
    sharding = sharded.row_sharding(item_table)
    if sharding is None:
        queries = tf.convert_to_tensor(queries)
        if not queries.dtype.is_floating:
            queries = tf.cast(queries, tf.float32)
        table = tf.convert_to_tensor(item_table, dtype=queries.dtype)
    else:  # a JAX table split by rows over devices: searched where its rows live
        queries = sharded.as_float_array(queries)
        table = getattr(item_table, "value", item_table)
    if len(queries.shape) != 2 or len(table.shape) != 2 or queries.shape[1] != table.shape[1]:
        raise ValueError(
            f"queries [n, d] and item_table [C, d] must agree on d; got {queries.shape} "
            f"and {table.shape}."
        )
    num_items = int(table.shape[0])
    if sharding is None:
        check_finite(queries, table, padding_id)
    else:
        sharded.check_finite_sharded(queries, table, padding_id)
    if not 1 <= k <= num_items - 1:
        raise ValueError(f"k must be in [1, {num_items - 1}] (catalogue minus padding), got {k}.")
    n = int(queries.shape[0])
    if exclude is None:
        exclude = np.full((n, 1), -1, dtype=np.int32)
    exclude = np.asarray(exclude, dtype=np.int32)
    exclude = np.where(exclude == padding_id, -1, exclude)
    if exclude.shape[0] != n:
        raise ValueError(f"exclude has {exclude.shape[0]} rows for {n} queries.")
    with_targets = targets is not None
    if with_targets:
        targets = np.asarray(targets, dtype=np.int32)
        if targets.shape != (n,):
            raise ValueError(f"targets must have shape [{n}], got {targets.shape}.")
        if targets.size and (targets.min() < 0 or targets.max() >= num_items):
            raise ValueError(f"target ids must lie in [0, {num_items - 1}].")
        if np.any(targets == padding_id):
            raise ValueError("a target equals the padding id.")
        # A row's own target stays rankable even when it is in its history.
        exclude = np.where(exclude == targets[:, None], -1, exclude)
    else:  # any real item: its score only serves the overflow check
        targets = np.full((n,), 1 if padding_id == 0 else 0, dtype=np.int32)
    out_scores, out_ids, out_ranks, overflowed = [], [], [], 0
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if sharding is None:
            scores, ids, ranks, finite = _search(
                queries[start:stop], table, k, chunk_size, None, padding_id, None,
                tf.constant(exclude[start:stop]), tf.constant(targets[start:stop]),
            )
        else:
            scores, ids, ranks, finite = sharded.sharded_search(
                sharding, queries, table, k, chunk_size, padding_id, exclude, targets,
                start, stop, batch_size,
            )
        out_scores.append(np.asarray(scores))
        out_ids.append(np.asarray(ids))
        out_ranks.append(np.asarray(ranks))
        overflowed += int(np.sum(~np.asarray(finite)))
    if overflowed:
        raise NonFiniteScoresError(
            f"the scores of {overflowed} of {n} queries overflowed to NaN or infinity "
            "(finite but huge queries or item embeddings); no ranking can be computed."
        )
    scores = np.concatenate(out_scores) if out_scores else np.zeros((0, k), np.float32)
    ids = np.concatenate(out_ids) if out_ids else np.zeros((0, k), np.int32)
    if with_targets:
        return scores, ids, np.concatenate(out_ranks) if out_ranks else np.zeros(0, np.int32)
    return scores, ids


def ranking_metrics(
    ranks, top_ids=None, *, num_items: int | None = None, ks=DEFAULT_KS
) -> dict[str, float]:
    """HR@K, NDCG@K, MRR@K (and COV@K) from 0-based target ranks.

    With one relevant item per user: `HR@K = [rank < K]`,
    `NDCG@K = [rank < K] / log2(rank + 2)`, `MRR@K = [rank < K] / (rank + 1)`,
    averaged over users. `COV@K` is the share of the catalogue (padding
    excluded, `num_items - 1` items) that appears in at least one user's top-K.

    Args:
        ranks: `int [n]` 0-based rank of each user's target.
        top_ids: optional `int [n, >= max(ks)]` recommended ids (for coverage).
        num_items: id-space size including padding (needed with `top_ids`).
        ks: cut-offs.

    Returns:
        A dict such as `{"ndcg@10": ..., "hr@10": ..., "mrr@10": ..., "cov@10": ...}`.

    Example:

    >>> round(ranking_metrics([0, 2], ks=(10,))["ndcg@10"], 4)  # (1 + 1/log2(4)) / 2
    0.75
    """
    ks = check_ks(ks)
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.ndim != 1 or ranks.size == 0:
        raise ValueError("ranks must be a non-empty 1-D array.")
    if not np.all(np.isfinite(ranks)):
        raise NonFiniteScoresError("ranks hold NaN or infinite values.")
    if np.any(ranks < 0):
        raise ValueError("ranks are 0-based and must be >= 0.")
    out = {}
    for k in ks:
        hit = ranks < k
        out[f"hr@{k}"] = float(hit.mean())
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
        out[f"mrr@{k}"] = float(np.where(hit, 1.0 / (ranks + 1.0), 0.0).mean())
        if top_ids is not None:
            if num_items is None:
                raise ValueError("num_items is required to compute coverage.")
            top_ids = np.asarray(top_ids)
            if top_ids.shape[1] < k:
                raise ValueError(f"top_ids has {top_ids.shape[1]} columns; COV@{k} needs {k}.")
            out[f"cov@{k}"] = float(np.unique(top_ids[:, :k]).size / (num_items - 1))
    return out


def check_ks(ks) -> tuple[int, ...]:
    """Cut-offs as a non-empty tuple of Python ints >= 1."""
    if isinstance(ks, (int, np.integer)) and not isinstance(ks, (bool, np.bool_)):
        ks = (ks,)
    ks = tuple(checks.as_int(k, "ks", minimum=1) for k in ks)
    if not ks:
        raise ValueError("`ks` must hold at least one cut-off.")
    return ks


def evaluate_ranking(
    queries,
    item_table,
    targets,
    *,
    exclude=None,
    ks=DEFAULT_KS,
    chunk_size: int = 8192,
    batch_size: int = 1024,
    padding_id: int = 0,
) -> dict[str, float]:
    """Full-ranking metrics for user representations against an item table.

    See `streamed_top_k` (ranking) and `ranking_metrics` (definitions).

    Non-finite inputs are an error, never a score: a NaN or infinite query or
    (non-padding) table row, or a score that overflows, raises
    `NonFiniteScoresError` naming the input and how many rows hold one.

    Raises:
        NonFiniteScoresError: non-finite queries, table rows or scores.
        ValueError: shapes, cut-offs or ids that do not fit.
    """
    ks = check_ks(ks)
    num_items = int(np.shape(item_table)[0])
    k = min(max(ks), num_items - 1)
    _, ids, ranks = streamed_top_k(
        queries,
        item_table,
        k,
        exclude=exclude,
        targets=targets,
        chunk_size=chunk_size,
        batch_size=batch_size,
        padding_id=padding_id,
    )
    ks = tuple(x for x in ks if x <= k) or (k,)
    return ranking_metrics(ranks, ids, num_items=num_items, ks=ks)
