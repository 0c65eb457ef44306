"""benchmarks/sharded_cpu.py: the CPU table of the SCE step (JAX on 1 vs 8 devices,
TensorFlow on one), run tiny; the TensorFlow rows are read from a stand-in CSV."""

from __future__ import annotations

import csv
import pathlib
import subprocess
import sys

from benchmarks import sharded_cpu

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ["--items", "4096", "--rows", "64", "--dim", "16", "--chunk-size", "512",
        "--bucket-size-y", "32", "--steps", "2"]


def test_jax_rows_one_device_and_a_planned_split(tmp_path):
    out = tmp_path / "sc.csv"
    command = [sys.executable, "benchmarks/sharded_cpu.py", *TINY, "--no-tensorflow",
               "--compile-only", "4096:8", "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one, split = list(csv.DictReader(out.open()))
    assert (one["backend"], one["devices"], one["status"]) == ("jax", "1", "ok")
    assert float(one["step_ms"]) > 0 and len(one["steps_ms"].split()) == 2
    assert (split["devices"], split["status"], split["step_ms"]) == ("8", "compiled", "")
    assert split["note"] == "not run"
    table_mb = 4096 * 16 * 4 / 2**20
    assert float(one["table_per_device_mb"]) == round(table_mb, 2)
    assert float(split["table_per_device_mb"]) == round(table_mb / 8, 2)
    assert float(split["per_device_mb"]) < float(one["per_device_mb"]) / 2
    text = out.with_suffix(".md").read_text()
    assert "--compile-only 4096:8" in text and "| jax | 4,096 | 8 | - |" in text


def test_tensorflow_rows_come_from_loss_scaling(tmp_path, monkeypatch):
    args = sharded_cpu.parse_args(TINY + ["--items", "4096", "8192"])

    def fake_loss_scaling(command, env, timeout):
        assert command[1].endswith("loss_scaling.py") and env["KERAS_BACKEND"] == "tensorflow"
        out = pathlib.Path(command[command.index("--out") + 1])
        out.write_text(
            "method,catalog_size,status,step_ms,baseline_mb,peak_mem_mb,loss,note\n"
            'sce,4096,ok,2.5,700.0,90.5,8.3,"table grad sparse; steps ms [2.4, 2.6]"\n')
        return None

    monkeypatch.setattr(sharded_cpu, "_run", fake_loss_scaling)
    small, missing = sharded_cpu.tensorflow_rows(args, tmp_path)
    assert (small["status"], small["step_ms"], small["steps_ms"]) == ("ok", "2.5", "2.4 2.6")
    assert (small["rss_start_mb"], small["rss_peak_mb"]) == (700.0, 790.5)
    assert small["note"] == "table grad sparse"
    assert (missing["items"], missing["status"], missing["note"]) == (8192, "failed", "no row")


def test_a_failed_configuration_is_a_row(tmp_path, monkeypatch):
    monkeypatch.setattr(sharded_cpu, "_run", lambda *_: "MemoryError")
    args = sharded_cpu.parse_args(TINY)
    row = sharded_cpu.jax_row(args, 4096, 8, tmp_path)
    assert (row["status"], row["note"], row["per_device_mb"]) == ("failed", "MemoryError", "")
