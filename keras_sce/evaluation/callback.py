"""A Keras callback: full-ranking validation metrics in the epoch logs, Keras' early stopping."""

from __future__ import annotations

import time

import keras
import numpy as np

from keras_sce.evaluation.finite import NonFiniteScoresError
from keras_sce.evaluation.ranking import check_ks, evaluate_ranking
from keras_sce.ops import checks

_RANKING_METRICS = ("hr", "ndcg", "mrr")


class RankingEvaluation(keras.callbacks.Callback):
    """Evaluates full-ranking metrics on validation users and stops early.

    Every `every` epochs it ranks each validation user's target against the
    whole catalogue (history excluded; see `keras_sce.evaluation.evaluate_ranking`)
    and writes `val_<metric>` entries (`val_ndcg@10`, ...) into the epoch logs,
    so that Keras' progress bar, `History`, `CSVLogger`, `TensorBoard` and any
    callback placed after this one in the list read them. Early stopping is Keras'
    own: with `patience` set, a `keras.callbacks.EarlyStopping(monitor="val_" +
    monitor, mode="max", patience=patience, restore_best_weights=True)` sees each
    evaluation, stops after `patience` evaluations without improvement and
    restores the best weights at the end of training. Time spent here is kept out
    of `train_seconds` (pure training time per epoch).

    A run that stops being finite stops at once, with `stopped_by =
    "non_finite"`: when the epoch's training loss is NaN or infinite, or the
    model's outputs or item table are (`NonFiniteScoresError`), the epoch's
    metrics are logged and recorded as NaN and the early stopping never sees
    them, so they never count as an improvement and the best *finite* weights
    seen so far are restored at the end (none: the weights are left as they are,
    and `best_epoch` stays 0). A separate `EarlyStopping` placed after this
    callback would take a NaN of the first evaluation for its best value: let
    `patience` do the stopping when a run may diverge.

    Args:
        inputs: `int [n, L]` padded validation sequences.
        targets: `int [n]` validation targets.
        history: `int [n, H]` items to exclude per user (0-padded).
        monitor: metric to track, `"<hr|ndcg|mrr>@<k>"` with `k` in `ks`.
            Defaults to `"ndcg@10"`.
        patience: evaluations without improvement before stopping (0: stop at the
            first one). None: no early stopping and no restoring, only the logs.
            Defaults to 10.
        every: evaluate every this many epochs. Defaults to 1.
        ks: cut-offs to report. Defaults to `(10,)`.
        chunk_size: catalogue chunk of the streamed ranking. Defaults to 8192.
        max_seconds: stop once this much time has passed since the start of
            training (`stopped_by = "time_budget"`); None: no limit.
        verbose: 1 prints Keras' early-stopping messages and why a run that
            stopped being finite stopped; 0 is silent.

    Raises:
        ValueError: a `monitor` that is not one of the reported metrics, or a
            non-positive `every` / `chunk_size` / cut-off.

    Example:

    >>> import numpy as np, keras, keras_sce
    >>> from keras_sce.evaluation.callback import RankingEvaluation
    >>> keras.utils.set_random_seed(0)
    >>> sequences = np.random.default_rng(0).integers(1, 31, size=(32, 7))
    >>> model = keras_sce.models.SASRec(num_items=31, max_length=6, hidden_dim=8, num_blocks=1)
    >>> model.compile(
    ...     "adam", loss=keras_sce.SCELoss(model.item_embedding_layer, bucket_size_y=8))
    >>> inputs, targets = sequences[:, :-1], sequences[:, -1]  # the item after each input
    >>> evaluation = RankingEvaluation(inputs, targets, inputs, patience=5, verbose=0)
    >>> history = model.fit(inputs, sequences[:, 1:], epochs=3, verbose=0,
    ...                     callbacks=[evaluation])
    >>> sorted(history.history)
    ['loss', 'val_cov@10', 'val_hr@10', 'val_mrr@10', 'val_ndcg@10']
    >>> evaluation.best_epoch, evaluation.stopped_by
    (..., 'max_epochs')
    """

    def __init__(
        self,
        inputs,
        targets,
        history,
        *,
        monitor: str = "ndcg@10",
        patience: int | None = 10,
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
        self.ks = check_ks(ks)
        reported = [f"{metric}@{k}" for k in self.ks for metric in _RANKING_METRICS]
        if monitor not in reported:
            raise ValueError(f"`monitor`={monitor!r} is not reported; choose one of {reported}.")
        self.monitor = monitor
        self.patience = None if patience is None else checks.as_int(
            patience, "patience", minimum=0
        )
        self.every = checks.check_positive_int(every, "every")
        self.chunk_size = checks.check_positive_int(chunk_size, "chunk_size")
        self.max_seconds = max_seconds
        self.verbose = verbose
        self.early_stopping = None
        if self.patience is not None:
            self.early_stopping = keras.callbacks.EarlyStopping(
                monitor=f"val_{monitor}",
                mode="max",
                patience=self.patience,
                restore_best_weights=True,
                verbose=verbose,
            )
        self.epochs_run = 0
        self.train_seconds: list[float] = []
        self.records: list[dict] = []
        self.stopped_by = "max_epochs"

    # -- what the run reached ---------------------------------------------------------
    def _best_record(self):
        best = None
        for record in self.records:
            value = record[self.monitor]
            if np.isfinite(value) and (best is None or value > best[self.monitor]):
                best = record
        return best

    @property
    def best(self) -> float:
        """The best finite value of `monitor` so far (`-inf` before any)."""
        record = self._best_record()
        return -np.inf if record is None else record[self.monitor]

    @property
    def best_epoch(self) -> int:
        """The (1-based) epoch of `best`; 0 before any finite evaluation."""
        record = self._best_record()
        return 0 if record is None else record["epoch"]

    @property
    def best_weights(self):
        """The weights Keras' early stopping keeps to restore (None without any)."""
        return None if self.early_stopping is None else self.early_stopping.best_weights

    @property
    def wait(self) -> int:
        """Evaluations since the last improvement (0 without early stopping)."""
        return 0 if self.early_stopping is None else self.early_stopping.wait

    # -- Keras hooks ------------------------------------------------------------------
    def set_model(self, model):
        super().set_model(model)
        if self.early_stopping is not None:
            self.early_stopping.set_model(model)

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()
        if self.early_stopping is not None:
            self.early_stopping.on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def evaluate(self):
        """The ranking metrics of the validation users with the current weights."""
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
            if not np.isfinite(metrics[self.monitor]):
                raise NonFiniteScoresError(f"val {self.monitor} is {metrics[self.monitor]}")
        except NonFiniteScoresError as err:
            return self._stop_non_finite(epoch, logs, str(err))
        self._record(epoch, logs, metrics)
        if self.early_stopping is not None:
            self.early_stopping.on_epoch_end(epoch, logs)
            if epoch > 0 and self.early_stopping.stopped_epoch == epoch:
                self.stopped_by = "early_stopping"
        elapsed = time.perf_counter() - self._start
        if self.max_seconds is not None and elapsed > self.max_seconds:
            self.stopped_by = "time_budget"
            self.model.stop_training = True

    def _record(self, epoch, logs, metrics):
        for key, value in metrics.items():
            logs[f"val_{key}"] = value
        self.records.append({"epoch": epoch + 1, "loss": float(logs.get("loss", np.nan)),
                             **metrics})

    def _stop_non_finite(self, epoch, logs, reason):
        nan = float("nan")
        self._record(epoch, logs, {f"{m}@{k}": nan for k in self.ks for m in _RANKING_METRICS})
        self.stopped_by = "non_finite"
        self.model.stop_training = True
        if self.verbose:
            restored = (
                f"restoring the weights of epoch {self.best_epoch}"
                if self.best_weights is not None
                else "no finite epoch to restore"
            )
            print(f"Epoch {epoch + 1}: stopping, not finite: {reason}; {restored}.", flush=True)

    def on_train_end(self, logs=None):
        if self.early_stopping is not None:
            self.early_stopping.on_train_end(logs)
