"""The large-vocabulary benchmark's CSV schema, row writer, Markdown table and plot.

The columns of ``FIELDS`` never change (rows written by earlier versions stay
readable); later columns are in ``ADDED`` (`keras_sce.app.harness.CsvSchema` widens
an older file's header once, leaving those cells empty in its old rows).
"""

from __future__ import annotations

import json
import math
import shlex
import statistics
from collections import defaultdict
from pathlib import Path

from keras_sce.app import harness

FIELDS = (
    "corpus", "vocab", "method", "ce_kind", "budget", "seed", "steps", "tokens_seen",
    "train_seconds", "val_tokens", "val_ppl", "test_tokens", "test_ppl", "test_acc@1",
    "test_acc@10", "ndcg@10", "sec_per_step", "peak_mem_mb", "loss_mem_mb", "step_mem_mb",
    "gpu_loss_mem_mb",
    "oov_rate", "final_loss", "optimizer", "options", "machine", "command",
)
ADDED = ("loss_hlo_mb", "table_rows")
SCHEMA = harness.CsvSchema("large_vocab", FIELDS, ADDED)
# Full CE's compiled-only loss memory, where full CE cannot train (`--full-ce-memory`).
REFERENCE_SCHEMA = harness.CsvSchema("large_vocab_full_ce_memory",
                                     ("corpus", "vocab", "table_rows", "loss_hlo_mb", "command"))
METRICS = ("test_ppl", "test_acc@1", "test_acc@10", "ndcg@10", "loss_mem_mb", "loss_hlo_mb",
           "sec_per_step", "train_seconds")


def append_row(path, row: dict) -> None:
    """Appends one run to the CSV (`SCHEMA`: header written or widened as needed).

    Raises ``ValueError`` on a missing or unknown column, and when an existing
    file's header is not this schema (so rows never land under the wrong names).
    """
    SCHEMA.append(path, row)


def read_rows(path) -> list[dict]:
    return SCHEMA.read(path)


def reference_path(out) -> Path:
    """Where full CE's compiled-only memory references go, beside the results CSV."""
    out = Path(out)
    return out.with_name(out.stem + "_full_ce_memory.csv")


def read_references(out) -> dict:
    """`{(corpus, vocab): loss_hlo_mb}` from the reference CSV (the last row wins)."""
    path = reference_path(out)
    if not path.exists():
        return {}
    return {(r["corpus"], r["vocab"]): _num(r["loss_hlo_mb"])
            for r in REFERENCE_SCHEMA.read(path)}


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def calibration_label(options_json: str) -> str:
    """``calibration={...}``: calibrated SCE's options, compact and key-sorted."""
    return "calibration=" + json.dumps(json.loads(options_json), separators=(",", ":"),
                                       sort_keys=True)


def variant(row) -> str:
    """The row's loss options (``options``; for calibrated SCE also its ``--calibration``,
    read from the command line of rows written before the column held it)."""
    options = row.get("options") or ""
    if row["method"] == "sce_calibrated" and "calibration=" not in options:
        argv = shlex.split(row.get("command") or "")
        given = argv[argv.index("--calibration") + 1] if "--calibration" in argv else "{}"
        options += " " + calibration_label(given)
    return options.strip()


KEY = ("corpus", "vocab", "method", "ce_kind", "budget", "options")


def summarise(rows) -> list[dict]:
    """Mean (and spread) per (corpus, vocab, method, ce_kind, budget, options) over seeds."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["corpus"], r["vocab"], r["method"], r["ce_kind"], r["budget"],
                variant(r))].append(r)
    out = []
    for key, members in sorted(groups.items()):
        entry = dict(zip(KEY, key, strict=True))
        entry["seeds"] = len(members)
        for m in METRICS:
            # Cells left empty (e.g. a column added after the row was written) are skipped.
            values = [v for v in (_num(r[m]) for r in members) if math.isfinite(v)]
            entry[m] = statistics.fmean(values) if values else math.nan
            entry[m + "_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(entry)
    return out


def _mb(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:,.1f}"


def _targets(summary, references=None) -> list[str]:
    lines = []
    references = references or {}
    by = {(s["corpus"], s["vocab"], s["budget"], s["method"], s["ce_kind"]): s for s in summary
          if s["method"] != "sce"}
    for sce in summary:  # one paragraph per SCE configuration
        if sce["method"] != "sce":
            continue
        corpus, vocab, budget = sce["corpus"], sce["vocab"], sce["budget"]
        ce = by.get((corpus, vocab, budget, "ce", "full")) or by.get(
            (corpus, vocab, budget, "ce", "chunked"))
        full = by.get((corpus, vocab, budget, "ce", "full"))
        where = f"{corpus}, K={vocab}, {budget}, SCE {sce['options'] or 'defaults'}"
        if ce is not None:
            gap = [sce[m] / ce[m] - 1 for m in ("test_acc@10", "ndcg@10")]
            target = ("equal time: the -3% target is for equal steps" if
                      budget.startswith("time") else "target: within -3%")
            lines.append(f"- {where}: SCE vs exact CE ({ce['ce_kind']}): acc@10 {gap[0]:+.1%}, "
                         f"NDCG@10 {gap[1]:+.1%} ({target}).")
        if full is not None and full["loss_mem_mb"] > 0:
            ratio = sce["loss_mem_mb"] / full["loss_mem_mb"]
            lines.append(f"  Process memory above the baseline (tracing included) SCE / full "
                         f"CE = {ratio:.3f}.")
        if full is not None and full["loss_hlo_mb"] > 0 and math.isfinite(sce["loss_hlo_mb"]):
            ratio = sce["loss_hlo_mb"] / full["loss_hlo_mb"]
            lines.append(f"  Compiled loss memory SCE / full CE = {ratio:.4f} "
                         f"({sce['loss_hlo_mb']:.1f} vs {full['loss_hlo_mb']:.1f} MB; "
                         "target <= 0.1).")
        reference = references.get((corpus, str(vocab)), math.nan)
        if full is None and math.isfinite(reference) and math.isfinite(sce["loss_hlo_mb"]):
            lines.append(f"  Compiled loss memory SCE / full CE (compiled only, never run) = "
                         f"{sce['loss_hlo_mb'] / reference:.4f} ({sce['loss_hlo_mb']:.1f} vs "
                         f"{reference:,.1f} MB; target <= 0.1).")
        for rival in ("sampled_softmax", "ce"):
            other = next((by.get((corpus, vocab, budget, rival, kind)) for kind in
                          ("", "full", "chunked") if (corpus, vocab, budget, rival, kind) in by),
                         None)
            if other is not None and budget.startswith("time"):
                ahead = sce["test_acc@10"] > other["test_acc@10"]
                lines.append(f"  Equal time: SCE acc@10 {sce['test_acc@10']:.4f} vs {rival} "
                             f"{other['test_acc@10']:.4f} ({'ahead' if ahead else 'behind'}).")
    return lines + _calibrated_targets(summary, by)


def _raw_options(calibrated_options: str) -> str:
    """The raw-SCE options of a calibrated configuration (its calibration left out)."""
    return calibrated_options.partition("calibration=")[0].strip()


def _calibrated_targets(summary, by) -> list[str]:
    """Calibrated SCE: perplexity against exact CE, acc@10 and compiled memory against
    raw SCE with the same bucket options (the calibration's own targets)."""
    lines = []
    for cal in summary:
        if cal["method"] != "sce_calibrated":
            continue
        corpus, vocab, budget = cal["corpus"], cal["vocab"], cal["budget"]
        ce = by.get((corpus, vocab, budget, "ce", "full")) or by.get(
            (corpus, vocab, budget, "ce", "chunked"))
        raw = next((s for s in summary if s["method"] == "sce" and
                    (s["corpus"], s["vocab"], s["budget"]) == (corpus, vocab, budget) and
                    s["options"] == _raw_options(cal["options"])), None)
        lines.append(f"- {corpus}, K={vocab}, {budget}, calibrated SCE {cal['options']} "
                     f"({cal['seeds']} seed{'s' if cal['seeds'] > 1 else ''}):")
        if ce is not None:
            gap = cal["test_ppl"] / ce["test_ppl"] - 1
            lines.append(f"  test perplexity {cal['test_ppl']:.1f} vs exact CE ({ce['ce_kind']}) "
                         f"{ce['test_ppl']:.1f}: {gap:+.1%} (target: within +10%).")
        if raw is not None:
            lines.append(f"  acc@10 {cal['test_acc@10']:.4f} vs raw SCE {raw['test_acc@10']:.4f} "
                         "(target: no worse).")
            if math.isfinite(cal["loss_hlo_mb"]) and raw["loss_hlo_mb"] > 0:
                ratio = cal["loss_hlo_mb"] / raw["loss_hlo_mb"] - 1
                lines.append(f"  Compiled loss memory {cal['loss_hlo_mb']:.1f} vs raw SCE "
                             f"{raw['loss_hlo_mb']:.1f} MB: {ratio:+.1%} (target: within +10%).")
    return lines


def _spread(s, metric: str) -> str:
    """`mean ± sd` over two or more seeds, the value alone for one."""
    if s["seeds"] < 2:
        return f"{s[metric]:.4f}"
    return f"{s[metric]:.4f} ± {s[metric + '_sd']:.4f}"


def write_table(rows, md_path, png_path=None, references=None) -> str:
    """Writes the Markdown summary (and the PNG when matplotlib is present).

    `references`: `{(corpus, vocab): MB}` of full CE's compiled-only loss memory
    (`read_references`), the memory ratio's reference where no full-CE row exists.
    """
    summary = summarise(rows)
    lines = ["| corpus | K | method | options | CE kind | budget | seeds | test ppl | acc@1 | "
             "acc@10 | NDCG@10 | loss mem MB | compiled loss MB | s/step |",
             "|---|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        lines.append(
            f"| {s['corpus']} | {int(s['vocab']):,} | {s['method']} | {s['options'] or '-'} | "
            f"{s['ce_kind'] or '-'} | "
            f"{s['budget']} | {s['seeds']} | {s['test_ppl']:.1f} | {s['test_acc@1']:.4f} | "
            f"{_spread(s, 'test_acc@10')} | {s['ndcg@10']:.4f} | "
            f"{s['loss_mem_mb']:.0f} | {_mb(s['loss_hlo_mb'])} | {s['sec_per_step']:.3f} |")
    commands = sorted({r["command"] for r in rows})
    targets = _targets(summary, references) or ["- (no SCE run beside a baseline)"]
    text = "\n".join(lines + ["", "Targets:", *targets, "", "Commands:",
                              *(f"- `{c}`" for c in commands)]) + "\n"
    Path(md_path).parent.mkdir(parents=True, exist_ok=True)
    Path(md_path).write_text(text)
    if png_path is not None:
        _plot(summary, png_path)
    return text


def _plot(summary, path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG")
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for s in summary:
        label = (f"{s['method']}{'/' + s['ce_kind'] if s['ce_kind'] else ''} {s['options']} "
                 f"{s['budget']}")
        axes[0].scatter(s["loss_mem_mb"], s["test_acc@10"], label=label)
        axes[1].scatter(s["train_seconds"], s["test_acc@10"], label=label)
    axes[0].set(xlabel="attributable training memory (MB)", ylabel="test acc@10", xscale="log")
    axes[1].set(xlabel="training wall-clock (s)", ylabel="test acc@10")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
