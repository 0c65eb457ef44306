"""Sampled softmax with logQ correction in `keras.ops` (the backend-neutral baseline).

The counterpart of `keras_sce.ops.sampled.sampled_softmax`: one set of
`num_sampled` distinct negatives per call, shared by every row (never the padding
id), drawn without replacement by the Gumbel top-k trick (static shapes, so it
compiles under `jit`), every logit corrected by the log of its item's inclusion
probability. The draws come from `jax.random` under JAX (see
`keras_sce.kops._tensors.draw`), so for one seed they differ from TensorFlow's.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from keras_sce import _options
from keras_sce.kops._tensors import (
    draw,
    prepare_rows,
    safe_labels,
    to_compact_ids,
    to_real_ids,
    weighted_mean,
)

NEG_INF = float("-inf")


def sample_without_replacement(num_real, num_sampled, log_q, seed, labels):
    """`num_sampled` distinct compact ids in `[0, num_real)` (Gumbel top-k).

    The `k` largest of `log q_i + Gumbel_i` are distributed as `k` successive
    draws without replacement proportionally to `q` (uniform when `log_q` is None).
    """
    tiny = float(np.finfo(np.float32).tiny)
    u = draw("uniform", (num_real,), seed, labels, "float32", minval=tiny, maxval=1.0)
    keys = -ops.log(-ops.log(u))
    if log_q is not None:
        keys = keys + ops.convert_to_tensor(np.asarray(log_q, np.float32))
    return ops.top_k(keys, num_sampled, sorted=False)[1]


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
    """Sampled softmax with logQ correction, in `keras.ops`.

    The arguments, checks and errors of `keras_sce.ops.sampled.sampled_softmax`.

    Args:
        hidden: float `[..., d]` hidden states.
        labels: integer `[...]` target ids.
        item_table: float `[C, d]` table.
        num_sampled: negatives per call, shared by all rows.
        sampler: `"uniform"` over the catalogue, or `"unigram"` proportional to
            `item_counts ** distortion`.
        item_counts: per-id counts `[C]` (needed for `"unigram"`).
        distortion: exponent applied to the counts.
        padding_id: ignored label, never a negative (None: none).
        remove_accidental_hits: mask negatives that equal a row's positive.
        seed: under JAX an int (the same negatives at every call), an int pair or
            a `[2]` tensor (stateless), or None (seed 0 folded with the batch's
            `batch_fingerprint`); on other backends None or a Python int.
        check_ids: labels must lie in `[0, C)` (raises when concrete, NaN when traced).

    Returns:
        A float scalar, the mean over the rows that count (0 when none does).

    Raises:
        ValueError: an unknown sampler, `num_sampled` not positive or larger
            than the real items, `"unigram"` without (or with the wrong number of)
            `item_counts`; shapes and ids as `keras_sce.kops.full_cross_entropy`.
        TypeError: non-float hidden states or table, non-integer labels.

    Example:

    >>> import numpy as np
    >>> from keras_sce.kops import sampled_softmax
    >>> rng = np.random.default_rng(0)
    >>> table = rng.normal(size=(100, 8)).astype("float32")
    >>> hidden = rng.normal(size=(4, 5, 8)).astype("float32")
    >>> loss = sampled_softmax(hidden, rng.integers(1, 100, size=(4, 5)), table,
    ...                        num_sampled=20, seed=0)

    References:
        Jean et al., arXiv 1412.2007; Yi et al., "Sampling-Bias-Corrected Neural
        Modeling for Large Corpus Item Recommendations", RecSys 2019.
    """
    _options.check_sampler(sampler)
    num_sampled = _options.check_positive_int(num_sampled, "num_sampled")
    rows = prepare_rows(hidden, labels, item_table, padding_id, None, check_ids)
    padding_id, num_items = rows.padding_id, rows.table.shape[0]
    num_real = num_items - (0 if padding_id is None else 1)
    _options.check_num_sampled(num_sampled, num_real)
    log_q = None
    if sampler == "unigram":
        log_q = _options.unigram_log_q(item_counts, num_items, padding_id, distortion)
    x, y, table = rows.x, safe_labels(rows), rows.table
    log_expected = ops.convert_to_tensor(
        _options.inclusion_log_probabilities(num_real, num_sampled, log_q).astype(rows.dtype)
    )
    candidates = sample_without_replacement(num_real, num_sampled, log_q, seed, rows.y)
    candidates_real = to_real_ids(candidates, padding_id)
    true_logit = ops.sum(x * ops.take(table, y, axis=0), axis=-1) - ops.take(
        log_expected, to_compact_ids(y, padding_id)
    )
    sampled_logits = ops.matmul(x, ops.transpose(ops.take(table, candidates_real, axis=0)))
    sampled_logits = sampled_logits - ops.expand_dims(ops.take(log_expected, candidates), 0)
    if remove_accidental_hits:
        hit = ops.expand_dims(candidates_real, 0) == ops.expand_dims(y, 1)
        sampled_logits = ops.where(hit, NEG_INF, sampled_logits)
    all_logits = ops.concatenate([ops.expand_dims(true_logit, 1), sampled_logits], axis=1)
    return weighted_mean(ops.logsumexp(all_logits, axis=1) - true_logit, rows)
