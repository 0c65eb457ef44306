"""Loaders, leave-one-out split and tf.data pipelines."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_shared_data

from keras_sce.datasets import (
    SequenceData,
    evaluation_arrays,
    leave_one_out,
    load_sequences_txt,
    pad_sequences,
    training_arrays,
    training_dataset,
)

SMALL = "1 1 2 3 4 5\n2 6 7 8 9 10 4 11\n3 4 12 13\n4 2 5\n"


@pytest.fixture
def small_file(tmp_path):
    path = tmp_path / "small.txt"
    path.write_text(SMALL)
    return path


def test_text_loader_counts(small_file):
    data = load_sequences_txt(small_file)
    assert data.num_users == 4
    assert data.num_interactions == 5 + 7 + 3 + 2
    assert data.num_distinct_items == 13
    assert data.num_items == 14  # max id 13 + padding row
    assert data.sequences[1].tolist() == [6, 7, 8, 9, 10, 4, 11]
    assert data.user_ids.tolist() == [1, 2, 3, 4]
    assert data.item_counts()[4] == 3


@pytest.mark.parametrize(
    "text, message",
    [
        ("1 1 2\n2 3 x 4\n", "line 2"),
        ("1 1 2\n2\n", "line 2: user 2 has no items"),
        ("1 1 2\n1 3 4\n", "already appeared on line 1"),
        ("1 1 0 2\n", "line 1: item id 0"),
        ("1 1 2.5\n", "line 1"),
        ("", "empty file"),
    ],
    ids=["not-int", "empty-user", "duplicate-user", "zero-id", "float-id", "empty-file"],
)
def test_text_loader_errors_name_the_line(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_sequences_txt(path)


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        load_sequences_txt("/nonexistent/file.txt")


def test_sequence_data_rejects_empty_user_and_bad_ids():
    with pytest.raises(ValueError, match="no interactions"):
        SequenceData([np.array([1, 2]), np.array([], dtype=np.int64)], num_items=3)
    with pytest.raises(ValueError, match="outside"):
        SequenceData([np.array([1, 3])], num_items=3)


def test_leave_one_out(small_file):
    split = leave_one_out(load_sequences_txt(small_file))
    assert split.train[0].tolist() == [1, 2, 3]
    assert split.train[3].tolist() == [2, 5]  # 2 interactions: training only
    assert split.eval_users.tolist() == [0, 1, 2]
    assert split.valid_targets.tolist() == [4, 4, 12]
    assert split.test_targets.tolist() == [5, 11, 13]
    assert split.history("valid")[1].tolist() == [6, 7, 8, 9, 10]
    assert split.history("test")[1].tolist() == [6, 7, 8, 9, 10, 4]
    with pytest.raises(ValueError, match="stage"):
        split.history("train")


def test_pad_sequences_left_and_right():
    seqs = [np.array([1, 2, 3]), np.array([4, 5, 6, 7, 8])]
    np.testing.assert_array_equal(pad_sequences(seqs, 4), [[0, 1, 2, 3], [5, 6, 7, 8]])
    np.testing.assert_array_equal(
        pad_sequences(seqs, 4, padding="right"), [[1, 2, 3, 0], [5, 6, 7, 8]]
    )


def test_training_pairs_on_every_position(small_file):
    split = leave_one_out(load_sequences_txt(small_file))
    inputs, targets = training_arrays(split.train, 4)
    # user 2: train [6, 7, 8, 9, 10] -> inputs [6..9], targets [7..10]
    np.testing.assert_array_equal(inputs[1], [6, 7, 8, 9])
    np.testing.assert_array_equal(targets[1], [7, 8, 9, 10])
    # user 3's history [4] is too short and is dropped; user 4: [2, 5].
    assert inputs.shape == (3, 4)
    np.testing.assert_array_equal(inputs[2], [0, 0, 0, 2])
    np.testing.assert_array_equal(targets[2], [0, 0, 0, 5])
    # Every non-padding input position has a real target and vice versa.
    np.testing.assert_array_equal(inputs != 0, targets != 0)


def test_training_dataset_batches(small_file):
    split = leave_one_out(load_sequences_txt(small_file))
    ds = training_dataset(split, 4, batch_size=2, seed=0)
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == 1  # 3 training sequences, the remainder is dropped
    assert all(x.shape == (2, 4) and y.shape == (2, 4) for x, y in batches)
    ds = training_dataset(split, 4, batch_size=2, shuffle=False, drop_remainder=False)
    inputs, _ = training_arrays(split.train, 4)
    np.testing.assert_array_equal(np.concatenate([x for x, _ in ds.as_numpy_iterator()]), inputs)


def test_evaluation_arrays(small_file):
    split = leave_one_out(load_sequences_txt(small_file))
    inputs, targets, history = evaluation_arrays(split, "test", 3)
    np.testing.assert_array_equal(inputs[1], [9, 10, 4])
    assert targets.tolist() == [5, 11, 13]
    assert history[1].tolist() == [6, 7, 8, 9, 10, 4]
    assert history[2].tolist()[:2] == [4, 12]


@pytest.mark.data
def test_beauty_counts(shared_data_dir):
    data = load_sequences_txt(shared_data_dir / "seqrec" / "Beauty.txt")
    assert data.num_users == 22_363
    assert data.num_distinct_items == 12_101
    assert data.num_interactions == 198_502
    split = leave_one_out(data)
    assert split.eval_users.size == 22_363


def test_csv_loader_sorts_by_time_and_maps_ids(tmp_path):
    from keras_sce.datasets import load_interactions_csv

    path = tmp_path / "log.csv"
    path.write_text("user,item,timestamp\nu1,b,20\nu2,a,5\nu1,a,10\nu1,c,30\nu2,c,1\n")
    data = load_interactions_csv(path)
    assert data.num_users == 2 and data.num_interactions == 5 and data.num_items == 4
    raw = [[data.item_ids[i] for i in seq] for seq in data.sequences]
    assert raw == [["a", "b", "c"], ["c", "a"]]
    path.write_text("user,item,timestamp\nu1,b,20\nu1,a,yesterday\n")
    with pytest.raises(ValueError, match="line 3: timestamp"):
        load_interactions_csv(path)
    path.write_text("user,item\nu1,b\n")
    with pytest.raises(ValueError, match="no column 'timestamp'"):
        load_interactions_csv(path)
    path.write_text("user,item,timestamp\nu1,b\n")
    with pytest.raises(ValueError, match="line 2"):
        load_interactions_csv(path)


def test_movielens_dat_and_csv(tmp_path):
    from keras_sce.datasets import load_movielens

    dat = tmp_path / "ratings.dat"
    dat.write_text("1::10::5::300\n1::20::3::100\n2::10::4::50\n1::30::4::200\n")
    data = load_movielens(dat)
    assert data.num_users == 2 and data.num_interactions == 4
    assert [data.item_ids[i] for i in data.sequences[0]] == ["20", "30", "10"]
    liked = load_movielens(dat, min_rating=4)
    assert liked.num_interactions == 3
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,10,5.0,300\n1,20,3.0,100\n"
    )
    data = load_movielens(folder)
    assert [data.item_ids[i] for i in data.sequences[0]] == ["20", "10"]
    liked = load_movielens(folder, min_rating=4)
    assert [liked.item_ids[i] for i in liked.sequences[0]] == ["10"]


@pytest.mark.parametrize("num_items", [1_000, 10_000_000], ids=["1e3", "1e7"])
def test_synthetic_is_deterministic_and_power_law(num_items):
    from keras_sce.datasets import synthetic_sequences

    a = synthetic_sequences(num_users=300, num_items=num_items, seed=3)
    b = synthetic_sequences(num_users=300, num_items=num_items, seed=3)
    c = synthetic_sequences(num_users=300, num_items=num_items, seed=4)
    assert all((x == y).all() for x, y in zip(a.sequences, b.sequences, strict=True))
    assert any(
        len(x) != len(y) or (x != y).any() for x, y in zip(a.sequences, c.sequences, strict=True)
    )
    assert a.num_items == num_items + 1
    assert min(len(s) for s in a.sequences) >= 3
    counts = np.sort(a.item_counts())[::-1]
    # Popularity is skewed: the top 1% of seen items take a large share.
    seen = counts[counts > 0]
    assert seen[: max(1, seen.size // 100)].sum() > 0.05 * seen.sum()


def test_summary_separates_catalogue_table_and_seen_items():
    from keras_sce.datasets import synthetic_sequences

    data = synthetic_sequences(num_users=50, num_items=300_000, seed=0)
    seen = data.num_distinct_items
    assert seen < data.catalogue_size == 300_000
    assert f"300,000 items (table of 300,001 rows; {seen:,} of them seen in the data)" in (
        data.summary()
    )
    dense = SequenceData([np.array([1, 2, 3]), np.array([3, 1])], num_items=4, name="d")
    assert dense.summary() == "d: 2 users, 3 items (table of 4 rows), 5 interactions"


def test_summary_reports_duplicates_and_repeats(tmp_path):
    from keras_sce.datasets import load_interactions_csv

    path = tmp_path / "log.csv"
    path.write_text("user,item,timestamp\nu,a,1\nu,b,2\nu,b,2\nu,b,3\n")
    with pytest.warns(UserWarning, match="dropped 1 exact duplicate"):
        data = load_interactions_csv(path)
    assert data.summary() == (
        "log.csv: 1 users, 2 items (table of 3 rows), 3 interactions; "
        "1 exact duplicate rows dropped; 1 consecutive repeats kept; "
        "1 users whose test target equals their validation target"
    )
    kept = load_interactions_csv(path, drop_duplicates=False)
    assert "1 exact duplicate rows kept" in kept.summary()
    assert (kept.duplicates_kept, kept.num_interactions) == (1, 4)


def test_raw_and_dense_item_translation(tmp_path):
    path = tmp_path / "d.txt"
    path.write_text("7 1000000000000 5\n8 5 42\n")
    data = load_sequences_txt(path)
    assert data.num_items == 4 and data.item_ids.tolist() == [0, 5, 42, 10**12]
    assert data.raw_items(np.array([[3, 1]])).tolist() == [[10**12, 5]]
    assert data.dense_items([42, 5]).tolist() == [2, 1]
    with pytest.raises(ValueError, match=r"id 0 is not an item of 'd.txt': ids are 1..3"):
        data.raw_items([0])
    with pytest.raises(ValueError, match="id 4 is not an item"):
        data.raw_items([1, 4])
    with pytest.raises(TypeError, match="integers"):
        data.raw_items([1.0])
    with pytest.raises(KeyError, match="item 6 does not occur"):
        data.dense_items([5, 6])
    with pytest.raises(ValueError, match="item_ids .* has 2 entries; expected num_items = 3"):
        SequenceData([np.array([1, 2])], num_items=3, item_ids=np.array([0, 9]), name="x")


def test_from_user_item_pairs_drops_only_same_time_copies():
    from keras_sce.datasets import from_user_item_pairs

    users, items = ["u"] * 4, ["a", "b", "a", "a"]
    with pytest.warns(UserWarning, match="dropped 1 exact duplicate"):
        data = from_user_item_pairs(users, items, [1, 2, 1, 3], name="t")
    assert data.raw_items(data.sequences[0]).tolist() == ["a", "b", "a"]
    assert data.duplicates_dropped == 1
    untimed = from_user_item_pairs(users, items)  # no timestamps: repeats are kept
    assert untimed.num_interactions == 4 and untimed.duplicates_dropped == 0


SEQREC = ["Beauty", "Sports_and_Outdoors", "Toys_and_Games", "Yelp"]


@pytest.mark.data
@pytest.mark.parametrize("name", SEQREC, ids=SEQREC)
def test_dense_benchmark_files_keep_their_ids(name):
    path = require_shared_data("seqrec", f"{name}.txt")
    data = load_sequences_txt(path)
    np.testing.assert_array_equal(data.item_ids, np.arange(data.num_items))
    with open(path) as handle:
        rows = [list(map(int, line.split()))[1:] for line in handle if line.strip()]
    assert all(s.tolist() == r for s, r in zip(data.sequences, rows, strict=True))
    assert data.num_items == max(max(r) for r in rows) + 1


@pytest.mark.data
def test_yelp_repeats_are_kept_and_counted():
    data = load_sequences_txt(require_shared_data("seqrec", "Yelp.txt"))
    assert data.num_consecutive_repeats == 3_873
    assert data.num_test_equals_valid == 672
    split = leave_one_out(data)
    assert int(np.sum(split.valid_targets == split.test_targets)) == 672
    assert data.summary().endswith(
        "; 3,873 consecutive repeats kept; 672 users whose test target equals their "
        "validation target"
    )
    assert "20,033 items (table of 20,034 rows)" in data.summary()
