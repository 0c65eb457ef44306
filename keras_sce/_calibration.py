"""The options of calibrated SCE, in plain Python and NumPy (no TensorFlow, no Keras).

`Calibration` and `resolve_calibration` serve both implementations of calibrated
SCE: the TensorFlow core (`keras_sce.ops.calibration`, which re-exports them) and the
`keras.ops` one (`keras_sce.kops.calibration`), so an option is checked, and a
mistake worded, the same way on every backend. The estimator is described in
`keras_sce.ops.calibration` and docs/calibrated-sce.md.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

PROPOSALS = ("uniform", "unigram", "cover")


def _real(value, name, low, high=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"calibration `{name}` must be a finite number, got {value!r}.")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"calibration `{name}` must be {bound}, got {value!r}.")
    return float(value)


class Calibration:
    """Options of calibrated SCE (pass to `scalable_cross_entropy(calibration=...)`).

    Args:
        num_samples: `m`, items drawn per batch with replacement and shared by all
            rows (extra memory `N x m`). More samples, less variance and less
            downward bias of the log-normaliser (both `O(1/m)`).
        proposal: `"uniform"` over the non-padding items; `"unigram"`
            proportional to `item_counts ** power`; or `"cover"`: every
            non-padding item exactly once with weight 1, i.e. the exact full softmax
            at the cost of the full `N x C` logits (tests, exact evaluation).
        item_counts: `[C]` non-negative counts per item id (`"unigram"` only;
            the padding id's entry is ignored).
        power: exponent of the counts (0.75 flattens popularity, as in word2vec).
        uniform_mix: share of the uniform proposal mixed into the unigram one.
            Items with zero count are never drawn, which would bias the estimate;
            a positive mix gives every item mass and caps each weight at
            `C / (m * uniform_mix)`.

    Raises:
        ValueError: on an unknown proposal, or counts that are missing, negative,
            non-finite, or leave an item without mass while `uniform_mix == 0`.

    Example:

    >>> from keras_sce.ops.calibration import Calibration
    >>> cal = Calibration(num_samples=512, proposal="unigram",
    ...                   item_counts=[0, 5, 3, 1, 1], power=0.75)
    """

    def __init__(self, num_samples=256, proposal="uniform", item_counts=None, power=1.0,
                 uniform_mix=0.0):
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(
                f"calibration `num_samples` must be a positive int, got {num_samples!r}.")
        if proposal not in PROPOSALS:
            raise ValueError(
                f"calibration `proposal` must be one of {PROPOSALS}, got {proposal!r}.")
        self.num_samples = num_samples
        self.proposal = proposal
        self.power = _real(power, "power", 0.0)
        self.uniform_mix = _real(uniform_mix, "uniform_mix", 0.0, 1.0)
        self.item_counts = None
        if proposal == "unigram":
            if item_counts is None:
                raise ValueError("calibration proposal 'unigram' needs `item_counts` (one per id).")
            counts = np.asarray(item_counts, np.float64)
            if counts.ndim != 1 or not np.all(np.isfinite(counts)) or np.any(counts < 0):
                raise ValueError(
                    "calibration `item_counts` must be a 1-D sequence of finite, non-negative "
                    "numbers (one per item id)."
                )
            self.item_counts = counts
        elif item_counts is not None:
            raise ValueError(f"calibration `item_counts` is only used with proposal 'unigram', "
                             f"not {proposal!r}.")

    def get_config(self) -> dict:
        counts = None if self.item_counts is None else [float(c) for c in self.item_counts]
        return dict(num_samples=self.num_samples, proposal=self.proposal, item_counts=counts,
                    power=self.power, uniform_mix=self.uniform_mix)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return (f"Calibration(num_samples={self.num_samples}, proposal={self.proposal!r}, "
                f"power={self.power}, uniform_mix={self.uniform_mix})")

    def proposal_probabilities(self, num_items: int, padding_id) -> np.ndarray:
        """`q` over all `num_items` ids as float64 (0 at the padding id)."""
        real = np.ones(num_items, np.float64)
        if padding_id is not None:
            real[padding_id] = 0.0
        uniform = real / real.sum()
        if self.proposal != "unigram":
            return uniform
        if self.item_counts.shape[0] != num_items:
            raise ValueError(f"calibration `item_counts` has {self.item_counts.shape[0]} "
                             f"entries for an item table of {num_items} rows.")
        mass = np.where(real > 0, self.item_counts, 0.0) ** self.power * real
        if mass.sum() <= 0:
            raise ValueError("calibration `item_counts` give no mass to any non-padding item.")
        q = (1.0 - self.uniform_mix) * mass / mass.sum() + self.uniform_mix * uniform
        if np.any((q <= 0) & (real > 0)):
            raise ValueError(
                f"calibration: {int(np.sum((q <= 0) & (real > 0)))} non-padding items have "
                "zero count, so they would never be drawn and the estimate would be biased; "
                "pass `uniform_mix` > 0 (e.g. 0.05) or smooth the counts."
            )
        return q


def resolve_calibration(calibration):
    """`None`/`False` -> None; `True` -> defaults; a dict or `Calibration` -> one."""
    if calibration is None or calibration is False:
        return None
    if calibration is True:
        return Calibration()
    if isinstance(calibration, Calibration):
        return calibration
    if isinstance(calibration, dict):
        try:
            return Calibration(**calibration)
        except TypeError as error:
            raise TypeError(f"calibration: {error}; allowed keys are num_samples, proposal, "
                            "item_counts, power, uniform_mix.") from None
    raise TypeError("`calibration` must be None, True, a dict of options or a Calibration, "
                    f"got {type(calibration).__name__}.")
