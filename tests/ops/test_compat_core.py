"""What keras_sce.compat's core functions rely on: each fails if an upgrade moves it."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_sce import compat


def test_in_xla_context_tells_xla_traces_from_others():
    assert compat._graph_in_xla_context is not None, "TensorFlow moved GraphOrParentsInXlaContext"
    seen = {}

    def probe(x, key):
        seen[key] = compat.in_xla_context()
        return x + 1

    probe(tf.constant(1.0), "eager")
    tf.function(lambda x: probe(x, "graph"))(tf.constant(1.0))
    tf.function(lambda x: probe(x, "xla"), jit_compile=True)(tf.constant(1.0))
    assert seen == {"eager": False, "graph": False, "xla": True}


def test_pause_gradient_tapes_hides_ops_from_an_active_tape():
    pause = compat.pause_gradient_tapes()
    assert pause is not None, "TensorFlow moved tensorflow.python.eager.record.stop_recording"
    x = tf.Variable(2.0)
    with tf.GradientTape(persistent=True) as tape:
        recorded = x * 3.0
        with compat.pause_gradient_tapes():
            hidden = x * 5.0
    assert float(tape.gradient(recorded, x)) == 3.0
    assert tape.gradient(hidden, x) is None


def test_keras_in_symbolic_scope_is_true_only_inside_keras_shape_inference():
    from keras.src.backend import SymbolicScope  # where Keras keeps the scope

    assert not compat.keras_in_symbolic_scope()
    with SymbolicScope():
        assert compat.keras_in_symbolic_scope()


def test_keras_variable_storage_is_the_tf_variable_and_is_never_autocast():
    layer = keras.layers.Embedding(10, 4, dtype="mixed_float16")
    layer.build((None,))
    storage = compat.keras_variable_storage(layer.embeddings)
    assert isinstance(storage, tf.Variable) and storage.dtype == tf.float32
    seen = {}

    class Probe(keras.layers.Layer):  # inside a layer call, `.value` is autocast
        def call(self, x):
            seen["value"] = layer.embeddings.value.dtype
            seen["storage"] = compat.keras_variable_storage(layer.embeddings).dtype
            return x

    Probe(dtype="mixed_float16")(np.ones((1, 2), "float32"))
    assert seen == {"value": tf.float16, "storage": tf.float32}
    with tf.GradientTape() as tape:
        rows = tf.gather(storage, [1, 3])
    assert isinstance(tape.gradient(rows, storage), tf.IndexedSlices)
    assert compat.keras_variable_storage(tf.Variable(1.0)) is None


@pytest.mark.parametrize("slots", ["_momentums", "_velocities"])
def test_optimizer_slot_is_the_state_keras_adam_updates(slots):
    var = keras.Variable(np.ones((3, 2), "float32"))
    other = keras.Variable(np.ones((5,), "float32"))
    opt = keras.optimizers.Adam(0.1)
    opt.build([other, var])
    slot = compat.optimizer_slot(opt, slots, var)
    assert tuple(slot.shape) == (3, 2)
    opt.apply([tf.zeros([5]), tf.ones([3, 2])], [other, var])
    assert np.all(keras.ops.convert_to_numpy(slot) > 0)


def test_optimizer_decays_follows_keras_exclusions():
    decayed = keras.Variable(np.ones((2,), "float32"), name="kernel")
    kept = keras.Variable(np.ones((2,), "float32"), name="bias")
    opt = keras.optimizers.AdamW(weight_decay=0.1)
    opt.exclude_from_weight_decay(var_names=["bias"])
    opt.build([decayed, kept])
    assert compat.optimizer_decays(opt, decayed)
    assert not compat.optimizer_decays(opt, kept)
    assert not compat.optimizer_decays(keras.optimizers.Adam(), decayed)
