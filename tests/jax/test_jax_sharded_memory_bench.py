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


def _run_bench(out, *extra):
    """Runs benchmarks/sharded_memory.py on 1 and 8 devices into `out`; its two CSV rows."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path}
    command = [sys.executable, "benchmarks/sharded_memory.py", "--items", str(ITEMS), "--dim",
               str(DIM), "--rows", "64", "--devices", "1", "8", "--num-buckets", "8",
               "--bucket-size-x", "16", "--bucket-size-y", "32", "--chunk-size", "128",
               *extra, "--csv", str(out)]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, list(csv.DictReader(out.open()))


def test_split_table_memory_per_device_is_about_an_eighth(tmp_path):
    result, (one, split) = _run_bench(tmp_path / "memory.csv")
    assert result.stdout.splitlines()[0].startswith("method, kind, items")
    assert (one["kind"], one["devices"], split["kind"], split["devices"]) == (
        "one-device", "1", "sharded", "8")
    table = ITEMS * DIM * 4
    # Arguments and outputs hold the table (and its gradient) or one eighth of it.
    assert table < int(one["argument_bytes"]) < table + 8192
    assert table // 8 < int(split["argument_bytes"]) < table // 8 + 8192
    assert table // 8 < int(split["output_bytes"]) < table // 8 + 8192 < int(one["output_bytes"])
    assert float(split["peak_mem_mb"]) < float(one["peak_mem_mb"]) / 3


def test_run_with_sgd_times_the_same_loss_on_one_and_eight_devices(tmp_path):
    _, (one, split) = _run_bench(tmp_path / "run.csv", "--run", "--sgd", "--steps", "2",
                                 "--warmup", "1")
    table = ITEMS * DIM * 4
    for row, devices in ((one, 1), (split, 8)):
        assert row["status"] == "ok" and len(row["steps_ms"].split()) == 2
        assert float(row["step_ms"]) > 0 and row["device_kind"] == "cpu"
        # The updated table reuses the donated table's buffer (one shard per device).
        assert int(row["alias_bytes"]) == table // devices
        live = sum(int(row[f"{k}_bytes"]) for k in ("argument", "output", "temp"))
        assert float(row["peak_mem_mb"]) == round((live - table // devices) / 2**20, 3)
    # Same inputs, same fixed-seed centres: the split changes where rows live, not the loss.
    assert abs(float(one["loss"]) - float(split["loss"])) < 1e-4
    assert float(split["peak_mem_mb"]) < float(one["peak_mem_mb"]) / 3
