"""One short accelerator check on the JAX backend: SCE vs exact full and chunked CE.

Each method's training step (the loss and its gradients with respect to the hidden
states `[N, d]` and the item table `[C, d]`, jitted) runs in a fresh process
(`benchmarks/sharded_memory.py --run --host-devices 0 --devices 1`), so each
allocator peak is its own. Default size: N = 51,200 rows, C = 10^6 items, d = 64,
float32; SCE with `b_y` = 256, `n_b` = `b_x` = `int(2 sqrt(N))` (the defaults) and a
search streamed over chunks of 65,536 items; chunked CE over chunks of 8,192 items
(an `[N, 8192]` float32 block is 1.6 GiB); full CE materialises `N x C` logits
(205 GB at the default size: it does not fit on one card, and its row records the
out-of-memory error and the compiled program's planned size). Per method: the median
of `--steps` timed steps after `--warmup` (each waited for with `block_until_ready`),
the device allocator's `peak_bytes_in_use`, and XLA's memory analysis of the compiled
step (arguments, outputs, temporaries). A method with no result after
`--config-timeout-s` seconds gets a `timeout` row; the script itself never stops on one
method's failure.

The path imports Keras (JAX backend), JAX and `keras_sce.kops` only, never TensorFlow,
so it runs where the accelerators are lent (JAX with CUDA and Python 3.12, no
TensorFlow, no registry). Keras and two of its needs that are not there (`optree`,
`namex`) travel as wheels; keras_sce travels as the working tree.

1. Here, once: `bash benchmarks/gpu_check.sh fetch` downloads the wheels of the
   installed Keras, optree and namex versions for CPython 3.12 on x86-64 Linux into
   `benchmarks/wheels/` (git-ignored; about 3 MB).
2. The device run: `carry: ["benchmarks/wheels"]`, `command: "bash
   benchmarks/gpu_check.sh"`, `timeout_s: 540`. The wrapper installs the wheels into
   `/tmp/gpu_check_site`, records `nvidia-smi` and runs this script with a 480 s limit;
   it writes `gpu_check_<device kind>.csv` and `.md` (and the log and device lines)
   into `$OUT`, or into `benchmarks/results/` when `$OUT` is unset.

On CPU, small (what `tests/jax/test_jax_gpu_check.py` runs):

    KERAS_BACKEND=jax PYTHONPATH=. python benchmarks/gpu_check_jax.py --small --out-dir /tmp/g
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import sharded_memory  # noqa: E402

METHODS = ("sce", "chunked_ce", "full_ce")
SMALL = {"rows": 256, "items": 4096, "dim": 16, "sce_chunk": 1024, "ce_chunk": 1000,
         "bucket_size_y": 64, "steps": 2, "warmup": 1}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=51_200, help="hidden states N per step")
    parser.add_argument("--items", type=int, default=1_000_000, help="catalogue size C")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma list of {', '.join(METHODS)}")
    parser.add_argument("--bucket-size-y", type=int, default=256)
    parser.add_argument("--sce-chunk", type=int, default=65_536, help="SCE search chunk")
    parser.add_argument("--ce-chunk", type=int, default=8192, help="chunked CE chunk")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--config-timeout-s", type=int, default=150)
    parser.add_argument("--small", action="store_true",
                        help="a CPU-sized run: " + ", ".join(f"{k}={v}" for k, v in SMALL.items()))
    parser.add_argument("--out-dir", default=None,
                        help="folder for the CSV and Markdown ($OUT, else benchmarks/results)")
    args = parser.parse_args(argv)
    if args.small:
        for key, value in SMALL.items():
            setattr(args, key, value)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown or not args.methods:
        parser.error(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}.")
    if args.out_dir is None:
        args.out_dir = os.environ.get("OUT") or str(HERE / "results")
    return args


def child_command(args, method, csv_path):
    """The `sharded_memory.py` command line of one method."""
    return [sys.executable, str(HERE / "sharded_memory.py"), "--method", method,
            "--items", str(args.items), "--dim", str(args.dim), "--rows", str(args.rows),
            "--devices", "1", "--host-devices", "0", "--num-buckets", "0",
            "--bucket-size-x", "0", "--bucket-size-y", str(args.bucket_size_y),
            "--chunk-size", str(args.sce_chunk), "--ce-chunk", str(args.ce_chunk),
            "--run", "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--csv", str(csv_path)]


def run_method(args, method):
    """One method in a fresh process; a row whatever happens to that process."""
    with tempfile.TemporaryDirectory() as folder:
        csv_path = Path(folder) / "row.csv"
        env = {**os.environ, "KERAS_BACKEND": "jax"}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        try:
            done = subprocess.run(child_command(args, method, csv_path), env=env,
                                  cwd=REPO_ROOT, capture_output=True, text=True,
                                  timeout=args.config_timeout_s)
        except subprocess.TimeoutExpired:
            return _failed_row(args, method, "timeout",
                               f"no result within {args.config_timeout_s} s")
        if done.returncode == 0 and csv_path.exists():
            with open(csv_path, newline="") as handle:
                return next(csv.DictReader(handle))
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        cause = lines[-1].strip() if lines else f"exit status {done.returncode}"
        return _failed_row(args, method, "error", cause[:300])


def _failed_row(args, method, status, note):
    row = dict.fromkeys(sharded_memory.COLUMNS, "")
    row.update(method=method, kind="one-device", items=args.items, dim=args.dim,
               rows=args.rows, devices=1, status=status, note=note)
    return row


def device_slug(rows) -> str:
    """A file-name-safe device kind, e.g. `nvidia_h200`, from the first row that has one."""
    kind = next((row["device_kind"] for row in rows if row.get("device_kind")), "unknown")
    return re.sub(r"[^a-z0-9]+", "_", kind.lower()).strip("_") or "unknown"


def _mib(value) -> str:
    return f"{int(value) / 2**20:,.1f}" if str(value).strip() not in ("", "None") else ""


def write_markdown(rows, path, args, command):
    kind = next((row["device_kind"] for row in rows if row.get("device_kind")), "unknown")
    times = {row["method"]: float(row["step_ms"]) for row in rows if row.get("step_ms")}
    lines = [
        f"# SCE vs exact CE on {kind} (JAX backend)", "",
        f"N = {args.rows:,} rows, C = {args.items:,} items, d = {args.dim}, float32; one "
        "step = the loss and its gradients w.r.t. the hidden states and the table "
        f"(jitted); median of {args.steps} timed steps after {args.warmup} warm-up; each "
        "method in a fresh process.", "",
        f"Command: `{command}`", "",
        f"Written {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC.", "",
        "| method | status | step (ms) | allocator peak / limit (MiB) | compiled: arguments"
        " / outputs / temporaries (MiB) | loss | note |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for row in rows:
        compiled = " / ".join(_mib(row[f"{key}_bytes"]) for key in ("argument", "output", "temp"))
        compiled = "" if compiled == " /  / " else compiled
        allocator = (f"{row['allocator_peak_mb']} / {row['allocator_limit_mb']}"
                     if str(row["allocator_peak_mb"]) else "-")
        lines.append(f"| {row['method']} | {row['status']} | {row['step_ms']} | "
                     f"{allocator} | {compiled} | {row['loss']} | "
                     f"{row['note']} |")
    if "sce" in times and "chunked_ce" in times and times["sce"] > 0:
        lines += ["", f"Chunked CE takes {times['chunked_ce'] / times['sce']:.1f} times SCE's "
                      "step time."]
    lines += ["", "The allocator peak includes the inputs (hidden states, labels, table); "
              "JAX's default float32 matmul precision. "
              "The compiled sizes are XLA's plan of the step; a method that does not fit "
              "shows them with its out-of-memory error.", ""]
    Path(path).write_text("\n".join(lines))


def main(argv=None):
    args = parse_args(argv)
    command = "python benchmarks/gpu_check_jax.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    rows = []
    for method in args.methods:
        row = run_method(args, method)
        rows.append(row)
        print(f"{method}: {row['status']}, step {row['step_ms'] or '-'} ms, allocator peak "
              f"{row['allocator_peak_mb'] or '-'} MiB, compiled temp "
              f"{_mib(row['temp_bytes']) or '-'} MiB {row['note']}", flush=True)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"gpu_check_{device_slug(rows)}"
    sharded_memory.write_csv(rows, stem.with_suffix(".csv"))
    write_markdown(rows, stem.with_suffix(".md"), args, command.strip())
    print(Path(stem.with_suffix(".md")).read_text())
    return rows


if __name__ == "__main__":
    main()
