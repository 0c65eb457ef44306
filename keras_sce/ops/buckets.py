"""How SCE forms its buckets: size options, centres, rows and items per bucket.

The pieces of `keras_sce.ops.scalable_cross_entropy` that carry no gradient
(arXiv 2409.18721, steps 2-4): the centres are drawn afresh at every call, and the
rows and items of each bucket are the ones with the largest inner product with its
centre (`keras_sce.ops.top_k`).
"""

from __future__ import annotations

import contextlib

import tensorflow as tf

from keras_sce import compat
from keras_sce._options import check_sce_sizes as check_options  # noqa: F401 - shared with kops
from keras_sce.ops import checks, defaults
from keras_sce.ops.sampling import STATELESS_ALG, stateless_seed
from keras_sce.ops.top_k import top_k_xla


def draw_centers(x_detached, row_weight, num_buckets, mix_x, seed):
    """Bucket centres `[n_b, d]`; no gradient."""
    d = tf.shape(x_detached)[1]
    if mix_x:
        shape = tf.stack([tf.shape(x_detached)[0], num_buckets])
    else:
        shape = tf.stack([num_buckets, d])
    if seed is None:
        noise = tf.random.normal(shape, dtype=x_detached.dtype)
    else:
        noise = tf.random.stateless_normal(
            shape, seed=stateless_seed(seed), dtype=x_detached.dtype, alg=STATELESS_ALG
        )
    if mix_x:
        # Each centre is a random combination of the batch's own (non-padding) rows.
        noise = noise * row_weight[:, tf.newaxis]
        return tf.matmul(noise, x_detached, transpose_a=True)
    return noise


def resolve_row_sizes(num_rows_static, num_rows, num_buckets, bucket_size_x):
    """Static ints where the row count is static, scalar tensors otherwise."""
    if num_rows_static is not None:
        rule = defaults.default_num_buckets(num_rows_static)
        n_b = rule if num_buckets is None else num_buckets
        b_x = rule if bucket_size_x is None else bucket_size_x
        if bucket_size_x is not None:
            b_x = checks.clamp_bucket_size(b_x, num_rows_static, "bucket_size_x", "rows")
        else:
            b_x = min(b_x, num_rows_static)
        return n_b, b_x
    rule = defaults.default_num_buckets_tensor(num_rows)
    n_b = rule if num_buckets is None else num_buckets
    b_x = rule if bucket_size_x is None else tf.constant(bucket_size_x)
    return n_b, tf.minimum(b_x, num_rows)


def search_items(centers, item_table, k, chunk_size, padding_id):
    """The `k` items with the largest inner product with each centre, no gradient.

    The table goes in as stored; the search casts it chunk by chunk. A variable
    is handed to the compiled search itself, not read first: after a sparse update
    TensorFlow would copy the whole table on a dense read outside XLA (copy-on-read
    mode), at every step. Tapes are paused instead of `tf.stop_gradient` (which
    has no XLA kernel for a resource): no gradient flows through the search anyway.
    The handle (not the variable object) is passed, so the compiled search never
    holds on to a particular variable between calls.

    Returns:
        `(scores [n_b, k], items [n_b, k])` as `keras_sce.ops.bucket_top_k`.
    """
    pause = compat.pause_gradient_tapes()
    if (
        isinstance(item_table, tf.Variable)
        and pause is not None
        and item_table.shape.is_fully_defined()
    ):
        search_table = item_table.handle
        handle_spec = (int(item_table.shape[0]), int(item_table.shape[1]), item_table.dtype)
    else:
        search_table, pause = tf.stop_gradient(item_table), contextlib.nullcontext()
        handle_spec = None
    with pause:
        return top_k_xla(centers, search_table, k, chunk_size, None, padding_id, handle_spec)
