"""examples/keras_hub_causal_lm.py: a keras-hub GPT-2 backbone trained with SCELoss."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.examples import load_example

pytest.importorskip("keras_hub", reason="keras-hub is an optional extra")


@pytest.fixture(scope="module")
def tiny_run():
    example = load_example("keras_hub_causal_lm")
    return example, example.main(["--tiny", "--seed", "1"])


def test_tiny_run_learns_the_successor_pattern(tiny_run):
    _, results = tiny_run
    vocabulary = results["corpus"].vocabulary_size
    for split in ("validation", "test"):
        # 85% of the next words follow a fixed successor: far above chance (1/300).
        assert results[f"{split}_acc@1"] > 0.4, results
        assert results[f"{split}_acc@1"] <= results[f"{split}_acc@10"] <= 1.0
        assert 1.0 < results[f"{split}_perplexity"] < vocabulary - 2  # beats uniform
        assert 0.0 < results[f"{split}_oov_rate"] < 0.05


def _batch(example, corpus, length=16, size=8):
    inputs, targets = next(iter(corpus.test.dataset(length, size)))
    return example.to_features(inputs, targets)


def test_gradient_reaches_the_tied_table_as_sparse_rows(tiny_run):
    example, results = tiny_run
    backbone, loss = results["backbone"], results["loss_fn"]
    features, targets = _batch(example, results["corpus"])
    table = backbone.token_embedding.embeddings
    with tf.GradientTape() as tape:
        value = loss(targets, backbone(features, training=True))
    grad = tape.gradient(value, table)
    assert isinstance(grad, tf.IndexedSlices), type(grad)
    dense = tf.convert_to_tensor(grad).numpy()
    touched = np.flatnonzero(np.abs(dense).sum(axis=1))
    # Input rows and SCE's gathered rows: more than the batch's inputs, far from all.
    assert 0 < touched.size < table.shape[0]
    assert set(np.unique(targets.numpy()[targets.numpy() != 0])) <= set(touched)


def test_padding_targets_are_ignored(tiny_run):
    example, results = tiny_run
    backbone, loss = results["backbone"], results["loss_fn"]
    features, targets = _batch(example, results["corpus"])
    padded = targets.numpy() == 0
    assert padded.any(), "the test batch needs a short window"
    # Garbage at the padding positions (the attention is causal, so the real
    # positions' hidden states do not change); the loss must not move.
    noisy = dict(features)
    noisy["token_ids"] = tf.where(padded, 7, features["token_ids"])
    clean_loss = loss.diagnostics(targets, backbone(features))["loss"]
    noisy_loss = loss.diagnostics(targets, backbone(noisy))["loss"]
    np.testing.assert_allclose(noisy_loss.numpy(), clean_loss.numpy(), rtol=1e-5)
    # ...while counting those positions as targets of id 7 changes it.
    wrong = tf.where(padded, 7, targets)
    wrong_loss = loss.diagnostics(wrong, backbone(features))["loss"]
    assert abs(float(wrong_loss) - float(clean_loss)) > 1e-4
