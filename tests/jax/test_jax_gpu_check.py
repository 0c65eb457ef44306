"""benchmarks/gpu_check.sh and gpu_check_jax.py: the accelerator check, run small on CPU
where TensorFlow cannot be imported (as on the machines that lend accelerators)."""

from __future__ import annotations

import csv
import math
import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks import gpu_check_jax, sharded_memory

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _blocked_tensorflow(folder: pathlib.Path) -> pathlib.Path:
    """A `tensorflow` package that records any import of it, then fails it."""
    package = folder / "tensorflow"
    package.mkdir()
    marker = folder / "tensorflow_was_imported"
    (package / "__init__.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n"
        "raise ImportError('TensorFlow is not installed here')\n")
    return marker


def test_wrapper_runs_the_three_methods_without_tensorflow(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    marker = _blocked_tensorflow(blocker)
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable,
           "GPU_CHECK_WHEELS": str(tmp_path / "no_wheels"), "PYTHONPATH": str(blocker)}
    env.pop("KERAS_BACKEND", None)  # the wrapper chooses JAX itself
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--small"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not marker.exists(), "something on the check's path imported tensorflow"
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu_check.log", "gpu_check_cpu.csv", "gpu_check_cpu.md", "gpu_check_device.txt"]
    rows = {r["method"]: r for r in csv.DictReader((out / "gpu_check_cpu.csv").open())}
    assert list(rows) == ["sce", "chunked_ce", "full_ce"]
    small = gpu_check_jax.SMALL
    for row in rows.values():
        assert row["status"] == "ok", row
        assert (int(row["rows"]), int(row["items"]), int(row["dim"])) == (
            small["rows"], small["items"], small["dim"])
        assert float(row["step_ms"]) > 0 and len(row["steps_ms"].split()) == small["steps"]
        assert math.isfinite(float(row["loss"])) and float(row["loss"]) > 0
        # The table and its gradient are an argument and an output of every step.
        table = small["items"] * small["dim"] * 4
        assert int(row["argument_bytes"]) > table and int(row["output_bytes"]) > table
    # Both exact losses are the same function; full CE plans the N x C logits.
    assert float(rows["chunked_ce"]["loss"]) == pytest.approx(float(rows["full_ce"]["loss"]),
                                                              rel=1e-4)
    logits = small["rows"] * small["items"] * 4
    assert int(rows["full_ce"]["temp_bytes"]) >= logits > int(rows["chunked_ce"]["temp_bytes"])
    text = (out / "gpu_check_cpu.md").read_text()
    assert "| sce | ok |" in text and "--small" in text
    assert "jax" in (out / "gpu_check_device.txt").read_text()


def test_a_method_that_fails_or_hangs_becomes_a_row(tmp_path, monkeypatch):
    args = gpu_check_jax.parse_args(["--small", "--out-dir", str(tmp_path),
                                     "--config-timeout-s", "2"])

    def command(script):
        return lambda *_: [sys.executable, "-c", script]

    monkeypatch.setattr(gpu_check_jax, "child_command",
                        command("import sys; sys.exit('the card fell over')"))
    row = gpu_check_jax.run_method(args, "sce")
    assert (row["status"], row["note"], row["method"]) == ("error", "the card fell over", "sce")
    monkeypatch.setattr(gpu_check_jax, "child_command", command("import time; time.sleep(30)"))
    row = gpu_check_jax.run_method(args, "full_ce")
    assert (row["status"], row["note"]) == ("timeout", "no result within 2 s")


def test_out_of_memory_is_recorded_with_the_compiled_plan(monkeypatch):
    def no_room(*_):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate "
                           "209715200000 bytes.\nBufferAssignment OOM Debugging.")

    monkeypatch.setattr(sharded_memory, "_run", no_room)
    args = sharded_memory.parse_args(["--method", "full_ce", "--items", "512", "--dim", "8",
                                      "--rows", "16", "--devices", "1", "--run"])
    row = sharded_memory.measure(args, 1)
    assert row["status"] == "out-of-memory"
    assert row["note"] == ("RuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to "
                           "allocate 209715200000 bytes.")
    assert int(row["temp_bytes"]) >= 16 * 512 * 4  # the plan survives the failed run
    assert row["step_ms"] == ""


def test_other_errors_are_not_taken_for_out_of_memory(monkeypatch):
    def broken(*_):
        raise ValueError("shapes do not match")

    monkeypatch.setattr(sharded_memory, "_run", broken)
    args = sharded_memory.parse_args(["--items", "512", "--dim", "8", "--rows", "16",
                                      "--devices", "1", "--run", "--num-buckets", "4",
                                      "--bucket-size-x", "8", "--bucket-size-y", "16",
                                      "--chunk-size", "128"])
    with pytest.raises(ValueError, match="shapes do not match"):
        sharded_memory.measure(args, 1)


def test_bad_options_are_refused(capsys):
    with pytest.raises(SystemExit):
        gpu_check_jax.parse_args(["--methods", "sce,adam"])
    assert "unknown ['adam']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sharded_memory.parse_args(["--method", "chunked_ce", "--devices", "1", "8"])
    assert "one device only" in capsys.readouterr().err


@pytest.mark.parametrize("kind, slug", [("NVIDIA H200", "nvidia_h200"), ("cpu", "cpu"),
                                        ("", "unknown")])
def test_device_kind_names_the_files(kind, slug):
    assert gpu_check_jax.device_slug([{"device_kind": kind}]) == slug


def test_drawn_rows_do_not_depend_on_the_split():
    import numpy as np

    def draw(rng, shape):
        return rng.standard_normal(shape, "float32")

    whole = sharded_memory.draw_rows((10, 2), "float32", 0, 10, 7, 3, draw)
    parts = [sharded_memory.draw_rows((10, 2), "float32", a, b, 7, 3, draw)
             for a, b in ((0, 4), (4, 5), (5, 10))]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    first_block = np.random.default_rng([7, 0]).standard_normal((3, 2), "float32")
    np.testing.assert_array_equal(whole[:3], first_block)
    assert len(np.unique(whole)) == whole.size  # no block repeated
