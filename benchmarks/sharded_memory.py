"""Per-device compiled memory (and, with `--run`, time) of one loss step on JAX.

Run:  python benchmarks/sharded_memory.py --items 1000000 --devices 1 8  [--csv out.csv]

For each device count the script compiles one forward-and-backward step (the loss and
its gradients with respect to the hidden states `[N, d]` and the item table `[C, d]`)
of `keras_sce.kops.scalable_cross_entropy` (JAX) whose item table is split by rows
over a mesh axis of that many devices (1: the whole table on one device), and prints
XLA's memory analysis of the compiled program per device: arguments (the table shard,
the batch), outputs (loss and gradients: the table gradient is split like the table)
and temporaries. Without `--run` the table is described by its shape and sharding only
(`jax.ShapeDtypeStruct`), so nothing of size `C x d` is allocated: a 10^7-row table
can be planned on a laptop. On CPU the devices are host threads
(`--xla_force_host_platform_device_count`, set before JAX starts to the largest count
asked for); on accelerators pass `--host-devices 0` to use the real ones.

Options beyond the SCE step:

- `--method chunked_ce` / `full_ce`: the exact softmax CE of `keras_sce.kops`
  (streamed over catalogue chunks of `--ce-chunk` items, or materialising `N x C`),
  on one device only.
- `--sgd`: the step also applies `table -= 0.1 * grad` and returns the new table (the
  table's buffer is donated, so it is updated in place), the step that
  `benchmarks/loss_scaling.py` times on TensorFlow.
- `--run`: allocate the inputs (normal hidden states, a table of normal rows times
  0.05, uniform labels in `[1, C)`, drawn with NumPy on the host shard by shard, the
  same values however the table is split), run `--warmup` steps, then time `--steps`
  steps (each waited for with `block_until_ready`); `step_ms` is their median. An
  out-of-memory error while compiling or running is recorded in the row (`status`
  `out-of-memory`, its first line in `note`) instead of stopping the script.

Output: one line per device count with the columns of `COLUMNS`, the first ten
`method, kind, items, dim, rows, devices, argument_bytes, output_bytes, temp_bytes,
alias_bytes` (`alias_bytes`: outputs that reuse a donated argument's buffer), then
`peak_mem_mb` (arguments + outputs + temporaries - aliased, in MiB: XLA reuses nothing
else across them, so it bounds the step's live memory per device from above),
`status` (`compiled`, `ok`, `out-of-memory`), `step_ms`, `steps_ms` (every timed
step), `compile_s`, `loss`, `device_kind`, `allocator_peak_mb` (the device
allocator's `peak_bytes_in_use` after the run, where the device reports it: GPUs, not
CPUs), `allocator_limit_mb` (the memory that allocator may use), `rss_peak_mb`
(the process's peak resident size), `rss_start_mb` (its resident size once the
inputs exist, before the first step) and `note`.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import sys
import time

COLUMNS = ("method", "kind", "items", "dim", "rows", "devices", "argument_bytes",
           "output_bytes", "temp_bytes", "alias_bytes", "peak_mem_mb", "status", "step_ms",
           "steps_ms", "compile_s", "loss", "device_kind", "allocator_peak_mb",
           "allocator_limit_mb",
           "rss_peak_mb", "rss_start_mb", "note")
METHODS = ("sce", "chunked_ce", "full_ce")
LEARNING_RATE = 0.1
MB = 2**20
OOM_MARKERS = ("resource_exhausted", "out of memory", "outofmemory", "failed to allocate")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000, help="catalogue size C")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--rows", type=int, default=4096,
                        help="hidden states per step (batch x length)")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 8],
                        help="device counts the table is split over")
    parser.add_argument("--host-devices", type=int, default=None,
                        help="host CPU devices to force (default: the largest --devices; "
                             "0: use the devices JAX finds)")
    parser.add_argument("--method", choices=METHODS, default="sce")
    parser.add_argument("--num-buckets", type=int, default=128,
                        help="SCE buckets n_b (0: the default rule, int(2 sqrt(N)))")
    parser.add_argument("--bucket-size-x", type=int, default=128,
                        help="SCE rows per bucket b_x (0: the default rule)")
    parser.add_argument("--bucket-size-y", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=65_536,
                        help="SCE search chunk (0: no chunking, the n_b x C projection)")
    parser.add_argument("--ce-chunk", type=int, default=0,
                        help="chunked CE items per chunk (0: keras_sce's automatic size)")
    parser.add_argument("--sgd", action="store_true",
                        help="apply table -= 0.1 * grad in the step (donated table)")
    parser.add_argument("--run", action="store_true", help="allocate, run and time the step")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (with --run)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps (with --run)")
    parser.add_argument("--csv", default=None, help="also write the rows to this CSV file")
    args = parser.parse_args(argv)
    if args.method != "sce" and max(args.devices) > 1:
        parser.error(f"--method {args.method} runs on one device only (--devices 1).")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0.")
    return args


def _loss_fn(args, devices, mesh):
    """The loss `(hidden, labels, table) -> scalar` of `args.method`."""
    from keras_sce import kops

    if args.method == "full_ce":
        return lambda h, y, w: kops.full_cross_entropy(h, y, w, check_ids=False)
    if args.method == "chunked_ce":
        chunk = args.ce_chunk or None
        return lambda h, y, w: kops.chunked_cross_entropy(
            h, y, w, chunk_size=chunk, check_ids=False)
    chunk = min(args.chunk_size, args.items // devices) if args.chunk_size else None
    sharding = (mesh, "model") if devices > 1 else None

    def loss(h, y, w):
        return kops.scalable_cross_entropy(
            h, y, w, num_buckets=args.num_buckets or None,
            bucket_size_x=args.bucket_size_x or None, bucket_size_y=args.bucket_size_y,
            chunk_size=chunk, seed=(0, 1), check_ids=False, item_sharding=sharding)

    return loss


def _is_oom(error) -> bool:
    text = f"{type(error).__name__} {error}".lower()
    return any(marker in text for marker in OOM_MARKERS)


def _first_line(error, limit=300) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:limit]


def measure(args, devices):
    """One row: the memory analysis of the compiled step (and its time with `--run`)."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    if args.items % devices:
        raise ValueError(f"--items={args.items} does not split over {devices} devices.")
    if devices > len(jax.devices()):
        raise ValueError(f"--devices {devices}: JAX sees only {len(jax.devices())} devices.")
    mesh = None
    if devices > 1:
        mesh = jax.make_mesh((devices,), ("model",), devices=jax.devices()[:devices])
        replicated = NamedSharding(mesh, PartitionSpec())
        split = NamedSharding(mesh, PartitionSpec("model", None))
    else:  # the whole table on the default device
        replicated = split = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    hidden = jax.ShapeDtypeStruct((args.rows, args.dim), "float32", sharding=replicated)
    labels = jax.ShapeDtypeStruct((args.rows,), "int32", sharding=replicated)
    table = jax.ShapeDtypeStruct((args.items, args.dim), "float32", sharding=split)
    grads = jax.value_and_grad(_loss_fn(args, devices, mesh), argnums=(0, 2))

    if args.sgd:
        def step(h, y, w):
            loss, (grad_h, grad_w) = grads(h, y, w)
            return loss, grad_h, w - LEARNING_RATE * grad_w
        jitted = jax.jit(step, donate_argnums=(2,))
    else:
        jitted = jax.jit(grads)

    row = dict.fromkeys(COLUMNS, "")
    row.update(method=args.method, kind="sharded" if devices > 1 else "one-device",
               items=args.items, dim=args.dim, rows=args.rows, devices=devices,
               device_kind=jax.devices()[0].device_kind)
    try:
        start = time.perf_counter()
        compiled = jitted.lower(hidden, labels, table).compile()
        row["compile_s"] = round(time.perf_counter() - start, 3)
        stats = compiled.memory_analysis()
        if stats is not None:  # some platforms give no analysis
            sizes = {key: int(getattr(stats, f"{key}_size_in_bytes"))
                     for key in ("argument", "output", "temp", "alias")}
            row.update({f"{key}_bytes": value for key, value in sizes.items()})
            live = sizes["argument"] + sizes["output"] + sizes["temp"] - sizes["alias"]
            row["peak_mem_mb"] = round(float(np.float64(live)) / MB, 3)
        row["status"] = "compiled"
        if args.run:
            row.update(_run(args, compiled, (hidden, labels, table)))
    except Exception as error:  # an allocation that does not fit is a result, not a crash
        if not _is_oom(error):
            raise
        row["status"] = "out-of-memory"
        row["note"] = _first_line(error)
    row["allocator_peak_mb"], row["allocator_limit_mb"] = _allocator_mb(jax.devices()[0])
    row["rss_peak_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return row


def _allocator_mb(device):
    """The allocator's peak bytes in use and its limit, in MiB (blank where not reported)."""
    stats = (device.memory_stats() if hasattr(device, "memory_stats") else None) or {}
    return tuple(round(stats[key] / MB, 1) if key in stats else ""
                 for key in ("peak_bytes_in_use", "bytes_limit"))


def draw_rows(shape, dtype, start, stop, seed, block_rows, draw):
    """Rows `[start, stop)` of an array of `shape`, drawn in blocks of `block_rows` rows.

    Each block comes from its own NumPy generator (`draw(rng, block_shape)`), so the
    values do not depend on how the rows are split into shards.
    """
    import numpy as np

    out = np.empty((stop - start, *shape[1:]), dtype)
    for block in range(start // block_rows, -(-stop // block_rows)):
        first = block * block_rows
        size = min(block_rows, shape[0] - first)
        values = draw(np.random.default_rng([seed, block]), (size, *shape[1:]))
        lo, hi = max(start, first), min(stop, first + size)
        out[lo - start:hi - start] = values[lo - first:hi - first]
    return out


def _draw(spec, seed, block_rows, draw):
    """A global array of `spec`'s shape and sharding, drawn on the host shard by shard
    (the host holds one shard and a block beside the array at a time)."""
    import jax

    def shard(index):
        start, stop, _ = (index[0] if index else slice(None)).indices(spec.shape[0])
        return draw_rows(spec.shape, spec.dtype, start, stop, seed, block_rows, draw)

    return jax.make_array_from_callback(spec.shape, spec.sharding, shard)


def _run(args, compiled, specs):
    """Allocates the inputs with the compiled step's shardings and times the step."""
    import jax
    import numpy as np

    hidden_spec, labels_spec, table_spec = specs
    normal = lambda scale: lambda rng, shape: scale * rng.standard_normal(shape, "float32")  # noqa: E731
    hidden = _draw(hidden_spec, 0, 4096, normal(1.0))
    labels = _draw(labels_spec, 1, 4096,
                   lambda rng, shape: rng.integers(1, args.items, shape, dtype=np.int32))
    table = _draw(table_spec, 2, 65_536, normal(0.05))
    jax.block_until_ready((hidden, labels, table))
    resident = _resident_mb()
    times = []
    for index in range(args.warmup + args.steps):
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(hidden, labels, table))
        if index >= args.warmup:
            times.append(1000 * (time.perf_counter() - start))
        if args.sgd:
            table = out[2]
    loss = float(out[0])
    return {"status": "ok", "step_ms": round(statistics.median(times), 2),
            "rss_start_mb": resident,
            "steps_ms": " ".join(f"{t:.2f}" for t in times), "loss": round(loss, 5)}


def _resident_mb():
    """The process's resident size now, in MiB (Linux; blank elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, IndexError, ValueError):
        return ""
    return round(pages * os.sysconf("SC_PAGE_SIZE") / MB, 1)


def write_csv(rows, path):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def main(argv=None):
    args = parse_args(argv)
    host = max(args.devices) if args.host_devices is None else args.host_devices
    if host:
        if "jax" in sys.modules:
            raise RuntimeError("JAX is already imported; run this script in its own process.")
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={host}"
        ).strip()
    os.environ.setdefault("KERAS_BACKEND", "jax")
    rows = [measure(args, devices) for devices in args.devices]
    print(", ".join(COLUMNS))
    for row in rows:
        print(", ".join(str(row[column]) for column in COLUMNS))
    if args.csv:
        write_csv(rows, args.csv)
    return rows


if __name__ == "__main__":
    main()
