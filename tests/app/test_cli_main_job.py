"""The main job's guarantees, in this process: failing rows, memory skips, strict JSON."""

from __future__ import annotations

import csv
import json
import math

import pytest

from keras_sce import cli
from keras_sce.app import memory, report, runner

TINY = ["--max-length", "8", "--hidden-dim", "8", "--blocks", "1", "--epochs", "1",
        "--batch-size", "32", "--num-negatives", "8", "--bucket-size-y", "8", "--verbose", "0",
        "--no-plot"]
SMALL_DATA = ["--synthetic-users", "40", "--synthetic-items", "30"]


def _rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def _strict_json(path):
    def refuse(token):
        raise AssertionError(f"non-standard JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_a_raising_loss_is_a_row_and_the_others_are_kept(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(runner.FAULT_ENV, "ce=raise")
    out = tmp_path / "out"
    status = cli.main([*SMALL_DATA, *TINY, "--no-isolate", "--losses", "ce,sce",
                       "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 1
    rows = _rows(out / "results.csv")
    assert [(r["method"], r["status"]) for r in rows] == [("ce", "failed"), ("sce", "ok")]
    assert rows[0]["cause"] == "exception: RuntimeError: fault injected by " \
        f"{runner.FAULT_ENV} for 'ce'"
    assert [r["status"] for r in _strict_json(out / "records.json")] == ["failed", "ok"]
    assert "keras-sce: ce failed: exception: RuntimeError" in captured.err
    assert "Traceback" not in captured.err  # only with --traceback


def test_traceback_flag_shows_the_failing_losss_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(runner.FAULT_ENV, "sce=raise")
    status = cli.main([*SMALL_DATA, *TINY, "--no-isolate", "--losses", "sce", "--traceback",
                       "--out", str(tmp_path)])
    assert status == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_summary_and_catalogue_are_reported(tmp_path, capsys):
    from keras_sce import datasets

    out = tmp_path / "out"
    assert cli.main([*SMALL_DATA, *TINY, "--no-isolate", "--losses", "sce",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    data = datasets.synthetic_sequences(num_users=40, num_items=30, seed=0)
    assert data.summary() in printed
    assert "predicted training memory: sce " in printed
    (row,) = _rows(out / "results.csv")
    assert int(row["catalogue"]) == 31
    assert float(row["baseline_mem_mb"]) > 0.0


def test_impossible_full_ce_is_skipped_without_starting_a_child(tmp_path, capsys, monkeypatch):
    """10^6 items: full CE's logits cannot fit in 16 GB; nothing is started for it."""

    def no_child(*args, **kwargs):
        raise AssertionError("a child was started for a loss predicted not to fit")

    monkeypatch.setattr(memory, "available_bytes", lambda: 16 * 2**30)
    monkeypatch.setattr(runner, "run_in_child", no_child)
    out = tmp_path / "out"
    status = cli.main(["--synthetic-users", "2000", "--synthetic-items", "1000000",
                       "--losses", "ce", "--out", str(out), "--no-plot"])
    assert status == 0  # a predicted skip is a decision, not a failure
    (row,) = _rows(out / "results.csv")
    assert row["status"] == "skipped"
    assert row["cause"].startswith("skipped: predicted ")
    assert row["cause"].endswith(" GiB > available 16.00 GiB (--force to try)")
    assert float(row["predicted_mem_mb"]) > 16 * 1024
    assert "ce skipped: predicted" in capsys.readouterr().out


def test_force_tries_a_loss_predicted_not_to_fit(tmp_path, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 1)
    out = tmp_path / "out"
    status = cli.main([*SMALL_DATA, *TINY, "--no-isolate", "--losses", "ce", "--force",
                       "--out", str(out)])
    assert status == 0
    assert _rows(out / "results.csv")[0]["status"] == "ok"


def test_a_bad_data_file_is_one_line_exit_2(tmp_path, capsys):
    data = tmp_path / "bad.txt"
    data.write_text("1 2 3\nnot numbers here\n")
    status = cli.main(["--data", str(data), "--format", "sasrec", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and err[0].startswith(f"keras-sce: error: --data {data}: ")


def test_json_is_strict_with_nan_and_infinity(tmp_path):
    rows = [{"method": "ce", "status": "ok", "ndcg@10": float("nan"),
             "records": [{"loss": float("inf"), "hr@10": 0.5}]}]
    report.write_json(rows, tmp_path / "r.json")
    (row,) = _strict_json(tmp_path / "r.json")
    assert row["ndcg@10"] is None and row["records"][0] == {"loss": None, "hr@10": 0.5}


def test_table_and_csv_show_failed_and_skipped_rows(tmp_path):
    rows = [
        {"method": "sce", "status": "ok", "cause": "", "ndcg@10": 0.1, "hr@10": 0.2,
         "cov@10": 0.3, "epochs": 2, "best_epoch": 1, "sec_per_epoch": 1.5,
         "train_mem_mb": 120.0, "peak_mem_mb": 900.0, "predicted_mem_mb": 100.0},
        {"method": "ce", "status": "skipped", "cause": "skipped: predicted 9 GB > available 1 GB",
         "predicted_mem_mb": 9000.0},
        {"method": "gbce", "status": "failed", "cause": "killed by SIGKILL (likely out of memory)",
         "ndcg@10": math.nan},
    ]
    table = report.format_table(rows).splitlines()
    assert table[2] == (
        "| sce | 0.1000 | 0.2000 | 0.300 | 2 (best 1) | 1.50 | 120 | 900 | 100 | ok |"
    )
    assert table[3].endswith("| 9,000 | skipped: predicted 9 GB > available 1 GB |")
    assert "| killed by SIGKILL (likely out of memory) |" in table[4]
    report.write_csv(rows, tmp_path / "r.csv")
    assert [r["status"] for r in _rows(tmp_path / "r.csv")] == ["ok", "skipped", "failed"]


@pytest.mark.parametrize(
    ("method", "low_gb", "high_gb"),
    [
        pytest.param("ce", 50, 100, id="ce-materialises-N-x-C"),
        pytest.param("sce", 0.5, 4, id="sce-stays-small"),
        pytest.param("sampled_softmax", 0.5, 4, id="sampled-softmax-small"),
        pytest.param("gbce", 1, 30, id="gbce-N-x-k-x-d"),
    ],
)
def test_predictor_at_a_million_items(method, low_gb, high_gb):
    est = memory.predict_training_bytes(method, num_items=10**6 + 1, hidden_dim=64, rows=6400,
                                        batch_size=128, max_length=50)
    assert low_gb * 1e9 < est.total_bytes < high_gb * 1e9, est.describe()


def test_predictor_refuses_an_unknown_method():
    with pytest.raises(ValueError, match="Unknown method 'magic'"):
        memory.predict_training_bytes("magic", num_items=10, hidden_dim=4, rows=4,
                                      batch_size=2, max_length=2)


def test_max_rows_per_batch_is_the_fullest_batch():
    import numpy as np

    seqs = [np.arange(n) for n in (2, 10, 4, 60)]
    assert memory.max_rows_per_batch(seqs, batch_size=2, max_length=50) == 50 + 9


def test_memory_probes_read_this_process():
    rss = memory.rss_bytes()
    # Same unit (bytes, not KiB); the kernel updates the high-water mark lazily.
    assert 0.9 * rss <= memory.peak_rss_bytes() and rss > 50 * 2**20
    assert memory.available_bytes() > 0
