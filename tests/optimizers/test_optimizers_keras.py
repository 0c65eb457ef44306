"""LazyAdam in Keras: fit (XLA or not), saving, mixed precision, MirroredStrategy."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_sce
from keras_sce.optimizers import LazyAdam, RowAdagrad, SparseLossScaleOptimizer

C, L, D = 2000, 6, 8
SEEN = 200  # ids of inputs and targets


class _Spy:
    """Records, at trace time, the type of the gradient each variable receives."""

    def update_step(self, gradient, variable, learning_rate):
        self.seen[tuple(variable.shape)] = type(gradient).__name__
        return super().update_step(gradient, variable, learning_rate)


class SpyLazyAdam(_Spy, LazyAdam):
    seen: dict = {}


class SpyRowAdagrad(_Spy, RowAdagrad):
    seen: dict = {}


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, SEEN, (n, L)).astype("int32")
    return x, ((x * 7) % (SEEN - 1) + 1).astype("int32")


def _sasrec(optimizer, jit=False):
    keras.utils.set_random_seed(0)
    model = keras_sce.models.SASRec(C, max_length=L, hidden_dim=D, num_blocks=1, dropout=0.0)
    model.build((None, L))
    # Few hard negatives per step (2 buckets x 8 items), so most rows stay unseen.
    loss = keras_sce.SCELoss(
        model.item_embedding_layer, num_buckets=2, bucket_size_y=8, seed=0
    )
    model.compile(optimizer=optimizer, loss=loss, jit_compile=jit)
    return model


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("spy_cls", [SpyLazyAdam, SpyRowAdagrad], ids=["lazy_adam", "row_adagrad"])
def test_fit_sends_indexed_slices_and_leaves_unseen_items_alone(spy_cls, jit):
    spy_cls.seen = {}
    model = _sasrec(spy_cls(1e-2), jit)
    before = model.item_embedding_layer.embeddings.numpy()
    x, y = _data()
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert spy_cls.seen[(C, D)] == "IndexedSlices", spy_cls.seen
    after = model.item_embedding_layer.embeddings.numpy()
    seen = np.union1d(x, y)
    unseen = np.setdiff1d(np.arange(C), seen)
    # SCE's hard negatives (at most 8 steps x 16 rows) may be any row: most stay.
    moved = np.any(before != after, axis=1)
    assert moved[np.unique(x)].mean() > 0.9  # the inputs train
    assert moved[unseen].sum() <= 8 * 16
    untouched = unseen[~moved[unseen]]
    opt = model.optimizer
    slots = opt._momentums if isinstance(opt, LazyAdam) else opt._accumulators
    index = opt._get_variable_index(model.item_embedding_layer.embeddings)
    state = slots[index].numpy()[untouched]
    initial = 0.0 if isinstance(opt, LazyAdam) else opt.initial_accumulator_value
    np.testing.assert_array_equal(state, np.full_like(state, initial))


def test_keras_file_restores_optimizer_state_and_config(tmp_path):
    model = _sasrec(LazyAdam(3e-3, beta_2=0.99, epsilon=1e-5, clipnorm=1.0))
    x, y = _data()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras_sce.load_model(path)
    assert isinstance(loaded.optimizer, LazyAdam)
    config = loaded.optimizer.get_config()
    assert (config["beta_2"], config["epsilon"], config["clipnorm"]) == (0.99, 1e-5, 1.0)
    assert LazyAdam.from_config(config).get_config() == config
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) > 0
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    loaded.fit(x, y, batch_size=16, epochs=1, verbose=0)  # training goes on
    assert int(loaded.optimizer.iterations) == 2 * int(model.optimizer.iterations)


def test_serialization_by_name_and_row_adagrad_config():
    opt = keras.optimizers.deserialize(keras.optimizers.serialize(RowAdagrad(0.2, epsilon=1e-6)))
    assert isinstance(opt, RowAdagrad) and opt.epsilon == 1e-6
    assert keras.saving.get_registered_name(LazyAdam) == "keras_sce>LazyAdam"
    wrapped = keras.optimizers.deserialize(
        keras.optimizers.serialize(SparseLossScaleOptimizer(LazyAdam(), initial_scale=8.0))
    )
    assert isinstance(wrapped, SparseLossScaleOptimizer)
    assert isinstance(wrapped.inner_optimizer, LazyAdam)


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_mixed_float16_with_sparse_loss_scaling_keeps_slices(mixed_float16, jit):
    SpyLazyAdam.seen = {}
    model = _sasrec(SparseLossScaleOptimizer(SpyLazyAdam(1e-2)), jit)
    assert model.item_embedding_layer.embeddings.dtype == "float32"
    x, y = _data()
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert SpyLazyAdam.seen[(C, D)] == "IndexedSlices"


def test_mixed_bfloat16_fit(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        SpyLazyAdam.seen = {}
        model = _sasrec(SpyLazyAdam(1e-2))
        history = model.fit(*_data(), batch_size=16, epochs=1, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(history.history["loss"]).all()
    assert SpyLazyAdam.seen[(C, D)] == "IndexedSlices"


@pytest.mark.slow
def test_mirrored_strategy_matches_single_device_and_stays_sparse():
    code = """
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras, keras_sce
        from keras_sce.optimizers import LazyAdam

        class Spy(LazyAdam):
            seen = {}
            def update_step(self, gradient, variable, learning_rate):
                Spy.seen[tuple(variable.shape)] = type(gradient).__name__
                return super().update_step(gradient, variable, learning_rate)

        def build():
            keras.utils.set_random_seed(0)
            items = keras.layers.Embedding(60, 8, name="items")
            inputs = keras.Input((6,), dtype="int32")
            model = keras.Model(inputs, keras.layers.Dense(8)(items(inputs)))
            # Buckets covering every row and item: SCE = full CE, independent of centres.
            model.compile(Spy(0.05), loss=keras_sce.SCELoss(
                items, num_buckets=1, bucket_size_x=192, bucket_size_y=59, seed=0))
            return model

        rng = np.random.default_rng(0)
        x = rng.integers(1, 30, (32, 6)).astype("int32")
        y = rng.integers(1, 30, (32, 6)).astype("int32")
        single = build()
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            mirrored = build()
        before = mirrored.get_weights()[0]
        single.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
        mirrored.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
        print("SEEN", Spy.seen.get((60, 8)))
        for a, b in zip(single.get_weights(), mirrored.get_weights(), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-5)
        after = mirrored.get_weights()[0]
        # Items 30..59 are never targets nor inputs: their rows only move as negatives.
        assert np.any(before != after)
        print("OK")
    """
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr[-3000:]
    assert "OK" in result.stdout, out
    assert "SEEN IndexedSlices" in result.stdout, out
