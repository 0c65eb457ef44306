"""Shape checks of the backend-neutral losses, in plain Python (no TensorFlow import).

The option checks themselves (`as_int`, `check_positive_int`, `check_padding_id`,
the SCE sizes, the clamp of a bucket size) are `keras_sce._options`, shared with the
TensorFlow core, so the same mistake gives the same message on every backend. The
wording here mirrors `keras_sce.ops.checks` (which imports TensorFlow at module level,
so it cannot be imported by a JAX-only program).
"""

from __future__ import annotations


def shapes(hidden_shape, labels_shape, table_shape) -> None:
    """Ranks and widths of hidden states, labels and table agree."""
    if len(hidden_shape) < 2:
        raise ValueError(f"`hidden` must be [..., dim] with rank >= 2, got shape {hidden_shape}.")
    if tuple(labels_shape) != tuple(hidden_shape[:-1]):
        raise ValueError(
            f"`labels` shape {tuple(labels_shape)} must match the hidden states without their "
            f"last axis, {tuple(hidden_shape[:-1])}."
        )
    if len(table_shape) != 2:
        raise ValueError(
            f"`item_table` must be a [num_items, dim] matrix, got shape {tuple(table_shape)}."
        )
    if hidden_shape[-1] != table_shape[1]:
        raise ValueError(
            f"Hidden size {hidden_shape[-1]} does not match the item table width "
            f"{table_shape[1]}: the model's output must live in the same space as the item "
            f"embeddings (hidden shape {tuple(hidden_shape)}, table shape {tuple(table_shape)})."
        )
