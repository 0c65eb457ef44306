"""Which variables are SparseGrad kernels: an explicit registry keyed by identity.

A `SparseGradDense` layer registers its rotated kernel here when it is built, with the
budget `k` and the optional fixed support; `SparseGradOptimizer` looks every trainable
variable up here when it is built, and gives the registered ones the lazy Adam. Nothing
is written onto the variables themselves.

Keras variables are not hashable (their `==` is element-wise), so the registry is keyed
by `id(variable)` and holds a weak reference beside each entry: an entry disappears when
its variable is garbage-collected, and a recycled `id` never matches a dead entry.

A kernel created outside a `SparseGradDense` layer (a benchmark, a custom layer) is
routed to the lazy Adam the same way, with `register_sparse_kernel`.
"""

from __future__ import annotations

import weakref
from typing import Any, NamedTuple

import keras


class VariableRegistry:
    """A mapping from variables (by identity) to values, weak in the variables.

    Example:

    >>> import keras
    >>> from keras_sce.sparsegrad.registry import VariableRegistry
    >>> registry = VariableRegistry()
    >>> variable = keras.Variable([1.0, 2.0])
    >>> registry.set(variable, "checked")
    >>> registry.get(variable), variable in registry
    ('checked', True)
    >>> registry.get(keras.Variable([1.0, 2.0])) is None  # an equal variable is another key
    True
    >>> del variable  # the registry holds no reference: the entry goes with the variable
    >>> len(registry)
    0
    """

    def __init__(self):
        self._entries: dict[int, tuple[weakref.ref, Any]] = {}

    def set(self, variable, value) -> None:
        """Attaches `value` to `variable`, replacing any previous value."""
        key = id(variable)
        entries = self._entries

        def forget(reference, key=key):
            entry = entries.get(key)
            if entry is not None and entry[0] is reference:
                del entries[key]

        self._entries[key] = (weakref.ref(variable, forget), value)

    def get(self, variable, default=None):
        """The value attached to `variable`, or `default`."""
        entry = self._entries.get(id(variable))
        if entry is None or entry[0]() is not variable:
            return default
        return entry[1]

    def __contains__(self, variable) -> bool:
        entry = self._entries.get(id(variable))
        return entry is not None and entry[0]() is variable

    def __len__(self) -> int:
        return len(self._entries)  # a collected variable's entry is already removed


class SparseKernel(NamedTuple):
    """How the optimizer treats one SparseGrad kernel.

    Attributes:
        num_selected: int `k`, the number of kernel-gradient entries the layer keeps
            per step.
        support: int32 variable of flat indices restricting the selection (the O(k)
            state mode), or `None`.
    """

    num_selected: int
    support: Any = None


_KERNELS = VariableRegistry()


def register_sparse_kernel(variable, num_selected: int, support=None) -> None:
    """Marks `variable` as a SparseGrad kernel for `SparseGradOptimizer`.

    `SparseGradDense` calls this for its kernel when it is built; call it yourself only
    for a kernel trained through a top-k gradient outside that layer.

    Args:
        variable: the 2-D `keras.Variable` whose gradient keeps `num_selected` entries.
        num_selected: positive int `k`.
        support: optional 1-D int32 `keras.Variable` of flat indices (fixed support).

    Raises:
        TypeError: when `variable` is not a `keras.Variable`.
        ValueError: when `variable` is not 2-D or `num_selected` is not a positive int.

    Example:

    >>> import keras, numpy as np, keras_sce
    >>> kernel = keras.Variable(np.zeros((8, 16), "float32"))
    >>> keras_sce.sparsegrad.register_sparse_kernel(kernel, num_selected=12)
    >>> keras_sce.sparsegrad.is_sparsegrad_kernel(kernel)
    True
    >>> optimizer = keras_sce.sparsegrad.SparseGradOptimizer()
    >>> optimizer.build([kernel])  # the kernel gets the lazy Adam
    """
    if not isinstance(variable, keras.Variable):
        raise TypeError(f"variable must be a keras.Variable, got {type(variable).__name__}.")
    if len(variable.shape) != 2:
        raise ValueError(f"Kernel {variable.path} must be 2-D, got shape {variable.shape}.")
    if isinstance(num_selected, bool) or not isinstance(num_selected, int) or num_selected < 1:
        raise ValueError(f"num_selected must be a positive int, got {num_selected!r}.")
    _KERNELS.set(variable, SparseKernel(int(num_selected), support))


def sparse_kernel_spec(variable) -> SparseKernel | None:
    """The `SparseKernel` registered for `variable`, or `None` for any other variable."""
    return _KERNELS.get(variable)


def is_sparsegrad_kernel(variable) -> bool:
    """Whether `variable` is registered as a SparseGrad kernel (e.g. of a `SparseGradDense`)."""
    return variable in _KERNELS
