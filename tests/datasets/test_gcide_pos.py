"""GCIDE's definition -> part-of-speech task: labels, stratified fixed split, errors."""

from __future__ import annotations

import numpy as np
import pytest

from keras_sce.datasets import DEFAULT_POS_LABELS, load_gcide_pos
from keras_sce.datasets.gcide import GcideEntry, read_gcide
from tests.conftest import require_shared_data

TAGS = ["n.", "a.", "v. t.", "adv.", "n.", "n.", "adj.", "v. i.", None, "prep."]


def _entries(n=3000):
    """Made-up entries; homographs every 7th headword (same headword, other tag)."""
    out = []
    for i in range(n):
        head = f"word{i // 2 if i % 7 == 0 else i}"
        tag = TAGS[i % len(TAGS)]
        out.append(GcideEntry(head, tag, f"definition number {i}", "", i + 1))
    out.append(GcideEntry("empty", "n.", "", "", n + 1))
    return out


def test_labels_and_skips_counted():
    task = load_gcide_pos(entries=_entries(), train_size=None, validation_size=None,
                          test_size=None)
    assert task.class_names == ("noun", "adjective", "verb", "adverb")
    total = sum(len(getattr(task, s)) for s in ("train", "validation", "test"))
    assert total == 2400  # 8 of every 10 tags are mapped
    assert task.skipped == {"no tag": 300, "tag not in labels": 300, "empty definition": 1}
    # every example's label is its tag's class
    index = {name: i for i, name in enumerate(task.class_names)}
    for split in (task.train, task.test):
        for text, label in zip(split.texts, split.labels, strict=True):
            i = int(text.rsplit(" ", 1)[1])
            assert label == index[DEFAULT_POS_LABELS[TAGS[i % len(TAGS)]]]


def test_split_is_deterministic_stratified_and_leak_free():
    entries = _entries()
    a = load_gcide_pos(entries=entries, train_size=400, validation_size=100, test_size=100)
    b = load_gcide_pos(entries=list(reversed(entries)), train_size=400, validation_size=100,
                       test_size=100)
    assert sorted(a.train.keys) == sorted(b.train.keys)  # file order does not matter
    full = load_gcide_pos(entries=entries, train_size=None, validation_size=None,
                          test_size=None)
    shares = full.train.class_counts(4) / len(full.train)
    np.testing.assert_allclose(a.train.class_counts(4) / 400, shares, atol=1 / 400)
    heads = [{k.split(":")[0] for k in s.keys} for s in (full.train, full.validation, full.test)]
    assert not (heads[0] & heads[1]) and not (heads[0] & heads[2]) and not (heads[1] & heads[2])
    c = load_gcide_pos(entries=entries, train_size=400, validation_size=100, test_size=100,
                       seed=1)
    assert sorted(c.train.keys) != sorted(a.train.keys)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        pytest.param(dict(train_size=10**6), "holds .* asked for 1,000,000", id="too-large"),
        pytest.param(dict(train_size=0), "positive int or None", id="zero-size"),
        pytest.param(dict(test_size=True), "positive int or None", id="bool-size"),
        pytest.param(dict(labels={}), "non-empty dict", id="empty-labels"),
        pytest.param(dict(labels={"zz.": "x"}), "no entry carries", id="no-match"),
        pytest.param(dict(split=(0.5, 0.5)), "three non-negative", id="bad-split"),
        pytest.param(dict(test_size=1), "no example of", id="class-missing"),
    ],
)
def test_bad_arguments_fail_clearly(kwargs, match):
    kwargs = dict(dict(train_size=100, validation_size=50, test_size=50), **kwargs)
    with pytest.raises(ValueError, match=match):
        load_gcide_pos(entries=_entries(), **kwargs)


def test_path_or_entries_exactly_one():
    with pytest.raises(ValueError, match="exactly one"):
        load_gcide_pos()
    with pytest.raises(ValueError, match="exactly one"):
        load_gcide_pos("x", entries=[])


def test_real_gcide_task():
    path = require_shared_data("text", "gcide.txt.xz")
    entries = read_gcide(path)
    task = load_gcide_pos(entries=entries)
    assert (len(task.train), len(task.validation), len(task.test)) == (10_000, 5_000, 5_000)
    assert task.num_classes == 4
    counts = task.train.class_counts(4)
    assert counts[0] > counts[1] > counts[2] > counts[3] > 100  # noun > adj > verb > adverb
    again = load_gcide_pos(entries=entries)
    assert again.test.keys == task.test.keys
    print(task.summary())
