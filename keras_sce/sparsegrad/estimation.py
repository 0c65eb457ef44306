"""Estimation of SparseGrad's bases and fixed supports from preliminary gradients.

Reference: V. Chekalina et al., "SparseGrad", EMNLP 2024, arXiv 2410.07383.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from keras_sce.sparsegrad.gradients import iterate_gradients
from keras_sce.sparsegrad.hosvd import Bases, BasisAccumulator


def estimate_bases(
    gradients: Iterable[Mapping[str, Any]] | None = None,
    *,
    model: keras.Model | None = None,
    data: Iterable | None = None,
    loss: Callable | None = None,
    groups: Mapping[str, Sequence[Any]] | None = None,
    num_steps: int = 30,
    optimizer: keras.optimizers.Optimizer | None = None,
    orientation: str = "consistent",
) -> dict[str, Bases]:
    """Estimates SparseGrad's frozen orthogonal bases per layer group.

    Either consumes a stream of gradients you provide (`gradients`: an iterable of
    `{group: G or [G, ...]}` mappings with `G` of shape `[in, out]`), or computes them
    itself from `num_steps` batches of `data` (`model`, `data`, `loss`, `groups`). The
    Gram sums `Σ G Gᵀ`, `Σ Gᵀ G` are accumulated per group (float32) and
    eigen-decomposed in float64; eigenvectors are sorted by decreasing eigenvalue and
    each is signed so that its largest-magnitude entry is positive.

    Args:
        gradients: optional iterable of `{group: gradient(s)}` per step.
        model: the built model whose gradients are taken (with `data`, `loss` and
            `groups`, instead of `gradients`); see `iterate_gradients`.
        data: iterable of `(x, y)` or `(x, y, sample_weight)` batches.
        loss: `loss(y_true, y_pred[, sample_weight])`.
        groups: `{group_name: [Dense layers or kernel variables]}`.
        num_steps: number of batches to use. Defaults to 30.
        optimizer: if given, every step is also a training step; see
            `iterate_gradients`.
        orientation: `"consistent"` (default) or `"paper"`; see
            `BasisAccumulator.bases`.

    Returns:
        `{group: Bases}`. Pass `bases[g].input_basis` / `.output_basis` to
        `SparseGradDense` (equal matrices are shared, one variable per basis).

    Example:

    >>> import keras, numpy as np, keras_sce
    >>> up, down = keras.layers.Dense(16, activation="relu"), keras.layers.Dense(4)
    >>> model = keras.Sequential([keras.Input((4,)), up, down])
    >>> rng = np.random.default_rng(0)
    >>> data = [(rng.normal(size=(8, 4)).astype("float32"),
    ...          rng.normal(size=(8, 4)).astype("float32")) for _ in range(3)]
    >>> bases = keras_sce.sparsegrad.estimate_bases(
    ...     model=model, data=data, loss=keras.losses.MeanSquaredError(), num_steps=3,
    ...     groups={"up": [up], "down": [down]})
    >>> bases["up"].input_basis.shape, bases["up"].output_basis.shape
    ((4, 4), (16, 16))
    >>> bases["down"].num_gradients  # one gradient per step and layer of the group
    3
    """
    if gradients is None:
        if model is None or data is None or loss is None or groups is None:
            raise ValueError("Pass either `gradients`, or all of model, data, loss and groups.")
        gradients = iterate_gradients(model, data, loss, groups, num_steps, optimizer)
    elif model is not None:
        raise ValueError("Pass either `gradients` or `model`, not both.")
    accumulator = BasisAccumulator()
    for step in gradients:
        for group, grads in step.items():
            accumulator.update(group, grads)
    return accumulator.bases(orientation)


def estimate_support(
    gradients: Iterable[Mapping[str, Any]] | None = None,
    *,
    bases: Mapping[str, Bases],
    support_size: int | Mapping[str, int],
    model: keras.Model | None = None,
    data: Iterable | None = None,
    loss: Callable | None = None,
    groups: Mapping[str, Sequence[Any]] | None = None,
    num_steps: int = 30,
) -> dict[str, list[np.ndarray]]:
    """Chooses, per layer, the bounded support of the O(k)-state mode.

    For each layer `l` of each group, accumulates the energy `Σ_t Ĝ_t²` of its kernel
    gradients in the rotated basis (`Ĝ = Pᵀ G Q`) over the preliminary steps and keeps
    the `support_size` entries of largest energy. Pass the result as `support=` to
    `SparseGradDense`: per-step top-k is then taken inside the support, and the
    optimizer keeps moments only there.

    Args:
        gradients: iterable of `{group: [G_layer0, G_layer1, ...]}` per step (the layer
            order must be the same at every step), or `None` to compute them from
            `model`, `data`, `loss`, `groups` (see `iterate_gradients`; no update).
        bases: `{group: Bases}` from `estimate_bases`.
        support_size: int, or `{group: int}`.

    Returns:
        `{group: [sorted int32 flat indices per layer]}`.
    """
    if gradients is None:
        if model is None or data is None or loss is None or groups is None:
            raise ValueError("Pass either `gradients`, or all of model, data, loss and groups.")
        gradients = iterate_gradients(model, data, loss, groups, num_steps)
    energy: dict[str, list[tf.Tensor]] = {}
    for step in gradients:
        for group, grads in step.items():
            if group not in bases:
                raise ValueError(f"No bases for group {group!r}.")
            if not isinstance(grads, list | tuple):
                grads = [grads]
            p = tf.constant(bases[group].input_basis)
            q = tf.constant(bases[group].output_basis)
            rotated = [
                tf.square(tf.matmul(tf.matmul(p, tf.cast(g, tf.float32), transpose_a=True), q))
                for g in grads
            ]
            if group not in energy:
                energy[group] = rotated
            else:
                if len(energy[group]) != len(rotated):
                    raise ValueError(f"Group {group!r} changed its number of layers.")
                energy[group] = [a + b for a, b in zip(energy[group], rotated, strict=True)]
    if not energy:
        raise ValueError("No gradients were accumulated.")
    result = {}
    for group, layers in energy.items():
        size = support_size[group] if isinstance(support_size, Mapping) else support_size
        n = int(layers[0].shape[0] * layers[0].shape[1])
        if not 1 <= size <= n:
            raise ValueError(f"support_size for {group!r} must be in [1, {n}], got {size}.")
        result[group] = [
            np.sort(tf.math.top_k(tf.reshape(e, [-1]), k=size).indices.numpy()).astype(np.int32)
            for e in layers
        ]
    return result
