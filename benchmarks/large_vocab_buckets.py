"""The compiled SCE loss + gradient's memory against ``keras_sce.tuning``'s cost model.

For each ``(N, C, budget)`` of a grid, :func:`keras_sce.tuning.suggest_buckets`
picks ``(n_b, b_x, b_y)``; a fresh child process compiles one SCE loss + gradient
(with respect to the hidden states and the table) with XLA and reads the
compiler's buffer assignment (``--xla_dump_to``: "Total bytes used", minus the
bytes of the program's parameters, i.e. of the inputs). The table lists the
measured bytes, the model's prediction and the budget.

Usage::

    python benchmarks/large_vocab_buckets.py            # the grid, CSV + Markdown
    python benchmarks/large_vocab_buckets.py --quick    # two points
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
from benchmarks import _child as child_proc  # noqa: E402

RESULTS = REPO_ROOT / "benchmarks" / "results"
GRID = [(n, c, mb) for n in (1024, 4096) for c in (10_002, 100_002, 1_000_002)
        for mb in (128, 256, 1024)]
QUICK_GRID = [(1024, 100_002, 64), (4096, 10_002, 128)]
_TOTAL = re.compile(r"^Total bytes used: (\d+)", re.M)
_PARAM = re.compile(r"^allocation \d+: size (\d+), parameter \d+", re.M)
PROBE = "sce_peak_probe"


def compiled_loss_bytes(buffer_assignment: str) -> int:
    """XLA's "Total bytes used" minus the parameter allocations (the inputs)."""
    total = _TOTAL.search(buffer_assignment)
    if total is None:
        raise ValueError("no 'Total bytes used' line in the XLA buffer assignment dump")
    return int(total.group(1)) - sum(int(s) for s in _PARAM.findall(buffer_assignment))


def _child(configs: list[dict], dump_dir: str) -> list[dict]:
    import tensorflow as tf

    from keras_sce.ops import scalable_cross_entropy

    out = []
    for cfg in configs:
        before = set(os.listdir(dump_dir))

        def sce_peak_probe(x, table, y, cfg=cfg):
            with tf.GradientTape() as tape:
                tape.watch([x, table])
                loss = scalable_cross_entropy(
                    x, y, table, num_buckets=cfg["n_b"], bucket_size_x=cfg["b_x"],
                    bucket_size_y=cfg["b_y"], chunk_size=cfg["chunk"],
                    seed=[1, 2])
            grad_x, grad_table = tape.gradient(loss, [x, table])
            return loss, grad_x, grad_table.values, grad_table.indices

        fn = tf.function(sce_peak_probe, jit_compile=True)
        n, c, d = cfg["num_rows"], cfg["num_items"], cfg["dim"]
        x = tf.random.normal([n, d])
        table = tf.random.normal([c, d])
        y = tf.random.uniform([n], 1, c, dtype=tf.int32)
        loss = float(fn(x, table, y)[0])
        new = [f for f in set(os.listdir(dump_dir)) - before
               if PROBE in f and f.endswith("buffer-assignment.txt")]
        if len(new) != 1:
            raise RuntimeError(f"expected one buffer assignment for {cfg}, found {new}")
        text = (Path(dump_dir) / new[0]).read_text()
        out.append({**cfg, "measured_bytes": compiled_loss_bytes(text), "loss": loss})
    return out


def measure(configs: list[dict], timeout: float = 600) -> list[dict]:
    """Runs the configurations in one fresh process with XLA dumps; returns rows."""
    with tempfile.TemporaryDirectory() as dump_dir:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="",
                   XLA_FLAGS=f"--xla_dump_to={dump_dir} --xla_dump_hlo_module_re=.*{PROBE}.*",
                   PYTHONPATH=str(REPO_ROOT))
        return child_proc.run_child(
            [sys.executable, __file__, "--child", json.dumps(configs), dump_dir],
            "measurement child", env=env, timeout=timeout, tail=2000,
        )


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
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_proc.emit(_child(json.loads(args.child[0]), args.child[1]))
        return None
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
