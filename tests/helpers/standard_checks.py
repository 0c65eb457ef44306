"""The standard checks every keras_sce loss and layer passes, in one place.

After keras-hub's layer tests: a symbolic call (Keras' shape inference), an eager
call, one ``fit`` step under XLA, the ``mixed_float16`` policy, and serialization
(``get_config`` / ``from_config`` and a ``.keras`` save and load with identical
outputs). A check that does not apply to an object is named in ``skip`` with the
reason; the test then reports it as skipped with that reason, never silently.

Usage, one test case per check::

    @pytest.mark.parametrize("check", LOSS_CHECKS)
    def test_my_loss(check):
        run_loss_test(lambda items: MyLoss(items, seed=1), check=check)
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

LOSS_CHECKS = ("symbolic", "eager", "sample_weight", "xla_fit", "mixed_precision",
               "serialization")
LAYER_CHECKS = ("symbolic", "eager", "xla_fit", "mixed_precision", "serialization")

NUM_ITEMS, DIM, LENGTH, BATCH = 40, 8, 5, 16


def _selected(checks, check, skip):
    """The checks to run: ``check`` (None: all) less the ones ``skip`` names, with reasons."""
    skip = dict(skip or {})
    unknown = sorted(set(skip) - set(checks)) + ([] if check in (None, *checks) else [check])
    if unknown:
        raise ValueError(f"Unknown check(s) {unknown}; the checks are {checks}.")
    for name, reason in skip.items():
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(f"skip[{name!r}] needs a reason (a non-empty string).")
    if check is not None and check in skip:
        pytest.skip(f"{check} does not apply: {skip[check]}")
    if check is None:
        for name, reason in skip.items():  # all checks in one test: say what is left out
            warnings.warn(f"standard check {name!r} not run: {reason}", UserWarning, stacklevel=3)
    return [name for name in (checks if check is None else (check,)) if name not in skip]


class _Float16Policy:
    """``mixed_float16`` inside the block, float32 again after it."""

    def __enter__(self):
        keras.mixed_precision.set_global_policy("mixed_float16")

    def __exit__(self, *exc):
        keras.mixed_precision.set_global_policy("float32")


def _weights(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


def _changed(before, variables):
    return any(not np.array_equal(b, a) for b, a in zip(before, _weights(variables), strict=True))


# -- losses ----------------------------------------------------------------------------
def _loss_model():
    """Item ids ``[B, L]`` -> hidden states ``[B, L, d]``, with its item table layer."""
    items = keras.layers.Embedding(NUM_ITEMS, DIM, name="items")
    inputs = keras.Input((LENGTH,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Dense(DIM, name="projection")(items(inputs)))
    return model, items


def _loss_data(seed=0):
    rng = np.random.default_rng(seed)
    inputs = rng.integers(1, NUM_ITEMS, size=(BATCH, LENGTH)).astype("int32")
    targets = rng.integers(0, NUM_ITEMS, size=(BATCH, LENGTH)).astype("int32")  # 0: padding
    return inputs, targets


def _scalar(value):
    assert value.shape == () and value.dtype == tf.float32, (value.shape, value.dtype)
    value = float(value)
    assert np.isfinite(value), value
    return value


def run_loss_test(make_loss, *, check=None, skip=None):
    """Runs the standard checks of a loss of (item ids, hidden states) against a table.

    Args:
        make_loss: ``make_loss(item_embedding_layer)`` -> a fresh loss. Two losses
            it makes must draw the same random numbers (pass a ``seed``).
        check: one of ``LOSS_CHECKS``; None runs all of them.
        skip: ``{check: reason}`` for the checks that do not apply.

    Raises:
        AssertionError: a check fails.
        ValueError: an unknown check, or a skipped check without a reason.
    """
    for name in _selected(LOSS_CHECKS, check, skip):
        keras.utils.set_random_seed(0)
        _LOSS_CHECKS[name](make_loss)


def _loss_symbolic(make_loss):
    from keras.src.backend import compute_output_spec  # what compile's shape pass uses

    model, items = _loss_model()
    loss = make_loss(items)
    spec = compute_output_spec(
        loss, keras.KerasTensor((None, LENGTH), "int32"),
        keras.KerasTensor((None, LENGTH, DIM), "float32"),
    )
    assert tuple(spec.shape) == () and spec.dtype == "float32", spec


def _loss_eager(make_loss):
    model, items = _loss_model()
    inputs, targets = _loss_data()
    with tf.GradientTape() as tape:
        value = make_loss(items)(targets, model(inputs))
    assert _scalar(value) > 0.0
    grad = tf.convert_to_tensor(tape.gradient(value, items.embeddings.value)).numpy()
    assert np.all(np.isfinite(grad)) and np.any(grad), "the item table gets no gradient"


def _loss_sample_weight(make_loss):
    model, items = _loss_model()
    inputs, targets = _loss_data()
    hidden = model(inputs)
    if not make_loss(items).supports_sample_weight:
        raise AssertionError(
            "this loss takes no sample weights: name 'sample_weight' in `skip`, with the reason"
        )
    plain = _scalar(make_loss(items)(targets, hidden))
    ones = _scalar(make_loss(items)(targets, hidden, sample_weight=np.ones(targets.shape)))
    np.testing.assert_allclose(ones, plain, rtol=1e-6)
    ramp = np.linspace(0.0, 2.0, targets.size).reshape(targets.shape).astype("float32")
    assert _scalar(make_loss(items)(targets, hidden, sample_weight=ramp)) != plain


def _fit_loss_model(make_loss, jit_compile):
    model, items = _loss_model()
    model.compile(keras.optimizers.Adam(0.01), loss=make_loss(items), jit_compile=jit_compile)
    before = _weights([items.embeddings])
    history = model.fit(*_loss_data(), batch_size=BATCH, epochs=1, verbose=0)  # one step
    assert np.isfinite(history.history["loss"][0]), history.history
    assert _changed(before, [items.embeddings]), "one step did not train the item table"
    return model, items


def _loss_xla_fit(make_loss):
    _fit_loss_model(make_loss, jit_compile=True)


def _loss_mixed_precision(make_loss):
    with _Float16Policy():
        model, items = _loss_model()
        inputs, targets = _loss_data()
        hidden = model(inputs)
        assert hidden.dtype == tf.float16, hidden.dtype
        _scalar(make_loss(items)(targets, hidden))
        _fit_loss_model(make_loss, jit_compile=False)


def _loss_serialization(make_loss):
    import tempfile

    import keras_sce

    _, items = _loss_model()
    loss = make_loss(items)
    config = loss.get_config()
    assert type(loss).from_config(config).get_config() == config
    assert type(keras.losses.deserialize(keras.losses.serialize(loss))) is type(loss)

    model, items = _fit_loss_model(make_loss, jit_compile=False)
    inputs, targets = _loss_data(seed=1)
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/model.keras"
        model.save(path)
        loaded = keras_sce.load_model(path)
    hidden = model.predict(inputs, verbose=0)
    np.testing.assert_array_equal(loaded.predict(inputs, verbose=0), hidden)
    assert type(loaded.loss) is type(model.loss)
    assert loaded.loss.item_embeddings.path == items.embeddings.path
    # The same table and the same place in the stream of seeds: the same value.
    np.testing.assert_allclose(
        _scalar(loaded.loss(targets, hidden)), _scalar(model.loss(targets, hidden)), rtol=1e-6
    )


# -- layers ----------------------------------------------------------------------------
def run_layer_test(make_layer, inputs, *, expected_output_shape, make_optimizer=None,
                   check=None, skip=None):
    """Runs the standard checks of a Keras layer (or a model used as one).

    Args:
        make_layer: ``make_layer()`` -> a fresh layer.
        inputs: one batch: an array, or a tuple of arrays passed positionally.
        expected_output_shape: the output shape with ``None`` for the batch axis.
        make_optimizer: ``make_optimizer()`` -> the optimizer of the ``fit`` step
            (default: SGD with learning rate 0.1).
        check: one of ``LAYER_CHECKS``; None runs all of them.
        skip: ``{check: reason}`` for the checks that do not apply.

    Raises:
        AssertionError: a check fails.
        ValueError: an unknown check, or a skipped check without a reason.
    """
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    expected = tuple(expected_output_shape)
    make_optimizer = make_optimizer or (lambda: keras.optimizers.SGD(0.1))
    for name in _selected(LAYER_CHECKS, check, skip):
        keras.utils.set_random_seed(0)
        _LAYER_CHECKS[name](make_layer, inputs, expected, make_optimizer)


def _functional(layer, inputs, cast_to_float32=False):
    symbolic = [keras.Input(x.shape[1:], dtype=x.dtype.name) for x in inputs]
    outputs = layer(*symbolic)
    if cast_to_float32:
        outputs = keras.layers.Activation("linear", dtype="float32")(outputs)
    return keras.Model(_feed(symbolic), outputs)


def _feed(inputs):
    """What a functional model of these inputs is called with."""
    return inputs[0] if len(inputs) == 1 else list(inputs)


def _fit_one_step(model, inputs, make_optimizer, jit_compile):
    model.compile(make_optimizer(), loss="mse", jit_compile=jit_compile)
    before = _weights(model.trainable_variables)
    target = np.ones(model(_feed(inputs)).shape, "float32")
    history = model.fit(_feed(inputs), target, batch_size=len(inputs[0]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0]), history.history
    assert _changed(before, model.trainable_variables), "one step changed no weight"


def _layer_symbolic(make_layer, inputs, expected, make_optimizer):
    outputs = make_layer()(*[keras.KerasTensor((None, *x.shape[1:]), x.dtype.name)
                             for x in inputs])
    assert isinstance(outputs, keras.KerasTensor), type(outputs)
    assert tuple(outputs.shape) == expected, (outputs.shape, expected)


def _layer_eager(make_layer, inputs, expected, make_optimizer):
    outputs = keras.ops.convert_to_numpy(make_layer()(*inputs))
    assert outputs.shape == (len(inputs[0]), *expected[1:]), outputs.shape
    assert np.all(np.isfinite(outputs))


def _layer_xla_fit(make_layer, inputs, expected, make_optimizer):
    _fit_one_step(_functional(make_layer(), inputs), inputs, make_optimizer, jit_compile=True)


def _layer_mixed_precision(make_layer, inputs, expected, make_optimizer):
    with _Float16Policy():
        layer = make_layer()
        outputs = layer(*inputs)
        assert outputs.dtype == tf.float16, outputs.dtype
        assert all(v.dtype == "float32" for v in layer.variables), [
            (v.path, v.dtype) for v in layer.variables if v.dtype != "float32"
        ]
        model = _functional(make_layer(), inputs, cast_to_float32=True)
        _fit_one_step(model, inputs, make_optimizer, jit_compile=False)


def _layer_serialization(make_layer, inputs, expected, make_optimizer):
    import tempfile

    layer = make_layer()
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config
    model = _functional(layer, inputs)
    with tempfile.TemporaryDirectory() as folder:
        model.save(f"{folder}/layer.keras")
        loaded = keras.saving.load_model(f"{folder}/layer.keras")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(_feed(inputs))),
        keras.ops.convert_to_numpy(model(_feed(inputs))),
    )


_LOSS_CHECKS = {
    "symbolic": _loss_symbolic,
    "eager": _loss_eager,
    "sample_weight": _loss_sample_weight,
    "xla_fit": _loss_xla_fit,
    "mixed_precision": _loss_mixed_precision,
    "serialization": _loss_serialization,
}
_LAYER_CHECKS = {
    "symbolic": _layer_symbolic,
    "eager": _layer_eager,
    "xla_fit": _layer_xla_fit,
    "mixed_precision": _layer_mixed_precision,
    "serialization": _layer_serialization,
}
assert tuple(_LOSS_CHECKS) == LOSS_CHECKS and tuple(_LAYER_CHECKS) == LAYER_CHECKS
