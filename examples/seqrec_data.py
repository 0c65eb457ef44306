"""Tiny, dependency-free reader of the SASRec text format shared by the retrieval examples.

One line per user, ``user_id item_1 ... item_n``, items in time order, 1-based ids
(0 is free for padding). The examples turn it into query-history / next-item pairs:
each user's last item is the test target (history: all earlier items); every
earlier position is a training example (target: the item there; history: the items
before it). :func:`build_validation_examples` also holds out each user's second-to-last
item for validation. Histories keep the last ``max_len`` items, left-padded with 0.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from keras_sce.datasets import load_sequences_txt, pad_sequences

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def dataset_path(dataset: str, data_dir: str | None = None) -> pathlib.Path:
    """``<data_dir>/<dataset>.txt``; by default ``$KERAS_SCE_DATA/seqrec`` or ``../shared/data``."""
    if data_dir is None:
        root = os.environ.get("KERAS_SCE_DATA", str(REPO_ROOT.parent / "shared" / "data"))
        data_dir = os.path.join(root, "seqrec")
    path = pathlib.Path(data_dir) / f"{dataset}.txt"
    if not path.exists():
        raise SystemExit(f"Dataset file not found: {path} (pass --data-dir).")
    return path


def read_sequences(path, max_users=None):
    """Item sequences of the users with at least two items (a training and a test target).

    Parsed by :func:`keras_sce.datasets.load_sequences_txt` (which names the line of
    any malformed entry).
    """
    data = load_sequences_txt(path)
    sequences = [seq.tolist() for seq in data.sequences if len(seq) >= 2][:max_users]
    if not sequences:
        raise ValueError(f"No user with at least two items in {path}.")
    return sequences


def load_datasets(datasets: str, data_dir: str | None = None, max_users=None):
    """``(sequences, names)`` of one dataset, or of several joined with ``+``.

    ``"Beauty+Toys_and_Games"`` puts the users of both files in one dataset with one
    catalogue: each file's item ids are shifted past the previous files' largest id,
    so the catalogues do not overlap (a multi-category store). ``max_users`` applies
    to each file.
    """
    names = [name for name in datasets.split("+") if name]
    if not names:
        raise ValueError(f"No dataset named in {datasets!r}.")
    sequences, offset = [], 0
    for name in names:
        part = [[item + offset for item in seq]
                for seq in read_sequences(dataset_path(name, data_dir), max_users)]
        sequences += part
        offset = max(max(seq) for seq in part)  # ids are >= 1: past every earlier id
    return sequences, names


def build_examples(sequences, max_len):
    """``(train_hist, train_target, test_hist, test_target, num_items)`` as int32 arrays."""
    train_hist, train_target, test_hist, test_target = [], [], [], []
    for seq in sequences:
        for t in range(1, len(seq) - 1):
            train_hist.append(seq[:t])
            train_target.append(seq[t])
        test_hist.append(seq[:-1])
        test_target.append(seq[-1])
    num_items = max(max(seq) for seq in sequences)

    def hist(rows):
        return pad_sequences(rows, max_len, padding="left").astype(np.int32).reshape(-1, max_len)

    ids = lambda x: np.asarray(x, dtype=np.int32)  # noqa: E731
    return hist(train_hist), ids(train_target), hist(test_hist), ids(test_target), num_items


def build_validation_examples(sequences, max_len):
    """The validation split: :func:`build_examples` of the sequences without their last item.

    Each user's second-to-last item becomes the validation target (history: the items
    before it) and is no longer a training target; the test split stays that of
    :func:`build_examples` on the full sequences (its history includes the validation
    item). Users need three items. Returns ``(train_hist, train_target, val_hist,
    val_target, num_items)``, ``num_items`` from the full sequences.
    """
    shorter = [seq[:-1] for seq in sequences if len(seq) >= 3]
    if not shorter:
        raise ValueError("No user with at least three items: nothing to validate on.")
    train_hist, train_target, val_hist, val_target, _ = build_examples(shorter, max_len)
    num_items = max(max(seq) for seq in sequences)
    return train_hist, train_target, val_hist, val_target, num_items
