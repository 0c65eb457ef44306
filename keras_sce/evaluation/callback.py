"""A Keras callback: full-ranking validation, best-weight tracking and early stopping."""

from __future__ import annotations

import time

import keras
import numpy as np

from keras_sce.evaluation.ranking import NonFiniteScoresError, _check_ks, evaluate_ranking
from keras_sce.ops import checks


class RankingEvaluation(keras.callbacks.Callback):
    """Evaluates full-ranking metrics on validation users and stops early.

    Every ``every`` epochs it ranks each validation user's target against the
    whole catalogue (history excluded; see `keras_sce.evaluation.evaluate_ranking`),
    adds ``val_<metric>`` entries to the epoch logs (so the Keras progress bar and
    ``History`` show them), keeps a copy of the best weights by ``monitor``, stops
    training after ``patience`` evaluations without improvement, and restores the
    best weights at the end of training. Time spent here is kept out of
    ``train_seconds`` (pure training time per epoch).

    A run that stops being finite stops at once, with ``stopped_by =
    "non_finite"``: when the epoch's training loss is NaN or infinite, or the
    model's outputs or item table are (`NonFiniteScoresError`), the epoch's
    metrics are recorded as NaN, never count as an improvement, and the best
    *finite* weights seen so far are restored at the end (none: the weights are
    left as they are, and ``best_epoch`` stays 0).

    Args:
        inputs: ``int [n, L]`` padded validation sequences.
        targets: ``int [n]`` validation targets.
        history: ``int [n, H]`` items to exclude per user (0-padded).
        monitor: metric to track (``"ndcg@10"``).
        patience: evaluations without improvement before stopping.
        every: evaluate every this many epochs.
        ks: cut-offs to report.
        chunk_size: catalogue chunk of the streamed ranking.
        verbose: print one line per evaluation.
    """

    def __init__(
        self,
        inputs,
        targets,
        history,
        *,
        monitor: str = "ndcg@10",
        patience: int = 10,
        every: int = 1,
        ks=(10,),
        chunk_size: int = 8192,
        max_seconds: float | None = None,
        verbose: int = 1,
    ):
        super().__init__()
        self.inputs = np.asarray(inputs)
        self.targets = np.asarray(targets)
        self.history = np.asarray(history)
        self.monitor = monitor
        self.patience = checks.as_int(patience, "patience", minimum=0)
        self.every = checks.check_positive_int(every, "every")
        self.ks = _check_ks(ks)
        self.chunk_size = checks.check_positive_int(chunk_size, "chunk_size")
        self.max_seconds = max_seconds
        self.verbose = verbose
        self.best = -np.inf
        self.best_epoch = 0
        self.best_weights = None
        self.wait = 0
        self.epochs_run = 0
        self.train_seconds: list[float] = []
        self.records: list[dict] = []
        self.stopped_by = "max_epochs"

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def evaluate(self):
        queries = self.model.last_hidden(self.inputs)
        table = keras.ops.convert_to_numpy(self.model.item_embedding_layer.embeddings)
        return evaluate_ranking(
            queries,
            table,
            self.targets,
            exclude=self.history,
            ks=self.ks,
            chunk_size=self.chunk_size,
            padding_id=self.model.padding_id,
        )

    def on_epoch_end(self, epoch, logs=None):
        self.train_seconds.append(time.perf_counter() - self._epoch_start)
        self.epochs_run = epoch + 1
        logs = logs if logs is not None else {}
        if (epoch + 1) % self.every:
            return
        loss = float(logs.get("loss", 0.0))
        try:
            if not np.isfinite(loss):
                raise NonFiniteScoresError(f"the training loss is {loss}")
            metrics = self.evaluate()
        except NonFiniteScoresError as err:
            return self._stop_non_finite(epoch, logs, str(err))
        for key, value in metrics.items():
            logs[f"val_{key}"] = value
        record = {"epoch": epoch + 1, "loss": float(logs.get("loss", np.nan)), **metrics}
        self.records.append(record)
        value = metrics[self.monitor]
        if not np.isfinite(value):  # never an improvement
            return self._stop_non_finite(epoch, logs, f"val {self.monitor} is {value}")
        if value > self.best:
            self.best, self.best_epoch, self.wait = value, epoch + 1, 0
            self.best_weights = [np.array(w) for w in self.model.get_weights()]
        else:
            self.wait += 1
        if self.verbose:
            print(
                f"  epoch {epoch + 1}: val {self.monitor} = {value:.4f} "
                f"(best {self.best:.4f} @ {self.best_epoch}, wait {self.wait}/{self.patience})",
                flush=True,
            )
        if self.wait >= self.patience:
            self.stopped_by = "early_stopping"
            self.model.stop_training = True
        elapsed = time.perf_counter() - self._start
        if self.max_seconds is not None and elapsed > self.max_seconds:
            self.stopped_by = "time_budget"
            self.model.stop_training = True

    def _stop_non_finite(self, epoch, logs, reason):
        metrics = {f"{m}@{k}": float("nan") for k in self.ks for m in ("hr", "ndcg", "mrr")}
        for key, value in metrics.items():
            logs[f"val_{key}"] = value
        self.records.append(
            {"epoch": epoch + 1, "loss": float(logs.get("loss", np.nan)), **metrics}
        )
        self.stopped_by = "non_finite"
        self.model.stop_training = True
        if self.verbose:
            restored = (
                f"restoring the weights of epoch {self.best_epoch}"
                if self.best_weights is not None
                else "no finite epoch to restore"
            )
            print(f"  epoch {epoch + 1}: stopping, not finite: {reason}; {restored}.", flush=True)

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
