"""The loss-scaling benchmark's CSV schema, Markdown table (with its ratios) and plot."""

from __future__ import annotations

import math
from pathlib import Path

from keras_sce.app import harness

METHODS = ("full_ce", "chunked_ce", "sampled_softmax", "sce", "sce_unchunked")
FIELDS = (
    "method",
    "n_rows",
    "catalog_size",
    "dim",
    "status",
    "peak_mem_mb",
    "step_ms",
    "transient_mem_mb",
    "baseline_mb",
    "predicted_mem_mb",
    "predicted_step_s",
    "warmup_s",
    "loss",
    "device",
    "threads",
    "note",
)
SCHEMA = harness.CsvSchema("loss_scaling", FIELDS)
FLOAT = 4  # float32 bytes


def grid_order(rows):
    """Grid order: catalogue size, rows, method."""
    return sorted(rows, key=lambda r: (int(r["catalog_size"]), int(r["n_rows"]),
                                       METHODS.index(r["method"])))


def write_csv(rows, path: Path):
    SCHEMA.write(path, rows)


def read_csv(path: Path):
    return SCHEMA.read(path)


def _cell(row) -> str:
    if row["status"] == "ok":
        return f"{float(row['peak_mem_mb']):,.0f} MB / {float(row['step_ms']):,.0f} ms"
    if row["status"] == "does-not-fit":
        return f"does not fit (~{float(row['predicted_mem_mb']) / 1024:,.1f} GB)"
    if row["status"] == "too-slow":
        return f"too slow (~{float(row['predicted_step_s']):,.0f} s/step)"
    return row["status"]


def _find(rows, method, n, c):
    for r in rows:
        if r["method"] == method and int(r["n_rows"]) == n and int(r["catalog_size"]) == c:
            return r
    return None


def target_lines(rows) -> list[str]:
    """The target ratios, computed from the rows of this run."""
    ok = [r for r in rows if r["status"] == "ok"]
    lines = []

    def ratio(a, b, key):
        return float(a[key]) / max(float(b[key]), 1e-9)

    def frac(value):
        return f"{value:.4g} (= 1/{1 / value:.3g})" if 0 < value < 1 else f"{value:.4g}"

    full_ok = [r for r in ok if r["method"] == "full_ce"]
    if full_ok:
        big = max(full_ok, key=lambda r: (int(r["n_rows"]) * int(r["catalog_size"])))
        n, c = int(big["n_rows"]), int(big["catalog_size"])
        sce = _find(ok, "sce", n, c)
        if sce:
            lines.append(
                f"- Largest full-CE configuration that ran (N={n:,}, C={c:,}): SCE / full CE "
                f"memory = {frac(ratio(sce, big, 'peak_mem_mb'))} (target <= 1/50), "
                f"time = {frac(ratio(sce, big, 'step_ms'))} (target <= 1/5)."
            )
    for r in [r for r in rows if r["method"] == "full_ce" and int(r["catalog_size"]) == 10**6]:
        n = int(r["n_rows"])
        sce = _find(ok, "sce", n, 10**6)
        if not sce:
            continue
        if r["status"] == "ok":
            lines.append(
                f"- C=1,000,000, N={n:,}: SCE / full CE memory = "
                f"{frac(ratio(sce, r, 'peak_mem_mb'))}, time = {frac(ratio(sce, r, 'step_ms'))}."
            )
        else:
            lines.append(
                f"- C=1,000,000, N={n:,}: full CE {r['status']} ({_cell(r)}); SCE used "
                f"{float(sce['peak_mem_mb']):,.0f} MB, i.e. 1/"
                f"{float(r['predicted_mem_mb']) / max(float(sce['peak_mem_mb']), 1e-9):,.0f} "
                "of full CE's predicted size."
            )
        chunked = _find(ok, "chunked_ce", n, 10**6)
        if chunked:
            lines.append(
                f"  Against the exact chunked CE at the same point: memory "
                f"{frac(ratio(sce, chunked, 'peak_mem_mb'))}, "
                f"time {frac(ratio(sce, chunked, 'step_ms'))}."
            )
    for r in [r for r in rows if r["method"] == "sce" and int(r["catalog_size"]) == 10**7]:
        n = int(r["n_rows"])
        un = _find(rows, "sce_unchunked", n, 10**7)
        n_b = max(1, int(2 * math.sqrt(n)))
        proj = n_b * 10**7 * FLOAT / 2**30
        text = f"- C=10,000,000, N={n:,}: SCE (chunked) {_cell(r)}"
        text += " (target <= 4 GB)" if r["status"] == "ok" else ""
        text += f"; unchunked {_cell(un) if un else 'not run'}"
        text += f" (its n_b x C = {n_b} x 10^7 projection alone is {proj:.1f} GiB)."
        lines.append(text)
    for r in [r for r in ok if r["method"] == "full_ce"]:
        n, c = int(r["n_rows"]), int(r["catalog_size"])
        ch = _find(ok, "chunked_ce", n, c)
        if ch:
            lines.append(
                f"- N={n:,}, C={c:,}: chunked / full CE time = {ratio(ch, r, 'step_ms'):.2f} "
                f"(target <= 3), memory = {ratio(ch, r, 'peak_mem_mb'):.3f}."
            )
    return lines


def write_markdown(rows, path: Path, header: str):
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    keys = sorted({(int(r["n_rows"]), int(r["catalog_size"])) for r in rows})
    cells = [{"N": f"{n:,}", "C": f"{c:,}",
              **{m: _cell(r) if (r := _find(rows, m, n, c)) else "" for m in methods}}
             for n, c in keys]
    table = harness.markdown_table(cells, [("N", "N", ".0f"), ("C", "C", ".0f")]
                                   + [(m, m, "s") for m in methods])
    out = [header, "", "Attributable peak memory / median step time (one output-layer step).", "",
           table]
    tl = target_lines(rows)
    if tl:
        out += ["", "Ratios (same run, same machine):", ""] + tl
    path.write_text("\n".join(out) + "\n")


def write_plot(rows, path: Path, title: str):
    ns = sorted({int(r["n_rows"]) for r in rows})
    colors = dict(zip(METHODS, ["C3", "C1", "C2", "C0", "C4"], strict=True))
    memory, time = [], []
    for n in ns:
        mem_series, time_series = {}, {}
        for m in METHODS:
            sel = sorted((r for r in rows if r["method"] == m and int(r["n_rows"]) == n),
                         key=lambda r: int(r["catalog_size"]))
            okr = [r for r in sel if r["status"] == "ok"]
            nf = [r for r in sel if r["status"] == "does-not-fit"]
            if okr:
                cs = [int(r["catalog_size"]) for r in okr]
                mem_series[m] = (cs, [max(float(r["peak_mem_mb"]), 1.0) for r in okr],
                                 colors[m] + "o-")
                time_series[m] = (cs, [float(r["step_ms"]) for r in okr], colors[m] + "o-")
            if nf:
                mem_series[f"{m} (predicted, does not fit)"] = (
                    [int(r["catalog_size"]) for r in nf],
                    [float(r["predicted_mem_mb"]) for r in nf], colors[m] + "x:")
        axes = dict(xlabel="catalogue size C", xlog=True, ylog=True)
        memory.append(dict(axes, series=mem_series, ylabel="attributable peak memory (MB)",
                           title=f"N = {n:,} rows, d = {rows[0]['dim']}"))
        time.append(dict(axes, series=time_series, ylabel="median step time (ms)"))
    harness.plot_panels(memory + time, path, title=title, ncols=len(ns))
