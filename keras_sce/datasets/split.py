"""Leave-one-out split and padded arrays / `tf.data` pipelines for SASRec-style models."""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_sce.datasets.sequences import PADDING_ID, SequenceData


@dataclasses.dataclass
class LeaveOneOutSplit:
    """The standard sequential-recommendation protocol.

    For every user with at least 3 interactions, the last item is the test target,
    the one before it the validation target and the rest the training history.
    Users with fewer than 3 interactions keep everything for training and take no
    part in evaluation.

    Attributes:
        train: training history per user (all users, same order as the data).
        valid_users / test_users: indices of the evaluated users.
        valid_targets / test_targets: `[n]` target ids for those users.
        num_items: size of the id space including padding (from the data).
    """

    data: SequenceData
    train: list[np.ndarray]
    eval_users: np.ndarray
    valid_targets: np.ndarray
    test_targets: np.ndarray

    @property
    def num_items(self) -> int:
        return self.data.num_items

    def history(self, stage: str) -> list[np.ndarray]:
        """Per evaluated user, the items seen before the `stage` target."""
        _check_stage(stage)
        if stage == "valid":
            return [self.train[u] for u in self.eval_users]
        return [
            np.append(self.train[u], t)
            for u, t in zip(self.eval_users, self.valid_targets, strict=True)
        ]

    def targets(self, stage: str) -> np.ndarray:
        _check_stage(stage)
        return self.valid_targets if stage == "valid" else self.test_targets


def _check_stage(stage):
    if stage not in ("valid", "test"):
        raise ValueError(f"stage must be 'valid' or 'test', got {stage!r}.")


def leave_one_out(data: SequenceData) -> LeaveOneOutSplit:
    """Splits every user's sequence: `[...train..., valid target, test target]`.

    Args:
        data: a `SequenceData` (items in time order).

    Returns:
        A `LeaveOneOutSplit`.

    Examples:
        >>> from keras_sce.datasets import SequenceData, leave_one_out
        >>> import numpy as np
        >>> split = leave_one_out(SequenceData([np.array([1, 2, 3, 4])], num_items=5))
        >>> split.train[0].tolist(), int(split.valid_targets[0]), int(split.test_targets[0])
        ([1, 2], 3, 4)
    """
    train, users, valid, test = [], [], [], []
    for index, seq in enumerate(data.sequences):
        if len(seq) >= 3:
            train.append(seq[:-2])
            users.append(index)
            valid.append(seq[-2])
            test.append(seq[-1])
        else:
            train.append(seq)
    if not users:
        raise ValueError(
            f"No user of {data.name!r} has the 3 interactions that leave-one-out needs."
        )
    return LeaveOneOutSplit(
        data=data,
        train=train,
        eval_users=np.asarray(users, dtype=np.int64),
        valid_targets=np.asarray(valid, dtype=np.int64),
        test_targets=np.asarray(test, dtype=np.int64),
    )


def pad_sequences(sequences: list[np.ndarray], maxlen: int, *, padding: str = "left") -> np.ndarray:
    """Keeps the last `maxlen` items of each sequence and pads with 0.

    `padding="left"` right-aligns the items (the most recent item is always at
    position `maxlen - 1`, the SASRec convention); `"right"` left-aligns them.
    """
    if padding not in ("left", "right"):
        raise ValueError(f"padding must be 'left' or 'right', got {padding!r}.")
    if maxlen < 1:
        raise ValueError(f"maxlen must be >= 1, got {maxlen}.")
    out = np.full((len(sequences), maxlen), PADDING_ID, dtype=np.int64)
    for row, seq in enumerate(sequences):
        tail = np.asarray(seq[-maxlen:], dtype=np.int64)
        if tail.size == 0:
            continue
        if padding == "left":
            out[row, maxlen - tail.size :] = tail
        else:
            out[row, : tail.size] = tail
    return out


def training_arrays(
    train: list[np.ndarray], maxlen: int, *, padding: str = "left"
) -> tuple[np.ndarray, np.ndarray]:
    """Next-item training pairs on every position.

    For a history `[i1, ..., in]` the input is `[i1, ..., i(n-1)]` and the
    target `[i2, ..., in]` (both cut to their last `maxlen` items and padded
    with 0, whose targets the losses ignore). Histories shorter than 2 are dropped.

    Returns:
        `(inputs, targets)`, both `int64 [num_sequences, maxlen]`.
    """
    kept = [s for s in train if len(s) >= 2]
    if not kept:
        raise ValueError("No training history has the 2 items a next-item pair needs.")
    inputs = pad_sequences([s[:-1] for s in kept], maxlen, padding=padding)
    targets = pad_sequences([s[1:] for s in kept], maxlen, padding=padding)
    return inputs, targets


def training_dataset(
    split_or_train,
    maxlen: int,
    batch_size: int,
    *,
    padding: str = "left",
    shuffle: bool = True,
    seed: int | None = None,
    drop_remainder: bool = True,
    length_buckets: int | None = None,
):
    """A `tf.data.Dataset` of `(inputs, targets)` batches, reshuffled every epoch.

    Args:
        split_or_train: a `LeaveOneOutSplit` or a list of training histories.
        maxlen: sequence length L.
        batch_size: users per batch.
        padding: `"left"` or `"right"` (see `pad_sequences`).
        shuffle: reshuffle the users at each iteration.
        seed: shuffle seed.
        drop_remainder: keep every batch at `batch_size` (static shapes).
        length_buckets: if set (e.g. 50), "sortish" batching: each epoch the
            shuffled users are cut into pools of `length_buckets * batch_size`,
            sorted by length inside a pool, cut into batches, and the batches are
            shuffled; every batch is trimmed to its longest sequence, so padded
            positions cost (almost) nothing. With left padding and SASRec's
            right-anchored positions this gives the same per-sequence outputs as
            full-length batches; only which users share a batch changes.

    Returns:
        A dataset yielding `int32 [batch, L]` inputs and targets (`[batch, None]`
        with `length_buckets`).
    """
    import tensorflow as tf

    train = split_or_train.train if isinstance(split_or_train, LeaveOneOutSplit) else split_or_train
    inputs, targets = training_arrays(train, maxlen, padding=padding)
    if drop_remainder and inputs.shape[0] < batch_size:
        drop_remainder = False
    if length_buckets:
        return _sortish_dataset(
            inputs, targets, batch_size, length_buckets, padding, shuffle, seed, drop_remainder
        )
    ds = tf.data.Dataset.from_tensor_slices((inputs.astype(np.int32), targets.astype(np.int32)))
    if shuffle:
        ds = ds.shuffle(inputs.shape[0], seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(2)


def evaluation_arrays(
    split: LeaveOneOutSplit, stage: str, maxlen: int, *, padding: str = "left"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, targets and padded history for full-ranking evaluation.

    Returns:
        `(inputs [n, maxlen], targets [n], history [n, H])`; the history holds
        every item the user saw before the target (not cut to `maxlen`), padded
        with 0, for exclusion from the ranking.
    """
    history = split.history(stage)
    inputs = pad_sequences(history, maxlen, padding=padding)
    longest = max(len(h) for h in history)
    hist = pad_sequences(history, longest, padding="right")
    return inputs, split.targets(stage), hist


def _sortish_dataset(inputs, targets, batch_size, pool, padding, shuffle, seed, drop_remainder):
    import tensorflow as tf

    lengths = (inputs != PADDING_ID).sum(axis=1)
    rng = np.random.default_rng(seed)
    n, width = inputs.shape

    def batches():
        order = rng.permutation(n) if shuffle else np.arange(n)
        chunks = []
        for start in range(0, n, pool * batch_size):
            part = order[start : start + pool * batch_size]
            part = part[np.argsort(-lengths[part], kind="stable")]
            for b in range(0, part.size, batch_size):
                chunk = part[b : b + batch_size]
                if chunk.size == batch_size or not drop_remainder:
                    chunks.append(chunk)
        if shuffle:
            rng.shuffle(chunks)
        for chunk in chunks:
            cut = max(int(lengths[chunk].max()), 1)
            cols = slice(width - cut, width) if padding == "left" else slice(0, cut)
            yield (
                inputs[chunk, cols].astype(np.int32),
                targets[chunk, cols].astype(np.int32),
            )

    num_batches = 0
    for start in range(0, n, pool * batch_size):
        size = min(pool * batch_size, n - start)
        num_batches += size // batch_size if drop_remainder else -(-size // batch_size)
    spec = tf.TensorSpec([None, None], tf.int32)
    ds = tf.data.Dataset.from_generator(batches, output_signature=(spec, spec))
    return ds.apply(tf.data.experimental.assert_cardinality(num_batches)).prefetch(2)
