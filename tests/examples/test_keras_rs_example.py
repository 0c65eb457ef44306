"""examples/keras_rs_retrieval.py: a Keras 3 / keras-rs retrieval model trained with SCELoss."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.examples import load_example, write_tiny_seqrec

keras_rs = pytest.importorskip("keras_rs", reason="keras-rs is an optional extra ([rs])")


def test_keras_rs_example_trains_with_sce_and_serves_with_brute_force(tmp_path):
    write_tiny_seqrec(tmp_path / "Tiny.txt", num_users=80, num_items=150, min_len=5, max_len=10)
    example = load_example("keras_rs_retrieval")
    results, serving = example.main([
        "--data-dir", str(tmp_path), "--dataset", "Tiny", "--epochs", "4",
        "--batch-size", "32", "--dim", "16", "--max-len", "5", "--bucket-size-y", "32",
    ])
    assert results["loss_last_epoch"] < results["loss_first_epoch"]
    for name in ("recall@10", "recall@100", "ndcg@10", "mrr@100"):
        assert 0.0 <= results[name] <= 1.0, (name, results[name])
    assert results["recall@10"] <= results["recall@100"]

    # Oracle: rank every test target among all items with NumPy, from the same model.
    sequences, _ = example.load_datasets("Tiny", str(tmp_path))
    _, _, test_hist, test_target, _ = example.build_examples(sequences, 5)
    query_model = serving.get_layer("query_tower")
    table = np.asarray(query_model.get_layer("items").embeddings)
    query = np.asarray(query_model.predict(test_hist, verbose=0), dtype=np.float64)
    scores = query @ table[1:].astype(np.float64).T  # row 0 (padding) is not an item
    target_scores = scores[np.arange(len(test_target)), test_target - 1]
    rank = (scores > target_scores[:, None]).sum(axis=1)
    np.testing.assert_allclose(results["recall@10"], np.mean(rank < 10), atol=1e-6)
    np.testing.assert_allclose(results["recall@100"], np.mean(rank < 100), atol=1e-6)
    np.testing.assert_allclose(results["mrr@100"], np.mean(np.where(rank < 100, 1 / (rank + 1), 0)),
                               atol=1e-5)
    assert results["recall@10"] > 0.2  # the pattern is learnable: far above chance (10/150)

