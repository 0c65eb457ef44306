"""`SCERetrieval`: Scalable Cross-Entropy as a TensorFlow Recommenders task."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from keras_sce.losses.sce_options import SCEOptions
from keras_sce.ops import checks, sce
from keras_sce.ops.sampling import SeedStream
from keras_sce.tfrs._stack import check_legacy_keras_stack
from keras_sce.tfrs.candidate_table import check_candidate_source, read_table

tf_keras, tfrs = check_legacy_keras_stack("keras_sce.tfrs.SCERetrieval")


@tf_keras.saving.register_keras_serializable(package="keras_sce")
class SCERetrieval(tf_keras.layers.Layer, tfrs.tasks.base.Task):
    """A TFRS retrieval task that trains against the whole candidate table with SCE.

    `tfrs.tasks.Retrieval` scores each query against the other positives of its
    batch (in-batch softmax): the negatives are whatever the batch happens to hold,
    over-represent popular items, and never include the rare items a query confuses
    with its target. `SCERetrieval` scores each query against the *whole*
    candidate table instead, at a cost that does not grow like the full softmax:
    Scalable Cross-Entropy (arXiv 2409.18721) draws random bucket centres; each
    bucket collects the queries and the `bucket_size_y` candidates with the
    largest inner product with its centre (an XLA-compiled maximum inner product
    search, streamed over the table in chunks); each query's softmax then runs over
    its positive and the hard negatives of its bucket, and a query in several
    buckets keeps its largest bucket loss. The result is the mean over the queries
    covered by at least one bucket.

    The table is read at every call, so it trains: pass the candidate tower's
    `tf_keras` Embedding layer (or a `[num_candidates, d]` variable), and give
    the task the *row numbers* of the positive candidates. Its gradient is a
    `tf.IndexedSlices` over the rows used, so sparse optimizers touch only those.
    The maths is `keras_sce.ops.scalable_cross_entropy`, the same function
    behind `keras_sce.SCELoss`: the same inputs and `seed` give the same
    value through either.

    The loss is a mean over the batch and its gradient reaches most rows of the
    table at every step, many of them with tiny values; Adam's default epsilon
    (1e-7) moves such rows by full steps. On Amazon Beauty a larger epsilon (1e-5)
    gave a better validation recall (see `examples/tfrs_retrieval.py` and the
    README's TFRS comparison).

    Importing this class needs `TF_USE_LEGACY_KERAS=1` (TFRS runs on tf_keras);
    `keras_sce.tfrs` raises an `ImportError` that says what to do otherwise.
    Unlike `tfrs.tasks.Retrieval` (whose default loss sums over the batch), the
    loss is a mean, like `keras_sce.SCELoss`. Under a `tf.distribute`
    strategy each replica returns its shard's mean divided by the number of
    replicas (`loss_metrics` see the undivided value), so that the gradients
    `tfrs.models.Model` sums across replicas are those of the mean of the shard
    losses. That is exactly the single-device step when the buckets cover the
    table; otherwise each replica draws its buckets and hard negatives from its own
    shard (and the default `num_buckets` / `bucket_size_x` follow the shard
    size). A custom loop that divides by the number of replicas itself must not
    do it again. Create a seeded task inside `strategy.scope()`.

    Args:
        candidate_embeddings: the candidate table: a `tf_keras` Embedding-like
            layer (anything with `.embeddings`; built at the first call if needed)
            or a `[num_candidates, d]` `tf.Variable`. Keras 3 objects are
            refused (the two stacks cannot be mixed in one model); a plain tensor
            is refused (it is a detached copy: the table would never train).
            None gives an unbound task; see `bind`.
        num_buckets: number of buckets `n_b`; None: `int(2 * sqrt(B))` for a
            batch of `B` queries (the authors' rule).
        bucket_size_x: queries per bucket; None: the same rule. Clamped to `B`.
        bucket_size_y: candidates per bucket (hard negatives per query). Defaults
            to 256.
        mix_x: draw the centres as random mixtures of the batch's query embeddings
            instead of Gaussian noise. Defaults to False.
        padding_id: a table row that is never a negative and a candidate id whose
            queries are ignored, default 0 (the OOV row of a `StringLookup`
            vocabulary); None if every row is a real candidate.
        chunk_size: candidates per chunk of the streamed search (None: the
            whole projection at once). Defaults to 65,536.
            `catalog_chunk_size`, its former name, still works for one release
            (with a `DeprecationWarning`).
        seed: None (fresh centres from the global generator) or a Python int: a
            reproducible stream of centres, fresh at each call, the same stream
            as `keras_sce.SCELoss(seed=...)`.
        calibration: None (SCE as published) or calibrated SCE: True, a dict of
            options or a `keras_sce.ops.calibration.Calibration`, exactly as
            `keras_sce.SCELoss(calibration=...)`.
        check_ids: check that `candidate_ids` lie in `[0, num_candidates)`:
            an `InvalidArgumentError` outside XLA; under XLA (which drops
            assertions) the loss turns NaN instead of silently reading zeros.
            Defaults to True.
        metrics: optional TFRS factorized metrics (e.g.
            `tfrs.metrics.FactorizedTopK`), or a list of them, updated when
            `compute_metrics=True`. They receive the queries, the positives'
            rows of the table, and `metric_candidate_ids` if given.
        loss_metrics: optional list of `tf_keras` metrics updated with the loss.
        name: layer name.
        **kwargs: other `tf_keras.layers.Layer` arguments (e.g. `dtype`).

    The options from `num_buckets` to `check_ids` are those of
    `keras_sce.losses.SCEOptions` (which documents them in full), with its
    defaults, the same as `keras_sce.SCELoss`'s.

    Call arguments:
        query_embeddings: float `[B, d]` (or `[B, L, d]` for a sequence model)
            query tower output, in the space of the candidate table.
        candidate_ids: integer `[B]` (or `[B, L]`) rows of the positive
            candidates in the table (int32 or int64).
        sample_weight: optional float weights broadcastable to `candidate_ids`;
            the loss is then the weighted mean.
        compute_metrics: update `metrics` (set False during training: a
            factorized top-K metric scores the whole catalogue).
        metric_candidate_ids: optional ids passed to the metrics as
            `true_candidate_ids` (id-based top-K evaluation, e.g.
            `candidate_ids` itself when the metric's index was built with row
            numbers as identifiers). None: score-based evaluation.

    Returns:
        A float32 scalar loss (0 with zero gradient when no query is covered). A
        NaN or infinity in a counted query, or in a table row the step reads,
        makes it NaN, eagerly and under XLA (see
        `keras_sce.ops.scalable_cross_entropy`).

    Example:

    >>> import os
    >>> os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before anything uses tf.keras
    >>> import numpy as np
    >>> import tensorflow as tf
    >>> import tensorflow_recommenders as tfrs
    >>> from keras_sce.tfrs import SCERetrieval
    >>> items = tf.keras.layers.Embedding(100, 8)
    >>> users = tf.keras.layers.Embedding(50, 8)
    >>> task = SCERetrieval(items, bucket_size_y=16, seed=0)
    >>> class TwoTower(tfrs.models.Model):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.users, self.items, self.task = users, items, task
    ...
    ...     def compute_loss(self, features, training=False):
    ...         return self.task(self.users(features["user"]), features["item"])
    >>> model = TwoTower()
    >>> model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    >>> ids = np.arange(1, 33)  # id 0 is the padding row
    >>> data = tf.data.Dataset.from_tensor_slices({"user": ids, "item": 3 * ids}).batch(16)
    >>> history = model.fit(data, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['loss', 'regularization_loss', 'total_loss']

    References:
        Mezentsev, Gusak, Oseledets, Frolov, "Scalable Cross-Entropy Loss for
        Sequential Recommendations with Large Item Catalogs", RecSys 2024,
        arXiv 2409.18721.
    """

    def __init__(
        self,
        candidate_embeddings=None,
        *,
        num_buckets=SCEOptions.num_buckets,
        bucket_size_x=SCEOptions.bucket_size_x,
        bucket_size_y=SCEOptions.bucket_size_y,
        mix_x=SCEOptions.mix_x,
        padding_id=SCEOptions.padding_id,
        chunk_size=SCEOptions.chunk_size,
        seed=SCEOptions.seed,
        calibration=SCEOptions.calibration,
        check_ids=SCEOptions.check_ids,
        metrics=None,
        loss_metrics=None,
        name=None,
        **kwargs,
    ):
        chunk_size = checks.take_renamed(
            kwargs, "catalog_chunk_size", "chunk_size", chunk_size, SCEOptions.chunk_size,
            "SCERetrieval")
        options = SCEOptions(
            num_buckets=num_buckets, bucket_size_x=bucket_size_x, bucket_size_y=bucket_size_y,
            mix_x=mix_x, padding_id=padding_id, chunk_size=chunk_size,
            seed=seed, calibration=calibration, check_ids=check_ids,
        )
        super().__init__(name=name, **kwargs)
        self._options = options
        for key, value in options.get_config().items():
            setattr(self, key, value)  # one attribute per option, as saved
        seed = options.seed
        self._seed_stream = None if seed is None else SeedStream(seed)
        if self._seed_stream is not None:
            # Tracked by the layer, so checkpoints and SavedModels keep the position
            # in the stream of centres (a resumed run continues it).
            self.seed_counter = self._seed_stream.counter

        if metrics is None:
            metrics = []
        elif not isinstance(metrics, Sequence):
            metrics = [metrics]
        for metric in metrics:
            if not hasattr(metric, "update_state"):
                raise TypeError(f"`metrics` must be TFRS factorized metrics, got {metric!r}.")
        self._factorized_metrics = list(metrics)
        self._loss_metrics = list(loss_metrics or [])
        self._candidate_embeddings = None
        self.bind(candidate_embeddings)

    # -- the candidate table ----------------------------------------------------------
    def bind(self, candidate_embeddings):
        """Points the task at its candidate table (layer or variable); returns `self`."""
        check_candidate_source(candidate_embeddings)  # None: an unbound task
        self._candidate_embeddings = candidate_embeddings
        return self

    @property
    def candidate_embeddings(self):
        return self._candidate_embeddings

    def _table(self):
        return read_table(self._candidate_embeddings)

    # -- computation -----------------------------------------------------------------
    def call(
        self,
        query_embeddings,
        candidate_ids,
        sample_weight=None,
        compute_metrics=True,
        metric_candidate_ids=None,
    ):
        table = self._table()
        query = checks.as_float_tensor(query_embeddings, "query_embeddings")
        ids = checks.as_id_tensor(candidate_ids, "candidate_ids")
        width, table_width = query.shape[-1], table.shape[1]
        if width is not None and table_width is not None and width != table_width:
            raise ValueError(
                f"SCERetrieval: the query embeddings have width {width} but the candidate "
                f"table has width {table_width} (shape {table.shape}); the query tower must "
                "output vectors in the candidate embedding space."
            )
        if query.shape.rank is not None and ids.shape.rank is not None:
            if not ids.shape.is_compatible_with(query.shape[:-1]):
                raise ValueError(
                    f"SCERetrieval: `candidate_ids` shape {ids.shape} must be the query "
                    f"embeddings' shape without the last axis, {query.shape[:-1]} (one positive "
                    "row per query)."
                )

        all_valid = None
        if self.check_ids:
            num_rows = table.shape[0] if table.shape[0] is not None else tf.shape(table)[0]
            assert_op, all_valid = checks.id_range_checks(
                ids, num_rows, name="candidate_ids (rows of the candidate table)"
            )
            with tf.control_dependencies([assert_op]):
                ids = tf.identity(ids)

        seed = None if self._seed_stream is None else self._seed_stream.next()
        loss = sce.scalable_cross_entropy(
            query,
            ids,
            table,
            **dict(self._options.op_kwargs(), check_ids=False),  # checked above, by name
            seed=seed,
            sample_weight=sample_weight,
        )
        if all_valid is not None:
            loss = checks.poison_if_invalid(loss, all_valid)

        update_ops = [metric.update_state(loss) for metric in self._loss_metrics]
        # tfrs.models.Model sums the replicas' gradients under tf.distribute; each
        # replica's loss is a mean over its own shard, so it is divided by the
        # number of replicas (as Keras does for its losses): the summed gradient is
        # then that of the mean of the shard losses. Only on a replica: a call in
        # the cross-replica context (e.g. eagerly inside `strategy.scope()`) sees
        # the whole batch and is not divided.
        context = tf.distribute.get_replica_context()
        replicas = context.num_replicas_in_sync if context is not None else 1
        if replicas > 1:
            loss = loss * tf.cast(1.0 / replicas, loss.dtype)
        if compute_metrics and self._factorized_metrics and query.shape.rank == 2:
            positives = tf.cast(tf.gather(table, ids), query.dtype)
            if metric_candidate_ids is not None:
                metric_candidate_ids = tf.convert_to_tensor(metric_candidate_ids)
            for metric in self._factorized_metrics:
                update_ops.append(
                    metric.update_state(
                        query,
                        positives,
                        true_candidate_ids=metric_candidate_ids,
                        sample_weight=sample_weight,
                    )
                )
        update_ops = [op for op in update_ops if op is not None]
        if not update_ops:
            return loss
        with tf.control_dependencies(update_ops):
            return tf.identity(loss)

    def reset_seed(self):
        """Restarts the stream of centres (a no-op without a seed)."""
        if self._seed_stream is not None:
            self._seed_stream.reset()

    # -- serialization ---------------------------------------------------------------
    def get_config(self):
        """Hyper-parameters only: the table and the metrics are objects of the model.

        `from_config` gives an unbound task; `bind` it to the candidate
        table before use.
        """
        config = super().get_config()
        config.update(self._options.get_config())
        return config
