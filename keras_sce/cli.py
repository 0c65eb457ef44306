"""The main job: train SASRec with SCE and baseline losses, compare them honestly.

``keras-sce train --data PATH --format FORMAT`` (or ``python -m keras_sce train``)
loads an interaction log, splits it leave-one-out, trains SASRec once per loss
(Keras progress bars, early stopping on validation NDCG@10 ranked over the full
catalogue), evaluates the best weights on the test targets, prints a results table
(NDCG@10, HR@10, COV@10, epochs, seconds per epoch, training / peak / predicted
memory, status) and writes ``results.csv``, ``records.json`` and ``results.png``.

Every option is checked before anything trains. Each loss trains in a fresh child
process (`keras_sce.app.runner`): a loss that raises, runs out of memory or crashes
becomes a row with its cause, the others still run, and everything is written before
the exit status (1) reports the failure. A loss whose predicted memory exceeds the
available memory is skipped with the two figures (``--force`` tries it anyway). With
no arguments it runs on generated data (see `DEFAULT_SYNTHETIC`) and says so.
See docs/main-job.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from keras_sce.app import memory, options, report, runner

FORMATS = ("auto", "sasrec", "movielens", "csv")
DEFAULT_LOSSES = "sce,ce,gbce,sampled_softmax"
# The generated data of a run without --data: a catalogue large enough that full CE's
# N x C logits dominate its memory and time, small enough for a laptop CPU (docs/main-job.md).
DEFAULT_SYNTHETIC = {"users": 3000, "items": 50_000, "epochs": 3}
DEFAULT_EPOCHS_WITH_DATA = 200


def build_parser() -> argparse.ArgumentParser:
    parser = options.OneLineParser(
        prog="keras-sce",
        description="Train SASRec with Scalable Cross-Entropy (arXiv 2409.18721) and baselines.",
    )
    sub = parser.add_subparsers(dest="command", parser_class=options.OneLineParser)
    train = sub.add_parser("train", help="train and compare losses (the default command)")
    add_train_arguments(train)
    return parser


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    pos, nonneg = options.int_at_least(1), options.int_at_least(0)
    data = p.add_argument_group("data")
    data.add_argument("--data", help="interaction file (default: generated data)")
    data.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="sasrec: 'user item item ...' lines; movielens: ratings.dat/.csv; "
        "csv: user,item,timestamp table (auto: from the file name)",
    )
    data.add_argument("--user-col", type=options.column, default="user")
    data.add_argument("--item-col", type=options.column, default="item")
    data.add_argument("--time-col", default="timestamp", help="'' or 'none': file order")
    data.add_argument(
        "--delimiter",
        type=options.delimiter,
        default=None,
        help="CSV field separator (default: tab for .tsv, else inferred from the first line)",
    )
    data.add_argument(
        "--keep-duplicates",
        action="store_true",
        help="CSV/MovieLens: keep exact duplicate (user, item, timestamp) rows (default: drop "
        "them and say how many)",
    )
    data.add_argument("--min-rating", type=options.finite_float, default=None)
    data.add_argument(
        "--synthetic-users", type=pos, default=DEFAULT_SYNTHETIC["users"], metavar="N"
    )
    data.add_argument(
        "--synthetic-items", type=options.int_at_least(2), default=DEFAULT_SYNTHETIC["items"],
        metavar="N",
    )
    run = p.add_argument_group("training")
    run.add_argument(
        "--losses",
        type=options.loss_list,
        default=options.loss_list(DEFAULT_LOSSES),
        help=f"comma-separated, from {', '.join(options.LOSSES)} (default: {DEFAULT_LOSSES})",
    )
    run.add_argument(
        "--epochs",
        type=pos,
        default=None,
        help=f"maximum epochs (default: {DEFAULT_SYNTHETIC['epochs']} on generated data, "
        f"{DEFAULT_EPOCHS_WITH_DATA} with --data)",
    )
    run.add_argument("--patience", type=nonneg, default=10, help="evaluations without gain")
    run.add_argument("--max-minutes", type=options.positive_float, default=None,
                     help="time budget per loss")
    run.add_argument("--max-length", type=pos, default=50)
    run.add_argument("--hidden-dim", type=pos, default=64)
    run.add_argument("--blocks", type=pos, default=2)
    run.add_argument("--heads", type=pos, default=1, help="must divide --hidden-dim")
    run.add_argument("--dropout", type=options.unit_interval_float, default=0.3)
    run.add_argument("--lr", type=options.positive_float, default=1e-3)
    run.add_argument(
        "--optimizer",
        choices=("lazy_adam", "adam"),
        default="lazy_adam",
        help="lazy_adam: only the item-table rows a step touches move (keras_sce.optimizers."
        "LazyAdam; a step costs O(rows), not O(catalogue)); adam: Keras Adam (dense moments)",
    )
    run.add_argument("--batch-size", type=pos, default=128)
    run.add_argument("--bucket-size-y", type=pos, default=256, help="SCE items per bucket")
    run.add_argument("--num-buckets", type=pos, default=None,
                     help="SCE buckets (default: int(2 * sqrt(rows per batch)))")
    run.add_argument("--bucket-size-x", type=pos, default=None,
                     help="SCE rows per bucket (default: as --num-buckets)")
    run.add_argument("--mix-x", action="store_true", help="SCE centres from the batch")
    run.add_argument(
        "--num-negatives", type=pos, default=256, help="negatives of gBCE and sampled softmax"
    )
    run.add_argument(
        "--logit-offset",
        type=options.logit_offset,
        default="balanced",
        help="gBCE/BCE constant added to the scores in the loss: 'balanced' (log(beta/k)) "
        "or a float; 0 is the published loss",
    )
    run.add_argument(
        "--length-buckets",
        type=nonneg,
        default=50,
        help="sortish batching pool (0: plain shuffled full-length batches)",
    )
    run.add_argument("--seed", type=options.seed, default=0)
    run.add_argument(
        "--no-isolate",
        action="store_true",
        help="train every loss in this process (memory figures are then cumulative, "
        "and a crash ends the whole run)",
    )
    run.add_argument("--force", action="store_true",
                     help="train a loss even when its predicted memory exceeds what is available")
    run.add_argument("--out", default="keras_sce_results", help="output folder")
    run.add_argument("--no-plot", action="store_true")
    run.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                     help="Keras fit verbosity")
    run.add_argument("--traceback", action="store_true",
                     help="show Python tracebacks of errors and failed losses")


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
        data = datasets.load_movielens(
            args.data, min_rating=args.min_rating, drop_duplicates=not args.keep_duplicates
        )
    else:
        time_col = args.time_col if args.time_col not in ("", "none") else None
        data = datasets.load_interactions_csv(
            args.data,
            user_col=args.user_col,
            item_col=args.item_col,
            time_col=time_col,
            delimiter=args.delimiter,
            drop_duplicates=not args.keep_duplicates,
        )
    return data, f"{args.data} (format {fmt})"


def _load_split(args):
    """Data and its leave-one-out split; a bad file becomes a one-line `UsageError`."""
    from keras_sce.datasets import leave_one_out

    source = f"--data {args.data}" if args.data else "generated data"
    try:
        data, description = load_data(args)
        return data, leave_one_out(data), description
    except (ValueError, OSError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        raise options.UsageError(f"{source}: {message}") from error


def _config(args, num_users: int):
    from keras_sce.training import TrainConfig

    epochs = args.epochs
    if epochs is None:
        epochs = DEFAULT_SYNTHETIC["epochs"] if not args.data else DEFAULT_EPOCHS_WITH_DATA
    return TrainConfig(
        max_length=args.max_length,
        hidden_dim=args.hidden_dim,
        num_blocks=args.blocks,
        num_heads=args.heads,
        dropout=args.dropout,
        learning_rate=args.lr,
        optimizer=args.optimizer,
        batch_size=min(args.batch_size, num_users),
        max_epochs=epochs,
        patience=args.patience,
        max_minutes=args.max_minutes,
        seed=args.seed,
        bucket_size_y=args.bucket_size_y,
        num_buckets=args.num_buckets,
        bucket_size_x=args.bucket_size_x,
        mix_x=args.mix_x,
        num_negatives=args.num_negatives,
        logit_offset=args.logit_offset,
        length_buckets=args.length_buckets or None,
        verbose=args.verbose,
    )


def _train_one(args, method) -> dict:
    """One loss, start to end (the child's job): load, split, train, evaluate."""
    from keras_sce.datasets import leave_one_out
    from keras_sce.training import train_and_evaluate

    data, _ = load_data(args)
    result = train_and_evaluate(leave_one_out(data), method, _config(args, data.num_users))
    result.pop("model")
    result["dataset"] = data.name
    return result


def predict_memory(args, split, method) -> memory.MemoryEstimate:
    """`keras_sce.app.memory.predict_training_bytes` for these options and data."""
    from keras_sce.training import sce_bucket_rule

    config = _config(args, len(split.train))
    rows = memory.max_rows_per_batch(split.train, config.batch_size, config.max_length)
    rule = sce_bucket_rule(split, config)
    return memory.predict_training_bytes(
        method,
        num_items=split.num_items,
        hidden_dim=config.hidden_dim,
        rows=rows,
        batch_size=config.batch_size,
        max_length=config.max_length,
        num_blocks=config.num_blocks,
        num_heads=config.num_heads,
        num_negatives=min(config.num_negatives, split.num_items - 1),
        num_buckets=config.num_buckets or rule,
        bucket_size_x=config.bucket_size_x or rule,
        bucket_size_y=config.bucket_size_y,
    )


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.2f} GiB"


def _run_loss(args, method, estimate, base_row) -> dict:
    """Trains one loss (or skips it) and returns its row; never raises for the loss's faults."""
    row = dict(base_row, method=method, predicted_mem_mb=estimate.total_mb)
    available = memory.available_bytes()
    if available is not None and estimate.total_bytes > available and not args.force:
        cause = (
            f"skipped: predicted {_gib(estimate.total_bytes)} > available {_gib(available)} "
            "(--force to try)"
        )
        print(f"keras-sce: {method} {cause}", flush=True)
        return dict(row, status="skipped", cause=cause)
    if args.no_isolate:
        try:
            outcome = runner.ChildResult(method, value=_train_one(args, method))
        except Exception as error:  # the row says why; the other losses still run
            outcome = runner.ChildResult(
                method, cause=f"exception: {type(error).__name__}: {error}",
                traceback=traceback.format_exc(),
            )
    else:
        outcome = runner.run_in_child(_train_one, args, method, name=method)
    if outcome.ok:
        return dict(row, **outcome.value, status="ok", cause="")
    print(f"keras-sce: {method} failed: {outcome.cause}", file=sys.stderr, flush=True)
    if args.traceback and outcome.traceback:
        print(outcome.traceback, file=sys.stderr, flush=True)
    peak = None if outcome.peak_rss_bytes is None else outcome.peak_rss_bytes / 2**20
    return dict(row, status="failed", cause=outcome.cause, peak_mem_mb=peak)


def run_train(args) -> int:
    """The ``train`` command; returns the exit status (0 ok, 1 if a loss failed).

    Raises:
        options.UsageError: for a bad option, data file or output folder (nothing trained).
    """
    options.check_combinations(args)
    options.check_data_path(args.data)
    out = options.prepare_output_folder(args.out)
    data, split, description = _load_split(args)
    options.check_against_data(args, split.num_items, len(split.train))
    print(f"keras-sce: data = {description}")
    print(f"keras-sce: {data.summary()}; leave-one-out, full-catalogue ranking", flush=True)
    estimates = {m: predict_memory(args, split, m) for m in args.losses}
    available = memory.available_bytes()
    print(
        "keras-sce: predicted training memory: "
        + ", ".join(f"{m} {e.total_mb:,.0f} MB" for m, e in estimates.items())
        + ("" if available is None else f" (available now: {available / 2**20:,.0f} MB)")
        + " [MB = MiB]",
        flush=True,
    )
    base_row = {"dataset": data.name, "catalogue": int(split.num_items), "seed": args.seed}
    rows, status = [], 0
    for method in args.losses:
        print(f"\n=== SASRec + {method} ===", flush=True)
        try:
            rows.append(_run_loss(args, method, estimates[method], base_row))
        except KeyboardInterrupt:
            rows.append(dict(base_row, method=method, status="failed", cause="interrupted"))
            status = 130
            break
    if status == 0 and any(r["status"] == "failed" for r in rows):
        status = 1
    _write_outputs(args, rows, out, description)
    return status


def _write_outputs(args, rows, out, description) -> None:
    report.write_csv(rows, out / "results.csv")
    report.write_json(rows, out / "records.json")
    print("\n" + report.format_table(rows))
    written = [out / "results.csv", out / "records.json"]
    if not args.no_plot:
        try:
            report.plot(rows, out / "results.png")
            written.append(out / "results.png")
        except ImportError:
            print("keras-sce: no plot (install matplotlib: pip install 'keras-sce[plot]')")
    print(f"\nkeras-sce: wrote {', '.join(str(p) for p in written)}")
    print(f"keras-sce: data = {description}")


def main(argv=None) -> int:
    """Entry point of ``keras-sce`` and ``python -m keras_sce``; returns the exit status."""
    runner.quiet_tensorflow_environment()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["train", *argv]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, or a bad option (already printed on one line)
        return int(exit_.code or 0)
    if args.command != "train":
        build_parser().print_help()
        return 2
    runner.import_tensorflow_quietly()  # before anything below imports it
    try:
        return run_train(args)
    except options.UsageError as error:
        if args.traceback:
            traceback.print_exc()
        print(f"keras-sce: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
