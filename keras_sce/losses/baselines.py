"""Keras 3 wrappers of the baseline losses in :mod:`keras_sce.ops.sampled`.

They share `SCELoss`'s calling convention: the model outputs hidden states
``[B, d]`` or ``[B, L, d]``, ``y_true`` holds item ids, and the loss reads the
item table (an Embedding-like layer or a variable) at every call, so the table
is trained. They are meant to be compared with `keras_sce.SCELoss` on equal terms.
"""

from __future__ import annotations

import keras

from keras_sce.ops import SeedStream
from keras_sce.ops import sampled as sampled_ops
from keras_sce.utils import require_tensorflow_backend, resolve_table, table_value


class ItemTableLoss(keras.losses.Loss):
    """Base class: a loss of (hidden states, item ids) against a bound item table.

    Subclasses implement ``_compute(y_true, y_pred, table)`` and list their
    hyper-parameters in ``_config_keys``. Ids stay integers (Keras' default
    ``__call__`` would cast them to float) and the reduction is the op's own
    mean over non-padding positions.
    """

    _config_keys: tuple[str, ...] = ()

    def __init__(self, item_embeddings=None, *, padding_id=0, name=None, dtype=None):
        require_tensorflow_backend(type(self).__name__)
        super().__init__(name=name, reduction="sum_over_batch_size", dtype=dtype)
        if padding_id is not None and (not isinstance(padding_id, int) or padding_id < 0):
            raise ValueError(f"`padding_id` must be a non-negative int or None, got {padding_id!r}")
        self.padding_id = padding_id
        self._item_embeddings = None
        self._table_path = None
        self.bind(item_embeddings)

    def bind(self, item_embeddings):
        """Points the loss at its table (layer, variable, model or variable path)."""
        if isinstance(item_embeddings, keras.Model) and self._table_path is not None:
            matches = [v for v in item_embeddings.variables if v.path == self._table_path]
            if not matches:
                raise ValueError(
                    f"{type(self).__name__}: no variable with path {self._table_path!r} in "
                    f"model {item_embeddings.name!r}; pass the item embedding layer instead."
                )
            item_embeddings = matches[0]
        if isinstance(item_embeddings, str):
            self._table_path = item_embeddings
            self._item_embeddings = None
            return self
        if item_embeddings is not None:
            resolve_table(item_embeddings, allow_unbuilt=True)
        self._item_embeddings = item_embeddings
        return self

    @property
    def item_embeddings(self):
        return self._item_embeddings

    def _table(self):
        if self._item_embeddings is None:
            raise ValueError(
                f"This {type(self).__name__} is not bound to an item table; pass the item "
                "embedding layer or variable, or call `loss.bind(model)` after loading."
            )
        return table_value(resolve_table(self._item_embeddings))

    def call(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise NotImplementedError(f"{type(self).__name__} does not take sample weights.")
        return self._compute(y_true, y_pred, self._table())

    def __call__(self, y_true, y_pred, sample_weight=None):
        with keras.name_scope(self.name):
            return self.call(y_true, y_pred, sample_weight)

    def get_config(self):
        config = super().get_config()
        config.pop("reduction", None)
        path = self._table_path
        if self._item_embeddings is not None:
            try:
                path = resolve_table(self._item_embeddings).path
            except (AttributeError, ValueError):
                path = None
        config.update(item_embeddings=path, padding_id=self.padding_id)
        config.update({key: getattr(self, key) for key in self._config_keys})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        table = config.pop("item_embeddings", None)
        return cls(table, **config)


@keras.saving.register_keras_serializable(package="keras_sce")
class FullCrossEntropyLoss(ItemTableLoss):
    """Exact softmax cross-entropy over the whole catalogue, on valid rows only.

    The non-padding positions are gathered first, then scored against every item
    (``M x C`` logits for ``M`` real positions): the full-CE baseline SCE is
    compared with. See :func:`keras_sce.ops.sampled.gathered_cross_entropy`.

    Args:
        item_embeddings: Embedding-like layer or ``[C, d]`` variable.
        padding_id: ignored label / excluded item (None: no padding row).
        name: loss name.

    Call arguments:
        y_true: int ``[B]`` or ``[B, L]`` item ids.
        y_pred: float ``[B, d]`` or ``[B, L, d]`` hidden states.

    Example:

    >>> import keras, keras_sce
    >>> model = keras_sce.models.SASRec(num_items=1000, max_length=20, hidden_dim=16)
    >>> model.compile("adam", loss=keras_sce.losses.FullCrossEntropyLoss(
    ...     model.item_embedding_layer))
    """

    def __init__(self, item_embeddings=None, *, padding_id=0, name="full_ce_loss", dtype=None):
        super().__init__(item_embeddings, padding_id=padding_id, name=name, dtype=dtype)

    def _compute(self, y_true, y_pred, table):
        return sampled_ops.gathered_cross_entropy(y_pred, y_true, table, padding_id=self.padding_id)


@keras.saving.register_keras_serializable(package="keras_sce")
class SampledSoftmaxLoss(ItemTableLoss):
    """Sampled softmax with logQ correction (``tf.nn.sampled_softmax_loss``).

    ``num_sampled`` negatives shared by the batch, uniform or by popularity
    (``sampler="unigram"`` with ``item_counts``), logits corrected by the log of
    the sampling probability. See :func:`keras_sce.ops.sampled.sampled_softmax`.

    Args:
        item_embeddings: Embedding-like layer or ``[C, d]`` variable.
        num_sampled: negatives per step. Defaults to 256.
        sampler: ``"uniform"`` or ``"unigram"``.
        item_counts: per-id counts (a list/array of length C) for ``"unigram"``.
        distortion: exponent on the counts. Defaults to 1.0.
        padding_id: ignored label / never a negative.
        seed: optional int seed of the sampler.

    References:
        Yi et al., RecSys 2019 (logQ correction); Jean et al., arXiv 1412.2007.
    """

    _config_keys = ("num_sampled", "sampler", "item_counts", "distortion", "seed")

    def __init__(
        self,
        item_embeddings=None,
        *,
        num_sampled=256,
        sampler="uniform",
        item_counts=None,
        distortion=1.0,
        padding_id=0,
        seed=None,
        name="sampled_softmax_loss",
        dtype=None,
    ):
        super().__init__(item_embeddings, padding_id=padding_id, name=name, dtype=dtype)
        if sampler == "unigram" and item_counts is None:
            raise ValueError("sampler='unigram' needs item_counts.")
        self.num_sampled = num_sampled
        self.sampler = sampler
        self.item_counts = None if item_counts is None else [float(c) for c in item_counts]
        self.distortion = distortion
        self.seed = seed

    def _compute(self, y_true, y_pred, table):
        return sampled_ops.sampled_softmax(
            y_pred,
            y_true,
            table,
            num_sampled=self.num_sampled,
            sampler=self.sampler,
            item_counts=self.item_counts,
            distortion=self.distortion,
            padding_id=self.padding_id,
            seed=self.seed,
        )


@keras.saving.register_keras_serializable(package="keras_sce")
class SampledBCELoss(ItemTableLoss):
    """Binary cross-entropy with ``num_negatives`` uniform negatives per position.

    ``num_negatives=1`` is the original SASRec loss. Negatives are fresh at every
    step (reproducible with ``seed``). See :func:`keras_sce.ops.sampled.sampled_bce`.

    Args:
        item_embeddings: Embedding-like layer or ``[C, d]`` variable.
        num_negatives: negatives per position. Defaults to 1.
        padding_id: ignored label / never a negative.
        seed: optional int; the stream of negatives is then reproducible.

    References:
        Kang & McAuley, "Self-Attentive Sequential Recommendation", arXiv 1808.09781.
    """

    _config_keys = ("num_negatives", "seed")

    def __init__(
        self,
        item_embeddings=None,
        *,
        num_negatives=1,
        padding_id=0,
        seed=None,
        name="sampled_bce_loss",
        dtype=None,
    ):
        super().__init__(item_embeddings, padding_id=padding_id, name=name, dtype=dtype)
        self.num_negatives = num_negatives
        self.seed = seed
        self._seeds = None if seed is None else SeedStream(seed)

    def _seed(self):
        return None if self._seeds is None else self._seeds.next()

    def _compute(self, y_true, y_pred, table):
        return sampled_ops.sampled_bce(
            y_pred,
            y_true,
            table,
            num_negatives=self.num_negatives,
            padding_id=self.padding_id,
            seed=self._seed(),
        )


@keras.saving.register_keras_serializable(package="keras_sce")
class GBCELoss(SampledBCELoss):
    """gBCE: BCE with the positive's probability raised to ``beta`` (gSASRec).

    ``beta = alpha * (t * (1 - 1/alpha) + 1/alpha)`` with the sampling rate
    ``alpha = num_negatives / (C - 1)`` counters the over-confidence that negative
    sampling causes. See :func:`keras_sce.ops.sampled.gbce`.

    Args:
        item_embeddings: Embedding-like layer or ``[C, d]`` variable.
        num_negatives: uniform negatives per position. Defaults to 256.
        t: calibration in ``[0, 1]``. Defaults to 0.75.
        padding_id: ignored label / never a negative.
        seed: optional int.

    References:
        Petrov & Macdonald, "gSASRec: Reducing Overconfidence in Sequential
        Recommendation Trained with Negative Sampling", RecSys 2023, arXiv 2308.07192.
    """

    _config_keys = ("num_negatives", "t", "seed")

    def __init__(
        self,
        item_embeddings=None,
        *,
        num_negatives=256,
        t=0.75,
        padding_id=0,
        seed=None,
        name="gbce_loss",
        dtype=None,
    ):
        super().__init__(
            item_embeddings,
            num_negatives=num_negatives,
            padding_id=padding_id,
            seed=seed,
            name=name,
            dtype=dtype,
        )
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t must be in [0, 1], got {t}.")
        self.t = t

    def _compute(self, y_true, y_pred, table):
        return sampled_ops.gbce(
            y_pred,
            y_true,
            table,
            num_negatives=self.num_negatives,
            t=self.t,
            padding_id=self.padding_id,
            seed=self._seed(),
        )
