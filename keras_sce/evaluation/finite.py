"""Non-finite queries, item rows and scores: one error for every ranking function.

NaN compares false with everything: counted naively, a NaN query would rank each
target first and report perfect metrics. The evaluation checks its inputs and raises
`NonFiniteScoresError` instead.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class NonFiniteScoresError(ValueError):
    """A query, an item row or a score is NaN or infinite, so no rank is meaningful.

    Every comparison with NaN is false: counted naively, a NaN query would rank
    each target first and report perfect metrics. The ranking functions raise
    this instead (a `ValueError`); the early-stopping callback catches it and
    stops the run.
    """


def non_finite_rows(values) -> np.ndarray:
    """Indices of the rows of a `[n, d]` tensor that hold a NaN or an infinity."""
    finite = tf.reduce_all(tf.math.is_finite(values), axis=1)
    return np.flatnonzero(~finite.numpy())


def check_finite(queries, table, padding_id) -> None:
    check_finite_queries(queries)
    bad_items = non_finite_rows(table)
    bad_items = bad_items[bad_items != padding_id]  # the padding row is never scored
    if bad_items.size:
        raise_non_finite_items(bad_items.size, table.shape[0], bad_items[0])


def check_finite_queries(queries) -> None:
    bad_queries = non_finite_rows(queries)
    if bad_queries.size:
        raise NonFiniteScoresError(
            f"{bad_queries.size} of {queries.shape[0]} `queries` hold NaN or infinite values "
            f"(first at row {bad_queries[0]}); the model's outputs are not finite (a diverged "
            "run?), so no ranking can be computed."
        )


def raise_non_finite_items(count, num_items, first):
    raise NonFiniteScoresError(
        f"{count} of {num_items} `item_table` rows hold NaN or infinite "
        f"values (first at item {first}); the item embeddings are not finite (a "
        "diverged run?), so no ranking can be computed."
    )
