"""examples/tfrs_retrieval.py runs end to end on tiny data (in the TF_USE_LEGACY_KERAS process)."""

from __future__ import annotations

import csv
import os

import pytest

from tests.helpers.examples import load_example, write_tiny_seqrec

if os.environ.get("TF_USE_LEGACY_KERAS") not in ("1", "true", "True"):
    pytest.skip(
        "needs TF_USE_LEGACY_KERAS=1 in its own process: "
        "`TF_USE_LEGACY_KERAS=1 python -m pytest tests/tfrs` (as .ci/test does)",
        allow_module_level=True,
    )


def test_tfrs_example_writes_the_results_table(tmp_path):
    write_tiny_seqrec(tmp_path / "Tiny.txt", num_users=60, num_items=40, min_len=4, max_len=9)
    example = load_example("tfrs_retrieval")
    out = tmp_path / "results" / "tfrs.csv"
    rows = example.main([
        "--data-dir", str(tmp_path), "--dataset", "Tiny", "--epochs", "2",
        "--batch-size", "16", "--dim", "8", "--max-len", "5", "--out", str(out),
        "--hard-negatives", "8",
    ])
    assert [row["method"] for row in rows] == ["in_batch", "sce"]
    with open(out) as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames[:6] == [
            "dataset", "method", "epochs", "recall@10", "recall@100", "sec_per_epoch"
        ]
        table = list(reader)
    assert len(table) == 2
    for row in table:
        assert row["dataset"] == "Tiny" and row["epochs"] == "2"
        assert 0.0 <= float(row["recall@10"]) <= float(row["recall@100"]) <= 1.0
        assert float(row["recall@100"]) == 1.0  # 40 items: every target is in the top 100
        assert float(row["sec_per_epoch"]) > 0
    markdown = out.with_suffix(".md").read_text()
    assert "| Tiny | sce" in markdown and "examples/tfrs_retrieval.py" in markdown

    # --append keeps earlier rows (several configurations in one table).
    extra = dict(rows[1], options="bucket_size_y=8")
    example.write_results([extra], out, "second command", append=True)
    with open(out) as handle:
        table = list(csv.DictReader(handle))
    assert [row["options"] for row in table][-1] == "bucket_size_y=8" and len(table) == 3
    assert "second command" in out.with_suffix(".md").read_text()

    # A setting run with several seeds gets a mean ± sd line (a fresh row, int seed,
    # groups with the rows read back from the CSV, strings).
    assert "several seeds" not in out.with_suffix(".md").read_text()
    reseeded = dict(rows[0], seed=1, **{"recall@100": 0.5, "recall@10": 0.25})
    example.write_results([reseeded], out, "third command", append=True)
    markdown = out.with_suffix(".md").read_text()
    first = float(table[0]["recall@100"])
    values = [first, 0.5]
    expected = f"{sum(values) / 2:.4f} ± {abs(values[0] - values[1]) / 2 ** 0.5:.4f}"
    assert "several seeds" in markdown and "| 0,1 |" in markdown and expected in markdown


def test_tfrs_example_dropout_and_optimizer_flags(tmp_path):
    write_tiny_seqrec(tmp_path / "Tiny.txt", num_users=40, num_items=30, min_len=4, max_len=8)
    example = load_example("tfrs_retrieval")
    out = tmp_path / "tfrs.csv"
    rows = example.main([
        "--data-dir", str(tmp_path), "--dataset", "Tiny", "--epochs", "1", "--methods", "sce",
        "--batch-size", "16", "--dim", "8", "--max-len", "5", "--out", str(out),
        "--dropout", "0.3", "--optimizer", "adagrad", "--learning-rate", "0.1",
    ])
    assert rows[0]["tower"] == "mean+dropout0.3" and rows[0]["optimizer"] == "adagrad"
    with open(out) as handle:
        assert next(csv.DictReader(handle))["optimizer"] == "adagrad"


def test_tfrs_example_validation_picks_the_epoch_and_restores_its_weights(tmp_path):
    write_tiny_seqrec(tmp_path / "Tiny.txt", num_users=60, num_items=150, min_len=5, max_len=9)
    example = load_example("tfrs_retrieval")
    out = tmp_path / "tfrs.csv"
    rows = example.main([
        "--data-dir", str(tmp_path), "--dataset", "Tiny", "--epochs", "3", "--methods",
        "in_batch", "--batch-size", "16", "--dim", "8", "--max-len", "5", "--out", str(out),
        "--validation", "--adam-epsilon", "1e-5",
    ])
    row = rows[0]
    assert row["selection"] == "validation" and row["adam_epsilon"] == 1e-5
    val_curve = dict(point.split(":") for point in row["val_recall@100_by_epoch"].split())
    test_curve = dict(point.split(":") for point in row["recall@100_by_epoch"].split())
    assert sorted(val_curve) == ["1", "2", "3"]  # evaluated every epoch by default
    best = max(val_curve, key=lambda epoch: (float(val_curve[epoch]), -int(epoch)))
    assert row["selected_epoch"] == int(best)
    assert row["val_recall@100"] == float(val_curve[best])
    # The reported test recall is that of the restored epoch, not of the last one.
    assert row["recall@100"] == float(test_curve[best])
    # Training stopped early with --patience: one evaluation without improvement ends it.
    rows = example.main([
        "--data-dir", str(tmp_path), "--dataset", "Tiny", "--epochs", "30", "--methods",
        "in_batch", "--batch-size", "16", "--dim", "8", "--max-len", "5", "--out", str(out),
        "--validation", "--patience", "1", "--learning-rate", "0.05",
    ])
    evaluated = rows[0]["val_recall@100_by_epoch"].split()
    assert len(evaluated) < 30 and rows[0]["selected_epoch"] == len(evaluated) - 1
    assert rows[0]["epochs_run"] == len(evaluated) and rows[0]["patience"] == 1
    # The selected epoch is not the last one here, so this checks the restore.
    test_curve = dict(point.split(":") for point in rows[0]["recall@100_by_epoch"].split())
    assert rows[0]["recall@100"] == float(test_curve[str(rows[0]["selected_epoch"])])
    assert rows[0]["recall@100"] != float(test_curve[str(len(evaluated))])
    markdown = out.with_suffix(".md").read_text()
    val = rows[0]["val_recall@100"]
    assert f"| {rows[0]['selected_epoch']} (val {val:.4f}) |" in markdown


def test_tfrs_example_validation_always_considers_the_last_epoch(tmp_path):
    write_tiny_seqrec(tmp_path / "Tiny.txt", num_users=40, num_items=30, min_len=5, max_len=8)
    example = load_example("tfrs_retrieval")
    common = ["--data-dir", str(tmp_path), "--dataset", "Tiny", "--methods", "in_batch",
              "--batch-size", "16", "--dim", "8", "--max-len", "5",
              "--out", str(tmp_path / "tfrs.csv")]
    rows = example.main(common + ["--epochs", "3", "--validation", "--eval-every", "2"])
    assert [p.split(":")[0] for p in rows[0]["val_recall@100_by_epoch"].split()] == ["2", "3"]
    with pytest.raises(SystemExit, match="--patience needs --validation"):
        example.main(common + ["--epochs", "1", "--patience", "2"])


def test_the_example_writes_no_file_unless_asked(tmp_path, monkeypatch):
    write_tiny_seqrec(tmp_path / "Tiny.txt", num_users=30, num_items=20, min_len=4, max_len=7)
    monkeypatch.chdir(tmp_path)
    example = load_example("tfrs_retrieval")
    rows = example.main(["--data-dir", str(tmp_path), "--dataset", "Tiny", "--epochs", "1",
                         "--methods", "sce", "--batch-size", "16", "--dim", "8",
                         "--max-len", "5"])
    assert [row["method"] for row in rows] == ["sce"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Tiny.txt"]
    with pytest.raises(SystemExit, match="need --out"):
        example.main(["--table-only"])


def test_the_comparison_benchmark_records_its_own_command(tmp_path):
    import importlib.util

    from tests.helpers.examples import EXAMPLES

    spec = importlib.util.spec_from_file_location(
        "tfrs_comparison", EXAMPLES.parent / "benchmarks" / "tfrs_comparison.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    write_tiny_seqrec(tmp_path / "Tiny.txt", num_users=30, num_items=20, min_len=4, max_len=7)
    out = tmp_path / "tfrs.csv"
    bench.main(["--data-dir", str(tmp_path), "--dataset", "Tiny", "--epochs", "1", "--methods",
                "sce", "--batch-size", "16", "--dim", "8", "--max-len", "5", "--out", str(out)])
    with open(out) as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["command"].startswith("python benchmarks/tfrs_comparison.py --data-dir")
    assert bench.DEFAULT_CSV.name == "tfrs_retrieval.csv"
