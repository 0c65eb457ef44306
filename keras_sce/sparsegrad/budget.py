"""SparseGrad's budget: how many kernel-gradient entries a layer keeps per step.

LoRA of rank `r` trains `r·(in + out)` parameters of an `[in, out]` kernel; SparseGrad
matches it by keeping the same number `k = r·(in + out)` of gradient entries per step
(about 1% of a 768×3072 layer for `r = 7`).

Reference: V. Chekalina et al., "SparseGrad", EMNLP 2024, arXiv 2410.07383.
"""

from __future__ import annotations

from collections.abc import Mapping


def lora_equivalent_budget(rank: int, input_dim: int, units: int) -> int:
    """Number of selected entries `k = r·(in + out)` matching a LoRA rank `r`.

    Args:
        rank: LoRA rank `r >= 1`.
        input_dim: the kernel's input dimension.
        units: the kernel's output dimension.

    Returns:
        `min(r·(in + out), in·out)`.

    Raises:
        ValueError: when `rank < 1`.

    Example:

    >>> import keras_sce
    >>> keras_sce.sparsegrad.lora_equivalent_budget(7, 768, 3072)  # 7 · (768 + 3072)
    26880
    """
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}.")
    return int(min(rank * (input_dim + units), input_dim * units))


def budget_arguments(kernel_shape, group: str, num_selected=None, density=None, rank=None):
    """The `SparseGradDense` budget arguments for one layer of a group.

    Each of `num_selected`, `density` and `rank` is a single value or a `{group: value}`
    mapping; at most one of them may be given.

    Args:
        kernel_shape: `(in, out)` of the layer's kernel.
        group: the layer's group (the key looked up in a mapping).
        num_selected: `k`, int or `{group: int}`.
        density: `k` as a fraction of the kernel, float or `{group: float}`.
        rank: LoRA rank, int or `{group: int}`; `k = lora_equivalent_budget(rank, ...)`.

    Returns:
        `{"num_selected": k}`, `{"density": d}`, or `{}` (the layer's default budget).

    Raises:
        ValueError: when more than one budget is given, or a mapping lacks `group`.
    """
    given = [
        name
        for name, value in (("num_selected", num_selected), ("density", density), ("rank", rank))
        if value is not None
    ]
    if len(given) > 1:
        raise ValueError(f"Pass at most one of num_selected, density and rank; got {given}.")

    def pick(value):
        if isinstance(value, Mapping):
            if group not in value:
                raise ValueError(f"No budget given for group {group!r}.")
            return value[group]
        return value

    input_dim, units = (int(d) for d in kernel_shape)
    if rank is not None:
        return {"num_selected": lora_equivalent_budget(int(pick(rank)), input_dim, units)}
    if num_selected is not None:
        return {"num_selected": int(pick(num_selected))}
    if density is not None:
        return {"density": float(pick(density))}
    return {}
