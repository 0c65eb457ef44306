"""One configuration of ``loss_scaling.py``, meant for a fresh process.

Memory (`keras_sce.app.harness.MemoryWindow`): the first window opens once
TensorFlow, the inputs and the table exist and spans the warm-up steps (tracing,
XLA compilation); the second spans the timed steps alone. ``peak_mem_mb`` is the
larger peak of the two above the first baseline, ``transient_mem_mb`` the second
window's own (the step's working memory, without the retained compiled programs).
On a GPU both are the allocator's.
"""

from __future__ import annotations

import math
import statistics
import time

from keras_sce.app.harness import MemoryWindow

MB = 2**20


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
    """Measures one configuration (meant for a fresh process; see ``loss_scaling.py``)."""
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
    warm = MemoryWindow.open(gpu=gpu)  # TensorFlow, the inputs and the table exist

    out = {}
    with tf.device(device):
        t0 = time.perf_counter()
        for _ in range(cfg["warmup"]):
            loss, gsum, sparse = step()
            loss = float(loss.numpy())
        out["warmup_s"] = time.perf_counter() - t0
        warm.close()
        steady = MemoryWindow.open(gpu=gpu)  # the timed steps alone
        times = []
        for _ in range(cfg["steps"]):
            t = time.perf_counter()
            loss, gsum, sparse = step()
            loss = float(loss.numpy())
            float(gsum.numpy())
            times.append(time.perf_counter() - t)
    steady.close()
    if not math.isfinite(loss):
        raise RuntimeError(f"non-finite loss {loss}")
    out.update(
        step_ms=1000 * statistics.median(times),
        step_ms_all=[round(1000 * t, 2) for t in times],
        baseline_mb=warm.baseline_bytes / MB,
        rss_peak_mem_mb=(max(warm.peak_bytes, steady.peak_bytes) - warm.baseline_bytes) / MB,
        rss_transient_mem_mb=steady.attributable_mb,
        loss=loss,
        sparse_table_grad=bool(sparse.numpy()),
        rss_reset=warm.reset,
    )
    if gpu:
        peak_gpu = max(warm.gpu_peak_bytes, steady.gpu_peak_bytes)
        out["peak_mem_mb"] = (peak_gpu - warm.gpu_baseline_bytes) / MB
        out["transient_mem_mb"] = steady.gpu_attributable_mb
        out["gpu_baseline_mb"] = warm.gpu_baseline_bytes / MB
    else:
        out["peak_mem_mb"] = out["rss_peak_mem_mb"]
        out["transient_mem_mb"] = out["rss_transient_mem_mb"]
    return out


def calibrate(cfg: dict) -> dict:
    """GEMM GFLOP/s and ns per element-wise exp of this process's TensorFlow."""
    import tensorflow as tf

    if cfg["threads"]:
        tf.config.threading.set_intra_op_parallelism_threads(cfg["threads"])
    a, b = tf.random.normal([2048, 64]), tf.random.normal([16384, 64])
    product = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b, transpose_b=True)))
    exp = tf.function(lambda: tf.reduce_sum(tf.exp(tf.matmul(a, b, transpose_b=True))))
    product(), exp()
    gemm, both = [], []
    for _ in range(3):
        t = time.perf_counter()
        product().numpy()
        gemm.append(time.perf_counter() - t)
        t = time.perf_counter()
        exp().numpy()
        both.append(time.perf_counter() - t)
    t_gemm = min(gemm)
    t_exp = max(min(both) - t_gemm, 1e-9)
    return {"gflops": 2 * 2048 * 16384 * 64 / t_gemm / 1e9, "elem_ns": t_exp / (2048 * 16384) * 1e9}
