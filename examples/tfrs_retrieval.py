"""TensorFlow Recommenders: in-batch softmax vs Scalable Cross-Entropy on real data.

A TFRS retrieval model with a sequential query tower is trained twice on the same
data with the same epoch budget:

- ``in_batch``: ``tfrs.tasks.Retrieval`` — softmax over the other positives of the
  batch, with its usual options: logQ correction (the candidates' sampling
  probability, i.e. their frequency as training targets), removal of accidental
  hits, and optionally hard-negative mining (``--hard-negatives``);
- ``sce``: :class:`keras_sce.tfrs.SCERetrieval` — Scalable Cross-Entropy
  (arXiv 2409.18721) against the whole candidate table.

Data: a leave-one-out sequential dataset from ``../shared/data/seqrec`` (one line
per user, ``user item_1 ... item_n``, in time order). Each user's last item is
the test target, with all the user's earlier items as the query's history;
training examples are every earlier position of the sequence (target = the item
at that position, history = the items before it, the last ``--max-len`` kept).
The query tower embeds the history with the item table it shares with the
candidate tower (masked mean of the history, concatenated with the most recent
item, through a dense layer; ``--tower gru`` uses a GRU instead).

With ``--validation`` each user's second-to-last item is held out too (no longer a
training target): the validation Recall@100 is measured every ``--eval-every`` epochs
(default 1), training may stop after ``--patience`` evaluations without improvement,
and the weights of the best validation epoch are restored before the test
evaluation, so that neither method is judged at an epoch the test set picked.

Evaluation ranks each test target against the FULL catalogue (all items, no
exclusion of the history) with TFRS ``FactorizedTopK`` over a ``BruteForce`` index,
id-based, and reports Recall@10 and Recall@100 (one target per user, so recall =
hit rate). Each method's figures are printed; with ``--out`` they also go to a CSV
(``dataset,method,epochs,recall@10,recall@100,sec_per_epoch`` plus the settings) and a
Markdown table next to it. The committed comparison (``benchmarks/results/tfrs_retrieval.*``)
is written by ``benchmarks/tfrs_retrieval.py``, which runs this script.

Run (the script sets ``TF_USE_LEGACY_KERAS=1`` itself, before TensorFlow loads):

    PYTHONPATH=. python examples/tfrs_retrieval.py --dataset Beauty --epochs 10

It uses one CPU thread by default (``--threads``). The measurements live beside it in
``tfrs_evaluation.py``, the results files in ``tfrs_results.py``.
"""

from __future__ import annotations

import os

# TFRS runs on tf_keras: this must happen before anything touches tf.keras.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402
import tf_keras  # noqa: E402
from seqrec_data import (  # noqa: E402
    build_examples,
    build_validation_examples,
    load_datasets,
)
from tfrs_evaluation import (  # noqa: E402
    EarlyStoppingOnEvaluations,
    EpochTimer,
    RecallEvaluation,
    full_catalogue_recall,
    sce_coverage,
)
from tfrs_results import FIELDS, write_results  # noqa: E402

from keras_sce.tfrs import SCERetrieval  # noqa: E402  (checks the stack)


# -- model -----------------------------------------------------------------------------
class SequentialQueryTower(tf_keras.layers.Layer):
    """History of item ids ``[B, L]`` (0 = padding) -> query embedding ``[B, d]``."""

    def __init__(self, item_embedding, dim, kind="mean", dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        self.item_embedding = item_embedding
        self.kind = kind
        self.dropout = tf_keras.layers.Dropout(dropout)
        if kind == "gru":
            self.rnn = tf_keras.layers.GRU(dim)
        elif kind != "mean":
            raise ValueError(f"Unknown tower {kind!r}; use 'mean' or 'gru'.")
        self.project = tf_keras.layers.Dense(dim)

    def call(self, history, training=False):
        mask = tf.not_equal(history, 0)
        vectors = self.dropout(self.item_embedding(history), training=training)  # [B, L, d]
        if self.kind == "gru":
            return self.project(self.rnn(vectors, mask=mask))
        weights = tf.cast(mask, vectors.dtype)[..., tf.newaxis]
        mean = tf.reduce_sum(vectors * weights, axis=1) / tf.maximum(
            tf.reduce_sum(weights, axis=1), 1.0
        )
        last = vectors[:, -1, :]  # histories are left-padded: the most recent item
        return self.project(tf.concat([mean, last], axis=-1))


class SequentialRetrievalModel(tfrs.models.Model):
    """A TFRS model whose candidate tower is the item table shared with the history."""

    def __init__(self, num_rows, dim, method, tower, hard_negatives, seed, sce_options=None,
                 dropout=0.0):
        super().__init__()
        self.method = method
        self.item_embedding = tf_keras.layers.Embedding(num_rows, dim, name="items")
        self.query_tower = SequentialQueryTower(self.item_embedding, dim, tower, dropout)
        if method == "sce":
            # Row 0 is the padding row of the history: never a negative.
            self.task = SCERetrieval(
                self.item_embedding, padding_id=0, seed=seed, **(sce_options or {})
            )
        else:
            self.task = tfrs.tasks.Retrieval(
                num_hard_negatives=hard_negatives or None, remove_accidental_hits=True
            )

    def compute_loss(self, features, training=False):
        query = self.query_tower(features["history"], training=training)
        target = features["target"]
        if self.method == "sce":
            return self.task(query, target, compute_metrics=False)
        return self.task(
            query,
            self.item_embedding(target),
            candidate_sampling_probability=features["probability"],
            candidate_ids=target,
            compute_metrics=False,
        )


# -- experiment ------------------------------------------------------------------------
def run_method(method, args, data):
    train_hist, train_target = data["train"]
    num_items = data["num_items"]
    tf_keras.utils.set_random_seed(args.seed)
    counts = np.bincount(train_target, minlength=num_items + 1).astype(np.float64)
    probability = (counts / counts.sum())[train_target].astype(np.float32)
    train = (
        tf.data.Dataset.from_tensor_slices(
            {"history": train_hist, "target": train_target, "probability": probability}
        )
        .shuffle(len(train_target), seed=args.seed, reshuffle_each_iteration=True)
        .batch(args.batch_size, drop_remainder=True)
        .prefetch(2)
    )
    sce_options = dict(
        num_buckets=args.sce_num_buckets,
        bucket_size_x=args.sce_bucket_size_x,
        bucket_size_y=args.sce_bucket_size_y,
        mix_x=args.sce_mix_x,
    )
    model = SequentialRetrievalModel(
        num_items + 1, args.dim, method, args.tower, args.hard_negatives, args.seed, sce_options,
        dropout=args.dropout,
    )
    if args.optimizer == "adam":
        optimizer = tf_keras.optimizers.Adam(args.learning_rate, epsilon=args.adam_epsilon)
    else:
        optimizer = tf_keras.optimizers.Adagrad(args.learning_rate)
    model.compile(optimizer=optimizer, jit_compile=args.jit_compile)
    timer = EpochTimer()
    evaluation = RecallEvaluation(data["test"], data["val"], args.eval_every, args.epochs)
    callbacks = [timer, evaluation]
    stopping = None
    if data["val"] is not None:
        # --validation: the epoch is picked on the held-out second-to-last items, and
        # Keras restores the weights of that epoch before the test evaluation.
        stopping = EarlyStoppingOnEvaluations(
            monitor="val_recall@100", mode="max", patience=args.patience or args.epochs,
            restore_best_weights=True, verbose=1,
        )
        callbacks.append(stopping)
    print(f"[{method}]", flush=True)
    model.fit(train, epochs=args.epochs, verbose=2, callbacks=callbacks)
    selected = stopping is not None and stopping.best_weights is not None
    selected_epoch = stopping.best_epoch + 1 if selected else len(timer.times)
    recall = full_catalogue_recall(model, {"test": data["test"]})["test"]
    covered = sce_coverage(model, train, sce_options) if method == "sce" else ""
    if method == "sce":
        options = " ".join(f"{k}={v}" for k, v in sce_options.items() if v is not None)
    else:
        options = "logQ remove_accidental_hits" + (
            f" hard_negatives={args.hard_negatives}" if args.hard_negatives else ""
        )
    return {
        "dataset": args.dataset,
        "method": method,
        "epochs": args.epochs,
        "epochs_run": len(timer.times),
        "eval_every": args.eval_every,
        "patience": args.patience,
        "recall@10": round(recall[10], 4),
        "recall@100": round(recall[100], 4),
        # The first epoch includes tracing/compilation; report the mean of the rest.
        "sec_per_epoch": round(float(np.mean(timer.times[1:] or timer.times)), 2),
        "tower": args.tower + (f"+dropout{args.dropout:g}" if args.dropout else ""),
        "dim": args.dim,
        "batch_size": args.batch_size,
        "max_len": args.max_len,
        "learning_rate": args.learning_rate,
        "optimizer": args.optimizer,
        "options": options,
        "sce_covered_fraction": covered,
        "recall@100_by_epoch": " ".join(evaluation.curve),
        "train_examples": len(train_target),
        "test_users": len(data["test"][1]),
        "num_items": num_items,
        "seed": args.seed,
        "selection": "validation" if data["val"] is not None else "last",
        "selected_epoch": selected_epoch,
        "val_recall@100": round(float(stopping.best), 4) if selected else "",
        "val_recall@100_by_epoch": " ".join(evaluation.val_curve),
        "adam_epsilon": args.adam_epsilon if args.optimizer == "adam" else "",
    }




def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None,
                        help="folder with <dataset>.txt (default: $KERAS_SCE_DATA/seqrec or "
                             "../shared/data/seqrec)")
    parser.add_argument("--dataset", default="Beauty",
                        help="a file of --data-dir without .txt, or several joined with + (one "
                             "catalogue: their item ids are shifted apart)")
    parser.add_argument("--methods", default="in_batch,sce")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--tower", choices=["mean", "gru"], default="mean")
    parser.add_argument("--dropout", type=float, default=0.0,
                        help="dropout on the history's item vectors in the query tower")
    parser.add_argument("--optimizer", choices=["adam", "adagrad"], default="adam")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--adam-epsilon", type=float, default=1e-7,
                        help="Adam's epsilon (tf_keras default 1e-7); it sets the gradient size "
                             "below which a row's update shrinks")
    parser.add_argument("--validation", action="store_true",
                        help="hold out each user's second-to-last item; pick the epoch (and "
                             "restore its weights) by validation Recall@100, evaluated every "
                             "--eval-every epochs (default 1)")
    parser.add_argument("--patience", type=int, default=0,
                        help="with --validation: stop after this many evaluations without a "
                             "better validation Recall@100 (0: train all --epochs)")
    parser.add_argument("--hard-negatives", type=int, default=0,
                        help="in_batch only: keep this many hardest in-batch negatives (0: all)")
    parser.add_argument("--sce-bucket-size-y", type=int, default=256)
    parser.add_argument("--sce-num-buckets", type=int, default=None,
                        help="default: int(2 * sqrt(batch size)), the authors' rule")
    parser.add_argument("--sce-bucket-size-x", type=int, default=None,
                        help="default: int(2 * sqrt(batch size)), the authors' rule")
    parser.add_argument("--sce-mix-x", action="store_true")
    parser.add_argument("--eval-every", type=int, default=0,
                        help="evaluate every N epochs (not timed): the test recall, a "
                             "diagnostic, and with --validation the validation recall that "
                             "picks the epoch among these (and the last); default 0 (never), "
                             "1 with --validation")
    parser.add_argument("--max-users", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jit-compile", action="store_true")
    parser.add_argument("--append", action="store_true",
                        help="keep the rows already in --out (several configurations, one table)")
    parser.add_argument("--table-only", action="store_true",
                        help="only rewrite the Markdown table from the CSV in --out")
    parser.add_argument("--out", default=None,
                        help="CSV to write the rows to (and a Markdown table beside it)")
    return parser.parse_args(argv)


def main(argv=None, program="PYTHONPATH=. python examples/tfrs_retrieval.py", recorded_argv=None):
    """Trains the methods of ``argv``.

    With ``--out`` the rows go to that CSV, each with the command ``program`` followed
    by ``recorded_argv`` (default: ``argv``).
    """
    args = parse_args(argv)
    if (args.table_only or args.append) and not args.out:
        raise SystemExit("--table-only and --append need --out (the CSV to read or extend).")
    if args.table_only:  # rewrite the Markdown table from the CSV, no training
        print(write_results([], args.out, "", append=True))
        return []
    try:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    except RuntimeError:
        pass  # already initialised (e.g. under pytest)
    if args.validation and not args.eval_every:
        args.eval_every = 1
    if args.patience and not args.validation:
        raise SystemExit("--patience needs --validation (it counts validation evaluations).")
    if args.patience < 0 or args.eval_every < 0:
        raise SystemExit("--patience and --eval-every must be >= 0.")
    sequences, _ = load_datasets(args.dataset, args.data_dir, args.max_users)
    train_hist, train_target, test_hist, test_target, num_items = build_examples(
        sequences, args.max_len
    )
    data = {"test": (test_hist, test_target), "num_items": num_items, "val": None}
    if args.validation:
        train_hist, train_target, val_hist, val_target, _ = build_validation_examples(
            sequences, args.max_len
        )
        data["val"] = (val_hist, val_target)
    data["train"] = (train_hist, train_target)
    print(f"{args.dataset}: {len(sequences)} users, {num_items} items, "
          f"{len(train_target)} training examples"
          + (f", {len(data['val'][1])} validation users" if args.validation else ""),
          flush=True)
    rows = []
    for method in args.methods.split(","):
        if method not in ("in_batch", "sce"):
            raise SystemExit(f"Unknown method {method!r}; use in_batch and/or sce.")
        rows.append(run_method(method, args, data))
        print({k: rows[-1][k] for k in FIELDS}, flush=True)
    if args.out:
        given = argv if argv is not None else __import__("sys").argv[1:]
        command = program + " " + " ".join(given if recorded_argv is None else recorded_argv)
        print(write_results(rows, args.out, command.strip(), append=args.append))
    return rows


if __name__ == "__main__":
    main()
