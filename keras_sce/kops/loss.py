"""``SCELoss`` on the Keras backends other than TensorFlow (JAX), over ``keras.ops``.

``keras_sce.SCELoss(...)`` returns an instance of :class:`KerasOpsSCELoss` when
Keras runs on another backend: the same arguments, the same configuration (a model
saved on one backend loads on the other) and the same method, computed by
:func:`keras_sce.kops.scalable_cross_entropy`. What differs:

- Centres: a training step compiled by JAX cannot advance a stateful generator
  from inside a loss, so each step seeds its centres from ``(seed, batch)``:
  ``[seed, batch_fingerprint(labels)]``. Distinct batches draw distinct centres
  and a run is reproducible for a given ``seed``; the same batch seen twice gets
  the same centres. ``seed=None`` picks a random ``seed`` once, at construction
  (not saved). ``seed_position`` is accepted and has no effect.
- ``calibration`` is not available (NotImplementedError).
- The table gradient is a dense ``[C, d]`` scatter-add (no ``IndexedSlices``).
"""

from __future__ import annotations

import keras
import numpy as np

from keras_sce.kops import _checks
from keras_sce.kops._tensors import batch_fingerprint
from keras_sce.kops.sce import scalable_cross_entropy
from keras_sce.losses.sce_loss import DEFAULT_CATALOG_CHUNK_SIZE, SCELoss


# Saved as "keras_sce>SCELoss" too, so that a model saved on either backend loads on both.
@keras.saving.register_keras_serializable(package="keras_sce", name="SCELoss")
class KerasOpsSCELoss(SCELoss):
    """:class:`keras_sce.SCELoss` computed with ``keras.ops`` (JAX and other backends).

    Made by ``keras_sce.SCELoss(...)`` itself when the Keras backend is not
    TensorFlow; see :class:`keras_sce.SCELoss` for the arguments and the module
    docstring for what differs from the TensorFlow version.

    Example:

    >>> import keras, keras_sce
    >>> items = keras.layers.Embedding(1000, 16)
    >>> loss = keras_sce.SCELoss(items, bucket_size_y=64, seed=0)
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
        calibration=None,
        check_ids=True,
        seed_position=0,
        name="sce_loss",
        dtype=None,
        **kwargs,
    ):
        reduction = kwargs.pop("reduction", "sum_over_batch_size")
        if reduction not in ("sum_over_batch_size", None):
            raise ValueError(
                "SCELoss always returns the mean over covered non-padding positions; "
                f"`reduction`={reduction!r} is not supported."
            )
        if kwargs:
            raise TypeError(f"Unexpected keyword arguments for SCELoss: {sorted(kwargs)}")
        if calibration is not None:
            raise NotImplementedError(
                f"SCELoss(calibration=...) needs the TensorFlow backend (Keras runs on "
                f"{keras.backend.backend()!r}); pass calibration=None."
            )
        # keras.losses.Loss directly: ItemTableLoss.__init__ requires TensorFlow.
        keras.losses.Loss.__init__(self, name=name, reduction="sum_over_batch_size", dtype=dtype)
        self.padding_id = _checks.padding_row(padding_id, None)
        (
            self.num_buckets,
            self.bucket_size_x,
            self.bucket_size_y,
            self.catalog_chunk_size,
        ) = _checks.sce_options(num_buckets, bucket_size_x, bucket_size_y, catalog_chunk_size)
        self.mix_x = bool(mix_x)
        self._calibration = self.calibration = None
        self.check_ids = bool(check_ids)
        self.seed = _checks.as_int(seed, "seed", allow_none=True)
        _checks.as_int(seed_position, "seed_position", minimum=0)
        self._seed_stream = None
        self._base_seed = self.seed
        if self._base_seed is None:
            self._base_seed = int(np.random.default_rng().integers(2**31 - 1))
        self._item_embeddings = None
        self._table_path = None
        self.bind(item_embeddings)

    def _compute(self, y_true, y_pred, table, sample_weight):
        seed = keras.ops.stack(
            [keras.ops.convert_to_tensor(self._base_seed, "int32"), batch_fingerprint(y_true)]
        )
        return scalable_cross_entropy(
            y_pred, y_true, table, seed=seed, sample_weight=sample_weight, **self._kwargs()
        )

    def __call__(self, y_true, y_pred, sample_weight=None):
        # No per-replica scaling: under JAX a distributed step computes one global loss.
        with keras.name_scope(self.name):
            return self.call(y_true, y_pred, sample_weight)

    def diagnostics(self, y_true, y_pred):
        """Bucket statistics for one batch; see :meth:`keras_sce.SCELoss.diagnostics`."""
        loss, details = scalable_cross_entropy(
            y_pred, y_true, self._table(), seed=(self._base_seed, -1), return_details=True,
            **self._kwargs(),
        )
        return {"loss": loss, **details}
