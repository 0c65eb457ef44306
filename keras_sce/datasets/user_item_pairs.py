"""Per-user sequences from (user, item, time) rows: the builder behind the table loaders.

`from_user_item_pairs` sorts each user's events by time, drops the exact duplicate
rows that exports often contain and gives items dense ids in order of first
appearance; `keras_sce.datasets.load_interactions_csv` and `load_movielens` read
their tables into it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from keras_sce.datasets._files import warn_caller
from keras_sce.datasets.sequences import SequenceData


def from_user_item_pairs(
    users: Sequence,
    items: Sequence,
    order: Iterable | None = None,
    *,
    name: str = "",
    drop_duplicates: bool = True,
) -> SequenceData:
    """Groups (user, item[, order key]) triples into per-user sequences.

    Each user's events are sorted by `order` (a stable sort, so ties keep file
    order). Raw item ids of any type are mapped to dense ids `1..C` in order of
    first appearance after that sort; `SequenceData.item_ids` keeps the raw ids.

    Args:
        users: 1-D raw user ids.
        items: 1-D raw item ids, same length.
        order: optional 1-D numeric time key; `None` means file order.
        name: description stored in the result.
        drop_duplicates: drop rows equal in user, item *and* order key (the copies
            that exports often contain), with a warning saying how many. Without
            `order` nothing is dropped: with no timestamps a repeated item cannot
            be told from a re-consumption.

    Returns:
        A `SequenceData` with `duplicates_dropped` / `duplicates_kept` set.

    Examples:
        >>> data = from_user_item_pairs(["u", "u", "v"], ["b", "a", "b"], [2, 1, 5])
        >>> [data.raw_items(s).tolist() for s in data.sequences]
        [['a', 'b'], ['b']]
    """
    users = np.asarray(users)
    items = np.asarray(items)
    if users.shape != items.shape or users.ndim != 1:
        raise ValueError("users and items must be 1-D arrays of the same length.")
    if users.size == 0:
        raise ValueError(f"No interactions in {name!r}.")
    keys = np.zeros(users.shape[0]) if order is None else np.asarray(order)
    if keys.shape != users.shape:
        raise ValueError("order must be 1-D with one key per interaction.")
    copies = 0 if order is None else _exact_duplicates(users, items, keys)
    dropped = kept = 0
    if np.any(copies):
        if drop_duplicates:
            dropped = int(copies.sum())
            users, items, keys = users[~copies], items[~copies], keys[~copies]
            warn_caller(
                f"{name or 'data'}: dropped {dropped:,} exact duplicate interactions "
                "(same user, item and timestamp); pass drop_duplicates=False to keep them."
            )
        else:
            kept = int(copies.sum())
    # Stable sort by user, then by time.
    index = np.lexsort((np.arange(users.size), keys, users))
    users, items = users[index], items[index]
    raw_items, dense = np.unique(items, return_inverse=True)
    # Dense ids in order of first appearance (after sorting) so ids are reproducible.
    first = np.full(raw_items.size, users.size, dtype=np.int64)
    np.minimum.at(first, dense, np.arange(users.size))
    rank = np.empty(raw_items.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(1, raw_items.size + 1)
    dense_ids = rank[dense]
    item_ids = np.zeros(raw_items.size + 1, dtype=raw_items.dtype)  # entry 0: 0 or ""
    item_ids[rank] = raw_items
    boundaries = np.flatnonzero(users[1:] != users[:-1]) + 1
    sequences = [s.astype(np.int64) for s in np.split(dense_ids, boundaries)]
    user_ids = users[np.concatenate([[0], boundaries])]
    return SequenceData(
        sequences=sequences,
        num_items=raw_items.size + 1,
        user_ids=user_ids,
        name=name,
        item_ids=item_ids,
        duplicates_dropped=dropped,
        duplicates_kept=kept,
    )


def _exact_duplicates(users, items, keys) -> np.ndarray:
    """Mask of the rows that repeat an earlier row's (user, item, key)."""
    index = np.lexsort((np.arange(users.size), items, keys, users))
    u, i, k = users[index], items[index], keys[index]
    same = np.zeros(users.size, dtype=bool)
    same[1:] = (u[1:] == u[:-1]) & (i[1:] == i[:-1]) & (k[1:] == k[:-1])
    mask = np.zeros(users.size, dtype=bool)
    mask[index] = same
    return mask
