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

Every configuration runs in a fresh Python process (``--child``). Attributable peak
memory is the peak resident set size of that process minus its resident size once
TensorFlow, the inputs and the table exist (the kernel's peak counter is reset at
that point through ``/proc/self/clear_refs``); on a GPU it is the allocator's peak
(``tf.config.experimental.get_memory_info``) minus the memory in use at that point.
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
import csv
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Import the keras_sce of this checkout (the script also runs itself as a child).
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

METHODS = ("full_ce", "chunked_ce", "sampled_softmax", "sce", "sce_unchunked")
FULL_GRID = {"n_rows": (1024, 8192, 51200), "catalog_sizes": (10**4, 10**5, 10**6, 10**7)}
QUICK_GRID = {"n_rows": (1024,), "catalog_sizes": (10**4, 10**5, 10**6)}
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
MB = 2**20
FLOAT = 4  # float32 bytes


# --------------------------------------------------------------------------------------
# Child: one configuration in a fresh process.
# --------------------------------------------------------------------------------------


def _proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _build_step(cfg, tf, ops, table, hidden, labels):
    method = cfg["method"]
    num_items = cfg["catalog_size"]
    lr = 0.1

    if method == "sampled_softmax":
        bias = tf.zeros([num_items])
        labels_2d = tf.cast(labels[:, tf.newaxis], tf.int64)

    def loss_fn(h):
        if method == "full_ce":
            return ops.full_cross_entropy(h, labels, table)
        if method == "chunked_ce":
            return ops.chunked_cross_entropy(
                h, labels, table, chunk_size=cfg["ce_chunk"] or None
            )
        if method == "sampled_softmax":
            per_row = tf.nn.sampled_softmax_loss(
                weights=table,
                biases=bias,
                labels=labels_2d,
                inputs=h,
                num_sampled=cfg["num_sampled"],
                num_classes=num_items,
            )
            return tf.reduce_mean(per_row)
        chunk = cfg["sce_chunk"] if method == "sce" else None
        return ops.scalable_cross_entropy(
            h,
            labels,
            table,
            bucket_size_y=cfg["bucket_size_y"],
            chunk_size=chunk,
        )

    def step():
        with tf.GradientTape() as tape:
            tape.watch(hidden)
            loss = loss_fn(hidden)
        grad_h, grad_w = tape.gradient(loss, [hidden, table])
        if isinstance(grad_w, tf.IndexedSlices):
            table.scatter_sub(tf.IndexedSlices(lr * grad_w.values, grad_w.indices))
            sparse = tf.constant(True)
        else:
            table.assign_sub(lr * grad_w)
            sparse = tf.constant(False)
        # Returning something of grad_h keeps its computation in the graph.
        return loss, tf.reduce_sum(grad_h), sparse

    return tf.function(step, jit_compile=cfg["jit"], autograph=False)


def run_child(cfg: dict) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if cfg["device"] == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    import tensorflow as tf

    threads = cfg.get("threads") or 0
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    from keras_sce import ops

    gpu = cfg["device"] == "gpu"
    if gpu and not tf.config.list_physical_devices("GPU"):
        raise RuntimeError("--gpu was given but TensorFlow sees no GPU.")
    device = "/GPU:0" if gpu else "/CPU:0"
    n, c, d = cfg["n_rows"], cfg["catalog_size"], cfg["dim"]
    import gc

    import numpy as np

    # Inputs are made in NumPy and handed over: a table drawn with tf.random.normal
    # leaves two table-sized buffers cached in the process (measured: RSS 3x the
    # table), which later steps silently reuse, hiding up to 2 tables of their peak.
    rng = np.random.default_rng(0)
    init = rng.standard_normal((c, d), dtype=np.float32)
    init *= 0.1
    with tf.device(device):
        table = tf.Variable(init, name="item_table")
        del init
        hidden = tf.constant(rng.standard_normal((n, d), dtype=np.float32))
        labels = tf.constant(rng.integers(1, c, size=n, dtype=np.int32))
        step = _build_step(cfg, tf, ops, table, hidden, labels)
    gc.collect()
    baseline_kb = _proc_status_kb("VmRSS")
    rss_reset = _reset_peak_rss()
    if gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
        gpu_base = tf.config.experimental.get_memory_info("GPU:0")["current"]

    out = {}
    with tf.device(device):
        t0 = time.perf_counter()
        for _ in range(cfg["warmup"]):
            loss, gsum, sparse = step()
            loss = float(loss.numpy())
        out["warmup_s"] = time.perf_counter() - t0
        peak_warm_kb = _proc_status_kb("VmHWM")
        if gpu:
            peak_warm_gpu = tf.config.experimental.get_memory_info("GPU:0")["peak"]
            gpu_steps_base = tf.config.experimental.get_memory_info("GPU:0")["current"]
            tf.config.experimental.reset_memory_stats("GPU:0")
        before_steps_kb = _proc_status_kb("VmRSS")
        _reset_peak_rss()
        times = []
        for _ in range(cfg["steps"]):
            t = time.perf_counter()
            loss, gsum, sparse = step()
            loss = float(loss.numpy())
            float(gsum.numpy())
            times.append(time.perf_counter() - t)
    steady_kb = _proc_status_kb("VmHWM")
    if not math.isfinite(loss):
        raise RuntimeError(f"non-finite loss {loss}")
    out.update(
        step_ms=1000 * statistics.median(times),
        step_ms_all=[round(1000 * t, 2) for t in times],
        baseline_mb=baseline_kb / 1024,
        rss_peak_mem_mb=(max(peak_warm_kb, steady_kb) - baseline_kb) / 1024,
        rss_transient_mem_mb=(steady_kb - before_steps_kb) / 1024,
        loss=loss,
        sparse_table_grad=bool(sparse.numpy()),
        rss_reset=rss_reset,
    )
    if gpu:
        peak_gpu = tf.config.experimental.get_memory_info("GPU:0")["peak"]
        out["peak_mem_mb"] = (max(peak_warm_gpu, peak_gpu) - gpu_base) / MB
        out["transient_mem_mb"] = (peak_gpu - gpu_steps_base) / MB
        out["gpu_baseline_mb"] = gpu_base / MB
    else:
        out["peak_mem_mb"] = out["rss_peak_mem_mb"]
        out["transient_mem_mb"] = out["rss_transient_mem_mb"]
    return out


# --------------------------------------------------------------------------------------
# Parent: predictions, the grid, outputs.
# --------------------------------------------------------------------------------------


def sce_sizes(n_rows: int, bucket_size_y: int, num_items: int):
    n_b = max(1, int(2 * math.sqrt(n_rows)))
    return n_b, min(n_b, n_rows), min(bucket_size_y, num_items - 1)


def ce_chunk(cfg) -> int:
    """The chunk chunked_ce uses (mirrors ``ops.cross_entropy.auto_chunk_size``, so
    that the parent process need not import TensorFlow)."""
    if cfg["ce_chunk"]:
        return min(cfg["ce_chunk"], cfg["catalog_size"])
    return min(max((1 << 24) // cfg["n_rows"], 128), 65_536, cfg["catalog_size"])


def predict(cfg) -> tuple[float, float]:
    """(attributable bytes, seconds) predicted for one step; rough upper estimates.

    The memory factors count the live ``N x C`` (or ``n_b x C``...) float32 buffers
    of each method's step (logits, masked logits, softmax gradient, ...); they were
    checked against the measured rows of the quick grid.
    """
    m, n, c, d = cfg["method"], cfg["n_rows"], cfg["catalog_size"], cfg["dim"]
    gemm = cfg["gflops"] * 1e9
    elem = cfg["elem_ns"] * 1e-9
    table = c * d * FLOAT
    fixed = 200 * MB
    if m == "full_ce":
        mem = 1.5 * n * c * FLOAT + 2 * table
        sec = 3 * 2 * n * c * d / gemm + 8 * n * c * elem
    elif m == "chunked_ce":
        k = ce_chunk(cfg)
        mem = 6 * n * k * FLOAT + 3 * table
        sec = 4 * 2 * n * c * d / gemm + 12 * n * c * elem
    elif m == "sampled_softmax":
        s = cfg["num_sampled"]
        mem = 6 * n * s * FLOAT + 4 * n * d * FLOAT + c * FLOAT * 2
        sec = 3 * 2 * n * s * d / gemm + 8 * n * s * elem
    else:
        n_b, b_x, b_y = sce_sizes(n, cfg["bucket_size_y"], c)
        width = c if m == "sce_unchunked" else min(c, cfg["sce_chunk"] + b_y)
        mem = 2 * n_b * width * FLOAT + 6 * n_b * b_x * b_y * FLOAT
        mem += 2 * n_b * (b_x + b_y) * d * FLOAT + 8 * n * FLOAT
        sec = 2 * n_b * c * d / gemm + 4 * n_b * c * elem
        sec += 3 * 2 * n_b * b_x * b_y * d / gemm + 8 * n_b * b_x * b_y * elem
    return mem + fixed, sec


def calibrate(threads: int, device: str) -> tuple[float, float]:
    """GEMM GFLOP/s and ns per element-wise exp, measured in a fresh process."""
    code = (
        "import os,time,json\n"
        "os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL','2')\n"
        + ("os.environ['CUDA_VISIBLE_DEVICES']='-1'\n" if device == "cpu" else "")
        + "import tensorflow as tf\n"
        f"t={threads}\n"
        "if t:\n tf.config.threading.set_intra_op_parallelism_threads(t)\n"
        "a=tf.random.normal([2048,64]);b=tf.random.normal([16384,64])\n"
        "f=tf.function(lambda:tf.reduce_sum(tf.matmul(a,b,transpose_b=True)))\n"
        "g=tf.function(lambda:tf.reduce_sum(tf.exp(tf.matmul(a,b,transpose_b=True))))\n"
        "f();g()\n"
        "ts=[];us=[]\n"
        "for _ in range(3):\n"
        " s=time.perf_counter();f().numpy();ts.append(time.perf_counter()-s)\n"
        " s=time.perf_counter();g().numpy();us.append(time.perf_counter()-s)\n"
        "tm=min(ts);te=max(min(us)-tm,1e-9)\n"
        "print(json.dumps([2*2048*16384*64/tm/1e9, te/(2048*16384)*1e9]))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    gflops, elem_ns = json.loads(res.stdout.strip().splitlines()[-1])
    return gflops, elem_ns


def available_memory_bytes() -> int:
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return info.get("MemAvailable", info.get("MemFree", 0))


def gpu_info() -> tuple[str, int]:
    """(card name, total memory bytes) of GPU 0 via nvidia-smi."""
    res = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
    )
    name, total = res.stdout.strip().splitlines()[0].rsplit(",", 1)
    return name.strip(), int(float(total)) * MB


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if cfg["threads"]:
        env["TF_NUM_INTRAOP_THREADS"] = str(cfg["threads"])
        env["TF_NUM_INTEROP_THREADS"] = "1"
        env["OMP_NUM_THREADS"] = str(cfg["threads"])
    try:
        res = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(cfg)],
            capture_output=True,
            text=True,
            timeout=args.config_timeout_s,
            env=env,
        )
    except subprocess.TimeoutExpired:
        row.update(status="failed", note=f"timeout after {args.config_timeout_s} s")
        return row
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    if res.returncode != 0 or not lines:
        killed = res.returncode in (-9, 137)
        tail = " ".join(res.stderr.strip().splitlines()[-2:])[-300:]
        row.update(
            status="does-not-fit" if killed else "failed",
            note=("killed (out of memory)" if killed else f"rc={res.returncode}: {tail}"),
        )
        return row
    out = json.loads(lines[-1][len("RESULT ") :])
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


def _ordered(rows):
    """Grid order: catalogue size, rows, method."""
    return sorted(rows, key=lambda r: (int(r["catalog_size"]), int(r["n_rows"]),
                                       METHODS.index(r["method"])))


def write_csv(rows, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)


def read_csv(path: Path):
    with open(path) as f:
        return list(csv.DictReader(f))


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
    """The issue's target ratios, computed from the rows of this run."""
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
    out = [header, "", "Attributable peak memory / median step time (one output-layer step).", ""]
    out.append("| N | C | " + " | ".join(methods) + " |")
    out.append("|---:|---:|" + "---|" * len(methods))
    for n, c in keys:
        cells = []
        for m in methods:
            r = _find(rows, m, n, c)
            cells.append(_cell(r) if r else "")
        out.append(f"| {n:,} | {c:,} | " + " | ".join(cells) + " |")
    tl = target_lines(rows)
    if tl:
        out += ["", "Ratios (same run, same machine):", ""] + tl
    path.write_text("\n".join(out) + "\n")


def write_plot(rows, path: Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted({int(r["n_rows"]) for r in rows})
    fig, axes = plt.subplots(2, len(ns), figsize=(4.5 * len(ns), 7.5), squeeze=False)
    colors = dict(zip(METHODS, ["C3", "C1", "C2", "C0", "C4"], strict=True))
    for j, n in enumerate(ns):
        for m in METHODS:
            sel = sorted(
                (r for r in rows if r["method"] == m and int(r["n_rows"]) == n),
                key=lambda r: int(r["catalog_size"]),
            )
            okr = [r for r in sel if r["status"] == "ok"]
            nf = [r for r in sel if r["status"] == "does-not-fit"]
            if okr:
                cs = [int(r["catalog_size"]) for r in okr]
                axes[0, j].plot(cs, [max(float(r["peak_mem_mb"]), 1.0) for r in okr], "o-",
                                color=colors[m], label=m)
                axes[1, j].plot(cs, [float(r["step_ms"]) for r in okr], "o-", color=colors[m],
                                label=m)
            if nf:
                axes[0, j].plot([int(r["catalog_size"]) for r in nf],
                                [float(r["predicted_mem_mb"]) for r in nf], "x:",
                                color=colors[m], label=f"{m} (predicted, does not fit)")
        axes[0, j].set_title(f"N = {n:,} rows, d = {rows[0]['dim']}")
        for i, lab in enumerate(("attributable peak memory (MB)", "median step time (ms)")):
            ax = axes[i, j]
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("catalogue size C")
            ax.set_ylabel(lab)
            ax.grid(True, which="both", alpha=0.3)
        axes[0, j].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
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
    if args.child:
        result = run_child(json.loads(args.child))
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    device = "gpu" if args.gpu else "cpu"
    if args.gpu:
        card, gpu_total = gpu_info()
        device_name = f"GPU {card}"
        default_out = f"benchmarks/results/loss_scaling_gpu_{card_slug(card)}.csv"
    else:
        device_name = f"CPU {cpu_name()} (nproc={os.cpu_count()})"
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
        budget = int(0.85 * available_memory_bytes())
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
                write_csv(_ordered(kept + rows), out)  # a crash keeps what ran
    rows = _ordered(kept + rows)
    write_markdown(rows, out.with_suffix(".md"), header)
    write_plot(rows, out.with_suffix(".png"), title)
    print(f"wrote {out}, {out.with_suffix('.md')}, {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
