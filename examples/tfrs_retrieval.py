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
hit rate). Results go to a CSV (``dataset,method,epochs,recall@10,recall@100,
sec_per_epoch`` plus the settings) and a Markdown table next to it.

Run (the script sets ``TF_USE_LEGACY_KERAS=1`` itself, before TensorFlow loads):

    PYTHONPATH=. python examples/tfrs_retrieval.py --dataset Beauty --epochs 10

It uses one CPU thread by default (``--threads``).
"""

from __future__ import annotations

import os

# TFRS runs on tf_keras: this must happen before anything touches tf.keras.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import csv  # noqa: E402
import pathlib  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402
import tf_keras  # noqa: E402
from seqrec_data import (  # noqa: E402
    build_examples,
    build_validation_examples,
    load_datasets,
)

from keras_sce.ops import scalable_cross_entropy  # noqa: E402
from keras_sce.tfrs import SCERetrieval  # noqa: E402  (checks the stack)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
FIELDS = ["dataset", "method", "epochs", "recall@10", "recall@100", "sec_per_epoch"]
EXTRA_FIELDS = ["tower", "dim", "batch_size", "max_len", "learning_rate", "optimizer", "options",
                "sce_covered_fraction", "recall@100_by_epoch", "train_examples", "test_users",
                "num_items", "seed", "selection", "selected_epoch", "val_recall@100",
                "val_recall@100_by_epoch", "adam_epsilon", "epochs_run", "eval_every",
                "patience"]


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


# -- evaluation ------------------------------------------------------------------------
def full_catalogue_recall(model, splits, ks=(10, 100), batch_size=1024):
    """Recall@k of the targets among ALL items, with TFRS FactorizedTopK/BruteForce.

    ``splits`` maps a name to ``(histories, targets)``; all are scored against one
    index of the current table. Returns ``{name: {k: recall}}``.
    """
    table = model.item_embedding.embeddings
    item_ids = tf.range(1, table.shape[0], dtype=tf.int32)  # row 0 is padding, not an item
    # A catalogue smaller than k: every item is retrieved (recall@k = 1).
    capped = tuple(min(k, len(item_ids)) for k in ks)
    index = tfrs.layers.factorized_top_k.BruteForce(k=max(capped))
    index.index(tf.gather(table, item_ids), identifiers=item_ids)
    metric = tfrs.metrics.FactorizedTopK(candidates=index, ks=capped)

    @tf.function(autograph=False)
    def update(history, target):
        query = model.query_tower(history)
        metric.update_state(query, tf.gather(table, target), true_candidate_ids=target)

    results = {}
    for name, (histories, targets) in splits.items():
        metric.reset_states()
        for history, target in tf.data.Dataset.from_tensor_slices(
            (histories, targets)
        ).batch(batch_size):
            update(history, target)
        results[name] = {k: float(r) for k, r in zip(ks, metric.result(), strict=True)}
    return results


def sce_coverage(model, train, sce_options, num_batches=20):
    """Mean share of training queries that fall in at least one SCE bucket (diagnostic)."""
    fractions = []
    for step, batch in enumerate(train.take(num_batches)):
        _, details = scalable_cross_entropy(
            model.query_tower(batch["history"]), batch["target"],
            model.item_embedding.embeddings, padding_id=0, seed=step,
            return_details=True, **sce_options,
        )
        fractions.append(float(details["covered_fraction"]))
    return round(float(np.mean(fractions)), 3)


# -- experiment ------------------------------------------------------------------------
class EarlyStoppingOnEvaluations(tf_keras.callbacks.EarlyStopping):
    """Keras' early stopping, told only of the epochs whose logs hold ``monitor``.

    With ``--eval-every`` above 1 the other epochs have no validation recall; they
    neither count as evaluations without improvement nor warn.
    """

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor in (logs or {}):
            super().on_epoch_end(epoch, logs)


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
    epoch_times, curve, val_curve = [], [], []

    class Timer(tf_keras.callbacks.Callback):
        """Pure training time per epoch (the evaluation after it is not counted)."""

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.start)

    class Recall(tf_keras.callbacks.Callback):
        """Logs ``test_recall@k`` (and ``val_recall@100``) on the evaluated epochs."""

        def on_epoch_end(self, epoch, logs=None):
            # Under --validation the last epoch is always a candidate too.
            last = data["val"] is not None and epoch + 1 == args.epochs
            if not args.eval_every or ((epoch + 1) % args.eval_every and not last):
                return
            splits = {"test": data["test"]}
            if data["val"] is not None:
                splits["val"] = data["val"]
            recalls = full_catalogue_recall(model, splits)
            for k, value in recalls["test"].items():
                logs[f"test_recall@{k}"] = value
            curve.append(f"{epoch + 1}:{recalls['test'][100]:.4f}")
            if data["val"] is not None:
                logs["val_recall@100"] = recalls["val"][100]
                val_curve.append(f"{epoch + 1}:{recalls['val'][100]:.4f}")

    callbacks = [Timer(), Recall()]
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
    selected_epoch = stopping.best_epoch + 1 if selected else len(epoch_times)
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
        "epochs_run": len(epoch_times),
        "eval_every": args.eval_every,
        "patience": args.patience,
        "recall@10": round(recall[10], 4),
        "recall@100": round(recall[100], 4),
        # The first epoch includes tracing/compilation; report the mean of the rest.
        "sec_per_epoch": round(float(np.mean(epoch_times[1:] or epoch_times)), 2),
        "tower": args.tower + (f"+dropout{args.dropout:g}" if args.dropout else ""),
        "dim": args.dim,
        "batch_size": args.batch_size,
        "max_len": args.max_len,
        "learning_rate": args.learning_rate,
        "optimizer": args.optimizer,
        "options": options,
        "sce_covered_fraction": covered,
        "recall@100_by_epoch": " ".join(curve),
        "train_examples": len(train_target),
        "test_users": len(data["test"][1]),
        "num_items": num_items,
        "seed": args.seed,
        "selection": "validation" if data["val"] is not None else "last",
        "selected_epoch": selected_epoch,
        "val_recall@100": round(float(stopping.best), 4) if selected else "",
        "val_recall@100_by_epoch": " ".join(val_curve),
        "adam_epsilon": args.adam_epsilon if args.optimizer == "adam" else "",
    }


def _best_of_curve(curve):
    """``"2:0.17 4:0.23"`` -> ``"0.2300 (4)"``; empty without a curve."""
    points = [point.split(":") for point in curve.split()]
    if not points:
        return ""
    epoch, value = max(points, key=lambda point: float(point[1]))
    return f"{float(value):.4f} ({epoch})"


def _epochs_cell(row):
    """``"12"``, or ``"9 of 12"`` when early stopping ended the run before its budget."""
    run = row.get("epochs_run")
    if run in ("", None) and row.get("val_recall@100_by_epoch"):
        # Rows written before the field existed: the last epoch of the validation
        # curve (they were evaluated every epoch, the last one included).
        run = row["val_recall@100_by_epoch"].split()[-1].split(":")[0]
    if run in ("", None) or int(run) == int(row["epochs"]):
        return str(row["epochs"])
    return f"{run} of {row['epochs']}"


def _seed_summary(rows):
    """Markdown lines: mean ± sd of the recalls of settings run with several seeds."""
    groups = {}
    for row in rows:
        setting = tuple("" if row.get(key) is None else str(row[key]) for key in (
            "dataset", "method", "tower", "optimizer", "adam_epsilon", "learning_rate",
            "options", "epochs", "selection", "batch_size", "dim", "max_len", "eval_every",
            "patience", "train_examples", "test_users", "num_items"))
        groups.setdefault(setting, {})[str(row.get("seed", ""))] = row  # a rerun replaces
    lines = []
    for setting, by_seed in groups.items():
        if len(by_seed) < 2:
            continue
        if not lines:
            lines = ["", "Settings run with several seeds (one row per seed above):", "",
                     "| dataset | method | tower | optimizer | options | epochs | selection | "
                     "seeds | Recall@10 | Recall@100 |",
                     "|---|---|---|---|---|---:|---|---:|---:|---:|"]
        cells = []
        for metric in ("recall@10", "recall@100"):
            values = np.array([float(row[metric]) for row in by_seed.values()])
            cells.append(f"{values.mean():.4f} ± {values.std(ddof=1):.4f}")
        eps = f" eps={float(setting[4]):g}" if setting[4] else ""
        seeds = sorted(by_seed, key=lambda seed: (len(seed), seed))  # numeric order
        lines.append(f"| {setting[0]} | {setting[1]} | {setting[2] or 'mean'} | "
                     f"{setting[3] or 'adam'}{eps} {setting[5]} | {setting[6]} | {setting[7]} | "
                     f"{setting[8] or 'last'} | {','.join(seeds)} | {cells[0]} | {cells[1]} |")
    return lines


def write_results(rows, csv_path, command, append=False):
    """Writes the CSV (rows of earlier runs kept with ``append``) and a Markdown table."""
    csv_path = pathlib.Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    for row in rows:
        row["command"] = command
    if append and csv_path.exists():
        with open(csv_path, newline="") as handle:
            rows = list(csv.DictReader(handle)) + rows
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS + EXTRA_FIELDS + ["command"])
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| dataset | method | tower | optimizer | options | epochs (run of budget) | "
        "epoch used (val R@100) | "
        "Recall@10 | "
        "Recall@100 | best test Recall@100 (epoch) | s/epoch |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        optimizer = row.get("optimizer") or "adam"
        if row.get("adam_epsilon"):
            optimizer += f" eps={float(row['adam_epsilon']):g}"
        if row.get("selection") == "validation" and row.get("val_recall@100") not in ("", None):
            used = f"{row['selected_epoch']} (val {float(row['val_recall@100']):.4f})"
        else:
            used = row.get("selected_epoch") or row["epochs"]
        lines.append(
            f"| {row['dataset']} | {row['method']} | {row.get('tower') or 'mean'} | "
            f"{optimizer} {row.get('learning_rate', '')} | "
            f"{row['options']} | {_epochs_cell(row)} | {used} | "
            f"{float(row['recall@10']):.4f} | {float(row['recall@100']):.4f} | "
            f"{_best_of_curve(row.get('recall@100_by_epoch', ''))} | "
            f"{float(row['sec_per_epoch']):.1f} |"
        )
    lines += _seed_summary(rows)
    commands = list(dict.fromkeys(row["command"] for row in rows))
    lines += ["", "Full-catalogue recall of each user's last item, with the weights of the epoch "
              "used: the last one, or with --validation the epoch of best validation "
              "Recall@100 (each user's second-to-last item, held out of training); the best "
              "test Recall@100 over the epochs evaluated with --eval-every is a diagnostic, "
              "never used to pick the epoch; one CPU thread of a shared machine (s/epoch "
              "excludes the first, compiling epoch). Produced by:", ""]
    lines += [f"    {c}" for c in commands] + [""]
    csv_path.with_suffix(".md").write_text("\n".join(lines))
    return "\n".join(lines)


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
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks/results/tfrs_retrieval.csv"))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
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
    command = "PYTHONPATH=. python examples/tfrs_retrieval.py " + " ".join(
        a for a in (argv if argv is not None else __import__("sys").argv[1:])
    )
    print(write_results(rows, args.out, command.strip(), append=args.append))
    return rows


if __name__ == "__main__":
    main()
