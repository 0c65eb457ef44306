"""Binary losses with per-row negatives in `keras.ops`: BCE and gBCE.

The counterparts of `keras_sce.ops.binary`: each row's positive against
`num_negatives` uniform negatives of its own (never the padding id; a negative equal
to the positive is ignored), a constant `logit_offset` added to every score inside
the loss (`keras_sce._options.balanced_logit_offset`), gBCE's power `beta` on the
positive's probability (Petrov & Macdonald, RecSys 2023, arXiv 2308.07192). The
negatives come from `jax.random` under JAX, so for one seed they differ from
TensorFlow's.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from keras_sce import _options
from keras_sce.kops._tensors import draw, prepare_rows, safe_labels, to_real_ids, weighted_mean


def _binary_loss(hidden, labels, item_table, num_negatives, beta, padding_id, seed, check_ids,
                 logit_offset):
    num_negatives = _options.check_positive_int(num_negatives, "num_negatives")
    offset = _options.resolve_logit_offset(logit_offset, num_negatives, beta)
    rows = prepare_rows(hidden, labels, item_table, padding_id, None, check_ids)
    num_real = rows.table.shape[0] - (0 if rows.padding_id is None else 1)
    x, y, table = rows.x, safe_labels(rows), rows.table
    # One draw per row, padding included: static shapes, as the TensorFlow version.
    neg_ids = draw("randint", (x.shape[0], num_negatives), seed, rows.y, minval=0,
                   maxval=num_real)
    neg_ids = to_real_ids(neg_ids, rows.padding_id)
    pos = ops.sum(x * ops.take(table, y, axis=0), axis=-1) + offset
    neg = ops.einsum("md,mkd->mk", x, ops.take(table, neg_ids, axis=0)) + offset
    # -log sigma(s)^beta = beta * softplus(-s); -log(1 - sigma(s)) = softplus(s). A
    # negative equal to the positive is masked with where (never 0 * inf = NaN).
    neg_terms = ops.where(ops.not_equal(neg_ids, ops.expand_dims(y, 1)), ops.softplus(neg),
                          ops.zeros_like(neg))
    per_row = beta * ops.softplus(-pos) + ops.sum(neg_terms, axis=-1)
    return weighted_mean(per_row, rows)


def sampled_bce(hidden, labels, item_table, *, num_negatives=1, padding_id=0, seed=None,
                check_ids=True, logit_offset="balanced"):
    """Binary cross-entropy, each row's positive against `k` uniform negatives (`keras.ops`).

    The arguments, checks and errors of `keras_sce.ops.binary.sampled_bce`:
    per counted row `-log sigma(s+ + o) - sum_j log(1 - sigma(s_j + o))`, `o` the
    `logit_offset`. `num_negatives=1` is the original SASRec loss.

    Args:
        hidden: float `[..., d]` hidden states.
        labels: integer `[...]` target ids.
        item_table: float `[C, d]` table.
        num_negatives: negatives per row.
        padding_id: ignored label, never a negative (None: none).
        seed: under JAX an int (the same negatives at every call), an int pair or
            a `[2]` tensor, or None (seed 0 folded with the batch's
            `batch_fingerprint`); on other backends None or a Python int.
        check_ids: labels must lie in `[0, C)` (raises when concrete, NaN when traced).
        logit_offset: `"balanced"` (`-log k`) or a finite float.

    Returns:
        A float scalar, the mean over the rows that count (0 when none does).

    Example:

    >>> import numpy as np
    >>> from keras_sce.kops import sampled_bce
    >>> rng = np.random.default_rng(0)
    >>> table = rng.normal(size=(100, 8)).astype("float32")
    >>> hidden = rng.normal(size=(4, 5, 8)).astype("float32")
    >>> loss = sampled_bce(hidden, rng.integers(1, 100, size=(4, 5)), table, seed=0)

    References:
        Kang & McAuley, "Self-Attentive Sequential Recommendation", arXiv 1808.09781.
    """
    return _binary_loss(hidden, labels, item_table, num_negatives, 1.0, padding_id, seed,
                        check_ids, logit_offset)


def gbce(hidden, labels, item_table, *, num_negatives=256, t=0.75, padding_id=0, seed=None,
         check_ids=True, logit_offset="balanced"):
    """Generalised binary cross-entropy (gBCE) with uniform negatives (`keras.ops`).

    The arguments, checks and errors of `keras_sce.ops.binary.gbce`:
    `-beta * log sigma(s+ + o) - sum_j log(1 - sigma(s_j + o))` with
    `beta = keras_sce._options.gbce_beta(k, C_real, t)`.

    Args:
        hidden: float `[..., d]` hidden states.
        labels: integer `[...]` target ids.
        item_table: float `[C, d]` table.
        num_negatives: uniform negatives per row (gSASRec uses 256).
        t: calibration in `[0, 1]`.
        padding_id: ignored label, never a negative (None: none).
        seed: see `sampled_bce`.
        check_ids: labels must lie in `[0, C)`.
        logit_offset: `"balanced"` (`log(beta / k)`) or a finite float.

    Returns:
        A float scalar, the mean over the rows that count (0 when none does).

    References:
        Petrov & Macdonald, "gSASRec: Reducing Overconfidence in Sequential
        Recommendation Trained with Negative Sampling", RecSys 2023, arXiv 2308.07192.
    """
    num_items = int(np.shape(item_table)[0])
    padding_id = _options.check_padding_id(padding_id, num_items)
    num_real = num_items - (0 if padding_id is None else 1)
    num_negatives = _options.check_positive_int(num_negatives, "num_negatives")
    beta = _options.gbce_beta(num_negatives, num_real, t)
    return _binary_loss(hidden, labels, item_table, num_negatives, beta, padding_id, seed,
                        check_ids, logit_offset)
