"""The constructor arguments of `keras_sce.SparseGradDense`, checked in one place.

Each function checks one group of arguments and raises a `ValueError` that names the
argument: the sizes and modes (`check_options`), the bases (`intern_bases`), the
support (`parse_support`, `check_support_range`) and the number of selected entries,
which needs the kernel's size and is resolved at build time (`resolve_num_selected`).

A layer restored by `from_config` has no arrays yet: its bases and support are the
placeholder `STORED`, and their values come with the weights.
"""

from __future__ import annotations

import numpy as np

from keras_sce.sparsegrad.basis_pool import shared_basis
from keras_sce.sparsegrad.core import FORMULATIONS, SELECTION_MODES

STORED = "stored"  # Placeholder used by `from_config`: the value comes from the weights.

# Dense arguments that would make the kernel gradient dense (or do not apply).
_REFUSED = ("kernel_regularizer", "kernel_constraint")


def pop_refused_arguments(kwargs: dict) -> None:
    """Removes the Dense-only arguments from `kwargs`, refusing any that is set.

    Raises:
        ValueError: for a kernel regularizer or constraint (it would make the kernel
            gradient dense) or a LoRA rank.
    """
    for banned in _REFUSED:
        if kwargs.get(banned) is not None:
            raise ValueError(
                f"SparseGradDense does not accept {banned}: it would make the kernel "
                "gradient dense and defeat the sparse update."
            )
        kwargs.pop(banned, None)
    if kwargs.pop("lora_rank", None) is not None:
        raise ValueError("SparseGradDense does not accept lora_rank.")


def _is_positive_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 1


def check_options(units, num_selected, density, selection, formulation) -> None:
    """Checks the layer's sizes and modes (see `keras_sce.SparseGradDense`)."""
    if not _is_positive_int(units):
        raise ValueError(f"units must be a positive int, got {units!r}.")
    if num_selected is not None and density is not None:
        raise ValueError("Pass either num_selected or density, not both.")
    if num_selected is not None and not _is_positive_int(num_selected):
        raise ValueError(f"num_selected must be a positive int, got {num_selected!r}.")
    if density is not None and not (0.0 < float(density) <= 1.0):
        raise ValueError(f"density must be in (0, 1], got {density!r}.")
    if selection not in SELECTION_MODES:
        raise ValueError(f"selection must be one of {SELECTION_MODES}, got {selection!r}.")
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation must be one of {FORMULATIONS}, got {formulation!r}.")


def intern_bases(input_basis, output_basis):
    """`(P, Q)`: the shared variables of the bases given as values, else `None`.

    A basis that is `None` (the identity) or `STORED` (restored later from the
    weights) gives `None` here.

    Raises:
        ValueError: for a string other than `STORED`, or a basis that is not an
            orthogonal square matrix (`keras_sce.sparsegrad.shared_basis`).
    """
    interned = []
    for arg, name in ((input_basis, "input_basis"), (output_basis, "output_basis")):
        given = arg is not None and not isinstance(arg, str)
        interned.append(shared_basis(arg, name) if given else None)
    for arg in (input_basis, output_basis):
        if isinstance(arg, str) and arg != STORED:
            raise ValueError(f"Bases must be arrays, keras.Variables or None, got {arg!r}.")
    return tuple(interned)


def parse_support(support, support_size):
    """`(indices, size)` of the `support` argument.

    Returns:
        The sorted int32 flat indices (`None` for no support or a `STORED` one) and
        the support's size (`None` for no support).

    Raises:
        ValueError: for a support that is not a non-empty 1-D array of distinct
            integers, or `STORED` without its `support_size`.
    """
    if isinstance(support, str):
        if support != STORED or support_size is None:
            raise ValueError(f"support must be an array of flat indices, got {support!r}.")
        return None, int(support_size)
    if support is None:
        return None, None
    array = np.asarray(support)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            "support must be a non-empty 1-D array of integer flat indices, got "
            f"shape {array.shape} and dtype {array.dtype}."
        )
    if np.unique(array).size != array.size:
        raise ValueError("support must hold distinct flat indices.")
    return np.sort(array).astype(np.int32), int(array.size)


def check_support_range(indices, support_size: int, size: int, layer_name: str, shape) -> None:
    """Checks that the support fits a kernel of `size = in·units` entries.

    Args:
        indices: the sorted indices from `parse_support`, or `None` (restored).
        support_size: the number of support entries.
        size: the number of kernel entries.
        layer_name: the layer, for the message.
        shape: `(in, units)`, for the message.
    """
    if indices is not None and (indices[0] < 0 or indices[-1] >= size):
        raise ValueError(
            f"support indices of {layer_name} must be in [0, {size}) "
            f"(= {shape[0]}·{shape[1]})."
        )
    if support_size > size:
        raise ValueError(f"support of {layer_name} is larger than the kernel ({size}).")


def resolve_num_selected(
    num_selected, density, size: int, support_size, layer_name: str, shape
) -> int:
    """The number `k` of kernel-gradient entries kept per step.

    `num_selected` when given, else `max(1, round(density · n))` (`density` 0.01 when
    `None`), `n` the support size, or the kernel size `size` without a support.

    Raises:
        ValueError: unless `1 <= k <= n`.
    """
    limit = size if support_size is None else support_size
    if num_selected is not None:
        k = num_selected
    else:
        k = max(1, int(round((0.01 if density is None else density) * limit)))
    if not 1 <= k <= limit:
        where = "the support size" if support_size is not None else f"{shape[0]}·{shape[1]}"
        raise ValueError(
            f"num_selected of {layer_name} must be in [1, {limit}] ({where}), got {k}."
        )
    return int(k)
