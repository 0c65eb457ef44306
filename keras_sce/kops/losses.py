"""The baseline losses on the Keras backends other than TensorFlow (JAX), over `keras.ops`.

`keras_sce.losses.FullCrossEntropyLoss(...)`, `SampledSoftmaxLoss(...)`,
`SampledBCELoss(...)` and `GBCELoss(...)` return an instance of the class here of
the same name with a `KerasOps` prefix when Keras runs on another backend
(`ItemTableLoss.__new__` picks it, as `SCELoss` picks
`keras_sce.kops.loss.KerasOpsSCELoss`): a subclass with the same arguments, checks
and saved configuration, computed by `keras_sce.kops`.
What differs, as for `SCELoss`:

- Seeds: a step compiled by JAX cannot advance a stateful generator from inside a
  loss, so each call draws its negatives from `[seed, batch_fingerprint(y_true)]`:
  distinct batches get distinct negatives, a run is reproducible for a given
  `seed`, the same batch seen twice gets the same negatives. `seed=None` picks a
  random `seed` once, at construction (not saved); `seed_position` is accepted
  and has no effect.
- The table gradient is a dense `[C, d]` scatter-add (no `IndexedSlices`).
- No per-replica scaling: under JAX a distributed step computes one global loss.
"""

from __future__ import annotations

import keras
import numpy as np

from keras_sce import _options
from keras_sce.kops._tensors import batch_fingerprint
from keras_sce.kops.binary import gbce, sampled_bce
from keras_sce.kops.cross_entropy import full_cross_entropy
from keras_sce.kops.sampled import sampled_softmax
from keras_sce.losses import baselines


class KerasOpsItemTableLoss:
    """What the `keras.ops` losses change in `keras_sce.losses.ItemTableLoss` (a mixin).

    The TensorFlow-only parts are replaced: the seed stream (a `tf.Variable`
    counter) by a per-batch seed, and `__call__` (symbolic scope, `tf.distribute`
    scaling) by a plain call that keeps integer ids.
    """

    _keras_ops = True  # ItemTableLoss.__init__ then skips its TensorFlow-backend check

    def _init_seed(self, seed, seed_position=0):
        self.seed = _options.as_int(seed, "seed", allow_none=True)
        _options.as_int(seed_position, "seed_position", minimum=0)
        self._seed_stream = None
        self._base_seed = self.seed
        if self._base_seed is None:
            self._base_seed = int(np.random.default_rng().integers(2**31 - 1))

    def _batch_seed(self, y_true):
        """`[seed, batch_fingerprint(y_true)]`: fresh draws per batch, jit-friendly."""
        return keras.ops.stack(
            [keras.ops.convert_to_tensor(self._base_seed, "int32"), batch_fingerprint(y_true)]
        )

    def __call__(self, y_true, y_pred, sample_weight=None):
        with keras.name_scope(self.name):
            return self.call(y_true, y_pred, sample_weight)


class KerasOpsFullCrossEntropyLoss(KerasOpsItemTableLoss, baselines.FullCrossEntropyLoss):
    """`keras_sce.losses.FullCrossEntropyLoss` computed with `keras.ops`."""

    def _compute(self, y_true, y_pred, table, sample_weight):
        return full_cross_entropy(y_pred, y_true, table, padding_id=self.padding_id)


class KerasOpsSampledSoftmaxLoss(KerasOpsItemTableLoss, baselines.SampledSoftmaxLoss):
    """`keras_sce.losses.SampledSoftmaxLoss` computed with `keras.ops`."""

    def _compute(self, y_true, y_pred, table, sample_weight):
        return sampled_softmax(
            y_pred, y_true, table, num_sampled=self.num_sampled, sampler=self.sampler,
            item_counts=self.item_counts, distortion=self.distortion,
            padding_id=self.padding_id, seed=self._batch_seed(y_true),
        )


class KerasOpsSampledBCELoss(KerasOpsItemTableLoss, baselines.SampledBCELoss):
    """`keras_sce.losses.SampledBCELoss` computed with `keras.ops`."""

    def _compute(self, y_true, y_pred, table, sample_weight):
        return sampled_bce(
            y_pred, y_true, table, num_negatives=self.num_negatives,
            padding_id=self.padding_id, seed=self._batch_seed(y_true),
            logit_offset=self.logit_offset,
        )


class KerasOpsGBCELoss(KerasOpsItemTableLoss, baselines.GBCELoss):
    """`keras_sce.losses.GBCELoss` computed with `keras.ops`."""

    def _compute(self, y_true, y_pred, table, sample_weight):
        return gbce(
            y_pred, y_true, table, num_negatives=self.num_negatives, t=self.t,
            padding_id=self.padding_id, seed=self._batch_seed(y_true),
            logit_offset=self.logit_offset,
        )


_BY_BASE = {
    baselines.FullCrossEntropyLoss: KerasOpsFullCrossEntropyLoss,
    baselines.SampledSoftmaxLoss: KerasOpsSampledSoftmaxLoss,
    baselines.SampledBCELoss: KerasOpsSampledBCELoss,
    baselines.GBCELoss: KerasOpsGBCELoss,
}


def keras_ops_class(cls):
    """The `keras.ops` class that stands for the TensorFlow loss class `cls` (or `cls`)."""
    return _BY_BASE.get(cls, cls)


# Saved under the TensorFlow class's name ("keras_sce>GBCELoss", ...), and that name
# stays bound to the TensorFlow class, which picks the implementation of the backend
# that loads it.
for _base, _cls in _BY_BASE.items():
    _name = _base.__name__
    keras.saving.register_keras_serializable(package="keras_sce", name=_name)(_cls)
    keras.saving.get_custom_objects()[f"keras_sce>{_name}"] = _base
