"""One of two processes (`jax.distributed`, CPU collectives over Gloo) that split an item
table by rows over 4 devices, 2 per process.

Run: ``python -m tests.jax.multiprocess_case PROCESS_ID PORT`` in two processes (ids 0
and 1, the same free port). Each prints one JSON object: SCE's loss and hidden-state
gradient with the table split over both processes and with the whole table at home,
and the sharded full-catalogue top-k and ranks next to the unsharded ones.
"""

from __future__ import annotations

import json
import os
import sys

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
).strip()
os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

ITEMS, DIM, BUCKETS = 1024, 8, 4


def _local(array):
    """The value of a replicated global array, read from this process's first device."""
    return np.asarray(array.addressable_data(0))


def main(process_id: int, port: int):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                               process_id=process_id)
    from keras_sce import kops
    from keras_sce.kops.sharded import sharded_top_k_with_exclusion

    rng = np.random.default_rng(0)  # the same data in both processes
    table = rng.normal(size=(ITEMS, DIM)).astype("float32")
    hidden = rng.normal(size=(4, 6, DIM)).astype("float32")
    labels = rng.integers(1, ITEMS, size=(4, 6))
    labels[0, :2] = 0
    centres = rng.normal(size=(BUCKETS, DIM)).astype("float32")
    queries = rng.normal(size=(16, DIM)).astype("float32")
    targets = rng.integers(1, ITEMS, size=16)
    exclude = rng.integers(0, ITEMS, size=(16, 3))

    mesh = jax.make_mesh((4,), ("model",))
    rows = NamedSharding(mesh, PartitionSpec("model", None))
    replicated = NamedSharding(mesh, PartitionSpec())
    sharded = jax.make_array_from_callback(table.shape, rows, lambda index: table[index])

    def put(value):
        return jax.make_array_from_callback(value.shape, replicated, lambda index: value[index])

    def loss(h, w, y, c, sharding):
        return kops.scalable_cross_entropy(h, y, w, centers=c, bucket_size_x=8,
                                           bucket_size_y=32, chunk_size=64,
                                           item_sharding=sharding)

    step = jax.jit(jax.value_and_grad(lambda h, w, y, c: loss(h, w, y, c, (mesh, "model"))))
    value, grad = step(put(hidden), sharded, put(labels), put(centres))
    # The same step with the whole table on this process's first device.
    plain_value, plain_grad = jax.value_and_grad(
        lambda h: loss(h, table, labels, centres, None))(hidden)

    search = jax.jit(sharded_top_k_with_exclusion,
                     static_argnames=("k", "mesh", "axis", "chunk_size", "exclude_id"))
    scores, ids, ranks, finite = search(put(queries), sharded, k=10, mesh=mesh, axis="model",
                                        exclude=put(exclude), targets=put(targets),
                                        chunk_size=64, exclude_id=0)
    local_mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:1]), ("model",))
    plain = jax.jit(sharded_top_k_with_exclusion,
                    static_argnames=("k", "mesh", "axis", "chunk_size", "exclude_id"))
    p_scores, p_ids, p_ranks, _ = plain(queries, table, k=10, mesh=local_mesh, axis="model",
                                        exclude=exclude, targets=targets, exclude_id=0)
    print(json.dumps({
        "process": jax.process_index(),
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "local_devices": jax.local_device_count(),
        "local_shard_rows": [int(s.data.shape[0]) for s in sharded.addressable_shards],
        "loss": float(_local(value)),
        "loss_plain": float(plain_value),
        "grad": _local(grad).tolist(),
        "grad_plain": np.asarray(plain_grad).tolist(),
        "ids": _local(ids).tolist(),
        "ids_plain": np.asarray(p_ids).tolist(),
        "ranks": _local(ranks).tolist(),
        "ranks_plain": np.asarray(p_ranks).tolist(),
        "scores": _local(scores).tolist(),
        "scores_plain": np.asarray(p_scores).tolist(),
        "finite": bool(_local(finite).all()),
    }))
    jax.distributed.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
