"""Memory and time of one output-layer training step as the catalogue grows.

One step = forward + backward of the loss w.r.t. the hidden states and the item
table, then a plain SGD update of the table (``table -= lr * grad``: dense
``assign_sub`` for a dense gradient, ``scatter_sub`` for ``tf.IndexedSlices``), so
that no optimizer state is added. Methods:

- ``full_ce``: :func:`keras_sce.ops.full_cross_entropy` (materialises ``N x C`` logits);
- ``chunked_ce``: :func:`keras_sce.ops.chunked_cross_entropy` (exact, streamed);
- ``sampled_softmax``: ``tf.nn.sampled_softmax_loss`` (log-uniform sampler);
- ``sce``: :func:`keras_sce.ops.scalable_cross_entropy` with catalogue chunking;
- ``sce_unchunked``: the same without chunking (the ``n_b x C`` item projection).

Every configuration runs in a fresh Python process (`keras_sce.app.harness`).
Attributable peak memory is the peak resident set size of that process minus its
resident size once TensorFlow, the inputs and the table exist; on a GPU it is the
allocator's peak minus the memory in use at that point (``loss_scaling_child.py``).
``peak_mem_mb`` covers the whole run including the warm-up step (tracing, XLA
compilation, and everything kept afterwards); ``transient_mem_mb`` is the peak of the
timed steps above the resident size just before them (the step's own working memory,
without the retained compiled programs and caches). ``step_ms`` is the median
over the timed steps after ``--warmup`` warm-up steps.

Configurations whose predicted process size exceeds the memory budget are recorded
as ``does-not-fit`` with the predicted size; configurations whose predicted step time
exceeds ``--max-step-s`` are recorded as ``too-slow`` with the predicted time (a
limit of this 2-core machine, not of the method). Outputs: CSV, a Markdown table
with the target ratios, and a log-log PNG.

Usage::

    PYTHONPATH=. python benchmarks/loss_scaling.py --quick
    PYTHONPATH=. python benchmarks/loss_scaling.py --out benchmarks/results/loss_scaling_cpu.csv
    PYTHONPATH=. python benchmarks/loss_scaling.py --gpu --quick   # names the card
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Import the keras_sce of this checkout.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import loss_scaling_child as child  # noqa: E402
from benchmarks.loss_scaling_model import predict  # noqa: E402
from benchmarks.loss_scaling_report import (  # noqa: E402
    FIELDS,
    METHODS,
    grid_order,
    read_csv,
    write_csv,
    write_markdown,
    write_plot,
)
from keras_sce.app import harness, memory  # noqa: E402

FULL_GRID = {"n_rows": (1024, 8192, 51200), "catalog_sizes": (10**4, 10**5, 10**6, 10**7)}
QUICK_GRID = {"n_rows": (1024,), "catalog_sizes": (10**4, 10**5, 10**6)}
MB = 2**20
FLOAT = 4  # float32 bytes


# --------------------------------------------------------------------------------------
# Running the grid.
# --------------------------------------------------------------------------------------


def _child_env(device: str, threads: int) -> dict:
    env = {"CUDA_VISIBLE_DEVICES": "-1"} if device == "cpu" else {}
    if threads:
        env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS="1",
                   OMP_NUM_THREADS=str(threads))
    return env


def calibrate(threads: int, device: str) -> tuple[float, float]:
    """GEMM GFLOP/s and ns per element-wise exp, measured in a fresh process."""
    out = harness.require_ok(harness.run_config(
        child.calibrate, {"threads": threads}, name="calibration",
        env=_child_env(device, threads)), "calibration")
    return out["gflops"], out["elem_ns"]


def _one_line(cause: str) -> str:
    """A child's cause on one line: its first line and, for a long message, its last."""
    lines = [line.strip() for line in cause.splitlines() if line.strip()]
    text = lines[0] if len(lines) < 2 else f"{lines[0]} ... {lines[-1]}"
    return text[:300]


def card_slug(name: str) -> str:
    keep = "".join(ch.lower() if ch.isalnum() else "_" for ch in name)
    return "_".join(p for p in keep.split("_") if p and p != "nvidia")


def run_config(cfg, args, budget_bytes) -> dict:
    pred_mem, pred_sec = predict(cfg)
    row = {k: "" for k in FIELDS}
    row.update(
        method=cfg["method"],
        n_rows=cfg["n_rows"],
        catalog_size=cfg["catalog_size"],
        dim=cfg["dim"],
        predicted_mem_mb=round(pred_mem / MB, 1),
        predicted_step_s=round(pred_sec, 3),
        device=cfg["device_name"],
        threads=cfg["threads"] or "all",
    )
    # The process also holds TensorFlow, the inputs and the table.
    base = 600 * MB + cfg["catalog_size"] * cfg["dim"] * FLOAT * 2
    if pred_mem + base > budget_bytes:
        row.update(
            status="does-not-fit",
            note=f"predicted {pred_mem / 2**30:.1f} GiB + {base / 2**30:.1f} GiB base "
            f"> budget {budget_bytes / 2**30:.1f} GiB",
        )
        return row
    if pred_sec > args.max_step_s:
        row.update(
            status="too-slow",
            note=f"predicted {pred_sec:.0f} s/step > --max-step-s {args.max_step_s:g}",
        )
        return row
    out = harness.run_config(child.run_child, cfg, name=cfg["method"],
                             timeout=args.config_timeout_s,
                             env=_child_env(cfg["device"], cfg["threads"]))
    if out["status"] != "ok":
        killed = out["cause"].startswith("killed by SIGKILL")
        row.update(status="does-not-fit" if killed else "failed",
                   note="killed (out of memory)" if killed else _one_line(out["cause"]))
        return row
    row.update(
        status="ok",
        peak_mem_mb=round(out["peak_mem_mb"], 1),
        transient_mem_mb=round(out["transient_mem_mb"], 1),
        step_ms=round(out["step_ms"], 2),
        baseline_mb=round(out["baseline_mb"], 1),
        warmup_s=round(out["warmup_s"], 2),
        loss=round(out["loss"], 4),
        note=f"table grad {'sparse' if out['sparse_table_grad'] else 'dense'}; "
        f"steps ms {out['step_ms_all']}",
    )
    return row


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small grid: N=1024, C<=1e6")
    p.add_argument("--gpu", action="store_true", help="run on GPU:0; allocator peak memory")
    p.add_argument("--n-rows", type=str, help="comma list overriding the grid's N")
    p.add_argument("--catalog-sizes", type=str, help="comma list overriding the grid's C")
    p.add_argument("--methods", type=str, default=",".join(METHODS))
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (0: TF default)")
    p.add_argument("--jit", action="store_true", help="compile the whole step with XLA")
    p.add_argument("--bucket-size-y", type=int, default=256)
    p.add_argument("--sce-chunk", type=int, default=65_536, help="SCE chunk_size")
    p.add_argument("--ce-chunk", type=int, default=0, help="chunked CE chunk (0: auto)")
    p.add_argument("--num-sampled", type=int, default=1024)
    p.add_argument("--mem-budget-gb", type=float, default=0.0,
                   help="process memory budget (0: 85%% of MemAvailable / GPU memory)")
    p.add_argument("--max-step-s", type=float, default=None,
                   help="skip (too-slow) configurations predicted slower than this "
                   "(default 60 s, 8 s with --quick)")
    p.add_argument("--gflops", type=float, default=0.0,
                   help="GEMM rate for the time predictions (0: measure at start)")
    p.add_argument("--config-timeout-s", type=int, default=1200)
    p.add_argument("--out", type=str, default="")
    p.add_argument("--out-dir", type=str, default="",
                   help="directory for the default file name (e.g. $OUT on a device)")
    p.add_argument("--update", action="store_true",
                   help="keep the rows of an existing --out CSV that this run does not redo")
    p.add_argument("--report-only", action="store_true",
                   help="only rewrite the .md and .png from an existing --out CSV")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    device = "gpu" if args.gpu else "cpu"
    if args.gpu:
        card, gpu_total = harness.gpu_card()
        device_name = f"GPU {card}"
        default_out = f"benchmarks/results/loss_scaling_gpu_{card_slug(card)}.csv"
    else:
        device_name = f"CPU {harness.cpu_name()} (nproc={os.cpu_count()})"
        default_out = "benchmarks/results/loss_scaling_cpu.csv"
    out = Path(args.out or default_out)
    if args.out_dir:
        out = Path(args.out_dir) / out.name
    title = (
        f"keras_sce loss scaling on {device_name}, d={args.dim}, "
        f"threads={args.threads or 'all'}"
    )
    header = f"### {title}"
    if args.report_only:
        rows = read_csv(out)
        write_markdown(rows, out.with_suffix(".md"), header)
        write_plot(rows, out.with_suffix(".png"), title)
        return 0

    grid = QUICK_GRID if args.quick else FULL_GRID
    if args.max_step_s is None:
        args.max_step_s = 8.0 if args.quick else 60.0
    n_rows = [int(v) for v in args.n_rows.split(",")] if args.n_rows else grid["n_rows"]
    sizes = (
        [int(float(v)) for v in args.catalog_sizes.split(",")]
        if args.catalog_sizes
        else grid["catalog_sizes"]
    )
    methods = [m.strip() for m in args.methods.split(",")]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"unknown methods {bad}; choose from {METHODS}")
    if args.mem_budget_gb:
        budget = int(args.mem_budget_gb * 2**30)
    elif args.gpu:
        budget = int(0.85 * gpu_total)
    else:
        budget = int(0.85 * (memory.available_bytes() or 0))
    gflops, elem_ns = calibrate(args.threads, device)
    if args.gflops:
        gflops = args.gflops
    print(f"# {device_name}; budget {budget / 2**30:.1f} GiB; GEMM {gflops:.1f} GFLOP/s; "
          f"exp {elem_ns:.2f} ns/elem; threads={args.threads or 'all'}", flush=True)
    kept = []
    if args.update and out.exists():
        redo = {(m, n, c) for m in methods for n in n_rows for c in sizes}
        kept = [r for r in read_csv(out)
                if (r["method"], int(r["n_rows"]), int(r["catalog_size"])) not in redo]
    rows = []
    for c in sizes:
        for n in n_rows:
            for m in methods:
                cfg = dict(
                    method=m, n_rows=n, catalog_size=c, dim=args.dim, steps=args.steps,
                    warmup=args.warmup, threads=args.threads, jit=args.jit,
                    bucket_size_y=args.bucket_size_y, sce_chunk=args.sce_chunk,
                    ce_chunk=args.ce_chunk, num_sampled=args.num_sampled, device=device,
                    device_name=device_name, gflops=gflops, elem_ns=elem_ns,
                )
                t0 = time.perf_counter()
                row = run_config(cfg, args, budget)
                rows.append(row)
                print(f"{m:16s} N={n:>6} C={c:>9}  {row['status']:12s} "
                      f"mem={row['peak_mem_mb']!s:>9} MB step={row['step_ms']!s:>9} ms  "
                      f"pred={row['predicted_mem_mb']} MB/{row['predicted_step_s']} s  "
                      f"[{time.perf_counter() - t0:.0f} s] {row['note'][:90]}", flush=True)
                write_csv(grid_order(kept + rows), out)  # a crash keeps what ran
    rows = grid_order(kept + rows)
    write_markdown(rows, out.with_suffix(".md"), header)
    write_plot(rows, out.with_suffix(".png"), title)
    print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
