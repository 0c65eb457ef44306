"""Scalable Cross-Entropy (SCE) in TensorFlow ops.

Mezentsev, Gusak, Oseledets, Frolov, "Scalable Cross-Entropy Loss for Sequential
Recommendations with Large Item Catalogs", RecSys 2024, arXiv 2409.18721.

The full softmax cross-entropy over a catalogue of ``C`` items needs the ``N x C``
logits of every row against every item. SCE keeps only the logits that matter most:
random bucket centres are drawn, each bucket gathers the ``b_x`` rows and the ``b_y``
items with the largest inner product with its centre (a maximum inner product
search), and each row's softmax is taken over its positive and the items of its
bucket. Each covered row's loss is a lower bound of its full CE; with buckets that
cover everything it *is* the full CE.
"""

from __future__ import annotations

import contextlib
import math

import tensorflow as tf

try:  # Pauses every active gradient tape; TensorFlow's own (non-exported) helper.
    from tensorflow.python.eager.record import stop_recording as _stop_recording
except ImportError:  # pragma: no cover - other TensorFlow layouts
    _stop_recording = None

from keras_sce.ops import checks
from keras_sce.ops.bucketing import _bucket_top_k_impl, _bucket_top_k_xla
from keras_sce.ops.calibration import calibrated_row_loss, resolve_calibration
from keras_sce.ops.sampling import STATELESS_ALG, stateless_seed

_NEG_INF = float("-inf")


def default_num_buckets(num_rows: int) -> int:
    """The authors' rule ``n_b = b_x = int(2 * sqrt(T))`` for ``T`` rows per batch."""
    return max(1, int(2 * math.sqrt(max(int(num_rows), 1))))


class SeedStream:
    """A deterministic stream of stateless seeds: fresh centres at every call.

    Holds one int64 counter variable (starting at ``start``, e.g. the position
    saved with a model); each :meth:`next` returns ``[seed, counter]`` and
    advances the counter, so the sequence of bucket centres is reproducible
    from ``seed`` while every training step draws new ones. Pure TensorFlow, so the
    Keras loss and the TFRS task share it. Under a ``tf.distribute`` strategy every
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
        self._counter.assign(0)


def check_options(num_buckets, bucket_size_x, bucket_size_y, catalog_chunk_size) -> tuple:
    """Validates SCE's size options (shared by the op, ``SCELoss`` and ``SCERetrieval``).

    Returns them as Python ints (NumPy integers accepted), in the order given.
    """
    return (
        checks.check_positive_int(num_buckets, "num_buckets", allow_none=True),
        checks.check_positive_int(bucket_size_x, "bucket_size_x", allow_none=True),
        checks.check_positive_int(bucket_size_y, "bucket_size_y"),
        checks.check_positive_int(catalog_chunk_size, "catalog_chunk_size", allow_none=True),
    )




def _draw_centers(x_detached, row_weight, num_buckets, mix_x, seed):
    """Bucket centres ``[n_b, d]``; no gradient."""
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


def _resolve_row_sizes(num_rows_static, num_rows, num_buckets, bucket_size_x):
    """Static ints where the row count is static, scalar tensors otherwise."""
    if num_rows_static is not None:
        rule = default_num_buckets(num_rows_static)
        n_b = rule if num_buckets is None else num_buckets
        b_x = rule if bucket_size_x is None else bucket_size_x
        if bucket_size_x is not None:
            b_x = checks.clamp_bucket_size(b_x, num_rows_static, "bucket_size_x", "rows")
        else:
            b_x = min(b_x, num_rows_static)
        return n_b, b_x
    rule = tf.maximum(
        tf.cast(2.0 * tf.sqrt(tf.cast(tf.maximum(num_rows, 1), tf.float32)), tf.int32), 1
    )
    n_b = rule if num_buckets is None else num_buckets
    b_x = rule if bucket_size_x is None else tf.constant(bucket_size_x)
    return n_b, tf.minimum(b_x, num_rows)


def scalable_cross_entropy(
    hidden,
    labels,
    item_table,
    *,
    num_buckets=None,
    bucket_size_x=None,
    bucket_size_y=256,
    mix_x=False,
    padding_id=0,
    catalog_chunk_size=None,
    seed=None,
    centers=None,
    calibration=None,
    sample_weight=None,
    check_ids=True,
    return_details=False,
):
    """Scalable Cross-Entropy of hidden states against an item table.

    Algorithm (arXiv 2409.18721, as the authors compute it): draw ``n_b`` bucket
    centres (Gaussian, or with ``mix_x`` random combinations of the batch's rows);
    each bucket takes the ``b_x`` rows and the ``b_y`` items with the largest inner
    product with its centre (items via :func:`bucket_top_k`, streamed over the
    catalogue when ``catalog_chunk_size`` is set); inside a bucket each row's
    softmax runs over its positive logit and the bucket's items (its own target
    masked out, so the positive counts once); a row in several buckets keeps its
    largest bucket loss; the result is the mean over valid rows covered by at least
    one bucket. Centres and top-k choices carry no gradient; gradients reach the
    hidden states and, sparsely, the gathered rows of the item table.

    Args:
        hidden: float tensor ``[..., d]`` of hidden states (the model output).
        labels: integer tensor ``[...]`` of target item ids (int32 or int64).
        item_table: float ``[C, d]`` tensor or variable (read here, so it trains;
            its gradient is a ``tf.IndexedSlices`` over the gathered rows).
        num_buckets: ``n_b``; None -> ``int(2 * sqrt(N))`` with ``N`` the number of
            rows (batch x length), the authors' rule.
        bucket_size_x: ``b_x``, rows per bucket; None -> the same rule. Clamped to
            ``N`` (a warning when an explicit value is clamped).
        bucket_size_y: ``b_y``, items per bucket (hard negatives); clamped to the
            number of non-padding items with a warning.
        mix_x: centres as random combinations of the batch's rows (the paper's
            remedy for bucket collapse) instead of Gaussian noise.
        padding_id: label of ignored rows, and table row never used as a negative;
            None when the table has no padding row.
        catalog_chunk_size: stream the item projection over chunks of this many
            items (peak ``n_b * (b_y + chunk)`` instead of ``n_b * C``); None
            materialises it.
        seed: None (fresh centres from the global generator), a Python int (the
            same stateless centres at every call), or an int ``[2]`` seed tensor
            (e.g. ``SeedStream.next()``: reproducible and fresh every call).
        centers: optional ``[n_b, d]`` tensor of fixed centres (tests, analysis);
            overrides ``num_buckets``, ``mix_x`` and ``seed`` (which then seeds
            only the calibration samples).
        calibration: None (off, the loss as published) or calibrated SCE: True
            (defaults), a dict of :class:`~keras_sce.ops.calibration.Calibration`
            options, or a ``Calibration``. Each row's normaliser then adds an
            importance-sampled, unbiased estimate of the mass of the items its
            bucket did not see (``num_samples`` items per batch, shared by all rows),
            so that scores approach full-softmax log-probabilities. See
            docs/calibrated-sce.md.
        sample_weight: optional float weights broadcastable to ``labels``; the
            result is then ``sum(w * loss) / sum(w)`` over covered valid rows.
        check_ids: verify that labels lie in ``[0, C)``. Outside XLA a violation
            raises ``InvalidArgumentError``; inside XLA (where assertions are
            dropped) the loss becomes NaN and its gradient zero.

    Non-finite inputs: a NaN or infinity in a valid row of ``hidden``, in its
    positive logit (a non-finite table row that is some row's target) or in any
    in-bucket logit makes the loss NaN, eagerly and under XLA, whether or not a
    bucket covered that row. Ignored positions (padding, zero weight) may hold
    anything.
        return_details: also return a dict of diagnostics: ``covered_fraction``
            (valid rows covered by some bucket / valid rows),
            ``buckets_per_covered_row``, ``num_valid_rows``, ``num_covered_rows``,
            and per position ``row_loss`` (0 where not kept) and ``row_covered``.

    Returns:
        A float32 scalar (0 with zero gradient when no finite valid row is covered;
        NaN when a counted input is non-finite), or
        ``(loss, details)`` with ``return_details=True``.

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
    hidden = checks.as_float_tensor(hidden, "hidden")
    labels = checks.as_id_tensor(labels, "labels")
    item_table = checks.as_table(item_table)
    checks.check_labels_match(hidden, labels)
    checks.check_table(hidden, item_table)
    if not item_table.dtype.is_floating:
        raise TypeError(f"`item_table` must be floating point, got {item_table.dtype.name}.")
    num_items_static = item_table.shape[0]
    padding_id = checks.check_padding_id(padding_id, num_items_static)
    num_buckets, bucket_size_x, bucket_size_y, catalog_chunk_size = check_options(
        num_buckets, bucket_size_x, bucket_size_y, catalog_chunk_size
    )
    calibration = resolve_calibration(calibration)

    compute_dtype = tf.float32 if hidden.dtype in (tf.float16, tf.bfloat16) else hidden.dtype
    dim = hidden.shape[-1]
    x = tf.reshape(tf.cast(hidden, compute_dtype), [-1, dim if dim is not None else -1])
    y = tf.reshape(labels, [-1])
    num_rows = tf.shape(x)[0]
    num_rows_static = x.shape[0]
    num_items = tf.shape(item_table)[0] if num_items_static is None else num_items_static

    valid = tf.ones_like(y, dtype=tf.bool) if padding_id is None else tf.not_equal(y, padding_id)
    weight = None
    if sample_weight is not None:
        weight = checks.row_weights(sample_weight, labels, compute_dtype)
        valid = tf.logical_and(valid, tf.not_equal(weight, 0))
    # Ignored positions may hold anything (even NaN from fully masked attention):
    # zero them so that they reach neither the centres nor any gradient.
    x = tf.where(valid[:, tf.newaxis], x, tf.zeros_like(x))

    # Run-time id check (before any gather that could silently read zeros).
    all_valid = None
    if check_ids:
        assert_op, all_valid = checks.id_range_checks(y, num_items)
        with tf.control_dependencies([assert_op]):
            y = tf.identity(y)

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
        _, b_x = _resolve_row_sizes(num_rows_static, num_rows, n_b, bucket_size_x)
    else:
        n_b, b_x = _resolve_row_sizes(num_rows_static, num_rows, num_buckets, bucket_size_x)
        centers = _draw_centers(x_detached, tf.cast(valid, compute_dtype), n_b, mix_x, seed)
        centers = tf.stop_gradient(centers)

    # 3. Rows per bucket (no gradient); padding rows are never chosen unless a bucket
    #    has no valid row left, and then they are masked out below.
    _, bucket_rows = _bucket_top_k_impl(centers, x_detached, b_x, None, valid, None)

    # 4. Items per bucket: the streamed, XLA-compiled maximum inner product search.
    items_available = None if num_items_static is None else (
        num_items_static - (0 if padding_id is None else 1)
    )
    b_y = bucket_size_y
    if items_available is not None:
        b_y = checks.clamp_bucket_size(b_y, items_available, "bucket_size_y", "items")
    # The table goes in as stored; the search casts it chunk by chunk. A variable
    # is handed to the compiled search itself, not read first: after a sparse update
    # TensorFlow would copy the whole table on a dense read outside XLA (copy-on-read
    # mode), at every step. Tapes are paused instead of stop_gradient (which has no
    # XLA kernel for a resource): no gradient flows through the search anyway.
    # The handle (not the variable object) is passed, so the compiled search never
    # holds on to a particular variable between calls.
    if (
        isinstance(item_table, tf.Variable)
        and _stop_recording is not None
        and item_table.shape.is_fully_defined()
    ):
        search_table, pause = item_table.handle, _stop_recording()
        handle_spec = (int(item_table.shape[0]), int(item_table.shape[1]), item_table.dtype)
    else:
        search_table, pause = tf.stop_gradient(item_table), contextlib.nullcontext()
        handle_spec = None
    with pause:
        item_scores, bucket_items = _bucket_top_k_xla(
            centers, search_table, b_y, catalog_chunk_size, None, padding_id, handle_spec
        )
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
            row_loss=row_loss, kept=kept, bucket_rows=bucket_rows, flat_loss=flat_loss,
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
    if all_valid is not None:
        loss = checks.poison_if_invalid(loss, all_valid)
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
        "row_loss": tf.reshape(row_loss, tf.shape(labels)),
        "row_covered": tf.reshape(kept, tf.shape(labels)),
    }
    return loss, details
