"""SCE with the item table's rows split over 8 (forced host) devices vs unsharded.

Run on its own (the device count is fixed when JAX starts):
``KERAS_BACKEND=jax python -m tests.jax.sharded_case`` prints one JSON object: the
loss and gradients, sharded and not, and the per-device sizes from XLA's memory
analysis of the compiled sharded and unsharded steps (forward and backward).
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
import keras  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from keras_sce import kops  # noqa: E402

ITEMS, DIM, BUCKETS, CHUNK = 4096, 16, 6, 128


def _memory(compiled):
    stats = compiled.memory_analysis()
    return {key: int(getattr(stats, f"{key}_size_in_bytes")) for key in
            ("argument", "output", "temp")}


def op_case():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(ITEMS, DIM)).astype("float32")
    hidden = rng.normal(size=(4, 10, DIM)).astype("float32")
    labels = rng.integers(1, ITEMS, size=(4, 10))
    labels[0, :3] = 0
    centres = rng.normal(size=(BUCKETS, DIM)).astype("float32")
    mesh = jax.make_mesh((8,), ("model",))

    def step(h, w, sharding):
        return kops.scalable_cross_entropy(
            h, labels, w, centers=centres, bucket_size_x=12, bucket_size_y=40,
            chunk_size=CHUNK, item_sharding=sharding,
        )

    results = {}
    for name, sharding in (("unsharded", None), ("sharded", (mesh, "model"))):
        w = table if sharding is None else jax.device_put(
            table, NamedSharding(mesh, PartitionSpec("model", None)))
        fn = jax.jit(jax.value_and_grad(lambda h, w, s=sharding: step(h, w, s), argnums=(0, 1)))
        compiled = fn.lower(hidden, w).compile()
        value, (gx, gw) = compiled(hidden, w)
        hlo = compiled.as_text()
        results[name] = {
            "loss": float(value),
            "grad_hidden": np.asarray(gx).tolist(),
            "grad_table_sum": float(np.abs(np.asarray(gw)).sum()),
            "grad_table_rows": int((np.abs(np.asarray(gw)).sum(axis=1) > 0).sum()),
            "grad_table_shard_shape": list(gw.addressable_shards[0].data.shape),
            "memory": _memory(compiled),
            "whole_table_in_program": bool(re.search(rf"f32\[{ITEMS},{DIM}\]", hlo)),
            "scores_in_program": bool(re.search(rf"\[{BUCKETS},{ITEMS}\]", hlo)),
        }
    return results


def keras_case():
    """SCELoss under keras.distribution.ModelParallel with the table split by rows."""
    import keras_sce

    devices = keras.distribution.list_devices()
    mesh = keras.distribution.DeviceMesh((1, 8), ("batch", "model"), devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map["items/embeddings"] = ("model", None)
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch"))
    items = keras.layers.Embedding(ITEMS, DIM, name="items")
    inputs = keras.Input((6,), dtype="int32")
    model = keras.Model(inputs, keras.layers.Dense(DIM, name="proj")(items(inputs)))
    loss = keras_sce.SCELoss(items, num_buckets=4, bucket_size_y=32, chunk_size=CHUNK,
                             seed=0)
    model.compile(keras.optimizers.Adam(0.02), loss=loss)
    rng = np.random.default_rng(1)
    x = rng.integers(1, 200, size=(128, 6))
    y = x + 1
    history = model.fit(x, y, epochs=3, batch_size=32, verbose=0).history["loss"]
    hidden, targets = model(x[:8]), y[:8]
    seed = np.array([0, int(kops.batch_fingerprint(targets))])
    plain = kops.scalable_cross_entropy(
        np.asarray(hidden), targets, np.asarray(items.embeddings.numpy()), num_buckets=4,
        bucket_size_y=32, chunk_size=CHUNK, seed=seed,
    )
    return {
        "history": history,
        "loss_sharded": float(loss(targets, hidden)),
        "loss_plain": float(plain),
        "table_spec": str(items.embeddings.value.sharding.spec),
        "found_sharding": str(kops.sharded.table_sharding(items.embeddings)[1]),
    }


if __name__ == "__main__":
    print(json.dumps({"devices": jax.device_count(), "op": op_case(), "keras": keras_case()}))
