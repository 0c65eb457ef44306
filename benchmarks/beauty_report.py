"""The Beauty benchmark's CSV (columns, row writer) and its Markdown reports.

`benchmarks/beauty.py` trains and appends the rows; ``--table`` and ``--curves``
print these reports of them: the table of test metrics against the paper and our
full CE, per run and per method over the seeds, and the per-epoch validation
curves read from the ``beauty_<method>_seed<seed>.json`` files next to the CSV.
"""

from __future__ import annotations

import csv
import json
import pathlib
import statistics

# The test metrics, the validation score, the log-likelihood and the configuration.
COLUMNS = [
    "dataset", "method", "seed", "epochs", "best_epoch", "ndcg@10", "hr@10", "cov@10",
    "mrr@10", "ndcg@20", "hr@20", "sec_per_epoch", "peak_mem_mb", "stopped_by",
    "best_val_ndcg@10", "test_log_likelihood", "config",
]
PAPER = {"ndcg@10": 0.0544, "hr@10": 0.0935}


def csv_row(row: dict) -> dict:
    """The CSV cells of ``row``: every column (empty when missing), floats to 6 digits."""
    return {k: _fmt(row.get(k)) for k in COLUMNS}


def append_row(out: pathlib.Path, row: dict) -> None:
    """Appends ``row`` to the CSV; a file with older columns is rewritten first,
    its rows keeping their values and leaving the new columns empty."""
    if out.exists():
        with open(out, newline="") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames != COLUMNS:
                old = list(reader)
                missing = set(reader.fieldnames or []) - set(COLUMNS)
                if missing:
                    raise ValueError(f"{out} has columns {sorted(missing)} that this script "
                                     "does not write; use another --out.")
                with open(out, "w", newline="") as rewrite:
                    writer = csv.DictWriter(rewrite, fieldnames=COLUMNS)
                    writer.writeheader()
                    writer.writerows(old)
    new = not out.exists()
    with open(out, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def table(path) -> str:
    """Markdown table of the CSV, with the paper's SCE row and relative gaps."""
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    ce = [float(r["ndcg@10"]) for r in rows if _group(r) == "ce"]
    ce_ndcg = sum(ce) / len(ce) if ce else None
    lines = [
        "| method | seed | epochs (best) | NDCG@10 | HR@10 | COV@10 | vs paper NDCG@10 | "
        "vs our CE | test log-lik. | s/epoch | peak MB | stopped by |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ndcg = float(r["ndcg@10"])
        vs_paper = f"{100 * (ndcg / PAPER['ndcg@10'] - 1):+.1f}%"
        vs_ce = f"{100 * (ndcg / ce_ndcg - 1):+.1f}%" if ce_ndcg else "n/a"
        lines.append(
            f"| {r['method']} | {r['seed']} | {r['epochs']} ({r['best_epoch']}) | "
            f"{ndcg:.4f} | {float(r['hr@10']):.4f} | {float(r['cov@10']):.3f} | {vs_paper} | "
            f"{vs_ce} | {_loglik(r)} | {float(r['sec_per_epoch']):.1f} | "
            f"{float(r['peak_mem_mb']):.0f} | "
            f"{r['stopped_by']} |"
        )
    lines.append(
        f"| paper SASRec-SCE | | | {PAPER['ndcg@10']:.4f} | {PAPER['hr@10']:.4f} | | | | | | | |"
    )
    # Per-method mean and sample standard deviation over seeds.
    lines += [
        "",
        "| method | seeds | NDCG@10 mean ± sd | HR@10 mean | COV@10 mean | vs paper | vs our CE "
        "| Welch t vs CE | best val NDCG@10 mean (vs CE) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    val_ce = _mean([float(r["best_val_ndcg@10"]) for r in rows if _group(r) == "ce"])
    for method in dict.fromkeys(_group(r) for r in rows):
        group = [r for r in rows if _group(r) == method]
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


def curves(path, methods, epochs: int) -> str:
    """Markdown: validation NDCG@10 after each of the first ``epochs`` epochs, per
    method (mean over the seeds whose curve reaches that epoch; their count in
    brackets), from the ``beauty_<method>_seed<seed>.json`` files next to the CSV."""
    folder = pathlib.Path(path).parent
    head = " | ".join(str(e) for e in range(1, epochs + 1))
    lines = [f"| method (seeds) | {head} |", "|---|" + "---:|" * epochs]
    for method in methods:
        files = sorted(folder.glob(f"beauty_{method}_seed*.json"))
        files = [f for f in files if f.stem[len(f"beauty_{method}_seed"):].isdigit()]
        per_epoch = [[] for _ in range(epochs)]
        for file in files:
            for record in json.loads(file.read_text())["records"]:
                if 1 <= record["epoch"] <= epochs:
                    per_epoch[record["epoch"] - 1].append(record["ndcg@10"])
        cells = [f"{_mean(v):.4f}" + ("" if len(v) == len(files) else f" ({len(v)})")
                 if v else "" for v in per_epoch]
        lines.append(f"| {method} ({len(files)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _group(row) -> str:
    """The summary group of a row: its method, apart for runs capped below the
    default 300 epochs (a shorter training is another configuration)."""
    epochs = json.loads(row.get("config") or "{}").get("max_epochs", 300)
    return row["method"] if epochs >= 300 else f"{row['method']} (max {epochs} epochs)"


def _loglik(row) -> str:
    value = row.get("test_log_likelihood")
    return f"{float(value):.3f}" if value else ""


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
