"""keras_sce.load_model: every kind of Keras model, every keras_sce loss."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_sce
from keras_sce import losses

NUM_ITEMS, DIM, LENGTH = 40, 8, 5


@keras.saving.register_keras_serializable(package="keras_sce_tests")
class TwoLayer(keras.Model):
    """A subclassed model: item embedding then a projection."""

    def __init__(self, num_items=NUM_ITEMS, dim=DIM, **kwargs):
        super().__init__(**kwargs)
        self.num_items, self.dim = num_items, dim
        self.items = keras.layers.Embedding(num_items, dim, name="items")
        self.projection = keras.layers.Dense(dim, name="projection")

    def call(self, inputs):
        return self.projection(self.items(inputs))

    def get_config(self):
        return {**super().get_config(), "num_items": self.num_items, "dim": self.dim}


def _model(kind):
    if kind == "subclassed":
        model = TwoLayer()
        model(np.zeros((1, LENGTH), "int32"))
        return model, model.items
    items = keras.layers.Embedding(NUM_ITEMS, DIM, name="items")
    if kind == "sequential":
        model = keras.Sequential(
            [keras.Input((LENGTH,), dtype="int32"), items, keras.layers.Dense(DIM)]
        )
        return model, items
    inputs = keras.Input((LENGTH,), dtype="int32")
    return keras.Model(inputs, keras.layers.Dense(DIM)(items(inputs))), items


LOSSES = {
    "sce": lambda table: keras_sce.SCELoss(table, bucket_size_y=8, seed=1),
    "full_ce": lambda table: losses.FullCrossEntropyLoss(table),
    "sampled_softmax": lambda table: losses.SampledSoftmaxLoss(table, num_sampled=8, seed=1),
    "bce": lambda table: losses.SampledBCELoss(table, num_negatives=2, seed=1),
    "gbce": lambda table: losses.GBCELoss(table, num_negatives=8, seed=1),
}


def _data():
    rng = np.random.default_rng(0)
    inputs = rng.integers(1, NUM_ITEMS, size=(32, LENGTH)).astype("int32")
    targets = rng.integers(0, NUM_ITEMS, size=(32, LENGTH)).astype("int32")  # 0 = padding
    return inputs, targets


def _table_of(model):
    return keras.ops.convert_to_numpy(model.loss._table()).copy()


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("kind", ["functional", "sequential", "subclassed"])
def test_keras_file_round_trip_binds_the_table_and_resumes_the_seeds(kind, loss, tmp_path):
    model, table = _model(kind)
    model.compile("adam", loss=LOSSES[loss](table))
    inputs, targets = _data()
    model.fit(inputs, targets, batch_size=16, epochs=1, verbose=0)
    position = model.loss.seed_position
    path = tmp_path / f"{kind}_{loss}.keras"
    model.save(path)

    loaded = keras_sce.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(inputs, verbose=0), model.predict(inputs, verbose=0), rtol=1e-6
    )
    assert type(loaded.loss) is type(model.loss)
    # The stream of seeds goes on where it stopped (2 steps), not from the start.
    assert loaded.loss.seed_position == position == (0 if loss == "full_ce" else 2)
    before = _table_of(loaded)
    loaded.fit(inputs, targets, batch_size=16, epochs=1, verbose=0)
    assert not np.allclose(before, _table_of(loaded))  # the reloaded loss trains the table
    assert loaded.loss.seed_position == position + (0 if loss == "full_ce" else 2)


@pytest.mark.parametrize(
    "saved, paths, expected",
    [
        ("sequential/items/embeddings", ["items/embeddings", "dense/kernel"], [0]),
        ("items/embeddings", ["model/items/embeddings", "model/dense/kernel"], [0]),
        ("m/items/embeddings", ["m/items/embeddings", "items/embeddings"], [0]),
        ("items/embeddings", ["a/items/embeddings", "b/items/embeddings"], [0, 1]),
        ("sequential/items/embeddings", ["a/items/embeddings"], []),
        ("seq/items/embeddings", ["other_items/embeddings"], []),
        ("items/embeddings", ["embeddings"], []),
    ],
    ids=[
        "scope_lost", "scope_gained", "exact_wins", "ambiguous", "other_scope", "other_layer",
        "name_only",
    ],
)
def test_table_path_matching(saved, paths, expected):
    from types import SimpleNamespace

    from keras_sce.losses.base import _match_path

    variables = [SimpleNamespace(path=p) for p in paths]
    assert [variables.index(v) for v in _match_path(variables, saved)] == expected
