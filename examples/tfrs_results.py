"""The results of the TFRS example (``tfrs_retrieval.py``): a CSV and a Markdown table.

Each run of the example adds one row per method: the recalls, the time per epoch and
the settings. ``write_results`` writes the CSV (keeping the rows of earlier runs with
``append``) and, next to it, a Markdown table with one line per row, the mean ± sd
of the settings run with several seeds, and the commands that produced them.
"""

from __future__ import annotations

import csv
import pathlib

import numpy as np

FIELDS = ["dataset", "method", "epochs", "recall@10", "recall@100", "sec_per_epoch"]
EXTRA_FIELDS = ["tower", "dim", "batch_size", "max_len", "learning_rate", "optimizer", "options",
                "sce_covered_fraction", "recall@100_by_epoch", "train_examples", "test_users",
                "num_items", "seed", "selection", "selected_epoch", "val_recall@100",
                "val_recall@100_by_epoch", "adam_epsilon", "epochs_run", "eval_every",
                "patience"]


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
