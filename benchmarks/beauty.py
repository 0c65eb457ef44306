"""Reproduce the SCE paper's Beauty result: SASRec + {SCE, CE, gBCE, sampled softmax}.

Leave-one-out on ``../shared/data/seqrec/Beauty.txt`` (or ``--data``), full-catalogue
ranking, early stopping on validation NDCG@10. Each call trains one method with one
seed in this process (so ``peak_mem_mb`` is this configuration's own peak RSS) and
appends a row to ``benchmarks/results/beauty.csv``; the per-epoch validation curve
goes to ``benchmarks/results/beauty_<method>_seed<seed>.json``.

Usage (what produced the committed CSV; one thread per run)::

    TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 \
        python benchmarks/beauty.py --method sce --seed 0 --max-minutes 75

    python benchmarks/beauty.py --table   # Markdown table of the CSV (for the README)

``--optimizer lazy_adam`` trains with `keras_sce.optimizers.LazyAdam` (same learning
rate, betas and epsilon as the default Keras Adam; CSV method label ``<method>_lazyadam``).

Paper reference (Mezentsev et al., RecSys 2024, arXiv 2409.18721): SASRec-SCE on
Beauty HR@10 = 0.0935, NDCG@10 = 0.0544.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import statistics
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from keras_sce.cli import CSV_COLUMNS, parse_logit_offset  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# The CLI's results columns, plus the validation score and the full configuration.
COLUMNS = [*CSV_COLUMNS, "best_val_ndcg@10", "config"]
PAPER = {"ndcg@10": 0.0544, "hr@10": 0.0935}


def default_data() -> pathlib.Path:
    base = os.environ.get("KERAS_SCE_DATA") or str(ROOT.parent / "shared" / "data")
    return pathlib.Path(base) / "seqrec" / "Beauty.txt"


def run(args):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    from keras_sce.datasets import leave_one_out, load_sequences_txt
    from keras_sce.training import TrainConfig, train_and_evaluate

    data = load_sequences_txt(args.data)
    print(data.summary(), flush=True)
    split = leave_one_out(data)
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
        verbose=2,
    )
    if args.stop_at:
        # A wall-clock deadline (UTC "HH:MM") for the training loop, so that a run
        # that waits for the CPU still ends on time.
        import datetime

        now = datetime.datetime.now(datetime.timezone.utc)
        hour, minute = (int(v) for v in args.stop_at.split(":"))
        stop = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        left = max((stop - now).total_seconds() / 60.0, 1.0)
        config.max_minutes = left if config.max_minutes is None else min(config.max_minutes, left)
    result = train_and_evaluate(split, args.method, config)
    result.pop("model")
    records = result.pop("records")
    row = {
        "dataset": pathlib.Path(args.data).stem,
        **{k: result[k] for k in COLUMNS if k in result},
        "config": json.dumps(
            {k: v for k, v in vars(config).items() if v is not None},
            sort_keys=True,
        ),
    }
    if args.optimizer != "adam" and not args.label:
        args.label = f"{args.method}_lazyadam"
    if args.label:  # a variant of a method gets its own row group, e.g. sce_by512
        row["method"] = args.label
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = pathlib.Path(args.out)
    new = not out.exists()
    with open(out, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: _fmt(row.get(k)) for k in COLUMNS})
    curve = RESULTS / f"beauty_{args.label or args.method}_seed{args.seed}.json"
    curve.write_text(json.dumps({"result": result, "records": records}, indent=1))
    print(json.dumps({k: row[k] for k in COLUMNS if k != "config"}, indent=1))


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def table(path) -> str:
    """Markdown table of the CSV, with the paper's SCE row and relative gaps."""
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    ce = [float(r["ndcg@10"]) for r in rows if r["method"] == "ce"]
    ce_ndcg = sum(ce) / len(ce) if ce else None
    lines = [
        "| method | seed | epochs (best) | NDCG@10 | HR@10 | COV@10 | vs paper NDCG@10 | "
        "vs our CE | s/epoch | peak MB | stopped by |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ndcg = float(r["ndcg@10"])
        vs_paper = f"{100 * (ndcg / PAPER['ndcg@10'] - 1):+.1f}%"
        vs_ce = f"{100 * (ndcg / ce_ndcg - 1):+.1f}%" if ce_ndcg else "n/a"
        lines.append(
            f"| {r['method']} | {r['seed']} | {r['epochs']} ({r['best_epoch']}) | "
            f"{ndcg:.4f} | {float(r['hr@10']):.4f} | {float(r['cov@10']):.3f} | {vs_paper} | "
            f"{vs_ce} | {float(r['sec_per_epoch']):.1f} | {float(r['peak_mem_mb']):.0f} | "
            f"{r['stopped_by']} |"
        )
    lines.append(
        f"| paper SASRec-SCE | | | {PAPER['ndcg@10']:.4f} | {PAPER['hr@10']:.4f} | | | | | | |"
    )
    # Per-method mean and sample standard deviation over seeds.
    lines += [
        "",
        "| method | seeds | NDCG@10 mean ± sd | HR@10 mean | COV@10 mean | vs paper | vs our CE "
        "| Welch t vs CE | best val NDCG@10 mean (vs CE) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    val_ce = _mean([float(r["best_val_ndcg@10"]) for r in rows if r["method"] == "ce"])
    for method in dict.fromkeys(r["method"] for r in rows):
        group = [r for r in rows if r["method"] == method]
        ndcg = [float(r["ndcg@10"]) for r in group]
        mean, sd = _mean(ndcg), _sd(ndcg)
        hr = _mean([float(r["hr@10"]) for r in group])
        cov = _mean([float(r["cov@10"]) for r in group])
        vs_ce = f"{100 * (mean / ce_ndcg - 1):+.1f}%" if ce_ndcg else "n/a"
        val = _mean([float(r["best_val_ndcg@10"]) for r in group])
        vs_val = f" ({100 * (val / val_ce - 1):+.1f}%)" if val_ce else ""
        lines.append(
            f"| {method} | {len(group)} | {mean:.4f} ± {sd:.4f} | {hr:.4f} | {cov:.3f} | "
            f"{100 * (mean / PAPER['ndcg@10'] - 1):+.1f}% | {vs_ce} | "
            f"{_welch_t(ndcg, ce) if method != 'ce' else ''} | {val:.4f}{vs_val} |"
        )
    return "\n".join(lines)


def _mean(values):
    return statistics.fmean(values) if values else None


def _sd(values):
    """Sample standard deviation; 0 for a single seed."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def _welch_t(a, b) -> str:
    """Welch's t of mean(b) - mean(a); blank unless both groups have 2+ seeds."""
    if len(a) < 2 or len(b) < 2:
        return ""
    se = (_sd(a) ** 2 / len(a) + _sd(b) ** 2 / len(b)) ** 0.5
    return f"{(_mean(b) - _mean(a)) / se:.1f}" if se > 0 else ""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", choices=["sce", "ce", "gbce", "bce", "sampled_softmax"])
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
    args = parser.parse_args(argv)
    if args.table:
        print(table(args.out))
        return
    if not args.method:
        parser.error("--method is required (or --table)")
    run(args)


if __name__ == "__main__":
    main()
