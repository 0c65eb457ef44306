"""Full-catalogue log-likelihood of ranking targets, streamed over the item table.

The scores of a retrieval or recommendation model are read as logits of a softmax
over the whole catalogue: `log p(y | q) = <q, w_y> - logsumexp_j <q, w_j>`. The
log-sum-exp runs over catalogue chunks (running maximum and rescaled sum), so the
largest live tensor is `[batch_size, chunk_size]`; no `[users, items]` matrix
is built. The candidate set is the one the ranking metrics use
(`keras_sce.evaluation.streamed_top_k`): every item except the padding id and
the row's excluded ids (its history), the row's own target always included.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_sce.evaluation.finite import NonFiniteScoresError
from keras_sce.evaluation.perplexity import stream_excluding_graph
from keras_sce.ops import checks


def catalogue_log_likelihood(queries, item_table, targets, *, exclude=None,
                             chunk_size: int = 8192, batch_size: int = 1024,
                             padding_id: int | None = 0) -> np.ndarray:
    """Per-row log-softmax of each target's score over the whole catalogue (nats).

    Args:
        queries: `float [n, d]` user (query) representations.
        item_table: `float [C, d]` item embeddings.
        targets: `int [n]` target ids (none may be the padding id).
        exclude: optional `int [n, H]` ids left out of row n's softmax, e.g. the
            items the user has already seen; negative or `padding_id` entries mean
            "nothing". A row's own target is never left out, even if listed.
        chunk_size: catalogue rows scored at once.
        batch_size: query rows scored at once.
        padding_id: id that is never a candidate (None: every row of the table is).

    Returns:
        `float64 [n]`: `log p(target | query)`, each `<= 0`; its mean is the
        mean log-likelihood per target, its negative the cross-entropy.

    Raises:
        ValueError: shapes that do not fit, target ids outside the table or equal
            to the padding id.
        NonFiniteScoresError: a NaN or infinite score (a `ValueError`).

    Example:

    >>> import numpy as np
    >>> table = np.array([[0, 0], [1, 0], [0, 1], [0, 0]], "float32")
    >>> ll = catalogue_log_likelihood(np.zeros((1, 2), "float32"), table, [2])
    >>> round(float(np.exp(ll[0])), 4)  # uniform over the 3 non-padding items
    0.3333
    >>> ll = catalogue_log_likelihood(np.zeros((1, 2), "float32"), table, [2],
    ...                               exclude=[[3]])
    >>> round(float(np.exp(ll[0])), 4)  # item 3 excluded
    0.5
    """
    chunk_size = checks.check_positive_int(chunk_size, "chunk_size")
    batch_size = checks.check_positive_int(batch_size, "batch_size")
    queries = tf.convert_to_tensor(queries)
    if not queries.dtype.is_floating:
        raise TypeError(f"`queries` must be floating point, got {queries.dtype.name}.")
    compute = tf.float64 if queries.dtype == tf.float64 else tf.float32
    queries = tf.cast(queries, compute)
    table = tf.cast(checks.as_table(item_table), compute)
    if queries.shape.rank != 2 or table.shape.rank != 2 or queries.shape[1] != table.shape[1]:
        raise ValueError(f"`queries` [n, d] and `item_table` [C, d] must agree on d; got "
                         f"{queries.shape} and {table.shape}.")
    n, num_items = int(queries.shape[0]), int(table.shape[0])
    if padding_id is not None:
        padding_id = checks.as_int(padding_id, "padding_id")
        if not 0 <= padding_id < num_items:
            raise ValueError(f"`padding_id`={padding_id} is not a row of `item_table` "
                             f"({num_items} rows); use None for no padding.")
    targets = np.asarray(targets)
    if not np.issubdtype(targets.dtype, np.integer) or targets.shape != (n,):
        raise ValueError(f"`targets` must be {n} integer ids (one per query), got shape "
                         f"{targets.shape} and dtype {targets.dtype}.")
    if targets.size and (targets.min() < 0 or targets.max() >= num_items):
        raise ValueError(f"`targets` hold ids outside [0, {num_items}) (min {targets.min()}, "
                         f"max {targets.max()}).")
    if padding_id is not None and np.any(targets == padding_id):
        raise ValueError(f"{int(np.sum(targets == padding_id))} `targets` equal the padding "
                         f"id {padding_id}, which is never a candidate.")
    padding = -1 if padding_id is None else padding_id
    if exclude is None:
        exclude = np.full((n, 1), -1, np.int32)
    exclude = np.asarray(exclude)
    if exclude.ndim != 2 or exclude.shape[0] != n or not np.issubdtype(exclude.dtype, np.integer):
        raise ValueError(f"`exclude` must be an integer [n={n}, H] array, got shape "
                         f"{exclude.shape} and dtype {exclude.dtype}.")
    exclude = np.where((exclude < 0) | (exclude == padding), -1, exclude).astype(np.int32)
    bias = tf.zeros([num_items], compute)
    out = np.empty(n, np.float64)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        loglik, _, finite = stream_excluding_graph(
            queries[start:stop], table, bias, tf.constant(targets[start:stop].astype(np.int32)),
            tf.constant(chunk_size), tf.constant(padding), tf.constant(exclude[start:stop]),
        )
        if not bool(finite):
            raise NonFiniteScoresError(
                "a score (query . item row) is NaN or infinite: the queries or the item "
                "table hold non-finite values, so no log-likelihood can be computed."
            )
        out[start:stop] = loglik.numpy()
    return out
