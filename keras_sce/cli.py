"""The main job: train SASRec with SCE and baseline losses, compare them honestly.

`keras-sce train --data PATH --format FORMAT` (or `python -m keras_sce train`)
loads an interaction log, splits it leave-one-out, trains SASRec once per loss
(Keras progress bars, early stopping on validation NDCG@10 ranked over the full
catalogue), evaluates the best weights on the test targets, prints a results table
(NDCG@10, HR@10, COV@10, epochs, seconds per epoch, training / peak / predicted
memory, status) and writes `results.csv`, `records.json` and `results.png`.

Every option is checked before anything trains. Each loss trains in a fresh child
process (`keras_sce.app.main_job`): a loss that raises, runs out of memory or crashes
becomes a row with its cause, the others still run, and everything is written before
the exit status (1) reports the failure. A loss whose predicted memory exceeds the
available memory is skipped with the two figures (`--force` tries it anyway). With
no arguments it runs on generated data (see `DEFAULT_SYNTHETIC`) and says so.
See docs/main-job.md.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from keras_sce.app import options, runner
from keras_sce.app.main_job import (  # noqa: F401  (the job's steps, also used from here)
    DEFAULT_EPOCHS_WITH_DATA,
    DEFAULT_SYNTHETIC,
    _config,
    _load_split,
    load_data,
    predict_memory,
    run_train,
)

FORMATS = ("auto", "sasrec", "movielens", "csv")
DEFAULT_LOSSES = "sce,ce,gbce,sampled_softmax"


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


def main(argv=None) -> int:
    """Entry point of `keras-sce` and `python -m keras_sce`; returns the exit status."""
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
