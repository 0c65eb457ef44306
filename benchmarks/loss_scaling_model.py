"""The cost model of ``loss_scaling.py``: predicted memory and time of one step.

Used to skip configurations that cannot fit or would take too long on this machine
(recorded as ``does-not-fit`` / ``too-slow`` with the prediction), and beside the
measurements in the CSV.
"""

from __future__ import annotations

import math

MB = 2**20
FLOAT = 4  # float32 bytes


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
