"""The paper's lazy Adam as pure functions: full state, and moments in a bounded pool.

The authors update the selected kernel entries with PyTorch's `SparseAdam`: only the
entries selected at a step change their weight and their two moments; unselected
entries keep weight and moments bit-identical; the bias correction uses the global step
count. A dense Adam on the masked gradient is not the same (its moments decay
everywhere and keep moving unselected weights). `SparseGradOptimizer` applies these
functions to the kernels of `SparseGradDense` layers.

Reference: V. Chekalina et al., "SparseGrad", EMNLP 2024, arXiv 2410.07383.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

from keras_sce.sparsegrad.core import resolve_selection


def _scalar(value, dtype):
    """Python numbers go straight to `dtype` (no float32 detour); tensors are cast."""
    if isinstance(value, int | float):
        return tf.constant(value, dtype)
    return tf.cast(value, dtype)


def lazy_adam_update(
    weight,
    m,
    v,
    gradient,
    step,
    learning_rate,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
):
    """One lazy-Adam step on the entries where `gradient != 0` (pure function).

    For the selected entries (non-zero gradient), with `t = step` (1-based global
    step):

        m ← β₁ m + (1 − β₁) g
        v ← β₂ v + (1 − β₂) g²
        w ← w − lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ) · m / (√v + ε)

    (PyTorch `SparseAdam`'s form, also Keras Adam's). Unselected entries are returned
    unchanged (bit-identical). An entry selected with an exactly-zero gradient value
    is indistinguishable from an unselected one and is treated as unselected.

    Args:
        weight: the variable's value.
        m: the first moment, of `weight`'s shape.
        v: the second moment, of `weight`'s shape.
        gradient: the gradient, of `weight`'s shape (zero where not selected).
        step: 1-based global step (int or scalar tensor).
        learning_rate: scalar.
        beta_1: first-moment decay `β₁`. Defaults to 0.9.
        beta_2: second-moment decay `β₂`. Defaults to 0.999.
        epsilon: `ε`, added to `√v`. Defaults to 1e-8.

    Returns:
        `(new_weight, new_m, new_v)`.
    """
    dtype = weight.dtype
    gradient = tf.cast(gradient, dtype)
    t = _scalar(step, dtype)
    lr = _scalar(learning_rate, dtype)
    b1 = _scalar(beta_1, dtype)
    b2 = _scalar(beta_2, dtype)
    selected = tf.not_equal(gradient, 0)
    new_m = tf.where(selected, b1 * m + (1 - b1) * gradient, m)
    new_v = tf.where(selected, b2 * v + (1 - b2) * tf.square(gradient), v)
    alpha = lr * tf.sqrt(1 - tf.pow(b2, t)) / (1 - tf.pow(b1, t))
    new_weight = tf.where(
        selected, weight - alpha * new_m / (tf.sqrt(new_v) + _scalar(epsilon, dtype)), weight
    )
    return new_weight, new_m, new_v


class PoolUpdate(NamedTuple):
    """The result of `pooled_lazy_adam_update`: what to write back.

    Attributes:
        indices: int32 `[k]` flat kernel indices to update.
        weights: `[k]` new kernel values at `indices`.
        m: `[s]` new first-moment pool.
        v: `[s]` new second-moment pool.
        slots: int32 `[s]` flat kernel index held by each pool slot.
        stamps: int32 `[s]` the step each slot was last selected at.
    """

    indices: tf.Tensor
    weights: tf.Tensor
    m: tf.Tensor
    v: tf.Tensor
    slots: tf.Tensor
    stamps: tf.Tensor


def pooled_lazy_adam_update(
    flat_weight,
    flat_gradient,
    m,
    v,
    slots,
    stamps,
    num_selected: int,
    step,
    learning_rate,
    beta_1: float = 0.9,
    beta_2: float = 0.999,
    epsilon: float = 1e-8,
) -> PoolUpdate:
    """Lazy Adam with the moments kept in a bounded pool of `s >= k` slots (LRU).

    The `k` selected entries (the non-zeros of the layer's top-k gradient) are looked
    up in the pool (sorted search); entries already there keep their moments, new ones
    take the least recently selected slots (never one selected at this step) and start
    from zero moments — the state a never-selected entry has in the full-state rule.
    Until the pool is full this is exactly `lazy_adam_update`.

    Args:
        flat_weight: `[n]` flattened kernel.
        flat_gradient: `[n]` its flattened gradient.
        m: `[s]` first-moment pool.
        v: `[s]` second-moment pool.
        slots: int32 `[s]` flat index per slot; an empty slot holds `n`.
        stamps: int32 `[s]` last-selection step per slot; an empty slot holds -1.
        num_selected: Python int `k`.
        step: 1-based global step.
        learning_rate: as for `lazy_adam_update`.
        beta_1: as for `lazy_adam_update`.
        beta_2: as for `lazy_adam_update`.
        epsilon: as for `lazy_adam_update`.

    Returns:
        A `PoolUpdate`.
    """
    size = int(m.shape[0])
    k = num_selected
    # The k non-zeros of the layer's selected gradient, found with the same top-k
    # kernel as the layer's default selection (approx_max_k is exact off TPU).
    if resolve_selection() == "approx":
        _, indices = tf.math.approx_max_k(tf.abs(flat_gradient), k)
    else:
        _, indices = tf.math.top_k(tf.abs(flat_gradient), k=k)
    values = tf.gather(flat_gradient, indices)
    valid = tf.not_equal(values, 0)
    order = tf.argsort(slots, stable=True)
    sorted_slots = tf.gather(slots, order)
    position = tf.minimum(tf.searchsorted(sorted_slots, indices, side="left"), size - 1)
    hit = tf.logical_and(valid, tf.equal(tf.gather(sorted_slots, position), indices))
    hit_slot = tf.gather(order, position)
    miss = tf.logical_and(valid, tf.logical_not(hit))
    protected = tf.scatter_nd(hit_slot[:, None], tf.cast(hit, tf.int32), [size]) > 0
    score = tf.where(protected, tf.constant(2**30, tf.int32), stamps)
    _, victims = tf.math.top_k(-score, k=k)  # least recently selected first
    rank = tf.maximum(tf.cumsum(tf.cast(miss, tf.int32)) - 1, 0)
    slot = tf.where(hit, hit_slot, tf.gather(victims, rank))
    target = tf.where(valid, slot, size)[:, None]  # invalid entries write a dummy slot
    zeros = tf.zeros_like(values)
    weights, new_m, new_v = lazy_adam_update(
        tf.gather(flat_weight, indices),
        tf.where(hit, tf.gather(m, hit_slot), zeros),
        tf.where(hit, tf.gather(v, hit_slot), zeros),
        values,
        step,
        learning_rate,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
    )

    def scatter(buffer, updates):
        padded = tf.concat([buffer, tf.zeros([1], buffer.dtype)], axis=0)
        return tf.tensor_scatter_nd_update(padded, target, updates)[:size]

    stamp = tf.fill(tf.shape(indices), tf.cast(step, tf.int32))
    return PoolUpdate(
        indices=indices,
        weights=weights,
        m=scatter(m, new_m),
        v=scatter(v, new_v),
        slots=scatter(slots, indices),
        stamps=scatter(stamps, stamp),
    )
