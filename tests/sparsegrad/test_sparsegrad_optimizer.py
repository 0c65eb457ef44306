"""Tests of the SparseGrad optimizer semantics against a NumPy lazy-Adam reference."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_sce
from keras_sce import sparsegrad

IN, OUT, K = 6, 8, 5
LR, B1, B2, EPS = 0.01, 0.9, 0.999, 1e-8


def _orthogonal(n, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def numpy_lazy_adam(w, m, v, g, t, lr=LR, b1=B1, b2=B2, eps=EPS):
    """Reference of the paper's lazy Adam (PyTorch SparseAdam), float64."""
    selected = g != 0
    m = np.where(selected, b1 * m + (1 - b1) * g, m)
    v = np.where(selected, b2 * v + (1 - b2) * g * g, v)
    alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
    w = np.where(selected, w - alpha * m / (np.sqrt(v) + eps), w)
    return w, m, v


def _model(support=None, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3, IN))
    hidden = keras.layers.Dense(IN, activation="tanh", name="pre")(inputs)
    sparse = keras_sce.SparseGradDense(
        OUT, _orthogonal(IN, 1), _orthogonal(OUT, 2), num_selected=K, support=support, name="sg"
    )
    model = keras.Model(inputs, sparse(hidden))
    return model, sparse


def _batches(n, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=(4, 3, IN)).astype("f4"), rng.normal(size=(4, 3, OUT)).astype("f4"))
        for _ in range(n)
    ]


def _step(model, optimizer, x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)
    return [tf.convert_to_tensor(g).numpy() for g in grads]


def _index(model, variable):
    return [v is variable for v in model.trainable_variables].index(True)


def _dense_optimizer():
    return keras.optimizers.AdamW(0.003, weight_decay=0.05)


def test_lazy_adam_matches_numpy_reference_and_dense_variables_use_adamw():
    model, layer = _model()
    optimizer = sparsegrad.SparseGradOptimizer(
        _dense_optimizer(), learning_rate=LR, beta_1=B1, beta_2=B2, epsilon=EPS
    )
    sparse_index = [i for i, v in enumerate(model.trainable_variables) if v is layer.kernel]
    assert len(sparse_index) == 1
    # Oracles: NumPy lazy Adam for the kernel, a standalone AdamW for the rest.
    w = layer.kernel.numpy().astype(np.float64)
    m, v = np.zeros_like(w), np.zeros_like(w)
    dense_vars = [v_ for v_ in model.trainable_variables if v_ is not layer.kernel]
    shadow = [keras.Variable(d.numpy(), name=f"shadow_{i}") for i, d in enumerate(dense_vars)]
    reference_dense = _dense_optimizer()
    ever_selected = np.zeros(w.shape, bool)
    for t, (x, y) in enumerate(_batches(5), start=1):
        before = layer.kernel.numpy().copy()
        grads = _step(model, optimizer, x, y)
        g = grads[sparse_index[0]]
        selected = g != 0
        assert selected.sum() == K
        ever_selected |= selected
        after = layer.kernel.numpy()
        # Unselected entries are bit-identical, selected ones all move.
        np.testing.assert_array_equal(after[~selected], before[~selected])
        assert np.all(after[selected] != before[selected])
        w, m, v = numpy_lazy_adam(w, m, v, g.astype(np.float64), t)
        np.testing.assert_allclose(after, w, rtol=1e-6, atol=1e-7)
        dense_grads = [gr for i, gr in enumerate(grads) if i != sparse_index[0]]
        reference_dense.apply([tf.constant(gr) for gr in dense_grads], shadow)
        for d, s in zip(dense_vars, shadow, strict=True):
            np.testing.assert_allclose(d.numpy(), s.numpy(), rtol=1e-6, atol=1e-7)
    state_m, state_v = optimizer.sparse_state_variables
    np.testing.assert_allclose(state_m.numpy(), m, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(state_v.numpy(), v, rtol=1e-4, atol=1e-12)
    assert int(optimizer.iterations) == 5
    assert ever_selected.sum() > K  # the selection moved between batches
    np.testing.assert_array_equal(state_m.numpy()[~ever_selected], 0.0)


def test_dense_adam_on_masked_gradient_is_not_lazy_adam():
    """Why the lazy rule matters: a dense Adam keeps moving unselected entries."""
    model, layer = _model()
    adam = keras.optimizers.Adam(LR)
    moved_while_unselected = False
    for x, y in _batches(3):
        before = layer.kernel.numpy().copy()
        g = _step(model, adam, x, y)[_index(model, layer.kernel)]
        moved_while_unselected |= bool(np.any(layer.kernel.numpy()[g == 0] != before[g == 0]))
    assert moved_while_unselected


def test_support_mode_keeps_state_on_the_support_only():
    support = np.arange(1, IN * OUT, 4)  # 12 entries
    model, layer = _model(support=support)
    optimizer = sparsegrad.SparseGradOptimizer("sgd", learning_rate=LR)
    optimizer.build(model.trainable_variables)
    state_m, state_v = optimizer.sparse_state_variables
    assert state_m.shape == state_v.shape == (support.size,)
    w = layer.kernel.numpy().astype(np.float64).ravel()[support]
    m, v = np.zeros_like(w), np.zeros_like(w)
    initial = layer.kernel.numpy().copy()
    for t, (x, y) in enumerate(_batches(4), start=1):
        before = layer.kernel.numpy().copy()
        g = _step(model, optimizer, x, y)[_index(model, layer.kernel)]
        flat = g.ravel()
        assert np.count_nonzero(flat) == K
        assert np.all(np.isin(np.flatnonzero(flat), support))
        after = layer.kernel.numpy()
        np.testing.assert_array_equal(after[g == 0], before[g == 0])
        w, m, v = numpy_lazy_adam(w, m, v, flat[support].astype(np.float64), t)
        np.testing.assert_allclose(after.ravel()[support], w, rtol=1e-6, atol=1e-7)
    off_support = np.setdiff1d(np.arange(IN * OUT), support)
    final = layer.kernel.numpy().ravel()
    np.testing.assert_array_equal(final[off_support], initial.ravel()[off_support])
    np.testing.assert_allclose(state_v.numpy(), v, rtol=1e-4, atol=1e-12)


@pytest.mark.parametrize("mode", ["full", "support", "pool"])
def test_compile_fit_xla_and_keras_round_trip_with_optimizer_state(tmp_path, mode):
    support = np.arange(0, IN * OUT, 2) if mode == "support" else None
    model, _ = _model(support=support)
    model.compile(
        optimizer=sparsegrad.SparseGradOptimizer(
            _dense_optimizer(), learning_rate=LR, pool_factor=2 if mode == "pool" else None
        ),
        loss="mse",
        jit_compile=True,
    )
    (x, y), (x2, y2) = _batches(2)
    model.fit(x, y, epochs=8, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.optimizer, sparsegrad.SparseGradOptimizer)
    assert loaded.optimizer.pool_factor == model.optimizer.pool_factor
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 8
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    model.train_on_batch(x2, y2)
    loaded.train_on_batch(x2, y2)
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


def numpy_pool_step(w, g, pool, t, k):
    """Reference of the bounded-pool rule: LRU slots, fresh moments for new entries."""
    slots, stamps, m, v = pool
    flat_w, flat_g = w.ravel().copy(), g.ravel()
    order = np.argsort(-np.abs(flat_g), kind="stable")[:k]
    where = {int(index): i for i, index in enumerate(slots)}
    hits = {where[int(i)] for i in order if flat_g[i] != 0 and int(i) in where}
    free = sorted((i for i in range(len(slots)) if i not in hits), key=lambda i: (stamps[i], i))
    taken = 0
    for index in order:
        gi = flat_g[index]
        if gi == 0:
            continue
        if int(index) in where:
            slot, mi, vi = where[int(index)], m[where[int(index)]], v[where[int(index)]]
        else:
            slot, mi, vi = free[taken], 0.0, 0.0
            taken += 1
        wi, mi, vi = numpy_lazy_adam(flat_w[index], mi, vi, gi, t)
        flat_w[index], m[slot], v[slot], slots[slot], stamps[slot] = wi, mi, vi, index, t
    return flat_w.reshape(w.shape)


def test_pool_mode_equals_full_state_until_the_pool_is_full():
    runs = {}
    for name, factor in (("full", None), ("pool", 4)):  # 4 steps x K entries fit in 4K slots
        model, layer = _model()
        optimizer = sparsegrad.SparseGradOptimizer("sgd", learning_rate=LR, pool_factor=factor)
        for x, y in _batches(4):
            _step(model, optimizer, x, y)
        runs[name] = (layer.kernel.numpy(), optimizer)
    np.testing.assert_allclose(runs["pool"][0], runs["full"][0], rtol=1e-6, atol=1e-7)
    assert [s.shape for s in runs["pool"][1].sparse_state_variables] == [(4 * K,)] * 2


def test_pool_mode_with_evictions_matches_numpy_reference():
    model, layer = _model()
    optimizer = sparsegrad.SparseGradOptimizer("sgd", learning_rate=LR, pool_factor=1.4)
    optimizer.build(model.trainable_variables)
    size = 7  # ceil(1.4 * 5)
    pool = [np.full(size, IN * OUT), np.full(size, -1), np.zeros(size), np.zeros(size)]
    w = layer.kernel.numpy().astype(np.float64)
    evictions = 0
    for t, (x, y) in enumerate(_batches(6, seed=3), start=1):
        before_slots = pool[0].copy()
        g = _step(model, optimizer, x, y)[_index(model, layer.kernel)]
        w = numpy_pool_step(w, g.astype(np.float64), pool, t, K)
        evictions += int(np.sum((before_slots != pool[0]) & (before_slots != IN * OUT)))
        np.testing.assert_allclose(layer.kernel.numpy(), w, rtol=1e-5, atol=1e-6)
    assert evictions > 0
    m, v = optimizer.sparse_state_variables
    assert m.shape == (size,)
    np.testing.assert_allclose(m.numpy(), pool[2], rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(v.numpy(), pool[3], rtol=1e-3, atol=1e-12)


def test_config_round_trip():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, 10, 0.5)
    optimizer = sparsegrad.SparseGradOptimizer(
        keras.optimizers.AdamW(1e-3, weight_decay=0.02), learning_rate=schedule, beta_1=0.8
    )
    config = optimizer.get_config()
    clone = sparsegrad.SparseGradOptimizer.from_config(config)
    assert clone.get_config() == config
    assert isinstance(clone.dense_optimizer, keras.optimizers.AdamW)
    assert clone.dense_optimizer.weight_decay == 0.02 and clone.beta_1 == 0.8
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(restored, sparsegrad.SparseGradOptimizer)


def test_lazy_adam_update_function_matches_reference():
    rng = np.random.default_rng(3)
    w, m, v = (rng.normal(size=(4, 5)) for _ in range(3))
    v = np.abs(v)
    g = rng.normal(size=(4, 5)) * (rng.random((4, 5)) < 0.3)
    got = sparsegrad.lazy_adam_update(*(tf.constant(a) for a in (w, m, v, g)), 7, LR)
    ref = numpy_lazy_adam(w, m, v, g, 7)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a.numpy(), b, rtol=1e-12)
    np.testing.assert_array_equal(got[0].numpy()[g == 0], w[g == 0])


def test_errors():
    with pytest.raises(ValueError, match="clipnorm"):
        sparsegrad.SparseGradOptimizer(clipnorm=1.0)
    with pytest.raises(ValueError, match="beta_1"):
        sparsegrad.SparseGradOptimizer(beta_1=1.0)
    with pytest.raises(ValueError, match="pool_factor"):
        sparsegrad.SparseGradOptimizer(pool_factor=0.5)
    with pytest.raises(ValueError, match="epsilon"):
        sparsegrad.SparseGradOptimizer(epsilon=0.0)
    with pytest.raises(ValueError, match="dense_optimizer"):
        sparsegrad.SparseGradOptimizer(dense_optimizer=sparsegrad.SparseGradOptimizer())
    model, _ = _model()
    optimizer = sparsegrad.SparseGradOptimizer()
    optimizer.build([v for v in model.trainable_variables if v.path != "sg/kernel"])
    grads = [tf.zeros_like(v) for v in model.trainable_variables]
    with pytest.raises(ValueError, match="not known"):
        optimizer.apply(grads, model.trainable_variables)
