"""The baseline Keras losses under KERAS_BACKEND=jax: dispatch, model.fit under jit, saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_sce
from keras_sce import kops
from keras_sce.kops import losses as kops_losses
from keras_sce.losses import baselines
from tests.jax.fixtures import C, embedding_model, next_item_batches

LOSSES = {
    "full": (keras_sce.losses.FullCrossEntropyLoss, {}),
    "sampled": (keras_sce.losses.SampledSoftmaxLoss, {"num_sampled": 24, "seed": 1}),
    "unigram": (keras_sce.losses.SampledSoftmaxLoss, {
        "num_sampled": 24, "sampler": "unigram", "item_counts": list(range(1, C + 1)),
        "distortion": 0.5, "seed": 1}),
    "bce": (keras_sce.losses.SampledBCELoss, {"num_negatives": 4, "seed": 1}),
    "gbce": (keras_sce.losses.GBCELoss, {"num_negatives": 16, "t": 0.5, "seed": 1}),
}


@pytest.mark.parametrize("name", list(LOSSES))
def test_each_baseline_dispatches_to_its_keras_ops_class(name):
    cls, options = LOSSES[name]
    _, items = embedding_model()
    loss = cls(items, **options)
    assert type(loss) is kops_losses.keras_ops_class(cls) and type(loss) is not cls
    assert isinstance(loss, cls) and isinstance(loss, kops_losses.KerasOpsItemTableLoss)
    assert type(loss).__module__ == "keras_sce.kops.losses"
    config = loss.get_config()
    again = cls.from_config(config)
    assert type(again) is type(loss) and again.get_config() == config
    assert keras.saving.serialize_keras_object(loss)["registered_name"] == (
        f"keras_sce>{cls.__name__}")


@pytest.mark.parametrize("name", list(LOSSES))
def test_fit_under_jit_lowers_the_loss_and_trains_the_table(name):
    cls, options = LOSSES[name]
    model, items = embedding_model()
    model.compile(keras.optimizers.Adam(0.02), loss=cls(items, **options), jit_compile=True)
    x, y = next_item_batches()
    before = np.array(items.embeddings.numpy())
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0).history["loss"]
    assert model.jit_compile is True
    assert all(np.isfinite(history)) and history[-1] < history[0]
    assert not np.allclose(items.embeddings.numpy(), before)


def test_full_ce_loss_equals_the_op_and_sampled_losses_follow_their_seed():
    model, items = embedding_model()
    x, y = next_item_batches(8)
    hidden = model(x)
    full = keras_sce.losses.FullCrossEntropyLoss(items)
    np.testing.assert_allclose(float(full(y, hidden)),
                               float(kops.full_cross_entropy(hidden, y, items.embeddings)),
                               rtol=1e-6)
    for name in ("sampled", "unigram", "bce", "gbce"):
        cls, options = LOSSES[name]
        first, again = cls(items, **options), cls(items, **options)
        value = float(first(y, hidden))
        assert value == float(first(y, hidden)) == float(again(y, hidden)), name
        other = cls(items, **{**options, "seed": 2})
        assert float(other(y, hidden)) != value, name


def test_constructor_errors_are_the_tensorflow_ones():
    _, items = embedding_model()
    with pytest.raises(ValueError, match="sampler='unigram' needs item_counts"):
        keras_sce.losses.SampledSoftmaxLoss(items, sampler="unigram")
    with pytest.raises(ValueError, match="num_sampled"):
        keras_sce.losses.SampledSoftmaxLoss(items, num_sampled=0)
    with pytest.raises(ValueError, match="num_negatives"):
        keras_sce.losses.SampledBCELoss(items, num_negatives=0)
    with pytest.raises(ValueError, match="logit_offset"):
        keras_sce.losses.GBCELoss(items, logit_offset="none")
    with pytest.raises(ValueError, match=r"t must be in \[0, 1\]"):
        keras_sce.losses.GBCELoss(items, t=2.0)
    with pytest.raises(ValueError, match="padding_id"):
        keras_sce.losses.FullCrossEntropyLoss(items, padding_id=-1)
    with pytest.raises(TypeError, match="seed"):
        keras_sce.losses.SampledBCELoss(items, seed=1.5)
    loss = keras_sce.losses.FullCrossEntropyLoss(items)
    x, y = next_item_batches(4)
    with pytest.raises(NotImplementedError, match="sample weights"):
        loss(y, embedding_model()[0](x), sample_weight=np.ones(y.shape))


def test_unknown_item_table_loss_subclasses_still_need_tensorflow():
    class Custom(baselines.ItemTableLoss):
        pass

    with pytest.raises(RuntimeError, match="TensorFlow backend"):
        Custom()


@pytest.mark.parametrize("name", ["full", "gbce"])
def test_saved_model_loads_with_its_keras_ops_loss_bound(name, tmp_path):
    cls, options = LOSSES[name]
    model, items = embedding_model()
    model.compile("adam", loss=cls(items, **options))
    x, y = next_item_batches(32)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras_sce.load_model(path)
    assert type(loaded.loss) is type(model.loss)
    assert loaded.loss.item_embeddings.path == items.embeddings.path
    hidden = loaded(x[:4])
    np.testing.assert_allclose(float(loaded.loss(y[:4], hidden)),
                               float(model.loss(y[:4], hidden)), rtol=1e-6)
