"""The compiled SCE loss + gradient's memory against ``keras_sce.tuning``'s cost model.

For each ``(N, C, budget)`` of a grid, :func:`keras_sce.tuning.suggest_buckets`
picks ``(n_b, b_x, b_y)``; a fresh child process compiles one SCE loss + gradient
(with respect to the hidden states and the table) with XLA and reads the
compiler's buffer assignment (`keras_sce.app.harness.compiled_memory_bytes`:
"Total bytes used", minus the bytes of the program's parameters, i.e. of the
inputs). The table lists the measured bytes, the model's prediction and the budget.

Usage::

    python benchmarks/large_vocab_buckets.py            # the grid, CSV + Markdown
    python benchmarks/large_vocab_buckets.py --quick    # two points
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
from keras_sce.app import harness  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
GRID = [(n, c, mb) for n in (1024, 4096) for c in (10_002, 100_002, 1_000_002)
        for mb in (128, 256, 1024)]
QUICK_GRID = [(1024, 100_002, 64), (4096, 10_002, 128)]


def sce_program(cfg: dict):
    """``(fn, specs, make_inputs)``: one SCE loss + gradient (hidden states and table)."""
    import tensorflow as tf

    from keras_sce.ops import scalable_cross_entropy

    def sce_loss_and_gradient(x, table, y):
        with tf.GradientTape() as tape:
            tape.watch([x, table])
            loss = scalable_cross_entropy(
                x, y, table, num_buckets=cfg["n_b"], bucket_size_x=cfg["b_x"],
                bucket_size_y=cfg["b_y"], chunk_size=cfg["chunk"], seed=[1, 2])
        grad_x, grad_table = tape.gradient(loss, [x, table])
        return loss, grad_x, grad_table.values, grad_table.indices

    n, c, d = cfg["num_rows"], cfg["num_items"], cfg["dim"]

    def make_inputs():
        return (tf.random.normal([n, d]), tf.random.normal([c, d]),
                tf.random.uniform([n], 1, c, dtype=tf.int32))

    specs = (tf.TensorSpec([n, d]), tf.TensorSpec([c, d]), tf.TensorSpec([n], tf.int32))
    return sce_loss_and_gradient, specs, make_inputs


def measure(configs: list[dict], timeout: float = 600) -> list[dict]:
    """Compiles and runs the configurations in one fresh process; returns rows."""
    measured = harness.compiled_memory_bytes(sce_program, configs, execute=True,
                                             timeout=timeout)
    return [{**cfg, "measured_bytes": num_bytes, "loss": loss}
            for cfg, (num_bytes, loss) in zip(configs, measured, strict=True)]


def grid_configs(grid, dim=64, chunk=65_536) -> list[dict]:
    """suggest_buckets' choice for each (N, C, budget MiB) of ``grid``."""
    from keras_sce.tuning import sce_memory_bytes, suggest_buckets

    configs = []
    for n, c, mb in grid:
        budget = mb * 2**20
        n_b, b_x, b_y = suggest_buckets(n, c, budget, dim=dim, chunk_size=chunk)
        configs.append(dict(
            num_rows=n, num_items=c, dim=dim, chunk=chunk, budget_bytes=budget,
            n_b=n_b, b_x=b_x, b_y=b_y,
            predicted_bytes=sce_memory_bytes(n, c, n_b, b_x, b_y, dim=dim, chunk_size=chunk)))
    return configs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(RESULTS / "sce_buckets_cpu.csv"))
    args = p.parse_args(argv)
    rows = measure(grid_configs(QUICK_GRID if args.quick else GRID))
    fields = list(rows[0])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| N | C | budget MiB | n_b | b_x | b_y | measured MiB | predicted MiB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['num_rows']:,} | {r['num_items']:,} | {r['budget_bytes'] / 2**20:.0f}"
                     f" | {r['n_b']} | {r['b_x']} | {r['b_y']} | "
                     f"{r['measured_bytes'] / 2**20:.1f} | {r['predicted_bytes'] / 2**20:.1f} |")
    table = "\n".join(lines)
    Path(args.out).with_suffix(".md").write_text(
        "Command: `python benchmarks/large_vocab_buckets.py"
        f"{' --quick' if args.quick else ''}`\n\n{table}\n")
    print(table)
    return rows


if __name__ == "__main__":
    main()
