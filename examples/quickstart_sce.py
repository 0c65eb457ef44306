"""Quickstart: train a small sequential recommender with SCELoss on generated data.

Run:  python examples/quickstart_sce.py  [--items 20000 --epochs 3]

Generates user sequences with a learnable structure (each user drifts through a
neighbourhood of the catalogue, with power-law item popularity), trains a small
causal-attention model whose output is compared with the (tied) item embeddings by
``keras_sce.SCELoss``, and reports full-catalogue NDCG@10 / HR@10 on held-out last
items (every item ranked; the user's history is excluded) — before and after training.
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

import keras_sce


def generate(num_users, num_items, length, seed):
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, num_items) ** 0.8
    popularity /= popularity.sum()
    seqs = np.zeros((num_users, length + 1), "int32")
    for u in range(num_users):
        item = rng.choice(num_items - 1, p=popularity) + 1
        for t in range(length + 1):
            seqs[u, t] = item
            # Next item: a short step from the current one (sequential structure),
            # sometimes a popular jump.
            if rng.random() < 0.85:
                item = (item + rng.integers(1, 4) - 1) % (num_items - 1) + 1
            else:
                item = rng.choice(num_items - 1, p=popularity) + 1
    return seqs


def build_model(num_items, length, dim):
    items = keras.layers.Embedding(num_items, dim, name="item_embedding")
    positions = keras.layers.Embedding(length, dim, name="position_embedding")
    inputs = keras.Input((length,), dtype="int32", name="history")
    x = items(inputs) + positions(keras.ops.arange(length))
    attn = keras.layers.MultiHeadAttention(num_heads=2, key_dim=dim // 2)
    x = keras.layers.LayerNormalization()(x + attn(x, x, use_causal_mask=True))
    x = keras.layers.LayerNormalization()(x + keras.layers.Dense(dim)(
        keras.layers.Dense(2 * dim, activation="gelu")(x)))
    return keras.Model(inputs, x, name="quickstart"), items


def evaluate(model, items, histories, targets, k=10):
    """Full-catalogue ranking of the target after each history; history excluded.

    ``keras_sce.evaluation.evaluate_ranking`` streams the catalogue (no
    ``[users, items]`` matrix), skips the padding item and never excludes a target.
    """
    hidden = model.predict(histories, batch_size=256, verbose=0)[:, -1]
    metrics = keras_sce.evaluation.evaluate_ranking(
        hidden, items.embeddings.numpy(), targets, exclude=histories, ks=(k,)
    )
    return metrics[f"ndcg@{k}"], metrics[f"hr@{k}"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--length", type=int, default=20)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(args.seed)

    seqs = generate(args.users, args.items, args.length + 1, args.seed)
    train_x, train_y = seqs[:, :-2], seqs[:, 1:-1]  # every position predicts the next item
    test_x, test_y = seqs[:, 1:-1], seqs[:, -1]  # held-out last item
    print(f"Data: generated, {args.users} users x {args.length} steps, {args.items} items")

    model, items = build_model(args.items, args.length, args.dim)
    loss = keras_sce.SCELoss(items, bucket_size_y=256, seed=args.seed)
    model.compile(keras_sce.optimizers.LazyAdam(1e-3), loss=loss, jit_compile=True)
    ndcg0, hr0 = evaluate(model, items, test_x, test_y)
    start = time.perf_counter()
    model.fit(train_x, train_y, batch_size=128, epochs=args.epochs, verbose=2)
    seconds = time.perf_counter() - start
    ndcg, hr = evaluate(model, items, test_x, test_y)
    stats = loss.diagnostics(tf.constant(train_y[:128]), model(train_x[:128]))

    print()
    print("| model | NDCG@10 | HR@10 |")
    print("|---|---:|---:|")
    print(f"| untrained | {ndcg0:.4f} | {hr0:.4f} |")
    print(f"| SASRec-style + SCELoss, {args.epochs} epochs ({seconds:.0f} s) | {ndcg:.4f} | "
          f"{hr:.4f} |")
    print(f"\nBuckets: {float(stats['covered_fraction']):.1%} of positions covered, "
          f"{float(stats['buckets_per_covered_row']):.2f} buckets per covered position.")
    return ndcg


if __name__ == "__main__":
    main()
