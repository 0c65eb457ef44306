"""Result rows of the main job: the printed table, ``results.csv``, strict JSON, the plot.

A row is a dict. Every row has ``method``, ``status`` (``ok``, ``failed`` or
``skipped``) and ``cause`` (empty when ok); metric cells of a row that did not train
are empty in the CSV, ``-`` in the table and ``null`` in the JSON.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np

TABLE_COLUMNS = (
    "method",
    "ndcg@10",
    "hr@10",
    "cov@10",
    "epochs",
    "sec_per_epoch",
    "train_mem_mb",
    "peak_mem_mb",
    "predicted_mem_mb",
    "status",
)
CSV_COLUMNS = (
    "dataset",
    "catalogue",
    "method",
    "status",
    "cause",
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
    "train_mem_mb",
    "peak_mem_mb",
    "baseline_mem_mb",
    "predicted_mem_mb",
    "stopped_by",
)
_FORMATS = {"ndcg@10": ".4f", "hr@10": ".4f", "cov@10": ".3f", "sec_per_epoch": ".2f"}


def to_json_value(value):
    """``value`` with NumPy scalars made Python and NaN / infinity made None (JSON null)."""
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json_value(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(rows, path) -> None:
    """Writes strict JSON (``allow_nan=False``: no bare NaN / Infinity)."""
    with open(path, "w") as handle:
        json.dump(to_json_value(rows), handle, indent=1, allow_nan=False)
        handle.write("\n")


def write_csv(rows, path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_cell(row.get(k)) for k in CSV_COLUMNS})


def _csv_cell(value):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _cell(row, key) -> str:
    value = row.get(key)
    if key == "status":
        return row["status"] if row["status"] == "ok" else row.get("cause") or row["status"]
    if key == "epochs" and value is not None:
        return f"{value} (best {row.get('best_epoch')})"
    if value is None:
        return "-"
    if key.endswith("_mem_mb"):
        return f"{value:,.0f}"
    if isinstance(value, float):
        return format(value, _FORMATS.get(key, ".4g"))
    return str(value)


def format_table(rows) -> str:
    """A Markdown table of the rows (one line per loss)."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row, k) for k in TABLE_COLUMNS) + " |")
    return "\n".join(lines)


def plot(rows, path) -> None:
    """Test NDCG@10 against training memory and against seconds per epoch (trained rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for row in rows:
        if row["status"] != "ok":
            continue
        for ax, key in zip(axes, ("train_mem_mb", "sec_per_epoch"), strict=True):
            x, y = row.get(key), row.get("ndcg@10")
            if x is None or y is None or not math.isfinite(y):
                continue
            ax.scatter(x, y, s=40)
            ax.annotate(row["method"], (x, y), textcoords="offset points", xytext=(4, 4))
    axes[0].set_xlabel("training memory (MiB, peak RSS above the process baseline)")
    axes[1].set_xlabel("seconds per training epoch")
    for ax in axes:
        ax.set_ylabel("test NDCG@10 (full ranking)")
        ax.grid(alpha=0.3)
    fig.suptitle("SASRec: quality vs cost per loss")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
