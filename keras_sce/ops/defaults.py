"""The rules and defaults of the core, each defined once.

The Keras loss, the TFRS task, the memory model, the bucket tuner and the main job
import them from here, so that a default changes in one place only. Plain Python:
TensorFlow is imported only by `default_num_buckets_tensor`, when called.
"""

from __future__ import annotations

import math

#: Items per chunk of SCE's streamed item search (`chunk_size`). Its peak is
#: `n_b x (b_y + chunk)` scores; a catalogue up to this size is searched at once.
DEFAULT_CHUNK_SIZE = 65_536

#: Items per SCE bucket `b_y` (hard negatives per row): the paper uses 64-4096.
DEFAULT_BUCKET_SIZE_Y = 256


def default_num_buckets(num_rows) -> int:
    """The authors' rule `n_b = b_x = int(2 * sqrt(T))` for `T` rows per batch.

    `T` is the number of rows that carry a loss (batch x length for a full batch;
    pass the expected non-padding tokens when batches hold much padding). At least 1.

    Args:
        num_rows: `T`, an int or float (an expected count may be fractional).

    Returns:
        A Python int `>= 1`.

    Example:

    >>> default_num_buckets(6400)
    160
    """
    return max(1, int(2 * math.sqrt(max(float(num_rows), 0.0))))


def default_num_buckets_tensor(num_rows):
    """`default_num_buckets` for a row count known only at run time (int32)."""
    import tensorflow as tf

    rows = tf.cast(tf.maximum(num_rows, 0), tf.float32)
    return tf.maximum(tf.cast(2.0 * tf.sqrt(rows), tf.int32), 1)
