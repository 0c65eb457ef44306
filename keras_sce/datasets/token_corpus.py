"""Token corpora as dense ids: a split's documents, next-token windows, `tf.data`.

A `TokenCorpus` holds a vocabulary (id 0 = padding, id 1 = out of
vocabulary, ids 2.. the top-K types of the training split) and three
`TokenSplit` objects. Each split keeps every document's ids end to end in
one flat array with document offsets, so windows never cross a document boundary.
"""

from __future__ import annotations

import dataclasses

import numpy as np

PADDING_ID = 0
OOV_ID = 1
PADDING_TOKEN = "<pad>"
OOV_TOKEN = "<unk>"
SPLIT_NAMES = ("train", "validation", "test")


@dataclasses.dataclass
class TokenSplit:
    """The documents of one split as ids.

    Args:
        ids: `int32 [num_tokens]` every document's ids, end to end.
        offsets: `int64 [num_documents + 1]`; document `i` is
            `ids[offsets[i]:offsets[i + 1]]`.
        keys: one key per document (a file or member name, or what the document
            splitter gave it).
        num_types: distinct token types in this split before the top-K cut.
    """

    ids: np.ndarray
    offsets: np.ndarray
    keys: list[str]
    num_types: int = 0

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=np.int32)
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        if self.offsets.ndim != 1 or self.offsets.size != len(self.keys) + 1:
            raise ValueError(
                f"offsets must have one entry per document plus one ({len(self.keys) + 1}), "
                f"got shape {self.offsets.shape}."
            )
        if self.offsets[0] != 0 or self.offsets[-1] != self.ids.size or np.any(
            np.diff(self.offsets) < 0
        ):
            raise ValueError("offsets must rise from 0 to the number of ids.")

    @property
    def num_documents(self) -> int:
        return len(self.keys)

    @property
    def num_tokens(self) -> int:
        return int(self.ids.size)

    @property
    def num_oov(self) -> int:
        return int(np.count_nonzero(self.ids == OOV_ID))

    @property
    def oov_rate(self) -> float:
        """Share of this split's tokens outside the vocabulary (0 when empty)."""
        return self.num_oov / self.num_tokens if self.num_tokens else 0.0

    def document(self, index: int) -> np.ndarray:
        return self.ids[self.offsets[index] : self.offsets[index + 1]]

    def window_bounds(self, sequence_length: int) -> tuple[np.ndarray, np.ndarray]:
        """Start and length (in `ids`) of every next-token window.

        A document of `n` tokens has `n - 1` targets (its first token has no
        context). They are cut into consecutive blocks of `sequence_length`
        targets; a window holds its block's targets and the token before them,
        so windows share one token at each cut and every target appears exactly
        once. Documents with fewer than two tokens give no window.
        """
        _check_length(sequence_length)
        lengths = np.diff(self.offsets)
        num_targets = np.maximum(lengths - 1, 0)
        per_doc = -(-num_targets // sequence_length)  # ceil
        doc = np.repeat(np.arange(lengths.size), per_doc)
        first = np.repeat(np.cumsum(per_doc) - per_doc, per_doc)
        block = np.arange(doc.size) - first
        starts = self.offsets[doc] + block * sequence_length
        remaining = num_targets[doc] - block * sequence_length
        return starts, np.minimum(remaining, sequence_length) + 1

    def windows(self, sequence_length: int) -> np.ndarray:
        """`int32 [num_windows, sequence_length + 1]` windows, right-padded with 0.

        `windows[:, :-1]` are the inputs and `windows[:, 1:]` the targets; a
        target 0 is padding (its input position is to be ignored; `dataset`
        also zeroes that input). See `window_bounds`.
        """
        starts, lengths = self.window_bounds(sequence_length)
        columns = np.arange(sequence_length + 1)
        index = starts[:, None] + columns[None, :]
        valid = columns[None, :] < lengths[:, None]
        safe = np.minimum(index, max(self.ids.size - 1, 0))
        gathered = self.ids[safe] if self.ids.size else np.zeros_like(safe, np.int32)
        return np.where(valid, gathered, PADDING_ID).astype(np.int32)

    def dataset(
        self,
        sequence_length: int,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_remainder: bool = False,
        with_weights: bool = False,
    ):
        """A `tf.data` pipeline of next-token batches.

        Yields `(inputs, targets)`, both `int32 [batch, sequence_length]`,
        `targets[:, t]` being the token after `inputs[:, t]`; the tail of a
        short window is padding (0) in both. With `with_weights` it yields
        `(inputs, targets, weights)`, `weights = float32(targets != 0)`.
        Windows are gathered from the flat ids on the fly (no window matrix is
        stored); `shuffle` reshuffles the windows every epoch from `seed`.

        Args:
            sequence_length: positions per example.
            batch_size: examples per batch.
            shuffle: shuffle the windows (seeded, new order each epoch).
            seed: shuffle seed.
            drop_remainder: drop a last, smaller batch.
            with_weights: also yield padding-aware sample weights.

        Returns:
            A `tf.data.Dataset`.

        Examples:
            >>> split = TokenSplit(np.array([5, 6, 7, 8], "int32"), np.array([0, 4]), ["d"])
            >>> x, y = next(iter(split.dataset(2, 4)))
            >>> x.numpy().tolist(), y.numpy().tolist()
            ([[5, 6], [7, 0]], [[6, 7], [8, 0]])
        """
        import tensorflow as tf

        _check_length(sequence_length)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}.")
        starts, lengths = self.window_bounds(sequence_length)
        if starts.size == 0:
            raise ValueError(
                "this split has no document of two or more tokens: no next-token window."
            )
        ids = tf.constant(self.ids)
        data = tf.data.Dataset.from_tensor_slices(
            (starts.astype(np.int64), lengths.astype(np.int64))
        )
        if shuffle:
            data = data.shuffle(starts.size, seed=seed, reshuffle_each_iteration=True)

        def to_example(start, length):
            window = ids[start : start + length]
            window = tf.pad(window, [[0, sequence_length + 1 - length]])
            window = tf.ensure_shape(window, [sequence_length + 1])
            inputs, targets = window[:-1], window[1:]
            # The last real token has no successor: it is input only to padding.
            inputs = tf.where(targets == PADDING_ID, tf.zeros_like(inputs), inputs)
            if with_weights:
                return inputs, targets, tf.cast(targets != PADDING_ID, tf.float32)
            return inputs, targets

        data = data.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
        return data.batch(batch_size, drop_remainder=drop_remainder).prefetch(
            tf.data.AUTOTUNE
        )


def _check_length(sequence_length):
    if (
        not isinstance(sequence_length, int | np.integer)
        or isinstance(sequence_length, bool)
        or sequence_length < 1
    ):
        raise ValueError(f"`sequence_length` must be a positive int, got {sequence_length!r}.")


@dataclasses.dataclass
class TokenCorpus:
    """A vocabulary and the train / validation / test splits of a corpus.

    Args:
        vocabulary: `vocabulary[i]` is the token of id `i`; `vocabulary[0]`
            is `"<pad>"`, `vocabulary[1]` is `"<unk>"` (every type outside
            the top-K), then the K most frequent training types, by decreasing
            count, ties by increasing token string.
        counts: `int64 [vocabulary_size]` training occurrences per id (the OOV
            id counts all training tokens outside the vocabulary).
        splits: `{"train": TokenSplit, "validation": ..., "test": ...}`.
        source: where the text came from (for reports and error messages).
        num_train_types: distinct types in the training split before the cut.
    """

    vocabulary: list[str]
    counts: np.ndarray
    splits: dict[str, TokenSplit]
    source: str = ""
    num_train_types: int = 0

    @property
    def vocabulary_size(self) -> int:
        """Rows of an output table covering every id (K + 2)."""
        return len(self.vocabulary)

    @property
    def train(self) -> TokenSplit:
        return self.splits["train"]

    @property
    def validation(self) -> TokenSplit:
        return self.splits["validation"]

    @property
    def test(self) -> TokenSplit:
        return self.splits["test"]

    def token_to_id(self) -> dict[str, int]:
        """The inverse of `vocabulary` (the special tokens included)."""
        return {token: index for index, token in enumerate(self.vocabulary)}

    def report(self) -> dict[str, dict[str, float]]:
        """Per split: documents, tokens, types (before the cut), OOV tokens and rate."""
        return {
            name: {
                "documents": split.num_documents,
                "tokens": split.num_tokens,
                "types": split.num_types,
                "oov_tokens": split.num_oov,
                "oov_rate": split.oov_rate,
            }
            for name, split in self.splits.items()
        }

    def report_table(self) -> str:
        """`report` as a Markdown table."""
        lines = [
            f"vocabulary: {self.vocabulary_size:,} ids ({self.vocabulary_size - 2:,} types + "
            f"padding + OOV) of {self.num_train_types:,} training types; source {self.source}",
            "",
            "| split | documents | tokens | types | OOV rate |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, row in self.report().items():
            lines.append(
                f"| {name} | {row['documents']:,} | {row['tokens']:,} | {row['types']:,} | "
                f"{row['oov_rate']:.4%} |"
            )
        return "\n".join(lines)
