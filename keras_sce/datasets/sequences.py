"""`SequenceData`: per-user interaction sequences with dense item ids (0 = padding).

The builders live beside it: `from_user_item_pairs` (`keras_sce.datasets.user_item_pairs`,
from table rows) and `load_sequences_txt` (`keras_sce.datasets.sequence_text`, the
SASRec text format); both are also importable from here, and from
`keras_sce.datasets`.
"""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np

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


# The builders moved to modules of their own; their old import path still works
# (loaded on first use: they import `SequenceData` from here).
_BUILDERS = {
    "from_user_item_pairs": "keras_sce.datasets.user_item_pairs",
    "load_sequences_txt": "keras_sce.datasets.sequence_text",
}


def __getattr__(name: str):
    if name in _BUILDERS:
        return getattr(importlib.import_module(_BUILDERS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
