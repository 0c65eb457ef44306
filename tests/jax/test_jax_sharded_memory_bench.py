"""benchmarks/sharded_memory.py at a small catalogue: per-device compiled memory of the
SCE step, table on one device vs split over 8 (own process: it forces the devices)."""

from __future__ import annotations

import csv
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
ITEMS, DIM = 4096, 16


def test_split_table_memory_per_device_is_about_an_eighth(tmp_path):
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path}
    out = tmp_path / "memory.csv"
    command = [sys.executable, "benchmarks/sharded_memory.py", "--items", str(ITEMS), "--dim",
               str(DIM), "--rows", "64", "--devices", "1", "8", "--num-buckets", "8",
               "--bucket-size-x", "16", "--bucket-size-y", "32", "--chunk-size", "128",
               "--csv", str(out)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[0].startswith("method, kind, items")
    one, split = list(csv.DictReader(out.open()))
    assert (one["kind"], one["devices"], split["kind"], split["devices"]) == (
        "one-device", "1", "sharded", "8")
    table = ITEMS * DIM * 4
    # Arguments and outputs hold the table (and its gradient) or one eighth of it.
    assert table < int(one["argument_bytes"]) < table + 8192
    assert table // 8 < int(split["argument_bytes"]) < table // 8 + 8192
    assert table // 8 < int(split["output_bytes"]) < table // 8 + 8192 < int(one["output_bytes"])
    assert float(split["peak_mem_mb"]) < float(one["peak_mem_mb"]) / 3
