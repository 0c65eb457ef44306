"""Sampled baselines with the SCE calling convention: `(hidden, labels, item_table)`.

- `sampled_softmax` — sampled softmax with `num_sampled` negatives shared
  by every row of the batch, drawn without replacement, and logQ correction
  (Bengio & Senecal 2008; Yi et al., RecSys 2019).
- `sampled_bce`, `gbce` — the binary losses with `num_negatives`
  negatives drawn for each row (defined in `keras_sce.ops.binary`, also
  reachable here). Shared and per-row negatives are different concepts, hence
  the two names.
- `gathered_cross_entropy` — the former name of
  `keras_sce.ops.full_cross_entropy` (deprecated).

All of them ignore rows whose label is `padding_id`, never use the padding
row as a negative, return the mean over valid rows, and return 0 (not NaN) for a
batch without valid rows; a NaN or infinity in a valid row makes the loss NaN.
Outside XLA the valid rows are gathered first (`tf.boolean_mask`: no product
with the table is spent on padding); under XLA (`jit_compile=True`), which needs
static shapes, every row is kept and padding rows get zero weight. Negatives are
drawn for every row in both cases (stateless with a seed), so the two paths give
the same value for the same seed.
"""

from __future__ import annotations

import warnings

import tensorflow as tf

from keras_sce import _options
from keras_sce.ops import checks, inputs
from keras_sce.ops.binary import (  # noqa: F401 - the binary baselines, also reachable here
    balanced_logit_offset,
    gbce,
    gbce_beta,
    resolve_logit_offset,
    sampled_bce,
)
from keras_sce.ops.cross_entropy import full_cross_entropy
from keras_sce.ops.sampling import (
    inclusion_log_probabilities,
    sample_without_replacement,
    to_compact_ids,
    to_real_ids,
)


def gathered_cross_entropy(hidden, labels, item_table, *, padding_id=0, check_ids=True):
    """Deprecated name of `keras_sce.ops.full_cross_entropy`.

    `full_cross_entropy` now gathers the non-padding rows first itself (outside
    XLA), so the two compute the same value the same way. This name keeps working
    for one release with a `DeprecationWarning`.
    """
    warnings.warn(
        "keras_sce.ops.sampled.gathered_cross_entropy is deprecated and will be removed in "
        "the next release; use keras_sce.ops.full_cross_entropy (the same loss).",
        DeprecationWarning,
        stacklevel=2,
    )
    return full_cross_entropy(
        hidden, labels, item_table, padding_id=padding_id, check_ids=check_ids
    )


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

    One set of `num_sampled` distinct negatives is drawn per call and shared by
    every row (never the padding id), as `tf.nn.sampled_softmax_loss` does with a
    `unique=True` sampler, but with static shapes (Gumbel top-k), so the loss
    also compiles under XLA. Each logit is corrected by `-log Q(i)`, the log of
    the probability that item i is among the candidates, which makes the sampled
    softmax a consistent estimate of the full one; negatives equal to a row's
    positive are removed (`remove_accidental_hits`).

    Args:
        hidden: float `[..., d]` (as for `keras_sce.ops.full_cross_entropy`).
        labels: integer `[...]` item ids.
        item_table: float `[C, d]` tensor or variable.
        padding_id: ignored label and excluded item; None for no padding row.
        check_ids: verify ids lie in `[0, C)` (see `keras_sce.ops.full_cross_entropy`).
        num_sampled: negatives per call, shared by all rows (the binary losses'
            `num_negatives` are drawn for each row instead).
        sampler: `"uniform"` over the catalogue, or `"unigram"` proportional
            to `item_counts ** distortion` (popularity sampling, where logQ
            matters most).
        item_counts: per-id counts `[C]` (needed for `"unigram"`).
        distortion: exponent applied to the counts.
        remove_accidental_hits: mask negatives that equal a row's positive.
        seed: None (TensorFlow's global generator: fresh negatives at every call),
            an int (stateless: the same negatives at every call) or a `[2]` seed
            tensor (e.g. `SeedStream.next()`).

    Returns:
        Float scalar, the mean over valid rows.

    References:
        Jean et al., "On Using Very Large Target Vocabulary for Neural Machine
        Translation", arXiv 1412.2007; Yi et al., "Sampling-Bias-Corrected Neural
        Modeling for Large Corpus Item Recommendations", RecSys 2019.
    """
    _options.check_sampler(sampler)
    num_sampled = checks.check_positive_int(num_sampled, "num_sampled")
    rows = inputs.prepare_rows(hidden, labels, item_table, padding_id=padding_id,
                               check_ids=check_ids)
    padding_id, num_items = rows.padding_id, rows.num_items_static
    if num_items is None:
        raise ValueError("sampled_softmax needs an item table with a static number of rows.")
    num_real = rows.num_real_items()
    _options.check_num_sampled(num_sampled, num_real)
    log_q = None
    if sampler == "unigram":
        log_q = _options.unigram_log_q(item_counts, num_items, padding_id, distortion)
    x, y, weight = inputs.counted_rows(rows)
    log_expected = tf.constant(inclusion_log_probabilities(num_real, num_sampled, log_q), x.dtype)
    candidates = sample_without_replacement(num_real, num_sampled, log_q, seed)  # compact
    y_compact = to_compact_ids(y, padding_id)
    candidates_real = to_real_ids(candidates, padding_id)
    # logQ correction: every logit minus the log of its item's inclusion probability.
    table = rows.table
    table = tf.cast(table, x.dtype) if table.dtype != x.dtype else table
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
    return inputs.weighted_mean(per_row, weight, rows.ids_ok)
