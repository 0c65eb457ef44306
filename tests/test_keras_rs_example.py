"""examples/keras_rs_retrieval.py: a Keras 3 / keras-rs retrieval model trained with SCELoss."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import numpy as np
import pytest

keras_rs = pytest.importorskip("keras_rs", reason="keras-rs is an optional extra ([rs])")

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _load_example(name):
    sys.path.insert(0, str(EXAMPLES))  # for the shared `seqrec_data` helper
    try:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    return module


def _write_tiny_seqrec(path, num_users=80, num_items=150, seed=0):
    """Each user walks through consecutive item ids: an easy next-item pattern."""
    rng = np.random.default_rng(seed)
    lines = []
    for user in range(1, num_users + 1):
        start, length = rng.integers(1, num_items + 1), rng.integers(5, 10)
        items = [(start + t - 1) % num_items + 1 for t in range(length)]
        lines.append(" ".join(map(str, [user, *items])))
    path.write_text("\n".join(lines) + "\n")


def test_keras_rs_example_trains_with_sce_and_serves_with_brute_force(tmp_path):
    _write_tiny_seqrec(tmp_path / "Tiny.txt")
    example = _load_example("keras_rs_retrieval")
    results, serving = example.main([
        "--data-dir", str(tmp_path), "--dataset", "Tiny", "--epochs", "4",
        "--batch-size", "32", "--dim", "16", "--max-len", "5", "--bucket-size-y", "32",
    ])
    assert results["loss_last_epoch"] < results["loss_first_epoch"]
    for name in ("recall@10", "recall@100", "ndcg@10", "mrr@100"):
        assert 0.0 <= results[name] <= 1.0, (name, results[name])
    assert results["recall@10"] <= results["recall@100"]

    # Oracle: rank every test target among all items with NumPy, from the same model.
    sequences = example.read_sequences(tmp_path / "Tiny.txt")
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
