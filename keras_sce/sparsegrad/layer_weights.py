"""The weights of `keras_sce.SparseGradDense` besides its kernel, and their storage.

The bases are frozen float32 variables shared by value (`keras_sce.sparsegrad.shared_basis`):
a layer restored from a file first holds identity placeholders, then, as its weights
load, points each basis at the shared variable holding the loaded value. The support
is an int32 variable of flat kernel indices. A saved layer holds exactly the weights
it uses, under the names of `WEIGHT_NAMES`.
"""

from __future__ import annotations

import numpy as np

from keras_sce.compat import replace_tracked_variable
from keras_sce.sparsegrad.basis_pool import shared_basis

# The stored weights, in the order they are written.
WEIGHT_NAMES = ("kernel", "bias", "input_basis", "output_basis", "support")


def build_basis(layer, current, arg, dim: int, name: str):
    """The basis variable `name` of `layer`, `[dim, dim]`, at build time.

    Args:
        layer: the layer being built.
        current: the interned variable the constructor got, or `None`.
        arg: the constructor argument: `None` (identity), a placeholder string
            (restored from a file: an identity variable, overwritten when the
            weights load) or the basis itself.
        dim: the basis' size.
        name: `"input_basis"` or `"output_basis"`.

    Raises:
        ValueError: for a basis whose shape is not `(dim, dim)`.
    """
    if arg is None:
        return None
    if isinstance(arg, str):
        return layer.add_weight(
            shape=(dim, dim),
            initializer="identity",
            dtype="float32",
            trainable=False,
            autocast=False,
            name=name,
        )
    if tuple(current.shape) != (dim, dim):
        raise ValueError(
            f"{name} of layer {layer.name} must have shape ({dim}, {dim}), got "
            f"{tuple(current.shape)}."
        )
    return current


def build_support(layer, indices, size: int):
    """The int32 support variable of `layer`: `indices`, or `0..size-1` until loaded."""
    support = layer.add_weight(
        shape=(size,),
        initializer="zeros",
        dtype="int32",
        trainable=False,
        autocast=False,
        name="support",
    )
    support.assign(np.arange(size, dtype=np.int32) if indices is None else indices)
    return support


def save_weights(layer, store) -> None:
    """Writes the weights `layer` uses into `store` (a layer's `save_own_variables`)."""
    for name in WEIGHT_NAMES:
        if getattr(layer, name) is not None:
            store[name] = getattr(layer, name)


def load_weights(layer, store) -> None:
    """Reads `layer`'s weights from `store` (a layer's `load_own_variables`).

    Bases are interned: equal bases of different layers become one variable again.
    The tracked variable is replaced at the same position, so `layer.weights` (and
    `get_weights`/`set_weights`) keep the order they had before saving.

    Raises:
        ValueError: when `store` does not hold exactly the weights the layer uses.
    """
    expected = {name for name in WEIGHT_NAMES if getattr(layer, name) is not None}
    found = set(store.keys())
    if found != expected:
        raise ValueError(
            f"Layer {layer.name} expects weights {sorted(expected)}, the file holds "
            f"{sorted(found)}."
        )
    for name in ("kernel", "bias", "support"):
        if getattr(layer, name) is not None:
            getattr(layer, name).assign(store[name])
    for name in ("input_basis", "output_basis"):
        if getattr(layer, name) is not None:
            shared = shared_basis(np.asarray(store[name]), name)
            if shared is not getattr(layer, name):
                replace_tracked_variable(layer, name, shared)
