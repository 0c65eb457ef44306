"""Scalable Cross-Entropy (SCE) in TensorFlow ops.

Mezentsev, Gusak, Oseledets, Frolov, "Scalable Cross-Entropy Loss for Sequential
Recommendations with Large Item Catalogs", RecSys 2024, arXiv 2409.18721.

The full softmax cross-entropy over a catalogue of `C` items needs the `N x C`
logits of every row against every item. SCE keeps only the logits that matter most:
random bucket centres are drawn, each bucket gathers the `b_x` rows and the `b_y`
items with the largest inner product with its centre (a maximum inner product
search), and each row's softmax is taken over its positive and the items of its
bucket. Each covered row's loss is a lower bound of its full CE; with buckets that
cover everything it *is* the full CE.
"""

from __future__ import annotations

import tensorflow as tf

from keras_sce.ops import checks, defaults, inputs
from keras_sce.ops.buckets import check_options, draw_centers, resolve_row_sizes, search_items
from keras_sce.ops.calibration import calibrated_row_loss, resolve_calibration
from keras_sce.ops.top_k import top_k_impl

_NEG_INF = float("-inf")


def scalable_cross_entropy(
    hidden,
    labels,
    item_table,
    *,
    num_buckets=None,
    bucket_size_x=None,
    bucket_size_y=defaults.DEFAULT_BUCKET_SIZE_Y,
    mix_x=False,
    padding_id=0,
    chunk_size=None,
    seed=None,
    centers=None,
    calibration=None,
    sample_weight=None,
    check_ids=True,
    return_details=False,
    **deprecated,
):
    """Scalable Cross-Entropy of hidden states against an item table.

    Algorithm (arXiv 2409.18721, as the authors compute it): draw `n_b` bucket
    centres (Gaussian, or with `mix_x` random combinations of the batch's rows);
    each bucket takes the `b_x` rows and the `b_y` items with the largest inner
    product with its centre (items via `bucket_top_k`, streamed over the
    catalogue when `chunk_size` is set); inside a bucket each row's
    softmax runs over its positive logit and the bucket's items (its own target
    masked out, so the positive counts once); a row in several buckets keeps its
    largest bucket loss; the result is the mean over valid rows covered by at least
    one bucket. Centres and top-k choices carry no gradient; gradients reach the
    hidden states and, sparsely, the gathered rows of the item table.

    Args:
        hidden: float tensor `[..., d]` of hidden states (the model output).
        labels: integer tensor `[...]` of target item ids (int32 or int64).
        item_table: float `[C, d]` tensor or variable (read here, so it trains;
            its gradient is a `tf.IndexedSlices` over the gathered rows).
        num_buckets: `n_b`; None -> `int(2 * sqrt(N))` with `N` the number of
            rows (batch x length), the authors' rule.
        bucket_size_x: `b_x`, rows per bucket; None -> the same rule. Clamped to
            `N` (a warning when an explicit value is clamped).
        bucket_size_y: `b_y`, items per bucket (hard negatives); clamped to the
            number of non-padding items with a warning.
        mix_x: centres as random combinations of the batch's rows (the paper's
            remedy for bucket collapse) instead of Gaussian noise.
        padding_id: label of ignored rows, and table row never used as a negative;
            None when the table has no padding row.
        chunk_size: stream the item projection over chunks of this many items
            (peak `n_b * (b_y + chunk)` instead of `n_b * C`); None
            materialises it. (`catalog_chunk_size`, its former name, still
            works for one release with a `DeprecationWarning`.)
        seed: None (fresh centres from the global generator), a Python int (the
            same stateless centres at every call), or an int `[2]` seed tensor
            (e.g. `SeedStream.next()`: reproducible and fresh every call).
        centers: optional `[n_b, d]` tensor of fixed centres (tests, analysis);
            overrides `num_buckets`, `mix_x` and `seed` (which then seeds
            only the calibration samples).
        calibration: None (off, the loss as published) or calibrated SCE: True
            (defaults), a dict of `keras_sce.ops.calibration.Calibration`
            options, or a `Calibration`. Each row's normaliser then adds an
            importance-sampled, unbiased estimate of the mass of the items its
            bucket did not see (`num_samples` items per batch, shared by all rows),
            so that scores approach full-softmax log-probabilities. See
            docs/calibrated-sce.md.
        sample_weight: optional float weights broadcastable to `labels`; the
            result is then `sum(w * loss) / sum(w)` over covered valid rows.
        check_ids: verify that labels lie in `[0, C)`. Outside XLA a violation
            raises `InvalidArgumentError`; inside XLA (where assertions are
            dropped) the loss becomes NaN and its gradient zero.
        return_details: also return a dict of diagnostics: `covered_fraction`
            (valid rows covered by some bucket / valid rows),
            `buckets_per_covered_row`, `num_valid_rows`, `num_covered_rows`,
            and per position `row_loss` (0 where not kept) and `row_covered`.

    Non-finite inputs: a NaN or infinity in a valid row of `hidden`, in its
    positive logit (a non-finite table row that is some row's target) or in any
    in-bucket logit makes the loss NaN, eagerly and under XLA, whether or not a
    bucket covered that row. Ignored positions (padding, zero weight) may hold
    anything.

    Returns:
        A float32 scalar (0 with zero gradient when no finite valid row is covered;
        NaN when a counted input is non-finite), or
        `(loss, details)` with `return_details=True`.

    Example:

    >>> import tensorflow as tf
    >>> from keras_sce.ops import scalable_cross_entropy
    >>> table = tf.Variable(tf.random.normal([5000, 32]))
    >>> hidden = tf.random.normal([4, 50, 32])
    >>> labels = tf.random.uniform([4, 50], 1, 5000, dtype=tf.int32)
    >>> loss = scalable_cross_entropy(hidden, labels, table, bucket_size_y=128, seed=0)

    References:
        Mezentsev et al., RecSys 2024, arXiv 2409.18721.
    """
    chunk_size = checks.take_renamed(
        deprecated, "catalog_chunk_size", "chunk_size", chunk_size, None, "scalable_cross_entropy"
    )
    checks.refuse_unknown(deprecated, "scalable_cross_entropy()")
    num_buckets, bucket_size_x, bucket_size_y, chunk_size = check_options(
        num_buckets, bucket_size_x, bucket_size_y, chunk_size
    )
    calibration = resolve_calibration(calibration)
    rows = inputs.prepare_rows(
        hidden, labels, item_table, padding_id=padding_id, sample_weight=sample_weight,
        check_ids=check_ids,
    )
    x, y, valid, weight, item_table, padding_id = (
        rows.x, rows.y, rows.valid, rows.weight, rows.table, rows.padding_id
    )
    compute_dtype = x.dtype
    num_rows = tf.shape(x)[0]
    num_rows_static = x.shape[0]
    num_items_static = rows.num_items_static

    def rows_of(table_rows):
        return tf.cast(table_rows, compute_dtype)

    # 1. Positive logits (with gradient; sparse gradient into the table).
    positives = tf.reduce_sum(x * rows_of(tf.gather(item_table, y)), axis=-1)  # [N]

    # 2. Centres (no gradient).
    x_detached = tf.stop_gradient(x)
    if centers is not None:
        centers = checks.as_float_tensor(centers, "centers")
        centers = tf.stop_gradient(tf.cast(centers, compute_dtype))
        n_b = centers.shape[0]
        _, b_x = resolve_row_sizes(num_rows_static, num_rows, n_b, bucket_size_x)
    else:
        n_b, b_x = resolve_row_sizes(num_rows_static, num_rows, num_buckets, bucket_size_x)
        centers = draw_centers(x_detached, tf.cast(valid, compute_dtype), n_b, mix_x, seed)
        centers = tf.stop_gradient(centers)

    # 3. Rows per bucket (no gradient); padding rows are never chosen unless a bucket
    #    has no valid row left, and then they are masked out below.
    _, bucket_rows = top_k_impl(centers, x_detached, b_x, None, valid, None)

    # 4. Items per bucket: the streamed, XLA-compiled maximum inner product search.
    b_y = bucket_size_y
    if num_items_static is not None:
        b_y = checks.clamp_bucket_size(b_y, rows.num_real_items(), "bucket_size_y", "items")
    item_scores, bucket_items = search_items(centers, item_table, b_y, chunk_size, padding_id)
    # Empty slots (fewer than b_y items) score -inf; NaN scores are kept, so that a
    # NaN in the table shows in the loss instead of being dropped.
    item_ok = tf.not_equal(item_scores, tf.constant(_NEG_INF, item_scores.dtype))
    bucket_items = tf.where(item_ok, bucket_items, 0)

    # 5. In-bucket logits (with gradient).
    x_b = tf.gather(x, bucket_rows)  # [n_b, b_x, d]
    w_b = rows_of(tf.gather(item_table, bucket_items))  # [n_b, b_y, d]
    logits = tf.einsum("bxd,byd->bxy", x_b, w_b)

    # 6. Mask each row's own target (it comes back once as the positive column).
    y_b = tf.gather(y, bucket_rows)  # [n_b, b_x]
    drop = tf.logical_or(
        tf.equal(bucket_items[:, tf.newaxis, :], y_b[:, :, tf.newaxis]),
        tf.logical_not(item_ok)[:, tf.newaxis, :],
    )
    logits = tf.where(drop, tf.constant(_NEG_INF, compute_dtype), logits)

    # 7. Per (bucket, row) softmax CE against the positive.
    pos_b = tf.gather(positives, bucket_rows)  # [n_b, b_x]
    lse = tf.reduce_logsumexp(tf.concat([logits, pos_b[..., tf.newaxis]], axis=-1), axis=-1)
    bucket_loss = lse - pos_b

    # 8. Each row keeps its largest bucket loss (the tightest lower bound).
    member = tf.gather(valid, bucket_rows)  # padding rows picked by a starved bucket
    flat_rows = tf.reshape(bucket_rows, [-1])
    flat_member = tf.reshape(member, [-1])
    flat_loss = tf.where(
        flat_member, tf.reshape(bucket_loss, [-1]), tf.constant(_NEG_INF, compute_dtype)
    )
    row_loss = tf.math.unsorted_segment_max(flat_loss, flat_rows, num_rows)
    membership = tf.math.unsorted_segment_sum(tf.cast(flat_member, tf.int32), flat_rows, num_rows)
    kept = tf.logical_and(membership > 0, valid)
    if calibration is not None:  # add the estimated mass of the items no bucket saw
        row_loss = calibrated_row_loss(
            calibration, x=x, y=y, item_table=item_table, positives=positives,
            kept=kept, bucket_rows=bucket_rows, flat_loss=flat_loss,
            bucket_items=bucket_items, item_ok=item_ok, padding_id=padding_id, seed=seed,
        )
    row_loss = tf.where(kept, row_loss, tf.zeros_like(row_loss))

    # 9. Mean over covered valid rows; 0 (never NaN) when none is covered.
    kept_f = tf.cast(kept, compute_dtype)
    if weight is None:
        loss = tf.math.divide_no_nan(tf.reduce_sum(row_loss), tf.reduce_sum(kept_f))
    else:
        loss = tf.math.divide_no_nan(
            tf.reduce_sum(weight * row_loss), tf.reduce_sum(weight * kept_f)
        )
    # A non-finite value in a row that counts must show in this step's loss. It
    # need not reach any bucket by itself: top-k over NaN scores is arbitrary, so a
    # NaN row (or a NaN positive, from a NaN table row) can fall out of every
    # bucket while its NaN gradient still reaches the table. Checked here: the
    # valid rows of x (ignored rows are zeroed above), their positive logits, the
    # centres, and every in-bucket loss (NaN gathered items). O(N d) in all.
    finite = tf.reduce_all(
        tf.stack([
            checks.all_finite(x),
            checks.all_finite(positives, where=valid),
            checks.all_finite(centers),
            checks.all_finite(bucket_loss, where=member),
        ])
    )
    loss = checks.poison_if_invalid(loss, finite)
    if rows.ids_ok is not None:
        loss = checks.poison_if_invalid(loss, rows.ids_ok)
    if not return_details:
        return loss
    num_valid = tf.reduce_sum(tf.cast(valid, compute_dtype))
    num_covered = tf.reduce_sum(kept_f)
    details = {
        "covered_fraction": tf.math.divide_no_nan(num_covered, num_valid),
        "buckets_per_covered_row": tf.math.divide_no_nan(
            tf.reduce_sum(tf.cast(membership, compute_dtype) * kept_f), num_covered
        ),
        "num_valid_rows": num_valid,
        "num_covered_rows": num_covered,
        "row_loss": tf.reshape(row_loss, tf.shape(rows.labels)),
        "row_covered": tf.reshape(kept, tf.shape(rows.labels)),
    }
    return loss, details
