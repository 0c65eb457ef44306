"""Calibrated SCE: an importance-sampled estimate of the softmax mass SCE leaves out.

SCE's softmax for a row runs over its positive and the `b_y` items of one bucket,
`S`. Its scores rank well but are not probabilities: nothing pushes down the rest
of the catalogue, which under the full softmax keeps most of the mass. Calibration
adds to each row's normaliser an estimate of that unseen mass,

    Z = exp(s_y) + sum_{k in S} exp(s_k) + R,   R = sum_{k not in S + {y}} exp(s_k),

from `m` items `j_1..j_m` drawn per batch (shared by every row) with replacement
from a proposal `q` over the non-padding items:

    R_hat = (1/m) sum_t [j_t not in S + {y}] exp(s_{j_t}) / q_{j_t}.

Each term has expectation `sum_k q_k [k unseen] exp(s_k) / q_k = R` when `q_k > 0`
for every item, so `R_hat` is unbiased given `S` (the bucket depends on the data
and the centres, never on the samples). In log space each sampled logit enters the
log-sum-exp with the importance weight `log(1 / (m q_j))` (the logQ correction).
`log(Z_hat)` is a low estimate of `log Z` (Jensen); to second order the gap is
`Var(R_hat) / (2 Z^2)`, which shrinks as `1/m`. See docs/calibrated-sce.md.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

# The options live in plain Python (shared with the keras.ops core) and are public here.
from keras_sce._calibration import PROPOSALS, Calibration, resolve_calibration  # noqa: F401
from keras_sce.ops.sampling import to_real_ids

_SAMPLE_SALT = 0x5CE  # folds the sample stream apart from the centres' stream


def _sample_seed(seed):
    if seed is None:
        return None
    if isinstance(seed, int):
        seed = tf.constant([seed, 0], tf.int64)
    folded = tf.cast(tf.random.experimental.stateless_fold_in(seed, _SAMPLE_SALT), tf.int64)
    # Non-negative components: TensorFlow's stateless generators turn a negative seed
    # into a different key eagerly than under XLA, so the draws would differ.
    return tf.bitwise.bitwise_and(folded, tf.constant(0x7FFFFFFF, tf.int64))


def _count_below(sorted_values, probes, inclusive=False):
    """Per row, how many of `sorted_values [B, L]` are `<` (`<=`) each probe `[B, M]`.

    A binary search by gathers (`log2 L` steps, memory `B x M`). `tf.searchsorted`
    would do, but XLA lowers it to a comparison of every probe with every value,
    a `B x M x L` tensor (`m x C` for the proposal's CDF).
    """
    length = sorted_values.shape[-1]
    below = tf.zeros(tf.shape(probes), tf.int32)
    step = 1 << (int(length).bit_length() - 1)
    while step >= 1:
        candidate = below + step
        value = tf.gather(sorted_values, tf.minimum(candidate, length) - 1, batch_dims=1)
        hit = value <= probes if inclusive else value < probes
        below = tf.where(tf.logical_and(candidate <= length, hit), candidate, below)
        step //= 2
    return below


def draw_samples(calibration, num_items: int, padding_id, seed, dtype):
    """The shared sample `ids [m]` (int32) and their log weights `-log(m q_j)`."""
    if calibration.proposal == "cover":
        ids = np.arange(num_items, dtype=np.int32)
        if padding_id is not None:
            ids = np.delete(ids, padding_id)
        return tf.constant(ids), tf.zeros([ids.shape[0]], dtype)
    m = calibration.num_samples
    seed = _sample_seed(seed)
    if calibration.proposal == "uniform":
        num_real = num_items - (0 if padding_id is None else 1)
        if seed is None:
            ids = tf.random.uniform([m], 0, num_real, dtype=tf.int32)
        else:
            ids = tf.random.stateless_uniform([m], seed, 0, num_real, dtype=tf.int32)
        log_w = tf.fill([m], tf.constant(math.log(num_real / m), dtype))
        return to_real_ids(ids, padding_id), log_w
    q = calibration.proposal_probabilities(num_items, padding_id)
    cdf = np.cumsum(q)
    cdf /= cdf[-1]
    # u in [0, 1) from 53 random integer bits: the integer path of the stateless
    # generator gives the same draws eagerly and under XLA, its float path does not.
    if seed is None:
        bits = tf.random.uniform([m], 0, 2**53, dtype=tf.int64)
    else:
        bits = tf.random.stateless_uniform([m], seed, 0, 2**53, dtype=tf.int64)
    u = tf.cast(bits, tf.float64) * (2.0**-53)
    # Inverse CDF: item k is drawn when cdf[k-1] <= u < cdf[k]; zero-mass ids (the
    # padding row) have an empty interval and are never drawn.
    ids = _count_below(tf.constant(cdf)[tf.newaxis, :], u[tf.newaxis, :], inclusive=True)[0]
    ids = tf.minimum(ids, num_items - 1)
    with np.errstate(divide="ignore"):
        log_q = tf.constant(np.log(q))
    log_w = -math.log(m) - tf.gather(log_q, ids)
    return ids, tf.cast(log_w, dtype)


def samples_in_buckets(bucket_items, item_ok, samples):
    """`[n_b, m]`: whether each sample is one of the bucket's items.

    A sorted copy of each bucket's `b_y` ids and a binary search per sample: memory
    `n_b x (b_y + m)`, not the `n_b x b_y x m` of a pairwise comparison.
    """
    items = tf.sort(tf.where(item_ok, bucket_items, -1), axis=-1)
    probe = tf.broadcast_to(samples[tf.newaxis, :], [tf.shape(items)[0], tf.shape(samples)[0]])
    slot = tf.minimum(_count_below(items, probe), items.shape[1] - 1)
    return tf.equal(tf.gather(items, slot, batch_dims=1), probe)


def kept_bucket(bucket_rows, flat_loss, num_rows):
    """`([N] bucket, [N] loss)`: each row's kept bucket and the row's loss in it.

    The bucket is the one with the row's largest loss (the first on a tie), found
    with one segment maximum over int64 keys that pack the loss (as an
    order-preserving int32 image of its float32 value) above the bucket index, so
    the argmax needs no float equality test (which a compiler may break by
    recomputing the losses). The loss is then read from that bucket: for float64
    losses that tie in float32, the largest float64 loss could be another bucket's,
    whose items the calibrated exclusion would miss. Rows in no bucket get a
    clipped index and a `-inf` loss.
    """
    num_buckets = tf.shape(bucket_rows)[0]
    flat_rows = tf.reshape(bucket_rows, [-1])
    bucket_of = tf.reshape(tf.broadcast_to(tf.range(num_buckets)[:, tf.newaxis],
                                           tf.shape(bucket_rows)), [-1])
    bits = tf.bitcast(tf.cast(tf.stop_gradient(flat_loss), tf.float32), tf.int32)
    ordered = tf.where(bits >= 0, bits, tf.bitwise.bitwise_xor(bits, 0x7FFFFFFF))
    key = tf.cast(ordered, tf.int64) * 2**32 + tf.cast(num_buckets - 1 - bucket_of, tf.int64)
    best = tf.math.unsorted_segment_max(key, flat_rows, num_rows)
    first = num_buckets - 1 - tf.cast(tf.math.floormod(best, 2**32), tf.int32)
    bucket = tf.clip_by_value(first, 0, num_buckets - 1)
    own = tf.where(tf.equal(bucket_of, tf.gather(bucket, flat_rows)), flat_loss,
                   tf.constant(float("-inf"), flat_loss.dtype))
    return bucket, tf.math.unsorted_segment_max(own, flat_rows, num_rows)


def calibrated_row_loss(calibration, *, x, y, item_table, positives, kept,
                        bucket_rows, flat_loss, bucket_items, item_ok, padding_id, seed):
    """Per-row calibrated loss `log(Z_hat) - s_y` for the bucket each row keeps.

    The kept bucket is the one raw SCE keeps (largest exact mass). It is chosen
    before and independently of the samples, so the estimate stays unbiased given
    the bucket; taking the largest of several *calibrated* losses would select the
    luckiest noise and bias the loss upward. The largest exact part also leaves the
    least mass to estimate, hence the smallest variance.

    Args:
        calibration: a resolved `Calibration`.
        x: flat hidden states `[N, d]`.
        y: their item ids `[N]`.
        item_table: the item table `[C, d]`.
        positives: the positive logits `[N]`.
        kept: `[N]` bool, rows that get a loss.
        bucket_rows: `[n_b, b_x]` rows per bucket.
        flat_loss: `[n_b * b_x]` the bucket losses of those rows, flattened (`-inf`
            for non-members).
        bucket_items: `[n_b, b_y]` items per bucket.
        item_ok: `[n_b, b_y]` which of them are real.
        padding_id: as in `scalable_cross_entropy`.
        seed: as in `scalable_cross_entropy`.

    Returns:
        `[N]` calibrated losses (meaningful where `kept`).
    """
    num_items = item_table.shape[0]
    if num_items is None:
        raise ValueError("calibration needs an item table with a static number of rows.")
    dtype = x.dtype
    num_rows = tf.shape(x)[0]
    samples, log_w = draw_samples(calibration, int(num_items), padding_id, seed, dtype)
    # Gradient flows through the sampled logits into X and (sparsely) into the
    # sampled rows of W; the ids and weights are constants of the draw.
    sampled = tf.matmul(x, tf.cast(tf.gather(item_table, samples), dtype), transpose_b=True)
    in_bucket = samples_in_buckets(bucket_items, item_ok, samples)  # [n_b, m]
    row_bucket, row_loss = kept_bucket(bucket_rows, flat_loss, num_rows)
    seen = tf.logical_or(tf.gather(in_bucket, row_bucket),
                         tf.equal(samples[tf.newaxis, :], y[:, tf.newaxis]))
    terms = tf.where(seen, tf.constant(float("-inf"), dtype), sampled + log_w[tf.newaxis, :])
    # The kept bucket's exact log-sum-exp (positive included) is one finite column,
    # so the log-sum-exp below never sees only -inf (whose gradient would be NaN).
    exact = tf.where(kept, row_loss + positives, positives)
    log_z = tf.reduce_logsumexp(tf.concat([exact[:, tf.newaxis], terms], axis=1), axis=1)
    return log_z - positives
