"""A two-tower retrieval model whose item table is split by rows over a device mesh (JAX).

Run:  python examples/sharded_two_tower.py  [--devices 8 --batch-devices 2 --items 8192]

Keras runs on JAX with a `keras.distribution.ModelParallel` over a 2-D
`DeviceMesh` `("batch", "model")`: the item `Embedding`'s rows are split over
the "model" axis (`LayoutMap` entry `("model", None)`), every other weight is
replicated, and the batch is split over the "batch" axis (data parallel). The
user tower's output is compared with the item table inside `keras_sce.SCELoss`,
whose item search runs shard by shard (`keras_sce.kops.sharded`); the full-catalogue
evaluation (`keras_sce.evaluation.evaluate_ranking`) ranks the sharded table
where its rows live. No device ever holds the whole table.

Without a GPU or TPU the devices are host CPU threads: `--devices N` sets
`XLA_FLAGS=--xla_force_host_platform_device_count=N` before JAX starts (on
accelerators pass `--devices 0` and the real devices are used). The data is
generated: each user has a topic (the user tower's one feature) and likes a few
items of the topic's block of neighbouring ids; one liked item per user is held
out, and the training items are excluded from its ranking. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8,
                        help="host CPU devices to force (0: use the devices JAX finds)")
    parser.add_argument("--batch-devices", type=int, default=1,
                        help="size of the data-parallel 'batch' mesh axis")
    parser.add_argument("--items", type=int, default=8192,
                        help="catalogue size (a multiple of the 'model' axis)")
    parser.add_argument("--users", type=int, default=2048)
    parser.add_argument("--liked", type=int, default=6, help="items liked by each user")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--bucket-size-y", type=int, default=128)
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def generate(num_users, num_items, liked, seed, block=16):
    """`(topic, train_users, train_items, test_items, history)`: each user has a topic
    (its one feature) and likes `liked` items of the topic's block of `block`
    neighbouring ids; one is held out, the others are its training items and its
    history (id 0 is padding)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    topics = max(1, (num_items - 1) // block)
    topic = rng.integers(0, topics, size=num_users)
    picks = np.stack([rng.choice(block, size=liked, replace=False) for _ in range(num_users)])
    items = 1 + topic[:, None] * block + picks
    history = items[:, :-1]
    users = np.repeat(np.arange(num_users), liked - 1)
    return topic, users, history.reshape(-1), items[:, -1], history


def main(argv=None):
    args = parse_args(argv)
    if args.devices:
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={args.devices}").strip()
    os.environ["KERAS_BACKEND"] = "jax"
    if "keras" in sys.modules and sys.modules["keras"].backend.backend() != "jax":
        raise RuntimeError("Keras was imported with another backend; run this example in its "
                           "own process.")
    import keras

    import keras_sce
    from keras_sce.kops.sharded import array_row_sharding

    devices = keras.distribution.list_devices()
    if len(devices) % args.batch_devices:
        raise ValueError(f"--batch-devices={args.batch_devices} does not divide the "
                         f"{len(devices)} devices.")
    model_devices = len(devices) // args.batch_devices
    if args.items % model_devices:
        raise ValueError(f"--items={args.items} must be a multiple of the {model_devices} "
                         "devices of the 'model' axis.")
    mesh = keras.distribution.DeviceMesh((args.batch_devices, model_devices),
                                         ("batch", "model"), devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map["items/embeddings"] = ("model", None)  # rows split over "model"
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch"))
    keras.utils.set_random_seed(args.seed)

    topic, users, train_items, test_items, history = generate(
        args.users, args.items, args.liked, args.seed)
    items = keras.layers.Embedding(args.items, args.dim, name="items")
    items.build((None,))
    # The user tower reads the user's feature (its topic; small, replicated); the item
    # tower is the item table itself, split by rows.
    user_topic = keras.Input((), dtype="int32", name="user_topic")
    user_vector = keras.layers.Embedding(int(topic.max()) + 1, args.dim,
                                         name="topics")(user_topic)
    hidden = keras.layers.Dense(args.dim, name="user_tower")(user_vector)
    model = keras.Model(user_topic, hidden)
    loss = keras_sce.SCELoss(items, bucket_size_y=args.bucket_size_y,
                             chunk_size=args.chunk_size, seed=args.seed)
    model.compile(keras.optimizers.Adam(args.learning_rate), loss=loss)

    def evaluate():
        queries = model.predict(topic, batch_size=args.batch_size, verbose=0)
        return keras_sce.evaluation.evaluate_ranking(
            queries, items.embeddings, test_items, exclude=history, ks=(10, 50),
            chunk_size=args.chunk_size, batch_size=args.batch_size)

    before = evaluate()
    fit = model.fit(topic[users], train_items, epochs=args.epochs, batch_size=args.batch_size,
                    shuffle=True, verbose=0)
    after = evaluate()
    table = items.embeddings.value
    result = {
        "devices": len(devices),
        "mesh": {"batch": args.batch_devices, "model": model_devices},
        "table_spec": str(table.sharding.spec),
        "table_shard_rows": int(table.addressable_shards[0].data.shape[0]),
        # The evaluation ranked the table where its rows live (not gathered).
        "sharded_evaluation": array_row_sharding(items.embeddings) is not None,
        "loss": [float(v) for v in fit.history["loss"]],
        "before": before,
        "after": after,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
