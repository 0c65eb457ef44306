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

from keras_sce import _options
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


# -- the full-catalogue ranking on a table split by rows ------------------------------------
def array_row_sharding(table):
    """`(jax_mesh, axis_name)` when `table` (a JAX array or a Keras variable holding one)
    has its rows split over one mesh axis of more than one device; None otherwise."""
    import jax
    from jax.sharding import NamedSharding

    value = getattr(table, "value", table)  # a Keras variable holds its array in `.value`
    if not isinstance(value, jax.Array) or not isinstance(value.sharding, NamedSharding):
        return None
    spec = tuple(value.sharding.spec)
    axis = spec[0] if spec else None
    if not isinstance(axis, str) or value.sharding.mesh.shape[axis] < 2:
        return None
    if any(other is not None for other in spec[1:]):
        return None  # the columns split as well: not a row-sharded table
    return value.sharding.mesh, axis


def non_finite_table_rows(table, exclude_id=None):
    """`(count, first)` of the table rows holding a NaN or an infinity (`exclude_id`
    left out), computed where the rows live: only two ints leave the devices."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def count(values):
        bad = jnp.logical_not(jnp.all(jnp.isfinite(values), axis=1))
        if exclude_id is not None:
            bad = jnp.logical_and(bad, jnp.arange(values.shape[0]) != exclude_id)
        return jnp.sum(bad), jnp.argmax(bad)

    total, first = count(getattr(table, "value", table))
    return int(total), int(first)


def _local_ranking(q, rows, exclude, targets, *, k, chunk_size, exclude_id, axis, local_rows):
    """One device's part of `sharded_top_k_with_exclusion` (inside `jax.shard_map`)."""
    import jax
    import jax.numpy as jnp

    n = q.shape[0]
    offset = jax.lax.axis_index(axis) * local_rows
    with_targets = targets is not None
    if with_targets:  # the target rows, read on the device that holds them
        local = targets - offset
        inside = jnp.logical_and(local >= 0, local < local_rows)
        found = jnp.take(rows, jnp.clip(local, 0, local_rows - 1), axis=0).astype(q.dtype)
        target_scores = jnp.sum(q * jax.lax.psum(jnp.where(inside[:, None], found, 0), axis), 1)
    chunk = local_rows if chunk_size is None else min(chunk_size, local_rows)
    num_chunks = -(-local_rows // chunk)
    local_k = min(k, local_rows)

    def step(carry, i):
        best_scores, best_index, above, nan_free = carry
        start = i * chunk
        begin = jnp.minimum(start, local_rows - chunk)  # the last chunk shifted back inside
        block = jax.lax.dynamic_slice_in_dim(rows, begin, chunk).astype(q.dtype)
        index = offset + begin + jnp.arange(chunk, dtype="int32")  # global ids
        scores = q @ block.T  # [n, chunk]
        eligible = begin + jnp.arange(chunk) >= start
        if exclude_id is not None:
            eligible = jnp.logical_and(eligible, index != exclude_id)
        scores = jnp.where(eligible[None, :], scores, -jnp.inf)
        nan_free = jnp.logical_and(nan_free, jnp.logical_not(jnp.any(jnp.isnan(scores), 1)))
        if exclude is not None:  # a scatter-min of -inf at each row's excluded ids
            hit = jnp.logical_and(exclude >= 0, jnp.logical_and(exclude >= index[0],
                                                               exclude < index[0] + chunk))
            where = jnp.clip(exclude - index[0], 0, chunk - 1)
            updates = jnp.where(hit, -jnp.inf, jnp.inf).astype(scores.dtype)
            scores = scores.at[jnp.arange(n)[:, None], where].min(updates)
        if with_targets:  # eligible rows at least as high as the target (ties against it)
            beats = jnp.logical_and(scores >= target_scores[:, None],
                                    index[None, :] != targets[:, None])
            above = above + jnp.sum(beats, axis=1, dtype="int32")
        merged = jnp.concatenate([best_scores, scores], axis=1)
        merged_index = jnp.concatenate(
            [best_index, jnp.broadcast_to(index[None, :], scores.shape)], axis=1)
        top, pos = jax.lax.top_k(merged, local_k)
        return (top, jnp.take_along_axis(merged_index, pos, axis=1), above, nan_free), None

    init = (jnp.full((n, local_k), -jnp.inf, q.dtype), jnp.full((n, local_k), -1, "int32"),
            jnp.zeros((n,), "int32"), jnp.ones((n,), bool))
    # The first chunk outside the loop: the carry then varies across devices from the
    # start, as shard_map's scan requires.
    carry, _ = step(init, 0)
    carry, _ = jax.lax.scan(step, carry, jnp.arange(1, num_chunks, dtype="int32"))
    best_scores, best_index, above, nan_free = carry
    # The small per-device candidates [n, local_k] are gathered and merged (shard
    # order: lower ids win ties, as in the unsharded search).
    scores = jax.lax.all_gather(best_scores, axis, axis=1, tiled=True)
    index = jax.lax.all_gather(best_index, axis, axis=1, tiled=True)
    top, pos = jax.lax.top_k(scores, k)
    result = (top, jnp.take_along_axis(index, pos, axis=1))
    if not with_targets:
        return result
    ranks = jax.lax.psum(above, axis)
    nan_rows = jax.lax.psum(jnp.logical_not(nan_free).astype("int32"), axis)
    return result + (ranks, jnp.logical_and(nan_rows == 0, jnp.isfinite(target_scores)))


def sharded_top_k_with_exclusion(queries, table, k, *, mesh, axis, exclude=None, targets=None,
                                 chunk_size=None, exclude_id=None):
    """Top-`k` rows by inner product over a table whose rows are split on mesh axis `axis`.

    The search of the full-catalogue ranking (`keras_sce.evaluation.streamed_top_k`)
    shard by shard: each device scores only its own rows (streamed in chunks of
    `chunk_size`), sets its rows among `exclude_id` and each query's `exclude`
    ids to -inf, keeps its top `k`, and the per-device candidates (`n x k` each)
    are all-gathered and merged. With `targets`, each device also counts its
    eligible, non-excluded rows that score at least as high as the query's target
    (ties against it), and the counts are summed over the axis. No device holds
    the table, and no `n x C` score matrix exists.

    Args:
        queries: float `[n, d]` (replicated).
        table: float `[C, d]`, rows sharded over `axis` (`C` divisible by its size).
        k: Python int, `1 <= k <= C`.
        mesh: a `jax.sharding.Mesh`.
        axis: the mesh axis name that splits the rows.
        exclude: optional int `[n, H]` global ids never returned for that query
            (-1: none); keep each query's target out of its own row.
        targets: optional int `[n]` ids whose 0-based rank is returned.
        chunk_size: stream each device's rows in chunks of this many.
        exclude_id: optional Python int, a (global) row never returned (padding).

    Returns:
        `(scores [n, k], ids [n, k])` replicated (slots beyond the eligible rows
        score -inf), plus `(ranks [n], finite [n])` with `targets` (`finite`:
        no NaN score and a finite target score for that query).
    """
    import jax
    from jax.sharding import PartitionSpec

    local_rows = _local_rows(table, mesh, axis)
    k = _options.check_positive_int(k, "k")
    chunk_size = _options.check_positive_int(chunk_size, "chunk_size", allow_none=True)
    if k > table.shape[0]:
        raise ValueError(f"`k`={k} must lie in [1, {table.shape[0]}] (the number of rows).")
    replicated = PartitionSpec()
    args = [queries, table] + [a for a in (exclude, targets) if a is not None]
    specs = [replicated, PartitionSpec(axis, None)] + [replicated] * (len(args) - 2)

    def search(q, rows, *rest):
        rest = list(rest)
        excl = rest.pop(0) if exclude is not None else None
        tgt = rest.pop(0) if targets is not None else None
        return _local_ranking(q, rows, excl, tgt, k=k, chunk_size=chunk_size,
                              exclude_id=exclude_id, axis=axis, local_rows=local_rows)

    outputs = 2 if targets is None else 4
    return jax.shard_map(
        search, mesh=mesh, in_specs=tuple(specs), out_specs=(replicated,) * outputs,
        # The merged candidates and summed counts are the same on every device; no
        # gradient flows through the search, so the replication is not type-checked.
        check_vma=False,
    )(*args)
