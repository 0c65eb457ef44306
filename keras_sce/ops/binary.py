"""Binary losses with per-row negatives: BCE and gBCE, SCE's calling convention.

- `sampled_bce` — binary cross-entropy, one positive against `k` uniformly
  sampled negatives per row (SASRec's original loss with `k = 1`).
- `gbce` — generalised BCE (Petrov & Macdonald, RecSys 2023, arXiv
  2308.07192): the positive's probability is raised to a power `beta` that undoes
  the over-confidence caused by negative sampling.

The binary losses add a constant `logit_offset` `o` to every score inside the
loss, `sigma(s + o)` (default: the balance point `balanced_logit_offset`).
The offset is not part of the model's scores: for given weights it changes no
ranking, but it changes what is learned. With hundreds of negatives per positive
and no offset, the first steps push every score down through one direction shared
by all item embeddings, and a tied-embedding model such as SASRec then sits on a
popularity-only plateau (on Amazon Beauty: validation NDCG@10 below 0.01 for the
first 24 epochs, `benchmarks/results/beauty_gbce_offset0_seed0.json`). Starting
at the balance point is the prior-probability initialisation of the output bias
used for detectors trained with many negatives (Lin et al., "Focal Loss for Dense
Object Detection", ICCV 2017). The calibrated probability of gSASRec is then
`sigma(score + o)`.

Like the sampled softmax (`keras_sce.ops.sampled`) they ignore padding rows
(gathered out of the batch outside XLA, zero weight under XLA) and return 0, not
NaN, for a batch without valid rows. Negatives are drawn for every row in both
cases (stateless with a seed), so the two paths give the same value for the same
seed.
"""

from __future__ import annotations

import tensorflow as tf

# The option rules, shared with the keras.ops implementation (kops).
from keras_sce._options import (  # noqa: F401 - part of this module's interface
    balanced_logit_offset,
    gbce_beta,
    resolve_logit_offset,
)
from keras_sce.ops import checks, inputs
from keras_sce.ops.sampling import random_uniform, to_real_ids


def _per_row_negatives(x, item_table, num_negatives, padding_id, seed):
    """Uniform negative ids `[N, k]` for every row of `x` (never the padding id)."""
    num_items = item_table.shape[0]
    num_items = tf.shape(item_table)[0] if num_items is None else num_items
    num_real = num_items - (0 if padding_id is None else 1)
    # One draw per row of the batch, padding included: a static shape under XLA,
    # and the same negatives for a row whether or not padding is dropped later.
    shape = tf.stack([tf.shape(x)[0], num_negatives])
    neg = random_uniform(shape, seed, dtype=tf.int32, minval=0, maxval=num_real)
    return to_real_ids(neg, padding_id)


def _negative_logits(x, item_table, neg):
    w = tf.cast(tf.gather(item_table, neg), x.dtype)  # [M, k, d]
    return tf.einsum("md,mkd->mk", x, w)


def _binary_loss(
    hidden, labels, item_table, num_negatives, beta, padding_id, seed, check_ids, logit_offset
):
    num_negatives = checks.check_positive_int(num_negatives, "num_negatives")
    offset = resolve_logit_offset(logit_offset, num_negatives, beta)
    rows = inputs.prepare_rows(hidden, labels, item_table, padding_id=padding_id,
                               check_ids=check_ids)
    item_table = rows.table
    neg_ids = _per_row_negatives(rows.x, item_table, num_negatives, rows.padding_id, seed)
    x, y, weight, neg_ids = inputs.counted_rows(rows, neg_ids)
    pos = tf.reduce_sum(x * tf.cast(tf.gather(item_table, y), x.dtype), axis=-1) + offset
    neg = _negative_logits(x, item_table, neg_ids) + offset
    # -log sigma(s)^beta = beta * softplus(-s); -log(1 - sigma(s)) = softplus(s).
    # A negative equal to the positive is masked with where, not a 0/1 product,
    # so that an infinite logit there cannot turn into 0 * inf = NaN.
    neg_terms = tf.where(
        tf.not_equal(neg_ids, y[:, None]), tf.nn.softplus(neg), tf.zeros_like(neg)
    )
    per_row = beta * tf.nn.softplus(-pos) + tf.reduce_sum(neg_terms, axis=-1)
    return inputs.weighted_mean(per_row, weight, rows.ids_ok)


def sampled_bce(
    hidden,
    labels,
    item_table,
    *,
    num_negatives=1,
    padding_id=0,
    seed=None,
    check_ids=True,
    logit_offset="balanced",
):
    """Binary cross-entropy: each row's positive against `k` uniform negatives.

    Per valid row: `-log sigma(s+ + o) - sum_j log(1 - sigma(s_j + o))` with `o`
    the `logit_offset` and `s_j` the
    logits of `num_negatives` items drawn uniformly (never the padding id; a
    negative equal to the positive is ignored). `num_negatives=1` is the loss of
    the original SASRec (Kang & McAuley, arXiv 1808.09781).

    Args:
        hidden: float `[..., d]` (as for `keras_sce.ops.full_cross_entropy`).
        labels: integer `[...]` item ids.
        item_table: float `[C, d]` tensor or variable.
        padding_id: ignored label and excluded item; None for no padding row.
        check_ids: verify ids lie in `[0, C)` (see `keras_sce.ops.full_cross_entropy`).
        num_negatives: negatives per row.
        seed: optional int (stateless sampling; the same negatives at every call)
            or `[2]` seed tensor.
        logit_offset: constant added to every score before the sigmoid:
            `"balanced"` (default, `balanced_logit_offset`, `-log k`; 0
            for one negative) or a float (0.0: the textbook loss). It is not part of
            the model's scores (for given weights no ranking changes), but it changes
            what is learned.

    Returns:
        Float scalar, the mean over valid rows.
    """
    return _binary_loss(
        hidden, labels, item_table, num_negatives, 1.0, padding_id, seed, check_ids,
        logit_offset,
    )


def gbce(
    hidden,
    labels,
    item_table,
    *,
    num_negatives=256,
    t=0.75,
    padding_id=0,
    seed=None,
    check_ids=True,
    logit_offset="balanced",
):
    """Generalised binary cross-entropy (gBCE) with uniform negatives.

    Sampling `k` of `C` items makes BCE over-confident. gBCE raises the
    positive's sigmoid to the power `beta` (`gbce_beta`, with the sampling
    rate `alpha = k / (C - 1)` and calibration `t`):
    `-beta * log sigma(s+ + o) - sum_j log(1 - sigma(s_j + o))`, `o` the
    `logit_offset`.

    Args:
        hidden: float `[..., d]` (as for `keras_sce.ops.full_cross_entropy`).
        labels: integer `[...]` item ids.
        item_table: float `[C, d]` tensor or variable.
        padding_id: ignored label and excluded item; None for no padding row.
        check_ids: verify ids lie in `[0, C)` (see `keras_sce.ops.full_cross_entropy`).
        num_negatives: uniform negatives per row (gSASRec uses 256).
        t: calibration in `[0, 1]` (gSASRec's default 0.75).
        seed: optional int or `[2]` seed tensor.
        logit_offset: constant added to every score before the sigmoid:
            `"balanced"` (default, `log(beta / k)`, see
            `balanced_logit_offset`) or a float (0.0: the loss as published).
            It is not part of the model's scores (for given weights no ranking
            changes); without it SASRec on Amazon Beauty stays on a popularity
            plateau for tens of epochs.

    Returns:
        Float scalar, the mean over valid rows.

    References:
        Petrov & Macdonald, "gSASRec: Reducing Overconfidence in Sequential
        Recommendation Trained with Negative Sampling", RecSys 2023, arXiv 2308.07192.
    """
    num_items = item_table.shape[0]
    if num_items is None:
        raise ValueError("gbce needs an item table with a static number of rows.")
    padding_id = checks.check_padding_id(padding_id, num_items)
    num_real = num_items - (0 if padding_id is None else 1)
    num_negatives = checks.check_positive_int(num_negatives, "num_negatives")
    beta = gbce_beta(num_negatives, num_real, t)
    return _binary_loss(
        hidden, labels, item_table, num_negatives, beta, padding_id, seed, check_ids,
        logit_offset,
    )
