"""The fine-tuning benchmark's CSV schema, learning-rate choice, summary, targets and plot.

Protocol (`benchmarks/finetune_sparsegrad.py`): for each task and method, seed 0 is
trained at every learning rate of the method's grid; the learning rate with the best
seed-0 validation accuracy is the method's, and the other seeds run at it only. The
summary of a (task, method) is over the rows at its chosen learning rate.
"""

from __future__ import annotations

import math
import pathlib

from examples.finetune_sparsegrad import METHODS
from keras_sce.app import harness

#: The issue's columns first; then the run's other figures.
CSV_FIELDS = (
    "task", "method", "seed", "learning_rate", "steps", "val_accuracy", "test_accuracy",
    "step_ms", "peak_mem_mb", "optimizer_state_bytes", "floor_step_ms", "command",
    "steps_trained", "step_wall_ms", "floor_ratio", "folded_test_accuracy",
    "trainable_params", "mlp_trainable_params", "mlp_optimizer_state_bytes",
    "prep_peak_mem_mb", "process_peak_mem_mb", "train_seconds", "prep_seconds", "num_train",
    "num_val", "num_test", "sequence_length", "batch_size", "num_selected", "lora_rank",
)  # fmt: skip
ADDED_FIELDS = ("fit_attributable_mb", "loaded_rss_mb", "fit_rss_start_mb")
SCHEMA = harness.CsvSchema("finetune", CSV_FIELDS, ADDED_FIELDS)
SPARSE_METHODS = ("sparsegrad", "sparsegrad_ok", "sparsegrad_pool")
GRID_SEED = 0
MIN_SEEDS = 3  #: seeds a (task, method) needs before its accuracy targets are decided
TASK_TITLES = {"rotten_tomatoes": "Rotten Tomatoes", "gcide_pos": "GCIDE part of speech"}


def read_rows(csv_path) -> list[dict]:
    return SCHEMA.read(csv_path) if pathlib.Path(csv_path).exists() else []


def append_row(csv_path, row: dict) -> None:
    """Appends one run (the schema's columns of ``row``; those it lacks are empty)."""
    SCHEMA.append(csv_path, {key: row.get(key, "") for key in SCHEMA.columns})


def chosen_learning_rate(rows: list[dict], task: str, method: str) -> float | None:
    """The learning rate of the best seed-0 validation accuracy (None: no seed-0 row).

    Ties go to the smaller learning rate.
    """
    grid = [r for r in rows if r["task"] == task and r["method"] == method
            and int(r["seed"]) == GRID_SEED]
    if not grid:
        return None
    best = max(grid, key=lambda r: (float(r["val_accuracy"]), -float(r["learning_rate"])))
    return float(best["learning_rate"])


def _at(rows, task, method, lr):
    return [r for r in rows if r["task"] == task and r["method"] == method
            and math.isclose(float(r["learning_rate"]), lr, rel_tol=1e-9)]


def _values(rows, key):
    import numpy as np

    return np.asarray([float(r[key]) for r in rows if r.get(key) not in ("", None)])


def _median_or_none(rows, key):
    import numpy as np

    values = _values(rows, key)
    return float(np.median(values)) if len(values) else None


def _prep_peak(rows):
    """The preparation's median peak above the loaded model; one that allocates nothing
    reads as a few hundred KiB either side of 0 (RSS noise), shown as 0."""
    peak = _median_or_none(rows, "prep_peak_mem_mb")
    return None if peak is None else max(0.0, peak)


def summarize(rows: list[dict]) -> list[dict]:
    """Per (task, method), at the chosen learning rate: mean ± std over seeds."""
    import numpy as np

    summary = []
    for task in dict.fromkeys(r["task"] for r in rows):
        for method in METHODS:
            lr = chosen_learning_rate(rows, task, method)
            if lr is None:
                continue
            mine = _at(rows, task, method, lr)
            test = 100.0 * _values(mine, "test_accuracy")
            val = 100.0 * _values(mine, "val_accuracy")
            ratio = _values(mine, "floor_ratio")
            summary.append({
                "task": task, "method": method, "learning_rate": lr, "seeds": len(mine),
                "grid": len({r["learning_rate"] for r in rows if r["task"] == task
                             and r["method"] == method and int(r["seed"]) == GRID_SEED}),
                "test_by_seed": {int(r["seed"]): 100.0 * float(r["test_accuracy"])
                                 for r in mine},
                "test_mean": float(test.mean()),
                "test_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0,
                "val_mean": float(val.mean()),
                "steps": float(np.median(_values(mine, "steps"))),
                "trainable_params": int(np.median(_values(mine, "trainable_params"))),
                "state_mb": float(np.median(_values(mine, "optimizer_state_bytes"))) / 2**20,
                "peak_mem_mb": float(np.median(_values(mine, "peak_mem_mb"))),
                "fit_attributable_mb": _median_or_none(mine, "fit_attributable_mb"),
                "prep_peak_mem_mb": _prep_peak(mine),
                "step_ms": float(np.median(_values(mine, "step_ms"))),
                "floor_ratio": float(np.median(ratio)) if len(ratio) else None,
            })
    # The floor: `full`'s step at its chosen rate x the matmul ratio at these shapes.
    full = {s["task"]: s["step_ms"] for s in summary if s["method"] == "full"}
    for s in summary:
        s["floor_step_ms"] = (s["floor_ratio"] * full[s["task"]]
                              if s["floor_ratio"] and s["task"] in full else None)
    return summary


SUMMARY_COLUMNS = [
    ("method", "method", "s"), ("learning_rate", "lr", "g"), ("grid", "rates tried", "d"),
    ("seeds", "seeds", "d"),
    ("test", "test accuracy (%)", ">s"), ("val_mean", "val accuracy (%)", ".2f"),
    ("steps", "steps to best val", ".0f"), ("trainable_params", "trainable params", ",d"),
    ("state_mb", "optimizer state (MiB)", ".2f"), ("peak_mem_mb", "peak RSS in fit (MiB)", ".0f"),
    ("fit_attributable_mb", "fit peak above its start (MiB)", ".0f"),
    ("prep_peak_mem_mb", "peak RSS in preparation (MiB)", ".0f"),
    ("step_ms", "CPU ms / step", ".0f"), ("floor_step_ms", "floor ms / step", ".0f"),
]


def grid_table(rows: list[dict], task: str) -> str:
    """Seed-0 validation accuracy (%) of every learning rate of every method's grid."""
    lines = ["| method | learning rate: validation accuracy (%), seed 0 |", "|---|---|"]
    for method in METHODS:
        grid = sorted((float(r["learning_rate"]), 100 * float(r["val_accuracy"]))
                      for r in rows if r["task"] == task and r["method"] == method
                      and int(r["seed"]) == GRID_SEED)
        if grid:
            chosen = chosen_learning_rate(rows, task, method)
            cells = [f"**{lr:g}: {acc:.2f}**" if lr == chosen else f"{lr:g}: {acc:.2f}"
                     for lr, acc in grid]
            lines.append(f"| {method} | {', '.join(cells)} |")
    return "\n".join(lines)


def target_checks(summary: list[dict], task: str) -> str:
    """The issue's targets, checked on the measured figures (Markdown bullet list)."""
    by = {s["method"]: s for s in summary if s["task"] == task}

    def gap(a, b):
        se = math.sqrt(by[a]["test_std"] ** 2 / by[a]["seeds"]
                       + by[b]["test_std"] ** 2 / by[b]["seeds"])
        spread = max(by[a]["test_std"], by[b]["test_std"])
        return by[a]["test_mean"] - by[b]["test_mean"], se, spread

    def paired(a, b):
        """The per-seed differences a − b over the seeds both have (the seed fixes the
        head's initialisation and the order of the training examples)."""
        import numpy as np

        common = sorted(set(by[a]["test_by_seed"]) & set(by[b]["test_by_seed"]))
        if len(common) < 2:
            return ""
        d = np.asarray([by[a]["test_by_seed"][s] - by[b]["test_by_seed"][s] for s in common])
        return (f"; paired by seed: {d.mean():+.2f} ± {d.std(ddof=1):.2f} std "
                f"over {len(common)} seeds")

    def note(d, spread, seeds):
        # the rule: more than MIN_SEEDS seeds where the spread exceeds the gap
        return (f"; spread {spread:.2f} > |gap| with {seeds} seeds: more seeds needed"
                if spread > abs(d) and seeds <= MIN_SEEDS else "")

    def verdict(ok, a, b):
        seeds = min(by[a]["seeds"], by[b]["seeds"])
        if seeds < MIN_SEEDS:  # one seed has no spread: nothing is decided yet
            return f"open ({seeds} of {MIN_SEEDS} seeds)"
        return "met" if ok else "missed"

    lines = []
    for sparse in SPARSE_METHODS:
        if sparse not in by:
            continue
        if "lora" in by:
            d, se, spread = gap(sparse, "lora")
            lines.append(f"- `{sparse}` − `lora` = {d:+.2f} points (± {se:.2f} s.e.); "
                         f"target >= 0: {verdict(d >= 0, sparse, 'lora')}"
                         + paired(sparse, "lora")
                         + note(d, spread, min(by[sparse]["seeds"], by["lora"]["seeds"])))
        for full in ("full", "full_mlp"):
            if full in by:
                d, se, spread = gap(full, sparse)
                lines.append(f"- `{full}` − `{sparse}` = {d:+.2f} points (± {se:.2f} s.e.); "
                             f"target <= 0.5: {verdict(d <= 0.5, full, sparse)}"
                             + paired(full, sparse)
                             + note(d, spread, min(by[sparse]["seeds"], by[full]["seeds"])))
        if "full" in by:
            ratio = by[sparse]["step_ms"] / by["full"]["step_ms"]
            line = f"- `{sparse}` step / `full` step = {ratio:.2f}x (target <= 1.1x"
            floor = by[sparse]["floor_step_ms"]
            if floor:
                line += (f", or <= 1.2x the matmul floor {floor:.0f} ms: "
                         f"{by[sparse]['step_ms'] / floor:.2f}x the floor")
            lines.append(line + ")")
            mine, theirs = by[sparse]["fit_attributable_mb"], by["full"]["fit_attributable_mb"]
            if mine and theirs:
                lines.append(f"- `{sparse}` fit peak above its start / `full`'s = "
                             f"{mine / theirs:.2f} ({mine:.0f} vs {theirs:.0f} MiB; the "
                             f"preparation apart: {by[sparse]['prep_peak_mem_mb']:.0f} MiB); "
                             f"target <= 1: {'met' if mine <= theirs else 'missed'}")
    return "\n".join(lines)


def folded_check(rows: list[dict]) -> str:
    folded = [r for r in rows if r["method"] in ("meprop", *SPARSE_METHODS)
              and r.get("folded_test_accuracy") not in ("", None)]
    if not folded:
        return ""
    same = sum(float(r["folded_test_accuracy"]) == float(r["test_accuracy"]) for r in folded)
    worst = max(abs(float(r["folded_test_accuracy"]) - float(r["test_accuracy"]))
                for r in folded)
    return (f"- folded model accuracy identical to the unfolded one in {same} of {len(folded)} "
            f"SparseGrad/MeProp runs (largest difference {100 * worst:.2f} points)")


def markdown(rows: list[dict]) -> str:
    summary = summarize(rows)
    parts = []
    for task in dict.fromkeys(s["task"] for s in summary):
        mine = [dict(s, test=f"{s['test_mean']:.2f} ± {s['test_std']:.2f}" if s["seeds"] > 1
                     else f"{s['test_mean']:.2f} (1 seed)")
                for s in summary if s["task"] == task]
        parts += [f"## {TASK_TITLES.get(task, task)}", "",
                  harness.markdown_table(mine, SUMMARY_COLUMNS), "",
                  grid_table(rows, task), "", target_checks(summary, task), ""]
    check = folded_check(rows)
    return "\n".join(parts + ([check, ""] if check else []))


def plot(summary: list[dict], png_path) -> bool:
    panels = []
    for task in dict.fromkeys(s["task"] for s in summary):
        mine = [s for s in summary if s["task"] == task]
        names = [s["method"] for s in mine]
        title = TASK_TITLES.get(task, task)
        panels += [
            dict(bars=(names, [s["test_mean"] for s in mine], [s["test_std"] for s in mine]),
                 xlabel="test accuracy (%, mean ± std over seeds)", title=title),
            dict(bars=(names, [s["step_ms"] for s in mine]), xlabel="CPU ms per step (median)",
                 title=title),
            dict(bars=(names, [s["peak_mem_mb"] for s in mine]),
                 xlabel="peak RSS in fit (MiB, median)", title=title),
        ]
    return harness.plot_panels(panels, png_path, ncols=3,
                               title="all-MiniLM-L6-v2 fine-tuning (CPU, 1 thread per run)")


def write_report(csv_path, prefix) -> str:
    rows = read_rows(csv_path)
    if not rows:
        raise ValueError(f"No results in {csv_path}.")
    text = markdown(rows)
    pathlib.Path(f"{prefix}.md").write_text(text)
    plot(summarize(rows), f"{prefix}.png")
    return text
