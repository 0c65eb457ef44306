"""keras_sce.app.harness: failure rows, the CSV schema, memory windows, the writers."""

from __future__ import annotations

import csv
import os
import signal
import sys
import time

import numpy as np
import pytest

from keras_sce.app import harness

LINUX = sys.platform.startswith("linux")


def _measure(config):
    return {"value": config["x"] * 2}


def _die(config):
    if config["how"] == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if config["how"] == "sleep":
        time.sleep(60)
    raise MemoryError("no room for the logits")


def _env_of_child(config):
    return {"value": os.environ.get(config["name"])}


def _matmul_program(config):
    import tensorflow as tf

    n, c = config

    def fn(x, w):
        return tf.matmul(x, w, transpose_b=True)

    return fn, (tf.TensorSpec([n, 64]), tf.TensorSpec([c, 64]))


def test_a_configuration_that_returns_is_an_ok_row():
    row = harness.run_config(_measure, {"x": 21}, name="double")
    assert row == {"value": 42, "status": "ok", "cause": ""}


@pytest.mark.parametrize(("how", "cause"), [
    pytest.param("sigkill", "killed by SIGKILL (likely out of memory)", id="oom-kill"),
    pytest.param("raise", "exception: MemoryError: no room for the logits", id="exception"),
    pytest.param("sleep", "timed out after 3 s", id="timeout"),
])
def test_a_child_that_dies_is_a_failure_row_with_its_cause(how, cause):
    row = harness.run_config(_die, {"how": how}, name=how, timeout=3 if how == "sleep" else None)
    assert row["status"] == "failed" and row["cause"] == cause
    assert ("MemoryError" in row["traceback"]) == (how == "raise")
    with pytest.raises(RuntimeError, match="the run failed: " + cause[:10]):
        harness.require_ok(row, "the run")


def test_the_child_environment_is_set_for_the_child_only():
    name = "KERAS_SCE_HARNESS_TEST_VARIABLE"
    row = harness.run_config(_env_of_child, {"name": name}, name="env", env={name: "on"})
    assert row["value"] == "on" and name not in os.environ


SCHEMA = harness.CsvSchema("demo", ("method", "seed", "peak_mem_mb"), added=("hlo_mb",))


def _row(seed=0, **extra):
    return {"method": "sce", "seed": seed, "peak_mem_mb": 10.0, "hlo_mb": 1.5, **extra}


def _header(path):
    with open(path, newline="") as handle:
        return next(csv.reader(handle))


def test_rows_append_under_a_stable_header(tmp_path):
    path = tmp_path / "r.csv"
    SCHEMA.append(path, _row(0))
    SCHEMA.append(path, _row(1))
    assert _header(path) == ["method", "seed", "peak_mem_mb", "hlo_mb"]
    assert [r["seed"] for r in SCHEMA.read(path)] == ["0", "1"]


def test_an_older_file_gains_the_added_column_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text("method,seed,peak_mem_mb,note\nce,3,99.0,kept\n")
    SCHEMA.append(path, _row(4))
    assert _header(path) == ["method", "seed", "peak_mem_mb", "note", "hlo_mb"]
    old, new = SCHEMA.read(path)
    assert (old["seed"], old["note"], old["hlo_mb"]) == ("3", "kept", "")
    assert (new["seed"], new["note"], new["hlo_mb"]) == ("4", "", "1.5")
    SCHEMA.append(path, _row(5))  # now a plain append
    assert len(SCHEMA.read(path)) == 3 and not (tmp_path / "old.csv.tmp").exists()


@pytest.mark.parametrize(("change", "message"), [
    pytest.param("missing", "missing columns \\['peak_mem_mb'\\]", id="missing-column"),
    pytest.param("unknown", "unknown \\['surprise'\\]", id="unknown-column"),
])
def test_a_row_with_wrong_columns_is_refused(tmp_path, change, message):
    row = _row()
    if change == "missing":
        del row["peak_mem_mb"]
    else:
        row["surprise"] = 1
    with pytest.raises(ValueError, match=message):
        SCHEMA.append(tmp_path / "r.csv", row)
    assert not (tmp_path / "r.csv").exists()


def test_a_file_with_another_header_is_refused(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("method,kind,runtime_ms\nsce,x,1\n")
    with pytest.raises(ValueError, match="another header"):
        SCHEMA.append(path, _row())
    assert path.read_text() == "method,kind,runtime_ms\nsce,x,1\n"


@pytest.mark.skipif(not LINUX, reason="the peak counter reset is Linux's /proc/self/clear_refs")
@pytest.mark.parametrize("mib", [0, 200], ids=["nothing", "200-MiB"])
def test_a_memory_window_attributes_what_was_allocated_inside_it(mib):
    window = harness.MemoryWindow.open(gpu=False)
    if mib:
        block = np.ones(mib * 2**20 // 8)  # touched, so resident
        del block
    window.close()
    assert window.reset
    assert mib * 0.95 <= window.attributable_mb <= mib + 50
    assert window.process_peak_mb >= window.baseline_bytes / 2**20 + window.attributable_mb - 1


def test_reading_a_window_before_closing_it_is_refused():
    with pytest.raises(RuntimeError, match="close"):
        harness.MemoryWindow.open(gpu=False).attributable_mb  # noqa: B018


def test_buffer_assignment_bytes_leaves_out_the_parameters():
    text = ("allocation 0: size 400, parameter 0, shape |f32[100]| at ShapeIndex {}:\n"
            "allocation 1: size 4096, maybe-live-out:\n"
            "allocation 2: size 800, parameter 1, shape |f32[200]| at ShapeIndex {}:\n"
            "Total bytes used: 5296 (5.2KiB)\n")
    assert harness.buffer_assignment_bytes(text) == 4096
    with pytest.raises(ValueError, match="Total bytes used"):
        harness.buffer_assignment_bytes("allocation 0: size 4\n")


def test_compiled_memory_counts_the_output_not_the_inputs():
    small, large = harness.compiled_memory_bytes(_matmul_program, [(256, 1000), (256, 4000)])
    for got, c in ((small, 1000), (large, 4000)):
        output = 256 * c * 4
        assert output <= got < 1.5 * output + 2**16


def test_markdown_table_formats_cells_and_marks_missing_ones():
    rows = [{"method": "sce", "mb": 12.345, "acc": "0.5"},
            {"method": "ce", "mb": float("nan"), "acc": ""}]
    text = harness.markdown_table(rows, [("method", "method", "s"), ("mb", "MB", ".1f"),
                                         ("acc", "acc@10", ".3f")])
    assert text.splitlines() == ["| method | MB | acc@10 |", "|---|---:|---:|",
                                 "| sce | 12.3 | 0.500 |", "| ce | - | - |"]


def test_plot_panels_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "p.png"
    panels = [{"series": {"sce": ([1, 10], [2, 3])}, "xlog": True, "xlabel": "C"},
              {"series": {"ce": ([1, 10], [5, 50], "x:")}, "ylog": True}]
    assert harness.plot_panels(panels, path, title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
