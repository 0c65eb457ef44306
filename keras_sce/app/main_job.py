"""The main job's work: load and split the data, predict, train each loss, write results.

Each loss trains in a fresh child process (`keras_sce.app.harness.run_config`): a loss
that raises, runs out of memory or crashes becomes a row with its cause, the others
still run. `keras_sce.cli` parses the options and calls `run_train`.
"""

from __future__ import annotations

import os
import sys
import traceback

from keras_sce.app import harness, memory, options, report

# The generated data of a run without --data: a catalogue large enough that full CE's
# N x C logits dominate its memory and time, small enough for a laptop CPU (docs/main-job.md).
DEFAULT_SYNTHETIC = {"users": 3000, "items": 50_000, "epochs": 3}
DEFAULT_EPOCHS_WITH_DATA = 200


def load_data(args):
    """Returns `(SequenceData, description)` for the parsed arguments."""
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


def _train_job(job) -> dict:
    """`_train_one` of `(args, method)`: the child's entry point."""
    return _train_one(*job)


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
            outcome = dict(_train_one(args, method), status="ok", cause="")
        except Exception as error:  # the row says why; the other losses still run
            outcome = {"status": "failed", "cause": f"exception: {type(error).__name__}: {error}",
                       "traceback": traceback.format_exc(), "peak_mem_mb": None}
    else:
        outcome = harness.run_config(_train_job, (args, method), name=method)
    if outcome["status"] == "ok":
        return dict(row, **outcome)
    print(f"keras-sce: {method} failed: {outcome['cause']}", file=sys.stderr, flush=True)
    if args.traceback and outcome["traceback"]:
        print(outcome["traceback"], file=sys.stderr, flush=True)
    return dict(row, status="failed", cause=outcome["cause"], peak_mem_mb=outcome["peak_mem_mb"])


def run_train(args) -> int:
    """The `train` command; returns the exit status (0 ok, 1 if a loss failed).

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
