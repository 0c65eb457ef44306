"""The main job: train SASRec with SCE and baseline losses, compare them honestly.

``keras-sce train --data PATH --format FORMAT`` (or ``python -m keras_sce train``)
loads an interaction log, splits it leave-one-out, trains SASRec once per loss
(Keras progress bars, early stopping on validation NDCG@10 ranked over the full
catalogue), evaluates the best weights on the test targets, prints a results
table (NDCG@10, HR@10, COV@10, epochs, seconds per epoch, peak memory) and writes
``results.csv`` and ``results.png`` (quality vs peak memory and vs time per epoch).

With no arguments it runs end to end in a few minutes on CPU on a generated data
set (power-law popularity with sequential structure, see
`keras_sce.datasets.synthetic_sequences`) and says so.

Each loss trains in its own child process by default (``--no-isolate`` to turn it
off), so that each peak memory figure is that configuration's own peak RSS.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import pathlib
import sys

FORMATS = ("auto", "sasrec", "movielens", "csv")
TABLE_COLUMNS = ("method", "ndcg@10", "hr@10", "cov@10", "epochs", "sec_per_epoch", "peak_mem_mb")
CSV_COLUMNS = (
    "dataset",
    "method",
    "seed",
    "epochs",
    "best_epoch",
    "ndcg@10",
    "hr@10",
    "cov@10",
    "mrr@10",
    "ndcg@20",
    "hr@20",
    "sec_per_epoch",
    "peak_mem_mb",
    "stopped_by",
)


def parse_logit_offset(text: str):
    """``--logit-offset`` (argparse type): ``balanced`` or a finite float."""
    if text == "balanced":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'balanced' or a number, got {text!r}"
        ) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-sce",
        description="Train SASRec with Scalable Cross-Entropy (arXiv 2409.18721) and baselines.",
    )
    sub = parser.add_subparsers(dest="command")
    train = sub.add_parser("train", help="train and compare losses (the default command)")
    add_train_arguments(train)
    return parser


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    data = p.add_argument_group("data")
    data.add_argument("--data", help="interaction file (default: generated data)")
    data.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="sasrec: 'user item item ...' lines; movielens: ratings.dat/.csv; "
        "csv: user,item,timestamp table (auto: from the file name)",
    )
    data.add_argument("--user-col", default="user")
    data.add_argument("--item-col", default="item")
    data.add_argument("--time-col", default="timestamp")
    data.add_argument("--delimiter", default=",")
    data.add_argument("--min-rating", type=float, default=None)
    data.add_argument("--synthetic-users", type=int, default=3000)
    data.add_argument("--synthetic-items", type=int, default=2000)
    run = p.add_argument_group("training")
    run.add_argument(
        "--losses",
        default="sce,ce,gbce,sampled_softmax",
        help="comma-separated: sce, ce, gbce, sampled_softmax, bce",
    )
    run.add_argument("--epochs", type=int, default=None, help="maximum epochs")
    run.add_argument("--patience", type=int, default=10, help="evaluations without improvement")
    run.add_argument("--max-minutes", type=float, default=None, help="time budget per loss")
    run.add_argument("--max-length", type=int, default=50)
    run.add_argument("--hidden-dim", type=int, default=64)
    run.add_argument("--blocks", type=int, default=2)
    run.add_argument("--heads", type=int, default=1)
    run.add_argument("--dropout", type=float, default=0.3)
    run.add_argument("--lr", type=float, default=1e-3)
    run.add_argument("--batch-size", type=int, default=128)
    run.add_argument("--bucket-size-y", type=int, default=256, help="SCE items per bucket")
    run.add_argument("--mix-x", action="store_true", help="SCE centres from the batch")
    run.add_argument(
        "--num-negatives", type=int, default=256, help="negatives of gBCE and sampled softmax"
    )
    run.add_argument(
        "--logit-offset",
        type=parse_logit_offset,
        default="balanced",
        help="gBCE/BCE constant added to the scores in the loss: 'balanced' (log(beta/k)) "
        "or a float; 0 is the published loss",
    )
    run.add_argument(
        "--length-buckets",
        type=int,
        default=50,
        help="sortish batching pool (0: plain shuffled full-length batches)",
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument(
        "--no-isolate",
        action="store_true",
        help="train every loss in this process (peak memory is then cumulative)",
    )
    run.add_argument("--out", default="keras_sce_results", help="output folder")
    run.add_argument("--no-plot", action="store_true")
    run.add_argument("--verbose", type=int, default=1, help="Keras fit verbosity (0, 1, 2)")


def load_data(args):
    """Returns ``(SequenceData, description)`` for the parsed arguments."""
    from keras_sce import datasets

    if not args.data:
        data = datasets.synthetic_sequences(
            num_users=args.synthetic_users, num_items=args.synthetic_items, seed=args.seed
        )
        return data, f"generated data: {data.name} (no --data given)"
    fmt = args.format
    name = os.path.basename(args.data)
    if fmt == "auto":
        if name.startswith("ratings.") or os.path.isdir(args.data):
            fmt = "movielens"
        elif name.endswith(".csv") or name.endswith(".tsv"):
            fmt = "csv"
        else:
            fmt = "sasrec"
    if fmt == "sasrec":
        data = datasets.load_sequences_txt(args.data)
    elif fmt == "movielens":
        data = datasets.load_movielens(args.data, min_rating=args.min_rating)
    else:
        time_col = args.time_col if args.time_col not in ("", "none") else None
        data = datasets.load_interactions_csv(
            args.data,
            user_col=args.user_col,
            item_col=args.item_col,
            time_col=time_col,
            delimiter="\t" if args.delimiter == "\\t" else args.delimiter,
        )
    return data, f"{args.data} (format {fmt})"


def _config(args, num_users: int):
    from keras_sce.training import TrainConfig

    epochs = args.epochs
    if epochs is None:
        epochs = 8 if not args.data else 200
    return TrainConfig(
        max_length=args.max_length,
        hidden_dim=args.hidden_dim,
        num_blocks=args.blocks,
        num_heads=args.heads,
        dropout=args.dropout,
        learning_rate=args.lr,
        batch_size=min(args.batch_size, num_users),
        max_epochs=epochs,
        patience=args.patience,
        max_minutes=args.max_minutes,
        seed=args.seed,
        bucket_size_y=args.bucket_size_y,
        mix_x=args.mix_x,
        num_negatives=args.num_negatives,
        logit_offset=args.logit_offset,
        length_buckets=args.length_buckets or None,
        verbose=args.verbose,
    )


def _train_one(args, method):
    from keras_sce.datasets import leave_one_out

    data, _ = load_data(args)
    split = leave_one_out(data)
    from keras_sce.training import train_and_evaluate

    result = train_and_evaluate(split, method, _config(args, data.num_users))
    result.pop("model")
    result["dataset"] = data.name
    return result


def _child(args, method, queue):
    try:
        queue.put(("ok", _train_one(args, method)))
    except BaseException as error:  # report, the parent raises
        queue.put(("error", f"{type(error).__name__}: {error}"))


def run_train(args) -> list[dict]:
    methods = [m.strip() for m in args.losses.split(",") if m.strip()]
    from keras_sce.training import METHODS

    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"keras-sce: unknown loss(es) {unknown}; choose from {list(METHODS)}.")
    data, description = load_data(args)
    print(f"keras-sce: data = {description}")
    print(f"keras-sce: {data.summary()}; leave-one-out, full-catalogue ranking", flush=True)
    results = []
    for method in methods:
        print(f"\n=== SASRec + {method} ===", flush=True)
        if args.no_isolate:
            result = _train_one(args, method)
        else:
            ctx = multiprocessing.get_context("spawn")
            queue = ctx.Queue()
            proc = ctx.Process(target=_child, args=(args, method, queue))
            proc.start()
            status, result = queue.get()
            proc.join()
            if status != "ok":
                raise SystemExit(f"keras-sce: training with {method} failed: {result}")
        results.append(result)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(results, out / "results.csv")
    print("\n" + format_table(results))
    print(f"\nkeras-sce: wrote {out / 'results.csv'}", end="")
    if not args.no_plot:
        try:
            plot(results, out / "results.png")
            print(f" and {out / 'results.png'}", end="")
        except ImportError:
            print(" (no plot: install matplotlib, e.g. pip install 'keras-sce[plot]')", end="")
    print(f"\nkeras-sce: data = {description}")
    with open(out / "records.json", "w") as handle:
        json.dump(results, handle, indent=1, default=float)
    return results


def write_csv(results, path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in results:
            writer.writerow({k: r.get(k) for k in CSV_COLUMNS})


def format_table(results) -> str:
    header = "| " + " | ".join(TABLE_COLUMNS) + " |"
    lines = [header, "|" + "---|" * len(TABLE_COLUMNS)]
    for r in results:
        cells = [
            r["method"],
            f"{r['ndcg@10']:.4f}",
            f"{r['hr@10']:.4f}",
            f"{r['cov@10']:.3f}",
            f"{r['epochs']} (best {r['best_epoch']})",
            f"{r['sec_per_epoch']:.2f}",
            f"{r['peak_mem_mb']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for r in results:
        for ax, key in zip(axes, ("peak_mem_mb", "sec_per_epoch"), strict=True):
            ax.scatter(r[key], r["ndcg@10"], s=40)
            ax.annotate(
                r["method"], (r[key], r["ndcg@10"]), textcoords="offset points", xytext=(4, 4)
            )
    axes[0].set_xlabel("peak memory (MiB, process RSS)")
    axes[1].set_xlabel("seconds per training epoch")
    for ax in axes:
        ax.set_ylabel("test NDCG@10 (full ranking)")
        ax.grid(alpha=0.3)
    fig.suptitle("SASRec: quality vs cost per loss")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        argv = ["train", *argv]
    args = build_parser().parse_args(argv)
    if args.command == "train":
        run_train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
