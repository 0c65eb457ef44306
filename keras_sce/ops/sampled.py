"""Baseline losses with the SCE calling convention: ``(hidden, labels, item_table)``.

- :func:`gathered_cross_entropy` — exact full-catalogue softmax CE on the valid
  (non-padding) rows only: the rows are gathered first, so padding costs nothing.
- :func:`sampled_softmax` — sampled softmax with shared negatives drawn without
  replacement and logQ correction (Bengio & Senecal 2008; Yi et al., RecSys 2019).
- :func:`sampled_bce` — binary cross-entropy, one positive against ``k`` uniformly
  sampled negatives per row (SASRec's original loss with ``k = 1``).
- :func:`gbce` — generalised BCE (Petrov & Macdonald, RecSys 2023, arXiv
  2308.07192): the positive's probability is raised to a power ``beta`` that undoes
  the over-confidence caused by negative sampling.

The binary losses add a constant ``logit_offset`` ``o`` to every score inside the
loss, ``sigma(s + o)`` (default: the balance point :func:`balanced_logit_offset`).
The offset is not part of the model's scores: for given weights it changes no
ranking, but it changes what is learned. With hundreds of negatives per positive
and no offset, the first steps push every score down through one direction shared
by all item embeddings, and a tied-embedding model such as SASRec then sits on a
popularity-only plateau (on Amazon Beauty: validation NDCG@10 below 0.01 for the
first 24 epochs, ``benchmarks/results/beauty_gbce_offset0_seed0.json``). Starting
at the balance point is the prior-probability initialisation of the output bias
used for detectors trained with many negatives (Lin et al., "Focal Loss for Dense
Object Detection", ICCV 2017). The calibrated probability of gSASRec is then
``sigma(score + o)``.

All of them ignore rows whose label is ``padding_id``, never use the padding
row as a negative, return the mean over valid rows, and return 0 (not NaN) for a
batch without valid rows; a NaN or infinity in a valid row makes the loss NaN.
Outside XLA the valid rows are gathered first (``tf.boolean_mask``: no product
with the table is spent on padding); under XLA (``jit_compile=True``), which needs
static shapes, every row is kept and padding rows get zero weight. Negatives are
drawn for every row in both cases (stateless with a seed), so the two paths give
the same value for the same seed.
"""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np
import tensorflow as tf

from keras_sce.ops import checks
from keras_sce.ops.sampling import STATELESS_ALG, stateless_seed, to_compact_ids, to_real_ids

_SAMPLERS = ("uniform", "unigram")


def _rows(hidden, labels, item_table, padding_id, check_ids=True):
    """Validates inputs; returns ``(x [N, d], y [N], keep [N] or None, padding_id)``."""
    hidden = checks.as_float_tensor(hidden, "hidden")
    labels = checks.as_id_tensor(labels, "labels")
    item_table = checks.as_table(item_table)
    checks.check_labels_match(hidden, labels)
    checks.check_table(hidden, item_table)
    padding_id = checks.check_padding_id(padding_id, item_table.shape[0])
    dtype = tf.float32 if hidden.dtype in (tf.float16, tf.bfloat16) else hidden.dtype
    x = tf.reshape(tf.cast(hidden, dtype), [-1, hidden.shape[-1]])
    y = tf.reshape(labels, [-1])
    if check_ids:
        assert_op, _ = checks.id_range_checks(y, tf.shape(item_table)[0])
        with tf.control_dependencies([assert_op]):
            y = tf.identity(y)
    keep = None if padding_id is None else tf.not_equal(y, padding_id)
    return x, y, keep, padding_id


def _select(keep, padding_id, x, y, *per_row):
    """The rows that count: ``(x, y, weight or None, *per_row)``.

    Outside XLA the padding rows are dropped (``weight`` None). Under XLA shapes
    stay static: padding rows are zeroed (they may hold NaN from fully masked
    attention), their label becomes a real id, and ``weight`` is 0 there.
    """
    if keep is None:
        return (x, y, None, *per_row)
    if not checks.in_xla_context():
        return (
            tf.boolean_mask(x, keep),
            tf.boolean_mask(y, keep),
            None,
            *(tf.boolean_mask(t, keep) for t in per_row),
        )
    x = tf.where(keep[:, tf.newaxis], x, tf.zeros_like(x))
    y = tf.where(keep, y, tf.fill(tf.shape(y), 1 if padding_id == 0 else 0))
    return (x, y, tf.cast(keep, x.dtype), *per_row)


def _mean_or_zero(per_row, weight=None):
    """Mean over the rows that count (0 when none does; NaN when one is not finite)."""
    if weight is None:
        n = tf.cast(tf.size(per_row), per_row.dtype)
        loss = tf.math.divide_no_nan(tf.reduce_sum(per_row), n)
        return checks.poison_if_invalid(loss, checks.all_finite(per_row))
    counts = weight > 0
    finite = checks.all_finite(per_row, where=counts)
    per_row = tf.where(counts, per_row, tf.zeros_like(per_row))
    loss = tf.math.divide_no_nan(tf.reduce_sum(weight * per_row), tf.reduce_sum(weight))
    return checks.poison_if_invalid(loss, finite)




def _num_items(item_table):
    n = item_table.shape[0]
    return n if n is not None else tf.shape(item_table)[0]


def gathered_cross_entropy(hidden, labels, item_table, *, padding_id=0, check_ids=True):
    """Full softmax cross-entropy computed on the valid rows only.

    Same value as :func:`keras_sce.ops.full_cross_entropy` (softmax over every item
    but the padding row, mean over non-padding rows) but the non-padding rows are
    gathered first, so the ``M x C`` logits cover only the ``M`` real positions —
    the fair full-CE baseline for padded sequences.

    Args:
        hidden: float ``[..., d]``.
        labels: int ``[...]`` item ids.
        item_table: float ``[C, d]`` tensor or variable.
        padding_id: ignored label and excluded item (None: no padding row).
        check_ids: assert that ids lie in ``[0, C)``.

    Returns:
        Float scalar.

    Example:

    >>> import tensorflow as tf
    >>> table = tf.Variable(tf.random.normal([100, 8]))
    >>> loss = gathered_cross_entropy(tf.random.normal([2, 5, 8]), tf.ones([2, 5], "int32"),
    ...                               table)
    """
    item_table = checks.as_table(item_table)
    x, y, keep, padding_id = _rows(hidden, labels, item_table, padding_id, check_ids)
    x, y, weight = _select(keep, padding_id, x, y)
    logits = tf.matmul(x, tf.cast(item_table, x.dtype), transpose_b=True)
    if padding_id is not None:
        pad = tf.one_hot(padding_id, tf.shape(logits)[1], on_value=True, off_value=False)
        logits = tf.where(pad[None, :], tf.constant(float("-inf"), x.dtype), logits)
    per_row = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    return _mean_or_zero(per_row, weight)


def sampled_softmax(
    hidden,
    labels,
    item_table,
    *,
    num_sampled=256,
    sampler="uniform",
    item_counts=None,
    distortion=1.0,
    padding_id=0,
    remove_accidental_hits=True,
    seed=None,
    check_ids=True,
):
    """Sampled softmax with logQ correction.

    One set of ``num_sampled`` distinct negatives is drawn per call and shared by
    every row (never the padding id), as ``tf.nn.sampled_softmax_loss`` does with a
    ``unique=True`` sampler, but with static shapes (Gumbel top-k), so the loss
    also compiles under XLA. Each logit is corrected by ``-log Q(i)``, the log of
    the probability that item i is among the candidates, which makes the sampled
    softmax a consistent estimate of the full one; negatives equal to a row's
    positive are removed (``remove_accidental_hits``).

    Args:
        hidden, labels, item_table, padding_id, check_ids: see
            :func:`gathered_cross_entropy`.
        num_sampled: negatives per call (shared by all rows).
        sampler: ``"uniform"`` over the catalogue, or ``"unigram"`` proportional
            to ``item_counts ** distortion`` (popularity sampling, where logQ
            matters most).
        item_counts: per-id counts ``[C]`` (needed for ``"unigram"``).
        distortion: exponent applied to the counts.
        remove_accidental_hits: mask negatives that equal a row's positive.
        seed: None (TensorFlow's global generator: fresh negatives at every call),
            an int (stateless: the same negatives at every call) or a ``[2]`` seed
            tensor (e.g. ``SeedStream.next()``).

    Returns:
        Float scalar, the mean over valid rows.

    References:
        Jean et al., "On Using Very Large Target Vocabulary for Neural Machine
        Translation", arXiv 1412.2007; Yi et al., "Sampling-Bias-Corrected Neural
        Modeling for Large Corpus Item Recommendations", RecSys 2019.
    """
    if sampler not in _SAMPLERS:
        raise ValueError(f"sampler must be one of {_SAMPLERS}, got {sampler!r}.")
    num_sampled = checks.check_positive_int(num_sampled, "num_sampled")
    item_table = checks.as_table(item_table)
    x, y, keep, padding_id = _rows(hidden, labels, item_table, padding_id, check_ids)
    num_items = item_table.shape[0]
    if num_items is None:
        raise ValueError("sampled_softmax needs an item table with a static number of rows.")
    num_real = num_items - (0 if padding_id is None else 1)
    if num_sampled > num_real:
        raise ValueError(f"num_sampled={num_sampled} exceeds the {num_real} real items.")
    if sampler == "unigram" and item_counts is None:
        raise ValueError("sampler='unigram' needs item_counts (occurrences per id).")
    log_q = None
    if sampler == "unigram":
        counts = [float(c) for c in item_counts]
        if len(counts) != num_items:
            raise ValueError(f"item_counts has {len(counts)} entries for {num_items} items.")
        if padding_id is not None:
            del counts[padding_id]
        # Items never seen keep a tiny mass so that every id has Q > 0.
        log_q = np.log(np.maximum(np.asarray(counts), 1e-3)) * float(distortion)
        log_q = log_q - np.logaddexp.reduce(log_q)
    log_expected = tf.constant(_log_inclusion(num_real, num_sampled, log_q), x.dtype)
    candidates = _sample_without_replacement(num_real, num_sampled, log_q, seed)  # compact
    x, y, weight = _select(keep, padding_id, x, y)
    y_compact = to_compact_ids(y, padding_id)
    candidates_real = to_real_ids(candidates, padding_id)
    # logQ correction: every logit minus the log of its item's inclusion probability.
    table = tf.cast(item_table, x.dtype) if item_table.dtype != x.dtype else item_table
    true_logit = tf.reduce_sum(x * tf.gather(table, y), axis=-1) - tf.gather(
        log_expected, y_compact
    )
    sampled_logits = tf.matmul(x, tf.gather(table, candidates_real), transpose_b=True)
    sampled_logits = sampled_logits - tf.gather(log_expected, candidates)[tf.newaxis, :]
    if remove_accidental_hits:
        hit = tf.equal(candidates_real[tf.newaxis, :], y[:, tf.newaxis])
        sampled_logits = tf.where(hit, tf.constant(float("-inf"), x.dtype), sampled_logits)
    all_logits = tf.concat([true_logit[:, tf.newaxis], sampled_logits], axis=1)
    per_row = tf.reduce_logsumexp(all_logits, axis=1) - true_logit
    return _mean_or_zero(per_row, weight)


def _random_uniform(shape, seed, dtype=tf.float32, minval=0, maxval=None):
    """Stateless with a seed (int or ``[2]`` tensor); the global generator without."""
    if seed is None:
        return tf.random.uniform(shape, minval, maxval, dtype=dtype)
    return tf.random.stateless_uniform(
        shape, seed=stateless_seed(seed), minval=minval, maxval=maxval, dtype=dtype,
        alg=STATELESS_ALG,
    )


def _sample_without_replacement(num_real, num_sampled, log_q, seed):
    """``num_sampled`` distinct compact ids in ``[0, num_real)``, drawn one after the other
    proportionally to ``q`` (uniform when ``log_q`` is None).

    The Gumbel top-k trick: the ``k`` largest of ``log q_i + Gumbel_i`` are
    distributed as ``k`` successive draws without replacement (what TensorFlow's
    ``unique=True`` candidate samplers do by rejection), with static shapes, so it
    compiles under XLA.
    """
    tiny = np.finfo(np.float32).tiny
    u = _random_uniform([num_real], seed, minval=tiny, maxval=1.0)
    keys = -tf.math.log(-tf.math.log(u))
    if log_q is not None:
        keys = keys + tf.constant(log_q, tf.float32)
    return tf.math.top_k(keys, k=num_sampled, sorted=False).indices


@functools.lru_cache(maxsize=16)
def _log_inclusion_cached(num_real, num_sampled, log_q_bytes):
    log_q = np.frombuffer(log_q_bytes, np.float64)
    q = np.exp(log_q)
    log1m_q = np.log1p(-np.minimum(q, 1.0 - 1e-12))

    def expected(tries):  # sum_i P(i drawn in `tries` draws with replacement)
        return float(np.sum(-np.expm1(tries * log1m_q)))

    lo, hi = float(num_sampled), float(num_sampled)
    for _ in range(200):  # the sum tends to num_real as the draws grow
        if expected(hi) >= num_sampled:
            break
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if expected(mid) < num_sampled else (lo, mid)
    return np.log(-np.expm1(hi * log1m_q))


def _log_inclusion(num_real, num_sampled, log_q):
    """Log probability that each compact id is among the ``num_sampled`` candidates.

    Uniform: exactly ``num_sampled / num_real``. Unigram: ``1 - (1 - q_i)^T`` with
    ``T`` the number of draws with replacement whose expected number of distinct
    items is ``num_sampled`` (TensorFlow's samplers use the same form with the
    actual number of draws); the probabilities then sum to ``num_sampled``.
    """
    if log_q is None or num_sampled >= num_real:
        return np.full([num_real], math.log(min(num_sampled / num_real, 1.0)))
    return _log_inclusion_cached(num_real, num_sampled, np.asarray(log_q, np.float64).tobytes())


def _per_row_negatives(x, item_table, num_negatives, padding_id, seed):
    """Uniform negative ids ``[N, k]`` for every row (never the padding id)."""
    num_items = _num_items(item_table)
    num_real = num_items - (0 if padding_id is None else 1)
    # One draw per row of the batch, padding included: a static shape under XLA,
    # and the same negatives for a row whether or not padding is dropped later.
    shape = tf.stack([tf.shape(x)[0], num_negatives])
    neg = _random_uniform(shape, seed, dtype=tf.int32, minval=0, maxval=num_real)
    return to_real_ids(neg, padding_id)


def _negative_logits(x, item_table, neg):
    w = tf.cast(tf.gather(item_table, neg), x.dtype)  # [M, k, d]
    return tf.einsum("md,mkd->mk", x, w)


def balanced_logit_offset(num_negatives: int, beta: float = 1.0) -> float:
    """``log(beta / k)``: the score at which the binary loss has no pull on a shared shift.

    With every score equal to ``s``, the derivative of
    ``beta * softplus(-s) + k * softplus(s)`` is zero at ``s = log(beta / k)``:
    the positive's pull up and the ``k`` negatives' pull down cancel. Adding this
    offset to the scores starts training there, so the model does not have to
    learn the offset itself. ``k = 1``, ``beta = 1`` (SASRec's BCE) gives 0.
    """
    num_negatives = checks.check_positive_int(num_negatives, "num_negatives")
    if not beta > 0.0:
        raise ValueError(f"beta must be > 0, got {beta}.")
    return math.log(beta / num_negatives)


def resolve_logit_offset(logit_offset, num_negatives, beta=1.0) -> float:
    """The float offset for ``logit_offset`` (``"balanced"`` or a finite real); validates it."""
    if isinstance(logit_offset, str):
        if logit_offset != "balanced":
            raise ValueError(
                f"logit_offset must be a finite float or 'balanced', got {logit_offset!r}."
            )
        return balanced_logit_offset(num_negatives, beta)
    if isinstance(logit_offset, bool) or not isinstance(logit_offset, numbers.Real):
        raise TypeError(
            f"logit_offset must be a finite float or 'balanced', got {logit_offset!r}."
        )
    if not math.isfinite(logit_offset):
        raise ValueError(f"logit_offset must be finite, got {logit_offset}.")
    return float(logit_offset)


def _binary_loss(
    hidden, labels, item_table, num_negatives, beta, padding_id, seed, check_ids, logit_offset
):
    num_negatives = checks.check_positive_int(num_negatives, "num_negatives")
    offset = resolve_logit_offset(logit_offset, num_negatives, beta)
    item_table = checks.as_table(item_table)
    x, y, keep, padding_id = _rows(hidden, labels, item_table, padding_id, check_ids)
    neg_ids = _per_row_negatives(x, item_table, num_negatives, padding_id, seed)
    x, y, weight, neg_ids = _select(keep, padding_id, x, y, neg_ids)
    pos = tf.reduce_sum(x * tf.cast(tf.gather(item_table, y), x.dtype), axis=-1) + offset
    neg = _negative_logits(x, item_table, neg_ids) + offset
    # -log sigma(s)^beta = beta * softplus(-s); -log(1 - sigma(s)) = softplus(s).
    # A negative equal to the positive is masked with where, not a 0/1 product,
    # so that an infinite logit there cannot turn into 0 * inf = NaN.
    neg_terms = tf.where(
        tf.not_equal(neg_ids, y[:, None]), tf.nn.softplus(neg), tf.zeros_like(neg)
    )
    per_row = beta * tf.nn.softplus(-pos) + tf.reduce_sum(neg_terms, axis=-1)
    return _mean_or_zero(per_row, weight)


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
    """Binary cross-entropy: each row's positive against ``k`` uniform negatives.

    Per valid row: ``-log sigma(s+ + o) - sum_j log(1 - sigma(s_j + o))`` with ``o``
    the ``logit_offset`` and ``s_j`` the
    logits of ``num_negatives`` items drawn uniformly (never the padding id; a
    negative equal to the positive is ignored). ``num_negatives=1`` is the loss of
    the original SASRec (Kang & McAuley, arXiv 1808.09781).

    Args:
        hidden, labels, item_table, padding_id, check_ids: see
            :func:`gathered_cross_entropy`.
        num_negatives: negatives per row.
        seed: optional int (stateless sampling; the same negatives at every call)
            or ``[2]`` seed tensor.
        logit_offset: constant added to every score before the sigmoid:
            ``"balanced"`` (default, :func:`balanced_logit_offset`, ``-log k``; 0
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


def gbce_beta(num_negatives: int, num_items: int, t: float) -> float:
    """gBCE's power ``beta = alpha * (t * (1 - 1/alpha) + 1/alpha)``, ``alpha = k / (C - 1)``.

    ``num_items`` counts real items (padding excluded). ``t = 0`` gives BCE
    (``beta = 1``); ``t = 1`` gives ``beta = alpha``.
    """
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"gBCE calibration t must be in [0, 1], got {t}.")
    if num_items < 2:
        raise ValueError("gBCE needs at least 2 items.")
    alpha = num_negatives / (num_items - 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


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

    Sampling ``k`` of ``C`` items makes BCE over-confident. gBCE raises the
    positive's sigmoid to the power ``beta`` (:func:`gbce_beta`, with the sampling
    rate ``alpha = k / (C - 1)`` and calibration ``t``):
    ``-beta * log sigma(s+ + o) - sum_j log(1 - sigma(s_j + o))``, ``o`` the
    ``logit_offset``.

    Args:
        hidden, labels, item_table, padding_id, check_ids: see
            :func:`gathered_cross_entropy`.
        num_negatives: uniform negatives per row (gSASRec uses 256).
        t: calibration in ``[0, 1]`` (gSASRec's default 0.75).
        seed: optional int or ``[2]`` seed tensor.
        logit_offset: constant added to every score before the sigmoid:
            ``"balanced"`` (default, ``log(beta / k)``, see
            :func:`balanced_logit_offset`) or a float (0.0: the loss as published).
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
