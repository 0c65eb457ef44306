"""The fine-tuning benchmark's CSV schema, summary table, targets and plot."""

from __future__ import annotations

import math
import pathlib

from examples.finetune_sparsegrad import METHODS
from keras_sce.app import harness

CSV_FIELDS = (
    "method",
    "seed",
    "test_accuracy",
    "val_accuracy",
    "trainable_params",
    "mlp_trainable_params",
    "optimizer_state_bytes",
    "mlp_optimizer_state_bytes",
    "peak_mem_mb",
    "process_peak_mem_mb",
    "step_ms",
    "step_wall_ms",
    "train_seconds",
    "prep_seconds",
    "folded_test_accuracy",
    "num_train",
    "sequence_length",
    "epochs",
    "batch_size",
    "num_selected",
    "lora_rank",
)
SCHEMA = harness.CsvSchema("finetune_sparsegrad", CSV_FIELDS)


def read_rows(csv_path) -> list[dict]:
    return SCHEMA.read(csv_path) if pathlib.Path(csv_path).exists() else []


def append_row(csv_path, row: dict) -> None:
    """Appends one run (the schema's columns of ``row``; those it lacks are empty)."""
    SCHEMA.append(csv_path, {key: row.get(key, "") for key in CSV_FIELDS})


def summarize(rows: list[dict]) -> list[dict]:
    """Mean ± std (over seeds) per method, in METHODS order."""
    import numpy as np

    summary = []
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue

        def values(key, rows=mine):
            return np.asarray([float(r[key]) for r in rows if r.get(key) not in ("", None)])

        acc = 100.0 * values("test_accuracy")
        folded = 100.0 * values("folded_test_accuracy")
        summary.append(
            {
                "method": method,
                "seeds": len(mine),
                "acc_mean": float(acc.mean()),
                "acc_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
                "folded_mean": float(folded.mean()) if len(folded) else None,
                "trainable_params": int(np.median(values("trainable_params"))),
                "mlp_trainable_params": int(np.median(values("mlp_trainable_params"))),
                "mlp_state_mb": float(np.median(values("mlp_optimizer_state_bytes"))) / 2**20,
                "state_mb": float(np.median(values("optimizer_state_bytes"))) / 2**20,
                "peak_mem_mb": float(np.median(values("peak_mem_mb"))),
                "step_ms": float(np.median(values("step_ms"))),
            }
        )
    return summary


def markdown_table(summary: list[dict]) -> str:
    full_state = next((s["mlp_state_mb"] for s in summary if s["method"] == "full"), None)
    lines = [
        "| method | seeds | test accuracy (%) | folded (%) | trainable params (MLP) "
        "| MLP optimizer state (MiB) | all optimizer state (MiB) | peak RSS in training (MiB) "
        "| CPU ms / step |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary:
        folded = f"{s['folded_mean']:.2f}" if s["folded_mean"] is not None else "—"
        state = f"{s['mlp_state_mb']:.2f}"
        if full_state:
            state += f" ({100 * s['mlp_state_mb'] / full_state:.1f}%)"
        lines.append(
            f"| {s['method']} | {s['seeds']} | {s['acc_mean']:.2f} ± {s['acc_std']:.2f} "
            f"| {folded} | {s['trainable_params']:,} ({s['mlp_trainable_params']:,}) "
            f"| {state} | {s['state_mb']:.2f} | {s['peak_mem_mb']:.0f} | {s['step_ms']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(summary: list[dict], png_path) -> None:
    names = [s["method"] for s in summary]
    harness.plot_panels([
        dict(bars=(names, [s["acc_mean"] for s in summary], [s["acc_std"] for s in summary]),
             xlabel="test accuracy (%, mean ± std over seeds)"),
        dict(bars=(names, [s["mlp_state_mb"] for s in summary]),
             xlabel="MLP optimizer state (MiB)"),
        dict(bars=(names, [s["step_ms"] for s in summary]),
             xlabel="CPU time per step (ms, median)"),
    ], png_path, title="Rotten Tomatoes, all-MiniLM-L6-v2 MLP fine-tuning (CPU, 1 thread)")


def target_checks(summary: list[dict], rows: list[dict]) -> str:
    """The targets, checked on the measured figures (Markdown bullet list)."""
    by = {s["method"]: s for s in summary}

    def gap(a, b):
        se = math.sqrt(
            by[a]["acc_std"] ** 2 / by[a]["seeds"] + by[b]["acc_std"] ** 2 / by[b]["seeds"]
        )
        return by[a]["acc_mean"] - by[b]["acc_mean"], se

    lines = []
    for sparse in ("sparsegrad", "sparsegrad_ok", "sparsegrad_pool"):
        if sparse in by and "lora" in by:
            d, se = gap(sparse, "lora")
            verdict = "met" if d >= 0 else "missed"
            lines.append(
                f"- `{sparse}` − `lora` = {d:+.2f} points (± {se:.2f} s.e.); target >= 0: {verdict}"
            )
        if sparse in by and "full" in by:
            d, se = gap("full", sparse)
            verdict = "met" if d <= 1.0 else "missed"
            lines.append(
                f"- `full` − `{sparse}` = {d:+.2f} points (± {se:.2f} s.e.); "
                f"target <= 1.0: {verdict}"
            )
    for mode in ("sparsegrad_ok", "sparsegrad_pool"):
        if mode in by and "full" in by:
            ratio = 100 * by[mode]["mlp_state_mb"] / by["full"]["mlp_state_mb"]
            verdict = "met" if ratio <= 5.0 else "missed"
            lines.append(
                f"- MLP optimizer state of `{mode}` = {ratio:.1f}% of `full`'s "
                f"({by[mode]['mlp_state_mb']:.2f} MiB vs {by['full']['mlp_state_mb']:.2f} "
                f"MiB, support indices / pool slots included); target <= 5%: {verdict}"
            )
    folded = [r for r in rows if r.get("folded_test_accuracy") not in ("", None)]
    if folded:
        same = sum(float(r["folded_test_accuracy"]) == float(r["test_accuracy"]) for r in folded)
        worst = max(
            abs(float(r["folded_test_accuracy"]) - float(r["test_accuracy"])) for r in folded
        )
        verdict = "met" if same == len(folded) else "missed"
        lines.append(
            f"- folded model accuracy identical to the unfolded one in {same} of "
            f"{len(folded)} SparseGrad/MeProp runs (largest difference {100 * worst:.2f} "
            f"points); target identical: {verdict}"
        )
    return "\n".join(lines) + "\n"


def write_report(csv_path, prefix) -> str:
    rows = read_rows(csv_path)
    if not rows:
        raise ValueError(f"No results in {csv_path}.")
    summary = summarize(rows)
    table = markdown_table(summary) + "\n" + target_checks(summary, rows)
    pathlib.Path(f"{prefix}.md").write_text(table)
    plot(summary, f"{prefix}.png")
    return table
