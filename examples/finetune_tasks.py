"""The text-classification tasks of the fine-tuning example, tokenized.

- `rotten_tomatoes`: sentiment (fresh = 1, rotten = 0) from
  ``../shared/data/text/rotten_tomatoes_corpus_full.csv.bz2``, a fixed seeded
  80/10/10 split (`rotten_tomatoes.py`);
- `gcide_pos`: GCIDE's "definition -> part of speech" (noun, adjective, verb,
  adverb) from ``../shared/data/text/gcide.txt.xz``, the project's loader
  `keras_sce.datasets.load_gcide_pos` (a leak-free split by headword, stratified
  subsets: by default 10,000 training, 5,000 validation and 5,000 test examples).

`load_task` returns the three tokenized parts and the class names; the data path
defaults to ``$KERAS_SCE_DATA`` or ``../shared/data``.
"""

from __future__ import annotations

import os
import pathlib

from rotten_tomatoes import DATA_FILE as ROTTEN_TOMATOES_FILE
from rotten_tomatoes import load_splits, tokenize

TASKS = ("rotten_tomatoes", "gcide_pos")
GCIDE_FILE = ("text", "gcide.txt.xz")
#: Per task: (training, validation, test) examples used when the options say 0.
DEFAULT_SIZES = {"rotten_tomatoes": (3072, 0, 0), "gcide_pos": (10_000, 5_000, 5_000)}


def data_path(task: str) -> pathlib.Path:
    """The task's default data file: under ``$KERAS_SCE_DATA``, else ``../shared/data``."""
    parts = ROTTEN_TOMATOES_FILE if task == "rotten_tomatoes" else GCIDE_FILE
    root = os.environ.get("KERAS_SCE_DATA")
    if root:
        return pathlib.Path(root).joinpath(*parts)
    repo = pathlib.Path(__file__).resolve().parents[1]
    return repo.parent.joinpath("shared", "data", *parts)


def load_task(task: str, checkpoint: str, sequence_length: int, *, path=None, num_train=0,
              num_val=0, num_test=0):
    """Tokenized ``(x, y)`` train / validation / test parts and the class names.

    Args:
        task: one of `TASKS`.
        checkpoint: the keras-hub preset or folder whose WordPiece vocabulary is used.
        sequence_length: tokens per example (padded or truncated).
        path: the data file; defaults to `data_path(task)`.
        num_train: training examples (0: the task's default, `DEFAULT_SIZES`; for
            Rotten Tomatoes a prefix of the shuffled training split, for GCIDE a
            stratified draw).
        num_val: validation examples (0: the default; for Rotten Tomatoes all of them).
        num_test: test examples (0: the default; for Rotten Tomatoes all of them).

    Returns:
        `((x_train, y_train), (x_val, y_val), (x_test, y_test), class_names)`.

    Raises:
        ValueError: for an unknown task.
        FileNotFoundError: when the data file is missing.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose from {TASKS}.")
    defaults = DEFAULT_SIZES[task]
    sizes = [n or d for n, d in zip((num_train, num_val, num_test), defaults, strict=True)]
    path = pathlib.Path(path) if path else data_path(task)
    if not path.exists():
        raise FileNotFoundError(f"{task} data not found at {path}; pass --data or set "
                                "KERAS_SCE_DATA (see ../shared/data/README.md).")
    if task == "rotten_tomatoes":
        parts = load_splits(path, checkpoint, sequence_length, num_train=sizes[0],
                            num_val=sizes[1], num_test=sizes[2])
        return (*parts, ("rotten", "fresh"))
    from keras_sce.datasets import load_gcide_pos

    data = load_gcide_pos(path, train_size=sizes[0] or None, validation_size=sizes[1] or None,
                          test_size=sizes[2] or None)
    parts = tuple((tokenize(checkpoint, split.texts, sequence_length), split.labels)
                  for split in (data.train, data.validation, data.test))
    return (*parts, data.class_names)
