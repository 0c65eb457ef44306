"""Per-device compiled memory of one SCE training step with the item table split by rows.

Run:  python benchmarks/sharded_memory.py --items 1000000 --devices 1 8  [--csv out.csv]

For each device count the script compiles, without running it, one forward-and-backward
step of `keras_sce.kops.scalable_cross_entropy` (JAX) whose item table `[C, d]` is split
by rows over a mesh axis of that many devices (1: the whole table on one device), and
prints XLA's memory analysis of the compiled program per device: arguments (the table
shard, the batch), outputs (loss and gradients: the table gradient is split like the
table) and temporaries. The table is described by its shape and sharding only
(`jax.ShapeDtypeStruct`), so nothing of size `C x d` is allocated: a 10^7-row table
can be planned on a laptop. On CPU the devices are host threads
(`--xla_force_host_platform_device_count`, set before JAX starts to the largest count
asked for); on accelerators pass `--host-devices 0` to use the real ones.

Output: one line per device count with the fixed columns
`method, kind, items, dim, rows, devices, argument_bytes, output_bytes, temp_bytes,
peak_mem_mb` (`peak_mem_mb`: the sum of the three, in MiB; XLA reuses nothing across
them, so it bounds the step's live memory from above).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

COLUMNS = ("method", "kind", "items", "dim", "rows", "devices", "argument_bytes",
           "output_bytes", "temp_bytes", "peak_mem_mb")


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
    parser.add_argument("--num-buckets", type=int, default=128)
    parser.add_argument("--bucket-size-x", type=int, default=128)
    parser.add_argument("--bucket-size-y", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=65_536)
    parser.add_argument("--csv", default=None, help="also write the rows to this CSV file")
    return parser.parse_args(argv)


def measure(args, devices):
    """The memory analysis of one compiled step with the table over `devices` devices."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    from keras_sce import kops

    if args.items % devices:
        raise ValueError(f"--items={args.items} does not split over {devices} devices.")
    if devices > 1:
        mesh = jax.make_mesh((devices,), ("model",), devices=jax.devices()[:devices])
        placed = {"sharding": NamedSharding(mesh, PartitionSpec())}
        table = jax.ShapeDtypeStruct((args.items, args.dim), "float32",
                                     sharding=NamedSharding(mesh, PartitionSpec("model", None)))
    else:  # the whole table on the default device
        placed = {}
        table = jax.ShapeDtypeStruct((args.items, args.dim), "float32")
    hidden = jax.ShapeDtypeStruct((args.rows, args.dim), "float32", **placed)
    labels = jax.ShapeDtypeStruct((args.rows,), "int32", **placed)
    chunk = min(args.chunk_size, args.items // devices)
    sharding = (mesh, "model") if devices > 1 else None

    def step(h, y, w):
        return kops.scalable_cross_entropy(
            h, y, w, num_buckets=args.num_buckets, bucket_size_x=args.bucket_size_x,
            bucket_size_y=args.bucket_size_y, chunk_size=chunk, seed=(0, 1), check_ids=False,
            item_sharding=sharding)

    compiled = jax.jit(jax.value_and_grad(step, argnums=(0, 2))).lower(
        hidden, labels, table).compile()
    stats = compiled.memory_analysis()
    sizes = {key: int(getattr(stats, f"{key}_size_in_bytes"))
             for key in ("argument", "output", "temp")}
    return {
        "method": "sce", "kind": "sharded" if devices > 1 else "one-device",
        "items": args.items, "dim": args.dim, "rows": args.rows, "devices": devices,
        "argument_bytes": sizes["argument"], "output_bytes": sizes["output"],
        "temp_bytes": sizes["temp"],
        "peak_mem_mb": round(float(np.sum(list(sizes.values()))) / 2**20, 3),
    }


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
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    return rows


if __name__ == "__main__":
    main()
