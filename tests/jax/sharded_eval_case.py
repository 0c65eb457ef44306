"""The full-catalogue ranking on an item table split by rows over 8 (forced host) devices.

Run on its own (the device count is fixed when JAX starts):
``KERAS_BACKEND=jax python -m tests.jax.sharded_eval_case`` prints one JSON object:
the metrics, top-k and ranks of `keras_sce.evaluation` with the table on the host
and split over a 1-D and a 2-D mesh, the error for a non-finite row, and what the
compiled sharded search holds (XLA's memory analysis and program text).
"""

from __future__ import annotations

import json
import os
import re

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("KERAS_BACKEND", "jax")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from keras_sce import evaluation  # noqa: E402
from keras_sce.kops.sharded import sharded_top_k_with_exclusion  # noqa: E402

ITEMS, DIM, QUERIES, HISTORY, CHUNK, BATCH = 4096, 16, 300, 7, 100, 128


def _data():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(ITEMS, DIM)).astype("float32")
    targets = rng.integers(1, ITEMS, size=QUERIES)
    # Queries near their targets' rows: ranks from 0 to hundreds, metrics far from 0.
    queries = (table[targets] + rng.normal(scale=1.5, size=(QUERIES, DIM))).astype("float32")
    exclude = rng.integers(0, ITEMS, size=(QUERIES, HISTORY))  # 0 is the padding id
    exclude[:20, 0] = targets[:20]  # a target in its own history stays rankable
    exclude[20:40, :3] = 0
    return table, queries, targets, exclude


def _ranking(queries, table, targets, exclude):
    metrics = evaluation.evaluate_ranking(queries, table, targets, exclude=exclude,
                                          chunk_size=CHUNK, batch_size=BATCH)
    scores, ids, ranks = evaluation.streamed_top_k(
        queries, table, 50, exclude=exclude, targets=targets, chunk_size=CHUNK,
        batch_size=BATCH)
    return {"metrics": metrics, "scores": scores.tolist(), "ids": ids.tolist(),
            "ranks": ranks.tolist()}


def main():
    table, queries, targets, exclude = _data()
    out = {"devices": jax.device_count(), "host": _ranking(queries, table, targets, exclude)}
    meshes = {"mesh-1d": jax.make_mesh((8,), ("model",)),
              "mesh-2d": jax.make_mesh((2, 4), ("batch", "model"))}
    for name, mesh in meshes.items():
        sharded = jax.device_put(table, NamedSharding(mesh, PartitionSpec("model", None)))
        out[name] = _ranking(queries, sharded, targets, exclude)
        out[name]["shard_shape"] = list(sharded.addressable_shards[0].data.shape)
    # A non-finite row is reported without gathering the table.
    broken = table.copy()
    broken[777, 3] = np.nan
    mesh = meshes["mesh-1d"]
    broken = jax.device_put(broken, NamedSharding(mesh, PartitionSpec("model", None)))
    try:
        evaluation.evaluate_ranking(queries, broken, targets)
    except evaluation.NonFiniteScoresError as err:
        out["non_finite_error"] = str(err)
    # What the compiled sharded search holds, per device.
    sharded = jax.device_put(table, NamedSharding(mesh, PartitionSpec("model", None)))
    search = jax.jit(sharded_top_k_with_exclusion,
                     static_argnames=("k", "mesh", "axis", "chunk_size", "exclude_id"))
    compiled = search.lower(
        queries[:BATCH], sharded, k=50, mesh=mesh, axis="model", exclude=exclude[:BATCH],
        targets=targets[:BATCH], chunk_size=CHUNK, exclude_id=0).compile()
    stats = compiled.memory_analysis()
    hlo = compiled.as_text()
    out["compiled"] = {
        "memory": {key: int(getattr(stats, f"{key}_size_in_bytes"))
                   for key in ("argument", "output", "temp")},
        "whole_table_in_program": bool(re.search(rf"f32\[{ITEMS},{DIM}\]", hlo)),
        "scores_in_program": bool(re.search(rf"\[{BATCH},{ITEMS}\]", hlo)),
        "local_rows_in_program": bool(re.search(rf"f32\[{ITEMS // 8},{DIM}\]", hlo)),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
