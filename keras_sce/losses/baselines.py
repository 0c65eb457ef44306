"""Keras 3 wrappers of the baseline losses in `keras_sce.ops.sampled`.

They share `SCELoss`'s calling convention: the model outputs hidden states
`[B, d]` or `[B, L, d]`, `y_true` holds item ids, and the loss reads the
item table (an Embedding-like layer or a variable) at every call, so the table
is trained. They are meant to be compared with `keras_sce.SCELoss` on equal terms.
"""

from __future__ import annotations

import keras

from keras_sce.losses.base import ItemTableLoss
from keras_sce.ops import checks, full_cross_entropy
from keras_sce.ops import sampled as sampled_ops


@keras.saving.register_keras_serializable(package="keras_sce")
class FullCrossEntropyLoss(ItemTableLoss):
    """Exact softmax cross-entropy over the whole catalogue, on valid rows only.

    The non-padding positions are gathered first, then scored against every item
    (`M x C` logits for `M` real positions): the full-CE baseline SCE is
    compared with. See `keras_sce.ops.full_cross_entropy`.

    Args:
        item_embeddings: Embedding-like layer or `[C, d]` variable.
        padding_id: ignored label / excluded item (None: no padding row).
        name: loss name.

    Call arguments:
        y_true: int `[B]` or `[B, L]` item ids.
        y_pred: float `[B, d]` or `[B, L, d]` hidden states.

    Example:

    >>> import keras, keras_sce
    >>> model = keras_sce.models.SASRec(num_items=1000, max_length=20, hidden_dim=16)
    >>> model.compile("adam", loss=keras_sce.losses.FullCrossEntropyLoss(
    ...     model.item_embedding_layer))
    """

    supports_sample_weight = False

    def __init__(self, item_embeddings=None, *, padding_id=0, name="full_ce_loss", dtype=None):
        super().__init__(item_embeddings, padding_id=padding_id, name=name, dtype=dtype)

    def _compute(self, y_true, y_pred, table, sample_weight):
        return full_cross_entropy(y_pred, y_true, table, padding_id=self.padding_id)


@keras.saving.register_keras_serializable(package="keras_sce")
class SampledSoftmaxLoss(ItemTableLoss):
    """Sampled softmax with logQ correction (`tf.nn.sampled_softmax_loss`).

    `num_sampled` negatives shared by the batch, uniform or by popularity
    (`sampler="unigram"` with `item_counts`), logits corrected by the log of
    the sampling probability. See `keras_sce.ops.sampled.sampled_softmax`.

    Args:
        item_embeddings: Embedding-like layer or `[C, d]` variable.
        num_sampled: negatives per step. Defaults to 256.
        sampler: `"uniform"` or `"unigram"`.
        item_counts: per-id counts (a list/array of length C) for `"unigram"`.
        distortion: exponent on the counts. Defaults to 1.0.
        padding_id: ignored label / never a negative.
        seed: optional int; the stream of negatives is then reproducible (fresh
            negatives at every step, the same sequence for the same seed).
        seed_position: where the stream of seeds starts (saved with the model,
            so a reloaded model continues it). Defaults to 0.

    References:
        Yi et al., RecSys 2019 (logQ correction); Jean et al., arXiv 1412.2007.
    """

    supports_sample_weight = False

    _config_keys = ("num_sampled", "sampler", "item_counts", "distortion", "seed")

    def __init__(
        self,
        item_embeddings=None,
        *,
        num_sampled=256,
        sampler="uniform",
        item_counts=None,
        distortion=1.0,
        padding_id=0,
        seed=None,
        seed_position=0,
        name="sampled_softmax_loss",
        dtype=None,
    ):
        super().__init__(item_embeddings, padding_id=padding_id, name=name, dtype=dtype)
        if sampler == "unigram" and item_counts is None:
            raise ValueError("sampler='unigram' needs item_counts.")
        self.num_sampled = checks.check_positive_int(num_sampled, "num_sampled")
        self.sampler = sampler
        self.item_counts = None if item_counts is None else [float(c) for c in item_counts]
        self.distortion = distortion
        self._init_seed(seed, seed_position)

    def _compute(self, y_true, y_pred, table, sample_weight):
        return sampled_ops.sampled_softmax(y_pred, y_true, table, **self._op_kwargs())


@keras.saving.register_keras_serializable(package="keras_sce")
class SampledBCELoss(ItemTableLoss):
    """Binary cross-entropy with `num_negatives` uniform negatives per position.

    `num_negatives=1` is the original SASRec loss. Negatives are fresh at every
    step (reproducible with `seed`). See `keras_sce.ops.sampled.sampled_bce`.

    Args:
        item_embeddings: Embedding-like layer or `[C, d]` variable.
        num_negatives: negatives per position. Defaults to 1.
        padding_id: ignored label / never a negative.
        seed: optional int; the stream of negatives is then reproducible.
        seed_position: where the stream of seeds starts (saved with the model,
            so a reloaded model continues it). Defaults to 0.
        logit_offset: constant added to every score before the sigmoid:
            `"balanced"` (default, `-log(num_negatives)`, 0 for one negative) or
            a float (0.0: the textbook loss). The offset lives in the loss only (for
            given weights no ranking changes) but it changes what is learned; see
            `keras_sce.ops.sampled.balanced_logit_offset`.

    References:
        Kang & McAuley, "Self-Attentive Sequential Recommendation", arXiv 1808.09781.
    """

    supports_sample_weight = False

    _config_keys = ("num_negatives", "seed", "logit_offset")

    def __init__(
        self,
        item_embeddings=None,
        *,
        num_negatives=1,
        padding_id=0,
        seed=None,
        logit_offset="balanced",
        seed_position=0,
        name="sampled_bce_loss",
        dtype=None,
    ):
        super().__init__(item_embeddings, padding_id=padding_id, name=name, dtype=dtype)
        # Validated now, not at the first call.
        self.num_negatives = checks.check_positive_int(num_negatives, "num_negatives")
        sampled_ops.resolve_logit_offset(logit_offset, self.num_negatives)
        self.logit_offset = logit_offset if isinstance(logit_offset, str) else float(logit_offset)
        self._init_seed(seed, seed_position)

    def _compute(self, y_true, y_pred, table, sample_weight):
        return sampled_ops.sampled_bce(y_pred, y_true, table, **self._op_kwargs())


@keras.saving.register_keras_serializable(package="keras_sce")
class GBCELoss(SampledBCELoss):
    """gBCE: BCE with the positive's probability raised to `beta` (gSASRec).

    `beta = alpha * (t * (1 - 1/alpha) + 1/alpha)` with the sampling rate
    `alpha = num_negatives / (C - 1)` counters the over-confidence that negative
    sampling causes. See `keras_sce.ops.sampled.gbce`.

    Args:
        item_embeddings: Embedding-like layer or `[C, d]` variable.
        num_negatives: uniform negatives per position. Defaults to 256.
        t: calibration in `[0, 1]`. Defaults to 0.75.
        padding_id: ignored label / never a negative.
        seed: optional int (a reproducible stream of negatives).
        seed_position: where the stream of seeds starts. Defaults to 0.
        logit_offset: `"balanced"` (default, `log(beta / num_negatives)`) or a
            float (0.0: the loss as published). The offset lives in the loss only
            (for given weights no ranking changes); without it SASRec on Amazon
            Beauty sits on a popularity plateau for tens of epochs (see
            `keras_sce.ops.sampled.balanced_logit_offset`).

    References:
        Petrov & Macdonald, "gSASRec: Reducing Overconfidence in Sequential
        Recommendation Trained with Negative Sampling", RecSys 2023, arXiv 2308.07192.
    """

    _config_keys = ("num_negatives", "t", "seed", "logit_offset")

    def __init__(
        self,
        item_embeddings=None,
        *,
        num_negatives=256,
        t=0.75,
        padding_id=0,
        seed=None,
        logit_offset="balanced",
        seed_position=0,
        name="gbce_loss",
        dtype=None,
    ):
        super().__init__(
            item_embeddings,
            num_negatives=num_negatives,
            padding_id=padding_id,
            seed=seed,
            logit_offset=logit_offset,
            seed_position=seed_position,
            name=name,
            dtype=dtype,
        )
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t must be in [0, 1], got {t}.")
        self.t = t

    def _compute(self, y_true, y_pred, table, sample_weight):
        return sampled_ops.gbce(y_pred, y_true, table, **self._op_kwargs())
