"""SCELoss under KERAS_BACKEND=jax: dispatch, training with model.fit (jit), saving."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import jax
import keras
import numpy as np
import pytest

import keras_sce
from keras_sce import kops
from keras_sce.kops.loss import KerasOpsSCELoss
from tests.jax.fixtures import C, D, embedding_model, next_item_batches


def test_sce_loss_dispatches_to_keras_ops_under_jax():
    model, items = embedding_model()
    loss = keras_sce.SCELoss(items, bucket_size_y=16, seed=0)
    assert keras.backend.backend() == "jax"
    assert type(loss) is KerasOpsSCELoss and isinstance(loss, keras_sce.SCELoss)
    assert keras_sce.SCELoss(items, calibration=True).calibration["proposal"] == "uniform"
    with pytest.raises(ValueError, match="bucket_size_y"):
        keras_sce.SCELoss(items, bucket_size_y=0)


def test_fit_with_sce_loss_under_jit_lowers_the_loss_and_trains_the_table():
    model, items = embedding_model()
    model.compile(keras.optimizers.Adam(0.02), loss=keras_sce.SCELoss(
        items, num_buckets=4, bucket_size_y=16, chunk_size=40, seed=1))
    x, y = next_item_batches()
    before = np.array(items.embeddings.numpy())
    history = model.fit(x, y, epochs=4, batch_size=32, verbose=0).history["loss"]
    assert model.jit_compile is True or model.jit_compile == "auto"
    assert all(np.isfinite(history)) and history[-1] < 0.9 * history[0]
    assert not np.allclose(items.embeddings.numpy(), before)  # the output embeddings train


def test_same_seed_same_loss_and_different_batches_different_centres():
    model, items = embedding_model()
    x, y = next_item_batches(16)
    hidden = model(x)
    first = keras_sce.SCELoss(items, bucket_size_y=8, seed=3)
    again = keras_sce.SCELoss(items, bucket_size_y=8, seed=3)
    np.testing.assert_allclose(float(first(y, hidden)), float(again(y, hidden)), rtol=1e-6)
    assert int(kops.batch_fingerprint(y)) != int(kops.batch_fingerprint(y[::-1]))


def test_full_coverage_loss_equals_full_ce():
    model, items = embedding_model()
    x, y = next_item_batches(8)
    hidden = model(x)
    rows = int((y != 0).sum())
    loss = keras_sce.SCELoss(items, num_buckets=1, bucket_size_x=rows, bucket_size_y=C - 1)
    exact = kops.full_cross_entropy(hidden, y, items.embeddings)
    np.testing.assert_allclose(float(loss(y, hidden)), float(exact), rtol=1e-5)
    stats = loss.diagnostics(y, hidden)
    assert float(stats["covered_fraction"]) == 1.0


def test_saved_model_loads_with_its_loss_bound(tmp_path):
    model, items = embedding_model()
    model.compile("adam", loss=keras_sce.SCELoss(items, bucket_size_y=12, mix_x=True, seed=5))
    x, y = next_item_batches(32)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras_sce.load_model(path)
    assert type(loaded.loss) is KerasOpsSCELoss
    assert loaded.loss.bucket_size_y == 12 and loaded.loss.mix_x and loaded.loss.seed == 5
    assert loaded.loss.item_embeddings.path == items.embeddings.path
    hidden = loaded(x[:4])
    np.testing.assert_allclose(
        float(loaded.loss(y[:4], hidden)), float(model.loss(y[:4], hidden)), rtol=1e-6
    )
    # The same file on the TensorFlow backend gives the TensorFlow SCELoss, bound.
    code = (
        f"import keras_sce; keras_sce.SCELoss; m = keras_sce.load_model({str(path)!r}); "
        "print(type(m.loss).__name__, m.loss.bucket_size_y, m.loss.item_embeddings is not None)"
    )
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=300, cwd=pathlib.Path(__file__).parents[2])
    assert result.stdout.split() == ["SCELoss", "12", "True"], result.stderr[-2000:]


def test_streamed_search_never_builds_a_buckets_by_catalogue_matrix():
    """The compiled step (forward and backward) holds no [n_b, C] array when streamed."""
    rng = np.random.default_rng(0)
    num_items, n_b = 997, 5
    table = rng.normal(size=(num_items, D)).astype("float32")
    hidden = rng.normal(size=(4, 6, D)).astype("float32")
    labels = rng.integers(1, num_items, size=(4, 6))

    def step(h, w, chunk):
        return kops.scalable_cross_entropy(
            h, labels, w, num_buckets=n_b, bucket_size_y=32, chunk_size=chunk, seed=0
        )

    pattern = re.compile(rf"tensor<({n_b}x{num_items}|{num_items}x{n_b})x")
    for chunk, expect in ((None, True), (128, False)):
        grad = jax.jit(jax.grad(step, argnums=(0, 1)), static_argnums=2)
        text = grad.lower(hidden, table, chunk).as_text()
        assert bool(pattern.search(text)) is expect, chunk
