"""Scalable Cross-Entropy (arXiv 2409.18721) in `keras.ops`, for every Keras backend.

The same method and contract as the TensorFlow core (`keras_sce.ops.scalable_cross_entropy`),
written with `keras.ops` so that it runs on JAX: under JAX the centres come from
`jax.random` and the streamed item search is a `jax.lax.scan` over catalogue
chunks (see `keras_sce.kops.search`); `keras.ops.top_k` and
`keras.ops.segment_max` map to `jax.lax.top_k` and `jax.ops.segment_max`.
Differences from the TensorFlow core: the table gradient is a dense `[C, d]`
scatter-add (JAX has no `IndexedSlices`); bad ids and bad weights raise a
`ValueError` when the values are concrete and turn the loss NaN when traced;
calibrated SCE draws its samples from the backend's generator
(`keras_sce.kops.calibration` says what else differs); `seed=None` gives centres
(and samples) derived from the batch.
"""

from __future__ import annotations

import functools

from keras import ops

from keras_sce import _options
from keras_sce._calibration import resolve_calibration
from keras_sce.kops._tensors import all_finite, draw_centers, dtype_of, prepare_rows, safe_ratio
from keras_sce.kops.calibration import calibrated_row_loss
from keras_sce.kops.search import NEG_INF, bucket_top_k
from keras_sce.kops.sharded import sharded_bucket_top_k, sharded_take
from keras_sce.ops.defaults import DEFAULT_BUCKET_SIZE_Y, default_num_buckets  # no TensorFlow


def scalable_cross_entropy(
    hidden,
    labels,
    item_table,
    *,
    num_buckets=None,
    bucket_size_x=None,
    bucket_size_y=DEFAULT_BUCKET_SIZE_Y,
    mix_x=False,
    padding_id=0,
    chunk_size=None,
    seed=None,
    centers=None,
    calibration=None,
    sample_weight=None,
    check_ids=True,
    return_details=False,
    item_sharding=None,
):
    """Scalable Cross-Entropy of hidden states against an item table, in `keras.ops`.

    The algorithm and the arguments of `keras_sce.ops.scalable_cross_entropy`
    (arXiv 2409.18721): buckets of the `b_x` rows and `b_y` items closest to
    random centres, a softmax per row over its positive and its bucket's items (its
    own target masked), the largest bucket loss per row, the mean over covered
    valid rows. Each covered row's loss is a lower bound of its full CE; with one
    bucket holding every row and every item it is the full CE.

    Args:
        hidden: float `[..., d]` hidden states.
        labels: integer `[...]` target ids.
        item_table: float `[C, d]` table (a Keras variable or a tensor; under JAX
            its gradient is a dense scatter-add into `[C, d]`).
        num_buckets: `n_b`; None -> `int(2 * sqrt(N))`, `N` the number of rows.
        bucket_size_x: `b_x` rows per bucket; None -> the same rule; clamped to `N`.
        bucket_size_y: `b_y` items per bucket; clamped to the non-padding items.
        mix_x: centres as random mixtures of the batch's rows instead of Gaussian noise.
        padding_id: label of ignored rows and table row never used as a negative
            (None: no padding row).
        chunk_size: stream the item search over chunks of this many items
            (peak `n_b * (b_y + chunk)` scores); None computes `n_b x C` at once.
        seed: a Python int (the same centres at every call), an int pair or `[2]`
            tensor (a stateless seed, e.g. `[seed, step]`), or None (JAX: centres
            derived from the batch's labels; other backends: Keras' global generator).
        centers: optional fixed `[n_b, d]` centres (overrides `num_buckets`,
            `mix_x` and `seed`).
        calibration: None (off, the loss as published) or calibrated SCE: True
            (defaults), a dict of `keras_sce.ops.calibration.Calibration` options
            or a `Calibration`. Each covered row's loss then estimates its full
            softmax cross-entropy: its kept bucket's exact terms plus `m` sampled
            items for the rest of the catalogue (extra memory `N x m`); see
            `keras_sce.kops.calibration` and docs/calibrated-sce.md.
        sample_weight: optional non-negative weights broadcastable to `labels`.
        check_ids: check that labels lie in `[0, C)`: a concrete violation raises,
            a traced one turns the loss NaN.
        return_details: also return a dict of bucket statistics and per-row losses.
        item_sharding: JAX only: `(mesh, axis_name)` when the table's rows are split
            over that mesh axis (`SCELoss` finds it from the Keras distribution).
            The item search and the table reads then run shard by shard
            (`keras_sce.kops.sharded`): no device holds the whole table.

    Returns:
        A scalar (float32, or float64 for float64 inputs): 0 when no valid row is
        covered; NaN when a counted input is non-finite or ids are out of range.
        With `return_details`, `(loss, details)`.

    Raises:
        TypeError: non-float hidden states or table, non-integer labels.
        ValueError: mismatched shapes, bad options, bad ids or weights (concrete).

    Example:

    >>> import numpy as np
    >>> from keras_sce.kops import scalable_cross_entropy
    >>> rng = np.random.default_rng(0)
    >>> table = rng.normal(size=(500, 16)).astype("float32")
    >>> hidden = rng.normal(size=(4, 10, 16)).astype("float32")
    >>> labels = rng.integers(1, 500, size=(4, 10))
    >>> loss = scalable_cross_entropy(hidden, labels, table, bucket_size_y=64, seed=0)
    """
    calibration = resolve_calibration(calibration)
    rows = prepare_rows(hidden, labels, item_table, padding_id, sample_weight, check_ids)
    num_buckets, bucket_size_x, bucket_size_y, chunk = _options.check_sce_sizes(
        num_buckets, bucket_size_x, bucket_size_y, chunk_size
    )
    x, y, valid, weight, table = rows.x, rows.y, rows.valid, rows.weight, rows.table
    compute_dtype, padding_id, num_items = rows.dtype, rows.padding_id, table.shape[0]
    num_rows = x.shape[0]

    # 1. Positive logits (with gradient).
    if item_sharding is None:
        search, take_rows = bucket_top_k, lambda ids: ops.take(table, ids, axis=0)
    else:
        mesh, axis = item_sharding
        search = functools.partial(sharded_bucket_top_k, mesh=mesh, axis=axis)
        take_rows = functools.partial(sharded_take, table, mesh=mesh, axis=axis)
    positives = ops.sum(x * take_rows(y), axis=-1)

    # 2. Centres and 3. rows per bucket (no gradient).
    x_detached = ops.stop_gradient(x)
    rule = default_num_buckets(num_rows)
    if centers is not None:
        centers = ops.convert_to_tensor(centers)
        if "float" not in dtype_of(centers):
            raise TypeError(f"`centers` must be a floating-point tensor, got {dtype_of(centers)}.")
        centers = ops.cast(centers, compute_dtype)
    else:
        n_b = rule if num_buckets is None else num_buckets
        centers = draw_centers(x_detached, valid, n_b, mix_x, seed, y)
    centers = ops.stop_gradient(centers)
    if bucket_size_x is None:
        b_x = min(rule, num_rows)
    else:
        b_x = _options.clamp_bucket_size(bucket_size_x, num_rows, "bucket_size_x", "rows",
                                        stacklevel=4)
    row_scores = ops.matmul(centers, ops.transpose(x_detached))
    row_scores = ops.where(ops.expand_dims(valid, 0), row_scores, NEG_INF)
    _, bucket_rows = ops.top_k(row_scores, b_x, sorted=True)

    # 4. Items per bucket: the (streamed) maximum inner product search.
    available = num_items - (0 if padding_id is None else 1)
    b_y = _options.clamp_bucket_size(bucket_size_y, available, "bucket_size_y", "items",
                                    stacklevel=4)
    item_scores, bucket_items = search(
        centers, ops.stop_gradient(rows.raw_table), b_y, chunk_size=chunk, exclude_id=padding_id
    )
    item_ok = ops.not_equal(item_scores, NEG_INF)  # NaN scores are kept: they must show
    bucket_items = ops.where(item_ok, bucket_items, 0)

    # 5.-7. In-bucket logits, own target masked, softmax CE against the positive.
    x_b = ops.take(x, bucket_rows, axis=0)
    w_b = take_rows(bucket_items)
    logits = ops.einsum("bxd,byd->bxy", x_b, w_b)
    y_b = ops.take(y, bucket_rows, axis=0)
    drop = ops.logical_or(
        ops.expand_dims(bucket_items, 1) == ops.expand_dims(y_b, 2),
        ops.expand_dims(ops.logical_not(item_ok), 1),
    )
    logits = ops.where(drop, NEG_INF, logits)
    pos_b = ops.take(positives, bucket_rows, axis=0)
    lse = ops.logsumexp(ops.concatenate([logits, ops.expand_dims(pos_b, -1)], axis=-1), axis=-1)
    bucket_loss = lse - pos_b

    # 8. Each row keeps its largest bucket loss.
    member = ops.take(valid, bucket_rows, axis=0)
    flat_rows = ops.reshape(bucket_rows, (-1,))
    flat_member = ops.reshape(member, (-1,))
    flat_loss = ops.where(flat_member, ops.reshape(bucket_loss, (-1,)), NEG_INF)
    row_loss = ops.segment_max(flat_loss, flat_rows, num_segments=num_rows)
    membership = ops.segment_sum(ops.cast(flat_member, "int32"), flat_rows, num_segments=num_rows)
    kept = ops.logical_and(membership > 0, valid)
    if calibration is not None:  # add the estimated mass of the items no bucket saw
        row_loss = calibrated_row_loss(
            calibration, x=x, y=y, take_rows=take_rows, num_items=num_items,
            positives=positives, kept=kept, bucket_rows=bucket_rows, flat_loss=flat_loss,
            bucket_items=bucket_items, item_ok=item_ok, padding_id=padding_id, seed=seed,
        )
    row_loss = ops.where(kept, row_loss, ops.zeros_like(row_loss))

    # 9. Mean over covered valid rows; 0 when none is.
    kept_f = ops.cast(kept, compute_dtype)
    if weight is None:
        loss = safe_ratio(ops.sum(row_loss), ops.sum(kept_f))
    else:
        loss = safe_ratio(ops.sum(weight * row_loss), ops.sum(weight * kept_f))
    # A non-finite value in a row that counts shows in the loss (as in the TF core).
    finite = ops.all(ops.stack([
        all_finite(x),
        all_finite(positives, where=valid),
        all_finite(centers),
        all_finite(bucket_loss, where=member),
        rows.healthy,
    ]))
    loss = ops.where(finite, loss, float("nan"))
    if not return_details:
        return loss
    num_valid = ops.sum(ops.cast(valid, compute_dtype))
    num_covered = ops.sum(kept_f)
    details = {
        "covered_fraction": safe_ratio(num_covered, num_valid),
        "buckets_per_covered_row": safe_ratio(
            ops.sum(ops.cast(membership, compute_dtype) * kept_f), num_covered
        ),
        "num_valid_rows": num_valid,
        "num_covered_rows": num_covered,
        "row_loss": ops.reshape(row_loss, rows.shape),
        "row_covered": ops.reshape(kept, rows.shape),
    }
    return loss, details
