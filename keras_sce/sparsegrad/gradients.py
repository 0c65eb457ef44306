"""The kernel gradients of a model over a few batches, per layer group.

Both the bases (`estimate_bases`) and the fixed supports (`estimate_support`) are
estimated from these preliminary gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf


def _kernel_of(layer_or_variable):
    kernel = getattr(layer_or_variable, "kernel", layer_or_variable)
    if not isinstance(kernel, keras.Variable):
        raise TypeError(
            "groups must map names to lists of Dense layers (with a `kernel`) or kernel "
            f"variables, got {type(layer_or_variable).__name__}."
        )
    if len(kernel.shape) != 2:
        raise ValueError(f"Kernel {kernel.path} must be 2-D, got shape {kernel.shape}.")
    return kernel


def _unpack(batch):
    if isinstance(batch, tuple | list):
        if len(batch) == 2:
            return batch[0], batch[1], None
        if len(batch) == 3:
            return batch[0], batch[1], batch[2]
    raise ValueError("data must yield (x, y) or (x, y, sample_weight) batches.")


def iterate_gradients(
    model: keras.Model,
    data: Iterable,
    loss: Callable,
    groups: Mapping[str, Sequence[Any]],
    num_steps: int = 30,
    optimizer: keras.optimizers.Optimizer | None = None,
):
    """Yields `{group: [G, ...]}` kernel gradients of `num_steps` training batches.

    Args:
        model: a built Keras model.
        data: iterable of `(x, y)` or `(x, y, sample_weight)` batches.
        loss: `loss(y_true, y_pred[, sample_weight])`, e.g. a `keras.losses.Loss`.
        groups: `{group_name: [Dense layers or kernel variables]}`.
        num_steps: number of batches to use.
        optimizer: if given, every step is an ordinary training step (all trainable
            variables are updated); if `None`, the model is left untouched.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    kernels = {name: [_kernel_of(item) for item in items] for name, items in groups.items()}
    flat = [k for ks in kernels.values() for k in ks]
    trainables = list(model.trainable_variables) if optimizer is not None else []
    watched = flat + [v for v in trainables if all(v is not k for k in flat)]
    for step, batch in enumerate(data):
        if step >= num_steps:
            break
        x, y, sample_weight = _unpack(batch)
        with tf.GradientTape() as tape:
            for v in watched:
                tape.watch(v.value)  # also kernels of frozen (non-trainable) layers
            y_pred = model(x, training=True)
            value = loss(y, y_pred) if sample_weight is None else loss(y, y_pred, sample_weight)
        grads = tape.gradient(value, [v.value for v in watched])
        out, i = {}, 0
        for name, ks in kernels.items():
            out[name] = []
            for k in ks:
                if grads[i] is None:
                    raise ValueError(f"Kernel {k.path} gets no gradient from the loss.")
                out[name].append(tf.convert_to_tensor(grads[i]))
                i += 1
        if optimizer is not None:
            pairs = [(g, v) for g, v in zip(grads, watched, strict=True) if g is not None]
            optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        yield out
