"""Property-based tests of the loaders and the leave-one-out split (hypothesis)."""

from __future__ import annotations

import datetime
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_sce.datasets import (
    SequenceData,
    leave_one_out,
    load_interactions_csv,
    load_sequences_txt,
)

SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Raw ids from tiny to beyond any table size, so both dense and sparse files occur.
raw_item = st.one_of(st.integers(1, 6), st.integers(1, 10**15))
user_rows = st.dictionaries(
    st.integers(-(10**12), 10**12), st.lists(raw_item, min_size=1, max_size=8), min_size=1,
    max_size=8,
)


def write_text(path, rows):
    path.write_text("".join(f"{u} {' '.join(map(str, items))}\n" for u, items in rows.items()))


@SETTINGS
@given(rows=user_rows)
def test_text_ids_are_dense_ordered_and_translate_back(tmp_path, rows):
    path = tmp_path / "d.txt"
    write_text(path, rows)
    data = load_sequences_txt(path)
    distinct = sorted({i for items in rows.values() for i in items})
    assert data.num_items == len(distinct) + 1  # never sized by a raw id
    assert data.user_ids.tolist() == list(rows)
    for seq, items in zip(data.sequences, rows.values(), strict=True):
        assert data.raw_items(seq).tolist() == items
        assert data.dense_items(items).tolist() == seq.tolist()
        # Dense ids follow the raw order: the rank of each raw id, from 1.
        assert seq.tolist() == [distinct.index(i) + 1 for i in items]
    assert data.num_consecutive_repeats == sum(
        sum(a == b for a, b in zip(items[:-1], items[1:], strict=True)) for items in rows.values()
    )
    assert data.num_test_equals_valid == sum(
        len(items) >= 3 and items[-1] == items[-2] for items in rows.values()
    )


@SETTINGS
@given(
    size=st.integers(2, 30),
    data=st.data(),
)
def test_text_dense_ids_stay_identical(tmp_path, size, data):
    # Every id of 1..size used at least once, as in the benchmark files.
    items = data.draw(st.permutations(range(1, size + 1))) + data.draw(
        st.lists(st.integers(1, size), max_size=10)
    )
    cuts = sorted(data.draw(st.sets(st.integers(1, len(items) - 1), max_size=4)))
    rows = {u: part for u, part in enumerate(np.split(np.array(items), cuts)) if len(part)}
    path = tmp_path / "d.txt"
    write_text(path, {u: p.tolist() for u, p in rows.items()})
    loaded = load_sequences_txt(path)
    assert [s.tolist() for s in loaded.sequences] == [p.tolist() for p in rows.values()]
    np.testing.assert_array_equal(loaded.item_ids, np.arange(size + 1))


triples = st.lists(
    st.tuples(st.sampled_from("uvw"), st.sampled_from("abcd"), st.integers(0, 3)),
    min_size=1,
    max_size=25,
)


@SETTINGS
@given(rows=triples, drop=st.booleans())
def test_csv_duplicates_match_a_plain_oracle(tmp_path, rows, drop):
    path = tmp_path / "d.csv"
    path.write_text("user,item,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = load_interactions_csv(path, drop_duplicates=drop)
    kept = list(dict.fromkeys(rows)) if drop else rows  # first copy of each triple, file order
    expected = {
        user: [i for _, i, _ in sorted((r for r in kept if r[0] == user), key=lambda r: r[2])]
        for user in sorted({r[0] for r in rows})
    }
    assert data.user_ids.tolist() == list(expected)
    assert [data.raw_items(s).tolist() for s in data.sequences] == list(expected.values())
    copies = len(rows) - len(set(rows))
    assert (data.duplicates_dropped, data.duplicates_kept) == ((copies, 0) if drop else (0, copies))
    assert data.num_interactions == len(kept)


moments = st.lists(
    st.datetimes(datetime.datetime(1990, 1, 1), datetime.datetime(2030, 1, 1)),
    min_size=1, max_size=12,
)


@SETTINGS
@given(times=moments, spelling=st.sampled_from([" ", "T", " Z", "TZ"]))
def test_iso_timestamps_order_like_unix_seconds(tmp_path, times, spelling):
    def iso(moment):  # a time without zone is UTC, so "Z" changes nothing
        return moment.replace(microsecond=0).isoformat(sep=spelling[0]) + spelling[1:]

    def unix(moment):
        return moment.replace(microsecond=0, tzinfo=datetime.timezone.utc).timestamp()

    rows = [(f"i{k}", t) for k, t in enumerate(times)]
    iso_path, unix_path = tmp_path / "iso.csv", tmp_path / "unix.csv"
    iso_path.write_text("user,item,timestamp\n" + "".join(f"u,{i},{iso(t)}\n" for i, t in rows))
    unix_path.write_text("user,item,timestamp\n" + "".join(f"u,{i},{unix(t)}\n" for i, t in rows))
    a, b = load_interactions_csv(iso_path), load_interactions_csv(unix_path)
    assert a.raw_items(a.sequences[0]).tolist() == b.raw_items(b.sequences[0]).tolist()


sequence_lists = st.lists(st.lists(st.integers(1, 9), min_size=1, max_size=7), min_size=1,
                          max_size=10)


@settings(max_examples=100, deadline=None)
@given(lists=sequence_lists)
def test_leave_one_out_partitions_every_sequence(lists):
    data = SequenceData([np.array(s, dtype=np.int64) for s in lists], num_items=10)
    if all(len(s) < 3 for s in lists):
        with pytest.raises(ValueError, match="3 interactions"):
            leave_one_out(data)
        return
    split = leave_one_out(data)
    assert split.eval_users.tolist() == [u for u, s in enumerate(lists) if len(s) >= 3]
    for u, s in enumerate(lists):
        expected_train = s[:-2] if len(s) >= 3 else s
        assert split.train[u].tolist() == expected_train
    for k, u in enumerate(split.eval_users):
        assert split.history("valid")[k].tolist() + [split.valid_targets[k]] == lists[u][:-1]
        assert split.history("test")[k].tolist() + [split.test_targets[k]] == lists[u]
    same = int(np.sum(split.valid_targets == split.test_targets))
    assert same == data.num_test_equals_valid
