"""Tests of keras_sce.SparseGradDense against Dense and NumPy oracles."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_sce
from keras_sce import sparsegrad

IN, OUT = 5, 7


def _orthogonal(n, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def _dense(use_bias=True, activation=None, seed=0, in_dim=IN, out_dim=OUT):
    dense = keras.layers.Dense(
        out_dim,
        use_bias=use_bias,
        activation=activation,
        kernel_initializer=keras.initializers.RandomNormal(seed=seed),
        bias_initializer=keras.initializers.RandomNormal(seed=seed + 1),
    )
    dense.build((None, in_dim))
    return dense


def _inputs(shape, seed=1, dtype="float32"):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def _grads(layer, x, weights=None):
    """Gradients of a fixed weighted sum of the outputs (loss with a dense ∂L/∂y)."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        w = tf.constant(
            np.random.default_rng(7).normal(size=y.shape).astype(y.dtype.as_numpy_dtype)
        )
        loss = tf.reduce_sum(w * y) if weights is None else tf.reduce_sum(weights * y)
    variables = [layer.kernel] + ([layer.bias] if layer.use_bias else [])
    grads = tape.gradient(loss, [x] + variables)
    return [None if g is None else tf.convert_to_tensor(g).numpy() for g in grads]


SHAPES = {"2d": (6, IN), "3d": (2, 3, IN), "4d": (2, 2, 3, IN)}


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_conversion_is_equivalent(shape, use_bias):
    dense = _dense(use_bias=use_bias, activation="gelu")
    layer = keras_sce.SparseGradDense.from_dense(
        dense, _orthogonal(IN, 1), _orthogonal(OUT, 2), num_selected=3
    )
    x = _inputs(shape)
    np.testing.assert_allclose(layer(x), dense(x), atol=2e-6, rtol=1e-5)
    assert layer(x).shape == shape[:-1] + (OUT,)
    np.testing.assert_allclose(layer.to_dense()(x), dense(x), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("k", [1, 9, IN * OUT], ids=["k1", "k9", "k_all"])
@pytest.mark.parametrize("shape", [SHAPES["3d"], SHAPES["4d"]], ids=["3d", "4d"])
def test_input_and_bias_gradients_equal_dense(k, shape):
    dense = _dense()
    layer = keras_sce.SparseGradDense.from_dense(
        dense, _orthogonal(IN, 3), _orthogonal(OUT, 4), num_selected=k
    )
    x = _inputs(shape)
    dx, _, db = _grads(layer, x)
    dx_ref, _, db_ref = _grads(dense, x)
    np.testing.assert_allclose(dx, dx_ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(db, db_ref, atol=1e-5, rtol=1e-5)


def test_full_budget_kernel_gradient_is_rotated_dense_gradient():
    dense = _dense()
    p, q = _orthogonal(IN, 5), _orthogonal(OUT, 6)
    layer = keras_sce.SparseGradDense.from_dense(dense, p, q, num_selected=IN * OUT)
    x = _inputs((3, 4, IN))
    _, dk, _ = _grads(layer, x)
    _, dk_dense, _ = _grads(dense, x)
    oracle = p.astype(np.float64).T @ dk_dense.astype(np.float64) @ q.astype(np.float64)
    np.testing.assert_allclose(dk, oracle, atol=1e-5, rtol=1e-5)


def test_float64_kernel_gradient_matches_finite_differences():
    p, q = _orthogonal(IN, 8).astype(np.float64), _orthogonal(OUT, 9).astype(np.float64)
    layer = keras_sce.SparseGradDense(
        OUT, p, q, num_selected=IN * OUT, activation="tanh", dtype="float64"
    )
    x = tf.constant(_inputs((4, IN), dtype="float64"))
    layer(x)
    assert layer.kernel.dtype == "float64"

    def loss_at(kernel):
        layer.kernel.assign(kernel)
        return float(tf.reduce_sum(tf.sin(layer(x))))

    base = layer.kernel.numpy().copy()
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.sin(layer(x)))
    analytic = tape.gradient(loss, layer.kernel).numpy()
    numeric = np.zeros_like(base)
    eps = 1e-6
    for i in range(IN):
        for j in range(OUT):
            plus, minus = base.copy(), base.copy()
            plus[i, j] += eps
            minus[i, j] -= eps
            numeric[i, j] = (loss_at(plus) - loss_at(minus)) / (2 * eps)
    layer.kernel.assign(base)
    np.testing.assert_allclose(analytic, numeric, atol=1e-7, rtol=1e-6)


def test_exactly_k_nonzeros_that_dominate_the_dropped_entries():
    in_dim, out_dim, k = 12, 10, 17
    dense = _dense(in_dim=in_dim, out_dim=out_dim)
    p, q = _orthogonal(in_dim, 10), _orthogonal(out_dim, 11)
    layer = keras_sce.SparseGradDense.from_dense(dense, p, q, num_selected=k)
    x = _inputs((2, 5, in_dim))
    _, dk, _ = _grads(layer, x)
    _, dk_dense, _ = _grads(dense, x)
    full = p.astype(np.float64).T @ dk_dense @ q.astype(np.float64)
    kept = dk != 0
    assert kept.sum() == k
    np.testing.assert_allclose(dk[kept], full[kept], atol=1e-5, rtol=1e-5)
    assert np.abs(full[kept]).min() >= np.abs(full[~kept]).max() - 1e-6


def test_selection_changes_between_batches():
    in_dim, out_dim, k = 16, 16, 8
    layer = keras_sce.SparseGradDense.from_dense(
        _dense(in_dim=in_dim, out_dim=out_dim),
        _orthogonal(in_dim, 12),
        _orthogonal(out_dim, 13),
        num_selected=k,
    )
    masks = [_grads(layer, _inputs((4, in_dim), seed=s))[1] != 0 for s in (20, 21, 22)]
    assert all(m.sum() == k for m in masks)
    assert not (np.array_equal(masks[0], masks[1]) and np.array_equal(masks[1], masks[2]))


def test_identity_bases_reproduce_meprop():
    dense = _dense()
    k = 6
    meprop = keras_sce.SparseGradDense.from_dense(dense, None, None, num_selected=k)
    eye = keras_sce.SparseGradDense.from_dense(
        dense, np.eye(IN, dtype="float32"), np.eye(OUT, dtype="float32"), num_selected=k
    )
    x = _inputs((3, 2, IN))
    _, dk_dense, _ = _grads(dense, x)
    flat = dk_dense.ravel()
    top = np.argsort(-np.abs(flat))[:k]
    oracle = np.zeros_like(flat)
    oracle[top] = flat[top]
    for layer in (meprop, eye):
        np.testing.assert_allclose(layer(x), dense(x), atol=1e-6)
        _, dk, _ = _grads(layer, x)
        np.testing.assert_allclose(dk.ravel(), oracle, atol=1e-6)
    assert meprop.input_basis is None and meprop.output_basis is None


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_approx_selection_is_exact_on_cpu(jit):
    """`approx_max_k` is approximate only on TPU; on CPU it selects the exact top-k."""
    if tf.config.list_physical_devices("TPU"):
        pytest.skip("approx_max_k is approximate on TPU")
    in_dim, out_dim, k = 48, 40, 37
    dense = _dense(in_dim=in_dim, out_dim=out_dim)
    p, q = _orthogonal(in_dim, 1), _orthogonal(out_dim, 2)
    x = tf.constant(_inputs((6, 5, in_dim)))
    grads = {}
    for selection in ("top_k", "approx"):
        layer = keras_sce.SparseGradDense.from_dense(
            dense, p, q, num_selected=k, selection=selection
        )

        @tf.function(jit_compile=jit)
        def kernel_grad(layer=layer):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.sin(layer(x)))
            return tape.gradient(loss, layer.kernel)

        grads[selection] = kernel_grad().numpy()
    assert np.count_nonzero(grads["approx"]) == k
    np.testing.assert_array_equal(grads["approx"], grads["top_k"])


def test_density_resolves_budget():
    layer = keras_sce.SparseGradDense(OUT, density=0.1)
    layer.build((None, IN))
    assert layer.k == round(0.1 * IN * OUT)
    default = keras_sce.SparseGradDense(OUT)
    default.build((None, IN))
    assert default.k == 1  # max(1, round(0.01 * 35))
    assert sparsegrad.lora_equivalent_budget(7, 768, 3072) == 26_880


def test_non_finite_gradient_is_not_hidden_by_the_selection():
    layer = keras_sce.SparseGradDense.from_dense(
        _dense(), _orthogonal(IN, 1), _orthogonal(OUT, 2), num_selected=2
    )
    x = _inputs((3, IN))
    weights = np.ones((3, OUT), np.float32)
    weights[0, 0] = np.nan
    _, dk, _ = _grads(layer, x, weights=tf.constant(weights))
    assert np.isnan(dk).any()


def test_fold_back_after_training_matches():
    dense = _dense()
    layer = keras_sce.SparseGradDense.from_dense(
        dense, _orthogonal(IN, 1), _orthogonal(OUT, 2), num_selected=5
    )
    inputs = keras.Input((3, IN))
    model = keras.Model(inputs, layer(inputs))
    model.compile(optimizer=sparsegrad.SparseGradOptimizer(learning_rate=0.05), loss="mse")
    x, y = _inputs((8, 3, IN)), _inputs((8, 3, OUT), seed=4)
    before = layer.kernel.numpy().copy()
    model.fit(x, y, epochs=3, batch_size=4, verbose=0)
    assert not np.array_equal(before, layer.kernel.numpy())
    folded = layer.to_dense()
    assert type(folded) is keras.layers.Dense
    np.testing.assert_allclose(folded(x), layer(x), atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(layer.effective_kernel(), folded.kernel.numpy(), atol=1e-6)


def test_shared_bases_are_one_variable(tmp_path):
    p, q = _orthogonal(IN, 1), _orthogonal(OUT, 2)
    inputs = keras.Input((IN,))
    first = keras_sce.SparseGradDense.from_dense(_dense(seed=1), p, q, num_selected=3, name="a")
    second = keras_sce.SparseGradDense.from_dense(
        _dense(seed=2), p.copy(), q, num_selected=3, name="b"
    )
    third = keras_sce.SparseGradDense(OUT, sparsegrad.shared_basis(p), q, num_selected=3)
    assert first.input_basis is second.input_basis is third.input_basis
    assert first.output_basis is second.output_basis
    model = keras.Model(inputs, [first(inputs), second(inputs), third(inputs)])
    ids = [id(w) for w in model.weights]
    assert len(ids) == len(set(ids)) == 3 * 2 + 2  # kernels, biases, one P, one Q
    path = str(tmp_path / "shared.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    layers = [layer for layer in loaded.layers if isinstance(layer, keras_sce.SparseGradDense)]
    assert layers[0].input_basis is layers[1].input_basis is layers[2].input_basis
    assert len(loaded.weights) == len(model.weights)
    x = _inputs((4, IN))
    for a, b in zip(model(x), loaded(x), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("support", [False, True], ids=["full", "support"])
def test_keras_round_trip_and_config(tmp_path, support):
    kwargs = {"support": np.arange(0, IN * OUT, 3)} if support else {}
    layer = keras_sce.SparseGradDense.from_dense(
        _dense(activation="relu"), _orthogonal(IN, 1), None, num_selected=4, **kwargs
    )
    config = layer.get_config()
    clone = keras_sce.SparseGradDense.from_config(config)
    assert clone.get_config() == config
    inputs = keras.Input((2, IN))
    model = keras.Sequential([inputs, layer])
    path = str(tmp_path / "layer.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = _inputs((3, 2, IN))
    np.testing.assert_array_equal(loaded(x), model(x))
    restored = loaded.layers[-1]
    assert restored.k == 4 and restored.output_basis is None
    if support:
        np.testing.assert_array_equal(restored.support.numpy(), np.arange(0, IN * OUT, 3))


def test_fit_under_xla():
    p, q = _orthogonal(IN, 1), _orthogonal(OUT, 2)
    inputs = keras.Input((3, IN))
    hidden = keras.layers.Dense(IN, activation="relu")(inputs)
    outputs = keras_sce.SparseGradDense(OUT, p, q, num_selected=6)(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=sparsegrad.SparseGradOptimizer(learning_rate=0.02),
        loss="mse",
        jit_compile=True,
    )
    x, y = _inputs((16, 3, IN)), _inputs((16, 3, OUT), seed=5)
    history = model.fit(x, y, epochs=8, batch_size=8, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_mixed_precision_keeps_float32_bases_and_kernel_gradient():
    dense = _dense()
    p, q = _orthogonal(IN, 1), _orthogonal(OUT, 2)
    reference = keras_sce.SparseGradDense.from_dense(dense, p, q, num_selected=IN * OUT)
    x = _inputs((4, IN))
    expected = reference(x).numpy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    layer = keras_sce.SparseGradDense(OUT, p, q, num_selected=IN * OUT)
    layer.build((None, IN))
    layer.kernel.assign(reference.kernel)
    layer.bias.assign(reference.bias)
    assert layer.input_basis.dtype == layer.kernel.dtype == "float32"
    with tf.GradientTape() as tape:
        y = layer(x)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
    assert y.dtype == tf.float16
    grad = tape.gradient(loss, layer.kernel)
    assert grad.dtype == tf.float32
    # Documented tolerance of the float16 compute path: ~1e-3 relative.
    np.testing.assert_allclose(y.numpy().astype(np.float32), expected, atol=5e-3, rtol=5e-3)
    with tf.GradientTape() as tape:
        loss32 = tf.reduce_sum(reference(x) ** 2)
    np.testing.assert_allclose(
        grad.numpy(), tape.gradient(loss32, reference.kernel).numpy(), atol=2e-2, rtol=1e-2
    )


def test_mixed_precision_fit_under_xla():
    keras.mixed_precision.set_global_policy("mixed_float16")
    inputs = keras.Input((IN,))
    outputs = keras_sce.SparseGradDense(OUT, _orthogonal(IN, 1), num_selected=5)(inputs)
    model = keras.Model(inputs, keras.layers.Activation("linear", dtype="float32")(outputs))
    model.compile(
        optimizer=sparsegrad.SparseGradOptimizer(learning_rate=0.01), loss="mse", jit_compile=True
    )
    kernel = model.layers[1].kernel
    before = kernel.numpy().copy()
    model.fit(_inputs((8, IN)), _inputs((8, OUT), seed=2), epochs=2, batch_size=4, verbose=0)
    after = kernel.numpy()
    assert np.all(np.isfinite(after)) and not np.array_equal(before, after)


# ----------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input_basis": np.ones((IN, IN), np.float32)}, "orthogonal"),
        ({"output_basis": np.eye(OUT, dtype=np.float32) * 2}, "orthogonal"),
        ({"input_basis": np.eye(IN + 1, dtype=np.float32)}, r"shape \(5, 5\)"),
        ({"output_basis": np.eye(IN, dtype=np.float32)}, r"shape \(7, 7\)"),
        ({"input_basis": np.zeros((IN, IN + 1), np.float32)}, "square"),
        ({"num_selected": 0}, "positive int"),
        ({"num_selected": IN * OUT + 1}, r"\[1, 35\]"),
        ({"num_selected": 4, "support": [0, 1, 2]}, r"\[1, 3\]"),
        ({"density": 1.5}, r"\(0, 1\]"),
        ({"num_selected": 3, "density": 0.1}, "not both"),
        ({"support": [0, 0, 1]}, "distinct"),
        ({"support": [0, IN * OUT]}, r"\[0, 35\)"),
        ({"support": [[0, 1]]}, "1-D"),
        ({"selection": "random"}, "selection"),
        ({"kernel_regularizer": "l2"}, "kernel gradient dense"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layer = keras_sce.SparseGradDense(OUT, **kwargs)
        layer.build((None, IN))


def test_non_finite_basis_raises():
    p = _orthogonal(IN, 1)
    p[0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        keras_sce.SparseGradDense(OUT, p)


def test_from_dense_errors():
    with pytest.raises(TypeError, match="keras.layers.Dense"):
        keras_sce.SparseGradDense.from_dense(keras.layers.Embedding(3, 4))
    with pytest.raises(ValueError, match="built"):
        keras_sce.SparseGradDense.from_dense(keras.layers.Dense(3))
    with pytest.raises(ValueError, match=r"input_basis must have shape"):
        keras_sce.SparseGradDense.from_dense(_dense(), np.eye(IN + 1), None, num_selected=2)


def test_other_backend_is_refused(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(RuntimeError, match="TensorFlow backend"):
        keras_sce.SparseGradDense(OUT)
    with pytest.raises(RuntimeError, match="TensorFlow backend"):
        sparsegrad.SparseGradOptimizer()


def test_rank_one_input_is_rejected():
    layer = keras_sce.SparseGradDense(OUT, num_selected=2)
    with pytest.raises(ValueError):
        layer(np.zeros((IN,), np.float32))


def test_import_does_not_load_legacy_tf_keras():
    import subprocess
    import sys

    code = (
        "import sys, keras_sce; from keras_sce import sparsegrad; "
        "assert 'tf_keras' not in sys.modules, 'tf_keras imported'; "
        "assert keras_sce.SparseGradDense is keras_sce.layers.SparseGradDense"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
