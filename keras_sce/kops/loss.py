"""`SCELoss` on the Keras backends other than TensorFlow (JAX), over `keras.ops`.

`keras_sce.SCELoss(...)` returns an instance of `KerasOpsSCELoss` when
Keras runs on another backend: the same arguments, the same configuration (a model
saved on one backend loads on the other) and the same method, computed by
`keras_sce.kops.scalable_cross_entropy`. What differs:

- Centres: a training step compiled by JAX cannot advance a stateful generator
  from inside a loss, so each step seeds its centres from `(seed, batch)`:
  `[seed, batch_fingerprint(labels)]`. Distinct batches draw distinct centres
  and a run is reproducible for a given `seed`; the same batch seen twice gets
  the same centres. `seed=None` picks a random `seed` once, at construction
  (not saved). `seed_position` is accepted and has no effect.
- `calibration`: the same estimator, its samples drawn like the centres, from
  `(seed, batch)` (`keras_sce.kops.calibration` says what else differs).
- The table gradient is a dense `[C, d]` scatter-add (no `IndexedSlices`).
"""

from __future__ import annotations

import inspect

import keras
import numpy as np

from keras_sce import _options
from keras_sce._calibration import resolve_calibration
from keras_sce.kops._tensors import batch_fingerprint
from keras_sce.kops.sce import scalable_cross_entropy
from keras_sce.kops.sharded import table_sharding
from keras_sce.losses.sce_loss import SCELoss
from keras_sce.utils import resolve_table

# SCELoss's keyword arguments and their defaults, read from its signature.
_SCE_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(SCELoss.__init__).parameters.items()
    if parameter.kind is inspect.Parameter.KEYWORD_ONLY
}


class KerasOpsSCELoss(SCELoss):
    """`keras_sce.SCELoss` computed with `keras.ops` (JAX and other backends).

    Made by `keras_sce.SCELoss(...)` itself when the Keras backend is not
    TensorFlow; see `keras_sce.SCELoss` for the arguments and the module
    docstring for what differs from the TensorFlow version.

    Example:

    >>> import keras, keras_sce
    >>> items = keras.layers.Embedding(1000, 16)
    >>> loss = keras_sce.SCELoss(items, bucket_size_y=64, seed=0)
    """

    def __init__(self, item_embeddings=None, **kwargs):
        options = {**_SCE_DEFAULTS, **kwargs}
        reduction = options.pop("reduction", "sum_over_batch_size")
        if reduction not in ("sum_over_batch_size", None):
            raise ValueError(
                "SCELoss always returns the mean over covered non-padding positions; "
                f"`reduction`={reduction!r} is not supported."
            )
        unknown = sorted(set(options) - set(_SCE_DEFAULTS))
        if unknown:
            raise TypeError(f"Unexpected keyword arguments for SCELoss: {unknown}")
        # keras.losses.Loss directly: ItemTableLoss.__init__ requires TensorFlow.
        keras.losses.Loss.__init__(
            self, name=options["name"], reduction="sum_over_batch_size", dtype=options["dtype"]
        )
        self.padding_id = _options.check_padding_id(options["padding_id"], None)
        (
            self.num_buckets,
            self.bucket_size_x,
            self.bucket_size_y,
            self.chunk_size,
        ) = _options.check_sce_sizes(
            options["num_buckets"], options["bucket_size_x"], options["bucket_size_y"],
            options["chunk_size"],
        )
        self.mix_x = bool(options["mix_x"])
        self._calibration = resolve_calibration(options["calibration"])
        # As saved: the options' config dict (SCELoss keeps the same attribute).
        self.calibration = None if self._calibration is None else self._calibration.get_config()
        self.check_ids = bool(options["check_ids"])
        self.seed = _options.as_int(options["seed"], "seed", allow_none=True)
        _options.as_int(options["seed_position"], "seed_position", minimum=0)
        self._seed_stream = None
        self._base_seed = self.seed
        if self._base_seed is None:
            self._base_seed = int(np.random.default_rng().integers(2**31 - 1))
        self._item_embeddings = None
        self._table_path = None
        self.bind(item_embeddings)

    def _kwargs(self):
        # SCELoss keeps its options in a validated SCEOptions (TensorFlow checks);
        # this class validated them with keras.ops checks in __init__.
        return dict(
            num_buckets=self.num_buckets, bucket_size_x=self.bucket_size_x,
            bucket_size_y=self.bucket_size_y, mix_x=self.mix_x, padding_id=self.padding_id,
            chunk_size=self.chunk_size, check_ids=self.check_ids, calibration=self._calibration,
        )

    def _compute(self, y_true, y_pred, table, sample_weight):
        seed = keras.ops.stack(
            [keras.ops.convert_to_tensor(self._base_seed, "int32"), batch_fingerprint(y_true)]
        )
        # A table split by rows under keras.distribution is searched shard by shard.
        sharding = table_sharding(resolve_table(self._item_embeddings))
        return scalable_cross_entropy(
            y_pred, y_true, table, seed=seed, sample_weight=sample_weight,
            item_sharding=sharding, **self._kwargs(),
        )

    def __call__(self, y_true, y_pred, sample_weight=None):
        # No per-replica scaling: under JAX a distributed step computes one global loss.
        with keras.name_scope(self.name):
            return self.call(y_true, y_pred, sample_weight)

    def diagnostics(self, y_true, y_pred):
        """Bucket statistics for one batch; see `keras_sce.SCELoss.diagnostics`."""
        loss, details = scalable_cross_entropy(
            y_pred, y_true, self._table(), seed=(self._base_seed, -1), return_details=True,
            **self._kwargs(),
        )
        return {"loss": loss, **details}


# Saved as "keras_sce>SCELoss", and that name stays bound to SCELoss, which picks the
# implementation of the backend that loads it.
keras.saving.register_keras_serializable(package="keras_sce", name="SCELoss")(KerasOpsSCELoss)
keras.saving.get_custom_objects()["keras_sce>SCELoss"] = SCELoss
