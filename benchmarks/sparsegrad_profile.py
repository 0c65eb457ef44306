"""Where the time of a SparseGrad layer goes: isolated pieces at real shapes.

Times each piece of one SparseGrad feed-forward layer's training step as its own
compiled `tf.function` (XLA by default), at a transformer's MLP shape (default
all-MiniLM-L6-v2: hidden 384, intermediate 1536) and a batch of `tokens` rows:

- the dense layer's own three matmuls (forward, input gradient, kernel gradient);
- the four basis rotations of the activation-space formulation (`x P`, `h Qᵀ`,
  `g Q`, `dx̃ Pᵀ`);
- the weight-space products that can replace them (`K̃ Qᵀ`, `P K̃`, `Ĝ`'s one-sided
  rotation);
- the selection of the k largest entries of `Ĝ`: `tf.math.top_k`,
  `tf.math.approx_max_k`, and the threshold selection of `select_top_k`;
- the scatter of k values into a dense gradient;
- the lazy-Adam update on a dense kernel;
- and the whole layer (forward + backward) in each formulation, against a Dense.

After a warm-up the pieces run in turn, `--repeats` rounds; the best time of each is
reported (the least disturbed one on a shared machine). Usage::

    TF_NUM_INTRAOP_THREADS=2 python benchmarks/sparsegrad_profile.py \
        --csv benchmarks/results/sparsegrad_profile.csv
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_sce.app import harness  # noqa: E402
from keras_sce.sparsegrad import core, lazy_adam_update  # noqa: E402


def _time_round_robin(table, repeats):
    """Best-of-`repeats` milliseconds of every piece, the pieces run in turn.

    On a shared machine the minimum is the least disturbed measurement, and running
    the pieces in turn spreads any disturbance over all of them.
    """
    for _, fn, args in table:  # compile and warm up
        fn(*args)
        fn(*args)
    best = [float("inf")] * len(table)
    for _ in range(repeats):
        for i, (_, fn, args) in enumerate(table):
            start = time.perf_counter()
            out = fn(*args)
            tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, out)
            best[i] = min(best[i], time.perf_counter() - start)
    return [1000.0 * b for b in best]


def threshold_select(magnitudes, k):
    """Exact top-k mask by a bitwise search of the k-th largest magnitude (no sort).

    Non-negative float32 values order like their int32 bit patterns, so 31 counting
    passes find the k-th largest one; ties at it are taken in index order, as
    `tf.math.top_k` does. Kept here as a measured alternative to sorting.
    """
    bits = tf.bitcast(tf.reshape(magnitudes, [-1]), tf.int32)
    prefix = tf.constant(0, tf.int32)
    for bit in range(30, -1, -1):
        candidate = prefix + (1 << bit)
        enough = tf.reduce_sum(tf.cast(bits >= candidate, tf.int32)) >= k
        prefix = tf.where(enough, candidate, prefix)
    above = bits > prefix
    tied = tf.equal(bits, prefix)
    room = k - tf.reduce_sum(tf.cast(above, tf.int32))
    keep = above | (tied & (tf.cumsum(tf.cast(tied, tf.int32)) <= room))
    return tf.reshape(keep, tf.shape(magnitudes))


def _orthogonal(n, seed):
    rng = np.random.default_rng(seed)
    return np.linalg.qr(rng.standard_normal((n, n)))[0].astype(np.float32)


def pieces(a, b, tokens, k, jit, formulations):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((tokens, a)), tf.float32)
    g = tf.constant(rng.standard_normal((tokens, b)), tf.float32)
    kern = tf.constant(rng.standard_normal((a, b)) / np.sqrt(a), tf.float32)
    p, q = tf.constant(_orthogonal(a, 1)), tf.constant(_orthogonal(b, 2))
    mag = tf.abs(tf.matmul(x, g, transpose_a=True))
    flat = tf.reshape(mag, [-1])
    m = tf.Variable(tf.zeros((a, b)))
    v = tf.Variable(tf.zeros((a, b)))

    def fn(f):
        return tf.function(f, jit_compile=jit)

    mm = fn(lambda u, w: tf.matmul(u, w))
    mm_ta = fn(lambda u, w: tf.matmul(u, w, transpose_a=True))
    mm_tb = fn(lambda u, w: tf.matmul(u, w, transpose_b=True))
    _, idx = tf.math.top_k(flat, k)
    vals = tf.gather(flat, idx)
    table = [
        ("dense: forward x K", mm, (x, kern)),
        ("dense: input grad g Kᵀ", mm_tb, (g, kern)),
        ("dense: kernel grad xᵀ g", mm_ta, (x, g)),
        ("rotation: x P", mm, (x, p)),
        ("rotation: h Qᵀ", mm_tb, (g, q)),
        ("rotation: g Q", mm, (g, q)),
        ("rotation: dx̃ Pᵀ", mm_tb, (x, p)),
        ("weight space: K̃ Qᵀ", mm_tb, (kern, q)),
        ("weight space: P K̃", mm, (p, kern)),
        ("weight space: (x̃ᵀ g) Q", mm, (kern, q)),
        ("select: tf.math.top_k", fn(lambda f: tf.math.top_k(f, k, sorted=False)[1]), (flat,)),
        ("select: approx_max_k", fn(lambda f: tf.math.approx_max_k(f, k)[1]), (flat,)),
        ("select: bitwise threshold search", fn(lambda t: threshold_select(t, k)), (mag,)),
        ("select: select_top_k (top_k + scatter)", fn(lambda t: core.select_top_k(t, k)), (mag,)),
        (
            "scatter k values to dense",
            fn(lambda i, w: tf.scatter_nd(i[:, None], w, [a * b])),
            (idx, vals),
        ),
        ("finite check", fn(lambda t: tf.reduce_all(tf.math.is_finite(t))), (mag,)),
        (
            "lazy Adam on dense kernel",
            fn(lambda w, gr: lazy_adam_update(w, m, v, gr, 3, 1e-4)),
            (kern, core.select_top_k(mag, k)),
        ),
    ]
    for name in formulations:

        def step(xx, kk, pp, qq, gg, name=name):
            with tf.GradientTape() as tape:
                tape.watch([xx, kk])
                y = core.sparse_grad_matmul(xx, kk, pp, qq, num_selected=k, formulation=name)
            # The output is returned too, so that the forward cannot be pruned away.
            return [y] + tape.gradient(y, [xx, kk], output_gradients=gg)

        table.append((f"layer fwd+bwd: SparseGrad {name}", fn(step), (x, kern, p, q, g)))

    def dense_step(xx, kk, gg):
        with tf.GradientTape() as tape:
            tape.watch([xx, kk])
            y = tf.matmul(xx, kk)
        return [y] + tape.gradient(y, [xx, kk], output_gradients=gg)

    table.append(("layer fwd+bwd: Dense", fn(dense_step), (x, kern, g)))
    return table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--intermediate", type=int, default=1536)
    parser.add_argument("--tokens", type=int, default=512, help="batch x sequence length")
    parser.add_argument("--rank", type=int, default=7, help="k = rank * (in + out)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--no-jit", action="store_true", help="graph mode instead of XLA")
    parser.add_argument(
        "--formulations", nargs="*", default=list(core.FORMULATIONS), help="layer variants"
    )
    parser.add_argument("--csv", default=None)
    args = parser.parse_args(argv)
    k = args.rank * (args.hidden + args.intermediate)
    rows = []
    for name, (a, b) in (
        ("up", (args.hidden, args.intermediate)),
        ("down", (args.intermediate, args.hidden)),
    ):
        table = pieces(a, b, args.tokens, k, not args.no_jit, args.formulations)
        for (piece, _, _), ms in zip(table, _time_round_robin(table, args.repeats), strict=True):
            rows.append(
                {
                    "layer": name,
                    "in": a,
                    "out": b,
                    "tokens": args.tokens,
                    "k": k,
                    "xla": not args.no_jit,
                    "piece": piece,
                    "best_ms": round(ms, 3),
                }
            )
            print(f"{name:5s} {piece:40s} {ms:9.2f} ms", flush=True)
    if args.csv:
        harness.CsvSchema("sparsegrad_profile", tuple(rows[0])).write(args.csv, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
