"""Input checks of the backend-neutral SCE, in plain Python (no TensorFlow import).

The wording mirrors `keras_sce.ops.checks` (which imports TensorFlow at module
level, so it cannot be imported by a JAX-only program): the same mistake gives the
same message on every backend.
"""

from __future__ import annotations

import math
import numbers
import warnings

import numpy as np


def as_int(value, name: str, *, minimum=None, allow_none: bool = False):
    """`value` as a Python int (Python or NumPy integer, never a bool)."""
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        allowed = "an int" + (" or None" if allow_none else "")
        raise TypeError(f"`{name}` must be {allowed} (Python or NumPy integer), got {value!r}.")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value}.")
    return value


def positive_int(value, name: str, allow_none: bool = False):
    """`value` as a Python int >= 1; ValueError otherwise."""
    try:
        return as_int(value, name, minimum=1, allow_none=allow_none)
    except TypeError as err:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.") from err


def sce_options(num_buckets, bucket_size_x, bucket_size_y, chunk_size) -> tuple:
    """SCE's size options as Python ints, in the order given."""
    return (
        positive_int(num_buckets, "num_buckets", allow_none=True),
        positive_int(bucket_size_x, "bucket_size_x", allow_none=True),
        positive_int(bucket_size_y, "bucket_size_y"),
        positive_int(chunk_size, "chunk_size", allow_none=True),
    )


def padding_row(padding_id, num_items):
    """`padding_id` is None or a row of the table; returns it as a Python int."""
    padding_id = as_int(padding_id, "padding_id", allow_none=True)
    if padding_id is not None and (
        padding_id < 0 or (num_items is not None and padding_id >= num_items)
    ):
        raise ValueError(
            f"`padding_id`={padding_id} is not a row of the item table (it has {num_items} rows). "
            "Use padding_id=None when the table has no padding row."
        )
    return padding_id


def clamp(requested: int, available: int, name: str, what: str) -> int:
    """Clamps a bucket size to what is available, with a warning when it bites."""
    if available < 1:
        raise ValueError(f"`{name}`: there are no {what} to choose from.")
    if requested > available:
        warnings.warn(
            f"`{name}`={requested} is larger than the {available} {what} available; "
            f"using {available} (every {what[:-1]} is then in every bucket).",
            UserWarning,
            stacklevel=4,
        )
        return available
    return requested


def authors_rule(num_rows: int) -> int:
    """`int(2 * sqrt(T))` for `T` rows per batch (at least 1)."""
    return max(1, int(2 * math.sqrt(max(int(num_rows), 1))))


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
