"""Resident memory of a compiled step: top-k selection and lazy Adam, one at a time.

Builds `--layers` kernels of shape `[in, out]` (default: BERT-base's 24 feed-forward
kernels, 768 x 3072), and one XLA-compiled step that forms each kernel's gradient
`xᵀ g` from 512 tokens and applies an optimizer. Four variants, each in its own
process, separate the two parts in which SparseGrad differs from dense training:

- `dense_adam`: the dense gradient, Keras Adam (dense fine-tuning);
- `select_adam`: `select_top_k` of the gradient (k = 7·(in + out)), Keras Adam;
- `dense_lazy`: the dense gradient, `SparseGradOptimizer` (lazy Adam);
- `select_lazy`: both (SparseGrad / MeProp).

Reports the RSS once the variables and optimizer exist (`rss_built_mb`), after two
compiled steps (`rss_warm_mb`, after `malloc_trim`) and the peak of two more steps.

Usage::

    PYTHONPATH=. python benchmarks/sparsegrad_selection_memory.py \
        --csv benchmarks/results/sparsegrad_step_selection_memory.csv
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script: `benchmarks` importable
    sys.path.insert(0, ROOT)
from keras_sce.app import harness, memory  # noqa: E402

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

VARIANTS = ("dense_adam", "select_adam", "dense_lazy", "select_lazy")


def child(args):
    """One variant (``args.child``), in a fresh process; returns its row."""
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_sce.sparsegrad import SparseGradOptimizer, register_sparse_kernel, select_top_k

    a, b, k = args.input_dim, args.output_dim, 7 * (args.input_dim + args.output_dim)
    kernels = [
        keras.Variable(np.zeros((a, b), "float32"), name=f"k{i}") for i in range(args.layers)
    ]
    for v in kernels:  # what SparseGradDense does for its kernel when built
        register_sparse_kernel(v, k)
    lazy = args.child.endswith("lazy")
    optimizer = SparseGradOptimizer() if lazy else keras.optimizers.Adam()
    optimizer.build(kernels)
    x, g = tf.random.normal((512, a)), tf.random.normal((512, b))

    @tf.function(jit_compile=True)
    def step(x, g):
        grads = []
        for i in range(len(kernels)):
            grad = tf.matmul(x * (1.0 + 1e-3 * i), g, transpose_a=True)
            if args.child.startswith("select"):
                grad = select_top_k(grad, k, selection=args.selection)
            grads.append(grad)
        optimizer.apply(grads, kernels)

    built = memory.rss_bytes() / 2**20
    step(x, g)
    step(x, g)
    window = harness.MemoryWindow.open(gpu=False, trim=True)
    step(x, g)
    step(x, g)
    window.close()
    warm, peak = window.baseline_bytes / 2**20, window.peak_bytes / 2**20
    row = {
        "variant": args.child, "layers": args.layers, "in": a, "out": b, "k": k,
        "rss_built_mb": round(built, 1), "rss_warm_mb": round(warm, 1),
        "step_peak_mb": round(peak, 1), "compiled_step_resident_mb": round(warm - built, 1),
    }  # fmt: skip
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--input-dim", type=int, default=768)
    parser.add_argument("--output-dim", type=int, default=3072)
    parser.add_argument("--selection", choices=("top_k", "approx"), default="approx")
    parser.add_argument("--csv", default=None)
    args = parser.parse_args(argv)
    rows = []
    for variant in VARIANTS:
        row = harness.run_config(child, argparse.Namespace(**vars(args), child=variant),
                                 name=variant)
        rows.append({k: v for k, v in harness.require_ok(row, f"variant {variant}").items()
                     if k not in ("status", "cause")})
        print(rows[-1], flush=True)
    if args.csv:
        harness.CsvSchema("sparsegrad_selection_memory", tuple(rows[0])).write(args.csv, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
