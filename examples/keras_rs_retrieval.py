"""keras-rs (Keras 3): a retrieval model trained with SCE, served with BruteForceRetrieval.

keras-rs, the Keras 3 successor of TensorFlow Recommenders, has retrieval layers and
ranking metrics but no retrieval loss. This example fills the gap with
:class:`keras_sce.SCELoss`:

1. a sequential query tower (Keras 3): the user's recent items, embedded with the
   item table, pooled (masked mean + most recent item) and projected;
2. training with ``SCELoss`` bound to that same item table: every query is scored
   against the whole catalogue through SCE's buckets (arXiv 2409.18721), and the
   table trains with sparse gradients;
3. serving with ``keras_rs.layers.BruteForceRetrieval`` over the trained table
   (exact top-k over all items, row 0 = padding left out), wrapped with the query
   tower into one Keras model that maps a history to the top-k item ids;
4. evaluation of the retrieved lists with keras-rs ranking metrics
   (``RecallAtK``, ``NDCG``, ``MeanReciprocalRank``): each test user's last item
   must be found among all items.

Data: a SASRec-format text file (see ``examples/seqrec_data.py``), e.g.

    PYTHONPATH=. python examples/keras_rs_retrieval.py --dataset Beauty --epochs 3

(no TF_USE_LEGACY_KERAS here: this is plain Keras 3).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_rs  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from seqrec_data import build_examples, load_datasets  # noqa: E402

import keras_sce  # noqa: E402


class HistoryPooling(keras.layers.Layer):
    """``[B, L, d]`` embedded history (left-padded, id 0 = padding) -> ``[B, 2d]``."""

    def call(self, vectors, history):
        mask = keras.ops.cast(keras.ops.not_equal(history, 0), vectors.dtype)[..., None]
        mean = keras.ops.sum(vectors * mask, axis=1) / keras.ops.maximum(
            keras.ops.sum(mask, axis=1), 1.0
        )
        return keras.ops.concatenate([mean, vectors[:, -1, :]], axis=-1)


def build_query_model(num_rows, dim, max_len):
    """Returns ``(query_model, item_embedding)``; the table is shared with the loss."""
    items = keras.layers.Embedding(num_rows, dim, name="items")
    history = keras.Input((max_len,), dtype="int32", name="history")
    pooled = HistoryPooling(name="pool")(items(history), history)
    query = keras.layers.Dense(dim, name="query")(pooled)
    return keras.Model(history, query, name="query_tower"), items


def build_serving_model(query_model, items, k):
    """History -> (top-k scores, top-k item ids) over every item but the padding row."""
    table = keras.ops.convert_to_numpy(items.embeddings)
    retrieval = keras_rs.layers.BruteForceRetrieval(
        candidate_embeddings=table[1:],
        candidate_ids=np.arange(1, table.shape[0], dtype=np.int32),
        k=k,
        return_scores=True,
        name="retrieval",
    )
    history = keras.Input(query_model.input_shape[1:], dtype="int32", name="history")
    return keras.Model(history, retrieval(query_model(history)), name="serving")


def evaluate(serving, test_hist, test_target, batch_size=1024):
    """keras-rs ranking metrics of the retrieved lists against each user's test item."""
    metrics = {
        "recall@10": keras_rs.metrics.RecallAtK(k=10, shuffle_ties=False),
        "recall@100": keras_rs.metrics.RecallAtK(k=100, shuffle_ties=False),
        "ndcg@10": keras_rs.metrics.NDCG(k=10, shuffle_ties=False),
        "mrr@100": keras_rs.metrics.MeanReciprocalRank(k=100, shuffle_ties=False),
    }
    for start in range(0, len(test_target), batch_size):
        scores, ids = serving(test_hist[start : start + batch_size])
        target = test_target[start : start + batch_size, None]
        # One relevant item per list: its retrieved position (if any) is marked 1.
        relevance = keras.ops.cast(keras.ops.equal(ids, target), "float32")
        for metric in metrics.values():
            metric.update_state(relevance, scores)
    return {name: float(metric.result()) for name, metric in metrics.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--dataset", default="Beauty",
                        help="a seqrec file name without .txt, or several joined with +")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--bucket-size-y", type=int, default=256)
    parser.add_argument("--max-users", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jit-compile", action="store_true")
    args = parser.parse_args(argv)

    keras.utils.set_random_seed(args.seed)
    sequences, _ = load_datasets(args.dataset, args.data_dir, args.max_users)
    train_hist, train_target, test_hist, test_target, num_items = build_examples(
        sequences, args.max_len
    )
    print(f"{args.dataset}: {len(sequences)} users, {num_items} items, "
          f"{len(train_target)} training examples")

    query_model, items = build_query_model(num_items + 1, args.dim, args.max_len)
    loss = keras_sce.SCELoss(
        items, bucket_size_y=args.bucket_size_y, padding_id=0, seed=args.seed
    )
    query_model.compile(
        optimizer=keras_sce.optimizers.LazyAdam(1e-3), loss=loss, jit_compile=args.jit_compile
    )
    start = time.perf_counter()
    history = query_model.fit(
        train_hist,
        train_target,
        batch_size=args.batch_size,
        epochs=args.epochs,
        shuffle=True,
        verbose=2,
    )
    train_seconds = time.perf_counter() - start

    serving = build_serving_model(query_model, items, k=100)
    results = evaluate(serving, test_hist, test_target)
    results["loss_first_epoch"] = float(history.history["loss"][0])
    results["loss_last_epoch"] = float(history.history["loss"][-1])
    results["sec_per_epoch"] = train_seconds / args.epochs
    print({name: round(value, 4) for name, value in results.items()})
    return results, serving


if __name__ == "__main__":
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    main()
