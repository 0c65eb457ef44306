"""Baseline losses with the SCE calling convention: ``(hidden, labels, item_table)``.

- :func:`gathered_cross_entropy` — exact full-catalogue softmax CE on the valid
  (non-padding) rows only: the rows are gathered first, so padding costs nothing.
- :func:`sampled_softmax` — ``tf.nn.sampled_softmax_loss`` with shared negatives
  and logQ correction (Bengio & Senecal 2008; Yi et al., RecSys 2019).
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

All of them drop rows whose label is ``padding_id`` *before* any product with the
table (``tf.boolean_mask``: dynamic shapes, so they run outside XLA), never use the
padding row as a negative, return the mean over valid rows, and return 0 (not NaN)
for a batch without valid rows.
"""

from __future__ import annotations

import math
import numbers

import tensorflow as tf

from keras_sce.ops import checks

_SAMPLERS = ("uniform", "unigram")


def _valid_rows(hidden, labels, item_table, padding_id, check_ids=True):
    """Validates inputs and returns ``(x [M, d], y [M])`` for the non-padding rows."""
    hidden = checks.as_float_tensor(hidden, "hidden")
    labels = checks.as_id_tensor(labels, "labels")
    checks.check_labels_match(hidden, labels)
    checks.check_table(hidden, item_table)
    checks.check_padding_id(padding_id, item_table.shape[0])
    dtype = tf.float32 if hidden.dtype in (tf.float16, tf.bfloat16) else hidden.dtype
    x = tf.reshape(tf.cast(hidden, dtype), [-1, hidden.shape[-1]])
    y = tf.reshape(labels, [-1])
    if check_ids:
        assert_op, _ = checks.id_range_checks(y, tf.shape(item_table)[0])
        with tf.control_dependencies([assert_op]):
            y = tf.identity(y)
    if padding_id is not None:
        keep = tf.not_equal(y, padding_id)
        x = tf.boolean_mask(x, keep)
        y = tf.boolean_mask(y, keep)
    return x, y


def _mean_or_zero(per_row):
    n = tf.cast(tf.size(per_row), per_row.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(per_row), n)


def _to_real_ids(ids, padding_id):
    """Maps ``[0, C-1)`` onto the ``C - 1`` non-padding ids of ``[0, C)``."""
    if padding_id is None:
        return ids
    return tf.where(ids >= padding_id, ids + 1, ids)


def _to_compact_ids(ids, padding_id):
    """Inverse of :func:`_to_real_ids` (for non-padding ids)."""
    if padding_id is None:
        return ids
    return tf.where(ids > padding_id, ids - 1, ids)


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
    x, y = _valid_rows(hidden, labels, item_table, padding_id, check_ids)
    logits = tf.matmul(x, tf.cast(item_table, x.dtype), transpose_b=True)
    if padding_id is not None:
        pad = tf.one_hot(padding_id, tf.shape(logits)[1], on_value=True, off_value=False)
        logits = tf.where(pad[None, :], tf.constant(float("-inf"), x.dtype), logits)
    per_row = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    return _mean_or_zero(per_row)


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
    """Sampled softmax with logQ correction (``tf.nn.sampled_softmax_loss``).

    One set of ``num_sampled`` negatives is drawn per call and shared by every row
    (never the padding id). Each logit is corrected by ``-log Q(i)``, the log of the
    expected count of item i under the sampler, which makes the sampled softmax a
    consistent estimate of the full one; negatives equal to a row's positive are
    removed (``remove_accidental_hits``).

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
        seed: optional int for the sampler.

    Returns:
        Float scalar, the mean over valid rows.

    References:
        Jean et al., "On Using Very Large Target Vocabulary for Neural Machine
        Translation", arXiv 1412.2007; Yi et al., "Sampling-Bias-Corrected Neural
        Modeling for Large Corpus Item Recommendations", RecSys 2019.
    """
    if sampler not in _SAMPLERS:
        raise ValueError(f"sampler must be one of {_SAMPLERS}, got {sampler!r}.")
    checks.check_positive_int(num_sampled, "num_sampled")
    x, y = _valid_rows(hidden, labels, item_table, padding_id, check_ids)
    num_items = item_table.shape[0]
    if num_items is None:
        raise ValueError("sampled_softmax needs an item table with a static number of rows.")
    num_real = num_items - (0 if padding_id is None else 1)
    if num_sampled > num_real:
        raise ValueError(f"num_sampled={num_sampled} exceeds the {num_real} real items.")
    true_compact = tf.cast(_to_compact_ids(y, padding_id), tf.int64)[:, None]
    if sampler == "uniform":
        sampled = tf.random.uniform_candidate_sampler(
            true_compact, 1, num_sampled, unique=True, range_max=num_real, seed=seed
        )
    else:
        if item_counts is None:
            raise ValueError("sampler='unigram' needs item_counts (occurrences per id).")
        counts = [float(c) for c in item_counts]
        if len(counts) != num_items:
            raise ValueError(f"item_counts has {len(counts)} entries for {num_items} items.")
        if padding_id is not None:
            del counts[padding_id]
        # Items never seen keep a tiny mass so that every id has Q > 0.
        counts = [max(c, 1e-3) for c in counts]
        sampled = tf.random.fixed_unigram_candidate_sampler(
            true_compact,
            1,
            num_sampled,
            unique=True,
            range_max=num_real,
            distortion=distortion,
            unigrams=counts,
            seed=seed,
        )
    candidates, true_expected, sampled_expected = sampled
    candidates = _to_real_ids(tf.cast(candidates, tf.int32), padding_id)
    # sampled_softmax_loss reads ids through the table; give it the real ids and the
    # sampler's expected counts so its logQ correction uses the sampler's Q.
    per_row = tf.nn.sampled_softmax_loss(
        weights=tf.cast(item_table, x.dtype),
        biases=tf.zeros([num_items], x.dtype),
        labels=tf.cast(y, tf.int64)[:, None],
        inputs=x,
        num_sampled=num_sampled,
        num_classes=num_items,
        num_true=1,
        sampled_values=(tf.cast(candidates, tf.int64), true_expected, sampled_expected),
        remove_accidental_hits=remove_accidental_hits,
    )
    return _mean_or_zero(per_row)


def _per_row_negatives(x, item_table, num_negatives, padding_id, seed):
    """Uniform negatives ``[M, k]`` (never the padding id) and their logits."""
    num_items = _num_items(item_table)
    num_real = num_items - (0 if padding_id is None else 1)
    shape = tf.stack([tf.shape(x)[0], num_negatives])
    if seed is None:
        neg = tf.random.uniform(shape, 0, num_real, dtype=tf.int32)
    else:
        neg = tf.random.stateless_uniform(
            shape,
            seed=tf.constant([seed, 0], tf.int64) if isinstance(seed, int) else seed,
            minval=0,
            maxval=num_real,
            dtype=tf.int32,
        )
    neg = _to_real_ids(neg, padding_id)
    w = tf.cast(tf.gather(item_table, neg), x.dtype)  # [M, k, d]
    return neg, tf.einsum("md,mkd->mk", x, w)


def balanced_logit_offset(num_negatives: int, beta: float = 1.0) -> float:
    """``log(beta / k)``: the score at which the binary loss has no pull on a shared shift.

    With every score equal to ``s``, the derivative of
    ``beta * softplus(-s) + k * softplus(s)`` is zero at ``s = log(beta / k)``:
    the positive's pull up and the ``k`` negatives' pull down cancel. Adding this
    offset to the scores starts training there, so the model does not have to
    learn the offset itself. ``k = 1``, ``beta = 1`` (SASRec's BCE) gives 0.
    """
    checks.check_positive_int(num_negatives, "num_negatives")
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
    checks.check_positive_int(num_negatives, "num_negatives")
    offset = resolve_logit_offset(logit_offset, num_negatives, beta)
    x, y = _valid_rows(hidden, labels, item_table, padding_id, check_ids)
    pos = tf.reduce_sum(x * tf.cast(tf.gather(item_table, y), x.dtype), axis=-1) + offset
    neg_ids, neg = _per_row_negatives(x, item_table, num_negatives, padding_id, seed)
    neg = neg + offset
    # -log sigma(s)^beta = beta * softplus(-s); -log(1 - sigma(s)) = softplus(s).
    neg_terms = tf.nn.softplus(neg) * tf.cast(tf.not_equal(neg_ids, y[:, None]), x.dtype)
    per_row = beta * tf.nn.softplus(-pos) + tf.reduce_sum(neg_terms, axis=-1)
    return _mean_or_zero(per_row)


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
    num_real = num_items - (0 if padding_id is None else 1)
    checks.check_positive_int(num_negatives, "num_negatives")
    beta = gbce_beta(num_negatives, num_real, t)
    return _binary_loss(
        hidden, labels, item_table, num_negatives, beta, padding_id, seed, check_ids,
        logit_offset,
    )
