"""Tests of keras_sce.sparsegrad basis estimation (streamed HOSVD) and supports."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_sce
from keras_sce import sparsegrad


def _orthogonal(n, rng):
    q, r = np.linalg.qr(rng.normal(size=(n, n)))
    return q * np.sign(np.diag(r))


def _structured_gradients(num=20, in_dim=48, out_dim=64, core=4, noise=0.02, seed=0):
    """G_t = U C_t Vᵀ + noise, with C_t supported on a small core block: the rotated
    gradient of the true bases is concentrated on core² entries."""
    rng = np.random.default_rng(seed)
    u, v = _orthogonal(in_dim, rng), _orthogonal(out_dim, rng)
    grads = []
    for _ in range(num):
        c = np.zeros((in_dim, out_dim))
        c[:core, :core] = rng.normal(size=(core, core)) * np.linspace(3, 1, core)[:, None]
        grads.append((u @ c @ v.T + noise * rng.normal(size=(in_dim, out_dim))).astype("f4"))
    return grads


def _top_fraction_energy(matrices, fraction=0.01):
    """Mean share of the squared Frobenius norm carried by the top `fraction` entries."""
    shares = []
    for m in matrices:
        e = np.sort(np.square(m, dtype=np.float64).ravel())[::-1]
        k = max(1, int(round(fraction * e.size)))
        shares.append(e[:k].sum() / e.sum())
    return float(np.mean(shares))


def test_accumulator_matches_hosvd_of_the_stack():
    grads = _structured_gradients(num=6, in_dim=9, out_dim=11, core=3, noise=0.3)
    acc = sparsegrad.BasisAccumulator()
    acc.update("g", grads[:2])  # a list
    acc.update("g", np.stack(grads[2:5]))  # a stack
    acc.update("g", grads[5])  # one matrix
    bases = acc.bases()["g"]
    stack = np.stack(grads).astype(np.float64)  # [N, in, out]
    # Left singular vectors of the input-mode and output-mode unfoldings.
    u = np.linalg.svd(np.transpose(stack, (1, 0, 2)).reshape(9, -1))[0]
    v = np.linalg.svd(np.transpose(stack, (2, 0, 1)).reshape(11, -1))[0]
    for got, ref in ((bases.input_basis, u), (bases.output_basis, v)):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got.T @ got, np.eye(got.shape[0]), atol=1e-5)
        np.testing.assert_allclose(np.abs(got), np.abs(ref), atol=1e-4)  # equal up to sign
        rows = np.argmax(np.abs(got), axis=0)
        assert np.all(got[rows, np.arange(got.shape[1])] > 0)  # sign convention
    np.testing.assert_allclose(
        bases.input_spectrum,
        np.linalg.svd(np.transpose(stack, (1, 0, 2)).reshape(9, -1))[1] ** 2,
        rtol=1e-4,
    )
    assert np.all(np.diff(bases.output_spectrum) <= 0)
    assert bases.num_gradients == 6 and bases.orientation == "consistent"


def test_sign_convention_makes_bases_reproducible():
    grads = _structured_gradients(num=5, in_dim=10, out_dim=12, noise=0.5)
    a = sparsegrad.estimate_bases([{"g": g} for g in grads])["g"]
    b = sparsegrad.estimate_bases([{"g": -g} for g in reversed(grads)])["g"]
    np.testing.assert_allclose(a.input_basis, b.input_basis, atol=1e-5)
    np.testing.assert_allclose(a.output_basis, b.output_basis, atol=1e-5)
    flipped = sparsegrad.fix_signs(-a.input_basis)
    np.testing.assert_allclose(flipped, a.input_basis, atol=0)


def test_default_orientation_concentrates_gradient_energy():
    grads = _structured_gradients(num=20)
    stream = [{"up": grads[:10], "down": [g for g in grads[10:]]}]  # one step, two groups
    consistent = sparsegrad.estimate_bases(stream + [{"up": grads[10:]}])["up"]
    paper = sparsegrad.estimate_bases(stream + [{"up": grads[10:]}], orientation="paper")["up"]
    np.testing.assert_allclose(paper.input_basis, consistent.input_basis.T)
    np.testing.assert_allclose(paper.output_basis, consistent.output_basis)

    def rotate(b):
        return [b.input_basis.T.astype("f8") @ g @ b.output_basis.astype("f8") for g in grads]

    original = _top_fraction_energy(grads)
    default = _top_fraction_energy(rotate(consistent))
    reproduced = _top_fraction_energy(rotate(paper))
    assert default > 0.9, default
    assert default > original + 0.5, (default, original)
    assert default > reproduced + 0.3, (default, reproduced)


def _mlp(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    up1 = keras.layers.Dense(8, activation="relu", name="up1")
    down1 = keras.layers.Dense(6, name="down1")
    up2 = keras.layers.Dense(8, activation="relu", name="up2")
    down2 = keras.layers.Dense(6, name="down2")
    head = keras.layers.Dense(3, name="head")
    h = down1(up1(inputs)) + inputs
    h = down2(up2(h)) + h
    model = keras.Model(inputs, head(h))
    groups = {"up": [up1, up2], "down": [down1, down2]}
    return model, groups


def _data(num_batches=4, batch=5, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (rng.normal(size=(batch, 6)).astype("f4"), rng.integers(0, 3, size=(batch,)))
        for _ in range(num_batches)
    ]


def test_model_mode_equals_gradient_mode_and_leaves_the_model_untouched():
    model, groups = _mlp()
    data = _data()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    before = [w.numpy().copy() for w in model.weights]
    bases = sparsegrad.estimate_bases(model=model, data=data, loss=loss, groups=groups, num_steps=3)
    for w, b in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(w.numpy(), b)
    # Oracle: the same gradients computed by hand.
    stream = []
    for x, y in data[:3]:
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        kernels = [d.kernel for d in groups["up"] + groups["down"]]
        g = [t.numpy() for t in tape.gradient(value, kernels)]
        stream.append({"up": g[:2], "down": g[2:]})
    oracle = sparsegrad.estimate_bases(stream)
    for name in ("up", "down"):
        assert bases[name].num_gradients == 6
        np.testing.assert_allclose(bases[name].input_basis, oracle[name].input_basis, atol=1e-5)
        np.testing.assert_allclose(bases[name].output_basis, oracle[name].output_basis, atol=1e-5)
    assert bases["up"].input_basis.shape == (6, 6)
    assert bases["up"].output_basis.shape == (8, 8)


def test_model_mode_with_optimizer_trains():
    model, groups = _mlp()
    before = model.get_layer("head").kernel.numpy().copy()
    sparsegrad.estimate_bases(
        model=model,
        data=_data(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        groups=groups,
        num_steps=2,
        optimizer=keras.optimizers.SGD(0.1),
    )
    assert not np.array_equal(before, model.get_layer("head").kernel.numpy())


def test_estimate_support_keeps_the_most_energetic_rotated_entries():
    grads = _structured_gradients(num=6, in_dim=12, out_dim=10, core=2, noise=0.1)
    stream = [{"g": [grads[i], grads[i + 3]]} for i in range(3)]  # two layers, three steps
    bases = sparsegrad.estimate_bases(stream)
    supports = sparsegrad.estimate_support(stream, bases=bases, support_size=9)
    p = bases["g"].input_basis.astype("f8")
    q = bases["g"].output_basis.astype("f8")
    for layer, rows in enumerate(([0, 1, 2], [3, 4, 5])):
        energy = sum(np.square(p.T @ grads[i] @ q) for i in rows)
        oracle = np.sort(np.argsort(-energy.ravel())[:9])
        np.testing.assert_array_equal(supports["g"][layer], oracle)
        assert supports["g"][layer].dtype == np.int32


def test_estimate_support_model_mode_builds_layers():
    model, groups = _mlp()
    data = _data()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    kwargs = dict(model=model, data=data, loss=loss, groups=groups, num_steps=2)
    bases = sparsegrad.estimate_bases(**kwargs)
    sizes = {"up": 12, "down": 10}
    supports = sparsegrad.estimate_support(bases=bases, support_size=sizes, **kwargs)
    layer = keras_sce.SparseGradDense.from_dense(
        groups["up"][1],
        bases["up"].input_basis,
        bases["up"].output_basis,
        num_selected=4,
        support=supports["up"][1],
    )
    assert layer.support.shape == (12,) and len(supports["down"][0]) == 10


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sparsegrad.estimate_bases([]), "No gradients"),
        (lambda: sparsegrad.estimate_bases([{"g": np.ones(3)}]), r"\[in, out\]"),
        (
            lambda: sparsegrad.estimate_bases([{"g": np.ones((2, 3))}, {"g": np.ones((3, 3))}]),
            "mixes gradient shapes",
        ),
        (lambda: sparsegrad.estimate_bases([{"g": np.full((2, 2), np.nan)}]), "non-finite"),
        (
            lambda: sparsegrad.estimate_bases([{"g": np.ones((2, 2))}], orientation="rows"),
            "orientation",
        ),
        (lambda: sparsegrad.estimate_bases(), "Pass either"),
        (lambda: sparsegrad.shared_basis(np.ones((3, 3))), "orthogonal"),
        (
            lambda: sparsegrad.shared_basis(keras.Variable(np.eye(3), trainable=True)),
            "non-trainable",
        ),
        (lambda: sparsegrad.lora_equivalent_budget(0, 3, 4), "rank"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_estimate_support_errors():
    stream = [{"g": [np.eye(3, dtype="f4")]}]
    bases = sparsegrad.estimate_bases(stream)
    with pytest.raises(ValueError, match="support_size"):
        sparsegrad.estimate_support(stream, bases=bases, support_size=10)
    with pytest.raises(ValueError, match="No bases"):
        sparsegrad.estimate_support([{"h": [np.eye(3)]}], bases=bases, support_size=2)
