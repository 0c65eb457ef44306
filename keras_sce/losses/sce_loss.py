"""``SCELoss``: Scalable Cross-Entropy as a Keras 3 loss (TensorFlow backend)."""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_sce import ops as sce_ops
from keras_sce.utils import require_tensorflow_backend, resolve_table, table_value

try:  # Keras' symbolic (shape-inference) scope; absent from the public API.
    from keras.src.backend import in_symbolic_scope
except ImportError:  # pragma: no cover - older/newer Keras layouts

    def in_symbolic_scope():
        return False


DEFAULT_CATALOG_CHUNK_SIZE = 65_536


@keras.saving.register_keras_serializable(package="keras_sce")
class SCELoss(keras.losses.Loss):
    """Scalable Cross-Entropy loss for models that output hidden states.

    Full softmax cross-entropy over a catalogue of ``C`` items costs an ``N x C``
    logits tensor. SCE (arXiv 2409.18721) draws random bucket centres; each bucket
    collects the ``bucket_size_x`` rows and ``bucket_size_y`` items closest to its
    centre by inner product (a streamed, XLA-compiled top-k over the catalogue), and
    each row's softmax runs over its positive and the hard negatives of its bucket.
    The model's output is compared with the item table *inside* the loss, so the
    model outputs hidden states ``[B, d]`` or ``[B, L, d]`` and the targets are
    item ids. The table is read at every call, so it is trained (its gradient is a
    sparse ``tf.IndexedSlices`` over the rows actually used).

    Args:
        item_embeddings: where the item table lives: an Embedding-like layer
            (anything with ``.embeddings``, e.g. ``keras.layers.Embedding`` or
            keras-hub's ``ReversibleEmbedding``), or a ``[C, d]`` variable. It is
            usually tied with the model's input item embedding.
        num_buckets: number of buckets ``n_b``. None: ``int(2 * sqrt(N))`` with
            ``N = batch x length`` the rows of the batch, the authors' rule (taken
            from the static batch shape, or from the actual batch if it is dynamic).
            With much padding, pass ``2 * sqrt(non-padding tokens per batch)``.
        bucket_size_x: rows per bucket ``b_x``; None: the same rule. Clamped to the
            rows of the batch (with a warning when an explicit value is clamped).
        bucket_size_y: items per bucket ``b_y`` (hard negatives per row). The paper
            uses 64-4096; 256 is a solid default. Clamped (with a warning) to the
            number of non-padding items.
        mix_x: draw centres as random mixtures of the batch's hidden states instead
            of Gaussian noise (helps when buckets collapse; dataset dependent).
        padding_id: target id of padding positions (ignored) and table row never
            used as a negative. None if the table has no padding row.
        catalog_chunk_size: items per chunk of the streamed item search. Peak memory
            of the search is ``n_b x (b_y + chunk)`` floats instead of ``n_b x C``.
            None materialises the full ``n_b x C`` projection (fastest for small
            catalogues). The default, 65,536, costs nothing below that size.
        seed: None for fresh centres from TensorFlow's global generator; an int
            for a reproducible stream of centres (fresh at every step, the same
            sequence for the same seed).
        check_ids: check that targets lie in ``[0, C)`` (raises outside XLA; turns
            the loss NaN under XLA, where assertions are dropped). Costs one
            reduction over the ids; set False to skip.
        name: loss name.
        dtype: accepted for Keras compatibility; the loss is computed in float32
            (float64 inputs stay float64).

    Call arguments:
        y_true: integer ids ``[B]`` or ``[B, L]`` (int32 or int64).
        y_pred: hidden states ``[B, d]`` or ``[B, L, d]``, any float dtype.
        sample_weight: optional weights ``[B]`` or ``[B, L]``; the loss is then
            the weighted mean over covered non-padding positions.

    Returns a float32 scalar: the mean over non-padding positions covered by at
    least one bucket (0, never NaN, when none is).

    Saving: the loss's hyper-parameters and the *path* of the table variable are
    saved with a compiled model. ``keras.saving.load_model`` gives back an unbound
    loss (Keras cannot hand a loss its model); use :func:`keras_sce.load_model`,
    or call ``model.loss.bind(model)``, before training the loaded model again.

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

    def __init__(
        self,
        item_embeddings=None,
        *,
        num_buckets=None,
        bucket_size_x=None,
        bucket_size_y=256,
        mix_x=False,
        padding_id=0,
        catalog_chunk_size=DEFAULT_CATALOG_CHUNK_SIZE,
        seed=None,
        check_ids=True,
        name="sce_loss",
        dtype=None,
        **kwargs,
    ):
        require_tensorflow_backend("SCELoss")
        reduction = kwargs.pop("reduction", "sum_over_batch_size")
        if reduction not in ("sum_over_batch_size", None):
            raise ValueError(
                "SCELoss always returns the mean over covered non-padding positions; "
                f"`reduction`={reduction!r} is not supported."
            )
        if kwargs:
            raise TypeError(f"Unexpected keyword arguments for SCELoss: {sorted(kwargs)}")
        super().__init__(name=name, reduction="sum_over_batch_size", dtype=dtype)
        for key, value in (
            ("num_buckets", num_buckets),
            ("bucket_size_x", bucket_size_x),
            ("catalog_chunk_size", catalog_chunk_size),
        ):
            sce_ops.checks.check_positive_int(value, key, allow_none=True)
        sce_ops.checks.check_positive_int(bucket_size_y, "bucket_size_y")
        if padding_id is not None and (not isinstance(padding_id, int) or padding_id < 0):
            raise ValueError(f"`padding_id` must be a non-negative int or None, got {padding_id!r}")
        self.num_buckets = num_buckets
        self.bucket_size_x = bucket_size_x
        self.bucket_size_y = bucket_size_y
        self.mix_x = bool(mix_x)
        self.padding_id = padding_id
        self.catalog_chunk_size = catalog_chunk_size
        self.seed = seed
        self.check_ids = bool(check_ids)
        self._seed_stream = None if seed is None else sce_ops.SeedStream(seed)
        self._item_embeddings = None
        self._table_path = None
        self.bind(item_embeddings)

    # -- the item table -------------------------------------------------------------
    def bind(self, item_embeddings):
        """Points the loss at its item table and returns ``self``.

        ``item_embeddings``: an Embedding-like layer, a variable, a Keras model
        (the table is then found by the variable path saved with the loss), a
        variable path string, or None (unbound).
        """
        if isinstance(item_embeddings, keras.Model) and self._table_path is not None:
            matches = [v for v in item_embeddings.variables if v.path == self._table_path]
            if not matches:
                raise ValueError(
                    f"SCELoss: no variable with path {self._table_path!r} in model "
                    f"{item_embeddings.name!r}; pass the item embedding layer instead."
                )
            item_embeddings = matches[0]
        if isinstance(item_embeddings, str):
            self._table_path = item_embeddings
            self._item_embeddings = None
            return self
        if item_embeddings is not None:
            resolve_table(item_embeddings, allow_unbuilt=True)  # validates the kind
        self._item_embeddings = item_embeddings
        return self

    @property
    def item_embeddings(self):
        return self._item_embeddings

    def _table(self):
        if self._item_embeddings is None:
            where = f" (saved table path: {self._table_path!r})" if self._table_path else ""
            raise ValueError(
                "This SCELoss is not bound to an item table" + where + ". Pass the item "
                "embedding layer or variable to SCELoss(...), or after "
                "keras.saving.load_model call `model.loss.bind(model)` "
                "(keras_sce.load_model does it for you)."
            )
        return table_value(resolve_table(self._item_embeddings))

    # -- computation ----------------------------------------------------------------
    def _kwargs(self):
        return dict(
            num_buckets=self.num_buckets,
            bucket_size_x=self.bucket_size_x,
            bucket_size_y=self.bucket_size_y,
            mix_x=self.mix_x,
            padding_id=self.padding_id,
            catalog_chunk_size=self.catalog_chunk_size,
            check_ids=self.check_ids,
        )

    def _next_seed(self):
        return None if self._seed_stream is None else self._seed_stream.next()

    def call(self, y_true, y_pred, sample_weight=None):
        return sce_ops.scalable_cross_entropy(
            y_pred,
            y_true,
            self._table(),
            seed=self._next_seed(),
            sample_weight=sample_weight,
            **self._kwargs(),
        )

    def __call__(self, y_true, y_pred, sample_weight=None):
        # Keras' default __call__ casts ids to float and re-reduces a per-sample
        # loss; SCE's ids stay integers and its reduction is part of the method.
        if in_symbolic_scope():
            # Keras only infers output specs here (and, under tf.distribute, hands
            # placeholder targets of a made-up float dtype): check what can be
            # checked statically and return a float32 scalar of the right kind.
            table = self._table()
            sce_ops.checks.check_table(tf.convert_to_tensor(y_pred), table)
            return tf.zeros([], tf.float32)
        with keras.name_scope(self.name):
            return self.call(y_true, y_pred, sample_weight)

    def diagnostics(self, y_true, y_pred):
        """Bucket statistics for one batch (draws its own centres).

        Returns a dict of scalars: ``loss``, ``covered_fraction`` (share of
        non-padding positions that fall in at least one bucket) and
        ``buckets_per_covered_row``. Use it to tune ``num_buckets`` and
        ``bucket_size_x``: low coverage means many positions get no loss at all.
        See also :class:`keras_sce.losses.SCECoverage` for a metric during ``fit``.
        """
        loss, details = sce_ops.scalable_cross_entropy(
            y_pred, y_true, self._table(), seed=self._next_seed(), return_details=True,
            **self._kwargs(),
        )
        return {"loss": loss, **details}

    # -- serialization --------------------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.pop("reduction", None)
        path = self._table_path
        if self._item_embeddings is not None:
            try:
                path = resolve_table(self._item_embeddings).path
            except (AttributeError, ValueError):
                path = None
        config.update(
            item_embeddings=path,
            num_buckets=self.num_buckets,
            bucket_size_x=self.bucket_size_x,
            bucket_size_y=self.bucket_size_y,
            mix_x=self.mix_x,
            padding_id=self.padding_id,
            catalog_chunk_size=self.catalog_chunk_size,
            seed=self.seed,
            check_ids=self.check_ids,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        table = config.pop("item_embeddings", None)
        return cls(table, **config)
