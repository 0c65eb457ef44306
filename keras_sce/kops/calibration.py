"""Calibrated SCE in `keras.ops` (JAX, and any Keras 3 backend).

The estimator of the TensorFlow core (`keras_sce.ops.calibration`, derived in
docs/calibrated-sce.md): each covered row's normaliser is its kept bucket's exact
terms plus an importance-sampled estimate of the mass of every item that bucket did
not see,

    R_hat = (1/m) sum_t [j_t not in S + {y}] exp(s_{j_t}) / q_{j_t},

from `m` items drawn per batch (shared by every row) from the proposal `q`. Given the
bucket, `R_hat` is unbiased; `log(Z_hat)` is low by about `Var(R_hat) / (2 Z^2)`.
What differs from the TensorFlow core, and why:

- The draws come from the backend's generator (under JAX, `jax.random` with the
  centres' key folded with a salt), so the same `seed` gives other samples than on
  TensorFlow; the distribution is the same.
- The unigram proposal is sampled by inverse CDF over `(2^31 - 1)^2` (about `2^62`)
  integers, each drawn as a pair of int32 (JAX computes in 32 bits unless x64 is
  enabled). Each sample's weight uses the probability its integer interval really
  has, so the estimate is unbiased for the proposal actually sampled; an item whose
  interval would be empty (a probability below `1 / (2^31 - 1)^2`) is refused.
- The kept bucket is chosen by one segment maximum over int32 keys: the loss's
  order-preserving integer image with its lowest bits replaced by the bucket index.
  That picks a bucket whose loss is within a relative `2^(bits - 23)` of the
  largest (`bits = ceil(log2 n_b)`; among losses in the same quantisation cell as
  the largest, the lowest index), and the row's exact part is then read from that
  very bucket, so the exact terms and the excluded set always agree.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from keras_sce.kops._tensors import draw, to_real_ids

NEG_INF = float("-inf")
_SAMPLE_SALT = 0x5CE  # folds the sample stream apart from the centres' stream
_BASE = 2**31 - 1  # one int32 draw lies in [0, _BASE)
RESOLUTION = _BASE * _BASE  # two draws, (high, low), give one integer in [0, RESOLUTION)


def integer_proposal(calibration, num_items: int, padding_id) -> tuple[np.ndarray, np.ndarray]:
    """The proposal as integer thresholds, and the probabilities they really give.

    The non-padding items, in id order, split `[0, RESOLUTION)` (about `2^62`) into
    consecutive intervals, one per item, of widths proportional to the proposal.

    Returns:
        `(upper, q)`: `upper` int64, the `C' - 1` inner boundaries (`C'` non-padding
        items): the `k`-th non-padding item is drawn for an integer `v` with
        `upper[k-1] <= v < upper[k]`. `q [C]` float64: each id's interval width over
        `RESOLUTION`, the probability it is really drawn with (0 at the padding id).

    Raises:
        ValueError: an item with proposal mass gets an empty interval.
    """
    q = calibration.proposal_probabilities(num_items, padding_id)
    real = np.ones(num_items, bool)
    if padding_id is not None:
        real[padding_id] = False
    share = q[real] / q[real].sum()
    # Integer widths: each item's floor, and what rounding left over (a few units per
    # item at most) to the largest one. Never a float CDF, whose rounding near 1
    # would give small items an empty interval. The weights use these widths, so
    # the leftover biases nothing.
    width = np.floor(share * float(RESOLUTION)).astype(np.int64)
    width[np.argmax(width)] += RESOLUTION - int(width.sum())
    if np.any(width <= 0):
        raise ValueError(
            f"calibration: {int(np.sum(width <= 0))} items have proposal probabilities too "
            f"small to be drawn (below 1/{RESOLUTION}); raise `uniform_mix` or smooth "
            "the counts."
        )
    upper = np.cumsum(width)[:-1]
    drawn = np.zeros(num_items, np.float64)
    drawn[real] = width / float(RESOLUTION)
    return upper, drawn


def _binary_count(length: int, probe_shape, at_or_below):
    """Per probe, how many of `length` sorted values pass `at_or_below(index)`.

    `at_or_below(index)` tells, for an index tensor of the probes' shape, whether
    each probe's value at that index passes (a prefix of the sorted values does).
    A binary search by gathers: `log2 length` steps, memory of the probes' shape.
    """
    below = ops.zeros(probe_shape, dtype="int32")
    step = 1 << max(length.bit_length() - 1, 0)
    while length and step >= 1:
        candidate = below + step
        hit = at_or_below(ops.minimum(candidate, length) - 1)
        below = ops.where(ops.logical_and(candidate <= length, hit), candidate, below)
        step //= 2
    return below


def count_below(sorted_values, probes, inclusive=False):
    """Per row, how many of `sorted_values [B, L]` are `<` (`<=`) each probe `[B, M]`.

    Memory `B x M` (never `B x M x L`).
    """
    def at_or_below(index):
        value = ops.take_along_axis(sorted_values, index, axis=1)
        return value <= probes if inclusive else value < probes

    return _binary_count(int(sorted_values.shape[-1]), ops.shape(probes), at_or_below)


def _count_at_most(upper, high, low):
    """How many of the sorted int64 `upper` are `<= high * _BASE + low`, per probe.

    The values are compared as `(high, low)` int32 pairs, in order, so that the
    search runs in 32-bit arithmetic (JAX without x64).
    """
    upper_high = ops.convert_to_tensor((upper // _BASE).astype(np.int32))
    upper_low = ops.convert_to_tensor((upper % _BASE).astype(np.int32))

    def at_or_below(index):
        u_high, u_low = ops.take(upper_high, index), ops.take(upper_low, index)
        return ops.logical_or(u_high < high, ops.logical_and(u_high == high, u_low <= low))

    return _binary_count(int(upper.shape[0]), ops.shape(high), at_or_below)


def draw_samples(calibration, num_items: int, padding_id, seed, labels, dtype):
    """The shared sample `ids [m]` (int32) and their log weights `-log(m q_j)`.

    `seed` and `labels` as for the centres (`keras_sce.kops._tensors.draw`); the
    samples come from a second stream of that seed.
    """
    if calibration.proposal == "cover":
        ids = np.arange(num_items, dtype=np.int32)
        if padding_id is not None:
            ids = np.delete(ids, padding_id)
        return ops.convert_to_tensor(ids), ops.zeros((ids.shape[0],), dtype=dtype)
    m = calibration.num_samples
    if calibration.proposal == "uniform":
        num_real = num_items - (0 if padding_id is None else 1)
        ids = draw("randint", (m,), seed, labels, minval=0, maxval=num_real, salt=_SAMPLE_SALT)
        log_w = ops.full((m,), math.log(num_real / m), dtype=dtype)
        return to_real_ids(ids, padding_id), log_w
    upper, q = integer_proposal(calibration, num_items, padding_id)
    high, low = draw("randint", (2, m), seed, labels, minval=0, maxval=_BASE, salt=_SAMPLE_SALT)
    ids = to_real_ids(_count_at_most(upper, high, low), padding_id)
    with np.errstate(divide="ignore"):  # the padding id's log q is -inf; it is never drawn
        log_q = ops.convert_to_tensor(np.log(q).astype(keras.backend.standardize_dtype(dtype)))
    return ids, -math.log(m) - ops.take(log_q, ids)


def samples_in_buckets(bucket_items, item_ok, samples):
    """`[n_b, m]`: whether each sample is one of the bucket's real items.

    A sorted copy of each bucket's `b_y` ids and a binary search per sample: memory
    `n_b x (b_y + m)`.
    """
    items = ops.sort(ops.where(item_ok, bucket_items, -1), axis=-1)
    probe = ops.broadcast_to(ops.expand_dims(samples, 0), (items.shape[0], samples.shape[0]))
    slot = ops.minimum(count_below(items, probe), items.shape[1] - 1)
    return ops.equal(ops.take_along_axis(items, slot, axis=1), probe)


def kept_bucket(bucket_rows, flat_loss, num_rows):
    """`([N] bucket, [N] loss)`: each row's kept bucket and the row's loss in it.

    The bucket is one whose loss is the row's largest up to a relative
    `2^(bits - 23)` (the lowest index among the losses that share the largest's
    quantisation cell); see the module docstring.
    Rows in no bucket get a clipped index and a `-inf` loss (they are not kept).
    """
    num_buckets = int(bucket_rows.shape[0])
    bits = max(1, (num_buckets - 1).bit_length())
    flat_rows = ops.reshape(bucket_rows, (-1,))
    bucket_of = ops.reshape(
        ops.broadcast_to(ops.expand_dims(ops.arange(num_buckets, dtype="int32"), 1),
                         ops.shape(bucket_rows)), (-1,))
    image = ops.view(ops.cast(ops.stop_gradient(flat_loss), "float32"), "int32")
    ordered = ops.where(image >= 0, image, ops.bitwise_xor(image, 0x7FFFFFFF))
    key = ops.left_shift(ops.right_shift(ordered, bits), bits) + (num_buckets - 1 - bucket_of)
    best = ops.segment_max(key, flat_rows, num_segments=num_rows)
    low = ops.bitwise_and(best, (1 << bits) - 1)
    bucket = ops.clip(num_buckets - 1 - low, 0, num_buckets - 1)
    own = ops.where(ops.equal(bucket_of, ops.take(bucket, flat_rows, axis=0)), flat_loss, NEG_INF)
    return bucket, ops.segment_max(own, flat_rows, num_segments=num_rows)


def calibrated_row_loss(calibration, *, x, y, take_rows, num_items, positives, kept,
                        bucket_rows, flat_loss, bucket_items, item_ok, padding_id, seed):
    """Per-row calibrated loss `log(Z_hat) - s_y` for the bucket each row keeps.

    Args:
        calibration: a resolved `keras_sce._calibration.Calibration`.
        x: flat hidden states `[N, d]`.
        y: their item ids `[N]`.
        take_rows: `ids -> [len(ids), d]` rows of the table (sharded or not).
        num_items: `C`.
        positives: the positive logits `[N]`.
        kept: `[N]` bool, rows that get a loss.
        bucket_rows: `[n_b, b_x]` rows per bucket.
        flat_loss: `[n_b * b_x]` the bucket losses of those rows, flattened (`-inf`
            for non-members).
        bucket_items: `[n_b, b_y]` items per bucket.
        item_ok: `[n_b, b_y]` which of them are real.
        padding_id: as in `scalable_cross_entropy`.
        seed: the centres' seed (the samples use a second stream of it).

    Returns:
        `[N]` calibrated losses (meaningful where `kept`).
    """
    samples, log_w = draw_samples(calibration, int(num_items), padding_id, seed, y, x.dtype)
    # Gradient flows through the sampled logits into X and the sampled table rows;
    # the ids and weights are constants of the draw.
    sampled = ops.matmul(x, ops.transpose(take_rows(samples)))
    in_bucket = samples_in_buckets(bucket_items, item_ok, samples)  # [n_b, m]
    row_bucket, bucket_loss = kept_bucket(bucket_rows, flat_loss, x.shape[0])
    seen = ops.logical_or(ops.take(in_bucket, row_bucket, axis=0),
                          ops.equal(ops.expand_dims(samples, 0), ops.expand_dims(y, 1)))
    terms = ops.where(seen, NEG_INF, sampled + ops.expand_dims(log_w, 0))
    # The kept bucket's exact log-sum-exp (positive included) is one finite column,
    # so the log-sum-exp never sees only -inf (whose gradient would be NaN).
    exact = ops.where(kept, bucket_loss + positives, positives)
    log_z = ops.logsumexp(ops.concatenate([ops.expand_dims(exact, 1), terms], axis=1), axis=1)
    return log_z - positives
