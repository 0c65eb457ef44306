"""benchmarks/finetune_sparsegrad.py: the committed results stay readable; the options."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmarks import finetune_sparsegrad as bench
from benchmarks import finetune_sparsegrad_report as report

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def test_the_committed_table_is_rebuilt_from_the_committed_csv(tmp_path):
    pytest.importorskip("matplotlib")
    shutil.copy(RESULTS / "finetune_rotten_tomatoes.csv", tmp_path / "ft.csv")
    text = report.write_report(tmp_path / "ft.csv", tmp_path / "ft")
    assert text == (RESULTS / "finetune_rotten_tomatoes.md").read_text()
    assert (tmp_path / "ft.png").read_bytes()[:4] == b"\x89PNG"


def test_a_row_lands_under_the_committed_header(tmp_path):
    path = tmp_path / "ft.csv"
    shutil.copy(RESULTS / "finetune_rotten_tomatoes.csv", path)
    before = len(report.read_rows(path))
    report.append_row(path, {"method": "lora", "seed": 9, "test_accuracy": 0.5,
                             "status": "ok", "cause": ""})  # run_config's keys are dropped
    rows = report.read_rows(path)
    assert len(rows) == before + 1 and rows[-1]["seed"] == "9" and rows[-1]["epochs"] == ""
    assert path.read_text().splitlines()[0] == ",".join(report.CSV_FIELDS)


@pytest.mark.parametrize(("argv", "message"), [
    pytest.param(["--methods", "full,dense"], "unknown ['dense']", id="unknown-method"),
    pytest.param(["--mlp-lr", "sparse=1e-3"], "unknown method 'sparse'", id="unknown-lr-method"),
])
def test_bad_options_are_named(argv, message, capsys):
    parser = bench.build_parser()
    with pytest.raises(SystemExit):
        bench.example.parse_methods(parser, parser.parse_args(argv).methods)
    assert message in capsys.readouterr().err


def test_the_benchmark_runs_every_method_and_the_example_one():
    assert bench.build_parser().parse_args([]).methods.split(",") == list(
        bench.example.DEFAULT_METHODS)
    assert bench.example.build_parser().parse_args([]).methods == "sparsegrad"
