"""One training step (forward, backward, optimizer update) per loss and optimizer.

SCE, full CE, exact chunked CE and sampled softmax at C = 10^5, 10^6, 10^7 items
(d = 64, N = 1,024 and 8,192 rows), with SGD, Keras Adam and `LazyAdam` for SCE
and sampled softmax (exact CE's table gradient is dense: Adam only). Each
configuration runs in a fresh child process: ``attrib_mb`` is its peak RSS minus
the RSS after the table and the optimizer slots exist, ``process_peak_mb`` the
whole process. SCE rows also time the step's own item search alone (same centres
count, chunking and table; no gradient, no update). Configurations predicted too
slow or too big are skipped with the reason.

Usage (what produced benchmarks/results/train_step_cpu.*)::

    python benchmarks/train_step.py            # the grid, then CSV/Markdown/PNG
    python benchmarks/train_step.py --table    # Markdown (and the PNG) from the CSV
    python benchmarks/train_step.py --resume   # run only what the CSV lacks
"""

from __future__ import annotations

import argparse
import math
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks import loss_scaling_model as ls  # noqa: E402  (the CE chunk rule)
from keras_sce.app import harness  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
FIELDS = ("method", "optimizer", "n_rows", "catalog_size", "status", "step_ms", "search_ms",
          "step_over_search", "attrib_mb", "process_peak_mb", "baseline_mb", "note")
SCHEMA = harness.CsvSchema("train_step", FIELDS)
CSV = RESULTS / "train_step_cpu.csv"
D, B_Y, SCE_CHUNK, NUM_SAMPLED = 64, 256, 65_536, 256
GFLOPS = 10.0  # effective throughput assumed by the skip rule (a busy 2-core CPU)
MAX_STEP_S, MAX_MB = 60.0, 9_000


def _child(cfg):
    """One configuration, in a fresh CPU-only process (`run_config`)."""
    import gc

    import keras
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.eager.record import stop_recording

    from keras_sce import ops
    from keras_sce.ops.top_k import top_k_xla as _bucket_top_k_xla
    from keras_sce.optimizers import LazyAdam

    n, c, method = cfg["n_rows"], cfg["catalog_size"], cfg["method"]
    rng = np.random.default_rng(0)
    init = rng.standard_normal((c, D), dtype=np.float32)
    init *= 0.1
    table = keras.Variable(init, name="items")
    del init
    hidden = keras.Variable(rng.standard_normal((n, D), dtype=np.float32), name="hidden")
    labels = tf.constant(rng.integers(1, c, size=n, dtype=np.int32))
    opt = {"sgd": lambda: keras.optimizers.SGD(0.1), "adam": keras.optimizers.Adam,
           "lazy_adam": LazyAdam}[cfg["optimizer"]]()
    opt.build([hidden, table])
    w = table.value  # the tf.Variable: gathers from it are sparse reads

    def loss_fn(h):
        if method == "full_ce":
            return ops.full_cross_entropy(h, labels, w)
        if method == "chunked_ce":
            return ops.chunked_cross_entropy(h, labels, w, chunk_size=ls.ce_chunk(
                {"ce_chunk": 0, "catalog_size": c, "n_rows": n}))
        if method == "sampled_softmax":
            return tf.reduce_mean(tf.nn.sampled_softmax_loss(
                weights=w, biases=tf.zeros([c]), labels=tf.cast(labels[:, None], tf.int64),
                inputs=h, num_sampled=NUM_SAMPLED, num_classes=c))
        return ops.scalable_cross_entropy(h, labels, w, bucket_size_y=B_Y,
                                          chunk_size=SCE_CHUNK, seed=0)

    @tf.function(autograph=False)
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(hidden.value)
        grads = tape.gradient(loss, [hidden.value, w])
        opt.apply(grads, [hidden, table])
        return loss

    n_b = max(1, int(2 * math.sqrt(n)))
    centers = tf.constant(rng.standard_normal((n_b, D), dtype=np.float32))

    @tf.function(autograph=False)
    def search():  # the call scalable_cross_entropy makes, alone
        with stop_recording():
            scores, _ = _bucket_top_k_xla(centers, w.handle, min(B_Y, c - 1), SCE_CHUNK,
                                          None, 0, (c, D, tf.float32))
        return scores[0, 0]

    gc.collect()
    window = harness.MemoryWindow.open(gpu=False)  # the table and the optimizer slots exist
    times = []
    for _ in range(1 + cfg["steps"]):  # the first call traces and compiles
        t = time.perf_counter()
        loss = float(step().numpy())
        times.append(time.perf_counter() - t)
    window.close()
    if not math.isfinite(loss):
        raise RuntimeError(f"non-finite loss {loss}")
    out = {"step_ms": 1000 * statistics.median(times[1:]), "attrib_mb": window.attributable_mb,
           "process_peak_mb": window.peak_bytes / 2**20,
           "baseline_mb": window.baseline_bytes / 2**20}
    if method == "sce":
        search()
        s_times = []
        for _ in range(cfg["steps"]):
            t = time.perf_counter()
            float(search().numpy())
            s_times.append(time.perf_counter() - t)
        out["search_ms"] = 1000 * statistics.median(s_times)
        out["step_over_search"] = out["step_ms"] / out["search_ms"]
    return out


def predict(cfg):
    """(seconds, MB) of one step: rough upper estimates for the skip rule."""
    m, n, c = cfg["method"], cfg["n_rows"], cfg["catalog_size"]
    table_mb = c * D * 4 / 2**20
    mb = {"sgd": 1, "adam": 3, "lazy_adam": 3}[cfg["optimizer"]] * table_mb  # table + slots
    if cfg["optimizer"] == "adam" and m in ("sce", "sampled_softmax"):
        mb += 3 * table_mb  # the densified gradient and Adam's dense temporaries
    if m == "full_ce":
        flops, mb = 6 * n * c * D, mb + 3 * n * c * 4 / 2**20 + 2 * table_mb
    elif m == "chunked_ce":
        flops, mb = 8 * n * c * D, mb + 2 * table_mb
    elif m == "sampled_softmax":
        flops = 6 * n * NUM_SAMPLED * D
    else:
        flops = 2 * (2 * math.sqrt(n)) * c * D + 6 * n * B_Y * D
    return flops / (GFLOPS * 1e9), mb + 300


def grid():
    """Every configuration, the targets' rows first (SCE at 10^6 and 10^7)."""
    cfgs = []
    for c in (10**5, 10**6, 10**7):
        for n in (1024, 8192):
            for method in ("sce", "sampled_softmax"):
                for optimizer in ("lazy_adam", "sgd", "adam"):
                    cfgs.append(dict(method=method, optimizer=optimizer, n_rows=n, catalog_size=c))
            for method in ("chunked_ce", "full_ce"):
                cfgs.append(dict(method=method, optimizer="adam", n_rows=n, catalog_size=c))

    def rank(cfg):
        sce, c = cfg["method"] == "sce", cfg["catalog_size"]
        lazy = cfg["optimizer"] == "lazy_adam"
        return (not (sce and c >= 10**6 and (lazy or c == 10**6)), not sce, c == 10**7,
                cfg["n_rows"], -c)

    return sorted(cfgs, key=rank)


def _key(row):
    return (row["method"], row["optimizer"], int(row["n_rows"]), int(row["catalog_size"]))


def run_config(cfg, steps):
    sec, mb = predict(cfg)
    row = dict(cfg, status="ok", note="")
    if sec > MAX_STEP_S or mb > MAX_MB:
        row.update(status="skipped", note=f"predicted {sec:.0f} s/step, {mb / 1024:.1f} GB "
                   f"(caps {MAX_STEP_S:.0f} s, {MAX_MB / 1024:.0f} GB)")
        return row
    out = harness.run_config(_child, dict(cfg, steps=steps), name=cfg["method"], timeout=1800,
                             env={"CUDA_VISIBLE_DEVICES": "-1"})
    if out["status"] != "ok":
        row.update(status="failed", note=out["cause"][-200:])
        return row
    row.update((k, v) for k, v in out.items() if k not in ("status", "cause"))
    return row


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else ("" if v is None else str(v))


def write_outputs(rows):
    SCHEMA.write(CSV, ({k: _fmt(r.get(k)) for k in FIELDS} for r in rows))
    (RESULTS / "train_step_cpu.md").write_text(markdown(rows) + "\n")
    plot(rows)


def _num(r, key):
    try:
        return float(r.get(key))
    except (TypeError, ValueError):
        return None


def markdown(rows):
    lines = ["| method | optimizer | N | C | step ms | search ms | step/search | attrib. MB "
             "| process peak MB | status |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        cells = [_num(r, k) for k in ("step_ms", "search_ms", "step_over_search", "attrib_mb",
                                      "process_peak_mb")]
        text = ["" if v is None else (f"{v:.2f}" if i == 2 else f"{v:.0f}")
                for i, v in enumerate(cells)]
        status = r["status"] + (f": {r['note']}" if r.get("note") else "")
        lines.append(f"| {r['method']} | {r['optimizer']} | {int(r['n_rows']):,} | "
                     f"{int(r['catalog_size']):,} | " + " | ".join(text) + f" | {status} |")
    lines += ["", "Targets (SCE + LazyAdam):"]
    for r in rows:
        if r["method"] != "sce" or r["optimizer"] != "lazy_adam":
            continue
        c, n = int(r["catalog_size"]), int(r["n_rows"])
        ratio, attrib = _num(r, "step_over_search"), _num(r, "attrib_mb")
        if c >= 10**6:
            verdict = "not run" if ratio is None else ("PASS" if ratio <= 1.3 else "FAIL")
            lines.append(f"- C={c:,}, N={n:,}: step / search alone = "
                         f"{'n/a' if ratio is None else f'{ratio:.2f}'} (target <= 1.3): {verdict}")
        if c == 10**7:
            verdict = "not run" if attrib is None else ("PASS" if attrib <= 1024 else "FAIL")
            lines.append(f"- C={c:,}, N={n:,}: memory above table + moments = "
                         f"{'n/a' if attrib is None else f'{attrib:.0f} MB'} (target <= 1024 MB): "
                         f"{verdict}")
    return "\n".join(lines)


def plot(rows):
    panels = []
    for n in (1024, 8192):
        ok = [r for r in rows if int(r["n_rows"]) == n and _num(r, "step_ms")]
        series = {}
        for key in dict.fromkeys((r["method"], r["optimizer"]) for r in ok):
            pts = sorted((int(r["catalog_size"]), _num(r, "step_ms")) for r in ok
                         if (r["method"], r["optimizer"]) == key)
            series[f"{key[0]} + {key[1]}"] = tuple(zip(*pts, strict=True))
        pts = sorted((int(r["catalog_size"]), _num(r, "search_ms")) for r in ok
                     if r["method"] == "sce" and r["optimizer"] == "lazy_adam")
        if pts:
            series["SCE item search alone"] = (*zip(*pts, strict=True), "k--")
        panels.append(dict(series=series, xlog=True, ylog=True, xlabel="catalogue size C",
                           ylabel="one training step (ms, CPU)", title=f"N = {n:,}"))
    harness.plot_panels(panels, RESULTS / "train_step_cpu.png")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps (median)")
    parser.add_argument("--table", action="store_true", help="Markdown and PNG from the CSV")
    parser.add_argument("--resume", action="store_true", help="keep the CSV's rows, run the rest")
    args = parser.parse_args(argv)
    if args.table:
        rows = SCHEMA.read(CSV)
        print(markdown(rows))
        plot(rows)
        return
    rows = []
    if args.resume and CSV.exists():
        rows = [r for r in SCHEMA.read(CSV) if r["status"] == "ok"]
    done = {_key(r) for r in rows}
    for cfg in grid():
        if _key(cfg) in done:
            continue
        t = time.perf_counter()
        row = run_config(cfg, args.steps)
        rows.append(row)
        write_outputs(rows)  # partial results survive an interrupted run
        print(f"{time.perf_counter() - t:6.0f}s  " + "  ".join(
            f"{k}={_fmt(row.get(k))}" for k in FIELDS if row.get(k) not in (None, "")), flush=True)
    print(markdown(rows))


if __name__ == "__main__":
    main()
