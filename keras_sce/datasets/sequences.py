"""Container for per-user interaction sequences and the SASRec text loader."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence

import numpy as np

PADDING_ID = 0


@dataclasses.dataclass
class SequenceData:
    """Per-user item sequences in time order, with 1-based item ids (0 = padding).

    Args:
        sequences: list of 1-D int64 arrays, one per user, items in time order.
        num_items: size of the item id space *including* the padding id 0, so
            valid ids are ``1 .. num_items - 1`` and an embedding table of
            ``num_items`` rows covers every id.
        user_ids: optional original user ids (same order as ``sequences``).
        name: a short human-readable description of where the data came from.
        item_ids: optional original item ids; ``item_ids[i]`` is the raw id of
            dense id ``i`` (index 0 is a placeholder for padding). ``None`` when
            the file already used dense 1-based ids.
    """

    sequences: list[np.ndarray]
    num_items: int
    user_ids: np.ndarray | None = None
    name: str = ""
    item_ids: np.ndarray | None = None

    def __post_init__(self):
        if not self.sequences:
            raise ValueError(f"SequenceData {self.name!r} holds no users.")
        for position, seq in enumerate(self.sequences):
            if len(seq) == 0:
                raise ValueError(f"User #{position} of {self.name!r} has no interactions.")
            if seq.min() < 1 or seq.max() >= self.num_items:
                raise ValueError(
                    f"User #{position} of {self.name!r} has item ids outside "
                    f"[1, {self.num_items - 1}]: min {seq.min()}, max {seq.max()}."
                )

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    @property
    def num_distinct_items(self) -> int:
        """Number of item ids that occur at least once."""
        return int(np.unique(np.concatenate(self.sequences)).size)

    def item_counts(self) -> np.ndarray:
        """Occurrences of every id, shape ``[num_items]`` (entry 0 is 0)."""
        return np.bincount(np.concatenate(self.sequences), minlength=self.num_items)

    def summary(self) -> str:
        return (
            f"{self.name or 'data'}: {self.num_users:,} users, "
            f"{self.num_distinct_items:,} items, {self.num_interactions:,} interactions"
        )


def from_user_item_pairs(
    users: Sequence, items: Sequence, order: Iterable | None = None, *, name: str = ""
) -> SequenceData:
    """Groups (user, item[, order key]) triples into per-user sequences.

    Raw item ids of any hashable type are mapped to dense ids ``1..n`` in order of
    first appearance after sorting each user's events by ``order`` (a stable sort,
    so ties keep file order).
    """
    users = np.asarray(users)
    items = np.asarray(items)
    if users.shape != items.shape or users.ndim != 1:
        raise ValueError("users and items must be 1-D arrays of the same length.")
    if users.size == 0:
        raise ValueError(f"No interactions in {name!r}.")
    keys = np.zeros(users.shape[0]) if order is None else np.asarray(order)
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
    item_ids = np.empty(raw_items.size + 1, dtype=raw_items.dtype)
    item_ids[rank] = raw_items
    item_ids[0] = raw_items[0]
    boundaries = np.flatnonzero(users[1:] != users[:-1]) + 1
    sequences = [s.astype(np.int64) for s in np.split(dense_ids, boundaries)]
    user_ids = users[np.concatenate([[0], boundaries])]
    return SequenceData(
        sequences=sequences,
        num_items=raw_items.size + 1,
        user_ids=user_ids,
        name=name,
        item_ids=item_ids,
    )


def load_sequences_txt(path: str | os.PathLike, *, name: str | None = None) -> SequenceData:
    """Loads the SASRec / S3-Rec text format: ``user_id item_1 ... item_n`` per line.

    Items must be positive integers already in time order (the convention of the
    SASRec, S3-Rec and SCE benchmark files; id 0 is reserved for padding). Ids are
    kept as they are, so the embedding table has ``max(item id) + 1`` rows. Blank
    lines are skipped; anything else that is malformed raises a ``ValueError`` that
    names the file and the line.

    Args:
        path: the text file.
        name: description stored in the result; defaults to the file name.

    Returns:
        A `SequenceData`.

    Example:

    >>> data = load_sequences_txt("../shared/data/seqrec/Beauty.txt")  # doctest: +SKIP
    >>> data.summary()  # doctest: +SKIP
    'Beauty.txt: 22,363 users, 12,101 items, 198,502 interactions'
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Sequence file not found: {path}")
    sequences, users, seen_users = [], [], {}
    max_item = 0
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            try:
                values = [int(f) for f in fields]
            except ValueError:
                bad = next(f for f in fields if not _is_int(f))
                raise ValueError(
                    f"{path}, line {line_no}: expected integer ids "
                    f"('user item item ...'), got {bad!r}."
                ) from None
            if len(values) < 2:
                raise ValueError(
                    f"{path}, line {line_no}: user {values[0]} has no items "
                    "(each line needs a user id followed by at least one item id)."
                )
            user, items = values[0], values[1:]
            if user in seen_users:
                raise ValueError(
                    f"{path}, line {line_no}: user {user} already appeared on line "
                    f"{seen_users[user]}; the format has one line per user."
                )
            seen_users[user] = line_no
            low = min(items)
            if low < 1:
                raise ValueError(
                    f"{path}, line {line_no}: item id {low} is not a positive integer "
                    f"(ids start at 1; 0 is reserved for padding)."
                )
            max_item = max(max_item, max(items))
            users.append(user)
            sequences.append(np.asarray(items, dtype=np.int64))
    if not sequences:
        raise ValueError(f"{path}: no users found (empty file).")
    return SequenceData(
        sequences=sequences,
        num_items=max_item + 1,
        user_ids=np.asarray(users, dtype=np.int64),
        name=name or os.path.basename(path),
    )


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
