"""Reproduce the SCE paper's Beauty result: SASRec + {SCE, CE, gBCE, sampled softmax}.

Leave-one-out on ``../shared/data/seqrec/Beauty.txt`` (or ``--data``), full-catalogue
ranking, early stopping on validation NDCG@10. Each call trains one method with one
seed in this process (so ``peak_mem_mb`` is this configuration's own peak RSS) and
appends a row to ``benchmarks/results/beauty.csv`` (``--out``); the per-epoch validation
curve goes to ``beauty_<method>_seed<seed>.json`` next to it.

Usage (what produced the committed CSV; one thread per run)::

    TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 \
        python benchmarks/beauty.py --method sce --seed 0 --max-minutes 75

    python benchmarks/beauty.py --table   # Markdown table of the CSV (for the README)

The CSV's columns and the ``--table`` / ``--curves`` reports are in
``benchmarks/beauty_report.py``.

``--method sce_calibrated`` trains calibrated SCE (`keras_sce.SCELoss(calibration=...)`)
with the options of ``--calibration`` (JSON; a ``"unigram"`` proposal takes its counts
from the training histories), recorded in the row's ``config``::

    python benchmarks/beauty.py --method sce_calibrated --seed 0 \
        --calibration '{"num_samples": 1024}'

Every new row also reports ``test_log_likelihood``: the mean over the test targets of
the log-softmax of the target's score over the whole catalogue (nats per target;
`keras_sce.evaluation.catalogue_log_likelihood`), with the candidates of the ranking
metrics: the padding id and the user's history are left out, the target kept.
Rows written before this column existed leave it empty.

``--optimizer lazy_adam`` trains with `keras_sce.optimizers.LazyAdam` (same learning
rate, betas and epsilon as the default Keras Adam; CSV method label ``<method>_lazyadam``).

Paper reference (Mezentsev et al., RecSys 2024, arXiv 2409.18721): SASRec-SCE on
Beauty HR@10 = 0.0935, NDCG@10 = 0.0544.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import beauty_report as report  # noqa: E402
from keras_sce.app.options import logit_offset as parse_logit_offset  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CALIBRATION_KEYS = ("num_samples", "proposal", "power", "uniform_mix")


def default_data() -> pathlib.Path:
    base = os.environ.get("KERAS_SCE_DATA") or str(ROOT.parent / "shared" / "data")
    return pathlib.Path(base) / "seqrec" / "Beauty.txt"


def minutes_until(stop_at: str, now=None) -> float:
    """Minutes from ``now`` (UTC) to the next ``stop_at`` ("HH:MM", UTC).

    A time up to 12 hours past counts as passed (negative minutes); an earlier one
    is read as the next day's, so "01:20" seen at 23:30 is 110 minutes away.
    """
    import datetime

    now = now or datetime.datetime.now(datetime.timezone.utc)
    try:
        hour, minute = (int(v) for v in stop_at.split(":"))
        stop = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    except ValueError:
        raise ValueError(f"--stop-at must be a UTC time HH:MM, got {stop_at!r}.") from None
    minutes = (stop - now).total_seconds() / 60.0
    if minutes < -12 * 60:
        minutes += 24 * 60
    return minutes


def parse_calibration(text: str) -> dict:
    """``--calibration`` JSON -> the options of calibrated SCE (validated).

    Keys: those of `keras_sce.ops.calibration.Calibration` except ``item_counts``
    (a ``"unigram"`` proposal counts the items of the training histories).
    """
    try:
        options = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"--calibration is not valid JSON ({error}).") from None
    if not isinstance(options, dict):
        raise argparse.ArgumentTypeError(
            f"--calibration must be a JSON object such as '{{\"num_samples\": 1024}}', got "
            f"{text!r}.")
    unknown = sorted(set(options) - set(CALIBRATION_KEYS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"--calibration: unknown option(s) {unknown}; allowed: {list(CALIBRATION_KEYS)} "
            "(a 'unigram' proposal counts the training items itself).")
    from keras_sce.ops.calibration import Calibration

    counts = [1.0, 1.0] if options.get("proposal") == "unigram" else None
    try:
        resolved = Calibration(**options, item_counts=counts).get_config()
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--calibration: {error}") from None
    return {k: resolved[k] for k in CALIBRATION_KEYS}


def training_counts(split) -> list[float]:
    """Occurrences of each item id in the training histories (the padding id: 0)."""
    import numpy as np

    items = np.concatenate([np.asarray(s, np.int64) for s in split.train])
    counts = np.bincount(items, minlength=split.num_items).astype(np.float64)
    counts[0] = 0.0
    return counts.tolist()


def test_log_likelihood(model, split, max_length) -> float:
    """Mean full-catalogue log-likelihood of the test targets (history excluded)."""
    import keras

    from keras_sce.datasets import evaluation_arrays
    from keras_sce.evaluation import catalogue_log_likelihood

    inputs, targets, history = evaluation_arrays(split, "test", max_length)
    table = keras.ops.convert_to_numpy(model.item_embedding_layer.embeddings)
    values = catalogue_log_likelihood(model.last_hidden(inputs), table, targets,
                                      exclude=history)
    return float(values.mean())


def run(args):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from keras_sce.datasets import leave_one_out, load_sequences_txt
    from keras_sce.training import TrainConfig, train_and_evaluate

    data = load_sequences_txt(args.data)
    print(data.summary(), flush=True)
    split = leave_one_out(data)
    calibration = None
    if args.method == "sce_calibrated":
        calibration = dict(args.calibration or {}) or parse_calibration("{}")
        if calibration["proposal"] == "unigram":
            calibration["item_counts"] = training_counts(split)
    config = TrainConfig(
        max_epochs=args.epochs,
        patience=args.patience,
        max_minutes=args.max_minutes,
        seed=args.seed,
        dropout=args.dropout,
        valid_users=args.valid_users,
        bucket_size_y=args.bucket_size_y,
        num_buckets=args.num_buckets,
        mix_x=args.mix_x,
        num_negatives=args.num_negatives,
        logit_offset=args.logit_offset,
        optimizer=args.optimizer,
        calibration=calibration,
        verbose=2,
    )
    if args.stop_at:
        # A wall-clock deadline (UTC "HH:MM") for the training loop, so that a run
        # that waits for the CPU still ends on time.
        left = max(minutes_until(args.stop_at), 1.0)
        config.max_minutes = left if config.max_minutes is None else min(config.max_minutes, left)
    method = "sce" if args.method == "sce_calibrated" else args.method
    result = train_and_evaluate(split, method, config)
    result["test_log_likelihood"] = test_log_likelihood(result.pop("model"), split,
                                                        config.max_length)
    records = result.pop("records")
    recorded = {k: v for k, v in vars(config).items() if v is not None}
    if calibration and "item_counts" in calibration:
        recorded["calibration"] = {**calibration, "item_counts": "training histories"}
    row = {
        "dataset": pathlib.Path(args.data).stem,
        **{k: result[k] for k in report.COLUMNS if k in result},
        "config": json.dumps(recorded, sort_keys=True),
    }
    if args.method == "sce_calibrated" and not args.label:
        args.label = "sce_calibrated"
    if args.optimizer != "adam" and not args.label:
        args.label = f"{args.method}_lazyadam"
    if args.label:  # a variant of a method gets its own row group, e.g. sce_by512
        row["method"] = args.label
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report.append_row(out, report.csv_row(row))
    curve = out.parent / f"beauty_{args.label or args.method}_seed{args.seed}.json"
    curve.write_text(json.dumps({"result": result, "records": records}, indent=1))
    print(json.dumps({k: row[k] for k in report.COLUMNS if k != "config"}, indent=1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--method", choices=["sce", "sce_calibrated", "ce", "gbce", "bce", "sampled_softmax"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=str(default_data()))
    parser.add_argument("--epochs", type=int, default=300, help="maximum epochs")
    parser.add_argument("--patience", type=int, default=10, help="evaluations")
    parser.add_argument("--max-minutes", type=float, default=None, help="training time budget")
    parser.add_argument("--stop-at", default=None, help="UTC HH:MM end of training")
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument(
        "--valid-users",
        type=int,
        default=None,
        help="fixed random subset of validation users (default: all)",
    )
    parser.add_argument("--bucket-size-y", type=int, default=256)
    parser.add_argument(
        "--num-buckets", type=int, default=None, help="SCE n_b (default: int(2 sqrt(T)))"
    )
    parser.add_argument("--mix-x", action="store_true", help="SCE centres from the batch")
    parser.add_argument(
        "--calibration",
        type=parse_calibration,
        default=None,
        help="sce_calibrated: JSON options, e.g. '{\"num_samples\": 1024}' (keys: "
        + ", ".join(CALIBRATION_KEYS) + "; default: the library's defaults)",
    )
    parser.add_argument("--num-negatives", type=int, default=256)
    parser.add_argument(
        "--logit-offset",
        type=parse_logit_offset,
        default="balanced",
        help="gBCE/BCE: 'balanced' (default) or a float; 0 is the published loss",
    )
    parser.add_argument(
        "--optimizer",
        choices=["adam", "lazy_adam"],
        default="adam",
        help="Keras Adam (dense moments) or keras_sce LazyAdam (row-sparse moments)",
    )
    parser.add_argument(
        "--label", default=None, help="method name in the CSV (default: --method)"
    )
    parser.add_argument("--out", default=str(RESULTS / "beauty.csv"))
    parser.add_argument("--table", action="store_true", help="print the Markdown table")
    parser.add_argument(
        "--curves",
        type=int,
        default=None,
        metavar="EPOCHS",
        help="print validation NDCG@10 per epoch (first EPOCHS) of --curve-methods",
    )
    parser.add_argument("--curve-methods", default="ce,sce,sce_calibrated",
                        help="comma-separated CSV methods for --curves")
    args = parser.parse_args(argv)
    if args.table:
        print(report.table(args.out))
        return
    if args.curves:
        print(report.curves(args.out, args.curve_methods.split(","), args.curves))
        return
    if not args.method:
        parser.error("--method is required (or --table)")
    if args.calibration is not None and args.method != "sce_calibrated":
        parser.error(f"--calibration applies to --method sce_calibrated, not {args.method}")
    run(args)


if __name__ == "__main__":
    main()
