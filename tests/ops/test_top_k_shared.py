"""The full-ranking evaluation and SCE's item search run one top-k: same results."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from keras_sce.evaluation import streamed_top_k
from keras_sce.ops import bucket_top_k


def _problem(seed=0, n=6, items=50, dim=8, history=7):
    rng = np.random.default_rng(seed)
    queries = rng.normal(size=(n, dim)).astype("float32")
    table = rng.normal(size=(items, dim)).astype("float32")
    exclude = rng.integers(0, items, size=(n, history)).astype("int32")
    exclude[0, :] = -1  # a row with nothing excluded
    return queries, table, exclude


def _oracle(queries, table, exclude, k, padding_id=0):
    """float64 dense reference: padding and each row's excluded ids at -inf."""
    scores = queries.astype("float64") @ table.astype("float64").T
    scores[:, padding_id] = -np.inf
    for row, ids in enumerate(exclude):
        scores[row, ids[ids >= 0]] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


@pytest.mark.parametrize("chunk_size", [None, 7, 16, 50], ids=lambda c: f"chunk{c}")
def test_evaluation_and_search_return_the_same_top_k_with_exclusions(chunk_size):
    queries, table, exclude = _problem()
    k = 5
    search_scores, search_ids = bucket_top_k(
        queries, table, k, chunk_size=chunk_size, exclude_id=0, exclude=exclude
    )
    eval_scores, eval_ids = streamed_top_k(
        queries, table, k, exclude=exclude, chunk_size=chunk_size or 8192, batch_size=4
    )
    ref_scores, ref_ids = _oracle(queries, table, exclude, k)
    np.testing.assert_array_equal(search_ids.numpy(), eval_ids)
    np.testing.assert_array_equal(eval_ids, ref_ids)
    np.testing.assert_allclose(search_scores.numpy(), eval_scores, rtol=1e-6)
    np.testing.assert_allclose(eval_scores, ref_scores, rtol=1e-5, atol=1e-6)


def test_excluded_ids_never_come_back_even_when_they_score_highest():
    queries, table, _ = _problem(seed=1, n=3)
    best = np.argmax(queries @ table.T, axis=1)
    exclude = best[:, None].astype("int32")
    _, ids = bucket_top_k(queries, table, 4, chunk_size=9, exclude=exclude)
    assert not np.any(ids.numpy() == exclude)
    _, ids = streamed_top_k(queries, table, 4, exclude=exclude, chunk_size=9)
    assert not np.any(ids == exclude)


def test_search_without_exclusions_is_the_evaluation_without_history():
    queries, table, _ = _problem(seed=2)
    _, search_ids = bucket_top_k(queries, table, 6, chunk_size=11, exclude_id=0)
    _, eval_ids = streamed_top_k(queries, table, 6, chunk_size=11)
    np.testing.assert_array_equal(search_ids.numpy(), eval_ids)


@pytest.mark.parametrize(
    "exclude, error, match",
    [
        (np.zeros((5, 2), "int32"), ValueError, r"\[6, H\]"),
        (np.zeros((6,), "int32"), ValueError, r"\[6, H\]"),
        (np.zeros((6, 2), "float32"), TypeError, "integer"),
    ],
    ids=["wrong_rows", "rank_1", "float_ids"],
)
def test_bad_exclusions_name_the_argument(exclude, error, match):
    queries, table, _ = _problem()
    with pytest.raises(error, match=match):
        bucket_top_k(queries, tf.constant(table), 3, exclude=exclude)
