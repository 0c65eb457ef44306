"""SCE's item-table reads shard by shard, for a table whose rows are split over devices.

Under JAX, when the table's rows are sharded over one axis of a device mesh (e.g. a
`keras.distribution.ModelParallel` layout `("model", None)` for the embeddings),
the item search and the row gathers run inside `jax.shard_map`: each device scores
its own rows (streamed in chunks if asked), the per-device top-k candidates
(`n_b x k` each) are all-gathered and merged, and gathered rows are summed across
devices from the device that holds them. No device holds the whole table, its whole
gradient, or an `n_b x C` score matrix.
"""

from __future__ import annotations

import keras

from keras_sce.kops.search import bucket_top_k


def table_sharding(variable):
    """`(jax_mesh, axis_name)` when Keras' distribution splits `variable`'s rows.

    Returns None without a distribution, off JAX, or when the first axis of the
    variable's layout is not sharded.
    """
    if keras.backend.backend() != "jax" or variable is None:
        return None
    distribution = keras.distribution.distribution()
    if distribution is None or not hasattr(variable, "path"):
        return None
    layout = distribution.get_variable_layout(variable)
    axes = tuple(getattr(layout, "axes", ()) or ())
    if not axes or axes[0] is None:
        return None
    return layout.device_mesh.backend_mesh, axes[0]


def _local_rows(table, mesh, axis):
    shards = mesh.shape[axis]
    if table.shape[0] % shards:
        raise ValueError(
            f"The item table's {table.shape[0]} rows do not split evenly over the {shards} "
            f"devices of mesh axis {axis!r}; pad the table to a multiple of {shards} rows."
        )
    return table.shape[0] // shards


def sharded_bucket_top_k(centers, table, k, *, mesh, axis, chunk_size=None, exclude_id=None):
    """`keras_sce.kops.bucket_top_k` over a table whose rows are split on `axis`.

    Args:
        centers: float `[n_b, d]` (replicated).
        table: float `[C, d]`, rows sharded over mesh axis `axis` (C divisible).
        k: items per bucket.
        mesh: a `jax.sharding.Mesh`.
        axis: the mesh axis name that splits the rows.
        chunk_size: stream each device's rows in chunks of this many.
        exclude_id: a (global) row never selected.

    Returns:
        `(scores, indices)` `[n_b, k]`, replicated, as the unsharded search.
    """
    import jax
    from jax.sharding import PartitionSpec

    local_rows = _local_rows(table, mesh, axis)
    local_k = min(k, local_rows)

    def search(c, rows):
        offset = jax.lax.axis_index(axis) * local_rows
        excluded = None if exclude_id is None else exclude_id - offset
        scores, index = bucket_top_k(c, rows, local_k, chunk_size=chunk_size, exclude_id=excluded)
        scores = jax.lax.all_gather(scores, axis, axis=1, tiled=True)
        index = jax.lax.all_gather(index + offset, axis, axis=1, tiled=True)
        top, pos = jax.lax.top_k(scores, k)  # shard order: lower rows win ties
        return top, jax.numpy.take_along_axis(index, pos, axis=1)

    return jax.shard_map(
        search, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec(axis, None)),
        out_specs=(PartitionSpec(), PartitionSpec()),
        # The all-gathered candidates are the same on every device; no gradient
        # flows through the search, so the replication need not be type-checked.
        check_vma=False,
    )(centers, table)


def sharded_take(table, ids, *, mesh, axis):
    """`table[ids]` (any shape of ids) with the rows read on the device holding them."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec

    local_rows = _local_rows(table, mesh, axis)

    def take(rows, index):
        local = index - jax.lax.axis_index(axis) * local_rows
        inside = jnp.logical_and(local >= 0, local < local_rows)
        found = jnp.take(rows, jnp.clip(local, 0, local_rows - 1), axis=0)
        return jax.lax.psum(jnp.where(inside[..., None], found, 0), axis)

    return jax.shard_map(
        take, mesh=mesh, in_specs=(PartitionSpec(axis, None), PartitionSpec()),
        out_specs=PartitionSpec(),
    )(table, ids)
