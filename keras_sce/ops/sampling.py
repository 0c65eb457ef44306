"""Sampling primitives shared by the sampled losses and (calibrated) SCE.

A reproducible stream of seeds (`SeedStream`), stateless draws with a named
algorithm, and the map between the `C - 1` non-padding items and a compact range
`[0, C - 1)` that samplers draw from.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_sce._options import inclusion_log_probabilities  # noqa: F401 - shared with kops
from keras_sce.ops import checks

# Named, not "auto_select": XLA's automatic choice differs from the eager one, and
# the same seed must give the same draws with and without jit_compile.
STATELESS_ALG = "philox"


def stateless_seed(seed):
    """A `[2]` int64 seed tensor from an int (`[seed, 0]`) or a seed tensor."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)):
        return tf.constant([int(seed), 0], tf.int64)
    return seed


def to_real_ids(ids, padding_id):
    """Maps `[0, C-1)` onto the `C - 1` non-padding ids of `[0, C)`."""
    if padding_id is None:
        return ids
    return tf.where(ids >= padding_id, ids + 1, ids)


def to_compact_ids(ids, padding_id):
    """Inverse of `to_real_ids` (for non-padding ids)."""
    if padding_id is None:
        return ids
    return tf.where(ids > padding_id, ids - 1, ids)



def random_uniform(shape, seed, dtype=tf.float32, minval=0, maxval=None):
    """Stateless with a seed (int or `[2]` tensor); the global generator without."""
    if seed is None:
        return tf.random.uniform(shape, minval, maxval, dtype=dtype)
    return tf.random.stateless_uniform(
        shape, seed=stateless_seed(seed), minval=minval, maxval=maxval, dtype=dtype,
        alg=STATELESS_ALG,
    )


def sample_without_replacement(num_real, num_sampled, log_q, seed):
    """`num_sampled` distinct compact ids in `[0, num_real)`, drawn one after the other
    proportionally to `q` (uniform when `log_q` is None).

    The Gumbel top-k trick: the `k` largest of `log q_i + Gumbel_i` are
    distributed as `k` successive draws without replacement (what TensorFlow's
    `unique=True` candidate samplers do by rejection), with static shapes, so it
    compiles under XLA.
    """
    tiny = np.finfo(np.float32).tiny
    u = random_uniform([num_real], seed, minval=tiny, maxval=1.0)
    keys = -tf.math.log(-tf.math.log(u))
    if log_q is not None:
        keys = keys + tf.constant(log_q, tf.float32)
    return tf.math.top_k(keys, k=num_sampled, sorted=False).indices


class SeedStream:
    """A deterministic stream of stateless seeds: fresh centres at every call.

    Holds one int64 counter variable (starting at `start`, e.g. the position
    saved with a model); each `next` returns `[seed, counter]` and
    advances the counter, so the sequence of bucket centres is reproducible
    from `seed` while every training step draws new ones. Pure TensorFlow, so the
    Keras loss and the TFRS task share it. Under a `tf.distribute` strategy every
    replica reads the same counter (only the first replica's update is kept), so
    replicas use the same centres on their own shards of the batch.
    """

    def __init__(self, seed: int, start: int = 0):
        self.seed = checks.as_int(seed, "seed")
        start = checks.as_int(start, "seed_position", minimum=0)
        self._start = start
        self._counter = tf.Variable(
            start,
            dtype=tf.int64,
            trainable=False,
            name="sce_seed_counter",
            aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )

    @property
    def counter(self) -> tf.Variable:
        """The int64 position in the stream (a variable: track it to checkpoint it)."""
        return self._counter

    def position(self) -> int:
        """The current position as a Python int (what a saved config records).

        Read eagerly; inside a traced function (where the value is not known yet)
        it is the position the stream started from.
        """
        if not tf.inside_function():
            return int(self._counter.numpy())
        return self._start

    def next(self) -> tf.Tensor:
        """The next `[2]` int64 seed `[seed, position]`; advances the position."""
        context = tf.distribute.get_replica_context()
        if (
            context is not None
            and context.num_replicas_in_sync > 1
            and not isinstance(self._counter, tf.distribute.DistributedValues)
        ):
            raise RuntimeError(
                "keras_sce: this seeded loss was created outside the distribution "
                "strategy's scope, so its replicas would race on one seed counter. Create "
                "the loss (e.g. SCELoss(..., seed=...)) inside `with strategy.scope():`, "
                "or use seed=None."
            )
        step = self._counter.read_value()
        with tf.control_dependencies([step]):
            self._counter.assign_add(1)
        return tf.stack([tf.constant(self.seed, tf.int64), step])

    def reset(self) -> None:
        """Restarts the stream at position 0."""
        self._counter.assign(0)
