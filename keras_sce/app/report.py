"""Result rows of the main job: the printed table, `results.csv`, strict JSON, the plot.

A row is a dict. Every row has `method`, `status` (`ok`, `failed` or
`skipped`) and `cause` (empty when ok); metric cells of a row that did not train
are empty in the CSV, `-` in the table and `null` in the JSON.
"""

from __future__ import annotations

import json
import math

import numpy as np

from keras_sce.app.records import CsvSchema, markdown_table, plot_panels

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
SCHEMA = CsvSchema("results", CSV_COLUMNS)
_FORMATS = {"ndcg@10": ".4f", "hr@10": ".4f", "cov@10": ".3f", "sec_per_epoch": ".2f"}


def to_json_value(value):
    """`value` with NumPy scalars made Python and NaN / infinity made None (JSON null)."""
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
    """Writes strict JSON (`allow_nan=False`: no bare NaN / Infinity)."""
    with open(path, "w") as handle:
        json.dump(to_json_value(rows), handle, indent=1, allow_nan=False)
        handle.write("\n")


def write_csv(rows, path) -> None:
    """Writes `results.csv` (`CSV_COLUMNS`; empty cells for what a row lacks)."""
    SCHEMA.write(path, [{k: _csv_cell(row.get(k)) for k in CSV_COLUMNS} for row in rows])


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
    cells = [{k: _cell(row, k) for k in TABLE_COLUMNS} for row in rows]
    return markdown_table(cells, [(k, k, "s") for k in TABLE_COLUMNS])


def plot(rows, path) -> None:
    """Test NDCG@10 against training memory and against seconds per epoch (trained rows).

    Raises:
        ImportError: without matplotlib.
    """
    axes = (("train_mem_mb", "training memory (MiB, peak RSS above the process baseline)"),
            ("sec_per_epoch", "seconds per training epoch"))
    panels = []
    for key, label in axes:
        series = {}
        for row in rows:
            x, y = row.get(key), row.get("ndcg@10")
            if row["status"] == "ok" and x is not None and y is not None and math.isfinite(y):
                series[row["method"]] = ([x], [y], "o")
        panels.append(dict(series=series, xlabel=label, ylabel="test NDCG@10 (full ranking)"))
    if not plot_panels(panels, path, title="SASRec: quality vs cost per loss"):
        raise ImportError("matplotlib is not installed")
