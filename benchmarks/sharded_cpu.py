"""The SCE training step on CPU: the item table on 1 vs 8 devices (JAX), TensorFlow vs JAX.

Run (the recorded results, about 5 minutes of one core):

    nice -n 19 taskset -c 1 python benchmarks/sharded_cpu.py

One step = SCE's loss and its gradients with respect to the hidden states `[N, d]` and
the item table `[C, d]`, then `table -= 0.1 * grad` (the step of
`benchmarks/loss_scaling.py`); N = 1,024 rows, d = 64, `b_y` = 256,
`n_b` = `b_x` = `int(2 sqrt(N))`, the item search streamed over chunks of 65,536 items
(of each device's rows when the table is split), float32, one thread. Every
configuration runs in a fresh process:

- JAX (`benchmarks/sharded_memory.py --run --sgd`), with the table whole on one device
  or split by rows over 8 forced host devices
  (`--xla_force_host_platform_device_count`): per-device memory from XLA's memory
  analysis of the compiled step (arguments + outputs + temporaries - donated), the
  median step time and the process's resident size (inputs ready, and peak).
  `--compile-only C:D` plans a
  configuration without running it.
- TensorFlow (`benchmarks/loss_scaling.py --methods sce`, table on one device, sparse
  `IndexedSlices` table gradient and `scatter_sub`): its median step time and the
  process's resident size (its baseline once the table exists, and that plus the
  measured peak above it).

On CPU the 8 devices are threads of one process sharing the same memory and cores, so
the split shows the per-device layout, not a speed-up. Writes `--out` (CSV) and the
Markdown beside it.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
MB = 2**20
COLUMNS = ("backend", "items", "dim", "rows", "devices", "status", "step_ms", "steps_ms",
           "per_device_mb", "table_per_device_mb", "argument_mb", "output_mb", "temp_mb",
           "rss_start_mb", "rss_peak_mb", "loss", "note")
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
                 "TF_NUM_INTEROP_THREADS": "1"}
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--bucket-size-y", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=65_536)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--compile-only", nargs="*", default=[], metavar="C:D",
                        help="JAX configurations to plan without running, e.g. 10000000:8")
    parser.add_argument("--no-tensorflow", action="store_true",
                        help="leave out the TensorFlow rows")
    parser.add_argument("--config-timeout-s", type=int, default=600)
    parser.add_argument("--out", default=str(HERE / "results" / "sharded_cpu.csv"))
    args = parser.parse_args(argv)
    try:
        args.compile_only = {tuple(int(float(v)) for v in s.split(":")) for s in args.compile_only}
    except ValueError:
        parser.error("--compile-only takes ITEMS:DEVICES pairs, e.g. 10000000:8.")
    return args


def _env(extra_xla=""):
    env = {**os.environ, **SINGLE_THREAD, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": "-1"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {extra_xla}".strip()
    return env


def _run(command, env, timeout):
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"no result within {timeout} s"
    if done.returncode:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return (lines[-1] if lines else f"exit status {done.returncode}")[:300]
    return None


def jax_row(args, items, devices, folder):
    out = Path(folder) / f"jax_{items}_{devices}.csv"
    run = (items, devices) not in args.compile_only
    command = [sys.executable, str(HERE / "sharded_memory.py"), "--items", str(items),
               "--dim", str(args.dim), "--rows", str(args.rows), "--devices", str(devices),
               "--host-devices", str(devices), "--num-buckets", "0", "--bucket-size-x", "0",
               "--bucket-size-y", str(args.bucket_size_y), "--chunk-size",
               str(args.chunk_size), "--sgd", "--steps", str(args.steps), "--warmup",
               str(args.warmup), "--csv", str(out)] + (["--run"] if run else [])
    row = dict.fromkeys(COLUMNS, "")
    row.update(backend="jax", items=items, dim=args.dim, rows=args.rows, devices=devices,
               table_per_device_mb=round(items * args.dim * 4 / devices / MB, 2))
    failure = _run(command, _env(XLA_ONE_THREAD), args.config_timeout_s)
    if failure:
        row.update(status="failed", note=failure)
        return row
    with open(out, newline="") as handle:
        got = next(csv.DictReader(handle))
    row.update(status=got["status"], step_ms=got["step_ms"], steps_ms=got["steps_ms"],
               per_device_mb=got["peak_mem_mb"], rss_peak_mb=got["rss_peak_mb"],
               rss_start_mb=got["rss_start_mb"],
               loss=got["loss"], note=got["note"] or ("" if run else "not run"))
    for key in ("argument", "output", "temp"):
        row[f"{key}_mb"] = round(int(got[f"{key}_bytes"]) / MB, 1)
    return row


def tensorflow_rows(args, folder):
    out = Path(folder) / "tf.csv"
    command = [sys.executable, str(HERE / "loss_scaling.py"), "--methods", "sce",
               "--n-rows", str(args.rows), "--catalog-sizes",
               ",".join(str(c) for c in args.items), "--dim", str(args.dim), "--threads", "1",
               "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--bucket-size-y", str(args.bucket_size_y), "--sce-chunk",
               str(args.chunk_size), "--max-step-s", "120", "--out", str(out)]
    env = _env()
    env["KERAS_BACKEND"] = "tensorflow"
    failure = _run(command, env, args.config_timeout_s * len(args.items))
    rows = []
    got = {}
    if not failure:
        with open(out, newline="") as handle:
            got = {int(r["catalog_size"]): r for r in csv.DictReader(handle)}
    for items in args.items:
        row = dict.fromkeys(COLUMNS, "")
        row.update(backend="tensorflow", items=items, dim=args.dim, rows=args.rows,
                   devices=1, table_per_device_mb=round(items * args.dim * 4 / MB, 2))
        source = got.get(items)
        if source is None:
            row.update(status="failed", note=failure or "no row")
        else:
            row.update(status=source["status"], step_ms=source["step_ms"],
                       loss=source["loss"], note=source["note"].split(";")[0])
            if source["status"] == "ok":
                row["rss_start_mb"] = round(float(source["baseline_mb"]), 1)
                row["rss_peak_mb"] = round(float(source["baseline_mb"])
                                           + float(source["peak_mem_mb"]), 1)
                row["steps_ms"] = " ".join(
                    source["note"].split("[")[-1].rstrip("]").replace(",", "").split())
        rows.append(row)
    return rows


def _launch_prefix() -> str:
    """`nice -n N taskset -c CPUS ` as this process was started (empty parts left out)."""
    prefix = f"nice -n {os.nice(0)} " if os.nice(0) else ""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < (os.cpu_count() or len(cpus)):
        prefix += f"taskset -c {','.join(map(str, cpus))} "
    return prefix


def write_markdown(rows, path, command):
    lines = [
        "# SCE step on CPU: the item table on 1 vs 8 devices, TensorFlow vs JAX", "",
        f"Command: `{_launch_prefix()}{command}`", "",
        f"Written {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by "
        "`benchmarks/sharded_cpu.py` (its docstring defines the step), at niceness "
        f"{os.nice(0)} on CPUs {sorted(os.sched_getaffinity(0))} of {os.cpu_count()}.", "",
        "| backend | C | devices | step (ms) | per device: compiled (MiB) | table shard (MiB) "
        "| arguments / outputs / temporaries (MiB) | process RSS: inputs ready / peak (MiB) "
        "| note |",
        "|---|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for row in rows:
        parts = " / ".join(str(row[f"{k}_mb"]) for k in ("argument", "output", "temp"))
        lines.append(
            f"| {row['backend']} | {int(row['items']):,} | {row['devices']} | "
            f"{row['step_ms'] or '-'} | {row['per_device_mb'] or '-'} | "
            f"{row['table_per_device_mb']} | {parts if row['argument_mb'] != '' else '-'} | "
            f"{row['rss_start_mb'] or '-'} / {row['rss_peak_mb'] or '-'} | {row['status']}"
            f"{'; ' + row['note'] if row['note'] else ''} |")
    lines += [
        "",
        "Per-device memory is XLA's plan of the compiled JAX step (the donated table's "
        "buffer is reused by the updated table, so it counts once); TensorFlow has no "
        "such plan. For both, the process's resident size once the framework, the inputs and "
        "the table exist, and its peak over the run. The "
        "machine was shared with other jobs while this ran (the measurement itself ran "
        "at the lowest priority on one core): compare times within this table only.", "",
    ]
    Path(path).write_text("\n".join(lines))


def main(argv=None):
    args = parse_args(argv)
    command = "python benchmarks/sharded_cpu.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for items in args.items:
            for devices in args.devices:
                rows.append(jax_row(args, items, devices, folder))
                print(rows[-1], flush=True)
        if not args.no_tensorflow:
            rows += tensorflow_rows(args, folder)
            print(rows[-len(args.items):], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    write_markdown(rows, out.with_suffix(".md"), command.strip())
    print(out.with_suffix(".md").read_text())
    return rows


if __name__ == "__main__":
    main()
