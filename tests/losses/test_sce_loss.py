"""SCELoss: Keras integration (fit/evaluate/custom train_step, XLA, serialization, errors)."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_sce
from keras_sce import ops

C, D, L = 300, 16, 8


def _model(num_items=C, dim=D, length=L):
    items = keras.layers.Embedding(num_items, dim, name="items")
    inputs = keras.Input((length,), dtype="int32")
    x = items(inputs)
    x = keras.layers.Dense(dim, name="mix")(x)
    return keras.Model(inputs, x), items


def _data(n=256, seed=0, num_items=C):
    # A learnable task: the target is a fixed function of the current item.
    rng = np.random.default_rng(seed)
    x = rng.integers(1, num_items, size=(n, L))
    y = (x * 7 + 3) % (num_items - 1) + 1
    y[:, :2] = 0  # some padding targets
    return x.astype("int32"), y.astype("int64")


def test_equals_ops_function_for_same_seed():
    model, items = _model()
    x, y = _data(16)
    hidden = model(x)
    loss = keras_sce.SCELoss(items, bucket_size_y=64, seed=4)
    value = loss(y, hidden)
    expected = ops.scalable_cross_entropy(hidden, y, items.embeddings.value, bucket_size_y=64,
                                          seed=ops.SeedStream(4).next())
    np.testing.assert_allclose(value.numpy(), expected.numpy(), rtol=1e-6)


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_fit_lowers_full_ce_on_held_out_data_and_trains_the_table(jit_compile):
    keras.utils.set_random_seed(0)
    model, items = _model()
    x, y = _data(512, seed=0)
    x_val, y_val = _data(128, seed=1)

    def held_out_ce():
        return float(ops.full_cross_entropy(model(x_val), y_val, items.embeddings.value))

    before_ce = held_out_ce()
    table_before = items.embeddings.numpy().copy()
    model.compile(keras.optimizers.Adam(0.01),
                  loss=keras_sce.SCELoss(items, bucket_size_y=32, seed=1),
                  jit_compile=jit_compile)
    history = model.fit(x, y, batch_size=64, epochs=4, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert held_out_ce() < before_ce - 0.5
    assert np.isfinite(model.evaluate(x_val, y_val, verbose=0))
    changed = np.abs(items.embeddings.numpy() - table_before).sum(1) > 0
    assert changed[1:].mean() > 0.9 and not changed[0]  # padding row never trained


def test_custom_train_step_with_sparse_table_gradient():
    model, items = _model()
    loss_fn = keras_sce.SCELoss(items, bucket_size_y=32, seed=0)
    x, y = _data(32)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x))
    grads = tape.gradient(loss, [v.value for v in model.trainable_variables])
    table_grad = grads[[v.path for v in model.trainable_variables].index(items.embeddings.path)]
    assert isinstance(table_grad, tf.IndexedSlices)
    before = items.embeddings.numpy().copy()
    keras.optimizers.SGD(0.1).apply_gradients(zip(grads, model.trainable_variables, strict=True))
    changed = np.abs(items.embeddings.numpy() - before).sum(1) > 0
    touched = np.zeros_like(changed)
    touched[table_grad.indices.numpy()] = True
    assert not np.any(changed & ~touched)  # only gathered rows move...
    assert changed.sum() > len(np.unique(np.concatenate([x.ravel(), y.ravel()])))  # negatives too


def test_rank2_targets_and_sample_weight():
    items = keras.layers.Embedding(C, D)
    inputs = keras.Input((L,), dtype="int32")
    hidden = keras.layers.Dense(D)(keras.layers.GlobalAveragePooling1D()(items(inputs)))
    model = keras.Model(inputs, hidden)
    x, y = _data(64)
    target = y[:, -1]
    w = np.linspace(0, 1, 64).astype("float32")
    loss = keras_sce.SCELoss(items, num_buckets=1, bucket_size_x=64, bucket_size_y=C - 1)
    expected = ops.full_cross_entropy(model(x), target, items.embeddings.value, sample_weight=w)
    np.testing.assert_allclose(loss(target, model(x), sample_weight=w).numpy(),
                               expected.numpy(), rtol=1e-5)
    model.compile("adam", loss=loss)
    history = model.fit(x, target, sample_weight=w, batch_size=64, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_raw_tf_variable_table_saves_with_a_warning_and_loads_unbound(tmp_path):
    table = tf.Variable(tf.random.normal([C, D]))
    loss = keras_sce.SCELoss(table, bucket_size_y=16)
    with pytest.warns(UserWarning, match="without a Keras path"):
        config = loss.get_config()
    assert config["item_embeddings"] is None
    model, _ = _model()
    restored = keras_sce.SCELoss.from_config(config)
    with pytest.warns(UserWarning, match="stays unbound"):
        restored.bind(model)
    assert restored.item_embeddings is None


def test_mixed_bfloat16_gives_finite_float32_loss():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model, items = _model()
    x, y = _data(32)
    hidden = model(x)
    assert hidden.dtype == tf.bfloat16
    loss = keras_sce.SCELoss(items, bucket_size_y=32, seed=0)(y, hidden)
    assert loss.dtype == tf.float32 and np.isfinite(loss.numpy())
    model.compile("adam", loss=keras_sce.SCELoss(items, bucket_size_y=32))
    assert np.isfinite(model.fit(x, y, epochs=1, verbose=0).history["loss"][0])


def test_get_config_round_trip_and_unbound_error():
    _, items = _model()
    items.build((None,))
    loss = keras_sce.SCELoss(items, num_buckets=5, bucket_size_x=7, bucket_size_y=33,
                             mix_x=True, padding_id=None, chunk_size=128, seed=9)
    config = loss.get_config()
    assert config["item_embeddings"] == items.embeddings.path
    clone = keras_sce.SCELoss.from_config(config)
    for key in ("num_buckets", "bucket_size_x", "bucket_size_y", "mix_x", "padding_id",
                "chunk_size", "seed"):
        assert getattr(clone, key) == getattr(loss, key)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, keras_sce.SCELoss)
    with pytest.raises(ValueError, match="not bound to an item table"):
        clone(np.ones((2, L), "int32"), np.ones((2, L, D), "float32"))


def test_keras_file_round_trip(tmp_path):
    model, items = _model()
    model.compile("adam", loss=keras_sce.SCELoss(items, bucket_size_y=32, seed=2))
    x, y = _data(64)
    model.fit(x, y, epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras_sce.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               rtol=1e-6)
    assert isinstance(loaded.loss, keras_sce.SCELoss)
    assert loaded.loss.item_embeddings.path == items.embeddings.path
    loaded.fit(x, y, epochs=1, verbose=0)  # trains again after reload
    # Plain keras.saving.load_model gives an unbound loss that says what to do.
    plain = keras.saving.load_model(path)
    with pytest.raises(ValueError, match="bind"):
        plain.fit(x, y, epochs=1, verbose=0)
    plain.loss.bind(plain)
    plain.fit(x, y, epochs=1, verbose=0)


def test_diagnostics():
    model, items = _model()
    x, y = _data(32)
    stats = keras_sce.SCELoss(items, num_buckets=2, bucket_size_x=4, bucket_size_y=16,
                              seed=0).diagnostics(y, model(x))
    valid = int((y != 0).sum())
    assert stats["num_valid_rows"].numpy() == valid
    assert 0 < stats["covered_fraction"].numpy() <= 8 / valid + 1e-6
    assert 1.0 <= stats["buckets_per_covered_row"].numpy() <= 2.0


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(bucket_size_y=0), ValueError, "bucket_size_y"),
        (dict(num_buckets=-1), ValueError, "num_buckets"),
        (dict(reduction="sum"), ValueError, "reduction"),
        (dict(padding_id=-2), ValueError, "padding_id"),
    ],
    ids=["b_y0", "nb_neg", "reduction", "padding"],
)
def test_constructor_errors(kwargs, error, match):
    _, items = _model()
    with pytest.raises(error, match=match):
        keras_sce.SCELoss(items, **kwargs)


def test_options_come_from_sce_options():
    import inspect

    from keras_sce.losses import SCEOptions

    parameters = inspect.signature(keras_sce.SCELoss.__init__).parameters
    assert {n: parameters[n].default for n in SCEOptions.names()} == SCEOptions.defaults()
    options = SCEOptions(bucket_size_y=np.int64(33), calibration=True, seed=4)
    assert options.bucket_size_y == 33 and type(options.bucket_size_y) is int
    loss = keras_sce.SCELoss(None, **options.get_config())
    assert {n: getattr(loss, n) for n in SCEOptions.names()} == options.get_config()
    with pytest.raises(TypeError, match="seed"):
        SCEOptions(seed="1")
    with pytest.raises(ValueError, match="chunk_size"):
        SCEOptions(chunk_size=0)


def test_rejects_detached_table_and_unknown_objects():
    with pytest.raises(TypeError, match="detached copy"):
        keras_sce.SCELoss(tf.zeros([10, 4]))
    with pytest.raises(TypeError, match="Embedding-like"):
        keras_sce.SCELoss("not a table".split())


def test_call_time_errors():
    model, items = _model()
    x, y = _data(8)
    hidden = model(x)
    loss = keras_sce.SCELoss(items, bucket_size_y=16)
    with pytest.raises(TypeError, match="integer"):
        loss(y.astype("float32"), hidden)
    with pytest.raises(ValueError, match="width"):
        loss(y, hidden[..., :4])
    with pytest.raises(tf.errors.InvalidArgumentError, match="outside"):
        loss(y + C, hidden)


def _run_python(code, env_extra):
    env = dict(os.environ, **env_extra)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))]
        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_non_tensorflow_backend_is_refused(monkeypatch):
    class TensorFlowOnly(keras_sce.losses.ItemTableLoss):  # no keras.ops implementation
        pass

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(RuntimeError, match="KERAS_BACKEND=tensorflow"):
        TensorFlowOnly(None)  # SCELoss and the baselines have a JAX path (tests/jax)


def test_importing_keras_sce_does_not_touch_tf_keras():
    result = _run_python(
        """
        import sys, keras_sce
        print("TF_KERAS_LOADED", any(m == "tf_keras" or m.startswith("tf_keras.")
                                     for m in sys.modules))
        """,
        {},
    )
    assert "TF_KERAS_LOADED False" in result.stdout, result.stdout + result.stderr


@pytest.mark.slow
def test_mirrored_strategy_matches_single_device():
    # Buckets that cover every row and item make SCE equal full CE whatever the
    # centres, so the two-replica run must reproduce the single-device loss and
    # update exactly (Keras divides each replica's loss by the number of replicas).
    result = _run_python(
        """
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras, keras_sce

        def build():
            keras.utils.set_random_seed(0)
            items = keras.layers.Embedding(50, 8)
            inputs = keras.Input((6,), dtype="int32")
            model = keras.Model(inputs, keras.layers.Dense(8)(items(inputs)))
            model.compile(keras.optimizers.SGD(0.5), loss=keras_sce.SCELoss(
                items, num_buckets=1, bucket_size_x=192, bucket_size_y=49, seed=0))
            return model

        rng = np.random.default_rng(0)
        x = rng.integers(1, 50, (32, 6)).astype("int32")
        y = rng.integers(1, 50, (32, 6)).astype("int32")
        single = build()
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            mirrored = build()
        assert strategy.num_replicas_in_sync == 2
        l1 = single.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        l2 = mirrored.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        l1, l2 = l1.history["loss"][0], l2.history["loss"][0]
        print("LOSSES", l1, l2)
        assert abs(l1 - l2) < 1e-4 * abs(l1), (l1, l2)
        for a, b in zip(single.get_weights(), mirrored.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
        # A seeded loss created outside the scope is refused instead of racing.
        outside = keras_sce.SCELoss(mirrored.layers[1], bucket_size_y=8, seed=1)
        with strategy.scope():
            mirrored.compile("sgd", loss=outside)
        try:
            mirrored.fit(x, y, batch_size=32, epochs=1, verbose=0)
        except RuntimeError as err:
            assert "strategy" in str(err)
            print("REFUSED")
        print("OK")
        """,
        {"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert "OK" in result.stdout and "REFUSED" in result.stdout, (
        result.stdout + result.stderr[-3000:]
    )


def test_model_with_custom_train_step():
    class TwoStepModel(keras.Model):
        """A user model that overrides train_step and calls the loss itself."""

        def __init__(self):
            super().__init__()
            self.items = keras.layers.Embedding(C, D)
            self.mix = keras.layers.Dense(D)
            self.sce = keras_sce.SCELoss(self.items, bucket_size_y=32, seed=0)

        def call(self, x):
            return self.mix(self.items(x))

        def train_step(self, data):
            x, y = data
            with tf.GradientTape() as tape:
                loss = self.sce(y, self(x, training=True))
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply_gradients(zip(grads, self.trainable_variables, strict=True))
            return {"sce_loss": loss}  # Keras reserves "loss" for its own tracker

    model = TwoStepModel()
    model.compile(keras.optimizers.Adam(0.01))
    x, y = _data(256)
    history = model.fit(x, y, batch_size=64, epochs=3, verbose=0)
    assert history.history["sce_loss"][-1] < history.history["sce_loss"][0]
