"""Sampling primitives shared by the sampled losses and calibrated SCE.

Stateless draws with a named algorithm, and the map between the ``C - 1`` non-padding
items and a compact range ``[0, C - 1)`` that samplers draw from.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Named, not "auto_select": XLA's automatic choice differs from the eager one, and
# the same seed must give the same draws with and without jit_compile.
STATELESS_ALG = "philox"


def stateless_seed(seed):
    """A ``[2]`` int64 seed tensor from an int (``[seed, 0]``) or a seed tensor."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)):
        return tf.constant([int(seed), 0], tf.int64)
    return seed


def to_real_ids(ids, padding_id):
    """Maps ``[0, C-1)`` onto the ``C - 1`` non-padding ids of ``[0, C)``."""
    if padding_id is None:
        return ids
    return tf.where(ids >= padding_id, ids + 1, ids)


def to_compact_ids(ids, padding_id):
    """Inverse of :func:`to_real_ids` (for non-padding ids)."""
    if padding_id is None:
        return ids
    return tf.where(ids > padding_id, ids - 1, ids)
