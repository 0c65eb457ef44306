"""How the TFRS example (``tfrs_retrieval.py``) measures its runs.

Full-catalogue Recall@k with TFRS ``FactorizedTopK`` over a ``BruteForce`` index
(``full_catalogue_recall``), the share of queries SCE's buckets cover
(``sce_coverage``), and the callbacks of ``fit``: the training time of each epoch
(``EpochTimer``), the recalls of the evaluated epochs (``RecallEvaluation``) and early
stopping told only of those epochs (``EarlyStoppingOnEvaluations``).

Imported by the example after it sets ``TF_USE_LEGACY_KERAS=1`` (TFRS runs on
tf_keras).
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras

from keras_sce.ops import scalable_cross_entropy


def full_catalogue_recall(model, splits, ks=(10, 100), batch_size=1024):
    """Recall@k of the targets among ALL items, with TFRS FactorizedTopK/BruteForce.

    ``splits`` maps a name to ``(histories, targets)``; all are scored against one
    index of the current table. Returns ``{name: {k: recall}}``.
    """
    table = model.item_embedding.embeddings
    item_ids = tf.range(1, table.shape[0], dtype=tf.int32)  # row 0 is padding, not an item
    # A catalogue smaller than k: every item is retrieved (recall@k = 1).
    capped = tuple(min(k, len(item_ids)) for k in ks)
    index = tfrs.layers.factorized_top_k.BruteForce(k=max(capped))
    index.index(tf.gather(table, item_ids), identifiers=item_ids)
    metric = tfrs.metrics.FactorizedTopK(candidates=index, ks=capped)

    @tf.function(autograph=False)
    def update(history, target):
        query = model.query_tower(history)
        metric.update_state(query, tf.gather(table, target), true_candidate_ids=target)

    results = {}
    for name, (histories, targets) in splits.items():
        metric.reset_states()
        for history, target in tf.data.Dataset.from_tensor_slices(
            (histories, targets)
        ).batch(batch_size):
            update(history, target)
        results[name] = {k: float(r) for k, r in zip(ks, metric.result(), strict=True)}
    return results


def sce_coverage(model, train, sce_options, num_batches=20):
    """Mean share of training queries that fall in at least one SCE bucket (diagnostic)."""
    fractions = []
    for step, batch in enumerate(train.take(num_batches)):
        _, details = scalable_cross_entropy(
            model.query_tower(batch["history"]), batch["target"],
            model.item_embedding.embeddings, padding_id=0, seed=step,
            return_details=True, **sce_options,
        )
        fractions.append(float(details["covered_fraction"]))
    return round(float(np.mean(fractions)), 3)


class EarlyStoppingOnEvaluations(tf_keras.callbacks.EarlyStopping):
    """Keras' early stopping, told only of the epochs whose logs hold ``monitor``.

    With ``--eval-every`` above 1 the other epochs have no validation recall; they
    neither count as evaluations without improvement nor warn.
    """

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor in (logs or {}):
            super().on_epoch_end(epoch, logs)


class EpochTimer(tf_keras.callbacks.Callback):
    """Pure training time per epoch, in ``times`` (the evaluation after it is not counted)."""

    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


class RecallEvaluation(tf_keras.callbacks.Callback):
    """Logs ``test_recall@k`` (and ``val_recall@100``) on the evaluated epochs.

    Evaluates every ``every`` epochs (never with 0), and with a validation split the
    last of the ``epochs`` too, so that it is always a candidate. ``curve`` and
    ``val_curve`` collect ``"epoch:recall@100"`` of each evaluation.
    """

    def __init__(self, test, val, every, epochs):
        super().__init__()
        self.test, self.val, self.every, self.epochs = test, val, every, epochs
        self.curve, self.val_curve = [], []

    def on_epoch_end(self, epoch, logs=None):
        last = self.val is not None and epoch + 1 == self.epochs
        if not self.every or ((epoch + 1) % self.every and not last):
            return
        splits = {"test": self.test}
        if self.val is not None:
            splits["val"] = self.val
        recalls = full_catalogue_recall(self.model, splits)
        for k, value in recalls["test"].items():
            logs[f"test_recall@{k}"] = value
        self.curve.append(f"{epoch + 1}:{recalls['test'][100]:.4f}")
        if self.val is not None:
            logs["val_recall@100"] = recalls["val"][100]
            self.val_curve.append(f"{epoch + 1}:{recalls['val'][100]:.4f}")
