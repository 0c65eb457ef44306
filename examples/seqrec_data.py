"""Tiny, dependency-free reader of the SASRec text format shared by the retrieval examples.

One line per user, ``user_id item_1 ... item_n``, items in time order, 1-based ids
(0 is free for padding). The examples turn it into query-history / next-item pairs:
each user's last item is the test target (history: all earlier items); every
earlier position is a training example (target: the item there; history: the items
before it). Histories keep the last ``max_len`` items, left-padded with 0.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

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
    """Item sequences of the users with at least two items (a training and a test target)."""
    sequences = []
    with open(path) as handle:
        for line in handle:
            parts = line.split()
            if len(parts) < 3:
                continue
            sequences.append([int(p) for p in parts[1:]])
            if max_users is not None and len(sequences) >= max_users:
                break
    if not sequences:
        raise ValueError(f"No user with at least two items in {path}.")
    return sequences


def _left_pad(history, max_len):
    history = history[-max_len:]
    return [0] * (max_len - len(history)) + history


def build_examples(sequences, max_len):
    """``(train_hist, train_target, test_hist, test_target, num_items)`` as int32 arrays."""
    train_hist, train_target, test_hist, test_target = [], [], [], []
    for seq in sequences:
        for t in range(1, len(seq) - 1):
            train_hist.append(_left_pad(seq[:t], max_len))
            train_target.append(seq[t])
        test_hist.append(_left_pad(seq[:-1], max_len))
        test_target.append(seq[-1])
    num_items = max(max(seq) for seq in sequences)

    hist = lambda x: np.asarray(x, dtype=np.int32).reshape(-1, max_len)
    ids = lambda x: np.asarray(x, dtype=np.int32)
    return hist(train_hist), ids(train_target), hist(test_hist), ids(test_target), num_items
