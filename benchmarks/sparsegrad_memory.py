"""Optimizer-state bytes of SparseGrad's modes against full fine-tuning and LoRA.

Builds the feed-forward (MLP) layers of a BERT-base-sized encoder (by default 12
blocks of Dense 768→3072 and 3072→768) as real Keras variables, builds each method's
real optimizer on them, and adds up the bytes of the variables that exist only
because of fine-tuning:

- ``optimizer_state_bytes``: every variable of the optimizer (moments, counters,
  and for the bounded pool its int32 slot indices and last-selection steps);
- ``extra_weight_bytes``: persistent non-optimizer additions — SparseGrad's frozen
  bases (counted once per distinct variable: they are shared by all blocks of a
  group), its int32 supports, LoRA's factors;
- ``updated_entries_per_step``: how many kernel entries change per step.

The model weights themselves (the dense kernels, or SparseGrad's dense rotated
kernels — the same bytes) are identical in every method and are not counted.

Usage::

    TF_NUM_INTRAOP_THREADS=1 python benchmarks/sparsegrad_memory.py \
        --csv benchmarks/results/sparsegrad_memory.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_sce  # noqa: E402
from keras_sce import sparsegrad  # noqa: E402
from keras_sce.app import harness  # noqa: E402

FIELDS = [
    "method",
    "blocks",
    "hidden",
    "intermediate",
    "k_per_layer",
    "support_per_layer",
    "updated_entries_per_step",
    "optimizer_state_bytes",
    "extra_weight_bytes",
    "total_extra_bytes",
    "ratio_to_full_ft",
]


def _bytes(variables) -> int:
    seen, total = set(), 0
    for v in variables:
        if id(v) in seen:
            continue
        seen.add(id(v))
        total += int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
    return total


def _signed_permutation(n: int, seed: int) -> np.ndarray:
    """A cheap orthogonal matrix of the right size (values do not change the bytes)."""
    rng = np.random.default_rng(seed)
    m = np.zeros((n, n), np.float32)
    m[np.arange(n), rng.permutation(n)] = rng.choice([-1.0, 1.0], size=n)
    return m


def _dense_layers(blocks, hidden, intermediate, lora_rank=None):
    layers = []
    for _ in range(blocks):
        for din, dout in ((hidden, intermediate), (intermediate, hidden)):
            layer = keras.layers.Dense(dout, kernel_initializer="zeros")
            layer.build((None, din))
            if lora_rank:
                layer.enable_lora(lora_rank)
            layers.append(layer)
    return layers


def _sparse_layers(blocks, hidden, intermediate, k, bases, support_size=None):
    layers = []
    for _ in range(blocks):
        for group, (din, dout) in (
            ("up", (hidden, intermediate)),
            ("down", (intermediate, hidden)),
        ):
            p, q = bases[group] if bases else (None, None)
            support = None
            if support_size:
                support = np.arange(0, din * dout, (din * dout) // support_size)[:support_size]
            layer = keras_sce.SparseGradDense(
                dout, p, q, num_selected=k, support=support, kernel_initializer="zeros"
            )
            layer.build((None, din))
            layers.append(layer)
    return layers


def measure(blocks, hidden, intermediate, lora_rank, support_factors, pool_factors):
    k = sparsegrad.lora_equivalent_budget(lora_rank, hidden, intermediate)
    rows = []

    def row(method, optimizer, trainable, extra, updated, support=""):
        optimizer.build(trainable)
        state = _bytes(optimizer.variables)
        rows.append(
            {
                "method": method,
                "blocks": blocks,
                "hidden": hidden,
                "intermediate": intermediate,
                "k_per_layer": k if "sparsegrad" in method or method == "meprop" else "",
                "support_per_layer": support,
                "updated_entries_per_step": updated,
                "optimizer_state_bytes": state,
                "extra_weight_bytes": extra,
                "total_extra_bytes": state + extra,
            }
        )

    dense = _dense_layers(blocks, hidden, intermediate)
    kernels = [layer.kernel for layer in dense]  # kernels only in every method
    row("full_ft_adam", keras.optimizers.Adam(), kernels, 0, hidden * intermediate * 2 * blocks)
    del dense, kernels

    lora = _dense_layers(blocks, hidden, intermediate, lora_rank=lora_rank)
    factors = [v for layer in lora for v in (layer.lora_kernel_a, layer.lora_kernel_b)]
    row(
        f"lora_r{lora_rank}_adam",
        keras.optimizers.Adam(),
        factors,
        _bytes(factors),
        sum(int(np.prod(v.shape)) for v in factors),
    )
    del lora, factors

    bases = {
        "up": (_signed_permutation(hidden, 0), _signed_permutation(intermediate, 1)),
        "down": (_signed_permutation(intermediate, 2), _signed_permutation(hidden, 3)),
    }
    updated = k * 2 * blocks
    for method, layer_bases in (("meprop", None), ("sparsegrad_full_state", bases)):
        layers = _sparse_layers(blocks, hidden, intermediate, k, layer_bases)
        kernels = [layer.kernel for layer in layers]
        extra = _bytes(
            [
                b
                for layer in layers
                for b in (layer.input_basis, layer.output_basis)
                if b is not None
            ]
        )
        row(method, sparsegrad.SparseGradOptimizer(), kernels, extra, updated)
        del layers, kernels
    for factor in pool_factors:
        layers = _sparse_layers(blocks, hidden, intermediate, k, bases)
        kernels = [layer.kernel for layer in layers]
        extra = _bytes([b for layer in layers for b in (layer.input_basis, layer.output_basis)])
        row(
            f"sparsegrad_pool_{factor}k",
            sparsegrad.SparseGradOptimizer(pool_factor=factor),
            kernels,
            extra,
            updated,
            support=f"pool:{factor * k}",
        )
        del layers, kernels
    for factor in support_factors:
        s = factor * k
        layers = _sparse_layers(blocks, hidden, intermediate, k, bases, support_size=s)
        kernels = [layer.kernel for layer in layers]
        extra = _bytes(
            [b for layer in layers for b in (layer.input_basis, layer.output_basis)]
            + [layer.support for layer in layers]
        )
        row(
            f"sparsegrad_support_{factor}k",
            sparsegrad.SparseGradOptimizer(),
            kernels,
            extra,
            updated,
            support=s,
        )
        del layers, kernels
    full = rows[0]["total_extra_bytes"]
    for r in rows:
        r["ratio_to_full_ft"] = f"{r['total_extra_bytes'] / full:.4f}"
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--intermediate", type=int, default=3072)
    parser.add_argument("--lora-rank", type=int, default=7)
    parser.add_argument("--support-factors", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--pool-factors", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--csv", default=None, help="write the table to this CSV file")
    args = parser.parse_args(argv)
    rows = measure(
        args.blocks,
        args.hidden,
        args.intermediate,
        args.lora_rank,
        args.support_factors,
        args.pool_factors,
    )
    writer = csv.DictWriter(sys.stdout, FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    if args.csv:
        harness.CsvSchema("sparsegrad_memory", FIELDS).write(args.csv, rows)


if __name__ == "__main__":
    main()
