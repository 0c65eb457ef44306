"""LazyAdam / RowAdagrad maths: sparse rows against NumPy, dense against Keras."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sce.optimizers import LazyAdam, RowAdagrad
from keras_sce.optimizers._sparse import coalesce

C, D = 12, 3


def _slices(indices, values):
    return tf.IndexedSlices(
        tf.constant(values, tf.float32), tf.constant(indices, tf.int32), tf.constant([C, D])
    )


def _steps(seed=0, n=4, count=5):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        idx = rng.integers(0, C // 2, n)  # rows >= C/2 are never touched
        idx[-1] = idx[0]  # always a duplicate
        out.append((idx, rng.normal(size=(n, D)).astype("float32")))
    return out


def _ref_lazy_adam(w, steps, lr=0.01, b1=0.9, b2=0.999, eps=1e-7):
    w, m, v = w.astype("float64"), np.zeros_like(w, "float64"), np.zeros_like(w, "float64")
    for t, (idx, val) in enumerate(steps, 1):
        g = np.zeros_like(w)
        np.add.at(g, idx, val)
        r = np.unique(idx)
        m[r] += (g[r] - m[r]) * (1 - b1)
        v[r] += (g[r] ** 2 - v[r]) * (1 - b2)
        w[r] -= lr * np.sqrt(1 - b2**t) / (1 - b1**t) * m[r] / (np.sqrt(v[r]) + eps)
    return w, m, v


def _run(opt, w0, steps, jit):
    var = keras.Variable(w0)
    opt.build([var])

    @tf.function(jit_compile=jit)
    def step(g):
        opt.apply([g], [var])

    for idx, val in steps:
        step(_slices(idx, val))
    return var


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_lazy_adam_sparse_rows_match_reference_and_untouched_rows_are_bit_identical(jit):
    w0 = np.random.default_rng(1).normal(size=(C, D)).astype("float32")
    steps = _steps()
    opt = LazyAdam(0.01)
    var = _run(opt, w0, steps, jit)
    w_ref, m_ref, v_ref = _ref_lazy_adam(w0, steps)
    np.testing.assert_allclose(var.numpy(), w_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(opt._momentums[0].numpy(), m_ref, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(opt._velocities[0].numpy(), v_ref, rtol=1e-4, atol=1e-9)
    untouched = np.setdiff1d(np.arange(C), np.concatenate([s[0] for s in steps]))
    assert untouched.size >= C // 2
    np.testing.assert_array_equal(var.numpy()[untouched], w0[untouched])
    assert not opt._momentums[0].numpy()[untouched].any()
    assert not opt._velocities[0].numpy()[untouched].any()


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"amsgrad": True}, {"weight_decay": 0.1}, {"clipnorm": 0.5}, {"clipvalue": 0.2},
     {"global_clipnorm": 0.3}, {"loss_scale_factor": 8.0}],
    ids=["plain", "amsgrad", "weight_decay", "clipnorm", "clipvalue", "global_clipnorm",
         "loss_scale_factor"],
)
@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_lazy_adam_equals_keras_adam_when_every_row_is_present(kwargs, jit):
    """Sparse slices covering every row (with duplicates) = Keras Adam on their dense sum;
    dense gradients go through Keras Adam's own update (exact equality)."""
    rng = np.random.default_rng(2)
    w0 = rng.normal(size=(C, D)).astype("float32")
    lazy_sparse, lazy_dense = keras.Variable(w0), keras.Variable(w0)
    keras_dense = keras.Variable(w0)
    ones = np.ones(D, "float32")
    bias_lazy, bias_keras = keras.Variable(ones), keras.Variable(ones)
    opt_a = LazyAdam(0.05, **kwargs)
    opt_b = keras.optimizers.Adam(0.05, **kwargs)

    @tf.function(jit_compile=jit)
    def step(g_sparse, g_dense, g_bias):
        opt_a.apply([g_sparse, g_dense, g_bias], [lazy_sparse, lazy_dense, bias_lazy])
        opt_b.apply([g_dense, g_dense, g_bias], [keras_dense, lazy_dense_twin, bias_keras])

    lazy_dense_twin = keras.Variable(w0)
    for _ in range(4):
        idx = np.concatenate([rng.permutation(C), rng.integers(0, C, 3)])
        val = rng.normal(size=(idx.size, D)).astype("float32")
        dense = np.zeros((C, D), "float32")
        np.add.at(dense, idx, val)
        step(_slices(idx, val), tf.constant(dense), tf.constant(rng.normal(size=D), tf.float32))
    # Exact, except that a global norm over sparse and dense parts is summed in
    # another order than Keras sums it.
    if "global_clipnorm" in kwargs:
        def same(a, b):
            np.testing.assert_allclose(a, b, rtol=1e-5)
    else:
        same = np.testing.assert_array_equal
    same(lazy_dense.numpy(), lazy_dense_twin.numpy())
    same(bias_lazy.numpy(), bias_keras.numpy())
    np.testing.assert_allclose(lazy_sparse.numpy(), keras_dense.numpy(), rtol=1e-5, atol=1e-6)


def test_coalesce_sums_duplicates_with_static_shapes():
    indices, summed, first = coalesce(_slices([4, 1, 4, 4], np.arange(12.0).reshape(4, 3)))
    np.testing.assert_array_equal(indices.numpy(), [1, 4, 4, 4])
    np.testing.assert_array_equal(first.numpy(), [True, True, False, False])
    np.testing.assert_array_equal(summed.numpy()[1], [0 + 6 + 9, 1 + 7 + 10, 2 + 8 + 11])
    np.testing.assert_array_equal(summed.numpy()[3], summed.numpy()[1])


@pytest.mark.parametrize(
    "kwargs,match",
    [({"gradient_accumulation_steps": 2}, "gradient_accumulation_steps"),
     ({"beta_1": 1.0}, "beta_1"), ({"beta_2": -0.1}, "beta_2"), ({"epsilon": 0.0}, "epsilon")],
    ids=["accumulation", "beta_1", "beta_2", "epsilon"],
)
def test_lazy_adam_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LazyAdam(**kwargs)


@pytest.mark.parametrize("count", [4, 3 * C], ids=["fewer-slices-than-rows", "more-slices"])
@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_row_adagrad_sparse_rows_match_reference(jit, count):
    w0 = np.random.default_rng(3).normal(size=(C, D)).astype("float32")
    steps = _steps(seed=4, n=count)
    opt = RowAdagrad(0.1, initial_accumulator_value=0.1)
    var = _run(opt, w0, steps, jit)
    w, acc = w0.astype("float64"), np.full(C, 0.1)
    for idx, val in steps:
        g = np.zeros_like(w)
        np.add.at(g, idx, val)
        r = np.unique(idx)
        acc[r] += (g[r] ** 2).mean(axis=1)
        w[r] -= 0.1 * g[r] / np.sqrt(acc[r] + 1e-7)[:, None]
    np.testing.assert_allclose(var.numpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(opt._accumulators[0].numpy(), acc, rtol=1e-5)
    assert opt._accumulators[0].shape == (C,)
    untouched = np.setdiff1d(np.arange(C), np.concatenate([s[0] for s in steps]))
    np.testing.assert_array_equal(var.numpy()[untouched], w0[untouched])


def test_row_adagrad_dense_rules():
    """Rank >= 2: the row-wise rule on every row; rank 1: Keras Adagrad exactly."""
    rng = np.random.default_rng(5)
    w0, b0 = rng.normal(size=(C, D)).astype("float32"), rng.normal(size=D).astype("float32")
    w, b, b_keras = keras.Variable(w0), keras.Variable(b0), keras.Variable(b0)
    opt, ref = RowAdagrad(0.1), keras.optimizers.Adagrad(0.1)
    gw, gb = rng.normal(size=(C, D)).astype("float32"), rng.normal(size=D).astype("float32")
    for _ in range(3):
        opt.apply([tf.constant(gw), tf.constant(gb)], [w, b])
        ref.apply([tf.constant(gb)], [b_keras])
    np.testing.assert_array_equal(b.numpy(), b_keras.numpy())
    acc = 0.1 + np.cumsum([(gw**2).mean(axis=1)] * 3, axis=0)
    expected = w0 - sum(0.1 * gw / np.sqrt(a + 1e-7)[:, None] for a in acc)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_lazy_adam_low_precision_variables(dtype):
    """Half-precision tables update in their own dtype, only on the rows present."""
    w0 = np.random.default_rng(6).normal(size=(C, D)).astype("float32")
    var = keras.Variable(w0, dtype=dtype)
    opt = LazyAdam(0.25)  # a step that bfloat16 can represent
    g = tf.IndexedSlices(tf.ones([2, D], dtype), tf.constant([1, 3]), tf.constant([C, D]))
    before = var.numpy()
    opt.apply([g], [var])
    after = var.numpy()
    changed = np.nonzero(np.any(before != after, axis=1))[0]
    np.testing.assert_array_equal(changed, [1, 3])
    assert opt._momentums[0].dtype == dtype
    np.testing.assert_allclose(after[[1, 3]], before[[1, 3]] - 0.25, rtol=0, atol=4e-2)


@pytest.mark.parametrize("mode", ["graph", "xla", "dynamic-count"])
@pytest.mark.parametrize("count", [4, 3 * C], ids=["fewer-slices-than-rows", "more-slices"])
def test_lazy_adam_same_update_when_slices_outnumber_the_rows(count, mode):
    # N x k per-row negatives give more slices than the table has rows: the update
    # then sums them into table shape (cheaper) and must still be the lazy update.
    w0 = np.random.default_rng(2).normal(size=(C, D)).astype("float32")
    steps = _steps(seed=3, n=count)
    opt = LazyAdam(0.01)
    var = keras.Variable(w0)
    opt.build([var])
    signature = [tf.IndexedSlicesSpec([C, D], tf.float32, tf.int32, tf.int32, [None])]

    @tf.function(jit_compile=mode == "xla",
                 input_signature=signature if mode == "dynamic-count" else None)
    def step(g):
        opt.apply([g], [var])

    for idx, val in steps:
        step(_slices(idx, val))
    w_ref, m_ref, v_ref = _ref_lazy_adam(w0, steps)
    np.testing.assert_allclose(var.numpy(), w_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(opt._velocities[0].numpy(), v_ref, rtol=1e-4, atol=1e-9)
    untouched = np.setdiff1d(np.arange(C), np.concatenate([s[0] for s in steps]))
    assert untouched.size >= C // 2
    np.testing.assert_array_equal(var.numpy()[untouched], w0[untouched])
    assert not opt._momentums[0].numpy()[untouched].any()
