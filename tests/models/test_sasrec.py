"""SASRec: causality, padding, serialization, recommendation."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_sce
from keras_sce.models import SASRec, SASRecBlock


def _model(**kwargs):
    config = dict(num_items=51, max_length=8, hidden_dim=16, num_blocks=2, num_heads=2)
    config.update(kwargs)
    model = SASRec(**config)
    model.build((None, config["max_length"]))
    return model


def _inputs(seed=0, batch=4, length=8, pad=3):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 51, size=(batch, length)).astype("int32")
    x[:, :pad] = 0
    return x


def test_output_shape_and_padding_zero():
    model = _model()
    x = _inputs()
    h = keras.ops.convert_to_numpy(model(x))
    assert h.shape == (4, 8, 16)
    np.testing.assert_array_equal(h[:, :3], 0.0)
    assert np.all(np.abs(h[:, 3:]).sum(-1) > 0)


@pytest.mark.parametrize("position", [3, 5, 7])
def test_causality(position):
    model = _model()
    x = _inputs()
    changed = x.copy()
    changed[:, position] = (changed[:, position] % 50) + 1
    h = keras.ops.convert_to_numpy(model(x))
    h2 = keras.ops.convert_to_numpy(model(changed))
    np.testing.assert_allclose(h[:, :position], h2[:, :position], atol=1e-6)
    assert np.abs(h[:, position] - h2[:, position]).max() > 1e-4


def test_left_padding_trim_invariance():
    """A batch cut to its longest sequence gives the same hidden states."""
    model = _model()
    x = _inputs(pad=3)
    full = keras.ops.convert_to_numpy(model(x))
    trimmed = keras.ops.convert_to_numpy(model(x[:, 3:]))
    np.testing.assert_allclose(full[:, 3:], trimmed, atol=1e-5)


def test_right_padding_last_hidden():
    model = _model(padding="right")
    x = np.array([[5, 6, 7, 0, 0, 0, 0, 0]], "int32")
    h = keras.ops.convert_to_numpy(model(x))
    np.testing.assert_allclose(model.last_hidden(x), h[:, 2], atol=1e-6)


def test_item_table_is_tied():
    model = _model()
    assert model.item_embedding_layer is model.item_embedding
    assert tuple(model.item_embedding_layer.embeddings.shape) == (51, 16)


def test_get_config_round_trip():
    model = _model(dropout=0.1, intermediate_dim=24)
    clone = SASRec.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    block = SASRecBlock(16, num_heads=2, dropout=0.1)
    assert SASRecBlock.from_config(block.get_config()).get_config() == block.get_config()


def test_keras_file_round_trip(tmp_path):
    model = _model()
    model.compile("adam", loss=keras_sce.losses.FullCrossEntropyLoss(model.item_embedding_layer))
    x = _inputs()
    path = tmp_path / "sasrec.keras"
    model.save(path)
    loaded = keras_sce.load_model(path)
    assert isinstance(loaded, SASRec)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
    )


def test_recommend_excludes_history_and_matches_dense():
    model = _model()
    x = _inputs()
    scores, ids = model.recommend(x, k=5, chunk_size=7)
    h = model.last_hidden(x).astype(np.float64)
    table = keras.ops.convert_to_numpy(model.item_embedding_layer.embeddings).astype(np.float64)
    dense = h @ table.T
    dense[:, 0] = -np.inf
    for row in range(x.shape[0]):
        dense[row, x[row][x[row] > 0]] = -np.inf
        assert not set(ids[row]) & set(x[row])
    np.testing.assert_array_equal(ids, np.argsort(-dense, axis=1)[:, :5])
    _, ids_all = model.recommend(x, k=5, exclude_history=False)
    assert ids_all.shape == (4, 5)


def test_bad_config():
    with pytest.raises(ValueError, match="divisible"):
        SASRec(10, hidden_dim=10, num_heads=3)
    with pytest.raises(ValueError, match="padding"):
        SASRec(10, padding="middle")
