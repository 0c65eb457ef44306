"""Quality of SparseGrad's modes on a small synthetic fine-tuning task (CPU, minutes).

A "pretrained" residual MLP (``blocks`` blocks of Dense d→h→d, a frozen linear head)
is fine-tuned toward a teacher whose MLP kernels differ by a rank-``delta_rank``
perturbation. Every method adapts the MLP layers only, with the same LoRA-matched
budget (``k = r·(in + out)`` updated entries per layer and step), for ``steps``
steps, over a small learning-rate grid; the table reports the validation MSE as a
fraction of the pretrained model's (lower is better; 0 = teacher recovered).

Methods: ``full_ft`` (dense Adam), ``lora`` (Keras ``enable_lora``), ``meprop``
(top-k in the original basis, dense Adam, as in the paper), ``sparsegrad`` (bases
from ``prelim_steps`` gradients, lazy Adam with full state), ``sparsegrad_pool_{c}k``
(O(k) state: lazy Adam with moments in a bounded LRU pool of ``c·k`` entries), ``sparsegrad_paper``
(the authors' orientation), ``sparsegrad_dense_adam`` (SparseGrad layer with a plain
dense Adam: the wrong optimizer semantics), and ``sparsegrad_support_{c}k`` (O(k)
state: top-k inside a support of ``c·k`` entries chosen from the preliminary
gradients' rotated energy).

Usage::

    TF_NUM_INTRAOP_THREADS=1 python benchmarks/sparsegrad_quality.py \
        --csv benchmarks/results/sparsegrad_quality.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_sce  # noqa: E402
from keras_sce import sparsegrad  # noqa: E402
from keras_sce.app import harness  # noqa: E402

FIELDS = [
    "method",
    "learning_rate",
    "seed",
    "k_per_layer",
    "support_per_layer",
    "val_mse",
    "relative_val_mse",
    "best_for_method",
    "train_seconds",
]


def _templates(d, h, blocks, out, seed):
    """Built Dense layers of the pretrained model, and of the teacher."""
    rng = np.random.default_rng(seed)
    student = []
    for b in range(blocks):
        for name, (din, dout) in ((f"up{b}", (d, h)), (f"down{b}", (h, d))):
            kernel = rng.normal(scale=1.0 / np.sqrt(din), size=(din, dout)).astype("f4")
            bias = rng.normal(scale=0.1, size=(dout,)).astype("f4")
            student.append((name, kernel, bias))
    head = rng.normal(scale=1.0 / np.sqrt(d), size=(d, out)).astype("f4")
    return student, head


def _perturb(student, delta_rank, scale, seed):
    rng = np.random.default_rng(seed + 1000)
    teacher = []
    for name, kernel, bias in student:
        din, dout = kernel.shape
        a = rng.normal(size=(din, delta_rank)) / np.sqrt(din)
        b = rng.normal(size=(delta_rank, dout))
        teacher.append((name, kernel + (scale * a @ b).astype("f4"), bias))
    return teacher


def _dense(name, kernel, bias, activation=None, trainable=True):
    layer = keras.layers.Dense(kernel.shape[1], activation=activation, name=name)
    layer.build((None, kernel.shape[0]))
    layer.kernel.assign(kernel)
    layer.bias.assign(bias)
    layer.trainable = trainable
    return layer


def _build(specs, head, d, make_layer):
    """Residual MLP: h += down(gelu(up(h))); `make_layer(name, dense)` adapts layers."""
    inputs = keras.Input((d,))
    h = inputs
    layers = {}
    for name, kernel, bias in specs:
        activation = "gelu" if name.startswith("up") else None
        layers[name] = make_layer(name, _dense(name, kernel, bias, activation))
    for b in range(len(specs) // 2):
        h = h + layers[f"down{b}"](layers[f"up{b}"](h))
    outputs = _dense("head", head, np.zeros(head.shape[1], "f4"), trainable=False)(h)
    return keras.Model(inputs, outputs), layers


def run(args):
    rows = []
    for seed in args.seeds:
        keras.utils.set_random_seed(seed)
        student, head = _templates(args.d, args.h, args.blocks, args.out, seed)
        teacher = _perturb(student, args.delta_rank, args.delta_scale, seed)
        teacher_model, _ = _build(teacher, head, args.d, lambda n, layer: layer)
        rng = np.random.default_rng(seed + 7)
        n_train = args.steps * args.batch
        x = rng.normal(size=(n_train + 2048, args.d)).astype("f4")
        y = teacher_model.predict(x, batch_size=1024, verbose=0)
        y += args.noise * rng.normal(size=y.shape).astype("f4")
        x_tr, y_tr, x_va, y_va = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
        k = sparsegrad.lora_equivalent_budget(args.lora_rank, args.d, args.h)

        # Preliminary phase on the pretrained model (left untouched).
        base_model, base_layers = _build(student, head, args.d, lambda n, layer: layer)
        base_pred = base_model.predict(x_va, batch_size=1024, verbose=0)
        base_mse = float(np.mean(np.square(base_pred - y_va)))
        groups = {
            "up": [base_layers[f"up{b}"] for b in range(args.blocks)],
            "down": [base_layers[f"down{b}"] for b in range(args.blocks)],
        }
        batches = [
            (
                x_tr[i * args.batch : (i + 1) * args.batch],
                y_tr[i * args.batch : (i + 1) * args.batch],
            )
            for i in range(args.prelim_steps)
        ]
        common = dict(
            model=base_model,
            data=batches,
            loss=keras.losses.MeanSquaredError(),
            groups=groups,
            num_steps=args.prelim_steps,
        )
        bases = sparsegrad.estimate_bases(**common)
        paper_bases = sparsegrad.estimate_bases(**common, orientation="paper")
        supports = {
            c: sparsegrad.estimate_support(bases=bases, support_size=c * k, **common)
            for c in args.support_factors
        }

        def sparse_factory(basis_sets, support_factor=None, k=k, supports=supports):
            def make(name, dense):
                group = "up" if name.startswith("up") else "down"
                block = int(name[len(group) :])
                p, q = (None, None)
                if basis_sets is not None:
                    p, q = basis_sets[group].input_basis, basis_sets[group].output_basis
                support = None
                if support_factor:
                    support = supports[support_factor][group][block]
                return keras_sce.SparseGradDense.from_dense(
                    dense, p, q, num_selected=k, support=support
                )

            return make

        def lora_factory(name, dense):
            dense.enable_lora(args.lora_rank)
            return dense

        methods = {
            "full_ft": (lambda n, layer: layer, "adam"),
            "lora": (lora_factory, "adam"),
            "meprop": (sparse_factory(None), "adam"),
            "sparsegrad": (sparse_factory(bases), "sparse"),
            "sparsegrad_paper": (sparse_factory(paper_bases), "sparse"),
            "sparsegrad_dense_adam": (sparse_factory(bases), "adam"),
        }
        for c in args.support_factors:
            methods[f"sparsegrad_support_{c}k"] = (sparse_factory(bases, c), "sparse")
        for c in args.pool_factors:
            methods[f"sparsegrad_pool_{c}k"] = (sparse_factory(bases), f"pool{c}")
        for method, (factory, kind) in methods.items():
            results = []
            for lr in args.learning_rates:
                model, layers = _build(student, head, args.d, factory)
                if kind == "sparse" or kind.startswith("pool"):
                    pool = float(kind[4:]) if kind.startswith("pool") else None
                    optimizer = sparsegrad.SparseGradOptimizer(
                        keras.optimizers.Adam(lr), learning_rate=lr, pool_factor=pool
                    )
                else:
                    optimizer = keras.optimizers.Adam(lr)
                model.compile(optimizer=optimizer, loss="mse", jit_compile=True)
                start = time.perf_counter()
                model.fit(x_tr, y_tr, batch_size=args.batch, epochs=1, shuffle=False, verbose=0)
                seconds = time.perf_counter() - start
                mse = float(model.evaluate(x_va, y_va, batch_size=1024, verbose=0))
                support_size = ""
                first = layers["up0"]
                if isinstance(first, keras_sce.SparseGradDense) and first.support is not None:
                    support_size = int(first.support.shape[0])
                if kind.startswith("pool"):
                    support_size = f"pool:{int(np.ceil(float(kind[4:]) * k))}"
                results.append(
                    {
                        "method": method,
                        "learning_rate": lr,
                        "seed": seed,
                        "k_per_layer": k if method not in ("full_ft", "lora") else "",
                        "support_per_layer": support_size,
                        "val_mse": f"{mse:.6g}",
                        "relative_val_mse": f"{mse / base_mse:.4f}",
                        "train_seconds": f"{seconds:.2f}",
                    }
                )
                print(method, lr, seed, f"{mse / base_mse:.4f}", file=sys.stderr, flush=True)
            best = min(results, key=lambda r: float(r["val_mse"]))
            for r in results:
                r["best_for_method"] = int(r is best)
            rows.extend(results)
    return rows


def summarize(rows) -> str:
    """Markdown table: per method, the learning rate with the best mean over seeds."""
    table: dict[str, dict[float, list[float]]] = {}
    extra: dict[str, str] = {}
    for r in rows:
        lrs = table.setdefault(r["method"], {})
        lrs.setdefault(float(r["learning_rate"]), []).append(float(r["relative_val_mse"]))
        extra[r["method"]] = str(r["support_per_layer"] or "")
    lines = [
        "| method | state entries per layer | best lr | relative val MSE (mean) | per seed |",
        "|---|---|---:|---:|---|",
    ]
    for method, lrs in table.items():
        lr, values = min(lrs.items(), key=lambda item: np.mean(item[1]))
        per_seed = ", ".join(f"{v:.3f}" for v in values)
        lines.append(
            f"| {method} | {extra[method] or '-'} | {lr:g} | {np.mean(values):.3f} | {per_seed} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--h", type=int, default=256)
    parser.add_argument("--out", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--delta-rank", type=int, default=1)
    parser.add_argument("--delta-scale", type=float, default=0.5)
    parser.add_argument("--noise", type=float, default=0.01)
    parser.add_argument("--lora-rank", type=int, default=1)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prelim-steps", type=int, default=10)
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    parser.add_argument("--support-factors", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--pool-factors", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--csv", default=None)
    parser.add_argument("--markdown", default=None, help="also write the summary table here")
    parser.add_argument(
        "--summary-from", default=None, help="only summarize an existing CSV (no training)"
    )
    args = parser.parse_args(argv)
    if args.summary_from:
        table = summarize(harness.CsvSchema("sparsegrad_quality", FIELDS).read(args.summary_from))
        print(table)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(table)
        return
    rows = run(args)
    writer = csv.DictWriter(sys.stdout, FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    if args.csv:
        harness.CsvSchema("sparsegrad_quality", FIELDS).write(args.csv, rows)
    table = summarize(rows)
    print(table, file=sys.stderr)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)


if __name__ == "__main__":
    main()
