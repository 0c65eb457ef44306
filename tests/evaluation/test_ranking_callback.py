"""RankingEvaluation: metrics in the epoch logs, stopping and restoring by Keras' EarlyStopping."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from keras_sce.evaluation.callback import RankingEvaluation

USERS = np.arange(1, 13).reshape(4, 3)


class ScriptedEvaluation(RankingEvaluation):
    """Returns the given monitor values, one per evaluation, instead of ranking."""

    def __init__(self, values, **kwargs):
        super().__init__(USERS, USERS[:, -1], USERS, **kwargs)
        self._values = iter(values)

    def evaluate(self):
        value = next(self._values)
        return {"hr@10": value, "ndcg@10": value, "mrr@10": value}


class WeightsByEpoch(keras.callbacks.Callback):
    """Keeps a copy of the weights at the end of every epoch."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([np.array(w) for w in self.model.get_weights()])


def _fit(callbacks, epochs):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    history = model.fit(x, x.sum(axis=1), epochs=epochs, batch_size=8, verbose=0,
                        callbacks=callbacks)
    return model, history


def test_metrics_reach_the_history_and_a_csv_logger(tmp_path):
    evaluation = ScriptedEvaluation([0.1, 0.2, 0.15], patience=None)
    path = tmp_path / "log.csv"
    _, history = _fit([evaluation, keras.callbacks.CSVLogger(str(path))], epochs=3)
    assert history.history["val_ndcg@10"] == [0.1, 0.2, 0.15]
    assert "val_ndcg@10" in path.read_text().splitlines()[0].split(",")
    assert [r["epoch"] for r in evaluation.records] == [1, 2, 3]
    # patience=None: logs only; no stopping, nothing restored.
    assert evaluation.stopped_by == "max_epochs" and evaluation.best_weights is None
    assert (evaluation.best, evaluation.best_epoch) == (0.2, 2)


@pytest.mark.parametrize(
    "values, patience, stopped_at, best_epoch",
    [
        ([0.1, 0.3, 0.2, 0.2, 0.9], 2, 4, 2),
        ([0.1, 0.3, 0.3, 0.9, 0.1], 1, 3, 2),  # an equal value is no improvement
        ([0.5, 0.4, 0.6, 0.7, 0.8], 3, None, 5),
    ],
    ids=["patience2", "patience1_tie", "never_stops"],
)
def test_keras_early_stopping_stops_and_restores_the_best_epoch(
    values, patience, stopped_at, best_epoch
):
    evaluation = ScriptedEvaluation(values, patience=patience, verbose=0)
    probe = WeightsByEpoch()
    model, _ = _fit([probe, evaluation], epochs=5)
    assert isinstance(evaluation.early_stopping, keras.callbacks.EarlyStopping)
    assert evaluation.epochs_run == (stopped_at or 5)
    assert evaluation.stopped_by == ("early_stopping" if stopped_at else "max_epochs")
    assert evaluation.best_epoch == best_epoch and evaluation.best == values[best_epoch - 1]
    for got, want in zip(model.get_weights(), probe.weights[best_epoch - 1], strict=True):
        np.testing.assert_array_equal(got, want)


def test_evaluations_every_other_epoch_count_once_and_do_not_warn():
    evaluation = ScriptedEvaluation([0.3, 0.2], patience=1, every=2, verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, history = _fit([evaluation], epochs=6)
    assert not [w for w in caught if "Early stopping" in str(w.message)]
    assert evaluation.epochs_run == 4 and evaluation.stopped_by == "early_stopping"
    assert history.history["val_ndcg@10"] == [0.3, 0.2]  # epochs 2 and 4 only


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(monitor="recall@10"), "monitor"),
        (dict(monitor="ndcg@20"), "ndcg@10"),
        (dict(patience=-1), "patience"),
        (dict(every=0), "every"),
    ],
    ids=["unknown_metric", "unreported_cutoff", "negative_patience", "zero_every"],
)
def test_bad_options_name_the_argument(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        RankingEvaluation(USERS, USERS[:, -1], USERS, **kwargs)
