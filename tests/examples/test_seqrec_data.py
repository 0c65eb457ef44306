"""examples/seqrec_data.py: the seqrec splits and the joined catalogues (no keras-rs needed)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.examples import load_example


def test_seqrec_validation_split_holds_out_the_second_to_last_item():
    seqrec_data = load_example("seqrec_data")
    sequences = [[5, 6, 7, 8], [1, 2, 3], [9, 4]]  # the last user is too short to validate
    train_hist, train_target, test_hist, test_target, num_items = seqrec_data.build_examples(
        sequences, 3
    )
    fit_hist, fit_target, val_hist, val_target, val_items = (
        seqrec_data.build_validation_examples(sequences, 3)
    )
    assert num_items == val_items == 9
    # Validation targets: each user's second-to-last item, history the items before it.
    np.testing.assert_array_equal(val_target, [7, 2])
    np.testing.assert_array_equal(val_hist, [[0, 5, 6], [0, 0, 1]])
    # They are no longer training targets; the test split is unchanged.
    np.testing.assert_array_equal(fit_target, [6])  # 7 and 2 now validate
    np.testing.assert_array_equal(train_target, [6, 7, 2])
    np.testing.assert_array_equal(test_target, [8, 3, 4])
    np.testing.assert_array_equal(test_hist[0], [5, 6, 7])
    with pytest.raises(ValueError, match="three items"):
        seqrec_data.build_validation_examples([[1, 2]], 3)


def test_seqrec_datasets_joined_with_plus_share_one_catalogue(tmp_path):
    seqrec_data = load_example("seqrec_data")
    (tmp_path / "A.txt").write_text("1 1 2 3\n2 3 1\n")
    (tmp_path / "B.txt").write_text("1 2 1 4\n")
    sequences, names = seqrec_data.load_datasets("A+B", str(tmp_path))
    assert names == ["A", "B"]
    # B's raw ids 1, 2, 4 are read as the dense ids 1, 2, 3, then shifted past A's largest (3).
    assert sequences == [[1, 2, 3], [3, 1], [5, 4, 6]]
    assert seqrec_data.load_datasets("B", str(tmp_path))[0] == [[2, 1, 3]]
    with pytest.raises(SystemExit, match="C.txt"):
        seqrec_data.load_datasets("A+C", str(tmp_path))
