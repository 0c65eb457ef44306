"""Ranking against a JAX item table split by rows over a device mesh.

Each device scores only its own rows (`keras_sce.kops.sharded`); only the small
per-device top-k lists and two integers of the finiteness check leave the devices.
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from keras_sce.evaluation.finite import check_finite_queries, raise_non_finite_items


def row_sharding(item_table):
    """`(mesh, axis)` for a JAX array (or Keras variable) split by rows; else None."""
    if "jax" not in sys.modules:  # only a program that uses JAX can hold a JAX array
        return None
    from keras_sce.kops.sharded import array_row_sharding

    return array_row_sharding(item_table)


def as_float_array(queries):
    queries = np.asarray(queries)
    return queries if np.issubdtype(queries.dtype, np.floating) else queries.astype(np.float32)


def check_finite_sharded(queries, table, padding_id) -> None:
    """`check_finite` for a table split over devices: only two ints leave them."""
    from keras_sce.kops.sharded import non_finite_table_rows

    check_finite_queries(queries)
    count, first = non_finite_table_rows(table, padding_id)
    if count:
        raise_non_finite_items(count, table.shape[0], first)


def sharded_search(sharding, queries, table, k, chunk_size, padding_id, exclude, targets,
                    start, stop, batch_size):
    """One query batch against a row-sharded table (`keras_sce.kops.sharded`).

    The batch is padded to `batch_size` rows (no history, any real target), so every
    batch runs the same compiled program; the padding rows are dropped afterwards.
    """
    search = _compiled_sharded_search()
    rows = min(batch_size, queries.shape[0])
    extra = rows - (stop - start)

    def padded(values, fill):
        return np.concatenate([values[start:stop], np.full((extra, *values.shape[1:]), fill,
                                                           values.dtype)])

    mesh, axis = sharding
    out = search(padded(queries, 0.0), table, k=k, mesh=mesh, axis=axis,
                 exclude=padded(exclude, -1), targets=padded(targets, targets[start]),
                 chunk_size=chunk_size, exclude_id=padding_id)
    return tuple(np.asarray(value)[: stop - start] for value in out)


@functools.cache
def _compiled_sharded_search():
    import jax

    from keras_sce.kops.sharded import sharded_top_k_with_exclusion

    return jax.jit(sharded_top_k_with_exclusion,
                   static_argnames=("k", "mesh", "axis", "chunk_size", "exclude_id"))
