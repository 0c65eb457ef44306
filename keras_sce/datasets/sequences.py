"""Container for per-user interaction sequences and the SASRec text loader."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence

import numpy as np

from keras_sce.datasets._files import check_exists, open_text, warn_caller

PADDING_ID = 0


@dataclasses.dataclass
class SequenceData:
    """Per-user item sequences in time order, with dense item ids `1..C` (0 = padding).

    The loaders remap raw item ids to the dense range `1..C` so that the size of
    the model's item table is the number of items, never the value of a raw id;
    `item_ids` keeps the way back (see `raw_items` and `dense_items`).

    Args:
        sequences: list of 1-D int64 arrays, one per user, items in time order.
        num_items: rows of the item table the model is built for, *including* the
            padding row 0: valid ids are `1 .. num_items - 1` (the catalogue).
        user_ids: optional raw user ids (same order as `sequences`). Users are
            never table rows (the models have no user embedding), so they are not
            remapped.
        name: a short human-readable description of where the data came from.
        item_ids: optional raw item ids, `item_ids[i]` is the raw id of dense id
            `i` (entry 0, the padding row, holds 0 or ""). `None`: the ids are
            their own raw ids (generated data).
        duplicates_dropped: exact duplicate rows (same user, item and timestamp)
            the loader removed.
        duplicates_kept: exact duplicate rows the loader was asked to keep.
    """

    sequences: list[np.ndarray]
    num_items: int
    user_ids: np.ndarray | None = None
    name: str = ""
    item_ids: np.ndarray | None = None
    duplicates_dropped: int = 0
    duplicates_kept: int = 0

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
        if self.item_ids is not None and len(self.item_ids) != self.num_items:
            raise ValueError(
                f"item_ids of {self.name!r} has {len(self.item_ids)} entries; "
                f"expected num_items = {self.num_items} (entry 0 for padding)."
            )

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    @property
    def catalogue_size(self) -> int:
        """Items the model can score: `num_items - 1` (the table less its padding row)."""
        return self.num_items - 1

    @property
    def num_distinct_items(self) -> int:
        """Number of item ids that occur at least once (may be below `catalogue_size`)."""
        return int(np.unique(np.concatenate(self.sequences)).size)

    @property
    def num_consecutive_repeats(self) -> int:
        """Positions whose item equals the previous one of the same user."""
        return int(sum(np.count_nonzero(s[1:] == s[:-1]) for s in self.sequences))

    @property
    def num_test_equals_valid(self) -> int:
        """Users whose leave-one-out test target equals their validation target.

        Counts users with at least 3 interactions whose last two items are equal;
        for them, predicting the validation item again scores a hit at test time.
        """
        return int(sum(1 for s in self.sequences if len(s) >= 3 and s[-1] == s[-2]))

    def item_counts(self) -> np.ndarray:
        """Occurrences of every id, shape `[num_items]` (entry 0 is 0)."""
        return np.bincount(np.concatenate(self.sequences), minlength=self.num_items)

    def raw_items(self, ids) -> np.ndarray:
        """Translates dense ids (e.g. recommendations) back to the file's own ids.

        Args:
            ids: integer array-like of dense ids in `1 .. num_items - 1`.

        Returns:
            An array of the same shape holding the raw ids.

        Raises:
            ValueError: for the padding id 0 or an id outside the catalogue.

        Examples:
            >>> import numpy as np
            >>> data = SequenceData([np.array([1, 2])], 3, item_ids=np.array([0, 10**12, 7]))
            >>> data.raw_items([2, 1]).tolist()
            [7, 1000000000000]
        """
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"ids must be integers, got dtype {ids.dtype}.")
        if ids.size and (ids.min() < 1 or ids.max() >= self.num_items):
            bad = ids[(ids < 1) | (ids >= self.num_items)].flat[0]
            raise ValueError(
                f"id {bad} is not an item of {self.name or 'the data'!r}: "
                f"ids are 1..{self.num_items - 1} (0 is padding)."
            )
        return ids.copy() if self.item_ids is None else self.item_ids[ids]

    def dense_items(self, raw) -> np.ndarray:
        """Translates raw ids (as in the file) to the dense ids the model uses.

        Args:
            raw: array-like of raw item ids (strings for CSV / MovieLens data).

        Returns:
            An int64 array of the same shape holding dense ids.

        Raises:
            KeyError: naming the first raw id that is not in the data.
            TypeError: non-integer raw ids for data whose raw ids are integers.

        Examples:
            >>> import numpy as np
            >>> data = SequenceData([np.array([1, 2])], 3, item_ids=np.array([0, 10**12, 7]))
            >>> data.dense_items([7, 10**12]).tolist()
            [2, 1]
        """
        if self.item_ids is None:
            return self.raw_items(raw)
        known = self.item_ids[1:]
        raw = np.asarray(raw)
        if known.dtype.kind == "U":
            raw = raw.astype(str)
        elif raw.dtype.kind not in "iu":
            raise TypeError(f"raw item ids of {self.name!r} are integers, got dtype {raw.dtype}.")
        order = np.argsort(known, kind="stable")
        position = np.minimum(np.searchsorted(known[order], raw), known.size - 1)
        found = known[order][position] == raw
        if not np.all(found):
            missing = raw[~found].flat[0].item()
            raise KeyError(f"item {missing!r} does not occur in {self.name or 'the data'!r}.")
        return order[position].astype(np.int64) + 1

    def summary(self) -> str:
        """One line: users, catalogue (and table rows), interactions, duplicates, repeats."""
        seen = self.num_distinct_items
        items = f"{self.catalogue_size:,} items (table of {self.num_items:,} rows"
        if seen < self.catalogue_size:
            items += f"; {seen:,} of them seen in the data"
        parts = [
            f"{self.name or 'data'}: {self.num_users:,} users, {items}), "
            f"{self.num_interactions:,} interactions"
        ]
        if self.duplicates_dropped:
            parts.append(f"{self.duplicates_dropped:,} exact duplicate rows dropped")
        if self.duplicates_kept:
            parts.append(f"{self.duplicates_kept:,} exact duplicate rows kept")
        repeats, same = self.num_consecutive_repeats, self.num_test_equals_valid
        if repeats or same:
            parts.append(
                f"{repeats:,} consecutive repeats kept; {same:,} users whose test target "
                "equals their validation target"
            )
        return "; ".join(parts)


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


def load_sequences_txt(path: str | os.PathLike, *, name: str | None = None) -> SequenceData:
    """Loads the SASRec / S3-Rec text format: `user_id item_1 ... item_n` per line.

    Items are integers already in time order (the convention of the SASRec, S3-Rec
    and SCE benchmark files). Item ids are remapped to the dense range `1..C` in
    increasing raw-id order, so a file whose ids are already `1..C` (Beauty,
    Sports, Toys, Yelp) keeps every id unchanged, and a stray id of 10^12 costs one
    table row, not 10^12; `SequenceData.item_ids` maps dense ids back to raw ids.
    Raw ids must be positive (0 is the padding id of these files). User ids are kept
    as they are (any integer, one line per user).

    Repeated items are kept: the format has no timestamps, so an item listed twice
    cannot be told from a re-consumption (Yelp has such repeats). The summary
    counts consecutive repeats and the users whose leave-one-out test target equals
    their validation target.

    The file may be UTF-8 with or without a byte-order mark, with LF or CRLF line
    ends, or gzip-compressed. Blank lines are skipped; anything else that is
    malformed raises a `ValueError` that names the file and the line.

    Args:
        path: the text file.
        name: description stored in the result; defaults to the file name.

    Returns:
        A `SequenceData`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an empty, undecodable or malformed file (naming file and line).

    Examples:
        >>> import os, tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "Tiny.txt")
        >>> with open(path, "w") as f:
        ...     _ = f.write("1 1 2 3\\n2 2 3 4\\n")
        >>> data = load_sequences_txt(path)
        >>> data.summary()
        'Tiny.txt: 2 users, 4 items (table of 5 rows), 6 interactions'
    """
    path = os.fspath(path)
    check_exists(path, "Sequence file")
    rows, users, seen_users = [], [], {}
    with open_text(path) as handle:
        for line_no, line in enumerate(handle, start=1):
            fields = line.split()
            if not fields:
                continue
            values = _parse_ids(fields, line, path, line_no)
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
                    "(ids start at 1; 0 is reserved for padding)."
                )
            users.append(user)
            rows.append(items)
    if not rows:
        raise ValueError(f"{path}: no users found (empty file).")
    raw = np.asarray([item for items in rows for item in items], dtype=np.int64)
    raw_ids, dense = np.unique(raw, return_inverse=True)
    sequences = np.split(dense.astype(np.int64) + 1, np.cumsum([len(r) for r in rows])[:-1])
    return SequenceData(
        sequences=sequences,
        num_items=raw_ids.size + 1,
        user_ids=np.asarray(users, dtype=np.int64),
        name=name or os.path.basename(path),
        item_ids=np.concatenate([[PADDING_ID], raw_ids]),
    )


_INT64_MAX = 2**63 - 1


def _parse_ids(fields, line, path, line_no):
    # int() also reads "1_000" and non-ASCII digits; refuse those as malformed.
    bad = None
    if not line.isascii() or "_" in line:
        strict = (f for f in fields if not (f.isascii() and "_" not in f and _is_int(f)))
        bad = next(strict, None)
    if bad is None:
        try:
            values = [int(f) for f in fields]
        except ValueError:
            bad = next(f for f in fields if not _is_int(f))
    if bad is not None:
        raise ValueError(
            f"{path}, line {line_no}: expected integer ids ('user item item ...'), got {bad!r}."
        )
    big = next((v for v in values if abs(v) > _INT64_MAX), None)
    if big is not None:
        raise ValueError(f"{path}, line {line_no}: id {big} does not fit in 64 bits.")
    return values


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
