"""Full-ranking metrics, streamed top-k and history exclusion."""

from __future__ import annotations

import math

import numpy as np
import pytest

from keras_sce.evaluation import evaluate_ranking, ranking_metrics, streamed_top_k


def _dense_reference(queries, table, exclude, targets, padding_id=0):
    scores = queries.astype(np.float64) @ table.astype(np.float64).T
    scores[:, padding_id] = -np.inf
    for row in range(scores.shape[0]):
        for item in exclude[row]:
            if item != padding_id and item != targets[row]:
                scores[row, item] = -np.inf
    ranks = np.array(
        [
            int(np.sum(np.delete(scores[r], targets[r]) >= scores[r, targets[r]]))
            for r in range(scores.shape[0])
        ]
    )
    return scores, ranks


def test_hand_computed_metrics():
    m = ranking_metrics([0], ks=(1, 10))
    assert m["ndcg@10"] == 1.0 and m["hr@1"] == 1.0 and m["mrr@10"] == 1.0
    m = ranking_metrics([2], ks=(1, 3, 10))
    assert m["ndcg@10"] == pytest.approx(1.0 / math.log2(4))
    assert m["mrr@10"] == pytest.approx(1.0 / 3.0)
    assert m["hr@1"] == 0.0 and m["hr@3"] == 1.0 and m["ndcg@1"] == 0.0
    m = ranking_metrics([0, 2, 10, 50], ks=(10,))
    assert m["hr@10"] == 0.5
    assert m["ndcg@10"] == pytest.approx((1.0 + 0.5) / 4)


def test_coverage():
    top = np.array([[1, 2, 3], [1, 2, 4]])
    m = ranking_metrics([0, 1], top, num_items=11, ks=(1, 3))
    assert m["cov@1"] == pytest.approx(1 / 10)
    assert m["cov@3"] == pytest.approx(4 / 10)
    with pytest.raises(ValueError, match="num_items"):
        ranking_metrics([0, 1], top, ks=(1,))


@pytest.mark.parametrize("chunk_size", [7, 64, 1000], ids=["chunk7", "chunk64", "one-chunk"])
def test_streamed_top_k_matches_dense(chunk_size):
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(23, 6)).astype("float32")
    table = rng.normal(size=(97, 6)).astype("float32")
    exclude = rng.integers(0, 97, size=(23, 9))
    targets = rng.integers(1, 97, size=23)
    exclude[:, 0] = targets  # a target in the history stays rankable
    scores, ids, ranks = streamed_top_k(
        queries,
        table,
        12,
        exclude=exclude,
        targets=targets,
        chunk_size=chunk_size,
        batch_size=5,
    )
    dense, dense_ranks = _dense_reference(queries, table, exclude, targets)
    np.testing.assert_array_equal(ids, np.argsort(-dense, axis=1, kind="stable")[:, :12])
    np.testing.assert_allclose(scores, np.sort(dense, axis=1)[:, ::-1][:, :12], rtol=1e-5)
    np.testing.assert_array_equal(ranks, dense_ranks)


def test_history_and_padding_excluded():
    table = np.eye(5, dtype="float32")
    table[0] = 10.0  # the padding row would win if it were not excluded
    queries = np.array([[0, 4, 3, 2, 1]], "float32")
    _, ids = streamed_top_k(queries, table, 3, exclude=np.array([[1, 0, 0]]))
    assert ids.tolist() == [[2, 3, 4]]
    _, ids = streamed_top_k(queries, table, 3)
    assert ids.tolist() == [[1, 2, 3]]
    # The target is never excluded even if it is in the history: rank 0 here.
    _, _, ranks = streamed_top_k(
        queries, table, 2, exclude=np.array([[1, 2]]), targets=np.array([1])
    )
    assert ranks.tolist() == [0]


def test_ties_count_against_the_target():
    table = np.ones((6, 2), "float32")
    _, _, ranks = streamed_top_k(np.ones((1, 2), "float32"), table, 2, targets=np.array([3]))
    assert ranks.tolist() == [4]  # all 4 other real items tie with the target


def test_evaluate_ranking_end_to_end():
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(40, 4)).astype("float32")
    table = rng.normal(size=(60, 4)).astype("float32")
    targets = rng.integers(1, 60, size=40)
    history = rng.integers(0, 60, size=(40, 5))
    metrics = evaluate_ranking(queries, table, targets, exclude=history, chunk_size=16)
    _, ranks = _dense_reference(queries, table, history, targets)
    expected = ranking_metrics(ranks, ks=(1, 5, 10, 20, 50))
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value)
    assert 0 < metrics["cov@10"] <= 1


def test_matches_keras_rs_ndcg():
    keras_rs = pytest.importorskip("keras_rs")
    rng = np.random.default_rng(2)
    queries = rng.normal(size=(30, 4)).astype("float32")
    table = rng.normal(size=(25, 4)).astype("float32")
    targets = rng.integers(1, 25, size=30)
    ours = evaluate_ranking(queries, table, targets, ks=(10,))
    scores = queries @ table.T
    scores[:, 0] = -1e9  # the padding item is never ranked
    labels = np.zeros_like(scores)
    labels[np.arange(30), targets] = 1.0
    metric = keras_rs.metrics.NDCG(k=10)
    metric.update_state(labels, scores)
    assert ours["ndcg@10"] == pytest.approx(float(metric.result()), rel=1e-5)
    mrr = keras_rs.metrics.MeanReciprocalRank(k=10)
    mrr.update_state(labels, scores)
    assert ours["mrr@10"] == pytest.approx(float(mrr.result()), rel=1e-5)


def test_bad_inputs():
    table = np.zeros((5, 3), "float32")
    with pytest.raises(ValueError, match="k must be"):
        streamed_top_k(np.zeros((1, 3), "float32"), table, 5)
    with pytest.raises(ValueError, match="agree on d"):
        streamed_top_k(np.zeros((1, 2), "float32"), table, 2)
    with pytest.raises(ValueError, match="padding"):
        streamed_top_k(np.zeros((1, 3), "float32"), table, 2, targets=np.array([0]))
    with pytest.raises(ValueError, match="0-based"):
        ranking_metrics([-1])
