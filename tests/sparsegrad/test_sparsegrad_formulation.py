"""Where SparseGrad applies its bases (token rows or kernel) must not change the result."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_sce
from keras_sce import sparsegrad
from keras_sce.sparsegrad.core import FORMULATIONS


def _orthogonal(n, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


# (in, out, tokens) -> the "auto" plan (input basis on kernel, output basis on kernel).
CASES = {
    "tokens_on_both": ((4, 12, 2), (False, False)),
    "q_on_kernel": ((4, 12, 8), (False, True)),
    "p_on_kernel": ((12, 4, 8), (True, False)),
    "both_on_kernel": ((4, 12, 16), (True, True)),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_auto_plan_follows_the_cost_rule(case):
    (a, b, t), expected = CASES[case]
    assert sparsegrad.rotation_plan(t, a, b) == expected
    assert sparsegrad.rotation_plan(t, a, b, "activation") == (False, False)
    assert sparsegrad.rotation_plan(t, a, b, "weight") == (True, True)
    dynamic = sparsegrad.rotation_plan(tf.constant(t), a, b)
    assert tuple(bool(v) for v in dynamic) == expected


def test_unknown_formulation_is_rejected():
    with pytest.raises(ValueError, match="formulation must be one of"):
        sparsegrad.rotation_plan(8, 4, 4, "tokens")
    with pytest.raises(ValueError, match="formulation must be one of"):
        keras_sce.SparseGradDense(4, formulation="kernel")


def _oracle(x, kernel, p, q, g, k):
    """float64 NumPy: output, input gradient, top-k of Pᵀ (xᵀ g) Q."""
    x, kernel, p, q, g = (np.asarray(v, np.float64) for v in (x, kernel, p, q, g))
    y = x @ p @ kernel @ q.T
    dx = g @ q @ kernel.T @ p.T
    g_hat = p.T @ (x.T @ g) @ q
    keep = np.argsort(-np.abs(g_hat).ravel(), kind="stable")[:k]
    sparse = np.zeros(g_hat.size)
    sparse[keep] = g_hat.ravel()[keep]
    return y, dx, sparse.reshape(g_hat.shape)


def _run(x, kernel, p, q, g, k, formulation, mode):
    def step(x, kernel):
        with tf.GradientTape() as tape:
            tape.watch([x, kernel])
            y = sparsegrad.sparse_grad_matmul(
                x, kernel, p, q, num_selected=k, formulation=formulation
            )
        return [y] + tape.gradient(y, [x, kernel], output_gradients=g)

    if mode == "eager":
        return step(x, kernel)
    signature = None
    if mode == "dynamic_tokens":  # the token count is unknown when tracing: tf.cond plan
        signature = [tf.TensorSpec([None, x.shape[1]]), tf.TensorSpec(kernel.shape)]
    fn = tf.function(step, jit_compile=mode == "xla", input_signature=signature)
    return fn(x, kernel)


@pytest.mark.parametrize("mode", ["eager", "graph", "xla", "dynamic_tokens"])
@pytest.mark.parametrize("formulation", FORMULATIONS)
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_every_formulation_gives_the_same_step(case, formulation, mode):
    (a, b, t), _ = CASES[case]
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(t, a)), tf.float32)
    g = tf.constant(rng.normal(size=(t, b)), tf.float32)
    kernel = tf.constant(rng.normal(size=(a, b)), tf.float32)
    p, q = tf.constant(_orthogonal(a, 1)), tf.constant(_orthogonal(b, 2))
    k = 7
    y, dx, g_kernel = (v.numpy() for v in _run(x, kernel, p, q, g, k, formulation, mode))
    y_ref, dx_ref, g_ref = _oracle(x, kernel, p, q, g, k)
    np.testing.assert_allclose(y, y_ref, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(dx, dx_ref, atol=1e-4, rtol=1e-4)
    # Same selected entries, same values.
    np.testing.assert_array_equal(g_kernel != 0, g_ref != 0)
    np.testing.assert_allclose(g_kernel, g_ref, atol=1e-4, rtol=1e-4)
    # And the same as the activation-space form (the textbook one), entry by entry.
    _, dx_act, g_act = (v.numpy() for v in _run(x, kernel, p, q, g, k, "activation", "eager"))
    np.testing.assert_array_equal(g_kernel != 0, g_act != 0)
    np.testing.assert_allclose(dx, dx_act, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("formulation", ["auto", "weight"])
def test_training_matches_the_activation_form(formulation):
    """Three lazy-Adam steps through a layer: same kernel whatever the formulation."""
    rng = np.random.default_rng(0)
    a, b = 6, 10
    dense = keras.layers.Dense(b, kernel_initializer=keras.initializers.RandomNormal(seed=0))
    dense.build((None, a))
    p, q = _orthogonal(a, 4), _orthogonal(b, 5)
    x = rng.normal(size=(4, 5, a)).astype("float32")  # 20 tokens: both bases on the kernel
    target = rng.normal(size=(4, 5, b)).astype("float32")
    kernels = {}
    for name in ("activation", formulation):
        layer = keras_sce.SparseGradDense.from_dense(dense, p, q, num_selected=9, formulation=name)
        optimizer = sparsegrad.SparseGradOptimizer(learning_rate=1e-2)
        for _ in range(3):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(layer(x) - target))
            variables = [layer.kernel, layer.bias]
            optimizer.apply(tape.gradient(loss, variables), variables)
        kernels[name] = layer.kernel.numpy()
    changed = kernels["activation"] != dense.kernel.numpy()
    np.testing.assert_array_equal(kernels[formulation] != dense.kernel.numpy(), changed)
    np.testing.assert_allclose(kernels[formulation], kernels["activation"], atol=1e-5)


def test_formulation_survives_serialization():
    layer = keras_sce.SparseGradDense(3, num_selected=2, formulation="weight")
    clone = keras_sce.SparseGradDense.from_config(layer.get_config())
    assert clone.formulation == "weight"


def test_auto_selection_is_approx_without_a_tpu():
    expected = "top_k" if tf.config.list_logical_devices("TPU") else "approx"
    assert sparsegrad.resolve_selection() == expected
    assert sparsegrad.resolve_selection("top_k") == "top_k"
    assert keras_sce.SparseGradDense(3).selection == "auto"
    with pytest.raises(ValueError, match="selection must be one of"):
        sparsegrad.resolve_selection("sort")


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_auto_selection_keeps_the_exact_top_k(jit):
    gradient = tf.constant(np.random.default_rng(5).normal(size=(24, 40)), tf.float32)
    for k in (1, 37, 960):
        select = tf.function(
            lambda g, k=k, mode="auto": sparsegrad.select_top_k(g, k, selection=mode),
            jit_compile=jit,
        )
        exact = tf.function(
            lambda g, k=k: sparsegrad.select_top_k(g, k, selection="top_k"), jit_compile=jit
        )
        np.testing.assert_array_equal(select(gradient).numpy(), exact(gradient).numpy())
