"""`SCELoss`: Scalable Cross-Entropy as a Keras 3 loss (TensorFlow backend)."""

from __future__ import annotations

import keras

from keras_sce import ops as sce_ops
from keras_sce.losses.base import ItemTableLoss
from keras_sce.losses.sce_options import SCEOptions
from keras_sce.ops import checks


@keras.saving.register_keras_serializable(package="keras_sce")
class SCELoss(ItemTableLoss):
    """Scalable Cross-Entropy loss for models that output hidden states.

    Full softmax cross-entropy over a catalogue of `C` items costs an `N x C`
    logits tensor. SCE (arXiv 2409.18721) draws random bucket centres; each bucket
    collects the `bucket_size_x` rows and `bucket_size_y` items closest to its
    centre by inner product (a streamed, XLA-compiled top-k over the catalogue), and
    each row's softmax runs over its positive and the hard negatives of its bucket.
    The model's output is compared with the item table *inside* the loss, so the
    model outputs hidden states `[B, d]` or `[B, L, d]` and the targets are
    item ids. The table is read at every call, so it is trained (its gradient is a
    sparse `tf.IndexedSlices` over the rows actually used).

    Args:
        item_embeddings: where the item table lives: an Embedding-like layer
            (anything with `.embeddings`, e.g. `keras.layers.Embedding` or
            keras-hub's `ReversibleEmbedding`), or a `[C, d]` variable. It is
            usually tied with the model's input item embedding.
        num_buckets: number of buckets `n_b`; None: `int(2 * sqrt(N))` with
            `N = batch x length`, the authors' rule.
        bucket_size_x: rows per bucket `b_x`; None: the same rule.
        bucket_size_y: items per bucket `b_y` (hard negatives per row). Defaults
            to 256.
        mix_x: draw centres as random mixtures of the batch's hidden states instead
            of Gaussian noise. Defaults to False.
        padding_id: target id of padding positions (ignored) and table row never
            used as a negative; None if the table has no padding row. Defaults to 0.
        chunk_size: items per chunk of the streamed item search (None: the
            whole `n_b x C` projection at once). Defaults to 65,536.
            `catalog_chunk_size`, its former name, still works for one release
            (with a `DeprecationWarning`).
        seed: None for fresh centres from TensorFlow's global generator; an int
            for a reproducible stream of centres.
        calibration: None (SCE as published) or calibrated SCE, whose row losses
            estimate the full-softmax cross-entropy: True, a dict of options or a
            `keras_sce.ops.calibration.Calibration`. Use it when scores must be
            log-probabilities (perplexity, blending or thresholding scores).
        check_ids: check that targets lie in `[0, C)` (raises outside XLA; turns
            the loss NaN under XLA, where assertions are dropped). Defaults to True.
        seed_position: where the stream of centres starts. Saved with the model
            (the current position), so a reloaded model continues the stream
            rather than replaying it. Defaults to 0.
        name: loss name.
        dtype: accepted for Keras compatibility; the loss is computed in float32
            (float64 inputs stay float64).

    Call arguments:
        y_true: integer ids `[B]` or `[B, L]` (int32 or int64).
        y_pred: hidden states `[B, d]` or `[B, L, d]`, any float dtype.
        sample_weight: optional weights `[B]` or `[B, L]`; the loss is then
            the weighted mean over covered non-padding positions.

    The options from `num_buckets` to `check_ids` are those of
    `keras_sce.losses.SCEOptions` (which documents them in full), with its
    defaults, the same as `keras_sce.tfrs.SCERetrieval`'s.

    Returns a float32 scalar: the mean over non-padding positions covered by at
    least one bucket (0 when none is). A NaN or infinity in a non-padding hidden
    state or in a table row the step reads makes it NaN.

    Saving: the loss's hyper-parameters, the position of its seed stream and the
    *path* of the table variable are saved with a compiled model.
    `keras.saving.load_model` gives back an unbound loss (Keras cannot hand a
    loss its model); use `keras_sce.load_model`, or call
    `model.loss.bind(model)`, before training the loaded model again.

    Example:

    >>> import keras, keras_sce
    >>> items = keras.layers.Embedding(10_000, 32)
    >>> inputs = keras.Input((20,), dtype="int32")
    >>> hidden = keras.layers.Dense(32)(items(inputs))
    >>> model = keras.Model(inputs, hidden)
    >>> model.compile("adam", loss=keras_sce.SCELoss(items, bucket_size_y=128))

    References:
        Mezentsev, Gusak, Oseledets, Frolov, "Scalable Cross-Entropy Loss for
        Sequential Recommendations with Large Item Catalogs", RecSys 2024,
        arXiv 2409.18721.
    """

    def __new__(cls, *args, **kwargs):
        # Other Keras backends (JAX): the keras.ops implementation, keras_sce.kops.
        if cls is SCELoss and keras.backend.backend() != "tensorflow":
            from keras_sce.kops.loss import KerasOpsSCELoss as cls
        return super().__new__(cls)

    def __init__(
        self,
        item_embeddings=None,
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
        seed_position=0,
        name="sce_loss",
        dtype=None,
        **kwargs,
    ):
        chunk_size = checks.take_renamed(
            kwargs, "catalog_chunk_size", "chunk_size", chunk_size, SCEOptions.chunk_size,
            "SCELoss")
        reduction = kwargs.pop("reduction", "sum_over_batch_size")
        if reduction not in ("sum_over_batch_size", None):
            raise ValueError(
                "SCELoss always returns the mean over covered non-padding positions; "
                f"`reduction`={reduction!r} is not supported."
            )
        if kwargs:
            raise TypeError(f"Unexpected keyword arguments for SCELoss: {sorted(kwargs)}")
        options = SCEOptions(
            num_buckets=num_buckets, bucket_size_x=bucket_size_x, bucket_size_y=bucket_size_y,
            mix_x=mix_x, padding_id=padding_id, chunk_size=chunk_size,
            seed=seed, calibration=calibration, check_ids=check_ids,
        )
        super().__init__(item_embeddings, padding_id=options.padding_id, name=name, dtype=dtype)
        self._options = options
        for key, value in options.get_config().items():
            setattr(self, key, value)  # one attribute per option, as saved
        self._init_seed(options.seed, seed_position)

    # -- computation ----------------------------------------------------------------
    def _kwargs(self):
        return self._options.op_kwargs()

    def _compute(self, y_true, y_pred, table, sample_weight):
        return sce_ops.scalable_cross_entropy(
            y_pred, y_true, table, seed=self._next_seed(), sample_weight=sample_weight,
            **self._kwargs(),
        )

    def diagnostics(self, y_true, y_pred):
        """Bucket statistics for one batch (draws its own centres).

        Returns a dict of scalars: `loss`, `covered_fraction` (share of
        non-padding positions that fall in at least one bucket) and
        `buckets_per_covered_row`. Use it to tune `num_buckets` and
        `bucket_size_x`: low coverage means many positions get no loss at all.
        It does not advance the training stream of centres; with a `seed` its
        centres are reproducible (a fixed stateless seed of their own).
        """
        seed = None if self.seed is None else [self.seed, -1]
        loss, details = sce_ops.scalable_cross_entropy(
            y_pred, y_true, self._table(), seed=seed, return_details=True, **self._kwargs()
        )
        return {"loss": loss, **details}

    # -- serialization --------------------------------------------------------------
    _config_keys = tuple(name for name in SCEOptions.names() if name != "padding_id")

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "catalog_chunk_size" in config:  # saved before the argument was renamed
            config["chunk_size"] = config.pop("catalog_chunk_size")
        return super().from_config(config)
