"""Deterministic synthetic interaction logs with a realistic shape."""

from __future__ import annotations

import math

import numpy as np

from keras_sce.datasets.sequences import SequenceData


def _coprime_multiplier(n: int, rng: np.random.Generator) -> int:
    while True:
        a = int(rng.integers(n // 3 + 1, max(n // 3 + 2, n))) | 1
        if math.gcd(a, n) == 1:
            return a


def synthetic_sequences(
    num_users: int = 2000,
    num_items: int = 1000,
    *,
    mean_length: float = 12.0,
    min_length: int = 3,
    max_length: int = 200,
    popularity_exponent: float = 0.8,
    transition_prob: float = 0.6,
    seed: int = 0,
) -> SequenceData:
    """Generates user sequences with power-law popularity and sequential structure.

    Each user's first item, and every "jump" later on, is drawn from a power-law
    popularity (item of popularity rank r has probability ~ `r^-a` with
    `a = popularity_exponent < 1`, sampled by inverse CDF, so 10^7 items cost no
    table). With probability `transition_prob` the next item is instead the
    current item's fixed *successor* (a pseudo-random bijection of the catalogue),
    plus a small random step among the next 3 successors, which gives a sequential
    pattern that a sequence model can learn and a popularity model cannot. Rank to
    id and the successor map are affine bijections modulo the catalogue size, so
    memory is O(interactions) for any catalogue from 10^3 to 10^7 items. Lengths
    follow a shifted geometric law with the given mean, clipped to
    `[min_length, max_length]`. The output is deterministic under `seed`.

    Args:
        num_users: number of users.
        num_items: number of real items; ids are `1..num_items` (0 = padding).
        mean_length: mean interactions per user (before clipping).
        min_length: minimum interactions per user (3 allows leave-one-out).
        max_length: maximum interactions per user.
        popularity_exponent: power-law exponent `a` in `[0, 1)`.
        transition_prob: probability to follow the successor chain.
        seed: random seed.

    Returns:
        A `SequenceData` with `num_items + 1` ids.

    Examples:
        >>> data = synthetic_sequences(num_users=100, num_items=1000, seed=1)
        >>> data.num_users, data.num_items
        (100, 1001)
    """
    if num_users < 1 or num_items < 2:
        raise ValueError("Need at least 1 user and 2 items.")
    if not 0.0 <= popularity_exponent < 1.0:
        raise ValueError(f"popularity_exponent must be in [0, 1), got {popularity_exponent}.")
    if not 0.0 <= transition_prob <= 1.0:
        raise ValueError(f"transition_prob must be in [0, 1], got {transition_prob}.")
    if min_length < 1 or max_length < min_length:
        raise ValueError("Need 1 <= min_length <= max_length.")
    rng = np.random.default_rng(seed)
    n = num_items
    rank_mult, rank_shift = _coprime_multiplier(n, rng), int(rng.integers(n))
    succ_mult, succ_shift = _coprime_multiplier(n, rng), int(rng.integers(n))

    def popular(size):
        u = rng.random(size)
        rank = np.minimum((n * u ** (1.0 / (1.0 - popularity_exponent))).astype(np.int64), n - 1)
        return (rank * rank_mult + rank_shift) % n  # 0-based item index

    def successor(items):
        step = rng.integers(0, 3, size=items.shape)
        out = items
        for hop in range(3):
            nxt = (out * succ_mult + succ_shift) % n
            out = np.where(step >= hop, nxt, out) if hop else nxt
        return out

    p = 1.0 / max(mean_length - min_length + 1.0, 1.0)
    lengths = np.clip(min_length + rng.geometric(p, size=num_users) - 1, min_length, max_length)
    steps = np.zeros((num_users, int(lengths.max())), dtype=np.int64)
    steps[:, 0] = popular(num_users)
    for t in range(1, steps.shape[1]):
        chain = rng.random(num_users) < transition_prob
        steps[:, t] = np.where(chain, successor(steps[:, t - 1]), popular(num_users))
    sequences = [steps[u, : lengths[u]] + 1 for u in range(num_users)]
    return SequenceData(
        sequences=sequences,
        num_items=n + 1,
        user_ids=np.arange(1, num_users + 1),
        name=(
            f"synthetic(users={num_users}, items={num_items}, seed={seed}, "
            f"a={popularity_exponent}, p_seq={transition_prob})"
        ),
    )
