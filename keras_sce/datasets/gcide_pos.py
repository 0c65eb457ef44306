"""GCIDE's "definition -> part of speech": a real text-classification task.

Each GCIDE entry with a part-of-speech tag after its headword (`n.`, `a.`,
`v. t.`, ...) is one example: the definition text is the input, the tag's class
is the label. Tags map to classes through `labels` (by default four classes:
noun, adjective, verb, adverb); entries whose tag is not in the mapping, or whose
definition is empty, are left out and counted.

The split is fixed and leak-free: every entry of one headword (its homographs,
often of different parts of speech) lands in one split, chosen by a seeded hash of
the lower-cased headword (the same rule as the word-level corpus of
`keras_sce.datasets.gcide.load_gcide_corpus`). Inside each split a
stratified subset of the requested size is drawn (class shares as in that split),
so a small training set keeps the learning-rate grid of a fine-tuning study
affordable while validation and test stay large.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np

from keras_sce.datasets.gcide import GcideEntry, read_gcide
from keras_sce.datasets.tokens import check_fractions, split_of

#: GCIDE's tags -> class names; Webster's `a.` and WordNet's `adj.` are one class.
DEFAULT_POS_LABELS = {
    "n.": "noun", "n. pl.": "noun",
    "a.": "adjective", "adj.": "adjective",
    "v. t.": "verb", "v. i.": "verb", "v. t. & i.": "verb", "v.": "verb",
    "adv.": "adverb",
}
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class TextClassificationSplit:
    """One split: texts, integer labels and the headword of each example.

    Args:
        texts: the definitions.
        labels: `int32 [num_examples]` indices into the task's `class_names`.
        keys: `headword:line` of each example's entry.
    """

    texts: list[str]
    labels: np.ndarray
    keys: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Examples per class, `int64 [num_classes]`."""
        return np.bincount(self.labels, minlength=num_classes)


@dataclasses.dataclass(frozen=True)
class TextClassificationTask:
    """A labelled text task with a fixed train / validation / test split.

    Args:
        class_names: one name per label index.
        train: the training split.
        validation: the validation split.
        test: the test split.
        skipped: entries left out, by reason.
    """

    class_names: tuple[str, ...]
    train: TextClassificationSplit
    validation: TextClassificationSplit
    test: TextClassificationSplit
    skipped: dict[str, int]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> str:
        """A plain-text table: examples per class and split."""
        rows = [f"{'class':<12}" + "".join(f"{name:>12}" for name in SPLITS)]
        counts = [getattr(self, name).class_counts(self.num_classes) for name in SPLITS]
        for index, name in enumerate(self.class_names):
            rows.append(f"{name:<12}" + "".join(f"{c[index]:>12,}" for c in counts))
        rows.append(f"{'total':<12}" + "".join(f"{int(c.sum()):>12,}" for c in counts))
        return "\n".join(rows)


def _positive_or_none(name, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive int or None (the whole split), "
                         f"got {value!r}.")
    return int(value)


def _stratified(indices: np.ndarray, labels: np.ndarray, size, rng, split: str,
                class_names) -> np.ndarray:
    """`size` of `indices` with the class shares of `labels[indices]` (largest
    remainders), in a seeded order; all of them when `size` is None."""
    if size is None:
        return indices[rng.permutation(indices.size)]
    if size > indices.size:
        raise ValueError(f"the {split} split holds {indices.size:,} labelled entries; "
                         f"asked for {size:,}. Lower the size or pass None for all.")
    counts = np.bincount(labels[indices], minlength=len(class_names))
    exact = counts * size / indices.size
    take = np.floor(exact).astype(np.int64)
    for c in np.argsort(-(exact - take), kind="stable")[: size - int(take.sum())]:
        take[c] += 1
    chosen = []
    for c, k in enumerate(take):
        members = indices[labels[indices] == c]
        chosen.append(members[rng.permutation(members.size)[:k]])
    picked = np.concatenate(chosen)
    return picked[rng.permutation(picked.size)]


def load_gcide_pos(path=None, *, entries: list[GcideEntry] | None = None,
                   labels: dict[str, str] | None = None, train_size: int | None = 10_000,
                   validation_size: int | None = 5_000, test_size: int | None = 5_000,
                   split=(0.8, 0.1, 0.1), seed: int = 0) -> TextClassificationTask:
    """GCIDE's definition -> part-of-speech task, with a fixed stratified split.

    Args:
        path: the GCIDE dictd text (`gcide.txt.xz`); or pass `entries`.
        entries: already parsed entries (e.g. from
            `keras_sce.datasets.gcide.parse_gcide`), instead of `path`.
        labels: tag -> class name (default `DEFAULT_POS_LABELS`). Class
            indices follow the order in which class names first appear here.
        train_size: examples drawn from the training split (stratified); None
            keeps them all.
        validation_size: the same for the validation split.
        test_size: the same for the test split.
        split: train / validation / test fractions of the headwords.
        seed: the headword hash and the stratified draw.

    Returns:
        A `TextClassificationTask`.

    Raises:
        ValueError: on neither or both of `path` and `entries`, an empty or
            non-string mapping, a size that is not a positive int or exceeds what
            its split holds, or a split that ends up without an example of a class.

    Example:

    >>> from keras_sce.datasets.gcide import parse_gcide
    >>> text = "".join(f"W{i} \\\\W{i}\\\\, {'n.' if i % 2 else 'adv.'}\\n   Sense {i}.\\n\\n"
    ...                for i in range(200))
    >>> task = load_gcide_pos(entries=list(parse_gcide(text)), train_size=20,
    ...                       validation_size=None, test_size=None,
    ...                       labels={"n.": "noun", "adv.": "adverb"})
    >>> task.class_names, len(task.train), task.train.class_counts(2).tolist()
    (('noun', 'adverb'), 20, [10, 10])
    """
    if (path is None) == (entries is None):
        raise ValueError("load_gcide_pos: pass exactly one of `path` and `entries`.")
    labels = DEFAULT_POS_LABELS if labels is None else labels
    if not isinstance(labels, dict) or not labels or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise ValueError("`labels` must be a non-empty dict of tag -> class name strings, "
                         f"got {labels!r}.")
    sizes = {name: _positive_or_none(f"{name}_size", value) for name, value in
             zip(SPLITS, (train_size, validation_size, test_size), strict=True)}
    split = check_fractions(split)
    if entries is None:
        entries = read_gcide(path)
    class_names = tuple(dict.fromkeys(labels.values()))
    class_of = {name: i for i, name in enumerate(class_names)}
    texts, label_ids, keys, parts, skipped = [], [], [], [], Counter()
    for entry in entries:
        if entry.pos not in labels:
            skipped["no tag" if entry.pos is None else "tag not in labels"] += 1
        elif not entry.definition:
            skipped["empty definition"] += 1
        else:
            texts.append(entry.definition)
            label_ids.append(class_of[labels[entry.pos]])
            keys.append(f"{entry.headword}:{entry.line}")
            parts.append(split_of(entry.headword.lower(), split, seed))
    if not texts:
        raise ValueError(f"GCIDE part-of-speech task: no entry carries a tag of {labels}.")
    # Sorted by key, so the draw does not depend on the order of the entries.
    order = sorted(range(len(keys)), key=keys.__getitem__)
    texts, keys = [texts[i] for i in order], [keys[i] for i in order]
    label_ids = np.asarray(label_ids, dtype=np.int32)[order]
    parts = np.asarray(parts)[order]
    rng = np.random.default_rng(seed)
    built = {}
    for number, name in enumerate(SPLITS):
        chosen = _stratified(np.flatnonzero(parts == number), label_ids, sizes[name], rng,
                             name, class_names)
        counts = np.bincount(label_ids[chosen], minlength=len(class_names))
        if np.any(counts == 0):
            missing = [class_names[c] for c in np.flatnonzero(counts == 0)]
            raise ValueError(f"the {name} split has no example of {missing}; use a larger "
                             "size or other split fractions.")
        built[name] = TextClassificationSplit([texts[i] for i in chosen], label_ids[chosen],
                                              [keys[i] for i in chosen])
    return TextClassificationTask(class_names, built["train"], built["validation"],
                                  built["test"], dict(skipped))
