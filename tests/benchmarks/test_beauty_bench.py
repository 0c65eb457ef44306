"""benchmarks/beauty.py and beauty_report.py: calibration option, CSV, reports, one tiny run."""

import argparse
import csv
import importlib.util
import json
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load(name):
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def beauty():
    return _load("beauty")


@pytest.fixture(scope="module")
def report():
    return _load("beauty_report")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("{}", dict(num_samples=256, proposal="uniform", power=1.0, uniform_mix=0.0)),
        ('{"num_samples": 1024}', dict(num_samples=1024, proposal="uniform", power=1.0,
                                       uniform_mix=0.0)),
        ('{"proposal": "unigram", "power": 0.75, "uniform_mix": 0.05}',
         dict(num_samples=256, proposal="unigram", power=0.75, uniform_mix=0.05)),
    ],
    ids=["defaults", "uniform-1024", "unigram"],
)
def test_parse_calibration_resolves_every_option(beauty, text, expected):
    assert beauty.parse_calibration(text) == expected


@pytest.mark.parametrize(
    "text,message",
    [
        ("{num_samples: 3}", "not valid JSON"),
        ("[1024]", "JSON object"),
        ('{"samples": 1024}', "unknown option"),
        ('{"item_counts": [1, 2]}', "unknown option"),
        ('{"num_samples": 0}', "num_samples"),
        ('{"proposal": "zipf"}', "proposal"),
        ('{"uniform_mix": 2}', "uniform_mix"),
    ],
    ids=["bad-json", "not-object", "unknown-key", "counts-given", "zero-samples",
         "bad-proposal", "mix-above-one"],
)
def test_parse_calibration_rejects_bad_options(beauty, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        beauty.parse_calibration(text)


def test_calibration_is_refused_for_other_methods(beauty, capsys):
    with pytest.raises(SystemExit):
        beauty.main(["--method", "sce", "--calibration", '{"num_samples": 8}'])
    assert "applies to --method sce_calibrated" in capsys.readouterr().err


def test_append_row_adds_new_columns_to_an_old_file(report, tmp_path):
    out = tmp_path / "old.csv"
    old_columns = [c for c in report.COLUMNS if c != "test_log_likelihood"]
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=old_columns)
        writer.writeheader()
        writer.writerow({c: f"old-{c}" for c in old_columns})
    report.append_row(out, {c: f"new-{c}" for c in report.COLUMNS})
    with open(out, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == report.COLUMNS
    assert rows[0]["test_log_likelihood"] == "" and rows[0]["config"] == "old-config"
    assert rows[1]["test_log_likelihood"] == "new-test_log_likelihood"


def test_append_row_refuses_a_file_with_unknown_columns(report, tmp_path):
    out = tmp_path / "other.csv"
    out.write_text("dataset,surprise\nx,y\n")
    with pytest.raises(ValueError, match="surprise"):
        report.append_row(out, {c: "" for c in report.COLUMNS})


def test_one_calibrated_epoch_writes_its_row(beauty, tmp_path):
    rng = np.random.default_rng(0)
    lines = [" ".join(str(i) for i in rng.integers(1, 40, size=rng.integers(4, 9)))
             for _ in range(64)]
    data = tmp_path / "Tiny.txt"
    data.write_text("\n".join(f"{u + 1} {line}" for u, line in enumerate(lines)) + "\n")
    out = tmp_path / "tiny.csv"
    beauty.main(["--method", "sce_calibrated", "--data", str(data), "--epochs", "1",
                 "--bucket-size-y", "8", "--out", str(out),
                 "--calibration", '{"num_samples": 16, "proposal": "unigram", '
                                  '"uniform_mix": 0.1}'])
    with open(out, newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["method"] == "sce_calibrated" and row["dataset"] == "Tiny"
    config = json.loads(row["config"])
    assert config["calibration"] == dict(num_samples=16, proposal="unigram", power=1.0,
                                         uniform_mix=0.1, item_counts="training histories")
    loglik = float(row["test_log_likelihood"])
    assert -np.log(40) - 5 < loglik < 0
    assert (tmp_path / "beauty_sce_calibrated_seed0.json").exists()


@pytest.mark.parametrize(
    "now,stop_at,minutes",
    [((23, 30), "01:20", 110.0), ((0, 10), "01:20", 70.0), ((1, 30), "01:20", -10.0),
     ((10, 0), "11:00", 60.0)],
    ids=["past-midnight", "same-day", "just-passed", "morning"],
)
def test_minutes_until_crosses_midnight(beauty, now, stop_at, minutes):
    import datetime

    moment = datetime.datetime(2026, 12, 1, *now, tzinfo=datetime.timezone.utc)
    assert beauty.minutes_until(stop_at, moment) == pytest.approx(minutes)


def test_minutes_until_rejects_a_malformed_time(beauty):
    with pytest.raises(ValueError, match="--stop-at"):
        beauty.minutes_until("1h20")


def test_curves_average_the_seeds_per_epoch(report, tmp_path):
    for seed, values in ((0, [0.01, 0.03]), (1, [0.02])):
        records = [{"epoch": e + 1, "ndcg@10": v} for e, v in enumerate(values)]
        (tmp_path / f"beauty_sce_seed{seed}.json").write_text(json.dumps({"records": records}))
    (tmp_path / "beauty_sce_by512_seed0.json").write_text('{"records": []}')  # another method
    text = report.curves(tmp_path / "report.csv", ["sce", "ce"], 3)
    lines = text.splitlines()
    assert lines[2] == "| sce (2) | 0.0150 | 0.0300 (1) |  |"
    assert lines[3] == "| ce (0) |  |  |  |"


def test_table_groups_shorter_runs_apart(report, tmp_path):
    out = tmp_path / "rows.csv"
    for method, seed, epochs, ndcg in (("ce", 0, 300, 0.05), ("ce", 1, 300, 0.06),
                                       ("ce", 2, 9, 0.01)):
        row = {c: "1" for c in report.COLUMNS}
        row.update(method=method, seed=str(seed), config=json.dumps({"max_epochs": epochs}),
                   test_log_likelihood="")
        row["ndcg@10"] = str(ndcg)
        report.append_row(out, row)
    summary = report.table(out).split("\n\n")[1].splitlines()
    assert summary[2].startswith("| ce | 2 | 0.0550 ± 0.0071 |")
    assert summary[3].startswith("| ce (max 9 epochs) | 1 | 0.0100 ± 0.0000 |")


def test_the_cli_prints_the_reports(beauty, report, tmp_path, capsys):
    out = tmp_path / "beauty.csv"
    for method, seed, ndcg in (("ce", 0, 0.05), ("sce", 0, 0.06)):
        row = {c: "1" for c in report.COLUMNS}
        row.update(method=method, seed=str(seed), config="{}")
        row["ndcg@10"] = str(ndcg)
        report.append_row(out, report.csv_row(row))
    records = [{"epoch": 1, "ndcg@10": 0.04}]
    (tmp_path / "beauty_sce_seed0.json").write_text(json.dumps({"records": records}))
    beauty.main(["--table", "--out", str(out)])
    assert capsys.readouterr().out == report.table(out) + "\n"
    beauty.main(["--curves", "2", "--curve-methods", "sce", "--out", str(out)])
    assert capsys.readouterr().out.splitlines() == [
        "| method (seeds) | 1 | 2 |", "|---|---:|---:|", "| sce (1) | 0.0400 |  |"]


def test_csv_row_formats_floats_and_fills_every_column(report):
    row = report.csv_row({"method": "sce", "ndcg@10": 0.0543219876, "seed": 3})
    assert list(row) == report.COLUMNS
    assert (row["method"], row["ndcg@10"], row["seed"]) == ("sce", "0.054322", 3)
    assert row["config"] is None  # written as an empty cell
